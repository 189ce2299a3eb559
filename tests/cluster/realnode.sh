#!/usr/bin/env bash
# A real node in the test cluster, beside kwok's fake nodes: containerd + runc + CNI bridge,
# the kubelet and kube-proxy built from the pinned Kubernetes module (build.sh), running the
# project's own images (images.sh). Pods on it really run, probes really hit /health and
# /ready, and Services really route to them.
#
#   realnode.sh check            exit 0 when this machine can run a real node, else print
#                                the reason on stdout and exit 3 (callers skip the tier)
#   realnode.sh up KUBECONFIG    start (or keep) the node; idempotent, prints the node name
#   realnode.sh down             stop kubelet, kube-proxy, containerd and every container
#   realnode.sh kill             the machine dies at once: kubelet, containers and runtime
#                                SIGKILLed, the pods' network namespaces gone (no clean-up,
#                                nothing reported to the cluster; `down` cleans up after it)
#
# A second (third...) real node for tests that need two machines (a SQLite failover from one
# real node to another): DCHAT_REAL_NODE_INDEX=1 realnode.sh up|kill|down. It is node
# `dchat-real-<index>` with its own containerd (root, socket, images), kubelet (root dir,
# ports, cgroup root `/dchat-real-<index>`) and its own slice of the pod addresses on the same
# bridge; kube-proxy and CoreDNS are the host's, shared with node 0 (one network namespace).
# Only node 0 is started by the cluster; tests start and remove the others.
#
# Layout (nothing of it in the checkout):
#   $DCHAT_CACHE/realnode/containerd   containerd's root: images imported once per archive
#   /run/dchat-realnode                containerd's socket and state, pid files
#   $KWOK_WORKDIR/realnode-<cluster>   certificates, configs and logs of this cluster's node
#
# Networking, and why: one Linux bridge `dchat0` with 10.88.0.1/16 (the CNI bridge plugin
# with host-local IPAM puts pods on it). The bridge is made here, before any pod, so the
# harness can bind its own services (PostgreSQL, S3) to 10.88.0.1 as well as loopback:
# that is the one host address pods reach. kube-proxy in iptables mode (the same module
# build as the control plane, so Service semantics are the real ones: ClusterIP, session
# affinity, endpoints following readiness) routes Services to pods; the `kubernetes`
# Service points at the apiserver through its advertise address 10.88.0.1, so in-cluster
# clients (the operator's own pod) work as in any cluster. Pods are fenced in: forwarding
# from the bridge to anywhere but the bridge is dropped, and the apiserver port answers only
# on loopback and the bridge. No NetworkPolicy enforcement (the bridge plugin has none).
# Cluster DNS: CoreDNS (built from its Go module by build.sh) with its kubernetes plugin
# serves cluster.local on 10.88.0.1:53 (the kubelet's clusterDNS), as system:coredns with
# the read rights its upstream manifest gives it, so `<svc>.<ns>.svc` resolves in pods.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${DCHAT_CACHE:-$HOME/.cache/dchat}"
name="${DCHAT_CLUSTER_NAME:-dchat-test}"
workdir="${DCHAT_CLUSTER_DIR:-$cache/clusters}"
index="${DCHAT_REAL_NODE_INDEX:-0}"
[[ "$index" =~ ^[0-9]$ ]] || { echo "DCHAT_REAL_NODE_INDEX must be 0-9" >&2; exit 2; }
bridge=dchat0
gw=10.88.0.1
pod_cidr=10.88.0.0/16
if ((index == 0)); then
    node="${DCHAT_REAL_NODE_NAME:-dchat-real-0}"
    run=/run/dchat-realnode
    ctrd_root="$cache/realnode/containerd"
    state="$workdir/realnode-$name"
    kubelet_root=/var/lib/dchat-kubelet
    kubelet_port=10250 healthz_port=10248 cgroup_root=/
else
    node="dchat-real-$index"
    run="/run/dchat-realnode-$index"
    ctrd_root="$cache/realnode/containerd-$index"
    state="$workdir/realnode-$name-$index"
    kubelet_root="/var/lib/dchat-kubelet-$index"
    kubelet_port=$((10270 + 2 * index)) healthz_port=$((10271 + 2 * index))
    cgroup_root="/dchat-real-$index"
