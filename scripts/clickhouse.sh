#!/usr/bin/env bash
# Starts a private clickhouse-server (the same setup the tests use: data on
# /dev/shm, loopback only, user `default` without a password) for benches and
# manual runs, and prints its URL. Stop it with: scripts/clickhouse.sh stop
#
#   scripts/clickhouse.sh [HTTP_PORT]     default 18123 (TCP port = HTTP_PORT + 877)
set -euo pipefail
PORT=${1:-18123}
DIR=/dev/shm/ch-ingest-manual
if [ "$PORT" = stop ]; then
  [ -f "$DIR/pid" ] && kill "$(cat "$DIR/pid")" 2>/dev/null || true
  rm -rf "$DIR"
  exit 0
fi
if [ ! -x /usr/sbin/clickhouse-server ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null
fi
. "$(dirname "$0")/server_config.sh"
write_server_config "$DIR" "$PORT" "$((PORT + 877))"
nohup /usr/sbin/clickhouse-server --config-file="$DIR/config.xml" >/dev/null 2>&1 &
echo $! >"$DIR/pid"
for _ in $(seq 1 300); do
  if curl -sf "http://127.0.0.1:$PORT/ping" >/dev/null 2>&1; then
    echo "http://127.0.0.1:$PORT"
    exit 0
  fi
  sleep 0.1
done
echo "clickhouse-server did not answer on port $PORT; see $DIR/server.err.log" >&2
exit 1
