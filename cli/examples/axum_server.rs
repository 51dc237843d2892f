//! The pattern a high-QPS server copies: one shared `Buffer`, one `track`
//! per request (never blocks, never awaits I/O), the engine's metrics at
//! `/metrics`, and a drain on shutdown so no accepted event is lost.
//!
//! ```text
//! CLICKHOUSE_URL=http://127.0.0.1:8123 cargo run --release --example axum_server
//! curl -X POST localhost:3000/posts/42/like      # 202, the event is buffered
//! curl localhost:3000/metrics | grep acked_rows  # what ClickHouse acknowledged
//! ```
//!
//! Ctrl-C stops accepting requests, then flushes everything buffered.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use ch_ingest::metrics::BufferMetrics;
use ch_ingest::sink::{nodelay_client, ClickHouseSink};
use ch_ingest::{Buffer, PostEvent, TrackError};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

// A binary picks the allocator; the library never does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct App {
    events: Buffer<PostEvent>,
    registry: Registry,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into());
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let client = nodelay_client().with_url(&url);
    client
        .query(&PostEvent::create_table_sql("post_events"))
        .execute()
        .await?;

    let events: Buffer<PostEvent> = Buffer::builder()
        .max_rows(500)
        .flush_interval(Duration::from_secs(10))
        .build(ClickHouseSink::new(client, "post_events"))?;

    // The engine's counters and histograms, in the service's own registry.
    let mut registry = Registry::default();
    let metrics = BufferMetrics::new();
    metrics.watch(&events, &[("table", "post_events")]);
    registry.register_collector(Box::new(metrics));

    let app = Arc::new(App {
        events: events.clone(),
        registry,
    });
    let router = Router::new()
        .route("/posts/{tweet_id}/{event_type}", post(track))
        .route("/metrics", get(metrics_text))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{listen}, inserting into {url}");
    // `axum::serve` keeps it short; it sets no header-read timeout and no
    // connection cap. Exposed to untrusted clients, do what `ch-ingest
    // serve` does (src/cli/serve/listener.rs): hyper's HTTP/1 builder with a
    // timer and `header_read_timeout`, and a semaphore around accept.
    axum::serve(listener, router)
        .with_graceful_shutdown(stop_signal())
        .await?;

    // Requests have stopped: deliver what is buffered before exiting.
    let report = events.shutdown().await?;
    println!(
        "drained: {} rows delivered, {} failed",
        report.rows, report.failed_rows
    );
    Ok(())
}

/// Ctrl-C, or SIGTERM (what an orchestrator sends before it kills a pod).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn track(
    State(app): State<Arc<App>>,
    Path((tweet_id, event_type)): Path<(u64, String)>,
) -> StatusCode {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32);
    match app.events.track(PostEvent::new(event_type, tweet_id, now)) {
        Ok(()) => StatusCode::ACCEPTED,
        // ClickHouse is behind and the buffer is at its bound: shed load
        // instead of growing without limit; the client may retry.
        Err(TrackError::Full(_)) | Err(TrackError::Closed(_)) => StatusCode::SERVICE_UNAVAILABLE,
        Err(TrackError::Encode { .. }) => StatusCode::BAD_REQUEST,
    }
}

async fn metrics_text(State(app): State<Arc<App>>) -> impl IntoResponse {
    let mut text = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut text, &app.registry);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}
