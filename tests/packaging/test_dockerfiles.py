"""The container images' Dockerfiles: hadolint, and what the images must be (read from the
files: no container engine runs here, so they are checked by reading)."""

from __future__ import annotations

import http.server
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.packaging.support import (
    REPO,
    Instruction,
    dockerfile_instructions,
    exec_form,
    final_stage,
    healthcheck_command,
)

pytestmark = pytest.mark.unit

NODE = REPO / "Dockerfile.node"
OPERATOR = REPO / "Dockerfile.operator"
# image → (uid, HEALTHCHECK URL, ports)
EXPECTED = {
    NODE: (1000, "http://127.0.0.1:9001/health", {"9000/tcp", "9001/tcp", "7000/tcp"}),
    OPERATOR: (65532, "http://127.0.0.1:8080/healthz", {"8080/tcp", "8081/tcp"}),
}
BOTH = pytest.mark.parametrize("dockerfile", [NODE, OPERATOR], ids=["node", "operator"])


def test_lint_script_passes_on_both_dockerfiles() -> None:
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "lint-dockerfiles.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "lint-dockerfiles: OK" in result.stdout


def test_hadolint_reports_nothing_at_any_level() -> None:
    """Stricter than the script's threshold: not even info or style findings."""
    result = subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "hadolint"),
            "--config",
            str(REPO / ".hadolint.yaml"),
            "--failure-threshold",
            "style",
            "--no-color",
            str(NODE),
            str(OPERATOR),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_lint_script_fails_on_the_guides_mistakes(tmp_path: Path) -> None:
    """The check has teeth: the guide's EXPOSE-with-comment and curl HEALTHCHECK fail."""
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM debian:bookworm-slim\n"
        "RUN apt-get update && apt-get install -y curl\n"
        "EXPOSE 9000    # API\n"
        'CMD ["dchat"]\n'
    )
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "lint-dockerfiles.sh"), str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0


@BOTH
def test_multi_stage_with_pinned_slim_runtime_base(dockerfile: Path) -> None:
    froms = [i for i in dockerfile_instructions(dockerfile) if i.keyword == "FROM"]
    assert len(froms) >= 2, "builder and runtime stages"
    for f in froms:
        image = f.args.split()[0]
        assert ":" in image, f"{image} is not pinned by tag"
        assert not image.endswith(":latest")
        assert image.startswith("python:3.11-")
    assert froms[-1].args.split()[0] == "python:3.11-slim-bookworm"
    assert "AS runtime" in froms[-1].args
    copies = [
        i.args for i in final_stage(dockerfile_instructions(dockerfile)) if i.keyword == "COPY"
    ]
    assert any(c.startswith("--from=builder /opt/venv") for c in copies), copies
    text = dockerfile.read_text()
    assert "digest" in text, "the comment on why the base is not pinned by digest"


@BOTH
def test_runs_as_numeric_non_root_user(dockerfile: Path) -> None:
    uid = EXPECTED[dockerfile][0]
    users = [
        i.args for i in final_stage(dockerfile_instructions(dockerfile)) if i.keyword == "USER"
    ]
    assert users, "runtime stage sets USER"
    assert users[-1] == f"{uid}:{uid}"


@BOTH
def test_entrypoint_and_cmd_are_exec_form(dockerfile: Path) -> None:
    runtime = final_stage(dockerfile_instructions(dockerfile))
    entrypoint = [exec_form(i.args) for i in runtime if i.keyword == "ENTRYPOINT"]
    cmd = [exec_form(i.args) for i in runtime if i.keyword == "CMD"]
    assert len(entrypoint) == 1, "the program is the ENTRYPOINT: pod `args` replace only CMD"
    assert len(cmd) == 1
    argv = entrypoint[0] + cmd[0]
    if dockerfile == NODE:
        assert argv == ["dchat", "--config", "/etc/dchat/config.toml"]
    else:
        assert argv == [
            "dchat-operator",
            "run",
            "--all-namespaces",
            "--liveness-port=8080",
            "--metrics-port=8081",
        ]


@BOTH
def test_expose_lines_have_no_comments(dockerfile: Path) -> None:
    exposed: set[str] = set()
    for line in dockerfile.read_text().splitlines():
        if line.startswith("EXPOSE"):
            assert "#" not in line, line
            exposed.update(line.split()[1:])
    assert exposed == EXPECTED[dockerfile][2]


@BOTH
def test_healthcheck_uses_python_not_curl(dockerfile: Path) -> None:
    argv = healthcheck_command(dockerfile)
    assert argv[:2] == ["python", "-c"]
    assert EXPECTED[dockerfile][1] in argv[2]
    text = dockerfile.read_text()
    assert not re.search(r"^\s*[^#\s].*\b(curl|wget)\b", text, re.MULTILINE)


