//! Conformance of our RowBinary against real ClickHouse engines: 10 000
//! random rows per type (generated with proptest, encoded by our serde
//! encoder) are parsed by ClickHouse and written back as RowBinary; the bytes
//! must come back identical, i.e. every value was read as exactly what we
//! meant. Every type goes through chdb (ClickHouse 26.x in-process); the types
//! 18.16 has also go through the private 18.16 server via `ClickHouseSink`.
//! Both as the RowBinary we encode and as the Native block the sink
//! transposes it into (`InsertFormat::Native`): the same rows must read
//! back identical either way.

mod support;

use ch_ingest::sink::InsertBatch;
use ch_ingest::sink::{nodelay_client, ClickHouseSink, InsertFormat, InsertOrder, Sink};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde::Serialize;
use std::collections::BTreeMap;
use std::process::Command;

const ROWS: usize = 10_000;

#[derive(Serialize)]
struct Row<V> {
    id: u32,
    v: V,
}

struct Case {
    ty: &'static str,
    /// The type exists in ClickHouse 18.16.
    old: bool,
    data: Vec<u8>,
    /// Where each row starts in `data`, and its value for messages.
    rows: Vec<(usize, String)>,
}

fn case<V: Serialize + std::fmt::Debug>(
    ty: &'static str,
    old: bool,
    strategy: impl Strategy<Value = V>,
) -> Case {
    let mut runner = TestRunner::deterministic();
    let values = proptest::collection::vec(strategy, ROWS)
        .new_tree(&mut runner)
        .expect("generate values")
        .current();
    let mut buf = bytes::BytesMut::new();
    let mut cols = None;
    let mut rows = Vec::with_capacity(ROWS);
    for (id, v) in values.into_iter().enumerate() {
        rows.push((buf.len(), format!("{v:?}")));
        let row = Row { id: id as u32, v };
        if let Some(c) = ch_ingest::rowbinary::encode_row(&row, &mut buf, cols.as_deref()).unwrap()
        {
            cols = Some(c);
        }
    }
    Case {
        ty,
        old,
        data: buf.to_vec(),
        rows,
    }
}

fn finite_f64() -> impl Strategy<Value = f64> {
    // NaN is left out: its payload bits are not a value ClickHouse promises to keep.
    prop_oneof![
        any::<f64>().prop_filter("not NaN", |f| !f.is_nan()),
        Just(0.0),
        Just(-0.0),
        Just(f64::INFINITY)
    ]
}

fn cases() -> Vec<Case> {
    let s = || "\\PC{0,12}";
    vec![
        case("UInt8", true, any::<u8>()),
        case("UInt16", true, any::<u16>()),
        case("UInt32", true, any::<u32>()),
        case("UInt64", true, any::<u64>()),
        case("Int8", true, any::<i8>()),
        case("Int16", true, any::<i16>()),
        case("Int32", true, any::<i32>()),
        case("Int64", true, any::<i64>()),
        case("UInt128", false, any::<u128>()),
        case("Int128", false, any::<i128>()),
        case("UInt256", false, any::<[u8; 32]>()),
        case("Int256", false, any::<[u8; 32]>()),
        case(
            "Float32",
            true,
            any::<f32>().prop_filter("not NaN", |f| !f.is_nan()),
        ),
        case("Float64", true, finite_f64()),
        case("Bool", false, any::<bool>()),
        case("String", true, s()),
        case("FixedString(8)", true, any::<[u8; 8]>()),
        case("Date", true, any::<u16>()),
        case("Date32", false, -25_567i32..=120_529),
        case("DateTime", true, any::<u32>()),
        case("DateTime('Asia/Tokyo')", true, any::<u32>()),
        case(
            "DateTime64(3)",
            false,
            -2_208_988_800_000i64..=10_413_791_999_999,
        ),
        case(
            "DateTime64(9, 'UTC')",
            false,
            -2_208_988_800_000_000_000i64..=9_223_372_036_854_775_807,
        ),
        // UUID is (high 64 bits, low 64 bits), as clickhouse::serde::uuid writes it.
        case("UUID", true, any::<(u64, u64)>()),
        case("IPv4", false, any::<u32>()),
        case("IPv6", false, any::<[u8; 16]>()),
        case("Decimal(9, 2)", true, -999_999_999i32..=999_999_999),
        case(
            "Decimal(18, 4)",
            true,
            -999_999_999_999_999_999i64..=999_999_999_999_999_999,
        ),
        case(
            "Decimal(38, 10)",
            true,
            -(10i128.pow(38) - 1)..=(10i128.pow(38) - 1),
        ),
        case(
            "Enum8('a' = -128, 'b' = 0, 'c' = 127)",
            true,
            prop_oneof![Just(-128i8), Just(0), Just(127)],
        ),
        case(
            "Enum16('x' = -32768, 'y' = 1000)",
            true,
            prop_oneof![Just(-32768i16), Just(1000)],
        ),
        case("Nullable(String)", true, proptest::option::of(s())),
        case(
            "Nullable(Float64)",
            true,
            proptest::option::of(finite_f64()),
        ),
        case(
            "Array(Nullable(Int32))",
            true,
            proptest::collection::vec(proptest::option::of(any::<i32>()), 0..5),
        ),
        case(
            "Array(Array(String))",
            true,
            proptest::collection::vec(proptest::collection::vec(s(), 0..3), 0..3),
        ),
        case(
            "Tuple(String, UInt8, Nullable(Int64))",
            true,
            (s(), any::<u8>(), proptest::option::of(any::<i64>())),
        ),
        case(
            "Map(String, UInt64)",
            false,
            proptest::collection::btree_map(s(), any::<u64>(), 0..4)
                .prop_map(|m: BTreeMap<String, u64>| m),
        ),
        case(
            "LowCardinality(String)",
            true,
            prop_oneof![
                Just("ios".to_string()),
                Just("web".to_string()),
                s().prop_map(String::from)
            ],
        ),
        case(
            "LowCardinality(Nullable(String))",
            true,
            proptest::option::of(s()),
        ),
    ]
}

