//! A ClickHouse that stops answering: every failed INSERT is counted, nothing
//! is retained beyond the documented bound, and memory stays flat. In its own
//! test binary so the RSS it reads is this scenario's alone.

mod support;

use ch_ingest::sink::{nodelay_client, ClickHouseSink};
use ch_ingest::{Buffer, PostEvent};

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_costs_counted_failures_and_flat_memory() {
    if support::shared().is_none() {
        return;
    }
    // A private server of our own, since we kill it.
    let server = support::Server::start().expect("private server");
    let table = format!("down_{}", std::process::id());
    server.query(&PostEvent::create_table_sql(&table));
    let sink = ClickHouseSink::new(nodelay_client().with_url(&server.url), &table);
    let b: Buffer<PostEvent> = Buffer::builder().shards(2).build(sink).unwrap();

    for i in 0..1_000 {
        b.track(PostEvent::new("like", i, 1_700_000_000)).unwrap();
    }
    assert!(b.flush().await.unwrap().is_complete());
    assert_eq!(server.count(&table), 1_000);

    server.signal("KILL");
    let mut rss_after_warmup = 0;
    let mut tracked = 1_000u64;
    for round in 0..40u64 {
        for i in 0..10_000 {
            let mut e = PostEvent::new("impression", round * 10_000 + i, 1_700_000_000);
            e.session_id = Some(format!("session-{i}"));
            b.track(e).unwrap();
            tracked += 1;
        }
        let report = b.flush().await.unwrap();
        assert_eq!(report.rows, 0);
        assert_eq!(report.failed_rows, 10_000);
        if round == 4 {
            rss_after_warmup = rss_bytes();
        }
    }
    let s = b.stats();
    assert_eq!(s.tracked_rows, tracked);
    assert_eq!(s.acked_rows, 1_000);
    assert_eq!(s.failed_rows, tracked - 1_000);
    assert_eq!(s.buffered_rows + s.pending_rows, 0);
    let growth = rss_bytes().saturating_sub(rss_after_warmup);
    println!(
        "server down: {} rows failed and counted; RSS grew {} KiB after warm-up (bound {} KiB)",
        s.failed_rows,
        growth / 1024,
        b.memory_bound() / 1024
    );
    assert!(growth < b.memory_bound() as u64, "RSS grew {growth} bytes");
}
