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
mkdir -p "$DIR"
cat >"$DIR/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$DIR/server.log</log><errorlog>$DIR/server.err.log</errorlog><console>0</console></logger>
  <http_port>$PORT</http_port>
  <tcp_port>$((PORT + 877))</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>$DIR/data/</path>
  <tmp_path>$DIR/tmp/</tmp_path>
  <user_files_path>$DIR/user_files/</user_files_path>
  <format_schema_path>$DIR/format_schemas/</format_schema_path>
  <users_config>$DIR/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
</yandex>
XML
cat >"$DIR/users.xml" <<'XML'
<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>::/0</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
XML
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
