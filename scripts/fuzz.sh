#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60) on the stable
# toolchain. cargo-fuzz passes nightly `-Z` flags to rustc; RUSTC_BOOTSTRAP=1
# lets stable accept them. Crashes land in fuzz/artifacts/TARGET/.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
cargo fuzz build
for t in "${targets[@]}"; do
  echo "== fuzz $t for ${seconds}s"
  # Work on a copy so the committed seed corpus stays small.
  work="$(mktemp -d)"
  cp fuzz/corpus/"$t"/* "$work"/ 2>/dev/null || true
  log="$work.log"
  status=0
  cargo fuzz run "$t" "$work" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb|Done)' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$log"
    echo "fuzz target $t failed (exit $status); see fuzz/artifacts/$t/"
    rm -rf "$work" "$log"
    exit "$status"
  fi
  rm -rf "$work" "$log"
done
