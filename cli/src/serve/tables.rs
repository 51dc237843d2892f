//! `serve` tables: one engine per allowed table, built from the schema the
//! server reports (and, for a cluster, the topology it discovers), rebuilt
//! when either changes.
//!
//! Owns: the table registry, the schema watcher task per table (reads
//! `DESCRIBE TABLE`, and `system.clusters` for a discovered cluster, at
//! start, every `schema_refresh`, and at once after an INSERT fails with a
//! schema error), engine swaps (the old engine drains before it is
//! retired), and the health clock `/ready` reads.
//!
//! A new topology gets a new engine rather than a live change to the old
//! one's routing: the old engine's INSERTs in flight keep their shard for
//! every retry (a retry elsewhere could duplicate a block the first shard
//! stored), and the new engine's INSERTs have new identities.
//! Must not: hold a lock across an await, or let counters go backwards when
//! an engine is swapped (retired engines stay in the metric sums).

use super::config::{Destination, ServeConfig, TableConfig};
use ch_ingest::sink::{
    ClickHouseSink, ClusterError, ClusterShard, ClusterSink, Discovery, DiscoveryError,
    InsertBatch, InsertFormat, InsertOrder, Sink, SinkError,
};
use ch_ingest::{Buffer, Closed, FlushReport, Histograms, Json, Schema, Stats};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// When ClickHouse last answered, on the monotonic clock (a wall clock
/// stepping back would make a dead server look alive).
pub struct Health {
    start: Instant,
    /// Milliseconds after `start`, plus one; 0 is "never".
    last_ok: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            start: Instant::now(),
            last_ok: AtomicU64::new(0),
        }
    }
}

impl Health {
    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64 + 1
    }

    fn mark(&self) {
        self.last_ok.store(self.now(), Relaxed);
    }

    /// Whether ClickHouse answered within `window`.
    pub fn answered_within(&self, window: Duration) -> bool {
        let last = self.last_ok.load(Relaxed);
        last != 0 && self.now().saturating_sub(last) <= window.as_millis() as u64
    }
}

/// The table is not what we think (see [`SinkError::is_schema_error`]):
/// the schema is read again at once.
fn is_schema_error(e: &SinkError) -> bool {
    e.is_schema_error()
}

/// What an engine is built for: the table's columns, and where its
/// INSERTs go.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    schema: Schema,
    cluster: Option<ClusterPlan>,
    /// The server's `input_format_defaults_for_omitted_fields` (read only
    /// when a column has a `DEFAULT` expression, else false): whether it
    /// computes the expression for a JSON key a row omits.
    omitted_defaults: bool,
}

impl From<Schema> for Plan {
    fn from(schema: Schema) -> Self {
        Plan {
            schema,
            cluster: None,
            omitted_defaults: false,
        }
    }
}

/// A cluster's shards, listed or discovered, and what to insert into.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ClusterPlan {
    shards: Vec<ClusterShard>,
    local_table: String,
    sharding_key: Option<String>,
}

/// Why a table's engine could not be built.
#[derive(Debug, thiserror::Error)]
enum InstallError {
    #[error(transparent)]
    Build(#[from] ch_ingest::BuildError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("needs at least one ClickHouse URL")]
    NoUrls,
}

/// Why a table's schema or its cluster's topology could not be read.
#[derive(Debug, thiserror::Error)]
enum PlanError {
    #[error("DESCRIBE: {0}")]
    Describe(#[source] SinkError),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error("cluster discovery: no seed answered in 10 s")]
    DiscoveryTimeout,
}

/// One server's table, or a cluster's shards.
enum Route {
    Server(ClickHouseSink),
    Cluster(Box<ClusterSink>),
}

/// The ClickHouse sink, watched: a success marks the server healthy, a
/// schema error wakes the table's schema watcher.
struct WatchedSink {
    inner: Route,
    health: Arc<Health>,
    stale: Arc<tokio::sync::Notify>,
}

impl Sink for WatchedSink {
    async fn insert(&self, batch: &InsertBatch) -> Result<(), SinkError> {
        let result = match &self.inner {
            Route::Server(s) => s.insert(batch).await,
            Route::Cluster(s) => s.insert(batch).await,
        };
        match &result {
            Ok(()) => self.health.mark(),
            Err(e) if is_schema_error(e) => self.stale.notify_one(),
            Err(_) => {}
        }
        result
    }

