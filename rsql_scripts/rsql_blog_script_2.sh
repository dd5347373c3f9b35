#!/usr/bin/env bash
# Stage 1 (sequential): (re)create the table rsql_blog.blog_table.
# Runs under rsql-agent: the connection (RSQL_HOST, RSQL_PORT, RSQL_USER, RSQL_DB and the password
# in RSPASSWORD / PGPASSWORD) comes from the Redshift secret; RSQL_BIN names the client (the real
# `rsql` on a host, the emulator's psql in the demo). Any SQL error makes the script exit non-zero.
set -euo pipefail

RSQL="${RSQL_BIN:-rsql}"
echo "[${RSQL_JOB_NAME:-$(basename "$0")}] start: Stage 1 (sequential): (re)create the table rsql_blog.blog_table."
"$RSQL" -h "$RSQL_HOST" -p "$RSQL_PORT" -U "$RSQL_USER" -d "$RSQL_DB" -v ON_ERROR_STOP=1 <<'SQL'
\echo 'Creating table rsql_blog.blog_table'
DROP TABLE IF EXISTS rsql_blog.blog_table;
CREATE TABLE rsql_blog.blog_table (
    id         integer     NOT NULL,
    title      varchar(64) NOT NULL,
    created_by varchar(64) NOT NULL,
    created_at timestamp   NOT NULL DEFAULT current_timestamp
);
SQL
echo "[${RSQL_JOB_NAME:-$(basename "$0")}] done"
