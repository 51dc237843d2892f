//! Orders an INSERT's RowBinary rows by the table's sorting key, so the
//! server's own sort (it always sorts a part) finds them in order.
//!
//! Owns: [`SortKey`] (which columns, compared how), and [`sort`]: one walk
//! over the rows that turns each key value into order-preserving 64-bit
//! words (strings by their rank among the INSERT's distinct values), each
//! word column narrowed to the bits its range in this INSERT needs, then one
//! `sort_unstable` of packed integers whose low bits are the row's arrival
//! index: the order is total, so the same input always gives the same bytes
//! (a retry or a replay resends what the first try sent). Must not: panic
//! or lose a row on bytes that do not match the layout (an error, and the
//! caller sends the rows as they came), or run on an async task (it is CPU
//! work; callers use a blocking thread).
//!
//! Any order is correct (the server re-sorts), so the order only has to
//! agree with the server's where it is cheap to: NaN and the sign of zero
//! are ordered by their bits, and a key expression that is not a plain
//! column ends the key there.

use super::layout::{Field, Layout, WalkError};
use crate::rowbinary::leb128;
use crate::schema::Type;
use bytes::{Bytes, BytesMut};

/// How one key column's value becomes words that compare as the server
/// orders the values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// Little-endian unsigned integer of this many bytes (up to 32).
    Unsigned(usize),
    /// Little-endian two's complement integer of this many bytes (up to 32).
    Signed(usize),
    /// IEEE float of 4 or 8 bytes.
    Float(usize),
    /// Bytes compared as they are (FixedString, IPv6, UUID).
    Bytes(usize),
    /// A length-prefixed string, compared bytewise.
    Str,
}

impl KeyKind {
    /// How values of `ty` compare; `None` for a type this module does not
    /// order (Nullable, arrays, tuples, maps).
    pub(crate) fn of(ty: &Type) -> Option<KeyKind> {
        use Type::*;
        Some(match ty {
            UInt8 | Bool => KeyKind::Unsigned(1),
            UInt16 | Date => KeyKind::Unsigned(2),
            UInt32 | DateTime(_) | Ipv4 => KeyKind::Unsigned(4),
            UInt64 => KeyKind::Unsigned(8),
            UInt128 => KeyKind::Unsigned(16),
            UInt256 => KeyKind::Unsigned(32),
            Int8 | Enum8(_) => KeyKind::Signed(1),
            Int16 | Enum16(_) => KeyKind::Signed(2),
            Int32 | Date32 => KeyKind::Signed(4),
            Int64 | DateTime64(..) => KeyKind::Signed(8),
            Int128 => KeyKind::Signed(16),
            Int256 => KeyKind::Signed(32),
            Decimal(p, _) => KeyKind::Signed(Type::decimal_width(*p)),
            Float32 => KeyKind::Float(4),
            Float64 => KeyKind::Float(8),
            FixedString(n) if *n > 0 => KeyKind::Bytes(*n),
            Uuid | Ipv6 => KeyKind::Bytes(16),
            String => KeyKind::Str,
            LowCardinality(t) if **t == String => KeyKind::Str,
            _ => return None,
        })
    }

    fn words(self) -> usize {
        match self {
            KeyKind::Unsigned(n) | KeyKind::Signed(n) | KeyKind::Bytes(n) => n.div_ceil(8),
            KeyKind::Float(_) | KeyKind::Str => 1,
        }
    }
}

/// The columns rows are ordered by, most significant first: positions in
/// the INSERT's column list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SortKey {
    pub(crate) columns: Vec<(usize, KeyKind)>,
}

/// Where a row is: its chunk, its start and its end.
type Place = (u32, u32, u32);

/// `chunks` (whole RowBinary rows of `layout`) in key order, as one
/// buffer; `None` when they already are in that order (nothing to copy).
pub(crate) fn sort(
    layout: &Layout,
    key: &SortKey,
    chunks: &[Bytes],
    rows_hint: u64,
) -> Result<Option<Bytes>, WalkError> {
    let width: usize = key.columns.iter().map(|(_, k)| k.words()).sum();
    if width == 0 {
        return Ok(None);
    }
    let (rows, words) = key_words(layout, key, chunks, rows_hint, width)?;
    let order = order_of(&words, width, rows.len());
    if order.iter().enumerate().all(|(i, &r)| i == r as usize) {
        return Ok(None);
    }
    let total: usize = chunks.iter().map(Bytes::len).sum();
    let mut out = BytesMut::with_capacity(total);
    for r in order {
        let (c, start, end) = rows[r as usize];
        out.extend_from_slice(&chunks[c as usize][start as usize..end as usize]);
    }
    Ok(Some(out.freeze()))
}

