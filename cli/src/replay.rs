//! `ch-ingest replay DIR...`: sends spill files and dead letters in the
//! given directories to ClickHouse, oldest first, deleting each once the
//! server acknowledged it. Spill files of every directory go first, then
//! dead letters; a dead letter of an INSERT just sent from a spill file (a
//! crash between the two file operations left both) is removed, not sent,
//! so pass the spill and the dead-letter directory in one run.
//!
//! Owns: the command line only. The steps are the library's
//! [`ch_ingest::replay_dirs`], the ones the engine's background replayer
//! takes for a running buffer. Corrupt spill files are quarantined; a
//! failure stops the run with a non-zero exit (run it again later), nothing
//! is retried in a loop.

use ch_ingest::sink::ClickHouseSink;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// Spill and/or dead-letter directories (both formats are read in each).
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// ClickHouse HTTP URL; repeat for failover between replicas.
    #[arg(long = "clickhouse-url", required = true)]
    clickhouse_urls: Vec<String>,
    #[command(flatten)]
    tls: crate::tls_args::TlsArgs,
    /// Insert into this table instead of the one each file records.
    #[arg(long)]
    table: Option<String>,
    /// Give up on one INSERT after this long (a frozen server), e.g. 60s.
    #[arg(long, default_value = "60s", value_parser = super::parse_duration)]
    insert_timeout: std::time::Duration,
    /// Send each INSERT's identity as `insert_deduplication_token`
    /// (ClickHouse 22.2 and later), as an engine built with
    /// `ClickHouseSink::with_deduplication_token` does.
    #[arg(long)]
    deduplication_token: bool,
}

pub fn run(args: ReplayArgs) -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(replay(args))
}

/// The library's one replay path ([`ch_ingest::replay_dirs`]), with a sink
/// per recorded table.
async fn replay(args: ReplayArgs) -> Result<(), Box<dyn std::error::Error>> {
    let client = args.tls.client()?;
    let sink_for = |recorded: Option<&str>| {
        let table = args.table.as_deref().or(recorded)?;
        // `clickhouse_urls` is required by clap, so never empty.
        let sink = ClickHouseSink::with_urls(client.clone(), &args.clickhouse_urls, table).ok()?;
        Some(sink.with_deduplication_token(args.deduplication_token))
    };
    let result = ch_ingest::replay_dirs(&args.dirs, sink_for, args.insert_timeout).await;
    let dirs: Vec<String> = args.dirs.iter().map(|d| d.display().to_string()).collect();
    let report = match result {
        Ok(report) => report,
        Err(ch_ingest::ReplayError::NoSink { path, table: None }) => {
            return Err(format!(
                "{}: the file records no table: pass --table",
                path.display()
            )
            .into())
        }
        Err(e) => return Err(e.into()),
    };
    if report.stale_sidecars > 0 {
        eprintln!(
            "{} stale sidecars removed (their data files were gone)",
            report.stale_sidecars
        );
    }
    println!(
        "replayed {} rows from {} files in {}; {} quarantined",
        report.rows,
        report.files,
        dirs.join(", "),
        report.quarantined
    );
    Ok(())
}
