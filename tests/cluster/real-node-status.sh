#!/usr/bin/env bash
# One line: whether the real-node test tier runs on this machine, and if not, why.
# (up.sh records the outcome in $KWOK_WORKDIR/<cluster>.realnode.)
set -euo pipefail
workdir="${DCHAT_CLUSTER_DIR:-${DCHAT_CACHE:-$HOME/.cache/dchat}/clusters}"
status="$(cat "$workdir/${DCHAT_CLUSTER_NAME:-dchat-test}.realnode" 2>/dev/null || echo "skipped: no local test cluster")"
case "$status" in
    ready\ *) echo "real-node tier: runs on node ${status#ready }" ;;
    *) echo "real-node tier: SKIPPED (${status#skipped: })" ;;
esac
