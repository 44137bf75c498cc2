//! The certificate table that SNP_GET_EXT_REPORT (and configfs-tsm's `auxblob`) return beside
//! the report: entries of (GUID, offset, length) ended by an all-zero entry, then the
//! certificates (DER), with offsets counted from the start of the table. GUIDs are in RFC 4122
//! byte order.

use thiserror::Error;

use super::wire::{Reader, Writer};

/// Largest table accepted (the kernel's buffer is a few pages).
pub const SNP_CERT_TABLE_MAX_LEN: usize = 64 * 1024;
/// Most entries accepted.
pub const SNP_CERT_TABLE_MAX_ENTRIES: usize = 16;
const ENTRY_LEN: usize = 24;

/// GUID of the AMD root key certificate.
pub const GUID_ARK: [u8; 16] = guid(0xc0b406a4, 0xa803, 0x4952, 0x9743_3fb6014cd0ae);
/// GUID of the AMD signing key certificate.
pub const GUID_ASK: [u8; 16] = guid(0x4ab7b379, 0xbbac, 0x4fe4, 0xa02f_05aef327c782);
/// GUID of the VCEK certificate.
pub const GUID_VCEK: [u8; 16] = guid(0x63da758d, 0xe664, 0x4564, 0xadc5_f4b93be8accd);
/// GUID of the VLEK certificate.
pub const GUID_VLEK: [u8; 16] = guid(0xa8074bc2, 0xa25a, 0x483e, 0xaae6_39c045a0b8a1);
/// GUID of the certificate revocation list.
pub const GUID_CRL: [u8; 16] = guid(0x92f81bc3, 0x5811, 0x4d3d, 0x97ff_d19f88dc67ea);

const fn guid(a: u32, b: u16, c: u16, d: u64) -> [u8; 16] {
    let a = a.to_be_bytes();
    let b = b.to_be_bytes();
    let c = c.to_be_bytes();
    let d = d.to_be_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

/// Errors from parsing or writing a certificate table.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SnpCertTableError {
    /// The table is larger than [`SNP_CERT_TABLE_MAX_LEN`].
    #[error("certificate table of {0} bytes exceeds the limit")]
    Oversized(usize),
    /// The entry list has no terminating zero entry within the input.
    #[error("certificate table has no terminating entry")]
    Unterminated,
    /// More than [`SNP_CERT_TABLE_MAX_ENTRIES`] entries.
    #[error("certificate table has too many entries")]
    TooManyEntries,
    /// An entry points outside the table.
    #[error("certificate table entry {0} points outside the table")]
    OutOfBounds(usize),
}

/// One certificate and the GUID naming its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpCertEntry {
    /// GUID (RFC 4122 byte order), e.g. [`GUID_VCEK`].
    pub guid: [u8; 16],
    /// The certificate (DER) or CRL.
    pub data: Vec<u8>,
}

/// A parsed certificate table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnpCertTable {
    /// Entries in table order.
    pub entries: Vec<SnpCertEntry>,
}

impl SnpCertTable {
    /// Parse a table; trailing bytes after the last certificate (buffer padding) are ignored.
    pub fn parse(raw: &[u8]) -> Result<Self, SnpCertTableError> {
        if raw.len() > SNP_CERT_TABLE_MAX_LEN {
            return Err(SnpCertTableError::Oversized(raw.len()));
        }
        let mut r = Reader::new(raw);
        let mut entries = Vec::new();
        loop {
            let guid: [u8; 16] = r.array().ok_or(SnpCertTableError::Unterminated)?;
            let offset = r.u32().ok_or(SnpCertTableError::Unterminated)?;
            let length = r.u32().ok_or(SnpCertTableError::Unterminated)?;
            if guid == [0; 16] && offset == 0 && length == 0 {
                break;
            }
            if entries.len() == SNP_CERT_TABLE_MAX_ENTRIES {
                return Err(SnpCertTableError::TooManyEntries);
            }
            let index = entries.len();
            let start =
                usize::try_from(offset).map_err(|_| SnpCertTableError::OutOfBounds(index))?;
            let len = usize::try_from(length).map_err(|_| SnpCertTableError::OutOfBounds(index))?;
            let data = start
                .checked_add(len)
                .and_then(|end| raw.get(start..end))
                .ok_or(SnpCertTableError::OutOfBounds(index))?;
            entries.push(SnpCertEntry {
                guid,
                data: data.to_vec(),
            });
        }
        Ok(Self { entries })
    }

