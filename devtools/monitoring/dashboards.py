"""The guide's five Grafana dashboards (section 5.3) as code, with grafana-foundation-sdk.

Design:
- One function per board; panels are built by three helpers (``graph``, ``single``,
  ``row``) so every panel has a Prometheus data source variable, a unique id, ref ids A, B,
  ... and a fixed grid (24 columns). The JSON is the SDK's encoding, sorted, so a regenerated
  board diffs cleanly.
- Every query is scoped with the ``$namespace`` and ``$cluster`` variables (label values of
  the node's request counter) through ``SEL``; windows are fixed (``[5m]`` for rates,
  ``[10m]``/``[1h]`` for counts of sparse events: PromQL that any parser reads; no Grafana
  macros inside queries).
- Only series the node, its Litestream sidecar or the operator export, the recording rules
  of ``dchat_operator.builders.monitoring``, Prometheus's own per-target series (``up``,
  ``scrape_samples_scraped``, ``ALERTS``) and, on the Infrastructure board, the kubelet's
  volume and cAdvisor's network series (every Kubernetes node exports them). The guide's
  panels with no metric behind them are not drawn: no average purchase value (the node
  exports no amount), no span counts (spans go to the OTLP collector; only export errors are
  counted here). The marketplace board uses the marketplace's own series (purchases by
  outcome, handling latency, payment confirmation, chain errors); the bridge board the bridge
  worker's (``bridge_*``: validators reachable and quorum, paused, deposits observed,
  transfers finished by outcome and their success rate, latency to final and to released,
  the DESIGN.md contract's ``bridge_finality_proof_timeout_total``, attestations signed and
  transactions submitted) and the API's request series of its routes. Sparse events (bridge
  transfers) are shown as ``increase``/``rate`` over ``[1h]``. The test that parses every
  query (``queries``: every panel's targets, inside collapsed rows too, and the query
  variables) lists these sources.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import common, dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.variants import Dataquery
from grafana_foundation_sdk.models.common import (
    BigValueGraphMode,
    LegendDisplayMode,
    LegendPlacement,
    TooltipDisplayMode,
)
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    GridPos,
    VariableRefresh,
)

DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
SEL = 'namespace=~"$namespace",dchat_cluster=~"$cluster"'
NS = 'namespace=~"$namespace"'
OP_SEL = 'namespace=~"$namespace",cluster=~"$cluster"'
REQ = "dchat_http_requests_total"
DUR = "dchat_http_request_duration_seconds"
W = 24  # grid width


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


def _targets(queries: Iterable[Query]) -> list[Builder[Dataquery]]:
    out: list[Builder[Dataquery]] = []
    for index, q in enumerate(queries):
        target = prometheus.Dataquery().expr(q.expr).ref_id(chr(ord("A") + index)).datasource(DS)
        if q.legend:
            target = target.legend_format(q.legend)
        out.append(target)
    return out


class Board:
    """Lays panels out left to right, rows of height ``h``, ids in order."""

    def __init__(self, uid: str, title: str, description: str) -> None:
        self.builder = (
            dashboard.Dashboard(title)
            .uid(uid)
            .description(description)
            .tags(["dchat"])
            .refresh("30s")
            .time("now-1h", "now")
            .timezone("utc")
            .editable()
            .with_variable(
                dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
            )
            .with_variable(
                dashboard.QueryVariable("namespace")
                .label("Namespace")
                .datasource(DS)
                .query(f"label_values({REQ}, namespace)")
                .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
                .multi(True)
                .include_all(True)
            )
            .with_variable(
                dashboard.QueryVariable("cluster")
                .label("DchatCluster")
                .datasource(DS)
                .query(f'label_values({REQ}{{namespace=~"$namespace"}}, dchat_cluster)')
                .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
                .multi(True)
                .include_all(True)
            )
        )
        self.next_id = 1
        self.x = 0
        self.y = 0
        self.h = 0

    def _place(self, w: int, h: int) -> GridPos:
        if self.x + w > W:
            self.x, self.y, self.h = 0, self.y + self.h, 0
        pos = GridPos(h=h, w=w, x=self.x, y=self.y)
        self.x += w
        self.h = max(self.h, h)
        return pos

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def row(self, title: str) -> Board:
        self.x, self.y, self.h = 0, self.y + self.h, 0
        self.builder = self.builder.with_row(
            dashboard.Row(title).id(self._id()).grid_pos(self._place(W, 1))
        )
        self.x, self.y, self.h = 0, self.y + 1, 0
        return self

    def graph(
        self,
        title: str,
        queries: list[Query],
        unit: str = "short",
        description: str = "",
        w: int = 12,
        h: int = 8,
    ) -> Board:
        panel = (
            timeseries.Panel()
            .id(self._id())
            .title(title)
            .description(description)
            .datasource(DS)
            .unit(unit)
            .targets(_targets(queries))
            .grid_pos(self._place(w, h))
            .legend(
                common.VizLegendOptions()
                .display_mode(LegendDisplayMode.LIST)
                .placement(LegendPlacement.BOTTOM)
                .show_legend(True)
            )
            .tooltip(common.VizTooltipOptions().mode(TooltipDisplayMode.MULTI))
        )
        self.builder = self.builder.with_panel(panel)
        return self

    def single(
        self, title: str, query: Query, unit: str = "short", description: str = "", w: int = 6
    ) -> Board:
        panel = (
            stat.Panel()
            .id(self._id())
            .title(title)
            .description(description)
            .datasource(DS)
            .unit(unit)
            .targets(_targets([query]))
            .grid_pos(self._place(w, 4))
            .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
            .graph_mode(BigValueGraphMode.AREA)
        )
        self.builder = self.builder.with_panel(panel)
        return self

    def json(self) -> str:
        return json.dumps(self.builder.build(), cls=JSONEncoder, sort_keys=True, indent=2) + "\n"


def _p(q: float, metric: str, by: str, extra: str = "") -> str:
    sel = f"{SEL},{extra}" if extra else SEL
    return f"histogram_quantile({q}, sum by ({by}le) (rate({metric}_bucket{{{sel}}}[5m])))"


def overview() -> Board:
    b = Board(
        "dchat-overview",
        "dchat / Overview",
        "Health, request rate and latency, errors by component, p99 by operation.",
    )
    b.row("Health")
    b.single("Node pods up", Query(f"sum(up{{{SEL}}})"), w=4)
    b.single("Pods draining", Query(f"sum(dchat_draining{{{SEL}}})"), w=4)
    b.single(
        "Availability (5m)",
        Query(f"1 - max(dchat:http_requests_errors:ratio_rate5m{{{SEL}}})"),
        "percentunit",
        "Share of API requests not answered 5xx (SLO 99.5 %).",
        w=4,
    )
    b.single(
        "Error budget burn (1h)",
        Query(f"max(dchat:http_requests_errors:ratio_rate1h{{{SEL}}}) / 0.005"),
        "x",
        "Error ratio over 1h divided by the 0.5 % budget: 14.4 pages.",
        w=4,
    )
    b.single(
        "p99 latency (5m)",
        Query(f"max(dchat:http_request_duration_seconds:p99_rate5m{{{SEL}}})"),
        "s",
        "SLO: below 500 ms.",
        w=4,
    )
    b.single(
        "Firing alerts", Query('count(ALERTS{alertstate="firing",alertname!=""}) or vector(0)'), w=4
    )
    b.row("Traffic")
    b.graph(
        "Request rate by status",
        [Query(f"sum by (status) (rate({REQ}{{{SEL}}}[5m]))", "{{status}}")],
        "reqps",
    )
    b.graph(
        "Latency p50 / p99",
        [
            Query(_p(0.5, DUR, ""), "p50"),
            Query(_p(0.99, DUR, ""), "p99"),
        ],
        "s",
    )
    b.graph(
        "Errors by component",
        [Query(f"sum by (component) (rate(dchat_errors_total{{{SEL}}}[5m]))", "{{component}}")],
        "ops",
        "dchat_errors_total: 5xx answers (api), unhandled exceptions, failed background work.",
    )
    b.graph(
        "Error ratio (errors / requests)",
        [
            Query(
                f"sum(rate(dchat_errors_total{{{SEL}}}[5m])) / "
                f"clamp_min(sum(rate({REQ}{{{SEL}}}[5m])), 1e-9)",
                "errors / requests",
            )
        ],
        "percentunit",
        "The HighErrorRate alert fires above 5 % for 5 minutes.",
    )
    b.graph(
        "p99 latency by operation",
        [Query(_p(0.99, DUR, "method, route, "), "{{method}} {{route}}")],
        "s",
        w=24,
    )
    return b


def marketplace() -> Board:
    b = Board(
        "dchat-marketplace",
        "dchat / Marketplace",
        "Purchases by outcome (marketplace_purchases_total), their handling latency "
        "(marketplace_purchase_latency_ms, DESIGN.md contract), payment confirmation on the "
        "currency chain, and the marketplace API's requests by route (listings and "
        "purchases). The node exports no purchase value: there is no average-value panel.",
    )
    m = "marketplace_purchase_latency_ms"
    conf = "marketplace_payment_confirmation_seconds"
    b.row("Purchases")
    b.graph(
        "Purchases per second by outcome",
        [
            Query(
                f"sum by (outcome) (rate(marketplace_purchases_total{{{SEL}}}[5m]))",
                "{{outcome}}",
            )
        ],
        "ops",
        "created, confirmed (payment final on the chain), released, refunded, expired, "
        "refund_pending, disputed, reorged, rejected.",
    )
    b.graph(
        "Purchase latency p50 / p99",
        [Query(_p(0.5, m, ""), "p50"), Query(_p(0.99, m, ""), "p99")],
        "ms",
        "Alert MarketplacePurchaseLatencyHigh: p99 above 100 ms for 5 minutes.",
    )
    b.graph(
        "Average purchase latency",
        [
            Query(
                f"sum(rate({m}_sum{{{SEL}}}[5m])) / "
                f"clamp_min(sum(rate({m}_count{{{SEL}}}[5m])), 1e-9)",
                "avg",
            )
        ],
        "ms",
    )
    b.row("Payments (currency chain)")
    b.graph(
        "Payment confirmation time p50 / p99",
        [Query(_p(0.5, conf, ""), "p50"), Query(_p(0.99, conf, ""), "p99")],
        "s",
        "From purchase creation to a confirmed (final) payment.",
    )
    b.graph(
        "Payment checks failed on the chain RPC",
        [Query(f"sum(rate(marketplace_chain_errors_total{{{SEL}}}[5m]))", "errors/s")],
        "ops",
        "The worker backs off the purchase and checks it again later.",
    )
    b.row("Marketplace API (sellers' listings, buyers' purchases)")
    route = 'route=~"/api/v1/marketplace.*"'
    b.graph(
        "Requests by route",
        [
            Query(
                f"sum by (method, route) (rate({REQ}{{{SEL},{route}}}[5m]))", "{{method}} {{route}}"
            )
        ],
        "reqps",
    )
    b.graph(
        "Requests by status",
        [Query(f"sum by (status) (rate({REQ}{{{SEL},{route}}}[5m]))", "{{status}}")],
        "reqps",
    )
    return b


def bridge() -> Board:
    b = Board(
        "dchat-bridge",
        "dchat / Bridge",
        "The bridge worker's own series (bridge_*): validators reachable against the quorum, "
        "pause, transfers initiated (deposits observed) and finished by outcome, success "
        "rate, latency from observation to final and to released, finality proof timeouts "
        "(DESIGN.md contract), attestations signed and releases/refunds submitted; then the "
        "bridge API's requests and latency.",
    )
    br = f"{{{SEL}}}"
    per_cluster = "sum by (dchat_cluster"
    b.row("Health")
    b.single(
        "Validators reachable (lowest pod)",
        Query(f"min(bridge_validators_reachable{br})"),
        description="Registered validators a pod heard from in the last 6 s, its own included "
        "(/health/bridge validators_reachable). Below the quorum nothing is released.",
    )
    b.single("Validator quorum", Query(f"max(bridge_validator_quorum{br})"))
    b.single(
        "Pods paused",
        Query(f"sum(bridge_paused{br})"),
        description="kubectl dchat pause-bridge: no signing, no submitting; observing goes on.",
    )
    b.single(
        "Finality proof timeouts (1h)",
        Query(f"sum(increase(bridge_finality_proof_timeout_total{br}[1h]))"),
        description="Alert BridgeFinalityProofTimeout: more than 5 in 10 minutes.",
    )
    b.graph(
        "Validators reachable vs quorum",
        [
            Query(f"min by (pod) (bridge_validators_reachable{br})", "{{pod}} reachable"),
            Query(f"max by (dchat_cluster) (bridge_validator_quorum{br})", "quorum"),
        ],
        "short",
        "Per pod: validators heard from (heartbeat or signature) within max(6 s, 2 polls).",
        w=24,
    )
    b.row("Transfers")
    b.graph(
        "Transfers initiated (deposits observed, 1h) by source chain",
        [
            Query(
                f"{per_cluster}, chain) (increase(bridge_deposits_observed_total{br}[1h]))",
                "{{dchat_cluster}} from {{chain}}",
            )
        ],
        "short",
        "Vault Deposit logs first recorded by the cluster's store.",
    )
    b.graph(
        "Transfers finished (1h) by outcome",
        [
            Query(
                f"{per_cluster}, outcome) (increase(bridge_transfers_finished_total{br}[1h]))",
                "{{dchat_cluster}} {{outcome}}",
            )
        ],
        "short",
        "released (executed on the destination), refunded (back to the depositor), dropped "
        "(the deposit left the chain in a reorg).",
    )
    finished, released = "bridge_transfers_finished_total", 'outcome="released"'
    b.graph(
        "Success rate (released / finished, 1h)",
        [
            Query(
                f"{per_cluster}) (increase({finished}{{{SEL},{released}}}[1h]))"
                f" / {per_cluster}) (increase({finished}{br}[1h]))",
                "{{dchat_cluster}}",
            )
        ],
        "percentunit",
        "No value while no transfer finished in the window.",
    )
    b.graph(
        "Finality proof timeouts (10m)",
        [
            Query(
                f"sum by (pod) (increase(bridge_finality_proof_timeout_total{br}[10m]))",
                "{{pod}}",
            )
        ],
        "short",
        "Transfers without source finality plus quorum signatures within "
        "bridge.finality_proof_timeout_secs; they turn refund_pending. Alert "
        "BridgeFinalityProofTimeout: more than 5 in 10 minutes.",
    )
    b.row("Finality latency")
    lat = "bridge_transfer_latency_seconds_bucket"
    b.graph(
        "Latency from observation, p50 / p99 (1h)",
        [
            Query(
                f"histogram_quantile({q}, sum by (stage, le) (rate({lat}{br}[1h])))",
                f"p{int(q * 100)} {{{{stage}}}}",
            )
            for q in (0.5, 0.99)
        ],
        "s",
        "final: the deposit's block final on the source chain (its finality policy); "
        "released: the release executed on the destination.",
        w=24,
    )
    b.row("Validator and relayer work")
    b.graph(
        "Attestations signed (1h) by kind",
        [
            Query(
                f"sum by (pod, kind) (increase(bridge_attestations_signed_total{br}[1h]))",
                "{{pod}} {{kind}}",
            )
        ],
        "short",
        "Signatures by this cluster's validator key (release, refund).",
    )
    b.graph(
        "Releases and refunds submitted (1h)",
        [
            Query(
                f"sum by (pod, kind) (increase(bridge_transactions_submitted_total{br}[1h]))",
                "{{pod}} {{kind}}",
            )
        ],
        "short",
        "Transactions sent by the relayer role (release on the destination, refund on the source).",
    )
    route = 'route=~"/api/v1/bridge.*"'
    b.row("Bridge API")
    b.graph(
        "Bridge API requests by route and status",
        [
            Query(
                f"sum by (method, route, status) (rate({REQ}{{{SEL},{route}}}[5m]))",
                "{{method}} {{route}} {{status}}",
            )
        ],
        "reqps",
        "POST /api/v1/bridge/initiate builds a deposit for a wallet to send; transfers and "
        "proofs are read here.",
    )
    b.graph(
        "Bridge API latency p50 / p99",
        [Query(_p(0.5, DUR, "", route), "p50"), Query(_p(0.99, DUR, "", route), "p99")],
        "s",
    )
    return b


def observability() -> Board:
    b = Board(
        "dchat-observability",
        "dchat / Observability",
        "The monitoring pipeline itself: samples scraped, scrape health, observability "
        "errors (trace export, metrics push), alerts.",
    )
    b.row("Metrics")
    b.graph(
        "Samples scraped per second",
        [Query(f"sum by (pod) (scrape_samples_scraped{{{SEL}}}) / 30", "{{pod}}")],
        "ops",
        "Samples per scrape divided by the 30 s scrape interval.",
    )
    b.graph(
        "Node scrape targets up",
        [Query(f"sum by (dchat_cluster) (up{{{SEL}}})", "{{dchat_cluster}}")],
    )
    b.row("Traces and push")
    b.graph(
        "Observability errors by kind",
        [Query(f"sum by (kind) (increase(observability_errors_total{{{SEL}}}[5m]))", "{{kind}}")],
        "short",
        "Alert MetricsRecordingError: more than 10 in 5 minutes.",
    )
    b.graph(
        "Health and readiness (pods draining)",
        [Query(f"sum by (pod) (dchat_draining{{{SEL}}})", "{{pod}}")],
    )
    b.row("Alerts")
    b.graph(
        "Firing alerts",
        [
            Query(
                'sum by (alertname, severity) (ALERTS{alertstate="firing"})',
                "{{alertname}} ({{severity}})",
            )
        ],
        w=24,
    )
    return b


def infrastructure() -> Board:
    b = Board(
        "dchat-infrastructure",
        "dchat / Infrastructure",
        "Restarts, memory, the database pool and queue, volumes, network, and the operator's "
        "deployment events (rollbacks, failovers, backups).",
    )
    b.row("Pods")
    b.graph(
        "Restarts (process starts in 1h)",
        [Query(f"sum by (pod) (changes(process_start_time_seconds{{{SEL}}}[1h]))", "{{pod}}")],
    )
    b.graph(
        "Resident memory",
        [Query(f"max by (pod) (process_resident_memory_bytes{{{SEL}}})", "{{pod}}")],
        "bytes",
        "Alert PodMemoryUsageHigh: above 1.5 GB for 5 minutes.",
    )
    b.graph(
        "CPU",
        [Query(f"sum by (pod) (rate(process_cpu_seconds_total{{{SEL}}}[5m]))", "{{pod}}")],
        "percentunit",
    )
    b.graph(
        "Database connections (active / max)",
        [
            Query(f"sum by (pod) (database_connections_active{{{SEL}}})", "{{pod}} active"),
            Query(f"max by (pod) (database_connections_max{{{SEL}}})", "{{pod}} max"),
        ],
    )
    b.graph(
        "Database queue (depth / limit) and shed queries",
        [
            Query(f"sum by (pod) (dchat_database_queue_depth{{{SEL}}})", "{{pod}} depth"),
            Query(f"max by (pod) (dchat_database_queue_limit{{{SEL}}})", "{{pod}} limit"),
            Query(
                f"sum by (pod) (rate(dchat_database_queries_shed_total{{{SEL}}}[5m]))",
                "{{pod}} shed/s",
            ),
        ],
        w=24,
    )
    b.row("Volumes and network (kubelet, cAdvisor)")
    b.graph(
        "Data volume usage",
        [
            Query(
                f"max by (persistentvolumeclaim) (kubelet_volume_stats_used_bytes{{{NS}}}"
                f" / kubelet_volume_stats_capacity_bytes{{{NS}}})",
                "{{persistentvolumeclaim}}",
            )
        ],
        "percentunit",
    )
    b.graph(
        "Network",
        [
            Query(
                f"sum by (pod) (rate(container_network_receive_bytes_total{{{NS}}}[5m]))",
                "{{pod}} in",
            ),
            Query(
                f"sum by (pod) (rate(container_network_transmit_bytes_total{{{NS}}}[5m]))",
                "{{pod}} out",
            ),
        ],
        "Bps",
    )
    b.row("Deployment events (operator)")
    b.graph(
        "Rollbacks, failovers, fenced pods (1h)",
        [
            Query(
                "sum by (cluster, cause) "
                f"(increase(dchat_operator_rollbacks_total{{{OP_SEL}}}[1h]))",
                "rollback {{cluster}} {{cause}}",
            ),
            Query(
                "sum by (cluster) "
                f"(increase(dchat_operator_primary_changes_total{{{OP_SEL}}}[1h]))",
                "primary change {{cluster}}",
            ),
            Query(
                f"sum by (cluster) (increase(dchat_operator_pods_fenced_total{{{OP_SEL}}}[1h]))",
                "fenced {{cluster}}",
            ),
        ],
    )
    b.graph(
        "Age of the last successful backup",
        [
            Query(
                "time() - max by (cluster) "
                f"(dchat_operator_backup_last_success_timestamp_seconds{{{OP_SEL}}})",
                "{{cluster}}",
            )
        ],
        "s",
        "Alert DchatBackupMissing: older than 26 h.",
    )
    b.graph(
        "Backups healthy (BackupHealthy condition)",
        [Query(f"max by (cluster) (dchat_operator_backup_healthy{{{OP_SEL}}})", "{{cluster}}")],
        "short",
        "1: scheduled backups complete on time; 0: the last failed or one is overdue "
        "(alert DchatBackupUnhealthy).",
    )
    b.graph(
        "Continuous replication (Litestream): transactions vs S3 uploads (5m)",
        [
            Query(f"sum by (pod) (changes(litestream_txid{{{SEL}}}[5m]))", "{{pod}} transactions"),
            Query(
                "sum by (pod) (increase(litestream_replica_operation_total"
                f'{{{SEL},operation="PUT"}}[5m]))',
                "{{pod}} uploads",
            ),
            Query(
                f"sum by (pod) (increase(litestream_sync_error_count{{{SEL}}}[5m]))",
                "{{pod}} sync errors",
            ),
        ],
        "short",
        "SQLite clusters with backups: the sidecar's own metrics. Transactions without uploads "
        "is lagging replication (alert ContinuousReplicationLagging).",
        w=24,
    )
    b.graph(
        "Deployment writes by the operator",
        [
            Query(
                'sum by (verb) (rate(dchat_operator_api_writes_total{resource="deployments"}[5m]))',
                "{{verb}}",
            )
        ],
        "ops",
    )
    b.graph(
        "Reconcile errors by kind",
        [Query("sum by (kind) (rate(dchat_operator_reconcile_errors_total[5m]))", "{{kind}}")],
        "ops",
    )
    return b


BOARDS = (overview, marketplace, bridge, observability, infrastructure)


def render() -> dict[str, str]:
    """``uid`` -> dashboard JSON, for every board."""
    out = {}
    for make in BOARDS:
        board = make()
        built = board.builder.build()
        assert built.uid is not None
        out[built.uid] = board.json()
    return out


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel of a dashboard, those inside (collapsed) rows too; rows themselves not."""
    out: list[dict[str, Any]] = []
    for panel in board.get("panels") or []:
        if panel.get("type") == "row":
            out.extend(panels(panel))
        else:
            out.append(panel)
    return out


def queries(board_json: str) -> list[str]:
    """Every PromQL expression of a dashboard (its panels' targets and query variables)."""
    data = json.loads(board_json)
    found = [str(t["expr"]) for p in panels(data) for t in p.get("targets") or [] if "expr" in t]
    for var in (data.get("templating") or {}).get("list") or []:
        if var.get("type") == "query":
            # label_values(SELECTOR, LABEL): Grafana's function; the selector is PromQL
            match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", str(var["query"]))
            assert match is not None, var["query"]
            found.append(match.group(1))
    return found
