//! The shape of an INSERT: the order its rows go in and the format they are
//! sent as, chosen to cost the ClickHouse server least. The server sorts
//! every part it writes by the table's key and parses every row; rows that
//! arrive sorted, as Native columns, save it both (see BENCHMARKS.md,
//! "Server-friendly INSERTs").
//!
//! Owns: the knobs ([`InsertOrder`], [`InsertFormat`]), the plan learned
//! from the server once per table (`DESCRIBE`, `system.tables.sorting_key`)
//! and the two passes: [`sort`] (once per INSERT, before its first attempt,
//! so every retry, spill and replay carries the same bytes) and [`native`]
//! (per attempt, from those bytes). Both run on blocking threads. Must not:
//! lose or change a row: whatever fails (no plan, a type it cannot lay
//! out, bytes that do not walk) sends the rows as they came, in RowBinary,
//! and says so once in the log.

mod layout;
pub(crate) mod native;
pub(crate) mod sort;

use crate::batch::{ColumnNames, InsertBatch};
use crate::schema::Schema;
use crate::sink::SinkError;
use bytes::Bytes;
use clickhouse::Client;
use layout::Layout;
use sort::{KeyKind, SortKey};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// The order an INSERT's rows are sent in.
///
/// Any order is correct: the server sorts each part by the table's
/// `ORDER BY` key itself. Rows that arrive in that order make its sort
/// cheap. Parsed from `"arrival"`, `"sorted"` or `"sorted(col, col)"`
/// (the CLI's `--insert-order`, `serve.toml`'s `insert_order`).
///
/// ```
/// use ch_ingest::sink::InsertOrder;
/// assert_eq!("sorted".parse::<InsertOrder>(), Ok(InsertOrder::Sorted));
/// assert_eq!(
///     "sorted(event_type, tweet_id)".parse::<InsertOrder>(),
///     Ok(InsertOrder::SortedBy(vec!["event_type".into(), "tweet_id".into()])),
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum InsertOrder {
    /// As the rows were tracked (per shard batch, batches in seal order).
    Arrival,
    /// By the table's sorting key, read from the server
    /// (`system.tables.sorting_key`). The default: measured, it takes a
    /// fifth off the server's CPU per row. The leading plain columns of the
    /// key are used; a key that starts with an expression (`intHash32(id)`,
    /// `toDate(t)`) or a type this cannot order (Nullable, arrays), and a
    /// table without a key (Log, Memory, `ORDER BY tuple()`), keep arrival
    /// order, logged once.
    #[default]
    Sorted,
    /// By these columns, most significant first, whatever the server says
    /// (for a `Distributed` or `Buffer` table in front of the sorted one).
    SortedBy(Vec<String>),
}

/// Why an [`InsertOrder`] or [`InsertFormat`] did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not {expected}")]
pub struct ShapeParseError {
    input: String,
    expected: &'static str,
}

impl FromStr for InsertOrder {
    type Err = ShapeParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ShapeParseError {
            input: s.to_string(),
            expected: "an insert order: `arrival`, `sorted` or `sorted(column, ...)`",
        };
        let t = s.trim();
        match t.to_ascii_lowercase().as_str() {
            "arrival" => return Ok(InsertOrder::Arrival),
            "sorted" => return Ok(InsertOrder::Sorted),
            _ => {}
        }
        let inner = t
            .strip_prefix("sorted(")
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(err)?;
        let cols: Vec<String> = inner
            .split(',')
            .map(|c| {
                let c = c.trim();
                c.strip_prefix('`')
                    .and_then(|c| c.strip_suffix('`'))
                    .unwrap_or(c)
                    .to_string()
            })
            .collect();
        if cols.iter().any(String::is_empty) {
            return Err(err());
        }
        Ok(InsertOrder::SortedBy(cols))
    }
}

impl fmt::Display for InsertOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InsertOrder::Arrival => f.write_str("arrival"),
            InsertOrder::Sorted => f.write_str("sorted"),
            InsertOrder::SortedBy(cols) => write!(f, "sorted({})", cols.join(", ")),
        }
    }
}

