//! Retries of a front-door INSERT: the same `insert_deduplication_token`
//! into the same table within `dedup_window` is answered from the first
//! attempt's outcome and never stored twice.
//!
//! ClickHouse's own block deduplication cannot catch such a retry: the
//! door re-batches, so the retried rows would reach the server inside a
//! different block. Owns: the window of tokens seen, and handing a retry
//! the first attempt's answer (waiting for it while it is still running).
//! Must not: remember an attempt none of whose rows were kept (its retry
//! must store them), or hold more than `MAX_TOKENS` tokens.

use super::reply::Ack;
use ch_ingest_protocol::ChError;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The most tokens remembered at once; past it the oldest are forgotten
/// first (a retry of one of those is stored again, as without a token).
const MAX_TOKENS: usize = 100_000;

/// What an accepted INSERT's answer says.
#[derive(Debug, Clone, Copy)]
pub(super) struct Summary {
    pub rows: u64,
    pub bytes: u64,
    pub skipped: u64,
    pub ack: Ack,
}

/// How an attempt ended: its answer, or its error and whether any of its
/// rows were kept (stored or spilled) all the same.
pub(super) type Outcome = Result<Summary, (ChError, bool)>;

type Key = (String, String);
/// Where a retry reads the first attempt's outcome (`None` until it ends).
type Answer = watch::Receiver<Option<Outcome>>;

/// An attempt under a token: the first (which must publish its outcome)
/// or a retry (which reads it).
pub(super) enum Claim {
    First(First),
    Retry(Answer),
}

/// The first attempt's handle: publishing its outcome answers its retries.
pub(super) struct First {
    key: Key,
    tx: watch::Sender<Option<Outcome>>,
}

pub(super) struct Retries {
    window: Duration,
    seen: Mutex<HashMap<Key, (Instant, Answer)>>,
}

impl Retries {
    pub fn new(window: Duration) -> Self {
        Retries {
            window,
            seen: Mutex::default(),
        }
    }

    /// The attempt with `token` into `table`: the first within the window,
    /// or a retry of it.
    pub fn claim(&self, table: &str, token: &str) -> Claim {
        let key = (table.to_string(), token.to_string());
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, rx)) = seen.get(&key) {
            if at.elapsed() < self.window {
                return Claim::Retry(rx.clone());
            }
        }
        if seen.len() >= MAX_TOKENS {
            let window = self.window;
            seen.retain(|_, (at, _)| at.elapsed() < window);
            if seen.len() >= MAX_TOKENS {
                // Still full of live tokens: forget the oldest tenth.
                let mut ages: Vec<Instant> = seen.values().map(|(at, _)| *at).collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 10];
                seen.retain(|_, (at, _)| *at > cut);
            }
        }
        let (tx, rx) = watch::channel(None);
        seen.insert(key.clone(), (Instant::now(), rx));
        Claim::First(First { key, tx })
    }

    /// Publishes the first attempt's outcome; an attempt that kept no row
    /// is forgotten, so a later retry stores its rows.
    pub fn settle(&self, first: First, outcome: Outcome) {
        if matches!(outcome, Err((_, false))) {
            self.seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&first.key);
        }
        first.tx.send_replace(Some(outcome));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ch_ingest_protocol::Code;

    fn stored() -> Outcome {
        Ok(Summary {
            rows: 3,
            bytes: 24,
            skipped: 0,
            ack: Ack::Stored,
        })
    }

    #[tokio::test]
    async fn a_retry_reads_the_first_outcome_and_a_failure_that_kept_nothing_is_forgotten() {
        let r = Retries::new(Duration::from_secs(60));
        let Claim::First(first) = r.claim("t", "tok") else {
            panic!("first")
        };
        let Claim::Retry(mut early) = r.claim("t", "tok") else {
            panic!("retry")
        };
        assert!(matches!(r.claim("other", "tok"), Claim::First(_)));
        r.settle(first, stored());
        let outcome = early.wait_for(Option::is_some).await.unwrap().clone();
        assert_eq!(outcome.unwrap().unwrap().rows, 3);
        let Claim::First(again) = r.claim("t", "fails") else {
            panic!("first")
        };
        r.settle(again, Err((ChError::new(Code::Unknown, "x"), false)));
        assert!(matches!(r.claim("t", "fails"), Claim::First(_)));
        let Claim::First(partly) = r.claim("t", "partly") else {
            panic!("first")
        };
        r.settle(partly, Err((ChError::new(Code::Unknown, "x"), true)));
        assert!(matches!(r.claim("t", "partly"), Claim::Retry(_)));
        let short = Retries::new(Duration::ZERO);
        let _ = short.claim("t", "tok");
        assert!(matches!(short.claim("t", "tok"), Claim::First(_)));
    }
}
