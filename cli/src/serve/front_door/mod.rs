//! The front door: ClickHouse's own HTTP protocol on serve's listener, so a
//! ClickHouse client pointed at serve instead of the server gets
//! batching, retries, spill and failover with no change but the URL.
//!
//! Owns: `/`, `/?query=` and `/ping`; reading the query (from the `query`
//! parameter or the start of the body) and the body (`Content-Encoding`,
//! `decompress=1` block framing); the INSERTs of data into allowed tables,
//! decoded by `formats` and tracked into the table's engine; the answer
//! modes (`wait_for_async_insert`); forwarding everything else to
//! ClickHouse, or refusing it, by `[clickhouse] passthrough`; checking
//! credentials. Must not: buffer anything but an INSERT of data, splice
//! request text into SQL, or log a credential or a row.
//!
//! A waiting INSERT is answered by a group commit per table: the first
//! waiter starts a short wait (`busy_timeout`), then every waiter's receipt
//! is settled at once, so many small waiting INSERTs become one ClickHouse
//! INSERT. Each request is answered for its own rows (`Buffer::settle`):
//! an INSERT that failed fails the requests whose rows it carried, and no
//! other.

pub(super) mod auth;
mod metrics;
mod params;
mod reply;
mod retries;

pub use metrics::Metrics;

use super::config::{FrontDoorConfig, Passthrough};
use super::tables::{Engine, Table, Tables};
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ch_ingest::{Receipt, Settled, TrackJsonError};
use ch_ingest_protocol::formats::{self, AllowErrors, Format};
use ch_ingest_protocol::query::{self, Statement};
use ch_ingest_protocol::{blocks, ChError, Code};
use http_body_util::Full;
use hyper_util::client::legacy::Client;

/// The connector to ClickHouse: `http://` and `https://`, with serve's
/// `[clickhouse]` certificates.
pub type Upstream = ch_ingest::sink::TlsConnector;
use metrics::Kind;
use params::{param, Params};
use reply::Ack;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the upstream may take to answer a forwarded query's headers.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(300);
/// A group commit seals this long after its last new waiter (or at the
/// busy timeout, whichever comes first).
const QUIET: Duration = Duration::from_millis(5);
/// Bodies larger than this are decoded with `block_in_place`.
const INLINE_BODY: usize = 256 << 10;
/// How long the rows of a request may wait for room in a full buffer.
const FULL_WAIT: Duration = Duration::from_secs(10);

pub struct FrontDoor {
    tables: Arc<Tables>,
    cfg: FrontDoorConfig,
    /// The database an unqualified table name is in.
    database: String,
    max_body_bytes: usize,
    max_decompressed_bytes: usize,
    max_decoded_bytes: usize,
    max_line_bytes: usize,
    body_timeout: Duration,
    /// The permits of `max_concurrent_requests`, shared with the NDJSON
    /// API: a request holds one while its body is read, decoded and
    /// tracked.
    working: Arc<tokio::sync::Semaphore>,
    client: Client<Upstream, Full<Bytes>>,
    gate: auth::Gate,
    retries: retries::Retries,
    committers: Mutex<HashMap<String, tokio::sync::mpsc::UnboundedSender<Waiter>>>,
    queries: AtomicU64,
    metrics: Metrics,
}

pub struct Limits {
    pub max_body_bytes: usize,
    pub max_decompressed_bytes: usize,
    pub max_decoded_bytes: usize,
    pub max_line_bytes: usize,
    pub body_timeout: Duration,
    pub working: Arc<tokio::sync::Semaphore>,
    /// How ClickHouse is reached (its TLS settings).
    pub upstream: Upstream,
}

/// The upstream client over serve's connector (whose connects are
/// bounded, so a dead server costs seconds).
fn upstream_client(connector: Upstream) -> Client<Upstream, Full<Bytes>> {
    Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(ch_ingest::sink::IDLE_CLOSE)
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(connector)
}

pub fn routes(
    tables: Arc<Tables>,
    cfg: FrontDoorConfig,
    database: Option<String>,
    limits: Limits,
    metrics: Metrics,
) -> Router {
    let client = upstream_client(limits.upstream);
    let cfg_dedup_window = cfg.dedup_window;
    let gate = auth::Gate::new(
        cfg.auth,
        cfg.users.clone(),
        cfg.credentials_ttl,
        cfg.credentials_outage_ttl,
        client.clone(),
        tables.urls().to_vec(),
    );
    let door = Arc::new(FrontDoor {
        tables,
        cfg,
        database: database.unwrap_or_else(|| "default".into()),
        max_body_bytes: limits.max_body_bytes,
        max_decompressed_bytes: limits.max_decompressed_bytes,
        max_decoded_bytes: limits.max_decoded_bytes,
        max_line_bytes: limits.max_line_bytes,
        body_timeout: limits.body_timeout,
        working: limits.working,
        client,
        gate,
        retries: retries::Retries::new(cfg_dedup_window),
        committers: Mutex::default(),
        queries: AtomicU64::new(0),
        metrics,
    });
    Router::new()
        .route("/", get(handle).post(handle))
        .route("/ping", get(|| async { "Ok.\n" }))
        .with_state(door)
}

