"""The bridge end to end: two anvil chains (chain ids 3001, 3002) with a BridgeVault each,
three real node processes (``dchat``), each a validator (anvil accounts 5, 6, 7) and a
relayer (accounts 2, 3, 4), gossiping attestations over real libp2p on loopback (each node's
``relay.bootstrap_nodes`` names the other two).

- 2 of 3: one node stopped, a deposit is released on the other chain; the release's
  attestation replayed on chain is rejected; ``/health/bridge`` shows the stopped validator
  unreachable; the API serves the transfer.
- RPC outage: the destination chain is stopped while a deposit is made, then restarted; the
  transfer completes.
- 1 of 3 plus forged gossip: a libp2p peer run by the test publishes attestations signed
  by a non-validator key and one claiming a validator's address; the transfer is not
  released, times out to refund_pending (``bridge_finality_proof_timeout_total`` on the
  node's /metrics), and after the deadline a second validator back online lets it refund.
- pause: the paused files of all three nodes say true: nothing is signed (health says
  paused); back to false, the transfer is released.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from dchat_node.bridge import gossip
from dchat_node.bridge.messages import Signer, release_calldata
from tests.harness.chain import Anvil, private_key
from tests.harness.net import free_port
from tests.node.bridge_helpers import Bridge, deploy_bridge, increase_time, revert_error
from tests.node.conftest import NodeProcess
from tests.node.test_bridge_worker import Miner

pytestmark = [pytest.mark.integration, pytest.mark.timeout(360)]

VALIDATORS = (5, 6, 7)
RELAYERS = (2, 3, 4)
TIMEOUT_METRIC = re.compile(r"^bridge_finality_proof_timeout_total (\S+)$", re.MULTILINE)


@dataclass
class Cluster:
    bridge: Bridge
    nodes: list[NodeProcess | None]
    start: Callable[[int], NodeProcess]
    pause_flag_paths: list[Path]
    p2p_addrs: list[str]

    def node(self, i: int) -> NodeProcess:
        node = self.nodes[i]
        assert node is not None
        return node

    def transfer(self, i: int, transfer_id: str) -> dict[str, Any] | None:
        r = httpx.get(f"{self.node(i).api}/api/v1/bridge/transfers/{transfer_id}", timeout=5)
        if r.status_code == 404:
            return None
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def wait_state(
        self, i: int, transfer_id: str, states: set[str], timeout: float = 30
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.transfer(i, transfer_id)
            if last is not None and last["state"] in states:
                return last
            time.sleep(0.2)
        raise AssertionError(
            f"{transfer_id} not in {states} on node {i}: {last}\n{self.node(i).log()[-4000:]}"
        )

    def health(self, i: int) -> tuple[int, dict[str, Any]]:
        r = httpx.get(f"{self.node(i).ops}/health/bridge", timeout=5)
        return r.status_code, r.json()

    def metric(self, i: int, pattern: re.Pattern[str]) -> float:
        text = httpx.get(f"{self.node(i).ops}/metrics", timeout=5).text
        found = pattern.search(text)
        assert found is not None
        return float(found.group(1))


def _peer_id(key_path: Path) -> str:
    from libp2p.peer.id import ID

    from dchat_node.p2p.host import load_or_create_key

    return ID.from_pubkey(load_or_create_key(key_path).public_key).to_base58()


@pytest.fixture
def cluster(
    anvil_factory: Callable[..., Anvil], start_node: Callable[..., NodeProcess], tmp_path: Path
) -> Cluster:
    a = anvil_factory(chain_id=3001)
    b = anvil_factory(chain_id=3002)
    bridge = deploy_bridge(a, b, window=3600)
    p2p_ports = [free_port() for _ in VALIDATORS]
    ids, keys, paused = [], [], []
    for i, (v, r) in enumerate(zip(VALIDATORS, RELAYERS, strict=True)):
        d = tmp_path / f"secrets{i}"
        d.mkdir()
        (d / "validator.key").write_text(private_key(v).hex())
        (d / "relayer.key").write_text("0x" + private_key(r).hex())
        (d / "paused").write_text("false")
        paused.append(d / "paused")
        ids.append(_peer_id(d / "identity.key"))
        keys.append(d)
    addrs = [f"/ip4/127.0.0.1/tcp/{p}/p2p/{pid}" for p, pid in zip(p2p_ports, ids, strict=True)]
    nodes: list[NodeProcess | None] = [None, None, None]

    def start(i: int) -> NodeProcess:
        env = {
            "DCHAT_P2P_PORT": str(p2p_ports[i]),
            "DATABASE_URL": f"sqlite:///{tmp_path}/node{i}/dchat.db",  # survives restarts
            "CHAT_CHAIN_RPC": a.url,
            "CURRENCY_CHAIN_RPC": b.url,
            "DCHAT_CHAIN__CHAT_CHAIN_FINALITY": "2",
            "DCHAT_CHAIN__CURRENCY_CHAIN_FINALITY": "2",
            "DCHAT_CHAIN__RPC_TIMEOUT_SECS": "2",
            "DCHAT_CHAIN__RPC_RETRIES": "0",
            "DCHAT_RELAY__IDENTITY_KEY_PATH": str(keys[i] / "identity.key"),
            "RELAY_BOOTSTRAP_NODES": ",".join(x for j, x in enumerate(addrs) if j != i),
            "DCHAT_BRIDGE__CHAT_VAULT_ADDRESS": bridge.vault_a,
            "DCHAT_BRIDGE__CURRENCY_VAULT_ADDRESS": bridge.vault_b,
            "DCHAT_BRIDGE__VALIDATORS": ",".join(s.address for s in bridge.validators),
            "DCHAT_BRIDGE__VALIDATOR_QUORUM": "2",
            "DCHAT_BRIDGE__ROLES": "validator,relayer",
            "DCHAT_BRIDGE__VALIDATOR_KEY_PATH": str(keys[i] / "validator.key"),
            "DCHAT_BRIDGE__RELAYER_KEY_PATH": str(keys[i] / "relayer.key"),
            "DCHAT_BRIDGE__PAUSE_FLAG_PATH": str(paused[i]),
            "DCHAT_BRIDGE__POLL_INTERVAL_SECS": "0.25",
            "DCHAT_BRIDGE__FINALITY_PROOF_TIMEOUT_SECS": "6",
        }
        node = start_node(env=env, own_database=False)
        nodes[i] = node
        return node

    for i in range(3):
        start(i)
    for i in range(3):
        cluster_node = nodes[i]
        assert cluster_node is not None
        cluster_node.wait_ready(120)
    return Cluster(bridge, nodes, start, paused, addrs)


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _deposit_built_by_initiate(cluster: Cluster) -> None:
    """A wallet's deposit built by POST /initiate (the node holds no user key): released."""
    br = cluster.bridge
    a, b = br.a, br.b
    other_recipient = b.accounts[4]
    unsigned = httpx.post(
        f"{cluster.node(1).api}/api/v1/bridge/initiate",
        json={"dst_chain_id": b.chain_id, "recipient": other_recipient, "amount": str(10**15)},
        timeout=5,
    ).json()
    assert (unsigned["chain_id"], unsigned["to"]) == (a.chain_id, br.vault_a)
    paid = b.balance(other_recipient)
    with Miner([a, b]):
        sent_tx = a.send(
            a.accounts[3],
            unsigned["to"],
            value=int(unsigned["value"]),
            data=bytes.fromhex(unsigned["data"].removeprefix("0x")),
        )
        assert int(a.wait_receipt(sent_tx)["status"], 16) == 1
        _wait(lambda: b.balance(other_recipient) - paid == 10**15, 20, "initiated transfer paid")


