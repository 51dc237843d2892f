//! A ClickHouse that stops answering: every failed INSERT is counted, nothing
//! is retained beyond the documented bound, and memory stays flat. In its own
//! test binary so the RSS it reads is this scenario's alone.

mod support;

use ch_ingest::sink::{nodelay_client, ClickHouseSink};
use ch_ingest::{Buffer, PostEvent, RetryPolicy};

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

/// `track`, waiting 1 ms and trying again while the buffer is full (the
/// caller a server would write); counts the refusals in `full`.
async fn track_retrying(b: &Buffer<PostEvent>, mut e: PostEvent, full: &mut u64) {
    loop {
        match b.track(e) {
            Ok(()) => return,
            Err(ch_ingest::TrackError::Full(back)) => {
                *full += 1;
                e = back;
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            Err(other) => panic!("{other}"),
        }
    }
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
    // No retries: this checks counting and memory while every INSERT fails
    // (retries against a dead server are the reliability tests' subject).
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(2)
        .retry(RetryPolicy::NONE)
        .build(sink)
        .unwrap();

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

/// The server is SIGKILLed under load and comes back 5 s later: retries
/// (default policy, no spill) carry every row through, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_and_restarted_mid_load_loses_nothing_with_retries() {
    if support::shared().is_none() {
        return;
    }
    let server = std::sync::Arc::new(support::Server::start().expect("private server"));
    let table = format!("restart_{}", std::process::id());
    server.query(&PostEvent::create_table_sql(&table));
    let sink = ClickHouseSink::new(nodelay_client().with_url(&server.url), &table);
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(2)
        .max_rows(500)
        .flush_interval(std::time::Duration::from_millis(200))
        .build(sink)
        .unwrap();
    let killer = {
        let server = server.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            server.kill_and_restart(std::time::Duration::from_secs(5));
        })
    };
    let started = std::time::Instant::now();
    let mut sent = 0u64;
    let mut full = 0u64;
    while started.elapsed() < std::time::Duration::from_secs(3) || !killer.is_finished() {
        let mut e = PostEvent::new("impression", sent, 1_700_000_000);
        e.user_id = Some(sent);
        track_retrying(&b, e, &mut full).await;
        sent += 1;
        if sent.is_multiple_of(1_000) {
            tokio::task::yield_now().await;
        }
    }
    killer.join().unwrap();
    let report = b.shutdown().await.unwrap();
    let s = b.stats();
    let counted = server.count(&table);
    let distinct: u64 = server
        .query(&format!("SELECT uniqExact(tweet_id) FROM {table}"))
        .trim()
        .parse()
        .unwrap();
    println!(
        "kill + restart: {sent} sent, {counted} rows in ClickHouse ({distinct} distinct), \
         {} retries, {full} Full refusals, report failed {}",
        s.retried_inserts, report.failed_rows
    );
    assert!(s.retried_inserts > 0, "the outage must have cost retries");
    assert_eq!(s.failed_rows, 0, "{:?}", report.failures);
    assert_eq!(s.acked_rows, sent);
    assert_eq!(distinct, sent, "every row arrived");
    // 18.16 has no insert_deduplication_token and this table is not
    // replicated: an INSERT the server committed just before dying, whose
    // answer never came back, is sent again. At-least-once; report it.
    assert!(counted >= sent);
    println!("kill + restart: {} duplicate rows", counted - sent);
}

