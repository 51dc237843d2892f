//! `ch-ingest load`: P producer threads generate realistic PostEvents as fast
//! as they can (or at `--rate`), track them, and the run ends with a report.
//! With no server named the batches go to a FileSink (no server needed).

use super::cluster_bench::cpu_seconds;
use super::parse_duration;
use ch_ingest::sink::{ClickHouseSink, ClusterShard, ClusterSink, Discovery, FileSink, Sink};
use ch_ingest::{Buffer, PostEvent, Stats, TrackError};
use hdrhistogram::Histogram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// Total events to send (ignored when --duration is given).
    #[arg(long, default_value_t = 2_000_000)]
    events: u64,
    /// Run for this long instead of a fixed count, e.g. 30s, 2m.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Producer threads. Default: available cores.
    #[arg(long)]
    producers: Option<usize>,
    /// Target events per second over all producers (default: as fast as possible).
    #[arg(long)]
    rate: Option<u64>,
    /// Shards. Default: available cores.
    #[arg(long)]
    shards: Option<usize>,
    /// Rows per sealed shard batch.
    #[arg(long, default_value_t = 500)]
    max_rows: u64,
    /// Bytes per sealed shard batch.
    #[arg(long, default_value_t = 1 << 20)]
    max_bytes: usize,
    /// Shared flush tick, e.g. 10s, 500ms.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    flush_interval: Duration,
    /// INSERTs in flight at once.
    #[arg(long, default_value_t = 2)]
    max_inflight: usize,
    /// Bytes of sealed batches that may queue for an INSERT (coalescing room).
    #[arg(long, default_value_t = 16 << 20)]
    queue_bytes: usize,
    /// How long a lone sealed batch may wait for company, e.g. 200ms (default 0).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    linger: Duration,
    /// The order each INSERT's rows are sent in: arrival, sorted (by the
    /// table's key, from the server) or sorted(col, ...).
    #[arg(long, default_value = "sorted")]
    insert_order: ch_ingest::sink::InsertOrder,
    /// The format each INSERT is sent in: Native or RowBinary.
    #[arg(long, default_value = "Native")]
    insert_format: ch_ingest::sink::InsertFormat,
    /// PID of the ClickHouse server (on this host): the report gives the
    /// CPU seconds it spent during the run.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Attempts per INSERT, the first included (1 = never retry).
    #[arg(long, default_value_t = 10)]
    retry_attempts: u32,
    /// No retry starts later than this after an INSERT's first attempt.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    retry_max_elapsed: Duration,
    /// Spill INSERTs whose retries ran out here, and replay them.
    #[arg(long)]
    spill_dir: Option<PathBuf>,
    /// Keep INSERTs the server refused for good here.
    #[arg(long)]
    dead_letter_dir: Option<PathBuf>,
    /// After the last event, wait at most this long for spilled batches to
    /// be replayed before the final count check.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// ClickHouse HTTP URL; without it batches go to RowBinary files in --out.
    #[arg(long)]
    clickhouse_url: Option<String>,
    #[command(flatten)]
    tls: crate::tls_args::TlsArgs,
    /// Table to insert into (with --shard or --cluster: each shard's local table).
    #[arg(long, default_value = "post_events")]
    table: String,
    /// One shard's replica URLs, comma-separated; repeat for each shard of
    /// a cluster. Each INSERT goes to one shard's local --table.
    #[arg(long = "shard")]
    shard_urls: Vec<String>,
    /// Discover the shards of this cluster (system.clusters) through
    /// --clickhouse-url; every node's HTTP port is that URL's.
    #[arg(long, requires = "clickhouse_url", conflicts_with = "shard_urls")]
    cluster: Option<String>,
    /// With --shard or --cluster: place rows by this sharding-key
    /// expression, as a Distributed table with it would (a column,
    /// intHash64(c), cityHash64(c) or sipHash64(c)), instead of whole
    /// INSERTs by identity. The columns come from DESCRIBE on a replica.
    #[arg(long)]
    sharding_key: Option<String>,
    /// Give every event a session_id unique in the run (run, producer and
    /// sequence number), and check for duplicates at the end.
    #[arg(long)]
    unique_events: bool,
    /// CREATE TABLE IF NOT EXISTS before loading (ClickHouse only).
    #[arg(long)]
    create_table: bool,
    /// Directory for the file sink.
    #[arg(long, default_value = "./ch-ingest-out")]
    out: PathBuf,
    /// No live progress line.
    #[arg(long)]
    quiet: bool,
    /// Load an HTTP endpoint instead of an in-process engine: POST NDJSON
    /// bodies of --batch events to this URL (a `ch-ingest serve` events URL,
    /// or with --direct-table a ClickHouse URL).
    #[arg(long)]
    http: Option<String>,
    /// With --http: send each body to ClickHouse as one INSERT into this
    /// table (FORMAT JSONEachRow), the no-sidecar baseline.
    #[arg(long, requires = "http")]
    direct_table: Option<String>,
    /// With --http: events per request.
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    /// With --http: concurrent connections.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// With --http: bearer token.
    #[arg(long)]
    token: Option<String>,
    /// With --http: gzip each body.
    #[arg(long)]
    gzip: bool,
}

