#!/usr/bin/env bash
# Stage 1 (sequential): create the schema rsql_blog.
# Runs under rsql-agent: the connection (RSQL_HOST, RSQL_PORT, RSQL_USER, RSQL_DB and the password
# in RSPASSWORD / PGPASSWORD) comes from the Redshift secret; RSQL_BIN names the client (the real
# `rsql` on a host, the emulator's psql in the demo). Any SQL error makes the script exit non-zero.
set -euo pipefail

RSQL="${RSQL_BIN:-rsql}"
echo "[${RSQL_JOB_NAME:-$(basename "$0")}] start: Stage 1 (sequential): create the schema rsql_blog."
"$RSQL" -h "$RSQL_HOST" -p "$RSQL_PORT" -U "$RSQL_USER" -d "$RSQL_DB" -v ON_ERROR_STOP=1 <<'SQL'
\echo 'Creating schema rsql_blog'
CREATE SCHEMA IF NOT EXISTS rsql_blog;
SQL
echo "[${RSQL_JOB_NAME:-$(basename "$0")}] done"
