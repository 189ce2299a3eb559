#!/usr/bin/env node
// Compiles every contracts/*.sol with the pinned solc-js into ABI + bytecode artifacts.
//
//   node scripts/compile-contracts.mjs TOOLCHAIN_DIR CACHE_PARENT [SOURCE_DIR]
//
// TOOLCHAIN_DIR is what `scripts/bootstrap.sh chain` installed (node_modules/solc);
// the artifacts go to CACHE_PARENT/contracts-<key>/<Contract>.json, where key is the first
// 16 hex digits of sha256("solc <version>\n" + for each source sorted by file name:
// "<file name>\n<sha256 of its bytes>\n"); <version> is solc's pinned version from
// contracts/package.json. tests/harness/chain.py computes the same key. A complete directory
// has a .complete stamp: a warm run hashes the sources and exits without loading solc.
// Prints the artifact directory on stdout. Compiler errors fail the run with solc's messages.
// SOURCE_DIR (default: the repo's contracts/, with its package.json) is for the tests.
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const EVM_VERSION = "cancun";
const OPTIMIZER_RUNS = 200;

const [toolchain, parent, sourceArg] = process.argv.slice(2);
if (!toolchain || !parent) {
  console.error("usage: compile-contracts.mjs TOOLCHAIN_DIR CACHE_PARENT");
  process.exit(2);
}
const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const srcDir = sourceArg ? path.resolve(sourceArg) : path.join(repo, "contracts");
const solcVersion = JSON.parse(readFileSync(path.join(srcDir, "package.json"), "utf8"))
  .dependencies.solc;
const files = readdirSync(srcDir).filter((f) => f.endsWith(".sol")).sort();
if (files.length === 0) {
  console.error(`no .sol files in ${srcDir}`);
  process.exit(1);
}
const sha256 = (data) => createHash("sha256").update(data).digest("hex");
const sources = Object.fromEntries(files.map((f) => [f, readFileSync(path.join(srcDir, f))]));
let keyText = `solc ${solcVersion}\n`;
for (const f of files) keyText += `${f}\n${sha256(sources[f])}\n`;
const outDir = path.join(parent, `contracts-${sha256(keyText).slice(0, 16)}`);

if (!existsSync(path.join(outDir, ".complete"))) {
  const require = createRequire(path.join(path.resolve(toolchain), "node_modules", "x.js"));
  const solc = require("solc");
  const input = {
    language: "Solidity",
    sources: Object.fromEntries(files.map((f) => [f, { content: sources[f].toString("utf8") }])),
    settings: {
      evmVersion: EVM_VERSION,
      optimizer: { enabled: true, runs: OPTIMIZER_RUNS },
      outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  const errors = (output.errors ?? []).filter((e) => e.severity === "error");
  for (const e of output.errors ?? []) console.error(e.formattedMessage.trimEnd());
  if (errors.length) process.exit(1);
  const tmp = `${outDir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  for (const [file, contracts] of Object.entries(output.contracts)) {
    for (const [name, c] of Object.entries(contracts)) {
      const artifact = {
        contractName: name,
        sourceName: file,
        compiler: solc.version(),
        evmVersion: EVM_VERSION,
        abi: c.abi,
        bytecode: `0x${c.evm.bytecode.object}`,
        deployedBytecode: `0x${c.evm.deployedBytecode.object}`,
      };
      writeFileSync(path.join(tmp, `${name}.json`), `${JSON.stringify(artifact, null, 1)}\n`);
    }
  }
  writeFileSync(path.join(tmp, ".complete"), `${keyText}`);
  rmSync(outDir, { recursive: true, force: true });
  renameSync(tmp, outDir);
}
process.stdout.write(`${outDir}\n`);