pub fn run(args: LoadArgs) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(url) = args.http {
        if args.batch == 0 || args.connections == 0 {
            return Err("--batch and --connections must be at least 1".into());
        }
        return super::http_load::run(super::http_load::HttpLoad {
            url,
            direct_table: args.direct_table,
            events: args.events,
            batch: args.batch,
            connections: args.connections,
            token: args.token,
            gzip: args.gzip,
            quiet: args.quiet,
        });
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.min(2))
        .enable_all()
        .build()?;
    if !args.shard_urls.is_empty() || args.cluster.is_some() {
        return run_cluster(&rt, &args, cores);
    }
    if args.sharding_key.is_some() {
        return Err("--sharding-key needs a cluster (--shard ... or --cluster)".into());
    }
    match &args.clickhouse_url {
        Some(url) => {
            let client = args.tls.client()?.with_url(url);
            let sink = ClickHouseSink::new(client.clone(), &args.table);
            if args.create_table {
                rt.block_on(
                    client
                        .query(&PostEvent::create_table_sql(&args.table))
                        .execute(),
                )?;
            }
            let before = rt.block_on(count(&client, &args.table))?;
            let outcome = drive(&rt, &args, sink, cores)?;
            let after = rt.block_on(count(&client, &args.table))?;
            let arrived = after - before;
            // Rows an earlier run spilled and this one replayed arrive too.
            let expected = outcome.acked_rows + outcome.replayed_foreign_rows;
            println!(
                "check     SELECT count() FROM {}: {arrived} new rows, {expected} acknowledged: {}",
                args.table,
                if arrived == expected {
                    "match"
                } else {
                    "MISMATCH"
                }
            );
            if arrived != expected {
                return Err("row count in ClickHouse does not match what was acknowledged".into());
            }
        }
        None => {
            let sink = FileSink::new(&args.out, &args.table)?;
            drive(&rt, &args, sink, cores)?;
            println!(
                "files     {}/ (load with: {}/load.sh, or clickhouse-client --query \"$(cat {}/INSERT.sql)\" < FILE)",
                args.out.display(),
                args.out.display(),
                args.out.display()
            );
        }
    }
    Ok(())
}

