//! `serve` HTTP: routes, request decoding and the answers.
//!
//! Owns: `POST /v1/tables/{table}/events` (NDJSON, one JSON object or a JSON
//! array; identity, gzip or zstd bodies), `POST /v1/flush`, `GET /health`,
//! `GET /ready`, `GET /metrics`; bearer-token checks; body, decompressed-size
//! and line limits; the status codes clients retry on.
//! Must not: let a table outside the allow-list reach ClickHouse, build SQL
//! (names are quoted by the sink, keys never leave the transcoder), or log a
//! token or a row.

use super::tables::{Table, Tables};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
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

pub struct Limits {
    pub max_body_bytes: usize,
    pub max_decompressed_bytes: usize,
    pub max_line_bytes: usize,
    pub admin_tokens: Vec<String>,
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

pub fn router(tables: Arc<Tables>, limits: Limits) -> Router {
    let mut registry = Registry::default();
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

/// Constant-time in the token's bytes, so timing does not reveal a prefix.
fn token_ok(headers: &HeaderMap, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    allowed.iter().fold(false, |ok, t| {
        let same = t.len() == given.len()
            && t.bytes()
                .zip(given.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        ok | same
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
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(table) = app.tables.by_name.get(&name).cloned() else {
        return error(StatusCode::NOT_FOUND, "no such table is allowed here");
    };
    let response = events_for(&app, &table, &headers, body);
    app.requests
        .get_or_create(&RequestLabels {
            table: table.name.clone(),
            code: response.status().as_u16(),
        })
        .inc();
    response
}

fn events_for(
    app: &App,
    table: &Table,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !token_ok(headers, &table.tokens) {
        return unauthorized();
    }
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the body is over max_body_bytes ({} bytes)",
                    app.limits.max_body_bytes
                ),
            )
        }
        Err(e) => return error(e.status(), e.body_text()),
    };
    let Some(engine) = table.engine() else {
        return with_retry_after(
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the table's schema has not been read from ClickHouse yet",
            ),
            1,
        );
    };
    let body = match decompress(headers, body, app.limits.max_decompressed_bytes) {
        Ok(b) => b,
        Err((status, message)) => return error(status, message),
    };
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let work = || track_body(&engine, &body, json_type, app.limits.max_line_bytes);
    if body.len() > INLINE_BODY {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

/// The body as sent, inflated; an error is the status and the message.
fn decompress(
    headers: &HeaderMap,
    body: Bytes,
    limit: usize,
) -> Result<Bytes, (StatusCode, String)> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let reader: Box<dyn Read + '_> = match encoding.as_deref() {
        None | Some("identity") | Some("") => {
            if body.len() > limit {
                return Err(too_large(limit));
            }
            return Ok(body);
        }
        Some("gzip") | Some("x-gzip") => Box::new(flate2::read::MultiGzDecoder::new(&body[..])),
        Some("zstd") => match zstd::stream::read::Decoder::new(&body[..]) {
            Ok(d) => Box::new(d),
            Err(e) => return Err((StatusCode::BAD_REQUEST, format!("zstd: {e}"))),
        },
        Some(other) => {
            return Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Encoding `{other}` is not supported (gzip, zstd or identity)"),
            ))
        }
    };
    // One byte past the limit tells "exactly at" from "over" without
    // inflating a bomb any further.
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    let read = reader.take(limit as u64 + 1).read_to_end(&mut out);
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
    engine: &ch_ingest::Buffer<ch_ingest::Json>,
    body: &[u8],
    json_type: bool,
    max_line: usize,
) -> Response {
    let trimmed = body.trim_ascii();
    let items: Vec<(usize, &[u8])> = if json_type && trimmed.starts_with(b"[") {
        match serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(trimmed) {
            Ok(v) => v
                .into_iter()
                .enumerate()
                .map(|(i, raw)| (i + 1, raw.get().as_bytes()))
                .collect(),
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("the body is not a JSON array of objects: {e}"),
                )
            }
        }
    } else if json_type {
        vec![(1, trimmed)]
    } else {
        ch_ingest::json::ndjson_lines(body).collect()
    };
    if items.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "the body is empty: send one JSON object per line",
        );
    }
    let mut accepted = 0usize;
    let mut rejected = Vec::new();
    let mut rejected_count = 0usize;
    let mut stopped = None;
    for (line, json) in &items {
        let result = if json.len() > max_line {
            Err(format!(
                "the line is {} bytes, over max_line_bytes ({max_line})",
                json.len()
            ))
        } else {
            match engine.track_json(json) {
                Ok(()) => Ok(()),
                Err(TrackJsonError::Decode(e)) => Err(e.to_string()),
                Err(other) => {
                    stopped = Some((*line, other));
                    break;
                }
            }
        };
        match result {
            Ok(()) => accepted += 1,
            Err(message) => {
                rejected_count += 1;
                if rejected.len() < LISTED_REJECTIONS {
                    rejected.push(json!({ "line": line, "error": message }));
                }
            }
        }
    }
    let mut body = json!({
        "accepted": accepted,
        "rejected_count": rejected_count,
        "rejected": rejected,
    });
    match stopped {
        Some((line, why)) => {
            body["retry_from_line"] = json!(line);
            body["error"] = json!(why.to_string());
            let (status, after) = match why {
                TrackJsonError::Full => (StatusCode::TOO_MANY_REQUESTS, 1),
                _ => (StatusCode::SERVICE_UNAVAILABLE, 5),
            };
            with_retry_after(answer(status, body), after)
        }
        None if accepted == 0 => answer(StatusCode::BAD_REQUEST, body),
        None => answer(StatusCode::OK, body),
    }
}

async fn flush(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if !token_ok(&headers, &app.limits.admin_tokens) {
        return unauthorized();
    }
    let mut out = serde_json::Map::new();
    let mut failed = 0;
    for table in app.tables.by_name.values() {
        let Some(engine) = table.engine() else {
            continue;
        };
        match engine.flush().await {
            Ok(r) => {
                failed += r.failed_rows;
                out.insert(
                    table.name.clone(),
                    json!({ "rows": r.rows, "failed_rows": r.failed_rows, "spilled_rows": r.spilled_rows }),
                );
            }
            Err(e) => {
                out.insert(table.name.clone(), json!({ "error": e.to_string() }));
            }
        }
    }
    let status = if failed > 0 {
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

async fn metrics(State(app): State<Arc<App>>) -> Response {
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