/// The database an unqualified table name is in, as the client set it for
/// the request (`database` parameter, else `X-ClickHouse-Database`); `None`:
/// serve's `[clickhouse] database`.
fn session_database(headers: &HeaderMap, params: &Params) -> Option<String> {
    param(params, "database")
        .or_else(|| headers.get("X-ClickHouse-Database")?.to_str().ok())
        .filter(|db| !db.is_empty())
        .map(str::to_string)
}

async fn handle(
    State(door): State<Arc<FrontDoor>>,
    Query(params): Query<Params>,
    request: Request,
) -> Response {
    let started = Instant::now();
    // What the request was, learnt as it is read (for the metrics).
    let mut kind = Kind::Invalid;
    let response = match answer(&door, params, request, &mut kind).await {
        Ok(r) => r,
        Err(e) => reply::error(e),
    };
    let code = response
        .headers()
        .get("X-ClickHouse-Exception-Code")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    door.metrics
        .answered(kind, response.status().as_u16(), code);
    if let Kind::Insert { wait } = kind {
        door.metrics.latency(wait, started.elapsed());
    }
    response
}

async fn answer(
    door: &Arc<FrontDoor>,
    params: Params,
    request: Request,
    kind: &mut Kind,
) -> Result<Response, ChError> {
    let (parts, body) = request.into_parts();
    refuse_repeated(&params)?;
    let in_param = param(&params, "query");
    let no_body = parts.headers.get(header::TRANSFER_ENCODING).is_none()
        && parts
            .headers
            .get(header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() == b"0");
    if in_param.is_none() && no_body && parts.method == Method::GET {
        // What ClickHouse answers to `GET /`, without credentials.
        *kind = Kind::Ping;
        return Ok("Ok.\n".into_response());
    }
    door.check_peer(&parts)?;
    // Every request that may carry a body takes a permit before it is
    // read, and says who it is before a byte of the body is read or
    // inflated: an unknown caller costs no body memory and no CPU.
    let permit = door.permit().await?;
    let caller = door.gate.login(&parts.headers, &params).await?;
    let raw = door.read_body(body).await?;
    let in_param = in_param.unwrap_or("");
    if in_param.trim().is_empty() && raw.is_empty() {
        return Err(ChError::new(Code::SyntaxError, "Empty query"));
    }
    let headers = &parts.headers;
    let session_database = session_database(headers, &params);
    let packed =
        headers.contains_key(header::CONTENT_ENCODING) || param(&params, "decompress") == Some("1");
    let body = super::http::offload(packed || raw.len() > INLINE_BODY, || {
        unpack_body(door, headers, &params, raw.clone())
    })?;
    let describe = query::describe(if in_param.is_empty() {
        &body
    } else {
        in_param.as_bytes()
    });
    let (statement, data) = statement_and_data(in_param, body)?;
    if matches!(statement, Statement::Read) && describe.is_some() {
        // Answered from the table's schema, whatever `passthrough` says:
        // nothing reaches ClickHouse, and clickhouse-connect cannot insert
        // without it.
        *kind = Kind::Describe;
        if let Some(answer) = door
            .describe(
                describe,
                session_database.as_deref(),
                &caller,
                headers,
                &params,
            )
            .await?
        {
            return Ok(answer);
        }
    }
    let route = Route::of(statement, door.cfg.passthrough);
    *kind = route.kind();
    match route {
        Route::Insert(_) if parts.method == Method::GET => Err(ChError::new(
            Code::ReadOnly,
            "an INSERT sent with GET: ClickHouse runs GET requests read-only; send it with POST",
        )),
        Route::Insert(mut insert) => {
            if insert.database.is_none() {
                insert.database = session_database;
            }
            let request = InsertRequest {
                caller: &caller,
                headers,
                params: &params,
            };
            door.insert(insert, request, data, permit, kind).await
        }
        Route::Forward { read } => {
            // A read runs under the server's own `readonly`, so that no
            // disagreement between our classifier and its parser can make
            // it a write.
            let readonly = if read && door.cfg.passthrough == Passthrough::Read {
                door.gate.readonly_level(&caller).await? == 0
            } else {
                false
            };
            drop(permit);
            door.forward(parts.method, parts.uri, parts.headers, raw, readonly)
                .await
        }
        Route::Refused => Err(not_forwarded(door.cfg.passthrough)),
    }
}

/// ClickHouse runs the first `query` (and takes the first `database`,
/// `user`, `password`) where `param` reads the last, as settings are: a
/// repeat would make what is checked here differ from what runs.
fn refuse_repeated(params: &Params) -> Result<(), ChError> {
    for name in ["query", "database", "user", "password"] {
        if params.iter().filter(|(k, _)| k == name).count() > 1 {
            return Err(ChError::new(
                Code::BadArguments,
                format!("the URL parameter `{name}` is given more than once"),
            ));
        }
    }
    Ok(())
}

