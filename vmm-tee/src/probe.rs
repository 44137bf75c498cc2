//! What this host can run (`tsuba check`): KVM and its confidential VM types, the kvm_amd and
//! kvm_intel module parameters, QEMU and its confidential-guest objects, firmware, vhost-vsock.
//!
//! Every reading is kept as found (including "could not tell"), and [`HostReport::blockers`]
//! derives from them why a mode cannot run, so the report and the verdict never disagree.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::accel::cpuinfo_has_virt;
use crate::config::Mode;

/// KVM as seen through `/dev/kvm`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KvmReport {
    /// `/dev/kvm` opened.
    pub opens: bool,
    /// Why it did not.
    pub error: Option<String>,
    /// `KVM_GET_API_VERSION` (12 on every kernel since 2.6.22).
    pub api_version: Option<i32>,
    /// `KVM_CAP_VM_TYPES` bitmask, when the kernel reports it.
    pub vm_types: Option<u32>,
    /// The kernel offers `KVM_X86_SNP_VM`.
    pub snp_vm_type: bool,
    /// The kernel offers `KVM_X86_TDX_VM`.
    pub tdx_vm_type: bool,
}

/// QEMU and what it supports.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct QemuReport {
    /// The binary asked.
    pub binary: PathBuf,
    /// Its version (major, minor, micro), if it ran.
    pub version: Option<(u32, u32, u32)>,
    /// It has the `sev-snp-guest` object.
    pub sev_snp_guest: bool,
    /// It has the `tdx-guest` object.
    pub tdx_guest: bool,
    /// Why it could not be asked.
    pub error: Option<String>,
}

/// A firmware image the configuration points at.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FirmwareReport {
    /// What it is for.
    pub role: String,
    /// Where.
    pub path: PathBuf,
    /// Whether it is there.
    pub present: bool,
}

/// Everything `tsuba check` reports.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HostReport {
    /// `/proc/cpuinfo` shows `vmx` or `svm`.
    pub cpu_has_virt: bool,
    /// KVM.
    pub kvm: KvmReport,
    /// `kvm_amd` parameters (`sev`, `sev_es`, `sev_snp`), when the module is loaded.
    pub kvm_amd: Vec<(String, String)>,
    /// `kvm_intel` parameters (`tdx`), when the module is loaded.
    pub kvm_intel: Vec<(String, String)>,
    /// QEMU.
    pub qemu: QemuReport,
    /// Firmware images.
    pub firmware: Vec<FirmwareReport>,
    /// `/dev/vhost-vsock` exists.
    pub vhost_vsock: bool,
}

impl HostReport {
    /// Probes this host.
    pub fn probe(qemu: &Path, firmware: &[(String, PathBuf)]) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        HostReport {
            cpu_has_virt: cpuinfo_has_virt(&cpuinfo),
            kvm: probe_kvm(),
            kvm_amd: module_params(
                Path::new("/sys/module/kvm_amd/parameters"),
                &["sev", "sev_es", "sev_snp"],
            ),
            kvm_intel: module_params(Path::new("/sys/module/kvm_intel/parameters"), &["tdx"]),
            qemu: probe_qemu(qemu),
            firmware: firmware
                .iter()
                .map(|(role, path)| FirmwareReport {
                    role: role.clone(),
                    path: path.clone(),
                    present: path.is_file(),
                })
                .collect(),
            vhost_vsock: Path::new("/dev/vhost-vsock").exists(),
        }
    }

    /// Why `mode` cannot run here; empty when it can.
    pub fn blockers(&self, mode: Mode) -> Vec<String> {
        let mut why = Vec::new();
        let kvm_usable = self.cpu_has_virt && self.kvm.opens;
        if self.qemu.version.is_none() {
            why.push(format!(
                "QEMU ({}) does not run",
                self.qemu.binary.display()
            ));
        }
        for fw in self.firmware.iter().filter(|f| !f.present) {
            why.push(format!(
                "{} firmware {} is missing",
                fw.role,
                fw.path.display()
            ));
        }
        match mode {
            Mode::Snp => {
                if !kvm_usable {
                    why.push("KVM is not usable (no svm flag or /dev/kvm)".into());
                }
                if !self.kvm.snp_vm_type {
                    why.push("the kernel offers no SNP VM type (KVM_X86_SNP_VM)".into());
                }
                if !param_enabled(&self.kvm_amd, "sev_snp") {
                    why.push("kvm_amd sev_snp is not enabled".into());
                }
                if !self.qemu.sev_snp_guest {
                    why.push("QEMU lacks the sev-snp-guest object (needs QEMU >= 9.1)".into());
                }
            }
            Mode::Tdx => {
                if !kvm_usable {
                    why.push("KVM is not usable (no vmx flag or /dev/kvm)".into());
                }
                if !self.kvm.tdx_vm_type {
                    why.push("the kernel offers no TDX VM type (KVM_X86_TDX_VM)".into());
                }
                if !param_enabled(&self.kvm_intel, "tdx") {
                    why.push("kvm_intel tdx is not enabled".into());
                }
                if !self.qemu.tdx_guest {
                    why.push("QEMU lacks the tdx-guest object (needs QEMU >= 10.1)".into());
                }
            }
            Mode::SimSnp | Mode::SimTdx | Mode::None => {}
        }
        why
    }
}

