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

use super::client::log_label;
use super::sharding::ShardingKey;
use super::sql::system_tables_filter;
use super::{
    fetch_text, quote_literal, ClickHouseSink, InsertBatch, NoUrls, Sink, SinkError, TryTimeout,
};
use crate::schema::{Schema, Type};
use bytes::{Bytes, BytesMut};
use clickhouse::Client;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, RwLock};
use std::task::Poll;
use std::time::Duration;

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
    /// A sharding key this sink cannot compute exactly.
    #[error(
        "sharding key `{key}`: {reason}; supported: an integer column, or intHash64, \
         cityHash64 or sipHash64 of one column; for anything else insert through the \
         Distributed table itself (a ClickHouseSink on it)"
    )]
    ShardingKey {
        /// The expression.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
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
    /// The shards' sinks and replicas; [`refresh_every`](Self::refresh_every)
    /// swaps in new replica lists (never new shards or weights).
    current: Arc<RwLock<Arc<Replicas>>>,
    /// What a shard's sink is rebuilt from when its replicas change.
    client: Client,
    try_timeout: TryTimeout,
    dedup_token: bool,
    horizon: Arc<OnceLock<std::time::Duration>>,
    /// The INSERT shape the engine asked for, for shard sinks built later.
    shape: Arc<OnceLock<(super::InsertOrder, super::InsertFormat)>>,
    /// `bounds[i]`: the first weight slot past shard `i` (cumulative weights).
    bounds: Vec<u64>,
    table: String,
    /// Rows by a sharding key instead of INSERTs by identity.
    key: Option<Arc<KeyRouting>>,
}

/// One sink per shard, and each shard's replica URLs as logs show them (no
/// credentials): what a spill file records, and how a replay finds the
/// shard again.
struct Replicas {
    sinks: Vec<ClickHouseSink>,
    urls: Vec<Vec<String>>,
}