/// The format an INSERT's rows are sent in.
///
/// Parsed from `"RowBinary"` or `"Native"` (any case).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum InsertFormat {
    /// The rows as the shards encoded them.
    RowBinary,
    /// One Native block per INSERT (columns one after another), transposed
    /// from the RowBinary rows by the table's `DESCRIBE`. The default:
    /// measured, the server spends a quarter less CPU on it. A table with a
    /// column it cannot transpose, and rows that do not match the table's
    /// types, go as RowBinary, logged once.
    #[default]
    Native,
}

impl FromStr for InsertFormat {
    type Err = ShapeParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "rowbinary" => Ok(InsertFormat::RowBinary),
            "native" => Ok(InsertFormat::Native),
            _ => Err(ShapeParseError {
                input: s.to_string(),
                expected: "an insert format: `RowBinary` or `Native`",
            }),
        }
    }
}

impl fmt::Display for InsertFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InsertFormat::RowBinary => "RowBinary",
            InsertFormat::Native => "Native",
        })
    }
}

/// What was learned about a table for the INSERTs of one column list.
#[derive(Debug)]
struct Plan {
    columns: ColumnNames,
    /// `None`: a column the table does not describe, or one with no layout.
    layout: Option<Layout>,
    key: Option<SortKey>,
    /// The Native declared types, when the format is Native and every
    /// column transposes.
    native: Option<Vec<String>>,
    /// Why the rows are not sorted, when `key` is `None`: what the log
    /// says, naming the column.
    unsorted: Option<String>,
    /// A column of the rows the table does not have (the INSERT will be
    /// refused, code 16 on 18.16).
    missing: Option<String>,
}

/// The body of one attempt.
pub(crate) enum Body {
    /// Send the batch's RowBinary chunks.
    RowBinary,
    /// Send this Native block (its chunks, one after another).
    Native(Vec<Bytes>),
}

/// A sink's shaping state: the knobs the engine set, and the plan per
/// column list, learned on first use.
#[derive(Debug, Default)]
pub(crate) struct Shaper {
    knobs: Mutex<(InsertOrder, InsertFormat)>,
    plan: tokio::sync::Mutex<Option<Arc<Plan>>>,
    /// Things said once: no key, no Native, bytes that did not walk, a
    /// column the table lacks.
    told: Mutex<[bool; 4]>,
}

impl Shaper {
    pub(crate) fn set(&self, order: &InsertOrder, format: InsertFormat) {
        *lock(&self.knobs) = (order.clone(), format);
    }

    fn knobs(&self) -> (InsertOrder, InsertFormat) {
        lock(&self.knobs).clone()
    }

    fn tell_once(&self, which: usize, f: impl FnOnce()) {
        let mut told = lock(&self.told);
        if !told[which] {
            told[which] = true;
            f();
        }
    }

