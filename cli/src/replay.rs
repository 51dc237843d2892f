//! `ch-ingest replay DIR...`: sends spill files and dead letters in the
//! given directories to ClickHouse, oldest first, deleting each once the
//! server acknowledged it. Spill files of every directory go first, then
//! dead letters; a dead letter of an INSERT just sent from a spill file (a
//! crash between the two file operations left both) is removed, not sent,
//! so pass the spill and the dead-letter directory in one run.
//!
//! Owns: the command-line replay (what the library's background replayer does
//! for a running buffer, for a directory nobody runs a buffer on anymore).
//! Corrupt spill files are quarantined; a transient failure stops the run
//! with a non-zero exit (run it again later), nothing is retried in a loop.

use ch_ingest::sink::{nodelay_client, ClickHouseSink, Sink};
use ch_ingest::spill::SpillError;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// Spill and/or dead-letter directories (both formats are read in each).
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// ClickHouse HTTP URL.
    #[arg(long)]
    clickhouse_url: String,
    /// Insert into this table instead of the one each file records.
    #[arg(long)]
    table: Option<String>,
    /// Give up on one INSERT after this long (a frozen server), e.g. 60s.
    #[arg(long, default_value = "60s", value_parser = super::parse_duration)]
    insert_timeout: std::time::Duration,
}

pub fn run(args: ReplayArgs) -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(replay(args))
}

async fn replay(args: ReplayArgs) -> Result<(), Box<dyn std::error::Error>> {
    let client = nodelay_client().with_url(&args.clickhouse_url);
    let (mut rows, mut files, mut quarantined) = (0u64, 0u64, 0u64);
    let table_for = |recorded: Option<String>| -> Result<String, String> {
        args.table
            .clone()
            .or(recorded)
            .ok_or_else(|| "a file records no table: pass --table".to_string())
    };
    // Spill files first (they are older than anything dead-lettered later),
    // then dead letters. An INSERT sent from its spill file is not sent
    // again from a dead letter of the same identity (a crash between
    // writing the dead letter and deleting the spill file leaves both).
    let mut sent = std::collections::HashSet::new();
    let send = |sink: ClickHouseSink, insert: ch_ingest::InsertBatch| async move {
        tokio::time::timeout(args.insert_timeout, sink.insert(&insert))
            .await
            .unwrap_or(Err(ch_ingest::SinkError::Timeout))
    };
    let spill_files = args
        .dirs
        .iter()
        .map(|d| Ok(ch_ingest::spill::list(d)?.into_iter().map(move |p| (d, p))))
        .collect::<std::io::Result<Vec<_>>>()?;
    for (dir, path) in spill_files.into_iter().flatten() {
        // A running engine's replayer may be sending this directory too:
        // whichever claims a file sends it, the other skips it.
        let Some(mut held) = ch_ingest::spill::claim(&path)? else {
            continue;
        };
        let spilled = match held.read() {
            Ok(s) => s,
            Err(SpillError::Corrupt(why)) => {
                let to = ch_ingest::spill::quarantine(dir, &path)?;
                eprintln!("quarantined {} ({why}) -> {}", path.display(), to.display());
                quarantined += 1;
                continue;
            }
            Err(e) => return Err(format!("{}: {e}", path.display()).into()),
        };
        let sink = ClickHouseSink::new(client.clone(), table_for(spilled.table.clone())?);
        send(sink, spilled.to_insert()).await.map_err(|e| {
            format!(
                "{}: {e} (stopped; run again once the server is healthy)",
                path.display()
            )
        })?;
        std::fs::remove_file(&path)?;
        sent.insert((spilled.instance, spilled.insert_id));
        rows += spilled.rows;
        files += 1;
    }
    let letters = args
        .dirs
        .iter()
        .map(|d| ch_ingest::dead_letter::list(d))
        .collect::<std::io::Result<Vec<_>>>()?;
    for sidecar in letters.into_iter().flatten() {
        let (table, insert) = match ch_ingest::dead_letter::read(&sidecar) {
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Its data file is gone: an earlier replay deleted it and
                // stopped before the sidecar. Nothing left to send.
                ch_ingest::dead_letter::remove(&sidecar)?;
                eprintln!(
                    "{}: data file missing; stale sidecar removed",
                    sidecar.display()
                );
                continue;
            }
            Err(e) => return Err(format!("{}: {e}", sidecar.display()).into()),
        };
        if sent.contains(&(insert.origin(), insert.id())) {
            ch_ingest::dead_letter::remove(&sidecar)?;
            continue;
        }
        let sink = ClickHouseSink::new(client.clone(), table_for(table)?);
        send(sink, insert.clone()).await.map_err(|e| {
            format!(
                "{}: {e} (stopped; fix the cause and run again)",
                sidecar.display()
            )
        })?;
        ch_ingest::dead_letter::remove(&sidecar)?;
        rows += insert.rows();
        files += 1;
    }
    let dirs: Vec<String> = args.dirs.iter().map(|d| d.display().to_string()).collect();
    println!(
        "replayed {rows} rows from {files} files in {}; {quarantined} quarantined",
        dirs.join(", ")
    );
    Ok(())
}
