"""Helpers shared by the packaging tests: rendering the bundle, reading Dockerfiles, and a
checker for the Pod Security "restricted" profile."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("DCHAT_CACHE", str(Path.home() / ".cache" / "dchat")))
OPERATOR = REPO / ".venv" / "bin" / "dchat-operator"
SAMPLES = REPO / "manifests" / "samples"

OPERATOR_NAMESPACE = "dchat-system"
OPERATOR_SA = "dchat-operator"


def find_kubectl() -> str:
    """The test cluster's kubectl (v1.36, kustomize built in), else the one on PATH."""
    cached = sorted(p for p in CACHE.glob("k8s-*/bin/kubectl") if os.access(p, os.X_OK))
    if cached:
        return str(cached[-1])
    found = shutil.which("kubectl")
    if not found:
        raise RuntimeError("no kubectl: neither $DCHAT_CACHE/k8s-*/bin/kubectl nor on PATH")
    return found


def kustomize(path: Path) -> list[dict[str, Any]]:
    """Render a kustomization with kubectl's built-in kustomize."""
    result = subprocess.run(
        [find_kubectl(), "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{result.stderr}")
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def cluster_samples() -> list[Path]:
    """The sample files that hold a DchatCluster (others are e.g. example Secrets)."""
    return sorted(
        p for p in SAMPLES.glob("*.yaml") if re.search(r"^kind: DchatCluster", p.read_text(), re.M)
    )


def operator_render(sample: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(OPERATOR), "render", "--with-monitoring", "-f", str(sample)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"dchat-operator render -f {sample} failed:\n{result.stderr}")
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o.get("kind") == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in by_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind}/{name}, found {len(found)}"
    return found[0]


# ── Dockerfiles ─────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: int


def dockerfile_instructions(path: Path) -> list[Instruction]:
    """Instructions of a Dockerfile with continuation lines joined and comments dropped;
    `stage` counts FROM lines (0 = first stage)."""
    out: list[Instruction] = []
    stage = -1
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        keyword, _, args = buf.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(keyword, args.strip(), stage))
        buf = ""
    return out


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def exec_form(args: str) -> list[str]:
    """Parse a JSON (exec) form argument; fails if it is shell form."""
    value = json.loads(args)
    assert isinstance(value, list), f"not exec form: {args}"
    assert all(isinstance(v, str) for v in value), f"not exec form: {args}"
    return value


def healthcheck_command(path: Path) -> list[str]:
    checks = [i for i in final_stage(dockerfile_instructions(path)) if i.keyword == "HEALTHCHECK"]
    assert len(checks) == 1, f"{path.name}: expected one HEALTHCHECK in the runtime stage"
    match = re.search(r"\bCMD\s+(\[.*\])\s*$", checks[0].args)
    assert match, f"{path.name}: HEALTHCHECK CMD must be exec form: {checks[0].args}"
    return exec_form(match.group(1))


# ── Pod Security "restricted" ───────────────────────────────────────────────────────────

RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of every Pod and every workload's pod template."""
    for obj in objects:
        kind = obj.get("kind")
        name = f"{kind}/{obj.get('metadata', {}).get('name')}"
        if kind == "Pod":
            yield name, obj["spec"]
        elif kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
            yield name, obj["spec"]["template"]["spec"]
        elif kind == "CronJob":
            yield name, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def restricted_violations(spec: dict[str, Any]) -> list[str]:
    """What keeps a pod spec from the Pod Security Standard "restricted" (latest)."""
    pod_sc = spec.get("securityContext") or {}
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    problems = _pod_violations(spec, pod_sc, pod_seccomp)
    containers = [
        *(spec.get("initContainers") or []),
        *(spec.get("containers") or []),
        *(spec.get("ephemeralContainers") or []),
    ]
    for c in containers:
        sc = c.get("securityContext") or {}
        who = f"container {c['name']}"
        problems += _container_identity_violations(who, sc, pod_sc, pod_seccomp)
        problems += _container_host_violations(who, c, sc)
    return problems


def _pod_violations(
    spec: dict[str, Any], pod_sc: dict[str, Any], pod_seccomp: str | None
) -> list[str]:
    """The pod-level checks: host namespaces, root user, seccomp profile, volume types."""
    problems: list[str] = []
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            problems.append(f"{flag} is set")
    if pod_sc.get("runAsUser") == 0:
        problems.append("pod runAsUser is 0")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        problems.append(f"pod seccompProfile {pod_seccomp}")
    for volume in spec.get("volumes") or []:
        types = set(volume) - {"name"}
        if not types <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']} has type {sorted(types)}")
    return problems


def _container_identity_violations(
    who: str, sc: dict[str, Any], pod_sc: dict[str, Any], pod_seccomp: str | None
) -> list[str]:
    """Privileges, user and seccomp profile of one container (the pod's as defaults)."""
    problems: list[str] = []
    if sc.get("privileged"):
        problems.append(f"{who}: privileged")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{who}: allowPrivilegeEscalation must be false")
    if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
        problems.append(f"{who}: runAsNonRoot must be true")
    if sc.get("runAsUser") == 0:
        problems.append(f"{who}: runAsUser is 0")
    seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
    if seccomp not in ("RuntimeDefault", "Localhost"):
        problems.append(f"{who}: seccompProfile must be RuntimeDefault or Localhost")
    return problems


def _container_host_violations(who: str, c: dict[str, Any], sc: dict[str, Any]) -> list[str]:
    """Capabilities, host ports and /proc mount of one container."""
    problems: list[str] = []
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        problems.append(f"{who}: capabilities must drop ALL")
    extra = set(caps.get("add") or []) - {"NET_BIND_SERVICE"}
    if extra:
        problems.append(f"{who}: adds capabilities {sorted(extra)}")
    for port in c.get("ports") or []:
        if port.get("hostPort"):
            problems.append(f"{who}: hostPort {port['hostPort']}")
    if sc.get("procMount") not in (None, "Default"):
        problems.append(f"{who}: procMount {sc['procMount']}")
    return problems
