//! `serve` tables: one engine per allowed table, built from the schema the
//! server reports, rebuilt when that schema changes.
//!
//! Owns: the table registry, the schema watcher task per table (reads
//! `DESCRIBE TABLE` at start, every `schema_refresh`, and at once after an
//! INSERT fails with a schema error), engine swaps (the old engine drains
//! before it is retired), and the health clock `/ready` reads.
//! Must not: hold a lock across an await, or let counters go backwards when
//! an engine is swapped (retired engines stay in the metric sums).

use super::config::{ServeConfig, TableConfig};
use ch_ingest::sink::{nodelay_client, ClickHouseSink, Sink, SinkError};
use ch_ingest::{Buffer, Histograms, InsertBatch, Json, Schema, Stats};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the epoch when ClickHouse last answered.
#[derive(Default)]
pub struct Health {
    last_ok_ms: AtomicU64,
}

impl Health {
    fn mark(&self) {
        self.last_ok_ms.store(now_ms(), Relaxed);
    }

    /// Whether ClickHouse answered within `window`.
    pub fn answered_within(&self, window: Duration) -> bool {
        now_ms().saturating_sub(self.last_ok_ms.load(Relaxed)) <= window.as_millis() as u64
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// ClickHouse error codes meaning "the table is not what you think": the
/// schema is read again at once.
fn is_schema_error(e: &SinkError) -> bool {
    // THERE_IS_NO_COLUMN, NOT_FOUND_COLUMN_IN_BLOCK, NO_SUCH_COLUMN_IN_TABLE,
    // CANNOT_READ_ALL_DATA, UNKNOWN_IDENTIFIER, TYPE_MISMATCH, UNKNOWN_TABLE,
    // INCORRECT_DATA
    matches!(
        e,
        SinkError::Server {
            code: Some(8 | 10 | 16 | 33 | 47 | 53 | 60 | 117),
            ..
        }
    )
}

/// The ClickHouse sink, watched: a success marks the server healthy, a
/// schema error wakes the table's schema watcher.
struct WatchedSink {
    inner: ClickHouseSink,
    health: Arc<Health>,
    stale: Arc<tokio::sync::Notify>,
}

impl Sink for WatchedSink {
    async fn insert(&self, batch: &InsertBatch) -> Result<(), SinkError> {
        let result = self.inner.insert(batch).await;
        match &result {
            Ok(()) => self.health.mark(),
            Err(e) if is_schema_error(e) => self.stale.notify_one(),
            Err(_) => {}
        }
        result
    }

    fn table(&self) -> Option<&str> {
        Some(self.inner.table())
    }
}

type StatsReader = Box<dyn Fn() -> (Stats, Histograms) + Send + Sync>;

pub struct Table {
    pub name: String,
    pub tokens: Vec<String>,
    cfg: TableConfig,
    current: RwLock<Option<(Buffer<Json>, Arc<Schema>)>>,
    /// Readers of every engine this table has had, the current one included.
    readers: Mutex<Vec<StatsReader>>,
    stale: Arc<tokio::sync::Notify>,
}

impl Table {
    /// The engine taking rows now, if the schema has been read.
    pub fn engine(&self) -> Option<Buffer<Json>> {
        self.current
            .read()
            .ok()
            .and_then(|c| c.as_ref().map(|(b, _)| b.clone()))
    }

    /// Counters and histograms summed over every engine this table has had.
    pub fn totals(&self) -> (Stats, Histograms) {
        let mut stats = Stats::default();
        let mut hist = Histograms::default();
        if let Ok(readers) = self.readers.lock() {
            for read in readers.iter() {
                let (s, h) = read();
                stats.add(&s);
                hist.add(&h);
            }
        }
        (stats, hist)
    }
}

pub struct Tables {
    pub by_name: HashMap<String, Arc<Table>>,
    pub health: Arc<Health>,
    client: clickhouse::Client,
    urls: Vec<String>,
    schema_refresh: Duration,
    stopping: AtomicBool,
}

impl Tables {
    pub fn new(cfg: &mut ServeConfig) -> Arc<Self> {
        let mut client = nodelay_client();
        if let Some(user) = &cfg.user {
            client = client.with_user(user);
        }
        if let Some(password) = &cfg.password {
            client = client.with_password(password);
        }
        if let Some(db) = &cfg.database {
            client = client.with_database(db);
        }
        let by_name = std::mem::take(&mut cfg.tables)
            .into_iter()
            .map(|t| {
                let table = Table {
                    name: t.name.clone(),
                    tokens: t.tokens.clone(),
                    cfg: t,
                    current: RwLock::new(None),
                    readers: Mutex::new(Vec::new()),
                    stale: Arc::new(tokio::sync::Notify::new()),
                };
                (table.name.clone(), Arc::new(table))
            })
            .collect();
        Arc::new(Tables {
            by_name,
            health: Arc::new(Health::default()),
            client,
            urls: cfg.urls.clone(),
            schema_refresh: cfg.schema_refresh,
            stopping: AtomicBool::new(false),
        })
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
        while !self.stopping.load(Relaxed) {
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
            if self.stopping.load(Relaxed) {
                return;
            }
            let wait = match self.describe(&table.name).await {
                Ok(schema) => {
                    failures = 0;
                    self.health.mark();
                    if let Err(e) = self.install(&table, schema).await {
                        tracing::error!(table = %table.name, error = %e, "cannot start the table's engine");
                    }
                    self.schema_refresh
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(table = %table.name, error = %e, "cannot read the table's schema");
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

    /// Starts an engine for `schema` unless the current one already has it;
    /// a replaced engine drains in the background.
    async fn install(&self, table: &Table, schema: Schema) -> Result<(), ch_ingest::BuildError> {
        let same = table
            .current
            .read()
            .ok()
            .and_then(|c| c.as_ref().map(|(_, s)| **s == schema))
            .unwrap_or(false);
        if same || self.stopping.load(Relaxed) {
            return Ok(());
        }
        let sink = WatchedSink {
            inner: ClickHouseSink::with_urls(self.client.clone(), &self.urls, &table.name),
            health: self.health.clone(),
            stale: table.stale.clone(),
        };
        let transcoder = ch_ingest::transcode::Transcoder::new(schema.clone())
            .deny_unknown_fields(table.cfg.deny_unknown_fields);
        let buffer = table
            .cfg
            .builder
            .clone()
            .build_transcoded(transcoder, sink)?;
        if let Ok(mut readers) = table.readers.lock() {
            readers.push(Box::new(buffer.stats_reader()));
        }
        let old = match table.current.write() {
            Ok(mut c) => c.replace((buffer, Arc::new(schema))),
            Err(_) => None,
        };
        match old {
            Some((old, _)) => {
                tracing::warn!(table = %table.name, "the table's schema changed; new rows use the new one");
                tokio::spawn(async move {
                    let _ = old.shutdown().await;
                });
            }
            None => tracing::info!(table = %table.name, "schema read; accepting rows"),
        }
        Ok(())
    }

    /// Stops the watchers and drains every engine.
    pub async fn drain(&self) {
        self.stopping.store(true, Relaxed);
        let mut tasks = Vec::new();
        for table in self.by_name.values() {
            if let Some(engine) = table.engine() {
                tasks.push(tokio::spawn(async move { engine.shutdown().await }));
            }
        }
        for t in tasks {
            let _ = t.await;
        }
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
