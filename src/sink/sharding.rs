//! Sharding keys: the expressions a `Distributed` table is commonly sharded
//! by, computed here bit for bit as ClickHouse computes them, so rows
//! written straight to the shards land where the `Distributed` table would
//! have put them.
//!
//! Owns: parsing a key expression (a plain integer column, `intHash64(c)`,
//! `cityHash64(c)`, `sipHash64(c)`), evaluating it on one value's RowBinary
//! bytes, and the slot arithmetic (`key % total_weight`, signed values taken
//! as unsigned of their own width, as the server's selector does). Must not:
//! accept an expression it cannot compute exactly; the caller refuses it
//! and points to the `Distributed` table.

use crate::schema::Type;

/// The hash a key applies to its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    /// The column's value itself (integer columns only).
    Identity,
    /// `intHash64`: MurmurHash3's finalizer of the value as UInt64, salted.
    Int64,
    /// `cityHash64`: CityHash64 1.0.2 of a string; of an integer, `intHash64`
    /// of its bytes zero-extended to 64 bits.
    City64,
    /// `sipHash64`: SipHash-2-4 with a zero key of the value's bytes.
    Sip64,
}

/// A parsed sharding key: one hash of one column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShardingKey {
    hash: Hash,
    column: String,
}

impl ShardingKey {
    /// Parses `expr`; `None` for anything this module cannot compute.
    pub(crate) fn parse(expr: &str) -> Option<ShardingKey> {
        let expr = expr.trim();
        let (hash, inner) = match expr.split_once('(') {
            None => (Hash::Identity, expr),
            Some((name, rest)) => {
                let hash = match name.trim() {
                    "intHash64" => Hash::Int64,
                    "cityHash64" => Hash::City64,
                    "sipHash64" => Hash::Sip64,
                    _ => return None,
                };
                (hash, rest.strip_suffix(')')?)
            }
        };
        let column = inner.trim();
        let column = column
            .strip_prefix('`')
            .and_then(|c| c.strip_suffix('`'))
            .unwrap_or(column);
        let plain = !column.is_empty()
            && column
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !column.starts_with(|c: char| c.is_ascii_digit());
        plain.then(|| ShardingKey {
            hash,
            column: column.to_string(),
        })
    }

    /// The column the key reads.
    pub(crate) fn column(&self) -> &str {
        &self.column
    }

    /// Whether the key can be computed for a column of type `ty`.
    pub(crate) fn supports(&self, ty: &Type) -> bool {
        match (self.hash, Width::of(ty)) {
            (_, Some(_)) => true,
            (Hash::City64 | Hash::Sip64, None) => {
                matches!(ty, Type::String | Type::FixedString(_))
                    || matches!(ty, Type::LowCardinality(inner) if **inner == Type::String)
            }
            _ => false,
        }
    }

    /// The key of one value of type `ty`, given its RowBinary bytes (for a
    /// string, without its length prefix). `None` when the type is not
    /// supported ([`supports`](Self::supports) says so up front).
    pub(crate) fn eval(&self, ty: &Type, value: &[u8]) -> Option<u64> {
        match Width::of(ty) {
            Some(w) => {
                let unsigned = w.unsigned(value)?;
                Some(match self.hash {
                    Hash::Identity => w.slot_domain(value)?,
                    Hash::Int64 => int_hash64(w.sign_extended(value)?),
                    Hash::City64 => int_hash64(unsigned),
                    Hash::Sip64 => sip_hash64(value),
                })
            }
            None if self.supports(ty) => match self.hash {
                Hash::City64 => Some(city_hash64(value)),
                Hash::Sip64 => Some(sip_hash64(value)),
                Hash::Identity | Hash::Int64 => None,
            },
            None => None,
        }
    }
}

/// An integer column's width and signedness.
#[derive(Debug, Clone, Copy)]
struct Width {
    bytes: usize,
    signed: bool,
}

impl Width {
    /// Integers up to 64 bits (what the server's shard selector takes).
    fn of(ty: &Type) -> Option<Width> {
        let (bytes, signed) = ty.int_layout().filter(|&(bytes, _)| bytes <= 8)?;
        Some(Width { bytes, signed })
    }

    /// The little-endian bytes zero-extended to 64 bits.
    fn unsigned(self, value: &[u8]) -> Option<u64> {
        let bytes = value.get(..self.bytes)?;
        let mut b = [0u8; 8];
        b[..self.bytes].copy_from_slice(bytes);
        Some(u64::from_le_bytes(b))
    }