/// The server is down longer than the retry window: batches spill to disk,
/// and the replayer delivers them once it is back. Count and content checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_retries_spills_and_replays_every_row() {
    if support::shared().is_none() {
        return;
    }
    let server = std::sync::Arc::new(support::Server::start().expect("private server"));
    let table = format!("spill_{}", std::process::id());
    server.query(&PostEvent::create_table_sql(&table));
    let spill = tempfile::tempdir().unwrap();
    let sink = ClickHouseSink::new(nodelay_client().with_url(&server.url), &table);
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(2)
        .flush_interval(std::time::Duration::from_millis(100))
        .retry(
            RetryPolicy::default()
                .with_max_attempts(3)
                .with_initial_backoff(std::time::Duration::from_millis(50))
                .with_max_backoff(std::time::Duration::from_millis(200))
                .with_max_elapsed(std::time::Duration::from_millis(500)),
        )
        .spill_dir(spill.path())
        .build(sink)
        .unwrap();
    let killer = {
        let server = server.clone();
        std::thread::spawn(move || server.kill_and_restart(std::time::Duration::from_secs(4)))
    };
    let mut sent = 0u64;
    while !killer.is_finished() {
        for _ in 0..100 {
            b.track(PostEvent::new("click", sent, 1_700_000_000))
                .unwrap();
            sent += 1;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    killer.join().unwrap();
    let report = b.flush().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while b.stats().spill_pending_rows > 0 {
        assert!(std::time::Instant::now() < deadline, "{:?}", b.stats());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let s = b.stats();
    b.shutdown().await.unwrap();
    let counted = server.count(&table);
    let (distinct, sum): (u64, u64) = {
        let text = server.query(&format!(
            "SELECT uniqExact(tweet_id), sum(tweet_id) FROM {table}"
        ));
        let mut it = text.split_whitespace().map(|v| v.parse::<u64>().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    };
    println!(
        "outage with spill: {sent} sent, {} spilled, {} replayed, {counted} in ClickHouse \
         ({distinct} distinct), last flush report: {} acked / {} spilled / {} failed",
        s.spilled_rows, s.replayed_rows, report.rows, report.spilled_rows, report.failed_rows
    );
    assert!(
        s.spilled_rows > 0,
        "the outage must have outlasted the retries"
    );
    assert_eq!(s.failed_rows, 0);
    assert_eq!(distinct, sent, "every row arrived");
    assert_eq!(sum, sent * (sent - 1) / 2, "content: the ids 0..sent");
    assert!(counted >= sent);
    println!("outage with spill: {} duplicate rows", counted - sent);
}

/// Two endpoints: a dead one first costs nothing (the INSERT moves on within
/// the same attempt); then one of two live replicas is SIGKILLed mid-load
/// and every row arrives on one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_between_endpoints_loses_nothing_and_does_not_stall() {
    if support::shared().is_none() {
        return;
    }
    let a = std::sync::Arc::new(support::Server::start().expect("server a"));
    let b_server = support::Server::start().expect("server b");
    let table = format!("failover_{}", std::process::id());
    for s in [&*a, &b_server] {
        s.query(&PostEvent::create_table_sql(&table));
    }
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    }; // closed again: connection refused
    let sink = ClickHouseSink::with_urls(nodelay_client(), [dead.as_str(), a.url.as_str()], &table)
        .unwrap();
    let buf: Buffer<PostEvent> = Buffer::builder().shards(1).build(sink).unwrap();
    for i in 0..10_000 {
        buf.track(PostEvent::new("like", i, 1_700_000_000)).unwrap();
    }
    let report = buf.flush().await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(a.count(&table), 10_000);
    assert_eq!(
        buf.stats().retried_inserts,
        0,
        "failover happened inside the attempt"
    );
    buf.shutdown().await.unwrap();

    // Two live replicas; the preferred one dies for 3 s.
    let sink = ClickHouseSink::with_urls(
        nodelay_client(),
        [a.url.as_str(), b_server.url.as_str()],
        &table,
    )
    .unwrap();
    let buf: Buffer<PostEvent> = Buffer::builder()
        .shards(2)
        .flush_interval(std::time::Duration::from_millis(100))
        .build(sink)
        .unwrap();
    let killer = {
        let a = a.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            a.kill_and_restart(std::time::Duration::from_secs(3));
        })
    };
    let mut sent = 10_000u64;
    while !killer.is_finished() {
        for _ in 0..200 {
            buf.track(PostEvent::new("like", sent, 1_700_000_000))
                .unwrap();
            sent += 1;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    killer.join().unwrap();
    let report = buf.shutdown().await.unwrap();
    let s = buf.stats();
    let ids = |srv: &support::Server| -> Vec<u64> {
        srv.query(&format!("SELECT tweet_id FROM {table}"))
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect()
    };
    let (on_a, on_b) = (ids(&a), ids(&b_server));
    let mut all: Vec<u64> = on_a.iter().chain(&on_b).copied().collect();
    let total = all.len() as u64;
    all.sort_unstable();
    all.dedup();
    println!(
        "failover: {sent} sent; {} on a, {} on b, {} distinct, {} duplicates; {} retries; report failed {}",
        on_a.len(),
        on_b.len(),
        all.len(),
        total - all.len() as u64,
        s.retried_inserts,
        report.failed_rows
    );
    assert!(!on_b.is_empty(), "the second replica took over");
    assert_eq!(s.failed_rows, 0);
    assert_eq!(
        all,
        (0..sent).collect::<Vec<_>>(),
        "every row, on one replica or the other"
    );
}

/// The server is frozen (SIGSTOP) for 10 s under load, then resumed: no
/// row lost, RSS within the documented bound, and `track` stays fast (it
/// hands rows back as `Full` instead of waiting). Latency is reported, not
/// asserted: this machine is shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_costs_no_rows_and_no_track_latency() {
    if support::shared().is_none() {
        return;
    }
    let server = std::sync::Arc::new(support::Server::start().expect("private server"));
    let table = format!("frozen_{}", std::process::id());
    server.query(&PostEvent::create_table_sql(&table));
    let sink = ClickHouseSink::new(nodelay_client().with_url(&server.url), &table);
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(2)
        .flush_interval(std::time::Duration::from_millis(200))
        .build(sink)
        .unwrap();
    let rss_before = rss_bytes();
    let freezer = {
        let server = server.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(500));
            server.signal("STOP");
            std::thread::sleep(std::time::Duration::from_secs(10));
            server.signal("CONT");
        })
    };
    let (mut sent, mut full, mut worst) = (0u64, 0u64, std::time::Duration::ZERO);
    let mut latencies = Vec::new();
    while !freezer.is_finished() {
        let mut e = PostEvent::new("view", sent, 1_700_000_000);
        e.session_id = Some(format!("frozen-{sent}"));
        loop {
            let t = std::time::Instant::now();
            let r = b.track(e);
            let took = t.elapsed();
            worst = worst.max(took);
            if sent.is_multiple_of(64) {
                latencies.push(took);
            }
            match r {
                Ok(()) => break,
                Err(ch_ingest::TrackError::Full(back)) => {
                    full += 1;
                    e = back;
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                Err(other) => panic!("{other}"),
            }
        }
        sent += 1;
        if sent.is_multiple_of(500) {
            tokio::task::yield_now().await;
        }
    }
    freezer.join().unwrap();
    let report = b.shutdown().await.unwrap();
    let grew = rss_bytes().saturating_sub(rss_before);
    latencies.sort_unstable();
    let p99 = latencies[latencies.len() * 99 / 100];
    let counted = server.count(&table);
    println!(
        "frozen 10 s: {sent} sent, {counted} in ClickHouse, {full} Full refusals, track p99 {p99:?} \
         max {worst:?}, RSS +{} MiB (bound {} MiB + 16)",
        grew >> 20,
        b.memory_bound() >> 20
    );
    assert_eq!(report.failed_rows, 0);
    assert_eq!(b.stats().failed_rows, 0);
    assert!(counted >= sent);
    let distinct: u64 = server
        .query(&format!("SELECT uniqExact(tweet_id) FROM {table}"))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(distinct, sent, "no row lost");
    assert!(
        grew <= b.memory_bound() as u64 + (16 << 20),
        "RSS grew {grew} bytes"
    );
}

