//! Peak RSS under full load with a slow sink stays within the documented
//! bound: `memory_bound()` (the RowBinary the engine can hold by
//! construction) plus a fixed process overhead. Its own test binary, one
//! test, so no other test's allocations share the process.
//!
//! The numbers are printed; the assertion is on memory, never on time.

use ch_ingest::sink::{InsertBatch, Sink, SinkError};
use ch_ingest::{Buffer, PostEvent, TrackError};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// A sink that takes 500 ms per INSERT, like a ClickHouse under pressure:
/// producers outrun it (2 x 100 000 rows per 500 ms at most), so every
/// queue fills to its limit.
struct Slow;

impl Sink for Slow {
    async fn insert(&self, batch: &InsertBatch) -> Result<(), SinkError> {
        tokio::time::sleep(Duration::from_millis(500)).await;
        std::hint::black_box(batch.rows());
        Ok(())
    }
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .expect("/proc/self/status")
}

/// What the process may add beyond the engine's RowBinary bound: allocator
/// slack and thread stacks. Documented in ARCHITECTURE.md ("Memory bound").
const OVERHEAD_MIB: u64 = 16;

#[test]
fn peak_rss_stays_within_the_documented_bound_with_a_slow_sink() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let buffer: Buffer<PostEvent> = rt
        .block_on(async { Buffer::builder().shards(2).build(Slow) })
        .unwrap();
    let bound_mib = buffer.memory_bound() as u64 >> 20;
    let before_kib = status_kib("VmRSS:");
    let stop = AtomicBool::new(false);
    let (sent, full) = (AtomicU64::new(0), AtomicU64::new(0));
    let started = Instant::now();
    std::thread::scope(|s| {
        for p in 0..2u64 {
            let (buffer, stop, sent, full) = (&buffer, &stop, &sent, &full);
            s.spawn(move || {
                let mut i = 0u64;
                while !stop.load(Relaxed) {
                    let mut e = PostEvent::new("impression", p << 40 | i, 1_700_000_000);
                    e.session_id = Some(format!("session-{i:016x}"));
                    e.client = "android".into();
                    loop {
                        match buffer.track(e) {
                            Ok(()) => break,
                            Err(TrackError::Full(back)) => {
                                full.fetch_add(1, Relaxed);
                                e = back;
                                std::thread::sleep(Duration::from_micros(200));
                                if stop.load(Relaxed) {
                                    return;
                                }
                            }
                            Err(other) => panic!("{other}"),
                        }
                    }
                    sent.fetch_add(1, Relaxed);
                    i += 1;
                }
            });
        }
        std::thread::sleep(Duration::from_secs(4));
        stop.store(true, Relaxed);
    });
    let peak_kib = status_kib("VmHWM:");
    let report = rt.block_on(buffer.shutdown()).unwrap();
    let grew_mib = peak_kib.saturating_sub(before_kib) / 1024;
    println!(
        "memory_bound: {} events in {:.1}s ({} Full retries), {} acked; RSS before {} MiB, \
         peak {} MiB (+{grew_mib} MiB); engine bound {bound_mib} MiB + {OVERHEAD_MIB} MiB overhead",
        sent.load(Relaxed),
        started.elapsed().as_secs_f64(),
        full.load(Relaxed),
        report.rows,
        before_kib / 1024,
        peak_kib / 1024,
    );
    assert!(full.load(Relaxed) > 0, "the load never filled the engine");
    assert_eq!(report.failed_rows, 0);
    assert!(
        grew_mib <= bound_mib + OVERHEAD_MIB,
        "RSS grew {grew_mib} MiB, over the bound {bound_mib} + {OVERHEAD_MIB} MiB"
    );
}
