//! `serve` HTTP: routes, request decoding and the answers.
//!
//! Owns: `POST /v1/tables/{table}/events` (NDJSON, one JSON object or a JSON
//! array; identity, gzip or zstd bodies), `POST /v1/flush`, `GET /health`,
//! `GET /ready`, `GET /metrics`; bearer-token checks; body, decompressed-size
//! and line limits; the status codes clients retry on.
//! Must not: let a table outside the allow-list reach ClickHouse, build SQL
//! (names are quoted by the sink, keys never leave the transcoder), or log a
//! token or a row.

use super::tables::{Engine, Table, Tables};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use ch_ingest::json::DecodeErrorKind;
use ch_ingest::TrackJsonError;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::json;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

/// At most this many rejected lines are listed in one answer (all are counted).
const LISTED_REJECTIONS: usize = 100;
/// Bodies larger than this are decoded with `block_in_place`, so a big
/// request never stalls the other connections on its worker thread.
const INLINE_BODY: usize = 256 << 10;
/// How long a request waits for one of the `max_concurrent_requests`
/// permits before it is told to come back (503): slow senders holding every
/// permit must not queue the rest without limit.
pub(super) const PERMIT_WAIT: Duration = Duration::from_secs(5);
/// The largest zstd window a body may use: 2^23 = 8 MiB.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

pub struct Limits {
    pub max_body_bytes: usize,
    pub max_decompressed_bytes: usize,
    pub max_line_bytes: usize,
    pub admin_tokens: Vec<String>,
    /// The permits of `max_concurrent_requests`: event and front-door
    /// requests read and decoded at once; more wait (before their bodies
    /// are read, so waiting costs no body memory).
    pub working: Arc<tokio::sync::Semaphore>,
    /// How long a client may take to send its body.
    pub body_timeout: Duration,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    table: String,
    code: u16,
}

pub struct App {
    tables: Arc<Tables>,
    limits: Limits,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
}

/// The NDJSON API, health and `/metrics`; `registry` may already hold
/// other families (the front door's), served with the engines' own.
pub fn router(tables: Arc<Tables>, limits: Limits, mut registry: Registry) -> Router {
    let engines = ch_ingest::metrics::BufferMetrics::new();
    for table in tables.by_name.values() {
        let t = table.clone();
        engines.watch_with(&[("table", &table.name)], move || t.totals());
    }
    registry.register_collector(Box::new(engines));
    let requests = Family::<RequestLabels, Counter>::default();
    registry.register(
        "ch_ingest_http_requests",
        "Event requests answered, by table and status code",
        requests.clone(),
    );
    let body_limit = limits.max_body_bytes;
    let app = Arc::new(App {
        tables,
        limits,
        registry,
        requests,
    });
    Router::new()
        .route("/v1/tables/{table}/events", post(events))
        .route("/v1/flush", post(flush))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(app)
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    answer(status, json!({ "error": message.into() }))
}

fn with_retry_after(mut r: Response, seconds: u32) -> Response {
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    r
}

/// The request's `Authorization: Bearer` token is one of `allowed` (or
/// none is required).
fn token_ok(headers: &HeaderMap, allowed: &[String]) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            // The scheme is case-insensitive (RFC 9110 §11.1).
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    token_allowed(given, allowed)
}

/// `given` is one of `allowed`, or `allowed` is empty (the table is open).
/// Every token is compared, each in time that depends only on `given`, so
/// timing reveals neither a prefix nor a length.
pub(super) fn token_allowed(given: Option<&str>, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let Some(given) = given else {
        return false;
    };
    allowed.iter().fold(false, |ok, t| {
        ok | same_secret(t.as_bytes(), given.as_bytes())
    })
}

fn unauthorized() -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

async fn events(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    // Everything that can refuse a request without its body does so before
    // the body is read: an unknown table or a bad token costs no memory.
    let Some(table) = app.tables.by_name.get(&name).cloned() else {
        return error(StatusCode::NOT_FOUND, "no such table is allowed here");
    };
    let response = if token_ok(&headers, &table.tokens) {
        match tokio::time::timeout(PERMIT_WAIT, app.limits.working.acquire()).await {
            Ok(Ok(_permit)) => events_for(&app, &table, &headers, request).await,
            Ok(Err(_)) => error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
            Err(_) => with_retry_after(
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "max_concurrent_requests requests are being read; try again",
                ),
                1,
            ),
        }
    } else {
        unauthorized()
    };
    app.requests
        .get_or_create(&RequestLabels {
            table: table.name.clone(),
            code: response.status().as_u16(),
        })
        .inc();
    response
}

