//! Replay: sends spilled INSERTs again, oldest first, once the sink answers.
//!
//! Owns: the background task that walks the spill directory, re-sends each
//! file as one INSERT, deletes it on success, backs off while the sink
//! fails, quarantines files that fail their checksum, moves files the sink
//! refuses for good to the dead-letter directory, and gives up on a file
//! that keeps failing while the files after it go through. Must not: block
//! the coordinator or producers (every file operation runs on a blocking
//! thread, never on a runtime worker), or hold more than one file in memory.
//!
//! It runs from `build` (so files an earlier process left are delivered on
//! start) until the buffer shuts down; files left then wait for the next
//! start or for `ch-ingest replay`.

use crate::batch::InsertBatch;
use crate::coordinator::Shared;
use crate::retry::Jitter;
use crate::sink::{Sink, SinkError};
use crate::spill::{self, SpillDir, SpillError, Spilled};
use crate::stats::Counters;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// How often the directory is looked at when nothing wakes the replayer.
const IDLE_PERIOD: Duration = Duration::from_secs(1);

/// A file that failed with a retryable error this many times while a file
/// after it was delivered (so the sink was up) is moved to the dead letters:
/// it would otherwise be tried for ever and, at the spill budget, keep new
/// batches out.
pub(crate) const MAX_POISON_TRIES: u32 = 5;

/// Runs blocking file work off the runtime's workers (on a current-thread
/// runtime a slow fsync there would stall the coordinator and every INSERT).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

/// What the replayer remembers between passes.
#[derive(Default)]
struct Memory {
    /// Files written for another table (each is said once): this sink
    /// would put their rows in the wrong table.
    foreign: HashSet<PathBuf>,
    /// Delivered, but the delete failed: never sent again, only deleted.
    delivered: HashSet<PathBuf>,
    /// Retryable failures of a file while the sink was otherwise up.
    poison: HashMap<PathBuf, u32>,
}

