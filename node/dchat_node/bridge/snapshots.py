"""Bridge state snapshots: the Merkle tree over transfer states and the snapshot hash.

Design (pure functions; the worker decides when, the store keeps them):
- A snapshot covers a *cut*: for each chain of the bridge (ascending chain id) its vault and
  ``next_nonce``, i.e. every observed transfer from that vault with ``nonce < next_nonce``
  (so "last nonce" = ``next_nonce - 1``). A cut is only taken over transfers in final states
  (``released``, ``refunded``, ``dropped``), so every honest node that observed the same
  deposits derives the same leaves.
- Leaf of a transfer: ``keccak256(keccak256(abi.encode(bytes32 transferId, uint8 state)))``
  with ``state`` the index in ``store.STATES`` (observed 0, attesting 1, released 2,
  refund_pending 3, refunded 4, dropped 5). Leaves are ordered by transfer id (ascending
  bytes). A parent is ``keccak256(min(a, b) ++ max(a, b))`` (commutative, as OpenZeppelin's
  ``MerkleProof.verify``); an odd node at the end of a level moves up unchanged. The root of
  no leaves is 32 zero bytes. A proof is the list of sibling hashes from leaf to root.
- Snapshot hash: ``keccak256(abi.encode(SNAPSHOT_TYPEHASH, seq, root, prevHash, leafCount,
  keccak256(abi.encode(uint256[] chainIds, address[] vaults, uint256[] nextNonces))))``
  where ``SNAPSHOT_TYPEHASH = keccak256("DchatBridgeSnapshot(uint256 seq,bytes32 root,
  bytes32 prevHash,uint256 leafCount,bytes32 cut)")``; ``prevHash`` is the previous
  snapshot's hash (32 zero bytes for sequence 1), which chains the snapshots.
- Validators sign ``snapshot_signing_digest(hash)`` = EIP-191 ``personal_sign`` of the hash
  (``keccak256("\\x19Ethereum Signed Message:\\n32" ++ hash)``), with the same 65-byte low-s
  signatures as attestations (``messages.Signer``/``messages.recover``).
"""

from __future__ import annotations

from collections.abc import Sequence

from eth_abi.abi import encode
from eth_utils.crypto import keccak

from dchat_node.bridge.store import STATES, CutEntry

ZERO_HASH = b"\x00" * 32
SNAPSHOT_TYPEHASH = keccak(
    text=(
        "DchatBridgeSnapshot(uint256 seq,bytes32 root,bytes32 prevHash,uint256 leafCount,"
        "bytes32 cut)"
    )
)
_EIP191_PREFIX = b"\x19Ethereum Signed Message:\n32"


def leaf_hash(transfer_id: str, state: str) -> bytes:
    """The leaf of one transfer in its ``state`` (a name of ``store.STATES``)."""
    tid = bytes.fromhex(transfer_id.removeprefix("0x"))
    if len(tid) != 32:
        raise ValueError("a transfer id is 32 bytes")
    inner = keccak(encode(["bytes32", "uint8"], [tid, STATES.index(state)]))
    return keccak(inner)


def _parent(a: bytes, b: bytes) -> bytes:
    return keccak(a + b if a <= b else b + a)


def _leaves(transfers: Sequence[tuple[str, str]]) -> list[bytes]:
    ordered = sorted(transfers, key=lambda t: bytes.fromhex(t[0].removeprefix("0x")))
    return [leaf_hash(tid, state) for tid, state in ordered]


def _levels(leaves: list[bytes]) -> list[list[bytes]]:
    levels = [leaves]
    while len(levels[-1]) > 1:
        level = levels[-1]
        up = [_parent(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            up.append(level[-1])
        levels.append(up)
    return levels


def merkle_root(transfers: Sequence[tuple[str, str]]) -> bytes:
    """Root over (transfer id, state) pairs (any order in; sorted by id inside)."""
    if not transfers:
        return ZERO_HASH
    return _levels(_leaves(transfers))[-1][0]


def merkle_proof(transfers: Sequence[tuple[str, str]], transfer_id: str) -> list[bytes] | None:
    """Sibling hashes from ``transfer_id``'s leaf up to the root; None when not included."""
    ordered = sorted(transfers, key=lambda t: bytes.fromhex(t[0].removeprefix("0x")))
    ids = [tid.lower() for tid, _ in ordered]
    if transfer_id.lower() not in ids:
        return None
    index = ids.index(transfer_id.lower())
    proof = []
    for level in _levels([leaf_hash(tid, state) for tid, state in ordered])[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        index //= 2
    return proof


def verify_proof(root: bytes, leaf: bytes, proof: Sequence[bytes]) -> bool:
    node = leaf
    for sibling in proof:
        node = _parent(node, sibling)
    return node == root


def cut_hash(cut: Sequence[CutEntry]) -> bytes:
    entries = sorted(cut, key=lambda c: c.chain_id)
    return keccak(
        encode(
            ["uint256[]", "address[]", "uint256[]"],
            [
                [c.chain_id for c in entries],
                [c.vault for c in entries],
                [c.next_nonce for c in entries],
            ],
        )
    )


def snapshot_hash(
    seq: int, root: bytes, prev_hash: bytes, leaf_count: int, cut: Sequence[CutEntry]
) -> bytes:
    return keccak(
        encode(
            ["bytes32", "uint256", "bytes32", "bytes32", "uint256", "bytes32"],
            [SNAPSHOT_TYPEHASH, seq, root, prev_hash, leaf_count, cut_hash(cut)],
        )
    )


def snapshot_signing_digest(snapshot_hash_: bytes) -> bytes:
    """EIP-191 (``personal_sign``) digest of a snapshot hash: what validators sign."""
    return keccak(_EIP191_PREFIX + snapshot_hash_)