    /// The plan for `columns`, learned from `client` the first time (and
    /// again when the columns change or the last plan failed to walk).
    /// `None` when the server could not be asked: this INSERT goes as it
    /// came, the next one asks again.
    async fn plan(&self, client: &Client, table: &str, columns: &ColumnNames) -> Option<Arc<Plan>> {
        let mut plan = self.plan.lock().await;
        if let Some(p) = plan.as_ref().filter(|p| p.columns == *columns) {
            return Some(p.clone());
        }
        let (order, format) = self.knobs();
        let learned = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            learn(client, table, columns, &order, format),
        )
        .await;
        match learned {
            Ok(Ok(p)) => {
                if let Some(column) = &p.missing {
                    self.tell_once(3, || {
                        tracing::warn!(
                            table,
                            column = column.as_str(),
                            "the rows have a column the table does not; ClickHouse will refuse their INSERTs"
                        )
                    });
                } else if let (None, Some(why)) = (&p.key, &p.unsorted) {
                    if order != InsertOrder::Arrival {
                        self.tell_once(0, || {
                            tracing::info!(table, %order, reason = why.as_str(), "rows go in arrival order")
                        });
                    }
                }
                if p.native.is_none() && format == InsertFormat::Native {
                    self.tell_once(1, || {
                        tracing::warn!(
                            table,
                            "a column cannot be sent as Native; INSERTs go as RowBinary"
                        )
                    });
                }
                let p = Arc::new(p);
                *plan = Some(p.clone());
                Some(p)
            }
            Ok(Err(error)) => {
                tracing::debug!(table, %error, "could not learn the table's shape; this INSERT goes as it came");
                None
            }
            Err(_) => None,
        }
    }

    /// Forgets the plan (its layout did not fit the rows): the next INSERT
    /// asks the server again.
    async fn forget(&self, error: &layout::WalkError, table: &str) {
        *self.plan.lock().await = None;
        self.tell_once(2, || {
            tracing::warn!(table, %error, "rows do not match the table's types; sent as they came")
        });
    }

    /// `batch` in the table's key order (once per INSERT, before its first
    /// attempt). Unchanged when the order is arrival, there is no key, the
    /// rows already are in order, or anything fails.
    pub(crate) async fn prepare(
        &self,
        client: &Client,
        table: &str,
        batch: Arc<InsertBatch>,
    ) -> Arc<InsertBatch> {
        if self.knobs().0 == InsertOrder::Arrival || batch.rows() < 2 {
            return batch;
        }
        let Some(plan) = self.plan(client, table, &batch.columns).await else {
            return batch;
        };
        if plan.key.is_none() || plan.layout.is_none() {
            return batch;
        }
        let input = batch.clone();
        let p = plan.clone();
        let sorted = tokio::task::spawn_blocking(move || {
            let (Some(layout), Some(key)) = (&p.layout, &p.key) else {
                return Ok(None);
            };
            sort::sort(layout, key, input.chunks(), input.rows())
        })
        .await;
        match sorted {
            Ok(Ok(Some(data))) => Arc::new(batch.with_body(data)),
            Ok(Ok(None)) => batch,
            Ok(Err(e)) => {
                self.forget(&e, table).await;
                batch
            }
            Err(_) => batch,
        }
    }

    /// What one attempt sends: the Native block of `batch` when the format
    /// is Native and the table allows it, else its RowBinary as it is.
    pub(crate) async fn body(&self, client: &Client, table: &str, batch: &InsertBatch) -> Body {
        if self.knobs().1 != InsertFormat::Native || batch.rows() == 0 {
            return Body::RowBinary;
        }
        let Some(plan) = self.plan(client, table, &batch.columns).await else {
            return Body::RowBinary;
        };
        if plan.native.is_none() || plan.layout.is_none() {
            return Body::RowBinary;
        }
        let chunks = batch.chunks().to_vec();
        let rows = batch.rows();
        let p = plan.clone();
        let block = tokio::task::spawn_blocking(move || {
            let (Some(layout), Some(types)) = (&p.layout, &p.native) else {
                return Err(layout::WalkError {
                    offset: 0,
                    reason: "no layout",
                });
            };
            native::transpose(layout, &p.columns, types, &chunks, rows)
        })
        .await;
        match block {
            Ok(Ok(block)) => Body::Native(block),
            Ok(Err(e)) => {
                self.forget(&e, table).await;
                Body::RowBinary
            }
            Err(_) => Body::RowBinary,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Asks the server for `table`'s types (and its sorting key, when the
/// order is `Sorted`), and plans for rows of `columns`.
async fn learn(
    client: &Client,
    table: &str,
    columns: &ColumnNames,
    order: &InsertOrder,
    format: InsertFormat,
) -> Result<Plan, SinkError> {
    let schema = Schema::fetch(client, table).await?;
    let types: Option<Vec<_>> = columns
        .iter()
        .map(|c| schema.index_of(c).map(|i| schema.columns()[i].ty.clone()))
        .collect();
    let layout = types.as_ref().and_then(|t| Layout::of(t).ok());
    let key_columns: Vec<String> = match order {
        InsertOrder::Arrival => Vec::new(),
        InsertOrder::SortedBy(cols) => cols.clone(),
        InsertOrder::Sorted => {
            let sql = format!(
                "SELECT sorting_key FROM system.tables WHERE {}",
                crate::sink::sql::system_tables_filter(table)
            );
            let text = crate::sink::fetch_text(client, &sql).await?;
            key_expressions(text.trim_end_matches('\n'))
        }
    };
    let missing = columns
        .iter()
        .find(|c| schema.index_of(c).is_none())
        .map(|c| c.to_string());
    let mut unsorted = None;
    let key = match (&types, &layout) {
        (Some(types), Some(layout)) => {
            let mut key = Vec::new();
            for expr in &key_columns {
                let Some(i) = columns.iter().position(|c| c == expr) else {
                    if key.is_empty() {
                        unsorted = Some(format!(
                            "the sorting key starts with `{expr}`, which is not a column of the rows"
                        ));
                    }
                    break;
                };
                match KeyKind::of(&types[i]) {
                    Some(kind) if sort::fits(&layout.fields[i], kind) => key.push((i, kind)),
                    _ => {
                        if key.is_empty() {
                            unsorted = Some(format!(
                                "the sorting key's column `{expr}` ({}) is not one rows are sorted by here",
                                types[i]
                            ));
                        }
                        break;
                    }
                }
            }
            if key_columns.is_empty() {
                unsorted = Some("the table has no sorting key".to_string());
            }
            (!key.is_empty()).then_some(SortKey { columns: key })
        }
        _ => {
            unsorted = Some(match &missing {
                Some(c) => format!("the rows' column `{c}` is not in the table"),
                None => "a column's type has no byte layout here".to_string(),
            });
            None
        }
    };
    // Measured on 18.16: a Native `String` column into a
    // `LowCardinality(String)` one is refused (code 368, "Bad cast from
    // type DB::ColumnString to DB::ColumnLowCardinality"), and a plain
    // Native tuple into a `Tuple(LowCardinality(String), ...)` column
    // crashed the server (SIGSEGV). Tables with LowCardinality anywhere go
    // as RowBinary.
    let low_cardinality = types.iter().flatten().any(has_low_cardinality);
    let native = match (&types, &layout, format) {
        (Some(types), Some(_), InsertFormat::Native) if !low_cardinality => Some(
            types
                .iter()
                .map(|t| native::declared(t).to_string())
                .collect(),
        ),
        _ => None,
    };
    Ok(Plan {
        columns: columns.clone(),
        layout,
        key,
        native,
        unsorted,
        missing,
    })
}

fn has_low_cardinality(ty: &crate::schema::Type) -> bool {
    use crate::schema::Type;
    match ty {
        Type::LowCardinality(_) => true,
        Type::Nullable(t) | Type::Array(t) => has_low_cardinality(t),
        Type::Map(k, v) => has_low_cardinality(k) || has_low_cardinality(v),
        Type::Tuple(items) => items.iter().any(|(_, t)| has_low_cardinality(t)),
        _ => false,
    }
}

/// The elements of a `sorting_key` (`a, intHash32(b), c`): split at
/// top-level commas, each a plain column name (backquotes removed) or the
/// expression as written (which names no column, and ends the key).
fn key_expressions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut cur = String::new();
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '`' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, ',') if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|e| {
            let e = e.trim();
            e.strip_prefix('`')
                .and_then(|e| e.strip_suffix('`'))
                .unwrap_or(e)
                .to_string()
        })
        .filter(|e| !e.is_empty())
        .collect()
}

