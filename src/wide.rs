//! Exact decimal text <-> little-endian integers up to 256 bits.
//!
//! Owns: parsing decimal strings (sign, fraction, exponent) into the
//! two's-complement bytes of Int/UInt 8..256 and Decimal(P, S) values, with
//! range checks, and formatting those bytes back. Must not: go through
//! floating point (it would lose digits), or panic on any input.

/// A 256-bit magnitude, least significant limb first.
type Mag = [u64; 4];

fn mul10_add(m: &mut Mag, d: u64) -> bool {
    let mut carry = d as u128;
    for limb in m.iter_mut() {
        let v = (*limb as u128) * 10 + carry;
        *limb = v as u64;
        carry = v >> 64;
    }
    carry == 0
}

fn cmp(a: &Mag, b: &Mag) -> std::cmp::Ordering {
    for i in (0..4).rev() {
        match a[i].cmp(&b[i]) {
            std::cmp::Ordering::Equal => continue,
            o => return o,
        }
    }
    std::cmp::Ordering::Equal
}

fn pow2(bits: u32) -> Mag {
    let mut m = [0u64; 4];
    if bits < 256 {
        m[(bits / 64) as usize] = 1 << (bits % 64);
    }
    m
}

fn sub1(m: &Mag) -> Mag {
    let mut r = *m;
    for limb in r.iter_mut() {
        let (v, borrow) = limb.overflowing_sub(1);
        *limb = v;
        if !borrow {
            break;
        }
    }
    r
}

fn pow10(p: u32) -> Option<Mag> {
    let mut m = [1, 0, 0, 0];
    for _ in 0..p {
        if !mul10_add(&mut m, 0) {
            return None;
        }
    }
    Some(m)
}

/// What a parsed number must fit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target {
    /// Bytes written: 1, 2, 4, 8, 16 or 32.
    pub bytes: usize,
    pub signed: bool,
    /// Digits after the point (Decimal scale; 0 for integers).
    pub scale: u32,
    /// Decimal precision: at most this many digits in total.
    pub precision: Option<u32>,
}

/// Parses `text` exactly into `out[..target.bytes]` (little-endian two's
/// complement). Fraction digits beyond the scale are truncated, as
/// ClickHouse does.
pub(crate) fn parse(text: &str, t: Target, out: &mut [u8; 32]) -> Result<(), &'static str> {
    let s = text.as_bytes();
    let mut i = 0;
    let neg = match s.first() {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let mut digits: Vec<u8> = Vec::with_capacity(s.len());
    let mut frac_len: i64 = 0;
    let mut seen_point = false;
    let mut any = false;
    while i < s.len() {
        match s[i] {
            c @ b'0'..=b'9' => {
                any = true;
                digits.push(c - b'0');
                if seen_point {
                    frac_len += 1;
                }
            }
            b'.' if !seen_point => seen_point = true,
            b'e' | b'E' => break,
            _ => return Err("not a number"),
        }
        i += 1;
    }
    if !any {
        return Err("not a number");
    }
    let mut exp: i64 = 0;
    if i < s.len() {
        let e = std::str::from_utf8(&s[i + 1..]).map_err(|_| "not a number")?;
        exp = e.parse::<i64>().map_err(|_| "bad exponent")?;
        if exp.abs() > 400 {
            return Err("exponent out of range");
        }
    }
    let shift = t.scale as i64 + exp - frac_len;
    if shift < 0 {
        let keep = digits.len().saturating_sub((-shift) as usize);
        // Integers must be whole; decimals drop extra digits like ClickHouse.
        if t.precision.is_none() && t.scale == 0 && digits[keep..].iter().any(|&d| d != 0) {
            return Err("not a whole number");
        }
        digits.truncate(keep);
    }
    let mut m: Mag = [0; 4];
    for &d in &digits {
        if !mul10_add(&mut m, d as u64) {
            return Err("out of range");
        }
    }
    if shift > 0 {
        for _ in 0..shift {
            if !mul10_add(&mut m, 0) {
                return Err("out of range");
            }
        }
    }
    let zero = m == [0; 4];
    if let Some(p) = t.precision {
        if let Some(limit) = pow10(p) {
            if cmp(&m, &limit) != std::cmp::Ordering::Less {
                return Err("more digits than the decimal's precision");
            }
        }
    }
    let bits = (t.bytes * 8) as u32;
    if t.signed {
        let limit = pow2(bits - 1); // |min|
        let ok = if neg {
            cmp(&m, &limit) != std::cmp::Ordering::Greater
        } else {
            cmp(&m, &limit) == std::cmp::Ordering::Less
        };
        if !ok {
            return Err("out of range");
        }
    } else {
        if neg && !zero {
            return Err("negative value for an unsigned type");
        }
        if bits < 256 && cmp(&m, &sub1(&pow2(bits))) == std::cmp::Ordering::Greater {
            return Err("out of range");
        }
    }
    if neg && !zero {
        // Two's complement: invert and add one.
        let mut carry = true;
        for limb in m.iter_mut() {
            let (v, c) = (!*limb).overflowing_add(carry as u64);
            *limb = v;
            carry = c;
        }
    }
    for (k, limb) in m.iter().enumerate() {
        out[k * 8..k * 8 + 8].copy_from_slice(&limb.to_le_bytes());
    }
    Ok(())
}

