//! The 64 bytes a guest binds into its evidence (SNP REPORT_DATA, TDX REPORTDATA).

use std::fmt;

/// Length of report data in both SNP reports and TDX quotes.
pub const REPORT_DATA_LEN: usize = 64;

/// The guest-chosen 64 bytes bound into a report or quote (e.g. a hash of a nonce and a key).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReportData(pub [u8; REPORT_DATA_LEN]);

impl ReportData {
    /// Report data from a shorter value, zero-padded on the right; `None` if it is too long.
    pub fn from_prefix(bytes: &[u8]) -> Option<Self> {
        let mut out = [0u8; REPORT_DATA_LEN];
        out.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(Self(out))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8; REPORT_DATA_LEN] {
        &self.0
    }
}

impl Default for ReportData {
    fn default() -> Self {
        Self([0; REPORT_DATA_LEN])
    }
}

impl From<[u8; REPORT_DATA_LEN]> for ReportData {
    fn from(bytes: [u8; REPORT_DATA_LEN]) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for ReportData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReportData(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_zero_padded_and_bounded() {
        let rd = ReportData::from_prefix(&[1, 2, 3]).unwrap();
        assert_eq!(&rd.0[..4], &[1, 2, 3, 0]);
        assert!(rd.0[3..].iter().all(|b| *b == 0));
        assert!(ReportData::from_prefix(&[0; 64]).is_some());
        assert!(ReportData::from_prefix(&[0; 65]).is_none());
        assert_eq!(
            format!("{:?}", ReportData::from_prefix(&[0xAB]).unwrap()).len(),
            140
        );
    }
}