async fn events_for(app: &App, table: &Table, headers: &HeaderMap, request: Request) -> Response {
    let Some(engine) = table.engine() else {
        return with_retry_after(
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the table's schema has not been read from ClickHouse yet",
            ),
            1,
        );
    };
    let read = tokio::time::timeout(app.limits.body_timeout, Bytes::from_request(request, &()));
    let body = match read.await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the body is over max_body_bytes ({} bytes)",
                    app.limits.max_body_bytes
                ),
            )
        }
        Ok(Err(e)) => return error(e.status(), e.body_text()),
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body took longer than body_timeout ({:?}) to arrive",
                    app.limits.body_timeout
                ),
            )
        }
    };
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    // A value that is not text is no encoding we know: 415 like any other,
    // never "no encoding" (the body would be read as plain NDJSON).
    let encoding = headers.get(header::CONTENT_ENCODING).map(|v| {
        v.to_str()
            .map_or_else(|_| "(not text)".into(), |v| v.trim().to_ascii_lowercase())
    });
    let identity = matches!(encoding.as_deref(), None | Some("identity") | Some(""));
    let large = !identity || body.len() > INLINE_BODY;
    let work = move || {
        let body = match decompress(encoding.as_deref(), body, app.limits.max_decompressed_bytes) {
            Ok(b) => b,
            Err((status, message)) => return error(status, message),
        };
        track_body(table, engine, &body, json_type, app.limits.max_line_bytes)
    };
    offload(large, work)
}

/// Runs `work` off the runtime's worker (`block_in_place`) when it may
/// take long: inflating or decoding a large body must not stall the other
/// connections on this worker.
pub(super) fn offload<T>(heavy: bool, work: impl FnOnce() -> T) -> T {
    if heavy {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

/// The body as sent, inflated; an error is the status and the message.
pub(super) fn decompress(
    encoding: Option<&str>,
    body: Bytes,
    limit: usize,
) -> Result<Bytes, (StatusCode, String)> {
    // With the reader, the size the body announces (gzip's trailer, a zstd
    // frame header), if any: the output is sized once from it. Grown by
    // doubling instead, a 64 MB body briefly held 1.5x that while the last
    // copy was made. A false announcement costs at most `limit`, which a
    // true one may cost anyway.
    let (reader, announced): (Box<dyn Read + '_>, Option<u64>) = match encoding {
        None | Some("identity") | Some("") => {
            if body.len() > limit {
                return Err(too_large(limit));
            }
            return Ok(body);
        }
        Some("gzip") | Some("x-gzip") => {
            let isize = body.last_chunk().map(|t| u64::from(u32::from_le_bytes(*t)));
            (
                Box::new(flate2::read::MultiGzDecoder::new(&body[..])),
                isize,
            )
        }
        // HTTP's `deflate` is the zlib format (RFC 9110 §8.4.1.2).
        Some("deflate") => (Box::new(flate2::read::ZlibDecoder::new(&body[..])), None),
        // As clickhouse-connect sends it: LZ4 frames.
        Some("lz4") => (
            Box::new(lz4_flex::frame::FrameDecoder::new(&body[..])),
            None,
        ),
        Some("zstd") => {
            // A frame may ask for a window of up to 2 GiB; cap it at 8 MiB
            // (zstd's own default for streams) so a hostile header cannot
            // make us allocate one.
            let decoder = zstd::stream::read::Decoder::new(&body[..])
                .and_then(|mut d| d.window_log_max(ZSTD_WINDOW_LOG_MAX).map(|()| d));
            match decoder {
                Ok(d) => (
                    Box::new(d),
                    zstd::zstd_safe::get_frame_content_size(&body)
                        .ok()
                        .flatten(),
                ),
                Err(e) => return Err((StatusCode::BAD_REQUEST, format!("zstd: {e}"))),
            }
        }
        Some(other) => {
            return Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "Content-Encoding `{other}` is not supported \
                     (gzip, deflate, zstd, lz4 or identity)"
                ),
            ))
        }
    };
    let capacity = announced.map_or(body.len().saturating_mul(4), |n| {
        usize::try_from(n).unwrap_or(usize::MAX)
    });
    let mut out = Vec::with_capacity(capacity.min(limit));
    // One byte past the limit tells "exactly at" from "over" without
    // inflating a bomb any further.
    let read = reader
        .take((limit as u64).saturating_add(1))
        .read_to_end(&mut out);
    match read {
        Ok(_) if out.len() > limit => Err(too_large(limit)),
        Ok(_) => Ok(out.into()),
        Err(e) => Err((
            StatusCode::BAD_REQUEST,
            format!("the body does not decompress: {e}"),
        )),
    }
}

