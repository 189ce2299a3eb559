#!/usr/bin/env bash
# Build the project's container images with podman on a machine where no registry serves
# container images, and export each to an OCI archive that containerd's `ctr` imports.
#
# Usage: tests/cluster/images.sh [--no-verify] [--rebuild]
#   --no-verify  do not check new archives with a throw-away containerd (`ctr import`)
#   --rebuild    rebuild the images (not the base images) even when the cache matches
#
# stdout: one line per image, `<ref> <archive path>`, in this order:
#   registry.k8s.io/pause:3.10              the sandbox image (tests/cluster/images/pause)
#   ghcr.io/dchat-dev/dchat:<version>       Dockerfile.node (version from pyproject.toml)
#   ghcr.io/dchat-dev/dchat-operator:<version>  Dockerfile.operator
#   ghcr.io/dchat-dev/dchat-postgres:<version>  Dockerfile.postgres (PostgreSQL 15 + Patroni)
#   ghcr.io/dchat-dev/dchat:0.1.1           TEST: the node image under another tag
#   ghcr.io/dchat-dev/dchat:0.1.1-exits     TEST: the node image whose entrypoint exits 1
#   ghcr.io/dchat-dev/dchat:0.1.1-errors    TEST: the node image that answers every API call 504
# Everything else (progress, timings) goes to stderr.
# Exit codes: 0 done; 1 a step failed; 2 bad arguments; 3 this machine cannot build them
# (not root, or podman/runc/debootstrap/go/containerd missing): callers skip on 3.
#
# How, and the cache ($DCHAT_CACHE, default ~/.cache/dchat; everything under images/):
# - Base images. The Dockerfiles start FROM docker.io/library/python:3.11-bookworm and
#   python:3.11-slim-bookworm, which cannot be pulled here. Both are made locally: a
#   `debootstrap --variant=minbase` bookworm root from the mirror of the machine's own apt
#   sources, with Debian's python3 and what the Dockerfiles expect of the real images, then
#   `tar | podman import` under the very names the Dockerfiles use. Each carries the label
#   dchat.dev/base-key (hash of suite + package list + BASE_VERSION below); a base whose key
#   matches is kept. Downloaded .debs are kept in images/debs for the next debootstrap.
# - podman. Debian's podman 4.3 defaults to crun, which fails on this VM ("cgroups in hybrid
#   mode"): images/containers.conf (exported as CONTAINERS_CONF) selects runc + cgroupfs and
#   ulimits under the machine's hard limit of 20000. Builds run with --pull=never and the
#   host network; the CA of the machine's TLS proxy ($SSL_CERT_FILE or $PIP_CERT) is given
#   as the optional build secret `ca`, which the Dockerfiles hand to pip when present.
# - Images. Each is labelled dchat.dev/source-hash: sha256 over its Dockerfile, the files
#   it is built from (for node and operator: the lock, pyproject.toml, README.md and the
#   working-tree content of every tracked file under operator/ and node/) and its base
#   image's id. When podman already has the tag with that label, nothing is built.
# - Archives: images/<name>-<hash16>.tar (`podman save --format oci-archive`), written once
#   per hash; older archives of the same image are deleted. A new archive is imported once
#   into a throw-away containerd (its own root, state and socket under /tmp, CRI disabled,
#   stopped afterwards) and must show up in `ctr -n k8s.io images ls` under its full ref;
#   images/<archive>.ctr-ok records that. Callers import with:
#       ctr -n k8s.io images import <archive>
#   No --base-name / --index-name is needed: podman's oci-archive puts the full reference
#   (e.g. ghcr.io/dchat-dev/dchat:0.1.0) in the index's org.opencontainers.image.ref.name
#   annotation and ctr (containerd 1.6.20) names the image by it.
set -euo pipefail

# Bump to rebuild the base images (anything that changes how a root is made).
BASE_VERSION=1
SUITE=bookworm

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${DCHAT_CACHE:-$HOME/.cache/dchat}/images"

verify=1 rebuild=0
for arg in "$@"; do
    case "$arg" in
        --no-verify) verify=0 ;;
        --rebuild) rebuild=1 ;;
        -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
        *) echo "images.sh: unknown argument: $arg (see --help)" >&2; exit 2 ;;
    esac
done

