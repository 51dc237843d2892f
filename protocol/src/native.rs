//! ClickHouse's `Native` format as clients send it over HTTP (what
//! clickhouse-connect inserts with): blocks of a column count, a row count,
//! then per column its name, its type and its values column by column.
//! Read back into RowBinary rows, one value at a time per column, then
//! joined per row in the table's order.
//!
//! Owns: the Native column encodings (fixed width, strings, Nullable null
//! maps, Array and Map offsets, Tuple elements, LowCardinality
//! dictionaries with their prefix), and the one block ch-ingest writes: a
//! `DESCRIBE` answer ([`describe_block`]). Must not: trust a count before
//! checking it against the bytes left, hold more than its budget of decoded
//! bytes (a LowCardinality key copies its dictionary entry, so a body of
//! one-byte keys would otherwise grow without bound), or panic on any input.

use ch_ingest::rowbinary::leb128;
use ch_ingest::Type;

/// Why a Native body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeError {
    pub at: usize,
    pub reason: String,
    /// The body decodes to more than the reader's budget: the request is
    /// too large, not malformed.
    pub too_large: bool,
}

/// One column of a block: each row's value in RowBinary, back to back.
#[derive(Debug, Default)]
pub struct Column {
    pub bytes: Vec<u8>,
    pub ends: Vec<usize>,
}

impl Column {
    pub fn row(&self, r: usize) -> &[u8] {
        let start = if r == 0 { 0 } else { self.ends[r - 1] };
        &self.bytes[start..self.ends[r]]
    }

    fn end_row(&mut self) {
        self.ends.push(self.bytes.len());
    }
}

/// One block: its rows and its columns by name, with the types it gave.
#[derive(Debug)]
pub struct Block {
    pub rows: usize,
    pub columns: Vec<(String, Type, Column)>,
}

pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    /// Decoded bytes (values and their row ends) this reader may still
    /// produce, over every block it reads.
    budget: usize,
}

impl<'a> Reader<'a> {
    /// A reader without a budget of its own (the caller bounds the body).
    pub fn new(data: &'a [u8]) -> Self {
        Self::with_budget(data, usize::MAX)
    }

    /// A reader that refuses (`too_large`) to decode more than `budget`
    /// bytes of columns, counting each value and each row end (8 bytes).
    pub fn with_budget(data: &'a [u8], budget: usize) -> Self {
        Reader {
            data,
            pos: 0,
            budget,
        }
    }

    /// Takes `n` decoded bytes out of the budget, before they are made.
    fn charge(&mut self, n: usize) -> Result<(), NativeError> {
        match self.budget.checked_sub(n) {
            Some(left) => {
                self.budget = left;
                Ok(())
            }
            None => Err(NativeError {
                too_large: true,
                ..self.err("the body decodes to more than max_decoded_bytes")
            }),
        }
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// How many bytes have been read.
    pub fn position(&self) -> usize {
        self.pos
    }

    fn err(&self, reason: impl Into<String>) -> NativeError {
        NativeError {
            at: self.pos,
            reason: reason.into(),
            too_large: false,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], NativeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                self.err(format!(
                    "needs {n} more bytes, {} left",
                    self.data.len() - self.pos
                ))
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u64(&mut self) -> Result<u64, NativeError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or_default()))
    }

    pub fn leb128(&mut self) -> Result<u64, NativeError> {
        let (value, used) =
            leb128::read(&self.data[self.pos..]).map_err(|e| self.err(e.reason()))?;
        self.pos += used;
        Ok(value)
    }

    /// A count of things that take at least `min` bytes each.
    fn count(&mut self, n: u64, min: usize) -> Result<usize, NativeError> {
        let left = (self.data.len() - self.pos) as u64;
        if n.saturating_mul(min as u64) > left {
            return Err(self.err(format!("{n} values cannot fit in the {left} bytes left")));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<&'a [u8], NativeError> {
        let n = self.leb128()?;
        let n = self.count(n, 1)?;
        self.take(n)
    }

    /// A string that must be UTF-8 (`what` names it in the error).
    pub fn text(&mut self, what: &str) -> Result<&'a str, NativeError> {
        let bytes = self.string()?;
        std::str::from_utf8(bytes).map_err(|_| self.err(format!("{what} is not UTF-8")))
    }

    /// The next block.
    pub fn block(&mut self) -> Result<Block, NativeError> {
        let ncols = self.leb128()?;
        let ncols = self.count(ncols, 2)?;
        let rows = self.leb128()?;
        // Every column reads at least a byte per row (a zero-width type
        // is counted as one), so a block's rows are bounded by the bytes
        // left as each column is read. A block without columns has
        // nothing to bound them: ClickHouse stores nothing from it, and
        // here each row would become a row of defaults.
        if ncols == 0 && rows > 0 {
            return Err(self.err(format!("a block of {rows} rows has no columns")));
        }
        let rows = usize::try_from(rows).map_err(|_| self.err("too many rows"))?;
        let mut columns = Vec::with_capacity(ncols);
        for _ in 0..ncols {
            let name = self.text("a column name")?.to_string();
            let ty_text = self.text("a column type")?;
            let ty = Type::parse(ty_text)
                .map_err(|e| self.err(format!("column {name}: type `{ty_text}`: {e}")))?;
            prefix(&ty, self)?;
            let col = column(&ty, rows, self).map_err(|e| NativeError {
                reason: format!("column {name} ({ty}): {}", e.reason),
                ..e
            })?;
            columns.push((name, ty, col));
        }
        Ok(Block { rows, columns })
    }
}

