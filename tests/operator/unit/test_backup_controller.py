"""The DchatBackup controller on the engine, against the in-memory fake of the Kubernetes API:
Job lifecycle into status, failures, verification, and the finalizer's delete flow."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from dchat_operator.api import constants as c
from dchat_operator.api.kinds import BACKUP, CLUSTER, JOB, POD
from dchat_operator.controllers.backup import BackupController, BackupState
from dchat_operator.controllers.engine import Backoff, Engine
from tests.operator.unit.fake_kube import FakeKube, api_error, cluster_cr

pytestmark = pytest.mark.unit

NS = "ns1"
PG = {"engine": "postgres", "postgres": {"primary": {"name": "db", "key": "url"}}}
S3 = {"bucket": "bkt", "credentialsSecretRef": {"name": "s3creds"}}
NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
OK = {
    "ok": True,
    "command": "create",
    "location": "s3://bkt/dchat/ns1/c1/b1/",
    "size": 2048,
    "sha256": "ab" * 32,
    "engine": "postgres",
    "serverVersion": "15.4",
    "schemaVersion": 7,  # the node reports its migration number
    "startedAt": "2026-11-30T12:00:01Z",
    "completedAt": "2026-11-30T12:00:09Z",
}


@dataclass
class World:
    kube: FakeKube
    controller: BackupController
    engine: Engine[BackupState]

    def cluster(self, name: str = "c1", *, ready: bool = True, **spec: Any) -> None:
        spec.setdefault("database", PG)
        spec.setdefault("backup", {"s3": S3})
        self.kube.put(CLUSTER, cluster_cr(name, NS, **spec))
        found = self.kube.obj(CLUSTER, NS, name)
        assert found is not None
        cond = {"type": "Ready", "status": "True" if ready else "False", "reason": "x"}
        self.kube.set_status(
            CLUSTER,
            NS,
            name,
            {"observedGeneration": found["metadata"]["generation"], "conditions": [cond]},
        )

    def backup(self, name: str = "b1", cluster: str = "c1", **spec: Any) -> None:
        self.kube.put(
            BACKUP,
            {"metadata": {"name": name, "namespace": NS}, "spec": {"cluster": cluster, **spec}},
        )
        self.trigger(name)

    def trigger(self, name: str = "b1") -> None:
        body = self.kube.obj(BACKUP, NS, name)
        if body is not None:
            self.controller.backup_event(self.engine, "MODIFIED", body)

    def finish_job(self, job: str, message: str | None, *, ok: bool = True) -> None:
        """The Job controller's and kubelet's part: the pod ran and the Job finished."""
        self.kube.put(
            POD,
            {
                "metadata": {
                    "name": f"{job}-abcde",
                    "namespace": NS,
                    "labels": {"batch.kubernetes.io/job-name": job},
                    "creationTimestamp": "2026-11-30T12:00:00Z",
                },
                "status": {
                    "containerStatuses": [
                        {
                            "name": "backup",
                            "state": {
                                "terminated": {"exitCode": 0 if ok else 1}
                                | ({"message": message} if message is not None else {})
                            },
                        }
                    ]
                },
            },
        )
        kind = "Complete" if ok else "Failed"
        self.kube.set_status(
            JOB, NS, job, {"conditions": [{"type": kind, "status": "True", "reason": "r"}]}
        )
        found = self.kube.obj(JOB, NS, job)
        assert found is not None
        self.controller.job_event(self.engine, found)

    async def idle(self) -> None:
        """Until nothing runs, including immediate requeues (requeue_after=0 is a timer)."""
        for _ in range(3):
            await asyncio.sleep(0.01)
            await self.engine.wait_idle()

    def status(self, name: str = "b1") -> dict[str, Any]:
        found = self.kube.obj(BACKUP, NS, name)
        assert found is not None
        return dict(found.get("status") or {})


@pytest.fixture
async def world() -> AsyncIterator[World]:
    kube = FakeKube()
    controller = BackupController(kube, clock=lambda: NOW)
    engine: Engine[BackupState] = Engine(
        controller, workers=2, backoff=Backoff(base=0.02, cap=0.1, jitter=0.0)
    )
    engine.start()
    yield World(kube, controller, engine)
    await engine.stop()


async def test_a_backup_runs_one_job_and_completes_from_its_result(world: World) -> None:
    world.cluster()
    world.backup()
    await world.idle()
    body = world.kube.obj(BACKUP, NS, "b1")
    assert body is not None
    assert c.FINALIZER_BACKUP_OBJECTS in body["metadata"]["finalizers"]
    assert body["metadata"]["labels"][c.LABEL_CLUSTER] == "c1"
    status = world.status()
    assert (status["phase"], status["job"]) == ("Running", "b1-backup")
    assert status["startedAt"] == "2026-11-30T12:00:00Z"
    assert world.kube.obj(JOB, NS, "b1-backup") is not None
    world.trigger()  # events while it runs create nothing new
    await world.idle()
    assert world.kube.count("CREATE", "jobs") == 1
    world.finish_job("b1-backup", json.dumps(OK))
    await world.idle()
    status = world.status()
    assert status["phase"] == "Completed"
    assert status["location"] == OK["location"]
    assert (status["size"], status["sha256"], status["engine"]) == (2048, OK["sha256"], "postgres")
    assert (status["serverVersion"], status["schemaVersion"]) == ("15.4", "7")
    assert (status["startedAt"], status["completedAt"]) == (OK["startedAt"], OK["completedAt"])
    assert "error" not in status
    writes = len(world.kube.writes())
    world.trigger()
    world.engine.resync()
    await world.idle()
    assert len(world.kube.writes()) == writes  # a finished backup costs no writes


@pytest.mark.parametrize(
    ("message", "ok", "error"),
    [
        (
            json.dumps({"ok": False, "command": "create", "error": "S3 unreachable"}),
            False,
            "S3 unreachable",
        ),
        (None, False, "the backup pod reported no result"),
        ("garbage{", True, "the backup pod reported no result"),
        (json.dumps({"ok": False, "error": "bucket missing"}), True, "bucket missing"),
    ],
)
async def test_failures_say_why(world: World, message: str | None, ok: bool, error: str) -> None:
    world.cluster()
    world.backup()
    await world.idle()
    world.finish_job("b1-backup", message, ok=ok)
    await world.idle()
    status = world.status()
    assert status["phase"] == "Failed"
    assert error in status["error"]
    assert "location" not in status


async def test_a_backup_waits_for_its_cluster_and_fails_without_target(world: World) -> None:
    world.cluster("c1", ready=False)
    world.backup("b1", "c1")
    world.backup("b2", "nope")
    world.cluster("c3", backup={})
    world.backup("b3", "c3")
    world.cluster("c4", database={"engine": "sqlite"}, replicas=0)
    world.backup("b4", "c4")
    world.cluster("c5")
    world.backup("b5", "c5", method="snapshot")
    await world.idle()
    assert world.status("b1")["phase"] == "Pending"
    assert "waiting for DchatCluster c1 to be Ready" in world.status("b1")["error"]
    assert world.status("b2")["phase"] == "Failed"
    assert "DchatCluster nope does not exist" in world.status("b2")["error"]
    assert world.status("b3")["phase"] == "Failed"
    assert "no spec.backup.s3" in world.status("b3")["error"]
    assert world.status("b4")["phase"] == "Pending"
    assert "runs no pod" in world.status("b4")["error"]
    assert world.status("b5")["phase"] == "Failed"
    assert "method snapshot" in world.status("b5")["error"]
    assert world.kube.count("CREATE", "jobs") == 0
    # the cluster turns Ready: the waiting backup starts on its next run
    world.cluster("c1")
    world.trigger("b1")
    await world.idle()
    assert world.status("b1")["phase"] == "Running"


async def test_a_job_that_disappears_while_running_fails_the_backup(world: World) -> None:
    world.cluster()
    world.backup()
    await world.idle()
    world.kube.remove(JOB, NS, "b1-backup")
    world.trigger()
    await world.idle()
    assert world.status()["phase"] == "Failed"
    assert "disappeared" in world.status()["error"]


async def test_an_operator_restart_picks_up_the_running_job(world: World) -> None:
    world.cluster()
    world.backup()
    await world.idle()
    world.engine.forget((NS, "b1"))  # a new operator process knows nothing
    world.finish_job("b1-backup", json.dumps(OK))
    await world.idle()
    assert world.status()["phase"] == "Completed"
    assert world.kube.count("CREATE", "jobs") == 1


async def test_verify_runs_a_second_job(world: World) -> None:
    world.cluster()
    world.backup(verify=True)
    await world.idle()
    world.finish_job("b1-backup", json.dumps(OK))
    await world.idle()
    assert world.status()["phase"] == "Completed"
    assert world.kube.obj(JOB, NS, "b1-verify") is not None
    assert "verified" not in world.status()
    world.finish_job(
        "b1-verify",
        json.dumps({"ok": True, "command": "verify", "verified": True, "detail": "rows match"}),
    )
    await world.idle()
    status = world.status()
    assert status["verified"] is True
    assert status["verifyDetail"] == "rows match"
    cond = next(x for x in status["conditions"] if x["type"] == "Verified")
    assert (cond["status"], cond["reason"]) == ("True", "VerifySucceeded")


async def test_verification_does_not_wait_for_the_cluster_to_be_ready(world: World) -> None:
    world.cluster()
    world.backup(verify=True)
    await world.idle()
    world.cluster(ready=False)  # a rollout started after the backup
    world.finish_job("b1-backup", json.dumps(OK))
    await world.idle()
    assert world.kube.obj(JOB, NS, "b1-verify") is not None
    assert "verified" not in world.status()


async def test_a_tampered_backup_fails_verification(world: World) -> None:
    world.cluster()
    world.backup(verify=True)
    await world.idle()
    world.finish_job("b1-backup", json.dumps(OK))
    await world.idle()
    world.finish_job(
        "b1-verify",
        json.dumps({"ok": False, "command": "verify", "error": "checksum mismatch"}),
        ok=False,
    )
    await world.idle()
    status = world.status()
    assert status["phase"] == "Completed"
    assert status["verified"] is False
    assert "checksum mismatch" in status["verifyDetail"]


async def test_a_verify_request_verifies_again(world: World) -> None:
    world.cluster()
    world.backup(verify=True)
    await world.idle()
    world.finish_job("b1-backup", json.dumps(OK))
    await world.idle()
    world.finish_job("b1-verify", json.dumps({"ok": True, "verified": True, "detail": "ok"}))
    await world.idle()
    assert world.status()["verified"] is True
    # someone flips a byte in S3, then asks for a new verification
    body = world.kube.obj(BACKUP, NS, "b1")
    assert body is not None
    body["metadata"]["annotations"] = {c.ANNOTATION_VERIFY_REQUEST: "after-tamper"}
    world.kube.put(BACKUP, body)
    world.trigger()
    await asyncio.sleep(1.2)  # the old verify Job is deleted; the run after creates a new one
    await world.idle()
    status = world.status()
    assert status["verifyRequest"] == "after-tamper"
    assert "verified" not in status
    assert world.kube.count("CREATE", "jobs") == 3
    world.kube.remove(POD, NS, "b1-verify-abcde")
    world.finish_job(
        "b1-verify", json.dumps({"ok": False, "error": "sha256 mismatch in part 3"}), ok=False
    )
    await world.idle()
    status = world.status()
    assert status["verified"] is False
    assert "sha256 mismatch" in status["verifyDetail"]
    world.trigger()
    await world.idle()
    assert world.kube.count("CREATE", "jobs") == 3  # one request, one verification


async def test_deleting_a_completed_backup_deletes_its_objects_first(world: World) -> None:
    world.cluster()
    world.backup()
    await world.idle()
    world.finish_job("b1-backup", json.dumps(OK))
    await world.idle()
    await world.kube.delete(BACKUP, NS, "b1")
    world.trigger()
    await world.idle()
    assert world.kube.obj(BACKUP, NS, "b1") is not None  # held by the finalizer
    delete = world.kube.obj(JOB, NS, "b1-delete")
    assert delete is not None
    args = delete["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:4] == ["backup", "delete", "--name", "b1"]
    world.finish_job("b1-delete", json.dumps({"ok": True, "command": "delete", "name": "b1"}))
    await world.idle()
    assert world.kube.obj(BACKUP, NS, "b1") is None


async def test_a_failed_delete_job_keeps_the_finalizer_and_says_so(world: World) -> None:
    world.cluster()
    world.backup()
    await world.idle()
    world.finish_job("b1-backup", json.dumps(OK))
    await world.idle()
    await world.kube.delete(BACKUP, NS, "b1")
    world.trigger()
    await world.idle()
    world.finish_job("b1-delete", json.dumps({"ok": False, "error": "AccessDenied"}), ok=False)
    await world.idle()
    body = world.kube.obj(BACKUP, NS, "b1")
    assert body is not None
    cond = next(x for x in body["status"]["conditions"] if x["type"] == "DeleteFailed")
    assert "AccessDenied" in cond["message"]
    assert c.FINALIZER_BACKUP_OBJECTS in cond["message"]
    assert world.kube.count("CREATE", "jobs") == 2  # no retry loop beyond the Job's own


async def test_a_failed_backup_without_objects_goes_without_a_job(world: World) -> None:
    world.backup("b2", "nope")
    await world.idle()
    assert world.status("b2")["phase"] == "Failed"
    await world.kube.delete(BACKUP, NS, "b2")
    world.trigger("b2")
    await world.idle()
    assert world.kube.obj(BACKUP, NS, "b2") is None
    assert world.kube.count("CREATE", "jobs") == 0


async def test_a_backup_whose_cluster_is_gone_keeps_its_objects_and_goes(world: World) -> None:
    world.cluster()
    world.backup()
    await world.idle()
    world.finish_job("b1-backup", json.dumps(OK))
    await world.idle()
    world.kube.remove(CLUSTER, NS, "c1")
    await world.kube.delete(BACKUP, NS, "b1")
    world.trigger()
    await world.idle()
    assert world.kube.obj(BACKUP, NS, "b1") is None
    assert world.kube.obj(JOB, NS, "b1-delete") is None
    assert "ObjectsKept" in world.kube.event_reasons("b1")


async def test_a_terminating_namespace_does_not_hold_the_backup(world: World) -> None:
    world.cluster()
    world.backup()
    await world.idle()
    world.finish_job("b1-backup", json.dumps(OK))
    await world.idle()
    world.kube.fail[("CREATE", "jobs", "*")] = lambda: api_error(403, "namespace terminating")
    await world.kube.delete(BACKUP, NS, "b1")
    world.trigger()
    await world.idle()
    assert world.kube.obj(BACKUP, NS, "b1") is None
