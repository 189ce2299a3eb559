#!/usr/bin/env bash
# `make up`: the local cluster, the CRDs, the operator, a sample DchatCluster.
#
#   scripts/up.sh          bring everything up (idempotent) and print how to watch it
#   scripts/up.sh --down   stop the operator and delete the local cluster
#
# When KUBECONFIG names a reachable cluster, that cluster is used instead of the local one
# (DCHAT_USE_KUBECONFIG=0 forces the local one). The operator runs here as a process (logs in $state/operator.log), not as
# a pod: on kwok's fake nodes no container really runs. To install it in a real cluster,
# use `kubectl apply -k manifests/base` (docs/packaging.md).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
state="${DCHAT_CACHE:-$HOME/.cache/dchat}/up"
ns="${DCHAT_NAMESPACE:-dchat}"
sample="${DCHAT_SAMPLE:-manifests/samples/sqlite.yaml}"
mkdir -p "$state"

log() { printf '[up %s] %s\n' "$(date +%T)" "$*" >&2; }

stop_operator() {
    if [[ -f "$state/operator.pid" ]] && kill -0 "$(cat "$state/operator.pid")" 2>/dev/null; then
        kill "$(cat "$state/operator.pid")" && log "operator stopped"
    fi
    rm -f "$state/operator.pid"
}

if [[ "${1:-}" == "--down" ]]; then
    stop_operator
    tests/cluster/down.sh  # only ever deletes the local kwok cluster
    exit 0
fi

eval "$(tests/cluster/up.sh)"
export KUBECONFIG
bin="$(tests/cluster/build.sh 2>/dev/null || true)"
if [[ -n "$bin" && -x "$bin/kubectl" ]]; then export PATH="$bin:$PATH"; fi

if [[ ! -x .venv/bin/dchat-operator || ! -f crds/dchat.dev_dchatclusters.yaml ]]; then
    log "the cluster is up (KUBECONFIG=$KUBECONFIG), but the operator is not built yet"
    exit 1
fi

log "installing CRDs"
kubectl apply --server-side --field-manager=dchat-up -k crds/ >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata:
  name: $ns
  labels:
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/warn: restricted
    pod-security.kubernetes.io/audit: restricted
YAML

stop_operator
log "starting the operator (log: $state/operator.log)"
nohup .venv/bin/dchat-operator --namespace "$ns" >"$state/operator.log" 2>&1 &
echo $! >"$state/operator.pid"

for f in manifests/samples/*secret*.yaml; do
    [[ "$sample" == *postgres* && -f "$f" ]] && kubectl -n "$ns" apply -f "$f" >/dev/null
done
name="$(kubectl create --dry-run=client -o jsonpath='{.metadata.name}' -f "$sample")"
local_kubeconfig="${DCHAT_CACHE:-$HOME/.cache/dchat}/clusters/${DCHAT_CLUSTER_NAME:-dchat-test}.kubeconfig"
if [[ "$KUBECONFIG" == "$local_kubeconfig" ]]; then
    # kwok's cluster has no volume provisioner: give the SQLite claim a static volume (a
    # real cluster's default StorageClass provisions it instead). Bound by claimRef.
    kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolume
metadata:
  name: dchat-up-$ns-$name-data
spec:
  capacity: {storage: 100Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: /tmp/dchat-up/$ns/$name}
  claimRef: {namespace: $ns, name: $name-data}
YAML
fi
log "applying $sample"
kubectl -n "$ns" apply -f "$sample"
if ! kubectl -n "$ns" wait --for=condition=Ready "dchatcluster/$name" --timeout=180s >/dev/null; then
    log "DchatCluster $name is not Ready after 180 s; operator log tail:"
    tail -n 30 "$state/operator.log" >&2
    exit 1
fi
kubectl -n "$ns" get dchat
cat <<TXT

dchat is up. To watch it:
  export KUBECONFIG=$KUBECONFIG PATH=$bin:\$PATH
  kubectl -n $ns get dchat -w
  kubectl -n $ns get deploy,svc,cm,pvc,pdb,networkpolicy -l app.kubernetes.io/instance=$name
Operator log: $state/operator.log      Stop everything: make down
TXT
