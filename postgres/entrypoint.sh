#!/bin/sh
# Entrypoint of the managed PostgreSQL image (Dockerfile.postgres): Patroni takes its
# superuser and replication passwords from the environment only, so they are read here
# from the files the operator mounts from the Secret <cluster>-postgres (never from the pod
# spec's env) and Patroni is exec'd with the arguments given (the config path).
set -eu
case "${1:-}" in --*) exec patroni "$@" ;; esac  # --version, --help: no passwords needed
dir="${DCHAT_POSTGRES_SECRETS:-/etc/patroni-secrets}"
for key in superuser-password replication-password; do
    [ -r "$dir/$key" ] || { echo "dchat-patroni: $dir/$key is missing (Secret <cluster>-postgres)" >&2; exit 1; }
done
PATRONI_SUPERUSER_PASSWORD="$(cat "$dir/superuser-password")"
PATRONI_REPLICATION_PASSWORD="$(cat "$dir/replication-password")"
export PATRONI_SUPERUSER_PASSWORD PATRONI_REPLICATION_PASSWORD
exec patroni "$@"