/// Each row's place, and its key as `width` words per row (strings as
/// their rank among this INSERT's strings, so words compare as values).
fn key_words(
    layout: &Layout,
    key: &SortKey,
    chunks: &[Bytes],
    rows_hint: u64,
    width: usize,
) -> Result<(Vec<Place>, Vec<u64>), WalkError> {
    let hint = usize::try_from(rows_hint).unwrap_or(0).min(1 << 26);
    // (chunk, start, end) of each row.
    let mut rows: Vec<Place> = Vec::with_capacity(hint);
    let mut words: Vec<u64> = Vec::with_capacity(hint * width);
    let mut strings: Vec<Strings<'_>> = key
        .columns
        .iter()
        .filter(|(_, k)| *k == KeyKind::Str)
        .map(|_| Strings::default())
        .collect();
    let mut starts = vec![0usize; layout.fields.len()];
    for (c, chunk) in chunks.iter().enumerate() {
        let data: &[u8] = chunk;
        if data.len() > u32::MAX as usize || c > u32::MAX as usize {
            return Err(WalkError {
                offset: 0,
                reason: "an INSERT chunk over 4 GiB",
            });
        }
        let mut bad = None;
        layout.walk(data, &mut starts, |row, starts| {
            if bad.is_some() {
                return;
            }
            rows.push((c as u32, row.start as u32, row.end as u32));
            let mut s = 0;
            for &(col, kind) in &key.columns {
                let at = starts[col];
                if kind == KeyKind::Str {
                    match string_at(data, at) {
                        Some(v) => words.push(strings[s].id(v)),
                        None => bad = Some(at),
                    }
                    s += 1;
                } else {
                    push_words(kind, &data[at..row.end], &mut words);
                }
            }
        })?;
        if let Some(offset) = bad {
            return Err(WalkError {
                offset,
                reason: "a key string cut short",
            });
        }
    }
    let n = rows.len();
    if n > u32::MAX as usize {
        return Err(WalkError {
            offset: 0,
            reason: "more than 2^32 rows in one INSERT",
        });
    }
    // Strings: replace first-seen ids by ranks, so words compare as values.
    let mut s = 0;
    let mut w = 0;
    for &(_, kind) in &key.columns {
        if kind == KeyKind::Str {
            let rank = strings[s].ranks();
            for r in 0..n {
                let v = &mut words[r * width + w];
                *v = rank[*v as usize];
            }
            s += 1;
        }
        w += kind.words();
    }
    Ok((rows, words))
}

/// The rows' order by their key words, stable (equal keys keep arrival
/// order): each word column narrowed to its range in this INSERT, then a
/// radix sort when the key fits in 64 bits, one integer sort up to 96,
/// else the leading 128 bits and the rest compared.
fn order_of(words: &[u64], width: usize, n: usize) -> Vec<u32> {
    // Each word column narrowed to its range in this INSERT.
    let mut mins = vec![u64::MAX; width];
    let mut maxs = vec![0u64; width];
    for row in words.chunks_exact(width.max(1)) {
        for (j, &v) in row.iter().enumerate() {
            mins[j] = mins[j].min(v);
            maxs[j] = maxs[j].max(v);
        }
    }
    let bits: Vec<u32> = (0..width)
        .map(|j| 64 - (maxs[j].wrapping_sub(mins[j])).leading_zeros())
        .collect();
    let key_bits: u32 = bits.iter().sum();
    if key_bits <= 64 {
        // One word: a stable radix sort (equal keys keep arrival order).
        let mut keyed: Vec<(u64, u32)> = (0..n)
            .map(|r| {
                // At most 64 bits: the packed key fits in the low word.
                (
                    pack(&words[r * width..(r + 1) * width], &bits, &mins) as u64,
                    r as u32,
                )
            })
            .collect();
        radix_sort(&mut keyed, key_bits);
        keyed.into_iter().map(|(_, r)| r).collect()
    } else if key_bits <= 96 {
        // The whole key and the arrival index in one integer.
        let mut packed: Vec<u128> = (0..n)
            .map(|r| (pack(&words[r * width..(r + 1) * width], &bits, &mins) << 32) | r as u128)
            .collect();
        packed.sort_unstable();
        packed.into_iter().map(|p| p as u32).collect()
    } else {
        // The leading word columns that fit in 128 bits, then the rest.
        let mut used = 0;
        let mut lead = 0;
        while lead < width && used + bits[lead] <= 128 {
            used += bits[lead];
            lead += 1;
        }
        let mut keyed: Vec<(u128, u32)> = (0..n)
            .map(|r| {
                (
                    pack(&words[r * width..r * width + lead], &bits, &mins),
                    r as u32,
                )
            })
            .collect();
        keyed.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| {
                    let (x, y) = (a.1 as usize * width, b.1 as usize * width);
                    words[x + lead..x + width].cmp(&words[y + lead..y + width])
                })
                .then(a.1.cmp(&b.1))
        });
        keyed.into_iter().map(|(_, r)| r).collect()
    }
}

