//! A real replicated cluster for tests: a private ZooKeeper and four
//! `clickhouse-server` 18.16 processes, 2 shards x 2 replicas, with
//! `ReplicatedMergeTree` local tables and a `Distributed` table on top.
//!
//! Everything runs on loopback ports with data on /dev/shm and dies with the
//! test binary, like the single private server. One cluster per test binary
//! ([`shared`]); tests make their own tables. Under `CI=true` a cluster that
//! cannot start is a failure, never a skip.

use super::{free_port, spawn_tied, Server};
use std::path::PathBuf;
use std::process::Child;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The cluster's name in `<remote_servers>`.
pub const NAME: &str = "ch_ingest_test";
/// The shards' weights in `<remote_servers>`.
pub const WEIGHTS: [u32; 2] = [1, 2];
const SHARDS: usize = 2;
const REPLICAS: usize = 2;

pub struct ZooKeeper {
    pub port: u16,
    child: Mutex<Child>,
    dir: PathBuf,
}

impl ZooKeeper {
    /// Starts ZooKeeper standalone (Debian's `zookeeper` package).
    pub fn start() -> Result<ZooKeeper, String> {
        let jar = "/usr/share/java/zookeeper.jar";
        if !std::path::Path::new(jar).exists() {
            return Err(format!("{jar} not found (apt-get install zookeeper)"));
        }
        let port = free_port();
        let dir = PathBuf::from(format!(
            "/dev/shm/ch-ingest-test-{}-zk{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(dir.join("data")).map_err(|e| e.to_string())?;
        let cfg = format!(
            "tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir={}/data\nclientPort={port}\n\
             clientPortAddress=127.0.0.1\nadmin.enableServer=false\n\
             4lw.commands.whitelist=ruok\nmaxClientCnxns=0\n",
            dir.display()
        );
        std::fs::write(dir.join("zoo.cfg"), cfg).map_err(|e| e.to_string())?;
        let child = spawn_tied(
            "java",
            vec![
                "-Xmx256m".into(),
                format!("-Dzookeeper.log.dir={}", dir.display()),
                "-Dzookeeper.root.logger=WARN,CONSOLE".into(),
                "-cp".into(),
                "/usr/share/java/zookeeper.jar:/usr/share/java/*".into(),
                "org.apache.zookeeper.server.ZooKeeperServerMain".into(),
                dir.join("zoo.cfg").display().to_string(),
            ],
        )?;
        let zk = ZooKeeper {
            port,
            child: Mutex::new(child),
            dir,
        };
        zk.wait_ready(Duration::from_secs(30))?;
        Ok(zk)
    }

    fn wait_ready(&self, limit: Duration) -> Result<(), String> {
        use std::io::{Read, Write};
        let deadline = Instant::now() + limit;
        loop {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
            if let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                // A server that took the connection but is not serving yet
                // may never answer: without these the wait has no end.
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
                let mut answer = String::new();
                if s.write_all(b"ruok").is_ok()
                    && s.read_to_string(&mut answer).is_ok()
                    && answer == "imok"
                {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("ZooKeeper did not answer ruok within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a signal (SIGSTOP, SIGCONT...).
    pub fn signal(&self, sig: &str) {
        let pid = self.child.lock().unwrap().id();
        std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        let mut c = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = c.kill();
        let _ = c.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct Cluster {
    /// Shard-major: `nodes[shard * REPLICAS + replica]`.
    pub nodes: Vec<Server>,
    /// Each node's native (TCP) port, as `system.clusters` lists it.
    pub tcp_ports: Vec<u16>,
    /// Each node's HTTPS port, its certificate (for `localhost` and
    /// `127.0.0.1`) signed by `pki.ca`.
    pub https_ports: Vec<u16>,
    pub pki: super::pki::Pki,
    pub zk: ZooKeeper,
}

/// The cluster shared by every test in this binary, or `None` (with a
/// notice) outside CI when it cannot start.
pub fn shared() -> Option<&'static Cluster> {
    static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| match Cluster::start() {
            Ok(c) => Some(c),
            Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("CI=true and the test cluster could not start: {e}")
            }
            Err(e) => {
                eprintln!("NOTICE: skipping cluster tests, no cluster: {e}");
                None
            }
        })
        .as_ref()
}

/// Shorthand for tests: the shared cluster, or return early (outside CI only).
#[macro_export]
macro_rules! cluster_or_skip {
    () => {
        match support::cluster::shared() {
            Some(c) => c,
            None => return,
        }
    };
}

impl Cluster {
    pub fn start() -> Result<Cluster, String> {
        let zk = ZooKeeper::start()?;
        let pki = super::pki::Pki::new(&zk.dir);
        let ports: Vec<(u16, u16, u16)> = (0..SHARDS * REPLICAS)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let https_ports: Vec<u16> = ports.iter().map(|_| free_port()).collect();
        let mut remote = String::new();
        for shard in 0..SHARDS {
            // Shard 2 weighs 2: weights are exercised end to end.
            remote.push_str(&format!(
                "<shard><weight>{}</weight><internal_replication>true</internal_replication>",
                shard + 1
            ));
            for replica in 0..REPLICAS {
                let (_, tcp, _) = ports[shard * REPLICAS + replica];
                remote.push_str(&format!(
                    "<replica><host>127.0.0.1</host><port>{tcp}</port></replica>"
                ));
            }
            remote.push_str("</shard>");
        }
        let mut nodes = Vec::new();
        for (i, &(http, tcp, interserver)) in ports.iter().enumerate() {
            let (shard, replica) = (i / REPLICAS + 1, i % REPLICAS + 1);
            let extra = format!(
                "<interserver_http_port>{interserver}</interserver_http_port>\n\
                 <interserver_http_host>127.0.0.1</interserver_http_host>\n\
                 <zookeeper><node><host>127.0.0.1</host><port>{zk}</port></node>\
                 <session_timeout_ms>10000</session_timeout_ms></zookeeper>\n\
                 <macros><shard>{shard:02}</shard><replica>r{replica}</replica></macros>\n\
                 <remote_servers><{NAME}>{remote}</{NAME}></remote_servers>\n\
                 <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>\n\
                 <merge_tree><replicated_max_ratio_of_wrong_parts>1</replicated_max_ratio_of_wrong_parts></merge_tree>\n{https}",
                zk = zk.port,
                https = pki.server_xml(https_ports[i]),
            );
            nodes.push(Server::start_node(http, tcp, &extra)?);
        }
        let tcp_ports = ports.iter().map(|&(_, tcp, _)| tcp).collect();
        Ok(Cluster {
            nodes,
            tcp_ports,
            https_ports,
            pki,
            zk,
        })
    }

    /// The replicas of shard `i` (0-based).
    pub fn shard(&self, i: usize) -> &[Server] {
        &self.nodes[i * REPLICAS..(i + 1) * REPLICAS]
    }

    /// The HTTP URLs of each shard's replicas, shard by shard.
    pub fn shard_urls(&self) -> Vec<Vec<String>> {
        (0..SHARDS)
            .map(|i| self.shard(i).iter().map(|n| n.url.clone()).collect())
            .collect()
    }

    /// Creates `<name>_local` (ReplicatedMergeTree on every node, replicas of
    /// a shard sharing one ZooKeeper path) and `<name>` (Distributed over the
    /// cluster), with `columns` and `ORDER BY order_by`. Returns both names.
    pub fn create_tables(
        &self,
        name: &str,
        columns: &str,
        order_by: &str,
        sharding_key: &str,
    ) -> (String, String) {
        let dist = format!("{name}_{}", std::process::id());
        let local = format!("{dist}_local");
        for node in &self.nodes {
            node.query(&format!("DROP TABLE IF EXISTS {dist}"));
            node.query(&format!("DROP TABLE IF EXISTS {local}"));
            node.query(&format!(
                "CREATE TABLE {local} ({columns}) ENGINE = ReplicatedMergeTree(\
                 '/clickhouse/tables/{{shard}}/{local}', '{{replica}}') ORDER BY {order_by}"
            ));
            node.query(&format!(
                "CREATE TABLE {dist} AS {local} ENGINE = Distributed({NAME}, default, {local}, {sharding_key})"
            ));
        }
        (local, dist)
    }

    /// Creates `<name>_local` as a plain MergeTree on every node and returns
    /// its name (for tests that only count where rows went).
    pub fn create_plain_local(&self, name: &str, columns: &str, order_by: &str) -> String {
        let local = format!("{name}_{}_local", std::process::id());
        for node in &self.nodes {
            node.query(&format!("DROP TABLE IF EXISTS {local}"));
            node.query(&format!(
                "CREATE TABLE {local} ({columns}) ENGINE = MergeTree ORDER BY {order_by}"
            ));
        }
        local
    }

    /// Rows in `local` on each replica, shard-major, once the replicas of
    /// each shard agree (SYSTEM SYNC REPLICA, again until they do or a
    /// minute passed: a replica whose ZooKeeper session expired pulls the
    /// log late).
    pub fn replica_counts(&self, local: &str) -> Vec<u64> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let reattach_at = Instant::now() + Duration::from_secs(15);
        let mut reattached = false;
        loop {
            let counts: Vec<u64> = self
                .nodes
                .iter()
                .map(|n| {
                    // A replica whose session expired (it was frozen)
                    // refuses until it has a new one.
                    while let Err(e) = n.try_query(&format!("SYSTEM SYNC REPLICA {local}")) {
                        assert!(
                            Instant::now() < deadline,
                            "SYSTEM SYNC REPLICA {local}: {e}"
                        );
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    n.count(local)
                })
                .collect();
            let agree = counts
                .chunks(REPLICAS)
                .all(|s| s.iter().all(|&c| c == s[0]));
            if agree || Instant::now() > deadline {
                return counts;
            }
            if !reattached && Instant::now() > reattach_at {
                // 18.16 keeps a part whose ZooKeeper commit ended with
                // "unknown status" (ZooKeeper froze mid-INSERT) visible on
                // its replica until its part check removes it, minutes
                // later; the client's retry stored the block properly. A
                // table's attach runs that check at once: parts ZooKeeper
                // does not know are moved to `detached/`.
                reattached = true;
                for (shard, c) in counts.chunks(REPLICAS).enumerate() {
                    if c.iter().all(|&n| n == c[0]) {
                        continue;
                    }
                    println!(
                        "replica_counts: shard {shard} replicas disagree {c:?} after 15 s; \
                         re-attaching {local} there (18.16 removes an unknown-status part \
                         ZooKeeper does not know only at its part check or on attach)"
                    );
                    for n in self.shard(shard) {
                        let _ = n.try_query(&format!("DETACH TABLE {local}"));
                        let _ = n.try_query(&format!("ATTACH TABLE {local}"));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
