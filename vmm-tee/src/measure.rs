//! The launch measurement of a [`LaunchConfig`]: the one code path that `tsuba measure`, the
//! launcher (which tells tee-sim what to sign in sim modes) and the tests share.

use std::num::NonZeroU32;

use thiserror::Error;
use tsuba_firmware::{
    GuestFeatures, MeasurementInputs, ReferenceError, ReferenceValues, SnpLaunch, TdxLaunch,
    TdxPageOrder, VcpuError, VcpuType, reference_values,
};

use crate::config::{LaunchConfig, Mode};

/// The launch cannot be measured.
#[derive(Debug, Error)]
pub enum MeasureError {
    /// Mode `none` has no measurement.
    #[error("mode none is not measured; use snp, tdx, sim-snp or sim-tdx")]
    NotMeasured,
    /// The SNP vCPU model is unknown.
    #[error("snp_vcpu_type is not a vCPU model the measurement knows")]
    VcpuType(#[source] VcpuError),
    /// The firmware or boot files cannot be measured.
    #[error("cannot measure the launch")]
    Reference(#[source] ReferenceError),
}

/// What the measurement of `config` depends on: exactly the files and command line QEMU boots,
/// except that the firmware is `firmware.measured` (in sim modes the AmdSev build that real
/// hardware would measure; in TEE modes the booted image itself).
pub fn measurement_inputs(config: &LaunchConfig) -> Result<MeasurementInputs, MeasureError> {
    let snp = match config.mode {
        Mode::Snp | Mode::SimSnp => Some(SnpLaunch {
            vcpus: NonZeroU32::from(config.vcpus),
            vcpu_type: config
                .snp_vcpu_type
                .parse::<VcpuType>()
                .map_err(MeasureError::VcpuType)?,
            // QEMU's default for SNP guests: SNP active, no further VMSA features.
            guest_features: GuestFeatures::default(),
        }),
        Mode::Tdx | Mode::SimTdx => None,
        Mode::None => return Err(MeasureError::NotMeasured),
    };
    let tdx = matches!(config.mode, Mode::Tdx | Mode::SimTdx).then_some(TdxLaunch {
        page_order: TdxPageOrder::PerPage,
    });
    Ok(MeasurementInputs {
        firmware: config.firmware.measured.clone(),
        kernel: Some(config.kernel.clone()),
        initrd: Some(config.initrd.clone()),
        cmdline: Some(config.kernel_cmdline()),
        initdata: config.initdata.clone(),
        snp,
        tdx,
    })
}

/// The reference values (launch digest or MRTD, HOST_DATA or MRCONFIGID, input digests) of
/// `config`.
pub fn launch_reference_values(config: &LaunchConfig) -> Result<ReferenceValues, MeasureError> {
    reference_values(&measurement_inputs(config)?).map_err(MeasureError::Reference)
}
