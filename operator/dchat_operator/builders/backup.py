"""Jobs of the node image that back up, verify, delete and restore; names; the Litestream config.

Design (the contract with the node's ``dchat backup`` commands):
- Every Job runs the cluster's own image (``cluster.image``) with ``dchat backup <command>
  --name NAME --config /etc/dchat/config.toml``, under the same restricted Pod Security as the
  node pods, with the same config ConfigMap, /tmp and /data volumes and the same database
  Secret file (``DATABASE_URL_FILE``) as the node pods (``workload.base_volumes``,
  ``workload.secret_file_volume``: one definition of each). The operator itself never holds
  database or S3 credentials.
- S3: ``DCHAT_BACKUP_BUCKET``, ``DCHAT_BACKUP_PREFIX`` (``<s3.prefix><namespace>/<cluster>/``),
  ``DCHAT_BACKUP_REGION``, ``DCHAT_BACKUP_CLUSTER`` and, when set, ``DCHAT_BACKUP_ENDPOINT``,
  ``DCHAT_BACKUP_SSE``, ``DCHAT_BACKUP_KMS_KEY_ID``; the credentials Secret's two keys mounted
  as files in /etc/dchat/secrets/s3 (``DCHAT_BACKUP_CREDENTIALS_DIR``).
- The result is the pod's termination message (``/dev/termination-log``, policy ``File``):
  one JSON object, parsed by ``api.backups.BackupResult``.
- A Job never retries by itself (``backoffLimit: 0``) except the delete Job (a few retries: the
  objects must go before the DchatBackup may), is bounded in time (``activeDeadlineSeconds``),
  kept a day after it finished (``ttlSecondsAfterFinished``, so the operator can read the
  result after downtime) and owned by its DchatBackup or DchatRestore (garbage-collected with
  it).
- SQLite: the data volume is ReadWriteOnce, so a backup Job must run on the node that runs the
  cluster's pod: required pod affinity to the cluster's pods on ``kubernetes.io/hostname``,
  and the same claim mounted read-write. Read-write on purpose: SQLite in WAL mode needs to
  write the ``-shm`` file even to read, so a read-only mount of a live WAL database fails.
  (``Data``: a restore takes the claim while no pod runs; verify and delete Jobs get an
  emptyDir at /data instead and run anywhere.)
- Names: Job names must be labels (63 characters); ``job_name`` keeps ``<owner>-<suffix>``
  when it fits and otherwise shortens the owner and adds a hash, so names never collide.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from dchat_operator.api import constants as c
from dchat_operator.api.kinds import BACKUP, JOB
from dchat_operator.api.models import DatabaseEngine, DchatCluster, S3Target
from dchat_operator.builders import workload
from dchat_operator.builders.common import Obj, digest, names, selector_labels
from dchat_operator.builders.config import secret_files
from dchat_operator.builders.litestream import backup_prefix

Command = Literal["create", "verify", "delete", "restore"]
Data = Literal["beside", "alone", "none"]
"""How a Job uses a SQLite cluster's volume: ``beside`` the running node pod (same node,
same claim: a backup), ``alone`` (the claim while no pod runs: a restore), ``none`` (an
emptyDir at /data: verify and delete need no data and must not take the volume)."""

BACKUP_DEADLINE_SECONDS = 6 * 3600
DELETE_DEADLINE_SECONDS = 3600
JOB_TTL_SECONDS = 86_400
DELETE_RETRIES = 3
MAX_NAME = 63
SCHEDULE_ORIGIN = "schedule"


def job_name(owner: str, suffix: str) -> str:
    """``<owner>-<suffix>``, at most 63 characters, distinct for distinct owners."""
    name = f"{owner}-{suffix}"
    if len(name) <= MAX_NAME:
        return name
    tag = digest(owner)[:8]
    keep = MAX_NAME - len(suffix) - len(tag) - 2
    return f"{owner[:keep].rstrip('-.')}-{tag}-{suffix}"


def scheduled_backup_name(cluster: str, due: dt.datetime) -> str:
    """``<cluster>-<yyyymmddhhmmss>`` of the cron time (UTC): the same time, the same name."""
    return f"{cluster}-{due.astimezone(dt.UTC).strftime('%Y%m%d%H%M%S')}"


def default_method(cluster: DchatCluster) -> str:
    return "logical" if cluster.spec.database.engine == DatabaseEngine.postgres else "snapshot"


def backup_env(cluster: DchatCluster, s3: S3Target, source: str | None = None) -> list[Obj]:
    """The environment of the contract (``source``: the cluster whose backups are read)."""
    env = [
        {"name": "DCHAT_BACKUP_BUCKET", "value": s3.bucket},
        {"name": "DCHAT_BACKUP_PREFIX", "value": backup_prefix(cluster, s3, source)},
        {"name": "DCHAT_BACKUP_REGION", "value": s3.region},
        {"name": "DCHAT_BACKUP_CLUSTER", "value": source or cluster.name},
        {"name": "DCHAT_BACKUP_CREDENTIALS_DIR", "value": c.S3_SECRET_DIR},
    ]
    for name, value in (
        ("DCHAT_BACKUP_ENDPOINT", s3.endpoint),
        ("DCHAT_BACKUP_SSE", s3.sse),
        ("DCHAT_BACKUP_KMS_KEY_ID", s3.kms_key_id),
    ):
        if value is not None:
            env.append({"name": name, "value": value})
    return env


def job_labels(cluster: DchatCluster, owner_label: str, owner: str) -> dict[str, str]:
    """Labels of a Job and its pod: never the node pods' selector (no Service or Deployment
    may select a backup pod), the managed-by label the operator's Job watch filters on."""
    return {
        c.LABEL_NAME: c.APP_NAME,
        c.LABEL_INSTANCE: cluster.name,
        c.LABEL_COMPONENT: "backup",
        c.LABEL_MANAGED_BY: c.MANAGED_BY,
        c.LABEL_PART_OF: c.APP_NAME,
        owner_label: owner,
    }