@BOTH
def test_labels_no_secrets_no_caches_no_apt(dockerfile: Path) -> None:
    instructions = dockerfile_instructions(dockerfile)
    runtime = final_stage(instructions)
    labels = " ".join(i.args for i in runtime if i.keyword == "LABEL")
    for key in ("title", "description", "version", "licenses", "vendor"):
        assert f"org.opencontainers.image.{key}=" in labels
    for i in instructions:
        assert i.keyword not in {"ADD", "MAINTAINER"}, i
        if i.keyword in {"ENV", "ARG"}:
            assert not re.search(r"(PASSWORD|SECRET|TOKEN|API_KEY)", i.args, re.I), i
        if i.keyword == "RUN":
            if "apt-get" in i.args:
                _check_apt(dockerfile, i, runtime)
            assert "apk " not in i.args, i
            if "pip install" in i.args:
                assert "--no-cache-dir" in i.args, i


def _check_apt(dockerfile: Path, run: Instruction, runtime: list[Instruction]) -> None:
    """The one apt install allowed: the node's runtime stage gets Debian's PostgreSQL client
    for `dchat backup` (pg_dump/pg_restore), pinned to a major version, without recommends,
    and the apt lists are removed in the same layer."""
    assert dockerfile == NODE, run
    assert run in runtime, run
    assert "apt-get install -y --no-install-recommends 'postgresql-client-15=15.*'" in run.args
    assert "rm -rf /var/lib/apt/lists/*" in run.args, run
    assert "upgrade" not in run.args, run


LOCKS = {NODE: "requirements-node.lock", OPERATOR: "requirements-operator.lock"}


@BOTH
def test_dependencies_by_hash_from_the_images_own_lock_then_the_project_alone(
    dockerfile: Path,
) -> None:
    """Section 6 of issue 18: each image installs its extra's hashed lock (pip refuses an
    unhashed or unpinned requirement), then the project with --no-deps and
    --no-build-isolation, so nothing unlocked enters the image, the build backend included."""
    lock = LOCKS[dockerfile]
    runs = [i.args for i in dockerfile_instructions(dockerfile) if i.keyword == "RUN"]
    installs = [r for r in runs if "pip " in r]
    assert len(installs) == 2, installs
    deps, project = installs
    assert "pip install --no-cache-dir --require-hashes" in deps, deps
    assert deps.rstrip().endswith(f"-r {lock}"), deps
    assert "pip install --no-cache-dir --no-deps --no-build-isolation ." in project, project
    assert "requirements.lock" not in dockerfile.read_text(), "the dev lock is not an image's"
    copies = [i.args for i in dockerfile_instructions(dockerfile) if i.keyword == "COPY"]
    assert copies[0] == f"{lock} ./", "the lock alone first: its layer outlives code changes"


def test_node_image_owns_data_and_config_dirs_and_logs_to_stdout() -> None:
    runtime = final_stage(dockerfile_instructions(NODE))
    runs = " ".join(i.args for i in runtime if i.keyword == "RUN")
    assert "mkdir -p /data /etc/dchat" in runs
    assert "chown 1000:1000 /data /etc/dchat" in runs
    assert "--uid 1000" in runs
    assert not any("/var/log" in i.args for i in dockerfile_instructions(NODE))
    env = " ".join(i.args for i in runtime if i.keyword == "ENV")
    assert "PYTHONUNBUFFERED=1" in env


def test_dockerignore_keeps_the_context_to_what_the_builds_copy() -> None:
    lines = [
        x.strip()
        for x in (REPO / ".dockerignore").read_text().splitlines()
        if x.strip() and not x.startswith("#")
    ]
    assert lines[0] == "*", "allow-list: exclude everything first"
    allowed = {x[1:].rstrip("/") for x in lines if x.startswith("!")}
    for dockerfile in (NODE, OPERATOR):
        for i in dockerfile_instructions(dockerfile):
            if i.keyword != "COPY" or i.args.startswith("--from"):
                continue
            for source in i.args.split()[:-1]:
                name = source.rstrip("/")
                if "*" in name:
                    continue
                assert (REPO / name).exists(), f"{dockerfile.name} copies missing {name}"
                assert name in allowed, f"{name} is excluded by .dockerignore"
    for secretish in (".venv", ".git", "tests", ".cluster"):
        assert secretish not in allowed


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    server.status = 200  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@BOTH
def test_healthcheck_command_reports_healthy_and_unhealthy(
    dockerfile: Path, http_server: http.server.HTTPServer
) -> None:
    """Run the image's HEALTHCHECK program (pointed at a local server on a free port):
    exit 0 on 200, non-zero on 503 and when nothing listens."""
    argv = healthcheck_command(dockerfile)
    url = EXPECTED[dockerfile][1]
    port = http_server.server_address[1]
    code = argv[2].replace(url, url.replace(url.split("/")[2], f"127.0.0.1:{port}"))
    assert code != argv[2]

    def run(program: str) -> int:
        return subprocess.run(
            [sys.executable, "-c", program], capture_output=True, timeout=30, check=False
        ).returncode

    assert run(code) == 0
    http_server.status = 503  # type: ignore[attr-defined]
    assert run(code) != 0
    http_server.shutdown()
    http_server.server_close()
    assert run(code) != 0
