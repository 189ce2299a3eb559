#!/usr/bin/env bash
# Install what the project needs on this machine, skipping what is already there.
#
#   scripts/bootstrap.sh deps   Debian packages (PostgreSQL server, promtool + prometheus)
#                               when absent;
#                               as root also the optional ones of the real-node tests
#                               (podman, runc, debootstrap, containerd, CNI plugins,
#                               iptables, conntrack)
#   scripts/bootstrap.sh venv   .venv from requirements.lock (uv, hashes required), project
#                               installed editable with the locked setuptools
#   scripts/bootstrap.sh patroni  a venv with Patroni (requirements-patroni.lock, hashes
#                               required) from Debian's /usr/bin/python3, outside the repo in
#                               a world-readable directory (the harness runs Patroni as
#                               `nobody`, who cannot enter /root); prints its path on stdout
#   scripts/bootstrap.sh chain  the EVM test toolchain from npm (contracts/package-lock.json,
#                               integrity-checked, install scripts off): anvil 1.7.1 (the
#                               binary ships in its platform package) and solc-js 0.8.37,
#                               in a cache dir outside the repo keyed by the lock's hash; then
#                               compiles contracts/*.sol into artifacts keyed by the sources'
#                               hash + solc version; prints anvil=, solcjs=, artifacts= paths
#
# The venv step is keyed by the hash of requirements.lock + pyproject.toml, so a warm run
# costs one hash. Go (>= 1.26) must already be on PATH: Debian's is too old.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '[bootstrap] %s\n' "$*" >&2; }