/// The statement, and the data after it: in the body, or in the `query`
/// parameter continued by the body (a newline between, as ClickHouse
/// reads them).
fn statement_and_data(in_param: &str, body: Bytes) -> Result<(Statement, Bytes), ChError> {
    if in_param.is_empty() {
        let statement = query::parse(&body).map_err(syntax)?;
        let data = match &statement {
            Statement::Insert(i) => body.slice(i.data_start..),
            _ => Bytes::new(),
        };
        return Ok((statement, data));
    }
    let text = in_param.as_bytes();
    let statement = query::parse(text).map_err(syntax)?;
    Ok(match statement {
        Statement::Insert(i) if i.data_start < text.len() => {
            let mut d = text[i.data_start..].to_vec();
            d.push(b'\n');
            d.extend_from_slice(&body);
            (Statement::Insert(i), Bytes::from(d))
        }
        Statement::Insert(i) => (Statement::Insert(i), body),
        // Anything else is classified as the server runs it: the
        // parameter, a newline, the body (`?query=SELECT 1` with a body
        // `PARALLEL WITH DROP TABLE t` is no read).
        _ if !body.is_empty() => {
            let whole = [text, b"\n", &body].concat();
            (query::parse(&whole).map_err(syntax)?, Bytes::new())
        }
        other => (other, Bytes::new()),
    })
}

/// What the door does with a statement, decided once.
enum Route {
    /// Buffered: an INSERT of data.
    Insert(query::Insert),
    /// Sent on to ClickHouse (`read`: a read, run read-only).
    Forward { read: bool },
    /// Refused under `passthrough`.
    Refused,
}

impl Route {
    fn of(statement: Statement, passthrough: Passthrough) -> Route {
        match statement {
            Statement::Insert(i) => Route::Insert(i),
            Statement::Read if passthrough != Passthrough::None => Route::Forward { read: true },
            Statement::Other if passthrough == Passthrough::All => Route::Forward { read: false },
            _ => Route::Refused,
        }
    }

    /// What the metrics count it as.
    fn kind(&self) -> Kind {
        match self {
            Route::Insert(_) => Kind::Insert { wait: true },
            Route::Forward { .. } => Kind::Forward,
            Route::Refused => Kind::Refused,
        }
    }
}

/// The refusal of a statement `passthrough` does not forward.
fn not_forwarded(passthrough: Passthrough) -> ChError {
    let (what, setting) = match passthrough {
        Passthrough::All => ("every query", "all"),
        Passthrough::Read => ("only SELECT, DESCRIBE, SHOW, EXISTS and EXPLAIN", "read"),
        Passthrough::None => ("nothing", "none"),
    };
    ChError::new(
        Code::ReadOnly,
        format!(
            "ch-ingest forwards {what} to ClickHouse ([clickhouse] passthrough = \"{setting}\"); \
             it buffers only INSERTs of data into its allowed tables"
        ),
    )
}

impl FrontDoor {
    /// `[front_door] allow_from`: a peer outside every network is refused
    /// (code 195) before anything else is read.
    fn check_peer(&self, parts: &axum::http::request::Parts) -> Result<(), ChError> {
        let peer = parts.extensions.get::<super::listener::Peer>().map(|p| p.0);
        if let (Some(allowed), Some(peer)) = (&self.cfg.allow_from, peer) {
            if !allowed.iter().any(|n| n.contains(peer)) {
                return Err(ChError::new(
                    Code::IpAddressNotAllowed,
                    format!("{peer} is not in [front_door] allow_from"),
                ));
            }
        }
        Ok(())
    }

    /// The whole body, within `max_body_bytes` and `body_timeout`.
    async fn read_body(&self, body: axum::body::Body) -> Result<Bytes, ChError> {
        let read = tokio::time::timeout(
            self.body_timeout,
            axum::body::to_bytes(body, self.max_body_bytes),
        );
        match read.await {
            Ok(Ok(b)) => Ok(b),
            Ok(Err(_)) => Err(ChError::new(
                Code::QueryIsTooLarge,
                format!(
                    "the body is over max_body_bytes ({} bytes) or was cut off",
                    self.max_body_bytes
                ),
            )),
            Err(_) => Err(ChError::new(
                Code::TimeoutExceeded,
                format!(
                    "the body took longer than body_timeout ({:?}) to arrive",
                    self.body_timeout
                ),
            )),
        }
    }
}

/// What an INSERT's request said about itself, besides its statement.
struct InsertRequest<'a> {
    caller: &'a auth::Caller,
    headers: &'a HeaderMap,
    params: &'a Params,
}

fn syntax(e: query::SyntaxError) -> ChError {
    ChError::new(Code::SyntaxError, e.to_string())
}

