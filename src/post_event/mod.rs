//! The seed's row: one post-metric event.
//!
//! Owns: the `PostEvent` struct (the seed's `event_type`, `tweet_id`,
//! `occurred_at` and its optional fields), which encodes to the
//! `post_events` table, and that table's DDL ([`PostEvent::DDL`]). Must not:
//! parse JSON (decoding lives in `json`) or know about buffers.

pub(crate) mod json;

use serde::{Deserialize, Serialize};

/// A post-metric event: the seed's `Mixer.Metrics.PostEvent`.
///
/// Field order and types match [`PostEvent::DDL`]; a row encodes to 45 bytes
/// for a typical event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, clickhouse::Row)]
pub struct PostEvent {
    /// Required, e.g. `impression`, `like`, `retweet`, `reply`, `click`, `share`.
    pub event_type: String,
    /// Required.
    pub tweet_id: u64,
    /// Required: `DateTime`, UTC, seconds since the Unix epoch.
    pub occurred_at: u32,
    /// Who acted, if known.
    pub user_id: Option<u64>,
    /// Session, if known.
    pub session_id: Option<String>,
    /// `ios`, `android`, `web`...; empty when absent.
    pub client: String,
    /// ISO-3166 alpha-2, upper case; `[0, 0]` when absent (`FixedString(2)`).
    pub country: [u8; 2],
    /// Time spent on the post, if measured.
    pub dwell_ms: Option<u32>,
}

impl PostEvent {
    /// `CREATE TABLE` for the seed's table, with `{table}` as the name.
    pub const DDL: &'static str = "CREATE TABLE IF NOT EXISTS {table} (
  event_type  String,
  tweet_id    UInt64,
  occurred_at DateTime,
  user_id     Nullable(UInt64),
  session_id  Nullable(String),
  client      String,
  country     FixedString(2),
  dwell_ms    Nullable(UInt32)
) ENGINE = MergeTree ORDER BY (event_type, occurred_at, tweet_id)";

    /// Column names and ClickHouse types, in RowBinary order.
    pub const SCHEMA: &'static [(&'static str, &'static str)] = &[
        ("event_type", "String"),
        ("tweet_id", "UInt64"),
        ("occurred_at", "DateTime"),
        ("user_id", "Nullable(UInt64)"),
        ("session_id", "Nullable(String)"),
        ("client", "String"),
        ("country", "FixedString(2)"),
        ("dwell_ms", "Nullable(UInt32)"),
    ];

    /// The DDL for a table called `table` (quoted as an identifier).
    ///
    /// ```
    /// let sql = ch_ingest::PostEvent::create_table_sql("post_events");
    /// assert!(sql.starts_with("CREATE TABLE IF NOT EXISTS `post_events`"));
    /// ```
    pub fn create_table_sql(table: &str) -> String {
        Self::DDL.replace("{table}", &crate::sink::quote_table(table))
    }

    /// An event with the required fields and every optional one absent.
    pub fn new(event_type: impl Into<String>, tweet_id: u64, occurred_at: u32) -> Self {
        Self {
            event_type: event_type.into(),
            tweet_id,
            occurred_at,
            user_id: None,
            session_id: None,
            client: String::new(),
            country: [0, 0],
            dwell_ms: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_in_schema_order() {
        let mut buf = bytes::BytesMut::new();
        let cols = crate::rowbinary::encode_row(&PostEvent::new("like", 1, 2), &mut buf, None)
            .unwrap()
            .unwrap();
        let names: Vec<_> = PostEvent::SCHEMA.iter().map(|(n, _)| *n).collect();
        assert_eq!(cols, names);
        assert_eq!(
            <PostEvent as clickhouse::Row>::COLUMN_NAMES,
            names.as_slice()
        );
    }
}
