#!/usr/bin/env bash
# Stop and delete the dchat test cluster started by up.sh.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="$("$here/build.sh")"
name="${DCHAT_CLUSTER_NAME:-dchat-test}"
export KWOK_WORKDIR="${DCHAT_CLUSTER_DIR:-${DCHAT_CACHE:-$HOME/.cache/dchat}/clusters}"
"$bin/kwokctl" delete cluster --name "$name"
rm -f "$KWOK_WORKDIR/$name.kubeconfig"
# The real node's kubelet, kube-proxy, containerd and containers (if this machine ran one).
if [[ $(id -u) == 0 && -d /run/dchat-realnode ]]; then "$here/realnode.sh" down; fi
# a second real node a test started (and an interrupted run left behind)
for d in /run/dchat-realnode-[1-9]; do
    [[ $(id -u) == 0 && -d $d ]] && DCHAT_REAL_NODE_INDEX="${d##*-}" "$here/realnode.sh" down
done
rm -f "$KWOK_WORKDIR/$name.realnode"