def _two_of_three_release_replay_and_outage(cluster: Cluster) -> None:
    br = cluster.bridge
    a, b = br.a, br.b
    assert cluster.node(2).stop() == 0
    cluster.nodes[2] = None
    recipient = b.accounts[8]
    before = b.balance(recipient)
    started = time.monotonic()
    with Miner([a, b]):
        t = br.deposit(a, b, 10**18, recipient=recipient)
        done = cluster.wait_state(0, t.id, {"released"})
        other = cluster.wait_state(1, t.id, {"released"})
    took = time.monotonic() - started
    assert b.balance(recipient) - before == 10**18
    assert done["amount"] == str(10**18)
    assert done["depositor"] == a.accounts[1]
    print(f"2-of-3 deposit -> release over libp2p: {took:.2f} s")
    # the attestation that was used, replayed on chain: rejected
    # (both nodes are relayers: whichever simulated first sent it, the other saw it executed)
    sent = [x["release_tx_hash"] for x in (done, other) if x["release_tx_hash"]]
    assert sent, (done, other)
    tx = b.rpc("eth_getTransactionByHash", sent[0])
    replay = bytes.fromhex(tx["input"].removeprefix("0x"))
    assert replay[:4] == release_calldata(t, [])[:4]
    assert revert_error(b, b.accounts[9], br.vault_b, replay) == "AlreadyExecuted"
    # the stopped validator's heartbeats stop: unreachable after a few seconds
    _wait(lambda: cluster.health(0)[1]["details"]["validators_reachable"] == 2, 20, "2 reachable")
    status, health = cluster.health(0)
    assert status == 200
    assert health["status"] == "ok"
    reach = {v["address"]: v["reachable"] for v in health["details"]["validators"]}
    assert reach == {br.validators[0].address: True, br.validators[1].address: True,
                     br.validators[2].address: False}  # fmt: skip
    assert health["details"]["chains"]["currency"]["reachable"] is True
    chat = health["details"]["chains"]["chat"]
    assert chat["last_finalized_block"] == chat["head"] - 1  # finality 2 confirmations
    assert chat["last_finalized_block"] >= done["src_block_number"]
    assert health["details"]["backlog"] == 0
    listed = httpx.get(
        f"{cluster.node(1).api}/api/v1/bridge/transfers", params={"account": recipient}, timeout=5
    ).json()
    assert [x["transfer_id"] for x in listed["items"]][-1] == t.id  # after the pause phase's

    _deposit_built_by_initiate(cluster)

    # RPC outage of the destination: the deposit waits in the store, then completes
    b.stop()
    t2 = br.deposit(a, b, 2 * 10**17, recipient=recipient)
    with Miner([a]):
        _wait(lambda: cluster.health(0)[1]["status"] == "chain_unreachable", 20, "outage seen")
        assert cluster.health(0)[0] == 503
        time.sleep(2)
    assert cluster.transfer(0, t2.id)["state"] in {"observed", "attesting"}  # type: ignore[index]
    b.restart()
    with Miner([a, b]):
        cluster.wait_state(0, t2.id, {"released"}, timeout=40)
    assert b.balance(recipient) - before == 12 * 10**17


