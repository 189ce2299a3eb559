#!/usr/bin/env bash
# Start the dchat test cluster (idempotent) and print `export KUBECONFIG=...`.
#
# A real control plane: etcd, kube-apiserver (admission and RBAC on, so Pod Security and
# CEL rules are enforced), kube-controller-manager and kube-scheduler, run by kwokctl's
# binary runtime from the binaries build.sh made, bound to 127.0.0.1; kwok stands in for
# the kubelets of $DCHAT_CLUSTER_NODES (default 3) fake nodes.
#
# If KUBECONFIG names a reachable cluster (kind, k3d, a real one), nothing is built or
# started: that cluster is used as it is. DCHAT_USE_KUBECONFIG=0 forces the local cluster;
# =1 makes an unreachable KUBECONFIG an error instead of a fallback.
#
# Stages: kwokctl drops ALL default stages once the config has any Stage, so this script
# includes the defaults (node-initialize, node heartbeat with lease, pod ready/complete/
# delete, from the kwok module) plus kwok's node-not-ready chaos stage and our
# dchat-pod-never-ready stage (stages/dchat-faults.yaml).
#
# A real node (realnode.sh): when this machine can run one (root, cgroups, overlay, the
# Debian packages; `realnode.sh check`), a kubelet with containerd joins the cluster as
# `dchat-real-0`, labelled and tainted `dchat.dev/real-node=true` so only pods that ask
# land there. For it the apiserver also listens on the pod bridge (10.88.0.1, fenced to
# loopback + bridge by iptables) and advertises that address, its certificate names the
# `kubernetes` Service IP and the bridge address, it reaches the kubelet by InternalIP
# with a client certificate, and kwok manages only its own nodes. The outcome is written
# to $KWOK_WORKDIR/<name>.realnode: "ready <node>" or "skipped: <reason>"; a machine that
# can run it but fails to start it stops up.sh. DCHAT_REAL_NODE=0 turns it off.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# An existing cluster named by KUBECONFIG wins (unless DCHAT_USE_KUBECONFIG=0): build nothing.
if [[ "${DCHAT_USE_KUBECONFIG:-auto}" != 0 && -n "${KUBECONFIG:-}" ]]; then
    any_kubectl="$(ls "${DCHAT_CACHE:-$HOME/.cache/dchat}"/k8s-*/bin/kubectl 2>/dev/null | tail -1)"
    any_kubectl="${any_kubectl:-$(command -v kubectl || true)}"
    if [[ -n "$any_kubectl" ]] && "$any_kubectl" --kubeconfig "$KUBECONFIG" --request-timeout=5s get --raw /readyz >/dev/null 2>&1; then
        printf '[cluster] using the cluster KUBECONFIG names (%s)\n' "$KUBECONFIG" >&2
        echo "export KUBECONFIG=$KUBECONFIG"
        exit 0
    fi
    if [[ "${DCHAT_USE_KUBECONFIG:-auto}" == 1 ]]; then
        echo "up.sh: DCHAT_USE_KUBECONFIG=1 but the cluster in $KUBECONFIG is not reachable" >&2
        exit 1
    fi
    printf '[cluster] KUBECONFIG=%s is not reachable; starting the local test cluster\n' "$KUBECONFIG" >&2
fi

bin="$("$here/build.sh")"
stages="$(dirname "$bin")/stages"
name="${DCHAT_CLUSTER_NAME:-dchat-test}"
nodes="${DCHAT_CLUSTER_NODES:-3}"
export KWOK_WORKDIR="${DCHAT_CLUSTER_DIR:-${DCHAT_CACHE:-$HOME/.cache/dchat}/clusters}"
kubeconfig="$KWOK_WORKDIR/$name.kubeconfig"
kubectl="$bin/kubectl"
kwokctl="$bin/kwokctl"
mkdir -p "$KWOK_WORKDIR"

log() { printf '[cluster %s] %s\n' "$(date +%T)" "$*" >&2; }

realnode_status="$KWOK_WORKDIR/$name.realnode"
if reason="$("$here/realnode.sh" check)"; then real=1; else real=0; fi

