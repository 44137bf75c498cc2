//! JOSE pieces both ends of the KBS protocol need: the broker wraps resource keys with
//! ECDH-ES+A256KW, the guest's client unwraps them.

use sha2::{Digest, Sha256};

/// The Concat KDF of NIST SP 800-56A as JWA (RFC 7518 section 4.6.2) uses it for a 256-bit key:
/// one SHA-256 round over counter, shared secret and OtherInfo (algorithm id, empty PartyU and
/// PartyV info, key length in bits).
pub fn concat_kdf(shared: &[u8], alg: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(1u32.to_be_bytes());
    hasher.update(shared);
    hasher.update(u32::try_from(alg.len()).unwrap_or(u32::MAX).to_be_bytes());
    hasher.update(alg.as_bytes());
    hasher.update(0u32.to_be_bytes());
    hasher.update(0u32.to_be_bytes());
    hasher.update(256u32.to_be_bytes());
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdf_depends_on_secret_and_algorithm() {
        let a = concat_kdf(b"shared", "ECDH-ES+A256KW");
        assert_ne!(a, concat_kdf(b"shared!", "ECDH-ES+A256KW"));
        assert_ne!(a, concat_kdf(b"shared", "ECDH-ES"));
        // One round: SHA-256(counter 1 || Z || len(alg) || alg || 0 || 0 || 256).
        let mut expect = Sha256::new();
        expect.update([0, 0, 0, 1]);
        expect.update(b"shared");
        expect.update([0, 0, 0, 14]);
        expect.update(b"ECDH-ES+A256KW");
        expect.update([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        assert_eq!(a, <[u8; 32]>::from(expect.finalize()));
    }
}
