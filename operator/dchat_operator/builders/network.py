"""Services, Ingress and NetworkPolicy.

Design:
- Three Services: ``<name>-api`` (API port, the Ingress backend), ``<name>-metrics`` (metrics
  port, and the Litestream sidecar's when it runs, scraped by the ServiceMonitor),
  ``<name>-p2p`` (libp2p, type from ``spec.p2p``; none when serviceType is None).
- The Ingress terminates TLS for ``spec.ingress.host``; with ``clusterIssuer`` the
  cert-manager annotation makes cert-manager fill the TLS Secret.
- One NetworkPolicy selects the node pods with both policy types, so everything not listed is
  denied: in, the API and P2P ports from anywhere and the metrics ports (the node's, the
  Litestream sidecar's) from the monitoring namespaces; out, DNS, P2P peers and the TCP ports
  of the endpoints in the config (chain RPC, PostgreSQL, tracing, push gateway, S3) plus
  ``extraEgressPorts``. A URL given as a Secret reference (``chain.*SecretRef``,
  ``observability.prometheusPushgatewaySecretRef``) is never read by the operator, so its
  port cannot be derived: ``extraEgressPorts`` must list it.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from dchat_operator.api import constants as c
from dchat_operator.api.models import DatabaseEngine, DchatCluster, P2PServiceType
from dchat_operator.builders import litestream
from dchat_operator.builders.common import Obj, metadata, names, selector_labels

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_MULTIADDR_TCP = re.compile(r"/tcp/(\d+)")


def _service(
    cluster: DchatCluster, name: str, ports: list[Obj], svc_type: str = "ClusterIP"
) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(cluster, name),
        "spec": {"type": svc_type, "selector": selector_labels(cluster), "ports": ports},
    }


def api_service(cluster: DchatCluster) -> Obj:
    port = cluster.spec.server.api_port
    return _service(
        cluster,
        names(cluster).api_service,
        [{"name": "api", "port": port, "targetPort": "api", "protocol": "TCP"}],
    )


def metrics_service(cluster: DchatCluster) -> Obj:
    port = cluster.spec.server.metrics_port
    ports: list[Obj] = [
        {"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP"}
    ]
    if litestream.target(cluster) is not None:
        ports.append(
            {
                "name": c.LITESTREAM_PORT_NAME,
                "port": litestream.metrics_port(cluster),
                "targetPort": litestream.metrics_port(cluster),  # a sidecar's port: by number
                "protocol": "TCP",
            }
        )
    return _service(cluster, names(cluster).metrics_service, ports)


def p2p_service(cluster: DchatCluster) -> Obj | None:
    p2p = cluster.spec.p2p
    if p2p.service_type == P2PServiceType.none:
        return None
    port = cluster.spec.server.p2p_port
    svc = _service(
        cluster,
        names(cluster).p2p_service,
        [{"name": "p2p", "port": port, "targetPort": "p2p", "protocol": "TCP"}],
        p2p.service_type.value,
    )
    if p2p.annotations:
        svc["metadata"]["annotations"] = dict(p2p.annotations)
    if p2p.service_type != P2PServiceType.cluster_ip:
        svc["spec"]["externalTrafficPolicy"] = "Local"
    return svc


def p2p_peers_service(cluster: DchatCluster) -> Obj | None:
    """Headless Service of every node pod (ready or not) with the P2P and metrics ports: the
    relay resolves it (``relay.bootstrap_dns``), reads each address's peer id from
    ``/p2p/info`` on the metrics port and dials it."""
    if not cluster.spec.relay.enabled:
        return None
    server = cluster.spec.server
    svc = _service(
        cluster,
        names(cluster).p2p_peers_service,
        [
            {"name": "p2p", "port": server.p2p_port, "targetPort": "p2p", "protocol": "TCP"},
            {
                "name": "metrics",
                "port": server.metrics_port,
                "targetPort": "metrics",
                "protocol": "TCP",
            },
        ],
    )
    svc["spec"]["clusterIP"] = "None"
    svc["spec"]["publishNotReadyAddresses"] = True
    return svc


def ingress(cluster: DchatCluster) -> Obj | None:
    spec = cluster.spec.ingress
    if not spec.enabled or not spec.host:
        return None
    n = names(cluster)
    annotations = dict(spec.annotations)
    if spec.cluster_issuer:
        annotations["cert-manager.io/cluster-issuer"] = spec.cluster_issuer
    body: Obj = {
        "tls": [{"hosts": [spec.host], "secretName": spec.tls_secret_name or n.ingress_tls_secret}],
        "rules": [
            {
                "host": spec.host,
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {
                                "service": {
                                    "name": n.api_service,
                                    "port": {"name": "api"},
                                }
                            },
                        }
                    ]
                },
            }
        ],
    }
    if spec.class_name:
        body["ingressClassName"] = spec.class_name
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata(cluster, n.ingress, annotations=annotations or None),
        "spec": body,
    }


def _url_port(url: str | None) -> int | None:
    if not url:
        return None
    parts = urlsplit(url)
    try:
        explicit = parts.port
    except ValueError:
        return None
    return explicit or _DEFAULT_PORTS.get(parts.scheme)


def egress_ports(cluster: DchatCluster) -> list[int]:
    """TCP ports the node connects to, derived from its configuration."""
    spec = cluster.spec
    ports: set[int] = {spec.server.p2p_port}
    for addr in spec.relay.bootstrap_nodes:
        ports.update(int(p) for p in _MULTIADDR_TCP.findall(addr))
    for url in (
        spec.chain.chat_chain_rpc,
        spec.chain.currency_chain_rpc,
        spec.observability.prometheus_pushgateway,
    ):
        port = _url_port(url)
        if port:
            ports.add(port)
    jaeger = _url_port(spec.observability.jaeger_endpoint)
    if jaeger:
        # The node exports OTLP/HTTP; a Jaeger agent URL (6831) is mapped to 4318.
        ports.add(4318 if jaeger == 6831 else jaeger)
    if spec.database.engine == DatabaseEngine.postgres and spec.database.postgres is not None:
        ports.add(spec.database.postgres.port)
    if spec.backup.enabled and spec.backup.s3 is not None:
        ports.add(_url_port(spec.backup.s3.endpoint) or 443)
    if spec.relay.enabled:  # discovery reads the peers' /p2p/info on their metrics port
        ports.add(spec.server.metrics_port)
    ports.update(spec.network_policy.extra_egress_ports)
    return sorted(ports)


def _peer_rule(cluster: DchatCluster) -> list[Obj]:
    """With the relay on: the cluster's own pods may read each other's ``/p2p/info`` on the
    metrics port (relay discovery), whatever ``metricsFromNamespaces`` allows."""
    if not cluster.spec.relay.enabled:
        return []
    port = cluster.spec.server.metrics_port
    return [
        {
            "from": [{"podSelector": {"matchLabels": selector_labels(cluster)}}],
            "ports": [{"port": port, "protocol": "TCP"}],
        }
    ]


def network_policy(cluster: DchatCluster) -> Obj | None:
    spec = cluster.spec
    if not spec.network_policy.enabled:
        return None
    server = spec.server
    metrics_ports = [server.metrics_port]
    if litestream.target(cluster) is not None:
        metrics_ports.append(litestream.metrics_port(cluster))
    metrics_rule: Obj = {"ports": [{"port": p, "protocol": "TCP"} for p in metrics_ports]}
    if spec.network_policy.metrics_from_namespaces:
        metrics_rule["from"] = [
            {
                "namespaceSelector": {
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "In",
                            "values": list(spec.network_policy.metrics_from_namespaces),
                        }
                    ]
                }
            }
        ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(cluster, names(cluster).network_policy),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(cluster)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "ports": [
                        {"port": server.api_port, "protocol": "TCP"},
                        {"port": server.p2p_port, "protocol": "TCP"},
                    ]
                },
                metrics_rule,
                *_peer_rule(cluster),
            ],
            "egress": [
                {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
                {"ports": [{"port": p, "protocol": "TCP"} for p in egress_ports(cluster)]},
            ],
        },
    }
