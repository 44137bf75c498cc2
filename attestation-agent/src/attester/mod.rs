//! Attesters: where the guest's evidence comes from.
//!
//! One trait, [`Attester`], with one implementation per TEE: real SEV-SNP ([`SnpAttester`]:
//! configfs-tsm, else `/dev/sev-guest`), real TDX ([`TdxAttester`]: configfs-tsm), and the
//! simulated ones over the tee-sim device ([`SimDeviceAttester`]). Which one runs is chosen by
//! configuration ([`AttesterKind`]) or by [`detect`], which fails rather than guess when no TEE
//! or more than one is visible; nothing ever falls back to the simulator.
//!
//! Attesters are blocking (file and ioctl I/O); async callers run them in `spawn_blocking`.

mod configfs;
mod detect;
#[cfg(feature = "insecure-sim")]
mod sim;
mod snp;
mod tdx;

use std::fmt;
use std::str::FromStr;

use thiserror::Error;
use tsuba_protocols::evidence::{
    Claims, ReportData, SnpReport, SnpReportError, TdxQuote, TdxQuoteError,
};

pub use configfs::{CONFIGFS_TSM_REPORT, ConfigfsTsm, TsmEntries, TsmError};
pub use detect::{DetectError, DetectPaths, detect, open_attester};
#[cfg(feature = "insecure-sim")]
pub use sim::{SIM_DEVICE_NAME, SimDeviceAttester, SimDeviceError};
pub use snp::{SEV_GUEST_DEVICE, SnpAttester};
pub use tdx::{CCEL_DATA, TdxAttester};

/// The attesters there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttesterKind {
    /// Real AMD SEV-SNP.
    Snp,
    /// Real Intel TDX.
    Tdx,
    /// SEV-SNP simulated by tee-sim (evidence signed by simulated roots).
    SimSnp,
    /// TDX simulated by tee-sim (evidence signed by simulated roots).
    SimTdx,
}

impl AttesterKind {
    /// The name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Snp => "snp",
            Self::Tdx => "tdx",
            Self::SimSnp => "sim-snp",
            Self::SimTdx => "sim-tdx",
        }
    }

    /// Whether the evidence is simulated.
    pub fn is_simulated(self) -> bool {
        matches!(self, Self::SimSnp | Self::SimTdx)
    }
}

impl fmt::Display for AttesterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown attester name.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("unknown attester {0:?} (expected snp, tdx, sim-snp or sim-tdx)")]
pub struct UnknownAttester(pub String);

impl FromStr for AttesterKind {
    type Err = UnknownAttester;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "snp" => Ok(Self::Snp),
            "tdx" => Ok(Self::Tdx),
            "sim-snp" => Ok(Self::SimSnp),
            "sim-tdx" => Ok(Self::SimTdx),
            other => Err(UnknownAttester(other.to_owned())),
        }
    }
}

/// Evidence in the TEE's own binary format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// An SNP attestation report and, when the host provides them, its certificate table.
    Snp {
        /// The 1184-byte report.
        report: Vec<u8>,
        /// The certificate table (SNP_GET_EXT_REPORT layout), if any.
        cert_table: Option<Vec<u8>>,
    },
    /// A TDX quote and, when the attester has one, the CC event log that explains its RTMRs.
    Tdx {
        /// The quote.
        quote: Vec<u8>,
        /// The CC event log (CCEL format), if any.
        cc_eventlog: Option<Vec<u8>>,
    },
}

impl Evidence {
    /// The claims in the evidence, unverified: the guest reads its own HOST_DATA/MRCONFIGID here.
    pub fn claims(&self) -> Result<Claims, AttesterError> {
        match self {
            Self::Snp { report, .. } => Ok(Claims::from(&SnpReport::parse(report)?)),
            Self::Tdx { quote, .. } => Ok(Claims::from(&TdxQuote::parse(quote)?)),
        }
    }
}

/// Errors of attesters.
#[derive(Debug, Error)]
pub enum AttesterError {
    /// configfs-tsm failed.
    #[error("configfs-tsm")]
    Tsm(#[from] TsmError),
    /// `/dev/sev-guest` failed.
    #[error("/dev/sev-guest")]
    SevGuest(#[source] std::io::Error),
    /// The sim device failed.
    #[cfg(feature = "insecure-sim")]
    #[error("sim device")]
    SimDevice(#[from] SimDeviceError),
    /// The TEE returned a malformed SNP report.
    #[error("malformed snp report")]
    SnpReport(#[from] SnpReportError),
    /// The TEE returned a malformed TDX quote.
    #[error("malformed tdx quote")]
    TdxQuote(#[from] TdxQuoteError),
    /// The CC event log exists but cannot be read.
    #[error("cannot read the cc event log {}", .0.display())]
    EventLog(std::path::PathBuf, #[source] std::io::Error),
    /// The CC event log is not one the broker could replay.
    #[error("the cc event log {} is malformed", .0.display())]
    MalformedEventLog(
        std::path::PathBuf,
        #[source] tsuba_protocols::evidence::ccel::EventLogError,
    ),
    /// The TEE returned evidence whose report data is not what was asked for.
    #[error("evidence does not carry the requested report data")]
    ReportDataMismatch,
}

/// A source of evidence.
pub trait Attester: Send + Sync + fmt::Debug {
    /// Which attester this is.
    fn kind(&self) -> AttesterKind;

    /// Evidence binding `report_data`. The result is checked to carry exactly that report data.
    fn evidence(&self, report_data: &ReportData) -> Result<Evidence, AttesterError>;
}

/// Refuse evidence that does not carry the report data that was asked for.
fn check_report_data(evidence: Evidence, wanted: &ReportData) -> Result<Evidence, AttesterError> {
    if evidence.claims()?.report_data() != wanted {
        return Err(AttesterError::ReportDataMismatch);
    }
    Ok(evidence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_print() {
        for kind in [
            AttesterKind::Snp,
            AttesterKind::Tdx,
            AttesterKind::SimSnp,
            AttesterKind::SimTdx,
        ] {
            assert_eq!(kind.as_str().parse::<AttesterKind>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.as_str());
        }
        assert!(AttesterKind::SimTdx.is_simulated());
        assert!(!AttesterKind::Snp.is_simulated());
        assert_eq!(
            "sample".parse::<AttesterKind>(),
            Err(UnknownAttester("sample".into()))
        );
    }
}