/// The body with its `Content-Encoding` undone, then its block framing
/// (`decompress=1`).
fn unpack_body(
    door: &FrontDoor,
    headers: &HeaderMap,
    params: &Params,
    raw: Bytes,
) -> Result<Bytes, ChError> {
    let encoding = headers.get(header::CONTENT_ENCODING).map(|v| {
        v.to_str()
            .map_or_else(|_| "(not text)".into(), |v| v.trim().to_ascii_lowercase())
    });
    let body = super::http::decompress(encoding.as_deref(), raw, door.max_decompressed_bytes)
        .map_err(|(status, message)| {
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                Code::QueryIsTooLarge
            } else {
                Code::CannotDecompress
            };
            ChError::new(code, message)
        })?;
    if param(params, "decompress") == Some("1") {
        Ok(blocks::unpack(&body, door.max_decompressed_bytes)?.into())
    } else {
        Ok(body)
    }
}

/// What the client asked for, from the URL and the INSERT's SETTINGS (the
/// latter win, as in ClickHouse).
struct Settings<'a> {
    url: &'a Params,
    clause: &'a [(String, String)],
}

impl Settings<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.clause
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .or_else(|| param(self.url, name))
    }

    fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, ChError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.trim_matches('\'').parse().map_err(|_| {
                ChError::new(
                    Code::IncorrectData,
                    format!("setting {name}: `{v}` is not a number"),
                )
            }),
        }
    }

    /// The CSV dialect the client's settings ask for.
    fn csv(&self) -> Result<ch_ingest_protocol::Csv, ChError> {
        let mut csv = ch_ingest_protocol::Csv::default();
        if let Some(v) = self.get("format_csv_delimiter") {
            let v = v.as_bytes();
            csv.delimiter = match v {
                [b] if !matches!(b, b'\n' | b'\r' | b'"' | b'\'') => *b,
                _ => {
                    return Err(ChError::new(
                        Code::BadArguments,
                        format!(
                            "setting format_csv_delimiter: `{}` is not one character \
                             (other than a quote or a line break)",
                            String::from_utf8_lossy(v)
                        ),
                    ))
                }
            };
        }
        if let Some(single) = self.flag("format_csv_allow_single_quotes") {
            csv.single_quotes = single;
        }
        if let Some(double) = self.flag("format_csv_allow_double_quotes") {
            csv.double_quotes = double;
        }
        Ok(csv)
    }

    /// How long this request's group commit may wait for company: the
    /// client may ask for less than `configured`, never more. The first
    /// waiter's timeout is the whole group's deadline, so a long one would
    /// stall every other client's answer while requests keep coming.
    fn busy_timeout(&self, configured: Duration) -> Result<Duration, ChError> {
        let asked = self.number("async_insert_busy_timeout_ms", u64::MAX)?;
        Ok(Duration::from_millis(asked).min(configured))
    }

    fn flag(&self, name: &str) -> Option<bool> {
        self.get(name).map(|v| {
            !matches!(
                v.trim_matches('\'').to_ascii_lowercase().as_str(),
                "0" | "false"
            )
        })
    }
}

impl FrontDoor {
    /// The table an INSERT names, if it is allowed here.
    fn table(&self, database: Option<&str>, name: &str) -> Result<Arc<Table>, ChError> {
        let by_name = &self.tables.by_name;
        let found = match database {
            None => by_name.get(name),
            Some(db) => by_name
                .get(&format!("{db}.{name}"))
                .or_else(|| (db == self.database).then(|| by_name.get(name)).flatten()),
        };
        found.cloned().ok_or_else(|| {
            let shown = database.map_or_else(|| name.to_string(), |db| format!("{db}.{name}"));
            ChError::new(
                Code::UnknownTable,
                format!(
                    "Table {shown} is not one ch-ingest buffers (the allow-list is [tables.NAME] \
                     in serve.toml)"
                ),
            )
        })
    }

    /// One of the `max_concurrent_requests` permits, waited for a bounded
    /// time (the NDJSON API's `PERMIT_WAIT`).
    async fn permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ChError> {
        let wait = super::http::PERMIT_WAIT;
        match tokio::time::timeout(wait, self.working.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(shutting_down()),
            Err(_) => Err(ChError::new(
                Code::TooManySimultaneousQueries,
                format!(
                    "max_concurrent_requests requests are being read; none ended within \
                     {wait:?}: try again"
                ),
            )),
        }
    }

    fn upstream(&self) -> Result<&str, ChError> {
        self.tables
            .urls()
            .first()
            .map(|u| u.trim_end_matches('/'))
            .ok_or_else(|| ChError::new(Code::Unknown, "no ClickHouse URL is configured"))
    }

