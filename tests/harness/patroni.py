"""A Patroni-managed PostgreSQL cluster whose DCS is the Kubernetes API of the test cluster.

``PatroniCluster.start(base_dir, kubeconfig, namespace, scope)`` runs N Patroni members
(Patroni 4 from requirements-patroni.lock, installed by ``scripts/bootstrap.sh patroni`` into
a venv of Debian's python3 outside the repo) as host processes with Debian's PostgreSQL
binaries; as root they run as ``nobody`` (PostgreSQL refuses root). Each member is named like
a Pod object the harness creates in ``namespace`` on a kwok node (a fake node: the Pod never
runs, it is only the object Patroni patches its role label and status annotation on); Patroni
keeps its leader, config and sync keys in ConfigMaps (``use_endpoints: false``) there.
PostgreSQL and the REST API of each member listen on free 127.0.0.1 ports.

``kill_leader()`` SIGKILLs the leader's Patroni and its PostgreSQL (postmaster and backends),
like a dead node; ``wait_leader(other_than=...)`` then waits for a replica to be promoted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .net import free_port
from .postgres import _chown_tree, _run_as, pg_bin_dir

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements-patroni.lock"
SUPERUSER = "dchat"
SUPERUSER_PASSWORD = "patroni-super-" + "s" * 16
REPLICATION_USER = "replicator"
REPLICATION_PASSWORD = "patroni-repl-" + "r" * 16
LABELS = {"app.kubernetes.io/name": "dchat-patroni-harness"}
SCOPE_LABEL = "cluster-name"
# kwok's fake nodes (kwokctl scale node): the Pods land there and are never really run.
KWOK_SCHEDULING: dict[str, Any] = {
    "nodeSelector": {"type": "kwok"},
    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
}


def patroni_venv() -> Path:
    """Where ``scripts/bootstrap.sh patroni`` puts the venv for the current lock (or
    ``DCHAT_PATRONI_VENV``). Raises FileNotFoundError when it is not installed."""
    env = os.environ.get("DCHAT_PATRONI_VENV")
    if env:
        venv = Path(env)
    else:
        digest = hashlib.sha256(LOCK.read_bytes()).hexdigest()[:16]
        default = (
            "/var/cache/dchat-test"
            if os.geteuid() == 0
            else os.environ.get("DCHAT_CACHE", str(Path.home() / ".cache" / "dchat"))
        )
        parent = Path(os.environ.get("DCHAT_PATRONI_CACHE", default))
        venv = parent / f"patroni-{digest}"
        if not (venv / ".complete").exists():
            raise FileNotFoundError(
                f"no Patroni venv at {venv}: run `scripts/bootstrap.sh patroni`"
            )
    if not (venv / "bin" / "patroni").exists():
        raise FileNotFoundError(f"no {venv}/bin/patroni: run `scripts/bootstrap.sh patroni`")
    return venv


def _find_kubectl() -> str:
    cache = Path(os.environ.get("DCHAT_CACHE", str(Path.home() / ".cache" / "dchat")))
    built = sorted(cache.glob("k8s-*/bin/kubectl"))
    if built:
        return str(built[-1])
    found = shutil.which("kubectl")
    if not found:
        raise RuntimeError("kubectl not found (neither built in DCHAT_CACHE nor on PATH)")
    return found


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    out: list[int] = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append(int(stat.parent.name))
    return out


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


@dataclass
class PatroniMember:
    """One Patroni member: its Pod-like name, ports, directory and process."""

    name: str
    pg_port: int
    rest_port: int
    dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def log(self) -> Path:
        return self.dir / "patroni.log"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def rest(self, path: str, timeout: float = 2) -> Any:
        """GET a REST API path as JSON (Patroni answers /patroni, /cluster with bodies even
        on 503, e.g. a replica's /primary: those bodies are returned too)."""
        try:
            url = self.rest_url + path  # http://127.0.0.1:<port> by construction
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return json.loads(err.read() or b"null")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError as err:
            return f"(no log: {err})"

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
            return pid if Path(f"/proc/{pid}").exists() else None
        return None

    def kill(self) -> None:
        """SIGKILL Patroni, the postmaster and its backends: a dead node."""
        postmaster = self.postmaster_pid()
        if self.process is not None:
            _kill(self.process.pid)
        if postmaster is not None:
            backends = _children(postmaster)
            _kill(postmaster)
            for pid in backends:
                _kill(pid)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)


