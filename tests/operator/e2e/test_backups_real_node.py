"""Backups and restores, run for real: Jobs of the node image on the real node, against the
harness PostgreSQL and moto's S3 server, both bound to the bridge address pods reach.

- An on-demand DchatBackup of a PostgreSQL cluster completes (location, size, SHA-256 from
  the Job's termination message), its verification (a restore into a throw-away database
  and ``dchat verify``) passes, and a new cluster bootstrapped from it serves the same
  channels and messages over its API.
- One flipped byte in the backup's data object: verifying again turns ``verified`` false,
  and a cluster bootstrapped from it fails with the checksum error before touching its
  database.
- A schedule of every minute fires on time, once, and the cluster reports BackupHealthy;
  with keepLast 1 the next minute's backup makes retention delete the first (S3 objects,
  then the DchatBackup).
- An unreachable S3 endpoint fails a backup with a reason and no location.
- SQLite with Litestream: the pod and its volume lost at once, the new pod restores from
  the replica; the recovery point is printed and must stay under 5 s.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness.cluster import KubeCluster
from tests.harness.net import CuttingProxy
from tests.harness.postgres import PostgresServer, bulk_messages
from tests.harness.s3 import S3Server

from .conftest import (
    PG,
    Operator,
    condition,
    db_secret,
    get_cluster,
    kubectl_dchat,
    wait_ready,
)
from .realnode import (
    BRIDGE,
    VOLUMES,
    hostpath_volume,
    http,
    is_ready,
    jwt_secret,
    message_bodies,
    pods,
    real_cr,
    service_url,
    wait_archiving,
    wait_serving,
)

# The tests of this module run one after another on one parallel worker (`--dist
# loadgroup`: they share its module fixtures and keep the one real node's two cores from
# starting many node images at once), beside the kwok-only tests and the other real-node module.
pytestmark = [pytest.mark.e2e, pytest.mark.real_node, pytest.mark.xdist_group("real-node-backups")]

NEVER = "0 0 1 1 *"  # once a year: no scheduled backup during a test


def s3_secret(s3: S3Server) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s3creds"},
        "stringData": {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key},
    }


def backup_spec(s3: S3Server, bucket: str, schedule: str = NEVER) -> dict[str, Any]:
    return {
        "enabled": True,
        "schedule": schedule,
        "verifyEvery": 1,
        "retention": {"keepLast": 5, "maxAgeDays": 1},
        "s3": {
            "bucket": bucket,
            "endpoint": s3.endpoint,
            "region": s3.region,
            "credentialsSecretRef": {"name": "s3creds"},
        },
    }


def pg_database(kube: KubeCluster, namespace: str, pg: PostgresServer, name: str) -> str:
    """An empty database of the harness server for cluster ``name``, its URL in the Secret
    ``<name>-db`` (key ``url``); its role may create databases (verifying a backup restores
    it into a throw-away one). The database's name."""
    db = f"bk_{uuid.uuid4().hex[:10]}"
    url = pg.create_login_database(db, uuid.uuid4().hex, BRIDGE, createdb=True)
    secret = db_secret(url)
    secret["metadata"]["name"] = f"{name}-db"
    kube.apply([secret], namespace)
    return db


def pg_cluster(
    kube: KubeCluster,
    namespace: str,
    pg: PostgresServer,
    name: str,
    backup: dict[str, Any],
    **spec: Any,
) -> str:
    """A one-replica PostgreSQL cluster on its own, empty database (``pg_database``). The
    database's name."""
    db = pg_database(kube, namespace, pg, name)
    database = {**PG, "postgres": {"primary": {"name": f"{name}-db", "key": "url"}}}
    cr = real_cr(name, replicas=1, database=database, backup=backup, **spec)
    kube.apply([cr], namespace)
    return db


@pytest.fixture
def backups_deleted(kube: KubeCluster, namespace: str, operator: Any) -> Iterator[None]:
    """At the end, while the operator still runs, delete the namespace's DchatBackups (their
    finalizer removes the S3 objects first); a namespace would otherwise wait for an
    operator that is gone."""
    yield
    result = kube.kubectl(
        "delete", "-n", namespace, "dchatbackups", "--all", "--timeout=90s", check=False
    )
    if result.returncode != 0:  # leave nothing stuck behind
        for name in kube.kubectl(
            "get", "-n", namespace, "dchatbackups", "-o", "name", check=False
        ).stdout.split():
            kube.kubectl(
                "patch",
                "-n",
                namespace,
                name,
                "--type=merge",
                "-p",
                '{"metadata": {"finalizers": null}}',
                check=False,
            )


