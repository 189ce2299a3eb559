"""Builders: the objects each child builder makes, checked on their output."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from dchat_node.config import parse_config
from dchat_operator.api import constants as c
from dchat_operator.builders import monitoring, network, workload
from dchat_operator.builders.children import Capabilities, desired_children, prunable
from dchat_operator.builders.common import selector_labels
from dchat_operator.builders.config import (
    config_checksum,
    config_map,
    config_toml,
    node_config,
    secret_references,
)
from tests.operator.unit.conftest import cluster, sample

pytestmark = pytest.mark.unit

PG = {"engine": "postgres", "postgres": {"primary": {"name": "db", "key": "url"}}}


def _container(dep: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = dep["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


@pytest.mark.parametrize("name", ["sqlite.yaml", "postgres.yaml"])
def test_every_child_is_a_valid_kubernetes_object(name: str) -> None:
    for obj in desired_children(sample(name), Capabilities()):
        kubernetes_validate.validate(obj, "1.36.0", strict=True)


def test_children_kinds_sqlite() -> None:
    kinds = [
        (o["kind"], o["metadata"]["name"])
        for o in desired_children(sample("sqlite.yaml"), Capabilities())
    ]
    assert kinds == [
        ("ServiceAccount", "dchat-sqlite"),
        ("ConfigMap", "dchat-sqlite-config"),
        ("PersistentVolumeClaim", "dchat-sqlite-data"),
        ("Deployment", "dchat-sqlite"),
        ("Service", "dchat-sqlite-api"),
        ("Service", "dchat-sqlite-metrics"),
        ("Service", "dchat-sqlite-p2p"),
        ("Service", "dchat-sqlite-p2p-peers"),
        ("NetworkPolicy", "dchat-sqlite"),
    ]


def test_children_kinds_postgres_with_monitoring() -> None:
    objs = desired_children(sample("postgres.yaml"), Capabilities(monitoring_crds=True))
    kinds = {o["kind"] for o in objs}
    assert kinds == {
        "ServiceAccount",
        "ConfigMap",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "Ingress",
        "ServiceMonitor",
        "PrometheusRule",
    }
    assert "PersistentVolumeClaim" not in kinds
    without = {o["kind"] for o in desired_children(sample("postgres.yaml"), Capabilities())}
    assert "ServiceMonitor" not in without
    assert "PrometheusRule" not in without


def test_owner_references_everywhere_except_retained_pvc() -> None:
    for obj in desired_children(sample("sqlite.yaml"), Capabilities(monitoring_crds=True)):
        refs = obj["metadata"].get("ownerReferences")
        if obj["kind"] == "PersistentVolumeClaim":
            assert refs is None
        else:
            assert refs == [
                {
                    "apiVersion": "dchat.dev/v1alpha1",
                    "kind": "DchatCluster",
                    "name": "dchat-sqlite",
                    "uid": "u-123",
                    "controller": True,
                }
            ]
        assert obj["metadata"]["annotations"][c.ANNOTATION_SPEC_HASH]
    pvc = workload.persistent_volume_claim(
        sample("sqlite.yaml", database={"sqlite": {"retainOnDelete": False}})
    )
    assert pvc is not None
    assert pvc["metadata"]["ownerReferences"][0]["uid"] == "u-123"


def test_service_account_has_no_token() -> None:
    assert workload.service_account(cluster())["automountServiceAccountToken"] is False
    dep = workload.deployment(cluster())
    assert dep["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_deployment_is_pod_security_restricted() -> None:
    dep = workload.deployment(sample("postgres.yaml"))
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    sc = _container(dep)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    allowed = {"configMap", "secret", "emptyDir", "persistentVolumeClaim", "projected"}
    for volume in pod["volumes"]:
        assert set(volume) - {"name"} <= allowed
    mounts = {m["mountPath"]: m for m in _container(dep)["volumeMounts"]}
    assert "/tmp" in mounts
    assert "/var/log/dchat" not in mounts


def test_log_file_output_gets_a_writable_volume() -> None:
    dep = workload.deployment(
        cluster(logging={"output": "file", "filePath": "/var/log/dchat/d.log"})
    )
    mounts = {m["mountPath"] for m in _container(dep)["volumeMounts"]}
    assert "/var/log/dchat" in mounts


def test_a_replaced_pod_keeps_serving_until_its_endpoint_is_gone() -> None:
    """preStop sleep (the kubelet's action, no shell needed), then the node's own drain,
    both inside the grace period."""
    dep = workload.deployment(sample("postgres.yaml"))
    container = _container(dep)
    assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    # and a node that exits leaves its last log lines in the pod status
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > workload.PRESTOP_SLEEP_SECONDS + 20  # 20 s: the node's default drain


def test_probes_ports_resources_follow_the_guide() -> None:
    dep = workload.deployment(sample("postgres.yaml"))
    container = _container(dep)
    assert container["livenessProbe"] == {
        "httpGet": {"path": "/health", "port": "metrics", "scheme": "HTTP"},
        "initialDelaySeconds": 10,
        "periodSeconds": 10,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
    }
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert (
        container["readinessProbe"]["periodSeconds"],
        container["readinessProbe"]["failureThreshold"],
    ) == (5, 2)
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [
        ("api", 9000),
        ("metrics", 9001),
        ("p2p", 7000),
    ]
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    }
    assert container["image"] == "ghcr.io/dchat-dev/dchat:0.1.0"
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9001"
    anti = dep["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == selector_labels(sample("postgres.yaml"))


def test_strategy_recreate_for_sqlite_rolling_for_postgres() -> None:
    assert workload.deployment(sample("sqlite.yaml"))["spec"]["strategy"] == {"type": "Recreate"}
    assert workload.deployment(sample("postgres.yaml"))["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }


@pytest.mark.parametrize(
    ("image", "policy"),
    [
        ({}, "Always"),  # a tag can move: pull it
        ({"digest": "sha256:" + "a" * 64}, "IfNotPresent"),  # content-addressed
        ({"pullPolicy": "Never"}, "Never"),  # explicit wins
    ],
)
def test_image_pull_policy_default_depends_on_digest(image: dict[str, Any], policy: str) -> None:
    container = _container(workload.deployment(cluster(image=image)))
    assert container["imagePullPolicy"] == policy
    if "digest" in image:
        assert container["image"].endswith("@" + image["digest"])


def test_secrets_reach_the_pod_only_through_secret_refs() -> None:
    pg = sample("postgres.yaml")
    container = _container(workload.deployment(pg))
    env = {e["name"]: e for e in container["env"]}
    assert env["DATABASE_URL_FILE"] == {
        "name": "DATABASE_URL_FILE",
        "value": "/etc/dchat/secrets/database/url",
    }
    assert "DATABASE_URL" not in env
    volumes = {v["name"]: v for v in workload.deployment(pg)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["database"]["secret"] == {
        "secretName": "dchat-postgres",
        "items": [{"key": "url", "path": "url"}],
        "defaultMode": 0o440,
    }
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["database"] == {
        "name": "database",
        "mountPath": "/etc/dchat/secrets/database",
        "readOnly": True,
    }
    assert env["JWT_SECRET_FILE"]["value"] == "/etc/dchat/secrets/jwt/jwt-secret"
    toml = config_map(pg)["data"]["config.toml"]
    assert "CHANGE-ME" not in toml
    assert "password" not in toml
    assert "jwt_secret" not in tomllib.loads(toml)["security"]
    for obj in desired_children(pg, Capabilities(monitoring_crds=True)):
        assert "configMapKeyRef" not in str(obj)


URL_REFS = {
    "chain": {
        "chatChainRpcSecretRef": {"name": "chain-rpc", "key": "chat"},
        "currencyChainRpcSecretRef": {"name": "chain-rpc", "key": "currency"},
    },
    "observability": {"prometheusPushgatewaySecretRef": {"name": "pgw", "key": "url"}},
    "networkPolicy": {"extraEgressPorts": [443, 9091]},
}


def test_chain_and_pushgateway_urls_from_secrets_are_mounted_files(tmp_path: Path) -> None:
    cl = cluster(**URL_REFS)
    dep = workload.deployment(cl)
    container = _container(dep)
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {
        "CHAT_CHAIN_RPC_FILE": "/etc/dchat/secrets/chat-chain-rpc/url",
        "CURRENCY_CHAIN_RPC_FILE": "/etc/dchat/secrets/currency-chain-rpc/url",
        "PROMETHEUS_PUSHGATEWAY_FILE": "/etc/dchat/secrets/pushgateway/url",
    }
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["chat-chain-rpc"]["secret"] == {
        "secretName": "chain-rpc",
        "items": [{"key": "chat", "path": "url"}],
        "defaultMode": 0o440,
    }
    assert volumes["pushgateway"]["secret"]["items"] == [{"key": "url", "path": "url"}]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["currency-chain-rpc"] == {
        "name": "currency-chain-rpc",
        "mountPath": "/etc/dchat/secrets/currency-chain-rpc",
        "readOnly": True,
    }
    # the controller checks these Secrets exist; a change of reference rolls the pods
    assert secret_references(cl) == [
        ("chain-rpc", "chat"),
        ("chain-rpc", "currency"),
        ("pgw", "url"),
    ]
    moved = cluster(**{**URL_REFS, "chain": {"chatChainRpcSecretRef": {"name": "x", "key": "y"}}})
    assert config_checksum(moved) != config_checksum(cl)
    # nothing of them in config.toml; the node reads the files through <VAR>_FILE
    data = tomllib.loads(config_toml(cl))
    assert "chat_chain_rpc" not in data.get("chain", {})
    assert "prometheus_pushgateway" not in data.get("observability", {})
    files = {}
    for var, path in env.items():
        local = tmp_path / path.strip("/").replace("/", "_")
        local.write_text(f"https://{var.lower()}.example/key123\n")
        files[var] = str(local)
    parsed = parse_config(data, environ=files)
    assert parsed.chain.chat_chain_rpc == "https://chat_chain_rpc_file.example/key123"
    assert parsed.observability.prometheus_pushgateway == (
        "https://prometheus_pushgateway_file.example/key123"
    )
    # the operator cannot derive their ports: only extraEgressPorts opens them
    # 9001: the peers' /p2p/info (relay discovery)
    assert network.egress_ports(cl) == [443, 7000, 9001, 9091]
    assert network.egress_ports(cluster(**{**URL_REFS, "networkPolicy": {}})) == [7000, 9001]


def test_no_url_secret_refs_leave_env_and_checksum_as_before() -> None:
    pg = sample("postgres.yaml")
    names = [e["name"] for e in _container(workload.deployment(pg))["env"]]
    assert names == ["DATABASE_URL_FILE", "JWT_SECRET_FILE"]
    assert secret_references(pg) == [("dchat-postgres", "url"), ("dchat-jwt", "jwt-secret")]


def test_config_toml_parses_with_the_nodes_own_model(tmp_path: Path) -> None:
    pg = sample("postgres.yaml")
    data = tomllib.loads(config_toml(pg))
    url_file = tmp_path / "url"
    url_file.write_text("postgresql://u:p@db:5432/dchat\n")
    parsed = parse_config(data, environ={"DATABASE_URL_FILE": str(url_file)})
    assert parsed.relay.bootstrap_nodes[2] == "/dns/relay3.dchat.dev/tcp/7000"
    assert parsed.database.url == "postgresql://u:p@db:5432/dchat"
    assert parsed.server.api_port == 9000
    assert parse_config(tomllib.loads(config_toml(sample("sqlite.yaml")))).database.url == (
        "sqlite:////data/dchat.db"
    )


def test_config_change_changes_pod_template_checksum() -> None:
    a, b = cluster(), cluster(marketplace={"cacheSize": 5})
    assert config_checksum(a) != config_checksum(b)
    ann = c.ANNOTATION_CONFIG_CHECKSUM

    def checksum(x: Any) -> str:
        return str(workload.deployment(x)["spec"]["template"]["metadata"]["annotations"][ann])

    assert checksum(a) != checksum(b)
    assert checksum(a) == checksum(cluster())


def test_services_and_p2p_exposure() -> None:
    x = cluster()
    assert network.api_service(x)["spec"]["ports"][0]["port"] == 9000
    assert network.metrics_service(x)["spec"]["ports"][0]["port"] == 9001
    p2p = network.p2p_service(x)
    assert p2p is not None
    assert p2p["spec"]["ports"][0]["port"] == 7000
    assert p2p["spec"]["type"] == "ClusterIP"
    lb = network.p2p_service(cluster(p2p={"serviceType": "LoadBalancer"}))
    assert lb is not None
    assert lb["spec"]["type"] == "LoadBalancer"
    assert network.p2p_service(cluster(p2p={"serviceType": "None"})) is None


def test_ingress_with_tls_and_cert_manager() -> None:
    ing = network.ingress(sample("postgres.yaml"))
    assert ing is not None
    assert ing["spec"]["tls"] == [{"hosts": ["api.dchat.dev"], "secretName": "dchat-tls"}]
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt-prod"
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "dchat-prod-api", "port": {"name": "api"}}
    assert network.ingress(cluster()) is None


def test_network_policy_default_deny_plus_needed_flows() -> None:
    pol = network.network_policy(sample("postgres.yaml"))
    assert pol is not None
    spec = pol["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    ingress_ports = {p["port"] for rule in spec["ingress"] for p in rule["ports"]}
    assert ingress_ports == {9000, 9001, 7000}
    egress_ports = {(p["port"], p["protocol"]) for rule in spec["egress"] for p in rule["ports"]}
    # DNS, P2P, chain RPC over https, PostgreSQL, OTLP (mapped from Jaeger 6831), push gateway
    assert {
        (53, "UDP"),
        (53, "TCP"),
        (7000, "TCP"),
        (443, "TCP"),
        (5432, "TCP"),
        (4318, "TCP"),
        (9091, "TCP"),
    } <= egress_ports
    assert (6831, "TCP") not in egress_ports
    assert network.network_policy(cluster(networkPolicy={"enabled": False})) is None


def test_pdb_only_with_several_replicas() -> None:
    assert workload.pod_disruption_budget(cluster()) is None
    pdb = workload.pod_disruption_budget(cluster(replicas=3, database=PG))
    assert pdb is not None
    assert pdb["spec"]["maxUnavailable"] == 1


def test_prunable_lists_unwanted_optional_children() -> None:
    names = {(k.kind, n) for k, n in prunable(cluster(p2p={"serviceType": "None"}), Capabilities())}
    assert ("Service", "c1-p2p") in names
    assert ("PodDisruptionBudget", "c1") in names
    assert ("Ingress", "c1") in names
    assert all(k != "PersistentVolumeClaim" for k, _ in names)


def test_alert_rules_are_corrected() -> None:
    rules = monitoring.alert_rules(sample("postgres.yaml"))
    names = [r["alert"] for r in rules]
    assert all(" " not in n for n in names)
    assert "BridgeFinalityProofTimeout" in names
    exprs = {r["alert"]: r["expr"] for r in rules}
    assert "rate(marketplace_purchase_latency_ms_bucket{" in exprs["MarketplacePurchaseLatencyHigh"]
    assert " / " in exprs["HighErrorRate"]
    assert "database_connections_max" in exprs["DatabaseConnectionPoolExhausted"]
    assert " >= 0.9) and database_connections_max{" in exprs["DatabaseConnectionPoolExhausted"]
    assert "dchat_http_requests_total" in exprs["HighErrorRate"]


def test_spec_hash_is_stable_and_changes_with_spec() -> None:
    def hashes(x: Any) -> dict[str, str]:
        return {
            o["kind"] + o["metadata"]["name"]: o["metadata"]["annotations"][c.ANNOTATION_SPEC_HASH]
            for o in desired_children(x, Capabilities())
        }

    assert hashes(cluster()) == hashes(cluster())
    changed = hashes(cluster(version="0.2.0"))
    assert changed["Deploymentc1"] != hashes(cluster())["Deploymentc1"]


def test_alert_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: scripts/bootstrap.sh deps installs Debian's prometheus"
    rule = monitoring.prometheus_rule(sample("postgres.yaml"))
    path = tmp_path / "rules.yaml"
    groups = rule["spec"]["groups"]
    path.write_text(yaml.safe_dump({"groups": groups}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    count = sum(len(g["rules"]) for g in groups)
    assert count >= 20
    assert f"SUCCESS: {count} rules found" in result.stdout


def test_image_can_be_pinned_by_digest() -> None:
    digest = "sha256:" + "ab" * 32
    dep = workload.deployment(cluster(image={"digest": digest}))
    assert _container(dep)["image"] == f"ghcr.io/dchat-dev/dchat:0.1.0@{digest}"


def test_config_toml_holds_only_what_differs_from_the_node_defaults() -> None:
    """An older node image never meets a key added later (it would refuse it as unknown),
    and a default added to the node rolls no pods: only values the spec changed are written,
    and the node reads them back to the very config the operator built."""
    # only what the operator knows beyond the spec: where the cluster's relay peers are, and
    # the file the bridge's pause switch comes from
    added = {
        "relay": {"bootstrap_dns": "c1-p2p-peers.ns1.svc"},
        "bridge": {"pause_flag_path": "/etc/dchat/bridge-paused"},
    }
    assert tomllib.loads(config_toml(cluster())) == added
    changed = cluster(marketplace={"cacheSize": 123}, server={"maxRequestBodyBytes": 2_000_000})
    data = tomllib.loads(config_toml(changed))
    assert data == {
        "server": {"max_request_body_bytes": 2_000_000},
        "marketplace": {"cache_size": 123},
        **added,
    }
    assert parse_config(data, environ={}) == node_config(changed)
    # a bootstrapDns of the spec's own, or the relay off: nothing added
    own = cluster(relay={"bootstrapDns": "peers.example"})
    assert tomllib.loads(config_toml(own))["relay"] == {"bootstrap_dns": "peers.example"}
    off = tomllib.loads(config_toml(cluster(relay={"enabled": False})))
    assert off["relay"] == {"enabled": False}


def test_pausing_the_bridge_changes_a_configmap_key_and_rolls_no_pod() -> None:
    """The node re-reads bridge.pause_flag_path every poll: the switch needs no restart."""
    running, paused = cluster(), cluster(bridge={"paused": True})
    assert config_map(running)["data"]["bridge-paused"] == "false"
    assert config_map(paused)["data"]["bridge-paused"] == "true"
    assert config_toml(paused) == config_toml(running)  # paused is not in config.toml
    assert config_checksum(paused) == config_checksum(running)
    # a pause flag file of the spec's own: config.toml carries paused as given
    own = cluster(bridge={"paused": True, "pauseFlagPath": "/var/run/flag"})
    assert tomllib.loads(config_toml(own))["bridge"] == {
        "paused": True,
        "pause_flag_path": "/var/run/flag",
    }
    assert config_map(own)["data"]["bridge-paused"] == "false"


def test_service_monitor_labels_series_with_the_cluster_the_rules_group_by() -> None:
    (endpoint,) = monitoring.service_monitor(sample("postgres.yaml"))["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    (relabel,) = endpoint["relabelings"]
    assert relabel["targetLabel"] == monitoring.CLUSTER_LABEL == "dchat_cluster"
    assert relabel["sourceLabels"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"]


BRIDGE_KEYS = {
    "database": {"engine": "postgres", "postgres": {"primary": {"name": "db", "key": "url"}}},
    "replicas": 2,
    "bridge": {
        "chatVaultAddress": "0x" + "1" * 40,
        "currencyVaultAddress": "0x" + "2" * 40,
        "validators": ["0x" + "a" * 40, "0x" + "b" * 40, "0x" + "c" * 40],
        "roles": ["validator", "relayer"],
        "validatorKeySecretRef": {"name": "bridge-keys", "key": "validator"},
        "relayerKeySecretRef": {"name": "relayer", "key": "key"},
    },
}


def test_bridge_keys_from_secrets_are_files_named_in_config_toml(tmp_path: Path) -> None:
    cl = cluster(**BRIDGE_KEYS)
    dep = workload.deployment(cl)
    container = _container(dep)
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["bridge-validator-key"]["secret"] == {
        "secretName": "bridge-keys",
        "items": [{"key": "validator", "path": "key"}],
        "defaultMode": 0o440,
    }
    assert volumes["bridge-relayer-key"]["secret"]["items"] == [{"key": "key", "path": "key"}]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["bridge-validator-key"] == {
        "name": "bridge-validator-key",
        "mountPath": "/etc/dchat/secrets/bridge-validator-key",
        "readOnly": True,
    }
    # no variable: config.toml names the files, the node's own keys
    assert not [e for e in container["env"] if "KEY" in e["name"]]
    data = tomllib.loads(config_toml(cl))
    assert data["bridge"]["validator_key_path"] == "/etc/dchat/secrets/bridge-validator-key/key"
    assert data["bridge"]["relayer_key_path"] == "/etc/dchat/secrets/bridge-relayer-key/key"
    assert data["bridge"]["roles"] == ["validator", "relayer"]
    assert "bridge-keys" not in config_toml(cl)  # the Secret's name is not the node's business
    # the controller checks they exist; rotating a key (its Secret's version) rolls the pods
    assert secret_references(cl)[-2:] == [("bridge-keys", "validator"), ("relayer", "key")]
    # the node accepts what the operator rendered
    parsed = parse_config(data, environ={})
    assert parsed.bridge.roles == ["validator", "relayer"]
    # only the node container mounts the keys: not the backup Jobs nor other pods
    for obj in desired_children(cl, Capabilities()):
        if obj["kind"] == "Deployment":
            continue
        assert "'secretName': 'bridge-keys'" not in str(obj), obj["kind"]


def test_no_bridge_key_no_key_volume_and_checksums_unchanged() -> None:
    plain = cluster(**{**BRIDGE_KEYS, "bridge": {}})
    dep = workload.deployment(plain)
    names = {v["name"] for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert not {"bridge-validator-key", "bridge-relayer-key"} & names
    assert "key_path" not in config_toml(plain)
    keyed = cluster(**BRIDGE_KEYS)
    other = cluster(
        **{
            **BRIDGE_KEYS,
            "bridge": {
                **BRIDGE_KEYS["bridge"],  # type: ignore[dict-item]
                "validatorKeySecretRef": {"name": "bridge-keys-2", "key": "validator"},
            },
        }
    )
    assert config_checksum(other) != config_checksum(keyed)


def test_a_bridge_role_without_its_key_secret_is_refused() -> None:
    bridge = {k: v for k, v in BRIDGE_KEYS["bridge"].items() if k != "relayerKeySecretRef"}  # type: ignore[union-attr]
    with pytest.raises(ValueError, match=r"give bridge\.relayerKeySecretRef"):
        cluster(**{**BRIDGE_KEYS, "bridge": bridge})


def test_the_bridge_key_paths_are_not_cr_fields() -> None:
    """The operator names the mounted files itself; a path typed into the CR would point at
    nothing (the apiserver refuses the unknown field too)."""
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        cluster(bridge={"validatorKeyPath": "/etc/keys/v"})
