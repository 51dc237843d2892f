//! An in-memory sink for tests.
//!
//! Owns: keeping every delivered batch, and failing on demand so tests can
//! exercise the failure path. Must not: be used in production (it grows
//! without bound).

use super::{InsertBatch, Sink, SinkError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Keeps every batch it is given. Clones share the same storage.
///
/// ```
/// # tokio_test_block_on(async {
/// use ch_ingest::{Buffer, PostEvent, sink::MemorySink};
///
/// let sink = MemorySink::new();
/// let buffer: Buffer<PostEvent> = Buffer::builder().shards(1).build(sink.clone()).unwrap();
/// buffer.track(PostEvent::new("like", 42, 1_700_000_000)).unwrap();
/// buffer.flush().await.unwrap();
/// assert_eq!(sink.rows(), 1);
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Clone, Default)]
pub struct MemorySink {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    batches: Mutex<Vec<InsertBatch>>,
    fail_next: AtomicU64,
    failing: std::sync::atomic::AtomicBool,
    attempts: AtomicU64,
    error: Mutex<Option<SinkError>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }
    /// Every batch stored so far, in the order they were acknowledged.
    pub fn batches(&self) -> Vec<InsertBatch> {
        self.lock().clone()
    }
    /// Rows stored so far.
    pub fn rows(&self) -> u64 {
        self.lock().iter().map(|b| b.rows()).sum()
    }
    /// All stored bytes, concatenated in acknowledgement order.
    pub fn concat(&self) -> Vec<u8> {
        self.lock()
            .iter()
            .flat_map(|b| b.chunks().iter().flat_map(|c| c.iter().copied()))
            .collect()
    }
    /// The error injected failures return (feature `test-util`). Default: a
    /// (retryable) network error; pass e.g. a `SinkError::Server` with code
    /// 60 for a permanent one.
    #[cfg(any(test, feature = "test-util"))]
    pub fn fail_with(&self, error: SinkError) {
        *self.inner.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }
    /// Makes the next `n` inserts fail (with a network error unless
    /// `fail_with` says otherwise; feature `test-util`).
    #[cfg(any(test, feature = "test-util"))]
    pub fn fail_next(&self, n: u64) {
        self.inner.fail_next.store(n, Ordering::SeqCst);
    }
    /// Makes every insert fail (`true`) until switched back (feature
    /// `test-util`).
    #[cfg(any(test, feature = "test-util"))]
    pub fn set_failing(&self, failing: bool) {
        self.inner.failing.store(failing, Ordering::SeqCst);
    }
    /// How many inserts were attempted, failed ones included.
    pub fn attempts(&self) -> u64 {
        self.inner.attempts.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<InsertBatch>> {
        // A panic while holding the lock cannot leave a half-pushed Vec.
        self.inner
            .batches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Sink for MemorySink {
    async fn insert(&self, batch: &InsertBatch) -> Result<(), SinkError> {
        self.inner.attempts.fetch_add(1, Ordering::SeqCst);
        let failing = self.inner.failing.load(Ordering::SeqCst)
            || self
                .inner
                .fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if failing {
            let injected = self
                .inner
                .error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            return Err(injected
                .unwrap_or_else(|| SinkError::Network("MemorySink: injected failure".into())));
        }
        self.lock().push(batch.clone());
        Ok(())
    }
}