t_start=$SECONDS
log() { printf '[images %s +%ss] %s\n' "$(date +%T)" "$((SECONDS - t_start))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---- can this machine do it? (exit 3: the caller skips) -------------------------------
if [[ $(id -u) != 0 ]]; then
    echo "images.sh: needs root (podman builds, debootstrap); skipping" >&2
    exit 3
fi
need=(podman runc debootstrap go)
((verify)) && need+=(containerd ctr)
for tool in "${need[@]}"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "images.sh: $tool not found (scripts/bootstrap.sh deps installs it as root); skipping" >&2
        exit 3
    fi
done

mkdir -p "$cache"
# One run at a time per cache (two test sessions may call this together).
exec 9>"$cache/.lock"
flock 9

# ---- podman configuration -----------------------------------------------------------
conf="$cache/containers.conf"
conf_text='# Written by tests/cluster/images.sh (exported as CONTAINERS_CONF).
# Debian podman 4.3 defaults to crun, which fails on this VM ("cgroups in hybrid mode not
# supported"); its default nofile/nproc (1048576) exceed the hard limit of 20000 here.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=20000:20000"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
'
[[ -f $conf && "$(cat "$conf")"$'\n' == "$conf_text" ]] || printf '%s' "$conf_text" >"$conf"
export CONTAINERS_CONF="$conf"
# podman build does not apply default_ulimits to its RUN steps: pass them explicitly.
ulimits=(--ulimit nofile=20000:20000 --ulimit nproc=20000:20000)

# The TLS proxy's CA, as an optional build secret (no file, no secret: the build then
# trusts only the base image's CAs, as anywhere else).
ca_file="${SSL_CERT_FILE:-${PIP_CERT:-}}"
secret=()
if [[ -n $ca_file && -f $ca_file ]]; then
    secret=(--secret "id=ca,src=$ca_file")
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/dchat-images.XXXXXX")"
ctr_pid=""
cleanup() {
    if [[ -n $ctr_pid ]]; then
        kill "$ctr_pid" 2>/dev/null || true
        wait "$ctr_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

label() {  # label <ref> <key>: the label's value, empty if no such image or label
    podman image inspect --format "{{ index .Labels \"$2\" }}" "$1" 2>/dev/null || true
}
image_id() { podman image inspect --format '{{.Id}}' "$1"; }
hash_files() {  # sha256 (16 hex) over the names and contents of the files, in order
    local f
    for f in "$@"; do
        # names relative to the checkout: a clone elsewhere (CI) must hash the same
        printf '%s\0' "$(realpath --relative-to="$root" "$f")"
        sha256sum <"$f"
    done | sha256sum | cut -c1-16
}

# ---- base images ----------------------------------------------------------------------
mirror() {  # the Debian mirror serving $SUITE in the machine's apt sources
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        # deb822 stanzas: the first URI of a `deb` stanza whose Suites list $SUITE.
        uri="$(awk -v suite="$SUITE" '
            function flush() { if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uris != "") { split(uris, u, " "); print u[1]; found = 1; exit } types = suites = uris = "" }
            /^[ \t]*$/ { flush(); next }
            /^Types:/ { sub(/^Types:[ \t]*/, ""); types = $0 }
            /^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
            /^URIs:/ { sub(/^URIs:[ \t]*/, ""); uris = $0 }
            END { if (!found) flush() }' "$f")"
        [[ -n $uri ]] && { echo "$uri"; return 0; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        uri="$(awk -v suite="$SUITE" '$1 == "deb" {
                i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite) { print $i; exit } }' "$f")"
        [[ -n $uri ]] && { echo "$uri"; return 0; }
    done
    return 1
}

