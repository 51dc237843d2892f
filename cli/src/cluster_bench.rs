//! `ch-ingest bench cluster`: the ways to feed a replicated cluster, in one
//! run against the same cluster: ch-ingest straight to the shards'
//! local tables, ch-ingest into the `Distributed` table (with
//! `insert_distributed_sync` 0 and 1), and the `clickhouse` crate's
//! `Inserter` into the `Distributed` table (one per producer thread, with
//! the crate's schema validation off: it reads the columns with a query
//! 18.16 does not answer). Each way sends the same events;
//! the report gives rows/s until acknowledged, the time until every row is
//! visible through the `Distributed` table, and the CPU seconds the servers
//! spent (from `/proc/PID/stat` of `--server-pid`s, so run it on the
//! cluster's host, e.g. one `scripts/cluster.sh` started).
//!
//! Owns: the four ways, the count check after each, the CPU accounting and
//! the table. Must not: TRUNCATE between ways (on 18.16 a TRUNCATE of a
//! replicated table issued on every node can wait on its twin for ever;
//! each way counts what it added instead).

use super::workloads;
use ch_ingest::sink::sql::quote_table;
use ch_ingest::sink::{ClickHouseSink, ClusterShard, ClusterSink, Sink};
use ch_ingest::{Buffer, PostEvent};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct ClusterBenchArgs {
    /// One shard's replica URLs, comma-separated; repeat per shard.
    #[arg(long = "shard", required = true)]
    shards: Vec<String>,
    #[command(flatten)]
    tls: crate::tls_args::TlsArgs,
    /// The shards' local table.
    #[arg(long, default_value = "post_events_local")]
    local_table: String,
    /// The Distributed table over it (on every node).
    #[arg(long, default_value = "post_events")]
    distributed_table: String,
    /// Events per way.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Rows per INSERT (the engine's max_rows and max_insert_rows).
    #[arg(long, default_value_t = 10_000)]
    batch: u64,
    /// PIDs of the cluster's servers, for their CPU seconds (repeat).
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
}

/// One way's outcome.
struct Row {
    way: &'static str,
    rows: u64,
    acked_in: Duration,
    visible_in: Duration,
    cpu: Option<f64>,
}