/// A sharding key and the types of the columns it may meet.
struct KeyRouting {
    key: ShardingKey,
    text: String,
    types: HashMap<String, Type>,
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
        let mut replicas = Vec::new();
        let mut bounds = Vec::new();
        let mut total = 0u64;
        for (i, shard) in shards.into_iter().enumerate() {
            let sink = ClickHouseSink::with_urls(client.clone(), &shard.replicas, table.clone())
                .map_err(|NoUrls| ClusterError::NoReplicas { shard: i })?;
            total += u64::from(shard.weight);
            replicas.push(shard.replicas.iter().map(|u| log_label(u)).collect());
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
            current: Arc::new(RwLock::new(Arc::new(Replicas {
                sinks,
                urls: replicas,
            }))),
            client,
            try_timeout: TryTimeout::default(),
            dedup_token: false,
            horizon: Default::default(),
            shape: Default::default(),
            bounds,
            table,
            key: None,
        })
    }

    /// Routes rows by `key`, the `Distributed` table's sharding-key
    /// expression, exactly as the server would: each INSERT is split into
    /// one INSERT per shard it has rows for, `key % total_weight` picking
    /// the weight slot. `schema` holds the local table's columns (from
    /// [`Schema::fetch`]), so values can be found in the RowBinary rows.
    ///
    /// The split of a given INSERT is the same on every try, so a retry
    /// after some shards stored their part offers each shard the same block
    /// again, and it drops it. Supported keys: an integer column,
    /// `intHash64(c)` of an integer column, `cityHash64(c)` and
    /// `sipHash64(c)` of an integer, `String` or `FixedString` column.
    ///
    /// ```
    /// use ch_ingest::sink::{nodelay_client, ClusterShard, ClusterSink};
    /// use ch_ingest::{PostEvent, Schema};
    /// let schema = Schema::new(PostEvent::SCHEMA.iter().copied()).unwrap();
    /// let shards = [ClusterShard::new(["http://a:8123"]), ClusterShard::new(["http://b:8123"])];
    /// let sink = ClusterSink::new(nodelay_client(), shards, "post_events_local")?
    ///     .with_sharding_key("cityHash64(tweet_id)", &schema)?;
    /// # Ok::<(), ch_ingest::sink::ClusterError>(())
    /// ```
    pub fn with_sharding_key(mut self, key: &str, schema: &Schema) -> Result<Self, ClusterError> {
        let refuse = |reason: String| ClusterError::ShardingKey {
            key: key.to_string(),
            reason,
        };
        let parsed = ShardingKey::parse(key)
            .ok_or_else(|| refuse("not an expression this sink computes".into()))?;
        let column = schema
            .columns()
            .iter()
            .find(|c| c.name == parsed.column())
            .ok_or_else(|| refuse(format!("no column `{}` in the table", parsed.column())))?;
        if !parsed.supports(&column.ty) {
            return Err(refuse(format!(
                "column `{}` is {}, which this key does not take",
                column.name, column.ty
            )));
        }
        let types = schema
            .columns()
            .iter()
            .map(|c| (c.name.clone(), c.ty.clone()))
            .collect();
        self.key = Some(Arc::new(KeyRouting {
            key: parsed,
            text: key.to_string(),
            types,
        }));
        Ok(self)
    }

    /// Whether [`with_sharding_key`](Self::with_sharding_key) computes
    /// this expression (for a column of a type it takes), so a
    /// configuration can be checked before any server is asked.
    ///
    /// ```
    /// use ch_ingest::sink::ClusterSink;
    /// assert!(ClusterSink::can_route_by("cityHash64(tweet_id)"));
    /// assert!(!ClusterSink::can_route_by("halfMD5(tweet_id)"));
    /// ```
    pub fn can_route_by(key: &str) -> bool {
        ShardingKey::parse(key).is_some()
    }

    /// Sets every shard's per-endpoint deadline (see
    /// [`ClickHouseSink::with_try_timeout`]).
    pub fn with_try_timeout(mut self, timeout: TryTimeout) -> Self {
        self.try_timeout = timeout;
        self.rebuild(|s| s.with_try_timeout(timeout))
    }

    /// Sends `insert_deduplication_token` on every shard (ClickHouse 22.2
    /// and later; see [`ClickHouseSink::with_deduplication_token`]).
    pub fn with_deduplication_token(mut self, on: bool) -> Self {
        self.dedup_token = on;
        self.rebuild(|s| s.with_deduplication_token(on))
    }

    /// Reads the topology through `discovery` every `every` and applies
    /// what may change under a running engine: each shard's replicas (one
    /// added, removed or moved), with their health starting afresh. A
    /// change of the shards themselves (their number, order or weights) or
    /// of the local table is not applied, since an INSERT in flight must be
    /// retried on the shard its identity picked under the topology it was
    /// first sent with: it is logged, once per new topology, as a warning
    /// to build a new engine over a new sink (`ch-ingest serve` does that).
    /// The refresh runs on a task of the current tokio runtime and ends
    /// when the last clone of this sink is dropped.
    ///
    /// ```no_run
    /// use ch_ingest::sink::{nodelay_client, ClusterSink, Discovery};
    /// use std::time::Duration;
    /// # async fn run() -> Result<(), ch_ingest::sink::DiscoveryError> {
    /// let discovery = Discovery::new("http://ch-1a:8123").distributed_table("post_events");
    /// let sink = ClusterSink::discover(nodelay_client(), &discovery)
    ///     .await?
    ///     .refresh_every(discovery, Duration::from_secs(60));
    /// # Ok(()) }
    /// ```
    pub fn refresh_every(self, discovery: Discovery, every: Duration) -> Self {
        let current = Arc::downgrade(&self.current);
        let (client, table, horizon, shape) = (
            self.client.clone(),
            self.table.clone(),
            self.horizon.clone(),
            self.shape.clone(),
        );
        let (try_timeout, dedup_token) = (self.try_timeout, self.dedup_token);
        let weights: Vec<u64> = self
            .bounds
            .iter()
            .scan(0, |start, &end| {
                let w = end - *start;
                *start = end;
                Some(w)
            })
            .collect();
        tokio::spawn(async move {
            let mut refused: Option<Vec<ClusterShard>> = None;
            loop {
                tokio::time::sleep(every).await;
                if current.strong_count() == 0 {
                    return;
                }
                let topology = match discovery.topology(&client).await {
                    Ok(t) => t,
                    Err(error) => {
                        tracing::warn!(%error, "cluster topology refresh failed; keeping the replicas we have");
                        continue;
                    }
                };
                let same_shards = topology.shards.len() == weights.len()
                    && topology
                        .shards
                        .iter()
                        .zip(&weights)
                        .all(|(s, &w)| u64::from(s.weight()) == w)
                    && topology.local_table == table;
                if !same_shards {
                    if refused.as_ref() != Some(&topology.shards) {
                        tracing::warn!(
                            shards = topology.shards.len(),
                            local_table = %topology.local_table,
                            "the cluster's shards changed; not applied to this sink (its INSERTs \
                             in flight must keep their shard): build a new engine to use them"
                        );
                        refused = Some(topology.shards);
                    }
                    continue;
                }
                let Some(current) = current.upgrade() else {
                    return;
                };
                let now = match current.read() {
                    Ok(r) => r.clone(),
                    Err(poisoned) => poisoned.into_inner().clone(),
                };
                let (mut sinks, mut urls) = (now.sinks.clone(), now.urls.clone());
                let mut changed = false;
                for (i, shard) in topology.shards.iter().enumerate() {
                    let labels: Vec<String> =
                        shard.replicas().iter().map(|u| log_label(u)).collect();
                    if labels == urls[i] {
                        continue;
                    }
                    let Ok(sink) =
                        ClickHouseSink::with_urls(client.clone(), shard.replicas(), &table)
                    else {
                        continue;
                    };
                    let sink = sink
                        .with_try_timeout(try_timeout)
                        .with_deduplication_token(dedup_token);
                    if let Some(h) = horizon.get() {
                        sink.retry_horizon(*h);
                    }
                    if let Some((order, format)) = shape.get() {
                        sink.insert_shape(order, *format);
                    }
                    tracing::info!(shard = i, replicas = ?labels, "a shard's replicas changed; its INSERTs use the new list");
                    sinks[i] = sink;
                    urls[i] = labels;
                    changed = true;
                }
                if changed {
                    let next = Arc::new(Replicas { sinks, urls });
                    match current.write() {
                        Ok(mut w) => *w = next,
                        Err(poisoned) => *poisoned.into_inner() = next,
                    }
                }
            }
        });
        self
    }

    /// A builder step on every shard's sink (before the sink is shared).
    fn rebuild(mut self, f: impl Fn(ClickHouseSink) -> ClickHouseSink) -> Self {
        let now = self.replicas();
        let next = Replicas {
            sinks: now.sinks.iter().cloned().map(f).collect(),
            urls: now.urls.clone(),
        };
        self.current = Arc::new(RwLock::new(Arc::new(next)));
        self
    }

    /// The shards' sinks and replicas now.
    fn replicas(&self) -> Arc<Replicas> {
        match self.current.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.bounds.len()
    }

    /// The shard (0-based, in topology order) that takes `insert`, every
    /// time it is offered, when routing is by identity (with a sharding
    /// key the rows of one INSERT go where their keys say).
    ///
    /// An INSERT replayed from a spill file goes to the shard the file
    /// names (the one holding a replica it lists), so a topology that
    /// changed in between cannot send it where no earlier copy is.
    pub fn shard_of(&self, insert: &InsertBatch) -> usize {
        insert
            .recorded_destination()
            .and_then(|urls| {
                self.replicas()
                    .urls
                    .iter()
                    .position(|shard| shard.iter().any(|r| urls.contains(r)))
            })
            .unwrap_or_else(|| self.shard_of_identity(insert.origin(), insert.id()))
    }

    fn shard_of_identity(&self, origin: u64, id: u64) -> usize {
        self.shard_of_key(mix(origin.rotate_left(32) ^ id))
    }

    /// The shard of weight slot `key % total_weight`: shard `i` owns its
    /// weight's worth of consecutive slots, in topology order, as the
    /// server's `slot_to_shard` does.
    fn shard_of_key(&self, key: u64) -> usize {
        let total = self.bounds.last().copied().unwrap_or(1).max(1);
        let slot = key % total;
        self.bounds.partition_point(|&end| end <= slot)
    }

    /// Splits `batch` by the sharding key: per shard, the rows it takes
    /// (same order as in the batch), as one INSERT with the batch's identity.
    fn split(
        &self,
        routing: &KeyRouting,
        batch: &InsertBatch,
    ) -> Result<Vec<(usize, InsertBatch)>, SinkError> {
        let columns: Vec<&str> = batch.columns().iter().map(|c| c.as_ref()).collect();
        let types: Vec<&Type> = columns
            .iter()
            .map(|c| routing.types.get(*c))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                SinkError::Other(format!(
                    "the rows have a column the table `{}` lacks",
                    self.table
                ))
            })?;
        let key_at = columns
            .iter()
            .position(|c| *c == routing.key.column())
            .ok_or_else(|| {
                SinkError::Other(format!(
                    "the rows have no column `{}`, which the sharding key `{}` needs",
                    routing.key.column(),
                    routing.text
                ))
            })?;
        let key_ty = types[key_at];
        let mut parts: Vec<(BytesMut, u64)> =
            (0..self.shards()).map(|_| (BytesMut::new(), 0)).collect();
        let mut bad = false;
        for chunk in batch.chunks() {
            crate::rowbinary::decode::for_each_row(
                &types,
                key_at,
                chunk,
                |row, value| match routing.key.eval(key_ty, &chunk[value]) {
                    Some(key) => {
                        let (buf, rows) = &mut parts[self.shard_of_key(key)];
                        buf.extend_from_slice(&chunk[row]);
                        *rows += 1;
                    }
                    None => bad = true,
                },
            )
            .map_err(|e| SinkError::Other(format!("routing by `{}`: {e}", routing.text)))?;
        }
        if bad {
            return Err(SinkError::Other(format!(
                "routing by `{}`: a value the key cannot take",
                routing.text
            )));
        }
        Ok(parts
            .into_iter()
            .enumerate()
            .filter(|(_, (_, rows))| *rows > 0)
            .map(|(shard, (buf, rows))| {
                let part =
                    InsertBatch::from_parts(batch.id(), &columns, vec![Bytes::from(buf)], rows)
                        .with_origin(batch.origin());
                (shard, part)
            })
            .collect())
    }
}

