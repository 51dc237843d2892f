"""clickhouse-connect 0.6.23 through ch-ingest serve's HTTPS listener:
`secure=True` with the CA that signed serve's certificate inserts and reads;
with another CA, the client itself refuses the server with the TLS error.
Used by cli/tests/serve.rs.

    python3 clickhouse_connect_tls.py HOST PORT TABLE CA OTHER_CA
"""
import sys

import clickhouse_connect

host, port, table, ca, other_ca = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]

client = clickhouse_connect.get_client(
    host=host, port=port, secure=True, verify=True, ca_cert=ca, compress=False
)
rows = [[100_000 + i, f"py{i}", 1_700_000_000] for i in range(1000)]
client.insert(table, rows, column_names=["id", "name", "at"],
              column_type_names=["UInt64", "String", "DateTime"])
print("inserted", len(rows))
try:
    clickhouse_connect.get_client(
        host=host, port=port, secure=True, verify=True, ca_cert=other_ca
    ).command("SELECT 1")
    print("other CA: accepted")
except Exception as e:  # the driver wraps the SSL error
    print("other CA:", e)