    /// Sends the request on to ClickHouse as it came, the caller's
    /// credentials with it, and streams the answer back.
    /// With `readonly`, the request carries ClickHouse's `readonly = 2`
    /// (any `readonly` the client sent is dropped): the server then refuses
    /// a write whatever our classifier made of the text.
    async fn forward(
        &self,
        method: Method,
        uri: axum::http::Uri,
        headers: HeaderMap,
        body: Bytes,
        readonly: bool,
    ) -> Result<Response, ChError> {
        let mut path = uri.path().to_string();
        let mut query: Vec<&str> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .collect();
        if readonly {
            query.retain(|p| p.split('=').next() != Some("readonly"));
            query.push("readonly=2");
        }
        if !query.is_empty() {
            path.push('?');
            path.push_str(&query.join("&"));
        }
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.upstream()?));
        for (name, value) in &headers {
            if !is_hop_by_hop(name) {
                request = request.header(name, value);
            }
        }
        let request = request
            .header(header::CONTENT_LENGTH, body.len())
            .body(Full::new(body))
            .map_err(|e| ChError::new(Code::Unknown, format!("cannot forward: {e}")))?;
        let response = tokio::time::timeout(FORWARD_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| {
                ChError::new(
                    Code::TimeoutExceeded,
                    format!(
                        "ClickHouse did not answer the forwarded query within {FORWARD_TIMEOUT:?}"
                    ),
                )
            })?
            .map_err(|e| {
                ChError::new(
                    Code::Unknown,
                    format!("ClickHouse did not answer the forwarded query: {e}"),
                )
            })?;
        let (parts, incoming) = response.into_parts();
        let mut out = Response::new(Body::new(incoming));
        *out.status_mut() = parts.status;
        for (name, value) in &parts.headers {
            if !is_hop_by_hop(name) {
                out.headers_mut().append(name, value.clone());
            }
        }
        Ok(out)
    }

    /// `DESCRIBE TABLE t FORMAT Native` of an allowed table, answered
    /// from the table's schema in current servers' shape, for the caller
    /// that may insert into it: clickhouse-connect asks it before an
    /// INSERT without `column_type_names`, and cannot read 18.16's own
    /// answer (`comment_expression`, no `ttl_expression`). `None` for any
    /// other query, which is forwarded as it is.
    async fn describe(
        &self,
        describe: Option<query::Describe>,
        session_database: Option<&str>,
        caller: &auth::Caller,
        headers: &HeaderMap,
        params: &Params,
    ) -> Result<Option<Response>, ChError> {
        let Some(mut d) = describe else {
            return Ok(None);
        };
        if d.database.is_none() {
            d.database = session_database.map(str::to_string);
        }
        let format = d.format.as_deref().or(param(params, "default_format"));
        if format != Some("Native") {
            return Ok(None);
        }
        let Ok(table) = self.table(d.database.as_deref(), &d.table) else {
            return Ok(None);
        };
        let Some(engine) = table.engine() else {
            return Ok(None);
        };
        if self.authorize(&table, caller, headers).await.is_err() {
            // Not answered here for a caller who may not insert: ClickHouse
            // answers it (or refuses it) as it would directly.
            return Ok(None);
        }
        let body = ch_ingest_protocol::describe_block(engine.schema());
        let mut r = (StatusCode::OK, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/octet-stream"),
        );
        Ok(Some(r))
    }

    /// Every table policy, the same on both doors: the table's tokens,
    /// serve's own users' table lists, and ClickHouse's own answer for
    /// this user and table (`auth = "clickhouse"`).
    async fn authorize(
        &self,
        table: &Table,
        caller: &auth::Caller,
        headers: &HeaderMap,
    ) -> Result<(), ChError> {
        if !super::http::token_allowed(auth::table_token(headers), &table.tokens) {
            return Err(ChError::new(
                Code::AccessDenied,
                format!(
                    "{} takes only requests with one of its tokens ([tables.{}] tokens): send \
                     it as X-CH-Ingest-Token",
                    table.name, table.name
                ),
            ));
        }
        if caller
            .tables
            .as_ref()
            .is_some_and(|list| !list.contains(&table.name))
        {
            return Err(ChError::new(
                Code::AccessDenied,
                format!("this user may not insert into {}", table.name),
            ));
        }
        let qualified = if table.name.contains('.') {
            table.name.clone()
        } else {
            format!("{}.{}", self.database, table.name)
        };
        self.gate
            .may_insert(caller, &ch_ingest::sink::sql::quote_table(&qualified))
            .await
    }

    /// The client's `query_id`, or one of ours.
    fn query_id(&self, params: &Params) -> String {
        param(params, "query_id").map_or_else(
            || {
                format!(
                    "ch-ingest-{}-{}",
                    std::process::id(),
                    self.queries.fetch_add(1, Relaxed)
                )
            },
            str::to_string,
        )
    }

    /// How this INSERT's body is read: the client's settings where it
    /// gave them, else the table's and the server's, within serve's limits.
    fn decode_options(
        &self,
        settings: &Settings<'_>,
        table: &Table,
        engine: &Engine,
    ) -> Result<formats::Options, ChError> {
        let allow = AllowErrors {
            num: settings.number("input_format_allow_errors_num", 0u64)?,
            ratio: settings.number("input_format_allow_errors_ratio", 0f64)?,
        };
        Ok(formats::Options {
            // The client's own setting wins; without it, the table's.
            deny_unknown_fields: settings
                .flag("input_format_skip_unknown_fields")
                .map_or(table.deny_unknown_fields(), |skip| !skip),
            allow,
            max_line: self.max_line_bytes,
            // The client's own setting wins; without it, the server's.
            defaults_for_omitted: settings
                .flag("input_format_defaults_for_omitted_fields")
                .unwrap_or(engine.omitted_defaults()),
            csv: settings.csv()?,
            max_decoded: self.max_decoded_bytes,
        })
    }

    async fn insert(
        self: &Arc<Self>,
        insert: query::Insert,
        request: InsertRequest<'_>,
        data: Bytes,
        permit: tokio::sync::OwnedSemaphorePermit,
        kind: &mut Kind,
    ) -> Result<Response, ChError> {
        let params = request.params;
        let table = self.table(insert.database.as_deref(), &insert.table)?;
        self.authorize(&table, request.caller, request.headers)
            .await?;
        let format = Format::parse(&insert.format)?;
        let settings = Settings {
            url: params,
            clause: &insert.settings,
        };
        // ClickHouse: `wait_for_async_insert` only matters for async inserts.
        let wait = !(settings.flag("wait_for_async_insert") == Some(false)
            && settings.flag("async_insert") != Some(false));
        *kind = Kind::Insert { wait };
        let busy = settings.busy_timeout(self.cfg.busy_timeout)?;
        let query_id = self.query_id(params);
        let Some(engine) = table.engine() else {
            return Err(ChError::new(
                Code::TooManySimultaneousQueries,
                "the table's schema has not been read from ClickHouse yet; try again",
            ));
        };
        let columns = insert.columns;
        let options = self.decode_options(&settings, &table, &engine)?;
        // As on the NDJSON endpoint: a small body is decoded on the worker,
        // a large one with `block_in_place`. (On the blocking pool, every
        // request's rows were written into the shard buffers from another
        // thread: serve's RSS reached 1.2 GB where 200 MB hold the rows.)
        let decoded = super::http::offload(data.len() > INLINE_BODY, || {
            formats::decode(format, engine.schema(), columns.as_deref(), &data, &options)
        })?;
        drop(data);
        let token = settings.get("insert_deduplication_token");
        let claim = token.map(|t| self.retries.claim(&table.name, t));
        let answer =
            |s: retries::Summary| reply::inserted(s.rows, s.bytes, s.skipped, s.ack, &query_id);
        let first = match claim {
            Some(retries::Claim::Retry(mut earlier)) => {
                // A retry: the first attempt's rows are (being) stored.
                drop((decoded, permit));
                let outcome = earlier
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|o| o.clone());
                return match outcome {
                    Some(Ok(summary)) => Ok(answer(summary)),
                    Some(Err((e, _))) => Err(e),
                    None => Err(shutting_down()),
                };
            }
            Some(retries::Claim::First(first)) => Some(first),
            None => None,
        };
        // Stored by a task of its own: a client that hangs up does not
        // cut its rows' outcome short, and a retry still reads it.
        let door = self.clone();
        let stored = tokio::spawn(async move {
            let outcome = door.store(table, engine, decoded, permit, wait, busy).await;
            if let Some(first) = first {
                door.retries.settle(first, outcome.clone());
            }
            outcome
        });
        match stored.await {
            Ok(Ok(summary)) => Ok(answer(summary)),
            Ok(Err((e, _))) => Err(e),
            Err(_) => Err(shutting_down()),
        }
    }

    /// Tracks a request's rows (all or none), then answers as its mode
    /// asks: at once, or once its group commit settled them. The error
    /// says whether any row of the request was kept all the same.
    async fn store(
        &self,
        table: Arc<Table>,
        engine: Engine,
        decoded: formats::Rows,
        permit: tokio::sync::OwnedSemaphorePermit,
        wait: bool,
        busy: Duration,
    ) -> retries::Outcome {
        let parts = track_all(&table, engine, &decoded)
            .await
            .map_err(|e| (e, false))?;
        let (rows, bytes, skipped) = (
            decoded.ends.len() as u64,
            decoded.bytes.len() as u64,
            decoded.skipped,
        );
        // The rows are in the engine's bounded buffers now: what this
        // request held is freed before it waits for its commit.
        drop(decoded);
        drop(permit);
        self.metrics.rows(&table.name, "skipped", skipped);
        let summary = |ack| retries::Summary {
            rows,
            bytes,
            skipped,
            ack,
        };
        if !wait {
            self.metrics.rows(&table.name, Ack::Buffered.label(), rows);
            return Ok(summary(Ack::Buffered));
        }
        if rows == 0 {
            // Nothing to wait for: every row of it (none) is stored, and a
            // waiting client must not read "buffered" as "not yet durable".
            return Ok(retries::Summary {
                bytes: 0,
                ..summary(Ack::Stored)
            });
        }
        let settled = self
            .committed(&table.name, parts, busy)
            .await
            .map_err(|e| (e, true))?;
        self.metrics
            .rows(&table.name, Ack::Stored.label(), settled.stored_rows);
        self.metrics
            .rows(&table.name, Ack::Spilled.label(), settled.spilled_rows);
        if !settled.is_stored() {
            let kept = settled.stored_rows + settled.spilled_rows > 0;
            return Err((failed(&settled), kept));
        }
        Ok(summary(if settled.spilled_rows > 0 {
            Ack::Spilled
        } else {
            Ack::Stored
        }))
    }

    /// Waits for the table's next group commit to settle these rows.
    async fn committed(
        &self,
        table: &str,
        parts: Vec<(Engine, Receipt)>,
        busy: Duration,
    ) -> Result<Settled, ChError> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let waiter = Waiter { parts, busy, done };
        {
            let mut committers = self.committers.lock().unwrap_or_else(|p| p.into_inner());
            let tx = committers.entry(table.to_string()).or_insert_with(|| {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                tokio::spawn(commit_loop(rx));
                tx
            });
            if let Err(back) = tx.send(waiter) {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                tokio::spawn(commit_loop(rx));
                let _ = tx.send(back.0);
                committers.insert(table.to_string(), tx);
            }
        }
        answer.await.map_err(|_| shutting_down())?
    }
}

