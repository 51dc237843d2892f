//! Arbitrary sequences of track / flush / tick / sink failure against a
//! MemorySink: nothing lost (every row acknowledged or counted as failed),
//! nothing duplicated, each producer's order kept.
#![no_main]

use arbitrary::Arbitrary;
use ch_ingest::sink::MemorySink;
use ch_ingest::{Buffer, TrackError};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use std::time::Duration;

#[derive(Arbitrary, Debug)]
enum Op {
    Track { producer: u8, count: u8 },
    Flush,
    Tick { secs: u8 },
    FailNext { n: u8 },
    Yield,
}

#[derive(Arbitrary, Debug)]
struct Input {
    max_rows: u8,
    queue: u8,
    ops: Vec<Op>,
}

#[derive(Serialize)]
struct Row {
    producer: u8,
    seq: u32,
}

fuzz_target!(|input: Input| {
    if input.ops.len() > 200 {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let sink = MemorySink::new();
        let buffer: Buffer<Row> = Buffer::builder()
            .shards(2)
            .max_rows(input.max_rows.max(1) as u64)
            .queue_batches(input.queue.max(1) as usize)
            .max_inflight(1)
            .flush_interval(Duration::from_secs(10))
            .build(sink.clone())
            .unwrap();
        let mut next = [0u32; 4];
        let mut tracked = 0u64;
        for op in input.ops {
            match op {
                Op::Track { producer, count } => {
                    let p = producer % 4;
                    for _ in 0..count % 64 {
                        match buffer.track(Row {
                            producer: p,
                            seq: next[p as usize],
                        }) {
                            Ok(()) => {
                                next[p as usize] += 1;
                                tracked += 1;
                            }
                            Err(TrackError::Full(_)) => break,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                Op::Flush => {
                    buffer.flush().await.unwrap();
                }
                Op::Tick { secs } => {
                    tokio::time::sleep(Duration::from_secs(secs as u64 % 30)).await
                }
                Op::FailNext { n } => sink.fail_next(n as u64 % 4),
                Op::Yield => tokio::task::yield_now().await,
            }
        }
        buffer.shutdown().await.unwrap();
        let s = buffer.stats();
        assert_eq!(s.tracked_rows, tracked);
        assert_eq!(s.acked_rows + s.failed_rows, tracked, "{s:?}");
        assert_eq!(s.buffered_rows + s.pending_rows, 0);
        assert_eq!(sink.rows(), s.acked_rows);
        // Acknowledged rows: no duplicates, each producer's rows in order.
        let bytes = sink.concat();
        let mut last: [Option<u32>; 4] = [None; 4];
        for row in bytes.chunks_exact(5) {
            let p = row[0] as usize;
            let seq = u32::from_le_bytes(row[1..5].try_into().unwrap());
            if let Some(prev) = last[p] {
                assert!(seq > prev, "producer {p}: {seq} after {prev}");
            }
            last[p] = Some(seq);
        }
    });
});
