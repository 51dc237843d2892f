//! The front door's Prometheus families, served on `/metrics` beside the
//! engines' own: requests by what they were and how they were answered,
//! rows by how they were acknowledged, and the INSERTs' answer latency
//! (what a waiting client sees).
//!
//! Owns: the families and their labels. Must not: label by anything a
//! request can choose freely (a table name is one of the allow-list's, a
//! code one of ClickHouse's), so a client cannot grow the registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

/// What a request turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An INSERT of data into an allowed table (answered by ch-ingest);
    /// `wait`: answered once acknowledged, not once buffered.
    Insert { wait: bool },
    /// Forwarded to ClickHouse by `passthrough`.
    Forward,
    /// `DESCRIBE TABLE t FORMAT Native` of a served table, answered from
    /// its schema.
    Describe,
    /// A query `passthrough` does not forward.
    Refused,
    /// Refused before its query was known (body, encoding, syntax).
    Invalid,
    /// No query at all (`GET /`): answered `Ok.` as ClickHouse does.
    Ping,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Insert { .. } => "insert",
            Kind::Forward => "forward",
            Kind::Describe => "describe",
            Kind::Refused => "refused",
            Kind::Invalid => "invalid",
            Kind::Ping => "ping",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    kind: &'static str,
    status: u16,
    /// ClickHouse's exception code of the answer; 0 for a success.
    exception_code: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RowLabels {
    table: String,
    /// `stored`, `spilled` or `buffered`, as in the answer's summary;
    /// `skipped` for bad rows `input_format_allow_errors_*` let through.
    ack: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    /// `wait` (answered once acknowledged) or `async` (once buffered).
    mode: &'static str,
}

/// The front door's families; cheap to clone (they share their counters).
#[derive(Clone)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    rows: Family<RowLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
}

impl Metrics {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            requests: Family::default(),
            rows: Family::default(),
            // 1 ms to about 65 s: a waiting INSERT's answer spans the
            // group commit's wait, ClickHouse's INSERT and its retries.
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 17))
            }),
        };
        registry.register(
            "ch_ingest_front_door_requests",
            "Requests to the ClickHouse protocol (/, /?query=), by kind, HTTP status and ClickHouse exception code",
            m.requests.clone(),
        );
        registry.register(
            "ch_ingest_front_door_rows",
            "Rows of front-door INSERTs, by table and how they were acknowledged",
            m.rows.clone(),
        );
        registry.register(
            "ch_ingest_front_door_insert_seconds",
            "Time from a front-door INSERT's arrival to its answer, by ack mode",
            m.latency.clone(),
        );
        m
    }

    /// One request answered.
    pub fn answered(&self, kind: Kind, status: u16, exception_code: u32) {
        self.requests
            .get_or_create(&RequestLabels {
                kind: kind.label(),
                status,
                exception_code,
            })
            .inc();
    }

    /// Rows of one INSERT, once answered.
    pub fn rows(&self, table: &str, ack: &'static str, rows: u64) {
        if rows > 0 {
            self.rows
                .get_or_create(&RowLabels {
                    table: table.to_string(),
                    ack,
                })
                .inc_by(rows);
        }
    }

    /// How long one INSERT took to answer.
    pub fn latency(&self, waited: bool, took: Duration) {
        self.latency
            .get_or_create(&LatencyLabels {
                mode: if waited { "wait" } else { "async" },
            })
            .observe(took.as_secs_f64());
    }
}
