//! The one entry point the launcher and `tsuba measure` share: launch inputs in, reference
//! values out.
//!
//! Everything the hardware will measure is derived here from the very files QEMU is given, so
//! what is measured is what is launched.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256, Sha384};
use tsuba_policy::{HostData, Initdata, InitdataAlgorithm, MrConfigId};
use tsuba_protocols::evidence::ccel::TdvfBoot;

use crate::authenticode::{AuthenticodeError, authenticode_digest};

use crate::kernel_hashes::{KernelHashes, cmdline_sha256};
use crate::ovmf::{Firmware, MAX_FIRMWARE_LEN, OvmfError, len_u64};
use crate::snp::{SnpError, SnpLaunch, SnpLaunchDigest, snp_launch_digest};
use crate::tdvf::{Mrtd, TdvfError, TdvfMetadata, TdxPageOrder};
use crate::vcpu::{GuestFeatures, VcpuType};

/// The largest kernel or initrd accepted (they are hashed as streams, never held in memory).
pub const MAX_BOOT_FILE_LEN: u64 = 2 * 1024 * 1024 * 1024;

/// The largest kernel whose Authenticode digest is computed (it is read into memory).
pub const MAX_KERNEL_IMAGE_LEN: u64 = 256 * 1024 * 1024;

/// Errors from computing reference values.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A kernel or initrd is larger than [`MAX_BOOT_FILE_LEN`].
    #[error("{} is larger than {max} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        max: u64,
    },
    /// The firmware image is malformed.
    #[error("firmware {} is not a usable ovmf image", path.display())]
    Firmware {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: OvmfError,
    },
    /// The SNP launch digest cannot be computed for these inputs.
    #[error("cannot compute the snp launch digest")]
    Snp(#[source] SnpError),
    /// The TDX MRTD cannot be computed for this firmware.
    #[error("cannot compute the tdx mrtd")]
    Tdx(#[source] TdvfError),
    /// The kernel is not a PE image, so TDX firmware cannot measure it into RTMR1.
    #[error("kernel {} has no authenticode digest: give a bzImage with an efi stub", path.display())]
    KernelImage {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: AuthenticodeError,
    },
    /// An initrd or command line was given without a kernel (QEMU would refuse the launch).
    #[error("an initrd or kernel command line needs a kernel")]
    BootWithoutKernel,
    /// Neither SNP nor TDX was asked for.
    #[error("nothing to measure: ask for snp, tdx or both")]
    NothingToMeasure,
}

/// Launch parameters for TDX that change MRTD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TdxLaunch {
    /// Order of page adds and extends (QEMU generation).
    pub page_order: TdxPageOrder,
}

/// Everything a launch measurement depends on: the same configuration the launcher uses.
#[derive(Debug, Clone)]
pub struct MeasurementInputs {
    /// Firmware image as given to QEMU (`-bios`).
    pub firmware: PathBuf,
    /// Kernel for direct boot (`-kernel`); with SNP this requires measured direct boot.
    pub kernel: Option<PathBuf>,
    /// Initrd (`-initrd`); needs a kernel.
    pub initrd: Option<PathBuf>,
    /// Kernel command line (`-append`); needs a kernel.
    pub cmdline: Option<String>,
    /// The initdata document bound into the launch, if any.
    pub initdata: Option<Initdata>,
    /// Compute the SNP launch digest for this launch.
    pub snp: Option<SnpLaunch>,
    /// Compute the TDX MRTD for this launch.
    pub tdx: Option<TdxLaunch>,
}

/// A file's path and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileDigest {
    /// The path as given.
    pub path: PathBuf,
    /// SHA-256 of its contents, hex.
    pub sha256: String,
    /// Its length in bytes.
    pub len: u64,
}

/// The command line and its digest as the kernel-hashes table holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CmdlineDigest {
    /// The command line.
    pub text: String,
    /// SHA-256 of the command line followed by a NUL byte (QEMU's form), hex.
    pub sha256_nul_terminated: String,
}

/// The initdata document's own digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InitdataDigest {
    /// The algorithm the document names.
    pub algorithm: InitdataAlgorithm,
    /// Its digest, hex (32, 48 or 64 bytes).
    pub digest: String,
}

/// SNP reference values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnpReference {
    /// The report's `MEASUREMENT`.
    pub launch_digest: SnpLaunchDigest,
    /// vCPU count measured.
    pub vcpus: u32,
    /// vCPU model measured.
    pub vcpu_type: VcpuType,
    /// SEV features measured.
    pub guest_features: GuestFeatures,
    /// Whether the kernel, initrd and command line are measured (kernel-hashes table).
    pub kernel_hashes: bool,
    /// The report's `HOST_DATA`: the initdata digest, or `null` when none is bound (zeros).
    pub host_data: Option<HostData>,
}

