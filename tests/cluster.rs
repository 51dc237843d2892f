//! Against a real replicated cluster (a private ZooKeeper and 2 shards x 2
//! replicas of clickhouse-server 18.16, started by `support::cluster`):
//! `ClusterSink` writes each INSERT to one shard's local table, fails over
//! among that shard's replicas, and a retry of an INSERT whose answer was
//! lost is dropped by the shard's block deduplication. Every test reports
//! rows sent, rows read back through the `Distributed` table, duplicates,
//! per-shard counts against the routing, and the time to recover, and
//! asserts 0 lost and 0 duplicated.

mod support;

use ch_ingest::sink::{
    nodelay_client, ClusterShard, ClusterSink, Discovery, DiscoveryError, InsertBatch, Sink,
    SinkError, TryTimeout,
};
use ch_ingest::{Buffer, PostEvent};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::check::{quick_retries, rich_event as ev};
use support::cluster::Cluster;

/// The cluster is shared: one scenario at a time (a killed replica would
/// disturb a neighbour's counts).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const COLUMNS: &str = "event_type String, tweet_id UInt64, occurred_at DateTime, \
    user_id Nullable(UInt64), session_id Nullable(String), client String, \
    country FixedString(2), dwell_ms Nullable(UInt32)";

/// A `ClusterSink` that also remembers how many rows each shard
/// acknowledged, to compare with what the shards hold.
#[derive(Clone)]
struct Counted {
    sink: ClusterSink,
    acked: Arc<Mutex<Vec<u64>>>,
}

impl Counted {
    fn new(sink: ClusterSink) -> Self {
        let acked = Arc::new(Mutex::new(vec![0; sink.shards()]));
        Self { sink, acked }
    }
}

impl Sink for Counted {
    async fn insert(&self, batch: &InsertBatch) -> Result<(), SinkError> {
        self.sink.insert(batch).await?;
        self.acked.lock().unwrap()[self.sink.shard_of(batch)] += batch.rows();
        Ok(())
    }
    fn table(&self) -> Option<&str> {
        self.sink.table()
    }
}

fn cluster_sink(cluster: &Cluster, local: &str, urls: Vec<Vec<String>>) -> ClusterSink {
    let _ = cluster;
    ClusterSink::new(
        nodelay_client(),
        urls.into_iter().map(ClusterShard::new),
        local,
    )
    .unwrap()
    .with_try_timeout(TryTimeout {
        base: Duration::from_secs(2),
        per_mib: Duration::from_millis(250),
    })
}

/// What a scenario left in the cluster, checked and printed.
fn check(
    cluster: &Cluster,
    name: &str,
    local: &str,
    dist: &str,
    sent: u64,
    sink: &Counted,
    recovery: Duration,
) {
    let per_replica = cluster.replica_counts(local);
    let per_shard: Vec<u64> = per_replica.chunks(2).map(|r| r[0]).collect();
    let through_dist = cluster.nodes[0].count(dist);
    let distinct: u64 = cluster.nodes[0]
        .query(&format!("SELECT uniqExact(tweet_id) FROM {dist}"))
        .trim()
        .parse()
        .unwrap();
    let acked = sink.acked.lock().unwrap().clone();
    println!(
        "cluster scenario `{name}`: sent {sent}, read back {through_dist} through Distributed, \
         {} duplicates, per shard {per_shard:?} (routing acked {acked:?}), replicas {per_replica:?}, \
         recovered in {recovery:.1?}",
        through_dist - distinct
    );
    for shard in per_replica.chunks(2) {
        assert_eq!(shard[0], shard[1], "the replicas of a shard agree");
    }
    assert_eq!(through_dist, sent, "0 lost, 0 duplicated");
    assert_eq!(distinct, sent, "0 duplicates");
    assert_eq!(per_shard, acked, "each shard holds what was routed to it");
}

