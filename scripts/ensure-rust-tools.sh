#!/usr/bin/env bash
# `make test` checks formatting and lints: make sure rustfmt and clippy are there.
set -euo pipefail
missing=()
cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} with rustup..." >&2
  rustup component add "${missing[@]}"
fi
