#!/usr/bin/env bash
# `make up`: the local cluster, the CRDs, the operator, a sample DchatCluster.
#
#   scripts/up.sh          bring everything up (idempotent) and print how to watch it
#   scripts/up.sh --down   stop the operator and delete the local cluster
#
# When KUBECONFIG names a reachable cluster, that cluster is used instead of the local one
# (DCHAT_USE_KUBECONFIG=0 forces the local one). The operator runs here as a process (logs
# in $state/operator.log); to install it in a cluster from its image, use
# `kubectl apply --server-side -k manifests/base` (docs/packaging.md).
#
# When the local cluster has its real node (tests/cluster/realnode.sh: root, cgroups,
# overlay), the sample's pods run there from the node image built on this machine
# (tests/cluster/images.sh): a JWT key in a Secret, the sample scheduled onto the real node
# with the local image, and at the end the Service address and one curl that creates a
# channel with a token minted from that key (kept in $state/token, mode 600). Without a
# real node the pods land on kwok's fake nodes: Ready, but nothing runs.
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
realnode_status="${DCHAT_CACHE:-$HOME/.cache/dchat}/clusters/${DCHAT_CLUSTER_NAME:-dchat-test}.realnode"
real=""
if [[ "$KUBECONFIG" == "$local_kubeconfig" && "$(cat "$realnode_status" 2>/dev/null)" == ready\ * ]]; then
    real="$(awk '{print $2}' "$realnode_status")"
fi
if [[ "$KUBECONFIG" == "$local_kubeconfig" ]]; then
    # kwok's cluster has no volume provisioner: give the SQLite claim a static volume (a
    # real cluster's default StorageClass provisions it instead). Bound by claimRef; on the
    # real node the directory belongs to the node's uid, as a provisioner's volume would.
    mkdir -p "/tmp/dchat-up/$ns/$name"
    [[ -z "$real" ]] || chown 1000:1000 "/tmp/dchat-up/$ns/$name"
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
if [[ -n "$real" ]]; then
    # A JWT key for the sample (kept across runs), and the sample sent to the real node.
    if ! kubectl -n "$ns" get secret dchat-up-jwt >/dev/null 2>&1; then
        kubectl -n "$ns" create secret generic dchat-up-jwt \
            --from-literal=secret="$(openssl rand -hex 32)" >/dev/null
    fi
    log "applying $sample on the real node $real"
    .venv/bin/python - "$sample" <<'PY' | kubectl -n "$ns" apply -f -
import json, sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if not doc or doc.get("kind") != "DchatCluster":
        continue
    spec = doc["spec"]
    spec.setdefault("image", {})["pullPolicy"] = "Never"
    spec.setdefault("security", {})["jwtSecretRef"] = {"name": "dchat-up-jwt", "key": "secret"}
    sched = spec.setdefault("scheduling", {})
    sched.setdefault("nodeSelector", {})["dchat.dev/real-node"] = "true"
    sched.setdefault("tolerations", []).append(
        {"key": "dchat.dev/real-node", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    )
    print(json.dumps(doc))
PY
else
    log "applying $sample"
    kubectl -n "$ns" apply -f "$sample"
fi
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
if [[ -n "$real" ]]; then
    kubectl -n "$ns" get pods -l "app.kubernetes.io/instance=$name" -o wide
    api="$(kubectl -n "$ns" get svc "$name-api" -o jsonpath='{.spec.clusterIP}:{.spec.ports[0].port}')"
    # kube-proxy programs the Service a moment after the pod is Ready: wait until it answers.
    for _ in $(seq 40); do
        curl -sf -o /dev/null --max-time 2 "http://$api/api/v1/channels" && break
        sleep 0.5
    done
    # A token for the sample's key, valid 12 hours, readable only by you.
    key="$(kubectl -n "$ns" get secret dchat-up-jwt -o jsonpath='{.data.secret}' | base64 -d)"
    (umask 077; DCHAT_UP_KEY="$key" .venv/bin/python -c '
import os, time, jwt
claims = {"sub": "make-up", "iss": "dchat", "scope": "chat:write", "exp": int(time.time()) + 43200}
print(jwt.encode(claims, os.environ["DCHAT_UP_KEY"], algorithm="HS256"))' >"$state/token")
    cat <<TXT

The pods run on the real node $real. The API answers at its Service, http://$api
(kube-proxy routes it from this machine). Create a channel:
  curl -s -X POST http://$api/api/v1/channels -H "Authorization: Bearer \$(cat $state/token)" \\
       -H 'Content-Type: application/json' -d '{"name": "general"}'
  curl -s http://$api/api/v1/channels
TXT
else
    echo "(no real node on this machine: the pods are on kwok's fake nodes and do not run)"
fi