fn too_large(limit: usize) -> (StatusCode, String) {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the decompressed body is over max_decompressed_bytes ({limit} bytes)"),
    )
}

fn track_body(
    table: &Table,
    engine: Engine,
    body: &[u8],
    json_type: bool,
    max_line: usize,
) -> Response {
    let mut tracker = Tracker::new(table, engine, max_line);
    let trimmed = body.trim_ascii();
    if json_type && trimmed.starts_with(b"[") {
        // Checked whole first (cheap: nothing is kept), so a syntax error
        // late in the array refuses the request rather than half of it.
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(trimmed) {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not a JSON array of objects: {e}"),
            );
        }
        // Then element by element, never holding a list of them: a body of
        // tiny elements would otherwise cost far more than its own size.
        let mut de = serde_json::Deserializer::from_slice(trimmed);
        // An error here can only be the elements left when tracking stopped.
        let _ = serde::Deserializer::deserialize_seq(&mut de, EachElement(&mut tracker));
    } else if json_type {
        tracker.offer(1, trimmed);
    } else {
        // One pass over the body: each line is read straight into a shard,
        // and a line over the limit is refused after at most that many bytes.
        let mut cursor = ch_ingest::json::NdjsonCursor::new(body).max_line(max_line);
        while let Some(line) = cursor.next_line() {
            let offered = tracker.offer_with(line, |buffer| {
                buffer.track_line(&mut cursor).map_or(Ok(()), |(_, r)| r)
            });
            if !offered {
                break;
            }
        }
    }
    tracker.answer()
}

/// A line over the limit, named by its setting.
fn too_long(reason: &str) -> String {
    format!("{reason} (max_line_bytes)")
}

/// Tracks a request's rows one at a time and keeps what the answer says.
struct Tracker<'a> {
    table: &'a Table,
    engine: Engine,
    max_line: usize,
    seen: usize,
    accepted: usize,
    rejected: Vec<serde_json::Value>,
    rejected_count: usize,
    /// Where tracking stopped, and why (the buffer is full or closed).
    stopped: Option<(usize, TrackJsonError)>,
}

impl<'a> Tracker<'a> {
    fn new(table: &'a Table, engine: Engine, max_line: usize) -> Self {
        Tracker {
            table,
            engine,
            max_line,
            seen: 0,
            accepted: 0,
            rejected: Vec::new(),
            rejected_count: 0,
            stopped: None,
        }
    }

    /// Tracks one row; `false` once the rest of the body must wait.
    fn offer(&mut self, line: usize, json: &[u8]) -> bool {
        if json.len() > self.max_line {
            self.seen += 1;
            let reason = format!(
                "the line is {} bytes, over the limit of {}",
                json.len(),
                self.max_line
            );
            self.reject(line, too_long(&reason));
            return true;
        }
        self.offer_with(line, |buffer| buffer.track_json(json))
    }