fi
# each node's pods get their own slice of the bridge's /16: 10.88.<100i+1..100i+99>.x
ip_first="10.88.$((index * 100 + 1)).1" ip_last="10.88.$((index * 100 + 99)).254"
sock="$run/containerd.sock"

log() { printf '[realnode %s] %s\n' "$(date +%T)" "$*" >&2; }

check() {
    # Everything a real node needs on this machine; the first thing missing is the reason.
    [[ "${DCHAT_REAL_NODE:-auto}" != 0 ]] || { echo "DCHAT_REAL_NODE=0"; return 3; }
    [[ $(id -u) == 0 ]] || { echo "not root (containerd and the kubelet need root)"; return 3; }
    local c
    for c in containerd containerd-shim-runc-v2 runc ctr podman iptables conntrack ip; do
        command -v "$c" >/dev/null || { echo "$c is not installed (scripts/bootstrap.sh deps installs it as root)"; return 3; }
    done
    [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] \
        || { echo "CNI plugins missing in /usr/lib/cni (Debian containernetworking-plugins)"; return 3; }
    [[ -d /sys/fs/cgroup/memory || -f /sys/fs/cgroup/cgroup.controllers ]] \
        || { echo "no memory cgroup at /sys/fs/cgroup"; return 3; }
    grep -qw overlay /proc/filesystems || { echo "no overlay filesystem in this kernel"; return 3; }
    [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || modprobe br_netfilter 2>/dev/null \
        || { echo "no br_netfilter (Services could not reach pods on the bridge)"; return 3; }
    return 0
}

stop_pid() {  # stop_pid NAME: TERM, then KILL after 10 s
    local f="$run/$1.pid" pid
    [[ -f $f ]] || return 0
    pid="$(cat "$f")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

alive() { [[ -f "$run/$1.pid" ]] && kill -0 "$(cat "$run/$1.pid")" 2>/dev/null; }

ctr_() { ctr --address "$sock" -n k8s.io "$@"; }

has_image() {  # has_image REF (no `ctr ... | grep -q`: with pipefail grep's early exit fails it)
    [[ $'\n'"$(ctr_ images ls -q)"$'\n' == *$'\n'"$1"$'\n'* ]]
}

node_netns() {  # the network namespaces of this node's running tasks (pods' sandboxes)
    local pid
    for pid in $(ctr_ tasks ls 2>/dev/null | awk 'NR > 1 {print $2}'); do
        ip netns identify "$pid" 2>/dev/null || true
    done | sort -u | sed '/^$/d'
}

kill_node() {
    # The machine dies: nothing stops cleanly, nothing tells the cluster. The network
    # namespaces go too, so the pods' addresses stop answering (as a powered-off machine's).
    local netns id pid
    netns="$(node_netns)"
    [[ -f "$run/kubelet.pid" ]] && kill -9 "$(cat "$run/kubelet.pid")" 2>/dev/null || true
    for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    for pid in $(pgrep -f -- "-address $sock" || true); do kill -9 "$pid" 2>/dev/null || true; done
    [[ -f "$run/containerd.pid" ]] && kill -9 "$(cat "$run/containerd.pid")" 2>/dev/null || true
    echo "$netns" >>"$run/dead-netns"
    for id in $netns; do ip netns delete "$id" 2>/dev/null || true; done
    log "node $node killed"
}

down() {
    stop_pid coredns
    stop_pid kube-proxy
    stop_pid kubelet
    # a killed node: its containerd comes back once to clean up the dead tasks' containers
    if ((index > 0)) && ! alive containerd && [[ -f "$state/containerd.toml" ]]; then
        start_containerd || true
    fi
    local netns=""
    if alive containerd; then
        netns="$(node_netns)"
        # The shims outlive containerd: kill every task first, then the containers.
        local id
        for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
        sleep 1
        for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true; done
        for id in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$id" >/dev/null 2>&1 || true; done
    fi
    stop_pid containerd
    # Sandboxes' network namespaces and host-local leases die with their pods. Node 0 owns
    # the host's namespaces; another node removes only its own.
    rm -rf "$run/cni-ipam"
    if ((index == 0)); then
        ip -all netns delete 2>/dev/null || true
    else
        local id
        for id in $netns $(cat "$run/dead-netns" 2>/dev/null || true); do ip netns delete "$id" 2>/dev/null || true; done
        rm -f "$run/dead-netns"
        # the kubelet's volume mounts (secrets, projected tokens) outlive a killed kubelet,
        # and it bind-mounts its root directory onto itself
        awk -v r="$kubelet_root" '$2 == r || index($2, r "/") == 1 {print $2}' /proc/mounts | sort -r \
            | while read -r m; do umount -l "$m" 2>/dev/null || true; done
        rm -rf "$kubelet_root"
    fi
    log "real node $node stopped"
}

ensure_network() {
    if ! ip link show "$bridge" >/dev/null 2>&1; then
        ip link add "$bridge" type bridge
    fi
    [[ "$(ip -4 addr show dev "$bridge")" == *"inet $gw/"* ]] || ip addr add "$gw/16" dev "$bridge"
    ip link set "$bridge" up
    modprobe br_netfilter 2>/dev/null || true
    sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
    # Pods talk to each other, to Services and to this machine's bridge address, nowhere else.
    iptables -C FORWARD -i "$bridge" ! -o "$bridge" -j DROP 2>/dev/null \
        || iptables -I FORWARD -i "$bridge" ! -o "$bridge" -j DROP
}

fence_apiserver() {  # fence_apiserver PORT: answer on loopback and the bridge only
    local port=$1 chain=DCHAT-APISERVER
    iptables -N "$chain" 2>/dev/null || iptables -F "$chain"
    iptables -A "$chain" -i lo -j RETURN
    iptables -A "$chain" -i "$bridge" -j RETURN
    iptables -A "$chain" -j DROP
    # one jump, for this cluster's port (an earlier cluster's jump is replaced)
    iptables -S INPUT | { grep -- "-j $chain" || true; } | sed 's/^-A /-D /' | while read -r rule; do
        eval "iptables $rule"
    done
    iptables -I INPUT -p tcp --dport "$port" -j "$chain"
}

write_configs() {
    local pki=$1 server=$2 cgroup_line=""
    [[ "$cgroup_root" == / ]] || cgroup_line=$'\n'"cgroupRoot: $cgroup_root"
    mkdir -p "$state" "$run" "$ctrd_root" "$state/cni"
    cat >"$state/containerd.toml" <<TOML
version = 2
root = "$ctrd_root"
state = "$run/state"
[grpc]
  address = "$sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  # This VM lacks CAP_SYS_RESOURCE: without it every sandbox fails to start.
  restrict_oom_score_adj = true
  enable_unprivileged_ports = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$state/cni"
TOML
    cat >"$state/cni/10-dchat.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "dchat",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$pod_cidr", "gateway": "$gw", "rangeStart": "$ip_first", "rangeEnd": "$ip_last"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$run/cni-ipam"
      }
    }
  ]
}
JSON
    # Identities signed by the cluster CA: the kubelet as system:node:<name> (the Node
    # authorizer's rules apply to it), kube-proxy as system:kube-proxy (bound to
    # system:node-proxier by the bootstrap RBAC policy), and the kubelet's serving
    # certificate for 10.88.0.1, the address the apiserver reaches it at.
    issue "$pki" kubelet-client "/O=system:nodes/CN=system:node:$node" clientAuth ""
    issue "$pki" kube-proxy "/CN=system:kube-proxy" clientAuth ""
    issue "$pki" coredns "/CN=system:coredns" clientAuth ""
    issue "$pki" kubelet-serving "/CN=$node" serverAuth "IP:$gw,DNS:$node"
    kubeconfig "$pki" "$server" kubelet-client >"$state/kubelet.kubeconfig"
    kubeconfig "$pki" "$server" kube-proxy >"$state/kube-proxy.kubeconfig"
    kubeconfig "$pki" "$server" coredns >"$state/coredns.kubeconfig"
    cat >"$state/Corefile" <<COREFILE