fn param_enabled(params: &[(String, String)], name: &str) -> bool {
    params
        .iter()
        .any(|(k, v)| k == name && matches!(v.as_str(), "Y" | "y" | "1"))
}

fn module_params(dir: &Path, names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .filter_map(|name| {
            let value = std::fs::read_to_string(dir.join(name)).ok()?;
            Some(((*name).to_owned(), value.trim().to_owned()))
        })
        .collect()
}

fn probe_kvm() -> KvmReport {
    match kvm_ioctls::Kvm::new() {
        Err(error) => KvmReport {
            opens: false,
            error: Some(error.to_string()),
            api_version: None,
            vm_types: None,
            snp_vm_type: false,
            tdx_vm_type: false,
        },
        Ok(kvm) => {
            let raw = kvm.check_extension_raw(libc::c_ulong::from(kvm_bindings::KVM_CAP_VM_TYPES));
            let vm_types = u32::try_from(raw).ok().filter(|t| *t != 0);
            let has = |t: u32| vm_types.is_some_and(|m| m & (1 << t) != 0);
            KvmReport {
                opens: true,
                error: None,
                api_version: Some(kvm.get_api_version()),
                vm_types,
                snp_vm_type: has(kvm_bindings::KVM_X86_SNP_VM),
                tdx_vm_type: has(kvm_bindings::KVM_X86_TDX_VM),
            }
        }
    }
}

fn probe_qemu(binary: &Path) -> QemuReport {
    let mut report = QemuReport {
        binary: binary.to_owned(),
        version: None,
        sev_snp_guest: false,
        tdx_guest: false,
        error: None,
    };
    match Command::new(binary).arg("--version").output() {
        Ok(out) if out.status.success() => {
            report.version = parse_qemu_version(&String::from_utf8_lossy(&out.stdout));
        }
        Ok(out) => report.error = Some(format!("--version exited with {}", out.status)),
        Err(error) => {
            report.error = Some(error.to_string());
            return report;
        }
    }
    if let Ok(out) = Command::new(binary).args(["-object", "help"]).output() {
        let objects = String::from_utf8_lossy(&out.stdout);
        report.sev_snp_guest = objects.lines().any(|l| l.trim() == "sev-snp-guest");
        report.tdx_guest = objects.lines().any(|l| l.trim() == "tdx-guest");
    }
    report
}

/// Parses `QEMU emulator version 10.0.2 (Debian ...)`.
pub fn parse_qemu_version(text: &str) -> Option<(u32, u32, u32)> {
    let rest = text.split("version ").nth(1)?;
    let version = rest.split_whitespace().next()?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qemu_versions() {
        assert_eq!(
            parse_qemu_version(
                "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\n"
            ),
            Some((10, 0, 2))
        );
        assert_eq!(
            parse_qemu_version("QEMU emulator version 7.2.0\n"),
            Some((7, 2, 0))
        );
        assert_eq!(
            parse_qemu_version("QEMU emulator version 9.1\n"),
            Some((9, 1, 0))
        );
        assert_eq!(parse_qemu_version("something else"), None);
    }

    fn report() -> HostReport {
        HostReport {
            cpu_has_virt: true,
            kvm: KvmReport {
                opens: true,
                error: None,
                api_version: Some(12),
                vm_types: Some(0b1_0001),
                snp_vm_type: true,
                tdx_vm_type: false,
            },
            kvm_amd: vec![("sev_snp".into(), "Y".into())],
            kvm_intel: vec![],
            qemu: QemuReport {
                binary: "qemu".into(),
                version: Some((10, 1, 0)),
                sev_snp_guest: true,
                tdx_guest: true,
                error: None,
            },
            firmware: vec![],
            vhost_vsock: true,
        }
    }

    #[test]
    fn an_snp_host_can_run_snp_but_not_tdx() {
        let r = report();
        assert!(
            r.blockers(Mode::Snp).is_empty(),
            "{:?}",
            r.blockers(Mode::Snp)
        );
        let tdx = r.blockers(Mode::Tdx);
        assert!(tdx.iter().any(|w| w.contains("KVM_X86_TDX_VM")), "{tdx:?}");
        assert!(tdx.iter().any(|w| w.contains("kvm_intel tdx")), "{tdx:?}");
    }

    #[test]
    fn each_missing_piece_is_named() {
        let mut r = report();
        r.kvm_amd = vec![("sev_snp".into(), "N".into())];
        r.qemu.sev_snp_guest = false;
        r.firmware = vec![FirmwareReport {
            role: "measured".into(),
            path: "/nope/OVMF.fd".into(),
            present: false,
        }];
        let why = r.blockers(Mode::Snp);
        assert_eq!(why.len(), 3, "{why:?}");
        assert!(why.iter().any(|w| w.contains("/nope/OVMF.fd")));
        // Sim mode needs no TEE, only QEMU and the firmware.
        assert_eq!(r.blockers(Mode::SimSnp).len(), 1);
    }

    #[test]
    fn probing_this_host_does_not_fail() {
        let r = HostReport::probe(Path::new("/nonexistent/qemu"), &[]);
        assert!(r.qemu.version.is_none());
        assert!(r.qemu.error.is_some());
        assert!(!r.blockers(Mode::None).is_empty());
    }
}
