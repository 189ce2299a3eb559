"""Three real node processes relaying envelopes over loopback libp2p (GossipSub).

Topology: A <- B <- C (B bootstraps to A by peer id; C finds B with
``relay.bootstrap_dns``, no peer id configured), so an envelope posted to A reaches C
through B's forwarding. Node C has a tight per-sender limit and size limit (the 429 and
413 cases); A and B allow the 1,000-envelope burst. Everything on free ports, temp dirs,
bounded waits; the three processes start at once and serve the whole module.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from dchat_node.p2p.host import load_or_create_key, peer_id_of
from tests.harness.net import free_port
from tests.node.conftest import DCHAT, JWT_SECRET, NodeProcess
from tests.node.relay_client import Keys, challenge, envelope, fetch_all, proof

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("relay-network")]

FAST_LIMITS = {
    "DCHAT_RELAY__SENDER_RATE_PER_SEC": "100000",
    "DCHAT_RELAY__SENDER_BURST": "100000",
    "DCHAT_SECURITY__RATE_LIMIT_REQUESTS_PER_SEC": "100000",
}


C_LIMITS = {
    "DCHAT_RELAY__SENDER_RATE_PER_SEC": "1",
    "DCHAT_RELAY__SENDER_BURST": "3",
    "DCHAT_RELAY__MAX_ENVELOPE_BYTES": "1024",
    "DCHAT_SECURITY__RATE_LIMIT_REQUESTS_PER_SEC": "100000",
}


class Launcher:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: list[NodeProcess] = []

    def start(self, name: str, env: Mapping[str, str], *, host: str = "127.0.0.1") -> NodeProcess:
        api_port = int(env.get("DCHAT_API_PORT") or free_port())
        ops_port = int(env.get("DCHAT_METRICS_PORT") or free_port())
        full = {k: v for k, v in os.environ.items() if not k.startswith(("DCHAT_", "DATABASE_"))}
        full.update(
            {
                "DCHAT_HOST": host,
                "DCHAT_API_PORT": str(api_port),
                "DCHAT_METRICS_PORT": str(ops_port),
                "JWT_SECRET": JWT_SECRET,
                "DATABASE_URL": f"sqlite:///{self.root}/{name}/dchat.db",
                "DCHAT_LOGGING__FORMAT": "text",
            }
        )
        full.update(env)
        log_path = self.root / f"{name}.{len(self.nodes)}.log"
        with log_path.open("wb") as out:
            proc = subprocess.Popen(
                [DCHAT], env=full, stdout=out, stderr=subprocess.STDOUT, cwd=self.root
            )
        node = NodeProcess(proc, api_port, ops_port, log_path)
        node.host = host  # type: ignore[attr-defined]
        self.nodes.append(node)
        return node

    def stop_all(self) -> None:
        for node in self.nodes:
            node.stop(timeout=20)


def ops_url(node: NodeProcess) -> str:
    return f"http://{getattr(node, 'host', '127.0.0.1')}:{node.ops_port}"


def api_url(node: NodeProcess) -> str:
    return f"http://{getattr(node, 'host', '127.0.0.1')}:{node.api_port}"


def p2p_info(node: NodeProcess) -> dict[str, Any]:
    r = httpx.get(f"{ops_url(node)}/p2p/info", timeout=5)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def relay_health(node: NodeProcess) -> tuple[int, dict[str, Any]]:
    r = httpx.get(f"{ops_url(node)}/health/relay", timeout=5)
    body: dict[str, Any] = r.json()
    return r.status_code, body


def wait_for(what: str, check: Any, timeout: float = 30, nodes: list[NodeProcess] = ()) -> Any:  # type: ignore[assignment]
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    logs = "\n".join(n.log()[-3000:] for n in nodes)
    raise AssertionError(f"timed out waiting for {what}: {last!r}\n{logs}")


def mesh_ready(node: NodeProcess) -> bool:
    _, body = relay_health(node)
    mesh = body.get("details", {}).get("mesh_peers", {})
    return bool(mesh.get("/dchat/relay/envelopes/1"))


class Net:
    """A <- B <- C. A's and B's identity keys are made before start (as a restarted pod
    finds its own on the data volume), so B starts at once with A's id as bootstrap. C
    runs on its own loopback address with B's ports (pods of one cluster share ports) and
    knows only a DNS name (here an address literal, resolved the same way): it learns B's
    peer id from B's /p2p/info."""

    def __init__(self, launcher: Launcher, c_limits: Mapping[str, str] | None = None) -> None:
        self.launcher = launcher
        root = launcher.root
        self.ports = {n: free_port() for n in "ab"}
        ids = {n: peer_id_of(load_or_create_key(root / n / "p2p" / "identity.key")) for n in "ab"}
        self.ids = ids
        self.a = launcher.start("a", {"DCHAT_P2P_PORT": str(self.ports["a"]), **FAST_LIMITS})
        self.b_env = {
            "DCHAT_API_PORT": str(free_port()),
            "DCHAT_METRICS_PORT": str(free_port()),
            "DCHAT_P2P_PORT": str(self.ports["b"]),
            "RELAY_BOOTSTRAP_NODES": f"/ip4/127.0.0.1/tcp/{self.ports['a']}/p2p/{ids['a']}",
            **FAST_LIMITS,
        }
        self.b = launcher.start("b", self.b_env)
        self.c = launcher.start(
            "c",
            {
                "DCHAT_API_PORT": self.b_env["DCHAT_API_PORT"],
                "DCHAT_METRICS_PORT": self.b_env["DCHAT_METRICS_PORT"],
                "DCHAT_P2P_PORT": self.b_env["DCHAT_P2P_PORT"],
                "RELAY_BOOTSTRAP_DNS": "127.0.0.1",
                "DCHAT_RELAY__BOOTSTRAP_DNS_INTERVAL_SECS": "1",
                **(c_limits or C_LIMITS),
            },
            host="127.0.0.3",
        )
        self.all = [self.a, self.b, self.c]
        for node in self.all:
            wait_for("ready", lambda n=node: _ready(n), timeout=90, nodes=self.all)
        assert p2p_info(self.a)["peerId"] == ids["a"]
        assert p2p_info(self.b)["peerId"] == ids["b"]
        for node in self.all:
            wait_for("GossipSub mesh", lambda n=node: mesh_ready(n), nodes=self.all)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    launcher = Launcher(tmp_path_factory.mktemp("relay"))
    try:
        yield Net(launcher)
    finally:
        launcher.stop_all()


