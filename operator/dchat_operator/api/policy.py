"""Operator-level policy for shared clusters: what a DchatCluster's author may ask for.

Design: a DchatCluster lets its author create pods, Services and Ingresses through the
operator, with the operator's rights. The cluster admin who installs the operator bounds that
with allow-lists (flags or environment of the operator Deployment); ``Policy.violations`` is a
pure check of one parsed cluster against them, run before anything is applied. A refused spec
changes nothing in the cluster: the controller reports ``Degraded``/``PolicyViolation`` naming
the rule and applies no child until the spec (or the policy) changes.

Defaults: any image registry and any cert-manager ClusterIssuer (an empty list means "no
restriction"); Services of type ClusterIP (or none) only, so NodePort and LoadBalancer must be
allowed explicitly; Service and Ingress annotations only under a short list of well-known
prefixes (Ingress ``-snippet`` annotations are refused by the CRD itself).
"""

from __future__ import annotations

from dataclasses import dataclass

from dchat_operator.api.models import DchatCluster

DEFAULT_SERVICE_TYPES: tuple[str, ...] = ("ClusterIP", "None")
DEFAULT_ANNOTATION_PREFIXES: tuple[str, ...] = (
    "nginx.ingress.kubernetes.io/",
    "cert-manager.io/",
    "external-dns.alpha.kubernetes.io/",
    "service.beta.kubernetes.io/",
)


@dataclass(frozen=True)
class Policy:
    allowed_registries: tuple[str, ...] = ()
    """Image repository prefixes (e.g. ``ghcr.io/dchat-dev/``); empty: any."""
    allowed_service_types: tuple[str, ...] = DEFAULT_SERVICE_TYPES
    allowed_annotation_prefixes: tuple[str, ...] = DEFAULT_ANNOTATION_PREFIXES
    """Key prefixes allowed in Service and Ingress annotations; ``*`` alone allows any."""
    allowed_cluster_issuers: tuple[str, ...] = ()
    """cert-manager ClusterIssuers an Ingress may name; empty: any."""

    def violations(self, cluster: DchatCluster) -> list[str]:
        """Every rule the cluster breaks, each naming the rule and the value."""
        spec = cluster.spec
        out: list[str] = []
        images = [("image repository", spec.image.repository)]
        postgres = spec.database.postgres
        if postgres is not None and postgres.managed is not None:
            # its pods hold an API token (Patroni's store): the same allow-list applies
            images.append(("managed PostgreSQL image", postgres.managed.image))
        for what, repository in images:
            if self.allowed_registries and not any(
                _under(repository, prefix) for prefix in self.allowed_registries
            ):
                out.append(
                    f"allowed-registries: {what} {repository!r} is not under "
                    + ", ".join(self.allowed_registries)
                )
        service_type = str(spec.p2p.service_type)
        if service_type not in self.allowed_service_types:
            out.append(
                f"allowed-service-types: spec.p2p.serviceType {service_type} is not one of "
                + ", ".join(self.allowed_service_types)
            )
        for where, keys in (
            ("spec.p2p.annotations", spec.p2p.annotations),
            ("spec.ingress.annotations", spec.ingress.annotations if spec.ingress.enabled else {}),
        ):
            refused = sorted(k for k in keys if not self._annotation_allowed(k))
            if refused:
                out.append(
                    f"allowed-annotation-prefixes: {where} keys {', '.join(refused)} are not "
                    "under " + ", ".join(self.allowed_annotation_prefixes or ("(none)",))
                )
        issuer = spec.ingress.cluster_issuer if spec.ingress.enabled else None
        if issuer and self.allowed_cluster_issuers and issuer not in self.allowed_cluster_issuers:
            out.append(
                f"allowed-cluster-issuers: spec.ingress.clusterIssuer {issuer!r} is not one of "
                + ", ".join(self.allowed_cluster_issuers)
            )
        return out

    def _annotation_allowed(self, key: str) -> bool:
        if "*" in self.allowed_annotation_prefixes:
            return True
        return any(key.startswith(prefix) for prefix in self.allowed_annotation_prefixes)


def _under(repository: str, prefix: str) -> bool:
    """``ghcr.io/dchat-dev/`` allows ``ghcr.io/dchat-dev/dchat``; ``ghcr.io`` allows any image
    of that registry, never ``ghcr.io.evil.example/...``."""
    if prefix.endswith("/"):
        return repository.startswith(prefix)
    return repository == prefix or repository.startswith(prefix + "/")