# Makes <ref> from a minbase root with <packages> (comma-separated) unless podman has it
# with the same key.
base_image() {
    local ref=$1 pkgs=$2 key rootfs t0=$SECONDS
    key="$(printf 'v%s\n%s\n%s\n' "$BASE_VERSION" "$SUITE" "$pkgs" | sha256sum | cut -c1-16)"
    if [[ "$(label "$ref" dchat.dev/base-key)" == "$key" ]]; then
        log "base $ref: cached (key $key)"
        return 0
    fi
    local uri
    uri="$(mirror)" || die "no deb source for $SUITE in /etc/apt/sources.list{,.d/}"
    log "base $ref: debootstrap $SUITE from $uri with $pkgs"
    rootfs="$work/rootfs-${ref##*:}"
    mkdir -p "$cache/debs"
    debootstrap --variant=minbase --include="$pkgs" --cache-dir="$cache/debs" \
        "$SUITE" "$rootfs" "$uri" >"$work/debootstrap.log" 2>&1 \
        || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed for $ref"; }
    # Small like the real images: no package lists, no downloaded .debs, no docs (the
    # copyright files stay), no man pages or translations, no logs, no host identity.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/debconf/*-old \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
        "$rootfs"/usr/share/lintian "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* \
        "$rootfs"/debootstrap
    find "$rootfs/usr/share/doc" -type f ! -name copyright -delete
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
    : >"$rootfs/etc/resolv.conf"
    : >"$rootfs/etc/machine-id"
    echo localhost >"$rootfs/etc/hostname"
    tar --numeric-owner -C "$rootfs" -c . | podman import --quiet \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        --change "LABEL dchat.dev/base-key=$key" \
        --change "LABEL dchat.dev/base-packages=$pkgs" \
        --message "debootstrap --variant=minbase $SUITE (tests/cluster/images.sh)" \
        - "$ref" >/dev/null
    rm -rf "$rootfs"
    log "base $ref: imported in $((SECONDS - t0)) s ($(podman image inspect --format '{{.Size}}' "$ref" | numfmt --to=iec))"
}

# Debian's python3 stands in for the images' /usr/local Python 3.11 (bookworm's python3 is
# 3.11); python-is-python3 gives the `python` the real images have on PATH.
# builder (python:3.11-bookworm): a compiler and GMP headers, fastecdsa builds from source.
# runtime (python:3.11-slim-bookworm): useradd/groupadd (passwd) and libgmp10.
base_image docker.io/library/python:3.11-bookworm \
    python3,python3-venv,python3-dev,python-is-python3,build-essential,libgmp-dev,ca-certificates
base_image docker.io/library/python:3.11-slim-bookworm \
    python3,python3-venv,python-is-python3,passwd,libgmp10,ca-certificates

# ---- images -------------------------------------------------------------------------
built=()   # refs built in this run (smoke-checked below)
outputs=() # "<ref> <archive>"

# build <ref> <hash> <podman build args...>: unless podman has <ref> with that source hash
build() {
    local ref=$1 hash=$2 t0=$SECONDS; shift 2
    if ((!rebuild)) && [[ "$(label "$ref" dchat.dev/source-hash)" == "$hash" ]]; then
        log "$ref: cached (source hash $hash)"
        return 0
    fi
    log "$ref: building (source hash $hash)"
    local old
    old="$(podman image inspect --format '{{.Id}}' "$ref" 2>/dev/null || true)"
    podman build --pull=never --network host --format docker "${ulimits[@]}" "${secret[@]}" \
        --label "dchat.dev/source-hash=$hash" -t "$ref" "$@" >"$work/build.log" 2>&1 \
        || { tail -40 "$work/build.log" >&2; die "podman build of $ref failed"; }
    built+=("$ref")
    # The image the tag named before is garbage now (unless another tag still names it):
    # without this, every source change would leave a few hundred MB behind.
    if [[ -n "$old" && "$old" != "$(image_id "$ref")" ]]; then
        podman rmi "$old" >/dev/null 2>&1 || true
    fi
    log "$ref: built in $((SECONDS - t0)) s"
}

# archive <ref> <name> <hash>: images/<name>-<hash>.tar, once; older ones of <name> go.
archive() {
    local ref=$1 name=$2 hash=$3 out f t0=$SECONDS
    out="$cache/$name-$hash.tar"
    if [[ ! -s $out ]]; then
        rm -f "$out.ctr-ok"
        podman save --format oci-archive -o "$out.part" "$ref" >/dev/null 2>"$work/save.log" \
            || { cat "$work/save.log" >&2; rm -f "$out.part"; die "podman save of $ref failed"; }
        mv "$out.part" "$out"
        log "$ref: saved $out ($(du -h "$out" | cut -f1)) in $((SECONDS - t0)) s"
    fi
    for f in "$cache/$name"-*.tar; do
        [[ $f != "$out" && $f =~ /$name-[0-9a-f]{16}\.tar$ ]] || continue
        log "removing older archive $f"
        rm -f "$f" "$f.ctr-ok"
    done
    outputs+=("$ref $out")
}

