"""The Kubernetes API as the controllers need it, over kubernetes_asyncio's ApiClient.

Design:
- One generic REST path per verb (``get``, ``apply``, ``delete``, ``patch_status``, ``post_event``)
  for any kind described by a ``ChildKind``; bodies are plain dicts, as the builders make them.
- ``apply`` is server-side apply: ``PATCH`` with ``application/apply-patch+yaml``, the field
  manager ``dchat-operator`` and ``force=true`` (the operator owns these fields; a hand edit is
  overwritten on purpose).
- Every request is counted (``dchat_operator_api_requests_total``), writes separately
  (``dchat_operator_api_writes_total``), so the zero-write resync is observable.
- Configuration: in-cluster service account when present, else $KUBECONFIG / ~/.kube/config.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from dchat_operator.api import constants as c
from dchat_operator.builders.children import ChildKind
from dchat_operator.clients.metrics import API_REQUESTS, API_WRITES

Obj = dict[str, Any]
_OBJECT = {200: "object", 201: "object", 202: "object"}
_WRITES = {"POST", "PUT", "PATCH", "DELETE"}
CLUSTER_KIND = ChildKind(c.API_VERSION, c.KIND, c.PLURAL)
SECRET_KIND = ChildKind("v1", "Secret", "secrets")
EVENT_KIND = ChildKind("v1", "Event", "events")


def path(kind: ChildKind, namespace: str | None, name: str | None = None, sub: str = "") -> str:
    base = "/api/v1" if kind.api_version == "v1" else f"/apis/{kind.api_version}"
    out = f"{base}/namespaces/{namespace}/{kind.plural}" if namespace else f"{base}/{kind.plural}"
    if name:
        out += f"/{name}"
    if sub:
        out += f"/{sub}"
    return out


class Kube:
    """A connection to the apiserver."""

    def __init__(self, api: client.ApiClient) -> None:
        self._api = api

    @classmethod
    async def connect(cls) -> Kube:
        cfg = client.Configuration()
        if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        else:
            await config.load_kube_config(client_configuration=cfg)
        return cls(client.ApiClient(configuration=cfg))

    async def close(self) -> None:
        await self._api.close()

    async def request(
        self,
        method: str,
        url: str,
        *,
        resource: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> Obj:
        code = "0"
        try:
            result = await self._api.call_api(
                url,
                method,
                query_params=query or [],
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
                response_types_map=_OBJECT,
                _return_http_data_only=True,
            )
            code = "2xx"
        except ApiException as exc:
            code = str(exc.status)
            raise
        finally:
            API_REQUESTS.labels(method, resource, code).inc()
            if method in _WRITES:
                API_WRITES.labels(method, resource).inc()
        return result if isinstance(result, dict) else {}

    async def get(self, kind: ChildKind, namespace: str, name: str) -> Obj | None:
        """The live object, or None when it does not exist."""
        try:
            return await self.request("GET", path(kind, namespace, name), resource=kind.plural)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def apply(self, obj: Obj, kind: ChildKind) -> Obj:
        """Server-side apply ``obj`` (force, field manager dchat-operator); returns the result."""
        meta = obj["metadata"]
        return await self.request(
            "PATCH",
            path(kind, meta["namespace"], meta["name"]),
            resource=kind.plural,
            body=obj,
            query=[("fieldManager", c.FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )

    async def delete(self, kind: ChildKind, namespace: str, name: str) -> bool:
        """Delete (background propagation); False when it was already gone."""
        try:
            await self.request(
                "DELETE",
                path(kind, namespace, name),
                resource=kind.plural,
                body={"propagationPolicy": "Background"},
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def patch_status(self, namespace: str, name: str, status: Obj) -> Obj:
        """Write a DchatCluster's status (merge patch on the status subresource)."""
        return await self.request(
            "PATCH",
            path(CLUSTER_KIND, namespace, name, "status"),
            resource=f"{c.PLURAL}/status",
            body={"status": status},
            content_type="application/merge-patch+json",
        )

    async def get_cluster(self, namespace: str, name: str) -> Obj | None:
        return await self.get(CLUSTER_KIND, namespace, name)

    async def get_secret(self, namespace: str, name: str) -> Obj | None:
        return await self.get(SECRET_KIND, namespace, name)

    async def api_resources(self, group_version: str) -> set[str]:
        """Plural names served under ``group_version``; empty when the group does not exist."""
        try:
            found = await self.request("GET", f"/apis/{group_version}", resource="discovery")
        except ApiException as exc:
            if exc.status in (404, 503):
                return set()
            raise
        return {r.get("name", "") for r in found.get("resources") or []}

    async def post_event(
        self, involved: Obj, *, type_: str, reason: str, message: str, now: dt.datetime
    ) -> None:
        """Record a core/v1 Event on ``involved`` (a DchatCluster body)."""
        meta = involved.get("metadata") or {}
        namespace = meta.get("namespace", "default")
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta.get('name', 'dchat')}.{uuid.uuid4().hex[:16]}",
                "namespace": namespace,
            },
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", c.API_VERSION),
                "kind": involved.get("kind", c.KIND),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": c.FIELD_MANAGER},
            "reportingComponent": c.FIELD_MANAGER,
            "reportingInstance": os.environ.get("HOSTNAME", c.FIELD_MANAGER),
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        await self.request("POST", path(EVENT_KIND, namespace), resource="events", body=event)
