#!/usr/bin/env bash
# Builds the release binaries (`zopp`, `zopp-server`) and starts zopp-server on its embedded
# default: SQLite in $ZOPP_HOME/server.db (default ~/.zopp), gRPC on 127.0.0.1:50051.
# Extra arguments go to `zopp-server serve` (see `zopp-server serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bins >&2
echo "==> binaries in $(pwd)/target/release; for the client: export PATH=\"$(pwd)/target/release:\$PATH\"" >&2
exec target/release/zopp-server serve "$@"
