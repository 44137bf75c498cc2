//! Content digests (`sha256:<hex>`) and a reader that hashes and counts what passes through it.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest as _, Sha256};

/// Errors from parsing a digest string.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    /// The algorithm prefix is missing or not `sha256`.
    #[error("unsupported digest algorithm in {0:?} (only sha256 is accepted)")]
    Algorithm(String),
    /// The hex part is not 64 lowercase hex characters.
    #[error("malformed sha256 digest {0:?}")]
    Malformed(String),
}

/// A SHA-256 content digest, as written `sha256:<64 lowercase hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Wraps a raw 32-byte SHA-256 value.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The lowercase hex part, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some(hex_part) = s.strip_prefix("sha256:") else {
            return Err(DigestError::Algorithm(truncate(s)));
        };
        // Lowercase only: the OCI spec's encoded form, and one spelling per digest.
        if hex_part.len() != 64
            || !hex_part
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(DigestError::Malformed(truncate(s)));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out)
            .map_err(|_| DigestError::Malformed(truncate(s)))?;
        Ok(Self(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Keeps error messages about attacker-supplied strings short.
fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// A reader that hashes every byte it passes on and fails once more than `limit` bytes went
/// through. The limit is reported through a shared flag, because wrapping readers (tar, gzip)
/// may replace the error value on its way up.
#[derive(Debug)]
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    limit: u64,
    exceeded: Arc<AtomicBool>,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R, limit: u64) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
            limit,
            exceeded: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A flag that turns true when the limit was hit.
    pub(crate) fn limit_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.exceeded)
    }

    /// Reads the rest of the stream (hashing it) and returns the digest and total count.
    pub(crate) fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((Digest(self.hasher.finalize().into()), self.count))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let n64 = n as u64;
        if self.count.saturating_add(n64) > self.limit {
            self.exceeded.store(true, Ordering::Relaxed);
            return Err(io::Error::other("size limit exceeded"));
        }
        self.count += n64;
        self.hasher.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
}

/// Whether a limit flag from [`HashingReader::limit_flag`] was raised.
pub(crate) fn limit_hit(flag: &AtomicBool) -> bool {
    flag.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_round_trip() {
        let d = Digest::of(b"abc");
        let s = d.to_string();
        assert_eq!(
            s,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(s.parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn rejects_other_algorithms_and_bad_hex() {
        assert!(matches!(
            "sha512:00".parse::<Digest>(),
            Err(DigestError::Algorithm(_))
        ));
        assert!(matches!(
            "sha256:abc".parse::<Digest>(),
            Err(DigestError::Malformed(_))
        ));
        let upper = format!("sha256:{}", "A".repeat(64));
        assert!(matches!(
            upper.parse::<Digest>(),
            Err(DigestError::Malformed(_))
        ));
        let nonhex = format!("sha256:{}", "g".repeat(64));
        assert!(matches!(
            nonhex.parse::<Digest>(),
            Err(DigestError::Malformed(_))
        ));
    }

    #[test]
    fn hashing_reader_counts_hashes_and_limits() {
        let data = vec![7u8; 1000];
        let r = HashingReader::new(&data[..], 1000);
        let (d, n) = r.finish().unwrap();
        assert_eq!(n, 1000);
        assert_eq!(d, Digest::of(&data));

        let r = HashingReader::new(&data[..], 999);
        let flag = r.limit_flag();
        assert!(r.finish().is_err());
        assert!(limit_hit(&flag));
    }
}
