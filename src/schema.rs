//! ClickHouse column types, parsed from the strings `DESCRIBE TABLE` prints.
//!
//! Owns: [`Type`], [`Schema`] and the parser from type strings such as
//! `Nullable(LowCardinality(String))`, `DateTime64(3, 'UTC')`,
//! `Enum8('a' = 1, 'b' = 2)`. Must not: encode or decode values (that is
//! `transcode` and `rowbinary::decode`), or panic on any input string.

use std::fmt;
use std::sync::Arc;

/// A ClickHouse data type, as far as RowBinary is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum Type {
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    UInt128,
    UInt256,
    Int8,
    Int16,
    Int32,
    Int64,
    Int128,
    Int256,
    Float32,
    Float64,
    Bool,
    String,
    FixedString(usize),
    Date,
    Date32,
    /// Seconds since the epoch; the time zone only affects display.
    DateTime(Option<String>),
    /// Ticks of 10^-precision seconds.
    DateTime64(u32, Option<String>),
    Uuid,
    Ipv4,
    Ipv6,
    /// Decimal(precision, scale): 4, 8, 16 or 32 bytes by precision.
    Decimal(u32, u32),
    Enum8(Vec<(String, i8)>),
    Enum16(Vec<(String, i16)>),
    Nullable(Box<Type>),
    Array(Box<Type>),
    /// Elements, with names when the tuple is named.
    Tuple(Vec<(Option<String>, Type)>),
    Map(Box<Type>, Box<Type>),
    LowCardinality(Box<Type>),
}

impl Type {
    /// How an integer type is laid out: (bytes, signed); `None` for any
    /// other type.
    pub(crate) fn int_layout(&self) -> Option<(usize, bool)> {
        Some(match self {
            Type::UInt8 => (1, false),
            Type::UInt16 => (2, false),
            Type::UInt32 => (4, false),
            Type::UInt64 => (8, false),
            Type::UInt128 => (16, false),
            Type::UInt256 => (32, false),
            Type::Int8 => (1, true),
            Type::Int16 => (2, true),
            Type::Int32 => (4, true),
            Type::Int64 => (8, true),
            Type::Int128 => (16, true),
            Type::Int256 => (32, true),
            _ => return None,
        })
    }

    /// Parses a ClickHouse type string.
    ///
    /// ```
    /// use ch_ingest::Type;
    /// let t = Type::parse("Array(Tuple(String, UInt8))").unwrap();
    /// assert_eq!(t.to_string(), "Array(Tuple(String, UInt8))");
    /// ```
    pub fn parse(s: &str) -> Result<Type, SchemaError> {
        let mut p = Parser {
            s: s.as_bytes(),
            pos: 0,
            depth: 0,
        };
        let t = p.ty()?;
        p.ws();
        if p.pos != p.s.len() {
            return Err(p.err("unexpected text after the type"));
        }
        Ok(t)
    }

    /// The width in bytes of every RowBinary (and Native) value of this
    /// type, when it is fixed: `Some(8)` for `UInt64` or `DateTime64`,
    /// `None` for `String`, `Nullable`, arrays.
    pub fn fixed_width(&self) -> Option<usize> {
        Some(match self {
            Type::UInt8 | Type::Int8 | Type::Bool | Type::Enum8(_) => 1,
            Type::UInt16 | Type::Int16 | Type::Date | Type::Enum16(_) => 2,
            Type::UInt32
            | Type::Int32
            | Type::Float32
            | Type::Date32
            | Type::DateTime(_)
            | Type::Ipv4 => 4,
            Type::UInt64 | Type::Int64 | Type::Float64 | Type::DateTime64(..) => 8,
            Type::UInt128 | Type::Int128 | Type::Uuid | Type::Ipv6 => 16,
            Type::UInt256 | Type::Int256 => 32,
            Type::FixedString(n) => *n,
            Type::Decimal(p, _) => Type::decimal_width(*p),
            _ => return None,
        })
    }

    /// Bytes of a Decimal of this precision.
    pub fn decimal_width(precision: u32) -> usize {
        match precision {
            0..=9 => 4,
            10..=18 => 8,
            19..=38 => 16,
            _ => 32,
        }
    }