/// TDX reference values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TdxReference {
    /// The TD's `MRTD`.
    pub mrtd: Mrtd,
    /// Page-add order assumed.
    pub page_order: TdxPageOrder,
    /// The TD's `MRCONFIGID`: the initdata digest, or `null` when none is bound (zeros).
    pub mr_config_id: Option<MrConfigId>,
    /// The RTMRs and boot-component digests of a direct kernel boot, `null` without a kernel.
    pub boot: Option<TdxBootReference>,
}

/// What a TDX direct kernel boot extends into the RTMRs (see
/// `tsuba_protocols::evidence::ccel` for the event layout), all SHA-384, hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TdxBootReference {
    /// RTMR0 as tee-sim's TDVF model extends it. Real TDVF also measures the TD HOB, QEMU's
    /// ACPI tables and the UEFI variables, which depend on the QEMU version and command line: on
    /// hardware, take RTMR0 from a known-good quote instead.
    pub rtmr0_sim: String,
    /// RTMR1: the kernel and the boot manager's actions (QEMU 10.0 or later, which passes the
    /// kernel file unmodified).
    pub rtmr1: String,
    /// RTMR2: the command line (load options) and the initrd, as the kernel's EFI stub measures.
    pub rtmr2: String,
    /// The kernel's PE Authenticode SHA-384 (its event in RTMR1).
    pub kernel: String,
    /// SHA-384 of the initrd (its event in RTMR2).
    pub initrd: Option<String>,
    /// SHA-384 of the load options: the UTF-16LE command line as OVMF passes it (its event in
    /// RTMR2).
    pub cmdline: Option<String>,
    /// The boot these values were predicted for: what tee-sim extends for a sim-tdx launch.
    #[serde(skip)]
    pub events: TdvfBoot,
}

impl TdxBootReference {
    /// Predicts the boot measurements from the kernel's Authenticode digest and length, the
    /// initrd's SHA-384 and the command line.
    pub fn predict(boot: &TdvfBoot) -> Self {
        let log = boot.event_log();
        let rtmr = log.replay();
        let parts = log.boot_components();
        Self {
            rtmr0_sim: hex::encode(rtmr[0]),
            rtmr1: hex::encode(rtmr[1]),
            rtmr2: hex::encode(rtmr[2]),
            kernel: hex::encode(boot.kernel_authenticode),
            initrd: parts.initrd.map(hex::encode),
            cmdline: parts.cmdline.map(hex::encode),
            events: boot.clone(),
        }
    }
}

/// What the hardware will report for a launch, and the digests of every input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReferenceValues {
    /// The firmware image.
    pub firmware: FileDigest,
    /// The kernel, if any.
    pub kernel: Option<FileDigest>,
    /// The initrd, if any.
    pub initrd: Option<FileDigest>,
    /// The command line, if any.
    pub cmdline: Option<CmdlineDigest>,
    /// The initdata document, if any.
    pub initdata: Option<InitdataDigest>,
    /// SNP values, when SNP was asked for.
    pub snp: Option<SnpReference>,
    /// TDX values, when TDX was asked for.
    pub tdx: Option<TdxReference>,
}

