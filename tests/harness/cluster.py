"""The Kubernetes test cluster, as the tests see it.

``KubeCluster.ensure()`` runs tests/cluster/up.sh (which builds the binaries once, cached
by version, and starts kwokctl's binary runtime on 127.0.0.1, or reuses a running
cluster) and returns the kubeconfig and the bin directory with a kubectl that matches the
apiserver. When ``KUBECONFIG`` names a reachable cluster, that cluster is used and nothing
is built (``DCHAT_USE_KUBECONFIG=0`` forces the local one). Tests never touch ~/.kube/config.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
# kubectl's discovery cache (~/.kube/cache) outlives CRD changes for hours: a stale one
# made `kubectl get dchat` expand a category the CRDs no longer have. One per test process.
KUBECTL_CACHE = tempfile.mkdtemp(prefix="dchat-kubectl-cache-")
UP = REPO / "tests" / "cluster" / "up.sh"

RESTRICTED_LABELS = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/audit": "restricted",
}


@dataclass(frozen=True)
class KubeCluster:
    kubeconfig: Path
    bin_dir: Path

    @classmethod
    def ensure(cls) -> KubeCluster:
        """Run tests/cluster/up.sh (a no-op of ~1.5 s on a running, current cluster) and
        connect. Parallel test workers each call this: a lock lets one up.sh run at a time,
        so two never build images or start the real node at once."""
        cache = Path(os.environ.get("DCHAT_CACHE", str(Path.home() / ".cache" / "dchat")))
        ready = os.environ.get("DCHAT_TEST_KUBECONFIG")
        if ready and Path(ready).is_file():  # `make test` brought it up already
            return cls._connect(Path(ready), cache)
        cache.mkdir(parents=True, exist_ok=True)
        with (cache / "up.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            result = subprocess.run(
                ["bash", str(UP)], capture_output=True, text=True, timeout=1800, check=False
            )
        if result.returncode != 0:
            raise RuntimeError(
                f"tests/cluster/up.sh failed ({result.returncode}):\n{result.stderr[-5000:]}"
            )
        line = [x for x in result.stdout.splitlines() if x.startswith("export KUBECONFIG=")][-1]
        return cls._connect(Path(line.split("=", 1)[1]), cache)

    @classmethod
    def _connect(cls, kubeconfig: Path, cache: Path) -> KubeCluster:
        bins = sorted(cache.glob("k8s-*/bin/kubectl"))
        if not bins:  # an external cluster, nothing built: use the kubectl on PATH
            found = shutil.which("kubectl")
            if not found:
                raise RuntimeError("kubectl not found on PATH")
            return cls(kubeconfig, Path(found).parent)
        return cls(kubeconfig=kubeconfig, bin_dir=bins[-1].parent)

    def component_pid(self, component: str) -> int | None:
        """PID of a control-plane process of the local kwokctl cluster (None elsewhere)."""
        name = self.kubeconfig.name.removesuffix(".kubeconfig")
        pid_file = self.kubeconfig.parent / "clusters" / name / "pids" / f"{component}.pid"
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if Path(f"/proc/{pid}").exists() else None

    def scale_nodes(self, count: int) -> bool:
        """Make the local kwokctl cluster have ``count`` fake nodes (False elsewhere)."""
        kwokctl = self.bin_dir / "kwokctl"
        name = self.kubeconfig.name.removesuffix(".kubeconfig")
        if not kwokctl.exists() or not (self.kubeconfig.parent / "clusters" / name).exists():
            return False
        env = {**self.env, "KWOK_WORKDIR": str(self.kubeconfig.parent)}
        subprocess.run(
            [str(kwokctl), "scale", "node", "--name", name, "--replicas", str(count)],
            env=env,
            check=True,
            capture_output=True,
            timeout=300,
        )
        self.kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=120s")
        return True

    @property
    def env(self) -> dict[str, str]:
        """Environment for subprocesses (operator, kubectl) that must reach this cluster."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [
            str(self.bin_dir / "kubectl"),
            "--kubeconfig",
            str(self.kubeconfig),
            "--cache-dir",
            KUBECTL_CACHE,
            *args,
        ]
        result = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
            )
        return result

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def wait_for(
        self, predicate: Any, timeout: float = 60, interval: float = 0.5, what: str = "condition"
    ) -> Any:
        """Poll ``predicate()`` until it returns a truthy value; return that value."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")

    def create_namespace(self, prefix: str = "t", labels: dict[str, str] | None = None) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        manifest = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {**RESTRICTED_LABELS, **(labels or {})}},
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        return name

    def delete_namespace(self, name: str) -> None:
        self.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)

    @contextmanager
    def namespace(self, prefix: str = "t") -> Iterator[str]:
        name = self.create_namespace(prefix)
        try:
            yield name
        finally:
            self.delete_namespace(name)

    def apply(self, objects: Sequence[dict[str, Any]] | dict[str, Any], namespace: str) -> None:
        docs = [objects] if isinstance(objects, dict) else list(objects)
        payload = json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
        self.kubectl("apply", "-n", namespace, "-f", "-", input=payload)
