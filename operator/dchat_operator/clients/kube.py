"""The Kubernetes API as the controllers need it, over kubernetes_asyncio's ApiClient.

Design:
- One generic REST path per verb (``get``, ``apply``, ``delete``, ``patch_status``, ``create``,
  ``replace``, ``post_event``) for any kind described by an ``api.kinds.Kind``; bodies are plain
  dicts, as the builders make them. Names are URL-encoded into paths, and every request has a
  deadline (``request_timeout``): a hung apiserver turns into an error the engine backs off
  from, never into a reconcile that waits forever.
- ``apply`` is server-side apply (``application/apply-patch+yaml``, field manager
  ``dchat-operator``). ``force`` is the caller's decision: the controllers force only on
  objects they already control (a hand edit of a child is overwritten on purpose) and create
  without it, so the apiserver refuses to hand over fields another manager owns.
- ``patch_status`` is a merge patch on the status subresource that carries the
  ``resourceVersion`` the caller built the status from: a concurrent writer makes it fail with
  409 (``Conflict``), and the caller re-reads and rebuilds (CloudNativePG's
  ``PatchWithOptimisticLock``). A controller sends only the status fields it owns.
- Every request is counted (``dchat_operator_api_requests_total``), the reconciler's writes
  separately (``dchat_operator_api_writes_total``), so the zero-write resync is observable;
  leader-election traffic is counted apart (``counted=False`` keeps it out of the writes).
- ``KubeAPI`` is the protocol the controllers depend on; the unit tests run them against an
  in-memory implementation of it.
- Configuration: in-cluster service account when present, else $KUBECONFIG / ~/.kube/config;
  ``connection_info`` gives kopf the same credentials (``on.login``).
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
import uuid
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from dchat_operator.api import constants as c
from dchat_operator.api.kinds import EVENT, Kind
from dchat_operator.clients.metrics import API_REQUESTS, API_WRITES

Obj = dict[str, Any]
_OBJECT = {200: "object", 201: "object", 202: "object"}
_WRITES = {"POST", "PUT", "PATCH", "DELETE"}
DEFAULT_REQUEST_TIMEOUT = 15.0
DEFAULT_CONNECTIONS = 24


def _segment(value: str) -> str:
    return quote(value, safe="")


def path(kind: Kind, namespace: str | None, name: str | None = None, sub: str = "") -> str:
    """The REST path of a collection or an object; names are URL-encoded."""
    base = "/api/v1" if kind.api_version == "v1" else f"/apis/{kind.api_version}"
    if namespace:
        out = f"{base}/namespaces/{_segment(namespace)}/{kind.plural}"
    else:
        out = f"{base}/{kind.plural}"
    if name:
        out += f"/{_segment(name)}"
    if sub:
        out += f"/{sub}"
    return out


def is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 409


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 404


class KubeAPI(Protocol):
    """What the controllers call; ``Kube`` talks to an apiserver, the tests' fake to a dict."""

    async def get(
        self, kind: Kind, namespace: str, name: str, *, cached: bool = False
    ) -> Obj | None: ...

    async def apply(self, obj: Obj, kind: Kind, *, force: bool) -> Obj: ...

    async def delete(
        self, kind: Kind, namespace: str, name: str, *, grace_period_seconds: int | None = None
    ) -> bool: ...

    async def create(self, obj: Obj, kind: Kind) -> Obj: ...

    async def list_objects(self, kind: Kind, namespace: str, label_selector: str) -> list[Obj]: ...

    async def patch(
        self, kind: Kind, namespace: str, name: str, body: Obj, resource_version: str
    ) -> Obj: ...

    async def patch_status(
        self, kind: Kind, namespace: str, name: str, status: Obj, resource_version: str
    ) -> Obj: ...

    async def api_resources(self, group_version: str) -> set[str]: ...

    async def post_event(
        self, involved: Obj, *, type_: str, reason: str, message: str, now: dt.datetime
    ) -> None: ...


