#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what the tests need when it
# is missing, then runs fmt, clippy and every test, the ClickHouse integration
# tests against a private clickhouse-server started by the tests themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${CLICKHOUSE_URL:-}" ] && [ ! -x /usr/sbin/clickhouse-server ]; then
  echo "== installing clickhouse-server (missing)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null
fi

if ! python3 -c "import chdb" >/dev/null 2>&1; then
  echo "== installing chdb-core (ClickHouse 26.x in-process, the RowBinary conformance oracle)"
  python3 -m pip install --quiet chdb-core
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== dependency graph an embedder gets (scripts/deps.sh)"
./scripts/deps.sh
echo "== cargo clippy --workspace --all-targets -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo clippy -p ch-ingest --lib (what an embedder compiles: default features, no test-util, no prometheus-client)"
cargo clippy -p ch-ingest --lib -- -D warnings
echo "== cargo doc -p ch-ingest (every intra-doc link resolves, every feature)"
RUSTDOCFLAGS="-D warnings" cargo doc -p ch-ingest --no-deps --all-features
echo "== cargo test (integration tests start a private ClickHouse; its version is printed below)"
cargo test --workspace --all-targets -- --show-output
cargo test --workspace --doc
echo "== instruction-count guard (encode and track per event vs benches/icount-baseline.txt)"
./scripts/icount.sh
echo "== fuzz smoke: every cargo-fuzz target for ${FUZZ_SMOKE_SECONDS:-30}s"
./scripts/fuzz.sh "${FUZZ_SMOKE_SECONDS:-30}"