pub(crate) async fn run<S: Sink>(sink: Arc<S>, shared: Arc<Shared>) {
    let Some(dir) = shared.spill.clone() else {
        return;
    };
    let policy = shared.cfg.retry;
    let mut jitter = Jitter::from_entropy();
    let mut failures = 0u32;
    let mut memory = Memory::default();
    loop {
        if shared.replay_stop.load(Relaxed) {
            return;
        }
        let listing = {
            let dir = dir.clone();
            blocking(move || dir.list()).await
        };
        let files = match listing {
            Some(Ok(files)) => files,
            Some(Err(e)) => {
                tracing::error!(error = %e, dir = %dir.path().display(), "cannot list the spill directory");
                Vec::new()
            }
            None => Vec::new(),
        };
        memory.poison.retain(|p, _| files.contains(p));
        memory.foreign.retain(|p| files.contains(p));
        memory.delivered.retain(|p| files.contains(p));
        let acked_before = shared.seal.stats.acked_rows.load(Relaxed);
        let healthy = match pass(&*sink, &shared, &dir, files, &mut memory).await {
            Pass::Healthy => true,
            Pass::Down => false,
            Pass::LastFailed(path) => {
                // Nothing came after it, but live INSERTs were acknowledged
                // meanwhile: the sink is up, the file is the problem.
                if shared.seal.stats.acked_rows.load(Relaxed) > acked_before {
                    memory.blame(path);
                }
                false
            }
        };
        if shared.replay_stop.load(Relaxed) {
            return;
        }
        let wait = if healthy {
            failures = 0;
            IDLE_PERIOD
        } else {
            failures = failures.saturating_add(1);
            // The policy's backoff, without its attempt limit: spilled data
            // waits for the sink as long as it takes.
            policy
                .backoff(failures.min(16), &mut jitter)
                .max(Duration::from_millis(10))
        };
        tokio::select! {
            () = shared.replay_wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

impl Memory {
    fn blame(&mut self, path: PathBuf) {
        let n = self.poison.entry(path.clone()).or_insert(0);
        *n += 1;
        tracing::warn!(
            file = %path.display(),
            failures = *n,
            limit = MAX_POISON_TRIES,
            "spill file keeps failing while the sink takes other INSERTs"
        );
    }
}

/// How a walk over the spill directory ended.
enum Pass {
    Healthy,
    /// Two files in a row failed retryably: the sink looks down.
    Down,
    /// Only the last file tried failed (retryably).
    LastFailed(PathBuf),
}

/// One walk over `files`, ended early when the sink looks down.
async fn pass<S: Sink>(
    sink: &S,
    shared: &Arc<Shared>,
    dir: &Arc<SpillDir>,
    files: Vec<PathBuf>,
    memory: &mut Memory,
) -> Pass {
    let stats = &shared.seal.stats;
    // A file that just failed retryably: blamed if the next one goes
    // through, forgiven if the next one fails too (then the sink is down).
    let mut suspect: Option<PathBuf> = None;
    for path in files {
        if shared.replay_stop.load(Relaxed) {
            return Pass::Healthy;
        }
        if memory.delivered.contains(&path) {
            let p = path.clone();
            if let Some(Ok(())) = blocking(move || std::fs::remove_file(p)).await {
                memory.delivered.remove(&path);
            }
            continue;
        }
        if memory.foreign.contains(&path) {
            continue;
        }
        // The header says whose file it is, before the whole file is read
        // and checksummed.
        if let (Some(ours), Some(Ok(header))) = (sink.table(), {
            let p = path.clone();
            blocking(move || spill::read_header(&p)).await
        }) {
            if header.table.as_deref().is_some_and(|theirs| theirs != ours) {
                tracing::warn!(
                    file = %path.display(),
                    file_table = header.table.as_deref().unwrap_or(""),
                    table = ours,
                    "spill file is for another table; left for `ch-ingest replay`"
                );
                memory.foreign.insert(path);
                continue;
            }
        }
        // Claimed for the whole send: another replayer on this directory
        // (the other engine across a schema swap, `ch-ingest replay`)
        // skips it rather than sending it twice.
        let read = {
            let path = path.clone();
            blocking(move || {
                spill::claim(&path).map(|held| {
                    held.map(|mut held| {
                        let read = held.read();
                        (held, read)
                    })
                })
            })
            .await
        };
        let (held, read) = match read {
            Some(Ok(Some(claimed))) => claimed,
            // Another replayer has it, it is gone, or unreadable for now.
            _ => continue,
        };
        let spilled = match read {
            Ok(s) => s,
            Err(SpillError::Corrupt(why)) => {
                let (d, p) = (dir.path().to_path_buf(), path.clone());
                match blocking(move || spill::quarantine(&d, &p)).await {
                    Some(Ok(to)) => tracing::error!(
                        file = %path.display(),
                        moved_to = %to.display(),
                        reason = %why,
                        "spill file failed its check; quarantined, the rest replays"
                    ),
                    other => tracing::error!(
                        file = %path.display(),
                        reason = %why,
                        error = ?other.map(|r| r.err()),
                        "spill file failed its check and could not be moved"
                    ),
                }
                Counters::add(&stats.quarantined_files, 1);
                drop(held);
                continue;
            }
            Err(SpillError::Io(_)) => continue,
        };
        let insert = spilled.to_insert();
        let own = dir.owns(spilled.instance);
        let tries = memory.poison.get(&path).copied().unwrap_or(0);
        if tries >= MAX_POISON_TRIES {
            let error = SinkError::Other(format!(
                "replay failed {tries} times while later spill files were delivered"
            ));
            give_up(shared, dir, &path, &spilled, &insert, own, &error).await;
            Counters::add(&stats.replay_given_up_files, 1);
            memory.poison.remove(&path);
            drop(held);
            continue;
        }
        let deadline = tokio::time::Instant::now() + shared.cfg.insert_timeout;
        let attempt = crate::sink::deadline::run(deadline, sink.insert(&insert)).await;
        match attempt.unwrap_or(Err(SinkError::Timeout)) {
            Ok(()) => {
                let (p, dl) = (path.clone(), shared.cfg.dead_letter_dir.clone());
                let for_dl = insert.clone();
                let removed = blocking(move || {
                    // A dead letter of the same INSERT (a crash between
                    // writing it and deleting this file) would be sent
                    // again by `ch-ingest replay`: the rows are in now.
                    if let Some(dl) = dl {
                        let _ = crate::dead_letter::remove_insert(&dl, &for_dl);
                    }
                    std::fs::remove_file(&p)
                })
                .await;
                if !matches!(removed, Some(Ok(()))) {
                    // Rows are in ClickHouse; never send this file again.
                    tracing::error!(file = %path.display(), error = ?removed, "replayed but not deleted; it will not be sent again by this engine");
                    memory.delivered.insert(path.clone());
                }
                drop(held);
                if own {
                    Counters::add(&stats.replayed_rows, spilled.rows);
                    Counters::add(&stats.acked_rows, spilled.rows);
                    Counters::add(&stats.acked_bytes, insert.bytes());
                } else {
                    Counters::add(&stats.replayed_foreign_rows, spilled.rows);
                }
                tracing::info!(file = %path.display(), rows = spilled.rows, "spilled batch replayed");
                memory.poison.remove(&path);
                if let Some(blamed) = suspect.take() {
                    memory.blame(blamed);
                }
            }
            Err(e) if e.is_retryable() => {
                drop(held);
                if suspect.is_some() {
                    tracing::warn!(error = %e, "replay paused: the sink still fails");
                    return Pass::Down;
                }
                tracing::warn!(file = %path.display(), error = %e, "replay of a spill file failed; trying the next one");
                suspect = Some(path);
            }
            Err(e) => {
                give_up(shared, dir, &path, &spilled, &insert, own, &e).await;
                drop(held);
            }
        }
    }
    match suspect {
        Some(path) => Pass::LastFailed(path),
        None => Pass::Healthy,
    }
}

/// A spill file that will not be delivered: kept as a dead letter (or, with
/// no dead-letter directory, in `quarantine/`), counted once, never looped on.
async fn give_up(
    shared: &Arc<Shared>,
    dir: &Arc<SpillDir>,
    path: &Path,
    spilled: &Spilled,
    insert: &InsertBatch,
    own: bool,
    error: &SinkError,
) {
    let stats = &shared.seal.stats;
    let (dl, d, p, table, insert_c, err) = (
        shared.cfg.dead_letter_dir.clone(),
        dir.path().to_path_buf(),
        path.to_path_buf(),
        spilled.table.clone(),
        insert.clone(),
        error.clone(),
    );
    let kept = blocking(move || match dl {
        Some(dl) => crate::dead_letter::write(&dl, table.as_deref(), &insert_c, 1, &err)
            .and_then(|_| std::fs::remove_file(&p))
            .is_ok(),
        None => spill::quarantine(&d, &p).is_ok(),
    })
    .await
    .unwrap_or(false);
    tracing::error!(file = %path.display(), error = %error, kept, "spilled batch refused by the sink");
    if own {
        Counters::add(&stats.spill_out_failed_rows, spilled.rows);
        Counters::add(&stats.failed_rows, spilled.rows);
        if shared.cfg.dead_letter_dir.is_some() {
            Counters::add(&stats.dead_lettered_rows, spilled.rows);
        } else {
            Counters::add(&stats.dropped_rows, spilled.rows);
        }
    }
}
