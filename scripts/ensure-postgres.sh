#!/usr/bin/env bash
# Makes sure PostgreSQL server binaries are installed, so `make run` and `make test` work on a
# fresh machine. pgsched itself only needs them for the embedded default database and the tests.
set -euo pipefail

have_server() {
  if [ -n "${PGSCHED_PG_BINDIR:-}" ] && [ -x "$PGSCHED_PG_BINDIR/initdb" ]; then return 0; fi
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then return 0; fi
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

if have_server; then exit 0; fi

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "PostgreSQL server binaries not found; installing them with apt-get (postgresql)..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  have_server && exit 0
fi

echo "PostgreSQL server binaries not found: install them (Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql) or set PGSCHED_PG_BINDIR." >&2
exit 1