/// The serialization prefix: LowCardinality's key version, wherever one
/// is nested, before any data of the column.
fn prefix(ty: &Type, r: &mut Reader<'_>) -> Result<(), NativeError> {
    match ty {
        Type::LowCardinality(_) => {
            let version = r.u64()?;
            if version != 1 {
                return Err(r.err(format!(
                    "LowCardinality key version {version} (only 1, shared dictionaries, exists)"
                )));
            }
            Ok(())
        }
        Type::Nullable(t) | Type::Array(t) => prefix(t, r),
        Type::Tuple(items) => items.iter().try_for_each(|(_, t)| prefix(t, r)),
        Type::Map(k, v) => {
            prefix(k, r)?;
            prefix(v, r)
        }
        _ => Ok(()),
    }
}

/// `n` values of `ty`, each as its RowBinary, charged to the reader's
/// budget. Only a LowCardinality column can decode to more than a small
/// multiple of the bytes it reads, so it charges key by key; every other
/// column is charged once it is made.
fn column(ty: &Type, n: usize, r: &mut Reader<'_>) -> Result<Column, NativeError> {
    let out = values(ty, n, r)?;
    if !matches!(ty, Type::LowCardinality(_)) {
        r.charge(out.bytes.len() + out.ends.len() * ROW_END)?;
    }
    Ok(out)
}

/// What a row end costs: its place in `Column::ends`.
const ROW_END: usize = std::mem::size_of::<usize>();

