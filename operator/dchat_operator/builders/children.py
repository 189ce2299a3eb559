"""Every child of a DchatCluster, in apply order (the kinds themselves are in ``api.kinds``).

Design: ``desired_children`` is the whole desired state of one cluster as a list of plain
objects, each stamped with its spec hash; ``prunable`` names the optional children that must
not exist when the spec does not ask for them (the PersistentVolumeClaim is never pruned: data
is only deleted by a human). ``Capabilities`` carries the one fact about the cluster that
changes what is built (whether the Prometheus Operator's CRDs exist) so builders stay pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dchat_operator.api.kinds import (
    CONFIG_MAP,
    INGRESS,
    NETWORK_POLICY,
    PDB,
    PROMETHEUS_RULE,
    ROLE_BINDING,
    SERVICE,
    SERVICE_ACCOUNT,
    SERVICE_MONITOR,
    STATEFUL_SET,
    Kind,
    child_kind,
)
from dchat_operator.api.models import DchatCluster
from dchat_operator.builders import monitoring, network, postgres, workload
from dchat_operator.builders.common import Obj, names, with_spec_hash
from dchat_operator.builders.config import config_map


@dataclass(frozen=True)
class Capabilities:
    """What the target cluster offers beyond core Kubernetes."""

    monitoring_crds: bool = False


def desired_children(
    cluster: DchatCluster,
    caps: Capabilities,
    secret_versions: Mapping[str, str] | None = None,
) -> list[Obj]:
    """All children, dependencies first (the Deployment after what its pods use).

    ``secret_versions``: resourceVersion of each referenced Secret, as the controller read them
    (rolls the pods when one changes)."""

    def deployment(cluster: DchatCluster) -> Obj:
        return workload.deployment(cluster, secret_versions)

    builders: list[Callable[[DchatCluster], Obj | None]] = [
        # managed PostgreSQL first: the node pods wait for it anyway
        postgres.service_account,
        postgres.role_binding,
        postgres.config_map,
        postgres.headless_service,
        postgres.primary_service,
        postgres.replica_service,
        postgres.stateful_set,
        postgres.pod_disruption_budget,
        postgres.network_policy,
        workload.service_account,
        config_map,
        workload.persistent_volume_claim,
        # the node's Services after the Deployment: no pod needs one to start (no service
        # links), and a Service's ClusterIP allocation is the slowest apply when many clusters
        # start at once (0.2-0.8 s each with 50 new clusters, docs/operator.md "Benchmark")
        deployment,
        network.api_service,
        network.metrics_service,
        network.p2p_service,
        network.p2p_peers_service,
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


def prunable(cluster: DchatCluster, caps: Capabilities) -> list[tuple[Kind, str]]:
    """Optional children that may exist from an earlier spec and must go when unwanted."""
    n = names(cluster)
    candidates: list[tuple[Kind, str]] = [
        (SERVICE, n.p2p_service),
        (SERVICE, n.p2p_peers_service),
        (PDB, n.pdb),
        (NETWORK_POLICY, n.network_policy),
        (INGRESS, n.ingress),
    ]
    pg = postgres.name(cluster)
    candidates += [  # managed PostgreSQL, when the spec stops asking for it (claims stay)
        (SERVICE_ACCOUNT, pg),
        (ROLE_BINDING, pg),
        (CONFIG_MAP, postgres.config_map_name(cluster)),
        (SERVICE, pg),
        (SERVICE, postgres.rw_service(cluster)),
        (SERVICE, postgres.ro_service(cluster)),
        (STATEFUL_SET, pg),
        (PDB, pg),
        (NETWORK_POLICY, pg),
    ]
    if caps.monitoring_crds:
        candidates += [(SERVICE_MONITOR, n.service_monitor), (PROMETHEUS_RULE, n.prometheus_rule)]
    wanted = {(child_kind(o), o["metadata"]["name"]) for o in desired_children(cluster, caps)}
    return [cand for cand in candidates if cand not in wanted]
