//! Replay: sends spilled INSERTs again, oldest first, once the sink answers.
//!
//! Owns: the background task that walks the spill directory, re-sends each
//! file as one INSERT, deletes it on success, backs off while the sink
//! fails, quarantines files that fail their checksum, and moves files the
//! sink refuses for good to the dead-letter directory. Must not: block the
//! coordinator or producers, or hold more than one file in memory.
//!
//! It runs from `build` (so files an earlier process left are delivered on
//! start) until the buffer shuts down; files left then wait for the next
//! start or for `ch-ingest replay`.

use crate::coordinator::Shared;
use crate::retry::Jitter;
use crate::sink::Sink;
use crate::spill::{self, SpillError};
use crate::stats::Counters;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// How often the directory is looked at when nothing wakes the replayer.
const IDLE_PERIOD: Duration = Duration::from_secs(1);

pub(crate) async fn run<S: Sink>(sink: Arc<S>, shared: Arc<Shared>) {
    let Some(dir) = shared.spill.clone() else {
        return;
    };
    let stats = &shared.seal.stats;
    let policy = shared.cfg.retry;
    let mut jitter = Jitter::from_entropy();
    let mut failures = 0u32;
    // Files written for another table are left alone (each is said once):
    // this sink would put their rows in the wrong table.
    let mut foreign = std::collections::HashSet::new();
    loop {
        if shared.replay_stop.load(Relaxed) {
            return;
        }
        let listing = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || dir.list()).await
        };
        let files = match listing {
            Ok(Ok(files)) => files,
            Ok(Err(e)) => {
                tracing::error!(error = %e, dir = %dir.path().display(), "cannot list the spill directory");
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        let mut healthy = true;
        for path in files {
            if shared.replay_stop.load(Relaxed) {
                return;
            }
            // Claimed for the whole send: another replayer on this directory
            // (the other engine across a schema swap, `ch-ingest replay`)
            // skips it rather than sending it twice.
            let read = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    spill::claim(&path).map(|held| {
                        held.map(|mut held| {
                            let read = held.read();
                            (held, read)
                        })
                    })
                })
                .await
            };
            let (_held, read) = match read {
                Ok(Ok(Some(claimed))) => claimed,
                // Another replayer has it, or it is gone: nothing to do.
                Ok(Ok(None)) => continue,
                // Unreadable for now: next pass.
                Ok(Err(_)) | Err(_) => continue,
            };
            let spilled = match read {
                Ok(s) => s,
                Err(SpillError::Corrupt(why)) => {
                    match spill::quarantine(dir.path(), &path) {
                        Ok(to) => tracing::error!(
                            file = %path.display(),
                            moved_to = %to.display(),
                            reason = %why,
                            "spill file failed its check; quarantined, the rest replays"
                        ),
                        Err(e) => tracing::error!(
                            file = %path.display(),
                            reason = %why,
                            error = %e,
                            "spill file failed its check and could not be moved"
                        ),
                    }
                    Counters::add(&stats.quarantined_files, 1);
                    continue;
                }
                Err(SpillError::Io(_)) => continue,
            };
            if let (Some(ours), Some(theirs)) = (sink.table(), spilled.table.as_deref()) {
                if ours != theirs {
                    if foreign.insert(path.clone()) {
                        tracing::warn!(
                            file = %path.display(),
                            file_table = theirs,
                            table = ours,
                            "spill file is for another table; left for `ch-ingest replay`"
                        );
                    }
                    continue;
                }
            }
            let insert = spilled.to_insert();
            let own = dir.owns(spilled.instance);
            let attempt =
                tokio::time::timeout(shared.cfg.insert_timeout, sink.insert(&insert)).await;
            match attempt.unwrap_or(Err(crate::sink::SinkError::Timeout)) {
                Ok(()) => {
                    if let Err(e) = std::fs::remove_file(&path) {
                        // Rows are in ClickHouse; a file we cannot delete would
                        // be sent again, so say so loudly.
                        tracing::error!(file = %path.display(), error = %e, "replayed but not deleted");
                    }
                    if own {
                        Counters::add(&stats.replayed_rows, spilled.rows);
                        Counters::add(&stats.acked_rows, spilled.rows);
                        Counters::add(&stats.acked_bytes, insert.bytes());
                    } else {
                        Counters::add(&stats.replayed_foreign_rows, spilled.rows);
                    }
                    tracing::info!(file = %path.display(), rows = spilled.rows, "spilled batch replayed");
                }
                Err(e) if e.is_retryable() => {
                    healthy = false;
                    tracing::warn!(error = %e, "replay paused: the sink still fails");
                    break;
                }
                Err(e) => {
                    // Refused for good: keep it as a dead letter, never loop on it.
                    let kept = match &shared.cfg.dead_letter_dir {
                        Some(dl) => {
                            crate::dead_letter::write(dl, spilled.table.as_deref(), &insert, 1, &e)
                                .is_ok_and(|_| std::fs::remove_file(&path).is_ok())
                        }
                        None => spill::quarantine(dir.path(), &path).is_ok(),
                    };
                    tracing::error!(file = %path.display(), error = %e, kept, "spilled batch refused by the sink");
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
            }
        }
        let wait = if healthy {
            failures = 0;
            IDLE_PERIOD
        } else {
            failures = failures.saturating_add(1);
            // The policy's backoff shape, without its attempt limit: spilled
            // data waits for the sink as long as it takes.
            let cap = policy
                .initial_backoff
                .max(Duration::from_millis(10))
                .saturating_mul(1u32 << failures.min(16))
                .min(policy.max_backoff.max(Duration::from_millis(10)));
            cap.mul_f64(0.5 + jitter.unit() / 2.0)
        };
        tokio::select! {
            () = shared.replay_wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}
