//! PID 1 duties: the minimal system the agent needs, kernel modules, and power-off.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::kmod::{ModuleInitFlags, finit_module};
use nix::mount::{MsFlags, mount};
use thiserror::Error;
use tracing::{debug, info};

/// A step of system set-up that failed.
#[derive(Debug, Error)]
pub enum InitError {
    /// Mounting a pseudo file system failed.
    #[error("cannot mount {fstype} on {target}")]
    Mount {
        /// File system type.
        fstype: &'static str,
        /// Mount point.
        target: &'static str,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
    /// Creating a mount point failed.
    #[error("cannot create mount point {0}")]
    MountPoint(&'static str, #[source] io::Error),
    /// The module load order could not be read.
    #[error("cannot read the module list {path}")]
    ModuleList {
        /// The list's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A module listed in the image could not be opened or loaded.
    #[error("cannot load kernel module {path}")]
    Module {
        /// The module's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A module name in the list would leave the modules folder.
    #[error("module list names {0:?}, which is not a plain file name")]
    ModuleName(String),
}

/// A pseudo file system PID 1 mounts.
struct SystemMount {
    fstype: &'static str,
    target: &'static str,
    flags: MsFlags,
    data: &'static str,
    /// Mounted only when the kernel provides the mount point (configfs appears under sysfs
    /// only when the kernel has it; sysfs does not allow creating it).
    optional: bool,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// The pseudo file systems PID 1 mounts, in order.
const SYSTEM_MOUNTS: &[SystemMount] = &[
    SystemMount {
        fstype: "proc",
        target: "/proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        optional: false,
    },
    SystemMount {
        fstype: "sysfs",
        target: "/sys",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        optional: false,
    },
    SystemMount {
        fstype: "devtmpfs",
        target: "/dev",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: "mode=0755",
        optional: false,
    },
    // Terminals for container processes (`process.terminal`): /dev/ptmx finds its instance here.
    SystemMount {
        fstype: "devpts",
        target: "/dev/pts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: "mode=0620,ptmxmode=0666",
        optional: false,
    },
    SystemMount {
        fstype: "tmpfs",
        target: "/run",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: "mode=0755",
        optional: false,
    },
    SystemMount {
        fstype: "tmpfs",
        target: "/tmp",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: "mode=1777",
        optional: false,
    },
    SystemMount {
        fstype: "configfs",
        target: "/sys/kernel/config",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        optional: true,
    },
];

/// Mounts proc, sys, dev, dev/pts, run, tmp and configfs (for configfs-tsm attestation reports).
///
/// Nothing is seeded from the host: no host-provided files, no entropy, no clock.
pub fn mount_system() -> Result<(), InitError> {
    for m in SYSTEM_MOUNTS {
        if m.optional && !Path::new(m.target).is_dir() {
            debug!(
                fstype = m.fstype,
                target = m.target,
                "not offered by this kernel"
            );
            continue;
        }
        std::fs::create_dir_all(m.target).map_err(|e| InitError::MountPoint(m.target, e))?;
        match mount(
            Some(m.fstype),
            m.target,
            Some(m.fstype),
            m.flags,
            Some(m.data),
        ) {
            Ok(()) => debug!(fstype = m.fstype, target = m.target, "mounted"),
            // Already mounted (e.g. devtmpfs with CONFIG_DEVTMPFS_MOUNT) is fine.
            Err(Errno::EBUSY) => debug!(fstype = m.fstype, target = m.target, "already mounted"),
            Err(source) => {
                return Err(InitError::Mount {
                    fstype: m.fstype,
                    target: m.target,
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Loads the kernel modules named in `load_order` (a file under `modules_dir`), in order.
///
/// Returns how many modules were loaded. A module that is already loaded is skipped.
pub fn load_modules(modules_dir: &Path, load_order: &Path) -> Result<usize, InitError> {
    let list = match std::fs::read_to_string(load_order) {
        Ok(list) => list,
        Err(source) if source.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(InitError::ModuleList {
                path: load_order.to_owned(),
                source,
            });
        }
    };
    let mut loaded = 0;
    for name in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if name.contains('/') || name.starts_with('.') {
            return Err(InitError::ModuleName(name.to_owned()));
        }
        let path = modules_dir.join(name);
        let module_error = |source| InitError::Module {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(module_error)?;
        match finit_module(&file, c"", ModuleInitFlags::empty()) {
            Ok(()) => loaded += 1,
            Err(Errno::EEXIST) => debug!(module = name, "already loaded"),
            // Drivers for hardware this guest lacks (sev-guest outside SNP, tdx-guest outside
            // TDX) refuse to load with ENODEV; that is the expected answer, not a failure.
            Err(Errno::ENODEV) => info!(module = name, "no device for this module, skipped"),
            Err(errno) => return Err(module_error(errno.into())),
        }
    }
    info!(loaded, "kernel modules loaded");
    Ok(loaded)
}

/// Flushes file systems and powers the guest off. Only returns if the kernel refused.
pub fn power_off() -> Errno {
    nix::unistd::sync();
    match nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF) {
        Err(errno) => errno,
        Ok(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_module_list_loads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = load_modules(dir.path(), &dir.path().join("load-order")).unwrap();
        assert_eq!(loaded, 0);
    }

    #[test]
    fn module_list_cannot_escape_the_modules_folder() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("load-order");
        std::fs::write(&list, "../../etc/evil.ko\n").unwrap();
        let err = load_modules(dir.path(), &list).unwrap_err();
        assert!(matches!(err, InitError::ModuleName(name) if name == "../../etc/evil.ko"));
    }

    #[test]
    fn listed_module_that_is_absent_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("load-order");
        std::fs::write(&list, "vsock.ko\n").unwrap();
        let err = load_modules(dir.path(), &list).unwrap_err();
        match err {
            InitError::Module { path, source } => {
                assert_eq!(path, dir.path().join("vsock.ko"));
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("unexpected error {other:?}"),
        }
    }
}