/// Runs the futures together on this task (so the attempt's deadline, a
/// task-local, reaches every one of them) and returns their outputs in order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
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
        let replicas = self.replicas();
        let Some(routing) = &self.key else {
            return replicas.sinks[self.shard_of(batch)].insert(batch).await;
        };
        let parts = self.split(routing, batch)?;
        let sent = join_all(
            parts
                .iter()
                .map(|(shard, part)| replicas.sinks[*shard].insert(part))
                .collect(),
        )
        .await;
        // A refusal for good decides the batch's fate; otherwise the first
        // error, and the retry offers every shard its same part again.
        let mut errors: Vec<SinkError> = sent.into_iter().filter_map(Result::err).collect();
        match errors.iter().position(|e| !e.is_retryable()) {
            Some(i) => Err(errors.swap_remove(i)),
            None => errors.into_iter().next().map_or(Ok(()), Err),
        }
    }

    fn table(&self) -> Option<&str> {
        Some(&self.table)
    }

    /// One lane per shard when routing is by identity, so a shard that is
    /// down holds only its own INSERTs; with a sharding key every INSERT
    /// may touch every shard, so there is one lane.
    fn lanes(&self) -> usize {
        match self.key {
            None => self.shards(),
            Some(_) => 1,
        }
    }

    fn lane(&self, origin: u64, id: u64) -> usize {
        match self.key {
            None => self.shard_of_identity(origin, id),
            Some(_) => 0,
        }
    }

    /// The replicas of the INSERT's shard, when routing is by identity.
    fn destination(&self, batch: &InsertBatch) -> Option<Vec<String>> {
        match self.key {
            None => Some(self.replicas().urls[self.shard_of(batch)].clone()),
            Some(_) => None,
        }
    }

    /// Each shard checks its own table's deduplication window.
    fn retry_horizon(&self, horizon: std::time::Duration) {
        let _ = self.horizon.set(horizon);
        for shard in &self.replicas().sinks {
            shard.retry_horizon(horizon);
        }
    }

    fn insert_shape(&self, order: &super::InsertOrder, format: super::InsertFormat) {
        let _ = self.shape.set((order.clone(), format));
        for shard in &self.replicas().sinks {
            shard.insert_shape(order, format);
        }
    }

    /// Sorted by the local table's key as the INSERT's shard (or, split by
    /// a sharding key, the first shard) reports it; splitting keeps the
    /// order, so every shard's part is sorted too.
    async fn prepare(&self, batch: Arc<InsertBatch>) -> Arc<InsertBatch> {
        let replicas = self.replicas();
        let shard = match self.key {
            None => self.shard_of(&batch),
            Some(_) => 0,
        };
        replicas.sinks[shard].prepare(batch).await
    }
}

