#!/bin/sh
# Patroni's bootstrap.post_bootstrap for managed PostgreSQL (Dockerfile.postgres): runs once,
# on the member that initialised the cluster, with a superuser connection string as $1.
# Creates the node's role and database; the password comes from the generated Secret (a
# file mounted from it) and reaches psql as a variable (psql's own \set, read from stdin),
# never on a command line.
set -eu
file="${DCHAT_POSTGRES_SECRETS:-/etc/patroni-secrets}/app-password"
[ -r "$file" ] || { echo "post-bootstrap: $file is missing (Secret <cluster>-postgres)" >&2; exit 1; }
{
    printf '\\set app_password `cat %s`\n' "$file"
    cat <<'SQL'
SELECT format('CREATE ROLE dchat LOGIN PASSWORD %L', :'app_password') \gexec
CREATE DATABASE dchat OWNER dchat;
REVOKE ALL ON DATABASE dchat FROM PUBLIC;
SQL
} | psql "$1" -v ON_ERROR_STOP=1 -q
