//! The fallback of an INSERT whose attempts ran out: the spill directory
//! for retryable errors (the replayer sends it later), else the dead-letter
//! directory, else nothing (the caller counts it as dropped).
//!
//! Owns: writing the spill file or the dead letter and reporting where the
//! rows went. Must not: retry, count stats (the ledger does, from what this
//! reports), or touch a file on a runtime worker: every file operation runs
//! on a blocking thread.

use crate::batch::InsertBatch;
use crate::engine::Shared;
use crate::sink::SinkError;
use std::sync::Arc;

/// What became of one INSERT: its last attempt's result and, if it
/// failed, where its rows were kept. What an INSERT task reports back.
pub(super) struct Delivered {
    pub(super) result: Result<(), SinkError>,
    pub(super) attempts: u32,
    pub(super) dead_letter: Option<std::path::PathBuf>,
    pub(super) spilled: Option<std::path::PathBuf>,
    /// Not spilled: the directory was at its budget (`DropNewest`).
    pub(super) spill_rejected: bool,
    /// Rows deleted from the spill directory to make room.
    pub(super) evicted: crate::spill::Evicted,
}

impl Default for Delivered {
    fn default() -> Self {
        Self {
            result: Ok(()),
            attempts: 0,
            dead_letter: None,
            spilled: None,
            spill_rejected: false,
            evicted: Default::default(),
        }
    }
}

/// Keeps a failed INSERT's rows where the configuration says; `result` is
/// the last attempt's (an `Ok` passes through untouched).
pub(super) async fn keep(
    shared: &Arc<Shared>,
    table: Option<&str>,
    insert: &Arc<InsertBatch>,
    destination: Option<Vec<String>>,
    attempts: u32,
    result: Result<(), SinkError>,
) -> Delivered {
    let cfg = &shared.cfg;
    let mut delivered = Delivered {
        attempts,
        ..Delivered::default()
    };
    if let (Err(error), Some(spill)) = (&result, &shared.spill) {
        if error.is_retryable() {
            // The file names where the INSERT went, so a replay under
            // another topology still goes back there.
            let to_write = match destination {
                Some(d) => Arc::new((**insert).clone().with_recorded(Some(d))),
                None => insert.clone(),
            };
            let (spill, table) = (spill.clone(), table.map(str::to_owned));
            let written =
                tokio::task::spawn_blocking(move || spill.write(table.as_deref(), &to_write)).await;
            let written = match written {
                Ok((written, evicted)) => {
                    // Evicted files are gone whether or not the new one
                    // then made it to disk.
                    delivered.evicted = evicted;
                    Ok(written)
                }
                Err(panicked) => Err(panicked),
            };
            match written {
                Ok(Ok(crate::spill::Written::Spilled(path))) => {
                    delivered.spilled = Some(path);
                    delivered.result = result;
                    return delivered;
                }
                Ok(Ok(crate::spill::Written::Rejected)) => {
                    delivered.spill_rejected = true;
                    tracing::error!(
                        insert_id = insert.id(),
                        rows = insert.rows(),
                        "spill directory at its budget; batch not spilled"
                    );
                }
                Ok(Err(e)) => tracing::error!(error = %e, "could not write a spill file"),
                Err(e) => tracing::error!(error = %e, "the spill writer panicked"),
            }
        }
    }
    let dead_letter = match (&result, &cfg.dead_letter_dir) {
        (Err(error), Some(dir)) => {
            let (dir, insert, table) = (dir.clone(), insert.clone(), table.map(str::to_owned));
            let error = error.clone();
            let written = tokio::task::spawn_blocking(move || {
                crate::dead_letter::write(&dir, table.as_deref(), &insert, attempts, &error)
            })
            .await;
            match written {
                Ok(Ok(path)) => Some(path),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "could not write a dead letter");
                    None
                }
                Err(e) => {
                    tracing::error!(error = %e, "the dead-letter writer panicked");
                    None
                }
            }
        }
        _ => None,
    };
    delivered.result = result;
    delivered.dead_letter = dead_letter;
    delivered
}
