"""kopf watch handlers for DchatBackups, DchatRestores and the operator's Jobs: route only.

Design: as ``handlers.cluster``: each event is handed to the controller, which triggers a key
on its engine (a DchatBackup's events also reach its cluster's backup schedule, which keeps
the cluster's backup status). Jobs are watched only when labelled
``app.kubernetes.io/managed-by=dchat-operator``; their ``dchat.dev/backup`` label names the
DchatBackup they work for.
"""

from __future__ import annotations

from typing import Any

import kopf

from dchat_operator.api import constants as c
from dchat_operator.handlers.runtime import memo_of


@kopf.on.event(c.GROUP, c.VERSION, c.BACKUP_PLURAL)
async def backup_event(type: str, body: kopf.Body, memo: Any, **_: Any) -> None:
    runtime = memo_of(memo).runtime
    if runtime.backup_controller is not None and runtime.backups is not None:
        runtime.backup_controller.backup_event(runtime.backups, type or "ADDED", body)
    if runtime.schedule_controller is not None and runtime.schedules is not None:
        runtime.schedule_controller.backup_event(runtime.schedules, body)


@kopf.on.event(c.GROUP, c.VERSION, c.RESTORE_PLURAL)
async def restore_event(type: str, body: kopf.Body, memo: Any, **_: Any) -> None:
    runtime = memo_of(memo).runtime
    if runtime.restore_controller is not None and runtime.restores is not None:
        runtime.restore_controller.restore_event(runtime.restores, type or "ADDED", body)


@kopf.on.event("batch", "v1", "jobs", labels={c.LABEL_MANAGED_BY: c.MANAGED_BY})
async def job_event(body: kopf.Body, memo: Any, **_: Any) -> None:
    """A Job names its owner by label: dchat.dev/backup, dchat.dev/restore or
    dchat.dev/bootstrap."""
    runtime = memo_of(memo).runtime
    if runtime.backup_controller is not None and runtime.backups is not None:
        runtime.backup_controller.job_event(runtime.backups, body)
    if runtime.restore_controller is not None and runtime.restores is not None:
        runtime.restore_controller.job_event(runtime.restores, body)
    if runtime.bootstrap_controller is not None and runtime.bootstraps is not None:
        runtime.bootstrap_controller.job_event(runtime.bootstraps, body)
