"""Doctor's reachability checks, asked of the node pods themselves through the apiserver.

Design:
- Reachability is only meaningful from where the node runs (its network, its NetworkPolicy,
  its Secrets' values), so the plugin asks each Ready node pod, through the apiserver's pod
  proxy (``GET /api/v1/namespaces/NS/pods/POD:PORT/proxy/...``; RBAC: ``get`` on
  ``pods/proxy``), on the container port named ``metrics``:
  ``/health/database`` (a ping on a writable primary), ``/health/chain`` (every configured
  chain RPC answers), ``/health/relay`` and ``/health/bridge``. The plugin never sees a
  credential: the node answers with a state and a reason.
- S3: the node container holds no S3 credentials. On a SQLite cluster with backups, the
  Litestream sidecar does: its metrics (container port ``litestream``), scraped twice
  ``LAG_PROBE_SECONDS`` apart, count the S3 uploads
  (``litestream_replica_operation_total{operation="PUT"}``), their errors and the local
  transaction id; new errors, or new transactions without a new upload (a stalled upload is
  retried without counting an error), are a failure. PostgreSQL backups run in
  Jobs, the only pods with the credentials: the last DchatBackup's outcome answers there.
- Per check and pod the answer is one of: ok; failed (the node's own state and reason);
  not configured (the node answers ``disabled``: it runs without that component); cannot
  ask (the apiserver refused or could not reach the pod: RBAC, NetworkPolicy, the pod's
  network; a warning with how to look, not a failure of the cluster); not reported (a node
  release without that endpoint: a warning). The check is the worst over the Ready pods.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from dchat_operator.api import constants as c
from dchat_operator.api.kinds import POD
from dchat_operator.api.models import DatabaseEngine, DchatCluster
from dchat_operator.builders.common import selector_string
from dchat_operator.plugin.kube import Kube, KubeError
from dchat_operator.plugin.output import FAIL, OK, WARN

Obj = dict[str, Any]
NOT_CONFIGURED = "not configured"
PROXY_TIMEOUT = 5.0
"""Seconds for one pod-proxy request (an unreachable pod IP can hang the apiserver's dial)."""
LAG_PROBE_SECONDS = 3.0
"""Time between the two scrapes of a Litestream sidecar (its sync interval is 1 s)."""
PROXY_RBAC = (
    "doctor reads the node's health through the apiserver's pod proxy: grant get on "
    "pods/proxy in the namespace, or run: kubectl port-forward pod/{pod} {port} and curl "
    "localhost:{port}{path}"
)


@dataclass(frozen=True)
class Component:
    name: str
    title: str
    fix: str


COMPONENTS = (
    Component(
        "database",
        "database reachable",
        "check the database Secret's URL and that the database accepts the pods' connections "
        "(NetworkPolicy egress, pg_hba.conf); kubectl logs {pod}",
    ),
    Component(
        "chain",
        "chain RPCs answer",
        "check spec.chain (chatChainRpc, currencyChainRpc or their Secrets) and that the RPC "
        "endpoints are reachable from the pods (NetworkPolicy egress, extraEgressPorts)",
    ),
    Component(
        "relay",
        "relay bootstrap reachable",
        "check spec.relay.bootstrapNodes and that their P2P ports are reachable from the pods "
        "(NetworkPolicy egress)",
    ),
    Component(
        "bridge",
        "bridge healthy",
        "read the bridge's details above and kubectl logs {pod}",
    ),
)


@dataclass(frozen=True)
class Answer:
    """One pod's answer for one check: ``result`` is OK, FAIL, WARN or NOT_CONFIGURED."""

    pod: str
    result: str
    detail: str


def ready_pods(kube: Kube, cluster: DchatCluster) -> list[Obj]:
    pods = kube.list(POD, labels=selector_string(cluster))
    out = []
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        conditions = (pod.get("status") or {}).get("conditions") or []
        ready = any(x.get("type") == "Ready" and x.get("status") == "True" for x in conditions)
        if ready and not pod["metadata"].get("deletionTimestamp"):
            out.append(pod)
    return out


def port_of(pod: Obj, name: str) -> int | None:
    """The number of the container (or sidecar) port called ``name``."""
    spec = pod.get("spec") or {}
    for container in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        for port in container.get("ports") or []:
            if port.get("name") == name and port.get("containerPort"):
                return int(port["containerPort"])
    return None


def _json(body: bytes) -> Obj | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _apiserver_refusal(status: int, doc: Obj | None, body: bytes) -> str:
    if doc is not None and doc.get("kind") == "Status":
        return str(doc.get("message") or f"HTTP {status}")
    return f"HTTP {status}: {body[:200].decode(errors='replace')}"


def _shown(key: str, value: Any) -> str:
    """One detail of a healthy answer: ``engine sqlite``, ``currency block 1234``."""
    if isinstance(value, dict):
        inner = " ".join(f"{k} {v}" for k, v in value.items() if k != "ok")
        return f"{key} {inner}".strip()
    return f"{key} {value}"


def health_answer(pod: str, status: int, body: bytes) -> Answer:
    """Classify a pod's ``/health/<component>`` answer as relayed by the pod proxy."""
    doc = _json(body)
    if doc is None or doc.get("kind") == "Status" or (status != 404 and "component" not in doc):
        return Answer(pod, WARN, "cannot ask: " + _apiserver_refusal(status, doc, body))
    if status == 404:
        return Answer(pod, WARN, "this node release does not report it (no such endpoint)")
    state = str(doc.get("status"))
    details = doc.get("details") or {}
    if state == "disabled":
        why = doc.get("message") or details.get("reason") or "disabled"
        return Answer(pod, NOT_CONFIGURED, f"the node runs without it ({why})")
    if status == 200 and doc.get("healthy", True):
        shown = ", ".join(_shown(k, v) for k, v in sorted(details.items()) if k != "reason")
        return Answer(pod, OK, state + (f" ({shown})" if shown else ""))
    reasons = [str(details.get("reason") or doc.get("message") or "")]
    reasons += [
        f"{key}: {value['reason']}"
        for key, value in sorted(details.items())
        if isinstance(value, dict) and value.get("reason")
    ]
    reason = "; ".join(r for r in reasons if r)
    return Answer(pod, FAIL, state + (f" ({reason})" if reason else ""))


def combine(answers: list[Answer], fix: str) -> tuple[str, str, str]:
    """(result, detail, fix) over the pods: a failure wins, then "cannot ask", then not
    configured when every pod says so; otherwise ok."""
    if not answers:
        return WARN, "no Ready node pod to ask", "kubectl dchat status shows why no pod is ready"
    failed = [a for a in answers if a.result == FAIL]
    if failed:
        text = "; ".join(f"{a.pod}: {a.detail}" for a in failed)
        return FAIL, text, fix.format(pod=failed[0].pod)
    warned = [a for a in answers if a.result == WARN]
    if warned:
        text = "; ".join(f"{a.pod}: {a.detail}" for a in warned)
        return WARN, text, ""
    if all(a.result == NOT_CONFIGURED for a in answers):
        return NOT_CONFIGURED, answers[0].detail, ""
    oks = [a for a in answers if a.result == OK]
    return OK, f"{len(oks)} pod(s): " + "; ".join(f"{a.pod}: {a.detail}" for a in oks), ""


Unreachable = dict[tuple[str, str], Answer]
"""(pod, port name) -> why it cannot be asked: one run's memo."""


def _ask(
    kube: Kube, pod: Obj, port_name: str, path: str, memo: Unreachable
) -> tuple[int, bytes] | Answer:
    """The pod's answer through the proxy, or why it cannot be asked. A pod port that timed
    out or that the apiserver could not reach is not asked again in this run (each try
    costs up to ``PROXY_TIMEOUT``)."""
    name = pod["metadata"]["name"]
    port = port_of(pod, port_name)
    if port is None:
        return Answer(name, WARN, f"cannot ask: the pod has no container port named {port_name}")
    key = (name, port_name)
    if key in memo:
        return memo[key]
    try:
        status, body = kube.proxy_get(name, port, path, timeout=PROXY_TIMEOUT)
    except KubeError as exc:
        memo[key] = Answer(name, WARN, f"cannot ask: {exc.message}")
        return memo[key]
    doc = _json(body)
    if status in (502, 503) and doc is not None and doc.get("kind") == "Status":
        memo[key] = Answer(name, WARN, "cannot ask: " + str(doc.get("message")))
        return memo[key]
    return status, body


def component_checks(
    kube: Kube, pods: list[Obj], memo: Unreachable
) -> list[tuple[str, str, str, str]]:
    """(title, result, detail, fix) for each node component."""
    out = []
    for comp in COMPONENTS:
        answers = []
        for pod in pods:
            got = _ask(kube, pod, "metrics", f"/health/{comp.name}", memo)
            answers.append(
                got if isinstance(got, Answer) else health_answer(pod["metadata"]["name"], *got)
            )
        result, detail, fix = combine(answers, comp.fix)
        if result == WARN and "cannot ask" in detail:
            fix = _proxy_hint(pods[0], "metrics", f"/health/{comp.name}")
        out.append((comp.title, result, detail, fix))
    return out


def _proxy_hint(pod: Obj, port_name: str, path: str) -> str:
    port = port_of(pod, port_name) or port_name
    return PROXY_RBAC.format(pod=pod["metadata"]["name"], port=port, path=path)


def _sample_sum(text: str, name: str, **labels: str) -> float | None:
    """Sum of the samples named ``name`` (as exposed) whose labels include ``labels``; None
    when there is no such sample."""
    found = None
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, rest = head.partition("{")
        if metric.strip() != name:
            continue
        if any(f'{k}="{v}"' not in rest for k, v in labels.items()):
            continue
        try:
            found = (found or 0.0) + float(value)
        except ValueError:
            continue
    return found


def litestream_answer(pod: str, first: tuple[int, bytes], second: tuple[int, bytes]) -> Answer:
    """Classify two scrapes of the Litestream sidecar's /metrics, ``LAG_PROBE_SECONDS``
    apart, as S3 reachability. Litestream 0.5 exports no replica position, and a stalled
    upload is retried without an error: new transactions (``litestream_txid``) without a new
    upload between the scrapes is the stall."""
    for status, body in (first, second):
        if status != 200:
            refusal = _apiserver_refusal(status, _json(body), body)
            return Answer(pod, WARN, "cannot ask: " + refusal)
    a, b = (body.decode(errors="replace") for _, body in (first, second))
    put = "litestream_replica_operation_total"
    puts = [_sample_sum(t, put, operation="PUT") or 0.0 for t in (a, b)]
    errors = [_sample_sum(t, "litestream_replica_operation_errors_total") or 0.0 for t in (a, b)]
    txids = [_sample_sum(t, "litestream_txid") or 0.0 for t in (a, b)]
    if errors[1] > errors[0] or (errors[1] and not puts[1]):
        return Answer(
            pod, FAIL, f"{errors[1]:g} failed S3 operation(s), {puts[1]:g} upload(s) succeeded"
        )
    if txids[1] > txids[0] and puts[1] == puts[0]:
        return Answer(
            pod,
            FAIL,
            f"{txids[1] - txids[0]:g} new transaction(s) in {LAG_PROBE_SECONDS:g} s and no "
            f"upload: uploads to S3 are stalled ({puts[1]:g} since the sidecar started)",
        )
    if not puts[1]:
        return Answer(pod, WARN, "no upload to S3 since the sidecar started (no write since?)")
    return Answer(pod, OK, f"{puts[1]:g} upload(s) by the Litestream sidecar, none failing")


def s3_check(
    kube: Kube, cluster: DchatCluster, pods: list[Obj], obj: Obj, memo: Unreachable
) -> tuple[str, str, str, str]:
    title = "S3 reachable"
    backup = cluster.spec.backup
    if backup.s3 is None or not backup.enabled:
        return title, NOT_CONFIGURED, "no spec.backup.s3 (or backups disabled)", ""
    fix = (
        f"check spec.backup.s3 (bucket, region, endpoint) and the keys in Secret "
        f"{backup.s3.credentials_secret_ref.name}; kubectl logs {{pod}} -c litestream"
    )
    if cluster.spec.database.engine == DatabaseEngine.sqlite:
        first = [_ask(kube, pod, c.LITESTREAM_PORT_NAME, "/metrics", memo) for pod in pods]
        if pods:
            time.sleep(LAG_PROBE_SECONDS)
        answers: list[Answer] = []
        for pod, one in zip(pods, first, strict=True):
            two = _ask(kube, pod, c.LITESTREAM_PORT_NAME, "/metrics", memo)
            if isinstance(one, Answer):
                answers.append(one)
            elif isinstance(two, Answer):
                answers.append(two)
            else:
                answers.append(litestream_answer(pod["metadata"]["name"], one, two))
        result, detail, fix = combine(answers, fix)
        if result == WARN and "cannot ask" in detail:
            fix = _proxy_hint(pods[0], c.LITESTREAM_PORT_NAME, "/metrics")
        return title, result, detail, fix
    last = ((obj.get("status") or {}).get("lastBackup")) or {}
    phase = last.get("phase")
    name = last.get("name", "?")
    if phase == "Completed":
        return title, OK, f"the last backup Job ({name}) wrote to S3", ""
    if phase == "Failed":
        return (
            title,
            FAIL,
            f"the last backup ({name}) failed: its status.error says why",
            f"kubectl dchat backups {cluster.name}; fix the S3 settings or Secret, then "
            f"kubectl dchat backup {cluster.name} --wait",
        )
    return (
        title,
        WARN,
        "PostgreSQL backups run in Jobs, the only pods with the S3 credentials, and none has "
        "finished yet",
        f"kubectl dchat backup {cluster.name} --wait",
    )