/// Reads a cluster's topology through any one of its nodes (the seed):
/// shards, weights and replicas from `system.clusters`, and the local table
/// from the `Distributed` table's definition (or given by name).
///
/// `system.clusters` lists native (TCP) ports; the HTTP port of a replica is
/// the seed URL's unless [`http_port`](Self::http_port) maps it. Every
/// replica is reached with the seed's scheme: an `https://` seed (with the
/// `tls` feature) makes an HTTPS-only cluster, each replica at its HTTPS
/// port.
///
/// ```no_run
/// use ch_ingest::sink::{nodelay_client, ClusterSink, Discovery};
/// # async fn run() -> Result<(), ch_ingest::sink::DiscoveryError> {
/// let discovery = Discovery::new("http://ch-1a:8123").distributed_table("post_events");
/// let sink = ClusterSink::discover(nodelay_client(), &discovery).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    seed: String,
    cluster: Option<String>,
    table: Target,
    http_ports: Vec<(String, u16)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    None,
    Local(String),
    Distributed(String),
}

impl Discovery {
    /// Discovery through the node at `seed_url`.
    pub fn new(seed_url: impl Into<String>) -> Self {
        Self {
            seed: seed_url.into(),
            cluster: None,
            table: Target::None,
            http_ports: Vec::new(),
        }
    }

