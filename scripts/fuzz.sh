#!/usr/bin/env bash
# Builds the cargo-fuzz targets in fuzz/ and runs each one for a bounded time, starting from the
# committed seeds (fuzz/seeds/<target>) and the working corpus (fuzz/corpus/<target>, not
# committed). A crash, a failed assertion, a timeout or a leak of more than 2 GiB fails the run;
# libFuzzer saves the input under fuzz/artifacts/<target>/ and prints how to reproduce it.
#
#   scripts/fuzz.sh                 every parser target, ZOPP_FUZZ_SECONDS (default 10) s each
#   ZOPP_FUZZ_RPC=1 scripts/fuzz.sh  the same plus the rpc target
#   scripts/fuzz.sh envelope rpc     only these targets
#
# Only a stable toolchain is needed: RUSTC_BOOTSTRAP lets cargo-fuzz pass its flags to stable
# rustc, and `--sanitizer none` builds with coverage instrumentation but without ASan (Rust's
# own bounds and overflow checks, with debug assertions on, catch what matters here).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

log() { printf '==> %s\n' "$*" >&2; }
seconds="${ZOPP_FUZZ_SECONDS:-10}"

command -v cargo-fuzz >/dev/null 2>&1 || { log "installing cargo-fuzz"; cargo install --locked cargo-fuzz; }
export RUSTC_BOOTSTRAP=1
flags=(--sanitizer none --debug-assertions)

targets=("$@")
if [ "${#targets[@]}" = 0 ]; then
  # The rpc target compiles the whole server with coverage instrumentation; it runs when named
  # or with ZOPP_FUZZ_RPC=1.
  mapfile -t targets < <(cargo fuzz list | if [ "${ZOPP_FUZZ_RPC:-0}" = 1 ]; then cat; else grep -vx rpc; fi)
fi
# The rpc target needs the server's dependency tree, behind the fuzz crate's `rpc` feature, so
# the parser targets build without it.
features() { if [ "$1" = rpc ]; then echo --features=rpc; fi; }
for t in "${targets[@]}"; do
  log "building fuzz target $t"
  # shellcheck disable=SC2046
  cargo fuzz build "${flags[@]}" $(features "$t") "$t"
done
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log "fuzzing $t for ${seconds}s"
  out="$(mktemp)"
  status=0
  # shellcheck disable=SC2046
  cargo fuzz run "${flags[@]}" $(features "$t") "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 >"$out" 2>&1 || status=$?
  grep -E '^stat::(number_of_executed_units|new_units_added)' "$out" | tr '\n' ' ' >&2 || true
  echo >&2
  if [ "$status" != 0 ]; then
    tail -n 60 "$out" >&2
    rm -f "$out"
    echo "fuzz target $t failed (the input is in fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  rm -f "$out"
done
