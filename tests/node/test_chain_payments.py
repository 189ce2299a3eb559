"""Payment verification against a real anvil: real JSON-RPC, receipts, blocks and reorgs.

One anvil for the module (the ``anvil`` fixture), each test on a snapshot (``chain``) that is
reverted after it; the outage tests start their own anvil, since they stop it. The TestToken
contract is compiled by ``make chain`` (scripts/compile-contracts.mjs), not here.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from dchat_node.chain import (
    ChainClient,
    ChainUnavailable,
    FinalityPolicy,
    PaymentObservation,
    PaymentRequest,
    PaymentState,
    Web3PaymentVerifier,
    payment_call,
    reference_for,
)
from tests.harness.chain import Anvil, load_artifact

pytestmark = pytest.mark.integration

CHAIN_ID = 31337
PRICE = 10**18
TOKEN_PRICE = 250 * 10**18


@pytest.fixture(scope="module")
def token(anvil: Anvil) -> str:
    """TestToken deployed by account 0, 1,000 tokens minted to account 1 (the payer)."""
    address = anvil.deploy(load_artifact("TestToken"), "Test Token", "TST")
    anvil.erc20_mint(address, anvil.accounts[1], 1000 * 10**18)
    return address


@pytest.fixture
def payer(chain: Anvil) -> str:
    return chain.accounts[1]


@pytest.fixture
def escrow(chain: Anvil) -> str:
    return chain.accounts[9]


def client_for(node: Anvil, **kwargs: float) -> ChainClient:
    opts: dict[str, float] = {"timeout_secs": 2, "retries": 2, "backoff_base_secs": 0.05}
    opts.update(kwargs)
    return ChainClient(
        node.url,
        timeout_secs=opts["timeout_secs"],
        retries=int(opts["retries"]),
        backoff_base_secs=opts["backoff_base_secs"],
    )


@pytest.fixture
async def client(chain: Anvil) -> AsyncIterator[ChainClient]:
    c = client_for(chain)
    try:
        yield c
    finally:
        await c.aclose()


@pytest.fixture
def verifier(client: ChainClient) -> Web3PaymentVerifier:
    """Final at 3 confirmations: the paying block and two more."""
    return Web3PaymentVerifier(client, FinalityPolicy(confirmations=3))


def request(
    tx_hash: str,
    pay_to: str,
    *,
    key: str = "purchase-1",
    min_value: int = PRICE,
    token: str | None = None,
    chain_id: int = CHAIN_ID,
) -> PaymentRequest:
    return PaymentRequest(
        tx_hash=tx_hash,
        chain_id=chain_id,
        pay_to=pay_to,
        min_value=min_value,
        token=token,
        reference=reference_for(key),
    )


def pay(
    node: Anvil,
    payer: str,
    pay_to: str,
    amount: int,
    *,
    key: str = "purchase-1",
    token: str | None = None,
) -> str:
    call = payment_call(pay_to, amount, reference_for(key), token)
    return node.send(payer, call.to, value=call.value, data=call.data)


def assert_invalid(obs: PaymentObservation, words: str) -> None:
    assert obs.state is PaymentState.INVALID, obs
    assert words in obs.reason, obs


async def test_native_payment_pending_then_confirmed(
    chain: Anvil, verifier: Web3PaymentVerifier, payer: str, escrow: str
) -> None:
    before = chain.balance(escrow)
    tx = pay(chain, payer, escrow, PRICE)
    block = chain.block_number()

    first = await verifier.check(request(tx, escrow.lower()))
    assert first.state is PaymentState.PENDING, first
    assert first.confirmations == 1
    assert "1 of 3 confirmations" in first.reason

    chain.mine(2)
    done = await verifier.check(request(tx, escrow))
    assert done.state is PaymentState.CONFIRMED, done
    assert (done.block_number, done.block_hash) == (block, chain.block_hash(block))
    assert (done.value, done.payer, done.confirmations) == (PRICE, payer, 3)
    assert chain.balance(escrow) - before == PRICE
    assert await verifier.still_canonical(block, chain.block_hash(block))


async def test_erc20_payment_confirmed(
    chain: Anvil, token: str, verifier: Web3PaymentVerifier, payer: str, escrow: str
) -> None:
    tx = pay(chain, payer, escrow, TOKEN_PRICE, token=token)
    chain.mine(2)
    obs = await verifier.check(request(tx, escrow, min_value=TOKEN_PRICE, token=token.lower()))
    assert obs.state is PaymentState.CONFIRMED, obs
    assert (obs.value, obs.payer) == (TOKEN_PRICE, payer)
    assert chain.erc20_balance(token, escrow) == TOKEN_PRICE


async def test_a_mempool_payment_is_pending_until_mined(
    chain: Anvil, verifier: Web3PaymentVerifier, payer: str, escrow: str
) -> None:
    chain.set_automine(False)
    tx = pay(chain, payer, escrow, PRICE)
    obs = await verifier.check(request(tx, escrow))
    assert obs.state is PaymentState.PENDING, obs
    assert (obs.reason, obs.block_number, obs.confirmations) == (
        "in the mempool, not mined yet",
        None,
        0,
    )
    chain.mine(3)
    assert (await verifier.check(request(tx, escrow))).state is PaymentState.CONFIRMED


async def test_underpayment_is_invalid(
    chain: Anvil, token: str, verifier: Web3PaymentVerifier, payer: str, escrow: str
) -> None:
    tx = pay(chain, payer, escrow, PRICE - 1)
    assert_invalid(await verifier.check(request(tx, escrow)), f"below {PRICE}")
    tx = pay(chain, payer, escrow, TOKEN_PRICE - 1, key="p2", token=token)
    obs = await verifier.check(request(tx, escrow, key="p2", min_value=TOKEN_PRICE, token=token))
    assert_invalid(obs, "underpaid")
    assert obs.value == TOKEN_PRICE - 1


async def test_payment_to_the_wrong_address_is_invalid(
    chain: Anvil, token: str, verifier: Web3PaymentVerifier, payer: str, escrow: str
) -> None:
    other = chain.accounts[8]
    tx = pay(chain, payer, other, PRICE)
    assert_invalid(await verifier.check(request(tx, escrow)), "not the escrow")
    tx = pay(chain, payer, other, TOKEN_PRICE, token=token)
    obs = await verifier.check(request(tx, escrow, min_value=TOKEN_PRICE, token=token))
    assert_invalid(obs, f"transfer to {other}, not the escrow")
    # the right recipient in the wrong token
    other_token = chain.deploy(load_artifact("TestToken"), "Other", "OTH")
    chain.erc20_mint(other_token, payer, TOKEN_PRICE)
    tx = pay(chain, payer, escrow, TOKEN_PRICE, token=other_token)
    obs = await verifier.check(request(tx, escrow, min_value=TOKEN_PRICE, token=token))
    assert_invalid(obs, "not the token")


async def test_wrong_or_missing_reference_is_invalid(
    chain: Anvil, token: str, verifier: Web3PaymentVerifier, payer: str, escrow: str
) -> None:
    tx = pay(chain, payer, escrow, PRICE, key="another purchase")
    assert_invalid(await verifier.check(request(tx, escrow)), "does not match this purchase")
    tx = chain.send(payer, escrow, value=PRICE)  # a bare transfer
    assert_invalid(await verifier.check(request(tx, escrow)), "carries no purchase reference")
    tx = chain.erc20_transfer(token, payer, escrow, TOKEN_PRICE)  # a plain ERC-20 transfer
    obs = await verifier.check(request(tx, escrow, min_value=TOKEN_PRICE, token=token))
    assert_invalid(obs, "carries no purchase reference")
    tx = chain.erc20_transfer(token, payer, escrow, TOKEN_PRICE, suffix=reference_for("x"))
    obs = await verifier.check(request(tx, escrow, min_value=TOKEN_PRICE, token=token))
    assert_invalid(obs, "does not match this purchase")


async def test_reverted_transfer_is_invalid(
    chain: Anvil, token: str, verifier: Web3PaymentVerifier, escrow: str
) -> None:
    broke = chain.accounts[2]  # holds no tokens: the transfer reverts, and is mined
    assert chain.erc20_balance(token, broke) == 0
    tx = pay(chain, broke, escrow, TOKEN_PRICE, token=token)
    receipt = chain.receipt(tx)
    assert receipt is not None
    assert int(receipt["status"], 16) == 0
    chain.mine(5)
    obs = await verifier.check(request(tx, escrow, min_value=TOKEN_PRICE, token=token))
    assert (obs.state, obs.reason, obs.value) == (PaymentState.INVALID, "reverted", 0)
    assert obs.block_number == int(receipt["blockNumber"], 16)


async def test_wrong_chain_and_unknown_transaction(
    chain: Anvil, verifier: Web3PaymentVerifier, payer: str, escrow: str
) -> None:
    tx = pay(chain, payer, escrow, PRICE)
    chain.mine(2)
    assert_invalid(await verifier.check(request(tx, escrow, chain_id=1)), "wrong chain")
    unknown = await verifier.check(request("0x" + "ab" * 32, escrow))
    assert unknown.state is PaymentState.NOT_FOUND
    assert unknown.block_number is None
    assert unknown.payer is None


@pytest.mark.parametrize(("tag", "epochs"), [("safe", 1), ("finalized", 2)])
async def test_block_tag_policies(
    chain: Anvil, client: ChainClient, payer: str, escrow: str, tag: str, epochs: int
) -> None:
    verifier = Web3PaymentVerifier(client, FinalityPolicy.parse(tag))
    tx = pay(chain, payer, escrow, PRICE)
    block = chain.block_number()
    lag = epochs * chain.slots_in_an_epoch  # anvil: safe = head - 1 epoch, finalized = 2
    chain.mine(lag - 1)
    obs = await verifier.check(request(tx, escrow))
    assert obs.state is PaymentState.PENDING, obs
    tagged = int(chain.rpc("eth_getBlockByNumber", tag, False)["number"], 16)
    assert tagged == block - 1
    assert f"{tag} block {block - 1}" in obs.reason
    chain.mine(1)
    obs = await verifier.check(request(tx, escrow))
    assert obs.state is PaymentState.CONFIRMED, obs
    assert obs.confirmations == lag + 1


async def test_reorg_drops_a_confirmed_payment(
    chain: Anvil, verifier: Web3PaymentVerifier, payer: str, escrow: str
) -> None:
    fork_point = chain.snapshot()
    tx = pay(chain, payer, escrow, PRICE)
    chain.mine(2)
    obs = await verifier.check(request(tx, escrow))
    assert obs.state is PaymentState.CONFIRMED, obs
    assert obs.block_number is not None
    assert obs.block_hash is not None

    assert chain.revert(fork_point)  # the other branch: the payment's blocks are gone
    chain.mine(5)
    assert chain.block_number() >= obs.block_number
    assert chain.block_hash(obs.block_number) != obs.block_hash
    assert not await verifier.still_canonical(obs.block_number, obs.block_hash)
    again = await verifier.check(request(tx, escrow))
    assert again.state is PaymentState.NOT_FOUND, again
    # a height above the head is not canonical either
    assert not await verifier.still_canonical(chain.block_number() + 10, obs.block_hash)


async def test_rpc_outage_during_confirmation(anvil_factory: Callable[..., Anvil]) -> None:
    node = anvil_factory(chain_id=CHAIN_ID)
    payer, escrow = node.accounts[1], node.accounts[9]
    tx = pay(node, payer, escrow, PRICE)
    client = client_for(node, timeout_secs=1, retries=2, backoff_base_secs=0.1)
    verifier = Web3PaymentVerifier(client, FinalityPolicy(confirmations=3))
    try:
        assert (await verifier.check(request(tx, escrow))).state is PaymentState.PENDING
        node.stop()
        started = time.monotonic()
        with pytest.raises(ChainUnavailable) as err:
            await verifier.check(request(tx, escrow))
        elapsed = time.monotonic() - started
        assert err.value.attempts == 3
        assert "eth_getTransactionByHash" in str(err.value)
        # 3 refused connections and backoffs of 0.1 + 0.2 s: bounded, no hang
        assert elapsed < 3, elapsed
        with pytest.raises(ChainUnavailable):
            await verifier.still_canonical(1, "0x" + "00" * 32)

        node.restart()  # the same chain (state file) on the same port
        node.mine(2)
        obs = await verifier.check(request(tx, escrow))
        assert obs.state is PaymentState.CONFIRMED, obs
        assert obs.block_hash is not None
        assert obs.block_number is not None
        assert await verifier.still_canonical(obs.block_number, obs.block_hash)
    finally:
        await client.aclose()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback server that accepts connections and never answers (a hung RPC node)."""
    listener = socket.create_server(("127.0.0.1", 0))
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conns.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(2)
        listener.close()
        for conn in conns:
            conn.close()


async def test_a_hung_rpc_node_times_out_into_chain_unavailable(silent_server: int) -> None:
    client = ChainClient(
        f"http://127.0.0.1:{silent_server}", timeout_secs=0.3, retries=1, backoff_base_secs=0.05
    )
    try:
        started = time.monotonic()
        with pytest.raises(ChainUnavailable) as err:
            await client.chain_id()
        elapsed = time.monotonic() - started
    finally:
        await client.aclose()
    assert err.value.attempts == 2
    assert "Timeout" in err.value.cause
    assert 0.6 <= elapsed < 2, elapsed


async def test_concurrent_checks_share_one_client(
    chain: Anvil, verifier: Web3PaymentVerifier, payer: str, escrow: str
) -> None:
    txs = [pay(chain, payer, escrow, PRICE, key=f"p{i}") for i in range(5)]
    chain.mine(2)
    results = await asyncio.gather(
        *(verifier.check(request(tx, escrow, key=f"p{i}")) for i, tx in enumerate(txs))
    )
    assert [r.state for r in results] == [PaymentState.CONFIRMED] * 5
    # each transaction pays only its own purchase
    cross = await verifier.check(request(txs[0], escrow, key="p1"))
    assert_invalid(cross, "does not match this purchase")