    /// The type's default value is what ClickHouse stores for a missing
    /// column: zero, empty, or NULL for `Nullable`.
    pub fn is_nullable(&self) -> bool {
        match self {
            Type::Nullable(_) => true,
            Type::LowCardinality(t) => t.is_nullable(),
            _ => false,
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn enum_items<'a>(
            f: &mut fmt::Formatter<'_>,
            kind: &str,
            items: impl Iterator<Item = (&'a String, i64)>,
        ) -> fmt::Result {
            write!(f, "{kind}(")?;
            for (i, (name, v)) in items.enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                quoted(f, name)?;
                write!(f, " = {v}")?;
            }
            f.write_str(")")
        }
        fn quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
            f.write_str("'")?;
            for c in s.chars() {
                match c {
                    '\'' => f.write_str("\\'")?,
                    '\\' => f.write_str("\\\\")?,
                    c => write!(f, "{c}")?,
                }
            }
            f.write_str("'")
        }
        match self {
            Type::UInt8 => f.write_str("UInt8"),
            Type::UInt16 => f.write_str("UInt16"),
            Type::UInt32 => f.write_str("UInt32"),
            Type::UInt64 => f.write_str("UInt64"),
            Type::UInt128 => f.write_str("UInt128"),
            Type::UInt256 => f.write_str("UInt256"),
            Type::Int8 => f.write_str("Int8"),
            Type::Int16 => f.write_str("Int16"),
            Type::Int32 => f.write_str("Int32"),
            Type::Int64 => f.write_str("Int64"),
            Type::Int128 => f.write_str("Int128"),
            Type::Int256 => f.write_str("Int256"),
            Type::Float32 => f.write_str("Float32"),
            Type::Float64 => f.write_str("Float64"),
            Type::Bool => f.write_str("Bool"),
            Type::String => f.write_str("String"),
            Type::FixedString(n) => write!(f, "FixedString({n})"),
            Type::Date => f.write_str("Date"),
            Type::Date32 => f.write_str("Date32"),
            Type::DateTime(None) => f.write_str("DateTime"),
            Type::DateTime(Some(tz)) => {
                f.write_str("DateTime(")?;
                quoted(f, tz)?;
                f.write_str(")")
            }
            Type::DateTime64(p, None) => write!(f, "DateTime64({p})"),
            Type::DateTime64(p, Some(tz)) => {
                write!(f, "DateTime64({p}, ")?;
                quoted(f, tz)?;
                f.write_str(")")
            }
            Type::Uuid => f.write_str("UUID"),
            Type::Ipv4 => f.write_str("IPv4"),
            Type::Ipv6 => f.write_str("IPv6"),
            Type::Decimal(p, s) => write!(f, "Decimal({p}, {s})"),
            Type::Enum8(items) => enum_items(f, "Enum8", items.iter().map(|(n, v)| (n, *v as i64))),
            Type::Enum16(items) => {
                enum_items(f, "Enum16", items.iter().map(|(n, v)| (n, *v as i64)))
            }
            Type::Nullable(t) => write!(f, "Nullable({t})"),
            Type::Array(t) => write!(f, "Array({t})"),
            Type::Tuple(items) => {
                f.write_str("Tuple(")?;
                for (i, (name, t)) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    if let Some(n) = name {
                        write!(f, "{n} ")?;
                    }
                    write!(f, "{t}")?;
                }
                f.write_str(")")
            }
            Type::Map(k, v) => write!(f, "Map({k}, {v})"),
            Type::LowCardinality(t) => write!(f, "LowCardinality({t})"),
        }
    }
}

/// A type string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad type at byte {offset}: {reason}")]
pub struct SchemaError {
    /// Byte offset in the type string (or column index for schema-level errors).
    pub offset: usize,
    /// What is wrong.
    pub reason: String,
}

/// Nesting deeper than this is refused (a guard for hostile input).
const MAX_DEPTH: u32 = 32;

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    depth: u32,
}

