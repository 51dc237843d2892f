//! Rows/s into a real ClickHouse, for ch-ingest at shard thresholds 100 to
//! 100 000 (in its default INSERT shape, sorted Native, and in the three
//! others), beside the `clickhouse` crate's `Inserter` (one task; shared by two
//! threads through a Mutex and through a channel) and beside pre-encoded
//! RowBinary posted straight over HTTP at the same sizes (the ceiling), all in
//! one run against one private server (started as the tests do, or the one
//! `CLICKHOUSE_URL` names). Without a server it prints a notice and skips.
//!
//! The workloads are the ones `ch-ingest bench sweep` runs (the CLI
//! library's `workloads` module). After
//! the group it prints the target ratios from this run's medians.

#[path = "../../tests/support/mod.rs"]
mod support;

use ch_ingest::PostEvent;
use ch_ingest_cli::workloads::{self, Budget, Peer};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SIZES: [u64; 5] = [100, 500, 2_000, 10_000, 100_000];

/// `cargo test --all-targets` runs each bench once, unoptimised: a smoke
/// check of every workload against the server, kept small. Criterion is in
/// that mode when `cargo bench` did not pass `--bench`, or `--test` was given.
fn smoke_test() -> bool {
    let mut args = std::env::args();
    !args.any(|a| a == "--bench") || std::env::args().any(|a| a == "--test")
}

/// Events per iteration: about half a second of work at the rate each peer
/// reached on this machine, and at least two full batches per producer.
fn events_per_iter(peer: Peer, size: u64) -> u64 {
    let unit = size * workloads::PRODUCERS;
    if smoke_test() {
        return (2 * unit).min(20_000);
    }
    let est_rate = match peer {
        Peer::ChIngest
        | Peer::ChIngestSortedRowBinary
        | Peer::ChIngestArrivalNative
        | Peer::ChIngestArrivalRowBinary => 2_000_000.0,
        Peer::InserterMutex => (size as f64 * 400.0).min(300_000.0),
        _ => (size as f64 * 600.0).min(2_000_000.0),
    };
    let want = ((est_rate * 0.5) as u64).max(2 * unit);
    want.div_ceil(unit) * unit
}

fn bench_end_to_end(c: &mut Criterion) {
    let Some(server) = support::shared() else {
        eprintln!("NOTICE: end_to_end skipped: no ClickHouse server could be started");
        return;
    };
    eprintln!(
        "end_to_end: ClickHouse {} at {}",
        server.version, server.url
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let table = format!("e2e_{}", std::process::id());
    let ddl = PostEvent::create_table_sql(&table);
    // Median rows/s per (peer, size), for the ratios printed at the end.
    let rates: Mutex<HashMap<(&str, u64), Vec<f64>>> = Mutex::default();

    let mut g = c.benchmark_group("end_to_end_rows");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4));
    // The smoke check runs every workload at one size: the sizes share all
    // their code, and five of them cost CI a minute and a half.
    let sizes: &[u64] = if smoke_test() { &[500] } else { &SIZES };
    for &size in sizes {
        for peer in Peer::ALL {
            let events = events_per_iter(peer, size);
            g.throughput(Throughput::Elements(events));
            g.bench_function(format!("{}/{size}", peer.name()), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        server.query(&format!("DROP TABLE IF EXISTS {table}"));
                        server.query(&ddl);
                        let budget = Budget {
                            events,
                            time: Duration::from_secs(60),
                        };
                        let client = ch_ingest::sink::nodelay_client().with_url(&server.url);
                        let p = workloads::run(&rt, &client, &table, peer, size, budget)
                            .unwrap_or_else(|e| panic!("{} at {size}: {e}", peer.name()));
                        assert_eq!(server.count(&table), p.rows, "rows acknowledged vs counted");
                        // Normalise to the iteration's nominal event count, so
                        // criterion's throughput matches what was measured.
                        total += p.elapsed.mul_f64(events as f64 / p.rows.max(1) as f64);
                        rates
                            .lock()
                            .unwrap()
                            .entry((peer.name(), size))
                            .or_default()
                            .push(p.rows_per_sec());
                    }
                    total
                })
            });
        }
    }
    g.finish();
    server.query(&format!("DROP TABLE IF EXISTS {table}"));

    let rates = rates.into_inner().unwrap();
    let median = |peer: Peer, size: u64| {
        let mut v = rates.get(&(peer.name(), size)).cloned().unwrap_or_default();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    if smoke_test() {
        println!("\nend_to_end smoke check passed (unoptimised, one size: not a measurement)");
        return;
    }
    println!("\nend_to_end medians (rows/s) from this run:");
    println!(
        "{:<28} {}",
        "peer",
        sizes
            .iter()
            .map(|s| format!("{s:>10}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    for peer in Peer::ALL {
        println!(
            "{:<28} {}",
            peer.name(),
            sizes
                .iter()
                .map(|&s| format!("{:>10.0}", median(peer, s)))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    let ours = median(Peer::ChIngest, 500);
    let best = |peer: Peer| sizes.iter().map(|&s| median(peer, s)).fold(0.0, f64::max);
    println!(
        "target ratios: ch_ingest@500 / best raw_http_ceiling = {:.2}, / best raw_http_ceiling_2_inflight = {:.2} \
         (target >= 0.9); ch_ingest@500 / inserter_mutex_2_threads@500 = {:.1} (target >= 10)",
        ours / best(Peer::Ceiling),
        ours / best(Peer::Ceiling2),
        ours / median(Peer::InserterMutex, 500)
    );
    println!(
        "INSERT shape: ch_ingest (sorted Native) / ch_ingest_arrival_rowbinary = {}",
        sizes
            .iter()
            .map(|&s| format!(
                "{:.2}@{s}",
                median(Peer::ChIngest, s) / median(Peer::ChIngestArrivalRowBinary, s)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

criterion_group!(benches, bench_end_to_end);
criterion_main!(benches);