deps() {
    local missing=()
    ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
    # promtool (rule checks and rule unit tests) and prometheus (the scrape example and rules
    # on a real server: tests/monitoring/test_prometheus.py) come in one package
    { command -v promtool && command -v prometheus; } >/dev/null || missing+=(prometheus)
    python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
    if ((${#missing[@]})); then
        if [[ $(id -u) != 0 ]]; then
            log "missing Debian packages: ${missing[*]} (run as root or: sudo apt-get install ${missing[*]})"
            exit 1
        fi
        log "installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        # Debian's postgresql package starts a system cluster; the tests start their own.
        if command -v pg_lsclusters >/dev/null; then
            pg_lsclusters -h 2>/dev/null | while read -r ver name _; do
                pg_ctlcluster "$ver" "$name" stop 2>/dev/null || true
            done
        fi
    fi
    # Optional: the real-node test tier (tests/cluster/images.sh builds images with podman;
    # a kubelet beside the kwok nodes runs them in containerd). Installed only as root; without
    # them that tier is skipped, so a non-root run only says what is missing.
    local optional=()
    command -v podman >/dev/null || optional+=(podman)
    command -v runc >/dev/null || optional+=(runc)
    command -v debootstrap >/dev/null || optional+=(debootstrap)
    command -v containerd >/dev/null || optional+=(containerd)
    [[ -x /usr/lib/cni/bridge ]] || optional+=(containernetworking-plugins)
    command -v iptables >/dev/null || optional+=(iptables)
    command -v conntrack >/dev/null || optional+=(conntrack)
    if ((${#optional[@]})); then
        if [[ $(id -u) == 0 ]]; then
            log "installing optional Debian packages (real-node tests): ${optional[*]}"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq \
                && apt-get install -y -qq --no-install-recommends "${optional[@]}" >/dev/null \
                || log "could not install ${optional[*]}: the real-node tests will be skipped"
        else
            log "optional (real-node tests, skipped without them; install as root): ${optional[*]}"
        fi
    fi
    command -v go >/dev/null || { log "Go >= 1.26 is required on PATH"; exit 1; }
    local gov
    gov="$(go env GOVERSION)"; gov="${gov#go}"
    if [[ "$(printf '%s\n1.26\n' "$gov" | sort -V | head -1)" != 1.26 ]]; then
        log "Go >= 1.26 is required (found $gov)"; exit 1
    fi
}

venv() {
    local stamp=.venv/.dchat-lock-hash want uvreq=.venv/.uv-requirement.txt
    want="$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)"
    if [[ -x .venv/bin/python && -f $stamp && "$(cat $stamp)" == "$want" ]]; then
        return 0
    fi
    log "creating .venv from requirements.lock"
    [[ -x .venv/bin/python ]] || python3 -m venv .venv
    # uv, the installer, comes from the lock too: its pin and hashes, checked by pip.
    awk '/^uv==/ {p = 1} p {print} p && !/\\$/ {exit}' requirements.lock >"$uvreq"
    grep -q -- '--hash=' "$uvreq" || { log "requirements.lock pins no uv by hash (make lock)"; exit 1; }
    .venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes --no-deps \
        -r "$uvreq"
    # Every package by version and hash; then the project itself, editable, built by the
    # locked setuptools (no build isolation: nothing unpinned is fetched).
    .venv/bin/uv pip sync -q --require-hashes --python .venv/bin/python requirements.lock
    .venv/bin/uv pip install -q --python .venv/bin/python --no-deps --no-build-isolation -e .
    echo "$want" >$stamp
}

# Keyed by the lock's hash: /var/cache/dchat-test/patroni-<hash> as root, else under
# $DCHAT_CACHE (no `nobody` then: the harness runs Patroni as the calling user);
# DCHAT_PATRONI_CACHE moves the parent. tests/harness/patroni.py computes the same path.
# A complete venv has a .complete stamp; a warm run costs one hash.
patroni_venv_dir() {
    local hash parent=/var/cache/dchat-test
    hash="$(sha256sum requirements-patroni.lock | cut -c1-16)"
    [[ $(id -u) == 0 ]] || parent="${DCHAT_CACHE:-$HOME/.cache/dchat}"
    printf '%s/patroni-%s\n' "${DCHAT_PATRONI_CACHE:-$parent}" "$hash"
}

patroni() {
    local dir
    dir="$(patroni_venv_dir)"
    if [[ ! -f $dir/.complete ]]; then
        [[ -x .venv/bin/uv ]] || venv
        log "creating the Patroni venv $dir from requirements-patroni.lock"
        mkdir -p "$(dirname "$dir")"
        chmod 755 "$(dirname "$dir")"
        rm -rf "$dir"
        (umask 022
         /usr/bin/python3 -m venv --without-pip "$dir"
         .venv/bin/uv pip install -q --require-hashes --python "$dir/bin/python" \
             -r requirements-patroni.lock)
        chmod 755 "$dir"
        touch "$dir/.complete"
    fi
    printf '%s\n' "$dir"
}

# The EVM toolchain: $DCHAT_CACHE/chain-<lock hash> (DCHAT_CHAIN_CACHE moves the parent).
# tests/harness/chain.py computes the same paths. A complete install has a .complete stamp;
# a warm run costs one hash and one `node` start (the compile step finds its stamp too).
chain_parent() { printf '%s\n' "${DCHAT_CHAIN_CACHE:-${DCHAT_CACHE:-$HOME/.cache/dchat}}"; }

chain() {
    local parent dir arch artifacts
    parent="$(chain_parent)"
    dir="$parent/chain-$(sha256sum contracts/package-lock.json | cut -c1-16)"
    case "$(uname -m)" in
        x86_64) arch=amd64 ;;
        aarch64 | arm64) arch=arm64 ;;
        *) log "no anvil platform package for $(uname -m)"; exit 1 ;;
    esac
    command -v npm >/dev/null || { log "npm (Node.js >= 20) is required on PATH"; exit 1; }
    if [[ ! -f $dir/.complete ]]; then
        log "installing anvil and solc-js from contracts/package-lock.json into $dir"
        mkdir -p "$parent"
        rm -rf "$dir"
        mkdir -p "$dir"
        cp contracts/package.json contracts/package-lock.json "$dir/"
        # No install scripts: anvil's postinstall would download a binary; the platform
        # package already carries it.
        (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
        "$dir/node_modules/@foundry-rs/anvil-linux-$arch/bin/anvil" --version >/dev/null
        touch "$dir/.complete"
    fi
    artifacts="$(node scripts/compile-contracts.mjs "$dir" "$parent")"
    printf 'anvil=%s\n' "$dir/node_modules/@foundry-rs/anvil-linux-$arch/bin/anvil"
    printf 'solcjs=%s\n' "$dir/node_modules/.bin/solcjs"
    printf 'artifacts=%s\n' "$artifacts"
}

for step in "$@"; do "$step"; done
