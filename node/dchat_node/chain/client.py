"""An async EVM JSON-RPC client on web3.py's async API, with bounded retries.

Design:
- ``AsyncWeb3(AsyncHTTPProvider)`` with web3's own retry turned off
  (``exception_retry_configuration=None``): this client does the retrying, so the bound is
  one place: ``retries`` more attempts after the first, sleeping ``backoff_base_secs * 2**i``
  (capped at ``backoff_max_secs``) between them. Each attempt has the whole
  ``timeout_secs`` (aiohttp's total timeout, ``chain.rpc_timeout_secs``).
- Retried: transport failures (connection refused or reset, timeouts, HTTP 408/429/5xx).
  Not retried: a JSON-RPC error answer (the node answered; asking again gives the same
  answer). Both end as ``ChainUnavailable`` naming the call, the attempts and the cause,
  never as another exception type; "not found" answers are ``None``, not errors.
- The results are small frozen dataclasses with 0x-hex strings and checksummed addresses,
  so callers (payments, the bridge) do not depend on web3's AttributeDict and HexBytes.
- The URL may carry an API key: it is logged only through ``redact_url``.
- Each client owns its aiohttp session (``_LoopSessionManager``). web3's own session manager
  guards its cache with one ``threading.Lock`` shared by every provider in the process and
  takes it in a thread-pool worker; a call cancelled while waiting for it (a health check's
  timeout) leaves the worker to take the lock with nobody to release it, and from then on
  every chain call of the process hangs with no timer armed. Seen in CI; the test holds that
  lock and shows this client does not care.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import aiohttp
from aiohttp import ClientSession, ClientTimeout, TCPConnector
from eth_utils.address import to_checksum_address
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3._utils.http_session_manager import HTTPSessionManager
from web3.exceptions import (
    BlockNotFound,
    ProviderConnectionError,
    RequestTimedOut,
    TooManyRequests,
    TransactionNotFound,
    Web3Exception,
)

from dchat_node.chain.errors import ChainUnavailable
from dchat_node.config import ChainConfig, redact_url

log = logging.getLogger(__name__)

# web3 imports py_ecc, which raises the interpreter's recursion limit to 100000 on import:
# deep recursion anywhere in the node would then overflow the C stack and kill the process
# instead of raising RecursionError. Nothing the node calls needs it; put it back.
if sys.getrecursionlimit() > 10_000:
    sys.setrecursionlimit(1000)

T = TypeVar("T")
BlockTag = Literal["latest", "safe", "finalized"]
ChainName = Literal["currency", "chat"]
_RETRIED_HTTP_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class BlockRef:
    number: int
    hash: str  # 0x-hex, lower case


@dataclass(frozen=True, slots=True)
class BlockHeader:
    number: int
    hash: str  # 0x-hex, lower case
    timestamp: int  # unix seconds


@dataclass(frozen=True, slots=True)
class ChainTransaction:
    hash: str
    sender: str  # checksummed
    to: str | None  # checksummed; None for a contract creation
    value: int
    input: bytes
    block_number: int | None  # None while in the mempool
    block_hash: str | None


@dataclass(frozen=True, slots=True)
class ChainLog:
    address: str  # checksummed
    topics: tuple[bytes, ...]
    data: bytes
    tx_hash: str | None = None  # set by ``logs`` (eth_getLogs), not by receipts
    block_number: int | None = None
    block_hash: str | None = None


@dataclass(frozen=True, slots=True)
class ChainReceipt:
    tx_hash: str
    status: int  # 1 success, 0 reverted
    block_number: int
    block_hash: str
    logs: tuple[ChainLog, ...]


def _hex(value: Any) -> str:
    raw = bytes(value) if not isinstance(value, str) else bytes.fromhex(value.removeprefix("0x"))
    return "0x" + raw.hex()


def _transient(exc: BaseException) -> bool:
    """A failure worth another attempt: the request may not have reached a working node."""
    if isinstance(exc, aiohttp.ClientResponseError):
        return exc.status in _RETRIED_HTTP_STATUS
    return isinstance(
        exc,
        aiohttp.ClientError
        | TimeoutError
        | OSError
        | ProviderConnectionError
        | RequestTimedOut
        | TooManyRequests,
    )


class _LoopSessionManager(HTTPSessionManager):
    """web3's session manager with one session per event loop and no lock: on one loop the
    check and the insert run without an await between them, so nothing can interleave."""

    async def async_cache_and_return_session(
        self,
        endpoint_uri: Any,
        session: ClientSession | None = None,
        request_timeout: ClientTimeout | None = None,
    ) -> ClientSession:
        key = f"loop-{id(asyncio.get_running_loop())}"
        cached: ClientSession | None = self.session_cache.get_cache_entry(key)
        if cached is not None and not cached.closed and not cached._loop.is_closed():
            return cached
        if cached is not None:
            self.session_cache._data.pop(key, None)
            if not cached.closed and not cached._loop.is_closed():
                await cached.close()
        fresh = session or ClientSession(
            raise_for_status=True,
            connector=TCPConnector(force_close=True, enable_cleanup_closed=True),
        )
        self.session_cache.cache(key, fresh)
        return fresh


class _ChainHTTPProvider(AsyncHTTPProvider):
    def __init__(self, endpoint_uri: str, **kwargs: Any) -> None:
        super().__init__(endpoint_uri, **kwargs)
        self._request_session_manager = _LoopSessionManager()


class ChainClient:
    """One chain's JSON-RPC endpoint. ``aclose()`` when done."""

    def __init__(
        self,
        url: str,
        *,
        timeout_secs: float,
        retries: int,
        backoff_base_secs: float = 0.5,
        backoff_max_secs: float = 8.0,
        name: str = "chain",
    ) -> None:
        if timeout_secs <= 0 or retries < 0 or backoff_base_secs < 0:
            raise ValueError("timeout_secs must be > 0, retries and backoff_base_secs >= 0")
        self.name = name
        self.retries = retries
        self.backoff_base_secs = backoff_base_secs
        self.backoff_max_secs = backoff_max_secs
        self._url = url
        self._url_for_logs = redact_url(url)
        self._provider = _ChainHTTPProvider(
            url,
            request_kwargs={"timeout": aiohttp.ClientTimeout(total=timeout_secs)},
            exception_retry_configuration=None,
        )
        self._w3 = AsyncWeb3(self._provider)
        self._chain_id: int | None = None

    @classmethod
    def from_config(cls, config: ChainConfig, chain: ChainName, **kwargs: Any) -> ChainClient:
        """The client of ``chain.<chain>_chain_rpc``; ValueError naming the key when unset."""
        url = config.currency_chain_rpc if chain == "currency" else config.chat_chain_rpc
        if not url:
            raise ValueError(f"chain.{chain}_chain_rpc is not set")
        return cls(
            url,
            timeout_secs=config.rpc_timeout_secs,
            retries=config.rpc_retries,
            name=chain,
            **kwargs,
        )

    def __repr__(self) -> str:
        return f"ChainClient({self.name}, {self._url_for_logs})"

    async def aclose(self) -> None:
        await self._provider.disconnect()

    def backoff(self, attempt: int) -> float:
        """Seconds slept after failed attempt number ``attempt`` (0-based)."""
        return float(min(self.backoff_max_secs, self.backoff_base_secs * 2**attempt))

    async def _call(self, operation: str, fn: Callable[[], Awaitable[T]]) -> T:
        attempts = self.retries + 1
        for attempt in range(attempts):
            try:
                return await fn()
            except (Web3Exception, aiohttp.ClientError, TimeoutError, OSError) as exc:
                if not _transient(exc) or attempt + 1 == attempts:
                    raise ChainUnavailable(operation, attempt + 1, self._describe(exc)) from exc
            delay = self.backoff(attempt)
            log.warning(
                "%s chain %s: %s failed (attempt %d of %d), retrying in %.2f s",
                self.name,
                self._url_for_logs,
                operation,
                attempt + 1,
                attempts,
                delay,
            )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def chain_id(self) -> int:
        """eth_chainId, asked once per client."""
        if self._chain_id is None:

            async def get() -> int:
                return int(await self._w3.eth.chain_id)

            self._chain_id = await self._call("eth_chainId", get)
        return self._chain_id

    async def block_number(self) -> int:
        async def get() -> int:
            return int(await self._w3.eth.block_number)

        return await self._call("eth_blockNumber", get)

    async def block(self, ref: int | BlockTag) -> BlockRef | None:
        """The block at a height or tag; None when the chain has no such block."""

        async def get() -> BlockRef | None:
            try:
                block = await self._w3.eth.get_block(ref)
            except BlockNotFound:
                return None
            return BlockRef(number=int(block["number"]), hash=_hex(block["hash"]))

        return await self._call(f"eth_getBlockByNumber({ref})", get)

    async def transaction(self, tx_hash: str) -> ChainTransaction | None:
        async def get() -> ChainTransaction | None:
            try:
                tx = await self._w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
            except TransactionNotFound:
                return None
            to = tx.get("to")
            block_number = tx.get("blockNumber")
            block_hash = tx.get("blockHash")
            return ChainTransaction(
                hash=_hex(tx["hash"]),
                sender=to_checksum_address(tx["from"]),
                to=to_checksum_address(to) if to else None,
                value=int(tx["value"]),
                input=bytes(tx["input"]),
                block_number=int(block_number) if block_number is not None else None,
                block_hash=_hex(block_hash) if block_hash is not None else None,
            )

        return await self._call("eth_getTransactionByHash", get)

    async def receipt(self, tx_hash: str) -> ChainReceipt | None:
        async def get() -> ChainReceipt | None:
            try:
                rcpt = await self._w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
            except TransactionNotFound:
                return None
            return ChainReceipt(
                tx_hash=_hex(rcpt["transactionHash"]),
                status=int(rcpt["status"]),
                block_number=int(rcpt["blockNumber"]),
                block_hash=_hex(rcpt["blockHash"]),
                logs=tuple(
                    ChainLog(
                        address=to_checksum_address(entry["address"]),
                        topics=tuple(bytes(t) for t in entry["topics"]),
                        data=bytes(entry["data"]),
                    )
                    for entry in rcpt["logs"]
                ),
            )

        return await self._call("eth_getTransactionReceipt", get)

    async def header(self, ref: int | BlockTag) -> BlockHeader | None:
        """Number, hash and timestamp of the block at a height or tag; None when absent."""

        async def get() -> BlockHeader | None:
            try:
                block = await self._w3.eth.get_block(ref)
            except BlockNotFound:
                return None
            return BlockHeader(
                number=int(block["number"]),
                hash=_hex(block["hash"]),
                timestamp=int(block["timestamp"]),
            )

        return await self._call(f"eth_getBlockByNumber({ref})", get)

    async def logs(
        self, address: str, topic0: bytes, from_block: int, to_block: int
    ) -> list[ChainLog]:
        """eth_getLogs of one contract and event in a block range (inclusive)."""

        async def get() -> list[ChainLog]:
            entries = await self._w3.eth.get_logs(
                {
                    "address": to_checksum_address(address),
                    "topics": ["0x" + topic0.hex()],
                    "fromBlock": from_block,
                    "toBlock": to_block,
                }
            )
            return [
                ChainLog(
                    address=to_checksum_address(e["address"]),
                    topics=tuple(bytes(t) for t in e["topics"]),
                    data=bytes(e["data"]),
                    tx_hash=_hex(e["transactionHash"]),
                    block_number=int(e["blockNumber"]),
                    block_hash=_hex(e["blockHash"]),
                )
                for e in entries
                if not e.get("removed", False)
            ]

        return await self._call("eth_getLogs", get)

    async def call(
        self, to: str, data: bytes, *, block: int | BlockTag = "latest", sender: str | None = None
    ) -> bytes:
        """eth_call; the return data. A revert is a JSON-RPC error answer, so it surfaces as
        ``ChainUnavailable`` (not retried) carrying the node's message."""
        tx: dict[str, Any] = {"to": to_checksum_address(to), "data": "0x" + data.hex()}
        if sender is not None:
            tx["from"] = to_checksum_address(sender)

        async def get() -> bytes:
            return bytes(await self._w3.eth.call(tx, block))  # type: ignore[arg-type]

        return await self._call("eth_call", get)

    async def nonce(self, address: str) -> int:
        async def get() -> int:
            return int(
                await self._w3.eth.get_transaction_count(to_checksum_address(address), "pending")
            )

        return await self._call("eth_getTransactionCount", get)

    async def gas_price(self) -> int:
        async def get() -> int:
            return int(await self._w3.eth.gas_price)

        return await self._call("eth_gasPrice", get)

    async def send_raw_transaction(self, raw: bytes) -> str:
        """Broadcasts a signed transaction; its hash."""

        async def send() -> str:
            return _hex(await self._w3.eth.send_raw_transaction(raw))

        return await self._call("eth_sendRawTransaction", send)

    def _describe(self, exc: BaseException) -> str:
        """The cause for messages and logs: exception type and text, the URL redacted (aiohttp
        puts the request URL into HTTP status errors)."""
        text = redact_url(str(exc).replace(self._url, self._url_for_logs))
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