def test_envelope_posted_to_a_is_fetched_from_c(net: Net) -> None:
    alice, bob = Keys.new(), Keys.new()
    env = envelope(alice, bob, b"\x00opaque ciphertext\xff")
    with httpx.Client(timeout=10) as http:
        r = http.post(f"{api_url(net.a)}/api/v1/relay/envelopes", json=env)
        assert r.status_code == 201, r.text
        posted = r.json()
        assert posted["gossiped"] is True
        assert posted["duplicate"] is False
        got = wait_for("envelope at C", lambda: fetch_all(http, api_url(net.c), bob), nodes=net.all)
    assert [e["id"] for e in got] == [posted["id"]]
    assert got[0]["ciphertext"] == env["ciphertext"]
    assert got[0]["signature"] == env["signature"]
    # the same envelope posted again (to C this time) is recognised by id
    with httpx.Client(timeout=10) as http:
        again = http.post(f"{api_url(net.c)}/api/v1/relay/envelopes", json=env)
    assert again.status_code == 200, again.text
    assert again.json()["duplicate"] is True
    # health shows the real network state; metrics count what happened
    status, body = relay_health(net.b)
    assert status == 200
    assert body["status"] == "ok"
    assert sorted(body["details"]["peers"]) == sorted(p2p_info(n)["peerId"] for n in (net.a, net.c))
    metrics = httpx.get(f"{ops_url(net.c)}/metrics", timeout=5).text
    assert 'dchat_relay_envelopes_total{event="accepted_gossip"} 1.0' in metrics
    assert "dchat_p2p_peers_connected 1.0" in metrics


def test_burst_of_1000_envelopes_all_arrive_at_c(net: Net) -> None:
    senders = [Keys.new() for _ in range(10)]
    bob = Keys.new()
    envs = [envelope(senders[i % 10], bob) for i in range(1000)]
    with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=16)) as http:

        def post(env: dict[str, Any]) -> int:
            return http.post(f"{api_url(net.a)}/api/v1/relay/envelopes", json=env).status_code

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(post, envs))
        assert statuses.count(201) == 1000, {s: statuses.count(s) for s in set(statuses)}

        def all_arrived() -> bool:
            return len(fetch_all(http, api_url(net.c), bob)) == 1000

        wait_for("1000 envelopes at C", all_arrived, timeout=90, nodes=net.all)
        ids = {e["id"] for e in fetch_all(http, api_url(net.c), bob)}
    assert len(ids) == 1000
    metrics = httpx.get(f"{ops_url(net.a)}/metrics", timeout=5).text
    assert 'dchat_relay_envelopes_total{event="gossip_failed"} 0.0' in metrics
    for node in net.all:
        text = httpx.get(f"{ops_url(node)}/metrics", timeout=5).text
        dropped = [
            line
            for line in text.splitlines()
            if line.startswith("dchat_p2p_messages_dropped_total") and not line.endswith(" 0.0")
        ]
        assert dropped == [], dropped


def test_websocket_at_c_delivers_what_is_posted_to_a_and_refuses_bad_proofs(net: Net) -> None:
    alice, bob = Keys.new(), Keys.new()
    base = api_url(net.c)
    ws_base = base.replace("http://", "ws://") + "/api/v1/relay/ws"
    with httpx.Client(timeout=10) as http:
        ch = challenge(http, base, bob)
        bad = httpx.QueryParams(
            {"recipient": bob.b64, "challenge": ch, "signature": proof(alice, ch)}
        )
        with pytest.raises(InvalidStatus) as refused:
            connect(f"{ws_base}?{bad}", open_timeout=10)
        assert refused.value.response.status_code == 403
        assert b"does not verify" in refused.value.response.body
        good = httpx.QueryParams(
            {"recipient": bob.b64, "challenge": ch, "signature": proof(bob, ch)}
        )
        with connect(f"{ws_base}?{good}", open_timeout=10) as ws:
            env = envelope(alice, bob)
            r = http.post(f"{api_url(net.a)}/api/v1/relay/envelopes", json=env)
            assert r.status_code == 201, r.text
            pushed = json.loads(ws.recv(timeout=30))
        assert pushed["id"] == r.json()["id"]
        assert pushed["ciphertext"] == env["ciphertext"]
        # the challenge was consumed by the WebSocket: a second use is refused
        with pytest.raises(InvalidStatus) as used:
            connect(f"{ws_base}?{good}", open_timeout=10)
        assert used.value.response.status_code == 401


