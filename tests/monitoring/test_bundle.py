"""manifests/monitoring/: committed files equal the generator's output; the dashboards are the
guide's five boards, shipped as JSON and as sidecar ConfigMaps; every dashboard query and
every rule expression parses as PromQL (promql-parser) and references only exported series
(``tests/monitoring/exported.py``: the real node's recording, the operator's registry, the
recording rules, and named allow-lists)."""

from __future__ import annotations

import json

import pytest
import yaml

from dchat_operator.builders import monitoring
from devtools.monitoring import bundle, dashboards
from tests.monitoring.exported import KUBERNETES, PROMETHEUS_OWN, Catalogue, selectors
from tests.operator.unit.conftest import sample

pytestmark = pytest.mark.unit

BOARD_TITLES = {
    "dchat-overview": "dchat / Overview",
    "dchat-marketplace": "dchat / Marketplace",
    "dchat-bridge": "dchat / Bridge",
    "dchat-observability": "dchat / Observability",
    "dchat-infrastructure": "dchat / Infrastructure",
}


def test_committed_files_equal_the_generators_output() -> None:
    expected = bundle.files()
    committed = {
        str(p.relative_to(bundle.OUT)): p.read_text() for p in bundle.OUT.rglob("*") if p.is_file()
    }
    stale = sorted(k for k in expected if committed.get(k) != expected[k])
    assert stale == [], f"run `python -m devtools.monitoring`: {stale} differ"
    assert sorted(set(committed) - set(expected)) == [], "files the generator does not make"


def test_the_plain_rules_are_the_operators_rules_for_every_cluster() -> None:
    """One source: the per-cluster PrometheusRule and the plain file differ only in scope."""
    plain = yaml.safe_load((bundle.OUT / "rules.yaml").read_text())["groups"]
    cluster = sample("postgres.yaml")
    per_cluster = monitoring.prometheus_rule(cluster)["spec"]["groups"]
    scope = monitoring.Scope.of(cluster)

    def names(groups: list[dict[str, object]]) -> list[str]:
        return [str(r.get("alert") or r.get("record")) for g in groups for r in g["rules"]]  # type: ignore[attr-defined]

    assert names(per_cluster) == names(plain[: len(per_cluster)])
    for rule in (r for g in per_cluster for r in g["rules"]):
        for sel in selectors(rule["expr"]):
            if sel.name.startswith("dchat_operator_"):
                assert {"namespace", "cluster"} <= sel.labels, rule["expr"]
            else:
                assert {"namespace", "dchat_cluster"} <= sel.labels, rule["expr"]
        if "alert" in rule:
            assert rule["labels"]["dchat_cluster"] == cluster.name
    assert scope.node == f'namespace="ns1",dchat_cluster="{cluster.name}"'


def test_the_rules_carry_the_guides_intent() -> None:
    alerts = {
        r["alert"]: r["expr"]
        for g in yaml.safe_load((bundle.OUT / "rules.yaml").read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    }
    assert alerts["MarketplacePurchaseLatencyHigh"].startswith(
        "histogram_quantile(0.99, sum by (namespace, dchat_cluster, le) "
        "(rate(marketplace_purchase_latency_ms_bucket{"
    )
    assert alerts["MarketplacePurchaseLatencyHigh"].endswith("[5m]))) > 100")
    assert "rate(dchat_errors_total{" in alerts["HighErrorRate"]
    assert (
        " / clamp_min(sum by (namespace, dchat_cluster) (rate(dchat_http_requests_total{"
        in (alerts["HighErrorRate"])
    )
    assert alerts["HighErrorRate"].endswith("> 0.05")
    assert "database_connections_max" in alerts["DatabaseConnectionPoolExhausted"]
    assert "> 1.5e+09" in alerts["PodMemoryUsageHigh"]
    assert "> 93600" in alerts["DchatBackupMissing"]
    assert all(" " not in name for name in alerts)


def test_five_boards_as_json_and_as_sidecar_configmaps() -> None:
    boards = {p.stem: json.loads(p.read_text()) for p in (bundle.OUT / "dashboards").glob("*.json")}
    assert {uid: b["title"] for uid, b in boards.items()} == BOARD_TITLES
    for uid, board in boards.items():
        panels = [p for p in board["panels"] if p["type"] != "row"]
        assert len(panels) >= 4, uid
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), uid
        assert all(t["refId"] for p in panels for t in p["targets"]), uid
        assert all(p["options"] and p["datasource"]["uid"] == "${datasource}" for p in panels)
    maps = list(yaml.safe_load_all((bundle.OUT / "dashboards" / "configmaps.yaml").read_text()))
    assert len(maps) == 5
    for cm in maps:
        assert cm["kind"] == "ConfigMap"
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((key, text),) = cm["data"].items()
        assert json.loads(text) == boards[key.removesuffix(".json")]


