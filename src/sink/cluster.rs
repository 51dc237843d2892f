//! A sharded, replicated ClickHouse cluster, written the way ClickHouse's
//! documentation calls the most efficient: each INSERT straight into one
//! shard's local (`ReplicatedMergeTree`) table, never through the
//! `Distributed` table, whose queue on the receiving node a hard restart
//! can lose.
//!
//! Owns: the topology (shards, their weights and replica URLs), the choice
//! of shard for an INSERT, and one [`ClickHouseSink`] per shard, which fails
//! over among that shard's replicas with its per-endpoint deadlines. Must
//! not: pick a shard from anything but the INSERT's identity: a retry, a
//! replay after a restart or a failover must offer the same block to the
//! same shard, or the replicas' block deduplication cannot drop the copy.

use super::{ClickHouseSink, InsertBatch, NoUrls, Sink, SinkError, TryTimeout};
use clickhouse::Client;

/// One shard of a cluster: the HTTP URLs of its replicas (tried in order,
/// with failover, as [`ClickHouseSink::with_urls`] does) and its weight.
///
/// ```
/// use ch_ingest::sink::ClusterShard;
/// let shard = ClusterShard::new(["http://ch-1a:8123", "http://ch-1b:8123"]).with_weight(2);
/// assert_eq!(shard.weight(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterShard {
    replicas: Vec<String>,
    weight: u32,
}

impl ClusterShard {
    /// A shard with these replicas and weight 1.
    pub fn new<U: AsRef<str>>(replicas: impl IntoIterator<Item = U>) -> Self {
        Self {
            replicas: replicas
                .into_iter()
                .map(|u| u.as_ref().to_string())
                .collect(),
            weight: 1,
        }
    }

    /// The share of INSERTs this shard takes, against the sum of all
    /// weights, as in `<remote_servers>`. Default: 1. A shard of weight 0
    /// takes none.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// The weight.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// The replica URLs.
    pub fn replicas(&self) -> &[String] {
        &self.replicas
    }
}

/// Why a [`ClusterSink`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The topology lists no shard.
    #[error("cluster topology: no shards")]
    NoShards,
    /// A shard lists no replica URL.
    #[error("cluster topology: shard {shard} (0-based) has no replica URLs")]
    NoReplicas {
        /// The shard's position in the topology.
        shard: usize,
    },
    /// Every shard has weight 0: no INSERT could go anywhere.
    #[error("cluster topology: every shard has weight 0")]
    ZeroWeight,
}

/// Sends each INSERT to exactly one shard's local table, chosen from the
/// INSERT's identity (the engine instance and the INSERT id, the same pair
/// its deduplication token is made of) with the shards' weights. Within the
/// shard it fails over among the replicas.
///
/// Why the identity and not a random pick: a `ReplicatedMergeTree` drops a
/// block it already stored (its id is a hash of the data, remembered in
/// ZooKeeper for the last `replicated_deduplication_window` blocks, shared
/// by every replica of the shard), but only on the shard that stored it.
/// The engine offers a failed INSERT again with the same bytes, so routing
/// by identity makes every retry, failover and replay from a spill file
/// (which keeps the identity) land where the first copy may already be:
/// a lost answer costs no duplicate. Spread is even: the identity is mixed
/// with a fixed 64-bit finalizer before it picks a weight slot, and the
/// choice is the same in every process and version for the same topology.
///
/// ```
/// use ch_ingest::sink::{nodelay_client, ClusterShard, ClusterSink};
/// let sink = ClusterSink::new(
///     nodelay_client(),
///     [
///         ClusterShard::new(["http://ch-1a:8123", "http://ch-1b:8123"]),
///         ClusterShard::new(["http://ch-2a:8123", "http://ch-2b:8123"]),
///     ],
///     "post_events_local",
/// )?;
/// assert_eq!(sink.shards(), 2);
/// # Ok::<(), ch_ingest::sink::ClusterError>(())
/// ```
#[derive(Clone)]
pub struct ClusterSink {
    shards: Vec<ClickHouseSink>,
    /// `bounds[i]`: the first weight slot past shard `i` (cumulative weights).
    bounds: Vec<u64>,
    table: String,
}