    /// The cluster's name in `<remote_servers>`; read from the
    /// `Distributed` table when that is given instead.
    pub fn cluster(mut self, name: impl Into<String>) -> Self {
        self.cluster = Some(name.into());
        self
    }

    /// Insert into this local table (`db.table` or `table`) on every shard.
    pub fn local_table(mut self, table: impl Into<String>) -> Self {
        self.table = Target::Local(table.into());
        self
    }

    /// Insert into the local table this `Distributed` table reads (and use
    /// its cluster unless [`cluster`](Self::cluster) names one). A
    /// sharding key other than `rand()` must be one
    /// [`ClusterSink::with_sharding_key`] computes; anything else is
    /// [`DiscoveryError::ShardingKey`] (write through the `Distributed`
    /// table itself for those).
    pub fn distributed_table(mut self, table: impl Into<String>) -> Self {
        self.table = Target::Distributed(table.into());
        self
    }

    /// The HTTP port of the replica `host` (its HTTPS port when the seed is
    /// `https://`), with `host` as `system.clusters` names it (`host_name`
    /// or `host_address`; `host:tcp_port` to tell apart several servers on
    /// one host). Default: the seed URL's port.
    pub fn http_port(mut self, host: impl Into<String>, port: u16) -> Self {
        self.http_ports.push((host.into(), port));
        self
    }

