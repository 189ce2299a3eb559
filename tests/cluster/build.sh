#!/usr/bin/env bash
# Build the binaries of the test control plane from the Go module proxy, once per version.
#
# Output: $DCHAT_CACHE/k8s-<version>/bin/{kube-apiserver,kube-controller-manager,
#         kube-scheduler,kubectl,kubelet,kube-proxy,etcd,kwok,kwokctl,coredns} and a stamp file.
# Each binary is built only when it is missing, so adding one to the list builds just that
# one on a machine whose cache already holds the others.
# The cache lives outside the checkout (default ~/.cache/dchat) and is keyed by the
# pinned versions, so a second run is a no-op. Go's own build cache (~/.cache/go-build)
# makes a rebuild after a version bump cheaper.
#
# How: k8s.io/kubernetes cannot be `go install`ed (its go.mod replaces every staging
# module with a local path), so a throw-away wrapper module requires it and replaces each
# staging module k8s.io/<x> with its published tag v0.<minor>.<patch>; the list of staging
# modules is read from the downloaded go.mod, not kept by hand.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache="${DCHAT_CACHE:-$HOME/.cache/dchat}"
out="$cache/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION"
bin="$out/bin"
stamp="$out/.complete-v3"  # v2: kube-proxy joined the set; v3: coredns
k8s_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)

if [[ -f "$stamp" ]]; then
    echo "$bin"
    exit 0
fi

command -v go >/dev/null || { echo "build.sh: Go >= 1.26 is required (apt/go.dev toolchain)" >&2; exit 1; }
mkdir -p "$bin"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

log() { printf '[build %s] %s\n' "$(date +%T)" "$*" >&2; }
timed() {
    local name=$1; shift
    local t0=$SECONDS
    "$@"
    log "$name built in $((SECONDS - t0)) s"
}

missing() {  # the names among "$@" that have no binary yet
    local c; for c in "$@"; do [[ -x "$bin/$c" ]] || echo "$c"; done
}

# ---- Kubernetes -------------------------------------------------------------------
mapfile -t k8s_todo < <(missing "${k8s_cmds[@]}")
if ((${#k8s_todo[@]})); then
k8s_minor="${K8S_VERSION#v1.}"; k8s_minor="${k8s_minor%%.*}"
staging_version="v0.${K8S_VERSION#v1.}"
mkdir -p "$work/k8s" && cd "$work/k8s"
cat >go.mod <<EOF
module dchat.dev/testcluster/k8s

go 1.26

require k8s.io/kubernetes $K8S_VERSION
EOF
log "downloading k8s.io/kubernetes $K8S_VERSION"
gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
# "k8s.io/api => ./staging/src/k8s.io/api" -> replace k8s.io/api => k8s.io/api v0.X.Y
grep -oE '^\s*k8s\.io/[a-zA-Z0-9._/-]+ => \./staging/src/' "$gomod" | awk '{print $1}' | sort -u >staging.txt
log "$(wc -l <staging.txt) staging modules pinned to $staging_version"
while read -r m; do
    go mod edit -replace "$m=$m@$staging_version"
done <staging.txt
pkgs=(); for cmd in "${k8s_todo[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$cmd@$K8S_VERSION"); done
go get "${pkgs[@]}" >/dev/null 2>&1 || go get "${pkgs[@]}"

build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
    ldflags+=" -X $pkg.gitCommit=$K8S_GIT_COMMIT -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done
for cmd in "${k8s_todo[@]}"; do
    timed "$cmd" go build -trimpath -ldflags "$ldflags" -o "$bin/$cmd" "k8s.io/kubernetes/cmd/$cmd"
done
fi

# ---- etcd -------------------------------------------------------------------------
if [[ -n "$(missing etcd)" ]]; then
mkdir -p "$work/etcd" && cd "$work/etcd"
cat >go.mod <<EOF
module dchat.dev/testcluster/etcd

go 1.26
EOF
go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
timed etcd go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3
fi

# ---- kwok -------------------------------------------------------------------------
if [[ -n "$(missing kwok kwokctl)" || ! -d "$out/stages" ]]; then
mkdir -p "$work/kwok" && cd "$work/kwok"
cat >go.mod <<EOF
module dchat.dev/testcluster/kwok

go 1.26
EOF
go get "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION" >/dev/null
kwok_ld="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=$K8S_VERSION"
timed kwok go build -trimpath -ldflags "$kwok_ld" -o "$bin/kwok" sigs.k8s.io/kwok/cmd/kwok
timed kwokctl go build -trimpath -ldflags "$kwok_ld" -o "$bin/kwokctl" sigs.k8s.io/kwok/cmd/kwokctl
# The default kwok stages (node-initialize, heartbeat, pod-ready, ...) ship in the module;
# keep a copy next to the binaries so custom stage sets can include them.
kwok_dir="$(go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
mkdir -p "$out/stages"
cp -r "$kwok_dir/kustomize/stage/." "$out/stages/"
chmod -R u+w "$out/stages"
fi

# ---- CoreDNS (the real node's cluster DNS) ------------------------------------------
if [[ -n "$(missing coredns)" ]]; then
mkdir -p "$work/coredns" && cd "$work/coredns"
cat >go.mod <<EOF
module dchat.dev/testcluster/coredns

go 1.26
EOF
go get "github.com/coredns/coredns@$COREDNS_VERSION" >/dev/null 2>&1 || go get "github.com/coredns/coredns@$COREDNS_VERSION"
timed coredns go build -trimpath -ldflags "-s -w" -o "$bin/coredns" github.com/coredns/coredns
fi

"$bin/kubectl" version --client >&2
touch "$stamp"
echo "$bin"
