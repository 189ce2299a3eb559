"""Inputs admission must refuse, each beside the same field with a good value that is accepted.

One table for two tests: ``tests/operator/unit/test_crd.py`` checks that the pydantic model
refuses every bad value and accepts every good one; ``tests/operator/e2e/test_admission.py``
checks the same against the real apiserver (OpenAPI bounds and CEL rules of the generated CRD).
``message`` is what the apiserver answers (a CEL message, or its wording of an OpenAPI bound);
``model_message`` is pydantic's, when it differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dchat_operator.api import models as m

PG = {"engine": "postgres", "postgres": {"primary": {"name": "db", "key": "url"}}}
_S3 = {"bucket": "bkt", "credentialsSecretRef": {"name": "s3-creds"}}
TOO_BIG = "at most"  # both apiserver and pydantic say "... at most N ..." for a size bound


@dataclass(frozen=True)
class Case:
    id: str
    bad: dict[str, Any]
    good: dict[str, Any]
    message: str
    model_message: str | None = None
    bad_name: str = "adm"
    good_name: str = "adm"

    @property
    def expected_model_message(self) -> str:
        return self.model_message if self.model_message is not None else self.message


def _ref(name: str, key: str = "url") -> dict[str, str]:
    return {"name": name, "key": key}


def _ingress(**fields: Any) -> dict[str, Any]:
    return {"ingress": {"enabled": True, "host": "api.dchat.dev", **fields}}


def _many(n: int) -> dict[str, str]:
    return {f"example.com/k{i}": "v" for i in range(n)}


CASES: list[Case] = [
    # --- the cluster's name: a DNS-1035 label of at most 52 characters ---
    Case("name-digit-first", {}, {}, m.MSG_CLUSTER_NAME, bad_name="1abc", good_name="abc1"),
    Case("name-dot", {}, {}, m.MSG_CLUSTER_NAME, bad_name="a.b", good_name="a-b"),
    Case(
        "name-53",
        {},
        {},
        "at most 52 characters",
        model_message="at most 52 characters",
        bad_name="a" * 53,
        good_name="a" * 52,
    ),
    # --- every Secret reference, pull secret, class and issuer name: DNS-1123 ---
    Case(
        "db-secret-path",
        {"database": {**PG, "postgres": {"primary": _ref("../../kube-system/secrets/x")}}},
        {"database": PG},
        m.MSG_DNS1123_NAME,
    ),
    Case(
        "db-standby-upper",
        {"database": {**PG, "postgres": {"primary": _ref("db"), "standbys": [_ref("A_B")]}}},
        {"database": {**PG, "postgres": {"primary": _ref("db"), "standbys": [_ref("db-2")]}}},
        m.MSG_DNS1123_NAME,
    ),
    Case(
        "jwt-secret-underscore",
        {"security": {"jwtSecretRef": _ref("A_B", "k")}},
        {"security": {"jwtSecretRef": _ref("jwt", "k")}},
        m.MSG_DNS1123_NAME,
    ),
    Case(
        "jwt-secret-key-dotdot",
        {"security": {"jwtSecretRef": _ref("jwt", "../k")}},
        {"security": {"jwtSecretRef": _ref("jwt", ".k")}},
        m.MSG_SECRET_KEY,
    ),
    Case(
        "tls-secret-empty",
        {"security": {"tlsSecretRef": {"name": ""}}},
        {"security": {"tlsSecretRef": {"name": "tls"}}},
        "should be at least 1 chars long",
        model_message="at least 1 character",
    ),
    Case(
        "pull-secret-question",
        {"image": {"pullSecrets": ["x?y"]}},
        {"image": {"pullSecrets": ["regcred"]}},
        m.MSG_DNS1123_NAME,
    ),
    Case(
        "storage-class-upper",
        {"database": {"sqlite": {"storageClassName": "Fast_SSD"}}},
        {"database": {"sqlite": {"storageClassName": "fast-ssd"}}},
        m.MSG_DNS1123_NAME,
    ),
    Case(
        "priority-class-slash",
        {"scheduling": {"priorityClassName": "kube-system/high"}},
        {"scheduling": {"priorityClassName": "high"}},
        m.MSG_DNS1123_NAME,
    ),
    Case(
        "ingress-class-upper",
        _ingress(className="Nginx"),
        _ingress(className="nginx"),
        m.MSG_DNS1123_NAME,
    ),
    Case(
        "issuer-space",
        _ingress(clusterIssuer="letsencrypt prod"),
        _ingress(clusterIssuer="letsencrypt-prod"),
        m.MSG_DNS1123_NAME,
    ),
    Case(
        "ingress-tls-secret-path",
        _ingress(tlsSecretName="../tls"),
        _ingress(tlsSecretName="api-tls"),
        m.MSG_DNS1123_NAME,
    ),
    Case(
        "chain-secret-path",
        {"chain": {"chatChainRpcSecretRef": _ref("../x")}},
        {"chain": {"chatChainRpcSecretRef": _ref("chain-rpc")}},
        m.MSG_DNS1123_NAME,
    ),
    Case(
        "s3-secret-slash",
        {"backup": {"s3": {"bucket": "bkt", "credentialsSecretRef": {"name": "s3/creds"}}}},
        {"backup": {"s3": {"bucket": "bkt", "credentialsSecretRef": {"name": "s3-creds"}}}},
        m.MSG_DNS1123_NAME,
    ),
    Case(
        "metrics-namespace-upper",
        {"networkPolicy": {"metricsFromNamespaces": ["Monitoring"]}},
        {"networkPolicy": {"metricsFromNamespaces": ["monitoring"]}},
        m.MSG_DNS1123_LABEL,
    ),
    # --- version: a label value ---
    Case(
        "version-64",
        {"version": "1" * 64},
        {"version": "1" * 63},
        "may not be more than 63",  # OpenAPI bounds first: CEL only runs on what passes them
        model_message="at most 63 characters",
    ),
    Case("version-dash-end", {"version": "1.0-"}, {"version": "1.0-rc.1"}, m.MSG_LABEL_VALUE),
    Case("version-plus", {"version": "1.0+build"}, {"version": "1.0_build"}, m.MSG_LABEL_VALUE),
    Case(
        "image-repository-space",
        {"image": {"repository": "ghcr.io/dchat dev/dchat"}},
        {"image": {"repository": "ghcr.io/dchat-dev/dchat"}},
        "should match",
    ),
    # --- ports and multiaddrs ---
    Case(
        "egress-port-0",
        {"networkPolicy": {"extraEgressPorts": [0]}},
        {"networkPolicy": {"extraEgressPorts": [1]}},
        "greater than or equal to 1",
    ),
    Case(
        "egress-port-65536",
        {"networkPolicy": {"extraEgressPorts": [65536]}},
        {"networkPolicy": {"extraEgressPorts": [65535]}},
        "less than or equal to 65535",
    ),
    Case(
        "bootstrap-relative",
        {"relay": {"bootstrapNodes": ["dns/relay1/tcp/7000"]}},
        {"relay": {"bootstrapNodes": ["/dns/relay1/tcp/7000"]}},
        m.MSG_MULTIADDR,
    ),
    Case(
        "bootstrap-port-70000",
        {"relay": {"bootstrapNodes": ["/dns/relay1/tcp/70000"]}},
        {"relay": {"bootstrapNodes": ["/dns/relay1/tcp/65535"]}},
        m.MSG_MULTIADDR_PORT,
    ),
    Case(
        "bootstrap-port-0",
        {"relay": {"bootstrapNodes": ["/dns/relay1/tcp/0/p2p/QmPeer"]}},
        {"relay": {"bootstrapNodes": ["/dns/relay1/tcp/7000/p2p/QmPeer"]}},
        m.MSG_MULTIADDR_PORT,
    ),
    Case(
        "external-udp-port-word",
        {"relay": {"externalAddresses": ["/ip4/10.0.0.1/udp/http/quic-v1"]}},
        {"relay": {"externalAddresses": ["/ip4/10.0.0.1/udp/7000/quic-v1"]}},
        m.MSG_MULTIADDR_PORT,
    ),
    # --- rollout numbers and percentages ---
    Case(
        "rollout-0-0",
        {"rollout": {"maxSurge": 0, "maxUnavailable": 0}},
        {"rollout": {"maxSurge": 0, "maxUnavailable": 1}},
        m.MSG_ROLLOUT_ZERO,
    ),
    Case(
        "rollout-0pct-0",
        {"rollout": {"maxSurge": "0%", "maxUnavailable": 0}},
        {"rollout": {"maxSurge": "10%", "maxUnavailable": 0}},
        m.MSG_ROLLOUT_ZERO,
    ),
    Case(
        "rollout-lots",
        {"rollout": {"maxSurge": "lots"}},
        {"rollout": {"maxSurge": "25%"}},
        m.MSG_MAX_SURGE,
    ),
    Case(
        "rollout-negative",
        {"rollout": {"maxUnavailable": -1}},
        {"rollout": {"maxUnavailable": 1}},
        m.MSG_MAX_UNAVAILABLE,
    ),
    Case(
        "rollout-150pct",
        {"rollout": {"maxUnavailable": "150%"}},
        {"rollout": {"maxUnavailable": "100%"}},
        m.MSG_MAX_UNAVAILABLE,
    ),
    Case(
        "rollout-deadline-below-min-ready",
        {"rollout": {"progressDeadlineSeconds": 30, "minReadySeconds": 30}},
        {"rollout": {"progressDeadlineSeconds": 31, "minReadySeconds": 30}},
        m.MSG_PROGRESS_DEADLINE,
    ),
    Case(
        "rollout-min-ready-negative",
        {"rollout": {"minReadySeconds": -1}},
        {"rollout": {"minReadySeconds": 0}},
        "greater than or equal to 0",
    ),
    Case(
        "soak-negative",
        {"rollout": {"analysis": {"soakSeconds": -1}}},
        {"rollout": {"analysis": {"soakSeconds": 0}}},
        "greater than or equal to 0",
    ),
    Case(
        "soak-error-ratio-above-1",
        {"rollout": {"analysis": {"maxErrorRatio": 1.5}}},
        {"rollout": {"analysis": {"maxErrorRatio": 1}}},
        "less than or equal to 1",
    ),
    Case(
        "soak-failure-limit-0",
        {"rollout": {"analysis": {"failureLimit": 0}}},
        {"rollout": {"analysis": {"failureLimit": 1}}},
        "greater than or equal to 1",
    ),
    Case(
        "node-lost-toleration-negative",
        {"scheduling": {"nodeLostTolerationSeconds": -1}},
        {"scheduling": {"nodeLostTolerationSeconds": 0}},
        "greater than or equal to 0",
    ),
    Case(
        "sqlite-failover-delay-too-short",
        {"database": {"engine": "sqlite", "sqlite": {"failoverDelaySeconds": 1}}},
        {"database": {"engine": "sqlite", "sqlite": {"failoverDelaySeconds": 5}}},
        "greater than or equal to 5",
    ),
    Case(
        "disruption-0",
        {"disruption": {"maxUnavailable": 0}},
        {"disruption": {"maxUnavailable": 1}},
        "greater than or equal to 1",
    ),
    # --- resource requests not above limits ---
    Case(
        "cpu-request-above-limit",
        {"resources": {"requests": {"cpu": "2500m"}, "limits": {"cpu": "2"}}},
        {"resources": {"requests": {"cpu": "2000m"}, "limits": {"cpu": "2"}}},
        "resources.requests.cpu must not be above resources.limits.cpu",
    ),
    Case(
        "memory-request-above-default-limit",
        {"resources": {"requests": {"memory": "3Gi"}}},
        {"resources": {"requests": {"memory": "2048Mi"}}},
        "resources.requests.memory must not be above resources.limits.memory",
    ),
    # --- logging.filePath ---
    Case(
        "log-relative",
        {"logging": {"filePath": "dchat.log"}},
        {"logging": {"filePath": "/logs/dchat.log"}},
        m.MSG_LOG_PATH,
    ),
    Case(
        "log-dotdot",
        {"logging": {"filePath": "/var/log/../dchat.log"}},
        {"logging": {"filePath": "/var/log/dchat/dchat.log"}},
        m.MSG_LOG_PATH,
    ),
    Case(
        "log-in-data",
        {"logging": {"filePath": "/data/dchat.log", "output": "file"}},
        {"logging": {"filePath": "/data-logs/dchat.log", "output": "file"}},
        m.MSG_LOG_DIR,
    ),
    Case(
        "log-in-secrets",
        {"logging": {"filePath": "/etc/dchat/secrets/jwt/dchat.log"}},
        {"logging": {"filePath": "/var/log/dchat.log"}},
        m.MSG_LOG_DIR,
    ),
    Case(
        "log-parent-of-config",
        {"logging": {"filePath": "/etc/dchat.log"}},
        {"logging": {"filePath": "/etc/dchat-logs/dchat.log"}},
        m.MSG_LOG_DIR,
    ),
    Case(
        "log-at-root",
        {"logging": {"filePath": "/dchat.log"}},
        {"logging": {"filePath": "/log/dchat.log"}},
        m.MSG_LOG_DIR,
    ),
    # --- ingress host and annotations ---
    Case("host-upper", _ingress(host="API.dchat.dev"), _ingress(host="api.dchat.dev"), m.MSG_HOST),
    Case("host-inner-wildcard", _ingress(host="a.*.dev"), _ingress(host="*.dchat.dev"), m.MSG_HOST),
    Case("host-ip", _ingress(host="10.0.0.1"), _ingress(host="10.0.0.1.nip.io"), m.MSG_HOST),
    Case("host-underscore", _ingress(host="api_x.dev"), _ingress(host="api-x.dev"), m.MSG_HOST),
    Case(
        "annotation-snippet",
        _ingress(annotations={"nginx.ingress.kubernetes.io/configuration-snippet": "deny all;"}),
        _ingress(annotations={"nginx.ingress.kubernetes.io/ssl-redirect": "true"}),
        m.MSG_SNIPPET,
    ),
    Case(
        "annotation-server-snippet",
        {"ingress": {"annotations": {"nginx.org/server-snippet": "x"}}},
        {"ingress": {"annotations": {"nginx.org/server-tokens": "x"}}},
        m.MSG_SNIPPET,
    ),
    Case(
        "annotation-key-space",
        {"p2p": {"annotations": {"bad key": "x"}}},
        {"p2p": {"annotations": {"good-key": "x"}}},
        m.MSG_ANNOTATION_KEY,
    ),
    # --- bounded sizes ---
    Case(
        "tolerations-33",
        {"scheduling": {"tolerations": [{"operator": "Exists"}] * 33}},
        {"scheduling": {"tolerations": [{"operator": "Exists"}] * 32}},
        TOO_BIG,
    ),
    Case(
        "annotations-65",
        _ingress(annotations=_many(65)),
        _ingress(annotations=_many(64)),
        TOO_BIG,
    ),
    Case(
        "annotation-1mb",
        {"p2p": {"annotations": {"example.com/big": "x" * 1_000_000}}},
        {"p2p": {"annotations": {"example.com/big": "x" * 4096}}},
        "4096",
    ),
    Case(
        "node-selector-33",
        {"scheduling": {"nodeSelector": {f"k{i}": "v" for i in range(33)}}},
        {"scheduling": {"nodeSelector": {f"k{i}": "v" for i in range(32)}}},
        TOO_BIG,
    ),
    Case(
        "cors-65",
        {"security": {"corsAllowedOrigins": [f"https://a{i}.dev" for i in range(65)]}},
        {"security": {"corsAllowedOrigins": [f"https://a{i}.dev" for i in range(64)]}},
        TOO_BIG,
    ),
    Case(
        "chain-url-3000",
        {"chain": {"chatChainRpc": "https://x.dev/" + "k" * 3000}},
        {"chain": {"chatChainRpc": "https://x.dev/" + "k" * 2000}},
        "2048",
    ),
    Case(
        "egress-ports-33",
        {"networkPolicy": {"extraEgressPorts": list(range(1000, 1033))}},
        {"networkPolicy": {"extraEgressPorts": list(range(1000, 1032))}},
        TOO_BIG,
    ),
    Case(
        "max-request-body-1g",
        {"server": {"maxRequestBodyBytes": 1 << 30}},
        {"server": {"maxRequestBodyBytes": 100 << 20}},
        "less than or equal to 104857600",
    ),
    Case(
        "rate-limit-10m",
        {"security": {"rateLimitRequestsPerSec": 10_000_000}},
        {"security": {"rateLimitRequestsPerSec": 1_000_000}},
        "less than or equal to 1000000",
    ),
    Case(
        "max-connections-5000",
        {"database": {"maxConnections": 5000}},
        {"database": {"maxConnections": 1000}},
        "less than or equal to 1000",
    ),
    # --- a URL and its Secret reference are exclusive ---
    Case(
        "chat-rpc-twice",
        {"chain": {"chatChainRpc": "https://rpc.dev", "chatChainRpcSecretRef": _ref("rpc")}},
        {"chain": {"chatChainRpcSecretRef": _ref("rpc")}},
        "chatChainRpc and chatChainRpcSecretRef are mutually exclusive",
    ),
    Case(
        "currency-rpc-twice",
        {
            "chain": {
                "currencyChainRpc": "https://rpc.dev",
                "currencyChainRpcSecretRef": _ref("rpc"),
            }
        },
        {"chain": {"currencyChainRpc": "https://rpc.dev"}},
        "currencyChainRpc and currencyChainRpcSecretRef are mutually exclusive",
    ),
    Case(
        "pushgateway-twice",
        {
            "observability": {
                "prometheusPushgateway": "http://pgw:9091",
                "prometheusPushgatewaySecretRef": _ref("pgw"),
            }
        },
        {"observability": {"prometheusPushgatewaySecretRef": _ref("pgw")}},
        "prometheusPushgateway and prometheusPushgatewaySecretRef are mutually exclusive",
    ),
    # --- a bridge role needs its key's Secret ---
    Case(
        "bridge-validator-without-key",
        {"bridge": {"roles": ["validator"]}},
        {"bridge": {"roles": ["validator"], "validatorKeySecretRef": _ref("v0", "key")}},
        "bridge.roles has validator: give bridge.validatorKeySecretRef",
    ),
    Case(
        "bridge-relayer-without-key",
        {"bridge": {"roles": ["validator", "relayer"], "validatorKeySecretRef": _ref("v0")}},
        {
            "bridge": {
                "roles": ["validator", "relayer"],
                "validatorKeySecretRef": _ref("v0"),
                "relayerKeySecretRef": _ref("r0"),
            }
        },
        "bridge.roles has relayer: give bridge.relayerKeySecretRef",
    ),
    # --- backups ---
    Case(
        "s3-kms-key-without-kms",
        {"backup": {"s3": {**_S3, "sse": "AES256", "kmsKeyId": "k1"}}},
        {"backup": {"s3": {**_S3, "sse": "aws:kms", "kmsKeyId": "k1"}}},
        m.MSG_KMS_KEY,
    ),
    Case(
        "bootstrap-without-s3",
        {"database": PG, "bootstrap": {"fromBackup": {"name": "b1"}}},
        {"database": PG, "backup": {"s3": _S3}, "bootstrap": {"fromBackup": {"name": "b1"}}},
        m.MSG_BOOTSTRAP_S3,
    ),
]


def cr(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "dchat.dev/v1alpha1",
        "kind": "DchatCluster",
        "metadata": {"name": name},
        "spec": spec,
    }
