#!/bin/sh
# Patroni's bootstrap.post_bootstrap for managed PostgreSQL (Dockerfile.postgres): runs once,
# on the member that initialised the cluster, with a superuser connection string as $1.
# Creates the node's role and database; the password comes from the generated Secret
# (DCHAT_APP_PASSWORD) and reaches psql as a variable, never on a command line.
set -eu
: "${DCHAT_APP_PASSWORD:?DCHAT_APP_PASSWORD is not set (the Secret <cluster>-postgres)}"
psql "$1" -v ON_ERROR_STOP=1 -v app_password="$DCHAT_APP_PASSWORD" -q <<'SQL'
SELECT format('CREATE ROLE dchat LOGIN PASSWORD %L', :'app_password') \gexec
CREATE DATABASE dchat OWNER dchat;
REVOKE ALL ON DATABASE dchat FROM PUBLIC;
SQL
