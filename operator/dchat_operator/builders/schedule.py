"""The backup schedule, retention and the cluster's backup status, as pure functions.

Design:
- Times are UTC ``datetime``s; the clock is an argument. Cron times come from croniter.
- ``plan``: the schedule's bookkeeping lives in ``status.backupSchedule`` (the cron expression
  it was computed from, since when it is followed, the last and next cron time, how many
  scheduled backups were made). When ``now`` reached ``nextScheduleTime`` ONE backup is due,
  named after the newest cron time not after ``now`` (operator downtime that missed several
  times yields one backup, not one per time), and the next time is computed from ``now``.
  A new or changed schedule starts from ``now``: no backup for times before it was set.
  ``suspend`` clears ``nextScheduleTime`` (no catch-up on resume).
- ``expired``: retention over the cluster's finished scheduled backups (on-demand ones are
  never candidates): the newest ``keepLast`` stay, any older than ``maxAgeDays`` go, and the
  newest Completed backup of the cluster is never expired.
- ``backup_status``: the fields and conditions the schedule controller owns in the cluster's
  status (``BACKUP_OWNED``, ``BACKUP_CONDITIONS``); ``builders.status.status_patch`` sends
  them without touching the cluster controller's fields.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from croniter import croniter

from dchat_operator.api import constants as c
from dchat_operator.api.models import BackupSpec, RetentionSpec
from dchat_operator.builders.common import Obj

BACKUP_OWNED = frozenset(
    {
        "lastBackup",
        "lastSuccessfulBackup",
        "firstRecoverabilityPoint",
        "backupSchedule",
        "conditions",
    }
)
BACKUP_CONDITIONS = frozenset({"BackupHealthy", "BackupVerified", "ContinuousArchiving"})


def rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> dt.datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def cron_next(schedule: str, after: dt.datetime) -> dt.datetime:
    """The first cron time strictly after ``after`` (UTC)."""
    found: dt.datetime = croniter(schedule, after.astimezone(dt.UTC)).get_next(dt.datetime)
    return found.astimezone(dt.UTC)


def cron_latest(schedule: str, now: dt.datetime) -> dt.datetime:
    """The newest cron time not after ``now``."""
    start = now.astimezone(dt.UTC) + dt.timedelta(seconds=1)
    found: dt.datetime = croniter(schedule, start).get_prev(dt.datetime)
    return found.astimezone(dt.UTC)


def period(schedule: str, now: dt.datetime) -> dt.timedelta:
    """The interval between the next two cron times."""
    first = cron_next(schedule, now)
    return cron_next(schedule, first) - first


@dataclass(frozen=True)
class Plan:
    """What the schedule asks for now."""

    schedule_status: Obj | None
    """The new ``status.backupSchedule`` (None: backups are not scheduled)."""
    due: dt.datetime | None = None
    """Cron time of the backup to create now, if one is due."""
    verify: bool = False
    """Whether that backup is verified (every verifyEvery-th)."""
    requeue_after: float | None = None


def plan(spec: BackupSpec, previous: Obj | None, now: dt.datetime) -> Plan:
    """The schedule's decision at ``now`` from its previous bookkeeping."""
    if not spec.enabled or spec.s3 is None:
        return Plan(None)
    prev = dict(previous or {})
    scheduled = int(prev.get("scheduled") or 0)
    out: Obj = {
        "schedule": spec.schedule,
        "since": prev.get("since") or rfc3339(now),
        "scheduled": scheduled,
    }
    if prev.get("lastScheduleTime"):
        out["lastScheduleTime"] = prev["lastScheduleTime"]
    if spec.suspend:
        return Plan(out)
    following = prev.get("schedule") == spec.schedule
    if not following:
        out["since"] = rfc3339(now)
    next_time = parse_time(prev.get("nextScheduleTime")) if following else None
    if next_time is None:
        next_time = cron_next(spec.schedule, now)
        out["nextScheduleTime"] = rfc3339(next_time)
        return Plan(out, requeue_after=_seconds(next_time, now))
    if now < next_time:
        out["nextScheduleTime"] = rfc3339(next_time)
        return Plan(out, requeue_after=_seconds(next_time, now))
    due = max(next_time, cron_latest(spec.schedule, now))
    scheduled += 1
    following_time = cron_next(spec.schedule, now)
    out.update(
        scheduled=scheduled,
        lastScheduleTime=rfc3339(due),
        nextScheduleTime=rfc3339(following_time),
    )
    verify = spec.verify_every > 0 and scheduled % spec.verify_every == 0
    return Plan(out, due=due, verify=verify, requeue_after=_seconds(following_time, now))


def _seconds(later: dt.datetime, now: dt.datetime) -> float:
    return max(0.0, (later - now).total_seconds())


# --- the cluster's backups --------------------------------------------------------------------


@dataclass(frozen=True)
class BackupView:
    """What the schedule controller reads of one DchatBackup."""

    name: str
    phase: str
    created: dt.datetime | None
    started: dt.datetime | None
    completed: dt.datetime | None
    location: str
    scheduled: bool
    deleting: bool
    verified: bool | None
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def time(self) -> dt.datetime | None:
        return self.completed or self.started or self.created

    @classmethod
    def of(cls, body: Obj) -> BackupView:
        meta = body.get("metadata") or {}
        status = body.get("status") or {}
        verified = status.get("verified")
        return cls(
            name=str(meta.get("name") or ""),
            phase=str(status.get("phase") or "Pending"),
            created=parse_time(meta.get("creationTimestamp")),
            started=parse_time(status.get("startedAt")),
            completed=parse_time(status.get("completedAt")),
            location=str(status.get("location") or ""),
            scheduled=(meta.get("labels") or {}).get(c.LABEL_BACKUP_ORIGIN) == "schedule",
            deleting=bool(meta.get("deletionTimestamp")),
            verified=verified if isinstance(verified, bool) else None,
            error=str(status.get("error") or ""),
        )


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _created_key(b: BackupView) -> tuple[dt.datetime, str]:
    return (b.created or b.started or _EPOCH, b.name)


