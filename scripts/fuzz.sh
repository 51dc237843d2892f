#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60) on the stable
# toolchain. cargo-fuzz passes nightly `-Z` flags to rustc; RUSTC_BOOTSTRAP=1
# lets stable accept them. Crashes land in fuzz/artifacts/TARGET/.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# libFuzzer is single-threaded, so ${FUZZ_JOBS:-2} targets run at once (one
# per core here): each still gets SECONDS on a core of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
jobs="${FUZZ_JOBS:-2}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  # A debug build: cargo-fuzz only drives cargo, and this compiles in half
  # the time of a release build on a fresh machine.
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked --debug
fi
export RUSTC_BOOTSTRAP=1
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
cargo fuzz build

# Runs one target on a copy of its seed corpus (so the committed corpus stays
# small); prints its stats, and its log's tail when it fails.
run_one() {
  local t="$1" work log status=0
  work="$(mktemp -d)"
  cp fuzz/corpus/"$t"/* "$work"/ 2>/dev/null || true
  log="$work.log"
  cargo fuzz run "$t" "$work" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || status=$?
  {
    echo "== fuzz $t for ${seconds}s"
    grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb|Done)' "$log" || true
    if [ "$status" -ne 0 ]; then
      tail -n 60 "$log"
      echo "fuzz target $t failed (exit $status); see fuzz/artifacts/$t/"
    fi
  } >"$reports/$t"
  rm -rf "$work" "$log"
  return "$status"
}

reports="$(mktemp -d)"
trap 'rm -rf "$reports"' EXIT
failed=0
for ((i = 0; i < ${#targets[@]}; i += jobs)); do
  pids=()
  for t in "${targets[@]:i:jobs}"; do
    run_one "$t" &
    pids+=("$!")
  done
  for p in "${pids[@]}"; do wait "$p" || failed=1; done
  for t in "${targets[@]:i:jobs}"; do cat "$reports/$t"; done
done
exit "$failed"