    fn table(&self) -> Option<&str> {
        match &self.inner {
            Route::Server(s) => s.table(),
            Route::Cluster(s) => s.table(),
        }
    }

    fn lanes(&self) -> usize {
        match &self.inner {
            Route::Server(s) => s.lanes(),
            Route::Cluster(s) => s.lanes(),
        }
    }

    fn lane(&self, origin: u64, id: u64) -> usize {
        match &self.inner {
            Route::Server(s) => s.lane(origin, id),
            Route::Cluster(s) => s.lane(origin, id),
        }
    }

    fn retry_horizon(&self, horizon: Duration) {
        match &self.inner {
            Route::Server(s) => s.retry_horizon(horizon),
            Route::Cluster(s) => s.retry_horizon(horizon),
        }
    }

    fn destination(&self, batch: &InsertBatch) -> Option<Vec<String>> {
        match &self.inner {
            Route::Server(s) => s.destination(batch),
            Route::Cluster(s) => s.destination(batch),
        }
    }

    // Without these two the table's `insert_order` / `insert_format` would
    // be set on the builder and never reach the ClickHouse sink.
    fn insert_shape(&self, order: &InsertOrder, format: InsertFormat) {
        match &self.inner {
            Route::Server(s) => s.insert_shape(order, format),
            Route::Cluster(s) => s.insert_shape(order, format),
        }
    }

    async fn prepare(&self, batch: Arc<InsertBatch>) -> Arc<InsertBatch> {
        match &self.inner {
            Route::Server(s) => s.prepare(batch).await,
            Route::Cluster(s) => s.prepare(batch).await,
        }
    }
}

type StatsReader = Box<dyn Fn() -> (Stats, Histograms) + Send + Sync>;

/// A replaced engine's drain, watched: `Some` once it has finished. Entries
/// stay listed until a waiter sees them finished, so a waiter that gives up
/// (a client hanging up on `/v1/flush`) leaves it for the next one.
struct Retired {
    id: u64,
    done: tokio::sync::watch::Receiver<Option<FlushReport>>,
}

/// The engine a table routes rows to, with the schema it was built for.
#[derive(Clone)]
pub struct Engine {
    pub buffer: Buffer<Json>,
    plan: Arc<Plan>,
    /// Counts swaps, so a request that finds its engine closed can tell a
    /// swap (carry on with the new one) from a shutdown (answer 503).
    pub generation: u64,
    /// Where its stats reader sits in `Table::readers`.
    reader_at: usize,
}

/// How a table reads one engine's stats: live while it runs, a final copy
/// once it has drained (so a retired engine's memory is let go).
enum Reader {
    Live(StatsReader),
    Final(Box<(Stats, Histograms)>),
}

pub struct Table {
    pub name: String,
    pub tokens: Vec<String>,
    cfg: TableConfig,
    current: RwLock<Option<Engine>>,
    /// Replaced engines still draining. Lock order: `current`, then this.
    retiring: Mutex<Vec<Retired>>,
    /// Readers of every engine this table has had, the current one included.
    readers: Arc<Mutex<Vec<Reader>>>,
    /// Rows a closed (replaced) engine handed back that went to its
    /// successor: counted in that engine's `rejected_closed`, taken out of
    /// the table's.
    pub rerouted: AtomicU64,
    /// The `rejected_closed` last exported: a scrape between an old
    /// engine's count and `rerouted`'s must not see the counter go back.
    rejected_closed_seen: AtomicU64,
    stale: Arc<tokio::sync::Notify>,
}

impl Engine {
    /// The schema the engine was built for (the table's `DESCRIBE`).
    pub fn schema(&self) -> &Schema {
        &self.plan.schema
    }

