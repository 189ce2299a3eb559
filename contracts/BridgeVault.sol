// SPDX-License-Identifier: Apache-2.0
// The dchat bridge vault: one per chain. Native coin only (no ERC-20): a deposit locks
// msg.value here and emits Deposit with a per-vault nonce; the peer vault on the destination
// chain pays the recipient out of its own balance (liquidity added with fund()) against an
// EIP-712 Release attestation signed by at least `quorum` registered validators.
//
// Attestations: `signatures` are 65-byte (r, s, v) ECDSA signatures over the EIP-712 digest
// in THIS vault's domain (name "DchatBridge", version "1", this chain id, this address);
// their recovered signers must be registered validators in strictly ascending order (that is
// how distinctness is proved without storage); high-s and malformed signatures are rejected.
//
// Replay protection: a transfer id is keccak256(abi.encode(srcChainId, srcVault, nonce));
// `executed[id]` is set by the first release, a second release reverts.
//
// Deadline and refund: every deposit carries deadline = block.timestamp + window. The
// destination releases only while its block.timestamp <= deadline. After the deadline the
// depositor is refunded on the source chain against a quorum of Refund attestations (same
// fields, this vault's domain, type Refund). Validators sign a Refund only after seeing, at a
// final block of the destination chain whose timestamp is past the deadline, that the transfer
// was not executed: from then on no release can ever happen, so release and refund are
// mutually exclusive as long as a quorum of validators is honest (the same trust assumption
// as the release itself). The source vault checks the deposit (stored hash) and its own clock.
pragma solidity 0.8.37;

