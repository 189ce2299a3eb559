"""A real EVM dev chain for tests: anvil (npm ``@foundry-rs/anvil``) on a loopback port.

``Anvil.start(workdir, chain_id)`` runs anvil from the toolchain ``scripts/bootstrap.sh chain``
installed (``make chain``; this module computes the same cache paths, or takes
``DCHAT_ANVIL`` / ``DCHAT_CONTRACT_ARTIFACTS``) on 127.0.0.1 and a free port, with anvil's
default mnemonic (ten funded, unlocked accounts: ``eth_sendTransaction`` needs no keys), its
log in ``workdir``, and a bounded lifetime (``timeout`` ends it after ``max_lifetime_secs``
even if the test process dies first). ``--state`` keeps the chain across ``stop()`` +
``restart()`` on the same port, so an RPC outage loses no blocks. ``--slots-in-an-epoch``
sets how far behind the head anvil's ``safe`` (1 epoch) and ``finalized`` (2 epochs) blocks
are.

Helpers speak plain JSON-RPC (urllib; the node's async client is what the tests test):
deploy a compiled contract (``load_artifact``: ABI + bytecode that ``scripts/compile-contracts.mjs``
wrote), native and ERC-20 transfers with any calldata (explicit gas, so a failing call is
mined as a reverted transaction instead of being refused at gas estimation), ``anvil_mine``,
``evm_snapshot``/``evm_revert`` (a reorg: the reverted blocks and their transactions are
gone, and blocks mined after it have other hashes), automine off/on.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import platform
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_abi import decode, encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from .net import free_port

REPO = Path(__file__).resolve().parents[2]
CONTRACTS = REPO / "contracts"
DEFAULT_MNEMONIC = "test test test test test test test test test test test junk"
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def _cache_parent() -> Path:
    default = os.environ.get("DCHAT_CACHE", str(Path.home() / ".cache" / "dchat"))
    return Path(os.environ.get("DCHAT_CHAIN_CACHE", default))


def toolchain_dir() -> Path:
    """Where ``scripts/bootstrap.sh chain`` installs anvil and solc-js for this lock."""
    digest = hashlib.sha256((CONTRACTS / "package-lock.json").read_bytes()).hexdigest()[:16]
    return _cache_parent() / f"chain-{digest}"


def anvil_binary() -> Path:
    env = os.environ.get("DCHAT_ANVIL")
    arch = _ARCH.get(platform.machine(), platform.machine())
    path = (
        Path(env)
        if env
        else toolchain_dir()
        / "node_modules"
        / "@foundry-rs"
        / f"anvil-linux-{arch}"
        / "bin"
        / "anvil"
    )
    if not path.is_file():
        raise FileNotFoundError(
            f"no anvil at {path}: run `make chain` (scripts/bootstrap.sh chain)"
        )
    return path


def artifacts_dir() -> Path:
    """The compiled contracts of the current ``contracts/*.sol`` (the key of
    ``scripts/compile-contracts.mjs``: solc's pinned version and each source's hash)."""
    env = os.environ.get("DCHAT_CONTRACT_ARTIFACTS")
    if env:
        return Path(env)
    solc = json.loads((CONTRACTS / "package.json").read_text())["dependencies"]["solc"]
    key = f"solc {solc}\n"
    for src in sorted(CONTRACTS.glob("*.sol"), key=lambda p: p.name):
        key += f"{src.name}\n{hashlib.sha256(src.read_bytes()).hexdigest()}\n"
    path = _cache_parent() / f"contracts-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    if not (path / ".complete").exists():
        raise FileNotFoundError(
            f"no compiled contracts at {path} (sources changed or never compiled): run "
            "`make chain` (scripts/bootstrap.sh chain)"
        )
    return path


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: bytes

    def constructor_types(self) -> list[str]:
        for item in self.abi:
            if item["type"] == "constructor":
                return [i["type"] for i in item["inputs"]]
        return []


def load_artifact(name: str) -> Artifact:
    data = json.loads((artifacts_dir() / f"{name}.json").read_text())
    return Artifact(name, data["abi"], bytes.fromhex(data["bytecode"].removeprefix("0x")))


def private_key(index: int) -> bytes:
    """The private key of anvil's default account ``index`` (for signing, e.g. EIP-712)."""
    from eth_account import Account  # a slow import, needed only here

    Account.enable_unaudited_hdwallet_features()
    acct = Account.from_mnemonic(DEFAULT_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return bytes(acct.key)


def calldata(signature: str, types: list[str], args: list[Any]) -> bytes:
    """ABI calldata: 4-byte selector of ``signature`` and the encoded arguments."""
    return keccak(text=signature)[:4] + encode(types, args)


class RpcError(Exception):
    def __init__(self, method: str, error: dict[str, Any]) -> None:
        super().__init__(f"{method}: {error.get('message')} ({error.get('code')})")
        self.error = error


_IDS = itertools.count(1)


class Anvil:
    """One anvil process; ``stop()`` it (fixtures do)."""

    def __init__(
        self,
        workdir: Path,
        chain_id: int,
        port: int,
        slots_in_an_epoch: int,
        max_lifetime_secs: float,
    ) -> None:
        self.workdir = workdir
        self.chain_id = chain_id
        self.port = port
        self.slots_in_an_epoch = slots_in_an_epoch
        self.max_lifetime_secs = max_lifetime_secs
        self.log_path = workdir / f"anvil-{chain_id}-{port}.log"
        self.state_path = workdir / f"anvil-{chain_id}-{port}.state.json"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.automine = True

    @classmethod
    def start(
        cls,
        workdir: Path,
        chain_id: int = 31337,
        *,
        slots_in_an_epoch: int = 2,
        max_lifetime_secs: float = 600,
        startup_timeout: float = 20,
    ) -> Anvil:
        workdir.mkdir(parents=True, exist_ok=True)
        chain = cls(workdir, chain_id, free_port(), slots_in_an_epoch, max_lifetime_secs)
        chain._spawn(startup_timeout)
        return chain

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _spawn(self, startup_timeout: float) -> None:
        argv = [
            shutil.which("timeout") or "timeout",
            "-s", "TERM", "-k", "5", f"{self.max_lifetime_secs:g}",
            str(anvil_binary()),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--chain-id", str(self.chain_id),
            "--mnemonic", DEFAULT_MNEMONIC,
            "--slots-in-an-epoch", str(self.slots_in_an_epoch),
            "--state", str(self.state_path),
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts + 1}: {' '.join(argv)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        self.automine = True
        deadline = time.monotonic() + startup_timeout
        while True:
            if not self.running:
                raise RuntimeError(f"anvil exited at start: {self.log_tail()}")
            try:
                if int(self.rpc("eth_chainId"), 16) == self.chain_id:
                    return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(
                    f"anvil did not answer in {startup_timeout} s: {self.log_tail()}"
                )
            time.sleep(0.05)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM (anvil writes its state file), SIGKILL after ``timeout``."""
        proc, self.process = self.process, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def restart(self, startup_timeout: float = 20) -> None:
        """The same chain (its state file) on the same port."""
        self.stop()
        self._spawn(startup_timeout)

    # -- JSON-RPC --

    def rpc(self, method: str, *params: Any, timeout: float = 10) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "id": next(_IDS), "method": method, "params": params})
        req = urllib.request.Request(  # noqa: S310 (the harness's own loopback http URL)
            self.url, data=body.encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            answer = json.loads(resp.read())
        if "error" in answer:
            raise RpcError(method, answer["error"])
        return answer["result"]

    @property
    def accounts(self) -> list[str]:
        """The ten funded accounts of the default mnemonic, checksummed."""
        return [to_checksum_address(a) for a in self.rpc("eth_accounts")]

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def block_hash(self, number: int) -> str:
        return str(self.rpc("eth_getBlockByNumber", hex(number), False)["hash"])

    def mine(self, blocks: int = 1) -> None:
        self.rpc("anvil_mine", hex(blocks))

    def snapshot(self) -> str:
        return str(self.rpc("evm_snapshot"))

    def revert(self, snapshot_id: str) -> bool:
        return bool(self.rpc("evm_revert", snapshot_id))

    def set_automine(self, on: bool) -> None:
        self.rpc("evm_setAutomine", on)
        self.automine = on

    def balance(self, address: str) -> int:
        return int(self.rpc("eth_getBalance", address, "latest"), 16)

    # -- transactions --

    def send(
        self, sender: str, to: str | None, *, value: int = 0, data: bytes = b"", gas: int = 300_000
    ) -> str:
        """eth_sendTransaction from an unlocked account; the transaction hash. With automine
        on (the default) this returns once it is mined."""
        tx: dict[str, Any] = {"from": sender, "value": hex(value), "data": "0x" + data.hex()}
        tx["gas"] = hex(gas)
        if to is not None:
            tx["to"] = to
        tx_hash = str(self.rpc("eth_sendTransaction", tx))
        if self.automine:
            self.wait_receipt(tx_hash)
        return tx_hash

    def wait_receipt(self, tx_hash: str, timeout: float = 10) -> dict[str, Any]:
        """The receipt, once mined (anvil answers eth_sendTransaction before automine has
        written the block)."""
        deadline = time.monotonic() + timeout
        while (receipt := self.receipt(tx_hash)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{tx_hash} not mined after {timeout} s")
            time.sleep(0.01)
        return receipt

    def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        result = self.rpc("eth_getTransactionReceipt", tx_hash)
        return dict(result) if result is not None else None

    def deploy(self, artifact: Artifact, *args: Any, sender: str | None = None) -> str:
        """Deploys ``artifact`` with constructor ``args``; the contract's address."""
        sender = sender or self.accounts[0]
        code = artifact.bytecode + encode(artifact.constructor_types(), list(args))
        tx_hash = self.send(sender, None, data=code, gas=5_000_000)
        receipt = self.receipt(tx_hash)
        if receipt is None or int(receipt["status"], 16) != 1:
            raise RuntimeError(f"deploying {artifact.name} failed: {receipt}")
        return to_checksum_address(receipt["contractAddress"])

    def call(
        self, to: str, signature: str, types: list[str], args: list[Any], out: list[str]
    ) -> Any:
        """eth_call; the decoded return values."""
        raw = self.rpc(
            "eth_call", {"to": to, "data": "0x" + calldata(signature, types, args).hex()}
        )
        return decode(out, bytes.fromhex(raw.removeprefix("0x")))

    def erc20_mint(self, token: str, to: str, amount: int, *, minter: str | None = None) -> str:
        data = calldata("mint(address,uint256)", ["address", "uint256"], [to, amount])
        return self.send(minter or self.accounts[0], token, data=data)

    def erc20_balance(self, token: str, owner: str) -> int:
        return int(self.call(token, "balanceOf(address)", ["address"], [owner], ["uint256"])[0])

    def erc20_transfer(
        self, token: str, sender: str, to: str, amount: int, *, suffix: bytes = b""
    ) -> str:
        """``transfer(to, amount)`` from ``sender`` with ``suffix`` appended to the calldata."""
        data = calldata("transfer(address,uint256)", ["address", "uint256"], [to, amount])
        return self.send(sender, token, data=data + suffix)
