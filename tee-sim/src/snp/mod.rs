//! The simulated AMD SEV-SNP secure processor.

mod amd_sp;
mod certs;

pub use amd_sp::{
    AmdSpError, SIM_CHIP_ID_PREFIX, SIM_DEFAULT_POLICY, SIM_DEFAULT_TCB, SignedSnpReport, SimAmdSp,
    SnpReportRequest,
};
pub use certs::CertError;

#[cfg(test)]
pub(crate) use amd_sp::shared_test_sim;
