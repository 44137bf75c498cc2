//! The real TDX attester: a TD quote through configfs-tsm (the `tdx_guest` provider), with the
//! CC event log the firmware left in the ACPI CCEL area, so the broker can replay RTMR0-2 and
//! check the firmware's configuration, the kernel, the initrd and the command line one by one.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use tracing::warn;
use tsuba_protocols::evidence::ReportData;
use tsuba_protocols::evidence::ccel::{EventLog, MAX_EVENT_LOG_LEN};

use super::configfs::{self, TsmEntries};
use super::{Attester, AttesterError, AttesterKind, Evidence, check_report_data};

const PROVIDER: &str = "tdx_guest";

/// Where Linux (6.2 and later) exposes the ACPI CCEL log area.
pub const CCEL_DATA: &str = "/sys/firmware/acpi/tables/data/CCEL";

/// Evidence from the TDX module and quoting enclave.
#[derive(Debug)]
pub struct TdxAttester {
    tsm: Box<dyn TsmEntries>,
    ccel: PathBuf,
}

impl TdxAttester {
    /// Through configfs-tsm, with the event log from [`CCEL_DATA`].
    pub fn new(tsm: Box<dyn TsmEntries>) -> Self {
        Self::with_event_log(tsm, CCEL_DATA.into())
    }

    /// Through configfs-tsm, with the event log read from `ccel`.
    pub fn with_event_log(tsm: Box<dyn TsmEntries>, ccel: PathBuf) -> Self {
        Self { tsm, ccel }
    }
}

/// The CC event log at `path`, or `None` when the kernel does not expose one (older kernels):
/// the broker then checks the RTMRs against whole-register reference values only. A log that is
/// there but unreadable, oversized or malformed is an error: sending it would only make the broker
/// refuse later, with a less clear reason.
fn read_event_log(path: &Path) -> Result<Option<Vec<u8>>, AttesterError> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            warn!(path = %path.display(), "no CC event log: the broker sees only the RTMR values");
            return Ok(None);
        }
        Err(e) => return Err(AttesterError::EventLog(path.into(), e)),
    };
    let mut log = Vec::new();
    // One byte past the limit tells an oversized area from one exactly at it.
    file.take(MAX_EVENT_LOG_LEN as u64 + 1)
        .read_to_end(&mut log)
        .map_err(|e| AttesterError::EventLog(path.into(), e))?;
    EventLog::parse(&log).map_err(|e| AttesterError::MalformedEventLog(path.into(), e))?;
    Ok(Some(log))
}

impl Attester for TdxAttester {
    fn kind(&self) -> AttesterKind {
        AttesterKind::Tdx
    }

    fn evidence(&self, report_data: &ReportData) -> Result<Evidence, AttesterError> {
        let r = configfs::request(self.tsm.as_ref(), PROVIDER, report_data, None)?;
        // Read after the quote: the RTMRs only grow, so a log read later explains at least
        // everything the quote measured (nothing extends them after boot in this guest).
        let cc_eventlog = read_event_log(&self.ccel)?;
        check_report_data(
            Evidence::Tdx {
                quote: r.outblob,
                cc_eventlog,
            },
            report_data,
        )
    }
}

#[cfg(test)]
mod tests {
    use tsuba_protocols::evidence::TdxQuote;

    use super::super::configfs::TsmError;
    use super::super::configfs::fake::FakeTsm;
    use super::*;

    fn testdata_path(name: &str) -> PathBuf {
        format!(
            "{}/testdata/real-evidence/tdx/{name}",
            env!("CARGO_MANIFEST_DIR")
        )
        .into()
    }

    fn testdata(name: &str) -> Vec<u8> {
        let path = testdata_path(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    fn no_log() -> PathBuf {
        testdata_path("no-such-CCEL")
    }

    #[test]
    fn configfs_quote_without_event_log() {
        for name in ["trustee-tdx_quote_4.dat", "trustee-tdx_quote_5.dat"] {
            let quote = testdata(name);
            let rd = ReportData(TdxQuote::parse(&quote).unwrap().body.report_data);
            let fake = FakeTsm::new("tdx_guest", quote.clone(), None);
            let attester = TdxAttester::with_event_log(Box::new(fake), no_log());
            let evidence = attester.evidence(&rd).unwrap();
            assert_eq!(
                evidence,
                Evidence::Tdx {
                    quote,
                    cc_eventlog: None
                }
            );
            assert_eq!(evidence.claims().unwrap().report_data(), &rd);
        }
    }

    #[test]
    fn the_firmware_event_log_travels_with_the_quote_byte_for_byte() {
        let quote = testdata("trustee-tdx_quote_4.dat");
        let rd = ReportData(TdxQuote::parse(&quote).unwrap().body.report_data);
        let ccel = testdata_path("trustee-CCEL_data_ovmf");
        let fake = FakeTsm::new("tdx_guest", quote.clone(), None);
        let attester = TdxAttester::with_event_log(Box::new(fake), ccel.clone());
        let Evidence::Tdx {
            quote: sent,
            cc_eventlog: Some(log),
        } = attester.evidence(&rd).unwrap()
        else {
            panic!("no event log sent");
        };
        assert_eq!(sent, quote);
        // Unchanged, padding included: the broker parses it as Trustee's verifier would.
        assert_eq!(log, std::fs::read(&ccel).unwrap());
        assert!(!EventLog::parse(&log).unwrap().events().is_empty());
    }

    #[test]
    fn a_malformed_or_oversized_event_log_is_refused_not_sent() {
        let dir = tempfile::tempdir().unwrap();
        let quote = testdata("trustee-tdx_quote_4.dat");
        let rd = ReportData(TdxQuote::parse(&quote).unwrap().body.report_data);
        let attester = |log: &[u8]| {
            let path = dir.path().join("CCEL");
            std::fs::write(&path, log).unwrap();
            let fake = FakeTsm::new("tdx_guest", quote.clone(), None);
            TdxAttester::with_event_log(Box::new(fake), path).evidence(&rd)
        };
        // Truncated in the middle of the first record.
        let real = testdata("trustee-CCEL_data_ovmf");
        assert!(matches!(
            attester(&real[..40]),
            Err(AttesterError::MalformedEventLog(..))
        ));
        // Larger than any log the broker takes.
        assert!(matches!(
            attester(&vec![0x5a; MAX_EVENT_LOG_LEN + 1]),
            Err(AttesterError::MalformedEventLog(..))
        ));
        // A folder where the file should be: unreadable, not silently skipped.
        let fake = FakeTsm::new("tdx_guest", quote.clone(), None);
        let unreadable = TdxAttester::with_event_log(Box::new(fake), dir.path().into());
        assert!(matches!(
            unreadable.evidence(&rd),
            Err(AttesterError::EventLog(..))
        ));
    }

    #[test]
    fn wrong_provider_and_wrong_report_data_are_refused() {
        let quote = testdata("trustee-tdx_quote_4.dat");
        let attester = TdxAttester::with_event_log(
            Box::new(FakeTsm::new("sev_guest", quote.clone(), None)),
            no_log(),
        );
        assert!(matches!(
            attester.evidence(&ReportData::default()),
            Err(AttesterError::Tsm(TsmError::WrongProvider { .. }))
        ));
        let attester =
            TdxAttester::with_event_log(Box::new(FakeTsm::new("tdx_guest", quote, None)), no_log());
        assert!(matches!(
            attester.evidence(&ReportData([7; 64])),
            Err(AttesterError::ReportDataMismatch)
        ));
    }
}
