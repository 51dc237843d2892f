#!/usr/bin/env bash
# `track` tail latency when producer threads share shards (issue 34's
# table): `ch-ingest load --events 2000000 --quiet` (file sink, no server)
# with 64 or 8 producers over the default 2 shards or one shard each, on an
# idle machine and with two busy loops beside it; three runs per cell,
# alternating. Prints p99 and max of `track` per run.
# Needs the release binary: cargo build --release -p ch-ingest-cli
#   scripts/track_contention.sh [runs]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/target/release/ch-ingest"
RUNS=${1:-3}
OUT=/dev/shm/ch-ingest-contention
cell() {
  rm -rf "$OUT"
  "$BIN" load --events 2000000 --quiet --producers "$1" --shards "$2" --out "$OUT" 2>&1 \
    | awk -v p="$1" -v s="$2" -v c="$3" '/^track/ {print c, p " producers", s " shards:", $0}'
}
for condition in idle busy; do
  pids=()
  if [ $condition = busy ]; then
    for _ in 1 2; do (while :; do :; done) & pids+=($!); done
  fi
  for _ in $(seq 1 "$RUNS"); do
    cell 64 2 $condition
    cell 64 64 $condition
    cell 8 2 $condition
    cell 8 8 $condition
  done
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p"; done
done
rm -rf "$OUT"
