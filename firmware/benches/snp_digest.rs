//! SNP launch digest for a 4 MiB firmware and 8 vCPUs.
//!
//! Firmware: the AmdSev build (`$TSUBA_AMDSEV_OVMF`, default
//! `~/.cache/tsuba/firmware/amdsev/OVMF.fd`) with kernel hashes when it exists; otherwise Debian's
//! plain `/usr/share/ovmf/OVMF.fd` (2 MiB) padded in front to 4 MiB, without kernel hashes (the
//! footer table and SEV metadata are addressed from the end of the image, so they still hold).
//!
//! Run: `CARGO_BUILD_JOBS=2 cargo bench -p tsuba-firmware --bench snp_digest`

use std::hint::black_box;
use std::num::NonZeroU32;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use tsuba_firmware::{Firmware, GuestFeatures, KernelHashes, SnpLaunch, snp_launch_digest};

const FOUR_MIB: usize = 4 * 1024 * 1024;

fn amdsev_path() -> PathBuf {
    std::env::var_os("TSUBA_AMDSEV_OVMF").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_default();
            PathBuf::from(home).join(".cache/tsuba/firmware/amdsev/OVMF.fd")
        },
        PathBuf::from,
    )
}

/// The firmware image to measure and whether it can measure a kernel.
fn firmware() -> (Vec<u8>, bool) {
    if let Ok(bytes) = std::fs::read(amdsev_path()) {
        return (bytes, true);
    }
    let plain = std::fs::read("/usr/share/ovmf/OVMF.fd").expect("install Debian's ovmf");
    let mut padded = vec![0x5a_u8; FOUR_MIB.saturating_sub(plain.len())];
    padded.extend_from_slice(&plain);
    (padded, false)
}

fn bench(c: &mut Criterion) {
    let (bytes, with_kernel) = firmware();
    let kernel = vec![0x90_u8; 12 * 1024 * 1024];
    let initrd = vec![0x1f_u8; 32 * 1024 * 1024];
    let hashes = KernelHashes::of(&kernel, Some(&initrd), Some("console=ttyS0 root=/dev/vda"));
    let hashes = with_kernel.then_some(hashes);
    let launch = SnpLaunch {
        vcpus: NonZeroU32::new(8).expect("8 is not zero"),
        vcpu_type: "EPYC-Milan".parse().expect("known model"),
        guest_features: GuestFeatures::default(),
    };
    let name = format!(
        "snp_digest/{}KiB/8vcpus/{}",
        bytes.len() / 1024,
        if with_kernel {
            "kernel-hashes"
        } else {
            "no-kernel"
        }
    );
    c.bench_function(&name, |b| {
        b.iter(|| {
            let fw = Firmware::parse(black_box(bytes.clone())).expect("valid firmware");
            snp_launch_digest(&fw, &launch, hashes.as_ref()).expect("measurable")
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
