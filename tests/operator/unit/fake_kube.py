"""An in-memory ``KubeAPI`` for the controllers' unit tests (CloudNativePG's fake client idea).

It keeps objects in a dict with the apiserver's bookkeeping that the controllers rely on:
uids, resourceVersions (a status patch with a stale one gets 409, a missing object 404),
generations that move when the spec moves, server-side apply creating or replacing the fields
it sends. Every call is recorded (``calls``) so tests count reads and writes; ``fail`` makes a
call raise, ``stall`` makes it wait until released.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from dchat_operator.api.kinds import CLUSTER, Kind

Obj = dict[str, Any]
ObjKey = tuple[str, str, str]  # plural, namespace, name
_SPEC_KEYS = ("spec", "data", "rules", "subjects")


def api_error(status: int, message: str = "") -> ApiException:
    exc = ApiException(status=status, reason={409: "Conflict", 404: "Not Found"}.get(status, ""))
    exc.body = (f'{{"message": "{message}"}}').encode() if message else b""
    return exc


@dataclass
class Call:
    verb: str
    plural: str
    name: str


@dataclass
class FakeKube:
    objects: dict[ObjKey, Obj] = field(default_factory=dict)
    events: list[Obj] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    fail: dict[tuple[str, str, str], Callable[[], BaseException]] = field(default_factory=dict)
    """(verb, plural, name) -> exception factory; name "*" matches any."""
    stall: dict[tuple[str, str, str], asyncio.Event] = field(default_factory=dict)
    served: set[str] = field(default_factory=set)
    force_deleted: list[str] = field(default_factory=list)
    """Names deleted with a grace period given (a force delete)."""
    now: str = "2026-01-01T00:00:00Z"
    """creationTimestamp of objects made by ``create``."""
    _rv: itertools.count[int] = field(default_factory=lambda: itertools.count(100))
    _uid: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # --- test helpers -----------------------------------------------------------------------

    def put(self, kind: Kind, obj: Obj) -> Obj:
        """Create or replace an object as a user would (new uid when new)."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        key = (kind.plural, meta["namespace"], meta["name"])
        old = self.objects.get(key)
        meta.setdefault("uid", old["metadata"]["uid"] if old else f"uid-{next(self._uid)}")
        generation = (old or {}).get("metadata", {}).get("generation", 0)
        if old is None or any(old.get(k) != obj.get(k) for k in _SPEC_KEYS):
            generation += 1
        meta["generation"] = generation
        meta["resourceVersion"] = str(next(self._rv))
        obj.setdefault("apiVersion", kind.api_version)
        obj.setdefault("kind", kind.kind)
        self.objects[key] = obj
        return copy.deepcopy(obj)

    def obj(self, kind: Kind, namespace: str, name: str) -> Obj | None:
        found = self.objects.get((kind.plural, namespace, name))
        return copy.deepcopy(found) if found else None

    def remove(self, kind: Kind, namespace: str, name: str) -> None:
        self.objects.pop((kind.plural, namespace, name), None)

    def set_status(self, kind: Kind, namespace: str, name: str, status: Obj) -> None:
        found = self.objects[(kind.plural, namespace, name)]
        found["status"] = copy.deepcopy(status)
        found["metadata"]["resourceVersion"] = str(next(self._rv))

    def writes(self) -> list[Call]:
        return [
            c
            for c in self.calls
            if c.verb in ("APPLY", "PATCH_STATUS", "DELETE", "CREATE", "PATCH")
        ]

    def count(self, verb: str, plural: str | None = None) -> int:
        return sum(1 for c in self.calls if c.verb == verb and plural in (None, c.plural))

    async def _enter(self, verb: str, plural: str, name: str) -> None:
        self.calls.append(Call(verb, plural, name))
        for key in ((verb, plural, name), (verb, plural, "*"), (verb, "*", "*")):
            gate = self.stall.get(key)
            if gate is not None:
                await gate.wait()
            factory = self.fail.get(key)
            if factory is not None:
                raise factory()

    # --- KubeAPI ----------------------------------------------------------------------------

    async def get(
        self, kind: Kind, namespace: str, name: str, *, cached: bool = False
    ) -> Obj | None:
        await self._enter("GET", kind.plural, name)
        return self.obj(kind, namespace, name)

    async def apply(self, obj: Obj, kind: Kind, *, force: bool) -> Obj:
        meta = obj["metadata"]
        await self._enter("APPLY", kind.plural, meta["name"])
        key = (kind.plural, meta["namespace"], meta["name"])
        old = self.objects.get(key)
        new = copy.deepcopy(obj)
        if old is not None:
            if not force:
                raise api_error(409, "Apply failed with conflicts")
            merged = copy.deepcopy(old)
            merged.update({k: v for k, v in new.items() if k != "metadata"})
            merged_meta = merged["metadata"]
            for part in ("labels", "annotations"):
                if part in meta:
                    merged_meta[part] = {**(merged_meta.get(part) or {}), **meta[part]}
            if "ownerReferences" in meta:
                merged_meta["ownerReferences"] = meta["ownerReferences"]
            new = merged
        return self.put(kind, new)

    async def delete(
        self, kind: Kind, namespace: str, name: str, *, grace_period_seconds: int | None = None
    ) -> bool:
        """Removes the object, or (when it has finalizers) marks it deleted, as the apiserver."""
        await self._enter("DELETE", kind.plural, name)
        found = self.objects.get((kind.plural, namespace, name))
        if found is None:
            return False
        meta = found["metadata"]
        if grace_period_seconds is not None:
            self.force_deleted.append(name)
        if meta.get("finalizers"):
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
                meta["resourceVersion"] = str(next(self._rv))
            return True
        del self.objects[(kind.plural, namespace, name)]
        return True

    async def create(self, obj: Obj, kind: Kind) -> Obj:
        meta = obj["metadata"]
        await self._enter("CREATE", kind.plural, meta["name"])
        if (kind.plural, meta["namespace"], meta["name"]) in self.objects:
            raise api_error(409, "already exists")
        obj = copy.deepcopy(obj)
        obj["metadata"].setdefault("creationTimestamp", self.now)
        return self.put(kind, obj)

    async def list_objects(self, kind: Kind, namespace: str, label_selector: str) -> list[Obj]:
        await self._enter("LIST", kind.plural, label_selector)
        wanted = dict(part.split("=", 1) for part in label_selector.split(",") if part)
        out = []
        for (plural, ns, _), found in sorted(self.objects.items()):
            labels = found["metadata"].get("labels") or {}
            if (plural, ns) == (kind.plural, namespace) and all(
                labels.get(k) == v for k, v in wanted.items()
            ):
                out.append(copy.deepcopy(found))
        return out

    async def patch(
        self, kind: Kind, namespace: str, name: str, body: Obj, resource_version: str
    ) -> Obj:
        """Merge patch of metadata (labels and annotations merged, None removes one;
        finalizers replaced); an object marked
        deleted whose last finalizer goes is removed."""
        await self._enter("PATCH", kind.plural, name)
        key = (kind.plural, namespace, name)
        found = self.objects.get(key)
        if found is None:
            raise api_error(404)
        meta = found["metadata"]
        if resource_version and meta["resourceVersion"] != resource_version:
            raise api_error(409, "the object has been modified")
        new_meta = body.get("metadata") or {}
        if "labels" in new_meta:
            meta["labels"] = {**(meta.get("labels") or {}), **new_meta["labels"]}
        if "finalizers" in new_meta:
            meta["finalizers"] = list(new_meta["finalizers"] or [])
        if "annotations" in new_meta:
            merged = {**(meta.get("annotations") or {}), **new_meta["annotations"]}
            meta["annotations"] = {k: v for k, v in merged.items() if v is not None}
        meta["resourceVersion"] = str(next(self._rv))
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            del self.objects[key]
        return copy.deepcopy(found)

    async def patch_status(
        self, kind: Kind, namespace: str, name: str, status: Obj, resource_version: str
    ) -> Obj:
        await self._enter("PATCH_STATUS", kind.plural, name)
        found = self.objects.get((kind.plural, namespace, name))
        if found is None:
            raise api_error(404)
        if resource_version and found["metadata"]["resourceVersion"] != resource_version:
            raise api_error(409, "the object has been modified")
        current = found.setdefault("status", {})
        for k, v in status.items():
            if v is None:
                current.pop(k, None)
            else:
                current[k] = copy.deepcopy(v)
        found["metadata"]["resourceVersion"] = str(next(self._rv))
        return copy.deepcopy(found)

    async def api_resources(self, group_version: str) -> set[str]:
        await self._enter("DISCOVERY", group_version, "")
        return set(self.served)

    async def post_event(
        self, involved: Obj, *, type_: str, reason: str, message: str, now: dt.datetime
    ) -> None:
        await self._enter("EVENT", "events", reason)
        self.events.append(
            {
                "type": type_,
                "reason": reason,
                "message": message,
                "name": involved["metadata"]["name"],
            }
        )

    def event_reasons(self, name: str | None = None) -> list[str]:
        return [e["reason"] for e in self.events if name in (None, e["name"])]


def cluster_cr(name: str, namespace: str = "ns1", **spec: Any) -> Obj:
    return {
        "apiVersion": CLUSTER.api_version,
        "kind": CLUSTER.kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