    /// The first certificate with the given GUID.
    pub fn get(&self, guid: &[u8; 16]) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|e| &e.guid == guid)
            .map(|e| e.data.as_slice())
    }

    /// Serialise: entries, a zero entry, then the certificates in order.
    pub fn to_bytes(&self) -> Result<Vec<u8>, SnpCertTableError> {
        if self.entries.len() > SNP_CERT_TABLE_MAX_ENTRIES {
            return Err(SnpCertTableError::TooManyEntries);
        }
        let header = ENTRY_LEN * (self.entries.len() + 1);
        let total = self
            .entries
            .iter()
            .fold(header, |acc, e| acc.saturating_add(e.data.len()));
        if total > SNP_CERT_TABLE_MAX_LEN {
            return Err(SnpCertTableError::Oversized(total));
        }
        let mut w = Writer::with_capacity(total);
        let mut offset = header;
        for (i, e) in self.entries.iter().enumerate() {
            let off = u32::try_from(offset).map_err(|_| SnpCertTableError::OutOfBounds(i))?;
            let len = u32::try_from(e.data.len()).map_err(|_| SnpCertTableError::OutOfBounds(i))?;
            w.bytes(&e.guid).u32(off).u32(len);
            offset = offset.saturating_add(e.data.len());
        }
        w.zeros(ENTRY_LEN);
        for e in &self.entries {
            w.bytes(&e.data);
        }
        Ok(w.into_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SnpCertTable {
        SnpCertTable {
            entries: vec![
                SnpCertEntry {
                    guid: GUID_ARK,
                    data: vec![1; 10],
                },
                SnpCertEntry {
                    guid: GUID_ASK,
                    data: vec![2; 5],
                },
                SnpCertEntry {
                    guid: GUID_VCEK,
                    data: vec![3; 7],
                },
            ],
        }
    }

    #[test]
    fn guid_byte_order_is_rfc4122() {
        assert_eq!(hex::encode(GUID_VCEK), "63da758de6644564adc5f4b93be8accd");
        assert_eq!(hex::encode(GUID_CRL), "92f81bc358114d3d97ffd19f88dc67ea");
    }

    #[test]
    fn round_trip_and_layout() {
        let raw = sample().to_bytes().unwrap();
        assert_eq!(raw.len(), 24 * 4 + 22);
        // First entry's offset points just past the terminator.
        assert_eq!(&raw[16..20], &96u32.to_le_bytes());
        assert_eq!(&raw[72..96], &[0u8; 24]);
        let parsed = SnpCertTable::parse(&raw).unwrap();
        assert_eq!(parsed, sample());
        assert_eq!(parsed.get(&GUID_VCEK), Some(&[3u8; 7][..]));
        assert_eq!(parsed.get(&GUID_VLEK), None);
        let mut padded = raw;
        padded.resize(4096, 0);
        assert_eq!(SnpCertTable::parse(&padded).unwrap(), sample());
    }

    #[test]
    fn hostile_tables_are_refused() {
        let raw = sample().to_bytes().unwrap();
        assert_eq!(
            SnpCertTable::parse(&raw[..80]),
            Err(SnpCertTableError::OutOfBounds(0))
        );
        assert_eq!(
            SnpCertTable::parse(&[0xAA; 20]),
            Err(SnpCertTableError::Unterminated)
        );
        let mut bad = raw.clone();
        bad[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            SnpCertTable::parse(&bad),
            Err(SnpCertTableError::OutOfBounds(1))
        );
        let mut bad = raw;
        bad[44..48].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(
            SnpCertTable::parse(&bad),
            Err(SnpCertTableError::OutOfBounds(1))
        );
        let many = vec![0xAAu8; 24 * 20];
        assert_eq!(
            SnpCertTable::parse(&many),
            Err(SnpCertTableError::OutOfBounds(0))
        );
        let mut many = Vec::new();
        for _ in 0..17 {
            many.extend_from_slice(&GUID_ARK);
            many.extend_from_slice(&0u32.to_le_bytes());
            many.extend_from_slice(&1u32.to_le_bytes());
        }
        many.extend_from_slice(&[0; 24]);
        assert_eq!(
            SnpCertTable::parse(&many),
            Err(SnpCertTableError::TooManyEntries)
        );
        assert_eq!(
            SnpCertTable::parse(&vec![0; SNP_CERT_TABLE_MAX_LEN + 1]),
            Err(SnpCertTableError::Oversized(SNP_CERT_TABLE_MAX_LEN + 1))
        );
    }
}
