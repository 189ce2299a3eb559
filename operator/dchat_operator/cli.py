"""``dchat-operator``: run the operator, render a CR's children, print the CRD.

Design: the one entry point. ``dchat-operator [run] ...`` wraps ``kopf.run`` with the settings
this operator needs (standalone, namespaces or cluster-wide, liveness endpoint, JSON logs,
metrics port); ``render -f cluster.yaml`` prints the objects the builders make for each
DchatCluster in the file as a YAML stream (for review and checkov); ``crd`` prints the
generated CustomResourceDefinition; ``rbac`` prints the ClusterRole the operator needs
(``rbac --namespaced NAMESPACE``: a Role there plus a ClusterRole with the cluster-scoped rules).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dchat_operator.api import constants as c
from dchat_operator.api.crd import DEFINITIONS, render_crd_yaml, to_yaml
from dchat_operator.api.models import DchatCluster
from dchat_operator.api.policy import DEFAULT_ANNOTATION_PREFIXES, Policy
from dchat_operator.api.rbac import render_postgres_rbac_yaml, render_rbac_yaml
from dchat_operator.builders.children import Capabilities, desired_children


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dchat-operator", description="The dchat Kubernetes operator."
    )
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="run the operator (the default)")
    _run_flags(run)
    _run_flags(parser)

    render = sub.add_parser("render", help="print the children of the DchatClusters in a file")
    render.add_argument("-f", "--filename", required=True, help="YAML file ('-' for stdin)")
    render.add_argument(
        "-n",
        "--namespace",
        default="dchat",
        help="namespace for CRs that do not name one (default: dchat)",
    )
    render.add_argument(
        "--with-monitoring",
        action="store_true",
        help="also build ServiceMonitor/PrometheusRule (as if their CRDs exist)",
    )
    crd = sub.add_parser("crd", help="print a CustomResourceDefinition (DchatCluster's)")
    crd.add_argument(
        "--kind",
        default=c.KIND,
        choices=[d.kind.kind for d in DEFINITIONS],
        help="the kind whose CRD to print",
    )
    rbac = sub.add_parser("rbac", help="print the ClusterRole with the least RBAC it needs")
    rbac.add_argument(
        "--namespaced",
        metavar="NAMESPACE",
        help="print a Role in NAMESPACE and a ClusterRole with the cluster-scoped rules only",
    )
    rbac.add_argument(
        "--postgres",
        action="store_true",
        help="print the ClusterRole dchat-postgres (Patroni's rights) instead",
    )
    return parser


def _bounded(kind: type[int] | type[float], low: float, high: float) -> Any:
    """An argparse type: a number of ``kind`` in [low, high], else a clear error."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a{'n integer' if kind is int else ' number'}"
            ) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is outside {low:g}..{high:g}")
        return value

    return parse


def _run_flags(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch this namespace (repeatable; globs allowed)",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch all namespaces (default)"
    )
    parser.add_argument(
        "--liveness-port", type=_bounded(int, 0, 65535), default=8080, help="0 disables /healthz"
    )
    parser.add_argument(
        "--metrics-port", type=_bounded(int, 0, 65535), default=8081, help="0 disables /metrics"
    )
    parser.add_argument(
        "--resync-seconds",
        type=_bounded(float, 0.5, 86400),
        default=60.0,
        help="interval of the periodic resync",
    )
    parser.add_argument(
        "--watch-timeout",
        type=_bounded(int, 10, 3600),
        default=300,
        help="server-side watch timeout (s)",
    )
    parser.add_argument(
        "--workers",
        type=_bounded(int, 1, 256),
        default=16,
        help="reconciles that run at once (default 16)",
    )
    parser.add_argument(
        "--reconcile-timeout",
        type=_bounded(float, 1, 3600),
        default=60.0,
        help="deadline of one reconcile in seconds; then it is retried with backoff",
    )
    parser.add_argument(
        "--request-timeout",
        type=_bounded(float, 0.5, 600),
        default=15.0,
        help="deadline of one API request (s)",
    )
    parser.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="hold a Lease and reconcile only while holding it (default on; run 2 replicas)",
    )
    parser.add_argument(
        "--leader-election-namespace",
        help="namespace of the Lease (default: $POD_NAMESPACE, else the first --namespace, "
        "else default)",
    )
    parser.add_argument(
        "--lease-duration",
        type=_bounded(float, 3, 600),
        default=15.0,
        help="seconds a leader holds the Lease",
    )
    policy = parser.add_argument_group(
        "policy for shared clusters (repeatable; the environment variables "
        "DCHAT_OPERATOR_ALLOWED_* take comma-separated lists when a flag is not given)"
    )
    policy.add_argument(
        "--allowed-registry",
        action="append",
        metavar="PREFIX",
        help="image repository prefix a DchatCluster may use, e.g. ghcr.io/dchat-dev/ "
        "(default: any)",
    )
    policy.add_argument(
        "--allowed-service-type",
        action="append",
        choices=["ClusterIP", "NodePort", "LoadBalancer", "None"],
        help="type the P2P Service may have (default: ClusterIP, None)",
    )
    policy.add_argument(
        "--allowed-annotation-prefix",
        action="append",
        metavar="PREFIX",
        help="annotation key prefix allowed on Services and Ingresses ('*': any; default: "
        + ", ".join(DEFAULT_ANNOTATION_PREFIXES)
        + ")",
    )
    policy.add_argument(
        "--allowed-cluster-issuer",
        action="append",
        metavar="NAME",
        help="cert-manager ClusterIssuer an Ingress may name (default: any)",
    )
    parser.add_argument("--log-format", choices=["json", "text"], default="json")
    parser.add_argument("-v", "--verbose", action="store_true")