/// Computes the reference values of a launch from its input files.
pub fn reference_values(inputs: &MeasurementInputs) -> Result<ReferenceValues, ReferenceError> {
    if inputs.snp.is_none() && inputs.tdx.is_none() {
        return Err(ReferenceError::NothingToMeasure);
    }
    if inputs.kernel.is_none() && (inputs.initrd.is_some() || inputs.cmdline.is_some()) {
        return Err(ReferenceError::BootWithoutKernel);
    }

    // The kernel and initrd are hashed on their own threads while this one reads, hashes and
    // parses the firmware: on a launch with kernel hashes that is most of the work.
    let (firmware, firmware_digest, kernel, initrd, authenticode) = std::thread::scope(|scope| {
        let tdx = inputs.tdx.is_some();
        let kernel = inputs
            .kernel
            .as_deref()
            .map(|p| scope.spawn(move || hash_file(p, false)));
        let initrd = inputs
            .initrd
            .as_deref()
            .map(|p| scope.spawn(move || hash_file(p, tdx)));
        let kernel_authenticode = inputs
            .kernel
            .as_deref()
            .filter(|_| tdx)
            .map(|p| scope.spawn(move || kernel_authenticode(p)));
        let firmware = load_firmware(&inputs.firmware);
        let kernel = kernel.map(join).transpose();
        let initrd = initrd.map(join).transpose();
        let authenticode = kernel_authenticode.map(join).transpose();
        let (firmware, digest) = firmware?;
        Ok::<_, ReferenceError>((firmware, digest, kernel?, initrd?, authenticode?))
    })?;
    let kernel_hashes = kernel.as_ref().map(|(_, k, _)| KernelHashes {
        kernel: *k,
        initrd: initrd
            .as_ref()
            .map_or_else(|| Sha256::digest([]).into(), |(_, i, _)| *i),
        cmdline: cmdline_sha256(inputs.cmdline.as_deref()),
    });
    let tdx_boot = authenticode.map(|(kernel_authenticode, kernel_len)| {
        TdxBootReference::predict(&TdvfBoot {
            kernel_authenticode,
            kernel_len,
            initrd: initrd.as_ref().and_then(|(_, _, sha384)| *sha384),
            cmdline: inputs.cmdline.clone(),
        })
    });

    let snp = inputs
        .snp
        .map(|launch| {
            let digest = snp_launch_digest(&firmware, &launch, kernel_hashes.as_ref())
                .map_err(ReferenceError::Snp)?;
            Ok::<_, ReferenceError>(SnpReference {
                launch_digest: digest,
                vcpus: launch.vcpus.get(),
                vcpu_type: launch.vcpu_type,
                guest_features: launch.guest_features,
                kernel_hashes: kernel_hashes.is_some(),
                host_data: inputs.initdata.as_ref().map(Initdata::host_data),
            })
        })
        .transpose()?;

    let tdx = inputs
        .tdx
        .map(|launch| {
            let metadata = TdvfMetadata::parse(&firmware).map_err(ReferenceError::Tdx)?;
            Ok::<_, ReferenceError>(TdxReference {
                mrtd: metadata.mrtd(&firmware, launch.page_order),
                page_order: launch.page_order,
                mr_config_id: inputs.initdata.as_ref().map(Initdata::mr_config_id),
                boot: tdx_boot.clone(),
            })
        })
        .transpose()?;

    let values = ReferenceValues {
        firmware: firmware_digest,
        kernel: kernel.map(|(d, _, _)| d),
        initrd: initrd.map(|(d, _, _)| d),
        cmdline: inputs.cmdline.as_ref().map(|text| CmdlineDigest {
            text: text.clone(),
            sha256_nul_terminated: hex::encode(cmdline_sha256(Some(text))),
        }),
        initdata: inputs.initdata.as_ref().map(|d| InitdataDigest {
            algorithm: d.algorithm(),
            digest: hex::encode(d.digest()),
        }),
        snp,
        tdx,
    };
    tracing::debug!(
        firmware = %values.firmware.sha256,
        snp = ?values.snp.as_ref().map(|s| s.launch_digest),
        tdx = ?values.tdx.as_ref().map(|t| t.mrtd),
        "computed launch reference values"
    );
    Ok(values)
}

/// Waits for a hashing thread, passing its panic on.
fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Reads, hashes and parses the firmware image.
fn load_firmware(path: &Path) -> Result<(Firmware, FileDigest), ReferenceError> {
    let bytes = read_firmware(path)?;
    let digest = FileDigest {
        path: path.to_owned(),
        sha256: hex::encode(Sha256::digest(&bytes)),
        len: len_u64(bytes.len()),
    };
    let firmware = Firmware::parse(bytes).map_err(|source| ReferenceError::Firmware {
        path: path.to_owned(),
        source,
    })?;
    Ok((firmware, digest))
}

fn read_firmware(path: &Path) -> Result<Vec<u8>, ReferenceError> {
    let read_err = |source| ReferenceError::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    // One byte over the limit is enough for the parser to refuse the image as too large.
    file.take(len_u64(MAX_FIRMWARE_LEN) + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    Ok(bytes)
}

/// The Authenticode SHA-384 and length of a kernel image, refusing files over
/// [`MAX_KERNEL_IMAGE_LEN`].
fn kernel_authenticode(path: &Path) -> Result<([u8; 48], u64), ReferenceError> {
    let read_err = |source| ReferenceError::Read {
        path: path.to_owned(),
        source,
    };
    let mut image = Vec::new();
    File::open(path)
        .map_err(read_err)?
        .take(MAX_KERNEL_IMAGE_LEN + 1)
        .read_to_end(&mut image)
        .map_err(read_err)?;
    let len = len_u64(image.len());
    if len > MAX_KERNEL_IMAGE_LEN {
        return Err(ReferenceError::TooLarge {
            path: path.to_owned(),
            max: MAX_KERNEL_IMAGE_LEN,
        });
    }
    let digest =
        authenticode_digest::<Sha384>(&image).map_err(|source| ReferenceError::KernelImage {
            path: path.to_owned(),
            source,
        })?;
    Ok((digest.into(), len))
}

/// A file's SHA-256 (and SHA-384 when asked for).
type FileHashes = (FileDigest, [u8; 32], Option<[u8; 48]>);

/// Streams a file through SHA-256 (and SHA-384 when `sha384`), refusing files over
/// [`MAX_BOOT_FILE_LEN`].
fn hash_file(path: &Path, sha384: bool) -> Result<FileHashes, ReferenceError> {
    let read_err = |source| ReferenceError::Read {
        path: path.to_owned(),
        source,
    };
    let mut reader = File::open(path)
        .map_err(read_err)?
        .take(MAX_BOOT_FILE_LEN + 1);
    let mut hasher = Sha256::new();
    let mut hasher384 = sha384.then(Sha384::new);
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        hasher.update(&buf[..n]);
        if let Some(h) = hasher384.as_mut() {
            h.update(&buf[..n]);
        }
        len += len_u64(n);
    }
    if len > MAX_BOOT_FILE_LEN {
        return Err(ReferenceError::TooLarge {
            path: path.to_owned(),
            max: MAX_BOOT_FILE_LEN,
        });
    }
    let digest: [u8; 32] = hasher.finalize().into();
    Ok((
        FileDigest {
            path: path.to_owned(),
            sha256: hex::encode(digest),
            len,
        },
        digest,
        hasher384.map(|h| h.finalize().into()),
    ))
}