    /// The shards and the local table, as the seed sees them now.
    pub async fn topology(&self, client: &Client) -> Result<Topology, DiscoveryError> {
        let seed = client.clone().with_url(&self.seed);
        let (cluster, local, sharding_key) = match &self.table {
            Target::None => return Err(DiscoveryError::NoTable),
            Target::Local(t) => (
                self.cluster.clone().ok_or(DiscoveryError::NoCluster)?,
                t.clone(),
                None,
            ),
            Target::Distributed(t) => {
                let sql = format!(
                    "SELECT engine_full FROM system.tables WHERE {}",
                    system_tables_filter(t)
                );
                let text = fetch_text(&seed, &sql)
                    .await
                    .map_err(DiscoveryError::Query)?;
                let engine = text
                    .lines()
                    .next()
                    .ok_or_else(|| DiscoveryError::NotDistributed {
                        table: t.clone(),
                        engine: "no such table".into(),
                    })?;
                let d =
                    parse_distributed(engine).ok_or_else(|| DiscoveryError::NotDistributed {
                        table: t.clone(),
                        engine: engine.to_string(),
                    })?;
                let key = d.key.filter(|k| k.replace(' ', "") != "rand()");
                if let Some(key) = key.as_ref().filter(|k| ShardingKey::parse(k).is_none()) {
                    return Err(DiscoveryError::ShardingKey {
                        table: t.clone(),
                        key: key.clone(),
                    });
                }
                let local = match d.database.as_str() {
                    "" => d.table,
                    db => format!("{db}.{}", d.table),
                };
                (self.cluster.clone().unwrap_or(d.cluster), local, key)
            }
        };
        let sql = format!(
            "SELECT shard_num, shard_weight, replica_num, host_name, host_address, port \
             FROM system.clusters WHERE cluster = {} ORDER BY shard_num, replica_num",
            quote_literal(&cluster)
        );
        let text = fetch_text(&seed, &sql)
            .await
            .map_err(DiscoveryError::Query)?;
        let (scheme, seed_port) = scheme_and_port(&self.seed);
        let mut shards: Vec<(u32, u32, Vec<String>)> = Vec::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            let [num, weight, _replica, host, address, tcp] = f[..] else {
                return Err(DiscoveryError::Query(SinkError::Other(format!(
                    "system.clusters: unexpected row `{line}`"
                ))));
            };
            let (Ok(num), Ok(weight)) = (num.parse::<u32>(), weight.parse::<u32>()) else {
                return Err(DiscoveryError::Query(SinkError::Other(format!(
                    "system.clusters: unexpected row `{line}`"
                ))));
            };
            let port = self
                .http_ports
                .iter()
                .find(|(h, _)| {
                    [host, address]
                        .iter()
                        .any(|n| *h == *n || *h == format!("{n}:{tcp}"))
                })
                .map(|&(_, p)| p)
                .unwrap_or(seed_port);
            let url = format!("{scheme}://{host}:{port}");
            match shards.last_mut() {
                Some((n, _, urls)) if *n == num => urls.push(url),
                _ => shards.push((num, weight, vec![url])),
            }
        }
        if shards.is_empty() {
            return Err(DiscoveryError::UnknownCluster(cluster));
        }
        let shards = shards
            .into_iter()
            .map(|(_, weight, urls)| ClusterShard::new(urls).with_weight(weight))
            .collect();
        Ok(Topology {
            shards,
            local_table: local,
            sharding_key,
        })
    }
}

/// What [`Discovery::topology`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Topology {
    /// The shards, in `system.clusters` order, with weights and replicas.
    pub shards: Vec<ClusterShard>,
    /// The local table every shard holds.
    pub local_table: String,
    /// The `Distributed` table's sharding key, when it has one other than
    /// `rand()` (and it is one [`ClusterSink::with_sharding_key`] computes).
    pub sharding_key: Option<String>,
}

impl ClusterSink {
    /// A sink for the topology [`Discovery`] reads now; with the
    /// `Distributed` table's sharding key, when it has one, and the local
    /// table's columns read through the seed for it.
    pub async fn discover(client: Client, discovery: &Discovery) -> Result<Self, DiscoveryError> {
        let topology = discovery.topology(&client).await?;
        let sink = Self::new(
            client.clone(),
            topology.shards,
            topology.local_table.clone(),
        )
        .map_err(DiscoveryError::Topology)?;
        let Some(key) = topology.sharding_key else {
            return Ok(sink);
        };
        let seed = client.with_url(&discovery.seed);
        let schema = Schema::fetch(&seed, &topology.local_table)
            .await
            .map_err(DiscoveryError::Query)?;
        sink.with_sharding_key(&key, &schema)
            .map_err(DiscoveryError::Topology)
    }
}