/// ClickHouse's error for a request some of whose rows failed: the server's
/// own code and text when it refused them, saying how many rows of the
/// request were kept anyway (a client that resends all of them duplicates
/// those).
fn failed(settled: &Settled) -> ChError {
    let kept = settled.stored_rows + settled.spilled_rows;
    let note = if kept > 0 {
        format!(
            " ({} of the request's {} rows failed; {kept} were stored)",
            settled.failed_rows, settled.rows
        )
    } else {
        String::new()
    };
    match settled.failures.first().map(|f| &f.error) {
        Some(ch_ingest::sink::SinkError::Server { code, message }) => {
            let mut e = ChError::from_server(*code, message);
            e.message.push_str(&note);
            e
        }
        Some(other) => ChError::new(
            Code::Unknown,
            format!("the INSERT of these rows failed: {other}{note}"),
        ),
        None => ChError::new(
            Code::Unknown,
            format!(
                "the outcome of {} rows of this request is no longer known (more than 4096 \
                 INSERTs failed meanwhile){note}",
                settled.failed_rows
            ),
        ),
    }
}

fn shutting_down() -> ChError {
    ChError::new(
        Code::TooManySimultaneousQueries,
        "ch-ingest is shutting down; the rows of this request were accepted and are being drained",
    )
}

