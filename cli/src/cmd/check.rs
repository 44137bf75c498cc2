//! `tsuba check`: can this host run the requested mode?

use std::path::PathBuf;
use std::process::ExitCode;

use tsuba_vmm_tee::{HostReport, Mode};

/// Report what this host offers; exit 0 when `--mode` can run here, 1 when it cannot.
#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// The mode to check for: snp, tdx, sim-snp, sim-tdx or none.
    #[arg(long, default_value = "sim-snp", value_parser = parse_mode)]
    mode: Mode,
    /// QEMU binary.
    #[arg(long, default_value = "qemu-system-x86_64")]
    qemu: PathBuf,
    /// Firmware QEMU boots.
    #[arg(long, env = "TSUBA_OVMF")]
    firmware: Option<PathBuf>,
    /// Firmware that is measured (sim modes: the AmdSev build).
    #[arg(long, env = "TSUBA_AMDSEV_OVMF")]
    measured_firmware: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_mode(text: &str) -> Result<Mode, String> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| format!("unknown mode {text:?}: expected snp, tdx, sim-snp, sim-tdx or none"))
}

pub(crate) fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let mut firmware = Vec::new();
    if let Some(path) = args.firmware {
        firmware.push(("boot".to_owned(), path));
    }
    if let Some(path) = args.measured_firmware.filter(|_| args.mode.is_simulated()) {
        firmware.push(("measured".to_owned(), path));
    }
    let report = HostReport::probe(&args.qemu, &firmware);
    let blockers = report.blockers(args.mode);
    if args.json {
        let json = serde_json::json!({
            "mode": args.mode,
            "can_run": blockers.is_empty(),
            "blockers": blockers,
            "host": report,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print_human(&report);
        if blockers.is_empty() {
            println!("\nmode {}: can run on this host", args.mode);
        } else {
            println!("\nmode {}: CANNOT run on this host:", args.mode);
            for why in &blockers {
                println!("  - {why}");
            }
        }
    }
    Ok(if blockers.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn print_human(r: &HostReport) {
    println!("cpu virtualisation (vmx/svm): {}", yes(r.cpu_has_virt));
    match &r.kvm.error {
        Some(e) => println!("/dev/kvm: cannot open ({e})"),
        None => println!(
            "/dev/kvm: api {}, vm types {}, SNP VM type {}, TDX VM type {}",
            r.kvm.api_version.map_or("?".into(), |v| v.to_string()),
            r.kvm
                .vm_types
                .map_or("not reported".into(), |t| format!("{t:#x}")),
            yes(r.kvm.snp_vm_type),
            yes(r.kvm.tdx_vm_type)
        ),
    }
    let params = |p: &[(String, String)]| {
        if p.is_empty() {
            "module not loaded".to_owned()
        } else {
            p.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        }
    };
    println!("kvm_amd: {}", params(&r.kvm_amd));
    println!("kvm_intel: {}", params(&r.kvm_intel));
    match r.qemu.version {
        Some((a, b, c)) => println!(
            "qemu {}: {a}.{b}.{c}, sev-snp-guest {}, tdx-guest {}",
            r.qemu.binary.display(),
            yes(r.qemu.sev_snp_guest),
            yes(r.qemu.tdx_guest)
        ),
        None => println!(
            "qemu {}: not usable ({})",
            r.qemu.binary.display(),
            r.qemu.error.as_deref().unwrap_or("no version")
        ),
    }
    for fw in &r.firmware {
        println!(
            "firmware ({}): {} {}",
            fw.role,
            fw.path.display(),
            if fw.present { "present" } else { "MISSING" }
        );
    }
    println!("vhost-vsock: {}", yes(r.vhost_vsock));
}
