//! `tsuba measure`: prints the reference values of a launch as JSON.
//!
//! The flags are the launch configuration the launcher uses; the values come from the same
//! library call the launcher makes (`tsuba_firmware::reference_values`), so what is printed is
//! what that launch will report.

use std::io::{Read, Write};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use tsuba_firmware::{
    GuestFeatures, MeasurementInputs, SnpLaunch, TdxLaunch, TdxPageOrder, VcpuType,
    reference_values,
};
use tsuba_policy::{Initdata, MAX_INITDATA_LEN};

/// Which TEE's measurement to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Tee {
    /// AMD SEV-SNP launch digest.
    Snp,
    /// Intel TDX MRTD.
    Tdx,
    /// Both.
    Both,
}

/// Page-add order of the QEMU/KVM that will launch a TD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PageOrder {
    /// QEMU >= 9 with upstream KVM.
    PerPage,
    /// QEMU 8 with the earlier KVM TDX patches.
    PerSection,
}

/// Compute the launch measurement (SNP launch digest, TDX MRTD) and the digests of every input.
#[derive(Debug, clap::Args)]
pub(crate) struct MeasureArgs {
    /// A launch config (TOML), the very file `tsuba demo` and the launcher take: the values are
    /// computed over exactly what that launch boots (with its derived kernel command line).
    #[arg(long, conflicts_with_all = ["firmware", "kernel", "initrd", "cmdline", "vcpus",
        "vcpu_type", "guest_features", "initdata", "tee", "tdx_page_order"])]
    config: Option<PathBuf>,
    /// Firmware image given to QEMU as `-bios` (the AmdSev OVMF for SNP with a kernel).
    #[arg(long, required_unless_present = "config")]
    firmware: Option<PathBuf>,
    /// Kernel for measured direct boot.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Initrd (needs --kernel).
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Kernel command line (needs --kernel).
    #[arg(long)]
    cmdline: Option<String>,
    /// Number of vCPUs (SNP measures one VMSA per vCPU).
    #[arg(long, default_value_t = NonZeroU32::MIN)]
    vcpus: NonZeroU32,
    /// QEMU vCPU model, e.g. EPYC-Milan, EPYC-Genoa, EPYC-Turin (required for SNP).
    #[arg(long)]
    vcpu_type: Option<VcpuType>,
    /// SEV features of the guest, hex.
    #[arg(long, default_value = "0x1")]
    guest_features: GuestFeatures,
    /// Initdata document (TOML) bound into HOST_DATA / MRCONFIGID.
    #[arg(long)]
    initdata: Option<PathBuf>,
    /// Which measurement(s) to compute.
    #[arg(long, value_enum, default_value = "snp")]
    tee: Tee,
    /// TDX page-add order (the QEMU generation).
    #[arg(long, value_enum, default_value = "per-page")]
    tdx_page_order: PageOrder,
}

pub(crate) fn run(args: MeasureArgs) -> anyhow::Result<ExitCode> {
    let inputs = match &args.config {
        Some(path) => config_inputs(path)?,
        None => inputs(args)?,
    };
    let mut out = std::io::stdout().lock();
    write_json(&inputs, &mut out)?;
    Ok(ExitCode::SUCCESS)
}

/// The measurement inputs of a launch config, through the launcher's own code path.
fn config_inputs(path: &Path) -> anyhow::Result<MeasurementInputs> {
    let config = tsuba_vmm_tee::LaunchConfig::from_file(path)?;
    Ok(tsuba_vmm_tee::measurement_inputs(&config)?)
}

/// Turns the flags into the launcher's measurement inputs.
fn inputs(args: MeasureArgs) -> anyhow::Result<MeasurementInputs> {
    let Some(firmware) = args.firmware else {
        bail!("--firmware or --config is required");
    };
    let snp = match (args.tee, args.vcpu_type) {
        (Tee::Tdx, _) => None,
        (Tee::Snp | Tee::Both, Some(vcpu_type)) => Some(SnpLaunch {
            vcpus: args.vcpus,
            vcpu_type,
            guest_features: args.guest_features,
        }),
        (Tee::Snp | Tee::Both, None) => {
            bail!("--vcpu-type is required for an snp measurement (e.g. EPYC-Milan)")
        }
    };
    let tdx = matches!(args.tee, Tee::Tdx | Tee::Both).then_some(TdxLaunch {
        page_order: match args.tdx_page_order {
            PageOrder::PerPage => TdxPageOrder::PerPage,
            PageOrder::PerSection => TdxPageOrder::PerSection,
        },
    });
    let initdata = args.initdata.as_deref().map(read_initdata).transpose()?;
    Ok(MeasurementInputs {
        firmware,
        kernel: args.kernel,
        initrd: args.initrd,
        cmdline: args.cmdline,
        initdata,
        snp,
        tdx,
    })
}

