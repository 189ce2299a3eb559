"""Every child of a DchatCluster, in apply order, and the kinds the operator manages.

Design: ``desired_children`` is the whole desired state of one cluster as a list of plain
objects, each stamped with its spec hash; ``prunable`` names the optional children that must
not exist when the spec does not ask for them (the PersistentVolumeClaim is never pruned: data
is only deleted by a human). ``Capabilities`` carries the one fact about the cluster that
changes what is built (whether the Prometheus Operator's CRDs exist) so builders stay pure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dchat_operator.api.models import DchatCluster
from dchat_operator.builders import monitoring, network, workload
from dchat_operator.builders.common import Obj, names, with_spec_hash
from dchat_operator.builders.config import config_map


@dataclass(frozen=True)
class ChildKind:
    """API coordinates of a child kind."""

    api_version: str
    kind: str
    plural: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]


SERVICE_ACCOUNT = ChildKind("v1", "ServiceAccount", "serviceaccounts")
CONFIG_MAP = ChildKind("v1", "ConfigMap", "configmaps")
SERVICE = ChildKind("v1", "Service", "services")
PVC = ChildKind("v1", "PersistentVolumeClaim", "persistentvolumeclaims")
DEPLOYMENT = ChildKind("apps/v1", "Deployment", "deployments")
PDB = ChildKind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets")
NETWORK_POLICY = ChildKind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies")
INGRESS = ChildKind("networking.k8s.io/v1", "Ingress", "ingresses")
SERVICE_MONITOR = ChildKind("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors")
PROMETHEUS_RULE = ChildKind("monitoring.coreos.com/v1", "PrometheusRule", "prometheusrules")

KINDS: tuple[ChildKind, ...] = (
    SERVICE_ACCOUNT,
    CONFIG_MAP,
    SERVICE,
    PVC,
    DEPLOYMENT,
    PDB,
    NETWORK_POLICY,
    INGRESS,
    SERVICE_MONITOR,
    PROMETHEUS_RULE,
)
_BY_KIND = {k.kind: k for k in KINDS}


def kind_of(obj: Obj) -> ChildKind:
    return _BY_KIND[obj["kind"]]


@dataclass(frozen=True)
class Capabilities:
    """What the target cluster offers beyond core Kubernetes."""

    monitoring_crds: bool = False


def desired_children(cluster: DchatCluster, caps: Capabilities) -> list[Obj]:
    """All children, dependencies first (the Deployment after what it mounts)."""
    builders: list[Callable[[DchatCluster], Obj | None]] = [
        workload.service_account,
        config_map,
        workload.persistent_volume_claim,
        network.api_service,
        network.metrics_service,
        network.p2p_service,
        workload.deployment,
        workload.pod_disruption_budget,
        network.network_policy,
        network.ingress,
    ]
    if caps.monitoring_crds and cluster.spec.monitoring.service_monitor:
        builders.append(monitoring.service_monitor)
    if caps.monitoring_crds and cluster.spec.monitoring.prometheus_rule:
        builders.append(monitoring.prometheus_rule)
    out = []
    for build in builders:
        obj = build(cluster)
        if obj is not None:
            out.append(with_spec_hash(obj))
    return out


def prunable(cluster: DchatCluster, caps: Capabilities) -> list[tuple[ChildKind, str]]:
    """Optional children that may exist from an earlier spec and must go when unwanted."""
    n = names(cluster)
    candidates: list[tuple[ChildKind, str]] = [
        (SERVICE, n.p2p_service),
        (PDB, n.pdb),
        (NETWORK_POLICY, n.network_policy),
        (INGRESS, n.ingress),
    ]
    if caps.monitoring_crds:
        candidates += [(SERVICE_MONITOR, n.service_monitor), (PROMETHEUS_RULE, n.prometheus_rule)]
    wanted = {(kind_of(o), o["metadata"]["name"]) for o in desired_children(cluster, caps)}
    return [cand for cand in candidates if cand not in wanted]
