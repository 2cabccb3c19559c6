//! Content digests: `sha256:<64 lowercase hex>`, the only algorithm the stores accept.

use std::fmt;
use std::io::Read;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::error::{Result, StoreError};

/// A validated `sha256:<hex>` digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses and validates `s`: algorithm must be `sha256`, the encoded part 64 lowercase hex.
    pub fn parse(s: &str) -> Result<Digest> {
        let Some((alg, hex)) = s.split_once(':') else {
            return Err(StoreError::InvalidArgument(format!(
                "invalid digest {s:?}: expected <algorithm>:<hex>"
            )));
        };
        if alg != "sha256" {
            return Err(StoreError::InvalidArgument(format!(
                "unsupported digest algorithm {alg:?} in {s:?}: only sha256 is supported"
            )));
        }
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(StoreError::InvalidArgument(format!(
                "invalid digest {s:?}: sha256 needs 64 lowercase hex characters"
            )));
        }
        Ok(Digest(s.to_string()))
    }

    /// Builds a digest from a 64-character hex string (validated).
    pub fn from_hex(hex: &str) -> Result<Digest> {
        Digest::parse(&format!("sha256:{hex}"))
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(data))
    }

    /// The digest of everything `r` yields.
    pub fn of_reader(mut r: impl Read) -> std::io::Result<(Digest, u64)> {
        let mut h = Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let n = h.len();
        Ok((h.finish(), n))
    }

    fn from_hasher(h: Sha256) -> Digest {
        Digest(format!("sha256:{}", hex(&h.finalize())))
    }

    /// The algorithm, always `sha256`.
    pub fn algorithm(&self) -> &str {
        "sha256"
    }

    /// The 64 hex characters.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    /// The full `sha256:<hex>` string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Digest {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Digest> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Incremental sha256 with a byte count.
#[derive(Clone, Default)]
pub struct Hasher {
    h: Sha256,
    n: u64,
}

impl Hasher {
    /// A fresh hasher.
    pub fn new() -> Hasher {
        Hasher::default()
    }
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.h.update(data);
        self.n += data.len() as u64;
    }
    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.n
    }
    /// True when nothing was fed.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    /// The digest of what was fed (the hasher itself is kept).
    pub fn digest(&self) -> Digest {
        Digest::from_hasher(self.h.clone())
    }
    /// The digest of what was fed.
    pub fn finish(self) -> Digest {
        Digest::from_hasher(self.h)
    }
}

/// A reader that hashes what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::new(),
        }
    }
    /// Digest and byte count of what was read so far.
    pub fn digest(&self) -> (Digest, u64) {
        (self.hasher.digest(), self.hasher.len())
    }
    /// Reads the rest to the end (so the digest covers the whole stream).
    pub fn drain(&mut self) -> std::io::Result<()> {
        std::io::copy(self, &mut std::io::sink()).map(|_| ())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_is_the_known_value() {
        assert_eq!(
            Digest::of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parse_rejects_other_algorithms_and_bad_hex() {
        let e = Digest::parse("sha512:abcd").unwrap_err().to_string();
        assert!(e.contains("unsupported digest algorithm \"sha512\""), "{e}");
        let e = Digest::parse("sha256:xyz").unwrap_err().to_string();
        assert!(e.contains("64 lowercase hex"), "{e}");
        let upper = format!("sha256:{}", "A".repeat(64));
        assert!(Digest::parse(&upper).is_err());
        assert!(Digest::parse("nocolon").is_err());
        let ok = Digest::of(b"x");
        assert_eq!(Digest::parse(ok.as_str()).unwrap(), ok);
        assert_eq!(ok.hex().len(), 64);
    }

    #[test]
    fn hashing_reader_matches_one_shot() {
        let data = vec![7u8; 100_000];
        let mut r = HashingReader::new(&data[..]);
        r.drain().unwrap();
        assert_eq!(r.digest(), (Digest::of(&data), 100_000));
    }
}