def _queries() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for uid, text in dashboards.render().items():
        out.extend((uid, q) for q in dashboards.queries(text))
    groups = yaml.safe_load((bundle.OUT / "rules.yaml").read_text())["groups"]
    out.extend(
        (f"rules.yaml {r.get('alert') or r.get('record')}", r["expr"])
        for g in groups
        for r in g["rules"]
    )
    return out


def test_every_query_parses_and_references_only_exported_series() -> None:
    catalogue = Catalogue()
    problems = []
    used: set[str] = set()
    queries = _queries()
    for where, expr in queries:
        try:
            found = selectors(expr)
        except Exception as exc:  # promql-parser's error type is its own ValueError
            problems.append(f"{where}: does not parse: {exc}: {expr}")
            continue
        assert found, f"{where}: no series in {expr}"
        for sel in found:
            used.add(sel.name)
            problem = catalogue.problem(sel)
            if problem:
                problems.append(f"{where}: {problem}")
    assert problems == []
    assert len(queries) >= 70
    # the allow-lists hold only what is used
    assert set(PROMETHEUS_OWN) <= used
    assert set(KUBERNETES) <= used


def test_the_check_catches_an_invented_name_and_label() -> None:
    catalogue = Catalogue()
    (sel,) = selectors('rate(marketplace_listing_views_total{dchat_cluster="x"}[5m])')
    assert "neither the node nor the operator" in (catalogue.problem(sel) or "")
    (sel,) = selectors('dchat_http_requests_total{path="/x"}')
    assert "no label ['path']" in (catalogue.problem(sel) or "")
    (sel,) = selectors('dchat_operator_rollbacks_total{reason="x"}')
    assert "no label ['reason']" in (catalogue.problem(sel) or "")
    with pytest.raises(ValueError):  # noqa: PT011 - the parser's only error type
        selectors("sum(rate(x[5m])")


def test_the_docs_name_every_alert_and_recording_rule() -> None:
    doc = (bundle.REPO / "docs" / "operations.md").read_text()
    section = doc[doc.index("## Monitoring") :]
    groups = yaml.safe_load((bundle.OUT / "rules.yaml").read_text())["groups"]
    for rule in (r for g in groups for r in g["rules"]):
        name = str(rule.get("alert") or rule["record"])
        base = name.split("ratio_rate")[0]  # the ratio windows are written as one line
        assert f"`{name}`" in section or f"`{base}ratio_rate" in section, name
    assert "img/overview.png" in section


def test_the_query_check_sees_every_panel_and_no_panel_lacks_a_metric() -> None:
    """``dashboards.queries`` (what the exported-series check reads) covers every target of
    every panel, nested in rows too; the guide's panels that no exported metric backs
    (average purchase value, creator activity, spans) are not drawn; the Bridge board reads
    the bridge worker's own series."""
    for uid, text in dashboards.render().items():
        board = json.loads(text)
        panels = dashboards.panels(board)
        exprs = [t.get("expr") for p in panels for t in p.get("targets") or []]
        assert all(exprs), f"{uid}: a target without a PromQL expression"
        assert all(p.get("targets") for p in panels), f"{uid}: a panel without a query"
        variables = [v for v in board["templating"]["list"] if v.get("type") == "query"]
        assert len(dashboards.queries(text)) == len(exprs) + len(variables), uid
        for panel in panels:
            title = panel["title"].lower()
            for missing in ("value", "span", "creator"):
                assert missing not in title, f"{uid}: {panel['title']}"
    nested = {"panels": [{"type": "row", "panels": [{"type": "timeseries", "targets": []}]}]}
    assert len(dashboards.panels(nested)) == 1
    market = json.loads(dashboards.render()["dchat-marketplace"])
    used = {s.name for q in dashboards.queries(json.dumps(market)) for s in selectors(q)}
    assert {
        "marketplace_purchases_total",
        "marketplace_payment_confirmation_seconds_bucket",
        "marketplace_chain_errors_total",
    } <= used
    bridge = json.loads(dashboards.render()["dchat-bridge"])
    used = {s.name for q in dashboards.queries(json.dumps(bridge)) for s in selectors(q)}
    assert {
        "bridge_validators_reachable",
        "bridge_validator_quorum",
        "bridge_paused",
        "bridge_deposits_observed_total",
        "bridge_transfers_finished_total",
        "bridge_transfer_latency_seconds_bucket",
        "bridge_finality_proof_timeout_total",
        "bridge_attestations_signed_total",
        "bridge_transactions_submitted_total",
    } <= used