    /// Tracks one row with `track` (called again with the new engine's
    /// buffer if the schema changed under the request); `false` once the
    /// rest of the body must wait.
    fn offer_with(
        &mut self,
        line: usize,
        mut track: impl FnMut(&ch_ingest::Buffer<ch_ingest::Json>) -> Result<(), TrackJsonError>,
    ) -> bool {
        self.seen += 1;
        let result = {
            loop {
                match track(&self.engine.buffer) {
                    Ok(()) => break Ok(()),
                    Err(TrackJsonError::Decode(e)) if e.kind == DecodeErrorKind::TooLong => {
                        break Err(too_long(&e.reason))
                    }
                    Err(TrackJsonError::Decode(e)) => break Err(e.to_string()),
                    Err(TrackJsonError::Closed) => match self.table.engine() {
                        // The schema changed under this request: the rows so
                        // far drain with the old engine, the rest go to the
                        // new one.
                        Some(newer) if newer.generation != self.engine.generation => {
                            self.engine = newer;
                            self.table
                                .rerouted
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        _ => {
                            self.stopped = Some((line, TrackJsonError::Closed));
                            return false;
                        }
                    },
                    Err(other) => {
                        self.stopped = Some((line, other));
                        return false;
                    }
                }
            }
        };
        match result {
            Ok(()) => self.accepted += 1,
            Err(message) => self.reject(line, message),
        }
        true
    }

    fn reject(&mut self, line: usize, message: String) {
        self.rejected_count += 1;
        if self.rejected.len() < LISTED_REJECTIONS {
            self.rejected
                .push(json!({ "line": line, "error": message }));
        }
    }

    fn answer(self) -> Response {
        if self.seen == 0 {
            return error(
                StatusCode::BAD_REQUEST,
                "the body is empty: send one JSON object per line",
            );
        }
        let mut body = json!({
            "accepted": self.accepted,
            "rejected_count": self.rejected_count,
            "rejected": self.rejected,
        });
        match self.stopped {
            Some((line, why)) => {
                body["retry_from_line"] = json!(line);
                body["error"] = json!(why.to_string());
                let (status, after) = match why {
                    TrackJsonError::Full => (StatusCode::TOO_MANY_REQUESTS, 1),
                    _ => (StatusCode::SERVICE_UNAVAILABLE, 5),
                };
                with_retry_after(answer(status, body), after)
            }
            None if self.accepted == 0 => answer(StatusCode::BAD_REQUEST, body),
            None => answer(StatusCode::OK, body),
        }
    }
}

/// Feeds a JSON array's elements to a [`Tracker`] as they are parsed; the
/// "line" of an element is its 1-based position.
struct EachElement<'t, 'a>(&'t mut Tracker<'a>);

impl<'de> serde::de::Visitor<'de> for EachElement<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut position = 0;
        while let Some(raw) = seq.next_element::<&'de serde_json::value::RawValue>()? {
            position += 1;
            if !self.0.offer(position, raw.get().as_bytes()) {
                break;
            }
        }
        Ok(())
    }
}

async fn flush(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if !token_ok(&headers, &app.limits.admin_tokens) {
        return unauthorized();
    }
    let mut out = serde_json::Map::new();
    let mut failed = 0;
    let mut closed = false;
    for table in app.tables.by_name.values() {
        match table.flush().await {
            Ok(r) => {
                failed += r.failed_rows;
                out.insert(
                    table.name.clone(),
                    json!({ "rows": r.rows, "failed_rows": r.failed_rows, "spilled_rows": r.spilled_rows }),
                );
            }
            Err(e) => {
                closed = true;
                out.insert(table.name.clone(), json!({ "error": e.to_string() }));
            }
        }
    }
    // 503: shutting down, nothing more will be delivered through this
    // process; 502: ClickHouse refused rows (listed per table).
    let status = if closed {
        StatusCode::SERVICE_UNAVAILABLE
    } else if failed > 0 {
        StatusCode::BAD_GATEWAY
    } else {
        StatusCode::OK
    };
    answer(status, json!({ "tables": out }))
}

async fn ready(State(app): State<Arc<App>>) -> Response {
    let answered = app.tables.health.answered_within(Duration::from_secs(10));
    let loaded = app.tables.all_loaded();
    if answered && loaded {
        return (StatusCode::OK, "ready\n").into_response();
    }
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        match (answered, loaded) {
            (false, _) => "ClickHouse has not answered in the last 10 s",
            _ => "a table's schema has not been read yet",
        },
    )
}