fn is_hop_by_hop(name: &header::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "host"
            | "content-length"
            | "proxy-connection"
    )
}

/// Tracks the request's rows all at once or not at all
/// (`Buffer::track_rowbinary_all`), noting them in a receipt; waits (a
/// bounded time) for room when the buffer is full, follows an engine swap.
/// So an error always means that none of the rows were kept. The engine
/// the rows went into, with the receipt of its rows (none for an empty
/// request).
async fn track_all(
    table: &Table,
    mut engine: Engine,
    rows: &formats::Rows,
) -> Result<Vec<(Engine, Receipt)>, ChError> {
    let waited = Instant::now();
    loop {
        let mut receipt = engine.buffer.receipt();
        match engine
            .buffer
            .track_rowbinary_all(&rows.bytes, &rows.ends, Some(&mut receipt))
        {
            Ok(()) if receipt.rows() == 0 => return Ok(Vec::new()),
            Ok(()) => return Ok(vec![(engine, receipt)]),
            Err(TrackJsonError::Full) => {
                if waited.elapsed() > FULL_WAIT {
                    return Err(ChError::new(
                        Code::TooManySimultaneousQueries,
                        format!(
                            "the table's buffer stayed full for {FULL_WAIT:?}; none of the \
                             request's rows were taken (send it again)"
                        ),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(TrackJsonError::Closed) => match table.engine() {
                Some(newer) if newer.generation != engine.generation => {
                    engine = newer;
                    table.rerouted.fetch_add(1, Relaxed);
                }
                _ => return Err(shutting_down_before()),
            },
            Err(TrackJsonError::Decode(e)) => {
                return Err(ChError::new(
                    Code::IncorrectData,
                    format!("{e} (none of the request's rows were taken)"),
                ))
            }
            Err(other) => return Err(ChError::new(Code::Unknown, other.to_string())),
        }
    }
}

/// Shutting down before a request's rows were taken.
fn shutting_down_before() -> ChError {
    ChError::new(
        Code::TooManySimultaneousQueries,
        "ch-ingest is shutting down; none of the request's rows were taken (send it to \
         another instance or again after the restart)",
    )
}

struct Waiter {
    parts: Vec<(Engine, Receipt)>,
    busy: Duration,
    done: tokio::sync::oneshot::Sender<Result<Settled, ChError>>,
}

/// One table's group commits: wait up to `busy` after the first waiter
/// (less when no more come), then settle every receipt of the waiters that
/// arrived meanwhile, all at once, and answer each for its own rows.
async fn commit_loop(mut rx: tokio::sync::mpsc::UnboundedReceiver<Waiter>) {
    while let Some(first) = rx.recv().await {
        // Seal at the busy timeout, or as soon as the waiters stop coming
        // (QUIET without a new one): clients that each wait for their
        // answer all arrive just after the last commit, so waiting out the
        // whole timeout would only add latency.
        let deadline = tokio::time::Instant::now() + first.busy;
        let mut group = vec![first];
        loop {
            let gap = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .min(QUIET);
            match tokio::time::timeout(gap, rx.recv()).await {
                Ok(Some(w)) => group.push(w),
                Ok(None) | Err(_) => break,
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        while let Ok(w) = rx.try_recv() {
            group.push(w);
        }
        // Every settle is sent before any is awaited, so the engine seals
        // the group's rows together and they go out in one INSERT.
        let pending: Vec<_> = group
            .into_iter()
            .map(|w| {
                let settles: Vec<_> = w
                    .parts
                    .into_iter()
                    .map(|(engine, receipt)| engine.buffer.settle(receipt))
                    .collect();
                (settles, w.done)
            })
            .collect();
        for (settles, done) in pending {
            let mut all = Ok(Settled::default());
            for settle in settles {
                all = match (all, settle.await) {
                    (Ok(sum), Ok(s)) => Ok(add(sum, s)),
                    _ => Err(shutting_down()),
                };
            }
            let _ = done.send(all);
        }
    }
}

/// Two engines' answers for one request (rows that followed an engine swap).
fn add(mut a: Settled, b: Settled) -> Settled {
    a.rows += b.rows;
    a.stored_rows += b.stored_rows;
    a.spilled_rows += b.spilled_rows;
    a.failed_rows += b.failed_rows;
    a.failures.extend(b.failures);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csv_dialect_comes_from_the_clients_settings() {
        let url: Params = vec![("format_csv_allow_single_quotes".into(), "0".into())];
        let clause = vec![("format_csv_delimiter".into(), ";".into())];
        let csv = Settings {
            url: &url,
            clause: &clause,
        }
        .csv()
        .unwrap();
        assert_eq!(
            (csv.delimiter, csv.single_quotes, csv.double_quotes),
            (b';', false, true)
        );
        for bad in ["", ";;", "\"", "\n"] {
            let clause = vec![("format_csv_delimiter".into(), bad.into())];
            let e = Settings {
                url: &url,
                clause: &clause,
            }
            .csv()
            .unwrap_err();
            assert!(e.message.contains("format_csv_delimiter"), "{bad:?}: {e:?}");
        }
    }

    #[test]
    fn a_client_may_shorten_the_busy_timeout_but_never_stretch_it() {
        let configured = Duration::from_millis(200);
        let busy = |v: Option<&str>| {
            let url: Params = v
                .map(|v| vec![("async_insert_busy_timeout_ms".to_string(), v.to_string())])
                .unwrap_or_default();
            Settings {
                url: &url,
                clause: &[],
            }
            .busy_timeout(configured)
        };
        assert_eq!(busy(None).unwrap(), configured);
        assert_eq!(busy(Some("60000")).unwrap(), configured);
        assert_eq!(busy(Some("20")).unwrap(), Duration::from_millis(20));
        assert_eq!(busy(Some("0")).unwrap(), Duration::ZERO);
        let e = busy(Some("soon")).unwrap_err();
        assert!(e.message.contains("async_insert_busy_timeout_ms"), "{e:?}");
    }

    /// A waiting request whose rows went into an engine that was swapped
    /// out and finished draining before the group commit settled them is
    /// answered for what happened to them, not "shutting down".
    #[tokio::test]
    async fn rows_in_an_engine_swapped_out_before_the_commit_are_settled() {
        use super::super::tables::tests::{engine, table};
        use ch_ingest::sink::MemorySink;
        use std::sync::atomic::AtomicBool;
        let t = table("t");
        let stopping = AtomicBool::new(false);
        let (old_sink, new_sink) = (MemorySink::new(), MemorySink::new());
        let (b, s) = engine(&old_sink);
        t.swap(b, s, &stopping);
        let rows = formats::Rows {
            bytes: [1u64, 2, 3].iter().flat_map(|v| v.to_le_bytes()).collect(),
            ends: vec![8, 16, 24],
            skipped: 0,
        };
        let parts = track_all(&t, t.engine().unwrap(), &rows).await.unwrap();
        let (b, s) = engine(&new_sink);
        t.swap(b, s, &stopping);
        t.flush().await.unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(commit_loop(rx));
        let (done, answer) = tokio::sync::oneshot::channel();
        let busy = Duration::from_millis(1);
        tx.send(Waiter { parts, busy, done }).ok().unwrap();
        let settled = answer.await.unwrap().unwrap();
        assert_eq!((settled.rows, settled.stored_rows), (3, 3));
        assert_eq!((old_sink.rows(), new_sink.rows()), (3, 0));
    }
}
