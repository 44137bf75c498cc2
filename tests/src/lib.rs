//! End-to-end test support for tsuba.
//!
//! The tests under `tests/tests/` run the real components (QEMU, containerd, the distribution
//! registry, skopeo, the key broker on loopback); this library holds what they share: locating
//! the artefacts `make e2e` built, writing launch configs, and checking that a test left no
//! process or file behind.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use tsuba_vmm_tee::{HostVirt, LaunchConfig, LaunchOptions, Mode};

/// How long a test waits for a guest agent under TCG on a loaded 2-core machine.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(150);

/// Paths `make e2e` exports (from scripts/setup's env file and the image build).
#[derive(Debug, Clone)]
pub struct Artefacts {
    /// `out/guest`: holds `release/` and `debug/` images.
    pub guest_dir: PathBuf,
    /// The unpacked kernel package.
    pub kernel_package: PathBuf,
    /// Plain OVMF, booted in sim modes.
    pub ovmf: PathBuf,
    /// AmdSev OVMF, measured in sim-snp mode.
    pub amdsev_ovmf: PathBuf,
}

fn env_path(name: &str) -> PathBuf {
    match std::env::var_os(name) {
        Some(value) if !value.is_empty() => PathBuf::from(value),
        _ => panic!("{name} is not set: run the end-to-end tests with `make e2e` (or `make test`)"),
    }
}

impl Artefacts {
    /// Reads the paths from the environment; panics with the command to run when absent.
    pub fn from_env() -> Self {
        Artefacts {
            guest_dir: env_path("TSUBA_GUEST_DIR"),
            kernel_package: env_path("TSUBA_KERNEL_PACKAGE"),
            ovmf: env_path("TSUBA_OVMF"),
            amdsev_ovmf: env_path("TSUBA_AMDSEV_OVMF"),
        }
    }

    /// The release image's kernel.
    pub fn kernel(&self) -> PathBuf {
        self.guest_dir.join("release/vmlinuz")
    }

    /// The release image's initrd.
    pub fn initrd(&self) -> PathBuf {
        self.guest_dir.join("release/initrd.img")
    }
}

/// What QEMU boots for an SNP launch, in the terms of `sev-snp-measure`.
#[derive(Debug, Clone, Copy)]
pub struct SnpBoot<'a> {
    /// The firmware real hardware measures (the AmdSev build in sim-snp mode).
    pub firmware: &'a Path,
    /// `-kernel`.
    pub kernel: &'a Path,
    /// `-initrd`.
    pub initrd: &'a Path,
    /// `-append`.
    pub append: &'a str,
    /// `-smp`.
    pub vcpus: u8,
    /// The SNP vCPU model.
    pub vcpu_type: &'a str,
}

/// The SNP launch digest (hex) that `sev-snp-measure`, the public Python reference tool
/// (`$TSUBA_SEV_SNP_MEASURE`, pinned and installed by scripts/setup), computes for `boot`: a
/// check of a guest's measurement that shares no code with tsuba.
pub fn sev_snp_measure_digest(boot: &SnpBoot<'_>) -> String {
    sev_snp_measure_digest_with(&env_path("TSUBA_SEV_SNP_MEASURE"), boot)
}

/// As [`sev_snp_measure_digest`], with the tool at `tool`.
pub fn sev_snp_measure_digest_with(tool: &Path, boot: &SnpBoot<'_>) -> String {
    let out = std::process::Command::new(tool)
        .args(["--mode", "snp", "--output-format", "hex", "--vcpus"])
        .arg(boot.vcpus.to_string())
        .arg("--vcpu-type")
        .arg(boot.vcpu_type)
        .arg("--ovmf")
        .arg(boot.firmware)
        .arg("--kernel")
        .arg(boot.kernel)
        .arg("--initrd")
        .arg(boot.initrd)
        .arg("--append")
        .arg(boot.append)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}): run scripts/setup", tool.display()));
    assert!(
        out.status.success(),
        "sev-snp-measure failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(digest.len(), 96, "not a SHA-384 in hex: {digest:?}");
    digest
}

/// A launch config for a sim-snp guest booting `initrd`, with `extra_cmdline`, written to and
/// read back from a TOML file in `dir` (so the file format is exercised too).
pub fn sim_config(a: &Artefacts, dir: &Path, initrd: &Path, extra_cmdline: &str) -> LaunchConfig {
    let toml = format!(
        "mode = \"sim-snp\"\nkernel = {kernel:?}\ninitrd = {initrd:?}\ncmdline = {extra_cmdline:?}\n\
         vcpus = 1\nmemory_mib = 256\n[firmware]\nboot = {boot:?}\nmeasured = {measured:?}\n",
        kernel = a.kernel(),
        boot = a.ovmf,
        measured = a.amdsev_ovmf,
    );
    let path = dir.join("launch.toml");
    std::fs::write(&path, toml).expect("write launch config");
    let config = LaunchConfig::from_file(&path).expect("launch config is valid");
    assert_eq!(config.mode, Mode::SimSnp);
    config
}

/// Launch options whose run directories go under `parent`, so a test can check they are gone.
pub fn options_in(parent: &Path) -> LaunchOptions {
    LaunchOptions {
        run_dir_parent: parent.to_owned(),
        host: HostVirt::probe(),
        ..LaunchOptions::for_this_host()
    }
}

/// Processes whose command line mentions `needle` (e.g. a run directory): none should outlive
/// the test that started them. Zombies count: an unreaped QEMU is a leak too.
pub fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Asserts that `parent` (a run-directory parent) holds nothing and no process mentions it.
pub fn assert_nothing_left(parent: &Path) {
    let left: Vec<_> = std::fs::read_dir(parent)
        .expect("read run dir parent")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
    let procs = processes_mentioning(&parent.display().to_string());
    assert!(procs.is_empty(), "processes left behind: {procs:?}");
}
