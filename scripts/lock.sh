#!/usr/bin/env bash
# Write the hashed locks from pyproject.toml (`make lock`), or check that they are current.
#
#   scripts/lock.sh                     re-resolve; versions already locked are kept
#   scripts/lock.sh --upgrade           re-resolve to the newest allowed versions
#   scripts/lock.sh --upgrade-package X just X (any `uv pip compile` option passes through)
#   scripts/lock.sh --check             resolve into a temporary directory and compare the
#                                       pins with the committed locks (exit 1 if they differ)
#
# The locks (every line pinned with `==` and `--hash`, installed with --require-hashes):
#   requirements.lock           the dev venv: every extra, the dev tools, uv (scripts/bootstrap.sh)
#   requirements-node.lock      Dockerfile.node:     base + node + build
#   requirements-operator.lock  Dockerfile.operator: base + operator + build
#   requirements-plugin.lock    a kubectl-dchat install: base + plugin + build
# `build` is the build backend (setuptools, wheel): the project itself is installed with
# --no-deps --no-build-isolation after its lock, so nothing unpinned is fetched to build it.
# The per-target locks are constrained by requirements.lock, so each image ships exactly the
# versions the tests ran against. Resolved for CPython 3.11 on the platform that runs this
# (Linux in practice); the hashes cover every file PyPI has for each pinned version.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"

UV="${UV:-$root/.venv/bin/uv}"
TARGETS=(node operator plugin)

check=0
args=()
for arg in "$@"; do
    if [[ $arg == --check ]]; then check=1; else args+=("$arg"); fi
done

common=(--quiet --python-version 3.11 --generate-hashes --custom-compile-command "make lock")

compile_all() {
    # "${args[@]}" only on the first resolution: the others are constrained by its result.
    "$UV" pip compile "${common[@]}" ${args[@]+"${args[@]}"} pyproject.toml \
        --extra dev --extra build -o requirements.lock
    local target
    for target in "${TARGETS[@]}"; do
        "$UV" pip compile "${common[@]}" pyproject.toml --extra "$target" --extra build \
            -c requirements.lock -o "requirements-$target.lock"
    done
}

pins() { grep -E '^[A-Za-z0-9][A-Za-z0-9._-]*==' "$1" | sed 's/ .*//' | tr 'A-Z_' 'a-z-' | sort; }

if ((check == 0)); then
    compile_all
    exit 0
fi

# --check: resolve in a scratch copy (the committed locks are the preferred versions there,
# exactly as in a real `make lock`) and compare name==version pins. Hashes are not compared:
# an index may add a file (a new wheel) to a version already locked, which changes nothing.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp pyproject.toml README.md "$work/"
for f in requirements.lock "${TARGETS[@]/#/requirements-}"; do
    f="${f%.lock}.lock"
    [[ -f $f ]] && cp "$f" "$work/"
done
(cd "$work" && compile_all)
status=0
for f in requirements.lock "${TARGETS[@]/#/requirements-}"; do
    f="${f%.lock}.lock"
    if [[ ! -f $f ]]; then
        echo "lock: $f is missing (run: make lock)" >&2; status=1; continue
    fi
    if ! diff -u <(pins "$f") <(pins "$work/$f") >&2; then
        echo "lock: $f is stale: pyproject.toml resolves differently (run: make lock)" >&2
        status=1
    fi
done
((status == 0)) && echo "lock: requirements*.lock match pyproject.toml"
exit "$status"