    /// Whether the server computes the `DEFAULT` expression of a JSON key
    /// a row omits (its `input_format_defaults_for_omitted_fields`), which
    /// a client may override per request.
    pub fn omitted_defaults(&self) -> bool {
        self.plan.omitted_defaults
    }
}

impl Table {
    /// Whether JSON keys that are not columns are refused.
    pub fn deny_unknown_fields(&self) -> bool {
        self.cfg.deny_unknown_fields
    }

    fn new(cfg: TableConfig) -> Table {
        Table {
            name: cfg.name.clone(),
            tokens: cfg.tokens.clone(),
            cfg,
            current: RwLock::new(None),
            retiring: Mutex::new(Vec::new()),
            readers: Arc::new(Mutex::new(Vec::new())),
            rerouted: AtomicU64::new(0),
            rejected_closed_seen: AtomicU64::new(0),
            stale: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Makes `buffer` the engine rows go to; the one it replaces drains in
    /// the background (awaited by `flush` and `shutdown`). Does nothing once
    /// `stopping` is set: checked under the lock `shutdown` reads the engine
    /// through, so either the drain sees this swap or it never happens.
    pub(super) fn swap(&self, buffer: Buffer<Json>, plan: impl Into<Plan>, stopping: &AtomicBool) {
        let Ok(mut current) = self.current.write() else {
            return;
        };
        if stopping.load(SeqCst) {
            return;
        }
        let reader_at = match self.readers.lock() {
            Ok(mut readers) => {
                readers.push(Reader::Live(Box::new(buffer.stats_reader())));
                readers.len() - 1
            }
            Err(_) => usize::MAX,
        };
        let generation = current.as_ref().map_or(0, |e| e.generation + 1);
        let old = current.replace(Engine {
            buffer,
            plan: Arc::new(plan.into()),
            generation,
            reader_at,
        });
        match old {
            Some(old) => {
                tracing::warn!(table = %self.name, "the table's schema changed (or its cluster's shards did); new rows use the new one");
                let (tell, done) = tokio::sync::watch::channel(None);
                let name = self.name.clone();
                let readers = self.readers.clone();
                tokio::spawn(async move {
                    let report = old.buffer.shutdown().await.unwrap_or_else(|Closed| {
                        tracing::error!(table = %name, "a replaced engine was already shut down");
                        FlushReport::default()
                    });
                    // Drained, its replayer stopped: its counts are final.
                    if let Ok(mut readers) = readers.lock() {
                        if let Some(slot) = readers.get_mut(old.reader_at) {
                            if let Reader::Live(read) = slot {
                                *slot = Reader::Final(Box::new(read()));
                            }
                        }
                    }
                    drop(old);
                    tell.send_replace(Some(report));
                });
                if let Ok(mut retiring) = self.retiring.lock() {
                    retiring.push(Retired {
                        id: generation,
                        done,
                    });
                }
            }
            None => tracing::info!(table = %self.name, "schema read; accepting rows"),
        }
    }

    /// The engine taking rows now, if the schema has been read.
    pub fn engine(&self) -> Option<Engine> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    /// Flushes the current engine and waits for every replaced engine to
    /// finish draining: afterwards nothing this table accepted is buffered.
    pub async fn flush(&self) -> Result<FlushReport, Closed> {
        let current = match self.engine() {
            Some(engine) => engine.buffer.flush().await,
            None => Ok(FlushReport::default()),
        };
        self.settle_retired(current).await
    }

    /// Shuts the current engine down (after `Tables::stopping` is set, so no
    /// swap can follow) and waits for the replaced ones.
    async fn shutdown(&self) -> Result<FlushReport, Closed> {
        let current = match self.engine() {
            Some(engine) => engine.buffer.shutdown().await,
            None => Ok(FlushReport::default()),
        };
        self.settle_retired(current).await
    }

    /// Waits for every replaced engine's drain (even when the current engine
    /// is closed: what they hold is this table's too). A finished drain's
    /// report goes to the waiter that takes it off the list, so concurrent
    /// flushes all wait but count each retired engine once.
    async fn settle_retired(
        &self,
        current: Result<FlushReport, Closed>,
    ) -> Result<FlushReport, Closed> {
        let watching: Vec<(u64, tokio::sync::watch::Receiver<Option<FlushReport>>)> =
            match self.retiring.lock() {
                Ok(r) => r.iter().map(|r| (r.id, r.done.clone())).collect(),
                Err(_) => Vec::new(),
            };
        let mut retired = FlushReport::default();
        for (id, mut done) in watching {
            // An error means the drain task died without a report (it
            // panicked): nothing more will come, so it is settled too.
            let report = done
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|r| r.clone());
            if current.is_err() {
                // This caller answers "closed" and reports nothing: leave
                // the report to the drain, which does.
                continue;
            }
            let taken = self.retiring.lock().ok().and_then(|mut r| {
                let at = r.iter().position(|r| r.id == id)?;
                Some(r.swap_remove(at))
            });
            if let (Some(_), Some(report)) = (taken, report) {
                merge(&mut retired, report);
            }
        }
        let mut report = current?;
        merge(&mut report, retired);
        Ok(report)
    }

    /// Counters and histograms summed over every engine this table has had.
    pub fn totals(&self) -> (Stats, Histograms) {
        let mut stats = Stats::default();
        let mut hist = Histograms::default();
        if let Ok(readers) = self.readers.lock() {
            for reader in readers.iter() {
                let (s, h) = match reader {
                    Reader::Live(read) => read(),
                    Reader::Final(last) => (last.0.clone(), last.1.clone()),
                };
                stats.add(&s);
                hist.add(&h);
            }
        }
        let rejected = stats
            .rejected_closed
            .saturating_sub(self.rerouted.load(Relaxed));
        stats.rejected_closed = self
            .rejected_closed_seen
            .fetch_max(rejected, Relaxed)
            .max(rejected);
        (stats, hist)
    }
}

pub struct Tables {
    pub by_name: HashMap<String, Arc<Table>>,
    pub health: Arc<Health>,
    client: clickhouse::Client,
    urls: Vec<String>,
    destination: Destination,
    schema_refresh: Duration,
    stopping: AtomicBool,
}

impl Tables {
    /// The servers that answer `DESCRIBE` and pings (the front door
    /// forwards what it does not buffer to the first).
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    pub fn new(cfg: &mut ServeConfig) -> Result<Arc<Self>, ch_ingest::sink::TlsError> {
        let mut client = cfg.tls.client()?;
        if let Some(user) = &cfg.user {
            client = client.with_user(user);
        }
        if let Some(password) = &cfg.password {
            client = client.with_password(password);
        }
        // Config refused a token beside a user or password, which the
        // crate would panic on.
        if let Some(token) = &cfg.access_token {
            client = client.with_access_token(token);
        }
        if let Some(key) = &cfg.quota_key {
            client = client.with_header("X-ClickHouse-Quota", key);
        }
        if let Some(db) = &cfg.database {
            client = client.with_database(db);
        }
        let by_name = std::mem::take(&mut cfg.tables)
            .into_iter()
            .map(|t| (t.name.clone(), Arc::new(Table::new(t))))
            .collect();
        Ok(Arc::new(Tables {
            by_name,
            health: Arc::new(Health::default()),
            client,
            urls: cfg.urls.clone(),
            destination: cfg.destination.clone(),
            schema_refresh: cfg.schema_refresh,
            stopping: AtomicBool::new(false),
        }))
    }