def _completed_key(b: BackupView) -> tuple[dt.datetime, str]:
    return (b.completed or _EPOCH, b.name)


def newest_completed(backups: list[BackupView]) -> BackupView | None:
    done = [b for b in backups if b.phase == "Completed" and not b.deleting]
    return max(done, key=_completed_key, default=None)


def expired(backups: list[BackupView], retention: RetentionSpec, now: dt.datetime) -> list[str]:
    """Names of the scheduled backups retention deletes now (oldest first)."""
    keep = newest_completed(backups)
    candidates = sorted(
        (
            b
            for b in backups
            if b.scheduled and not b.deleting and b.phase in ("Completed", "Failed")
        ),
        key=_created_key,
        reverse=True,
    )
    cutoff = now - dt.timedelta(days=retention.max_age_days)
    out = []
    for index, backup in enumerate(candidates):
        if keep is not None and backup.name == keep.name:
            continue
        too_old = (backup.created or backup.time or now) < cutoff
        if index >= retention.keep_last or too_old:
            out.append(backup.name)
    return list(reversed(out))


def _last(backup: BackupView | None) -> Obj | None:
    if backup is None:
        return None
    out: Obj = {"name": backup.name, "phase": backup.phase}
    when = backup.time
    out["time"] = rfc3339(when) if when else ""
    if backup.location:
        out["location"] = backup.location
    return out


def _cond(type_: str, status: str, reason: str, message: str) -> Obj:
    return {"type": type_, "status": status, "reason": reason, "message": message[:1000]}


def health(
    spec: BackupSpec, schedule_status: Obj | None, backups: list[BackupView], now: dt.datetime
) -> Obj | None:
    """The BackupHealthy condition (None when backups are not scheduled)."""
    if schedule_status is None:
        return None
    if spec.suspend:
        return _cond("BackupHealthy", "Unknown", "Suspended", "backup.suspend is set")
    scheduled = [b for b in backups if b.scheduled and not b.deleting]
    finished = [b for b in scheduled if b.phase in ("Completed", "Failed")]
    last = max(finished, key=_created_key, default=None)
    if last is not None and last.phase == "Failed":
        return _cond(
            "BackupHealthy",
            "False",
            "LastBackupFailed",
            f"the last scheduled backup {last.name} failed: {last.error}",
        )
    since = parse_time(schedule_status.get("since")) or now
    step = period(spec.schedule, now)
    due_ref = cron_latest(spec.schedule, now - step)
    done = newest_completed(backups)
    if due_ref >= since and (done is None or done.completed is None or done.completed < due_ref):
        return _cond(
            "BackupHealthy",
            "False",
            "BackupOverdue",
            f"no backup completed since the one due at {rfc3339(due_ref)}, more than one "
            f"period ({int(step.total_seconds())} s) ago",
        )
    if done is None:
        return _cond("BackupHealthy", "Unknown", "NoBackupYet", "no backup has completed yet")
    return _cond(
        "BackupHealthy",
        "True",
        "BackupsCompleting",
        f"last completed backup {done.name} at {rfc3339(done.completed or now)}",
    )


def verification(backups: list[BackupView]) -> Obj | None:
    """BackupVerified from the newest backup that has a verification result."""
    checked = [b for b in backups if b.verified is not None and not b.deleting]
    newest = max(checked, key=_completed_key, default=None)
    if newest is None:
        return None
    if newest.verified:
        return _cond("BackupVerified", "True", "Verified", f"backup {newest.name} verified")
    return _cond(
        "BackupVerified", "False", "VerifyFailed", f"backup {newest.name} failed verification"
    )


def backup_status(
    spec: BackupSpec,
    schedule_status: Obj | None,
    backups: list[BackupView],
    previous: Obj | None,
    now: dt.datetime,
    generation: int,
    extra_conditions: tuple[Obj, ...] = (),
) -> Obj:
    """The cluster status fields the schedule controller owns."""
    live = [b for b in backups if not b.deleting]
    newest = max(live, key=_created_key, default=None)
    done = [b for b in live if b.phase == "Completed"]
    oldest = min(done, key=_completed_key, default=None)
    conditions = []
    prev_conditions = {x.get("type"): x for x in (previous or {}).get("conditions") or []}
    for cond in (health(spec, schedule_status, live, now), verification(live), *extra_conditions):
        if cond is None:
            continue
        old = prev_conditions.get(cond["type"]) or {}
        since = old.get("lastTransitionTime") if old.get("status") == cond["status"] else None
        conditions.append(
            {**cond, "lastTransitionTime": since or rfc3339(now), "observedGeneration": generation}
        )
    return {
        "lastBackup": _last(newest),
        "lastSuccessfulBackup": _last(newest_completed(live)),
        "firstRecoverabilityPoint": rfc3339(oldest.completed)
        if oldest and oldest.completed
        else None,
        "backupSchedule": schedule_status,
        "conditions": conditions,
    }