version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$root/pyproject.toml" | head -1)"
[[ -n $version ]] || die "no version in pyproject.toml"

# pause: a static Go binary FROM scratch, for containerd's sandbox_image.
pause_ref=registry.k8s.io/pause:3.10
pause_dir="$here/images/pause"
pause_hash="$( { hash_files "$pause_dir/main.go" "$pause_dir/Dockerfile"; go env GOVERSION; } | sha256sum | cut -c1-16)"
if ((rebuild)) || [[ "$(label "$pause_ref" dchat.dev/source-hash)" != "$pause_hash" ]]; then
    mkdir -p "$work/pause"
    (cd "$pause_dir" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
        go build -trimpath -ldflags='-s -w' -o "$work/pause/pause" main.go)
fi
build "$pause_ref" "$pause_hash" -f "$pause_dir/Dockerfile" "$work/pause"
archive "$pause_ref" pause-3.10 "$pause_hash"

# node and operator: from the repository root, the files their Dockerfiles COPY.
cd "$root"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mapfile -d '' tracked < <(git ls-files -z -- operator node)
else  # not a checkout (e.g. an unpacked tarball): every file
    mapfile -d '' tracked < <(find operator node -type f -print0 | sort -z)
fi
sources=()
for f in "${tracked[@]}"; do [[ -f $f ]] && sources+=("$f"); done  # deleted in the tree: gone
node_ref="ghcr.io/dchat-dev/dchat:$version"
operator_ref="ghcr.io/dchat-dev/dchat-operator:$version"
node_hash="$( { hash_files Dockerfile.node requirements-node.lock pyproject.toml README.md "${sources[@]}"
    image_id docker.io/library/python:3.11-bookworm; image_id docker.io/library/python:3.11-slim-bookworm
    } | sha256sum | cut -c1-16)"
operator_hash="$( { hash_files Dockerfile.operator requirements-operator.lock pyproject.toml README.md "${sources[@]}"
    image_id docker.io/library/python:3.11-slim-bookworm; } | sha256sum | cut -c1-16)"

build "$node_ref" "$node_hash" -f Dockerfile.node .
archive "$node_ref" "dchat-$version" "$node_hash"
build "$operator_ref" "$operator_hash" -f Dockerfile.operator .
archive "$operator_ref" "dchat-operator-$version" "$operator_hash"
postgres_ref="ghcr.io/dchat-dev/dchat-postgres:$version"
postgres_hash="$( { hash_files Dockerfile.postgres requirements-patroni.lock postgres/post-bootstrap.sh postgres/entrypoint.sh
    image_id docker.io/library/python:3.11-slim-bookworm; } | sha256sum | cut -c1-16)"
build "$postgres_ref" "$postgres_hash" -f Dockerfile.postgres .
archive "$postgres_ref" "dchat-postgres-$version" "$postgres_hash"

# TEST images for rollout tests: a version bump with identical content, and one that exits.
bump_ref=ghcr.io/dchat-dev/dchat:0.1.1
if [[ "$(image_id "$bump_ref" 2>/dev/null)" != "$(image_id "$node_ref")" ]]; then
    podman tag "$node_ref" "$bump_ref"
fi
archive "$bump_ref" dchat-0.1.1 "$node_hash"
exits_ref=ghcr.io/dchat-dev/dchat:0.1.1-exits
exits_hash="$( { hash_files "$here/images/exits/Dockerfile"; echo "$node_hash"; } | sha256sum | cut -c1-16)"
build "$exits_ref" "$exits_hash" --build-arg "BASE=$node_ref" -f "$here/images/exits/Dockerfile" "$here/images/exits"
archive "$exits_ref" dchat-0.1.1-exits "$exits_hash"
errors_ref=ghcr.io/dchat-dev/dchat:0.1.1-errors
errors_hash="$( { hash_files "$here/images/errors/Dockerfile"; echo "$node_hash"; } | sha256sum | cut -c1-16)"
build "$errors_ref" "$errors_hash" --build-arg "BASE=$node_ref" -f "$here/images/errors/Dockerfile" "$here/images/errors"
archive "$errors_ref" dchat-0.1.1-errors "$errors_hash"

