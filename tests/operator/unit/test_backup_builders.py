"""Backup Jobs, names, result parsing and the Litestream config: pure builders."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import kubernetes_validate
import pytest
import yaml

from dchat_operator.api import constants as c
from dchat_operator.api.backups import BackupResult, DchatRestoreSpec
from dchat_operator.builders import monitoring, network, workload
from dchat_operator.builders.backup import (
    Command,
    backup_job,
    job_name,
    job_outcome,
    scheduled_backup,
    scheduled_backup_name,
    termination_message,
)
from dchat_operator.builders.config import config_checksum, config_map, secret_references
from dchat_operator.builders.litestream import litestream_config, sidecar_ready
from tests.operator.unit.conftest import cluster
from tests.packaging.support import pod_specs, restricted_violations

pytestmark = pytest.mark.unit

S3 = {
    "bucket": "bkt",
    "prefix": "dchat/",
    "region": "eu-west-1",
    "credentialsSecretRef": {"name": "s3creds"},
}
PG = {"engine": "postgres", "postgres": {"primary": {"name": "db", "key": "url"}}}


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


def test_postgres_backup_job_follows_the_contract() -> None:
    cl = cluster("c1", database=PG, backup={"s3": {**S3, "sse": "aws:kms", "kmsKeyId": "k1"}})
    assert cl.spec.backup.s3 is not None
    job = backup_job(cl, cl.spec.backup.s3, "c1-20261130030000", "uid-b", "create")
    assert job["kind"] == "Job"
    assert job["metadata"]["name"] == "c1-20261130030000-backup"
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] > 0
    assert spec["ttlSecondsAfterFinished"] > 0
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "DchatBackup",
        "c1-20261130030000",
        "uid-b",
        True,
    )
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == cl.image
    assert container["args"] == [
        "backup",
        "create",
        "--name",
        "c1-20261130030000",
        "--config",
        "/etc/dchat/config.toml",
    ]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "File"
    env = _env(container)
    assert env == {
        "DATABASE_URL_FILE": "/etc/dchat/secrets/database/url",
        "DCHAT_BACKUP_BUCKET": "bkt",
        "DCHAT_BACKUP_PREFIX": "dchat/ns1/c1/",
        "DCHAT_BACKUP_REGION": "eu-west-1",
        "DCHAT_BACKUP_CLUSTER": "c1",
        "DCHAT_BACKUP_CREDENTIALS_DIR": "/etc/dchat/secrets/s3",
        "DCHAT_BACKUP_SSE": "aws:kms",
        "DCHAT_BACKUP_KMS_KEY_ID": "k1",
    }
    # the node pods' own volumes and the S3 credentials as files; restricted security
    volumes = {v["name"]: v for v in pod["volumes"]}
    node_volumes = {
        v["name"]: v for v in workload.deployment(cl)["spec"]["template"]["spec"]["volumes"]
    }
    for name in ("config", "tmp", "data", "database"):
        assert volumes[name] == node_volumes[name]
    assert volumes["s3-credentials"]["secret"]["secretName"] == "s3creds"
    assert {i["key"] for i in volumes["s3-credentials"]["secret"]["items"]} == {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    }
    assert "jwt" not in volumes  # only what a backup needs
    assert pod["securityContext"] == workload.pod_security_context()
    assert container["securityContext"] == workload.container_security_context()
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert "affinity" not in pod  # PostgreSQL: runs anywhere
    # never selected by the node pods' Services or Deployment
    labels = spec["template"]["metadata"]["labels"]
    assert labels[c.LABEL_COMPONENT] == "backup"
    assert labels[c.LABEL_BACKUP] == "c1-20261130030000"
    assert labels[c.LABEL_MANAGED_BY] == c.MANAGED_BY


def test_sqlite_backup_job_runs_beside_the_node_pod_on_its_volume() -> None:
    cl = cluster("c1", backup={"s3": {**S3, "endpoint": "http://s3.local:9000"}})
    assert cl.spec.backup.s3 is not None
    job = backup_job(cl, cl.spec.backup.s3, "b1", "u", "create")
    pod = job["spec"]["template"]["spec"]
    term = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"][c.LABEL_INSTANCE] == "c1"
    assert term["labelSelector"]["matchLabels"][c.LABEL_COMPONENT] == c.COMPONENT
    data = next(v for v in pod["volumes"] if v["name"] == "data")
    assert data["persistentVolumeClaim"] == {"claimName": "c1-data"}  # read-write (WAL -shm)
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "data")
    assert not mount.get("readOnly")
    env = _env(pod["containers"][0])
    assert env["DCHAT_BACKUP_ENDPOINT"] == "http://s3.local:9000"
    assert "DATABASE_URL_FILE" not in env
    assert "DCHAT_BACKUP_SSE" not in env


def test_delete_and_verify_jobs() -> None:
    cl = cluster("c1", database=PG, backup={"s3": S3})
    assert cl.spec.backup.s3 is not None
    delete = backup_job(cl, cl.spec.backup.s3, "b1", "u", "delete")
    assert delete["metadata"]["name"] == "b1-delete"
    assert delete["spec"]["backoffLimit"] > 0  # a bounded retry
    assert delete["spec"]["template"]["spec"]["containers"][0]["args"][:4] == [
        "backup",
        "delete",
        "--name",
        "b1",
    ]
    verify = backup_job(cl, cl.spec.backup.s3, "b1", "u", "verify")
    assert verify["metadata"]["name"] == "b1-verify"
    assert verify["spec"]["backoffLimit"] == 0


def test_job_names_fit_in_a_label_and_stay_distinct() -> None:
    assert job_name("short", "backup") == "short-backup"
    a = job_name("a" * 52 + "-20261130030000", "backup")
    b = job_name("a" * 52 + "-20261130040000", "backup")
    assert len(a) <= 63
    assert len(b) <= 63
    assert a != b
    assert a.endswith("-backup")


def test_scheduled_backup_names_and_labels() -> None:
    cl = cluster("c1", database=PG, backup={"enabled": True, "s3": S3})
    due = dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.UTC)
    assert scheduled_backup_name("c1", due) == "c1-20261130030000"
    obj = scheduled_backup(cl, due, verify=True)
    assert obj["metadata"]["labels"][c.LABEL_CLUSTER] == "c1"
    assert obj["metadata"]["labels"][c.LABEL_BACKUP_ORIGIN] == "schedule"
    assert obj["spec"] == {"cluster": "c1", "verify": True}
    assert "ownerReferences" not in obj["metadata"]  # a deleted cluster keeps its backups


def _pod(message: str | None, created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    terminated: dict[str, Any] = {"exitCode": 0}
    if message is not None:
        terminated["message"] = message
    return {
        "metadata": {"creationTimestamp": created},
        "status": {"containerStatuses": [{"name": "backup", "state": {"terminated": terminated}}]},
    }


def test_termination_messages_parse_or_are_none() -> None:
    ok = {
        "ok": True,
        "command": "create",
        "name": "b1",
        "location": "s3://bkt/dchat/ns1/c1/b1/",
        "size": 123,
        "sha256": "ab" * 32,
        "engine": "postgres",
        "serverVersion": "15.4",
        "schemaVersion": 7,
        "startedAt": "2026-11-30T03:00:00Z",
        "completedAt": "2026-11-30T03:01:00Z",
        "rowCounts": {"users": 3},
    }
    result = BackupResult.parse(termination_message([_pod(json.dumps(ok))]))
    assert result is not None
    assert result.ok
    assert result.size == 123
    assert result.server_version == "15.4"
    assert result.row_counts == {"users": 3}
    failed = BackupResult.parse(json.dumps({"ok": False, "command": "create", "error": "boom"}))
    assert failed is not None
    assert not failed.ok
    assert failed.error == "boom"
    for garbled in (None, "", "not json", "[1]", '{"no": "ok"}', '{"ok": "maybe"}'):
        assert BackupResult.parse(garbled) is None, garbled
    # the newest pod wins
    pods = [
        _pod('{"ok": false}', "2026-01-01T00:00:00Z"),
        _pod('{"ok": true}', "2026-01-02T00:00:00Z"),
    ]
    newest = BackupResult.parse(termination_message(pods))
    assert newest is not None
    assert newest.ok
    assert termination_message([_pod(None)]) is None
    assert termination_message([{"status": {}}]) is None


def test_job_outcome() -> None:
    assert job_outcome({"status": {}}) == (None, "")
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert job_outcome(done)[0] == "Complete"
    failed = {
        "status": {
            "conditions": [
                {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "m"}
            ]
        }
    }
    assert job_outcome(failed) == ("Failed", "m")


def test_litestream_config_is_yaml_with_the_replica() -> None:
    cl = cluster("c1", backup={"enabled": True, "s3": {**S3, "endpoint": "http://s3:9000"}})
    assert cl.spec.backup.s3 is not None
    doc = yaml.safe_load(litestream_config(cl, cl.spec.backup.s3))
    (db,) = doc["dbs"]
    assert db["path"] == "/data/dchat.db"
    (replica,) = db["replicas"]
    assert replica == {
        "type": "s3",
        "bucket": "bkt",
        "path": "dchat/ns1/c1/litestream",
        "region": "eu-west-1",
        "sync-interval": "1s",
        "endpoint": "http://s3:9000",
        "force-path-style": True,
    }
    plain = cluster("c1", backup={"enabled": True, "s3": S3})
    assert plain.spec.backup.s3 is not None
    replica = yaml.safe_load(litestream_config(plain, plain.spec.backup.s3))["dbs"][0]["replicas"][
        0
    ]
    assert "endpoint" not in replica
    assert "force-path-style" not in replica
    assert "AWS_" not in litestream_config(plain, plain.spec.backup.s3)


def test_restore_spec_needs_exactly_one_source() -> None:
    DchatRestoreSpec.model_validate({"backup": "b1", "target": "c2"})
    DchatRestoreSpec.model_validate({"latest": True, "cluster": "c1", "target": "c2"})
    for bad in (
        {"target": "c2"},
        {"backup": "b1", "latest": True, "cluster": "c1", "target": "c2"},
        {"latest": True, "target": "c2"},
    ):
        with pytest.raises(ValueError, match="exactly one"):
            DchatRestoreSpec.model_validate(bad)


def test_sqlite_with_backups_gets_the_litestream_restore_and_sidecar() -> None:
    cl = cluster("c1", backup={"enabled": True, "s3": {**S3, "endpoint": "http://s3:9000"}})
    pod = workload.deployment(cl)["spec"]["template"]["spec"]
    restore, sidecar = pod["initContainers"]
    assert restore["name"] == "litestream-restore"
    assert restore["command"] == ["litestream"]
    assert restore["args"] == [
        "restore",
        "-config",
        "/etc/dchat/litestream.yml",
        "-if-db-not-exists",
        "-if-replica-exists",
        "/data/dchat.db",
    ]
    assert "restartPolicy" not in restore
    assert sidecar["name"] == "litestream"
    assert sidecar["args"] == ["replicate", "-config", "/etc/dchat/litestream.yml"]
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar
    for container in (restore, sidecar):
        assert container["image"] == cl.image
        assert container["securityContext"] == workload.container_security_context()
        secret_env = {
            e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e
        }
        assert secret_env == {
            "AWS_ACCESS_KEY_ID": {"name": "s3creds", "key": "AWS_ACCESS_KEY_ID"},
            "AWS_SECRET_ACCESS_KEY": {"name": "s3creds", "key": "AWS_SECRET_ACCESS_KEY"},
        }
        assert {m["name"] for m in container["volumeMounts"]} == {"config", "tmp", "data"}
    cm = config_map(cl)
    doc = yaml.safe_load(cm["data"]["litestream.yml"])
    assert doc["dbs"][0]["replicas"][0]["force-path-style"] is True
    assert "AWS_SECRET_ACCESS_KEY" not in cm["data"]["litestream.yml"]
    assert ("s3creds", "AWS_ACCESS_KEY_ID") in secret_references(cl)
    # the config checksum (rolls the pods) covers the Litestream config
    other = cluster("c1", backup={"enabled": True, "s3": {**S3, "bucket": "other"}})
    assert config_checksum(other) != config_checksum(cl)


def test_no_litestream_without_backups_or_on_postgres() -> None:
    for cl in (
        cluster("c1"),
        cluster("c1", backup={"s3": S3}),
        cluster("c1", database=PG, backup={"enabled": True, "s3": S3}),
    ):
        assert "initContainers" not in workload.deployment(cl)["spec"]["template"]["spec"]
        assert "litestream.yml" not in config_map(cl)["data"]


def test_the_sidecar_readiness_is_read_from_pod_status() -> None:
    def pod(ready: bool) -> dict[str, Any]:
        status = {"name": "litestream", "ready": ready}
        return {"metadata": {"name": "p"}, "status": {"initContainerStatuses": [status]}}

    assert sidecar_ready([pod(True)])[0]
    assert not sidecar_ready([pod(False)])[0]
    assert not sidecar_ready([])[0]


def test_backup_pods_are_valid_and_restricted() -> None:
    """Every Job and the Litestream pod validate offline and meet Pod Security restricted."""
    lite = cluster("c1", backup={"enabled": True, "s3": S3})
    pg = cluster("c2", database=PG, backup={"s3": {**S3, "sse": "AES256"}})
    objects: list[dict[str, Any]] = [workload.deployment(lite)]
    for cl in (lite, pg):
        assert cl.spec.backup.s3 is not None
        commands: tuple[Command, ...] = ("create", "verify", "delete")
        for command in commands:
            objects.append(backup_job(cl, cl.spec.backup.s3, "b1", "u", command))
    for obj in objects:
        kubernetes_validate.validate(obj, "1.34.0", strict=True)
    for name, spec in pod_specs(objects):
        assert restricted_violations(spec) == [], name


def test_sqlite_verify_and_delete_jobs_leave_the_volume_to_the_node_pod() -> None:
    cl = cluster("c1", backup={"s3": S3})
    assert cl.spec.backup.s3 is not None
    for command in ("verify", "delete"):
        pod = backup_job(cl, cl.spec.backup.s3, "b1", "u", command)["spec"]["template"]["spec"]
        assert "affinity" not in pod, command
        data = next(v for v in pod["volumes"] if v["name"] == "data")
        assert "emptyDir" in data, command


def test_the_litestream_sidecar_serves_metrics_that_are_scraped_and_allowed() -> None:
    cl = cluster("c1", backup={"enabled": True, "s3": S3})
    assert cl.spec.backup.s3 is not None
    assert yaml.safe_load(litestream_config(cl, cl.spec.backup.s3))["addr"] == ":9090"
    _, sidecar = workload.deployment(cl)["spec"]["template"]["spec"]["initContainers"]
    assert sidecar["ports"] == [{"name": "litestream", "containerPort": 9090, "protocol": "TCP"}]
    ports = {p["name"]: p for p in network.metrics_service(cl)["spec"]["ports"]}
    assert ports["litestream"]["targetPort"] == 9090
    endpoints = monitoring.service_monitor(cl)["spec"]["endpoints"]
    assert [e["port"] for e in endpoints] == ["metrics", "litestream"]
    policy = network.network_policy(cl)
    assert policy is not None
    allowed = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert 9090 in allowed
    plain = cluster("c2")  # no backups: no sidecar, nothing to scrape or allow
    assert [p["name"] for p in network.metrics_service(plain)["spec"]["ports"]] == ["metrics"]
    assert [e["port"] for e in monitoring.service_monitor(plain)["spec"]["endpoints"]] == [
        "metrics"
    ]
    policy = network.network_policy(plain)
    assert policy is not None
    assert 9090 not in {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    # a node port on 9090 (and 9091): the sidecar takes the next free one, everywhere
    taken = cluster(
        "c3", backup={"enabled": True, "s3": S3}, server={"apiPort": 9090, "metricsPort": 9091}
    )
    assert taken.spec.backup.s3 is not None
    assert yaml.safe_load(litestream_config(taken, taken.spec.backup.s3))["addr"] == ":9092"
    _, sidecar = workload.deployment(taken)["spec"]["template"]["spec"]["initContainers"]
    assert sidecar["ports"][0]["containerPort"] == 9092
    ports = {p["name"]: p["port"] for p in network.metrics_service(taken)["spec"]["ports"]}
    assert ports == {"metrics": 9091, "litestream": 9092}