impl Parser<'_> {
    fn err(&self, reason: impl Into<String>) -> SchemaError {
        SchemaError {
            offset: self.pos,
            reason: reason.into(),
        }
    }

    fn ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.s.get(self.pos) == Some(&c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), SchemaError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.err(format!("expected `{}`", c as char)))
        }
    }

    fn ident(&mut self) -> Result<&str, SchemaError> {
        self.ws();
        let start = self.pos;
        while self.pos < self.s.len()
            && (self.s[self.pos].is_ascii_alphanumeric() || self.s[self.pos] == b'_')
        {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(self.err("expected a name"));
        }
        // Only ASCII bytes were consumed, so this cannot fail.
        std::str::from_utf8(&self.s[start..self.pos]).map_err(|_| self.err("not UTF-8"))
    }

    fn int(&mut self) -> Result<i64, SchemaError> {
        self.ws();
        let start = self.pos;
        if self.s.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_digit() {
            self.pos += 1;
        }
        std::str::from_utf8(&self.s[start..self.pos])
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| SchemaError {
                offset: start,
                reason: "expected an integer".into(),
            })
    }

    fn uint(&mut self, max: u32) -> Result<u32, SchemaError> {
        let start = self.pos;
        let v = self.int()?;
        u32::try_from(v)
            .ok()
            .filter(|&v| v <= max)
            .ok_or(SchemaError {
                offset: start,
                reason: format!("expected an integer from 0 to {max}"),
            })
    }

    fn string(&mut self) -> Result<String, SchemaError> {
        self.ws();
        if !self.eat(b'\'') {
            return Err(self.err("expected a quoted string"));
        }
        let mut out = Vec::new();
        loop {
            match self.s.get(self.pos) {
                None => return Err(self.err("unterminated string")),
                Some(b'\'') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    let c = *self
                        .s
                        .get(self.pos + 1)
                        .ok_or_else(|| self.err("unterminated string"))?;
                    out.push(c);
                    self.pos += 2;
                }
                Some(&c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| self.err("string is not UTF-8"))
    }

    fn ty(&mut self) -> Result<Type, SchemaError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("type nested too deeply"));
        }
        let start = self.pos;
        let name = self.ident()?.to_string();
        let t = match name.as_str() {
            "UInt8" => Type::UInt8,
            "UInt16" => Type::UInt16,
            "UInt32" => Type::UInt32,
            "UInt64" => Type::UInt64,
            "UInt128" => Type::UInt128,
            "UInt256" => Type::UInt256,
            "Int8" => Type::Int8,
            "Int16" => Type::Int16,
            "Int32" => Type::Int32,
            "Int64" => Type::Int64,
            "Int128" => Type::Int128,
            "Int256" => Type::Int256,
            "Float32" => Type::Float32,
            "Float64" => Type::Float64,
            "Bool" | "Boolean" => Type::Bool,
            "String" => Type::String,
            "UUID" => Type::Uuid,
            "IPv4" => Type::Ipv4,
            "IPv6" => Type::Ipv6,
            "Date" => Type::Date,
            "Date32" => Type::Date32,
            "FixedString" => {
                self.expect(b'(')?;
                let n = self.uint(1 << 20)? as usize;
                if n == 0 {
                    return Err(self.err("FixedString length must be at least 1"));
                }
                self.expect(b')')?;
                Type::FixedString(n)
            }
            "DateTime" => {
                let tz = if self.eat(b'(') {
                    let tz = self.string()?;
                    self.expect(b')')?;
                    Some(tz)
                } else {
                    None
                };
                Type::DateTime(tz)
            }
            "DateTime64" => {
                self.expect(b'(')?;
                let p = self.uint(9)?;
                let tz = if self.eat(b',') {
                    Some(self.string()?)
                } else {
                    None
                };
                self.expect(b')')?;
                Type::DateTime64(p, tz)
            }
            "Decimal" => {
                self.expect(b'(')?;
                let p = self.uint(76)?;
                self.expect(b',')?;
                let s = self.uint(p)?;
                self.expect(b')')?;
                if p == 0 {
                    return Err(self.err("Decimal precision must be at least 1"));
                }
                Type::Decimal(p, s)
            }
            "Decimal32" | "Decimal64" | "Decimal128" | "Decimal256" => {
                let p = match name.as_str() {
                    "Decimal32" => 9,
                    "Decimal64" => 18,
                    "Decimal128" => 38,
                    _ => 76,
                };
                self.expect(b'(')?;
                let s = self.uint(p)?;
                self.expect(b')')?;
                Type::Decimal(p, s)
            }
            "Enum8" => Type::Enum8(
                self.enum_items(i8::MIN as i64, i8::MAX as i64)?
                    .into_iter()
                    .map(|(n, v)| (n, v as i8))
                    .collect(),
            ),
            "Enum16" => Type::Enum16(
                self.enum_items(i16::MIN as i64, i16::MAX as i64)?
                    .into_iter()
                    .map(|(n, v)| (n, v as i16))
                    .collect(),
            ),
            "Nullable" => {
                self.expect(b'(')?;
                let inner = self.ty()?;
                self.expect(b')')?;
                if matches!(
                    inner,
                    Type::Nullable(_) | Type::Array(_) | Type::Map(..) | Type::Tuple(_)
                ) {
                    return Err(SchemaError {
                        offset: start,
                        reason: format!("Nullable({inner}) is not allowed"),
                    });
                }
                Type::Nullable(Box::new(inner))
            }
            "LowCardinality" => {
                self.expect(b'(')?;
                let inner = self.ty()?;
                self.expect(b')')?;
                Type::LowCardinality(Box::new(inner))
            }
            "Array" => {
                self.expect(b'(')?;
                let inner = self.ty()?;
                self.expect(b')')?;
                Type::Array(Box::new(inner))
            }
            "Map" => {
                self.expect(b'(')?;
                let k = self.ty()?;
                self.expect(b',')?;
                let v = self.ty()?;
                self.expect(b')')?;
                Type::Map(Box::new(k), Box::new(v))
            }
            "Tuple" => {
                self.expect(b'(')?;
                let mut items = Vec::new();
                loop {
                    // `name Type` or `Type`: a name is followed by another identifier.
                    let save = self.pos;
                    let first = self.ident()?.to_string();
                    self.ws();
                    let named = self
                        .s
                        .get(self.pos)
                        .is_some_and(|c| c.is_ascii_alphabetic());
                    let item = if named {
                        (Some(first), self.ty()?)
                    } else {
                        self.pos = save;
                        (None, self.ty()?)
                    };
                    items.push(item);
                    if !self.eat(b',') {
                        break;
                    }
                }
                self.expect(b')')?;
                Type::Tuple(items)
            }
            "Nested" => {
                return Err(SchemaError {
                    offset: start,
                    reason: "Nested columns appear in DESCRIBE as Array columns `n.x`; use those"
                        .into(),
                })
            }
            other => {
                return Err(SchemaError {
                    offset: start,
                    reason: format!("unknown or unsupported type `{other}`"),
                })
            }
        };
        self.depth -= 1;
        Ok(t)
    }

    fn enum_items(&mut self, min: i64, max: i64) -> Result<Vec<(String, i64)>, SchemaError> {
        self.expect(b'(')?;
        let mut items = Vec::new();
        loop {
            let name = self.string()?;
            self.expect(b'=')?;
            let at = self.pos;
            let v = self.int()?;
            if v < min || v > max {
                return Err(SchemaError {
                    offset: at,
                    reason: format!("enum value {v} out of range"),
                });
            }
            items.push((name, v));
            if !self.eat(b',') {
                break;
            }
        }
        self.expect(b')')?;
        Ok(items)
    }
}

