"""The node's own dependency components: ``/health/database`` and ``/health/chain``.

Design:
- These are ``Component`` implementations (``dchat_node.components``) registered by the
  services container (database) and by the server (chain), so the ops app's
  ``/health/<name>`` answers from the pod's own network with the pod's own credentials: what
  ``kubectl dchat doctor`` reads through the apiserver's pod proxy.
- ``database``: one ``ping`` (bounded by ``timeout``): ``ok``; ``standby`` when connected to a
  PostgreSQL standby (not writable); ``unreachable`` with the error's type (never its text,
  which can hold a DSN).
- ``chain``: ``eth_blockNumber`` on every configured chain RPC (``chain.chat_chain_rpc``,
  ``chain.currency_chain_rpc``), each bounded by ``timeout``; ``ok`` with the block heights,
  ``unreachable`` naming the chain and the client's redacted reason. With no RPC configured it
  reports ``disabled`` (unhealthy, so 503), the same word the ops app uses for an optional
  component a node does not run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dchat_node.chain.errors import ChainUnavailable
from dchat_node.components import ComponentStatus
from dchat_node.storage.errors import NotPrimary, StorageError

if TYPE_CHECKING:
    from dchat_node.chain import ChainClient
    from dchat_node.storage import Storage

DEFAULT_TIMEOUT = 3.0


class DatabaseComponent:
    """``/health/database``: the storage answers a ping, on a writable primary."""

    name = "database"

    def __init__(self, storage: Storage, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._storage = storage
        self._timeout = timeout

    async def status(self) -> ComponentStatus:
        engine = self._storage.engine
        try:
            await asyncio.wait_for(self._storage.ping(), timeout=self._timeout)
        except NotPrimary:
            return ComponentStatus(
                False,
                "standby",
                {"engine": engine, "reason": "connected to a standby, not a writable primary"},
            )
        except (StorageError, TimeoutError, OSError) as exc:
            return ComponentStatus(
                False, "unreachable", {"engine": engine, "reason": type(exc).__name__}
            )
        return ComponentStatus(True, "ok", {"engine": engine})


class ChainComponent:
    """``/health/chain``: every configured chain RPC answers ``eth_blockNumber``."""

    name = "chain"

    def __init__(
        self, clients: Mapping[str, ChainClient], timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        """``clients``: chain name (``chat``, ``currency``) -> its client."""
        self._clients = dict(clients)
        self._timeout = timeout

    async def status(self) -> ComponentStatus:
        if not self._clients:
            return ComponentStatus(False, "disabled", {"reason": "no chain RPC configured"})
        details: dict[str, Any] = {}
        failed: list[str] = []
        for name, client in sorted(self._clients.items()):
            try:
                height = await asyncio.wait_for(client.block_number(), timeout=self._timeout)
            except ChainUnavailable as exc:
                failed.append(name)
                details[name] = {"ok": False, "reason": str(exc)}
            except TimeoutError:
                failed.append(name)
                details[name] = {"ok": False, "reason": f"no answer in {self._timeout:g} s"}
            else:
                details[name] = {"ok": True, "block": height}
        if failed:
            details["reason"] = "chain RPC not answering: " + ", ".join(failed)
            return ComponentStatus(False, "unreachable", details)
        return ComponentStatus(True, "ok", details)
