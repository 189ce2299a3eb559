"""BridgeVault on two real anvil chains: release with a quorum, replay, forged / duplicate /
unsorted / below-quorum attestations, the deadline and the refund path; the node's EIP-712
digests equal the contract's and eth_account's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from dchat_node.bridge.messages import Signer, refund_calldata, release_calldata
from tests.harness.chain import Anvil, calldata, private_key
from tests.node.bridge_helpers import (
    WINDOW_SECS,
    Bridge,
    deploy_bridge,
    increase_time,
    revert_error,
    submit_release,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def bridge(anvil_factory: Callable[..., Anvil]) -> Bridge:
    a = anvil_factory(chain_id=1001)
    b = anvil_factory(chain_id=1002)
    return deploy_bridge(a, b)


def test_release_with_quorum_pays_once_and_replay_is_rejected(bridge: Bridge) -> None:
    a, b = bridge.a, bridge.b
    recipient = b.accounts[8]
    t = bridge.deposit(a, b, 10**18, recipient=recipient)
    assert t.amount == 10**18
    assert t.dst_chain_id == b.chain_id
    assert t.nonce == 0
    sigs = bridge.sign(t, "release", bridge.validators[:2])
    before = b.balance(recipient)
    assert submit_release(b, bridge, t, sigs) == 1
    assert b.balance(recipient) - before == 10**18
    executed = b.call(
        bridge.vault_b, "executed(bytes32)", ["bytes32"], [bytes.fromhex(t.id[2:])], ["bool"]
    )
    assert executed == (True,)
    # the same attestation again: rejected on chain, nothing paid
    data = release_calldata(t, sigs)
    assert revert_error(b, b.accounts[2], bridge.vault_b, data) == "AlreadyExecuted"
    assert submit_release(b, bridge, t, sigs) == 0
    assert b.balance(recipient) - before == 10**18
    # all three validators sorted is a quorum too, but the transfer is spent
    assert (
        revert_error(
            b,
            b.accounts[2],
            bridge.vault_b,
            release_calldata(t, bridge.sign(t, "release", bridge.validators)),
        )
        == "AlreadyExecuted"
    )


def test_bad_attestations_are_rejected(bridge: Bridge) -> None:
    a, b = bridge.a, bridge.b
    t = bridge.deposit(a, b, 5 * 10**17, recipient=b.accounts[8])
    v = bridge.validators
    call = b.accounts[2]

    def err(sigs: list[bytes], transfer: object = t) -> str | None:
        return revert_error(b, call, bridge.vault_b, release_calldata(transfer, sigs))  # type: ignore[arg-type]

    ok = bridge.sign(t, "release", v[:2])
    forger = Signer(private_key(9))  # a funded account, not a validator
    forged = bridge.sign(t, "release", [v[0], forger])
    assert err(forged) == "NotValidator"
    assert err([ok[0], ok[0]]) == "NotSorted"  # duplicate signer
    assert err([ok[1], ok[0]]) == "NotSorted"  # descending
    assert err(ok[:1]) == "BelowQuorum"
    assert err([]) == "BelowQuorum"
    bad = bytearray(ok[0])
    bad[64] = 29
    assert err([bytes(bad), ok[1]]) == "BadSignature"
    assert err([ok[0][:64], ok[1]]) == "BadSignature"
    # a high-s copy of a valid signature (malleability) is refused
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    r, s, vv = ok[0][:32], int.from_bytes(ok[0][32:64], "big"), ok[0][64]
    flipped = r + (n - s).to_bytes(32, "big") + bytes([55 - vv])
    assert err([flipped, ok[1]]) == "BadSignature"
    # valid signatures over a tampered amount recover to other addresses
    assert err(ok, replace(t, amount=t.amount * 10)) == "NotValidator"
    # refund signatures are not release signatures
    assert err(bridge.sign(t, "refund", v[:2])) == "NotValidator"
    assert err(ok) is None  # the good ones still work


def test_after_the_deadline_only_refund_works(bridge: Bridge) -> None:
    a, b = bridge.a, bridge.b
    depositor = a.accounts[3]
    t = bridge.deposit(a, b, 2 * 10**18, sender=depositor, recipient=b.accounts[8])
    refund_sigs = bridge.sign(t, "refund", bridge.validators[1:])
    # before the deadline the source refuses a refund
    assert (
        revert_error(a, a.accounts[2], bridge.vault_a, refund_calldata(t, refund_sigs))
        == "DeadlineNotPassed"
    )
    increase_time(b, WINDOW_SECS + 5)
    increase_time(a, WINDOW_SECS + 5)
    release_sigs = bridge.sign(t, "release", bridge.validators[:2])
    assert (
        revert_error(b, b.accounts[2], bridge.vault_b, release_calldata(t, release_sigs))
        == "DeadlinePassed"
    )
    assert submit_release(b, bridge, t, release_sigs) == 0
    # release attestations do not refund, one refund signature is not a quorum
    assert (
        revert_error(
            a,
            a.accounts[2],
            bridge.vault_a,
            refund_calldata(t, bridge.sign(t, "release", bridge.validators[:2])),
        )
        == "NotValidator"
    )
    assert (
        revert_error(a, a.accounts[2], bridge.vault_a, refund_calldata(t, refund_sigs[:1]))
        == "BelowQuorum"
    )
    before = a.balance(depositor)
    tx = a.send(a.accounts[2], bridge.vault_a, data=refund_calldata(t, refund_sigs), gas=500_000)
    assert int(a.wait_receipt(tx)["status"], 16) == 1
    assert a.balance(depositor) - before == 2 * 10**18
    # a second refund is refused
    assert (
        revert_error(a, a.accounts[2], bridge.vault_a, refund_calldata(t, refund_sigs))
        == "NotLocked"
    )


def test_node_digest_matches_contract_and_eth_account(bridge: Bridge) -> None:
    from eth_account.messages import encode_typed_data
    from eth_utils.crypto import keccak

    a, b = bridge.a, bridge.b
    t = bridge.deposit(a, b, 123, recipient=b.accounts[8])
    fields = [
        {"name": "srcChainId", "type": "uint256"},
        {"name": "srcVault", "type": "address"},
        {"name": "nonce", "type": "uint256"},
        {"name": "depositor", "type": "address"},
        {"name": "recipient", "type": "address"},
        {"name": "amount", "type": "uint256"},
        {"name": "dstChainId", "type": "uint256"},
        {"name": "deadline", "type": "uint64"},
    ]
    message = dict(zip([f["name"] for f in fields], t.as_tuple(), strict=True))
    for kind, chain, vault, type_name in (
        ("release", b, bridge.vault_b, "Release"),
        ("refund", a, bridge.vault_a, "Refund"),
    ):
        on_chain = chain.call(
            vault,
            f"digest(bytes32,{'(uint256,address,uint256,address,address,uint256,uint256,uint64)'})",
            ["bytes32", "(uint256,address,uint256,address,address,uint256,uint256,uint64)"],
            [
                keccak(
                    text=f"{type_name}({','.join(f['type'] + ' ' + f['name'] for f in fields)})"
                ),
                t.as_tuple(),
            ],
            ["bytes32"],
        )[0]
        signable = encode_typed_data(
            full_message={
                "types": {
                    "EIP712Domain": [
                        {"name": "name", "type": "string"},
                        {"name": "version", "type": "string"},
                        {"name": "chainId", "type": "uint256"},
                        {"name": "verifyingContract", "type": "address"},
                    ],
                    type_name: fields,
                },
                "primaryType": type_name,
                "domain": {
                    "name": "DchatBridge",
                    "version": "1",
                    "chainId": chain.chain_id,
                    "verifyingContract": vault,
                },
                "message": message,
            }
        )
        expected = keccak(b"\x19" + signable.version + signable.header + signable.body)
        assert t.digest(kind, bridge.vault_b) == on_chain == expected  # type: ignore[arg-type]
    tid = a.call(
        bridge.vault_a,
        "transferId(uint256,address,uint256)",
        ["uint256", "address", "uint256"],
        [a.chain_id, bridge.vault_a, t.nonce],
        ["bytes32"],
    )[0]
    assert "0x" + tid.hex() == t.id


def test_constructor_and_peers_are_checked(anvil_factory: Callable[..., Anvil]) -> None:
    from tests.harness.chain import load_artifact

    a = anvil_factory(chain_id=1003)
    art = load_artifact("BridgeVault")
    v = [Signer(private_key(i)).address for i in (5, 6)]
    for args in ((v, 3, 60), (v, 0, 60), ([v[0], v[0]], 1, 60), (v, 1, 0)):
        with pytest.raises(RuntimeError, match="deploying BridgeVault failed"):
            a.deploy(art, *args)
    vault = a.deploy(art, v, 2, 60)
    # no peer for chain 9: deposits refused; only the owner sets a peer, once
    data = calldata("deposit(uint256,address)", ["uint256", "address"], [9, a.accounts[1]])
    assert revert_error(a, a.accounts[1], vault, data) == "UnknownPeer"
    set_peer = calldata("setPeer(uint256,address)", ["uint256", "address"], [9, a.accounts[4]])
    assert revert_error(a, a.accounts[1], vault, set_peer) == "NotOwner"
    a.send(a.accounts[0], vault, data=set_peer)
    assert revert_error(a, a.accounts[0], vault, set_peer) == "BadConfig"