    /// The value as a 64-bit integer (sign-extended when signed), as a
    /// C++ cast to UInt64 gives it.
    fn sign_extended(self, value: &[u8]) -> Option<u64> {
        let raw = self.unsigned(value)?;
        let bits = self.bytes as u32 * 8;
        Some(if self.signed && bits < 64 && raw >> (bits - 1) & 1 == 1 {
            raw | (u64::MAX << bits)
        } else {
            raw
        })
    }

    /// What the server's shard selector divides: the value cast to UInt32
    /// for types up to 32 bits (negative values wrap), to UInt64 above.
    fn slot_domain(self, value: &[u8]) -> Option<u64> {
        let v = self.sign_extended(value)?;
        Some(if self.bytes <= 4 { v as u32 as u64 } else { v })
    }
}

/// ClickHouse's `intHash64`: MurmurHash3's 64-bit finalizer of the value
/// XORed with a fixed constant (the SQL function's; its hash tables use
/// the finalizer alone).
pub(crate) fn int_hash64(x: u64) -> u64 {
    let mut x = x ^ 0x4cf2_d2ba_ae6d_a887;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// SipHash-2-4 with the zero key, as ClickHouse's `sipHash64`.
pub(crate) fn sip_hash64(data: &[u8]) -> u64 {
    #[allow(deprecated)] // std's SipHasher is exactly SipHash-2-4; no other use.
    let mut h = std::hash::SipHasher::new_with_keys(0, 0);
    std::hash::Hasher::write(&mut h, data);
    std::hash::Hasher::finish(&h)
}

// CityHash64, version 1.0.2: the version ClickHouse bundles (later
// versions changed the short-input paths and give other values).
const K0: u64 = 0xc3a5_c85c_97cb_3127;
const K1: u64 = 0xb492_b66f_be98_f273;
const K2: u64 = 0x9ae1_6a3b_2f90_404f;
const K3: u64 = 0xc949_d7c7_509e_6557;

fn fetch64(s: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&s[at..at + 8]);
    u64::from_le_bytes(b)
}

fn fetch32(s: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&s[at..at + 4]);
    u32::from_le_bytes(b) as u64
}

fn rotate(v: u64, shift: u32) -> u64 {
    if shift == 0 {
        v
    } else {
        v.rotate_right(shift)
    }
}

fn shift_mix(v: u64) -> u64 {
    v ^ (v >> 47)
}

fn hash_len16(u: u64, v: u64) -> u64 {
    const MUL: u64 = 0x9ddf_ea08_eb38_2d69;
    let mut a = (u ^ v).wrapping_mul(MUL);
    a ^= a >> 47;
    let mut b = (v ^ a).wrapping_mul(MUL);
    b ^= b >> 47;
    b.wrapping_mul(MUL)
}

fn hash_len0to16(s: &[u8]) -> u64 {
    let len = s.len();
    if len > 8 {
        let a = fetch64(s, 0);
        let b = fetch64(s, len - 8);
        // RotateByAtLeast1: the shift is len, 9..=16, never 0.
        return hash_len16(a, b.wrapping_add(len as u64).rotate_right(len as u32)) ^ b;
    }
    if len >= 4 {
        let a = fetch32(s, 0);
        return hash_len16((len as u64).wrapping_add(a << 3), fetch32(s, len - 4));
    }
    if len > 0 {
        let (a, b, c) = (s[0] as u64, s[len >> 1] as u64, s[len - 1] as u64);
        let y = a.wrapping_add(b << 8);
        let z = (len as u64).wrapping_add(c << 2);
        return shift_mix(y.wrapping_mul(K2) ^ z.wrapping_mul(K3)).wrapping_mul(K2);
    }
    K2
}

fn hash_len17to32(s: &[u8]) -> u64 {
    let len = s.len();
    let a = fetch64(s, 0).wrapping_mul(K1);
    let b = fetch64(s, 8);
    let c = fetch64(s, len - 8).wrapping_mul(K2);
    let d = fetch64(s, len - 16).wrapping_mul(K0);
    hash_len16(
        rotate(a.wrapping_sub(b), 43)
            .wrapping_add(rotate(c, 30))
            .wrapping_add(d),
        a.wrapping_add(rotate(b ^ K3, 20))
            .wrapping_sub(c)
            .wrapping_add(len as u64),
    )
}

fn weak_hash_len32_with_seeds(s: &[u8], at: usize, a: u64, b: u64) -> (u64, u64) {
    let (w, x, y, z) = (
        fetch64(s, at),
        fetch64(s, at + 8),
        fetch64(s, at + 16),
        fetch64(s, at + 24),
    );
    let mut a = a.wrapping_add(w);
    let mut b = rotate(b.wrapping_add(a).wrapping_add(z), 21);
    let c = a;
    a = a.wrapping_add(x).wrapping_add(y);
    b = b.wrapping_add(rotate(a, 44));
    (a.wrapping_add(z), b.wrapping_add(c))
}

