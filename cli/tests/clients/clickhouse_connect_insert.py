"""clickhouse-connect 0.6.23, unchanged but for the address: inserts through
ch-ingest serve's front door. Used by cli/tests/serve.rs.

    python3 clickhouse_connect_insert.py HOST PORT TABLE
"""
import sys

import clickhouse_connect

host, port, table = sys.argv[1], int(sys.argv[2]), sys.argv[3]
names = ["a", "s", "n", "lc", "arr"]
types = ["UInt64", "String", "Nullable(Int32)", "LowCardinality(String)", "Array(String)"]


def rows(start, count):
    return [
        [i, f"s{i}", None if i % 3 == 0 else -i, ["x", "y"][i % 2], [f"e{i}"] * (i % 3)]
        for i in range(start, start + count)
    ]


# Native, uncompressed, with the types given (no DESCRIBE).
plain = clickhouse_connect.get_client(host=host, port=port, compress=False)
plain.insert(table, rows(0, 1000), column_names=names, column_type_names=types)
# Its default: lz4 (`Content-Encoding: lz4`, which 18.16 itself refuses).
lz4 = clickhouse_connect.get_client(host=host, port=port)
lz4.insert(table, rows(1000, 1000), column_names=names, column_type_names=types)
# Without column_type_names it asks DESCRIBE TABLE first: the front door
# answers it for the tables it serves (18.16's own answer has a column
# clickhouse-connect cannot read), by name list or with no names at all.
plain.insert(table, rows(2000, 1000), column_names=names)
lz4.insert(table, rows(3000, 1000))
# Reads pass through as well.
print(plain.command(f"SELECT count() FROM {table}"))
