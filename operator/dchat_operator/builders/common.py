"""Names, labels, metadata and hashing shared by every builder.

Design: every child is named ``<cluster>`` or ``<cluster>-<suffix>`` (``names``), labelled with
the recommended ``app.kubernetes.io/*`` labels, owned by the DchatCluster through an owner
reference (controller=true, so garbage collection deletes it with the cluster), and carries
``dchat.dev/spec-hash``: a SHA-256 of the object as built, which lets the controller skip
writes when nothing it wants has changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from dchat_operator.api import constants as c
from dchat_operator.api.models import DchatCluster

Obj = dict[str, Any]


@dataclass(frozen=True)
class Names:
    """Names of every child of one DchatCluster."""

    cluster: str

    @property
    def deployment(self) -> str:
        return self.cluster

    @property
    def service_account(self) -> str:
        return self.cluster

    @property
    def config_map(self) -> str:
        return f"{self.cluster}-config"

    @property
    def api_service(self) -> str:
        return f"{self.cluster}-api"

    @property
    def metrics_service(self) -> str:
        return f"{self.cluster}-metrics"

    @property
    def p2p_service(self) -> str:
        return f"{self.cluster}-p2p"

    @property
    def p2p_peers_service(self) -> str:
        """Headless: every node pod's address, for the relay's DNS discovery."""
        return f"{self.cluster}-p2p-peers"

    @property
    def pvc(self) -> str:
        return f"{self.cluster}-data"

    @property
    def pdb(self) -> str:
        return self.cluster

    @property
    def network_policy(self) -> str:
        return self.cluster

    @property
    def ingress(self) -> str:
        return self.cluster

    @property
    def ingress_tls_secret(self) -> str:
        return f"{self.cluster}-ingress-tls"

    @property
    def service_monitor(self) -> str:
        return self.cluster

    @property
    def prometheus_rule(self) -> str:
        return self.cluster


def names(cluster: DchatCluster) -> Names:
    return Names(cluster.name)


def selector_labels(cluster: DchatCluster) -> dict[str, str]:
    """Labels that select the node pods of this cluster (stable across versions)."""
    return {
        c.LABEL_NAME: c.APP_NAME,
        c.LABEL_INSTANCE: cluster.name,
        c.LABEL_COMPONENT: c.COMPONENT,
    }


def selector_string(cluster: DchatCluster) -> str:
    """``status.selector`` for the scale subresource."""
    return ",".join(f"{k}={v}" for k, v in selector_labels(cluster).items())


def labels(cluster: DchatCluster) -> dict[str, str]:
    return {
        **selector_labels(cluster),
        c.LABEL_MANAGED_BY: c.MANAGED_BY,
        c.LABEL_PART_OF: c.APP_NAME,
        c.LABEL_VERSION: cluster.spec.version,
    }


def owner_reference(cluster: DchatCluster) -> Obj:
    """The controller reference every owned child carries. No ``blockOwnerDeletion``: under
    the OwnerReferencesPermissionEnforcement admission plugin setting it needs ``update`` on
    ``dchatclusters/finalizers``, a right the operator does not need otherwise (it only
    matters to a foreground deletion of the CR, which then does not wait for the children)."""
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "name": cluster.name,
        "uid": cluster.metadata.uid,
        "controller": True,
    }


def metadata(
    cluster: DchatCluster,
    name: str,
    *,
    annotations: dict[str, str] | None = None,
    owned: bool = True,
) -> Obj:
    """Child metadata. ``owned=False`` leaves the owner reference out (retained PVC)."""
    meta: Obj = {"name": name, "namespace": cluster.namespace, "labels": labels(cluster)}
    if annotations:
        meta["annotations"] = dict(annotations)
    if owned and cluster.metadata.uid:
        meta["ownerReferences"] = [owner_reference(cluster)]
    return meta


def digest(value: Any) -> str:
    """SHA-256 of a JSON-able value, stable across key order."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def with_spec_hash(obj: Obj) -> Obj:
    """Stamp ``dchat.dev/spec-hash`` (hash of the object without the stamp) on ``obj``."""
    meta = obj["metadata"]
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k != c.ANNOTATION_SPEC_HASH
    }
    body = {**obj, "metadata": {**meta, "annotations": annotations}}
    meta["annotations"] = {**annotations, c.ANNOTATION_SPEC_HASH: digest(body)[:32]}
    return obj


def condition(status: Obj | None, type_: str) -> Obj | None:
    """The condition of ``type_`` in an object's status (any kind), if any."""
    for cond in (status or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def is_true(status: Obj | None, type_: str) -> bool:
    """Whether the status has the condition ``type_`` with status "True"."""
    found = condition(status, type_)
    return found is not None and found.get("status") == "True"
