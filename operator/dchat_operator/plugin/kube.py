"""The Kubernetes API for the plugin: the user's kubeconfig and context, like kubectl.

Design:
- Configuration as kubectl resolves it: ``--kubeconfig``, else ``$KUBECONFIG`` (files separated
  by ``:``, merged: the first file to define a cluster, context or user, or the current
  context, wins), else ``~/.kube/config``; ``--context`` picks a context; the namespace is
  ``-n``, else the context's, else ``default``. The kubeconfig is only read.
- Credentials kubectl supports today: client certificates (files or ``-data``), bearer tokens
  (``token``, ``tokenFile``), basic auth, and ``exec`` credential plugins (the
  ``client.authentication.k8s.io`` ExecCredential protocol used by EKS, GKE and AKS); the
  removed in-tree ``auth-provider`` plugins are refused with a message saying so.
- HTTP from the standard library (``urllib.request`` with an SSL context from the
  kubeconfig; ``HTTPS_PROXY``/``NO_PROXY`` apply as for kubectl): the plugin needs no
  Kubernetes client library, whose import alone (every API model) took ~2.3 s of the
  plugin's start on the test machine. Every request has a deadline.
- API errors become ``KubeError`` with the apiserver's own message (its Status
  ``message``), which the commands print as they are: they name the field or the CEL rule
  that refused a change.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import yaml

from dchat_operator.api.kinds import Kind

Obj = dict[str, Any]
FIELD_MANAGER = "kubectl-dchat"
"""Field manager of the plugin's writes (patches, creates)."""
REQUEST_TIMEOUT = 20.0
EXEC_TIMEOUT = 60.0
CRD = Kind("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions")


