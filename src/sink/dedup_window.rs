//! Whether the server remembers a block as long as the engine may resend it.
//!
//! A `ReplicatedMergeTree` drops a block it already stored only while the
//! block's hash is among the last `replicated_deduplication_window` blocks
//! of the shard (and, on servers that have it, younger than
//! `replicated_deduplication_window_seconds`). The engine may offer one
//! INSERT again for up to its retry horizon; if more blocks than the window
//! reach the table meanwhile, a retry after a lost answer stores a second
//! copy.
//!
//! Owns: reading the table's window once (its engine, its own `SETTINGS`,
//! else the server's `system.merge_tree_settings`), counting the blocks
//! this sink stores, and one warning when the rate it sees would push a
//! block out of the window within the horizon. Must not: delay an INSERT
//! (the read runs on its own task) or fail one (a window it cannot read is
//! no window to check).

use super::client::fetch_text;
use super::sql::system_tables_filter;
use clickhouse::Client;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const BLOCKS: &str = "replicated_deduplication_window";
const SECONDS: &str = "replicated_deduplication_window_seconds";

/// A table's deduplication window, as the server keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub blocks: u64,
    pub seconds: Option<u64>,
}

/// One sink's watch over its table's window.
#[derive(Default)]
pub(crate) struct DedupWatch {
    horizon: OnceLock<Duration>,
    /// `Some(None)`: read, and the table does not deduplicate (or the
    /// server would not say).
    window: OnceLock<Option<Window>>,
    reading: AtomicBool,
    stored: AtomicU64,
    /// When the rate was last measured, and `stored` then.
    mark: Mutex<Option<(Instant, u64)>>,
    warned: AtomicBool,
}

/// Blocks between two rate measurements.
const EVERY: u64 = 16;

impl DedupWatch {
    /// How long the engine may keep offering one INSERT.
    pub(crate) fn set_horizon(&self, horizon: Duration) {
        let _ = self.horizon.set(horizon);
    }

    /// Whether the window should be read now (once, and only when an
    /// engine said how long it retries).
    pub(crate) fn wants_read(&self) -> bool {
        self.horizon.get().is_some()
            && self.window.get().is_none()
            && !self.reading.swap(true, Relaxed)
    }

    /// Reads the window on a task of its own (10 s at most; read again
    /// after the next block if it did not answer).
    pub(crate) fn read_in_background(self: &std::sync::Arc<Self>, client: &Client, table: &str) {
        let (watch, client, table) = (self.clone(), client.clone(), table.to_string());
        tokio::spawn(async move {
            let read = watch.read(&client, &table);
            if tokio::time::timeout(Duration::from_secs(10), read)
                .await
                .is_err()
            {
                watch.reading.store(false, Relaxed);
            }
        });
    }

    /// Reads `table`'s window through `client`; warns at once when the
    /// window in seconds is shorter than the horizon.
    async fn read(&self, client: &Client, table: &str) {
        let window = read_window(client, table).await;
        let _ = self.window.set(window);
        if let (
            Some(Window {
                seconds: Some(s), ..
            }),
            Some(h),
        ) = (window, self.horizon.get())
        {
            if Duration::from_secs(s) < *h {
                self.warn_once(|| {
                    tracing::warn!(
                        table,
                        replicated_deduplication_window_seconds = s,
                        retry_horizon_s = h.as_secs(),
                        "the server forgets a block sooner than the engine may resend it: \
                         a retry after a lost answer may store a second copy; raise \
                         replicated_deduplication_window_seconds or shorten the retry policy"
                    )
                });
            }
        }
    }