/// One column: its name and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Column type.
    pub ty: Type,
}

/// The columns of a table, in RowBinary order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    columns: Arc<[Column]>,
    names: crate::batch::ColumnNames,
    /// Each column's `DEFAULT` expression, where the table has one.
    defaults: Arc<[Option<String>]>,
}

impl Schema {
    /// A schema from `(name, type string)` pairs.
    ///
    /// ```
    /// let schema = ch_ingest::Schema::new([("id", "UInt64"), ("tags", "Array(String)")]).unwrap();
    /// assert_eq!(schema.columns().len(), 2);
    /// ```
    pub fn new<N: AsRef<str>, T: AsRef<str>>(
        columns: impl IntoIterator<Item = (N, T)>,
    ) -> Result<Self, SchemaError> {
        let mut cols = Vec::new();
        for (i, (name, ty)) in columns.into_iter().enumerate() {
            let ty = Type::parse(ty.as_ref()).map_err(|e| SchemaError {
                offset: e.offset,
                reason: format!("column {i} `{}`: {}", name.as_ref(), e.reason),
            })?;
            cols.push(Column {
                name: name.as_ref().to_string(),
                ty,
            });
        }
        Ok(Self::from_columns(cols))
    }

    /// A schema from parsed columns.
    pub fn from_columns(cols: Vec<Column>) -> Self {
        let names: Vec<std::borrow::Cow<'static, str>> =
            cols.iter().map(|c| c.name.clone().into()).collect();
        Self {
            defaults: vec![None; cols.len()].into(),
            columns: cols.into(),
            names: names.into(),
        }
    }

