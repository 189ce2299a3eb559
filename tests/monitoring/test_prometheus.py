"""The shipped scrape example and rules on a real Prometheus (Debian's), scraping a real node.

One Prometheus on a free loopback port with a temp TSDB, configured from
``manifests/monitoring/prometheus.yml`` (file discovery standing in for Kubernetes pod
discovery, the example's relabeling unchanged: ``tests/harness/prometheus.py``), scraping a
real node process and the operator's metrics endpoint (``dchat_operator.clients.metrics.serve``
in this process) every second. Checked: the node target is up with the labels the rules group
by (namespace, dchat_cluster, pod); every rule of ``rules.yaml`` loads and evaluates without
error; the recording rules produce the error ratio of real traffic with shed 503s; every
dashboard query runs on this Prometheus without error and every Overview panel has data; and
real alerts fire: DatabaseQueriesShed from the node, DchatBackupMissing from the operator's series
(scraped with honor_labels, so its namespace and cluster labels survive).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dchat_operator.clients.metrics import BACKUP_LAST_SUCCESS, serve
from devtools.monitoring import dashboards
from tests.harness.net import free_port
from tests.harness.prometheus import Pod, PrometheusServer, example_config
from tests.monitoring.record import running_node, traffic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NODE_LABELS = {
    "app.kubernetes.io/name": "dchat",
    "app.kubernetes.io/instance": "demo",
    "app.kubernetes.io/component": "node",
}


@pytest.fixture
def operator_metrics() -> Iterator[str]:
    port = free_port()
    serve(port, addr="127.0.0.1")
    BACKUP_LAST_SUCCESS.labels("demo", "demo").set(time.time() - 27 * 3600)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        BACKUP_LAST_SUCCESS.remove("demo", "demo")


def test_the_example_scrapes_a_node_and_the_rules_fire(
    tmp_path: Path, operator_metrics: str
) -> None:
    with running_node(tmp_path, max_pending=0, statement_delay=0.05) as (api, ops):
        pods = {
            "dchat-node": [Pod(ops.removeprefix("http://"), "demo", "demo-0", NODE_LABELS)],
            "dchat-operator": [
                Pod(
                    operator_metrics,
                    "dchat-system",
                    "dchat-operator-0",
                    {"app.kubernetes.io/name": "dchat-operator"},
                )
            ],
        }
        (tmp_path / "prom").mkdir()
        config = example_config(tmp_path / "prom", pods, "1s", "1s")
        server = PrometheusServer.start(tmp_path / "prom", config)
        try:
            up = server.wait_for('up{job="dchat-node"} == 1')
            assert up, server.log()
            labels = up[0]["metric"]
            assert (labels["namespace"], labels["dchat_cluster"], labels["pod"]) == (
                "demo",
                "demo",
                "demo-0",
            )
            # twice: a series born in the first burst is scraped before the second moves it
            # (rate() sees no increase in a series' first sample)
            statuses = traffic(api)
            time.sleep(2.5)
            again = traffic(api, channel="second")
            assert statuses.get(503), statuses
            assert again.get(503), again
            ratio = server.wait_for(
                'dchat:http_requests_errors:ratio_rate5m{namespace="demo",dchat_cluster="demo"} > 0'
            )
            assert ratio, server.log()
            assert 0 < float(ratio[0]["value"][1]) < 1
            shed = server.wait_for('ALERTS{alertname="DatabaseQueriesShed",alertstate="firing"}')
            assert shed
            assert shed[0]["metric"]["dchat_cluster"] == "demo"
            backup = server.wait_for('ALERTS{alertname="DchatBackupMissing",alertstate="firing"}')
            assert backup, server.query("dchat_operator_backup_last_success_timestamp_seconds")
            assert (backup[0]["metric"]["namespace"], backup[0]["metric"]["cluster"]) == (
                "demo",
                "demo",
            )
            # every dashboard query runs on Prometheus itself (variables set to the demo pod);
            # the Overview's request, latency and error panels show the real traffic
            empty = []
            for uid, board in dashboards.render().items():
                for expr in dashboards.queries(board):
                    bound = expr.replace('=~"$namespace"', '="demo"')
                    bound = bound.replace('=~"$cluster"', '="demo"')
                    if not server.query(bound):
                        empty.append((uid, expr))
            overview_empty = [e for uid, e in empty if uid == "dchat-overview"]
            assert overview_empty == [], overview_empty
            rules = [r for g in server.rules() for r in g["rules"]]
            assert len(rules) >= 25
            assert [(r["name"], r.get("lastError")) for r in rules if r["health"] == "err"] == []
        finally:
            server.stop()