/// The words of one row, each less its column's minimum, in its column's
/// `bits`, most significant first (the words must fit in 128 bits).
#[inline]
fn pack(row: &[u64], bits: &[u32], mins: &[u64]) -> u128 {
    row.iter()
        .zip(bits.iter().zip(mins))
        .filter(|(_, (&b, _))| b > 0)
        .fold(0u128, |acc, (&v, (&b, &min))| {
            (acc << b) | (v - min) as u128
        })
}

/// Sorts by the low `bits` of the keys, stably: least significant digit
/// first, 11 bits a pass, a pass skipped when every key shares its digit.
fn radix_sort(items: &mut Vec<(u64, u32)>, bits: u32) {
    const DIGIT: u32 = 11;
    let mask = (1u64 << DIGIT) - 1;
    let mut spare = vec![(0u64, 0u32); items.len()];
    let mut counts = vec![0usize; 1 << DIGIT];
    for pass in 0..bits.div_ceil(DIGIT) {
        let shift = pass * DIGIT;
        counts.fill(0);
        for &(k, _) in items.iter() {
            counts[((k >> shift) & mask) as usize] += 1;
        }
        if counts.contains(&items.len()) {
            continue;
        }
        let mut at = 0;
        for c in counts.iter_mut() {
            let here = *c;
            *c = at;
            at += here;
        }
        for &item in items.iter() {
            let d = ((item.0 >> shift) & mask) as usize;
            spare[counts[d]] = item;
            counts[d] += 1;
        }
        std::mem::swap(items, &mut spare);
    }
}

/// The bytes of the string at `at` (after its length).
fn string_at(data: &[u8], at: usize) -> Option<&[u8]> {
    let (len, used) = leb128::read(data.get(at..)?).ok()?;
    let from = at + used;
    data.get(from..from.checked_add(usize::try_from(len).ok()?)?)
}

/// Appends the order-preserving words of the value at the start of `v`
/// (the layout walk checked that the value is complete).
#[inline]
fn push_words(kind: KeyKind, v: &[u8], out: &mut Vec<u64>) {
    match kind {
        KeyKind::Unsigned(n) | KeyKind::Signed(n) => {
            let signed = matches!(kind, KeyKind::Signed(_));
            // Most significant little-endian word first.
            let top = out.len();
            for w in (0..n.div_ceil(8)).rev() {
                let part = &v[w * 8..((w + 1) * 8).min(n)];
                out.push(le_u64(part));
            }
            if signed {
                // Sign-extend the top word to 64 bits, then flip its sign
                // bit: two's complement order becomes unsigned order.
                let top_bytes = n - (n.div_ceil(8) - 1) * 8;
                let shift = 64 - 8 * top_bytes as u32;
                let extended = ((out[top] << shift) as i64 >> shift) as u64;
                out[top] = extended ^ (1 << 63);
            }
        }
        KeyKind::Float(n) => {
            let f = if n == 4 {
                f32::from_bits(le_u64(&v[..4]) as u32) as f64
            } else {
                f64::from_bits(le_u64(&v[..8]))
            };
            let b = f.to_bits();
            out.push(if b >> 63 == 1 { !b } else { b | (1 << 63) });
        }
        KeyKind::Bytes(n) => {
            for part in v[..n].chunks(8) {
                let mut w = [0u8; 8];
                w[..part.len()].copy_from_slice(part);
                out.push(u64::from_be_bytes(w));
            }
        }
        KeyKind::Str => unreachable!("strings are ranked, not pushed"),
    }
}