#[cfg(test)]
mod tests {
    use sha2::Sha384;

    use super::*;
    use crate::ovmf::tests::{
        hashes_table_entry, image_with_table, reset_block, sev_metadata_entry, write_sev_metadata,
    };

    /// A synthetic 16-page OVMF-like image with every SEV section kind, including a
    /// kernel-hashes page, so measured direct boot can be checked against the reference tool
    /// before the AmdSev build exists.
    fn synthetic_amdsev() -> Vec<u8> {
        let mut img = image_with_table(
            16,
            &[
                reset_block(0x0080_b004),
                sev_metadata_entry(0x800),
                hashes_table_entry(0x0081_0400, 0x400),
            ],
        );
        // Code-like contents everywhere below the SEV metadata and footer table.
        let code_end = img.len() - 0x800;
        for (i, b) in img[..code_end].iter_mut().enumerate() {
            *b = u8::try_from((i / 4096 * 13 + i * 7) % 251).unwrap();
        }
        write_sev_metadata(
            &mut img,
            0x800,
            &[
                (0x80_0000, 0x9000, 1),
                (0x80_9000, 0x1000, 2),
                (0x80_a000, 0x1000, 3),
                (0x80_b000, 0x1000, 4),
                (0x81_0000, 0x1000, 0x10),
                (0x81_1000, 0xf000, 1),
            ],
        );
        img
    }

    /// Debian bookworm's `ovmf` 2022.11-6+deb12u2: plain OvmfPkgX64, SEV and TDX metadata, no
    /// kernel-hashes section. Pinned so that a changed fixture fails loudly.
    const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";
    const OVMF_CODE_SHA256: &str =
        "d9b568def24088c92f34b5479e0ed7e44d0a4d4cea8a0f5716719180bba48106";
    /// The same build with its variable store in front (what `-bios` takes; TDX needs this one).
    const OVMF_FD: &str = "/usr/share/ovmf/OVMF.fd";
    const OVMF_FD_SHA256: &str = "7b456907dd0786d415999e801a1ac4637b8ed4d7cf5378cfc6edbe5e574dd773";
    const SYNTHETIC_SHA256: &str =
        "59e6d31de40766421357479e9e846fbf716788daaf6fa7c155bd5515af026b8f";
    const CMDLINE: &str = "console=ttyS0 root=/dev/vda";

    struct Fixtures {
        dir: tempfile::TempDir,
    }