/// `load` into a cluster: a ClusterSink over the shards, then the count
/// check summed over the shards and, with --unique-events, the duplicates
/// check on every shard.
fn run_cluster(
    rt: &tokio::runtime::Runtime,
    args: &LoadArgs,
    cores: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let client = args.tls.client()?;
    let shards: Vec<ClusterShard> = match (&args.cluster, &args.clickhouse_url) {
        (Some(cluster), Some(seed)) => {
            let discovery = Discovery::new(seed)
                .cluster(cluster)
                .local_table(&args.table);
            rt.block_on(discovery.topology(&client))?.shards
        }
        _ => args
            .shard_urls
            .iter()
            .map(|urls| ClusterShard::new(urls.split(',').map(str::trim).filter(|u| !u.is_empty())))
            .collect(),
    };
    let mut sink = ClusterSink::new(client.clone(), shards.clone(), &args.table)?;
    if let Some(key) = &args.sharding_key {
        // Refused before any server is asked when we do not compute it.
        if !ClusterSink::can_route_by(key) {
            return Err(format!(
                "--sharding-key `{key}`: not a key ch-ingest computes (a column, intHash64(c), \
                 cityHash64(c) or sipHash64(c)); load through the Distributed table instead \
                 (--clickhouse-url and its name as --table)"
            )
            .into());
        }
        let seed = shards
            .iter()
            .flat_map(|s| s.replicas())
            .next()
            .ok_or("the cluster has no replica")?;
        let schema = rt.block_on(ch_ingest::Schema::fetch(
            &client.clone().with_url(seed),
            &args.table,
        ))?;
        sink = sink.with_sharding_key(key, &schema)?;
    }
    // The first replica that answers speaks for its shard, once it has
    // fetched what its twins stored.
    let shard_query = |shard: &ClusterShard, sql: String| {
        let client = client.clone();
        let (table, replicas) = (args.table.clone(), shard.replicas().to_vec());
        async move {
            let mut last = None;
            for url in &replicas {
                let c = client.clone().with_url(url).with_validation(false);
                let sync = format!(
                    "SYSTEM SYNC REPLICA {}",
                    ch_ingest::sink::sql::quote_table(&table)
                );
                // Not replicated (a plain MergeTree): nothing to wait for.
                let _ = c.query(&sync).execute().await;
                match c.query(&sql).fetch_one::<u64>().await {
                    Ok(n) => return Ok(n),
                    Err(e) => last = Some(e),
                }
            }
            Err(format!(
                "no replica of {replicas:?} answered `{sql}`: {last:?}"
            ))
        }
    };
    let counts = |rt: &tokio::runtime::Runtime| -> Result<Vec<u64>, String> {
        let sql = format!(
            "SELECT count() FROM {}",
            ch_ingest::sink::sql::quote_table(&args.table)
        );
        shards
            .iter()
            .map(|s| rt.block_on(shard_query(s, sql.clone())))
            .collect()
    };
    let before = counts(rt)?;
    let outcome = drive(rt, args, sink, cores)?;
    let after = counts(rt)?;
    let per_shard: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let arrived: u64 = per_shard.iter().sum();
    let expected = outcome.acked_rows + outcome.replayed_foreign_rows;
    let verdict = if arrived == expected {
        "match"
    } else {
        "MISMATCH"
    };
    println!(
        "check     count() over {} shards of {}: {arrived} new rows {per_shard:?}, {expected} acknowledged: {verdict}",
        shards.len(),
        args.table
    );
    if arrived != expected {
        return Err("row count in the cluster does not match what was acknowledged".into());
    }
    if let Some(run) = args.unique_events.then(unique_run_id) {
        let sql = format!(
            // uniqExact over a Nullable column is Nullable on 18.16: ifNull
            // keeps the answer a plain UInt64.
            "SELECT toUInt64(ifNull(count() - uniqExact(session_id), 0)) FROM {} WHERE startsWith(session_id, 'u{run:x}-')",
            ch_ingest::sink::sql::quote_table(&args.table)
        );
        let dups: Vec<u64> = shards
            .iter()
            .map(|s| rt.block_on(shard_query(s, sql.clone())))
            .collect::<Result<_, _>>()?;
        let total: u64 = dups.iter().sum();
        println!(
            "check     duplicates (count() - uniqExact(session_id)) per shard: {dups:?}: {}",
            if total == 0 { "none" } else { "DUPLICATES" }
        );
        if total != 0 {
            return Err(format!("{total} duplicated rows in the cluster").into());
        }
    }
    Ok(())
}

