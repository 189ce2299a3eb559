"""Running the bridge in a node: build the worker from config, register its health.

Design:
- ``BridgeRuntime(config, store, metrics, pubsub)`` is what the server starts when
  ``bridge.chat_vault_address`` and ``bridge.currency_vault_address`` are set. It creates
  one ``ChainClient`` per chain (``chain.*_chain_rpc``) and finality policy
  (``chain.*_chain_finality``), reads the keys of its roles from their files, learns both
  chain ids (retrying while a chain is down: a node whose chain is unreachable at start
  still starts, ``/health/bridge`` says ``starting``), then runs the ``BridgeWorker``.
- ``on_chains`` (the API's ``BridgeService.set_chains``) learns {chain id: vault} once both
  chain ids are read, for ``POST /api/v1/bridge/initiate``.
- ``status()`` is the ``bridge`` component of ``/health/bridge``.
- web3 is imported here only, i.e. only when a bridge is configured.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from dchat_node.bridge.store import BridgeStore
from dchat_node.components import ComponentStatus
from dchat_node.config import NodeConfig
from dchat_node.observability.metrics import BridgeMetrics
from dchat_node.p2p.pubsub import PubSub

if TYPE_CHECKING:
    from dchat_node.bridge.worker import BridgeWorker
    from dchat_node.chain.client import ChainClient

log = logging.getLogger("dchat_node.bridge")


class BridgeRuntime:
    name = "bridge"

    def __init__(
        self,
        config: NodeConfig,
        store: BridgeStore,
        metrics: BridgeMetrics,
        pubsub: PubSub | None,
        on_chains: Callable[[dict[int, str]], None] | None = None,
    ) -> None:
        self.on_chains = on_chains
        self.config = config
        self.store = store
        self.metrics = metrics
        self.pubsub = pubsub
        self.worker: BridgeWorker | None = None
        self.clients: list[ChainClient] = []
        self.startup_error: str | None = None

    async def run(self) -> None:
        from dchat_node.bridge.worker import BridgeWorker, ChainSide, read_key
        from dchat_node.chain import ChainClient, ChainUnavailable, FinalityPolicy

        b = self.config.bridge
        validator = (
            read_key(b.validator_key_path, "bridge.validator_key_path")
            if "validator" in b.roles and b.validator_key_path
            else None
        )
        relayer = (
            read_key(b.relayer_key_path, "bridge.relayer_key_path")
            if "relayer" in b.roles and b.relayer_key_path
            else None
        )
        sides = []
        for name, vault in (("chat", b.chat_vault_address), ("currency", b.currency_vault_address)):
            assert vault is not None
            client = ChainClient.from_config(self.config.chain, name)  # type: ignore[arg-type]
            self.clients.append(client)
            policy = FinalityPolicy.from_config(self.config.chain, name)  # type: ignore[arg-type]
            while True:
                try:
                    chain_id = await client.chain_id()
                    break
                except ChainUnavailable as exc:
                    self.startup_error = f"{name} chain: {exc}"
                    log.warning("bridge waits for the %s chain: %s", name, exc)
                    await asyncio.sleep(b.poll_interval_secs)
            sides.append(ChainSide(name, chain_id, vault, client, policy))
        self.startup_error = None
        if self.on_chains is not None:
            self.on_chains({s.chain_id: s.vault for s in sides})
        self.worker = BridgeWorker(
            b, self.store, sides, self.pubsub, self.metrics, validator=validator, relayer=relayer
        )
        log.info(
            "bridge running: roles %s, validator %s, chains %s",
            list(b.roles),
            validator.address if validator else None,
            {s.name: s.chain_id for s in sides},
        )
        await self.worker.run()

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()

    async def status(self) -> ComponentStatus:
        if self.worker is None:
            return ComponentStatus(
                healthy=False,
                state="starting",
                details={"paused": self.config.bridge.paused, "error": self.startup_error},
            )
        return await self.worker.status()