def _affinity(cluster: DchatCluster) -> Obj:
    return {
        "podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": selector_labels(cluster)},
                    "topologyKey": "kubernetes.io/hostname",
                }
            ]
        }
    }


WORK_DIR = "/work"
"""emptyDir where verify and restore Jobs download a backup (``--work-dir``); /tmp is small."""


def _pod_spec(
    cluster: DchatCluster, s3: S3Target, args: list[str], source: str | None, data: Data
) -> Obj:
    volumes, mounts = workload.base_volumes(cluster)
    if data == "none":
        volumes = [
            {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}} if v["name"] == "data" else v
            for v in volumes
        ]
    if "--work-dir" in args:
        volumes.append({"name": "work", "emptyDir": {}})
        mounts.append({"name": "work", "mountPath": WORK_DIR})
    files = [f for f in secret_files(cluster) if f.volume == "database"]
    for file in files:
        volume, mount = workload.secret_file_volume(file)
        volumes.append(volume)
        mounts.append(mount)
    volumes.append(
        workload.secret_volume(
            "s3-credentials",
            s3.credentials_secret_ref.name,
            {
                "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
            },
        )
    )
    mounts.append({"name": "s3-credentials", "mountPath": c.S3_SECRET_DIR, "readOnly": True})
    container: Obj = {
        "name": c.BACKUP_CONTAINER,
        "image": cluster.image,
        "imagePullPolicy": cluster.spec.image.effective_pull_policy,
        "args": [*args, "--config", f"{c.CONFIG_DIR}/{c.CONFIG_FILE}"],
        "env": [*workload.secret_file_env(files), *backup_env(cluster, s3, source)],
        "volumeMounts": mounts,
        "securityContext": workload.container_security_context(),
        "terminationMessagePath": c.TERMINATION_LOG,
        "terminationMessagePolicy": "File",
    }
    pod: Obj = {
        "serviceAccountName": names(cluster).service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": "Never",
        "securityContext": workload.pod_security_context(),
        "containers": [container],
        "volumes": volumes,
    }
    sched = cluster.spec.scheduling
    if data == "beside" and cluster.spec.database.engine == DatabaseEngine.sqlite:
        pod["affinity"] = _affinity(cluster)
    if sched.tolerations:
        pod["tolerations"] = [dict(t) for t in sched.tolerations]
    if sched.node_selector:
        pod["nodeSelector"] = dict(sched.node_selector)
    if cluster.spec.image.pull_secrets:
        pod["imagePullSecrets"] = [{"name": s} for s in cluster.spec.image.pull_secrets]
    return pod


def owner_reference(kind_api_version: str, kind: str, name: str, uid: str) -> Obj:
    """Controller reference to a DchatBackup or DchatRestore (no blockOwnerDeletion, as in
    ``common.owner_reference``)."""
    return {
        "apiVersion": kind_api_version,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
    }