    /// The same schema, with `expression` as the `DEFAULT` of the column
    /// called `name` (as `DESCRIBE TABLE` reports it; [`Schema::fetch`]
    /// fills these). A name not in the schema changes nothing.
    ///
    /// ```
    /// let s = ch_ingest::Schema::parse("id UInt64, at DateTime")
    ///     .unwrap()
    ///     .with_default_expression("at", "now()");
    /// assert_eq!(s.default_expression(1), Some("now()"));
    /// assert_eq!(s.default_expression(0), None);
    /// ```
    pub fn with_default_expression(mut self, name: &str, expression: &str) -> Self {
        if let Some(i) = self.index_of(name) {
            let mut d = self.defaults.to_vec();
            d[i] = Some(expression.to_string());
            self.defaults = d.into();
        }
        self
    }

    /// The `DEFAULT` expression of column `index`: what ClickHouse
    /// computes for a row that does not send the column (in an INSERT
    /// whose column list leaves it out). `None` when the column has none
    /// (its type's default, zero or empty, is stored) or `index` is out of
    /// range.
    pub fn default_expression(&self, index: usize) -> Option<&str> {
        self.defaults.get(index)?.as_deref()
    }

    /// Parses `name Type` lines or `name Type, name Type` (as in a CREATE
    /// TABLE column list or `DESCRIBE TABLE ... FORMAT TSV` first two columns).
    ///
    /// ```
    /// let s = ch_ingest::Schema::parse("id UInt64, at DateTime64(3, 'UTC'), tag LowCardinality(String)").unwrap();
    /// assert_eq!(s.columns()[1].ty.to_string(), "DateTime64(3, 'UTC')");
    /// ```
    pub fn parse(text: &str) -> Result<Self, SchemaError> {
        let mut cols = Vec::new();
        let mut depth = 0i32;
        let mut start = 0;
        let bytes = text.as_bytes();
        let mut in_str = false;
        let mut parts = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            if in_str {
                if c == b'\\' {
                    i += 1;
                } else if c == b'\'' {
                    in_str = false;
                }
            } else {
                match c {
                    b'\'' => in_str = true,
                    b'(' => depth += 1,
                    b')' => depth -= 1,
                    b',' | b'\n' if depth == 0 => {
                        parts.push((start, &text[start..i]));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            i += 1;
        }
        parts.push((start, &text[start.min(text.len())..]));
        for (offset, part) in parts {
            let part = part.trim_start();
            let lead = text[offset..].len() - text[offset..].trim_start().len();
            if part.trim().is_empty() {
                continue;
            }
            let (name, ty) = if let Some(rest) = part.strip_prefix('`') {
                let end = rest.find('`').ok_or(SchemaError {
                    offset,
                    reason: "unterminated `name`".into(),
                })?;
                (&rest[..end], &rest[end + 1..])
            } else {
                let end = part.find(|c: char| c.is_whitespace()).ok_or(SchemaError {
                    offset,
                    reason: format!("expected `name Type`, got `{}`", part.trim()),
                })?;
                (&part[..end], &part[end..])
            };
            // DESCRIBE's TSV has more columns after a tab; the type is the first.
            let ty = ty.trim_start().split('\t').next().unwrap_or("");
            let t = Type::parse(ty).map_err(|e| SchemaError {
                offset: offset + lead + (part.len() - ty.len()).min(part.len()) + e.offset,
                reason: format!("column `{name}`: {}", e.reason),
            })?;
            cols.push(Column {
                name: name.to_string(),
                ty: t,
            });
        }
        if cols.is_empty() {
            return Err(SchemaError {
                offset: 0,
                reason: "no columns".into(),
            });
        }
        Ok(Self::from_columns(cols))
    }

    /// Reads the schema of `table` from a live server (`DESCRIBE TABLE`).
    /// `MATERIALIZED` and `ALIAS` columns are left out, as they cannot be
    /// inserted; a `DEFAULT` column's expression is kept
    /// ([`Schema::default_expression`]).
    pub async fn fetch(
        client: &clickhouse::Client,
        table: &str,
    ) -> Result<Self, crate::sink::SinkError> {
        let sql = format!("DESCRIBE TABLE {}", crate::sink::quote_table(table));
        let text = crate::sink::fetch_text(client, &sql).await?;
        let mut cols = Vec::new();
        let mut defaults = Vec::new();
        for line in text.lines() {
            let mut f = line.split('\t');
            let (Some(name), Some(ty)) = (f.next(), f.next()) else {
                continue;
            };
            let kind = f.next().unwrap_or("");
            if kind == "MATERIALIZED" || kind == "ALIAS" {
                continue;
            }
            let expression = f.next().unwrap_or("");
            if kind == "DEFAULT" && !expression.is_empty() {
                // As DESCRIBE's TSV shows it (escapes and all): it is only
                // ever shown in messages, never parsed or sent back.
                defaults.push((name.to_string(), expression.to_string()));
            }
            let ty = Type::parse(ty).map_err(|e| {
                crate::sink::SinkError::Other(format!("DESCRIBE {table}: column `{name}`: {e}"))
            })?;
            cols.push(Column {
                name: name.to_string(),
                ty,
            });
        }
        Ok(defaults
            .iter()
            .fold(Self::from_columns(cols), |s, (name, e)| {
                s.with_default_expression(name, e)
            }))
    }

    /// The columns, in order.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The column names, in order.
    pub fn names(&self) -> &crate::batch::ColumnNames {
        &self.names
    }

    /// Position of a column by name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_type_strings() {
        for s in [
            "Nullable(LowCardinality(String))",
            "Array(Tuple(String, UInt8))",
            "DateTime64(3, 'UTC')",
            "Decimal(18, 4)",
            "Enum8('a' = 1, 'b' = 2)",
            "Map(String, Array(Nullable(Int64)))",
            "Tuple(a String, b Float64)",
            "FixedString(2)",
            "DateTime('Asia/Tokyo')",
            "LowCardinality(Nullable(String))",
        ] {
            assert_eq!(Type::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn errors_point_at_the_problem() {
        let e = Type::parse("Array(Strin)").unwrap_err();
        assert_eq!(e.offset, 6);
        assert!(e.reason.contains("Strin"));
        assert!(Type::parse("Enum8('a' = 300)").is_err());
        assert!(Type::parse("Nullable(Array(UInt8))").is_err());
        assert!(Type::parse(&"Array(".repeat(100)).is_err());
        assert!(Type::parse("FixedString(0)").is_err());
        assert!(Type::parse("UInt8 junk").is_err());
    }

    #[test]
    fn parses_column_lists() {
        let s = Schema::parse("a UInt8,\n`b c` Map(String, UInt8)\nd Enum8('x,y' = 1)").unwrap();
        let names: Vec<_> = s.columns().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "b c", "d"]);
        assert!(Schema::parse("a").is_err());
    }
}
