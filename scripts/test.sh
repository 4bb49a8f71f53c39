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

# kubectl: the platform tests (tests/tests/platform.rs) drive the real client.
if ! command -v kubectl >/dev/null 2>&1; then
  log "installing kubectl"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl >/dev/null
fi

# --- Static checks.
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

# --- The format spec, checked by a second implementation written from FORMAT.md alone (pure
# Python, standard library only) against every committed vector.
command -v python3 >/dev/null 2>&1 || { log "installing python3"; as_root apt-get update -qq; as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 >/dev/null; }
log "threat-model/check_vectors.py"
python3 threat-model/check_vectors.py

# --- Supply chain, offline: licenses, banned and duplicate crates, sources, and advisories from
# the RustSec snapshot next to the checkout (docs/dependencies.md). Installing the tools takes
# minutes once per machine; the checks take seconds.
CARGO_DENY_VERSION=0.20.2
CARGO_AUDIT_VERSION=0.22.2
cargo deny --version 2>/dev/null | grep -qx "cargo-deny $CARGO_DENY_VERSION" || {
  log "installing cargo-deny $CARGO_DENY_VERSION"
  cargo install --locked cargo-deny --version "$CARGO_DENY_VERSION"
}
# (It prints its name oddly, `cargo-audit-audit 0.22.2`: match the version only.)
cargo audit --version 2>/dev/null | grep -q " $CARGO_AUDIT_VERSION\$" || {
  log "installing cargo-audit $CARGO_AUDIT_VERSION"
  cargo install --locked cargo-audit --version "$CARGO_AUDIT_VERSION"
}
advisory_snapshot="${ZOPP_ADVISORY_DB:-../shared/advisory-db}"
[ -d "$advisory_snapshot/crates" ] || {
  echo "no RustSec advisory database at $advisory_snapshot: set ZOPP_ADVISORY_DB to a copy" >&2
  exit 1
}
# Both tools read the database's commit date, so the snapshot becomes a one-commit git
# repository in a temporary directory, named as cargo-deny names its checkout of the default
# database URL.
advisory_dbs="$(mktemp -d)"
trap 'rm -rf "$advisory_dbs"' EXIT
advisory_db="$advisory_dbs/advisory-db-3157b0e258782691"
cp -R "$advisory_snapshot" "$advisory_db"
chmod -R u+w "$advisory_db"
snapshot_date="$(date -u -r "$advisory_snapshot" +%Y-%m-%dT%H:%M:%SZ)"
git -C "$advisory_db" init -q
git -C "$advisory_db" add -A
GIT_AUTHOR_DATE="$snapshot_date" GIT_COMMITTER_DATE="$snapshot_date" \
  git -C "$advisory_db" -c user.name=zopp -c user.email=zopp@localhost -c commit.gpgsign=false \
  commit -q -m "RustSec advisory database snapshot"
log "cargo deny (offline, advisories from $advisory_snapshot)"
ZOPP_ADVISORY_DBS="$advisory_dbs" cargo deny --offline --locked check
log "cargo audit (offline)"
cargo audit --no-fetch --db "$advisory_db" --deny warnings

# --- Build once (the end-to-end tests spawn these binaries), then run everything in parallel.
log "building"
cargo build --workspace --bins --locked
log "running tests"
cargo nextest run --workspace --locked --no-fail-fast --failure-output final "$@"

# --- zopp-crypto again with its hand-written strict Ed25519 verification turned off: the
# ed25519-dalek `verify_strict` fallback must pass the same tests and vectors.
log "zopp-crypto without the fast-strict-verify feature"
cargo nextest run -p zopp-crypto --no-default-features --locked --no-fail-fast --failure-output final