.:53 {
    bind $gw
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $state/coredns.kubeconfig
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 5
}
COREFILE
    cat >"$state/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $gw
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $healthz_port${cgroup_line}
tlsCertFile: $state/kubelet-serving.crt
tlsPrivateKeyFile: $state/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization:
  mode: Webhook
# This VM: cgroup v1 without systemd.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$sock
imageServiceEndpoint: unix://$sock
registerWithTaints:
  - {key: dchat.dev/real-node, value: "true", effect: NoSchedule}
maxPods: 30
serializeImagePulls: false
# Images are imported, never pulled: image GC must not delete them, and a full-ish disk of
# the build machine must not evict test pods.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
syncFrequency: 10s
nodeStatusReportFrequency: 10s
resolvConf: /etc/resolv.conf
clusterDNS: [$gw]
clusterDomain: cluster.local
YAML
}

issue() {  # issue PKI NAME SUBJECT EKU SAN: a key and a certificate signed by the cluster CA
    local pki=$1 n=$2 subj=$3 eku=$4 san=$5 ext
    [[ -s "$state/$n.crt" ]] && openssl verify -CAfile "$pki/ca.crt" "$state/$n.crt" >/dev/null 2>&1 && return 0
    ext="$(mktemp)"
    {
        echo "basicConstraints=CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$eku"
        [[ -n "$san" ]] && echo "subjectAltName=$san"
    } >"$ext"
    openssl req -new -newkey rsa:2048 -nodes -keyout "$state/$n.key" -subj "$subj" \
        -out "$state/$n.csr" 2>/dev/null
    openssl x509 -req -in "$state/$n.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
        -CAcreateserial -days 365 -extfile "$ext" -out "$state/$n.crt" 2>/dev/null
    chmod 600 "$state/$n.key"
    rm -f "$ext" "$state/$n.csr"
}