    /// One block stored in `table`.
    pub(crate) fn stored(&self, table: &str) {
        let n = self.stored.fetch_add(1, Relaxed) + 1;
        if !n.is_multiple_of(EVERY) || self.warned.load(Relaxed) {
            return;
        }
        let (Some(horizon), Some(Some(window))) = (self.horizon.get(), self.window.get()) else {
            return;
        };
        let now = Instant::now();
        let Ok(mut mark) = self.mark.lock() else {
            return;
        };
        let Some((then, before)) = mark.replace((now, n)) else {
            return;
        };
        let secs = now.duration_since(then).as_secs_f64();
        if secs <= 0.0 {
            return;
        }
        let per_second = (n - before) as f64 / secs;
        let in_horizon = per_second * horizon.as_secs_f64();
        if in_horizon > window.blocks as f64 {
            drop(mark);
            self.warn_once(|| {
                tracing::warn!(
                    table,
                    replicated_deduplication_window = window.blocks,
                    blocks_per_second = per_second,
                    retry_horizon_s = horizon.as_secs(),
                    blocks_in_horizon = in_horizon as u64,
                    "the server forgets a block sooner than the engine may resend it: at this \
                     rate more blocks than replicated_deduplication_window reach the table \
                     within the retry horizon, so a retry after a lost answer may store a \
                     second copy; raise the window (SETTINGS replicated_deduplication_window \
                     = N on the table) above blocks_in_horizon, or shorten the retry policy"
                )
            });
        }
    }

    /// Whether a warning was logged.
    #[cfg(test)]
    fn warned(&self) -> bool {
        self.warned.load(Relaxed)
    }

    fn warn_once(&self, warn: impl FnOnce()) {
        if !self.warned.swap(true, Relaxed) {
            warn();
        }
    }
}

/// The window of `table` (`db.table` or `table`), or `None` when it does
/// not deduplicate (not `Replicated*`) or the server does not say.
async fn read_window(client: &Client, table: &str) -> Option<Window> {
    let sql = format!(
        "SELECT engine, engine_full FROM system.tables WHERE {}",
        system_tables_filter(table)
    );
    let text = fetch_text(client, &sql).await.ok()?;
    let (engine, full) = text.lines().next()?.split_once('\t')?;
    if !engine.starts_with("Replicated") {
        return None;
    }
    let sql = format!(
        "SELECT name, value FROM system.merge_tree_settings WHERE name IN ('{BLOCKS}', '{SECONDS}')"
    );
    let defaults = fetch_text(client, &sql).await.unwrap_or_default();
    let default = |key: &str| {
        defaults
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.trim().parse::<u64>().ok())
    };
    let blocks = table_setting(full, BLOCKS).or_else(|| default(BLOCKS))?;
    let seconds = table_setting(full, SECONDS).or_else(|| default(SECONDS));
    Some(Window { blocks, seconds })
}

/// `key = N` in a table definition's `SETTINGS`.
fn table_setting(engine_full: &str, key: &str) -> Option<u64> {
    let (_, settings) = engine_full.split_once("SETTINGS ")?;
    settings.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == key).then(|| v.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tables_own_setting_is_found_and_the_seconds_one_is_not_taken_for_it() {
        let full = "ReplicatedMergeTree('/t/{shard}', '{replica}') ORDER BY id \
                    SETTINGS index_granularity = 8192, replicated_deduplication_window_seconds = 60, \
                    replicated_deduplication_window = 10";
        assert_eq!(table_setting(full, BLOCKS), Some(10));
        assert_eq!(table_setting(full, SECONDS), Some(60));
        assert_eq!(table_setting("MergeTree ORDER BY id", BLOCKS), None);
    }

    #[test]
    fn a_rate_that_outruns_the_window_within_the_horizon_warns_once() {
        let w = DedupWatch::default();
        w.set_horizon(Duration::from_secs(120));
        assert!(w.wants_read());
        assert!(!w.wants_read(), "read once");
        let _ = w.window.set(Some(Window {
            blocks: 100,
            seconds: None,
        }));
        // Blocks as fast as the test runs: far more than 100 in 120 s.
        for _ in 0..EVERY * 3 {
            std::thread::sleep(Duration::from_micros(50));
            w.stored("t");
        }
        assert!(w.warned());

        let slow = DedupWatch::default();
        slow.set_horizon(Duration::from_millis(1));
        let _ = slow.window.set(Some(Window {
            blocks: 1_000_000,
            seconds: None,
        }));
        for _ in 0..EVERY * 3 {
            slow.stored("t");
        }
        assert!(!slow.warned());
    }
}