def _one_of_three_and_forged_gossip_then_refund(cluster: Cluster, tmp_path: Path) -> None:
    br = cluster.bridge
    a, b = br.a, br.b
    assert cluster.node(1).stop() == 0  # node 2 is down since the 2-of-3 phase
    cluster.nodes[1] = None
    timeouts = cluster.metric(0, TIMEOUT_METRIC)
    forger = Signer(private_key(9))
    depositor = a.accounts[1]  # not a relayer account: its balance moves by the refund only
    with Miner([a, b]):
        t = br.deposit(a, b, 3 * 10**18, sender=depositor, recipient=b.accounts[8])
        cluster.wait_state(0, t.id, {"attesting", "refund_pending"})
        digest = t.digest("release", br.vault_b)
        forged = [
            gossip.Attestation(kind="release", transfer_id=t.id, digest="0x" + digest.hex(),
                               signer=forger.address, signature="0x" + forger.sign(digest).hex()),
            gossip.Attestation(kind="release", transfer_id=t.id, digest="0x" + digest.hex(),
                               signer=br.validators[1].address,
                               signature="0x" + forger.sign(digest).hex()),
        ]  # fmt: skip
        asyncio.run(_publish_as_peer(cluster, tmp_path, [gossip.encode(m) for m in forged]))
        rec = cluster.wait_state(0, t.id, {"refund_pending"}, timeout=30)
    assert rec["release_tx_hash"] is None
    assert cluster.metric(0, TIMEOUT_METRIC) == timeouts + 1
    status, health = cluster.health(0)
    assert (status, health["status"]) == (503, "no_quorum")
    # after the deadline (on both chains, final at N=2) a second validator signs the refund
    increase_time(b, 3700)
    increase_time(a, 3700)
    before = a.balance(depositor)
    cluster.start(1).wait_ready(120)
    with Miner([a, b]):
        done = cluster.wait_state(0, t.id, {"refunded"}, timeout=40)
    assert a.balance(depositor) - before == 3 * 10**18
    other = cluster.wait_state(1, t.id, {"refunded"}, timeout=20)
    assert done["refund_tx_hash"] or other["refund_tx_hash"]  # either relayer sent it
    assert b.call(
        br.vault_b, "executed(bytes32)", ["bytes32"], [bytes.fromhex(t.id[2:])], ["bool"]
    ) == (False,)