def node_job(
    cluster: DchatCluster,
    s3: S3Target,
    *,
    name: str,
    labels: dict[str, str],
    owner: Obj,
    args: list[str],
    source: str | None = None,
    data: Data = "beside",
    retries: int = 0,
    deadline: int = BACKUP_DEADLINE_SECONDS,
) -> Obj:
    """A Job of the node image running ``args`` (``dchat backup ...``)."""
    return {
        "apiVersion": JOB.api_version,
        "kind": JOB.kind,
        "metadata": {
            "name": name,
            "namespace": cluster.namespace,
            "labels": dict(labels),
            "ownerReferences": [owner],
        },
        "spec": {
            "backoffLimit": retries,
            "activeDeadlineSeconds": deadline,
            "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": _pod_spec(cluster, s3, args, source, data),
            },
        },
    }


def backup_job(
    cluster: DchatCluster, s3: S3Target, backup: str, backup_uid: str, command: Command
) -> Obj:
    """The ``create``, ``verify`` or ``delete`` Job of one DchatBackup."""
    suffix = {"create": "backup", "verify": "verify", "delete": "delete", "restore": "restore"}
    deleting = command == "delete"
    return node_job(
        cluster,
        s3,
        name=job_name(backup, suffix[command]),
        labels=job_labels(cluster, c.LABEL_BACKUP, backup),
        owner=owner_reference(BACKUP.api_version, BACKUP.kind, backup, backup_uid),
        args=[
            "backup",
            command,
            "--name",
            backup,
            *(["--work-dir", WORK_DIR] if command == "verify" else []),
        ],
        data="beside" if command == "create" else "none",
        retries=DELETE_RETRIES if deleting else 0,
        deadline=DELETE_DEADLINE_SECONDS if deleting else BACKUP_DEADLINE_SECONDS,
    )


def restore_job(
    cluster: DchatCluster,
    s3: S3Target,
    *,
    job: str,
    backup: str,
    source: str,
    owner: Obj,
    labels: dict[str, str],
    replace: bool = False,
) -> Obj:
    """The Job that restores ``backup`` (made by cluster ``source``) into ``cluster``'s
    database (``dchat backup restore``): into an empty one (a new cluster's bootstrap: the
    node refuses a non-empty target) or, with ``replace`` (a DchatRestore into an existing
    cluster), over what it holds, atomically. The cluster runs no pod meanwhile: the Job
    takes the volume alone, with no affinity."""
    args = ["backup", "restore", "--name", backup, "--work-dir", WORK_DIR]
    return node_job(
        cluster,
        s3,
        name=job,
        labels=labels,
        owner=owner,
        args=[*args, "--replace"] if replace else args,
        source=source,
        data="alone",
    )


def scheduled_backup(cluster: DchatCluster, due: dt.datetime, *, verify: bool) -> Obj:
    """The DchatBackup the schedule creates for the cron time ``due``."""
    return {
        "apiVersion": BACKUP.api_version,
        "kind": BACKUP.kind,
        "metadata": {
            "name": scheduled_backup_name(cluster.name, due),
            "namespace": cluster.namespace,
            "labels": {
                c.LABEL_CLUSTER: cluster.name,
                c.LABEL_BACKUP_ORIGIN: SCHEDULE_ORIGIN,
                c.LABEL_MANAGED_BY: c.MANAGED_BY,
            },
        },
        "spec": {"cluster": cluster.name, "verify": verify},
    }


# --- reading Jobs and pods -------------------------------------------------------------------


def job_outcome(job: Obj) -> tuple[str | None, str]:
    """("Complete" | "Failed" | None while it runs, the condition's message or reason)."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed"):
            detail = str(cond.get("message") or cond.get("reason") or "")
            return str(cond["type"]), detail
    return None, ""


def termination_message(pods: list[Obj], container: str = c.BACKUP_CONTAINER) -> str | None:
    """The termination message of ``container`` in the newest terminated pod, if any."""

    def created(pod: Obj) -> str:
        return str((pod.get("metadata") or {}).get("creationTimestamp") or "")

    for pod in sorted(pods, key=created, reverse=True):
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if status.get("name") != container:
                continue
            terminated = (status.get("state") or {}).get("terminated")
            if terminated is not None:
                message = terminated.get("message")
                return str(message) if message else None
    return None
