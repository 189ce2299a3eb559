"""Unit tests of what the bridge signs and gossips: signatures the vault accepts (low s,
v 27/28), recovery, Deposit log decoding, the key file reader, the gossip wire format."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from eth_abi.abi import encode

from dchat_node.bridge import gossip
from dchat_node.bridge.messages import (
    DEPOSIT_TOPIC,
    Signer,
    Transfer,
    decode_deposit,
    recover,
)
from dchat_node.bridge.worker import heartbeat_digest, read_key

pytestmark = pytest.mark.unit

N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
VAULT = "0x" + "11" * 20
T = Transfer(1, "0x1111111111111111111111111111111111111111", 7, "0x" + "22" * 20,
             "0x" + "33" * 20, 10**18, 2, 1_900_000_000)  # fmt: skip


def test_signatures_recover_and_malleated_ones_do_not() -> None:
    signer = Signer(bytes(range(1, 33)))
    for kind in ("release", "refund"):
        digest = T.digest(kind, VAULT)  # type: ignore[arg-type]
        sig = signer.sign(digest)
        assert len(sig) == 65
        assert sig[64] in (27, 28)
        assert int.from_bytes(sig[32:64], "big") <= N // 2
        assert recover(digest, sig) == signer.address
        high_s = sig[:32] + (N - int.from_bytes(sig[32:64], "big")).to_bytes(32, "big")
        assert recover(digest, high_s + bytes([55 - sig[64]])) is None
        assert recover(digest, sig[:64] + b"\x1d") is None
        assert recover(digest, sig[:64]) is None
        assert recover(digest, b"\x00" * 65) is None
    # release and refund digests differ, and so do digests of different transfers / vaults
    assert T.digest("release", VAULT) != T.digest("refund", VAULT)
    assert T.digest("release", VAULT) != replace(T, amount=1).digest("release", VAULT)
    assert T.digest("release", VAULT) != T.digest("release", "0x" + "44" * 20)
    assert repr(signer) == f"Signer({signer.address})"


def test_deposit_logs_are_decoded_and_checked() -> None:
    topics = (
        DEPOSIT_TOPIC,
        bytes.fromhex(T.id[2:]),
        T.nonce.to_bytes(32, "big"),
        bytes(12) + bytes.fromhex(T.depositor[2:]),
    )
    data = encode(["address", "uint256", "uint256", "uint64"],
                  [T.recipient, T.amount, T.dst_chain_id, T.deadline])  # fmt: skip
    got = decode_deposit(T.src_vault, topics, data, 1)
    assert got.id == T.id
    assert got.amount == T.amount
    with pytest.raises(ValueError, match="does not match"):
        decode_deposit(T.src_vault, topics, data, 5)  # another chain: another id
    with pytest.raises(ValueError, match="not a Deposit log"):
        decode_deposit(T.src_vault, (b"\x00" * 32, *topics[1:]), data, 1)


def test_key_files_are_read_without_echoing_them(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_text("0x" + "ab" * 32 + "\n")
    assert read_key(str(key), "bridge.validator_key_path").address.startswith("0x")
    key.write_text("secret words")
    with pytest.raises(ValueError, match=r"^bridge\.validator_key_path: ") as err:
        read_key(str(key), "bridge.validator_key_path")
    assert "secret" not in str(err.value)
    with pytest.raises(ValueError, match="cannot read"):
        read_key(str(tmp_path / "missing"), "bridge.relayer_key_path")


def test_gossip_wire_format() -> None:
    signer = Signer(bytes(range(1, 33)))
    digest = T.digest("release", VAULT)
    sig = "0x" + signer.sign(digest).hex()
    msg = gossip.Attestation(
        kind="release", transfer_id=T.id, digest="0x" + digest.hex(), signer=signer.address,
        signature=sig,
    )  # fmt: skip
    assert gossip.decode(gossip.encode(msg)) == msg
    beat = gossip.Heartbeat(signer=signer.address, time=5, signature=msg.signature)
    assert gossip.decode(gossip.encode(beat)) == beat
    for bad in (b"x" * 3000, b"{}", b'{"type":"attestation","kind":"steal"}', b"\xff"):
        with pytest.raises(ValueError, match=r"."):  # pydantic's ValidationError or size
            gossip.decode(bad)
    assert heartbeat_digest("t", 1) != heartbeat_digest("t", 2) != heartbeat_digest("u", 2)
