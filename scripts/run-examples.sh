#!/usr/bin/env bash
# `make run`: pgsched on the examples with the embedded default PostgreSQL (under .pgsched/).
# The sidecar (`pgsched run`) is not built yet; until it is, this validates the examples,
# applies them to the embedded database and shows that a second plan has nothing to do.
set -euo pipefail
dir=${1:-examples}
bin=${PGSCHED_BIN:-target/release/pgsched}
export PGSCHED_LOG=${PGSCHED_LOG:-warn}

echo "== pgsched validate (offline)"
"$bin" --dir "$dir" validate
echo
echo "== pgsched apply (embedded PostgreSQL in .pgsched/, demo tables from $dir/demo-schema.sql)"
"$bin" --dir "$dir" --setup-sql "$dir/demo-schema.sql" apply
echo
echo "== pgsched plan (should have nothing to do now)"
"$bin" --dir "$dir" plan
echo
echo "The sidecar (pgsched run: executor, status files, /metrics) is not built yet; this run"
echo "validated and applied the examples. The cluster lives in .pgsched/ (data, socket, postgres.log)."