/// A TCP proxy between the sink and the server that a test switches between
/// passing traffic, adding latency, resetting connections and blackholing
/// them (accept, swallow, never answer).
mod proxy {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicU8, Ordering::SeqCst};
    use std::sync::Arc;
    use std::time::Duration;

    pub const PASS: u8 = 0;
    pub const SLOW: u8 = 1;
    pub const RESET: u8 = 2;
    pub const BLACKHOLE: u8 = 3;

    pub struct Proxy {
        pub url: String,
        pub mode: Arc<AtomicU8>,
    }

    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_string();
        let mode = Arc::new(AtomicU8::new(PASS));
        let m = mode.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (m, upstream) = (m.clone(), upstream.clone());
                std::thread::spawn(move || serve(client, &upstream, &m));
            }
        });
        Proxy { url, mode }
    }

    fn serve(client: TcpStream, upstream: &str, mode: &AtomicU8) {
        match mode.load(SeqCst) {
            RESET => {
                // Linger 0: the close sends RST, not FIN.
                let _ = socket_linger_zero(&client);
                drop(client);
                return;
            }
            BLACKHOLE => {
                let mut c = client;
                let mut sink = [0u8; 65536];
                while let Ok(n) = c.read(&mut sink) {
                    if n == 0 {
                        break;
                    }
                }
                return;
            }
            _ => {}
        }
        let Ok(server) = TcpStream::connect(upstream) else {
            return;
        };
        // The mode applies to live (pooled, keep-alive) connections too,
        // chunk by chunk.
        let pipe = |mut from: TcpStream, mut to: TcpStream, client: TcpStream| {
            let mut buf = [0u8; 65536];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => match mode.load(SeqCst) {
                        RESET => {
                            let _ = socket_linger_zero(&client);
                            let _ = client.shutdown(Shutdown::Both);
                            let _ = from.shutdown(Shutdown::Both);
                            let _ = to.shutdown(Shutdown::Both);
                            return;
                        }
                        BLACKHOLE => continue,
                        m => {
                            if m == SLOW {
                                std::thread::sleep(Duration::from_millis(100));
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    },
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        };
        let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let (c3, c4) = (client.try_clone().unwrap(), client.try_clone().unwrap());
        std::thread::scope(|s| {
            s.spawn(|| pipe(client, server, c3));
            s.spawn(|| pipe(s2, c2, c4));
        });
    }

    fn socket_linger_zero(s: &TcpStream) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let l = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &l as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as u32,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

/// Through a proxy that adds latency, resets connections and blackholes
/// them, every row still arrives (retries with an INSERT timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_delays_resets_and_blackholes_loses_no_rows() {
    let Some(server) = support::shared() else {
        return;
    };
    let table = server.fresh_table(
        "proxied",
        "(event_type String, tweet_id UInt64, occurred_at DateTime, user_id Nullable(UInt64), \
         session_id Nullable(String), client String, country FixedString(2), dwell_ms Nullable(UInt32)) \
         ENGINE = MergeTree ORDER BY tweet_id",
    );
    let p = proxy::start(&server.url);
    let sink = ClickHouseSink::new(nodelay_client().with_url(&p.url), &table);
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(1)
        .max_rows(200)
        .flush_interval(std::time::Duration::from_millis(100))
        .insert_timeout(std::time::Duration::from_millis(700))
        .retry(
            RetryPolicy::default()
                .with_max_attempts(100)
                .with_initial_backoff(std::time::Duration::from_millis(20))
                .with_max_backoff(std::time::Duration::from_millis(200))
                .with_max_elapsed(std::time::Duration::from_secs(60)),
        )
        .build(sink)
        .unwrap();
    let (mut sent, mut full) = (0u64, 0u64);
    for (mode, ms) in [
        (proxy::PASS, 500),
        (proxy::SLOW, 1_000),
        (proxy::RESET, 1_000),
        (proxy::BLACKHOLE, 1_500),
        (proxy::PASS, 300),
    ] {
        p.mode.store(mode, std::sync::atomic::Ordering::SeqCst);
        let until = std::time::Instant::now() + std::time::Duration::from_millis(ms);
        while std::time::Instant::now() < until {
            let e = PostEvent::new("proxied", sent, 1_700_000_000);
            track_retrying(&b, e, &mut full).await;
            sent += 1;
            if sent.is_multiple_of(50) {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
    }
    p.mode
        .store(proxy::PASS, std::sync::atomic::Ordering::SeqCst);
    let report = b.shutdown().await.unwrap();
    let s = b.stats();
    let counted = server.count(&table);
    let distinct: u64 = server
        .query(&format!("SELECT uniqExact(tweet_id) FROM {table}"))
        .trim()
        .parse()
        .unwrap();
    println!(
        "proxy faults: {sent} sent, {counted} in ClickHouse ({distinct} distinct, {} duplicates), \
         {} retries, {full} Full refusals, report failed {}",
        counted - distinct,
        s.retried_inserts,
        report.failed_rows
    );
    assert!(s.retried_inserts > 0, "the faults must have cost retries");
    assert_eq!(s.failed_rows, 0);
    assert_eq!(distinct, sent, "every row arrived");
}

/// Outage soak (ignored by default; about 5 minutes):
/// `cargo test --release --test server_down -- --ignored outage_soak --nocapture`.
/// 5 minutes of load at 100 000 events/s with the server killed for the
/// middle 2 minutes; spill enabled. Reports peak RSS, rows spilled, time to
/// drain after recovery, and rows lost (must be 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn outage_soak() {
    let minutes = |m: f64| std::time::Duration::from_secs_f64(m * 60.0);
    let total = minutes(
        std::env::var("SOAK_MINUTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5.0),
    );
    let (down_at, down_for) = (total.mul_f64(0.3), total.mul_f64(0.4));
    let server = std::sync::Arc::new(support::Server::start().expect("private server"));
    let table = format!("soak_{}", std::process::id());
    server.query(&PostEvent::create_table_sql(&table));
    let spill = tempfile::tempdir().unwrap();
    let sink = ClickHouseSink::new(nodelay_client().with_url(&server.url), &table);
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(2)
        .retry(RetryPolicy::default().with_max_elapsed(std::time::Duration::from_secs(5)))
        .insert_timeout(std::time::Duration::from_secs(10))
        .spill_dir(spill.path())
        .build(sink)
        .unwrap();
    let outage = {
        let server = server.clone();
        std::thread::spawn(move || {
            std::thread::sleep(down_at);
            server.kill_and_restart(down_for);
            std::time::Instant::now()
        })
    };
    let started = std::time::Instant::now();
    let rate = 100_000.0;
    let mut sent = 0u64;
    let mut full = 0u64;
    while started.elapsed() < total {
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            let mut e = PostEvent::new("soak", sent, 1_700_000_000);
            e.session_id = Some(format!("soak-session-{}", sent % 10_000));
            track_retrying(&b, e, &mut full).await;
            sent += 1;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let recovered_at = outage.join().unwrap();
    b.flush().await.unwrap();
    while b.stats().spill_pending_rows > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let drained_after = recovered_at.elapsed();
    let s = b.stats();
    b.shutdown().await.unwrap();
    let distinct: u64 = server
        .query(&format!("SELECT uniqExact(tweet_id) FROM {table}"))
        .trim()
        .parse()
        .unwrap();
    let counted = server.count(&table);
    let peak_kib: u64 = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    println!(
        "outage soak: {:.0} s load, server down {:.0} s; {sent} sent, {counted} in ClickHouse \
         ({distinct} distinct, {} lost, {} duplicates); {} spilled, {} replayed, {} retries, \
         {full} Full refusals; peak RSS {} MiB (bound {} + 16 MiB); drained {:.1} s after the server came back",
        total.as_secs_f64(),
        down_for.as_secs_f64(),
        sent - distinct,
        counted - distinct,
        s.spilled_rows,
        s.replayed_rows,
        s.retried_inserts,
        peak_kib / 1024,
        b.memory_bound() >> 20,
        drained_after.as_secs_f64()
    );
    assert_eq!(distinct, sent, "rows lost");
}
