#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what the tests need when it
# is missing, then runs fmt, clippy and every test, the ClickHouse integration
# tests against a private clickhouse-server started by the tests themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each step says when it starts, in seconds since the command began.
step() { echo "== [${SECONDS}s] $*"; }

if [ -z "${CLICKHOUSE_URL:-}" ] && [ ! -x /usr/sbin/clickhouse-server ]; then
  step "installing clickhouse-server (missing)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null
fi

if [ ! -f /usr/share/java/zookeeper.jar ] || ! command -v java >/dev/null 2>&1; then
  step "installing zookeeper (missing; the cluster tests start a private one)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq zookeeper default-jre-headless >/dev/null
fi

if ! python3 -c "import chdb" >/dev/null 2>&1; then
  step "installing chdb-core (ClickHouse 26.x in-process, the RowBinary conformance oracle)"
  python3 -m pip install --quiet chdb-core
fi

if ! python3 -c "import clickhouse_connect" >/dev/null 2>&1; then
  step "installing clickhouse-connect 0.6.23 (a real client for the front door tests; the newest that talks to 18.16)"
  python3 -m pip install --quiet clickhouse-connect==0.6.23
fi

step "cargo fmt --check"
cargo fmt --all -- --check
step "dependency graph an embedder gets (scripts/deps.sh)"
./scripts/deps.sh
step "cargo clippy --workspace --all-targets -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
step "cargo clippy -p ch-ingest --lib (what an embedder compiles: default features, no test-util, no prometheus-client)"
cargo clippy -p ch-ingest --lib -- -D warnings
step "cargo doc -p ch-ingest (every intra-doc link resolves, every feature)"
RUSTDOCFLAGS="-D warnings" cargo doc -p ch-ingest --no-deps --all-features
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
