//! Simulated TEE hardware for CI and development.
//!
//! tee-sim plays the AMD secure processor and the Intel TDX module plus quoting enclave: it holds
//! simulated roots of trust (clearly labelled as simulated) and produces SNP attestation reports and
//! TDX quotes in the exact binary formats of real hardware, so the key broker verifies simulated and
//! real evidence with the same code and only the trust anchor differs. In sim mode the launcher
//! serves it to exactly one guest over a dedicated channel. Simulated evidence is never accepted by a
//! broker that was not explicitly told to trust these roots.

#![forbid(unsafe_code)]

mod device;
mod snp;
mod state;
mod tdx;

pub use device::{DeviceError, SimLaunch, SnpLaunch, TdxLaunch, serve};
pub use snp::{
    AmdSpError, CertError, SIM_CHIP_ID_PREFIX, SIM_DEFAULT_POLICY, SIM_DEFAULT_TCB,
    SignedSnpReport, SimAmdSp, SnpReportRequest,
};
pub use state::StateError;
pub use tdx::{
    SIM_TD_ATTRIBUTES, SIM_TEE_TCB_SVN, SIM_XFAM, SimTdx, SimTdxCollateral, TdxQuoteRequest,
    TdxSimError,
};
