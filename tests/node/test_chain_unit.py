"""The chain package without a chain: finality policy parsing, the config keys, the payment
calldata and reference, request validation, the retry schedule."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from eth_abi import decode, encode
from eth_utils.crypto import keccak

from dchat_node.chain import (
    ChainClient,
    ChainUnavailable,
    FinalityPolicy,
    PaymentRequest,
    erc20_payment_data,
    payment_call,
    reference_for,
)
from dchat_node.config import ChainConfig, ConfigError, load_config

pytestmark = pytest.mark.unit

ESCROW = "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720"
TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12", FinalityPolicy(confirmations=12)),
        (1, FinalityPolicy(confirmations=1)),
        ("9999", FinalityPolicy(confirmations=9999)),
        ("safe", FinalityPolicy(tag="safe")),
        (" Finalized ", FinalityPolicy(tag="finalized")),
    ],
)
def test_finality_policy_parses(text: str | int, expected: FinalityPolicy) -> None:
    assert FinalityPolicy.parse(text) == expected


@pytest.mark.parametrize("text", ["0", "-1", "10000", "1.5", "", "latest", "pending", "12 blocks"])
def test_finality_policy_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="number of confirmations"):
        FinalityPolicy.parse(text)


def test_finality_policy_is_one_of_the_two() -> None:
    with pytest.raises(ValueError, match="either"):
        FinalityPolicy(confirmations=3, tag="safe")
    with pytest.raises(ValueError, match="either"):
        FinalityPolicy()
    with pytest.raises(ValueError, match=">= 1"):
        FinalityPolicy(confirmations=0)
    assert str(FinalityPolicy(confirmations=3)) == "3 confirmations"
    assert str(FinalityPolicy(tag="finalized")) == "finalized"


def test_finality_from_config(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[chain]\ncurrency_chain_finality = 5\nchat_chain_finality = "finalized"\n')
    config = load_config(path, environ={})
    assert FinalityPolicy.from_config(config.chain, "currency") == FinalityPolicy(confirmations=5)
    assert FinalityPolicy.from_config(config.chain, "chat") == FinalityPolicy(tag="finalized")
    env = {"DCHAT_CHAIN__CURRENCY_CHAIN_FINALITY": "safe"}
    config = load_config(path, environ=env)
    assert FinalityPolicy.from_config(config.chain, "currency") == FinalityPolicy(tag="safe")
    assert FinalityPolicy.from_config(ChainConfig(), "currency") == FinalityPolicy(confirmations=12)


@pytest.mark.parametrize("bad", ['"latest"', "0", '"12 blocks"', "true"])
def test_bad_finality_config_names_the_key(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[chain]\ncurrency_chain_finality = {bad}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert [p.key for p in err.value.problems] == ["chain.currency_chain_finality"]


def test_bad_retries_config_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[chain]\nrpc_retries = -1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert [p.key for p in err.value.problems] == ["chain.rpc_retries"]


def test_reference_is_namespaced_keccak() -> None:
    ref = reference_for("purchase-1")
    assert len(ref) == 32
    assert ref == keccak(b"dchat/marketplace/purchase/v1\x00purchase-1")
    assert ref == reference_for("purchase-1")
    assert ref != reference_for("purchase-2")
    assert ref != keccak(b"purchase-1")


def test_erc20_payment_data_is_transfer_calldata_then_reference() -> None:
    ref = reference_for("p")
    data = erc20_payment_data(ESCROW.lower(), 250, ref)
    assert len(data) == 100
    assert data[:4] == bytes.fromhex("a9059cbb")  # transfer(address,uint256)
    assert data[4:68] == encode(["address", "uint256"], [ESCROW, 250])
    assert decode(["address", "uint256"], data[4:68]) == (ESCROW.lower(), 250)
    assert data[68:] == ref
    with pytest.raises(ValueError, match="32 bytes"):
        erc20_payment_data(ESCROW, 1, b"\x01" * 31)
    with pytest.raises(ValueError, match="uint256"):
        erc20_payment_data(ESCROW, 2**256, ref)
    with pytest.raises(ValueError, match="uint256"):
        erc20_payment_data(ESCROW, -1, ref)


def test_payment_call_native_and_token() -> None:
    ref = reference_for("p")
    native = payment_call(ESCROW.lower(), 10**18, ref)
    assert (native.to, native.value, native.data) == (ESCROW, 10**18, ref)
    token = payment_call(ESCROW, 5, ref, TOKEN.lower())
    assert (token.to, token.value) == (TOKEN, 0)
    assert token.data == erc20_payment_data(ESCROW, 5, ref)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"tx_hash": "0x1234"}, "tx_hash"),
        ({"tx_hash": "ab" * 32}, "tx_hash"),
        ({"chain_id": 0}, "chain_id"),
        ({"pay_to": "0xnot-an-address"}, "pay_to"),
        ({"token": "0x123"}, "token"),
        ({"min_value": -1}, "min_value"),
        ({"reference": b"short"}, "reference"),
    ],
)
def test_payment_request_validates(change: dict[str, object], words: str) -> None:
    fields: dict[str, object] = {
        "tx_hash": "0x" + "ab" * 32,
        "chain_id": 31337,
        "pay_to": ESCROW,
        "min_value": 1,
        "token": None,
        "reference": reference_for("p"),
    }
    PaymentRequest(**fields)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=words):
        PaymentRequest(**(fields | change))  # type: ignore[arg-type]


async def test_client_from_config_and_backoff() -> None:
    with pytest.raises(ValueError, match=r"chain\.currency_chain_rpc is not set"):
        ChainClient.from_config(ChainConfig(), "currency")
    config = ChainConfig(
        currency_chain_rpc="http://user:hunter2-secret@127.0.0.1:1/rpc?apikey=abc123",
        rpc_timeout_secs=2,
        rpc_retries=4,
    )
    client = ChainClient.from_config(config, "currency")
    try:
        assert client.retries == 4
        assert [client.backoff(i) for i in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
        assert "hunter2-secret" not in repr(client)
        assert "abc123" not in repr(client)
    finally:
        await client.aclose()


async def test_refused_connection_is_chain_unavailable_without_the_secret() -> None:
    # port 1 on loopback: nothing listens, the connection is refused at once
    config = ChainConfig(
        currency_chain_rpc="http://user:hunter2-secret@127.0.0.1:1/rpc?apikey=abc123",
        rpc_retries=2,
    )
    client = ChainClient.from_config(config, "currency", backoff_base_secs=0.01)
    try:
        with pytest.raises(ChainUnavailable) as err:
            await client.block_number()
    finally:
        await client.aclose()
    assert err.value.attempts == 3
    assert err.value.operation == "eth_blockNumber"
    assert "hunter2-secret" not in str(err.value)
    assert "abc123" not in str(err.value)


async def test_a_leaked_web3_session_lock_does_not_hang_the_client() -> None:
    """web3's session manager guards its cache with one process-wide threading.Lock taken in a
    worker thread; a call cancelled while waiting leaks it (the worker takes it after the
    waiter left) and every later call of the process hung with no timer (CI, 2026-12-01).
    Hold that lock the way the leak does: this client still answers at once."""
    from web3._utils.http_session_manager import HTTPSessionManager

    assert HTTPSessionManager._lock.acquire(timeout=5)
    try:
        client = ChainClient("http://127.0.0.1:1/", timeout_secs=2, retries=0, name="currency")
        try:
            with pytest.raises(ChainUnavailable) as err:
                await asyncio.wait_for(client.block_number(), timeout=10)
        finally:
            await client.aclose()
    finally:
        HTTPSessionManager._lock.release()
    assert err.value.attempts == 1


async def test_calls_cancelled_mid_flight_leave_the_client_working() -> None:
    """A caller's timeout cancels calls at any point (the health check's 3 s): the next call
    on the same client still gets its answer."""
    client = ChainClient("http://127.0.0.1:1/", timeout_secs=2, retries=0, name="currency")
    try:
        for delay in (0, 0.0001, 0.001, 0.005):
            with contextlib.suppress(TimeoutError, ChainUnavailable):
                await asyncio.wait_for(client.block_number(), timeout=delay)
        with pytest.raises(ChainUnavailable, match="eth_blockNumber"):
            await asyncio.wait_for(client.block_number(), timeout=10)
    finally:
        await client.aclose()
