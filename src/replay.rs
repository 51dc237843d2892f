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
//! start or for [`replay_dirs`], the one-shot replay of directories nobody
//! runs a buffer on (`ch-ingest replay`). Both send a file through the same
//! steps: claim it, read and verify it, send it under the attempt deadline,
//! delete it and any dead letter of the same INSERT.

use crate::batch::InsertBatch;
use crate::engine::Shared;
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

/// A file that failed with a retryable error this many times while the
/// sink was up (a file after it was delivered, or the engine's own INSERTs
/// were acknowledged meanwhile), over at least the retry policy's
/// `max_elapsed`, is moved to the dead letters: it would otherwise be tried
/// for ever and, at the spill budget, keep new batches out.
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
    /// `live_acked` at the start of the last pass.
    live_seen: u64,
    /// Files that failed (retryably) in the last pass: tried after the
    /// others in the next one, so two bad files at the head of the
    /// directory cannot look like a dead sink for ever.
    recent_failed: HashSet<PathBuf>,
    /// Retryable failures of a file while the sink was otherwise up.
    poison: HashMap<PathBuf, Poison>,
}

/// What is known about a file that keeps failing.
struct Poison {
    count: u32,
    first: tokio::time::Instant,
    last_error: SinkError,
}

/// Rows the engine's own INSERTs got acknowledged (replays not included):
/// growth means the sink is up, whatever a spill file says.
fn live_acked(shared: &Shared) -> u64 {
    let s = &shared.seal.stats;
    s.acked_rows
        .load(Relaxed)
        .saturating_sub(s.replayed_rows.load(Relaxed))
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
        let present: HashSet<&PathBuf> = files.iter().collect();
        memory.poison.retain(|p, _| present.contains(p));
        memory.foreign.retain(|p| present.contains(p));
        memory.delivered.retain(|p| present.contains(p));
        drop(present);
        let (mut files, failed_last): (Vec<PathBuf>, Vec<PathBuf>) = files
            .into_iter()
            .partition(|p| !memory.recent_failed.contains(p));
        files.extend(failed_last);
        memory.recent_failed.clear();
        let live_before = live_acked(&shared);
        // The engine's own INSERTs went through since the last pass: the
        // sink is up, so a file that fails now is blamed at once.
        let sink_up = live_before > memory.live_seen;
        memory.live_seen = live_before;
        let healthy = match pass(&*sink, &shared, &dir, files, &mut memory, sink_up).await {
            Pass::Healthy => true,
            Pass::Down => false,
            Pass::LastFailed(path, error) => {
                // Nothing came after it, but live INSERTs were acknowledged
                // meanwhile: the sink is up, the file is the problem.
                if live_acked(&shared) > live_before {
                    memory.blame(path, error);
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
    fn blame(&mut self, path: PathBuf, error: SinkError) {
        let p = self.poison.entry(path.clone()).or_insert(Poison {
            count: 0,
            first: tokio::time::Instant::now(),
            last_error: error.clone(),
        });
        p.count += 1;
        p.last_error = error;
        tracing::warn!(
            file = %path.display(),
            failures = p.count,
            limit = MAX_POISON_TRIES,
            error = %p.last_error,
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
    LastFailed(PathBuf, SinkError),
}

/// One walk over `files`, ended early when the sink looks down.
async fn pass<S: Sink>(
    sink: &S,
    shared: &Arc<Shared>,
    dir: &Arc<SpillDir>,
    files: Vec<PathBuf>,
    memory: &mut Memory,
    sink_up: bool,
) -> Pass {
    let stats = &shared.seal.stats;
    // A file that just failed retryably: blamed if the next one goes
    // through, forgiven if the next one fails too (then the sink is down).
    let mut suspect: Option<(PathBuf, SinkError)> = None;
    // A file was delivered earlier in this pass: the sink is up.
    let mut delivered_one = false;
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
        if for_another_table(sink, &path).await {
            memory.foreign.insert(path);
            continue;
        }
        // Claimed for the whole send: another replayer on this directory
        // (the other engine across a schema swap, `ch-ingest replay`)
        // skips it rather than sending it twice.
        let Some((held, read)) = claim_and_read(&path).await else {
            continue;
        };
        let spilled = match read {
            Ok(s) => s,
            Err(SpillError::Corrupt(why)) => {
                quarantine(shared, dir, &path, &why).await;
                drop(held);
                continue;
            }
            Err(SpillError::Io(_)) => continue,
        };
        let insert = spilled.to_insert();
        let own = dir.owns(spilled.instance);
        let min_age = shared.cfg.retry.max_elapsed;
        if let Some(p) = memory
            .poison
            .get(&path)
            .filter(|p| p.count >= MAX_POISON_TRIES && p.first.elapsed() >= min_age)
        {
            let error = p.last_error.clone();
            if give_up(shared, dir, &path, &spilled, &insert, own, &error).await {
                Counters::add(&stats.replay_given_up_files, 1);
                memory.poison.remove(&path);
            }
            drop(held);
            continue;
        }
        let dead_letters: Vec<PathBuf> = shared.cfg.dead_letter_dir.iter().cloned().collect();
        let sent = send_and_delete(
            sink,
            &path,
            &insert,
            dead_letters,
            shared.cfg.insert_timeout,
        );
        match sent.await {
            Ok(removed) => {
                if let Err(e) = removed {
                    // Rows are in ClickHouse; never send this file again.
                    tracing::error!(file = %path.display(), error = %e, "replayed but not deleted; it will not be sent again by this engine");
                    memory.delivered.insert(path.clone());
                }
                drop(held);
                count_replayed(stats, own, spilled.rows, insert.bytes());
                tracing::info!(file = %path.display(), rows = spilled.rows, "spilled batch replayed");
                memory.poison.remove(&path);
                delivered_one = true;
                if let Some((blamed, error)) = suspect.take() {
                    memory.blame(blamed, error);
                }
            }
            Err(e) if e.is_retryable() => {
                drop(held);
                memory.recent_failed.insert(path.clone());
                if sink_up || delivered_one {
                    // The engine's own INSERTs go through: this file is
                    // the problem, and the next ones still get their turn.
                    memory.blame(path, e);
                    continue;
                }
                if suspect.is_some() {
                    tracing::warn!(error = %e, "replay paused: the sink still fails");
                    return Pass::Down;
                }
                tracing::warn!(file = %path.display(), error = %e, "replay of a spill file failed; trying the next one");
                suspect = Some((path, e));
            }
            Err(e) => {
                let _ = give_up(shared, dir, &path, &spilled, &insert, own, &e).await;
                drop(held);
            }
        }
    }
    match suspect {
        Some((path, error)) => Pass::LastFailed(path, error),
        None => Pass::Healthy,
    }
}

/// Whether the file's header names another table than the sink's: such a
/// file is left for `ch-ingest replay`, read before the whole file is
/// read and checksummed.
async fn for_another_table<S: Sink>(sink: &S, path: &Path) -> bool {
    let Some(ours) = sink.table() else {
        return false;
    };
    let p = path.to_path_buf();
    let Some(Ok(header)) = blocking(move || spill::read_header(&p)).await else {
        return false;
    };
    let Some(theirs) = header.table.as_deref().filter(|theirs| *theirs != ours) else {
        return false;
    };
    tracing::warn!(
        file = %path.display(),
        file_table = theirs,
        table = ours,
        "spill file is for another table; left for `ch-ingest replay`"
    );
    true
}

/// A spill file that failed its checksum: moved to `quarantine/`, its
/// rows (when this engine's) counted out of spill-pending into failed.
async fn quarantine(shared: &Shared, dir: &Arc<SpillDir>, path: &Path, why: &str) {
    let stats = &shared.seal.stats;
    let (d, p) = (dir.path().to_path_buf(), path.to_path_buf());
    let moved = blocking(move || {
        // The header may still say whose rows these were.
        let header = spill::read_header(&p).ok();
        spill::quarantine(&d, &p).map(|to| (to, header))
    })
    .await;
    match moved {
        Some(Ok((to, header))) => {
            tracing::error!(
                file = %path.display(),
                moved_to = %to.display(),
                reason = %why,
                "spill file failed its check; quarantined, the rest replays"
            );
            // This engine's rows leave the spill directory
            // undelivered: out of spill-pending, into failed.
            if let Some(h) = header.filter(|h| dir.owns(h.instance)) {
                Counters::add(&stats.spill_out_failed_rows, h.rows);
                Counters::add(&stats.failed_rows, h.rows);
                Counters::add(&stats.dropped_rows, h.rows);
            }
        }
        other => tracing::error!(
            file = %path.display(),
            reason = %why,
            error = ?other.map(|r| r.err()),
            "spill file failed its check and could not be moved"
        ),
    }
    Counters::add(&stats.quarantined_files, 1);
}

/// Rows a replay delivered: this engine's count as acknowledged, another's
/// as foreign.
fn count_replayed(stats: &Counters, own: bool, rows: u64, bytes: u64) {
    if own {
        Counters::add(&stats.replayed_rows, rows);
        Counters::add(&stats.acked_rows, rows);
        Counters::add(&stats.acked_bytes, bytes);
    } else {
        Counters::add(&stats.replayed_foreign_rows, rows);
    }
}

/// A spill file that will not be delivered: kept as a dead letter (or, with
/// no dead-letter directory, in `quarantine/`), counted once, never looped
/// on. Returns whether it was moved; if not (a full disk), it stays, is not
/// counted, and the next pass tries again.
async fn give_up(
    shared: &Arc<Shared>,
    dir: &Arc<SpillDir>,
    path: &Path,
    spilled: &Spilled,
    insert: &InsertBatch,
    own: bool,
    error: &SinkError,
) -> bool {
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
    if kept && own {
        Counters::add(&stats.spill_out_failed_rows, spilled.rows);
        Counters::add(&stats.failed_rows, spilled.rows);
        if shared.cfg.dead_letter_dir.is_some() {
            Counters::add(&stats.dead_lettered_rows, spilled.rows);
        } else {
            Counters::add(&stats.dropped_rows, spilled.rows);
        }
    }
    kept
}

/// Claims a spill file for the whole send and reads it. `None` when another
/// replayer holds it (the other engine across a schema swap, a
/// `replay_dirs` run, another process), it is gone, or it cannot be opened
/// now.
async fn claim_and_read(path: &Path) -> Option<(spill::Claimed, Result<Spilled, SpillError>)> {
    let path = path.to_path_buf();
    let claimed = blocking(move || {
        spill::claim(&path).map(|held| {
            held.map(|mut held| {
                let read = held.read();
                (held, read)
            })
        })
    })
    .await;
    match claimed {
        Some(Ok(Some(claimed))) => Some(claimed),
        _ => None,
    }
}

/// Sends `insert` (read from the spill file `path`) under the attempt
/// deadline. Once acknowledged, deletes any dead letter of the same INSERT
/// in `dead_letter_dirs` (a crash between writing it and deleting the spill
/// file left both; the rows are in now) and then the file. The outer result
/// is the send, the inner one the delete.
async fn send_and_delete<S: Sink>(
    sink: &S,
    path: &Path,
    insert: &InsertBatch,
    dead_letter_dirs: Vec<PathBuf>,
    timeout: Duration,
) -> Result<std::io::Result<()>, SinkError> {
    let deadline = crate::sink::deadline::after(timeout);
    let attempt = crate::sink::deadline::run(deadline, sink.insert(insert)).await;
    attempt.unwrap_or(Err(SinkError::Timeout))?;
    let (path, insert) = (path.to_path_buf(), insert.clone());
    let removed = blocking(move || {
        for dir in &dead_letter_dirs {
            let _ = crate::dead_letter::remove_insert(dir, &insert);
        }
        std::fs::remove_file(&path)
    })
    .await;
    Ok(removed.unwrap_or_else(|| Err(std::io::Error::other("file task failed"))))
}

/// What a [`replay_dirs`] run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// Rows acknowledged by the sink.
    pub rows: u64,
    /// Files delivered and deleted (spill files and dead letters).
    pub files: u64,
    /// Spill files that failed their checksum, moved to `quarantine/`.
    pub quarantined: u64,
    /// Dead-letter sidecars whose data file was already gone (an earlier
    /// run stopped between the two deletes), removed.
    pub stale_sidecars: u64,
}

/// Why a [`replay_dirs`] run stopped. What it delivered before stopping is
/// deleted and stays delivered; run it again to go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// A file could not be listed, read, moved or deleted.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The sink refused or did not answer; the file stays.
    #[error("{}: {source} (stopped; run again once the sink takes it)", path.display())]
    Insert {
        /// The file being sent.
        path: PathBuf,
        /// The sink's error.
        #[source]
        source: SinkError,
        /// What was delivered before this file.
        report: ReplayReport,
    },
    /// `sink_for` had no sink for the table the file records (or the file
    /// records none).
    #[error("{}: no sink for table {}", path.display(), table.as_deref().map_or("(none recorded)".into(), |t| format!("`{t}`")))]
    NoSink {
        /// The file.
        path: PathBuf,
        /// The table it records.
        table: Option<String>,
    },
}

/// Sends every spill file and dead letter in `dirs` once, oldest first:
/// spill files of every directory, then dead letters (both formats are
/// looked for in each directory). `sink_for` gets the table a file records
/// and returns the sink for it (`None`: stop with [`ReplayError::NoSink`]).
///
/// Each file goes the way the engine's background replayer sends it: the
/// file is claimed (a running engine replaying the same directory skips
/// it), verified, sent under `insert_timeout`, then deleted, with any dead
/// letter of the same INSERT in `dirs`, so nothing is sent twice. Corrupt
/// spill files are quarantined. The first failure stops the run: nothing is
/// retried in a loop.
///
/// ```no_run
/// use ch_ingest::sink::{nodelay_client, ClickHouseSink};
/// # async fn run() -> Result<(), ch_ingest::ReplayError> {
/// let client = nodelay_client().with_url("http://127.0.0.1:8123");
/// let dirs = ["/var/lib/app/spill", "/var/lib/app/dead"];
/// let report = ch_ingest::replay_dirs(
///     &dirs,
///     |table| table.map(|t| ClickHouseSink::new(client.clone(), t)),
///     std::time::Duration::from_secs(60),
/// )
/// .await?;
/// println!("{} rows from {} files", report.rows, report.files);
/// # Ok(()) }
/// ```
pub async fn replay_dirs<S: Sink>(
    dirs: &[impl AsRef<Path>],
    mut sink_for: impl FnMut(Option<&str>) -> Option<S>,
    insert_timeout: Duration,
) -> Result<ReplayReport, ReplayError> {
    let dirs: Vec<PathBuf> = dirs.iter().map(|d| d.as_ref().to_path_buf()).collect();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReplayError::Io { path, source }
    };
    let mut report = ReplayReport::default();
    for dir in &dirs {
        for path in spill::list(dir).map_err(io(dir))? {
            let Some((held, read)) = claim_and_read(&path).await else {
                continue;
            };
            let spilled = match read {
                Ok(s) => s,
                Err(SpillError::Corrupt(why)) => {
                    let to = spill::quarantine(dir, &path).map_err(io(&path))?;
                    tracing::error!(file = %path.display(), moved_to = %to.display(), reason = %why, "spill file failed its check; quarantined");
                    report.quarantined += 1;
                    continue;
                }
                Err(SpillError::Io(e)) => return Err(io(&path)(e)),
            };
            let Some(sink) = sink_for(spilled.table.as_deref()) else {
                return Err(ReplayError::NoSink {
                    path,
                    table: spilled.table,
                });
            };
            let insert = spilled.to_insert();
            match send_and_delete(&sink, &path, &insert, dirs.clone(), insert_timeout).await {
                Ok(removed) => removed.map_err(io(&path))?,
                Err(source) => {
                    return Err(ReplayError::Insert {
                        path,
                        source,
                        report,
                    })
                }
            }
            drop(held);
            report.rows += spilled.rows;
            report.files += 1;
        }
    }
    for dir in &dirs {
        for sidecar in crate::dead_letter::list(dir).map_err(io(dir))? {
            let (table, insert) = match crate::dead_letter::read(&sidecar) {
                Ok(read) => read,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // Its data file is gone: an earlier run deleted it and
                    // stopped before the sidecar. Nothing left to send.
                    crate::dead_letter::remove(&sidecar).map_err(io(&sidecar))?;
                    report.stale_sidecars += 1;
                    continue;
                }
                Err(e) => return Err(io(&sidecar)(e)),
            };
            let Some(sink) = sink_for(table.as_deref()) else {
                return Err(ReplayError::NoSink {
                    path: sidecar,
                    table,
                });
            };
            let deadline = crate::sink::deadline::after(insert_timeout);
            let sent = crate::sink::deadline::run(deadline, sink.insert(&insert)).await;
            if let Err(source) = sent.unwrap_or(Err(SinkError::Timeout)) {
                return Err(ReplayError::Insert {
                    path: sidecar,
                    source,
                    report,
                });
            }
            crate::dead_letter::remove(&sidecar).map_err(io(&sidecar))?;
            report.rows += insert.rows();
            report.files += 1;
        }
    }
    Ok(report)
}