/// Why a cluster's topology could not be discovered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// Neither a local nor a `Distributed` table was given.
    #[error("cluster discovery: name the local table or the Distributed table")]
    NoTable,
    /// A local table was given without the cluster's name.
    #[error("cluster discovery: a local table needs the cluster's name")]
    NoCluster,
    /// `system.clusters` has no such cluster.
    #[error("cluster discovery: no cluster `{0}` in system.clusters")]
    UnknownCluster(String),
    /// The table named as `Distributed` is not one.
    #[error("cluster discovery: `{table}` is not a Distributed table ({engine})")]
    NotDistributed {
        /// The table.
        table: String,
        /// Its engine, as `system.tables` says.
        engine: String,
    },
    /// The `Distributed` table shards rows by a key this sink cannot compute.
    #[error(
        "cluster discovery: `{table}` shards rows by `{key}`, which ch-ingest does not compute \
         yet: insert through the Distributed table itself (a ClickHouseSink on it)"
    )]
    ShardingKey {
        /// The table.
        table: String,
        /// Its sharding-key expression.
        key: String,
    },
    /// The seed did not answer.
    #[error("cluster discovery: {0}")]
    Query(#[source] SinkError),
    /// What the seed answered is not a usable topology.
    #[error(transparent)]
    Topology(ClusterError),
}

/// The arguments of `Distributed(cluster, database, table[, sharding_key[, policy]])`.
#[derive(Debug, PartialEq, Eq)]
struct DistributedArgs {
    cluster: String,
    database: String,
    table: String,
    key: Option<String>,
}

fn parse_distributed(engine: &str) -> Option<DistributedArgs> {
    let inner = engine.trim().strip_prefix("Distributed(")?;
    // The arguments end at the parenthesis that closes `Distributed(`;
    // what follows (SETTINGS ...) is not ours.
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut args = vec![String::new()];
    for c in inner.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '`' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') if depth == 0 => break,
            (None, ')') => depth -= 1,
            (None, ',') if depth == 0 => {
                args.push(String::new());
                continue;
            }
            _ => {}
        }
        if let Some(last) = args.last_mut() {
            last.push(c);
        }
    }
    let unquote = |s: &str| {
        s.trim()
            .trim_matches(|c| c == '\'' || c == '`' || c == '"')
            .to_string()
    };
    let mut it = args.iter();
    let cluster = unquote(it.next()?);
    let database = unquote(it.next()?);
    let table = unquote(it.next()?);
    let key = it
        .next()
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty());
    (!cluster.is_empty() && !table.is_empty()).then_some(DistributedArgs {
        cluster,
        database,
        table,
        key,
    })
}

/// `http` or `https`, and the port of a URL (its scheme's default if none).
fn scheme_and_port(url: &str) -> (&str, u16) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let port = authority
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(if scheme == "https" { 8443 } else { 8123 });
    (scheme, port)
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

    #[test]
    fn distributed_definitions_and_urls_parse() {
        assert_eq!(
            parse_distributed("Distributed(ch_ingest_test, default, t_local, rand())"),
            Some(DistributedArgs {
                cluster: "ch_ingest_test".into(),
                database: "default".into(),
                table: "t_local".into(),
                key: Some("rand()".into()),
            })
        );
        let d = parse_distributed("Distributed('c', '', `t,x`, cityHash64(a, b)) SETTINGS x = 1")
            .unwrap();
        assert_eq!((d.cluster.as_str(), d.table.as_str()), ("c", "t,x"));
        assert_eq!(d.key.as_deref(), Some("cityHash64(a, b)"));
        assert_eq!(parse_distributed("MergeTree ORDER BY x"), None);
        assert_eq!(parse_distributed("Distributed(c)"), None);
        assert_eq!(scheme_and_port("http://h:18123/?x=1"), ("http", 18123));
        assert_eq!(scheme_and_port("https://h"), ("https", 8443));
    }
}