def backup_obj(kube: KubeCluster, namespace: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = kube.get_json("-n", namespace, "dchatbackup", name)
    return data


def wait_backup(
    kube: KubeCluster, namespace: str, name: str, timeout: float = 240
) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        obj = backup_obj(kube, namespace, name)
        status = obj.get("status") or {}
        assert status.get("phase") != "Failed", status
        return obj if status.get("phase") == "Completed" else None

    result: dict[str, Any] = kube.wait_for(done, timeout=timeout, interval=2, what=f"{name}")
    return result


def wait_verified(
    kube: KubeCluster, namespace: str, name: str, expect: bool, timeout: float = 240
) -> dict[str, Any]:
    def verified() -> dict[str, Any] | None:
        status = backup_obj(kube, namespace, name).get("status") or {}
        return status if status.get("verified") is expect else None

    result: dict[str, Any] = kube.wait_for(
        verified, timeout=timeout, interval=2, what=f"{name} verified={expect}"
    )
    return result


def cluster_verified(kube: KubeCluster, namespace: str, name: str, expect: str) -> None:
    """The cluster's BackupVerified condition follows its newest verification."""
    kube.wait_for(
        lambda: (
            condition(get_cluster(kube, namespace, name), "BackupVerified").get("status") == expect
        ),
        timeout=60,
        interval=2,
        what=f"{name} BackupVerified={expect}",
    )


def chat_data(base: str) -> list[tuple[str, list[str]]]:
    """Every channel with its messages' bodies, through the API."""
    status, page = http("GET", f"{base}/api/v1/channels?limit=100")
    assert status == 200, page
    out = []
    for ch in page["items"]:
        status, msgs = http("GET", f"{base}/api/v1/channels/{ch['id']}/messages?limit=100")
        assert status == 200, msgs
        out.append((ch["name"], [m["body"] for m in msgs["items"]]))
    return out


def write_chat(base: str) -> None:
    for channel in ("general", "ops"):
        status, created = http("POST", f"{base}/api/v1/channels", {"name": channel})
        assert status == 201, created
        for i in range(3):
            status, posted = http(
                "POST",
                f"{base}/api/v1/channels/{created['id']}/messages",
                {"body": f"{channel} message {i}"},
            )
            assert status == 201, posted


def kill_operator_while_running(
    kube: KubeCluster, namespace: str, operator: Operator, backup: str
) -> str:
    """SIGKILL the operator once ``backup`` is Running and start it again: the new one must
    finish the backup from the Job that runs (not a new one, no lost result). The uid of
    that Job."""
    phase = kube.wait_for(
        lambda: (
            (backup_obj(kube, namespace, backup).get("status") or {}).get("phase")
            in ("Running", "Completed")
            and backup_obj(kube, namespace, backup)["status"]["phase"]
        ),
        timeout=120,
        interval=0.2,
        what=f"{backup} Running",
    )
    assert phase == "Running", phase
    uid: str = kube.get_json("-n", namespace, "job", f"{backup}-backup")["metadata"]["uid"]
    operator.kill_and_restart()
    return uid


def plugin_restore(kube: KubeCluster, namespace: str, backup: str, target: str) -> dict[str, Any]:
    """``kubectl dchat restore BACKUP --to TARGET --wait``; the status of the DchatRestore it
    created (Completed, or the test fails with the plugin's output)."""
    out = kubectl_dchat(
        kube, namespace, "restore", backup, "--to", target, "--wait", "--timeout", "300"
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"-> dchatcluster/{target} (data REPLACED)" in out.stdout, out.stdout
    items = kube.get_json("-n", namespace, "dchatrestores")["items"]
    (restore,) = [r for r in items if r["spec"]["target"] == target]
    status: dict[str, Any] = restore.get("status") or {}
    assert status.get("phase") == "Completed", status
    return status


def plugin_doctor_ok(kube: KubeCluster, namespace: str, cluster: str) -> None:
    """``kubectl dchat doctor CLUSTER -o json`` asks the Ready node pod for its database and
    reads the last backup: both ok, exit 0."""
    doctor = kubectl_dchat(kube, namespace, "doctor", cluster, "-o", "json")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    checks = {x["name"]: x for x in json.loads(doctor.stdout)["checks"]}
    assert checks["database reachable"]["result"] == "ok", checks["database reachable"]
    assert checks["S3 reachable"]["result"] == "ok", checks["S3 reachable"]


def plugin_backup(kube: KubeCluster, namespace: str, cluster: str, name: str, bucket: str) -> None:
    """``kubectl dchat backup CLUSTER --name NAME --wait`` follows a new backup to Completed;
    ``backups CLUSTER -o json`` lists it."""
    taken = kubectl_dchat(
        kube, namespace, "backup", cluster, "--name", name, "--wait", "--timeout", "240"
    )
    assert taken.returncode == 0, taken.stdout + taken.stderr
    status = backup_obj(kube, namespace, name)["status"]
    assert status["phase"] == "Completed", status
    assert status["location"].startswith(f"s3://{bucket}/"), status
    listed = kubectl_dchat(kube, namespace, "backups", cluster, "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert name in {i["metadata"]["name"] for i in json.loads(listed.stdout)["items"]}


def plugin_restore_new(
    kube: KubeCluster, namespace: str, pg: PostgresServer, backup: str, new: str
) -> None:
    """``kubectl dchat restore BACKUP --new NEW --database-secret NEW-db:url --wait`` onto a
    new, empty database: the plugin copies the source's spec and follows the bootstrap."""
    pg_database(kube, namespace, pg, new)
    made = kubectl_dchat(
        kube, namespace, "restore", backup, "--new", new, "--database-secret", f"{new}-db:url",
        "--wait", "--timeout", "300",
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    assert f"dchatcluster/{new} created from dchatbackup/{backup}" in made.stdout, made.stdout
    boot = get_cluster(kube, namespace, new)["status"]["bootstrap"]
    assert boot["phase"] == "Completed", boot


def flip_one_byte(s3: S3Server, bucket: str, location: str) -> str:
    """Flip a byte in the middle of the backup's data object (not the manifest)."""
    prefix = location.removeprefix(f"s3://{bucket}/")
    client = s3.client()
    keys = [
        o["Key"]
        for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        if not o["Key"].endswith("manifest.json")
    ]
    assert keys, f"no data object under {location}"
    key = keys[0]
    body = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    client.put_object(Bucket=bucket, Key=key, Body=bytes(body))
    return key


@pytest.mark.timeout(900)
def test_backup_verify_restore_and_a_tampered_backup_is_refused(
    real_node: str,
    kube: KubeCluster,
    namespace: str,
    operator: Any,
    bridge_postgres: PostgresServer,
    bridge_s3: S3Server,
    backups_deleted: None,
) -> None:
    bucket = bridge_s3.create_bucket(f"bk-{uuid.uuid4().hex[:10]}")
    kube.apply([jwt_secret(), s3_secret(bridge_s3)], namespace)
    spec = backup_spec(bridge_s3, bucket)
    pg_cluster(kube, namespace, bridge_postgres, "src", spec)
    wait_ready(kube, namespace, "src", replicas=1, timeout=180)
    src = service_url(kube, namespace, "src-api")
    wait_serving(kube, src)
    write_chat(src)
    before = chat_data(src)

    # On demand, verified; the operator is killed while the backup Job runs.
    on_demand(kube, namespace, "b1", "src", verify=True)
    job_uid = kill_operator_while_running(kube, namespace, operator, "b1")
    status = wait_backup(kube, namespace, "b1")["status"]
    assert kube.get_json("-n", namespace, "job", "b1-backup")["metadata"]["uid"] == job_uid
    assert status["location"].startswith(f"s3://{bucket}/"), status
    assert status["size"] > 0
    assert len(status["sha256"]) == 64
    assert status["engine"] == "postgres"
    manifests = [
        o["Key"]
        for o in bridge_s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])
        if o["Key"].endswith("manifest.json")
    ]
    assert len(manifests) == 1, manifests
    wait_verified(kube, namespace, "b1", True)
    cluster_verified(kube, namespace, "src", "True")
    plugin_doctor_ok(kube, namespace, "src")

    # A new cluster from it serves the same data: `kubectl dchat restore --new` copies src's
    # spec onto a new, empty database and follows the bootstrap until the cluster is Ready.
    plugin_restore_new(kube, namespace, bridge_postgres, "b1", "dst")
    wait_ready(kube, namespace, "dst", replicas=1, timeout=180)
    dst = service_url(kube, namespace, "dst-api")
    wait_serving(kube, dst)
    assert chat_data(dst) == before

    # A DchatRestore into the existing cluster: what was written after the backup is gone,
    # the backup's data is back, and the pods serve again.
    status_code, extra = http("POST", f"{src}/api/v1/channels", {"name": "after-b1"})
    assert status_code == 201, extra
    assert chat_data(src) != before
    # through `kubectl dchat restore` (what on-call runs): it creates the DchatRestore and
    # follows it to the end
    done = plugin_restore(kube, namespace, backup="b1", target="src")
    assert done["verified"] is True, done
    wait_ready(kube, namespace, "src", replicas=1, timeout=180)
    wait_serving(kube, src)
    assert chat_data(src) == before
    plugin_backup(kube, namespace, "src", "b2", bucket)

    # One flipped byte: verification fails, and a bootstrap from it is refused.
    flip_one_byte(bridge_s3, bucket, status["location"])
    kube.kubectl(
        "annotate", "-n", namespace, "dchatbackup", "b1", "dchat.dev/verify-request=tamper-1"
    )
    tampered = wait_verified(kube, namespace, "b1", False)
    cluster_verified(kube, namespace, "src", "False")
    assert "checksum" in json.dumps(tampered).lower(), tampered
    pg_cluster(
        kube, namespace, bridge_postgres, "bad", spec, bootstrap={"fromBackup": {"name": "b1"}}
    )

    def refused() -> dict[str, Any] | None:
        st = (get_cluster(kube, namespace, "bad").get("status") or {}).get("bootstrap") or {}
        return st if st.get("phase") == "Failed" else None

    failed = kube.wait_for(refused, timeout=240, interval=2, what="bad bootstrap Failed")
    assert "checksum" in json.dumps(failed).lower(), failed
    # Nothing was restored into bad's database: it holds no pods and no data.
    assert kube.get_json("-n", namespace, "deployment", "bad")["spec"]["replicas"] == 0


# Its own parallel worker: it mostly waits for two minute boundaries.
@pytest.mark.xdist_group("real-node-cron")
@pytest.mark.timeout(420)
def test_a_schedule_of_every_minute_fires_on_time_and_retention_keeps_the_last(
    real_node: str,
    kube: KubeCluster,
    namespace: str,
    operator: Any,
    bridge_postgres: PostgresServer,
    bridge_s3: S3Server,
) -> None:
    bucket = bridge_s3.create_bucket(f"bk-{uuid.uuid4().hex[:10]}")
    kube.apply([jwt_secret(), s3_secret(bridge_s3)], namespace)
    spec = backup_spec(bridge_s3, bucket, "* * * * *")
    spec["retention"] = {"keepLast": 1, "maxAgeDays": 1}
    pg_cluster(kube, namespace, bridge_postgres, "cron", spec)
    wait_ready(kube, namespace, "cron", replicas=1, timeout=180)

    def scheduled() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = kube.get_json(
            "-n",
            namespace,
            "dchatbackups",
            "-l",
            "dchat.dev/cluster=cron,dchat.dev/origin=schedule",
        )["items"]
        return items

    first = kube.wait_for(scheduled, timeout=130, interval=1, what="a scheduled backup")[0]
    created = first["metadata"]["creationTimestamp"]
    # Fired within a few seconds after a minute boundary (the cron time), not at a resync.
    seconds = int(created[17:19])
    assert seconds <= 10, created
    wait_backup(kube, namespace, first["metadata"]["name"])
    sched = get_cluster(kube, namespace, "cron")["status"]["backupSchedule"]
    assert sched["lastScheduleTime"][:16] == created[:16], (sched, created)
    kube.wait_for(
        lambda: (
            condition(get_cluster(kube, namespace, "cron"), "BackupHealthy").get("status") == "True"
        ),
        timeout=60,
        interval=2,
        what="BackupHealthy",
    )
    assert len(scheduled()) == 1, "one backup per cron time"

    # Retention (keepLast 1): when the next minute's backup completed, the first one goes,
    # its S3 objects first (the finalizer's delete Job), then the DchatBackup.
    first_name = first["metadata"]["name"]
    first_prefix = backup_obj(kube, namespace, first_name)["status"]["location"]
    second = kube.wait_for(
        lambda: [b for b in scheduled() if b["metadata"]["name"] != first_name],
        timeout=90,
        interval=1,
        what="the next scheduled backup",
    )[0]
    wait_backup(kube, namespace, second["metadata"]["name"])
    kube.wait_for(
        lambda: [b["metadata"]["name"] for b in scheduled()] == [second["metadata"]["name"]],
        timeout=120,
        interval=2,
        what=f"retention to delete {first_name}",
    )
    key_prefix = first_prefix.removeprefix(f"s3://{bucket}/")
    left = bridge_s3.client().list_objects_v2(Bucket=bucket, Prefix=key_prefix).get("KeyCount")
    assert not left, f"{left} objects of {first_name} left in S3"


def on_demand(
    kube: KubeCluster, namespace: str, name: str, cluster: str, verify: bool = False
) -> None:
    spec: dict[str, Any] = {"cluster": cluster}
    if verify:
        spec["verify"] = True
    kube.apply(
        {
            "apiVersion": "dchat.dev/v1alpha1",
            "kind": "DchatBackup",
            "metadata": {"name": name},
            "spec": spec,
        },
        namespace,
    )


def wait_failed(kube: KubeCluster, namespace: str, name: str) -> dict[str, Any]:
    def failed() -> dict[str, Any] | None:
        status = backup_obj(kube, namespace, name).get("status") or {}
        assert status.get("phase") != "Completed", status
        return status if status.get("phase") == "Failed" else None

    result: dict[str, Any] = kube.wait_for(failed, timeout=240, interval=2, what=f"{name} Failed")
    return result


def no_upload_left(s3: S3Server, bucket: str) -> None:
    """No open multipart upload (no orphaned parts) and no manifest in ``bucket``."""
    client = s3.client()
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert not [k for k in keys if k.endswith("manifest.json")], keys


@pytest.mark.timeout(600)
def test_a_killed_pod_an_s3_outage_mid_backup_and_an_unreachable_s3_fail_the_backup(
    real_node: str,
    kube: KubeCluster,
    namespace: str,
    operator: Any,
    bridge_postgres: PostgresServer,
    bridge_s3: S3Server,
    backups_deleted: None,
) -> None:
    """The cluster's S3 endpoint is a proxy on the bridge in front of the test S3 server.
    1. The backup Job's pod is deleted mid-upload (uploads throttled to 4 MiB/s): SIGTERM
       cancels the transfer and aborts the multipart upload; the backup Fails.
    2. The proxy cuts every connection in the middle of the multipart upload and refuses
       new ones until the Job's pod retries the abort: the backup Fails and says S3.
    3. The endpoint is gone for good: the next backup Fails and says S3.
    None leaves a manifest or an open multipart upload (no orphaned parts)."""
    bucket = bridge_s3.create_bucket(f"cut-{uuid.uuid4().hex[:8]}")
    client = bridge_s3.client()
    port = int(bridge_s3.endpoint.rsplit(":", 1)[1])
    proxy = CuttingProxy(port, cut_after=2**62, host=BRIDGE, rate=4 * 1024 * 1024)
    try:
        spec = backup_spec(bridge_s3, bucket)
        spec["s3"]["endpoint"] = f"http://{BRIDGE}:{proxy.port}"
        kube.apply([jwt_secret(), s3_secret(bridge_s3)], namespace)
        db = pg_cluster(kube, namespace, bridge_postgres, "down", spec)
        wait_ready(kube, namespace, "down", replicas=1, timeout=180)
        # 200,000 messages: ~65 MB of dump, ~33 MB zstd in 16 MiB parts.
        bulk_messages(bridge_postgres, db, 200_000)

        # 1. The pod deleted while its upload runs.
        on_demand(kube, namespace, "b-kill", "down")
        kube.wait_for(
            lambda: client.list_multipart_uploads(Bucket=bucket).get("Uploads"),
            timeout=240,
            interval=0.2,
            what="b-kill's multipart upload open",
        )
        kube.kubectl(
            "delete", "pod", "-n", namespace, "-l", "job-name=b-kill-backup", "--wait=false"
        )
        status = wait_failed(kube, namespace, "b-kill")
        assert status.get("error"), status
        no_upload_left(bridge_s3, bucket)

        # 2. An outage in the middle of the multipart upload.
        proxy.rate = None
        proxy.cut_in(20 * 1024 * 1024)  # in the second part
        on_demand(kube, namespace, "b-cut", "down")

        def aborting() -> bool:
            logs = kube.kubectl(
                "logs", "-n", namespace, "job/b-cut-backup", "--tail=50", check=False
            ).stdout
            return "aborting the multipart upload" in logs

        kube.wait_for(aborting, timeout=240, interval=0.5, what="the Job retrying the abort")
        assert proxy.down.is_set()
        assert client.list_multipart_uploads(Bucket=bucket).get("Uploads"), "none open mid-cut"
        proxy.restore()  # S3 is back: the pending abort goes through
        status = wait_failed(kube, namespace, "b-cut")
        assert "s3" in status["error"].lower(), status
        assert not status.get("location"), status
        no_upload_left(bridge_s3, bucket)
    finally:
        proxy.close()  # 3. the S3 endpoint is gone before the next backup starts
    on_demand(kube, namespace, "b-down", "down")
    status = wait_failed(kube, namespace, "b-down")
    assert "s3" in status["error"].lower(), status
    assert not status.get("location"), status
    assert "testing" not in json.dumps(status)  # no credential in what it says
    no_upload_left(bridge_s3, bucket)


@pytest.mark.timeout(600)
def test_sqlite_replica_recovery_point_after_losing_pod_and_volume(
    real_node: str,
    kube: KubeCluster,
    namespace: str,
    operator: Any,
    bridge_s3: S3Server,
    volumes: list[str],
) -> None:
    """Litestream replicates the SQLite file continuously: write through the API, kill the
    pod and empty its volume at once, let the new pod restore from the replica, count what
    survived. The recovery point is the age of the newest surviving write relative to the
    last acknowledged one."""
    bucket = bridge_s3.create_bucket(f"lite-{uuid.uuid4().hex[:10]}")
    volumes.append(hostpath_volume(kube, namespace, "lite-data", real_node))
    data_dir = VOLUMES / namespace / "lite-data"
    kube.apply([jwt_secret(), s3_secret(bridge_s3)], namespace)
    cr = real_cr(
        "lite", replicas=1, database={"engine": "sqlite"}, backup=backup_spec(bridge_s3, bucket)
    )
    kube.apply(cr, namespace)
    wait_ready(kube, namespace, "lite", replicas=1, timeout=180)
    wait_archiving(kube, namespace, "lite")
    base = service_url(kube, namespace, "lite-api")
    wait_serving(kube, base)
    status, channel = http("POST", f"{base}/api/v1/channels", {"name": "rpo"})
    assert status == 201, channel
    posts = f"{base}/api/v1/channels/{channel['id']}/messages"

    acked: list[tuple[float, str]] = []
    deadline = time.monotonic() + 8  # bounded: 8 s of writes
    i = 0
    while time.monotonic() < deadline:
        body = f"m{i:06d}"
        code, _ = http("POST", posts, {"body": body}, timeout=3)
        if code == 201:
            acked.append((time.monotonic(), body))
        i += 1
    (old_pod,) = pods(kube, namespace, "lite")
    # Lose it all at once: the pod killed, the volume emptied before a new pod can start.
    kube.kubectl(
        "delete",
        "pod",
        "-n",
        namespace,
        old_pod["metadata"]["name"],
        "--grace-period=0",
        "--force",
        "--wait=false",
    )
    for entry in data_dir.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    assert acked, "no write was acknowledged"

    def restored() -> dict[str, Any] | None:
        ps = [
            p
            for p in pods(kube, namespace, "lite")
            if p["metadata"]["name"] != old_pod["metadata"]["name"]
        ]
        return ps[0] if ps and is_ready(ps[0]) else None

    kube.wait_for(restored, timeout=180, interval=1, what="the new pod restored and Ready")
    wait_serving(kube, base)
    survived = message_bodies(base, channel["id"])
    last_ack = acked[-1][0]
    kept = [t for t, body in acked if body in survived]
    assert kept, f"nothing of {len(acked)} writes survived"
    rpo = last_ack - max(kept)
    lost = len(acked) - len(kept)
    print(
        f"SQLite via Litestream: {len(acked)} writes acknowledged, {lost} lost, "
        f"recovery point {rpo:.2f} s"
    )
    assert rpo < 5.0, (rpo, lost, len(acked))
