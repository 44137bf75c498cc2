//! Choosing the accelerator: KVM where it can run a guest well, else TCG.
//!
//! `/dev/kvm` can exist on a host whose CPU exposes no hardware virtualisation (nested setups
//! without `vmx`/`svm`), where KVM cannot run a stock Linux guest at a usable speed; so KVM is
//! chosen only when `/proc/cpuinfo` shows `vmx` or `svm` *and* `/dev/kvm` opens.

use thiserror::Error;

use crate::config::{AccelChoice, Mode};

/// The accelerator a launch uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// Software emulation.
    Tcg,
}

impl Accel {
    /// QEMU's name for it.
    pub fn qemu_name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// What the host offers, as far as accelerator choice cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostVirt {
    /// `/proc/cpuinfo` lists `vmx` or `svm`.
    pub cpu_has_virt: bool,
    /// `/dev/kvm` can be opened read-write.
    pub kvm_opens: bool,
}

impl HostVirt {
    /// Reads the facts from this host.
    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        HostVirt {
            cpu_has_virt: cpuinfo_has_virt(&cpuinfo),
            kvm_opens: std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_ok(),
        }
    }

    /// Whether KVM is usable for ordinary guests.
    pub fn kvm_usable(self) -> bool {
        self.cpu_has_virt && self.kvm_opens
    }
}

/// Whether a `/proc/cpuinfo` text shows hardware virtualisation in any CPU's flags.
pub fn cpuinfo_has_virt(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .filter_map(|l| l.split_once(':'))
        .any(|(_, flags)| {
            flags
                .split_ascii_whitespace()
                .any(|f| f == "vmx" || f == "svm")
        })
}

/// The accelerator asked for cannot be had.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AccelError {
    /// KVM was required but is not usable here.
    #[error(
        "{needed_by} needs KVM, but this host cannot use it (cpu virtualisation flags: {cpu}, \
         /dev/kvm opens: {kvm}); run `tsuba check` for details"
    )]
    KvmUnavailable {
        /// What needed it.
        needed_by: String,
        /// vmx/svm present.
        cpu: bool,
        /// /dev/kvm opens.
        kvm: bool,
    },
    /// TCG asked for in a hardware TEE mode.
    #[error("mode {0} runs only under KVM; accel = \"tcg\" is for sim and none modes")]
    TcgInTeeMode(Mode),
}

/// Resolves the configured choice for `mode` on a host with `host` capabilities.
pub fn resolve(choice: AccelChoice, mode: Mode, host: HostVirt) -> Result<Accel, AccelError> {
    let unavailable = |needed_by: String| AccelError::KvmUnavailable {
        needed_by,
        cpu: host.cpu_has_virt,
        kvm: host.kvm_opens,
    };
    match (choice, mode.is_hardware_tee()) {
        (AccelChoice::Tcg, true) => Err(AccelError::TcgInTeeMode(mode)),
        (AccelChoice::Tcg, false) => Ok(Accel::Tcg),
        (AccelChoice::Kvm, _) if !host.kvm_usable() => Err(unavailable("accel = \"kvm\"".into())),
        (AccelChoice::Auto, true) if !host.kvm_usable() => Err(unavailable(format!("mode {mode}"))),
        (AccelChoice::Kvm, _) | (AccelChoice::Auto, true) => Ok(Accel::Kvm),
        (AccelChoice::Auto, false) => Ok(if host.kvm_usable() {
            Accel::Kvm
        } else {
            Accel::Tcg
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_VIRT: &str = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr sse2 hypervisor\n";
    const VMX: &str = "processor\t: 0\nflags\t\t: fpu vme vmx sse2\nbugs\t\t: spectre_v1\n";

    #[test]
    fn reads_virt_flags_only_from_the_flags_line() {
        assert!(!cpuinfo_has_virt(NO_VIRT));
        assert!(cpuinfo_has_virt(VMX));
        assert!(cpuinfo_has_virt("flags\t: svm\n"));
        // A "vmx" elsewhere (e.g. in a model name or bug list) is not the flag.
        assert!(!cpuinfo_has_virt(
            "model name\t: vmx edition\nvmx flags\t: ept\n"
        ));
    }

    #[test]
    fn auto_picks_kvm_only_when_both_conditions_hold() {
        let both = HostVirt {
            cpu_has_virt: true,
            kvm_opens: true,
        };
        let dev_only = HostVirt {
            cpu_has_virt: false,
            kvm_opens: true,
        };
        let cpu_only = HostVirt {
            cpu_has_virt: true,
            kvm_opens: false,
        };
        assert_eq!(
            resolve(AccelChoice::Auto, Mode::SimSnp, both),
            Ok(Accel::Kvm)
        );
        assert_eq!(
            resolve(AccelChoice::Auto, Mode::SimSnp, dev_only),
            Ok(Accel::Tcg)
        );
        assert_eq!(
            resolve(AccelChoice::Auto, Mode::None, cpu_only),
            Ok(Accel::Tcg)
        );
    }

    #[test]
    fn overrides_are_honoured_or_refused() {
        let none = HostVirt {
            cpu_has_virt: false,
            kvm_opens: false,
        };
        let both = HostVirt {
            cpu_has_virt: true,
            kvm_opens: true,
        };
        assert_eq!(
            resolve(AccelChoice::Tcg, Mode::SimTdx, both),
            Ok(Accel::Tcg)
        );
        assert!(matches!(
            resolve(AccelChoice::Kvm, Mode::SimSnp, none),
            Err(AccelError::KvmUnavailable { .. })
        ));
        assert_eq!(
            resolve(AccelChoice::Tcg, Mode::Snp, both),
            Err(AccelError::TcgInTeeMode(Mode::Snp))
        );
        assert!(matches!(
            resolve(AccelChoice::Auto, Mode::Tdx, none),
            Err(AccelError::KvmUnavailable { .. })
        ));
        assert_eq!(resolve(AccelChoice::Auto, Mode::Snp, both), Ok(Accel::Kvm));
    }
}
