//! # ch-ingest
//!
//! Gets millions of small rows per second from a busy Rust server into
//! ClickHouse without losing them and without slowing the request path.
//!
//! The data path, one module each, top to bottom:
//!
//! ```text
//! track(row) ──► buffer   pick this thread's shard, encode under its lock
//!            ──► rowbinary  row -> RowBinary bytes (serde), columns from field names
//!            ──► shard    open BytesMut; seal at max_rows | max_bytes | tick | flush
//!            ──► batch    sealed Bytes, handed over a flume channel
//!            ──► coordinator  coalesce queued batches, ≤ max_inflight INSERTs, barriers
//!            ──► sink     ClickHouseSink (HTTP, failover) | FileSink | MemorySink | yours
//!
//! when an INSERT fails:
//!   retry (backoff + jitter) ──► spill (disk) ──► replay ──► sink
//!                            └─► dead_letter (permanent errors)
//!
//! who waits for what:
//!   flush()          every row tracked before the call ──► FlushReport
//!   settle(receipt)  only the rows a receipt noted     ──► Settled (receipt)
//! ```
//!
//! ```no_run
//! use ch_ingest::{Buffer, PostEvent, sink::{ClickHouseSink, nodelay_client}};
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = nodelay_client().with_url("http://127.0.0.1:8123");
//! let sink = ClickHouseSink::new(client, "post_events");
//! let buffer: Buffer<PostEvent> = Buffer::builder()
//!     .max_rows(500)
//!     .flush_interval(Duration::from_secs(10))
//!     .build(sink)?;
//!
//! buffer.track(PostEvent::new("like", 42, 1_700_000_000))?; // never blocks
//! let report = buffer.flush().await?;                     // acknowledged by ClickHouse
//! println!("{} rows in ClickHouse", report.rows);
//! buffer.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! See `ARCHITECTURE.md` for the memory bound, the ordering guarantee and the
//! failure path, and docs/delivery.md for what is and is
//! not guaranteed.

#![warn(missing_docs)]

/// The guides' Rust examples, compiled and run as doctests by the test
/// command, so that none of them drifts from the API.
#[cfg(doctest)]
mod guides {
    #[doc = include_str!("../README.md")]
    struct Readme;
    #[doc = include_str!("../docs/embedding.md")]
    struct Embedding;
    #[doc = include_str!("../docs/delivery.md")]
    struct Delivery;
    #[doc = include_str!("../docs/clusters.md")]
    struct Clusters;
    #[doc = include_str!("../docs/sidecar.md")]
    struct Sidecar;
    #[doc = include_str!("../docs/front-door.md")]
    struct FrontDoor;
    #[doc = include_str!("../docs/tls.md")]
    struct Tls;
    #[doc = include_str!("../docs/security.md")]
    struct Security;
    #[doc = include_str!("../docs/tuning.md")]
    struct Tuning;
    #[doc = include_str!("../docs/json.md")]
    struct Json;
}

mod batch;
mod buffer;
mod civil;
mod coordinator;
mod dead_letter;
mod durable;
mod engine;
mod histogram;
pub mod json;
mod ledger;
#[cfg(feature = "metrics")]
pub mod metrics;
mod post_event;
mod receipt;
mod replay;
mod retry;
pub mod rowbinary;
mod schema;
mod shard;
pub mod sink;
mod spill;
mod stats;
#[cfg(feature = "test-util")]
pub mod test_util;
mod ticks;
mod transcode;
mod wide;

pub use buffer::{
    Buffer, BuildError, Builder, Closed, Json, NdjsonTracked, TrackError, TrackJsonError,
};
pub use engine::WhenFull;
pub use histogram::{Histogram, Histograms};
pub use ledger::{FailedInsert, FlushReport, Settled};
pub use post_event::PostEvent;
pub use receipt::Receipt;
pub use replay::{replay_dirs, ReplayError, ReplayReport};
pub use retry::RetryPolicy;
pub use schema::{Column, Schema, SchemaError, Type};
pub use spill::SpillFullPolicy;
pub use stats::{StatField, StatKind, Stats};
pub use transcode::Transcoder;
