#!/usr/bin/env bash
# `make run`: the sidecar on the examples with the embedded default PostgreSQL (under
# .pgsched/): validates them, then starts `pgsched run`, which applies them, watches the
# directory (edit a file and watch it apply), executes due runs, expires Timeouts, writes status
# files and serves /healthz, /readyz and /metrics, until Ctrl-C.
set -euo pipefail
dir=${1:-examples/specs}
bin=${PGSCHED_BIN:-target/release/pgsched}
listen=${PGSCHED_LISTEN:-127.0.0.1:9187}
status_dir=${PGSCHED_STATUS_DIR:-.pgsched/status}
export PGSCHED_LOG=${PGSCHED_LOG:-info}

echo "== pgsched validate (offline)"
"$bin" --dir "$dir" validate
echo
echo "== pgsched run on $dir (embedded PostgreSQL in .pgsched/; Ctrl-C stops it)"
echo "   psql:     psql \"host=$PWD/.pgsched/socket port=\$(sed -n 4p .pgsched/data/postmaster.pid) user=postgres dbname=postgres\""
echo "   status:   $status_dir/*.status.yaml   (or: $bin status; $bin runs send-welcome-email)"
echo "   http:     curl http://$listen/readyz   curl http://$listen/metrics"
echo "   try:      edit $dir/*.yaml and watch the log apply it"
echo "             SELECT pgsched.trigger('send-welcome-email', '{\"user_id\": 42}');"
echo "             INSERT INTO booking (customer, created_at) VALUES ('ann', now() - interval '15 minutes');"
exec "$bin" --dir "$dir" --setup-sql examples/demo-schema.sql run --listen "$listen" --status-dir "$status_dir"
