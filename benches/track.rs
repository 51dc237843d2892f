//! `track` throughput into a sink that discards, for 1, 2 and 4 producer
//! threads, beside the raw flume floor (the same events sent through a
//! bounded flume channel to a consumer thread that drops them), measured in
//! the same run.

use ch_ingest::sink::{InsertBatch, Sink, SinkError};
use ch_ingest::{Buffer, PostEvent, TrackError};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EVENTS_PER_ITER: u64 = 200_000;

struct Discard;

impl Sink for Discard {
    async fn insert(&self, batch: &InsertBatch) -> Result<(), SinkError> {
        std::hint::black_box(batch.rows());
        Ok(())
    }
}

fn event(i: u64) -> PostEvent {
    PostEvent {
        event_type: "impression".into(),
        tweet_id: 1_000_000_000_000_000_000 + i,
        occurred_at: 1_700_000_000,
        user_id: Some(i),
        session_id: None,
        client: "ios".into(),
        country: *b"US",
        dwell_ms: Some(120),
    }
}

/// Sends `n` events split over `producers` threads; returns the wall time.
fn run_producers(producers: u64, n: u64, send: impl Fn(PostEvent) + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for p in 0..producers {
            let send = &send;
            s.spawn(move || {
                for i in 0..n / producers {
                    send(event(p * n + i));
                }
            });
        }
    });
    start.elapsed()
}

fn bench_track(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("track_events");
    g.throughput(Throughput::Elements(EVENTS_PER_ITER));
    g.sample_size(20);

    // What building and dropping the events costs on its own: both sides
    // below include it, so it bounds any ratio from above.
    g.bench_function("construct_only_1_producer", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += run_producers(1, EVENTS_PER_ITER, |e| drop(std::hint::black_box(e)));
            }
            total
        })
    });
    for producers in [1u64, 2, 4] {
        g.bench_function(format!("flume_floor_{producers}_producers"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (tx, rx) = flume::bounded::<PostEvent>(4096);
                    let consumer = std::thread::spawn(move || while rx.recv().is_ok() {});
                    total += run_producers(producers, EVENTS_PER_ITER, |e| tx.send(e).unwrap());
                    drop(tx);
                    consumer.join().unwrap();
                }
                total
            })
        });
        g.bench_function(format!("ch_ingest_track_{producers}_producers"), |b| {
            let buffer: Buffer<PostEvent> = rt
                .block_on(async {
                    Buffer::builder()
                        .shards(producers as usize)
                        .queue_batches(1024)
                        .build(Discard)
                })
                .unwrap();
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += run_producers(producers, EVENTS_PER_ITER, |mut e| loop {
                        match buffer.track(e) {
                            Ok(()) => break,
                            Err(TrackError::Full(back)) => {
                                e = back;
                                std::thread::yield_now();
                            }
                            Err(other) => panic!("{other}"),
                        }
                    });
                }
                total
            });
            rt.block_on(buffer.shutdown()).unwrap();
        });
    }
    // A caller that already holds a batch: one lock per 256 events.
    g.bench_function("ch_ingest_track_many_256_1_producer", |b| {
        let buffer: Buffer<PostEvent> = rt
            .block_on(async {
                Buffer::builder()
                    .shards(1)
                    .queue_batches(1024)
                    .build(Discard)
            })
            .unwrap();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                for chunk in 0..EVENTS_PER_ITER / 256 {
                    let mut rows = (chunk * 256..(chunk + 1) * 256).map(event).peekable();
                    while rows.peek().is_some() {
                        match buffer.track_many(&mut rows) {
                            Ok(_) => {}
                            Err(TrackError::Full(_)) => std::thread::yield_now(),
                            Err(other) => panic!("{other}"),
                        }
                    }
                }
                total += start.elapsed();
            }
            total
        });
        rt.block_on(buffer.shutdown()).unwrap();
    });
    g.finish();
}

criterion_group!(benches, bench_track);
criterion_main!(benches);
