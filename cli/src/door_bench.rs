//! `ch-ingest bench front-door`: many small INSERTs, the way a fleet of
//! ClickHouse clients sends them, straight to ClickHouse and through a
//! running `ch-ingest serve`'s front door (waiting and not), in one run
//! against one server: rows/s, answer latency, the parts ClickHouse made,
//! serve's peak RSS.
//!
//! Owns: the client loop (C clients, each one request at a time, the same
//! prebuilt body each time), the per-way fresh table, the parts count
//! (level-0 parts: one per INSERT that reached the server; merges make
//! higher levels). Must not: count a row before its answer was 200.

use super::http_load::percent_encode as percent;
use super::workloads::event;
use bytes::Bytes;
use ch_ingest::sink::sql::quote_table;
use ch_ingest::PostEvent;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct DoorBenchArgs {
    /// ClickHouse HTTP URL (the direct ways, and the checks).
    #[arg(long)]
    clickhouse_url: String,
    #[command(flatten)]
    tls: crate::tls_args::TlsArgs,
    /// A running `ch-ingest serve` whose allow-list has --table, e.g.
    /// http://127.0.0.1:8080.
    #[arg(long)]
    serve_url: String,
    /// serve's PID, for its peak RSS during each way.
    #[arg(long)]
    serve_pid: Option<u32>,
    /// Table, dropped and created (PostEvent's columns) for every way.
    #[arg(long, default_value = "door_bench")]
    table: String,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Rows per INSERT.
    #[arg(long, default_value_t = 100)]
    rows: u64,
    /// Seconds per way.
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    /// `async_insert_busy_timeout_ms` for the waiting ways (default:
    /// serve's `busy_timeout`).
    #[arg(long)]
    busy_ms: Option<u64>,
    /// Ways to run (default all): direct, wait, async, each with /json or
    /// /native, e.g. `direct/json,wait/native`.
    #[arg(long, value_delimiter = ',')]
    ways: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Direct,
    Wait,
    Async,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Json,
    Native,
}

type HttpClient = Client<ch_ingest::sink::TlsConnector, Full<Bytes>>;

pub fn run(args: DoorBenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut ways = Vec::new();
    for target in [Target::Direct, Target::Wait, Target::Async] {
        for body in [Body::Json, Body::Native] {
            let name = format!("{}/{}", name(target), format_name(body).to_lowercase());
            let name = name.replace("jsoneachrow", "json");
            if args.ways.is_empty() || args.ways.contains(&name) {
                ways.push((name, target, body));
            }
        }
    }
    if ways.is_empty() {
        return Err("--ways: none of direct|wait|async / json|native".into());
    }
    if args.clients == 0 || args.rows == 0 {
        return Err("--clients and --rows must be at least 1".into());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(bench(args, ways))
}

fn name(t: Target) -> &'static str {
    match t {
        Target::Direct => "direct",
        Target::Wait => "wait",
        Target::Async => "async",
    }
}

fn format_name(b: Body) -> &'static str {
    match b {
        Body::Json => "JSONEachRow",
        Body::Native => "Native",
    }
}

