#!/usr/bin/env bash
# Instruction-count guard: runs the `icount` bench workloads under
# `valgrind --tool=callgrind` and compares instructions per event against the
# committed baseline (benches/icount-baseline.txt). Fails when a workload is
# more than ${ICOUNT_TOLERANCE:-10} % above its baseline.
#
#   scripts/icount.sh            check against the baseline
#   scripts/icount.sh --bless    write the current counts as the new baseline
#
# Counts are exact and repeatable for one binary, so this can gate CI where
# wall-clock benches cannot. They do move with the compiler: after a
# toolchain upgrade, re-bless (and say so in the commit).
set -euo pipefail
cd "$(dirname "$0")/.."

BASELINE=benches/icount-baseline.txt
EVENTS=${ICOUNT_EVENTS:-100000}
TOLERANCE=${ICOUNT_TOLERANCE:-10}

if ! command -v valgrind >/dev/null; then
  echo "== installing valgrind (missing)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
fi

# One codegen unit: with several, how functions are partitioned (and so
# inlined) depends on symbol hashes, which depend on the checkout's path; a
# clean clone in another directory counted 10 % more for the same source.
export CARGO_PROFILE_BENCH_CODEGEN_UNITS=1
BIN=$(cargo bench --bench icount --no-run --message-format=json 2>/dev/null |
  python3 -c 'import sys, json
for line in sys.stdin:
    j = json.loads(line)
    if j.get("executable") and j.get("target", {}).get("name") == "icount":
        print(j["executable"])')
[ -x "$BIN" ] || { echo "icount: bench binary not built" >&2; exit 1; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
declare -A now
for w in encode track; do
  valgrind --tool=callgrind --toggle-collect='icount::icount_*' \
    --callgrind-out-file="$out/$w.cg" "$BIN" "$w" "$EVENTS" 2>"$out/$w.log" >/dev/null
  total=$(sed -n 's/^==[0-9]*== Collected : \([0-9]*\)$/\1/p' "$out/$w.log")
  [ -n "$total" ] || { cat "$out/$w.log" >&2; exit 1; }
  # track counts events 2..N (the first one learns the columns, outside).
  n=$EVENTS; [ "$w" = track ] && n=$((EVENTS - 1))
  now[$w]=$(python3 -c "print(f'{$total / $n:.1f}')")
done

if [ "${1:-}" = "--bless" ]; then
  {
    echo "# instructions per event (scripts/icount.sh --bless, $(rustc --version))"
    for w in encode track; do echo "$w ${now[$w]}"; done
  } >"$BASELINE"
  cat "$BASELINE"
  exit 0
fi

status=0
for w in encode track; do
  base=$(awk -v w="$w" '$1 == w {print $2}' "$BASELINE")
  verdict=$(python3 -c "
b, n, t = float('$base'), float('${now[$w]}'), float('$TOLERANCE')
r = n / b
print(f'{r:.3f}', 'FAIL' if r > 1 + t / 100 else 'ok')")
  echo "icount $w: ${now[$w]} instructions/event, baseline $base, ratio ${verdict}"
  case "$verdict" in *FAIL) status=1 ;; esac
done
[ $status -eq 0 ] || echo "icount: a hot path regressed by more than $TOLERANCE % (re-bless only if intended)" >&2
exit $status
