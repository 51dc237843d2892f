//! `ch-ingest load --http URL`: loads an HTTP endpoint like a fleet of
//! services would: C connections each POST NDJSON bodies of B events, and
//! the run ends with requests/s, events/s and latency percentiles. Bodies
//! are built before the clock starts (up to 4 M events), so the numbers are
//! the endpoint's, not this generator's.
//!
//! Owns: the request loop (honouring 429/503 with `Retry-After` and the
//! `retry_from_line` a `serve` answer carries, so no event is skipped), and
//! the `--direct` baseline that sends the same bodies to ClickHouse as one
//! `INSERT ... FORMAT JSONEachRow` per request.
//! Must not: count an event as sent before the endpoint acknowledged it.

use super::workloads::event;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one body may keep being answered 429/503 before the run fails.
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);

pub struct HttpLoad {
    pub url: String,
    pub direct_table: Option<String>,
    pub events: u64,
    pub batch: u64,
    pub connections: usize,
    pub token: Option<String>,
    pub gzip: bool,
    pub quiet: bool,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Up to this many events, every body is built before the clock starts.
const PREBUILT: u64 = 4_000_000;

pub fn run(load: HttpLoad) -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(drive(load))
}

async fn drive(load: HttpLoad) -> Result<(), Box<dyn std::error::Error>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(load.connections)
        .build(connector);
    let target = match &load.direct_table {
        // The baseline: the same NDJSON, one INSERT per request, straight in.
        Some(table) => {
            let sql = format!(
                "INSERT INTO {} FORMAT JSONEachRow",
                ch_ingest::sink::sql::quote_table(table)
            );
            let sep = if load.url.contains('?') { '&' } else { '?' };
            format!("{}{sep}query={}", load.url, percent_encode(&sql))
        }
        None => load.url.clone(),
    };
    // Bodies are made before the clock starts (up to PREBUILT events), so
    // the report measures the endpoint, not this generator's JSON.
    let bodies = load.events.div_ceil(load.batch);
    let prebuilt: Arc<Vec<(Bytes, Bytes)>> = Arc::new(if load.events <= PREBUILT {
        (0..bodies).map(|k| body_for(&load, k)).collect()
    } else {
        Vec::new()
    });
    let load = Arc::new(load);
    let next = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let retried = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..load.connections {
        let (client, target, load, next, sent, retried, prebuilt) = (
            client.clone(),
            target.clone(),
            load.clone(),
            next.clone(),
            sent.clone(),
            retried.clone(),
            prebuilt.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = crate::latency_histogram();
            let mut requests = 0u64;
            loop {
                let k = next.fetch_add(1, Relaxed);
                if k >= bodies {
                    break;
                }
                let (plain, wire) = match prebuilt.get(k as usize) {
                    Some(b) => b.clone(),
                    None => body_for(&load, k),
                };
                let to = Endpoint {
                    client: &client,
                    target: &target,
                    load: &load,
                    retried: &retried,
                };
                send_until_taken(to, &plain, wire, &mut latencies, &mut requests).await?;
                let first = k * load.batch;
                let count = (first + load.batch).min(load.events) - first;
                let n = sent.fetch_add(count, Relaxed) + count;
                if !load.quiet && n % (load.events / 10).max(1) < load.batch {
                    eprintln!("  {n} events acknowledged");
                }
            }
            Ok::<_, String>((latencies, requests))
        }));
    }
    let mut latencies = crate::latency_histogram();
    let mut requests = 0;
    for t in tasks {
        let (h, r) = t.await??;
        latencies.add(&h).expect("histograms of one shape");
        requests += r;
    }
    let secs = started.elapsed().as_secs_f64();
    let events = sent.load(Relaxed);
    println!(
        "http load: {} events in {requests} requests ({} events each, {} connections{}) to {}",
        events,
        load.batch,
        load.connections,
        if load.gzip { ", gzip" } else { "" },
        if load.direct_table.is_some() {
            "ClickHouse directly (one INSERT per request)"
        } else {
            "ch-ingest serve"
        }
    );
    println!(
        "  {:.0} requests/s, {:.0} events/s; request latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {} answered 429/503 and were resent",
        requests as f64 / secs,
        events as f64 / secs,
        latencies.value_at_quantile(0.50) as f64 / 1e3,
        latencies.value_at_quantile(0.99) as f64 / 1e3,
        latencies.max() as f64 / 1e3,
        retried.load(Relaxed)
    );
    if events != load.events {
        return Err(format!("only {events} of {} events acknowledged", load.events).into());
    }
    Ok(())
}