class KubeError(Exception):
    """An API request failed; ``status`` is the HTTP status (0 when none came back)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404


class ConfigError(Exception):
    """No usable kubeconfig, context or credentials."""


def path(kind: Kind, namespace: str | None, name: str | None = None, sub: str = "") -> str:
    """REST path of a collection or object (names URL-encoded)."""
    base = "/api/v1" if kind.api_version == "v1" else f"/apis/{kind.api_version}"
    out = f"{base}/namespaces/{quote(namespace, safe='')}" if namespace else base
    out += f"/{kind.plural}"
    if name:
        out += f"/{quote(name, safe='')}"
    if sub:
        out += f"/{sub}"
    return out


def kubeconfig_files(flag: str | None) -> list[Path]:
    """The kubeconfig files kubectl would read (those that exist); ConfigError for none."""
    raw = flag or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    files = [Path(p).expanduser() for p in raw.split(os.pathsep) if p]
    found = [p for p in files if p.is_file()]
    if not found:
        raise ConfigError(f"no kubeconfig found at {raw} (give --kubeconfig or set KUBECONFIG)")
    return found


@dataclass
class KubeConfig:
    """The merged kubeconfig; each entry remembers the directory of the file it came from
    (relative certificate paths are relative to it)."""

    current: str = ""
    clusters: dict[str, tuple[Obj, Path]] = field(default_factory=dict)
    contexts: dict[str, Obj] = field(default_factory=dict)
    users: dict[str, tuple[Obj, Path]] = field(default_factory=dict)

    @classmethod
    def load(cls, files: list[Path]) -> KubeConfig:
        merged = cls()
        for file in files:
            try:
                doc = yaml.safe_load(file.read_text()) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise ConfigError(f"kubeconfig {file}: {exc}") from None
            if not isinstance(doc, dict):
                raise ConfigError(f"kubeconfig {file}: not a mapping")
            merged.current = merged.current or str(doc.get("current-context") or "")
            for entry in doc.get("clusters") or []:
                merged.clusters.setdefault(
                    str(entry.get("name")), (entry.get("cluster") or {}, file.parent)
                )
            for entry in doc.get("contexts") or []:
                merged.contexts.setdefault(str(entry.get("name")), entry.get("context") or {})
            for entry in doc.get("users") or []:
                merged.users.setdefault(
                    str(entry.get("name")), (entry.get("user") or {}, file.parent)
                )
        return merged


def _file(base: Path, value: str) -> str:
    path_ = Path(value).expanduser()
    return str(path_ if path_.is_absolute() else base / path_)


def _exec_credential(spec: Obj, base: Path) -> Obj:
    """Run an exec credential plugin; its ExecCredential ``status``."""
    command = spec.get("command")
    if not command:
        raise ConfigError("exec credential plugin without a command")
    if "/" in str(command) and not Path(str(command)).is_absolute():
        command = _file(base, str(command))
    env = dict(os.environ)
    env.update({str(e["name"]): str(e["value"]) for e in spec.get("env") or []})
    env["KUBERNETES_EXEC_INFO"] = json.dumps(
        {
            "apiVersion": spec.get("apiVersion", "client.authentication.k8s.io/v1"),
            "kind": "ExecCredential",
            "spec": {"interactive": False},
        }
    )
    try:
        result = subprocess.run(
            [str(command), *[str(a) for a in spec.get("args") or []]],
            capture_output=True,
            text=True,
            env=env,
            timeout=EXEC_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"exec credential plugin {command}: {exc}") from None
    if result.returncode != 0:
        raise ConfigError(
            f"exec credential plugin {command} exited {result.returncode}: "
            f"{result.stderr.strip()[-500:]}"
        )
    try:
        status = json.loads(result.stdout).get("status") or {}
    except (ValueError, AttributeError):
        raise ConfigError(f"exec credential plugin {command} printed no ExecCredential") from None
    return dict(status)


def _load_cert(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """``load_cert_chain`` needs files: private temporary ones, removed at once."""
    with tempfile.TemporaryDirectory(prefix="kubectl-dchat-") as tmp:
        cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
        for target, data in ((cert, cert_pem), (key, key_pem)):
            target.touch(mode=0o600)
            target.write_bytes(data)
        context.load_cert_chain(str(cert), str(key))


def _data_or_file(entry: Obj, key: str, base: Path) -> bytes | None:
    if entry.get(f"{key}-data"):
        return base64.b64decode(str(entry[f"{key}-data"]))
    if entry.get(key):
        return Path(_file(base, str(entry[key]))).read_bytes()
    return None


@dataclass
class Kube:
    """A connection to the apiserver plus the namespace commands work in."""

    server: str
    namespace: str
    context: str
    ssl_context: ssl.SSLContext
    headers: dict[str, str]

    @classmethod
    def connect(cls, files: list[Path], context: str | None, namespace: str | None) -> Kube:
        """``files``: from ``kubeconfig_files``."""
        config = KubeConfig.load(files)
        name = context or config.current
        if not name or name not in config.contexts:
            known = ", ".join(sorted(config.contexts)) or "none"
            raise ConfigError(f"context {name or '(none set)'} not in the kubeconfig ({known})")
        ctx = config.contexts[name]
        cluster, cluster_base = config.clusters.get(str(ctx.get("cluster")), ({}, Path()))
        if not cluster.get("server"):
            raise ConfigError(f"context {name}: cluster {ctx.get('cluster')} has no server")
        user, user_base = config.users.get(str(ctx.get("user")), ({}, Path()))
        try:
            ssl_context = ssl.create_default_context()
            ca = _data_or_file(cluster, "certificate-authority", cluster_base)
            if ca:
                ssl_context.load_verify_locations(cadata=ca.decode())
            if cluster.get("insecure-skip-tls-verify"):
                ssl_context.check_hostname = False
                ssl_context.verify_mode = ssl.CERT_NONE
            headers = cls._credentials(user, user_base, ssl_context, name)
        except (OSError, ValueError, ssl.SSLError) as exc:
            raise ConfigError(f"context {name}: {exc}") from None
        return cls(
            server=str(cluster["server"]).rstrip("/"),
            namespace=namespace or str(ctx.get("namespace") or "") or "default",
            context=name,
            ssl_context=ssl_context,
            headers=headers,
        )

    @staticmethod
    def _credentials(user: Obj, base: Path, context: ssl.SSLContext, name: str) -> dict[str, str]:
        if user.get("auth-provider"):
            provider = (user["auth-provider"] or {}).get("name", "?")
            raise ConfigError(
                f"context {name}: auth-provider {provider} is not supported (kubectl removed "
                "these too): use its exec credential plugin"
            )
        if user.get("exec"):
            status = _exec_credential(user["exec"], base)
            if status.get("clientCertificateData") and status.get("clientKeyData"):
                _load_cert(
                    context,
                    str(status["clientCertificateData"]).encode(),
                    str(status["clientKeyData"]).encode(),
                )
            if status.get("token"):
                return {"Authorization": f"Bearer {status['token']}"}
            return {}
        cert = _data_or_file(user, "client-certificate", base)
        key = _data_or_file(user, "client-key", base)
        if cert and key:
            _load_cert(context, cert, key)
        token = user.get("token")
        if not token and user.get("tokenFile"):
            token = Path(_file(base, str(user["tokenFile"]))).read_text().strip()
        if token:
            return {"Authorization": f"Bearer {token}"}
        if user.get("username") and user.get("password"):
            pair = f"{user['username']}:{user['password']}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        return {}

    def request(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> Obj:
        full = self.server + url + (f"?{urlencode(query)}" if query else "")
        data = None if body is None else json.dumps(body).encode()
        headers = {**self.headers, "Accept": "application/json", "User-Agent": "kubectl-dchat"}
        if data is not None:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(full, data=data, method=method, headers=headers)  # noqa: S310 - the kubeconfig's server
        try:
            with urllib.request.urlopen(  # noqa: S310 - the kubeconfig's server
                req, context=self.ssl_context, timeout=REQUEST_TIMEOUT
            ) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise _error(exc.code, exc.read()) from None
        except TimeoutError:
            raise KubeError(0, f"{method} {url}: no answer in {REQUEST_TIMEOUT:.0f} s") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise KubeError(0, f"cannot reach the apiserver {self.server}: {reason}") from None
        try:
            result = json.loads(raw) if raw else {}
        except ValueError:
            raise KubeError(0, f"{method} {url}: the answer is not JSON") from None
        return result if isinstance(result, dict) else {}

    def proxy_get(
        self, pod: str, port: int, url: str, namespace: str = "", timeout: float = REQUEST_TIMEOUT
    ) -> tuple[int, bytes]:
        """GET ``url`` on a pod's ``port`` through the apiserver's pod proxy
        (``pods/proxy`` get): the status and body as the apiserver returns them (the pod's own
        answer, or the apiserver's Status when it could not reach the pod or refused the
        request). KubeError only when the apiserver itself cannot be reached."""
        ns = namespace or self.namespace
        full = (
            f"{self.server}/api/v1/namespaces/{quote(ns, safe='')}/pods/"
            f"{quote(pod, safe='')}:{int(port)}/proxy/{url.lstrip('/')}"
        )
        headers = {**self.headers, "User-Agent": "kubectl-dchat"}
        req = urllib.request.Request(full, method="GET", headers=headers)  # noqa: S310 - the kubeconfig's server
        try:
            with urllib.request.urlopen(  # noqa: S310 - the kubeconfig's server
                req, context=self.ssl_context, timeout=timeout
            ) as resp:
                return int(resp.status), bytes(resp.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), bytes(exc.read())
        except TimeoutError:
            raise KubeError(
                0, f"GET pod {pod}:{port}/{url.lstrip('/')}: no answer in {timeout:g} s"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise KubeError(0, f"cannot reach the apiserver {self.server}: {reason}") from None

    def get(self, kind: Kind, name: str, namespace: str | None = "") -> Obj | None:
        """The object, or None when it does not exist. ``namespace=""``: the current one;
        ``None``: cluster-scoped."""
        ns = self.namespace if namespace == "" else namespace
        try:
            return self.request("GET", path(kind, ns, name))
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    def list(
        self,
        kind: Kind,
        *,
        labels: str | None = None,
        fields: str | None = None,
        namespace: str | None = "",
    ) -> list[Obj]:
        ns = self.namespace if namespace == "" else namespace
        query = []
        if labels:
            query.append(("labelSelector", labels))
        if fields:
            query.append(("fieldSelector", fields))
        result = self.request("GET", path(kind, ns), query=query)
        return list(result.get("items") or [])

    def create(self, kind: Kind, body: Obj) -> Obj:
        return self.request(
            "POST", path(kind, self.namespace), body=body, query=[("fieldManager", FIELD_MANAGER)]
        )

    def merge_patch(self, kind: Kind, name: str, patch: Obj, sub: str = "") -> Obj:
        return self.request(
            "PATCH",
            path(kind, self.namespace, name, sub),
            body=patch,
            query=[("fieldManager", FIELD_MANAGER)],
            content_type="application/merge-patch+json",
        )

    def apply_dry_run(
        self, kind: Kind, name: str, body: Obj, *, field_manager: str, force: bool
    ) -> Obj:
        """Server-side apply with dryRun=All: the object as it would be stored."""
        query = [("dryRun", "All"), ("fieldManager", field_manager)]
        if force:
            query.append(("force", "true"))
        return self.request(
            "PATCH",
            path(kind, self.namespace, name),
            body=body,
            query=query,
            content_type="application/apply-patch+yaml",
        )


def _error(status: int, raw: bytes) -> KubeError:
    message = f"HTTP {status}"
    try:
        body = json.loads(raw) if raw else {}
        if isinstance(body, dict) and body.get("message"):
            message = str(body["message"])
    except ValueError:
        if raw:
            message = raw.decode(errors="replace")[:500]
    return KubeError(status, message)