/// This run's id in --unique-events session ids: the process start, so two
/// runs into one table never share one.
fn unique_run_id() -> u64 {
    static RUN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *RUN.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (now.as_millis() as u64) << 16 | u64::from(std::process::id() as u16)
    })
}

async fn count(client: &clickhouse::Client, table: &str) -> Result<u64, clickhouse::error::Error> {
    client
        .clone()
        .with_validation(false)
        .query(&format!(
            "SELECT count() FROM {}",
            ch_ingest::sink::sql::quote_table(table)
        ))
        .fetch_one::<u64>()
        .await
}

fn drive<S: Sink>(
    rt: &tokio::runtime::Runtime,
    args: &LoadArgs,
    sink: S,
    cores: usize,
) -> Result<Stats, Box<dyn std::error::Error>> {
    let producers = args.producers.unwrap_or(cores).max(1);
    let rss_before_kib = status_kib("VmRSS:");
    let buffer = engine(rt, args, sink, cores)?;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let server: Vec<u32> = args.server_pid.into_iter().collect();
    let me = [std::process::id()];
    let cpu_before = (cpu_seconds(&server), cpu_seconds(&me));
    let started = Instant::now();
    let per_producer = args.events / producers as u64;
    let handles: Vec<_> = (0..producers)
        .map(|p| {
            let buffer = buffer.clone();
            let stop = stop.clone();
            let sent = sent.clone();
            let quota = if args.duration.is_some() {
                u64::MAX
            } else {
                per_producer + u64::from((p as u64) < args.events % producers as u64)
            };
            let rate = args.rate.map(|r| (r as f64 / producers as f64).max(1.0));
            let unique = args.unique_events.then(unique_run_id);
            std::thread::spawn(move || produce(p as u64, buffer, quota, rate, unique, &stop, &sent))
        })
        .collect();

    let bar = (!args.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
        let bar = indicatif::ProgressBar::new(if args.duration.is_some() {
            0
        } else {
            args.events
        });
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {bar:30} {pos}/{len} events  {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(d) = args.duration {
            if started.elapsed() >= d {
                stop.store(true, Relaxed);
            }
        }
        if let Some(bar) = &bar {
            let s = buffer.stats();
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            bar.set_position(sent.load(Relaxed));
            bar.set_message(format!(
                "{:.0} ev/s, {} acked, {} inserts, {} failed",
                sent.load(Relaxed) as f64 / secs,
                s.acked_rows,
                s.inserts,
                s.failed_rows
            ));
        }
    }
    let mut hist = crate::latency_histogram();
    let mut full_retries = 0;
    for h in handles {
        let (h_part, retries) = h.join().map_err(|_| "a producer thread panicked")?;
        hist.add(&h_part).expect("histograms of one shape");
        full_retries += retries;
    }
    let produced_in = started.elapsed();
    // Everything tracked is acknowledged, failed or spilled once flushed;
    // then give the replayer `--drain-timeout` to empty the spill directory.
    let mut report = rt.block_on(buffer.flush())?;
    let drain_deadline = Instant::now() + args.drain_timeout;
    while buffer.stats().spill_pending_rows > 0 && Instant::now() < drain_deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let last = rt.block_on(buffer.shutdown())?;
    report.rows += last.rows;
    report.failed_rows += last.failed_rows;
    let total = started.elapsed();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let s = buffer.stats();
    print_report(&Outcome {
        args,
        events: sent.load(Relaxed),
        producers,
        produced_in,
        total,
        stats: &s,
        hist: &hist,
        full_retries,
        report: &report,
        server: &server,
        cpu_before,
        rss_before_kib,
        memory_bound: buffer.memory_bound(),
    });
    Ok(s)
}

/// The engine `load` drives, as its flags say.
fn engine<S: Sink>(
    rt: &tokio::runtime::Runtime,
    args: &LoadArgs,
    sink: S,
    cores: usize,
) -> Result<Buffer<PostEvent>, ch_ingest::BuildError> {
    rt.block_on(async {
        let builder = Buffer::builder()
            .shards(args.shards.unwrap_or(cores))
            .max_rows(args.max_rows)
            .max_bytes(args.max_bytes)
            .flush_interval(args.flush_interval)
            .max_inflight(args.max_inflight)
            .queue_bytes(args.queue_bytes)
            .linger(args.linger)
            .insert_order(args.insert_order.clone())
            .insert_format(args.insert_format)
            .retry(
                ch_ingest::RetryPolicy::default()
                    .with_max_attempts(args.retry_attempts.max(1))
                    .with_max_elapsed(args.retry_max_elapsed),
            );
        let builder = match &args.spill_dir {
            Some(dir) => builder.spill_dir(dir),
            None => builder,
        };
        let builder = match &args.dead_letter_dir {
            Some(dir) => builder.dead_letter_dir(dir),
            None => builder,
        };
        builder.build(sink)
    })
}

/// What a run did, for its report.
struct Outcome<'a> {
    args: &'a LoadArgs,
    events: u64,
    producers: usize,
    produced_in: Duration,
    total: Duration,
    stats: &'a Stats,
    hist: &'a hdrhistogram::Histogram<u64>,
    full_retries: u64,
    report: &'a ch_ingest::FlushReport,
    server: &'a [u32],
    cpu_before: (Option<f64>, Option<f64>),
    rss_before_kib: u64,
    memory_bound: usize,
}