fn read_initdata(path: &Path) -> anyhow::Result<Initdata> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open initdata {}", path.display()))?;
    let mut bytes = Vec::new();
    let limit = u64::try_from(MAX_INITDATA_LEN).unwrap_or(u64::MAX) + 1;
    file.take(limit)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read initdata {}", path.display()))?;
    Initdata::from_bytes(&bytes).with_context(|| format!("initdata {}", path.display()))
}

fn write_json(inputs: &MeasurementInputs, out: &mut impl Write) -> anyhow::Result<()> {
    let values = reference_values(inputs).context("cannot compute the reference values")?;
    serde_json::to_writer_pretty(&mut *out, &values)?;
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: MeasureArgs,
    }

    fn parse(argv: &[&str]) -> Result<MeasureArgs, clap::Error> {
        Wrapper::try_parse_from(std::iter::once("measure").chain(argv.iter().copied()))
            .map(|w| w.args)
    }

    const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";

    /// The smallest PE32+ image: headers only (no sections), as TDX firmware could load it.
    fn minimal_pe() -> Vec<u8> {
        let mut img = vec![0u8; 0x200];
        img[..2].copy_from_slice(b"MZ");
        img[0x3c] = 0x40;
        img[0x40..0x44].copy_from_slice(b"PE\0\0");
        img[0x54] = 240; // size of the optional header
        img[0x58..0x5a].copy_from_slice(&0x20bu16.to_le_bytes());
        img[0x58 + 60..0x58 + 62].copy_from_slice(&0x200u16.to_le_bytes());
        img[0x58 + 108] = 16; // data directories
        img
    }

    #[test]
    fn a_launch_config_measures_like_the_equivalent_flags() {
        // sim-tdx: MRTD over Debian's plain OVMF, RTMRs of the kernel, initrd and command line.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vmlinuz"), minimal_pe()).unwrap();
        std::fs::write(dir.path().join("initrd.img"), b"initrd bytes").unwrap();
        let config = dir.path().join("launch.toml");
        std::fs::write(
            &config,
            "mode = \"sim-tdx\"\nkernel = \"vmlinuz\"\ninitrd = \"initrd.img\"\n\
             cmdline = \"quiet\"\n[firmware]\nboot = \"/usr/share/ovmf/OVMF.fd\"\n\
             measured = \"/usr/share/ovmf/OVMF.fd\"\n",
        )
        .unwrap();
        let from_config = {
            let mut out = Vec::new();
            write_json(&config_inputs(&config).unwrap(), &mut out).unwrap();
            serde_json::from_slice::<serde_json::Value>(&out).unwrap()
        };
        let kernel = dir.path().join("vmlinuz");
        let initrd = dir.path().join("initrd.img");
        let args = parse(&[
            "--firmware",
            "/usr/share/ovmf/OVMF.fd",
            "--kernel",
            kernel.to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
            // The launcher's keys first, then the user's: the line QEMU gets.
            "--cmdline",
            "console=ttyS0 panic=-1 tsuba.agent.transport=serial quiet",
            "--tee",
            "tdx",
        ])
        .unwrap();
        let mut out = Vec::new();
        write_json(&inputs(args).unwrap(), &mut out).unwrap();
        let from_flags: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(from_config, from_flags);
        assert!(from_config["tdx"]["mrtd"].is_string());
        let boot = &from_config["tdx"]["boot"];
        for key in ["rtmr0_sim", "rtmr1", "rtmr2", "kernel", "initrd", "cmdline"] {
            assert_eq!(boot[key].as_str().map(str::len), Some(96), "{key}");
        }
        // sha384sum of "initrd bytes".
        assert_eq!(
            boot["initrd"],
            "093767035fa44d795ade7929811a560dd520a25adf817ffb202ce22924e78214d2d1868332352fc9cc0bdf81480e92f8"
        );
        assert!(parse(&["--config", "x.toml", "--firmware", "y.fd"]).is_err());
        assert!(
            parse(&[]).is_err(),
            "one of --config and --firmware is required"
        );
    }

    #[test]
    fn prints_the_golden_snp_digest_as_json() {
        // sev-snp-measure --mode snp --ovmf /usr/share/OVMF/OVMF_CODE.fd --vcpus 4 \
        //   --vcpu-type EPYC-Milan
        let args = parse(&[
            "--firmware",
            OVMF_CODE,
            "--vcpus",
            "4",
            "--vcpu-type",
            "EPYC-Milan",
        ])
        .unwrap();
        let mut out = Vec::new();
        write_json(&inputs(args).unwrap(), &mut out).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            json["snp"]["launch_digest"],
            "cc2b38913550ecd41aadbcf2a5d309ae9d3cb0455c9e1f72892f6b18cfaea3f2e4f46a28b61ca0353724ee707c73177c"
        );
        assert_eq!(json["snp"]["vcpus"], 4);
        assert_eq!(
            json["firmware"]["sha256"],
            "d9b568def24088c92f34b5479e0ed7e44d0a4d4cea8a0f5716719180bba48106"
        );
        assert!(json["tdx"].is_null());
    }

    #[test]
    fn initdata_file_becomes_host_data_and_mrconfigid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("initdata.toml");
        let doc = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n";
        std::fs::write(&path, doc).unwrap();
        let args = parse(&[
            "--firmware",
            "/usr/share/ovmf/OVMF.fd",
            "--vcpu-type",
            "EPYC",
            "--tee",
            "both",
            "--initdata",
            path.to_str().unwrap(),
        ])
        .unwrap();
        let mut out = Vec::new();
        write_json(&inputs(args).unwrap(), &mut out).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        // printf 'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n' | sha256sum
        let digest = "af398df379eb475aff9f02cd056d0d1f5d496b7a073927cb3ea92407d8ad61a3";
        assert_eq!(json["snp"]["host_data"], digest);
        assert_eq!(
            json["tdx"]["mr_config_id"],
            format!("{digest}{}", "0".repeat(32))
        );
        assert_eq!(json["tdx"]["page_order"], "per-page");
    }

    #[test]
    fn refuses_bad_flags() {
        assert!(parse(&["--firmware", OVMF_CODE, "--vcpu-type", "Skylake"]).is_err());
        assert!(parse(&["--firmware", OVMF_CODE, "--vcpus", "0"]).is_err());
        assert!(parse(&["--firmware", OVMF_CODE, "--guest-features", "xyz"]).is_err());
        assert!(parse(&["--vcpu-type", "EPYC"]).is_err());
        let no_type = parse(&["--firmware", OVMF_CODE]).unwrap();
        assert!(inputs(no_type).is_err());
        // TDX alone needs no vCPU type.
        let tdx = parse(&["--firmware", OVMF_CODE, "--tee", "tdx"]).unwrap();
        assert!(inputs(tdx).unwrap().snp.is_none());
    }

    #[test]
    fn kernel_launch_on_plain_ovmf_is_an_error_not_a_digest() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinuz");
        std::fs::write(&kernel, b"kernel").unwrap();
        let args = parse(&[
            "--firmware",
            OVMF_CODE,
            "--vcpu-type",
            "EPYC",
            "--kernel",
            kernel.to_str().unwrap(),
        ])
        .unwrap();
        let mut out = Vec::new();
        let err = write_json(&inputs(args).unwrap(), &mut out).unwrap_err();
        assert!(out.is_empty());
        assert!(format!("{err:#}").contains("kernel-hashes"), "{err:#}");
    }

    #[test]
    fn refuses_bad_initdata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("initdata.toml");
        std::fs::write(&path, "version = \"9\"\nalgorithm = \"sha256\"\n[data]\n").unwrap();
        let args = parse(&[
            "--firmware",
            OVMF_CODE,
            "--vcpu-type",
            "EPYC",
            "--initdata",
            path.to_str().unwrap(),
        ])
        .unwrap();
        assert!(inputs(args).is_err());
    }
}
