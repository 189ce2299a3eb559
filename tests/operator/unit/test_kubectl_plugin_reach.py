"""``kubectl dchat doctor``'s reachability checks (``plugin.reach``) against a loopback HTTP
server in the apiserver's place: it lists node pods built by the operator's own builders
(Ready) and answers the pod proxy paths with recorded answers: the node's real
``/health/<component>`` bodies (``data/plugin_node_health.json``, recorded from the node's
ops app by ``tests/node/health_recording.py``), the real Litestream scrapes
(``tests/monitoring/litestream_metrics.prom``: replicating, then S3 stopped), and the
apiserver's Forbidden Status for a user without ``pods/proxy``. The requests are the
plugin's real HTTP requests (``Kube.proxy_get``), and the paths it asked are checked.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from dchat_operator.api.models import DchatCluster
from dchat_operator.builders import workload
from dchat_operator.plugin import doctor, reach
from dchat_operator.plugin.kube import Kube
from dchat_operator.plugin.output import FAIL, OK, WARN
from tests.monitoring.record_litestream import from_fixture
from tests.operator.unit.conftest import cluster

pytestmark = pytest.mark.unit

HEALTH = json.loads((Path(__file__).parent / "data" / "plugin_node_health.json").read_text())
SCRAPES = from_fixture()
S3 = {"bucket": "bkt", "region": "eu-west-1", "credentialsSecretRef": {"name": "s3creds"}}
FORBIDDEN = {
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Failure",
    "message": 'pods "{pod}" is forbidden: User "viewer" cannot get resource "pods/proxy" in '
    'API group "" in the namespace "ns1"',
    "reason": "Forbidden",
    "details": {"name": "{pod}", "kind": "pods"},
    "code": 403,
}


def pod(cl: DchatCluster, name: str, ready: bool = True) -> dict[str, Any]:
    template = workload.deployment(cl)["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**template["metadata"], "name": name, "namespace": "ns1"},
        "spec": template["spec"],
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


class FakeApiserver:
    """Pods and pod-proxy answers: ``answers[(pod, path)]`` is a list of (status, body) given
    in turn (the last one repeats); a pod in ``forbidden`` gets the Forbidden Status."""

    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods = pods
        self.answers: dict[tuple[str, str], list[tuple[int, bytes]]] = {}
        self.forbidden: set[str] = set()
        self.slow: set[str] = set()
        self.asked: list[str] = []
        self.selector = ""

    def health(self, pod_name: str, component: str, case: str) -> None:
        rec = HEALTH[case]
        self.answers[(pod_name, f"/health/{component}")] = [
            (rec["status"], json.dumps(rec["body"]).encode())
        ]

    def scrapes(self, pod_name: str, *names: str) -> None:
        self.answers[(pod_name, "/metrics")] = [(200, SCRAPES[n].encode()) for n in names]

    def handle(self, url: str) -> tuple[int, bytes]:
        parts = urlsplit(url)
        path = unquote(parts.path)
        if path == "/api/v1/namespaces/ns1/pods":
            self.selector = unquote(parts.query)
            return 200, json.dumps({"kind": "PodList", "items": self.pods}).encode()
        prefix = "/api/v1/namespaces/ns1/pods/"
        assert path.startswith(prefix), path
        target, _, rest = path.removeprefix(prefix).partition("/proxy")
        name, _, port = target.partition(":")
        self.asked.append(f"{name}:{port}{rest}")
        if name in self.slow:
            time.sleep(1.0)
        if name in self.forbidden:
            body = json.dumps(FORBIDDEN).replace("{pod}", name)
            return 403, body.encode()
        queue = self.answers.get((name, rest))
        if not queue:
            status = {"kind": "Status", "message": "error trying to reach service", "code": 503}
            return 503, json.dumps(status).encode()
        return queue.pop(0) if len(queue) > 1 else queue[0]


@pytest.fixture
def apiserver() -> Iterator[tuple[Kube, list[FakeApiserver]]]:
    holder: list[FakeApiserver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = holder[0].handle(self.path)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kube = Kube(
        server=f"http://127.0.0.1:{server.server_address[1]}",
        namespace="ns1",
        context="test",
        ssl_context=ssl.create_default_context(),
        headers={},
    )
    try:
        yield kube, holder
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def quick_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """The two Litestream scrapes 0.05 s apart instead of 3 s (the answers are recorded)."""
    monkeypatch.setattr(reach, "LAG_PROBE_SECONDS", 0.05)


def by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {c.name: c for c in checks}


def test_a_healthy_sqlite_cluster_with_backups(
    apiserver: tuple[Kube, list[FakeApiserver]],
) -> None:
    kube, holder = apiserver
    cl = cluster("lite", backup={"enabled": True, "s3": S3})
    fake = FakeApiserver([pod(cl, "lite-a"), pod(cl, "lite-b", ready=False)])
    holder.append(fake)
    fake.health("lite-a", "database", "database_ok")
    fake.health("lite-a", "chain", "chain_disabled")
    fake.health("lite-a", "relay", "relay_disabled")
    fake.health("lite-a", "bridge", "bridge_disabled")
    fake.scrapes("lite-a", "healthy", "healthy")
    checks = by_name(doctor.reach_checks(kube, cl, {"status": {}}))
    assert "app.kubernetes.io/instance=lite" in fake.selector
    assert checks["database reachable"].result == OK
    assert checks["database reachable"].detail == "1 pod(s): lite-a: ok (engine sqlite)"
    for name in ("chain RPCs answer", "relay bootstrap reachable", "bridge healthy"):
        assert checks[name].result == reach.NOT_CONFIGURED, name
    assert "no chain RPC configured" in checks["chain RPCs answer"].detail
    assert checks["S3 reachable"].result == OK
    assert checks["S3 reachable"].detail == (
        "1 pod(s): lite-a: 6 upload(s) by the Litestream sidecar, none failing"
    )
    # only the Ready pod was asked, on the node's metrics port and the sidecar's
    assert sorted(set(fake.asked)) == [
        "lite-a:9001/health/bridge",
        "lite-a:9001/health/chain",
        "lite-a:9001/health/database",
        "lite-a:9001/health/relay",
        "lite-a:9090/metrics",
    ]
    text = doctor.render(list(checks.values()))
    assert "- chain RPCs answer: the node runs without it" in text
    assert text.endswith("all checks passed (3 not configured)\n")


def test_failures_carry_the_nodes_reason_and_the_fix(
    apiserver: tuple[Kube, list[FakeApiserver]],
) -> None:
    kube, holder = apiserver
    cl = cluster("lite", backup={"enabled": True, "s3": S3})
    fake = FakeApiserver([pod(cl, "lite-a"), pod(cl, "lite-b")])
    holder.append(fake)
    for name in ("lite-a", "lite-b"):
        fake.health(name, "relay", "relay_disabled")
        fake.health(name, "bridge", "component_not_reported")
    fake.health("lite-a", "database", "database_ok")
    fake.health("lite-b", "database", "database_unreachable")
    fake.health("lite-a", "chain", "chain_unreachable")
    fake.health("lite-b", "chain", "chain_unreachable")
    fake.scrapes("lite-a", "healthy", "s3_down")  # S3 stopped between the two scrapes
    fake.scrapes("lite-b", "healthy", "healthy")
    checks = by_name(doctor.reach_checks(kube, cl, {"status": {}}))
    db = checks["database reachable"]
    assert (db.result, db.detail) == (FAIL, "lite-b: unreachable (StorageUnavailable)")
    assert "kubectl logs lite-b" in db.fix
    chain = checks["chain RPCs answer"]
    assert chain.result == FAIL
    assert chain.detail.startswith("lite-a: unreachable (chain RPC not answering: currency; ")
    assert "currency: chain unavailable: eth_blockNumber failed" in chain.detail
    assert "spec.chain" in chain.fix
    bridge = checks["bridge healthy"]
    assert bridge.result == WARN
    assert "does not report it" in bridge.detail
    s3 = checks["S3 reachable"]
    assert s3.result == FAIL
    assert s3.detail.startswith("lite-a: 5 new transaction(s) in 0.05 s and no upload")
    assert "Secret s3creds" in s3.fix
    text = doctor.render(list(checks.values()))
    assert text.endswith("3 check(s) failed\n")
    assert "    fix: check the database Secret's URL" in text


def test_a_user_without_pods_proxy_gets_warnings_not_failures(
    apiserver: tuple[Kube, list[FakeApiserver]],
) -> None:
    kube, holder = apiserver
    cl = cluster(
        "pg", database={"engine": "postgres", "postgres": {"primary": {"name": "db", "key": "url"}}}
    )
    fake = FakeApiserver([pod(cl, "pg-a")])
    fake.forbidden.add("pg-a")
    holder.append(fake)
    checks = by_name(doctor.reach_checks(kube, cl, {"status": {}}))
    db = checks["database reachable"]
    assert db.result == WARN
    assert 'cannot get resource "pods/proxy"' in db.detail
    assert "grant get on pods/proxy" in db.fix
    assert "kubectl port-forward pod/pg-a 9001" in db.fix
    assert checks["S3 reachable"].result == reach.NOT_CONFIGURED  # no spec.backup.s3
    assert not any(c.result == FAIL for c in checks.values())


def test_postgres_s3_is_answered_by_the_last_backup_job(
    apiserver: tuple[Kube, list[FakeApiserver]],
) -> None:
    kube, holder = apiserver
    cl = cluster(
        "pg",
        database={"engine": "postgres", "postgres": {"primary": {"name": "db", "key": "url"}}},
        backup={"enabled": True, "s3": S3},
    )
    holder.append(FakeApiserver([]))
    failed = {"status": {"lastBackup": {"name": "pg-b1", "phase": "Failed", "time": "t"}}}
    checks = by_name(doctor.reach_checks(kube, cl, failed))
    assert checks["S3 reachable"].result == FAIL
    assert "kubectl dchat backups pg" in checks["S3 reachable"].fix
    assert checks["database reachable"].result == WARN  # no Ready pod to ask
    done = {"status": {"lastBackup": {"name": "pg-b2", "phase": "Completed", "time": "t"}}}
    assert by_name(doctor.reach_checks(kube, cl, done))["S3 reachable"].result == OK
    none = by_name(doctor.reach_checks(kube, cl, {"status": {}}))["S3 reachable"]
    assert (none.result, none.fix) == (WARN, "kubectl dchat backup pg --wait")


def test_a_pod_the_apiserver_cannot_reach_is_asked_once(
    apiserver: tuple[Kube, list[FakeApiserver]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No answer recorded: the apiserver's 503 "error trying to reach service" (what a pod
    on an unreachable IP gives); a slow pod times out. Either is one request per pod, then
    every check of that pod says why, as a warning."""
    monkeypatch.setattr(reach, "PROXY_TIMEOUT", 0.3)
    kube, holder = apiserver
    cl = cluster(
        "pg", database={"engine": "postgres", "postgres": {"primary": {"name": "db", "key": "url"}}}
    )
    fake = FakeApiserver([pod(cl, "pg-a"), pod(cl, "pg-b")])
    fake.slow.add("pg-b")
    holder.append(fake)
    checks = doctor.reach_checks(kube, cl, {"status": {}})
    assert sorted(fake.asked) == ["pg-a:9001/health/database", "pg-b:9001/health/database"]
    for check in checks[:4]:
        assert check.result == WARN, check
        assert "pg-a: cannot ask: error trying to reach service" in check.detail
        assert "pg-b: cannot ask: GET pod pg-b:9001/health/database: no answer in 0.3 s" in (
            check.detail
        )


def test_a_healthy_chain_answer_shows_each_chains_height() -> None:
    """The body ChainComponent answers with two RPCs up (its integration test checks it
    against anvil): the heights are shown per chain."""
    body = {
        "status": "ok",
        "component": "chain",
        "healthy": True,
        "details": {"chat": {"ok": True, "block": 7}, "currency": {"ok": True, "block": 9}},
    }
    answer = reach.health_answer("p-0", 200, json.dumps(body).encode())
    assert (answer.result, answer.detail) == (OK, "ok (chat block 7, currency block 9)")