/// Formats little-endian bytes (1..=32 of them) as decimal text with `scale`
/// digits after the point.
pub(crate) fn format(bytes: &[u8], signed: bool, scale: u32) -> String {
    let mut buf = [0u8; 32];
    let n = bytes.len().min(32);
    buf[..n].copy_from_slice(&bytes[..n]);
    let neg = signed && n > 0 && bytes[n - 1] & 0x80 != 0;
    if neg {
        for b in buf[n..].iter_mut() {
            *b = 0xff;
        }
    }
    let mut m: Mag = [0; 4];
    for (k, limb) in m.iter_mut().enumerate() {
        *limb = u64::from_le_bytes(buf[k * 8..k * 8 + 8].try_into().unwrap_or([0; 8]));
    }
    if neg {
        let mut carry = true;
        for limb in m.iter_mut() {
            let (v, c) = (!*limb).overflowing_add(carry as u64);
            *limb = v;
            carry = c;
        }
    }
    let mut digits = Vec::new();
    while m != [0; 4] {
        let mut rem: u128 = 0;
        for i in (0..4).rev() {
            let cur = (rem << 64) | m[i] as u128;
            m[i] = (cur / 10) as u64;
            rem = cur % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    while digits.len() <= scale as usize {
        digits.push(b'0');
    }
    digits.reverse();
    let mut s = String::with_capacity(digits.len() + 2);
    if neg {
        s.push('-');
    }
    let int_len = digits.len() - scale as usize;
    for (i, d) in digits.iter().enumerate() {
        if i == int_len && scale > 0 {
            s.push('.');
        }
        s.push(*d as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str, bytes: usize, signed: bool, scale: u32) -> Result<String, &'static str> {
        let mut out = [0u8; 32];
        parse(
            text,
            Target {
                bytes,
                signed,
                scale,
                precision: None,
            },
            &mut out,
        )?;
        Ok(format(&out[..bytes], signed, scale))
    }

    #[test]
    fn exact_round_trips_and_ranges() {
        assert_eq!(
            p("18446744073709551615", 8, false, 0).unwrap(),
            "18446744073709551615"
        );
        assert!(p("18446744073709551616", 8, false, 0).is_err());
        assert_eq!(
            p("-170141183460469231731687303715884105728", 16, true, 0).unwrap(),
            "-170141183460469231731687303715884105728"
        );
        assert!(p("170141183460469231731687303715884105728", 16, true, 0).is_err());
        assert_eq!(p("1.23456", 8, true, 4).unwrap(), "1.2345");
        assert_eq!(p("-0.5", 4, true, 2).unwrap(), "-0.50");
        assert_eq!(p("1e3", 4, true, 0).unwrap(), "1000");
        assert_eq!(p("-0", 1, false, 0).unwrap(), "0");
        assert!(p("-1", 1, false, 0).is_err());
        assert!(p("1.2.3", 8, true, 0).is_err());
        assert!(p("", 8, true, 0).is_err());
        let max = "115792089237316195423570985008687907853269984665640564039457584007913129639935";
        assert_eq!(p(max, 32, false, 0).unwrap(), max);
        let mut out = [0u8; 32];
        let t = Target {
            bytes: 4,
            signed: true,
            scale: 2,
            precision: Some(9),
        };
        assert!(parse("10000000.00", t, &mut out).is_err());
        assert!(parse("9999999.99", t, &mut out).is_ok());
    }
}