def test_fetch_needs_a_fresh_challenge_signed_by_the_recipient(net: Net) -> None:
    bob, mallory = Keys.new(), Keys.new()
    base = api_url(net.b)
    with httpx.Client(timeout=10) as http:
        url = f"{base}/api/v1/relay/envelopes/fetch"
        ch = challenge(http, base, bob)
        # signed by someone else: 403
        forged = http.post(
            url, json={"recipient": bob.b64, "challenge": ch, "signature": proof(mallory, ch)}
        )
        assert forged.status_code == 403, forged.text
        assert "does not verify" in forged.json()["error"]["message"]
        # a challenge the node never issued: 401
        unknown = base64.b64encode(os.urandom(32)).decode()
        r = http.post(
            url,
            json={"recipient": bob.b64, "challenge": unknown, "signature": proof(bob, unknown)},
        )
        assert r.status_code == 401, r.text
        assert "challenge" in r.json()["error"]["message"]
        # the right proof works once; replaying it is refused
        ok = {"recipient": bob.b64, "challenge": ch, "signature": proof(bob, ch)}
        assert http.post(url, json=ok).status_code == 200
        replay = http.post(url, json=ok)
        assert replay.status_code == 401, replay.text
        # a challenge issued for another key cannot be used for bob
        other = challenge(http, base, mallory)
        r = http.post(
            url, json={"recipient": bob.b64, "challenge": other, "signature": proof(bob, other)}
        )
        assert r.status_code == 401, r.text


def test_oversize_bad_signature_and_sender_rate_are_refused_with_bodies(net: Net) -> None:
    alice, bob = Keys.new(), Keys.new()
    base = api_url(net.c)  # max_envelope_bytes 1024, 1 envelope/s burst 3
    url = f"{base}/api/v1/relay/envelopes"
    with httpx.Client(timeout=10) as http:
        big = http.post(url, json=envelope(alice, bob, os.urandom(1025)))
        assert big.status_code == 413, big.text
        assert "max_envelope_bytes" in big.json()["error"]["message"]
        bad = envelope(alice, bob)
        bad["ciphertext"] = base64.b64encode(b"tampered").decode()
        r = http.post(url, json=bad)
        assert r.status_code == 400, r.text
        assert "signature" in r.json()["error"]["message"]
        statuses = [http.post(url, json=envelope(alice, bob)).status_code for _ in range(6)]
        assert statuses[:3] == [201, 201, 201]
        assert 429 in statuses[3:]
        limited = http.post(url, json=envelope(alice, bob))
        assert limited.status_code == 429
        assert "sender_rate_per_sec" in limited.json()["error"]["message"]
        # another sender is not affected
        assert http.post(url, json=envelope(Keys.new(), bob)).status_code == 201


def test_restarted_node_keeps_its_peer_id_and_the_network_heals(net: Net) -> None:
    before = p2p_info(net.b)["peerId"]
    assert net.b.stop(timeout=20) == 0
    net.b = net.launcher.start("b", net.b_env)
    net.b.wait_ready(timeout=90)
    net.all = [net.a, net.b, net.c]
    assert p2p_info(net.b)["peerId"] == before
    key = Path(net.launcher.root) / "b" / "p2p" / "identity.key"
    assert key.stat().st_mode & 0o777 == 0o600
    # C rediscovers and redials B, B redials A: an envelope still crosses A -> B -> C
    for node in net.all:
        wait_for("mesh after restart", lambda n=node: mesh_ready(n), timeout=60, nodes=net.all)
    alice, bob = Keys.new(), Keys.new()
    with httpx.Client(timeout=10) as http:
        r = http.post(f"{api_url(net.a)}/api/v1/relay/envelopes", json=envelope(alice, bob))
        assert r.status_code == 201, r.text
        wait_for("envelope at C", lambda: fetch_all(http, api_url(net.c), bob), nodes=net.all)


def test_dns_discovery_found_b_without_knowing_its_peer_id(net: Net) -> None:
    status, body = relay_health(net.c)
    assert status == 200, body
    assert body["details"]["peers"] == [net.ids["b"]]
    assert body["details"]["dial_targets"] == [
        f"/ip4/127.0.0.1/tcp/{net.ports['b']}/p2p/{net.ids['b']}"
    ]


def _ready(node: NodeProcess) -> bool:
    try:
        return httpx.get(f"{ops_url(node)}/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