impl ClusterSink {
    /// One sink per shard, all writing `local_table` (the shards' local
    /// table, `db.table` or `table`, not the `Distributed` one).
    pub fn new(
        client: Client,
        shards: impl IntoIterator<Item = ClusterShard>,
        local_table: impl Into<String>,
    ) -> Result<Self, ClusterError> {
        let table = local_table.into();
        let mut sinks = Vec::new();
        let mut bounds = Vec::new();
        let mut total = 0u64;
        for (i, shard) in shards.into_iter().enumerate() {
            let sink = ClickHouseSink::with_urls(client.clone(), &shard.replicas, table.clone())
                .map_err(|NoUrls| ClusterError::NoReplicas { shard: i })?;
            total += u64::from(shard.weight);
            sinks.push(sink);
            bounds.push(total);
        }
        if sinks.is_empty() {
            return Err(ClusterError::NoShards);
        }
        if total == 0 {
            return Err(ClusterError::ZeroWeight);
        }
        Ok(Self {
            shards: sinks,
            bounds,
            table,
        })
    }

    /// Sets every shard's per-endpoint deadline (see
    /// [`ClickHouseSink::with_try_timeout`]).
    pub fn with_try_timeout(mut self, timeout: TryTimeout) -> Self {
        self.shards = self
            .shards
            .into_iter()
            .map(|s| s.with_try_timeout(timeout))
            .collect();
        self
    }

    /// Sends `insert_deduplication_token` on every shard (ClickHouse 22.2
    /// and later; see [`ClickHouseSink::with_deduplication_token`]).
    pub fn with_deduplication_token(mut self, on: bool) -> Self {
        self.shards = self
            .shards
            .into_iter()
            .map(|s| s.with_deduplication_token(on))
            .collect();
        self
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The shard (0-based, in topology order) that takes `insert`, every
    /// time it is offered.
    pub fn shard_of(&self, insert: &InsertBatch) -> usize {
        self.shard_of_identity(insert.origin(), insert.id())
    }

    fn shard_of_identity(&self, origin: u64, id: u64) -> usize {
        let total = self.bounds.last().copied().unwrap_or(1).max(1);
        let slot = mix(origin.rotate_left(32) ^ id) % total;
        self.bounds.partition_point(|&end| end <= slot)
    }
}

/// SplitMix64's finalizer: a fixed bijection that spreads consecutive ids
/// over all 64 bits. Never change it: spill files written by one version
/// are routed by the next.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Sink for ClusterSink {
    async fn insert(&self, batch: &InsertBatch) -> Result<(), SinkError> {
        self.shards[self.shard_of(batch)].insert(batch).await
    }

    fn table(&self) -> Option<&str> {
        Some(&self.table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(weights: &[u32]) -> ClusterSink {
        let shards = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| ClusterShard::new([format!("http://shard-{i}:8123")]).with_weight(w));
        ClusterSink::new(Client::default(), shards, "t_local").unwrap()
    }

    #[test]
    fn the_same_identity_always_picks_the_same_shard_and_weights_are_honoured() {
        let s = sink(&[1, 3, 0]);
        let mut counts = [0u64; 3];
        for id in 0..100_000u64 {
            let shard = s.shard_of_identity(0x1234_5678_9abc_def0, id);
            assert_eq!(shard, s.shard_of_identity(0x1234_5678_9abc_def0, id));
            counts[shard] += 1;
        }
        assert_eq!(counts[2], 0, "weight 0 takes nothing");
        let share = counts[1] as f64 / 100_000.0;
        assert!((share - 0.75).abs() < 0.01, "{counts:?}");
        // Fixed forever: spill files of this version are routed by the next.
        assert_eq!(
            (0..8)
                .map(|id| s.shard_of_identity(7, id))
                .collect::<Vec<_>>(),
            (0..8)
                .map(|id| [0, 1, 1, 1][(mix(7u64.rotate_left(32) ^ id) % 4) as usize])
                .collect::<Vec<_>>()
        );
        // SplitMix64's first output for seed 0, the published reference.
        assert_eq!(mix(0x9e37_79b9_7f4a_7c15), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn bad_topologies_are_errors_naming_the_shard() {
        let c = Client::default();
        assert_eq!(
            ClusterSink::new(c.clone(), Vec::<ClusterShard>::new(), "t").err(),
            Some(ClusterError::NoShards)
        );
        let empty = ClusterShard::new(Vec::<String>::new());
        let ok = ClusterShard::new(["http://a:8123"]);
        assert_eq!(
            ClusterSink::new(c.clone(), [ok.clone(), empty], "t").err(),
            Some(ClusterError::NoReplicas { shard: 1 })
        );
        assert_eq!(
            ClusterSink::new(c, [ok.with_weight(0)], "t").err(),
            Some(ClusterError::ZeroWeight)
        );
    }
}