# ---- smoke checks of what was built in this run ------------------------------------------
run() { podman run --rm --network host --no-healthcheck "${ulimits[@]}" "$@"; }
uid_of() { run --entrypoint python "$1" -c 'import os; print(os.getuid())'; }
uid_of_sh() { run --entrypoint id "$1" -u; }
for ref in "${built[@]}"; do
    case "$ref" in
        "$node_ref")
            run "$ref" --help >/dev/null || die "$ref --help failed"
            [[ "$(run "$ref" --version)" == "dchat-node $version" ]] || die "$ref --version is not $version"
            [[ "$(uid_of "$ref")" == 1000 ]] || die "$ref does not run as uid 1000"
            ;;
        "$operator_ref")
            run "$ref" --help >/dev/null || die "$ref --help failed"
            [[ "$(uid_of "$ref")" == 65532 ]] || die "$ref does not run as uid 65532"
            ;;
        "$postgres_ref")
            run "$ref" --version >/dev/null || die "$ref: patroni --version failed"
            run --entrypoint postgres "$ref" --version >/dev/null || die "$ref: no postgres"
            [[ "$(uid_of_sh "$ref")" == 999 ]] || die "$ref does not run as uid 999"
            ;;
        "$errors_ref")
            [[ "$(run --entrypoint python "$ref" -c 'import os; print(os.environ["DCHAT_SERVER__REQUEST_TIMEOUT_SECS"])')" == 0.000001 ]] \
                || die "$ref does not carry its request timeout"
            ;;
        "$exits_ref")
            rc=0; out="$(run "$ref" 2>&1)" || rc=$?
            [[ $rc == 1 && $out == *"TEST image"* ]] || die "$ref: exit $rc, output: $out"
            ;;
        "$pause_ref")
            cid="$(podman run -d --no-healthcheck "${ulimits[@]}" "$ref")"
            sleep 0.5
            podman stop -t 10 "$cid" >/dev/null
            rc="$(podman inspect --format '{{.State.ExitCode}}' "$cid")"
            podman rm "$cid" >/dev/null
            [[ $rc == 0 ]] || die "$ref exited $rc on SIGTERM"
            ;;
    esac
    log "$ref: smoke check passed"
done

# ---- each new archive: importable by containerd's ctr under its full ref ----------------
if ((verify)); then
    pending=()
    for line in "${outputs[@]}"; do
        [[ -f ${line#* }.ctr-ok ]] || pending+=("$line")
    done
    if ((${#pending[@]})); then
        t0=$SECONDS
        d="$(mktemp -d /tmp/dchat-ctr.XXXXXX)"
        cat >"$d/config.toml" <<EOF
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$d/c.sock"
[ttrpc]
  address = "$d/c.sock.ttrpc"
[debug]
  address = "$d/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"
EOF
        containerd --config "$d/config.toml" >"$d/containerd.log" 2>&1 &
        ctr_pid=$!
        for _ in $(seq 100); do
            ctr -a "$d/c.sock" version >/dev/null 2>&1 && break
            kill -0 "$ctr_pid" 2>/dev/null || { tail "$d/containerd.log" >&2; die "containerd did not start"; }
            sleep 0.1
        done
        for line in "${pending[@]}"; do
            ref=${line% *} tar=${line#* }
            ctr -a "$d/c.sock" -n k8s.io images import "$tar" >"$work/ctr.log" 2>&1 \
                || { cat "$work/ctr.log" >&2; die "ctr import of $tar failed"; }
            # (no `| grep -q`: with pipefail, grep quitting early can fail the pipeline)
            if [[ $'\n'"$(ctr -a "$d/c.sock" -n k8s.io images ls -q)"$'\n' != *$'\n'"$ref"$'\n'* ]]; then
                ctr -a "$d/c.sock" -n k8s.io images ls -q >&2
                die "ctr import of $tar did not name the image $ref"
            fi
            touch "$tar.ctr-ok"
            log "$ref: ctr import OK"
        done
        kill "$ctr_pid"; wait "$ctr_pid" 2>/dev/null || true; ctr_pid=""
        # Snapshots may leave mounts behind; never rm -rf through a mount.
        if grep -q " $d/" /proc/mounts; then
            log "WARNING: mounts left under $d, not removed"
        else
            rm -rf "$d"
        fi
        log "ctr check of ${#pending[@]} archive(s) in $((SECONDS - t0)) s"
    fi
fi

printf '%s\n' "${outputs[@]}"
log "done in $((SECONDS - t_start)) s"