fn hash_len33to64(s: &[u8]) -> u64 {
    let len = s.len();
    let mut z = fetch64(s, 24);
    let mut a = fetch64(s, 0).wrapping_add(
        (len as u64)
            .wrapping_add(fetch64(s, len - 16))
            .wrapping_mul(K0),
    );
    let mut b = rotate(a.wrapping_add(z), 52);
    let mut c = rotate(a, 37);
    a = a.wrapping_add(fetch64(s, 8));
    c = c.wrapping_add(rotate(a, 7));
    a = a.wrapping_add(fetch64(s, 16));
    let vf = a.wrapping_add(z);
    let vs = b.wrapping_add(rotate(a, 31)).wrapping_add(c);
    a = fetch64(s, 16).wrapping_add(fetch64(s, len - 32));
    z = fetch64(s, len - 8);
    b = rotate(a.wrapping_add(z), 52);
    c = rotate(a, 37);
    a = a.wrapping_add(fetch64(s, len - 24));
    c = c.wrapping_add(rotate(a, 7));
    a = a.wrapping_add(fetch64(s, len - 16));
    let wf = a.wrapping_add(z);
    let ws = b.wrapping_add(rotate(a, 31)).wrapping_add(c);
    let r = shift_mix(
        vf.wrapping_add(ws)
            .wrapping_mul(K2)
            .wrapping_add(wf.wrapping_add(vs).wrapping_mul(K0)),
    );
    shift_mix(r.wrapping_mul(K0).wrapping_add(vs)).wrapping_mul(K2)
}