    /// Whether every table has an engine.
    pub fn all_loaded(&self) -> bool {
        self.by_name.values().all(|t| t.engine().is_some())
    }

    /// Starts the schema watchers and the health pinger.
    pub fn start(self: &Arc<Self>) {
        for table in self.by_name.values() {
            tokio::spawn(self.clone().watch_schema(table.clone()));
        }
        tokio::spawn(self.clone().ping());
    }

    /// `SELECT 1` on each URL every 2 s, so `/ready` knows the server answers
    /// even when no rows flow.
    async fn ping(self: Arc<Self>) {
        while !self.stopping.load(SeqCst) {
            for url in &self.urls {
                let client = self.client.clone().with_url(url).with_validation(false);
                let answered = tokio::time::timeout(Duration::from_secs(2), async {
                    let mut cursor = client.query("SELECT 1").fetch_bytes("TabSeparated")?;
                    while cursor.next().await?.is_some() {}
                    Ok::<_, clickhouse::error::Error>(())
                })
                .await;
                if matches!(answered, Ok(Ok(()))) {
                    self.health.mark();
                    break;
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// A boolean setting as the server has it for serve's user (false when
    /// the server has no such setting), from the first URL that answers.
    async fn server_flag(&self, name: &str) -> Result<bool, SinkError> {
        let mut last = SinkError::Other("no ClickHouse URL".into());
        for url in &self.urls {
            let client = self.client.clone().with_url(url);
            let read = tokio::time::timeout(Duration::from_secs(10), async {
                let mut cursor = client
                    .query("SELECT value FROM system.settings WHERE name = ?")
                    .bind(name)
                    .fetch_bytes("TabSeparated")?;
                let mut text = Vec::new();
                while let Some(chunk) = cursor.next().await? {
                    text.extend_from_slice(&chunk);
                }
                Ok::<_, clickhouse::error::Error>(text)
            })
            .await;
            match read {
                Ok(Ok(text)) => return Ok(matches!(text.trim_ascii(), b"1" | b"true")),
                Ok(Err(e)) => last = SinkError::Other(format!("reading the setting {name}: {e}")),
                Err(_) => last = SinkError::Timeout,
            }
        }
        Err(last)
    }

    async fn describe(&self, table: &str) -> Result<Schema, SinkError> {
        let mut last = SinkError::Other("no ClickHouse URL".into());
        for url in &self.urls {
            let client = self.client.clone().with_url(url);
            match tokio::time::timeout(Duration::from_secs(10), Schema::fetch(&client, table)).await
            {
                Ok(Ok(schema)) => return Ok(schema),
                Ok(Err(e)) => last = e,
                Err(_) => last = SinkError::Timeout,
            }
        }
        Err(last)
    }

    async fn watch_schema(self: Arc<Self>, table: Arc<Table>) {
        let mut failures = 0u32;
        loop {
            if self.stopping.load(SeqCst) {
                return;
            }
            let wait = match self.plan(&table).await {
                Ok(plan) => {
                    failures = 0;
                    self.health.mark();
                    if let Err(e) = self.install(&table, plan).await {
                        tracing::error!(table = %table.name, error = %e, "cannot start the table's engine");
                    }
                    self.schema_refresh
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(table = %table.name, error = %e, "cannot read the table's schema or topology");
                    Duration::from_millis(250 << failures.min(5))
                }
            };
            tokio::select! {
                () = table.stale.notified() => {
                    tracing::info!(table = %table.name, "schema error on INSERT; reading the schema again");
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// What `table`'s engine should be built for now: the cluster's shards
    /// (as listed, or as `system.clusters` says through the first seed that
    /// answers) and the columns of the table the INSERTs go to.
    async fn plan(&self, table: &Table) -> Result<Plan, PlanError> {
        let cfg = &table.cfg;
        let cluster = match &self.destination {
            Destination::Server => None,
            Destination::Shards(shards) => Some(ClusterPlan {
                shards: shards.clone(),
                local_table: cfg
                    .local_table
                    .clone()
                    .unwrap_or_else(|| table.name.clone()),
                sharding_key: cfg.sharding_key.clone(),
            }),
            Destination::Cluster { name, http_ports } => {
                let mut last = PlanError::DiscoveryTimeout;
                let mut found = None;
                for seed in &self.urls {
                    let mut d = Discovery::new(seed).cluster(name);
                    d = match &cfg.local_table {
                        Some(local) => d.local_table(local),
                        None => d.distributed_table(&table.name),
                    };
                    for (host, port) in http_ports {
                        d = d.http_port(host, *port);
                    }
                    match tokio::time::timeout(Duration::from_secs(10), d.topology(&self.client))
                        .await
                    {
                        Ok(Ok(t)) => {
                            found = Some(t);
                            break;
                        }
                        Ok(Err(e)) => last = e.into(),
                        Err(_) => last = PlanError::DiscoveryTimeout,
                    }
                }
                let t = found.ok_or(last)?;
                Some(ClusterPlan {
                    shards: t.shards,
                    local_table: t.local_table,
                    sharding_key: cfg.sharding_key.clone().or(t.sharding_key),
                })
            }
        };
        let target = cluster.as_ref().map_or(&table.name, |c| &c.local_table);
        let schema = self.describe(target).await.map_err(PlanError::Describe)?;
        let has_expressions =
            (0..schema.columns().len()).any(|i| schema.default_expression(i).is_some());
        let omitted_defaults = if has_expressions {
            self.server_flag("input_format_defaults_for_omitted_fields")
                .await
                .map_err(PlanError::Describe)?
        } else {
            false
        };
        Ok(Plan {
            schema,
            cluster,
            omitted_defaults,
        })
    }

    /// Starts an engine for `plan` unless the current one already has it;
    /// a replaced engine drains in the background.
    async fn install(&self, table: &Table, plan: Plan) -> Result<(), InstallError> {
        let current = table.engine();
        let same = current.as_ref().is_some_and(|e| *e.plan == plan);
        if same || self.stopping.load(SeqCst) {
            return Ok(());
        }
        let inner = match &plan.cluster {
            None => Route::Server(
                ClickHouseSink::with_urls(self.client.clone(), &self.urls, &table.name)
                    .map_err(|_| InstallError::NoUrls)?,
            ),
            Some(c) => {
                let mut sink =
                    ClusterSink::new(self.client.clone(), c.shards.clone(), &c.local_table)?;
                if let Some(key) = &c.sharding_key {
                    sink = sink.with_sharding_key(key, &plan.schema)?;
                }
                Route::Cluster(Box::new(sink))
            }
        };
        let sink = WatchedSink {
            inner,
            health: self.health.clone(),
            stale: table.stale.clone(),
        };
        let transcoder = ch_ingest::Transcoder::new(plan.schema.clone())
            .deny_unknown_fields(table.cfg.deny_unknown_fields);
        let mut builder = table.cfg.builder.clone();
        if let Some(old) = &current {
            // Same spill directory: what the old engine spilled is this
            // one's to replay and to count (the table's totals stay exact).
            builder = builder.takes_over_spill_of(&old.buffer);
        }
        let buffer = builder.build_transcoded(transcoder, sink)?;
        table.swap(buffer, plan, &self.stopping);
        Ok(())
    }

    /// Stops the watchers and drains every engine, the replaced ones too.
    pub async fn drain(&self) -> FlushReport {
        self.stopping.store(true, SeqCst);
        let tasks: Vec<_> = self
            .by_name
            .values()
            .map(|table| {
                let table = table.clone();
                tokio::spawn(async move { table.shutdown().await })
            })
            .collect();
        let mut report = FlushReport::default();
        for t in tasks {
            match t.await {
                Ok(Ok(r)) => merge(&mut report, r),
                // Shut down already: by a concurrent drain, nothing is lost.
                Ok(Err(Closed)) => {}
                Err(e) => tracing::error!(error = %e, "a table's drain task failed"),
            }
        }
        report
    }

    /// Rows accepted but not yet delivered, over every table.
    pub fn undelivered(&self) -> u64 {
        self.by_name
            .values()
            .map(|t| {
                let (s, _) = t.totals();
                s.buffered_rows + s.pending_rows
            })
            .sum()
    }
}

fn merge(into: &mut FlushReport, from: FlushReport) {
    into.rows += from.rows;
    into.bytes += from.bytes;
    into.batches += from.batches;
    into.failed_rows += from.failed_rows;
    into.spilled_rows += from.spilled_rows;
    into.failures.extend(from.failures);
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use ch_ingest::sink::MemorySink;

    pub fn table(name: &str) -> Table {
        Table::new(TableConfig {
            name: name.into(),
            local_table: None,
            sharding_key: None,
            builder: Buffer::builder(),
            deny_unknown_fields: false,
            tokens: Vec::new(),
        })
    }

    /// An engine over `sink` that only flushes when asked.
    pub fn engine(sink: &MemorySink) -> (Buffer<Json>, Schema) {
        engine_over(sink.clone())
    }

    fn engine_over(sink: impl Sink) -> (Buffer<Json>, Schema) {
        let schema = Schema::new([("id", "UInt64")]).unwrap();
        let buffer = Buffer::builder()
            .flush_interval(Duration::from_secs(3600))
            .build_json(schema.clone(), sink)
            .unwrap();
        (buffer, schema)
    }

    /// Takes a while over every insert.
    struct Slow(MemorySink);

    impl Sink for Slow {
        async fn insert(&self, batch: &InsertBatch) -> Result<(), SinkError> {
            tokio::time::sleep(Duration::from_millis(300)).await;
            self.0.insert(batch).await
        }
    }

    #[tokio::test]
    async fn a_flush_given_up_on_leaves_the_retired_engine_for_the_next() {
        let t = table("t");
        let stopping = AtomicBool::new(false);
        let first = MemorySink::new();
        let (b, s) = engine_over(Slow(first.clone()));
        t.swap(b, s, &stopping);
        t.engine()
            .unwrap()
            .buffer
            .track_json(br#"{"id":1}"#)
            .unwrap();
        let (b, s) = engine(&MemorySink::new());
        t.swap(b, s, &stopping);
        // A client hanging up on /v1/flush drops its future mid-wait.
        let gave_up = tokio::time::timeout(Duration::from_millis(20), t.flush()).await;
        assert!(gave_up.is_err(), "the slow drain finished too soon");
        let report = t.flush().await.unwrap();
        assert_eq!(
            first.rows(),
            1,
            "flush returned before the replaced engine drained"
        );
        assert_eq!(report.rows, 1);
        // Reported once: a later flush has nothing more to say about it.
        assert_eq!(t.flush().await.unwrap().rows, 0);
    }

    #[tokio::test]
    async fn a_waiter_told_closed_leaves_the_report_to_the_drain() {
        let t = table("t");
        let stopping = AtomicBool::new(false);
        let first = MemorySink::new();
        let (b, s) = engine(&first);
        t.swap(b, s, &stopping);
        t.engine()
            .unwrap()
            .buffer
            .track_json(br#"{"id":1}"#)
            .unwrap();
        let (b, s) = engine(&MemorySink::new());
        t.swap(b, s, &stopping);
        // A /v1/flush racing the shutdown drain finds the current engine
        // closed: it waits, but must not take the replaced engine's report.
        assert!(t.settle_retired(Err(Closed)).await.is_err());
        assert_eq!(first.rows(), 1, "it still waited for the drain");
        let drained = t.settle_retired(Ok(FlushReport::default())).await;
        assert_eq!(drained.unwrap().rows, 1);
    }

    #[tokio::test]
    async fn flush_and_shutdown_wait_for_replaced_engines() {
        let t = table("t");
        let stopping = AtomicBool::new(false);
        let first = MemorySink::new();
        let install = |sink: &MemorySink| {
            let (b, s) = engine(sink);
            t.swap(b, s, &stopping);
        };
        let track = |id: u64| {
            let row = format!("{{\"id\":{id}}}");
            t.engine()
                .unwrap()
                .buffer
                .track_json(row.as_bytes())
                .unwrap();
        };
        install(&first);
        track(1);
        let second = MemorySink::new();
        install(&second);
        assert_eq!(t.engine().unwrap().generation, 1);
        track(2);

        // The replaced engine's row is in the flush's report, delivered.
        let report = t.flush().await.unwrap();
        assert_eq!(report.rows, 2);
        assert_eq!((first.rows(), second.rows()), (1, 1));
        assert_eq!(t.totals().0.acked_rows, 2, "both engines are counted");
        let frozen = matches!(t.readers.lock().unwrap()[0], Reader::Final(_));
        assert!(
            frozen,
            "the drained engine is still read live (and kept in memory)"
        );

        // Once stopping, no swap happens: the drain's view is final.
        stopping.store(true, SeqCst);
        let third = MemorySink::new();
        install(&third);
        assert_eq!(t.engine().unwrap().generation, 1);
        track(3);
        assert_eq!(t.shutdown().await.unwrap().rows, 1);
        assert_eq!((second.rows(), third.rows()), (2, 0));
    }
}
