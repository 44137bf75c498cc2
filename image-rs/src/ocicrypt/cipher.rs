//! The ocicrypt layer cipher `AES_256_CTR_HMAC_SHA256`: AES-256 in CTR mode with a 128-bit
//! big-endian counter starting at the nonce, and HMAC-SHA256 (same key) over the ciphertext.
//!
//! Decryption is verify-then-decrypt: [`LayerKey::open`] reads the whole ciphertext once to check
//! the HMAC in constant time, and only then hands out a reader of plaintext from a second pass.
//! The ciphertext must therefore be seekable (in the guest, the blob is spooled to guest memory
//! while its registry digest is checked, so the HMAC pass costs no extra download). Streaming
//! decryption with the check at the end, as containers/ocicrypt does, would let a tampered layer
//! reach the tar parser and the rootfs before the verdict.

use std::io::{self, Read, Seek, SeekFrom, Write};

use aes::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;
type HmacSha256 = Hmac<Sha256>;

/// The cipher name in `org.opencontainers.image.enc.pubopts`.
pub const CIPHER_AES_256_CTR_HMAC_SHA256: &str = "AES_256_CTR_HMAC_SHA256";

/// Read size for both passes. The decrypt pass reads and decrypts this much at a time whatever
/// the caller's read size (a gzip reader asks for 32 KiB, `io::copy` for 8 KiB): fewer reads of
/// the spooled blob and longer AES-CTR runs.
const CHUNK: usize = 256 * 1024;

/// Errors from the layer cipher.
#[derive(Debug, thiserror::Error)]
pub enum CipherError {
    /// Reading the ciphertext or writing the output failed.
    #[error("layer cipher i/o")]
    Io(#[source] io::Error),
    /// The HMAC over the ciphertext does not match: the layer was tampered with or the key is
    /// wrong.
    #[error("layer hmac mismatch: ciphertext tampered with or wrong key")]
    HmacMismatch,
    /// The key, nonce or HMAC has the wrong length.
    #[error("invalid {0} length for AES_256_CTR_HMAC_SHA256")]
    BadLength(&'static str),
}

/// The secret and public parameters that decrypt one layer.
pub struct LayerKey {
    key: Zeroizing<[u8; 32]>,
    nonce: [u8; 16],
    hmac: [u8; 32],
}

impl std::fmt::Debug for LayerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LayerKey(..)")
    }
}

impl LayerKey {
    /// Builds a key from its parts, checking their lengths.
    pub fn new(key: &[u8], nonce: &[u8], hmac: &[u8]) -> Result<Self, CipherError> {
        Ok(Self {
            key: Zeroizing::new(key.try_into().map_err(|_| CipherError::BadLength("key"))?),
            nonce: nonce
                .try_into()
                .map_err(|_| CipherError::BadLength("nonce"))?,
            hmac: hmac
                .try_into()
                .map_err(|_| CipherError::BadLength("hmac"))?,
        })
    }

    /// Checks the HMAC over all of `ciphertext`, then returns a reader of the plaintext
    /// (from the start of `ciphertext`). Nothing is decrypted unless the HMAC matches.
    pub fn open<R: Read + Seek>(&self, mut ciphertext: R) -> Result<Plaintext<R>, CipherError> {
        let start = ciphertext.stream_position().map_err(CipherError::Io)?;
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.key[..])
            .map_err(|_| CipherError::BadLength("key"))?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match ciphertext.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(CipherError::Io(e)),
            };
            mac.update(buf.get(..n).unwrap_or_default());
        }
        // Constant-time comparison.
        mac.verify_slice(&self.hmac)
            .map_err(|_| CipherError::HmacMismatch)?;
        ciphertext
            .seek(SeekFrom::Start(start))
            .map_err(CipherError::Io)?;
        let cipher = Aes256Ctr::new((&*self.key).into(), (&self.nonce).into());
        Ok(Plaintext {
            inner: ciphertext,
            cipher,
            buf,
            pos: 0,
            filled: 0,
        })
    }
}

/// Plaintext of a layer whose HMAC was verified.
pub struct Plaintext<R> {
    inner: R,
    cipher: Aes256Ctr,
    /// Decrypted bytes not yet handed out are `buf[pos..filled]`.
    buf: Vec<u8>,
    pos: usize,
    filled: usize,
}

impl<R: Read> Read for Plaintext<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.filled {
            if out.len() >= self.buf.len() {
                // A large read: decrypt in place in the caller's buffer.
                let n = self.inner.read(out)?;
                if let Some(chunk) = out.get_mut(..n) {
                    self.cipher.apply_keystream(chunk);
                }
                return Ok(n);
            }
            let n = self.inner.read(&mut self.buf)?;
            if let Some(chunk) = self.buf.get_mut(..n) {
                self.cipher.apply_keystream(chunk);
            }
            self.pos = 0;
            self.filled = n;
        }
        let available = self.buf.get(self.pos..self.filled).unwrap_or_default();
        let n = available.len().min(out.len());
        if let (Some(dst), Some(src)) = (out.get_mut(..n), available.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.pos += n;
        Ok(n)
    }
}