    impl Fixtures {
        /// Writes the synthetic firmware, a 100 000-byte kernel and a 21 000-byte initrd.
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("synthetic.fd"), synthetic_amdsev()).unwrap();
            let kernel: Vec<u8> = (0..100_000u32)
                .map(|i| u8::try_from(i * 31 % 256).unwrap())
                .collect();
            std::fs::write(dir.path().join("kernel"), kernel).unwrap();
            std::fs::write(
                dir.path().join("initrd"),
                b"tsuba initrd fixture\n".repeat(1000),
            )
            .unwrap();
            Self { dir }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
    }

    fn pinned(path: &str, sha256: &str) -> PathBuf {
        let bytes = std::fs::read(path)
            .unwrap_or_else(|e| panic!("fixture {path} missing ({e}): install Debian's ovmf"));
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            sha256,
            "fixture {path} changed: recompute the golden values"
        );
        PathBuf::from(path)
    }

    fn snp(vcpus: u32, vcpu_type: &str, features: u64) -> SnpLaunch {
        SnpLaunch {
            vcpus: std::num::NonZeroU32::new(vcpus).unwrap(),
            vcpu_type: vcpu_type.parse().unwrap(),
            guest_features: GuestFeatures(features),
        }
    }

    fn inputs(firmware: PathBuf) -> MeasurementInputs {
        MeasurementInputs {
            firmware,
            kernel: None,
            initrd: None,
            cmdline: None,
            initdata: None,
            snp: None,
            tdx: None,
        }
    }

    fn snp_digest(inputs: &MeasurementInputs) -> String {
        reference_values(inputs)
            .unwrap()
            .snp
            .unwrap()
            .launch_digest
            .to_hex()
    }

    // Golden values: sev-snp-measure 0.0.13 (pip install sev-snp-measure), e.g.
    //   sev-snp-measure --mode snp --ovmf /usr/share/OVMF/OVMF_CODE.fd --vcpus 4 \
    //     --vcpu-type EPYC-Milan [--guest-features 0x21]
    const PLAIN_GOLDEN: [(&str, &str, u32, &str, u64, &str); 8] = [
        (
            OVMF_CODE,
            OVMF_CODE_SHA256,
            1,
            "EPYC",
            1,
            "a479327cbb0b50e876024c2dac7412d4e5e95c7315c1f8b0446f6d3be69fefba50766285475926737e4a70b155252f88",
        ),
        (
            OVMF_CODE,
            OVMF_CODE_SHA256,
            4,
            "EPYC-Milan",
            1,
            "cc2b38913550ecd41aadbcf2a5d309ae9d3cb0455c9e1f72892f6b18cfaea3f2e4f46a28b61ca0353724ee707c73177c",
        ),
        (
            OVMF_CODE,
            OVMF_CODE_SHA256,
            8,
            "EPYC-Genoa",
            1,
            "aec29e43eb068ebac83ec4924d79175c95d9e932eb34518fdd189a96f2aa4a7c64e90cba5f43fd6e79f80c4d635d15b1",
        ),
        (
            OVMF_CODE,
            OVMF_CODE_SHA256,
            2,
            "EPYC-Turin",
            0x21,
            "2fe89fb95f6c2248296fe05fac918fdbe1a5ae698991fd4b7d3ae7af34e79521707cd2cc1737a9df5297aa26c74cee19",
        ),
        (
            OVMF_FD,
            OVMF_FD_SHA256,
            1,
            "EPYC",
            1,
            "11570979c77a0adb515761a702527c8b9e11554e730552621d950988613a3a75c6ff1703f540bd22a9beede8fe7a97e3",
        ),
        (
            OVMF_FD,
            OVMF_FD_SHA256,
            4,
            "EPYC-Milan",
            1,
            "e9c10ab98f8086bf4a4993dcdc1f768b1128bcb02301d1791f1d3274329e790db2d12a301d66d99a462a13b5d87e2840",
        ),
        (
            OVMF_FD,
            OVMF_FD_SHA256,
            8,
            "EPYC-Genoa",
            1,
            "f76ed5c5b28b344cff13890c4479cd8a31e598a4b70cc8aa22df5733f7ef07692a11f82ac0c0001254d12abdca90baca",
        ),
        (
            OVMF_FD,
            OVMF_FD_SHA256,
            2,
            "EPYC-Turin",
            0x21,
            "ec51b8c49c77d25a0294957924ff82aa8b76fcd9c562466a6edda2825ac3a84a6664829a8de257115bfeb9423191d6f0",
        ),
    ];

    #[test]
    fn plain_ovmf_matches_sev_snp_measure() {
        for (path, sha, vcpus, vcpu_type, features, expect) in PLAIN_GOLDEN {
            let i = MeasurementInputs {
                snp: Some(snp(vcpus, vcpu_type, features)),
                ..inputs(pinned(path, sha))
            };
            assert_eq!(
                snp_digest(&i),
                expect,
                "{path} {vcpus} {vcpu_type} {features:#x}"
            );
        }
    }

    #[test]
    fn plain_ovmf_refuses_a_kernel_launch() {
        // sev-snp-measure refuses too: "Kernel specified but OVMF metadata doesn't include
        // SNP_KERNEL_HASHES section".
        let f = Fixtures::new();
        let i = MeasurementInputs {
            kernel: Some(f.path("kernel")),
            snp: Some(snp(2, "EPYC-Milan", 1)),
            ..inputs(pinned(OVMF_CODE, OVMF_CODE_SHA256))
        };
        assert!(matches!(
            reference_values(&i),
            Err(ReferenceError::Snp(SnpError::MissingKernelHashes))
        ));
    }

    #[test]
    fn synthetic_amdsev_matches_sev_snp_measure_with_and_without_kernel_hashes() {
        // sev-snp-measure --mode snp --ovmf synthetic.fd --vcpus N --vcpu-type T \
        //   [--kernel kernel [--initrd initrd --append "console=ttyS0 root=/dev/vda"]]
        let f = Fixtures::new();
        let fw = f.path("synthetic.fd");
        assert_eq!(
            hex::encode(Sha256::digest(std::fs::read(&fw).unwrap())),
            SYNTHETIC_SHA256
        );
        let cases = [
            (
                1,
                "EPYC-Rome",
                false,
                false,
                "cce5edf3bf148059a6906f3278ac11914a09bc34eb91c19de5fc63a6420ba838a609a7a3acbe04a4bf92066e3bfda349",
            ),
            (
                2,
                "EPYC-Milan",
                true,
                true,
                "812a2024be1e1e44e9c2aab699d0c0b47f247b6fa2740f60e2860ee851eb21ef4fb1c1c5b4b40ece6dc1ac8a38eca33e",
            ),
            (
                8,
                "EPYC-Genoa",
                true,
                false,
                "c21f50d9e612368d69459294ccd264988d851614abce5608b661b6561c3f86c74f3ce2be78b12eb5886811a37e7c863a",
            ),
            (
                64,
                "EPYC-Turin",
                true,
                true,
                "090dd368b5569d6c3e511a3bed0775d824cd9c74fb73a743f1b8e8643e185ebcdc7731ebe4c9337a25f2b754e2a546a7",
            ),
        ];
        for (vcpus, vcpu_type, kernel, initrd, expect) in cases {
            let i = MeasurementInputs {
                kernel: kernel.then(|| f.path("kernel")),
                initrd: initrd.then(|| f.path("initrd")),
                cmdline: initrd.then(|| CMDLINE.to_owned()),
                snp: Some(snp(vcpus, vcpu_type, 1)),
                ..inputs(fw.clone())
            };
            let values = reference_values(&i).unwrap();
            let s = values.snp.unwrap();
            assert_eq!(s.launch_digest.to_hex(), expect, "{vcpus} {vcpu_type}");
            assert_eq!(s.kernel_hashes, kernel);
        }
    }

    /// The reproducible AmdSev build of `firmware/recipe/` (edk2 2025.02-8+deb13u1, AmdSevX64
    /// RELEASE, 4 MiB, with the SNP kernel-hashes section), pinned like the other fixtures.
    const AMDSEV_SHA256: &str = "3ca971ff27796df05554ce245b4085c8b14aa65b29dd38d632f8ad9697cbf835";

    fn amdsev() -> PathBuf {
        let path = std::env::var_os("TSUBA_AMDSEV_OVMF").map_or_else(
            || {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/tsuba/firmware/amdsev/OVMF.fd")
            },
            PathBuf::from,
        );
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "AmdSev OVMF missing at {} ({e}): build it with firmware/recipe/build-amdsev.sh \
                 (scripts/setup does) or point TSUBA_AMDSEV_OVMF at it",
                path.display()
            )
        });
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            AMDSEV_SHA256,
            "AmdSev OVMF at {} is not the pinned build: recompute the golden values",
            path.display()
        );
        path
    }

    #[test]
    fn amdsev_build_matches_sev_snp_measure_with_and_without_kernel_hashes() {
        // sev-snp-measure --mode snp --ovmf OVMF.fd --vcpus N --vcpu-type T [--guest-features F] \
        //   [--kernel kernel [--initrd initrd --append "console=ttyS0 root=/dev/vda"]]
        // with the kernel and initrd fixtures of `Fixtures::new`.
        let f = Fixtures::new();
        let fw = amdsev();
        let cases = [
            (
                1,
                "EPYC",
                1,
                false,
                false,
                "21311212723a191cb561ff26e0f35cb1a98a603f795023e46592fecb664454eb1d28bc310a311999e87e348b36b2c518",
            ),
            (
                4,
                "EPYC-Milan",
                1,
                false,
                false,
                "2ace9c071a11305366282c46251edd9d63c9727413bd851b99d67cac5fb500985963d2c74eb91d5377775e487ffa170a",
            ),
            (
                1,
                "EPYC-Milan",
                1,
                true,
                false,
                "61c3666c57a648893f31d5f2f340fd7ccafc36ec1513c9f79bc54ebf5bcb009fc0087e6db0696e644d22707fa024a807",
            ),
            (
                2,
                "EPYC-Genoa",
                1,
                true,
                true,
                "b3d9eef1380b92ff0696d1d7039007779827995883ba1b312bdeb354e3e0035287f096c692c776f082286861654895d0",
            ),
            (
                8,
                "EPYC-Milan",
                1,
                true,
                true,
                "0d160281589cfa17d0a1d4e9ac5d8fd887fdd0451aaf05c3449a5fe3397c9292f22356a2b7655d208e0eeb5c3093ebaa",
            ),
            (
                16,
                "EPYC-Turin",
                0x21,
                true,
                true,
                "1f10274c3585ffcedf1d228c28c7f6121e9ccd2ff007c6efc441d2609243baff88c40a0500011be64a446c655a4ce0c1",
            ),
        ];
        for (vcpus, vcpu_type, features, kernel, initrd, expect) in cases {
            let i = MeasurementInputs {
                kernel: kernel.then(|| f.path("kernel")),
                initrd: initrd.then(|| f.path("initrd")),
                cmdline: initrd.then(|| CMDLINE.to_owned()),
                snp: Some(snp(vcpus, vcpu_type, features)),
                ..inputs(fw.clone())
            };
            let s = reference_values(&i).unwrap().snp.unwrap();
            assert_eq!(
                s.launch_digest.to_hex(),
                expect,
                "{vcpus} {vcpu_type} {kernel}"
            );
            assert_eq!(s.kernel_hashes, kernel);
        }
    }

    // Golden MRTDs of Debian's OVMF.fd (pinned above): no public TDX measurement tool runs here,
    // so these come from `firmware/testdata/derive-mrtd.py`, a standard-library Python script
    // written from the TDX module ABI (MEM.PAGE.ADD / MR.EXTEND records) and the TDVF metadata
    // layout, which shares no code with this crate (`python3 firmware/testdata/derive-mrtd.py
    // /usr/share/ovmf/OVMF.fd [per-page|per-section]`; see firmware/testdata/PROVENANCE.md).
    // `tests/mrtd_vs_derive_script.rs` runs it on every image the project measures.
    const MRTD_PER_PAGE: &str = "4c7206f0f483c524f12c366c711e9049030a8d47c471ee5aa9c4999a08de4057fb887fed0744d5631a212967fb231c47";
    const MRTD_PER_SECTION: &str = "acccbcc870a381adab0d3919d90a7f268ac3b0364771f202ed4bb4e892d045b33db3b32e6924cba830a724eed443f7e1";

    #[test]
    fn tdx_mrtd_matches_independent_script() {
        for (order, expect) in [
            (TdxPageOrder::PerPage, MRTD_PER_PAGE),
            (TdxPageOrder::PerSection, MRTD_PER_SECTION),
        ] {
            let i = MeasurementInputs {
                tdx: Some(TdxLaunch { page_order: order }),
                ..inputs(pinned(OVMF_FD, OVMF_FD_SHA256))
            };
            let t = reference_values(&i).unwrap().tdx.unwrap();
            assert_eq!(t.mrtd.to_hex(), expect, "{order:?}");
        }
    }

    #[test]
    fn tdx_refuses_split_code_image_whose_metadata_points_outside_it() {
        // OVMF_CODE.fd carries the TDVF metadata of the combined image: its code section starts
        // 128 KiB in, past the end of this file. QEMU needs the combined OVMF.fd for TDX.
        let i = MeasurementInputs {
            tdx: Some(TdxLaunch::default()),
            ..inputs(pinned(OVMF_CODE, OVMF_CODE_SHA256))
        };
        assert!(matches!(
            reference_values(&i),
            Err(ReferenceError::Tdx(TdvfError::OutOfBounds {
                what: "section data",
                ..
            }))
        ));
    }

    #[test]
    fn tdx_predicts_rtmrs_of_a_direct_kernel_boot() {
        let f = Fixtures::new();
        std::fs::write(
            f.path("pe-kernel"),
            crate::authenticode::tests::tiny_pe(b"sig"),
        )
        .unwrap();
        let i = MeasurementInputs {
            kernel: Some(f.path("pe-kernel")),
            initrd: Some(f.path("initrd")),
            cmdline: Some(CMDLINE.to_owned()),
            tdx: Some(TdxLaunch::default()),
            ..inputs(pinned(OVMF_FD, OVMF_FD_SHA256))
        };
        let t = reference_values(&i).unwrap().tdx.unwrap();
        assert_eq!(t.mrtd.to_hex(), MRTD_PER_PAGE);
        let boot = t.boot.unwrap();
        let kernel =
            authenticode_digest::<Sha384>(&crate::authenticode::tests::tiny_pe(b"other")).unwrap();
        assert_eq!(boot.kernel, hex::encode(kernel));
        // sha384sum of the initrd fixture, and of the UTF-16LE load options
        // "console=ttyS0 root=/dev/vda initrd=initrd\0".
        let initrd = "f815f74c35c03098f336a2606cb942732952d79d090227d59c91cdb61fa67cb83430d88506b1f6506976e0c667fb07d0";
        let cmdline = "483f2a5a7eaa0eab7391d974cc33a32ac7ab983856559ec9b57a4be7aa00a83679a29573e139cd138f8d5558d23227b9";
        assert_eq!(boot.initrd.as_deref(), Some(initrd));
        assert_eq!(boot.cmdline.as_deref(), Some(cmdline));
        let extend = |mr: [u8; 48], digest: &str| -> [u8; 48] {
            let mut h = Sha384::new();
            h.update(mr);
            h.update(hex::decode(digest).unwrap());
            h.finalize().into()
        };
        assert_eq!(
            boot.rtmr2,
            hex::encode(extend(extend([0; 48], cmdline), initrd))
        );
        // A different command line or initrd changes RTMR2 and nothing else.
        let other = MeasurementInputs {
            cmdline: Some(format!("{CMDLINE} init=/bin/sh")),
            ..i.clone()
        };
        let b2 = reference_values(&other).unwrap().tdx.unwrap().boot.unwrap();
        assert_eq!((&b2.rtmr0_sim, &b2.rtmr1), (&boot.rtmr0_sim, &boot.rtmr1));
        assert_ne!(b2.rtmr2, boot.rtmr2);
        // SNP-only launches do not read the kernel as a PE image; TDX ones refuse a non-PE one.
        let not_pe = MeasurementInputs {
            kernel: Some(f.path("kernel")),
            ..i
        };
        assert!(matches!(
            reference_values(&not_pe),
            Err(ReferenceError::KernelImage {
                source: AuthenticodeError::NotPe { .. },
                ..
            })
        ));
    }

    #[test]
    fn reference_values_carry_input_digests_and_initdata() {
        let f = Fixtures::new();
        let doc = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"policy.rego\" = \"package agent_policy\"\n";
        let initdata = Initdata::parse(doc).unwrap();
        let i = MeasurementInputs {
            kernel: Some(f.path("kernel")),
            initrd: Some(f.path("initrd")),
            cmdline: Some(CMDLINE.to_owned()),
            initdata: Some(initdata.clone()),
            snp: Some(snp(2, "EPYC-Milan", 1)),
            ..inputs(f.path("synthetic.fd"))
        };
        let v = reference_values(&i).unwrap();
        assert_eq!(v.firmware.sha256, SYNTHETIC_SHA256);
        assert_eq!(v.firmware.len, 16 * 4096);
        let kernel = v.kernel.as_ref().unwrap();
        // sha256sum of the kernel and initrd fixtures.
        assert_eq!(
            kernel.sha256,
            "7e76f19c9d73bcfda63bba337a1ad01f24cd311038f7598736a510bd92aa233b"
        );
        assert_eq!(kernel.len, 100_000);
        assert_eq!(
            v.initrd.as_ref().unwrap().sha256,
            "74b34cf21bd287b7e3cc88351c71a8092c133cc23c7fff7ddc46d5e2580793cf"
        );
        let s = v.snp.as_ref().unwrap();
        assert_eq!(s.host_data, Some(initdata.host_data()));
        assert_eq!(
            v.initdata.as_ref().unwrap().digest,
            hex::encode(Sha384::digest(doc.as_bytes()))
        );
        // The initdata does not change the launch digest (it goes into HOST_DATA).
        assert_eq!(
            s.launch_digest.to_hex(),
            "812a2024be1e1e44e9c2aab699d0c0b47f247b6fa2740f60e2860ee851eb21ef4fb1c1c5b4b40ece6dc1ac8a38eca33e"
        );
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["snp"]["vcpu_type"], "EPYC-Milan");
        assert_eq!(json["snp"]["guest_features"], "0x1");
        assert_eq!(json["snp"]["host_data"], initdata.host_data().to_hex());
        assert_eq!(json["cmdline"]["text"], CMDLINE);
        assert!(json["tdx"].is_null());
    }

    #[test]
    fn refuses_inconsistent_or_unreadable_inputs() {
        let f = Fixtures::new();
        let base = inputs(f.path("synthetic.fd"));
        assert!(matches!(
            reference_values(&base),
            Err(ReferenceError::NothingToMeasure)
        ));
        let with_snp = MeasurementInputs {
            snp: Some(snp(1, "EPYC", 1)),
            ..base
        };
        for i in [
            MeasurementInputs {
                initrd: Some(f.path("initrd")),
                ..with_snp.clone()
            },
            MeasurementInputs {
                cmdline: Some("quiet".into()),
                ..with_snp.clone()
            },
        ] {
            assert!(matches!(
                reference_values(&i),
                Err(ReferenceError::BootWithoutKernel)
            ));
        }
        let missing = MeasurementInputs {
            kernel: Some(f.path("no-such-kernel")),
            ..with_snp.clone()
        };
        assert!(matches!(
            reference_values(&missing),
            Err(ReferenceError::Read { path, .. }) if path.ends_with("no-such-kernel")
        ));
        // A truncated copy of a real firmware: cut to a page multiple, the footer is gone.
        let real = std::fs::read(pinned(OVMF_CODE, OVMF_CODE_SHA256)).unwrap();
        std::fs::write(f.path("cut.fd"), &real[..real.len() - 4096]).unwrap();
        std::fs::write(f.path("short.fd"), &real[..100]).unwrap();
        let mut flipped = real.clone();
        let at = flipped.len() - 40;
        flipped[at] ^= 0x55;
        std::fs::write(f.path("flipped.fd"), &flipped).unwrap();
        for name in ["cut.fd", "short.fd", "flipped.fd"] {
            let i = MeasurementInputs {
                firmware: f.path(name),
                ..with_snp.clone()
            };
            let Err(ReferenceError::Firmware { source, .. }) = reference_values(&i) else {
                panic!("{name} was accepted");
            };
            let expected = match name {
                "short.fd" => matches!(source, OvmfError::Truncated { len: 100 }),
                _ => matches!(source, OvmfError::BadFooterGuid),
            };
            assert!(expected, "{name}: {source:?}");
        }
    }

    #[test]
    fn refuses_oversized_firmware_file() {
        let f = Fixtures::new();
        let big = f.path("big.fd");
        let file = File::create(&big).unwrap();
        file.set_len(len_u64(MAX_FIRMWARE_LEN) + 4096).unwrap();
        let i = MeasurementInputs {
            snp: Some(snp(1, "EPYC", 1)),
            ..inputs(big)
        };
        assert!(matches!(
            reference_values(&i),
            Err(ReferenceError::Firmware {
                source: OvmfError::TooLarge { .. },
                ..
            })
        ));
    }
}