#[inline]
fn le_u64(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..b.len()].copy_from_slice(b);
    u64::from_le_bytes(w)
}

/// The distinct values of one string key column: ids in first-seen order,
/// ranked once all rows are seen.
#[derive(Default)]
struct Strings<'a> {
    ids: hashbrown::HashMap<&'a [u8], u64>,
    values: Vec<&'a [u8]>,
}

impl<'a> Strings<'a> {
    #[inline]
    fn id(&mut self, v: &'a [u8]) -> u64 {
        let next = self.values.len() as u64;
        *self.ids.entry(v).or_insert_with(|| {
            self.values.push(v);
            next
        })
    }

    /// `rank[id]`: the value's place among the distinct values, in order.
    fn ranks(&self) -> Vec<u64> {
        let mut by_value: Vec<u32> = (0..self.values.len() as u32).collect();
        by_value.sort_unstable_by_key(|&i| self.values[i as usize]);
        let mut rank = vec![0; self.values.len()];
        for (r, &i) in by_value.iter().enumerate() {
            rank[i as usize] = r as u64;
        }
        rank
    }
}

/// Whether a layout field can be a sort key of `kind` (guards against a
/// schema whose type and layout disagree).
pub(crate) fn fits(field: &Field, kind: KeyKind) -> bool {
    match (field, kind) {
        (Field::Str, KeyKind::Str) => true,
        (Field::Fixed(n), KeyKind::Unsigned(k) | KeyKind::Signed(k) | KeyKind::Float(k)) => *n == k,
        (Field::Fixed(n), KeyKind::Bytes(k)) => *n == k,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn schema(types: &[&str]) -> (Layout, Vec<Type>) {
        let types: Vec<Type> = types.iter().map(|t| Type::parse(t).unwrap()).collect();
        (Layout::of(&types).unwrap(), types)
    }

    fn key_of(types: &[Type], cols: &[usize]) -> SortKey {
        SortKey {
            columns: cols
                .iter()
                .map(|&c| (c, KeyKind::of(&types[c]).unwrap()))
                .collect(),
        }
    }

    fn split_rows(layout: &Layout, data: &[u8]) -> Vec<Vec<u8>> {
        let mut rows = Vec::new();
        let mut starts = vec![0; layout.fields.len()];
        layout
            .walk(data, &mut starts, |r, _| rows.push(data[r].to_vec()))
            .unwrap();
        rows
    }

    type Row = (String, i32, u64, Option<u8>, f64);

    fn encode(rows: &[Row]) -> Vec<u8> {
        let mut b = Vec::new();
        for (s, i, u, o, f) in rows {
            leb128::put(&mut b, s.len() as u64);
            b.extend_from_slice(s.as_bytes());
            b.extend_from_slice(&i.to_le_bytes());
            b.extend_from_slice(&u.to_le_bytes());
            match o {
                None => b.push(1),
                Some(v) => b.extend_from_slice(&[0, *v]),
            }
            b.extend_from_slice(&f.to_le_bytes());
        }
        b
    }

    const TYPES: [&str; 5] = [
        "LowCardinality(String)",
        "Int32",
        "UInt64",
        "Nullable(UInt8)",
        "Float64",
    ];

    proptest! {
        /// The output holds the same rows (as a multiset) in key order,
        /// equal keys in arrival order, for every key shape: narrow keys
        /// (packed with the index) and wide ones (compared word by word).
        #[test]
        fn same_rows_in_key_order(
            rows in proptest::collection::vec(
                ("[a-c]{0,3}", any::<i32>(), 0u64..4, any::<Option<u8>>(), -2.0f64..2.0), 0..200),
            split in 0usize..200,
            shape in 0usize..3,
        ) {
            let (layout, types) = schema(&TYPES);
            // Keys of up to 64 bits (radix sort), up to 96 (one u128 with
            // the index), and wider (compared word by word).
            let cols: &[usize] = [&[0, 2][..], &[1, 4], &[2, 0, 1, 4]][shape];
            let key = key_of(&types, cols);
            let data = encode(&rows);
            // Two chunks, split at a row boundary.
            let all = split_rows(&layout, &data);
            let cut: usize = all.iter().take(split.min(all.len())).map(Vec::len).sum();
            let chunks = [Bytes::copy_from_slice(&data[..cut]), Bytes::copy_from_slice(&data[cut..])];
            let out = sort(&layout, &key, &chunks, 0).unwrap();
            let out = out.map(|b| b.to_vec()).unwrap_or(data.clone());
            let got = split_rows(&layout, &out);
            let mut want: Vec<(usize, &Row)> = rows.iter().enumerate().collect();
            want.sort_by(|(ia, a), (ib, b)| {
                let ka = (a.2, a.0.as_bytes(), a.1, a.4);
                let kb = (b.2, b.0.as_bytes(), b.1, b.4);
                let ord = match shape {
                    0 => (a.0.as_bytes(), a.2).cmp(&(b.0.as_bytes(), b.2)),
                    1 => (a.1, a.4).partial_cmp(&(b.1, b.4)).unwrap(),
                    _ => ka.partial_cmp(&kb).unwrap(),
                };
                ord.then(ia.cmp(ib))
            });
            let want: Vec<Vec<u8>> = want.iter().map(|(_, r)| encode(std::slice::from_ref(r))).collect();
            prop_assert_eq!(got, want);
            // The same input gives the same bytes.
            let again = sort(&layout, &key, &chunks, 7).unwrap().map(|b| b.to_vec()).unwrap_or(data);
            prop_assert_eq!(again, out);
        }
    }

    #[test]
    fn words_order_like_the_values() {
        let mut w = Vec::new();
        let mut of = |kind, bytes: &[u8]| {
            w.clear();
            push_words(kind, bytes, &mut w);
            w.clone()
        };
        let signed: Vec<_> = [-129i16, -1, 0, 1, 300]
            .iter()
            .map(|v| of(KeyKind::Signed(2), &v.to_le_bytes()))
            .collect();
        assert!(signed.windows(2).all(|p| p[0] < p[1]), "{signed:?}");
        let wide: Vec<_> = [i128::MIN, -1, 0, 1 << 70, i128::MAX]
            .iter()
            .map(|v| of(KeyKind::Signed(16), &v.to_le_bytes()))
            .collect();
        assert!(wide.windows(2).all(|p| p[0] < p[1]), "{wide:?}");
        let floats: Vec<_> = [f64::NEG_INFINITY, -1.5, -0.0, 0.0, 2.0, f64::INFINITY]
            .iter()
            .map(|v| of(KeyKind::Float(8), &v.to_le_bytes()))
            .collect();
        assert!(floats.windows(2).all(|p| p[0] < p[1]), "{floats:?}");
        assert!(of(KeyKind::Bytes(3), b"abc") < of(KeyKind::Bytes(3), b"abd"));
    }

    #[test]
    fn a_key_of_one_full_64_bit_column() {
        let (layout, types) = schema(&["UInt64"]);
        let key = key_of(&types, &[0]);
        let rows = [u64::MAX, 0, 1 << 63];
        let data: Vec<u8> = rows.iter().flat_map(|v| v.to_le_bytes()).collect();
        let out = sort(&layout, &key, &[Bytes::from(data)], 3)
            .unwrap()
            .unwrap();
        let got: Vec<u64> = out
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(got, [0, 1 << 63, u64::MAX]);
    }

    #[test]
    fn sorted_input_is_not_copied_and_bad_bytes_are_errors() {
        let (layout, types) = schema(&["String", "UInt64"]);
        let key = key_of(&types, &[1]);
        let mut b = Vec::new();
        for i in 0..3u64 {
            b.extend_from_slice(&[1, b'x']);
            b.extend_from_slice(&i.to_le_bytes());
        }
        assert_eq!(sort(&layout, &key, &[Bytes::from(b.clone())], 3), Ok(None));
        b.pop();
        assert!(sort(&layout, &key, &[Bytes::from(b)], 3).is_err());
    }
}