async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    // The table names, row counts and error codes are the operator's
    // business: with admin tokens set, `/metrics` takes one too.
    if !token_ok(&headers, &app.limits.admin_tokens) {
        return unauthorized();
    }
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &app.registry).is_err() {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed");
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Whether `given` is `secret`, in time that depends only on `given`'s
/// length (which the caller knows): the secret's length does not leak
/// through an early exit.
pub(in crate::serve) fn same_secret(secret: &[u8], given: &[u8]) -> bool {
    let mut diff = u8::from(secret.len() != given.len());
    for (i, g) in given.iter().enumerate() {
        // Compared against the secret cycled, so every byte of `given`
        // costs the same whatever the secret's length.
        let s = secret.get(i % secret.len().max(1)).copied().unwrap_or(0);
        diff |= s ^ g;
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::super::tables::tests::{engine, table};
    use super::*;

    #[test]
    fn secrets_compare_by_content_only() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cret", b"s3cre"));
        assert!(!same_secret(b"s3cret", b"s3cret!"));
        assert!(!same_secret(b"s3cret", b"S3cret"));
        assert!(same_secret(b"", b""));
        assert!(!same_secret(b"", b"x"));
        assert!(!same_secret(b"x", b""));
    }
    use ch_ingest::sink::MemorySink;
    use std::sync::atomic::AtomicBool;

    async fn answer_of(r: Response) -> (StatusCode, serde_json::Value) {
        let status = r.status();
        let body = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn a_request_that_races_a_schema_swap_carries_on_with_the_new_engine() {
        let t = table("t");
        let stopping = AtomicBool::new(false);
        let (old_sink, new_sink) = (MemorySink::new(), MemorySink::new());
        let (b, s) = engine(&old_sink);
        t.swap(b, s, &stopping);
        let held = t.engine().unwrap();
        let (b, s) = engine(&new_sink);
        t.swap(b, s, &stopping);
        // The engine this request picked up is closed by now.
        t.flush().await.unwrap();
        let body = b"{\"id\":1}\n{\"id\":\"x\"}\n{\"id\":3}\n";
        let (status, json) = answer_of(track_body(&t, held, body, false, 1024)).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(
            (json["accepted"].as_u64(), json["rejected_count"].as_u64()),
            (Some(2), Some(1))
        );
        // An array goes element by element the same way.
        let array = br#" [{"id":4}, {"id":"x"}, {"id":6}] "#;
        let (status, json) =
            answer_of(track_body(&t, t.engine().unwrap(), array, true, 1024)).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(
            (
                json["accepted"].as_u64(),
                json["rejected"][0]["line"].as_u64()
            ),
            (Some(2), Some(2))
        );
        t.flush().await.unwrap();
        assert_eq!((old_sink.rows(), new_sink.rows()), (0, 4));
        assert_eq!(
            t.totals().0.rejected_closed,
            0,
            "the row went on to the new engine"
        );

        // Shut down for good: 503 and where to retry from, nothing lost.
        stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        let current = t.engine().unwrap();
        current.buffer.shutdown().await.unwrap();
        let (status, json) = answer_of(track_body(&t, current, body, false, 1024)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
        assert_eq!(json["retry_from_line"], 1);
        assert_eq!(json["accepted"], 0);
        let (status, json) =
            answer_of(track_body(&t, t.engine().unwrap(), array, true, 1024)).await;
        assert_eq!(
            (status, &json["retry_from_line"]),
            (StatusCode::SERVICE_UNAVAILABLE, &json!(1))
        );
    }
}

#[cfg(test)]
mod decompress_tests {
    use super::*;
    use std::io::Write;

    fn zstd_frame(window_log: u32) -> Vec<u8> {
        let mut e = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
        e.window_log(window_log).unwrap();
        e.write_all(b"{\"id\":1}\n").unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn a_zstd_frame_asking_for_a_huge_window_is_refused() {
        let ok = decompress(Some("zstd"), zstd_frame(20).into(), 1 << 20).unwrap();
        assert_eq!(&ok[..], b"{\"id\":1}\n");
        let (status, message) = decompress(Some("zstd"), zstd_frame(25).into(), 1 << 20)
            .expect_err("a 32 MiB window (zstd alone allows up to 128 MiB)");
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(message.contains("decompress"), "{message}");
    }

    #[test]
    fn inflating_stops_one_byte_past_the_limit() {
        let body = zstd::encode_all(&vec![b' '; 1000][..], 3).unwrap();
        assert!(decompress(Some("zstd"), body.clone().into(), 1000).is_ok());
        let (status, _) = decompress(Some("zstd"), body.into(), 999).unwrap_err();
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let (status, _) = decompress(Some("br"), Bytes::new(), 10).unwrap_err();
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[test]
    fn an_announced_size_sizes_the_buffer_and_a_false_one_is_refused() {
        let text = b"{\"id\":1}\n".repeat(1000);
        // zstd's one-shot API writes the content size into the frame.
        let zst = zstd::bulk::compress(&text, 3).unwrap();
        let out = decompress(Some("zstd"), zst.into(), 1 << 20).unwrap();
        assert_eq!(&out[..], &text[..]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&text).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            &decompress(Some("gzip"), gz.clone().into(), 1 << 20).unwrap()[..],
            &text[..]
        );
        // A trailer that lies (the CRC then fails, as a real lie would):
        // refused as corrupt, not trusted.
        for size in [0u32, 1, u32::MAX] {
            let mut lying = gz.clone();
            let at = lying.len() - 4;
            lying[at..].copy_from_slice(&size.to_le_bytes());
            let (status, _) = decompress(Some("gzip"), lying.into(), 1 << 20).unwrap_err();
            assert_eq!(status, StatusCode::BAD_REQUEST);
        }
        // At the limit exactly, whatever was announced.
        let out = decompress(Some("gzip"), gz.clone().into(), text.len()).unwrap();
        assert_eq!(out.len(), text.len());
        let (status, _) = decompress(Some("gzip"), gz.into(), text.len() - 1).unwrap_err();
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