/// What encryption produced: the secret key and nonce (for the private options) and the HMAC
/// (for the public options).
pub(super) struct EncryptedParams {
    /// The fresh 256-bit layer key.
    pub(super) key: Zeroizing<[u8; 32]>,
    /// The fresh 128-bit CTR nonce.
    pub(super) nonce: [u8; 16],
    /// HMAC-SHA256 over the ciphertext.
    pub(super) hmac: [u8; 32],
    /// Bytes written.
    pub(super) size: u64,
}

/// Encrypts `plain` into `out` under a fresh random key and nonce.
pub(super) fn encrypt<R: Read, W: Write>(
    mut plain: R,
    mut out: W,
) -> Result<EncryptedParams, CipherError> {
    let mut key = Zeroizing::new([0u8; 32]);
    let mut nonce = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut key[..]);
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let mut cipher = Aes256Ctr::new((&*key).into(), (&nonce).into());
    let mut mac =
        <HmacSha256 as Mac>::new_from_slice(&key[..]).map_err(|_| CipherError::BadLength("key"))?;
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = match plain.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CipherError::Io(e)),
        };
        let chunk = buf.get_mut(..n).unwrap_or_default();
        cipher.apply_keystream(chunk);
        mac.update(chunk);
        out.write_all(chunk).map_err(CipherError::Io)?;
        size += n as u64;
    }
    Ok(EncryptedParams {
        key,
        nonce,
        hmac: mac.finalize().into_bytes().into(),
        size,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn round(plain: &[u8]) -> (Vec<u8>, EncryptedParams) {
        let mut ct = Vec::new();
        let p = encrypt(plain, &mut ct).unwrap();
        (ct, p)
    }

    #[test]
    fn round_trip_and_ciphertext_differs() {
        let plain: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (ct, p) = round(&plain);
        assert_eq!(p.size, plain.len() as u64);
        assert_ne!(ct, plain);
        let k = LayerKey::new(&p.key[..], &p.nonce, &p.hmac).unwrap();
        let mut out = Vec::new();
        k.open(Cursor::new(&ct))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, plain);
    }

    #[test]
    fn any_read_size_yields_the_same_plaintext() {
        // Larger than CHUNK and not a multiple of the AES block or of any read size below.
        let plain: Vec<u8> = (0..CHUNK * 2 + 1234)
            .map(|i| u8::try_from(i % 253).unwrap())
            .collect();
        let (ct, p) = round(&plain);
        let k = LayerKey::new(&p.key[..], &p.nonce, &p.hmac).unwrap();
        for size in [1, 7, 4096, CHUNK - 1, CHUNK, CHUNK + 17, 3 * CHUNK] {
            let mut reader = k.open(Cursor::new(&ct)).unwrap();
            let mut out = Vec::new();
            let mut buf = vec![0u8; size];
            loop {
                let n = reader.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            assert!(out == plain, "read size {size}");
        }
        // Small reads first, then a large one: buffered bytes come out before new ones.
        let mut reader = k.open(Cursor::new(&ct)).unwrap();
        let mut head = [0u8; 10];
        reader.read_exact(&mut head).unwrap();
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert_eq!(&head[..], &plain[..10]);
        assert!(rest == plain[10..]);
    }

    #[test]
    fn matches_a_known_aes_ctr_vector() {
        // NIST SP 800-38A F.5.5 (CTR-AES256.Encrypt), first block.
        let key = hex::decode("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
            .unwrap();
        let iv = hex::decode("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff").unwrap();
        let mut block = hex::decode("6bc1bee22e409f96e93d7e117393172a").unwrap();
        let mut c = Aes256Ctr::new(key.as_slice().into(), iv.as_slice().into());
        c.apply_keystream(&mut block);
        assert_eq!(hex::encode(block), "601ec313775789a5b7a7f504bbf3d228");
    }

    #[test]
    fn tampered_ciphertext_or_wrong_key_yields_no_plaintext() {
        let (mut ct, p) = round(b"some layer bytes");
        let k = LayerKey::new(&p.key[..], &p.nonce, &p.hmac).unwrap();
        ct[3] ^= 0x80;
        assert!(matches!(
            k.open(Cursor::new(&ct)),
            Err(CipherError::HmacMismatch)
        ));
        ct[3] ^= 0x80;
        ct.push(0);
        assert!(matches!(
            k.open(Cursor::new(&ct)),
            Err(CipherError::HmacMismatch)
        ));
        ct.pop();
        let mut wrong = *p.key;
        wrong[0] ^= 1;
        let k2 = LayerKey::new(&wrong, &p.nonce, &p.hmac).unwrap();
        assert!(matches!(
            k2.open(Cursor::new(&ct)),
            Err(CipherError::HmacMismatch)
        ));
        assert!(matches!(
            LayerKey::new(&[0; 16], &p.nonce, &p.hmac),
            Err(CipherError::BadLength("key"))
        ));
        assert!(matches!(
            LayerKey::new(&p.key[..], &[0; 12], &p.hmac),
            Err(CipherError::BadLength("nonce"))
        ));
    }
}
