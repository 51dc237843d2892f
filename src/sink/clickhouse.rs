//! ClickHouse over HTTP: one `INSERT ... FORMAT Native` (or `RowBinary`)
//! per INSERT the coordinator forms (queued batches coalesce into one).
//!
//! Owns: turning an [`InsertBatch`] into one INSERT through the official
//! `clickhouse` crate, failover among replicas, and the server-version
//! check that decides which settings may be sent. Must not:
//! retry (the coordinator's job), or shape the body itself (`shape` orders
//! and transposes it; RowBinary chunks are sent as they are).

use super::client::{log_label, map_error};
use super::shape::Body;
use super::{insert_sql, InsertBatch, InsertFormat, InsertOrder, Sink, SinkError};
use clickhouse::Client;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::OnceCell;
use tokio::time::Instant;

/// How long a silent endpoint has to answer `SELECT 1` before it counts as
/// down (see [`TryTimeout`]).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends each INSERT the engine forms (its queued batches coalesced, up to
/// `max_insert_rows` / `max_insert_bytes`) as one `INSERT INTO table
/// (columns) FORMAT Native`, its rows sorted by the table's sorting key (the
/// defaults: [`InsertOrder::Sorted`], [`InsertFormat::Native`]; `RowBinary`
/// and arrival order are a [`Builder`](crate::Builder) setting away).
///
/// ```no_run
/// use ch_ingest::{sink::{nodelay_client, ClickHouseSink}, Buffer, PostEvent};
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let client = nodelay_client()
///     .with_url("http://127.0.0.1:8123")
///     .with_user("ingest")
///     .with_password(std::env::var("CLICKHOUSE_PASSWORD")?);
/// let buffer: Buffer<PostEvent> = Buffer::builder().build(ClickHouseSink::new(client, "post_events"))?;
/// # Ok(()) }
/// ```
///
/// Compression is whatever the client says (the crate's default is LZ4). On
/// servers that know `async_insert` (21.11+, on by default from 26.2) it is
/// turned off for our INSERTs: our batches are already large, and a server-side
/// buffer would acknowledge rows before they are written. Older servers are
/// sent no settings they would reject.
#[derive(Clone)]
pub struct ClickHouseSink {
    endpoints: std::sync::Arc<[Endpoint]>,
    /// The endpoint that answered last: tried first.
    preferred: std::sync::Arc<AtomicUsize>,
    table: String,
    dedup_token: bool,
    try_timeout: TryTimeout,
    /// Whether the table's deduplication window covers the retry horizon.
    dedup_window: std::sync::Arc<super::dedup_window::DedupWatch>,
    /// The INSERTs' order and format, and what was learned for them.
    shaper: std::sync::Arc<super::shape::Shaper>,
}

/// How long one try on one endpoint waits (to connect, send, and for the
/// server's answer) before it asks whether the endpoint is alive at all:
/// `base + per_mib x the INSERT's MiB`. The question is a `SELECT 1` on a
/// fresh connection, answered within 1 s or not. An endpoint that does not
/// answer it either is marked down and the same attempt moves on to the next
/// one; one that answers is slow, not gone (a quorum write, heavy
/// materialized views), and is waited for, asked again each `base`, until
/// the attempt's `insert_timeout`.
///
/// A frozen (SIGSTOPped, GC-paused, on a dead VM host) or blackholed replica
/// still accepts TCP through the kernel but never answers; without this
/// every INSERT would wait out the whole `insert_timeout` on it while a
/// healthy replica idles. Only applies with more than one endpoint: with
/// one there is nowhere to go, and the attempt's `insert_timeout` is the
/// bound. Default: 3 s + 250 ms per MiB (a 100 000-row, 5 MiB PostEvent
/// INSERT answers in well under a second on a healthy server; it gets
/// 4.25 s before the question).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TryTimeout {
    /// The fixed part. Default: 3 s.
    pub base: Duration,
    /// Added per MiB of (uncompressed) RowBinary. Default: 250 ms.
    pub per_mib: Duration,
}

impl Default for TryTimeout {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(3),
            per_mib: Duration::from_millis(250),
        }
    }
}

