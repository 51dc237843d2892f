//! ClickHouse's compressed-block framing (`decompress=1` on an INSERT, what
//! the `clickhouse` crate sends by default): each block is a 16-byte
//! CityHash128 of the rest, a method byte (0x82 LZ4, 0x90 ZSTD, 0x02
//! none), the block's size with its 9-byte header, the size it decompresses
//! to, then the data.
//!
//! Owns: checking and unpacking those blocks. Must not: allocate more than
//! the limit, whatever the headers claim, or panic on any input.

use crate::{ChError, Code};

const CHECKSUM: usize = 16;
const HEADER: usize = 9;

/// The concatenated contents of every block in `body`, at most `limit`
/// bytes in all.
pub fn unpack(body: &[u8], limit: usize) -> Result<Vec<u8>, ChError> {
    // First pass: check every header and sum the sizes, so the output is
    // sized once and a lying header costs nothing.
    let mut total = 0usize;
    let mut blocks = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let head = body.get(at..at + CHECKSUM + HEADER).ok_or_else(|| {
            bad(format!(
                "a compressed block's header is cut short at byte {at} of {}",
                body.len()
            ))
        })?;
        let method = head[CHECKSUM];
        let size = u32::from_le_bytes(
            head[CHECKSUM + 1..CHECKSUM + 5]
                .try_into()
                .unwrap_or_default(),
        ) as usize;
        let raw = u32::from_le_bytes(
            head[CHECKSUM + 5..CHECKSUM + 9]
                .try_into()
                .unwrap_or_default(),
        ) as usize;
        if size < HEADER {
            return Err(bad(format!(
                "a compressed block at byte {at} says it is {size} bytes, less than its header"
            )));
        }
        let end = at
            .checked_add(CHECKSUM + size)
            .filter(|&e| e <= body.len())
            .ok_or_else(|| {
                bad(format!(
                    "a compressed block at byte {at} says it is {size} bytes; {} are left",
                    body.len() - at - CHECKSUM
                ))
            })?;
        let framed = &body[at + CHECKSUM..end];
        let want = u128::from_le_bytes(body[at..at + CHECKSUM].try_into().unwrap_or_default());
        if cityhash_rs::cityhash_102_128(framed).rotate_right(64) != want {
            return Err(ChError::new(
                Code::ChecksumDoesntMatch,
                format!(
                    "Checksum doesn't match: corrupted data (the compressed block at byte {at})"
                ),
            ));
        }
        total = total.saturating_add(raw);
        if total > limit {
            return Err(ChError::new(
                Code::QueryIsTooLarge,
                format!("the decompressed body is over max_decompressed_bytes ({limit} bytes)"),
            ));
        }
        blocks.push((method, &framed[HEADER..], raw, at));
        at = end;
    }
    let mut out = vec![0u8; total];
    let mut pos = 0;
    for (method, data, raw, at) in blocks {
        let into = &mut out[pos..pos + raw];
        let n = match method {
            0x02 => {
                if data.len() != raw {
                    return Err(bad(format!(
                        "an uncompressed block at byte {at} holds {} bytes, says {raw}",
                        data.len()
                    )));
                }
                into.copy_from_slice(data);
                raw
            }
            0x82 => lz4_flex::block::decompress_into(data, into)
                .map_err(|e| bad(format!("the LZ4 block at byte {at}: {e}")))?,
            0x90 => zstd::bulk::decompress_to_buffer(data, into)
                .map_err(|e| bad(format!("the ZSTD block at byte {at}: {e}")))?,
            other => {
                return Err(bad(format!(
                    "the compressed block at byte {at} has method 0x{other:02x} \
                     (LZ4 0x82, ZSTD 0x90 and none 0x02 are understood)"
                )))
            }
        };
        if n != raw {
            return Err(bad(format!(
                "the block at byte {at} decompressed to {n} bytes, says {raw}"
            )));
        }
        pos += raw;
    }
    Ok(out)
}

fn bad(message: String) -> ChError {
    ChError::new(Code::CannotDecompress, message)
}

/// One block of `data` in the framing.
#[cfg(test)]
pub fn pack(data: &[u8], method: u8) -> Vec<u8> {
    let payload = match method {
        0x82 => lz4_flex::block::compress(data),
        0x90 => zstd::bulk::compress(data, 1).unwrap_or_else(|_| data.to_vec()),
        _ => data.to_vec(),
    };
    let method = if method == 0x90 && payload.as_slice() == data {
        0x02
    } else {
        method
    };
    let mut framed = Vec::with_capacity(HEADER + payload.len());
    framed.push(method);
    framed.extend_from_slice(&((HEADER + payload.len()) as u32).to_le_bytes());
    framed.extend_from_slice(&(data.len() as u32).to_le_bytes());
    framed.extend_from_slice(&payload);
    let sum = cityhash_rs::cityhash_102_128(&framed).rotate_right(64);
    let mut out = sum.to_le_bytes().to_vec();
    out.extend_from_slice(&framed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpacks_every_method_and_checks_the_sums() {
        let data: Vec<u8> = (0..5000u32).flat_map(|i| (i % 97).to_le_bytes()).collect();
        let mut body = pack(&data[..7000], 0x82);
        body.extend(pack(&data[7000..12000], 0x90));
        body.extend(pack(&data[12000..], 0x02));
        assert_eq!(unpack(&body, usize::MAX).unwrap(), data);
        assert_eq!(
            unpack(&body, 100).unwrap_err().code,
            Code::QueryIsTooLarge as u32
        );
        let mut flipped = body.clone();
        flipped[40] ^= 1;
        assert_eq!(
            unpack(&flipped, usize::MAX).unwrap_err().code,
            Code::ChecksumDoesntMatch as u32
        );
        for cut in [1, 20, body.len() - 1] {
            assert!(unpack(&body[..cut], usize::MAX).is_err());
        }
        assert_eq!(unpack(b"", 0).unwrap(), b"");
    }
}