pub fn run(args: ClusterBenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let shards: Vec<ClusterShard> = args
        .shards
        .iter()
        .map(|s| ClusterShard::new(s.split(',').map(str::trim).filter(|u| !u.is_empty())))
        .collect();
    let nodes: Vec<String> = shards.iter().flat_map(|s| s.replicas().to_vec()).collect();
    // Every client of the run: http:// or https:// with --ca-cert.
    let base = args.tls.client()?;
    let nodelay_client = || base.clone();
    let first = nodes.first().ok_or("--shard lists no URL")?.clone();
    let mut table = Vec::new();
    for way in [
        "direct_to_shards",
        "distributed_async",
        "distributed_sync",
        "inserter_distributed",
    ] {
        let client = nodelay_client().with_url(&first).with_validation(false);
        let count_sql = format!(
            "SELECT count() FROM {}",
            quote_table(&args.distributed_table)
        );
        let before = synced_total(&rt, &base, &shards, &args.local_table)?;
        let cpu_before = cpu_seconds(&args.server_pids);
        let started = Instant::now();
        let acked = match way {
            "direct_to_shards" => {
                let sink = ClusterSink::new(nodelay_client(), shards.clone(), &args.local_table)?;
                engine(&rt, sink, &args)?
            }
            "inserter_distributed" => {
                let client = nodelay_client().with_url(&first).with_validation(false);
                inserter(
                    &rt,
                    client,
                    &args.distributed_table,
                    args.events,
                    args.batch,
                )?
            }
            _ => {
                let sync = if way == "distributed_sync" { "1" } else { "0" };
                let client = nodelay_client()
                    .with_url(&first)
                    .with_setting("insert_distributed_sync", sync);
                engine(
                    &rt,
                    ClickHouseSink::new(client, &args.distributed_table),
                    &args,
                )?
            }
        };
        let acked_in = started.elapsed();
        // The Distributed table's own queue (async) delivers later: the
        // way is done when every row can be read back.
        let deadline = Instant::now() + Duration::from_secs(120);
        let visible = loop {
            let n = rt
                .block_on(client.query(&count_sql).fetch_one::<u64>())?
                .saturating_sub(before);
            if n >= acked || Instant::now() > deadline {
                break n;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let visible_in = started.elapsed();
        // Read through the Distributed table, a lagging replica can make
        // the count look short or (against a short `before`) long: the
        // check is on the shards, every replica caught up.
        let stored = synced_total(&rt, &base, &shards, &args.local_table)? - before;
        if visible < acked || stored != acked {
            return Err(format!(
                "{way}: {acked} rows acknowledged, {visible} visible, {stored} stored"
            )
            .into());
        }
        let cpu = cpu_seconds(&args.server_pids)
            .zip(cpu_before)
            .map(|(after, before)| after - before);
        println!(
            "{way}: {acked} rows, acked in {:.2}s, visible in {:.2}s, server CPU {}",
            acked_in.as_secs_f64(),
            visible_in.as_secs_f64(),
            cpu.map_or("n/a".into(), |c| format!("{c:.2}s"))
        );
        table.push(Row {
            way,
            rows: acked,
            acked_in,
            visible_in,
            cpu,
        });
    }
    println!("\n| way | rows | rows/s acknowledged | rows/s visible | server CPU s (all nodes) |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for r in &table {
        println!(
            "| {} | {} | {:.0} | {:.0} | {} |",
            r.way,
            r.rows,
            r.rows as f64 / r.acked_in.as_secs_f64(),
            r.rows as f64 / r.visible_in.as_secs_f64(),
            r.cpu.map_or("n/a".into(), |c| format!("{c:.2}"))
        );
    }
    Ok(())
}

/// ch-ingest with `sink`: two producer threads track the events, then flush.
fn engine<S: Sink>(
    rt: &tokio::runtime::Runtime,
    sink: S,
    args: &ClusterBenchArgs,
) -> Result<u64, Box<dyn std::error::Error>> {
    let buffer: Buffer<PostEvent> = rt.block_on(async {
        Buffer::builder()
            .shards(2)
            .max_rows(args.batch)
            .max_insert_rows(args.batch)
            .build(sink)
    })?;
    track_all(rt, buffer, args.events)
}

/// Two producer threads track `events` events into `buffer`, then it shuts
/// down; the rows acknowledged, or an error if any row failed.
pub(crate) fn track_all(
    rt: &tokio::runtime::Runtime,
    buffer: Buffer<PostEvent>,
    events: u64,
) -> Result<u64, Box<dyn std::error::Error>> {
    let per = events / 2;
    let producers: Vec<_> = (0..2u64)
        .map(|p| {
            let b = buffer.clone();
            std::thread::spawn(move || {
                for i in p * per..(p + 1) * per {
                    b.track_blocking(workloads::event(i), Duration::from_secs(60))
                        .map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for p in producers {
        p.join().map_err(|_| "a producer panicked")??;
    }
    let report = rt.block_on(buffer.shutdown())?;
    if !report.is_complete() {
        return Err(format!("{} rows failed: {:?}", report.failed_rows, report.failures).into());
    }
    Ok(buffer.stats().acked_rows)
}

/// The `clickhouse` crate's `Inserter` into `table`, one per producer
/// thread (it is not shared between threads), each committing every
/// `batch` rows; `events` in all.
pub(crate) fn inserter(
    rt: &tokio::runtime::Runtime,
    client: clickhouse::Client,
    table: &str,
    events: u64,
    batch: u64,
) -> Result<u64, Box<dyn std::error::Error>> {
    let per = events / 2;
    let producers: Vec<_> = (0..2u64)
        .map(|p| {
            let (client, handle) = (client.clone(), rt.handle().clone());
            let table = table.to_string();
            std::thread::spawn(move || {
                handle.block_on(async move {
                    let mut ins = client.inserter::<PostEvent>(&table).with_max_rows(batch);
                    let mut rows = 0;
                    for i in p * per..(p + 1) * per {
                        ins.write(&workloads::event(i)).await?;
                        rows += ins.commit().await?.rows;
                    }
                    rows += ins.end().await?.rows;
                    Ok::<u64, clickhouse::error::Error>(rows)
                })
            })
        })
        .collect();
    let mut acked = 0;
    for p in producers {
        acked += p.join().map_err(|_| "a producer panicked")??;
    }
    Ok(acked)
}

/// Rows in `local` summed over the shards, once every replica has pulled
/// what its twin stored (`SYSTEM SYNC REPLICA` on each).
fn synced_total(
    rt: &tokio::runtime::Runtime,
    client: &clickhouse::Client,
    shards: &[ClusterShard],
    local: &str,
) -> Result<u64, Box<dyn std::error::Error>> {
    let mut total = 0;
    for shard in shards {
        let mut counts = Vec::new();
        for url in shard.replicas() {
            let c = client.clone().with_url(url).with_validation(false);
            rt.block_on(
                c.query(&format!("SYSTEM SYNC REPLICA {}", quote_table(local)))
                    .execute(),
            )?;
            let sql = format!("SELECT count() FROM {}", quote_table(local));
            counts.push(rt.block_on(c.query(&sql).fetch_one::<u64>())?);
        }
        total += counts.iter().copied().max().unwrap_or(0);
    }
    Ok(total)
}

/// User plus system CPU seconds of these processes, `None` without pids.
pub(crate) fn cpu_seconds(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    // Linux reports both in clock ticks of USER_HZ, 100 on every Linux ABI.
    const TICKS: f64 = 100.0;
    let mut total = 0u64;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the parenthesised command: state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        total += f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    }
    Some(total as f64 / TICKS)
}