/// The report `load` prints: one line per aspect, stable for scripts.
fn print_report(o: &Outcome<'_>) {
    let Outcome {
        args,
        events,
        producers,
        produced_in,
        total,
        stats: s,
        hist,
        full_retries,
        report,
        server,
        cpu_before,
        rss_before_kib,
        memory_bound,
    } = *o;
    let me = [std::process::id()];
    println!("ch-ingest load report");
    println!(
        "events    {events} from {producers} producers in {:.2}s (+{:.2}s to drain)",
        produced_in.as_secs_f64(),
        (total - produced_in).as_secs_f64()
    );
    println!(
        "rate      {:.0} events/s tracked, {:.0} events/s end to end",
        events as f64 / produced_in.as_secs_f64(),
        s.acked_rows as f64 / total.as_secs_f64()
    );
    println!(
        "batches   {} sealed ({:.0} rows each), {} inserts ({:.0} rows each)",
        s.sealed_batches,
        s.tracked_rows as f64 / s.sealed_batches.max(1) as f64,
        s.inserts,
        (s.acked_rows + s.failed_rows) as f64 / s.inserts.max(1) as f64
    );
    println!(
        "track     p50 {} ns, p99 {} ns, max {} ns",
        hist.value_at_quantile(0.50),
        hist.value_at_quantile(0.99),
        hist.max()
    );
    println!(
        "outcome   {} acked, {} failed, {} Full retries, last flush report: {} rows acked / {} failed",
        s.acked_rows, s.failed_rows, full_retries, report.rows, report.failed_rows
    );
    println!(
        "delivery  {} retries, {} spilled, {} replayed, {} still spilled, {} dead-lettered, {} dropped",
        s.retried_inserts,
        s.spilled_rows,
        s.replayed_rows,
        s.spill_pending_rows,
        s.dead_lettered_rows,
        s.dropped_rows
    );
    let place = |dir: &Option<PathBuf>, none: &str| {
        dir.as_ref()
            .map_or(none.to_string(), |d| d.display().to_string())
    };
    println!(
        "kept      spill: {}; dead letters: {}",
        place(
            &args.spill_dir,
            "none (--spill-dir: rows past the retry window are dropped)"
        ),
        place(
            &args.dead_letter_dir,
            "none (--dead-letter-dir: rows refused for good are dropped)"
        ),
    );
    let millions = (s.acked_rows as f64 / 1e6).max(1e-9);
    let spent =
        |pids: &[u32], before: Option<f64>| cpu_seconds(pids).zip(before).map(|(a, b)| a - b);
    println!(
        "cpu       {} INSERTs ({}): server {}, this process {}",
        args.insert_format,
        args.insert_order,
        spent(server, cpu_before.0).map_or("n/a (--server-pid)".into(), |c| format!(
            "{c:.2}s ({:.3}s per M rows)",
            c / millions
        )),
        spent(&me, cpu_before.1).map_or("n/a".into(), |c| format!(
            "{c:.2}s ({:.3}s per M rows)",
            c / millions
        )),
    );
    let peak_kib = status_kib("VmHWM:");
    println!(
        "memory    peak RSS {} MiB: {} MiB before the load + {} MiB during it (engine bound {} MiB of RowBinary)",
        peak_kib / 1024,
        rss_before_kib / 1024,
        peak_kib.saturating_sub(rss_before_kib) / 1024,
        memory_bound >> 20
    );
}