async fn bench(
    args: DoorBenchArgs,
    ways: Vec<(String, Target, Body)>,
) -> Result<(), Box<dyn std::error::Error>> {
    let ch = args
        .tls
        .client()?
        .with_url(&args.clickhouse_url)
        .with_validation(false);
    let version: String = ch.query("SELECT version()").fetch_one().await?;
    // ClickHouse and serve over http:// or https://, with --ca-cert.
    let http: HttpClient =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build(args.tls.tls().connector()?);
    let table = quote_table(&args.table);
    println!(
        "front door: ClickHouse {version}; {} clients x {}-row INSERTs, {} s per way",
        args.clients, args.rows, args.seconds
    );
    println!(
        "{:<14} {:>10} {:>9} {:>9} {:>8} {:>14}",
        "way", "rows/s", "p50 ms", "p99 ms", "parts", "serve peak MiB"
    );
    for (label, target, body) in ways {
        ch.query(&format!("DROP TABLE IF EXISTS {table}"))
            .execute()
            .await?;
        ch.query(&PostEvent::create_table_sql(&args.table))
            .execute()
            .await?;
        // serve reads the schema again on a schema error; the table is the
        // same every time, so its engine carries on. It may not have seen
        // the table yet (started before it existed): wait until ready.
        ready(&http, &args.serve_url).await?;
        let bodies: Vec<Bytes> = (0..args.clients as u64)
            .map(|c| build(body, c * 1_000_000_000, args.rows))
            .collect::<Result<_, _>>()?;
        let base = match target {
            Target::Direct => args.clickhouse_url.trim_end_matches('/').to_string(),
            _ => args.serve_url.trim_end_matches('/').to_string(),
        };
        let mut url = format!(
            "{base}/?query={}",
            percent(&format!("INSERT INTO {table} FORMAT {}", format_name(body)))
        );
        if target == Target::Async {
            url.push_str("&async_insert=1&wait_for_async_insert=0");
        }
        if let (Target::Wait, Some(ms)) = (target, args.busy_ms) {
            url.push_str(&format!("&async_insert_busy_timeout_ms={ms}"));
        }
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = args.serve_pid.map(|pid| {
            let (peak, stop) = (peak.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Relaxed) {
                    if let Some(kib) = rss_kib(pid) {
                        peak.fetch_max(kib, Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        });
        let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let rows = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let tasks: Vec<_> = bodies
            .into_iter()
            .map(|b| {
                let (http, url, latencies, rows) =
                    (http.clone(), url.clone(), latencies.clone(), rows.clone());
                let n = args.rows;
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        post(&http, &url, b.clone()).await?;
                        mine.push(t.elapsed());
                        rows.fetch_add(n, Relaxed);
                    }
                    latencies
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(mine);
                    Ok::<(), String>(())
                })
            })
            .collect();
        for t in tasks {
            t.await.map_err(|e| e.to_string())??;
        }
        let elapsed = started.elapsed();
        if target == Target::Async {
            // Answered once buffered: the flush makes them ClickHouse's.
            let flush = format!("{}/v1/flush", args.serve_url.trim_end_matches('/'));
            post(&http, &flush, Bytes::new()).await?;
        }
        stop.store(true, Relaxed);
        if let Some(s) = sampler {
            let _ = s.await;
        }
        let acked = rows.load(Relaxed);
        let counted: u64 = ch
            .query(&format!("SELECT count() FROM {table}"))
            .fetch_one()
            .await?;
        if counted != acked {
            return Err(
                format!("{label}: {acked} rows answered 200, {counted} in the table").into(),
            );
        }
        let parts: u64 = ch
            .query(
                "SELECT count() FROM system.parts WHERE database = currentDatabase() \
                 AND table = ? AND level = 0",
            )
            .bind(args.table.as_str())
            .fetch_one()
            .await?;
        let mut lat = std::mem::take(&mut *latencies.lock().unwrap_or_else(|p| p.into_inner()));
        lat.sort_unstable();
        let q = |f: f64| super::workloads::quantile(&lat, f).as_secs_f64() * 1e3;
        let peak = match (target, args.serve_pid) {
            (Target::Direct, _) | (_, None) => "-".to_string(),
            _ => format!("{:.0}", peak.load(Relaxed) as f64 / 1024.0),
        };
        println!(
            "{label:<14} {:>10.0} {:>9.1} {:>9.1} {parts:>8} {peak:>14}",
            acked as f64 / elapsed.as_secs_f64(),
            q(0.50),
            q(0.99)
        );
    }
    ch.query(&format!("DROP TABLE IF EXISTS {table}"))
        .execute()
        .await?;
    Ok(())
}

/// Waits (up to 60 s) until serve's `/ready` answers 200: its tables'
/// schemas are read.
async fn ready(http: &HttpClient, serve: &str) -> Result<(), String> {
    let url = format!("{}/ready", serve.trim_end_matches('/'));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let request = hyper::Request::get(&url)
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        if let Ok(r) = http.request(request).await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("{url} did not answer 200 within 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One client's body: `rows` events from event number `from`.
fn build(body: Body, from: u64, rows: u64) -> Result<Bytes, String> {
    match body {
        Body::Json => {
            let mut out = Vec::new();
            for i in from..from + rows {
                out.extend_from_slice(event(i).to_json().as_bytes());
                out.push(b'\n');
            }
            Ok(out.into())
        }
        Body::Native => {
            let mut rb = bytes::BytesMut::new();
            for i in from..from + rows {
                ch_ingest::rowbinary::encode_row(&event(i), &mut rb, None)
                    .map_err(|e| e.to_string())?;
            }
            let schema = ch_ingest::Schema::new(PostEvent::SCHEMA.iter().copied())
                .map_err(|e| e.to_string())?;
            let block = ch_ingest::sink::native_block(&schema, &[rb.freeze()], rows)
                .map_err(|e| e.to_string())?;
            Ok(block.concat().into())
        }
    }
}

async fn post(http: &HttpClient, url: &str, body: Bytes) -> Result<(), String> {
    let request = hyper::Request::post(url)
        .header("content-length", body.len())
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let response = http
        .request(request)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    let text = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "{url}: {status}: {}",
            String::from_utf8_lossy(&text)
        ));
    }
    Ok(())
}

/// Current resident set of a process, KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
