//! Prometheus export (feature `metrics`): every [`Stats`] field and every
//! histogram of any number of engines, each engine under its own labels.
//!
//! Owns: [`BufferMetrics`], a `prometheus-client` collector an embedding
//! server registers in its own registry. Must not: keep an engine running
//! (it holds only the engine's counters, never a handle that delays its
//! drain) or touch the hot path: everything is read at scrape time.
//!
//! ```
//! use ch_ingest::{Buffer, PostEvent, metrics::BufferMetrics, sink::MemorySink};
//! use prometheus_client::registry::Registry;
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! # rt.block_on(async {
//! let buffer: Buffer<PostEvent> = Buffer::builder().build(MemorySink::new()).unwrap();
//! let metrics = BufferMetrics::new();
//! metrics.watch(&buffer, &[("table", "post_events")]);
//! let mut registry = Registry::default();
//! registry.register_collector(Box::new(metrics));
//!
//! buffer.track(PostEvent::new("like", 1, 1_700_000_000)).unwrap();
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
//! assert!(text.contains(r#"ch_ingest_tracked_rows_total{table="post_events"} 1"#));
//! # });
//! ```

use crate::{Buffer, Histogram, Histograms, StatKind, Stats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use std::sync::{Arc, Mutex};

type Read = Arc<dyn Fn() -> (Stats, Histograms) + Send + Sync>;
type Labels = Vec<(String, String)>;
/// One engine at scrape time: its labels, its counters, its histograms.
type Snapshot = (Labels, Vec<crate::StatField>, Histograms);
type Pick = fn(&Histograms) -> &Histogram;

struct Source {
    labels: Labels,
    read: Read,
}

/// A collector over engines; clones share the same list.
#[derive(Clone, Default)]
pub struct BufferMetrics {
    sources: Arc<Mutex<Vec<Source>>>,
}

impl std::fmt::Debug for BufferMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.sources.lock().map(|s| s.len()).unwrap_or(0);
        f.debug_struct("BufferMetrics")
            .field("engines", &n)
            .finish()
    }
}

impl BufferMetrics {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Exports `buffer`'s counters and histograms under `labels`.
    pub fn watch<T>(&self, buffer: &Buffer<T>, labels: &[(&str, &str)]) {
        let read = buffer.stats_reader();
        self.watch_with(labels, read);
    }

    /// Exports what `read` returns under `labels`: for a caller that swaps
    /// engines behind one name and keeps the counters monotonic itself.
    pub fn watch_with(
        &self,
        labels: &[(&str, &str)],
        read: impl Fn() -> (Stats, Histograms) + Send + Sync + 'static,
    ) {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Ok(mut sources) = self.sources.lock() {
            sources.push(Source {
                labels,
                read: Arc::new(read),
            });
        }
    }
}

impl Collector for BufferMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Read every engine once, outside the lock's critical formatting.
        let snapshots: Vec<Snapshot> = {
            let Ok(sources) = self.sources.lock() else {
                return Ok(());
            };
            sources
                .iter()
                .map(|s| {
                    let (stats, hist) = (s.read)();
                    (s.labels.clone(), stats.fields(), hist)
                })
                .collect()
        };
        let fields = Stats::default().fields();
        for (i, field) in fields.iter().enumerate() {
            let name = format!("ch_ingest_{}", field.name);
            let kind = match field.kind {
                StatKind::Counter => MetricType::Counter,
                StatKind::Gauge => MetricType::Gauge,
            };
            let mut family = encoder.encode_descriptor(&name, field.help.trim(), None, kind)?;
            for (labels, values, _) in &snapshots {
                let value = values[i].value;
                let mut m = family.encode_family(labels)?;
                match field.kind {
                    StatKind::Counter => m.encode_counter::<NoLabelSet, _, u64>(&value, None)?,
                    StatKind::Gauge => m.encode_gauge(&value)?,
                }
            }
        }
        let histograms: [(&str, &str, Pick); 4] = [
            (
                "ch_ingest_insert_seconds",
                "Seconds from an INSERT's dispatch to its outcome, retries included.",
                |h| &h.insert_seconds,
            ),
            ("ch_ingest_insert_rows", "Rows per INSERT.", |h| {
                &h.insert_rows
            }),
            (
                "ch_ingest_insert_bytes",
                "RowBinary bytes per INSERT.",
                |h| &h.insert_bytes,
            ),
            (
                "ch_ingest_track_seconds",
                "Seconds one track call took (one call in 1024 per shard is timed).",
                |h| &h.track_seconds,
            ),
        ];
        for (name, help, pick) in histograms {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for (labels, _, hist) in &snapshots {
                let h = pick(hist);
                let mut m = family.encode_family(labels)?;
                m.encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::MemorySink;
    use crate::PostEvent;
    use prometheus_client::registry::Registry;

    #[tokio::test]
    async fn every_stats_field_and_histogram_is_exported_per_engine() {
        let a: Buffer<PostEvent> = Buffer::builder().build(MemorySink::new()).unwrap();
        let b: Buffer<PostEvent> = Buffer::builder().build(MemorySink::new()).unwrap();
        let metrics = BufferMetrics::new();
        metrics.watch(&a, &[("table", "a")]);
        metrics.watch(&b, &[("table", "b")]);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(metrics.clone()));
        for i in 0..3 {
            a.track(PostEvent::new("like", i, 1)).unwrap();
        }
        a.flush().await.unwrap();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for field in Stats::default().fields() {
            let suffix = if field.kind == StatKind::Counter {
                "_total"
            } else {
                ""
            };
            let line = format!("ch_ingest_{}{suffix}{{table=\"a\"}}", field.name);
            assert!(text.contains(&line), "missing {line}\n{text}");
        }
        assert!(text.contains("ch_ingest_acked_rows_total{table=\"a\"} 3"));
        assert!(text.contains("ch_ingest_acked_rows_total{table=\"b\"} 0"));
        assert!(text.contains("ch_ingest_insert_rows_count{table=\"a\"} 1"));
        assert!(text.contains("ch_ingest_insert_rows_bucket{le=\"+Inf\",table=\"a\"} 1"));
        assert!(text.contains("# TYPE ch_ingest_buffered_rows gauge"));
        assert!(text.contains("# TYPE ch_ingest_track_seconds histogram"));
    }
}