/// One producer: realistic events as fast as allowed; retries a row handed
/// back as Full after yielding, as a server with a short retry would.
fn produce(
    id: u64,
    buffer: Buffer<PostEvent>,
    quota: u64,
    rate: Option<f64>,
    unique_run: Option<u64>,
    stop: &AtomicBool,
    sent: &AtomicU64,
) -> (Histogram<u64>, u64) {
    const EVENT_TYPES: [&str; 6] = [
        "impression",
        "impression",
        "impression",
        "like",
        "click",
        "retweet",
    ];
    const CLIENTS: [&str; 4] = ["ios", "android", "web", ""];
    const COUNTRIES: [[u8; 2]; 5] = [*b"US", *b"BR", *b"JP", *b"DE", [0, 0]];
    let mut rng =
        0x9E37_79B9_7F4A_7C15u64 ^ (id.wrapping_add(1)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let sessions: Vec<String> = (0..256).map(|i| format!("s-{id:x}-{i:08x}")).collect();
    let mut hist = crate::latency_histogram();
    let mut retries = 0u64;
    let started = Instant::now();
    let mut i = 0u64;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1_700_000_000, |d| d.as_secs() as u32);
    while i < quota {
        if i.is_multiple_of(1024) {
            if stop.load(Relaxed) {
                break;
            }
            if let Some(rate) = rate {
                let due = Duration::from_secs_f64(i as f64 / rate);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        let r = next();
        let mut event = PostEvent {
            event_type: EVENT_TYPES[(r % 6) as usize].to_string(),
            tweet_id: 1_000_000_000_000_000_000 + (r >> 20) % 10_000_000,
            occurred_at: now - (r % 60) as u32,
            user_id: (r & 0x300 != 0).then_some((r >> 12) % 50_000_000),
            session_id: (r & 0x400 != 0)
                .then(|| sessions[(r >> 40) as usize % sessions.len()].clone()),
            client: CLIENTS[((r >> 8) % 4) as usize].to_string(),
            country: COUNTRIES[((r >> 16) % 5) as usize],
            dwell_ms: (r & 0x800 != 0).then_some(((r >> 24) % 30_000) as u32),
        };
        if let Some(run) = unique_run {
            event.session_id = Some(format!("u{run:x}-{id}-{i}"));
        }
        loop {
            let t = Instant::now();
            let result = buffer.track(event);
            hist.saturating_record(t.elapsed().as_nanos() as u64);
            match result {
                Ok(()) => break,
                Err(TrackError::Full(e)) => {
                    retries += 1;
                    event = e;
                    std::thread::sleep(Duration::from_micros(50));
                }
                Err(e) => {
                    eprintln!("producer {id}: {e}");
                    return (hist, retries);
                }
            }
        }
        i += 1;
        if i.is_multiple_of(4096) {
            sent.fetch_add(4096, Relaxed);
        }
    }
    sent.fetch_add(i % 4096, Relaxed);
    (hist, retries)
}

/// A `/proc/self/status` field in KiB (VmRSS: now, VmHWM: peak); 0 if unknown.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
