//! The byte scan inside JSON strings: where a string stops being plain
//! text, 16 bytes at a time with SSE2 on x86-64, 8 at a time (SWAR) on
//! every other CPU.
//!
//! Owns: [`string_run`] and the choice of its implementation, made once per
//! process. `CH_INGEST_JSON_SCAN=portable` forces the SWAR path on x86-64
//! (CI runs the decoder tests that way; an operator can too). Must not:
//! know JSON's grammar beyond "a string ends at `"`, escapes at `\`, and
//! may not hold control characters".

use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

/// The first byte at or after `from` that ends a string's plain run: `"`,
/// `\`, or a control character (below 0x20); `input.len()` if none. The
/// flag says whether any byte of the run is 0x80 or above (the run then
/// needs UTF-8 validation; an ASCII run does not).
#[inline]
pub(crate) fn string_run(input: &[u8], from: usize) -> (usize, bool) {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        return sse2::string_run(input, from);
    }
    swar::string_run(input, from)
}

/// Which implementation the JSON string scanner uses: `"sse2"` or `"portable"`.
#[cfg_attr(not(feature = "test-util"), allow(dead_code))]
pub fn implementation() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        return "sse2";
    }
    "portable"
}

/// What every implementation (and the byte-at-a-time reference) says
/// about `input` from `from`, named; for fuzz targets, which check that
/// they agree on any input whichever one the process uses.
#[cfg(feature = "test-util")]
pub fn every_implementation(input: &[u8], from: usize) -> Vec<(&'static str, (usize, bool))> {
    let from = from.min(input.len());
    let mut all = vec![
        ("reference", scalar_run(input, from, false)),
        ("portable", swar::string_run(input, from)),
    ];
    #[cfg(target_arch = "x86_64")]
    all.push(("sse2", sse2::string_run(input, from)));
    all
}

const UNKNOWN: u8 = 0;
const SIMD: u8 = 1;
const PORTABLE: u8 = 2;

static CHOICE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Whether the SIMD path is on: decided once (the environment is read
/// once), then one relaxed load per call.
#[inline]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn simd() -> bool {
    match CHOICE.load(Relaxed) {
        SIMD => true,
        PORTABLE => false,
        _ => choose(),
    }
}

#[cold]
fn choose() -> bool {
    let portable = std::env::var_os("CH_INGEST_JSON_SCAN").is_some_and(|v| v == "portable");
    CHOICE.store(if portable { PORTABLE } else { SIMD }, Relaxed);
    !portable
}

/// The run's end at or after `at`, byte by byte: the tails shorter than a
/// vector, shared by both implementations.
#[inline]
fn scalar_run(input: &[u8], mut at: usize, mut wide: bool) -> (usize, bool) {
    while let Some(&b) = input.get(at) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            break;
        }
        wide |= b >= 0x80;
        at += 1;
    }
    (at, wide)
}

mod swar {
    //! Eight bytes in a `u64`. Each mask below is exact at its lowest set
    //! byte (a borrow only ever flags bytes above a true match), so the
    //! lowest set bit of their union is the first stop.

    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;

    #[inline]
    fn zero_bytes(x: u64) -> u64 {
        x.wrapping_sub(ONES) & !x & HIGHS
    }

    #[inline]
    pub(super) fn string_run(input: &[u8], from: usize) -> (usize, bool) {
        let mut at = from;
        let mut wide = false;
        while let Some(chunk) = input.get(at..at + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let x = u64::from_le_bytes(word);
            let quote = zero_bytes(x ^ (ONES * b'"' as u64));
            let slash = zero_bytes(x ^ (ONES * b'\\' as u64));
            // Below 0x20: subtracting 0x20 borrows, and the byte's own high
            // bit is clear.
            let control = x.wrapping_sub(ONES * 0x20) & !x & HIGHS;
            let stop = quote | slash | control;
            let high = x & HIGHS;
            if stop != 0 {
                let n = stop.trailing_zeros() as usize / 8;
                let before = if n == 0 {
                    0
                } else {
                    high & (u64::MAX >> (64 - 8 * n))
                };
                return (at + n, wide | (before != 0));
            }
            wide |= high != 0;
            at += 8;
        }
        super::scalar_run(input, at, wide)
    }
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    //! Sixteen bytes per compare. SSE2 is part of x86-64 itself, so there
    //! is nothing to detect.

    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };

    #[inline]
    pub(super) fn string_run(input: &[u8], from: usize) -> (usize, bool) {
        let mut at = from;
        let mut wide = false;
        while let Some(chunk) = input.get(at..at + 16) {
            // SAFETY: `chunk` is 16 readable bytes and the load is
            // unaligned; SSE2 is part of every x86-64 CPU.
            let (stop, high) = unsafe {
                let v = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
                let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
                let slash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
                // max(v, 0x1f) == 0x1f exactly when v <= 0x1f, unsigned.
                let limit = _mm_set1_epi8(0x1f);
                let control = _mm_cmpeq_epi8(_mm_max_epu8(v, limit), limit);
                let stops = _mm_or_si128(_mm_or_si128(quote, slash), control);
                (_mm_movemask_epi8(stops) as u32, _mm_movemask_epi8(v) as u32)
            };
            if stop != 0 {
                let n = stop.trailing_zeros();
                return (at + n as usize, wide | (high & ((1u32 << n) - 1) != 0));
            }
            wide |= high != 0;
            at += 16;
        }
        super::scalar_run(input, at, wide)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(input: &[u8], from: usize) -> (usize, bool) {
        scalar_run(input, from, false)
    }

    #[test]
    fn every_implementation_finds_the_same_stop() {
        // Every stop byte at every position of inputs around the vector
        // widths, with and without non-ASCII bytes before and after it.
        for len in 0..40usize {
            for stop_at in 0..=len {
                for stop in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                    for wide_at in [
                        None,
                        Some(0),
                        Some(stop_at / 2),
                        Some(len.saturating_sub(1)),
                    ] {
                        let mut input: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                        if let Some(w) = wide_at.filter(|&w| w < len) {
                            input[w] = 0xc3;
                        }
                        if stop_at < len {
                            input[stop_at] = stop;
                        }
                        for from in [0, 1.min(len)] {
                            let want = reference(&input, from);
                            assert_eq!(swar::string_run(&input, from), want, "{input:?} {from}");
                            #[cfg(target_arch = "x86_64")]
                            assert_eq!(sse2::string_run(&input, from), want, "{input:?} {from}");
                            assert_eq!(string_run(&input, from), want);
                        }
                    }
                }
            }
        }
        // Bytes that look like stops to a signed compare are not stops.
        let input = [
            0x80u8, 0xff, 0x9f, 0xa0, b'a', 0xe2, 0x82, 0xac, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(reference(&input, 0), (8, true));
        assert_eq!(swar::string_run(&input, 0), (8, true));
        #[cfg(target_arch = "x86_64")]
        assert_eq!(sse2::string_run(&input, 0), (8, true));
    }

    #[test]
    fn the_forced_choice_is_reported() {
        let forced = std::env::var_os("CH_INGEST_JSON_SCAN").is_some_and(|v| v == "portable");
        let simd_here = cfg!(target_arch = "x86_64") && !forced;
        assert_eq!(
            implementation(),
            if simd_here { "sse2" } else { "portable" }
        );
    }
}