impl TryTimeout {
    fn for_bytes(&self, bytes: u64) -> Duration {
        let extra = self.per_mib.as_secs_f64() * (bytes as f64 / (1 << 20) as f64);
        self.base
            .saturating_add(Duration::try_from_secs_f64(extra).unwrap_or(Duration::MAX))
    }
}

/// `ClickHouseSink::with_urls` was given no URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ClickHouseSink::with_urls needs at least one URL")]
pub struct NoUrls;

/// One server (replica) and what we know about it.
struct Endpoint {
    client: Client,
    /// The URL as logs show it ([`log_label`]).
    url: Option<String>,
    server: OnceCell<ServerInfo>,
    /// While set and in the future, the endpoint is skipped (it failed).
    down_until: Mutex<Option<Instant>>,
    failures: AtomicU32,
}

impl Endpoint {
    fn new(client: Client, url: Option<String>) -> Self {
        Self {
            client,
            url,
            server: OnceCell::new(),
            down_until: Mutex::new(None),
            failures: AtomicU32::new(0),
        }
    }

    fn is_down(&self) -> bool {
        let until = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        until.is_some_and(|t| Instant::now() < t)
    }

    /// Skips the endpoint for a while: 1 s after its first failure, doubling
    /// up to 30 s while it keeps failing.
    fn mark_down(&self) {
        let n = self.failures.fetch_add(1, Relaxed).min(5);
        let cooldown = Duration::from_secs(1 << n).min(Duration::from_secs(30));
        *self.down_until.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Instant::now() + cooldown);
    }

    fn mark_up(&self) {
        if self.failures.swap(0, Relaxed) != 0 {
            *self.down_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct ServerInfo {
    knows_async_insert: bool,
    knows_dedup_token: bool,
}

impl ClickHouseSink {
    /// A sink for `table` through `client` (which carries the URL,
    /// credentials, compression and settings).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self::from_endpoints(vec![Endpoint::new(client, None)], table.into())
    }

    /// A sink for `table` on several servers (replicas): each INSERT goes to
    /// the endpoint that answered last; a transient failure (network,
    /// timeout, 5xx, overload) moves it to the next endpoint at once, within
    /// the same attempt, and the failed one is skipped for 1 s, doubling to
    /// 30 s while it keeps failing. A permanent error is returned as it is
    /// (a replica would say the same). `client` is the template: each URL
    /// gets a clone of it. Logs name an endpoint by its URL without any
    /// `user:password@` or query, so credentials belong on the client
    /// (`with_user`, `with_password`), not in the URLs.
    ///
    /// Failing over after an ambiguous failure (the first server may have
    /// stored the block) can store it twice on a non-replicated setup;
    /// replicated tables with [`with_deduplication_token`](Self::with_deduplication_token)
    /// drop the second copy.
    ///
    /// A replica that accepts the connection but does not answer is given up
    /// on after [`TryTimeout`] (see [`with_try_timeout`](Self::with_try_timeout)).
    ///
    /// An empty list is an error ([`NoUrls`]).
    pub fn with_urls<U: AsRef<str>>(
        client: Client,
        urls: impl IntoIterator<Item = U>,
        table: impl Into<String>,
    ) -> Result<Self, NoUrls> {
        let endpoints: Vec<Endpoint> = urls
            .into_iter()
            .map(|u| {
                Endpoint::new(
                    client.clone().with_url(u.as_ref()),
                    Some(log_label(u.as_ref())),
                )
            })
            .collect();
        if endpoints.is_empty() {
            return Err(NoUrls);
        }
        Ok(Self::from_endpoints(endpoints, table.into()))
    }

    fn from_endpoints(endpoints: Vec<Endpoint>, table: String) -> Self {
        Self {
            endpoints: endpoints.into(),
            preferred: Default::default(),
            table,
            dedup_token: false,
            try_timeout: TryTimeout::default(),
            dedup_window: Default::default(),
            shaper: Default::default(),
        }
    }

    /// Sets how long one try on one endpoint may take before the next
    /// endpoint is tried (see [`TryTimeout`] for the default and why).
    pub fn with_try_timeout(mut self, timeout: TryTimeout) -> Self {
        self.try_timeout = timeout;
        self
    }

    /// Sends each INSERT's [`dedup_token`](InsertBatch::dedup_token) as
    /// `insert_deduplication_token` (ClickHouse 22.2 and later; off by
    /// default). A retry after an ambiguous failure (the server stored the
    /// block but the answer was lost) is then dropped by the server instead
    /// of stored twice. Replicated tables deduplicate by default; a plain
    /// MergeTree needs `non_replicated_deduplication_window` set. Older
    /// servers do not know the setting: it is not sent (a warning is logged
    /// once) and delivery stays at-least-once.
    pub fn with_deduplication_token(mut self, on: bool) -> Self {
        self.dedup_token = on;
        self
    }

    /// The client (of the first endpoint).
    pub fn client(&self) -> &Client {
        &self.endpoints[0].client
    }

    async fn server_info(&self, ep: &Endpoint) -> Result<ServerInfo, SinkError> {
        ep.server
            .get_or_try_init(|| async {
                let version: String = ep
                    .client
                    .clone()
                    .with_validation(false)
                    .query("SELECT version()")
                    .fetch_one()
                    .await
                    .map_err(map_error)?;
                let knows_dedup_token = version_at_least(&version, 22, 2);
                if self.dedup_token && !knows_dedup_token {
                    tracing::warn!(
                        %version,
                        "insert_deduplication_token needs ClickHouse 22.2+; not sent, retries are at-least-once"
                    );
                }
                Ok(ServerInfo {
                    knows_async_insert: version_at_least(&version, 21, 11),
                    knows_dedup_token,
                })
            })
            .await
            .copied()
    }

    /// One try on one endpoint. `outer` (the attempt's deadline) bounds all
    /// of it; `patience` (with several endpoints) is when to ask whether a
    /// silent endpoint is alive (see [`TryTimeout`]). The request is never
    /// left running past `outer`: the crate's own `end` timer, set to it,
    /// aborts the response task and its connection.
    async fn insert_into(
        &self,
        ep: &Endpoint,
        batch: &InsertBatch,
        body: &Body,
        outer: Option<Instant>,
        patience: Option<Duration>,
    ) -> Result<(), SinkError> {
        let info = watch(ep, outer, patience, self.server_info(ep)).await?;
        let mut sql = insert_sql(&self.table, batch.columns());
        if let Body::Native(_) = body {
            sql.truncate(sql.len() - "RowBinary".len());
            sql.push_str("Native");
        }
        let mut insert = ep
            .client
            .insert_formatted_with(sql)
            // An exception after headers went out (progress headers, a
            // client's `send_progress_in_http_headers=1`) would arrive in a
            // 200 body that 18.x writes in a form the crate does not detect:
            // the server must hold the status until the INSERT ended.
            .with_setting("wait_end_of_query", "1")
            .with_setting("send_progress_in_http_headers", "0");
        if info.knows_async_insert {
            insert = insert.with_setting("async_insert", "0");
        }
        if self.dedup_token && info.knows_dedup_token {
            insert = insert.with_setting("insert_deduplication_token", batch.dedup_token());
        }
        // Dropping the sends half-way aborts the request body: no leak.
        watch(ep, outer, patience, async {
            match body {
                Body::Native(block) => {
                    for chunk in block {
                        insert.send(chunk.clone()).await.map_err(map_error)?;
                    }
                }
                Body::RowBinary => {
                    for chunk in batch.chunks() {
                        insert.send(chunk.clone()).await.map_err(map_error)?;
                    }
                }
            }
            Ok(())
        })
        .await?;
        let end_by = match (outer, patience) {
            (Some(o), _) => Some(o.saturating_duration_since(Instant::now())),
            // Called directly with several endpoints: a request given up
            // on below still ends by itself.
            (None, Some(p)) => Some(p.saturating_mul(20)),
            (None, None) => None,
        };
        let insert = insert.with_timeouts(None, end_by.map(|d| d.max(Duration::from_millis(1))));
        if patience.is_none() {
            return insert.end().await.map_err(map_error);
        }
        // Its own task, so that giving up on a silent endpoint does not
        // drop it mid-wait (which would leave the crate's response task and
        // its connection waiting on that server for ever): it keeps its
        // timer and ends by `outer` at the latest.
        let end = tokio::spawn(insert.end());
        watch(ep, outer, patience, async {
            match end.await {
                Ok(result) => result.map_err(map_error),
                Err(e) => Err(SinkError::Other(format!("the INSERT task failed: {e}"))),
            }
        })
        .await
    }
}

impl ClickHouseSink {
    /// [`insert_into`](Self::insert_into), but "no such table" (60
    /// UNKNOWN_TABLE, 81 UNKNOWN_DATABASE) is asked again after 1 s and
    /// 2 s before it is believed: a server in a graceful restart answers
    /// it on a kept-alive connection while it detaches its tables, and
    /// while it loads them after the start (measured on 18.16 under load:
    /// 2 500 rows dead-lettered by one restart without this). The failed
    /// tries stored nothing (the table lookup comes first), so asking again
    /// cannot duplicate. A table that is really gone costs 3 s more.
    async fn insert_confirmed(
        &self,
        ep: &Endpoint,
        batch: &InsertBatch,
        body: &Body,
        outer: Option<Instant>,
        patience: Option<Duration>,
    ) -> Result<(), SinkError> {
        let mut result = self.insert_into(ep, batch, body, outer, patience).await;
        let mut asked = 1;
        for wait in [Duration::from_secs(1), Duration::from_secs(2)] {
            let missing = matches!(
                &result,
                Err(SinkError::Server {
                    code: Some(60 | 81),
                    ..
                })
            );
            let again_at = Instant::now() + wait;
            if !missing || outer.is_some_and(|o| again_at >= o) {
                break;
            }
            tokio::time::sleep_until(again_at).await;
            result = self.insert_into(ep, batch, body, outer, patience).await;
            asked += 1;
        }
        // The re-asks are not retries (nothing was stored, and the retry
        // policy never saw them), but the error says they happened.
        match result {
            Err(SinkError::Server {
                code: code @ Some(60 | 81),
                message,
            }) if asked > 1 => Err(SinkError::Server {
                code,
                message: format!(
                    "{message} (the same answer {asked} times, 1 s and 2 s apart: a \
                     restarting server answers it while it attaches its tables)"
                ),
            }),
            other => other,
        }
    }
}

/// Runs one step of a try: `Timeout` once `outer` has passed, or once the
/// endpoint has been silent for `patience` and does not answer a
/// `SELECT 1` within [`PROBE_TIMEOUT`] either. A slow endpoint that
/// answers is waited for (and asked again after another `patience`).
async fn watch<T>(
    ep: &Endpoint,
    outer: Option<Instant>,
    patience: Option<Duration>,
    what: impl std::future::Future<Output = Result<T, SinkError>>,
) -> Result<T, SinkError> {
    tokio::pin!(what);
    let mut ask_at = patience.map(super::deadline::after);
    loop {
        let wake = match (ask_at, outer) {
            (Some(a), Some(o)) => a.min(o),
            (Some(a), None) => a,
            (None, Some(o)) => o,
            (None, None) => return what.await,
        };
        tokio::select! {
            result = &mut what => return result,
            () = tokio::time::sleep_until(wake) => {}
        }
        if outer.is_some_and(|o| Instant::now() >= o) {
            return Err(SinkError::Timeout);
        }
        let probe_by = super::deadline::after(PROBE_TIMEOUT);
        let probe = within(Some(outer.map_or(probe_by, |o| o.min(probe_by))), async {
            ep.client
                .clone()
                .with_validation(false)
                .query("SELECT 1")
                .fetch_one::<u8>()
                .await
                .map_err(map_error)
        });
        let alive = tokio::select! {
            result = &mut what => return result,
            answer = probe => match answer {
                Ok(_) => true,
                // It answered, if only with an error: alive.
                Err(SinkError::Server { .. }) => true,
                Err(_) => false,
            },
        };
        if !alive {
            return Err(SinkError::Timeout);
        }
        ask_at = patience.map(super::deadline::after);
    }
}

/// `what`, ended with a time-out at `deadline` (dropping it aborts its request).
async fn within<T>(
    deadline: Option<Instant>,
    what: impl std::future::Future<Output = Result<T, SinkError>>,
) -> Result<T, SinkError> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, what)
            .await
            .unwrap_or(Err(SinkError::Timeout)),
        None => what.await,
    }
}