fault_expr='((.metadata.labels["dchat.dev/fault"] // "") == "never-ready") or ([.spec.containers[].image | contains("never-ready")] | any)'
config="$KWOK_WORKDIR/$name.kwokctl.yaml"
{
    cat <<YAML
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  runtime: binary
  bindAddress: 127.0.0.1
  securePort: true
  kubeAuthorization: true
  kubeAdmission: true
  kubeApiserverBinary: $bin/kube-apiserver
  kubeControllerManagerBinary: $bin/kube-controller-manager
  kubeSchedulerBinary: $bin/kube-scheduler
  kubectlBinary: $bin/kubectl
  etcdBinary: $bin/etcd
  kwokControllerBinary: $bin/kwok
  nodeLeaseDurationSeconds: 40
  # kwokctl's default is 200 s; node-loss tests need a node to be marked NotReady quickly.
  kubeControllerManagerNodeMonitorGracePeriodMilliseconds: ${DCHAT_NODE_GRACE_MS:-20000}
YAML
    if ((real)); then
        cat <<YAML
  # the \`kubernetes\` Service IP (first of 10.0.0.0/16) and the bridge address
  kubeApiserverCertSANs: [10.0.0.1, 10.88.0.1]
YAML
    fi
    cat <<YAML
componentsPatches:
  # One controller-manager and one scheduler: no leader election, so a test that freezes the
  # apiserver (SIGSTOP) does not make them lose a lease and exit (kwokctl would not restart
  # them). A /16 Service range: kwokctl's default /24 holds ~250 Services (bench at N=500
  # needs 1,500). OwnerReferencesPermissionEnforcement on, as hardened clusters have it.
  - name: kube-controller-manager
    extraArgs:
      - key: leader-elect
        value: "false"
      # The defaults (20 QPS, 5 workers per controller) made the controller-manager the
      # bottleneck of every many-cluster test: a round of 50 rollouts took ~19 s of which
      # nearly all was its client's rate limiter. Managed clusters raise these too.
      # DCHAT_CM_QPS=20 DCHAT_CM_BURST=30 DCHAT_CM_WORKERS=5: a stock kubeadm controller-manager
      # (the operator benchmark's published numbers, docs/operator.md).
      - key: kube-api-qps
        value: "${DCHAT_CM_QPS:-100}"
      - key: kube-api-burst
        value: "${DCHAT_CM_BURST:-200}"
      - key: concurrent-deployment-syncs
        value: "${DCHAT_CM_WORKERS:-20}"
      - key: concurrent-replicaset-syncs
        value: "${DCHAT_CM_WORKERS:-20}"
      # kwokctl checks nodes every 25 s; upstream's 5 s, which the node-loss test measures
      # against. kwokctl's grace period (100 s) stays: at upstream's 50 s, kwok's lease
      # renewals on a busy 2-core machine came late and healthy fake nodes went NotReady.
      - key: node-monitor-period
        value: 5s
  - name: kube-scheduler
    extraArgs:
      - key: leader-elect
        value: "false"
  - name: kube-apiserver
    extraArgs:
      - key: service-cluster-ip-range
        value: 10.0.0.0/16
      # as on clusters that restrict who may set blockOwnerDeletion: the operator must work
      - key: enable-admission-plugins
        value: OwnerReferencesPermissionEnforcement
YAML
    if ((real)); then
        pki="$KWOK_WORKDIR/clusters/$name/pki"
        cat <<YAML
      # the real node (realnode.sh): pods reach the apiserver at the bridge address
      - key: bind-address
        value: 0.0.0.0
        override: true
      - key: advertise-address
        value: 10.88.0.1
      - key: kubelet-preferred-address-types
        value: InternalIP
      - key: kubelet-client-certificate
        value: $pki/admin.crt
      - key: kubelet-client-key
        value: $pki/admin.key
  - name: kwok-controller
    extraArgs:
      - key: manage-all-nodes
        value: "false"
      - key: manage-nodes-with-annotation-selector
        value: kwok.x-k8s.io/node=fake
YAML
    fi
    for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
             pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml node/chaos/node-not-ready.yaml; do
        echo "---"
        cat "$stages/$f"
    done
    echo "---"
    # kwok's pod-ready, minus the pods our fault stage owns.
    awk -v expr="$fault_expr" '
        { print }
        /^    matchExpressions:/ && !done {
            print "    - key: '\''" expr "'\''"
            print "      operator: '\''NotIn'\''"
            print "      values:"
            print "      - '\''true'\''"
            done = 1
        }' "$stages/pod/fast/pod-ready.yaml"
    echo "---"
    sed "s|@FAULT_EXPR@|$(printf '%s' "$fault_expr" | sed 's/[&|]/\\&/g')|" "$here/stages/dchat-faults.yaml"
} >"$config.new"

start_real_node() {
    if ((!real)); then
        echo "skipped: $reason" >"$realnode_status"
        log "real node skipped: $reason"
        return 0
    fi
    local node t0=$SECONDS
    if node="$("$here/realnode.sh" up "$kubeconfig")"; then
        echo "ready $node" >"$realnode_status"
        log "real node $node Ready ($((SECONDS - t0)) s)"
    else
        # This machine can run one (the check passed), so a failure is a bug to see, not a
        # reason to skip: stop here (DCHAT_REAL_NODE=0 runs without the real node).
        echo "failed: realnode.sh up (log: $KWOK_WORKDIR/realnode-$name)" >"$realnode_status"
        log "the real node failed to start (log: $KWOK_WORKDIR/realnode-$name); DCHAT_REAL_NODE=0 skips it"
        exit 1
    fi
}

# Reuse a running cluster made from the same configuration; otherwise (a stale cluster after a
# reboot, or a configuration this script no longer writes) remove it and start over.
if [[ -s "$kubeconfig" ]] && cmp -s "$config" "$config.new" \
    && "$kubectl" --kubeconfig "$kubeconfig" --request-timeout=3s get --raw /readyz >/dev/null 2>&1; then
    rm -f "$config.new"
    log "cluster $name already running"
    start_real_node
    echo "export KUBECONFIG=$kubeconfig"
    exit 0
fi
"$kwokctl" delete cluster --name "$name" >/dev/null 2>&1 || true
((!real)) || "$here/realnode.sh" down 2>/dev/null || true
for d in /run/dchat-realnode-[1-9]; do  # a second real node a test left behind
    [[ -d $d ]] && { DCHAT_REAL_NODE_INDEX="${d##*-}" "$here/realnode.sh" down 2>/dev/null || true; }
done
mv "$config.new" "$config"

t0=$SECONDS
log "creating cluster $name (workdir $KWOK_WORKDIR)"
"$kwokctl" create cluster --name "$name" --config "$config" --kubeconfig "" --wait 2m >&2
"$kwokctl" get kubeconfig --name "$name" >"$kubeconfig"
"$kwokctl" scale node --name "$name" --replicas "$nodes" >&2
"$kubectl" --kubeconfig "$kubeconfig" wait --for=condition=Ready node --all --timeout=60s >&2
log "cluster $name up with $nodes nodes in $((SECONDS - t0)) s"
start_real_node
echo "export KUBECONFIG=$kubeconfig"
