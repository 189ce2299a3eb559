"""The libp2p relay on the real node: two pods of one DchatCluster find each other and relay.

A PostgreSQL DchatCluster of two replicas on the test cluster's real node (the harness
PostgreSQL on the bridge address). The operator renders ``relay.bootstrap_dns`` as its
headless Service ``<cluster>-p2p-peers``; each pod resolves it through the real node's
cluster DNS (CoreDNS), reads the other's peer id from ``/p2p/info`` and dials it over the
pod network. An envelope posted to one pod's API (by pod IP) is fetched from the other's,
authenticated by the recipient's signature over a challenge; both pods' ``/health/relay``
show the other as a connected peer.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from tests.harness.cluster import KubeCluster
from tests.harness.postgres import PostgresServer
from tests.node.relay_client import Keys, envelope, fetch_all

from .conftest import PG, db_secret, wait_ready
from .realnode import BRIDGE, is_ready, jwt_secret, pods, real_cr

pytestmark = [pytest.mark.e2e, pytest.mark.real_node, pytest.mark.xdist_group("real-node-relay")]


def _relay_health(pod: dict[str, Any]) -> dict[str, Any]:
    ip = pod["status"]["podIP"]
    r = httpx.get(f"http://{ip}:9001/health/relay", timeout=5)
    body: dict[str, Any] = r.json()
    return body


@pytest.mark.timeout(420)
def test_two_pods_find_each_other_and_relay_an_envelope(
    real_node: str,
    kube: KubeCluster,
    namespace: str,
    operator: Any,
    bridge_postgres: PostgresServer,
) -> None:
    db = f"relay_{uuid.uuid4().hex[:10]}"
    url = bridge_postgres.create_login_database(db, uuid.uuid4().hex, BRIDGE)
    cr = real_cr("mesh", replicas=2, database=PG)
    kube.apply([jwt_secret(), db_secret(url), cr], namespace)
    wait_ready(kube, namespace, "mesh", replicas=2, timeout=300)
    headless = kube.get_json("-n", namespace, "service", "mesh-p2p-peers")
    assert headless["spec"]["clusterIP"] == "None"

    a, b = sorted(pods(kube, namespace, "mesh"), key=lambda p: p["metadata"]["name"])
    assert all(is_ready(p) and p["spec"]["nodeName"] == real_node for p in (a, b))
    ids = {}
    for pod in (a, b):
        r = httpx.get(f"http://{pod['status']['podIP']}:9001/p2p/info", timeout=5)
        assert r.status_code == 200, r.text
        ids[pod["metadata"]["name"]] = r.json()["peerId"]

    def connected() -> bool:
        ha, hb = _relay_health(a), _relay_health(b)
        peers_a = ha.get("details", {}).get("peers") or []
        peers_b = hb.get("details", {}).get("peers") or []
        return ids[b["metadata"]["name"]] in peers_a and ids[a["metadata"]["name"]] in peers_b

    t0 = time.monotonic()
    kube.wait_for(connected, timeout=90, interval=1, what="each pod connected to the other")
    print(f"\nrelay peers connected {time.monotonic() - t0:.1f} s after the cluster was Ready")
    assert _relay_health(a)["status"] == "ok"

    alice, bob = Keys.new(), Keys.new()
    env = envelope(alice, bob, b"\x00end-to-end encrypted\xff")
    api_a = f"http://{a['status']['podIP']}:9000"
    api_b = f"http://{b['status']['podIP']}:9000"
    with httpx.Client(timeout=10) as http:
        posted = http.post(f"{api_a}/api/v1/relay/envelopes", json=env)
        assert posted.status_code == 201, posted.text
        got = kube.wait_for(
            lambda: fetch_all(http, api_b, bob), timeout=30, interval=0.5, what="envelope at B"
        )
    assert [e["id"] for e in got] == [posted.json()["id"]]
    assert got[0]["ciphertext"] == env["ciphertext"]
