//! The simulated Intel TDX module and quoting enclave.

mod module;
mod pki;

pub use module::{
    SIM_TD_ATTRIBUTES, SIM_TEE_TCB_SVN, SIM_XFAM, SimTdx, SimTdxCollateral, TdxQuoteRequest,
    TdxSimError,
};

#[cfg(test)]
pub(crate) use module::shared_test_tdx;
