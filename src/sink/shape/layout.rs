//! The byte layout of one RowBinary row, compiled from the table's column
//! types once, so the shaping passes (sort, transpose) walk 100 000 rows
//! without matching on [`Type`] per value.
//!
//! Owns: [`Field`] (how one value is laid out), [`Layout`] (a row), and
//! the checked walk over rows. Must not: trust the bytes (they were encoded
//! from the caller's Rust type, whose fields may not be the types the
//! server describes): every length is checked, and a walk that does not end
//! exactly at the end of the input is an error, never a panic.

use crate::rowbinary::leb128;
use crate::schema::Type;

/// How one value of a column is laid out in RowBinary (and, column-wise, in
/// Native).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Field {
    /// `n` bytes.
    Fixed(usize),
    /// A LEB128 length, then that many bytes.
    Str,
    /// A marker byte (1 = NULL), then the value unless NULL.
    Nullable(Box<Field>),
    /// A LEB128 count, then the elements.
    Array(Box<Field>),
    Tuple(Vec<Field>),
    /// A LEB128 count, then key, value, key, value...
    Map(Box<Field>, Box<Field>),
}

/// Why rows could not be walked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} at byte {offset} of the INSERT")]
pub(crate) struct WalkError {
    pub(crate) offset: usize,
    pub(crate) reason: &'static str,
}

impl Field {
    /// The layout of `ty`; `None` for a type with no RowBinary layout.
    pub(crate) fn of(ty: &Type) -> Option<Field> {
        if let Some(n) = ty.fixed_width() {
            return Some(Field::Fixed(n));
        }
        Some(match ty {
            Type::String => Field::Str,
            Type::Nullable(t) => Field::Nullable(Box::new(Field::of(t)?)),
            Type::LowCardinality(t) => Field::of(t)?,
            Type::Array(t) => Field::Array(Box::new(Field::of(t)?)),
            Type::Tuple(items) => Field::Tuple(
                items
                    .iter()
                    .map(|(_, t)| Field::of(t))
                    .collect::<Option<_>>()?,
            ),
            Type::Map(k, v) => Field::Map(Box::new(Field::of(k)?), Box::new(Field::of(v)?)),
            _ => return None,
        })
    }

    /// The end of the value that starts at `pos`.
    #[inline]
    pub(crate) fn skip(&self, data: &[u8], pos: usize) -> Result<usize, WalkError> {
        match self {
            Field::Fixed(n) => take(data, pos, *n),
            Field::Str => string(data, pos),
            Field::Nullable(inner) => match data.get(pos) {
                Some(0) => inner.skip(data, pos + 1),
                Some(1) => Ok(pos + 1),
                Some(_) => Err(bad_marker(pos)),
                None => Err(truncated(pos)),
            },
            Field::Array(inner) => {
                let (n, mut at) = count(data, pos)?;
                for _ in 0..n {
                    at = inner.skip(data, at)?;
                }
                Ok(at)
            }
            Field::Tuple(items) => items.iter().try_fold(pos, |at, f| f.skip(data, at)),
            Field::Map(k, v) => {
                let (n, mut at) = count(data, pos)?;
                for _ in 0..n {
                    at = k.skip(data, at)?;
                    at = v.skip(data, at)?;
                }
                Ok(at)
            }
        }
    }
}

/// A row: its columns' layouts, in RowBinary order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) fields: Vec<Field>,
    /// The same, flat: the common shapes skipped without recursion.
    ops: Vec<Op>,
}

/// How the walk skips one column: the shapes analytics rows are made of
/// get their own arm (measured: the recursive walk cost 2x).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Fixed(usize),
    Str,
    NullableFixed(usize),
    NullableStr,
    /// Anything else: `fields[i].skip`.
    Nested,
}

impl Op {
    fn of(field: &Field) -> Op {
        match field {
            Field::Fixed(n) => Op::Fixed(*n),
            Field::Str => Op::Str,
            Field::Nullable(inner) => match **inner {
                Field::Fixed(n) => Op::NullableFixed(n),
                Field::Str => Op::NullableStr,
                _ => Op::Nested,
            },
            _ => Op::Nested,
        }
    }
}

impl Layout {
    /// The layout of rows of these column types; `None` (with the position
    /// of the column) if one has none.
    pub(crate) fn of(types: &[Type]) -> Result<Layout, usize> {
        let fields: Vec<Field> = types
            .iter()
            .enumerate()
            .map(|(i, t)| Field::of(t).ok_or(i))
            .collect::<Result<_, _>>()?;
        let ops = fields.iter().map(Op::of).collect();
        Ok(Layout { fields, ops })
    }