class Kube:
    """A connection to the apiserver."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        self._api = api
        self.request_timeout = request_timeout

    @classmethod
    async def connect(
        cls,
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        connections: int = DEFAULT_CONNECTIONS,
    ) -> Kube:
        """``connections``: keep-alive connections to the apiserver at most (requests beyond
        wait for one). Each TLS connection holds ~128 KiB of buffers: kubernetes_asyncio's
        default of 100 cost 23 MiB at 500 clusters."""
        cfg = await load_configuration()
        api = client.ApiClient(configuration=cfg)
        await _direct_session(api, cfg, connections)
        return cls(api, request_timeout=request_timeout)

    @property
    def configuration(self) -> client.Configuration:
        return self._api.configuration

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
        counted: bool = True,
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
                _request_timeout=self.request_timeout,
            )
            code = "2xx"
        except ApiException as exc:
            code = str(exc.status)
            raise
        except TimeoutError:
            code = "timeout"
            raise
        finally:
            API_REQUESTS.labels(method, resource, code).inc()
            if counted and method in _WRITES:
                API_WRITES.labels(method, resource).inc()
        return result if isinstance(result, dict) else {}

    async def get(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        *,
        counted: bool = True,
        cached: bool = False,
    ) -> Obj | None:
        """The live object, or None when it does not exist.

        ``cached``: served from the apiserver's watch cache (``resourceVersion=0``), which may
        lag a moment behind etcd but costs the apiserver a fraction of a quorum read; for
        children, whose changes also arrive as events (a stale read is corrected by the next
        reconcile), not for objects whose resourceVersion guards a write."""
        try:
            return await self.request(
                "GET",
                path(kind, namespace, name),
                resource=kind.plural,
                counted=counted,
                query=[("resourceVersion", "0")] if cached else None,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def apply(self, obj: Obj, kind: Kind, *, force: bool) -> Obj:
        """Server-side apply ``obj`` (field manager dchat-operator); returns the result."""
        meta = obj["metadata"]
        query = [("fieldManager", c.FIELD_MANAGER)]
        if force:
            query.append(("force", "true"))
        return await self.request(
            "PATCH",
            path(kind, meta["namespace"], meta["name"]),
            resource=kind.plural,
            body=obj,
            query=query,
            content_type="application/apply-patch+yaml",
        )

    async def create(self, obj: Obj, kind: Kind, *, counted: bool = True) -> Obj:
        meta = obj["metadata"]
        return await self.request(
            "POST",
            path(kind, meta["namespace"]),
            resource=kind.plural,
            body=obj,
            counted=counted,
        )

    async def list_objects(self, kind: Kind, namespace: str, label_selector: str) -> list[Obj]:
        """The objects of ``kind`` in ``namespace`` matching ``label_selector``."""
        found = await self.request(
            "GET",
            path(kind, namespace),
            resource=kind.plural,
            query=[("labelSelector", label_selector)],
        )
        return [item for item in found.get("items") or [] if isinstance(item, dict)]

    async def patch(
        self, kind: Kind, namespace: str, name: str, body: Obj, resource_version: str
    ) -> Obj:
        """Merge-patch the object (metadata such as finalizers and labels), only if it is still
        at ``resource_version`` (409 otherwise)."""
        meta = {**(body.get("metadata") or {}), "resourceVersion": resource_version}
        return await self.request(
            "PATCH",
            path(kind, namespace, name),
            resource=kind.plural,
            body={**body, "metadata": meta},
            content_type="application/merge-patch+json",
        )

    async def replace(self, obj: Obj, kind: Kind, *, counted: bool = True) -> Obj:
        """PUT: fails with 409 unless ``obj`` carries the live resourceVersion."""
        meta = obj["metadata"]
        return await self.request(
            "PUT",
            path(kind, meta["namespace"], meta["name"]),
            resource=kind.plural,
            body=obj,
            counted=counted,
        )

    async def delete(
        self, kind: Kind, namespace: str, name: str, *, grace_period_seconds: int | None = None
    ) -> bool:
        """Delete (background propagation; ``grace_period_seconds=0`` without waiting for the
        kubelet: a force delete); False when it was already gone."""
        body: Obj = {"propagationPolicy": "Background"}
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        try:
            await self.request(
                "DELETE", path(kind, namespace, name), resource=kind.plural, body=body
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def patch_status(
        self, kind: Kind, namespace: str, name: str, status: Obj, resource_version: str
    ) -> Obj:
        """Merge-patch the status fields in ``status``, only if the object is still at
        ``resource_version`` (409 otherwise; 404 when the object is gone)."""
        return await self.request(
            "PATCH",
            path(kind, namespace, name, "status"),
            resource=f"{kind.plural}/status",
            body={"metadata": {"resourceVersion": resource_version}, "status": status},
            content_type="application/merge-patch+json",
        )

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
        """Record a core/v1 Event on ``involved`` (one of the operator's custom resources)."""
        await self.request(
            "POST",
            path(EVENT, (involved.get("metadata") or {}).get("namespace", "default")),
            resource="events",
            body=event_body(involved, type_=type_, reason=reason, message=message, now=now),
        )


def event_body(involved: Obj, *, type_: str, reason: str, message: str, now: dt.datetime) -> Obj:
    meta = involved.get("metadata") or {}
    namespace = meta.get("namespace", "default")
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
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


def _ssl_context(cfg: client.Configuration) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
    if cfg.cert_file:
        context.load_cert_chain(cfg.cert_file, keyfile=cfg.key_file)
    if not cfg.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def _direct_session(
    api: client.ApiClient, cfg: client.Configuration, connections: int
) -> None:
    """Swap kubernetes_asyncio's HTTP session for one with ``trust_env=False``.

    Its session trusts the environment, so aiohttp looks for proxy variables and parses
    ~/.netrc in a worker thread on every request: measured as ~36 % of the operator's time in
    an idle resync of 500 clusters. The apiserver is reached directly (a kubeconfig's
    ``proxy-url`` still applies: kubernetes_asyncio passes it with each request).
    """
    rest = api.rest_client
    old = rest.pool_manager
    rest.pool_manager = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, ssl=_ssl_context(cfg)),
        trust_env=False,
        read_bufsize=2**21,
    )
    await old.close()


async def load_configuration() -> client.Configuration:
    """In-cluster service account when running in a pod (and no KUBECONFIG), else kubeconfig."""
    cfg = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config(client_configuration=cfg)
    return cfg


def credentials(cfg: client.Configuration) -> dict[str, Any]:
    """The connection facts of ``cfg`` as keyword arguments of kopf's ``ConnectionInfo``."""
    token = None
    auth = (getattr(cfg, "api_key", None) or {}).get("authorization") or (
        getattr(cfg, "api_key", None) or {}
    ).get("BearerToken")
    if auth:
        token = str(auth).removeprefix("Bearer ").strip()
    return {
        "server": str(cfg.host),
        "ca_path": cfg.ssl_ca_cert or None,
        "insecure": not cfg.verify_ssl,
        "scheme": "Bearer" if token else None,
        "token": token,
        "certificate_path": cfg.cert_file or None,
        "private_key_path": cfg.key_file or None,
    }
