"""The contract pipeline: scripts/compile-contracts.mjs with the npm toolchain of `make chain`.

The harness and the compile script compute the artifact directory each on its own; these
tests keep them in step, and show that a broken source fails the step with solc's message.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness.chain import CONTRACTS, REPO, artifacts_dir, load_artifact, toolchain_dir

pytestmark = pytest.mark.integration

SCRIPT = REPO / "scripts" / "compile-contracts.mjs"


def compile_into(parent: Path, sources: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = ["node", str(SCRIPT), str(toolchain_dir()), str(parent)]
    if sources is not None:
        argv.append(str(sources))
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_harness_finds_the_directory_the_script_writes() -> None:
    done = compile_into(artifacts_dir().parent)  # warm: finds its stamp, compiles nothing
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == artifacts_dir()
    token = load_artifact("TestToken")
    names = {item.get("name") for item in token.abi}
    assert {"transfer", "mint", "balanceOf", "Transfer"} <= names
    assert token.constructor_types() == ["string", "string"]
    assert len(token.bytecode) > 1000


def test_a_changed_source_gets_new_artifacts_and_a_broken_one_fails(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(CONTRACTS / "package.json", src)
    (src / "Tiny.sol").write_text(
        "// SPDX-License-Identifier: Apache-2.0\npragma solidity 0.8.37;\n"
        "contract Tiny { function one() external pure returns (uint256) { return 1; } }\n"
    )
    first = compile_into(tmp_path / "out", src)
    assert first.returncode == 0, first.stderr
    out = Path(first.stdout.strip())
    artifact = json.loads((out / "Tiny.json").read_text())
    assert artifact["abi"][0]["name"] == "one"
    assert artifact["compiler"].startswith("0.8.37+")

    (src / "Tiny.sol").write_text((src / "Tiny.sol").read_text().replace("return 1", "return 2"))
    second = compile_into(tmp_path / "out", src)
    assert second.returncode == 0, second.stderr
    assert Path(second.stdout.strip()) != out  # keyed by the sources' hash

    (src / "Broken.sol").write_text("pragma solidity 0.8.37;\ncontract Broken { uint x = ; }\n")
    broken = compile_into(tmp_path / "out", src)
    assert broken.returncode == 1
    assert "ParserError" in broken.stderr
    assert broken.stdout == ""