kubeconfig() {  # kubeconfig PKI SERVER NAME
    cat <<YAML
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {certificate-authority: $1/ca.crt, server: "$2"}
users:
- name: $3
  user: {client-certificate: $state/$3.crt, client-key: $state/$3.key}
contexts:
- name: local
  context: {cluster: local, user: $3}
current-context: local
YAML
}

start_containerd() {
    alive containerd && return 0
    log "starting containerd ($(containerd --version | awk '{print $3}'))"
    nohup containerd --config "$state/containerd.toml" >"$state/containerd.log" 2>&1 &
    echo $! >"$run/containerd.pid"
    for _ in $(seq 100); do ctr --address "$sock" version >/dev/null 2>&1 && return 0; sleep 0.1; done
    log "containerd did not start; log tail:"; tail -n 20 "$state/containerd.log" >&2
    return 1
}

import_images() {
    # images.sh prints "<ref> <oci archive>" per image; an archive is imported once (its name
    # carries the hash of what the image is built from). Imported here and checked by ref,
    # so images.sh's own throw-away-containerd check is skipped (--no-verify).
    local ref archive stamp
    while read -r ref archive; do
        [[ -n "$ref" ]] || continue
        stamp="$ctrd_root/imported-$(basename "$archive")"
        if [[ -f "$stamp" ]] && has_image "$ref"; then continue; fi
        local t0=$SECONDS
        ctr_ images import --no-unpack=false "$archive" >/dev/null
        has_image "$ref" || { log "import of $archive did not give $ref"; return 1; }
        touch "$stamp"
        log "imported $ref in $((SECONDS - t0)) s"
    done
}