contract BridgeVault {
    bytes32 private constant DOMAIN_TYPEHASH = keccak256(
        "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    );
    bytes32 public constant RELEASE_TYPEHASH = keccak256(
        "Release(uint256 srcChainId,address srcVault,uint256 nonce,address depositor,address recipient,uint256 amount,uint256 dstChainId,uint64 deadline)"
    );
    bytes32 public constant REFUND_TYPEHASH = keccak256(
        "Refund(uint256 srcChainId,address srcVault,uint256 nonce,address depositor,address recipient,uint256 amount,uint256 dstChainId,uint64 deadline)"
    );
    // secp256k1n / 2: signatures with a larger s are malleable copies, rejected
    uint256 private constant HALF_N =
        0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;

    struct Transfer {
        uint256 srcChainId;
        address srcVault;
        uint256 nonce;
        address depositor;
        address recipient;
        uint256 amount;
        uint256 dstChainId;
        uint64 deadline;
    }

    enum DepositState {
        None,
        Locked,
        Refunded
    }

    address public immutable owner;
    uint256 public immutable quorum;
    uint64 public immutable window;
    address[] private validatorList;
    mapping(address => bool) public isValidator;
    mapping(uint256 => address) public peers; // chain id -> vault there

    uint256 public nextNonce;
    mapping(bytes32 => bytes32) public depositHash; // transfer id -> hash of its Transfer
    mapping(bytes32 => DepositState) public depositState;
    mapping(bytes32 => bool) public executed; // releases done here

    event Deposit(
        bytes32 indexed transferId,
        uint256 indexed nonce,
        address indexed depositor,
        address recipient,
        uint256 amount,
        uint256 dstChainId,
        uint64 deadline
    );
    event Released(bytes32 indexed transferId, address indexed recipient, uint256 amount);
    event Refunded(bytes32 indexed transferId, address indexed depositor, uint256 amount);
    event PeerSet(uint256 indexed chainId, address vault);

    error NotOwner();
    error BadConfig();
    error UnknownPeer();
    error ZeroAmount();
    error WrongChain();
    error AlreadyExecuted();
    error DeadlinePassed();
    error DeadlineNotPassed();
    error NotLocked();
    error BelowQuorum();
    error BadSignature(uint256 index);
    error NotValidator(uint256 index, address signer);
    error NotSorted(uint256 index);
    error PayoutFailed();

    constructor(address[] memory validators_, uint256 quorum_, uint64 window_) {
        if (quorum_ == 0 || quorum_ > validators_.length || window_ == 0) revert BadConfig();
        for (uint256 i = 0; i < validators_.length; i++) {
            address v = validators_[i];
            if (v == address(0) || isValidator[v]) revert BadConfig();
            isValidator[v] = true;
            validatorList.push(v);
        }
        owner = msg.sender;
        quorum = quorum_;
        window = window_;
    }

    /// The vault on another chain this one trusts releases from (set once per chain).
    function setPeer(uint256 chainId, address vault) external {
        if (msg.sender != owner) revert NotOwner();
        if (vault == address(0) || chainId == block.chainid || peers[chainId] != address(0)) {
            revert BadConfig();
        }
        peers[chainId] = vault;
        emit PeerSet(chainId, vault);
    }

    function validators() external view returns (address[] memory) {
        return validatorList;
    }

    /// Liquidity for releases on this chain.
    function fund() external payable {}

    function deposit(uint256 dstChainId, address recipient) external payable returns (bytes32) {
        if (peers[dstChainId] == address(0)) revert UnknownPeer();
        if (msg.value == 0) revert ZeroAmount();
        if (recipient == address(0)) revert BadConfig();
        uint256 nonce = nextNonce++;
        uint64 deadline = uint64(block.timestamp) + window;
        Transfer memory t = Transfer(
            block.chainid, address(this), nonce, msg.sender, recipient, msg.value, dstChainId, deadline
        );
        bytes32 id = transferId(block.chainid, address(this), nonce);
        depositHash[id] = keccak256(abi.encode(t));
        depositState[id] = DepositState.Locked;
        emit Deposit(id, nonce, msg.sender, recipient, msg.value, dstChainId, deadline);
        return id;
    }

    function release(Transfer calldata t, bytes[] calldata signatures) external {
        if (t.dstChainId != block.chainid || peers[t.srcChainId] != t.srcVault) revert WrongChain();
        if (block.timestamp > t.deadline) revert DeadlinePassed();
        bytes32 id = transferId(t.srcChainId, t.srcVault, t.nonce);
        if (executed[id]) revert AlreadyExecuted();
        _checkQuorum(digest(RELEASE_TYPEHASH, t), signatures);
        executed[id] = true;
        emit Released(id, t.recipient, t.amount);
        (bool ok, ) = t.recipient.call{value: t.amount}("");
        if (!ok) revert PayoutFailed();
    }

    function refund(Transfer calldata t, bytes[] calldata signatures) external {
        if (t.srcChainId != block.chainid || t.srcVault != address(this)) revert WrongChain();
        bytes32 id = transferId(t.srcChainId, t.srcVault, t.nonce);
        if (depositState[id] != DepositState.Locked || depositHash[id] != keccak256(abi.encode(t))) {
            revert NotLocked();
        }
        if (block.timestamp <= t.deadline) revert DeadlineNotPassed();
        _checkQuorum(digest(REFUND_TYPEHASH, t), signatures);
        depositState[id] = DepositState.Refunded;
        emit Refunded(id, t.depositor, t.amount);
        (bool ok, ) = t.depositor.call{value: t.amount}("");
        if (!ok) revert PayoutFailed();
    }

    function transferId(uint256 srcChainId, address srcVault, uint256 nonce)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(srcChainId, srcVault, nonce));
    }

    function domainSeparator() public view returns (bytes32) {
        return keccak256(
            abi.encode(
                DOMAIN_TYPEHASH,
                keccak256("DchatBridge"),
                keccak256("1"),
                block.chainid,
                address(this)
            )
        );
    }

    function digest(bytes32 typehash, Transfer calldata t) public view returns (bytes32) {
        bytes32 structHash = keccak256(
            abi.encode(
                typehash,
                t.srcChainId,
                t.srcVault,
                t.nonce,
                t.depositor,
                t.recipient,
                t.amount,
                t.dstChainId,
                t.deadline
            )
        );
        return keccak256(abi.encodePacked("\x19\x01", domainSeparator(), structHash));
    }

    function _checkQuorum(bytes32 hash, bytes[] calldata signatures) private view {
        if (signatures.length < quorum) revert BelowQuorum();
        address last = address(0);
        for (uint256 i = 0; i < signatures.length; i++) {
            address signer = _recover(hash, signatures[i], i);
            if (!isValidator[signer]) revert NotValidator(i, signer);
            if (signer <= last) revert NotSorted(i);
            last = signer;
        }
    }

    function _recover(bytes32 hash, bytes calldata sig, uint256 index)
        private
        pure
        returns (address)
    {
        if (sig.length != 65) revert BadSignature(index);
        bytes32 r = bytes32(sig[0:32]);
        bytes32 s = bytes32(sig[32:64]);
        uint8 v = uint8(sig[64]);
        if (uint256(s) > HALF_N || (v != 27 && v != 28)) revert BadSignature(index);
        address signer = ecrecover(hash, v, r, s);
        if (signer == address(0)) revert BadSignature(index);
        return signer;
    }
}
