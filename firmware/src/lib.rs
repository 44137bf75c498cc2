//! Measured firmware and launch measurements.
//!
//! This crate parses OVMF and TDVF firmware images (footer GUID table, SEV metadata, SEV-ES reset
//! block, TDX metadata) and computes, offline and exactly, the launch measurement that AMD SEV-SNP
//! (launch digest) and Intel TDX (MRTD) hardware will report for a given launch. The launcher in
//! `vmm-tee` and `tsuba measure` share this one code path, so what is measured is what is launched.
//! It also holds the recipe for building the AmdSev OVMF reproducibly.

#![forbid(unsafe_code)]

mod authenticode;
mod kernel_hashes;
mod ovmf;
mod reference;
mod snp;
mod tdvf;
mod vcpu;

pub use authenticode::{AuthenticodeError, authenticode_digest};
pub use kernel_hashes::KernelHashes;
pub use ovmf::{Firmware, MAX_FIRMWARE_LEN, OvmfError, SevSection, SevSectionKind};
pub use reference::{
    CmdlineDigest, FileDigest, InitdataDigest, MAX_BOOT_FILE_LEN, MAX_KERNEL_IMAGE_LEN,
    MeasurementInputs, ReferenceError, ReferenceValues, SnpReference, TdxBootReference, TdxLaunch,
    TdxReference, reference_values,
};
pub use snp::{MAX_VCPUS, SnpError, SnpLaunch, SnpLaunchDigest, snp_launch_digest};
pub use tdvf::{Mrtd, TdvfError, TdvfMetadata, TdvfSection, TdvfSectionKind, TdxPageOrder};
pub use vcpu::{GuestFeatures, VcpuError, VcpuType};
