#!/usr/bin/env bash
# `make run`: pgsched on the examples with the embedded default PostgreSQL (under .pgsched/):
# validates them, then starts `pgsched run`, which applies them and executes due runs and
# Timeouts until Ctrl-C. File watching, status files and /metrics are still to come.
set -euo pipefail
dir=${1:-examples/specs}
bin=${PGSCHED_BIN:-target/release/pgsched}
export PGSCHED_LOG=${PGSCHED_LOG:-info}

echo "== pgsched validate (offline)"
"$bin" --dir "$dir" validate
echo
echo "== pgsched run (embedded PostgreSQL in .pgsched/; Ctrl-C stops it)"
echo "   psql:    psql \"host=$PWD/.pgsched/socket port=\$(sed -n 4p .pgsched/data/postmaster.pid) user=postgres dbname=postgres\""
echo "   status:  $bin status      runs:  $bin runs send-welcome-email"
echo "   try:     SELECT pgsched.trigger('send-welcome-email', '{\"user_id\": 42}');"
echo "            INSERT INTO booking (customer, created_at) VALUES ('ann', now() - interval '15 minutes');"
exec "$bin" --dir "$dir" --setup-sql examples/demo-schema.sql run