/// Where one connection's bodies go, and the count of resends.
#[derive(Clone, Copy)]
struct Endpoint<'a> {
    client: &'a HttpClient,
    target: &'a str,
    load: &'a HttpLoad,
    retried: &'a AtomicU64,
}

/// Posts one body until serve takes all of it: a 429/503 resends the lines
/// after `retry_from_line`, after `Retry-After`; a body refused outright
/// for `GIVE_UP_AFTER` fails the run, as does any other status or a
/// rejected line (the generated events are all valid).
async fn send_until_taken(
    to: Endpoint<'_>,
    plain: &[u8],
    wire: Bytes,
    latencies: &mut hdrhistogram::Histogram<u64>,
    requests: &mut u64,
) -> Result<(), String> {
    let Endpoint {
        client,
        target,
        load,
        retried,
    } = to;
    let mut plain = plain;
    let mut wire = wire;
    let mut refused_since: Option<Instant> = None;
    loop {
        let t0 = Instant::now();
        let (status, retry_after, text) = post(client, target, load, wire.clone()).await?;
        latencies.saturating_record(t0.elapsed().as_micros() as u64);
        *requests += 1;
        match status {
            200 => {
                // The generated events are all valid: a line
                // `serve` rejected is a bug worth stopping for.
                let answer = serde_json::from_str::<serde_json::Value>(&text).ok();
                let rejected = answer
                    .as_ref()
                    .and_then(|v| v["rejected_count"].as_u64())
                    .unwrap_or(0);
                if rejected > 0 {
                    return Err(format!(
                        "HTTP 200 but {rejected} lines rejected: {}",
                        text.trim()
                    ));
                }
                break;
            }
            429 | 503 => {
                let since = *refused_since.get_or_insert_with(Instant::now);
                if since.elapsed() > GIVE_UP_AFTER {
                    return Err(format!(
                        "HTTP {status} for {GIVE_UP_AFTER:?} on one body: {}",
                        text.trim()
                    ));
                }
                retried.fetch_add(1, Relaxed);
                // Lines before `retry_from_line` were taken: resend the rest.
                let taken = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["retry_from_line"].as_u64())
                    .map_or(0, |line| line.saturating_sub(1));
                let skip: usize = plain
                    .split_inclusive(|&b| b == b'\n')
                    .take(taken as usize)
                    .map(<[u8]>::len)
                    .sum();
                plain = &plain[skip..];
                if skip > 0 {
                    // Progress: only a body refused outright
                    // for the whole window fails the run.
                    refused_since = None;
                }
                wire = encode(load, plain.to_vec());
                tokio::time::sleep(retry_after.unwrap_or(Duration::from_millis(100))).await;
            }
            _ => {
                return Err(format!("HTTP {status}: {}", text.trim()));
            }
        }
    }
    Ok(())
}

async fn post(
    client: &HttpClient,
    target: &str,
    load: &HttpLoad,
    body: Bytes,
) -> Result<(u16, Option<Duration>, String), String> {
    let mut req = hyper::Request::post(target).header("content-type", "application/x-ndjson");
    if load.gzip {
        req = req.header("content-encoding", "gzip");
    }
    if let Some(t) = &load.token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok((
        status,
        retry_after,
        String::from_utf8_lossy(&text).into_owned(),
    ))
}

/// Body `k` (events `k*batch ..`), plain and as sent.
fn body_for(load: &HttpLoad, k: u64) -> (Bytes, Bytes) {
    let from = k * load.batch;
    let plain = ndjson(from, (from + load.batch).min(load.events));
    let wire = encode(load, plain.clone());
    (plain.into(), wire)
}

/// What goes on the wire: the body, gzipped with --gzip.
fn encode(load: &HttpLoad, plain: Vec<u8>) -> Bytes {
    if !load.gzip {
        return plain.into();
    }
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = gz.write_all(&plain);
    gz.finish().unwrap_or_default().into()
}

/// Events `from..to` as NDJSON, the JSON a service would send.
fn ndjson(from: u64, to: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(((to - from) * 160) as usize);
    for i in from..to {
        out.extend_from_slice(event(i).to_json().as_bytes());
        out.push(b'\n');
    }
    out
}

pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
