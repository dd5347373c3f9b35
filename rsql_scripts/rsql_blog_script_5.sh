#!/usr/bin/env bash
# Stage 3 (parallel): insert row 3 into rsql_blog.blog_table.
# Runs under rsql-agent: the connection (RSQL_HOST, RSQL_PORT, RSQL_USER, RSQL_DB and the password
# in RSPASSWORD / PGPASSWORD) comes from the Redshift secret; RSQL_BIN names the client (the real
# `rsql` on a host, the emulator's psql in the demo). Any SQL error makes the script exit non-zero.
set -euo pipefail

RSQL="${RSQL_BIN:-rsql}"
echo "[${RSQL_JOB_NAME:-$(basename "$0")}] start: Stage 3 (parallel): insert row 3 into rsql_blog.blog_table."
"$RSQL" -h "$RSQL_HOST" -p "$RSQL_PORT" -U "$RSQL_USER" -d "$RSQL_DB" -v ON_ERROR_STOP=1 <<'SQL'
\echo 'Inserting row 3'
INSERT INTO rsql_blog.blog_table (id, title, created_by)
VALUES (3, 'row 3 from rsql_blog_script_5.sh', current_user);
SELECT count(*) AS rows_so_far FROM rsql_blog.blog_table;
SQL
echo "[${RSQL_JOB_NAME:-$(basename "$0")}] done"
