//! Instruction-count workloads for `scripts/icount.sh`: not a criterion bench.
//!
//! Each workload runs `N` events through one `#[inline(never)]` function whose
//! name starts with `icount_`, so `valgrind --tool=callgrind
//! --toggle-collect=icount_*` counts exactly the instructions spent inside
//! it, on the producer thread. Instruction counts do not depend on the other
//! tenants of this machine, so the script can fail a build on a regression
//! that wall-clock benches would drown in noise.
//!
//! `cargo bench --bench icount -- <encode|track> [events]` runs one workload
//! natively (a smoke check); the script runs it under callgrind.

use bytes::BytesMut;
use ch_ingest::rowbinary::encode_row;
use ch_ingest::sink::{InsertBatch, Sink, SinkError};
use ch_ingest::{Buffer, PostEvent};
use std::hint::black_box;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Discard;

impl Sink for Discard {
    async fn insert(&self, batch: &InsertBatch) -> Result<(), SinkError> {
        black_box(batch.rows());
        Ok(())
    }
}

/// Built outside the measured functions, so the count is ours alone.
fn events(n: usize) -> Vec<PostEvent> {
    (0..n as u64)
        .map(|i| PostEvent {
            event_type: ["impression", "like", "click"][(i % 3) as usize].into(),
            tweet_id: 1_000_000_000_000_000_000 + i,
            occurred_at: 1_700_000_000 + i as u32,
            user_id: (i % 4 != 0).then_some(i * 31),
            session_id: (i % 2 == 0).then(|| format!("s-{i:08x}")),
            client: "android".into(),
            country: *b"BR",
            dwell_ms: (i % 3 == 0).then_some(i as u32),
        })
        .collect()
}

#[inline(never)]
fn icount_encode(rows: &[PostEvent], buf: &mut BytesMut, cols: &[&'static str]) {
    for r in rows {
        if encode_row(black_box(r), buf, Some(cols)).is_err() {
            std::process::exit(3);
        }
    }
}

#[inline(never)]
fn icount_track(buffer: &Buffer<PostEvent>, rows: Vec<PostEvent>) {
    for r in rows {
        if buffer.track(r).is_err() {
            std::process::exit(3);
        }
    }
}

fn main() {
    // cargo passes `--bench` (cargo bench) or `--test` (cargo test
    // --all-targets); without a workload both run briefly as a smoke check.
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    match args.next() {
        Some(workload) => {
            let n = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
            run(&workload, n);
        }
        None => {
            run("encode", 2_000);
            run("track", 2_000);
        }
    }
}

fn run(workload: &str, n: usize) {
    let rows = events(n.max(2));
    match workload {
        "encode" => {
            let mut buf = BytesMut::with_capacity(64);
            let cols = encode_row(&rows[0], &mut buf, None)
                .ok()
                .flatten()
                .unwrap_or_default();
            buf = BytesMut::with_capacity(rows.len() * 64);
            icount_encode(&rows, &mut buf, &cols);
            black_box(buf.len());
        }
        "track" => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            // One shard, and a queue deep enough that nothing parks: the count
            // is the steady-state hot path (seal included, every 500 rows).
            let buffer: Buffer<PostEvent> = rt
                .block_on(async {
                    Buffer::builder()
                        .shards(1)
                        .queue_batches(n / 500 + 16)
                        .build(Discard)
                })
                .expect("buffer");
            // The first row learns the columns: keep it out of the count.
            let mut rows = rows;
            let first = rows.remove(0);
            if buffer.track(first).is_err() {
                std::process::exit(3);
            }
            icount_track(&buffer, rows);
            if rt.block_on(buffer.shutdown()).is_err() {
                std::process::exit(3);
            }
        }
        other => {
            eprintln!("usage: icount <encode|track> [events]  (got {other:?})");
            std::process::exit(2);
        }
    }
}