fn first_difference(case: &Case, got: &[u8]) -> String {
    let at = case
        .data
        .iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .unwrap_or(case.data.len().min(got.len()));
    let row = case
        .rows
        .partition_point(|(start, _)| *start <= at)
        .saturating_sub(1);
    let (start, value) = &case.rows[row];
    format!(
        "{}: row {row} value {value}: sent {:02x?}, read back {:02x?} (lengths {} vs {})",
        case.ty,
        &case.data[*start..(*start + 40).min(case.data.len())],
        &got[*start.min(&got.len())..(*start + 40).min(got.len())],
        case.data.len(),
        got.len()
    )
}

/// The Native block the sink would send for a case's rows.
fn native(c: &Case) -> Vec<u8> {
    let schema = ch_ingest::Schema::new([("id", "UInt32"), ("v", c.ty)]).unwrap();
    let rows = c.rows.len() as u64;
    ch_ingest::sink::native_block(&schema, &[bytes::Bytes::from(c.data.clone())], rows)
        .unwrap()
        .concat()
}

const CHDB_SCRIPT: &str = r#"
import json, sys
try:
    import chdb
except ImportError:
    print("NO_CHDB")
    sys.exit(0)
print("VERSION", chdb.query("SELECT version()", "TSV").bytes().decode().strip())
for item in json.load(open(sys.argv[1])):
    try:
        if item["native"]:
            source = "file('%s', 'Native')" % item["path"]
        else:
            source = "file('%s', 'RowBinary', 'id UInt32, v %s')" % (item["path"], item["ty"].replace("'", "\\'"))
        r = chdb.query("SELECT id, v FROM %s ORDER BY id FORMAT RowBinary" % source)
        open(item["out"], "wb").write(r.bytes())
    except Exception as e:
        open(item["out"] + ".err", "w").write(str(e))
"#;

#[test]
fn every_type_round_trips_through_chdb() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    let mut manifest = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let path = dir.path().join(format!("{i}.bin"));
        std::fs::write(&path, &c.data).unwrap();
        manifest.push(serde_json::json!({"ty": c.ty, "path": path, "native": false, "out": dir.path().join(format!("{i}.out"))}));
        let path = dir.path().join(format!("{i}.native"));
        std::fs::write(&path, native(c)).unwrap();
        manifest.push(serde_json::json!({"ty": c.ty, "path": path, "native": true, "out": dir.path().join(format!("{i}.native.out"))}));
    }
    let manifest_path = dir.path().join("manifest.json");
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let script = dir.path().join("check.py");
    std::fs::write(&script, CHDB_SCRIPT).unwrap();
    let out = Command::new("python3")
        .arg(&script)
        .arg(&manifest_path)
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chdb script failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if stdout.contains("NO_CHDB") {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI=true and chdb is not installed (pip install chdb-core)"
        );
        eprintln!("NOTICE: chdb not installed; skipping the 26.x conformance check");
        return;
    }
    let version = stdout
        .lines()
        .find_map(|l| l.strip_prefix("VERSION "))
        .unwrap_or("?");
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        for (format, out) in [
            ("RowBinary", format!("{i}.out")),
            ("Native", format!("{i}.native.out")),
        ] {
            let out = dir.path().join(out);
            match std::fs::read(&out) {
                Ok(got) if got == c.data => {}
                Ok(got) => failures.push(format!("{format}: {}", first_difference(c, &got))),
                Err(_) => failures.push(format!(
                    "{format}: {}: {}",
                    c.ty,
                    std::fs::read_to_string(out.with_extension("out.err")).unwrap_or_default()
                )),
            }
        }
    }
    println!(
        "conformance: ClickHouse {version} (chdb) parsed {} types x {ROWS} rows, as RowBinary and as Native",
        cases.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_of_18_16_round_trip_through_the_server() {
    let server = server_or_skip!();
    let cases: Vec<Case> = cases().into_iter().filter(|c| c.old).collect();
    let mut failures = Vec::new();
    let formats = [InsertFormat::RowBinary, InsertFormat::Native];
    for (i, (c, format)) in cases
        .iter()
        .flat_map(|c| formats.iter().map(move |f| (c, *f)))
        .enumerate()
    {
        let table = server.fresh_table(
            &format!("conf{i}"),
            &format!("(id UInt32, v {}) ENGINE = Log", c.ty),
        );
        let sink = ClickHouseSink::new(nodelay_client().with_url(&server.url), &table);
        sink.insert_shape(&InsertOrder::Arrival, format);
        let batch = InsertBatch::new(
            0,
            &["id", "v"],
            vec![bytes::Bytes::from(c.data.clone())],
            ROWS as u64,
        );
        if let Err(e) = sink.insert(&batch).await {
            failures.push(format!("{format}: {}: INSERT failed: {e}", c.ty));
            continue;
        }
        let got = server.query_bytes(&format!(
            "SELECT id, v FROM {table} ORDER BY id FORMAT RowBinary"
        ));
        if got != c.data {
            failures.push(format!("{format}: {}", first_difference(c, &got)));
        }
        server.query(&format!("DROP TABLE {table}"));
    }
    println!(
        "conformance: ClickHouse {} (server) parsed {} types x {ROWS} rows, as RowBinary and as Native",
        server.version,
        cases.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
