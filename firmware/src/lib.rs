//! Measured firmware and launch measurements.
//!
//! This crate parses OVMF and TDVF firmware images (footer GUID table, SEV metadata, SEV-ES reset
//! block, TDX metadata) and computes, offline and exactly, the launch measurement that AMD SEV-SNP
//! (launch digest) and Intel TDX (MRTD) hardware will report for a given launch. The launcher in
//! `vmm-tee` and `tsuba measure` share this one code path, so what is measured is what is launched.
//! It also holds the recipe for building the AmdSev OVMF reproducibly.

#![forbid(unsafe_code)]
