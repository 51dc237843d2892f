//! `ch-ingest bench shapes`: what each INSERT shape costs the ClickHouse
//! server, in one run against one server: the `clickhouse` crate's
//! `Inserter` (arrival-order RowBinary, what every other writer sends) and
//! ch-ingest in each shape (arrival or sorted, RowBinary or Native), the
//! same events each way, rounds interleaved so drift hits every way alike.
//! The report gives rows/s until acknowledged, and the CPU seconds the
//! server (`/proc/PID/stat` of `--server-pid`, so run it on the server's
//! host) and this process spent per million rows.
//!
//! Owns: the ways, the count check after each, the table. Must not: hide
//! a failed way (a count that does not match ends the run).

use super::cluster_bench::{cpu_seconds, inserter, track_all};
use ch_ingest::sink::sql::quote_table;
use ch_ingest::sink::{ClickHouseSink, InsertFormat, InsertOrder};
use ch_ingest::{Buffer, PostEvent};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct ShapeBenchArgs {
    /// ClickHouse HTTP URL.
    #[arg(long, default_value = "http://127.0.0.1:18123")]
    clickhouse_url: String,
    #[command(flatten)]
    tls: crate::tls_args::TlsArgs,
    /// A table with PostEvent's columns (created if missing; truncated
    /// before each way).
    #[arg(long, default_value = "post_events_shapes")]
    table: String,
    /// Events per way and round.
    #[arg(long, default_value_t = 2_000_000)]
    events: u64,
    /// Rows per INSERT.
    #[arg(long, default_value_t = 100_000)]
    insert_rows: u64,
    /// Rounds; the table gives medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// PID of the ClickHouse server, for its CPU seconds.
    #[arg(long)]
    server_pid: Option<u32>,
}

#[derive(Clone, Copy, PartialEq)]
enum Way {
    Inserter,
    Engine(&'static str, &'static str),
}

impl Way {
    fn name(self) -> String {
        match self {
            Way::Inserter => "Inserter, arrival RowBinary".into(),
            Way::Engine(order, format) => format!("ch-ingest, {order} {format}"),
        }
    }
}

const WAYS: [Way; 5] = [
    Way::Inserter,
    Way::Engine("arrival", "RowBinary"),
    Way::Engine("sorted", "RowBinary"),
    Way::Engine("arrival", "Native"),
    Way::Engine("sorted", "Native"),
];

/// One way, one round: (seconds until acknowledged, server CPU s, our CPU s).
type Sample = (f64, Option<f64>, f64);

pub fn run(args: ShapeBenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let client = args
        .tls
        .client()?
        .with_url(&args.clickhouse_url)
        .with_validation(false);
    let table = quote_table(&args.table);
    rt.block_on(
        client
            .query(&PostEvent::create_table_sql(&args.table))
            .execute(),
    )?;
    let server: Vec<u32> = args.server_pid.into_iter().collect();
    let me = [std::process::id()];
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); WAYS.len()];
    for round in 0..args.rounds.max(1) {
        for (w, way) in WAYS.iter().enumerate() {
            rt.block_on(client.query(&format!("TRUNCATE TABLE {table}")).execute())?;
            let (server_before, me_before) = (cpu_seconds(&server), cpu_seconds(&me));
            let started = Instant::now();
            let acked = match *way {
                Way::Inserter => inserter(
                    &rt,
                    client.clone(),
                    &args.table,
                    args.events,
                    args.insert_rows,
                )?,
                Way::Engine(order, format) => engine(&rt, &args, order.parse()?, format.parse()?)?,
            };
            let secs = started.elapsed().as_secs_f64();
            let server_cpu = cpu_seconds(&server).zip(server_before).map(|(a, b)| a - b);
            let my_cpu = cpu_seconds(&me).zip(me_before).map_or(0.0, |(a, b)| a - b);
            let stored: u64 = rt.block_on(
                client
                    .query(&format!("SELECT count() FROM {table}"))
                    .fetch_one(),
            )?;
            if stored != acked || acked != args.events {
                return Err(format!(
                    "{}: {} events, {acked} acknowledged, {stored} stored",
                    way.name(),
                    args.events
                )
                .into());
            }
            println!(
                "round {round}: {:<30} {:>9.0} rows/s, server CPU {}, ch-ingest process CPU {my_cpu:.2}s",
                way.name(),
                acked as f64 / secs,
                server_cpu.map_or("n/a".into(), |c| format!("{c:.2}s")),
            );
            samples[w].push((secs, server_cpu, my_cpu));
        }
    }
    let millions = args.events as f64 / 1e6;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let server_per_m: Vec<Option<f64>> = samples
        .iter()
        .map(|s| {
            let cpu: Option<Vec<f64>> = s.iter().map(|x| x.1).collect();
            cpu.map(|c| median(c) / millions)
        })
        .collect();
    println!(
        "\n{} events per way, {} rows per INSERT, medians of {} rounds:\n",
        args.events,
        args.insert_rows,
        args.rounds.max(1)
    );
    println!("| way | rows/s | server CPU s per M rows | vs Inserter | ch-ingest process CPU s per M rows |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (w, way) in WAYS.iter().enumerate() {
        let s = &samples[w];
        let rate = args.events as f64 / median(s.iter().map(|x| x.0).collect());
        let mine = median(s.iter().map(|x| x.2).collect()) / millions;
        let ratio = server_per_m[w]
            .zip(server_per_m[0])
            .map_or("n/a".into(), |(a, b)| format!("{:.2}", a / b));
        println!(
            "| {} | {rate:.0} | {} | {ratio} | {mine:.2} |",
            way.name(),
            server_per_m[w].map_or("n/a".into(), |c| format!("{c:.3}")),
        );
    }
    Ok(())
}

/// ch-ingest in one shape: two producer threads, 500-row shard batches
/// coalesced into `--insert-rows` INSERTs, then flush.
fn engine(
    rt: &tokio::runtime::Runtime,
    args: &ShapeBenchArgs,
    order: InsertOrder,
    format: InsertFormat,
) -> Result<u64, Box<dyn std::error::Error>> {
    let sink = ClickHouseSink::new(
        args.tls.client()?.with_url(&args.clickhouse_url),
        &args.table,
    );
    let buffer: Buffer<PostEvent> = rt.block_on(async {
        Buffer::builder()
            .shards(2)
            .max_insert_rows(args.insert_rows)
            .insert_order(order)
            .insert_format(format)
            .build(sink)
    })?;
    track_all(rt, buffer, args.events)
}