async def _publish_as_peer(cluster: Cluster, tmp_path: Path, messages: list[bytes]) -> None:
    """A libp2p peer of the test's own joins node 0's mesh and publishes ``messages``."""
    from dchat_node.p2p.host import HostSettings, Libp2pHost

    host = Libp2pHost(HostSettings(key_path=tmp_path / "forger.key", port=free_port(),
                                   bootstrap=(cluster.p2p_addrs[0],)))  # fmt: skip
    await host.start()
    try:
        sub = host.subscribe("dchat/bridge/1")  # join the topic's mesh
        for _ in range(50):
            if host.status().get("mesh", {}).get("dchat/bridge/1"):
                break
            await asyncio.sleep(0.2)
        async with asyncio.timeout(5):
            await anext(aiter(sub))  # node 0's heartbeat reached the test's peer
        for data in messages:
            await host.publish("dchat/bridge/1", data)
        await asyncio.sleep(2)
    finally:
        await host.stop()


def _pause_stops_signing_and_resume_releases(cluster: Cluster) -> None:
    br = cluster.bridge
    a, b = br.a, br.b
    signed = re.compile(r'^bridge_attestations_signed_total\{kind="release"\} (\S+)$', re.MULTILINE)
    # all three see each other's heartbeats over libp2p
    _wait(lambda: cluster.health(0)[1]["details"].get("validators_reachable") == 3, 30,
          "three reachable validators")  # fmt: skip
    for f in cluster.pause_flag_paths:
        f.write_text("true")
    _wait(lambda: all(cluster.health(i)[1]["status"] == "paused" for i in range(3)), 20, "paused")
    with Miner([a, b]):
        t = br.deposit(a, b, 10**17, recipient=b.accounts[8])
        cluster.wait_state(0, t.id, {"attesting"})
        time.sleep(2)
    assert cluster.transfer(0, t.id)["state"] == "attesting"  # type: ignore[index]
    assert [cluster.metric(i, signed) for i in range(3)] == [0, 0, 0]
    status, health = cluster.health(0)
    assert (status, health["details"]["paused"]) == (200, True)
    for f in cluster.pause_flag_paths:
        f.write_text("false")
    with Miner([a, b]):
        cluster.wait_state(0, t.id, {"released"})
    assert sum(cluster.metric(i, signed) for i in range(3)) >= 2


def test_bridge_across_three_nodes_over_libp2p(cluster: Cluster, tmp_path: Path) -> None:
    """One cluster for all phases (a node process takes seconds to start: py-libp2p's
    import), in an order where each phase leaves what the next needs: pause with all three
    up; 2 of 3 (node 2 stopped), replay and the RPC outage; 1 of 3 (node 1 stopped too) with
    forged gossip, the timeout, the deadline and the refund."""
    phases: list[tuple[str, Callable[[], None]]] = [
        ("pause", lambda: _pause_stops_signing_and_resume_releases(cluster)),
        ("2 of 3", lambda: _two_of_three_release_replay_and_outage(cluster)),
        ("1 of 3", lambda: _one_of_three_and_forged_gossip_then_refund(cluster, tmp_path)),
    ]
    for name, phase in phases:
        started = time.monotonic()
        phase()
        print(f"phase {name}: {time.monotonic() - started:.1f} s")
