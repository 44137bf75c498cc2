//! The real SEV-SNP attester: configfs-tsm when the kernel has it, else the SNP_GET_EXT_REPORT
//! ioctl on `/dev/sev-guest` (through the `sev` crate). The fallback happens only when
//! configfs-tsm is absent, never after it failed.

use std::path::PathBuf;

use tsuba_protocols::evidence::{
    GUID_ARK, GUID_ASK, GUID_CRL, GUID_VCEK, GUID_VLEK, ReportData, SnpCertEntry, SnpCertTable,
};

use super::configfs::{self, TsmEntries};
use super::{Attester, AttesterError, AttesterKind, Evidence, check_report_data};

/// The SEV guest driver's device.
pub const SEV_GUEST_DEVICE: &str = "/dev/sev-guest";
const PROVIDER: &str = "sev_guest";

/// Evidence from the AMD secure processor.
#[derive(Debug)]
pub struct SnpAttester {
    tsm: Option<Box<dyn TsmEntries>>,
    vmpl: Option<u32>,
}

impl SnpAttester {
    /// Through configfs-tsm (`tsm`), or `/dev/sev-guest` when `tsm` is `None`.
    pub fn new(tsm: Option<Box<dyn TsmEntries>>) -> Self {
        Self { tsm, vmpl: None }
    }

    /// Ask for reports from this VMPL rather than the kernel's default.
    pub fn with_vmpl(mut self, vmpl: u32) -> Self {
        self.vmpl = Some(vmpl);
        self
    }
}

impl Attester for SnpAttester {
    fn kind(&self) -> AttesterKind {
        AttesterKind::Snp
    }

    fn evidence(&self, report_data: &ReportData) -> Result<Evidence, AttesterError> {
        let evidence = match &self.tsm {
            Some(tsm) => {
                let r = configfs::request(tsm.as_ref(), PROVIDER, report_data, self.vmpl)?;
                Evidence::Snp {
                    report: r.outblob,
                    cert_table: r.auxblob,
                }
            }
            None => sev_guest_report(report_data, self.vmpl)?,
        };
        check_report_data(evidence, report_data)
    }
}

/// SNP_GET_EXT_REPORT on `/dev/sev-guest`.
fn sev_guest_report(
    report_data: &ReportData,
    vmpl: Option<u32>,
) -> Result<Evidence, AttesterError> {
    use sev::firmware::guest::Firmware;
    use sev::firmware::host::CertType;

    let mut fw = Firmware::open().map_err(AttesterError::SevGuest)?;
    let (report, certs) = fw
        .get_ext_report(None, Some(report_data.0), vmpl)
        .map_err(|e| AttesterError::SevGuest(std::io::Error::other(e)))?;
    let cert_table = match certs {
        None => None,
        Some(certs) => {
            let entries = certs
                .into_iter()
                .map(|c| {
                    let guid = match &c.cert_type {
                        CertType::ARK => GUID_ARK,
                        CertType::ASK => GUID_ASK,
                        CertType::VCEK => GUID_VCEK,
                        CertType::VLEK => GUID_VLEK,
                        CertType::CRL => GUID_CRL,
                        CertType::OTHER(uuid) => *uuid.as_bytes(),
                        CertType::Empty => [0; 16],
                    };
                    SnpCertEntry { guid, data: c.data }
                })
                .filter(|e| e.guid != [0; 16])
                .collect();
            let table = SnpCertTable { entries };
            Some(
                table
                    .to_bytes()
                    .map_err(|e| AttesterError::SevGuest(std::io::Error::other(e)))?,
            )
        }
    };
    Ok(Evidence::Snp { report, cert_table })
}

/// The default SNP attester of this system: configfs-tsm if present, else `/dev/sev-guest`.
pub(crate) fn system_snp(configfs_root: PathBuf) -> SnpAttester {
    let tsm = configfs::ConfigfsTsm::new(configfs_root);
    if tsm.is_present() {
        SnpAttester::new(Some(Box::new(tsm)))
    } else {
        SnpAttester::new(None)
    }
}

#[cfg(test)]
mod tests {
    use tsuba_protocols::evidence::SnpReport;

    use super::super::configfs::fake::FakeTsm;
    use super::*;

    fn testdata(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/testdata/real-evidence/snp/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
    }

    /// A real report as the kernel's outblob, with a certificate table as its auxblob.
    fn real_fake() -> (FakeTsm, ReportData) {
        let report = testdata("trustee-test-report.bin");
        let table = SnpCertTable {
            entries: vec![SnpCertEntry {
                guid: GUID_VCEK,
                data: testdata("trustee-test-vcek.der"),
            }],
        };
        let rd = ReportData(SnpReport::parse(&report).unwrap().report_data);
        (
            FakeTsm::new("sev_guest", report, Some(table.to_bytes().unwrap())),
            rd,
        )
    }

    #[test]
    fn configfs_report_and_certificates() {
        let (fake, rd) = real_fake();
        let attester = SnpAttester::new(Some(Box::new(fake))).with_vmpl(1);
        let evidence = attester.evidence(&rd).unwrap();
        let Evidence::Snp { report, cert_table } = &evidence else {
            panic!("not snp")
        };
        assert_eq!(report, &testdata("trustee-test-report.bin"));
        let table = SnpCertTable::parse(cert_table.as_ref().unwrap()).unwrap();
        assert_eq!(
            table.get(&GUID_VCEK),
            Some(&testdata("trustee-test-vcek.der")[..])
        );
        assert_eq!(evidence.claims().unwrap().report_data(), &rd);
        assert_eq!(attester.kind(), AttesterKind::Snp);
    }

    #[test]
    fn a_report_for_other_report_data_is_refused() {
        let (fake, _) = real_fake();
        let attester = SnpAttester::new(Some(Box::new(fake)));
        assert!(matches!(
            attester.evidence(&ReportData([1; 64])),
            Err(AttesterError::ReportDataMismatch)
        ));
    }

    #[test]
    fn a_truncated_outblob_is_refused() {
        let mut report = testdata("trustee-test-report.bin");
        report.truncate(1000);
        let fake = FakeTsm::new("sev_guest", report, None);
        let attester = SnpAttester::new(Some(Box::new(fake)));
        assert!(matches!(
            attester.evidence(&ReportData::default()),
            Err(AttesterError::SnpReport(_))
        ));
    }

    #[test]
    fn no_configfs_means_sev_guest_which_is_absent_here() {
        let root = tempfile::tempdir().unwrap();
        let attester = system_snp(root.path().join("no-tsm"));
        assert!(attester.tsm.is_none());
        if !std::path::Path::new(SEV_GUEST_DEVICE).exists() {
            assert!(matches!(
                attester.evidence(&ReportData::default()),
                Err(AttesterError::SevGuest(_))
            ));
        }
        assert!(system_snp(root.path().to_path_buf()).tsm.is_some());
    }
}
