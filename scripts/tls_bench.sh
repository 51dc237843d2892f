#!/usr/bin/env bash
# What TLS costs `load`: 2 M events over HTTPS and over HTTP into the same
# private 18.16 (its HTTPS port with a CA made on the spot by openssl),
# alternating, three rounds; prints each run's rates and CPU per M rows.
# Needs the release binary: cargo build --release -p ch-ingest-cli
#   scripts/tls_bench.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p /tmp/tlsbench
cd /tmp/tlsbench
D=/dev/shm/ch-ingest-tlsbench
rm -rf $D; mkdir -p $D
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=bench CA" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
printf "subjectAltName=DNS:localhost,IP:127.0.0.1\n" > ext.cnf
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext.cnf 2>/dev/null
. "$ROOT/scripts/server_config.sh"
write_server_config $D 18223 19100 "<https_port>18643</https_port><openSSL><server><certificateFile>/tmp/tlsbench/server.pem</certificateFile><privateKeyFile>/tmp/tlsbench/server.key</privateKeyFile><verificationMode>none</verificationMode><loadDefaultCAFile>false</loadDefaultCAFile><cacheSessions>true</cacheSessions><disableProtocols>sslv2,sslv3</disableProtocols><preferServerCiphers>true</preferServerCiphers></server></openSSL>"
/usr/sbin/clickhouse-server --config-file=$D/config.xml >/dev/null 2>&1 &
SPID=$!
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18223/ping >/dev/null && break; sleep 0.1; done
curl -s --cacert ca.pem "https://localhost:18643/?query=SELECT%20version()"
BIN="$ROOT/target/release/ch-ingest"
for round in 1 2 3; do
  for way in http https; do
    if [ $way = http ]; then URL=http://127.0.0.1:18223; EXTRA=(); else URL=https://localhost:18643; EXTRA=(--ca-cert ca.pem); fi
    curl -s http://127.0.0.1:18223/ --data "DROP TABLE IF EXISTS tls_$way" >/dev/null
    echo "== round $round $way"
    $BIN load --clickhouse-url $URL "${EXTRA[@]}" --table tls_$way --create-table --events 2000000 --quiet --server-pid $SPID 2>&1 | grep -E "events/s|^cpu|rows/s|throughput" | head -5
  done
done
kill $SPID
