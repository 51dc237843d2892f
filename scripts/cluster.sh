#!/usr/bin/env bash
# Starts a private replicated cluster for benches and manual runs, the same
# shape the cluster tests use: a ZooKeeper and four clickhouse-server
# processes, 2 shards (weights 1 and 1) x 2 replicas, on loopback with data
# on /dev/shm, cluster name `ch_ingest_bench`, and creates the table NAME
# (post_events by default) as NAME_local (ReplicatedMergeTree) plus NAME
# (Distributed, rand()) on every node. Prints the shard lists for
# `ch-ingest load --shard` / `bench cluster`, and the server pids.
#
#   scripts/cluster.sh [start [NAME]]   (HTTP ports 28123..28126, TCP +100, interserver +200)
#   scripts/cluster.sh stop
set -euo pipefail
DIR=/dev/shm/ch-ingest-cluster
BASE=28123
cmd=${1:-start}
NAME=${2:-post_events}
if [ "$cmd" = stop ]; then
  for p in "$DIR"/*.pid; do [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null || true; done
  rm -rf "$DIR"
  exit 0
fi
if [ ! -x /usr/sbin/clickhouse-server ] || [ ! -f /usr/share/java/zookeeper.jar ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq clickhouse-server clickhouse-client zookeeper default-jre-headless >/dev/null
fi
. "$(dirname "$0")/server_config.sh"
mkdir -p "$DIR/zk/data"
ZK=$((BASE - 100))
cat >"$DIR/zk/zoo.cfg" <<CFG
tickTime=500
initLimit=10
syncLimit=5
dataDir=$DIR/zk/data
clientPort=$ZK
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=ruok
maxClientCnxns=0
CFG
nohup java -Xmx256m -Dzookeeper.log.dir="$DIR/zk" -cp "/usr/share/java/zookeeper.jar:/usr/share/java/*" \
  org.apache.zookeeper.server.ZooKeeperServerMain "$DIR/zk/zoo.cfg" >"$DIR/zk/out.log" 2>&1 &
echo $! >"$DIR/zk.pid"
for _ in $(seq 1 300); do
  [ "$(echo ruok | timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$ZK; cat >&3; cat <&3" 2>/dev/null)" = imok ] && break
  sleep 0.1
done
remote=""
for shard in 0 1; do
  remote+="<shard><internal_replication>true</internal_replication>"
  for replica in 0 1; do
    remote+="<replica><host>127.0.0.1</host><port>$((BASE + shard * 2 + replica + 100))</port></replica>"
  done
  remote+="</shard>"
done
pids=()
for i in 0 1 2 3; do
  http=$((BASE + i)) d="$DIR/node$i"
  write_server_config "$d" "$http" "$((http + 100))" "\
  <interserver_http_port>$((http + 200))</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <zookeeper><node><host>127.0.0.1</host><port>$ZK</port></node></zookeeper>
  <macros><shard>0$((i / 2 + 1))</shard><replica>r$((i % 2 + 1))</replica></macros>
  <remote_servers><ch_ingest_bench>$remote</ch_ingest_bench></remote_servers>"
  nohup /usr/sbin/clickhouse-server --config-file="$d/config.xml" >/dev/null 2>&1 &
  echo $! >"$DIR/node$i.pid"
  pids+=("$!")
done
cols="event_type String, tweet_id UInt64, occurred_at DateTime, user_id Nullable(UInt64), session_id Nullable(String), client String, country FixedString(2), dwell_ms Nullable(UInt32)"
for i in 0 1 2 3; do
  url="http://127.0.0.1:$((BASE + i))/"
  for _ in $(seq 1 300); do curl -sf "${url}ping" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -sf "$url" --data-binary "CREATE TABLE IF NOT EXISTS ${NAME}_local ($cols) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/${NAME}_local', '{replica}') ORDER BY (event_type, occurred_at, tweet_id)" >/dev/null
  curl -sf "$url" --data-binary "CREATE TABLE IF NOT EXISTS ${NAME} AS ${NAME}_local ENGINE = Distributed(ch_ingest_bench, default, ${NAME}_local, rand())" >/dev/null
done
u() { echo "http://127.0.0.1:$((BASE + $1))"; }
echo "shards: --shard $(u 0),$(u 1) --shard $(u 2),$(u 3)"
echo "tables: ${NAME}_local (each shard), ${NAME} (Distributed)"
echo "server pids: ${pids[*]}"