fn version_at_least(version: &str, major: u32, minor: u32) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (ma, mi) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (ma, mi) >= (major, minor)
}

impl Sink for ClickHouseSink {
    async fn insert(&self, batch: &InsertBatch) -> Result<(), SinkError> {
        let n = self.endpoints.len();
        let outer = super::deadline::current();
        let start = self.preferred.load(Relaxed) % n;
        // Healthy endpoints first, in order from the preferred one; if all
        // are cooling down, try them anyway rather than not at all.
        let order = (0..n).map(|k| (start + k) % n);
        let healthy: Vec<usize> = order
            .clone()
            .filter(|&i| !self.endpoints[i].is_down())
            .collect();
        let candidates = if healthy.is_empty() {
            order.collect()
        } else {
            healthy
        };
        let mut last = None;
        let patience = (n > 1).then(|| self.try_timeout.for_bytes(batch.bytes()));
        let body = self
            .shaper
            .body(&self.endpoints[candidates[0]].client, &self.table, batch)
            .await;
        for i in candidates {
            let ep = &self.endpoints[i];
            match self
                .insert_confirmed(ep, batch, &body, outer, patience)
                .await
            {
                Ok(()) => {
                    ep.mark_up();
                    self.preferred.store(i, Relaxed);
                    self.dedup_window.stored(&self.table);
                    if self.dedup_window.wants_read() {
                        self.dedup_window
                            .read_in_background(&ep.client, &self.table);
                    }
                    return Ok(());
                }
                Err(e) if e.is_retryable() && n > 1 => {
                    // The attempt's own time running out says nothing
                    // about this endpoint.
                    let out_of_time = outer.is_some_and(|o| Instant::now() >= o);
                    if !out_of_time {
                        ep.mark_down();
                    }
                    tracing::warn!(
                        endpoint = ep.url.as_deref().unwrap_or("?"),
                        error = %e,
                        "endpoint failed; trying the next one"
                    );
                    last = Some(e);
                    if out_of_time {
                        break;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(SinkError::Timeout))
    }

    fn table(&self) -> Option<&str> {
        Some(&self.table)
    }

    /// Reads the table's deduplication window (after the first INSERT, on
    /// a task of its own) and logs one warning when the INSERT rate would
    /// push a block out of it before `horizon` ends (see docs/clusters.md).
    fn retry_horizon(&self, horizon: Duration) {
        self.dedup_window.set_horizon(horizon);
    }

    fn insert_shape(&self, order: &InsertOrder, format: InsertFormat) {
        self.shaper.set(order, format);
    }

    /// Sorts the INSERT by the table's key (see [`InsertOrder`]), learning
    /// the key from the preferred endpoint the first time.
    async fn prepare(&self, batch: Arc<InsertBatch>) -> Arc<InsertBatch> {
        let n = self.endpoints.len();
        let ep = &self.endpoints[self.preferred.load(Relaxed) % n];
        self.shaper.prepare(&ep.client, &self.table, batch).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_urls_is_an_error_not_a_panic_later() {
        let none: [&str; 0] = [];
        assert_eq!(
            ClickHouseSink::with_urls(Client::default(), none, "t").err(),
            Some(NoUrls)
        );
        assert!(ClickHouseSink::with_urls(Client::default(), ["http://h:1"], "t").is_ok());
    }

    #[test]
    fn a_try_gets_its_base_plus_its_size() {
        let t = TryTimeout::default();
        assert_eq!(t.for_bytes(0), Duration::from_secs(3));
        assert_eq!(t.for_bytes(4 << 20), Duration::from_secs(4));
    }

    #[test]
    fn versions() {
        assert!(!version_at_least("18.16.1", 21, 11));
        assert!(version_at_least("21.11.2.2", 21, 11));
        assert!(version_at_least("26.9.1", 21, 11));
        assert!(
            !version_at_least("18.16.1", 22, 2),
            "no dedup token on 18.16"
        );
        assert!(version_at_least("22.2.1", 22, 2));
    }
}