/// CityHash64 1.0.2, ClickHouse's `cityHash64` of a string.
pub(crate) fn city_hash64(s: &[u8]) -> u64 {
    let len = s.len();
    if len <= 16 {
        return hash_len0to16(s);
    }
    if len <= 32 {
        return hash_len17to32(s);
    }
    if len <= 64 {
        return hash_len33to64(s);
    }
    // Over 64 bytes: hash the end first, then 64-byte chunks keeping 56
    // bytes of state (v, w, x, y, z).
    let mut x = fetch64(s, 0);
    let mut y = fetch64(s, len - 16) ^ K1;
    let mut z = fetch64(s, len - 56) ^ K0;
    let mut v = weak_hash_len32_with_seeds(s, len - 64, len as u64, y);
    let mut w = weak_hash_len32_with_seeds(s, len - 32, (len as u64).wrapping_mul(K1), K0);
    z = z.wrapping_add(shift_mix(v.1).wrapping_mul(K1));
    x = rotate(z.wrapping_add(x), 39).wrapping_mul(K1);
    y = rotate(y, 33).wrapping_mul(K1);
    let mut at = 0;
    let mut left = (len - 1) & !63;
    loop {
        x = rotate(
            x.wrapping_add(y)
                .wrapping_add(v.0)
                .wrapping_add(fetch64(s, at + 16)),
            37,
        )
        .wrapping_mul(K1);
        y = rotate(y.wrapping_add(v.1).wrapping_add(fetch64(s, at + 48)), 42).wrapping_mul(K1);
        x ^= w.1;
        y ^= v.0;
        z = rotate(z ^ w.0, 33);
        v = weak_hash_len32_with_seeds(s, at, v.1.wrapping_mul(K1), x.wrapping_add(w.0));
        w = weak_hash_len32_with_seeds(s, at + 32, z.wrapping_add(w.1), y);
        std::mem::swap(&mut z, &mut x);
        at += 64;
        left -= 64;
        if left == 0 {
            break;
        }
    }
    hash_len16(
        hash_len16(v.0, w.0)
            .wrapping_add(shift_mix(y).wrapping_mul(K1))
            .wrapping_add(z),
        hash_len16(v.1, w.1).wrapping_add(x),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_parse_or_are_refused() {
        let k = ShardingKey::parse(" cityHash64( `tweet_id` ) ").unwrap();
        assert_eq!((k.hash, k.column()), (Hash::City64, "tweet_id"));
        assert_eq!(ShardingKey::parse("user_id").unwrap().hash, Hash::Identity);
        for bad in [
            "rand()",
            "cityHash64(a, b)",
            "xxHash64(a)",
            "a + 1",
            "intHash64(toUInt64(a))",
            "",
            "1a",
        ] {
            assert_eq!(ShardingKey::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn signed_values_are_unsigned_of_their_width_for_the_selector() {
        let k = ShardingKey::parse("x").unwrap();
        assert_eq!(k.eval(&Type::Int8, &[0xff]), Some(u32::MAX as u64));
        assert_eq!(k.eval(&Type::Int64, &(-1i64).to_le_bytes()), Some(u64::MAX));
        assert_eq!(k.eval(&Type::UInt16, &[1, 1]), Some(257));
        assert_eq!(k.eval(&Type::String, b"x"), None);
        assert!(!k.supports(&Type::String));
        assert!(ShardingKey::parse("cityHash64(x)")
            .unwrap()
            .supports(&Type::String));
    }

    /// `cityHash64(substring(TEXT, 1, n))` for n = 0..=100, and a few other
    /// values, as ClickHouse 26.9 (chdb) computes them: every length path
    /// of CityHash64 1.0.2, against the server's own code.
    const TEXT: &[u8] =
        b"The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs! 0123456789ABCDEF";
    const CITY: [u64; 101] = [
        11160318154034397263,
        5570910369516329963,
        1543931613479180149,
        9456065179546978676,
        7426151758103449081,
        13426132771373433940,
        15154770016553123986,
        12915914661088991145,
        8261970815632334399,
        15693689613497209625,
        9753514855274064797,
        9115367725749535642,
        4794125891677675609,
        3508417110941834345,
        2780242826360660774,
        14516595473119768720,
        3887581654433788716,
        17248679875317671279,
        13945071648393487058,
        18439263321547051925,
        14980713287129916415,
        17720731409026112025,
        1835968189512738534,
        3384170690442779294,
        5574213167716506373,
        1612732933313009427,
        11471194458000044567,
        16411421910243600583,
        7619078584847098171,
        1983132422330993972,
        7201255707329410381,
        2921807510953238776,
        14343997730508542907,
        4305124436332828171,
        15788885193548781885,
        3227627390860465677,
        8383223635323370438,
        13913954454886304696,
        10895706625721627879,
        8995539933640403088,
        9667495076570987381,
        16909447175340226460,
        13826056195899073064,
        16697807905646383735,
        7577447016901655331,
        9338725025681436012,
        12591841506218882077,
        13819333148591765803,
        1034777273656543632,
        9392470921953238239,
        2899539736370525205,
        12543263539222089776,
        4997405687832625206,
        13001284654371223818,
        10742649788765973486,
        9774176301061150197,
        3515144303595726033,
        17214682075133779532,
        13867449668837067665,
        3296101405680439175,
        5991371820798362644,
        13359607229940811435,
        13105532834842216426,
        12785569722985912003,
        573335532966550864,
        1125969395742836002,
        11569323325807907723,
        5900844347598664345,
        7442790022283279607,
        12050760782991794946,
        12693163524861620117,
        12430581572141084768,
        14643845127087426086,
        7437972860853244190,
        1195852428728711549,
        6789381847099459537,
        6506726384066882014,
        15628523106950461534,
        15682597322476753056,
        3580373701605964813,
        4334736978379966219,
        14485260882844472653,
        1106763385003895858,
        11018833315260400140,
        15579540819211449069,
        3945426881213880179,
        1661926544948011518,
        10830376021601345426,
        3458687775398295072,
        5848305292419211236,
        5157953851450800017,
        7970367997213996556,
        3200043286709210255,
        8055760617985417123,
        5549146059511045670,
        3337679325462713632,
        8420836238823200986,
        10670305877469933251,
        1790952466473931254,
        6803939792204813421,
        4761747536757616637,
    ];

    #[test]
    fn hashes_match_clickhouse() {
        for (n, want) in CITY.iter().enumerate() {
            assert_eq!(city_hash64(&TEXT[..n]), *want, "cityHash64 of {n} bytes");
        }
        assert_eq!(sip_hash64(b""), 2_202_906_307_356_721_367);
        assert_eq!(sip_hash64(b"abc"), 4_596_069_200_710_135_518);
        assert_eq!(int_hash64(0), 4_761_183_170_873_013_810);
        assert_eq!(int_hash64(1), 10_577_349_846_663_553_072);
        let city = ShardingKey::parse("cityHash64(x)").unwrap();
        assert_eq!(
            city.eval(&Type::Int32, &(-1i32).to_le_bytes()),
            Some(9_168_733_277_332_772_950)
        );
        assert_eq!(
            city.eval(&Type::UInt8, &[200]),
            Some(14_204_231_057_850_003_148)
        );
        let sip = ShardingKey::parse("sipHash64(x)").unwrap();
        assert_eq!(
            sip.eval(&Type::Int64, &(-5i64).to_le_bytes()),
            Some(3_332_004_721_919_032_182)
        );
    }
}