start_kubelet() {
    local bin=$1
    alive kubelet && return 0
    log "starting kubelet $node"
    mkdir -p "$kubelet_root"
    if [[ "$cgroup_root" != / ]]; then  # its own cgroup root in every v1 hierarchy
        local h
        for h in /sys/fs/cgroup/*/; do
            [[ -f "$h/cgroup.procs" ]] || continue
            mkdir -p "$h${cgroup_root#/}"
            if [[ -f "$h/cpuset.cpus" && -z "$(cat "$h${cgroup_root#/}/cpuset.cpus")" ]]; then
                cat "$h/cpuset.cpus" >"$h${cgroup_root#/}/cpuset.cpus"
                cat "$h/cpuset.mems" >"$h${cgroup_root#/}/cpuset.mems"
            fi
        done
    fi
    nohup "$bin/kubelet" --config "$state/kubelet.yaml" --kubeconfig "$state/kubelet.kubeconfig" \
        --hostname-override "$node" --node-ip "$gw" --root-dir "$kubelet_root" \
        --node-labels "dchat.dev/real-node=true" --v=1 >"$state/kubelet.log" 2>&1 &
    echo $! >"$run/kubelet.pid"
}

start_coredns() {  # start_coredns BIN KUBECONFIG(admin): its read rights, then the server
    local bin=$1 admin=$2
    alive coredns && return 0
    "$bin/kubectl" --kubeconfig "$admin" apply -f - >/dev/null <<'RBAC'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
  - {apiGroups: [""], resources: [endpoints, services, pods, namespaces], verbs: [list, watch]}
  - {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects:
  - {apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:coredns"}
RBAC
    log "starting coredns on $gw:53"
    nohup "$bin/coredns" -conf "$state/Corefile" >"$state/coredns.log" 2>&1 &
    echo $! >"$run/coredns.pid"
}

start_kube_proxy() {
    local bin=$1
    alive kube-proxy && return 0
    log "starting kube-proxy (iptables)"
    nohup "$bin/kube-proxy" --kubeconfig "$state/kube-proxy.kubeconfig" --hostname-override "$node" \
        --proxy-mode iptables --cluster-cidr "$pod_cidr" --nodeport-addresses "$pod_cidr" \
        --conntrack-max-per-core 0 --metrics-bind-address 127.0.0.1:10249 \
        --healthz-bind-address 127.0.0.1:10256 --v=1 >"$state/kube-proxy.log" 2>&1 &
    echo $! >"$run/kube-proxy.pid"
}

up() {
    local kubeconfig=$1 bin pki server port
    bin="$("$here/build.sh")"
    pki="$(dirname "$kubeconfig")/clusters/$name/pki"
    [[ -f "$pki/ca.key" ]] || pki="$workdir/clusters/$name/pki"
    server="$(awk '/server:/ {print $2; exit}' "$kubeconfig")"
    port="${server##*:}"
    local k=("$bin/kubectl" --kubeconfig "$kubeconfig")
    # A node from an earlier cluster (other CA, other apiserver) is restarted from scratch.
    if [[ -f "$state/cluster-id" && "$(cat "$state/cluster-id")" != "$(sha256sum <"$pki/ca.crt")" ]]; then
        log "the cluster was re-created: restarting the real node"
        down
        rm -rf "$state"
    fi
    mkdir -p "$state" "$run"
    sha256sum <"$pki/ca.crt" >"$state/cluster-id"
    ensure_network
    ((index > 0)) || fence_apiserver "$port"
    local before
    before="$(cat "$state/kubelet.yaml" 2>/dev/null || true)"
    write_configs "$pki" "$server"
    if alive kubelet && [[ "$(cat "$state/kubelet.yaml")" != "$before" ]]; then
        log "the kubelet's configuration changed: restarting it"
        stop_pid kubelet
    fi
    start_containerd
    if [[ "${DCHAT_REAL_NODE_IMAGES:-1}" == 1 ]]; then "$here/images.sh" --no-verify | import_images; fi
    start_kubelet "$bin"
    if ((index == 0)); then  # the host's: one network namespace, one set of Service rules
        start_kube_proxy "$bin"
        start_coredns "$bin" "$kubeconfig"
    fi
    for _ in $(seq 60); do "${k[@]}" get "node/$node" >/dev/null 2>&1 && break; sleep 1; done
    if ! "${k[@]}" wait --for=condition=Ready "node/$node" --timeout=90s >/dev/null 2>&1; then
        log "node $node is not Ready after 90 s; kubelet log tail:"
        tail -n 30 "$state/kubelet.log" >&2
        return 1
    fi
    echo "$node"
}

cmd="${1:-}"
case "$cmd" in
    check) reason="$(check)" && exit 0; echo "$reason"; exit 3 ;;
    up) [[ $# == 2 ]] || { echo "usage: realnode.sh up KUBECONFIG" >&2; exit 2; }; up "$2" ;;
    down) down ;;
    kill) kill_node ;;
    *) echo "usage: realnode.sh check | up KUBECONFIG | down | kill" >&2; exit 2 ;;
esac