fn values(ty: &Type, n: usize, r: &mut Reader<'_>) -> Result<Column, NativeError> {
    let mut out = Column::default();
    if let Some(w) = ty.fixed_width() {
        let n = r.count(n as u64, w.max(1))?;
        let data = r.take(n * w)?;
        out.bytes.extend_from_slice(data);
        out.ends.extend((1..=n).map(|i| i * w));
        if let Type::Enum8(items) = ty {
            check_enum(
                data.iter().map(|&b| i16::from(b as i8)),
                items.iter().map(|(_, v)| i16::from(*v)),
                r,
            )?;
        }
        if let Type::Enum16(items) = ty {
            let values = data
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]));
            check_enum(values, items.iter().map(|(_, v)| *v), r)?;
        }
        return Ok(out);
    }
    match ty {
        Type::String => {
            let n = r.count(n as u64, 1)?;
            for _ in 0..n {
                let s = r.string()?;
                leb128::put(&mut out.bytes, s.len() as u64);
                out.bytes.extend_from_slice(s);
                out.end_row();
            }
        }
        Type::Nullable(t) => {
            let n = r.count(n as u64, 1)?;
            let nulls = r.take(n)?;
            let inner = column(t, n, r)?;
            for (i, &null) in nulls.iter().enumerate() {
                match null {
                    0 => {
                        out.bytes.push(0);
                        out.bytes.extend_from_slice(inner.row(i));
                    }
                    1 => out.bytes.push(1),
                    b => return Err(r.err(format!("a null map byte is {b}, not 0 or 1"))),
                }
                out.end_row();
            }
        }
        Type::Array(t) => {
            let offsets = offsets(n, r)?;
            let inner = column(t, offsets.last().copied().unwrap_or(0), r)?;
            let mut start = 0;
            for &end in &offsets {
                leb128::put(&mut out.bytes, (end - start) as u64);
                for i in start..end {
                    out.bytes.extend_from_slice(inner.row(i));
                }
                start = end;
                out.end_row();
            }
        }
        Type::Map(k, v) => {
            let offsets = offsets(n, r)?;
            let total = offsets.last().copied().unwrap_or(0);
            let keys = column(k, total, r)?;
            let values = column(v, total, r)?;
            let mut start = 0;
            for &end in &offsets {
                leb128::put(&mut out.bytes, (end - start) as u64);
                for i in start..end {
                    out.bytes.extend_from_slice(keys.row(i));
                    out.bytes.extend_from_slice(values.row(i));
                }
                start = end;
                out.end_row();
            }
        }
        Type::Tuple(items) => {
            let elements = items
                .iter()
                .map(|(_, t)| column(t, n, r))
                .collect::<Result<Vec<_>, _>>()?;
            for i in 0..n {
                for e in &elements {
                    out.bytes.extend_from_slice(e.row(i));
                }
                out.end_row();
            }
        }
        Type::LowCardinality(t) => {
            if n == 0 {
                return Ok(out);
            }
            let flags = r.u64()?;
            let width = match flags & 0xff {
                0 => 1,
                1 => 2,
                2 => 4,
                3 => 8,
                other => return Err(r.err(format!("LowCardinality index type {other}"))),
            };
            // The dictionary holds the inner type without Nullable; with
            // Nullable, entry 0 stands for NULL.
            let (nullable, inner) = match &**t {
                Type::Nullable(inner) => (true, &**inner),
                other => (false, other),
            };
            let size = r.u64()?;
            let size = r.count(size, 1)?;
            let dict = column(inner, size, r)?;
            let rows = r.u64()?;
            if rows != n as u64 {
                return Err(r.err(format!("LowCardinality has {rows} rows, the block {n}")));
            }
            let n = r.count(rows, width)?;
            let keys = r.take(n * width)?;
            for key in keys.chunks_exact(width) {
                let mut k = [0u8; 8];
                k[..width].copy_from_slice(key);
                let k = u64::from_le_bytes(k);
                if k >= size as u64 {
                    return Err(r.err(format!("LowCardinality key {k} is past its {size} entries")));
                }
                let k = k as usize;
                r.charge(dict.row(k).len() + 1 + ROW_END)?;
                if nullable {
                    if k == 0 {
                        out.bytes.push(1);
                    } else {
                        out.bytes.push(0);
                        out.bytes.extend_from_slice(dict.row(k));
                    }
                } else {
                    out.bytes.extend_from_slice(dict.row(k));
                }
                out.end_row();
            }
        }
        other => return Err(r.err(format!("no Native reading for {other}"))),
    }
    Ok(out)
}

fn check_enum(
    values: impl Iterator<Item = i16>,
    allowed: impl Iterator<Item = i16> + Clone,
    r: &Reader<'_>,
) -> Result<(), NativeError> {
    for v in values {
        if !allowed.clone().any(|a| a == v) {
            return Err(r.err(format!("{v} is not a value of the Enum")));
        }
    }
    Ok(())
}

/// Array offsets: cumulative element counts, never falling.
fn offsets(n: usize, r: &mut Reader<'_>) -> Result<Vec<usize>, NativeError> {
    let n = r.count(n as u64, 8)?;
    let mut out = Vec::with_capacity(n);
    let mut last = 0u64;
    for _ in 0..n {
        let o = r.u64()?;
        if o < last {
            return Err(r.err(format!("array offsets fall from {last} to {o}")));
        }
        let left = (r.data.len() - r.pos) as u64;
        if o - last > left.saturating_mul(8).saturating_add(1 << 20) {
            return Err(r.err(format!("an array of {} elements cannot fit", o - last)));
        }
        last = o;
        out.push(usize::try_from(o).map_err(|_| r.err("an array offset is too large"))?);
    }
    Ok(out)
}

