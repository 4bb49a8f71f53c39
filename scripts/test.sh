#!/usr/bin/env bash
# Runs every zopp test on a fresh Debian machine: installs and starts what the tests need
# (PostgreSQL, cargo-nextest), checks formatting and lints, builds once, then runs every test in
# parallel. This is the README's test command and exactly what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- PostgreSQL: storage and end-to-end tests run against a real server, never skipped.
export ZOPP_TEST_PG_URL="${ZOPP_TEST_PG_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
pg_ready() { command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432; }
if ! pg_ready; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    log "installing PostgreSQL"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fresh_cluster=1
  fi
  log "starting PostgreSQL"
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start || true
  for _ in $(seq 1 60); do pg_ready && break; sleep 0.5; done
  pg_ready || { echo "PostgreSQL did not start on 127.0.0.1:5432" >&2; exit 1; }
  if [ "${fresh_cluster:-0}" = 1 ]; then
    # A packaged cluster asks for passwords over TCP: give the test user the one the URL carries.
    as_root su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\""
  fi
fi

# --- Tools.
command -v cargo-nextest >/dev/null 2>&1 || { log "installing cargo-nextest"; cargo install --locked cargo-nextest; }

# --- Static checks.
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

# --- Build once (the end-to-end tests spawn these binaries), then run everything in parallel.
log "building"
cargo build --workspace --bins --locked
log "linting deploy artifacts"
scripts/lint-deploy.sh target/debug/zopp-server
log "running tests"
cargo nextest run --workspace --locked --no-fail-fast --failure-output final "$@"
