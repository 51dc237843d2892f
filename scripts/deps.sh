#!/usr/bin/env bash
# Dependency-graph guard: what an embedder's build pulls in. Counts the
# crates an empty binary crate gets from depending on the library (default
# features, as a user writes it), against the same count for the
# `clickhouse` crate alone (with `lz4` and `inserter`), and fails when the
# library adds more than ${DEPS_ALLOWANCE:-15} crates on top. Also fails
# when the library switches on a feature of a shared dependency that
# changes the embedder's code (serde_json's preserve_order / raw_value).
#
#   scripts/deps.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ALLOWANCE=${DEPS_ALLOWANCE:-15}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

count() { # name, dependency line
  mkdir -p "$WORK/$1/src"
  printf '[package]\nname = "%s"\nversion = "0.0.0"\nedition = "2021"\n[workspace]\n[dependencies]\n%s\n' "$1" "$2" >"$WORK/$1/Cargo.toml"
  echo 'fn main() {}' >"$WORK/$1/src/main.rs"
  # Resolve against the project's lock where versions overlap (no network
  # needed once the registry index is cached).
  cp "$ROOT/Cargo.lock" "$WORK/$1/Cargo.lock"
  (cd "$WORK/$1" && cargo tree -e normal --prefix none 2>/dev/null) | sed 's/ (\*)$//' | sort -u >"$WORK/$1.txt"
  wc -l <"$WORK/$1.txt"
}

ours=$(count embedder "ch-ingest = { path = \"$ROOT\" }")
theirs=$(count baseline 'clickhouse = { version = "0.15", default-features = false, features = ["lz4", "inserter"] }')
echo "deps: an embedder of ch-ingest builds $ours crates; the clickhouse crate alone (lz4, inserter) $theirs; allowance +$ALLOWANCE"
echo "deps: added by ch-ingest: $(comm -23 <(sed 's/ v[0-9].*//' "$WORK/embedder.txt" | sort -u) <(sed 's/ v[0-9].*//' "$WORK/baseline.txt" | sort -u) | grep -v '^ch-ingest' | tr '\n' ' ')"
if [ "$ours" -gt $((theirs + ALLOWANCE)) ]; then
  echo "deps: FAILED: $ours > $theirs + $ALLOWANCE" >&2
  exit 1
fi
features=$(cd "$WORK/embedder" && cargo tree -e features -i serde_json 2>/dev/null || true)
for f in preserve_order raw_value; do
  if grep -q "serde_json feature \"$f\"" <<<"$features"; then
    echo "deps: FAILED: the library switches on serde_json/$f for its embedders" >&2
    exit 1
  fi
done
echo "deps: ok"
