"""Managed PostgreSQL (spec.database.postgres.managed): the model's rules, the pure builders'
output, and the cluster controller on the in-memory fake of the Kubernetes API (generated
Secret made once and never rewritten, a foreign Secret refused, Patroni's scope followed)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from dchat_operator.api import constants as c
from dchat_operator.api.kinds import (
    CLUSTER,
    CONFIG_MAP,
    DEPLOYMENT,
    NETWORK_POLICY,
    PDB,
    ROLE_BINDING,
    SECRET,
    SERVICE,
    SERVICE_ACCOUNT,
    STATEFUL_SET,
)
from dchat_operator.api.models import DchatCluster
from dchat_operator.builders import postgres
from dchat_operator.builders.children import Capabilities, desired_children, prunable
from dchat_operator.builders.config import config_toml, database_url_ref, secret_references
from tests.operator.unit.fake_kube import cluster_cr
from tests.operator.unit.test_cluster_controller import NS, World
from tests.operator.unit.test_cluster_controller import world as world

pytestmark = pytest.mark.unit

MANAGED: dict[str, Any] = {"engine": "postgres", "postgres": {"managed": {}}}
SMALL = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}


def _cluster(managed: dict[str, Any] | None = None, **spec: Any) -> DchatCluster:
    db = {"engine": "postgres", "postgres": {"managed": managed or {}}}
    body = cluster_cr("chat", NS, replicas=2, database=db, **spec)
    body["metadata"]["uid"] = "u-1"
    return DchatCluster.parse(body)


def _by(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)}"
    return found[0]


# ---- the model ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("postgres_spec", "message"),
    [
        ({}, "exactly one of primary"),
        (
            {"primary": {"name": "db", "key": "url"}, "managed": {}},
            "exactly one of primary",
        ),
        ({"managed": {}, "patroni": {"scope": "x"}}, "external Patroni"),
        ({"managed": {"instances": 1, "synchronous": True}}, "at least 2 instances"),
        ({"managed": {"ttlSeconds": 20, "loopWaitSeconds": 10, "retryTimeoutSeconds": 6}}, "ttl"),
    ],
)
def test_invalid_managed_specs_are_refused_with_a_reason(
    postgres_spec: dict[str, Any], message: str
) -> None:
    body = cluster_cr("chat", NS, database={"engine": "postgres", "postgres": postgres_spec})
    with pytest.raises(ValidationError) as err:
        DchatCluster.parse(body)
    assert message in str(err.value)


def test_the_crd_carries_the_same_rules_as_cel() -> None:
    from dchat_operator.api.crd import crd

    schema = json.dumps(crd())
    assert "has(self.primary) != has(self.managed)" in schema
    assert "!self.synchronous || self.instances >= 2" in schema
    assert "self.loopWaitSeconds + 2 * self.retryTimeoutSeconds <= self.ttlSeconds" in schema


# ---- the builders ---------------------------------------------------------------------


def test_children_of_a_managed_cluster() -> None:
    cluster = _cluster({"instances": 3, "synchronous": True, "storageClassName": "fast"})
    objs = desired_children(cluster, Capabilities())
    kinds = [o["kind"] for o in objs]
    # Patroni's objects come before the node's Deployment
    assert kinds.index("StatefulSet") < kinds.index("Deployment")
    sa = _by(objs, "ServiceAccount", "chat-postgres")
    assert sa["automountServiceAccountToken"] is False
    rb = _by(objs, "RoleBinding", "chat-postgres")
    assert rb["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "dchat-postgres",
    }
    assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "chat-postgres", "namespace": NS}]

    config = yaml.safe_load(_by(objs, "ConfigMap", "chat-postgres-patroni")["data"]["patroni.yml"])
    assert config["scope"] == "chat-postgres"
    assert config["kubernetes"]["use_endpoints"] is False
    assert config["kubernetes"]["labels"] == postgres.member_labels(cluster)
    dcs = config["bootstrap"]["dcs"]
    assert (dcs["ttl"], dcs["loop_wait"], dcs["retry_timeout"]) == (20, 2, 5)
    assert dcs["synchronous_mode"] is True
    assert config["bootstrap"]["post_bootstrap"] == "/usr/local/bin/dchat-postgres-bootstrap"

    sts = _by(objs, "StatefulSet", "chat-postgres")
    spec = sts["spec"]
    assert (spec["replicas"], spec["serviceName"]) == (3, "chat-postgres")
    assert spec["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    claim = spec["volumeClaimTemplates"][0]
    assert claim["spec"]["storageClassName"] == "fast"
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "chat-postgres"
    assert pod["securityContext"]["runAsUser"] == 999
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["readinessProbe"]["httpGet"]["path"] == "/readiness"
    env = {e["name"]: e for e in container["env"]}
    # the passwords come as files from the Secret, never through the pod spec's env
    assert not [e for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})]
    (secrets,) = [v for v in pod["volumes"] if "secret" in v]
    assert secrets["secret"]["secretName"] == "chat-postgres"
    assert secrets["secret"]["defaultMode"] == 0o440
    assert {"name": "secrets", "mountPath": "/etc/patroni-secrets", "readOnly": True} in (
        container["volumeMounts"]
    )
    assert env["PATRONI_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # a new dchat version must not roll the database: no version label on its pods
    assert c.LABEL_VERSION not in spec["template"]["metadata"]["labels"]

    _check_services_and_policy(cluster, objs)
    # the member pods are not the node pods: the node's selector does not pick them
    deployment = _by(objs, "Deployment", "chat")
    node_selector = deployment["spec"]["selector"]["matchLabels"]
    member = spec["template"]["metadata"]["labels"]
    assert not all(member.get(k) == v for k, v in node_selector.items())


def _check_services_and_policy(cluster: DchatCluster, objs: list[dict[str, Any]]) -> None:
    rw = _by(objs, "Service", "chat-postgres-rw")
    assert rw["spec"]["selector"] == {**postgres.member_labels(cluster), "role": "primary"}
    ro = _by(objs, "Service", "chat-postgres-ro")
    assert ro["spec"]["selector"]["role"] == "replica"
    headless = _by(objs, "Service", "chat-postgres")
    assert headless["spec"]["clusterIP"] == "None"
    assert _by(objs, "PodDisruptionBudget", "chat-postgres")["spec"]["maxUnavailable"] == 1
    policy = _by(objs, "NetworkPolicy", "chat-postgres")
    assert policy["spec"]["policyTypes"] == ["Ingress"]


def test_no_password_in_any_child_and_the_node_reads_the_generated_url() -> None:
    cluster = _cluster()
    text = json.dumps(desired_children(cluster, Capabilities()))
    assert "password" not in config_toml(cluster).lower()
    ref = database_url_ref(cluster)
    assert ref is not None
    assert (ref.name, ref.key) == ("chat-postgres", "url")
    assert ("chat-postgres", "url") in secret_references(cluster)
    # only references to the Secret, never values
    assert '"secretName": "chat-postgres"' in text
    secret = postgres.secret(
        cluster,
        {
            "superuser-password": "s3cr/t@1",
            "replication-password": "r",
            "app-password": "a:b@c/d",
        },
    )
    assert "s3cr/t@1" not in text
    url = secret["stringData"]["url"]
    assert url == "postgresql://dchat:a%3Ab%40c%2Fd@chat-postgres-rw.ns1.svc:5432/dchat"
    # retained by default: no owner reference (claims and passwords outlive the CR together)
    assert "ownerReferences" not in secret["metadata"]
    owned = postgres.secret(
        _cluster({"retainOnDelete": False}),
        {"superuser-password": "s", "replication-password": "r", "app-password": "a"},
    )
    assert owned["metadata"]["ownerReferences"][0]["uid"] == "u-1"


def test_a_cluster_without_managed_postgres_prunes_its_objects_but_never_claims() -> None:
    body = cluster_cr("chat", NS, replicas=1)
    body["metadata"]["uid"] = "u-1"
    sqlite = DchatCluster.parse(body)
    gone = prunable(sqlite, Capabilities())
    for kind, name in [
        (STATEFUL_SET, "chat-postgres"),
        (SERVICE, "chat-postgres-rw"),
        (SERVICE, "chat-postgres-ro"),
        (SERVICE, "chat-postgres"),
        (ROLE_BINDING, "chat-postgres"),
        (SERVICE_ACCOUNT, "chat-postgres"),
        (CONFIG_MAP, "chat-postgres-patroni"),
        (PDB, "chat-postgres"),
        (NETWORK_POLICY, "chat-postgres"),
    ]:
        assert (kind, name) in gone
    assert all(kind.kind != "PersistentVolumeClaim" for kind, _ in gone)
    managed = prunable(_cluster(), Capabilities())
    assert (STATEFUL_SET, "chat-postgres") not in managed


# ---- the controller -------------------------------------------------------------------


def _secret_data(world: World) -> dict[str, str]:
    found = world.kube.obj(SECRET, NS, "chat-postgres")
    assert found is not None
    raw = found.get("stringData") or {
        k: base64.b64decode(v).decode() for k, v in (found.get("data") or {}).items()
    }
    return dict(raw)


async def test_the_generated_secret_is_made_once_and_the_node_deployment_follows(
    world: World,
) -> None:
    world.add("chat", replicas=1, database=MANAGED)
    await world.idle()
    data = _secret_data(world)
    assert set(data) == set(postgres.SECRET_KEYS)
    assert len({data[k] for k in postgres.SECRET_KEYS if k != "url"}) == 3  # all different
    assert all(len(data[k]) >= 24 for k in postgres.SECRET_KEYS if k != "url")
    assert world.kube.obj(STATEFUL_SET, NS, "chat-postgres") is not None
    assert world.kube.obj(DEPLOYMENT, NS, "chat") is not None
    # nothing of the passwords in the status or the Events
    status = json.dumps(world.status("chat"))
    events = json.dumps(world.kube.events)
    for key in ("superuser-password", "replication-password", "app-password"):
        assert data[key] not in status
        assert data[key] not in events
    # another reconcile (a spec change) keeps the passwords
    body = world.kube.obj(CLUSTER, NS, "chat")
    assert body is not None
    body["spec"]["replicas"] = 2
    body["metadata"]["generation"] = body["metadata"].get("generation", 1) + 1
    world.kube.put(CLUSTER, body)
    world.event("chat")
    await world.idle()
    assert _secret_data(world) == data


async def test_a_secret_of_that_name_not_made_by_the_operator_is_not_used(world: World) -> None:
    world.kube.put(
        SECRET,
        {
            "metadata": {"name": "chat-postgres", "namespace": NS},
            "data": {"url": base64.b64encode(b"postgresql://evil").decode()},
        },
    )
    world.add("chat", replicas=1, database=MANAGED)
    await world.idle()
    status = world.status("chat")
    assert "not generated by the operator" in json.dumps(status)
    assert world.kube.obj(DEPLOYMENT, NS, "chat") is None  # the node never gets that URL
    found = world.kube.obj(SECRET, NS, "chat-postgres")
    assert found is not None
    assert "labels" not in found["metadata"]  # left as it was


async def test_status_follows_the_managed_clusters_patroni_leader(world: World) -> None:
    world.add("chat", replicas=1, database=MANAGED)
    await world.idle()
    world.kube.put(
        CONFIG_MAP,
        {
            "metadata": {
                "name": "chat-postgres-leader",
                "namespace": NS,
                "annotations": {
                    "leader": "chat-postgres-1",
                    "renewTime": "2026-11-30T11:59:59+00:00",
                    "ttl": "10",
                    "transitions": "1",
                },
            }
        },
    )
    world.roll_out("chat")
    await world.idle()
    assert world.status("chat")["currentPrimary"]["name"] == "chat-postgres-1"