    /// The end of column `i`'s value, which starts at `pos`.
    #[inline(always)]
    pub(crate) fn skip(&self, i: usize, data: &[u8], pos: usize) -> Result<usize, WalkError> {
        match self.ops[i] {
            Op::Fixed(n) => take(data, pos, n),
            Op::Str => string(data, pos),
            Op::NullableFixed(n) => match data.get(pos) {
                Some(&m) if m <= 1 => take(data, pos + 1, n * (1 - m as usize)),
                Some(_) => Err(bad_marker(pos)),
                None => Err(truncated(pos)),
            },
            Op::NullableStr => match data.get(pos) {
                Some(0) => string(data, pos + 1),
                Some(1) => Ok(pos + 1),
                Some(_) => Err(bad_marker(pos)),
                None => Err(truncated(pos)),
            },
            Op::Nested => self.fields[i].skip(data, pos),
        }
    }

    /// Calls `f` with each row's byte range in `data` and where each of its
    /// values starts (`starts`: one slot per column, filled for `f`).
    #[inline]
    pub(crate) fn walk(
        &self,
        data: &[u8],
        starts: &mut [usize],
        mut f: impl FnMut(std::ops::Range<usize>, &[usize]),
    ) -> Result<(), WalkError> {
        let mut pos = 0;
        while pos < data.len() {
            let row = pos;
            for (i, start) in starts.iter_mut().enumerate().take(self.ops.len()) {
                *start = pos;
                pos = self.skip(i, data, pos)?;
            }
            if self.fields.is_empty() {
                return Err(WalkError {
                    offset: pos,
                    reason: "rows of no columns",
                });
            }
            f(row..pos, starts);
        }
        Ok(())
    }
}

/// The end of the length-prefixed string at `pos`.
#[inline(always)]
pub(crate) fn string(data: &[u8], pos: usize) -> Result<usize, WalkError> {
    match data.get(pos) {
        // One length byte: every string under 128 bytes.
        Some(&b) if b < 0x80 => take(data, pos + 1, b as usize),
        _ => {
            let (len, at) = count(data, pos)?;
            take(data, at, len)
        }
    }
}

fn bad_marker(offset: usize) -> WalkError {
    WalkError {
        offset,
        reason: "a Nullable marker that is neither 0 nor 1",
    }
}

#[inline(always)]
pub(crate) fn take(data: &[u8], pos: usize, n: usize) -> Result<usize, WalkError> {
    match pos.checked_add(n) {
        Some(end) if end <= data.len() => Ok(end),
        _ => Err(truncated(pos)),
    }
}

/// A LEB128 count, checked to fit in what is left: (count, where the items start).
#[inline]
fn count(data: &[u8], pos: usize) -> Result<(usize, usize), WalkError> {
    let rest = data.get(pos..).ok_or_else(|| truncated(pos))?;
    let (n, used) = leb128::read(rest).map_err(|_| truncated(pos))?;
    let at = pos + used;
    // Every element takes at least one byte... except zero-width ones
    // (`Tuple()`), which the schema parser does not produce.
    if n > (data.len() - at) as u64 {
        return Err(WalkError {
            offset: pos,
            reason: "a length past the end of the rows",
        });
    }
    Ok((n as usize, at))
}

fn truncated(offset: usize) -> WalkError {
    WalkError {
        offset,
        reason: "a row cut short",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(types: &[&str]) -> Layout {
        let types: Vec<Type> = types.iter().map(|t| Type::parse(t).unwrap()).collect();
        Layout::of(&types).unwrap()
    }

    #[test]
    fn walks_rows_and_marks_each_value() {
        let l = layout(&["String", "Nullable(UInt32)", "Array(UInt8)"]);
        // "ab", NULL, [7, 8] | "", 5, []
        let data = [2, b'a', b'b', 1, 2, 7, 8, 0, 0, 5, 0, 0, 0, 0];
        let mut rows = Vec::new();
        l.walk(&data, &mut [0; 3], |r, s| rows.push((r, s.to_vec())))
            .unwrap();
        assert_eq!(rows, vec![(0..7, vec![0, 3, 4]), (7..14, vec![7, 8, 13])]);
    }

    #[test]
    fn bad_bytes_are_errors() {
        let l = layout(&["String", "Nullable(UInt8)"]);
        for data in [&[5u8, b'a'][..], &[0, 2], &[0, 0], &[0xff; 12]] {
            assert!(l.walk(data, &mut [0; 2], |_, _| {}).is_err(), "{data:?}");
        }
        assert!(layout(&["Array(String)"])
            .walk(&[0xff, 0xff, 0xff, 0x0f], &mut [0], |_, _| {})
            .is_err());
    }
}
