#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what the tests need when it
# is missing, then runs fmt, clippy and every test, the ClickHouse integration
# tests against a private clickhouse-server started by the tests themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each step says when it starts, in seconds since the command began.
step() { echo "== [${SECONDS}s] $*"; }

# What the tests need and a fresh machine lacks: Debian packages the tests
# start privately (in one apt run) and the Python oracles and client. This is
# download-bound, so it runs in the background beside fmt, clippy and doc,
# which need none of it, and is waited for before the tests.
install_missing() {
  local debs=() pips=()
  if [ -z "${CLICKHOUSE_URL:-}" ] && [ ! -x /usr/sbin/clickhouse-server ]; then
    debs+=(clickhouse-server clickhouse-client)
  fi
  if [ ! -f /usr/share/java/zookeeper.jar ] || ! command -v java >/dev/null 2>&1; then
    # ZooKeeper for the cluster tests, which start a private one.
    debs+=(zookeeper default-jre-headless)
  fi
  if [ ${#debs[@]} -gt 0 ]; then
    echo "installing ${debs[*]} (missing)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${debs[@]}" >/dev/null
  fi
  # chdb-core: ClickHouse 26.x in-process, the RowBinary conformance oracle.
  python3 -c "import chdb" >/dev/null 2>&1 || pips+=(chdb-core)
  # clickhouse-connect 0.6.23: a real client for the front door tests, the
  # newest that talks to 18.16.
  python3 -c "import clickhouse_connect" >/dev/null 2>&1 || pips+=(clickhouse-connect==0.6.23)
  if [ ${#pips[@]} -gt 0 ]; then
    echo "installing ${pips[*]} (missing)"
    python3 -m pip install --quiet "${pips[@]}"
  fi
}
install_log="$(mktemp)"
trap 'rm -f "$install_log"' EXIT
step "installing what is missing, in the background"
install_missing >"$install_log" 2>&1 &
install_pid=$!

step "cargo fmt --check"
cargo fmt --all -- --check
step "dependency graph an embedder gets (scripts/deps.sh)"
./scripts/deps.sh
step "no import circle between files (scripts/layers.py; ARCHITECTURE.md, \"Layers\")"
python3 scripts/layers.py src protocol/src cli/src
step "cargo clippy --workspace --all-targets -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
step "cargo clippy -p ch-ingest --lib (what an embedder compiles: default features, no test-util, no prometheus-client)"
cargo clippy -p ch-ingest --lib -- -D warnings
step "cargo doc -p ch-ingest (every intra-doc link resolves, every feature)"
RUSTDOCFLAGS="-D warnings" cargo doc -p ch-ingest --no-deps --all-features
if wait "$install_pid"; then
  cat "$install_log"
else
  cat "$install_log"
  echo "installing what the tests need failed" >&2
  exit 1
fi
step "cargo test (integration tests start a private ClickHouse; its version is printed below)"
cargo test --workspace --all-targets -- --show-output
cargo test --workspace --doc
step "JSON decoder tests again on the portable string scan (the path every CPU but x86-64 takes)"
CH_INGEST_JSON_SCAN=portable cargo test -p ch-ingest --lib -- json transcode
CH_INGEST_JSON_SCAN=portable cargo test -p ch-ingest --test json_differential
step "instruction-count guard (encode and track per event vs benches/icount-baseline.txt)"
./scripts/icount.sh
step "fuzz smoke: every cargo-fuzz target for ${FUZZ_SMOKE_SECONDS:-20}s"
./scripts/fuzz.sh "${FUZZ_SMOKE_SECONDS:-20}"
step "done"
