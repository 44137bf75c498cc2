//! The real TDX attester: a TD quote through configfs-tsm (the `tdx_guest` provider).

use tsuba_protocols::evidence::ReportData;

use super::configfs::{self, TsmEntries};
use super::{Attester, AttesterError, AttesterKind, Evidence, check_report_data};

const PROVIDER: &str = "tdx_guest";

/// Evidence from the TDX module and quoting enclave.
#[derive(Debug)]
pub struct TdxAttester {
    tsm: Box<dyn TsmEntries>,
}

impl TdxAttester {
    /// Through configfs-tsm.
    pub fn new(tsm: Box<dyn TsmEntries>) -> Self {
        Self { tsm }
    }
}

impl Attester for TdxAttester {
    fn kind(&self) -> AttesterKind {
        AttesterKind::Tdx
    }

    fn evidence(&self, report_data: &ReportData) -> Result<Evidence, AttesterError> {
        let r = configfs::request(self.tsm.as_ref(), PROVIDER, report_data, None)?;
        // The CCEL (/sys/firmware/acpi/tables/data/CCEL) is not read yet: the broker then checks
        // the quote's RTMRs against reference values without a log to explain them.
        check_report_data(
            Evidence::Tdx {
                quote: r.outblob,
                cc_eventlog: None,
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

    fn testdata(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/testdata/real-evidence/tdx/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
    }

    #[test]
    fn configfs_quote() {
        for name in ["trustee-tdx_quote_4.dat", "trustee-tdx_quote_5.dat"] {
            let quote = testdata(name);
            let rd = ReportData(TdxQuote::parse(&quote).unwrap().body.report_data);
            let fake = FakeTsm::new("tdx_guest", quote.clone(), None);
            let attester = TdxAttester::new(Box::new(fake));
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
    fn wrong_provider_and_wrong_report_data_are_refused() {
        let quote = testdata("trustee-tdx_quote_4.dat");
        let attester = TdxAttester::new(Box::new(FakeTsm::new("sev_guest", quote.clone(), None)));
        assert!(matches!(
            attester.evidence(&ReportData::default()),
            Err(AttesterError::Tsm(TsmError::WrongProvider { .. }))
        ));
        let attester = TdxAttester::new(Box::new(FakeTsm::new("tdx_guest", quote, None)));
        assert!(matches!(
            attester.evidence(&ReportData([7; 64])),
            Err(AttesterError::ReportDataMismatch)
        ));
    }
}
