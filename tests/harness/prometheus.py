"""A real Prometheus (Debian's ``prometheus`` package) on loopback, for the monitoring tests
and the dashboard picture (bench/monitoring_picture.py).

Design: ``PrometheusServer.start(workdir, config)`` writes the config, starts
``/usr/bin/prometheus`` on a free loopback port with its TSDB in ``workdir`` and waits for
``/-/ready``; ``query``/``query_range`` call the HTTP API; ``stop`` ends it (SIGTERM, then
SIGKILL). ``example_config`` turns the shipped scrape example
(``manifests/monitoring/prometheus.yml``) into one that runs here: Debian's build has no
Kubernetes service discovery, so each ``kubernetes_sd_configs`` becomes a
``file_sd_configs`` whose targets carry the ``__meta_kubernetes_*`` labels Kubernetes
discovery would give a pod; the example's own relabeling then runs unchanged on them. The
rule groups' evaluation interval is shortened with the scrape interval (expressions as
shipped) so a run of seconds sees its alerts.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.harness.net import free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "manifests" / "monitoring" / "prometheus.yml"
RULES = REPO / "manifests" / "monitoring" / "rules.yaml"


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    assert found, "prometheus is missing: run scripts/bootstrap.sh deps (Debian package)"
    return found


@dataclass(frozen=True)
class Pod:
    """A pod as Kubernetes pod discovery would describe it."""

    address: str
    namespace: str
    name: str
    labels: dict[str, str]
    port_name: str = "metrics"

    def target(self) -> dict[str, Any]:
        meta = {
            "__meta_kubernetes_namespace": self.namespace,
            "__meta_kubernetes_pod_name": self.name,
            "__meta_kubernetes_pod_container_port_name": self.port_name,
        }
        for key, value in self.labels.items():
            safe = "".join(ch if ch.isalnum() else "_" for ch in key)
            meta[f"__meta_kubernetes_pod_label_{safe}"] = value
        return {"targets": [self.address], "labels": meta}


def example_config(
    workdir: Path, pods: dict[str, list[Pod]], scrape_interval: str, eval_interval: str
) -> dict[str, Any]:
    """The shipped example, with file discovery standing in for Kubernetes (job -> pods)."""
    config: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    config["global"]["scrape_interval"] = scrape_interval
    config["global"]["evaluation_interval"] = eval_interval
    # the groups' own 30 s interval becomes eval_interval (expressions unchanged), so a short
    # run sees its alerts
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        group["interval"] = eval_interval
    (workdir / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    config["rule_files"] = [str(workdir / "rules.yaml")]
    for job in config["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
        path = workdir / f"{job['job_name']}.targets.json"
        path.write_text(json.dumps([p.target() for p in pods.get(job["job_name"], [])]))
        job["file_sd_configs"] = [{"files": [str(path)]}]
    return config


@dataclass
class PrometheusServer:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @classmethod
    def start(cls, workdir: Path, config: dict[str, Any], timeout: float = 30) -> PrometheusServer:
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        port = free_port()
        log_path = workdir / "prometheus.log"
        with log_path.open("wb") as out:
            proc = subprocess.Popen(
                [
                    prometheus_binary(),
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--storage.tsdb.retention.time=1d",
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )
        server = cls(proc, f"http://127.0.0.1:{port}", log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {proc.returncode}:\n{server.log()}")
            try:
                if httpx.get(f"{server.url}/-/ready", timeout=2).status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        server.stop()
        raise RuntimeError(f"prometheus not ready in {timeout} s:\n{server.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _get(self, path: str, params: dict[str, str]) -> Any:
        r = httpx.get(f"{self.url}{path}", params=params, timeout=10)
        body = r.json()
        assert body.get("status") == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._get("/api/v1/query", {"query": expr})["result"]
        return result

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Any]:
        params = {"query": expr, "start": str(start), "end": str(end), "step": str(step)}
        result: list[Any] = self._get("/api/v1/query_range", params)["result"]
        return result

    def rules(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self._get("/api/v1/rules", {})["groups"]
        return groups

    def wait_for(self, expr: str, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.query(expr)
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
