//! The Concat KDF of NIST SP 800-56A as JWA (RFC 7518 section 4.6.2) uses it to turn an ECDH
//! shared secret into the key-encryption key of `ECDH-ES+A256KW`.

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The first (and, for keys of at most 256 bits, only) SHA-256 round of the Concat KDF with
/// RFC 7518's OtherInfo: `AlgorithmID || PartyUInfo || PartyVInfo` each as a big-endian 32-bit
/// length and the bytes, then `SuppPubInfo`, the key length in bits. A key of `key_bits` bits is
/// the first `key_bits / 8` bytes of the result.
pub fn concat_kdf(
    shared: &[u8],
    alg: &str,
    apu: &[u8],
    apv: &[u8],
    key_bits: u32,
) -> Zeroizing<[u8; 32]> {
    let mut hasher = Sha256::new();
    hasher.update(1u32.to_be_bytes());
    hasher.update(shared);
    for part in [alg.as_bytes(), apu, apv] {
        hasher.update(u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        hasher.update(part);
    }
    hasher.update(key_bits.to_be_bytes());
    Zeroizing::new(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7518 appendix C (ECDH-ES key agreement, "A128GCM", PartyUInfo "Alice", PartyVInfo
    /// "Bob"): the shared secret Z and the derived 128-bit key, as the RFC prints them.
    const RFC7518_Z: [u8; 32] = [
        158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191, 132, 38, 156, 251, 49, 110,
        163, 218, 128, 106, 72, 246, 218, 167, 121, 140, 254, 144, 196,
    ];
    const RFC7518_KEY_B64URL: &str = "VqqN6vgjbSBcIijNcacQGg";
    const RFC7518_KEY: [u8; 16] = [
        86, 170, 141, 234, 248, 35, 109, 32, 92, 34, 40, 205, 113, 167, 16, 26,
    ];

    #[test]
    fn kdf_matches_rfc7518_appendix_c() {
        use base64::Engine as _;
        let key = *concat_kdf(&RFC7518_Z, "A128GCM", b"Alice", b"Bob", 128);
        assert_eq!(key[..16], RFC7518_KEY);
        assert_eq!(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&key[..16]),
            RFC7518_KEY_B64URL
        );
    }

    #[test]
    fn kdf_depends_on_every_input() {
        let base = *concat_kdf(&RFC7518_Z, "A128GCM", b"Alice", b"Bob", 128);
        let mut z = RFC7518_Z;
        z[31] ^= 1;
        for other in [
            concat_kdf(&z, "A128GCM", b"Alice", b"Bob", 128),
            concat_kdf(&RFC7518_Z, "A256GCM", b"Alice", b"Bob", 128),
            concat_kdf(&RFC7518_Z, "A128GCM", b"Alic", b"Bob", 128),
            concat_kdf(&RFC7518_Z, "A128GCM", b"Alice", b"Bo", 128),
            // The length prefixes keep the fields apart: moving a byte across them changes it.
            concat_kdf(&RFC7518_Z, "A128GCM", b"Alic", b"eBob", 128),
            concat_kdf(&RFC7518_Z, "A128GCM", b"Alice", b"Bob", 256),
        ] {
            assert_ne!(*other, base);
        }
    }

    #[test]
    fn the_broker_key_wrap_kdf_has_empty_party_info_and_256_bits() {
        // What the broker and the guest derive for ECDH-ES+A256KW from the RFC's Z. Golden from
        // an independent implementation: pyca/cryptography 38.0.4 (Debian bookworm),
        // ConcatKDFHash(SHA256(), 32, otherinfo=b"\0\0\0\x0eECDH-ES+A256KW" + 8 zero bytes
        // + b"\0\0\x01\0").derive(Z).
        assert_eq!(
            *concat_kdf(&RFC7518_Z, "ECDH-ES+A256KW", b"", b"", 256),
            [
                0x89, 0xab, 0x83, 0x86, 0x33, 0x75, 0x78, 0x05, 0xbd, 0x67, 0x8c, 0xb1, 0x64, 0xf2,
                0x42, 0x77, 0x76, 0x82, 0x4e, 0x8f, 0x78, 0x41, 0x52, 0xf2, 0x37, 0x47, 0x09, 0x64,
                0x49, 0x92, 0x1f, 0x46,
            ]
        );
    }
}