@dataclass
class PatroniCluster:
    """N Patroni members of one scope, DCS = the Kubernetes API (ConfigMaps + Pod objects)."""

    base_dir: Path
    kubeconfig: Path
    namespace: str
    scope: str
    members: list[PatroniMember] = field(default_factory=list)
    synchronous: bool = False
    kubectl: str = field(default_factory=_find_kubectl)
    run_as: str | None = field(default_factory=_run_as)

    @classmethod
    def start(
        cls,
        base_dir: Path,
        kubeconfig: Path,
        namespace: str,
        scope: str,
        members: int = 2,
        synchronous: bool = False,
        *,
        ttl: int = 10,
        loop_wait: int = 2,
        retry_timeout: int = 5,
        kubectl: str | None = None,
    ) -> PatroniCluster:
        """Create the Pod objects, start every member (all at once: one wins the
        initialize race, runs initdb, the others bootstrap from it with pg_basebackup).
        Returns at once; ``wait_healthy()`` waits for a leader and streaming replicas."""
        venv = patroni_venv()
        bindir = pg_bin_dir()
        base_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(base_dir, 0o755)  # noqa: S103 - the unprivileged server user must traverse it
        cluster = cls(
            base_dir=base_dir,
            kubeconfig=kubeconfig,
            namespace=namespace,
            scope=scope,
            synchronous=synchronous,
        )
        if kubectl:
            cluster.kubectl = kubectl
        # Readable by `nobody` (the original may sit under /root): one copy per cluster.
        kubecopy = base_dir / "kubeconfig"
        shutil.copyfile(kubeconfig, kubecopy)
        os.chmod(kubecopy, 0o644)
        context = yaml.safe_load(kubecopy.read_text()).get("current-context")
        for i in range(members):
            name = f"{scope}-{i}"
            member = PatroniMember(name, free_port(), free_port(), base_dir / name)
            member.dir.mkdir()
            os.chmod(member.dir, 0o700)
            cluster.members.append(member)
        cluster._create_pods()
        for member in cluster.members:
            conf = cluster._config(member, bindir, context, ttl, loop_wait, retry_timeout)
            path = member.dir / "patroni.yml"
            path.write_text(yaml.safe_dump(conf, sort_keys=False))
            os.chmod(path, 0o600)
            member.log.touch()
            _chown_tree(member.dir, cluster.run_as)
        for member in cluster.members:
            cluster._spawn(member, venv)
        return cluster

    def _pod(self, member: PatroniMember) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": member.name, "labels": {**LABELS, SCOPE_LABEL: self.scope}},
            "spec": {
                **KWOK_SCHEDULING,
                "automountServiceAccountToken": False,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 65534,
                    "runAsGroup": 65534,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": "patroni",
                        # Never pulled: kwok only pretends to run the Pod; the member is the
                        # host process of the same name.
                        "image": "dchat.invalid/patroni-harness:none",
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
            },
        }

    def _create_pods(self) -> None:
        payload = json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": [self._pod(m) for m in self.members]}
        )
        self._kubectl("apply", "-n", self.namespace, "-f", "-", input=payload)

    def _kubectl(self, *args: str, input: str | None = None) -> str:
        result = subprocess.run(
            [self.kubectl, "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def _config(
        self,
        member: PatroniMember,
        bindir: Path,
        context: str | None,
        ttl: int,
        loop_wait: int,
        retry_timeout: int,
    ) -> dict[str, Any]:
        kubernetes: dict[str, Any] = {
            "namespace": self.namespace,
            "labels": dict(LABELS),
            "scope_label": SCOPE_LABEL,
            "use_endpoints": False,
            "bypass_api_service": False,
        }
        if context:
            kubernetes["context"] = context  # Patroni's default is `kind-kind`
        return {
            "scope": self.scope,
            "name": member.name,
            "log": {"level": "INFO"},
            "restapi": {
                "listen": f"127.0.0.1:{member.rest_port}",
                "connect_address": f"127.0.0.1:{member.rest_port}",
            },
            "kubernetes": kubernetes,
            "bootstrap": {
                "dcs": {
                    "ttl": ttl,
                    "loop_wait": loop_wait,
                    "retry_timeout": retry_timeout,
                    "maximum_lag_on_failover": 1048576,
                    "synchronous_mode": self.synchronous,
                    "synchronous_mode_strict": False,
                    "postgresql": {
                        "use_pg_rewind": False,
                        "use_slots": True,
                        "parameters": {
                            "fsync": "off",
                            "full_page_writes": "off",
                            "wal_level": "replica",
                            "hot_standby": "on",
                            "max_wal_senders": 10,
                            "max_replication_slots": 10,
                            "wal_keep_size": "64MB",
                            "max_connections": 100,
                            "password_encryption": "scram-sha-256",
                        },
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, "no-sync"],
                "pg_hba": [
                    "local all all trust",
                    f"host replication {REPLICATION_USER} 127.0.0.1/32 scram-sha-256",
                    "host all all 127.0.0.1/32 scram-sha-256",
                ],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{member.pg_port}",
                "connect_address": f"127.0.0.1:{member.pg_port}",
                "data_dir": str(member.data_dir),
                "bin_dir": str(bindir),
                "pgpass": str(member.dir / "pgpass"),
                "authentication": {
                    "superuser": {"username": SUPERUSER, "password": SUPERUSER_PASSWORD},
                    "replication": {
                        "username": REPLICATION_USER,
                        "password": REPLICATION_PASSWORD,
                    },
                },
                # The default "spread" checkpoint of pg_basebackup takes ~90 s here.
                "basebackup": [{"checkpoint": "fast"}],
                "parameters": {"unix_socket_directories": str(member.dir)},
            },
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
        }

    def _spawn(self, member: PatroniMember, venv: Path) -> None:
        env = {
            "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
            "HOME": str(member.dir),
            "LANG": "C.UTF-8",
            "KUBECONFIG": str(self.base_dir / "kubeconfig"),
            "PYTHONUNBUFFERED": "1",
        }
        with member.log.open("ab") as log:
            member.process = subprocess.Popen(
                [str(venv / "bin" / "patroni"), str(member.dir / "patroni.yml")],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=member.dir,
                user=self.run_as,
                start_new_session=True,
            )

    # --- state -------------------------------------------------------------------------

    def member(self, name: str) -> PatroniMember:
        for member in self.members:
            if member.name == name:
                return member
        raise KeyError(name)

    def _view(self) -> list[dict[str, Any]]:
        """``GET /cluster`` of the first live member that answers (its members list)."""
        for member in self.members:
            if not member.alive():
                continue
            with contextlib.suppress(OSError, ValueError):
                view = member.rest("/cluster")
                if isinstance(view, dict):
                    found: list[dict[str, Any]] = view.get("members", [])
                    return found
        return []

    def leader(self) -> str | None:
        """The leader's name: it holds the leader key (``GET /cluster`` of a live member)
        and its PostgreSQL is out of recovery (its own ``GET /patroni`` says primary: a
        freshly elected leader holds the key a moment before its promotion completes)."""
        for entry in self._view():
            if entry.get("role") == "leader" and entry.get("state") == "running":
                name = entry.get("name")
                if not isinstance(name, str) or not self.member(name).alive():
                    continue
                with contextlib.suppress(OSError, ValueError):
                    status = self.member(name).rest("/patroni")
                    if isinstance(status, dict) and status.get("role") == "primary":
                        return name
        return None

    def _check_processes(self) -> None:
        for member in self.members:
            if member.process is not None and member.process.poll() is not None:
                if member.process.returncode == -signal.SIGKILL:
                    continue  # killed on purpose (kill_leader)
                raise RuntimeError(
                    f"Patroni member {member.name} exited {member.process.returncode}; "
                    f"log {member.log}:\n{member.log_tail()}"
                )

    def _healthy(self) -> bool:
        live = {m.name for m in self.members if m.alive()}
        view = {e.get("name"): e for e in self._view()}
        leaders = [n for n, e in view.items() if e.get("role") == "leader"]
        if len(leaders) != 1 or view[leaders[0]].get("state") != "running":
            return False
        replicas = live - set(leaders)
        if not all(view.get(n, {}).get("state") == "streaming" for n in replicas):
            return False
        if self.synchronous and replicas:
            return any(view[n].get("role") == "sync_standby" for n in replicas)
        return True

    def wait_healthy(self, timeout: float = 120) -> None:
        """Until one leader runs and every other live member streams from it (with
        ``synchronous``: one of them is the sync standby)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_processes()
            if self._healthy():
                return
            time.sleep(0.5)
        tails = "\n".join(f"--- {m.name} ({m.log}):\n{m.log_tail(2500)}" for m in self.members)
        raise TimeoutError(
            f"Patroni cluster {self.scope} not healthy after {timeout} s "
            f"(view: {self._view()!r})\n{tails}"
        )

    def wait_leader(self, other_than: str | None = None, timeout: float = 90) -> str:
        """Until a live member other than ``other_than`` leads; its name."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_processes()
            name = self.leader()
            if name is not None and name != other_than:
                return name
            time.sleep(0.2)
        tails = "\n".join(f"--- {m.name}:\n{m.log_tail(2500)}" for m in self.members)
        raise TimeoutError(f"no new leader (other than {other_than}) after {timeout} s\n{tails}")

    # --- clients -----------------------------------------------------------------------

    def dsn(self, database: str, user: str, password: str) -> str:
        """A multi-host URL over every member; libpq picks the one that takes writes."""
        hosts = ",".join(f"127.0.0.1:{m.pg_port}" for m in self.members)
        return f"postgresql://{user}:{password}@{hosts}/{database}?target_session_attrs=read-write"

    def psql(
        self, sql: str, database: str = "postgres", dsn: str | None = None, on: str | None = None
    ) -> str:
        """Run SQL with psql: through ``dsn``, or as the superuser on member ``on`` (default:
        the leader); its unaligned, tuples-only output."""
        if dsn is None:
            on = on or self.leader()
            if on is None:
                raise RuntimeError(f"no leader in {self.scope}")
            dsn = (
                f"postgresql://{SUPERUSER}:{SUPERUSER_PASSWORD}@127.0.0.1:"
                f"{self.member(on).pg_port}/{database}"
            )
        flags = ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
        result = subprocess.run(
            [str(pg_bin_dir() / "psql"), *flags, "-d", dsn, "-c", sql],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def create_login_database(self, database: str, password: str) -> str:
        """A login role ``database`` owning a new database of that name (via the leader);
        the multi-host URL to reach it."""
        self.psql(f"CREATE ROLE \"{database}\" LOGIN PASSWORD '{password}'")
        self.psql(f'CREATE DATABASE "{database}" OWNER "{database}"')
        # libpq stops at the first host that answers "database does not exist" (a replica
        # that has the WAL but has not replayed it yet): wait until every live member has it.
        leader = self.leader()
        query = f"SELECT count(*) FROM pg_database WHERE datname = '{database}'"  # noqa: S608
        for member in self.members:
            if member.name == leader or not member.alive():
                continue
            deadline = time.monotonic() + 30
            while self.psql(query, on=member.name) != "1":
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{member.name} did not replay database {database}")
                time.sleep(0.1)
        return self.dsn(database, database, password)

    # --- failures and the end ----------------------------------------------------------

    def kill_leader(self) -> str:
        """SIGKILL the leader's Patroni and PostgreSQL; its name. It stays dead."""
        name = self.leader()
        if name is None:
            raise RuntimeError(f"no leader in {self.scope} to kill")
        self.member(name).kill()
        return name

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM every Patroni (it stops its PostgreSQL), SIGKILL what is left after
        ``timeout``, then every postgres process still running from this base dir."""
        running = [m for m in self.members if m.alive()]
        for member in running:
            assert member.process is not None
            with contextlib.suppress(ProcessLookupError):
                member.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for member in running:
            assert member.process is not None
            try:
                member.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                member.kill()
        for member in self.members:
            member.kill()  # the postmaster of a member whose Patroni died before it
        marker = str(self.base_dir)
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            with contextlib.suppress(OSError, ValueError):
                args = cmdline.read_bytes().split(b"\0")
                if args and args[0].endswith(b"postgres") and marker.encode() in b" ".join(args):
                    pid = int(cmdline.parent.name)
                    children = _children(pid)
                    _kill(pid)
                    for child in children:
                        _kill(child)