def run_operator(args: argparse.Namespace) -> int:
    import kopf

    from dchat_operator import handlers  # noqa: F401  (registers the handlers)
    from dchat_operator.handlers.options import Options
    from dchat_operator.handlers.runtime import OperatorMemo

    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL,
    )
    if not args.verbose:
        # kopf logs every successful handler call at INFO; keep warnings and our own logs.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    namespaces = list(args.namespace)
    lease_namespace = (
        args.leader_election_namespace
        or os.environ.get("POD_NAMESPACE")
        or next((ns for ns in namespaces if "*" not in ns and "?" not in ns), None)
        or "default"
    )
    options = Options(
        resync_seconds=args.resync_seconds,
        metrics_port=args.metrics_port or None,
        watch_server_timeout=args.watch_timeout,
        workers=args.workers,
        reconcile_timeout=args.reconcile_timeout,
        request_timeout=args.request_timeout,
        leader_election=args.leader_elect,
        lease_namespace=lease_namespace,
        lease_duration=args.lease_duration,
        policy=_policy(args),
    )
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=(
            f"http://0.0.0.0:{args.liveness_port}/healthz" if args.liveness_port else None
        ),
        memo=OperatorMemo(options=options),
    )
    return 0


def _policy(args: argparse.Namespace) -> Policy:
    from dataclasses import replace

    from dchat_operator.handlers.options import policy_from_env

    policy = policy_from_env()
    given = {
        "allowed_registries": args.allowed_registry,
        "allowed_service_types": args.allowed_service_type,
        "allowed_annotation_prefixes": args.allowed_annotation_prefix,
        "allowed_cluster_issuers": args.allowed_cluster_issuer,
    }
    return replace(policy, **{k: tuple(v) for k, v in given.items() if v})


def render(filename: str, with_monitoring: bool, namespace: str = "dchat") -> int:
    text = sys.stdin.read() if filename == "-" else Path(filename).read_text(encoding="utf-8")
    caps = Capabilities(monitoring_crds=with_monitoring)
    out: list[str] = []
    for doc in yaml.safe_load_all(text):
        if not isinstance(doc, dict) or doc.get("kind") != c.KIND:
            continue
        doc.setdefault("metadata", {}).setdefault("namespace", namespace)
        try:
            cluster = DchatCluster.parse(doc)
        except ValidationError as exc:
            name = doc["metadata"].get("name", "?")
            print(f"{filename}: DchatCluster {name} is invalid:\n{exc}", file=sys.stderr)
            return 1
        out.extend(to_yaml(obj) for obj in desired_children(cluster, caps))
    sys.stdout.write("---\n" + "---\n".join(out) if out else "")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "crd":
        definition = next(d for d in DEFINITIONS if d.kind.kind == args.kind)
        sys.stdout.write(render_crd_yaml(definition))
        return 0
    if args.command == "rbac":
        if args.postgres:
            sys.stdout.write(render_postgres_rbac_yaml())
        else:
            sys.stdout.write(render_rbac_yaml(args.namespaced))
        return 0
    if args.command == "render":
        return render(args.filename, args.with_monitoring, args.namespace)
    return run_operator(args)


if __name__ == "__main__":
    sys.exit(main())