/// `DESCRIBE TABLE`'s answer for `schema` as one Native block of String
/// columns, in the shape current servers give it (`name`, `type`,
/// `default_type`, `default_expression`, `comment`, `codec_expression`,
/// `ttl_expression`): 18.16 calls the comment column `comment_expression`
/// and has no `ttl_expression`, which clickhouse-connect cannot read.
pub fn describe_block(schema: &ch_ingest::Schema) -> Vec<u8> {
    let put = |out: &mut Vec<u8>, s: &str| {
        leb128::put(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    };
    let cols = schema.columns();
    let mut out = Vec::new();
    leb128::put(&mut out, 7);
    leb128::put(&mut out, cols.len() as u64);
    let value = |i: usize, field: usize| -> String {
        let default = schema.default_expression(i);
        match field {
            0 => cols[i].name.clone(),
            1 => cols[i].ty.to_string(),
            2 => default.map_or("", |_| "DEFAULT").to_string(),
            3 => default.unwrap_or("").to_string(),
            _ => String::new(),
        }
    };
    let names = [
        "name",
        "type",
        "default_type",
        "default_expression",
        "comment",
        "codec_expression",
        "ttl_expression",
    ];
    for (field, name) in names.iter().enumerate() {
        put(&mut out, name);
        put(&mut out, "String");
        for i in 0..cols.len() {
            put(&mut out, &value(i, field));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_describe_block_reads_back_as_current_servers_shape_it() {
        let schema = ch_ingest::Schema::parse("id UInt64, at DateTime")
            .unwrap()
            .with_default_expression("at", "now()");
        let data = describe_block(&schema);
        let mut r = Reader::new(&data);
        let block = r.block().unwrap();
        assert!(r.at_end());
        assert_eq!(block.rows, 2);
        let names: Vec<&str> = block.columns.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(
            names[4..],
            ["comment", "codec_expression", "ttl_expression"]
        );
        let cell = |c: usize, row: usize| block.columns[c].2.row(row)[1..].to_vec();
        assert_eq!(cell(1, 1), b"DateTime");
        assert_eq!(
            (cell(2, 1), cell(3, 1)),
            (b"DEFAULT".to_vec(), b"now()".to_vec())
        );
        assert_eq!(cell(2, 0), b"");
    }

    fn s(out: &mut Vec<u8>, text: &str) {
        out.push(text.len() as u8);
        out.extend_from_slice(text.as_bytes());
    }

    #[test]
    fn reads_every_encoding_into_rowbinary_rows() {
        let mut b = vec![5, 2];
        s(&mut b, "id");
        s(&mut b, "UInt16");
        b.extend_from_slice(&[1, 0, 2, 0]);
        s(&mut b, "name");
        s(&mut b, "Nullable(String)");
        b.extend_from_slice(&[1, 0, 0, 1, b'x']);
        s(&mut b, "xs");
        s(&mut b, "Array(UInt8)");
        b.extend_from_slice(&2u64.to_le_bytes());
        b.extend_from_slice(&3u64.to_le_bytes());
        b.extend_from_slice(&[7, 8, 9]);
        s(&mut b, "lc");
        s(&mut b, "LowCardinality(Nullable(String))");
        b.extend_from_slice(&1u64.to_le_bytes()); // key version
        b.extend_from_slice(&((1u64 << 9) | (1 << 10)).to_le_bytes()); // UInt8 keys
        b.extend_from_slice(&2u64.to_le_bytes()); // dictionary: placeholder, "k"
        b.extend_from_slice(&[0, 1, b'k']);
        b.extend_from_slice(&2u64.to_le_bytes());
        b.extend_from_slice(&[1, 0]);
        s(&mut b, "t");
        s(&mut b, "Tuple(UInt8, String)");
        b.extend_from_slice(&[5, 6, 0, 1, b'q']);
        let block = Reader::new(&b).block().unwrap();
        assert_eq!(block.rows, 2);
        let rows: Vec<Vec<u8>> = (0..2)
            .map(|r| {
                block
                    .columns
                    .iter()
                    .flat_map(|(_, _, c)| c.row(r).to_vec())
                    .collect()
            })
            .collect();
        assert_eq!(rows[0], [1, 0, 1, 2, 7, 8, 0, 1, b'k', 5, 0]);
        assert_eq!(rows[1], [2, 0, 0, 1, b'x', 1, 9, 1, 6, 1, b'q']);
        // Cut anywhere, it is an error, never a panic.
        for cut in 0..b.len() {
            assert!(Reader::new(&b[..cut]).block().is_err(), "cut at {cut}");
        }
    }
}
