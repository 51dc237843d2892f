//! The unsigned LEB128 varint ClickHouse puts before every string, array and
//! map (and a Native block's counts): the one codec the encoder, the
//! transcoder, the decoders and the protocol crate share.
//!
//! ```
//! use ch_ingest::rowbinary::leb128;
//! let mut buf = Vec::new();
//! leb128::put(&mut buf, 300);
//! assert_eq!(buf, [0xac, 0x02]);
//! assert_eq!(leb128::read(&buf), Ok((300, 2)));
//! assert_eq!(leb128::read(&[0x80]), Err(leb128::ReadError::Truncated));
//! ```
//!
//! Owns: writing and reading a `u64` as LEB128. Must not: read past the
//! input or accept more than the 10 bytes a `u64` can take.

use bytes::BufMut;

/// Appends `value`, seven bits per byte, lowest first.
#[inline]
pub fn put(buf: &mut impl BufMut, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// The input ended inside the varint.
    Truncated,
    /// More than 64 bits.
    Overflow,
}

impl ReadError {
    /// What went wrong, as an error message says it.
    pub fn reason(self) -> &'static str {
        match self {
            ReadError::Truncated => "input ends inside a length prefix",
            ReadError::Overflow => "length prefix overflows 64 bits",
        }
    }
}

/// Reads one varint from the start of `data`: the value and the bytes it took.
#[inline]
pub fn read(data: &[u8]) -> Result<(u64, usize), ReadError> {
    let mut value = 0u64;
    for (i, &b) in data.iter().enumerate().take(10) {
        if i == 9 && b > 1 {
            return Err(ReadError::Overflow);
        }
        value |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    if data.len() >= 10 {
        Err(ReadError::Overflow)
    } else {
        Err(ReadError::Truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_values_round_trip() {
        for (v, want) in [
            (0u64, vec![0u8]),
            (127, vec![0x7f]),
            (128, vec![0x80, 0x01]),
            (300, vec![0xac, 0x02]),
            (
                u64::MAX,
                vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ] {
            let mut b = Vec::new();
            put(&mut b, v);
            assert_eq!(b, want, "{v}");
            assert_eq!(read(&b), Ok((v, b.len())));
        }
    }

    #[test]
    fn short_and_overlong_inputs_are_errors() {
        assert_eq!(read(&[]), Err(ReadError::Truncated));
        assert_eq!(read(&[0x80, 0x80]), Err(ReadError::Truncated));
        assert_eq!(
            read(&[0xff; 9].iter().chain(&[0x02]).copied().collect::<Vec<_>>()),
            Err(ReadError::Overflow)
        );
        assert_eq!(read(&[0x80; 11]), Err(ReadError::Overflow));
    }
}