/// Tracks `ids`, waiting out `Full` (the sink is behind during a fault).
async fn track_all(b: &Buffer<PostEvent>, ids: std::ops::Range<u64>) {
    for i in ids {
        b.track_timeout(ev(i), Duration::from_secs(60))
            .await
            .unwrap();
    }
}

fn engine(sink: Counted) -> Buffer<PostEvent> {
    Buffer::builder()
        .shards(2)
        .max_rows(500)
        // One sealed batch per INSERT: many INSERTs, so routing has
        // something to spread.
        .max_insert_rows(500)
        .max_inflight(2)
        .retry(
            quick_retries()
                .with_max_attempts(1_000)
                .with_max_backoff(Duration::from_millis(200))
                .with_max_elapsed(Duration::from_secs(120)),
        )
        .insert_timeout(Duration::from_secs(30))
        .build(sink)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_insert_lands_on_exactly_one_shard_with_the_weights() {
    let _one = SERIAL.lock().await;
    let cluster = cluster_or_skip!();
    let (local, dist) = cluster.create_tables("spread", COLUMNS, "tweet_id", "rand()");
    let sink = Counted::new(cluster_sink(cluster, &local, cluster.shard_urls()));
    let b = engine(sink.clone());
    let sent = 100_000;
    track_all(&b, 0..sent).await;
    let report = b.shutdown().await.unwrap();
    assert_eq!(report.rows, sent);
    check(
        cluster,
        "spread",
        &local,
        &dist,
        sent,
        &sink,
        Duration::ZERO,
    );
    // 200 INSERTs of 500 rows, equal weights: each shard's share is 50 %
    // give or take 3.5 % (one standard deviation).
    let acked = sink.acked.lock().unwrap().clone();
    assert!(
        acked.iter().all(|&n| n > sent * 35 / 100),
        "both shards take a share: {acked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_load_and_restarted_loses_and_duplicates_nothing() {
    let _one = SERIAL.lock().await;
    let cluster = cluster_or_skip!();
    let (local, dist) = cluster.create_tables("killed", COLUMNS, "tweet_id", "rand()");
    let sink = Counted::new(cluster_sink(cluster, &local, cluster.shard_urls()));
    let b = engine(sink.clone());
    let sent = 40_000u64;
    track_all(&b, 0..sent / 2).await;
    // The preferred replica of shard 1 dies mid-load; the INSERTs in flight
    // on it are ambiguous and go to its twin.
    let victim = &cluster.shard(0)[0];
    victim.signal("KILL");
    let t = Instant::now();
    track_all(&b, sent / 2..sent).await;
    let report = b.flush().await.unwrap();
    let recovery = t.elapsed();
    assert!(report.is_complete(), "{report:?}");
    victim.kill_and_restart(Duration::ZERO);
    b.shutdown().await.unwrap();
    check(
        cluster,
        "replica SIGKILL",
        &local,
        &dist,
        sent,
        &sink,
        recovery,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_after_the_block_was_stored_costs_no_duplicate() {
    let _one = SERIAL.lock().await;
    let cluster = cluster_or_skip!();
    let (local, dist) = cluster.create_tables("lost", COLUMNS, "tweet_id", "rand()");
    // Shard 1's first replica sits behind a proxy that lets the INSERT
    // through and then drops the server's answer, for the first 5
    // connections: the block is stored, the engine sees a network error.
    let dropper = answer_dropper::start(&cluster.shard(0)[0].url, 5);
    let mut urls = cluster.shard_urls();
    urls[0][0] = dropper.url.clone();
    let sink = Counted::new(cluster_sink(cluster, &local, urls));
    let b = engine(sink.clone());
    let t = Instant::now();
    track_all(&b, 0..10_000).await;
    let report = b.flush().await.unwrap();
    let recovery = t.elapsed();
    assert!(report.is_complete(), "{report:?}");
    b.shutdown().await.unwrap();
    // Stored but never acknowledged, yet the report is complete: each of
    // those INSERTs was sent again (to the twin replica, by failover within
    // the attempt, or by a retry) and acknowledged; the exact count below
    // says the shard dropped the second copy.
    assert!(
        dropper.dropped() > 0,
        "the proxy dropped answers (else this test proves nothing)"
    );
    println!(
        "answers dropped after the server stored the block: {}",
        dropper.dropped()
    );
    check(
        cluster,
        "lost answers",
        &local,
        &dist,
        10_000,
        &sink,
        recovery,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topology_and_the_local_table_are_discovered_through_one_node() {
    let _one = SERIAL.lock().await;
    let cluster = cluster_or_skip!();
    let (local, dist) = cluster.create_tables("found", COLUMNS, "tweet_id", "rand()");
    // Every node listens on 127.0.0.1: tell their HTTP ports apart by the
    // native port system.clusters lists.
    let mut discovery = Discovery::new(&cluster.nodes[0].url).distributed_table(&dist);
    for (node, tcp) in cluster.nodes.iter().zip(&cluster.tcp_ports) {
        discovery = discovery.http_port(format!("127.0.0.1:{tcp}"), node.port());
    }
    let found = ClusterSink::discover(nodelay_client(), &discovery)
        .await
        .unwrap();
    assert_eq!(found.shards(), 2);
    assert_eq!(found.table(), Some(format!("default.{local}").as_str()));
    let sink = Counted::new(found);
    let b = engine(sink.clone());
    track_all(&b, 0..10_000).await;
    assert!(b.shutdown().await.unwrap().is_complete());
    check(
        cluster,
        "discovered",
        &local,
        &dist,
        10_000,
        &sink,
        Duration::ZERO,
    );

    // A key this sink cannot compute is refused up front, naming the way out.
    let (_, keyed) = cluster.create_tables("keyed", COLUMNS, "tweet_id", "intHash64(tweet_id)");
    let err = ClusterSink::discover(
        nodelay_client(),
        &Discovery::new(&cluster.nodes[0].url).distributed_table(&keyed),
    )
    .await
    .err()
    .unwrap();
    assert!(
        matches!(&err, DiscoveryError::ShardingKey { key, .. } if key == "intHash64(tweet_id)"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("insert through the Distributed table"),
        "{err}"
    );
}

/// A TCP proxy that forwards a request to the server and throws its answer
/// away (then closes), for the first `n` connections; later ones pass.
mod answer_dropper {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
    use std::sync::Arc;

    pub struct Dropper {
        pub url: String,
        dropped: Arc<AtomicU64>,
    }

    impl Dropper {
        pub fn dropped(&self) -> u64 {
            self.dropped.load(SeqCst)
        }
    }

    pub fn start(upstream: &str, n: u64) -> Dropper {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_string();
        let dropped = Arc::new(AtomicU64::new(0));
        let (d, seen) = (dropped.clone(), Arc::new(AtomicU64::new(0)));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let drop_answer = seen.fetch_add(1, SeqCst) < n;
                let (upstream, d) = (upstream.clone(), d.clone());
                std::thread::spawn(move || serve(client, &upstream, drop_answer, &d));
            }
        });
        Dropper { url, dropped }
    }

    fn serve(client: TcpStream, upstream: &str, drop_answer: bool, dropped: &AtomicU64) {
        let Ok(server) = TcpStream::connect(upstream) else {
            return;
        };
        let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n) = c_in.read(&mut buf) {
                if n == 0 || s_out.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = s_out.shutdown(Shutdown::Write);
        });
        let (mut s_in, mut c_out) = (server, client);
        let mut buf = [0u8; 65536];
        while let Ok(n) = s_in.read(&mut buf) {
            if n == 0 {
                break;
            }
            if drop_answer {
                // The server answered: the INSERT is stored. The client
                // never hears it.
                dropped.fetch_add(1, SeqCst);
                let _ = c_out.shutdown(Shutdown::Both);
                let _ = s_in.shutdown(Shutdown::Both);
                return;
            }
            if c_out.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = c_out.shutdown(Shutdown::Both);
    }
}