/// The sort pass on its own, for benches and conformance tests (through
/// `test_util`): rows of `schema` (its columns in order). The Native pass
/// is public: [`native_block`].
#[cfg(feature = "test-util")]
pub mod passes {
    use super::*;

    fn layout(schema: &Schema) -> Result<Layout, String> {
        let types: Vec<_> = schema.columns().iter().map(|c| c.ty.clone()).collect();
        Layout::of(&types).map_err(|i| format!("column {i} has no layout"))
    }

    /// `chunks` sorted by the `key` columns; `None` when already in order.
    pub fn sort_rows(
        schema: &Schema,
        key: &[&str],
        chunks: &[Bytes],
        rows: u64,
    ) -> Result<Option<Bytes>, String> {
        let layout = layout(schema)?;
        let columns = key
            .iter()
            .map(|k| {
                let i = schema.index_of(k).ok_or(format!("no column `{k}`"))?;
                let kind =
                    KeyKind::of(&schema.columns()[i].ty).ok_or(format!("`{k}` cannot be a key"))?;
                Ok((i, kind))
            })
            .collect::<Result<_, String>>()?;
        sort::sort(&layout, &SortKey { columns }, chunks, rows).map_err(|e| e.to_string())
    }
}

/// The Native block a [`ClickHouseSink`](super::ClickHouseSink) sends
/// for `rows` RowBinary rows of `schema` (its columns in order), back to
/// back in `chunks`, as the pieces it sends one after another: for tools
/// that speak Native to a server or a front door themselves.
///
/// ```
/// use ch_ingest::{rowbinary::encode_row, sink::native_block, PostEvent, Schema};
/// let schema = Schema::new(PostEvent::SCHEMA.iter().copied()).unwrap();
/// let mut rows = bytes::BytesMut::new();
/// encode_row(&PostEvent::new("like", 42, 1_700_000_000), &mut rows, None).unwrap();
/// let block = native_block(&schema, &[rows.freeze()], 1).unwrap().concat();
/// assert_eq!(block[..2], [schema.columns().len() as u8, 1]); // columns, rows
/// ```
///
/// Rows that do not fit the schema are a [`RowBinaryError`](crate::rowbinary::RowBinaryError) at their byte.
pub fn native_block(
    schema: &Schema,
    chunks: &[Bytes],
    rows: u64,
) -> Result<Vec<Bytes>, crate::rowbinary::RowBinaryError> {
    let fail =
        |column: Option<String>, offset: usize, reason: String| crate::rowbinary::RowBinaryError {
            column,
            offset,
            reason,
        };
    let types: Vec<_> = schema.columns().iter().map(|c| c.ty.clone()).collect();
    let layout = Layout::of(&types).map_err(|i| {
        let c = &schema.columns()[i];
        fail(
            Some(c.name.to_string()),
            0,
            format!("{} has no RowBinary layout", c.ty),
        )
    })?;
    let declared: Vec<String> = schema
        .columns()
        .iter()
        .map(|c| native::declared(&c.ty).to_string())
        .collect();
    native::transpose(&layout, schema.names(), &declared, chunks, rows)
        .map_err(|e| fail(None, e.offset, e.reason.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knobs_parse_and_print() {
        for s in ["arrival", "sorted", "sorted(a, b)"] {
            assert_eq!(s.parse::<InsertOrder>().unwrap().to_string(), s);
        }
        assert_eq!(
            "sorted(`a`,b)".parse::<InsertOrder>(),
            Ok(InsertOrder::SortedBy(vec!["a".into(), "b".into()]))
        );
        for bad in ["", "random", "sorted()", "sorted(a,,b)", "sorted(a"] {
            let e = bad.parse::<InsertOrder>().unwrap_err().to_string();
            assert!(e.contains("insert order"), "{bad}: {e}");
        }
        assert_eq!("native".parse(), Ok(InsertFormat::Native));
        assert_eq!("RowBinary".parse(), Ok(InsertFormat::RowBinary));
        assert!("CSV"
            .parse::<InsertFormat>()
            .unwrap_err()
            .to_string()
            .contains("`CSV`"));
    }

    #[test]
    fn sorting_keys_split_at_top_level_commas() {
        assert_eq!(
            key_expressions("event_type, occurred_at, tweet_id"),
            ["event_type", "occurred_at", "tweet_id"]
        );
        assert_eq!(
            key_expressions("a, intHash32(b, 'x,y'), `c`"),
            ["a", "intHash32(b, 'x,y')", "c"]
        );
        assert!(key_expressions("").is_empty());
    }
}
