#!/usr/bin/env bash
# Starts zopp-server on its embedded default: SQLite in $ZOPP_HOME/server.db (default ~/.zopp),
# gRPC on 127.0.0.1:50051. Builds the release binaries (`zopp`, `zopp-server`) first, unless
# ZOPP_BIN_DIR names a directory holding prebuilt ones or --no-build is the first argument (then
# target/release must already hold them).
# Extra arguments go to `zopp-server serve` (see `zopp-server serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
build=1
if [ "${1:-}" = "--no-build" ]; then
  build=0
  shift
fi
if [ -n "${ZOPP_BIN_DIR:-}" ]; then
  bin_dir="$ZOPP_BIN_DIR"
  build=0
else
  bin_dir="$(pwd)/target/release"
fi
if [ "$build" = 1 ]; then
  cargo build --release --locked --bins >&2
fi
if [ ! -x "$bin_dir/zopp-server" ]; then
  echo "error: no zopp-server in $bin_dir" >&2
  echo "hint: build it (cargo build --release --bins), or set ZOPP_BIN_DIR to the directory holding it" >&2
  exit 2
fi
echo "==> binaries in $bin_dir; for the client: export PATH=\"$bin_dir:\$PATH\"" >&2
exec "$bin_dir/zopp-server" serve "$@"
