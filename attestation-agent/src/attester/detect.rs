//! Which attester to use: named by configuration, or detected from the devices the guest sees.
//! Detection never guesses: no TEE, or signs of more than one (e.g. a sim device inside a real
//! SNP guest), is an error that asks for explicit configuration.

#[cfg(any(test, feature = "insecure-sim"))]
use std::fs;
use std::path::{Path, PathBuf};

use thiserror::Error;
use tracing::info;
#[cfg(feature = "insecure-sim")]
use tsuba_protocols::simdev::SimTee;

use super::configfs::{CONFIGFS_TSM_REPORT, ConfigfsTsm};
#[cfg(feature = "insecure-sim")]
use super::sim::{SIM_DEVICE_NAME, SimDeviceAttester, SimDeviceError};
use super::snp::{SEV_GUEST_DEVICE, system_snp};
use super::tdx::TdxAttester;
use super::{Attester, AttesterKind};

/// Where detection looks; [`Default`] gives the system paths, tests pass a fake root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectPaths {
    /// configfs-tsm report directory.
    pub configfs_tsm: PathBuf,
    /// The SEV guest device.
    pub sev_guest: PathBuf,
    /// The TDX guest device.
    pub tdx_guest: PathBuf,
    /// Directory of named virtio-serial port links (`/dev/virtio-ports`).
    pub virtio_ports_dev: PathBuf,
    /// Sysfs class of virtio-serial ports (`/sys/class/virtio-ports`).
    pub virtio_ports_class: PathBuf,
    /// Directory of device nodes (`/dev`), for ports found through sysfs.
    pub dev: PathBuf,
}

impl Default for DetectPaths {
    fn default() -> Self {
        Self {
            configfs_tsm: CONFIGFS_TSM_REPORT.into(),
            sev_guest: SEV_GUEST_DEVICE.into(),
            tdx_guest: "/dev/tdx_guest".into(),
            virtio_ports_dev: "/dev/virtio-ports".into(),
            virtio_ports_class: "/sys/class/virtio-ports".into(),
            dev: "/dev".into(),
        }
    }
}

impl DetectPaths {
    /// The same layout under `root` (for tests with a fake filesystem).
    pub fn under(root: &Path) -> Self {
        let d = Self::default();
        let re = |p: PathBuf| root.join(p.strip_prefix("/").unwrap_or(&p));
        Self {
            configfs_tsm: re(d.configfs_tsm),
            sev_guest: re(d.sev_guest),
            tdx_guest: re(d.tdx_guest),
            virtio_ports_dev: re(d.virtio_ports_dev),
            virtio_ports_class: re(d.virtio_ports_class),
            dev: re(d.dev),
        }
    }

    /// The sim device node, if the launcher exposed the port.
    #[cfg(feature = "insecure-sim")]
    pub fn sim_device(&self) -> Option<PathBuf> {
        let named = self.virtio_ports_dev.join(SIM_DEVICE_NAME);
        if named.exists() {
            return Some(named);
        }
        // Without udev the /dev/virtio-ports links are missing: find the port by its name.
        let ports = fs::read_dir(&self.virtio_ports_class).ok()?;
        for port in ports.flatten() {
            let Ok(name) = fs::read_to_string(port.path().join("name")) else {
                continue;
            };
            if name.trim() == SIM_DEVICE_NAME {
                let node = self.dev.join(port.file_name());
                if node.exists() {
                    return Some(node);
                }
            }
        }
        None
    }
}

/// Why no attester could be chosen.
#[derive(Debug, Error)]
pub enum DetectError {
    /// Nothing that produces evidence is visible.
    #[error("no tee found (no sev-guest, tdx_guest or tsuba.teesim device)")]
    NoTee,
    /// More than one is visible; configuration must name one.
    #[error("more than one tee found ({0:?}); name the attester in the configuration")]
    Ambiguous(Vec<&'static str>),
    /// The sim device is not there, though configuration names a simulated attester.
    #[error("the tsuba.teesim device is not present")]
    NoSimDevice,
    /// The sim device simulates the other TEE.
    #[cfg(feature = "insecure-sim")]
    #[error("the sim device simulates {found:?}, configuration asks for {wanted}")]
    SimMismatch {
        /// What the device simulates.
        found: SimTee,
        /// What was asked for.
        wanted: AttesterKind,
    },
    /// configfs-tsm is needed (TDX) but absent.
    #[error("configfs-tsm is not present at {0}")]
    NoConfigfsTsm(PathBuf),
    /// Talking to the sim device failed.
    #[cfg(feature = "insecure-sim")]
    #[error("sim device")]
    SimDevice(#[from] SimDeviceError),
    /// Configuration names a simulated attester, and this build has none.
    #[error(
        "the {0} attester is not in this build (it needs the insecure-sim feature); a real \
         guest uses snp or tdx"
    )]
    SimulationNotBuilt(AttesterKind),
}

/// Detect which attester this guest has.
pub fn detect(paths: &DetectPaths) -> Result<AttesterKind, DetectError> {
    let mut found = Vec::new();
    if paths.sev_guest.exists() {
        found.push("snp");
    }
    if paths.tdx_guest.exists() {
        found.push("tdx");
    }
    // A build without simulated attesters does not look for the device: it cannot use one.
    #[cfg(feature = "insecure-sim")]
    let sim = paths.sim_device();
    #[cfg(not(feature = "insecure-sim"))]
    let sim: Option<PathBuf> = None;
    if sim.is_some() {
        found.push("sim");
    }
    let kind = match (found.as_slice(), sim) {
        ([], _) => return Err(DetectError::NoTee),
        (["snp"], _) => AttesterKind::Snp,
        (["tdx"], _) => AttesterKind::Tdx,
        #[cfg(feature = "insecure-sim")]
        (["sim"], Some(path)) => match SimDeviceAttester::open(&path)?.tee() {
            SimTee::Snp => AttesterKind::SimSnp,
            SimTee::Tdx => AttesterKind::SimTdx,
        },
        _ => return Err(DetectError::Ambiguous(found)),
    };
    info!(attester = %kind, "detected attester");
    Ok(kind)
}

/// Open the attester of the given kind.
pub fn open_attester(
    kind: AttesterKind,
    paths: &DetectPaths,
) -> Result<Box<dyn Attester>, DetectError> {
    match kind {
        AttesterKind::Snp => Ok(Box::new(system_snp(paths.configfs_tsm.clone()))),
        AttesterKind::Tdx => {
            let tsm = ConfigfsTsm::new(paths.configfs_tsm.clone());
            if !tsm.is_present() {
                return Err(DetectError::NoConfigfsTsm(paths.configfs_tsm.clone()));
            }
            Ok(Box::new(TdxAttester::new(Box::new(tsm))))
        }
        #[cfg(not(feature = "insecure-sim"))]
        AttesterKind::SimSnp | AttesterKind::SimTdx => Err(DetectError::SimulationNotBuilt(kind)),
        #[cfg(feature = "insecure-sim")]
        AttesterKind::SimSnp | AttesterKind::SimTdx => {
            let path = paths.sim_device().ok_or(DetectError::NoSimDevice)?;
            let attester = SimDeviceAttester::open(&path)?;
            if attester.kind() != kind {
                return Err(DetectError::SimMismatch {
                    found: attester.tee(),
                    wanted: kind,
                });
            }
            Ok(Box::new(attester))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"").unwrap();
    }

    #[test]
    fn nothing_is_an_error_not_the_simulator() {
        let root = tempfile::tempdir().unwrap();
        let paths = DetectPaths::under(root.path());
        assert!(matches!(detect(&paths), Err(DetectError::NoTee)));
        #[cfg(feature = "insecure-sim")]
        assert!(matches!(
            open_attester(AttesterKind::SimSnp, &paths),
            Err(DetectError::NoSimDevice)
        ));
        assert!(matches!(
            open_attester(AttesterKind::Tdx, &paths),
            Err(DetectError::NoConfigfsTsm(_))
        ));
    }

    #[test]
    fn one_real_tee_is_detected() {
        let root = tempfile::tempdir().unwrap();
        let paths = DetectPaths::under(root.path());
        touch(&paths.sev_guest);
        assert_eq!(detect(&paths).unwrap(), AttesterKind::Snp);
        let root = tempfile::tempdir().unwrap();
        let paths = DetectPaths::under(root.path());
        touch(&paths.tdx_guest);
        assert_eq!(detect(&paths).unwrap(), AttesterKind::Tdx);
    }

    /// Without the simulated attesters a sim port is not a TEE: beside SEV it changes nothing,
    /// alone it is "no TEE", and naming a sim attester is refused by name.
    #[cfg(not(feature = "insecure-sim"))]
    #[test]
    fn a_build_without_simulation_ignores_the_sim_device_and_refuses_sim_attesters() {
        let root = tempfile::tempdir().unwrap();
        let paths = DetectPaths::under(root.path());
        touch(&paths.virtio_ports_dev.join("tsuba.teesim"));
        assert!(matches!(detect(&paths), Err(DetectError::NoTee)));
        touch(&paths.sev_guest);
        assert_eq!(detect(&paths).unwrap(), AttesterKind::Snp);
        for kind in [AttesterKind::SimSnp, AttesterKind::SimTdx] {
            let err = open_attester(kind, &paths).err().unwrap();
            assert!(matches!(err, DetectError::SimulationNotBuilt(k) if k == kind));
            assert!(err.to_string().contains("insecure-sim"), "{err}");
        }
    }

    #[cfg(feature = "insecure-sim")]
    #[test]
    fn a_sim_device_beside_a_real_tee_is_ambiguous() {
        let root = tempfile::tempdir().unwrap();
        let paths = DetectPaths::under(root.path());
        touch(&paths.sev_guest);
        touch(&paths.virtio_ports_dev.join(SIM_DEVICE_NAME));
        match detect(&paths) {
            Err(DetectError::Ambiguous(found)) => assert_eq!(found, vec!["snp", "sim"]),
            other => panic!("expected ambiguity, got {other:?}"),
        }
    }

    #[cfg(feature = "insecure-sim")]
    #[test]
    fn the_sim_port_is_found_by_name_or_through_sysfs() {
        let root = tempfile::tempdir().unwrap();
        let paths = DetectPaths::under(root.path());
        assert_eq!(paths.sim_device(), None);
        // Through sysfs: vport1p2 is named tsuba.teesim, vport1p1 something else.
        let class = &paths.virtio_ports_class;
        fs::create_dir_all(class.join("vport1p1")).unwrap();
        fs::write(class.join("vport1p1/name"), "org.qemu.guest_agent.0\n").unwrap();
        fs::create_dir_all(class.join("vport1p2")).unwrap();
        fs::write(class.join("vport1p2/name"), format!("{SIM_DEVICE_NAME}\n")).unwrap();
        assert_eq!(paths.sim_device(), None, "no device node yet");
        touch(&paths.dev.join("vport1p2"));
        assert_eq!(paths.sim_device(), Some(paths.dev.join("vport1p2")));
        // The udev link wins when present.
        let link = paths.virtio_ports_dev.join(SIM_DEVICE_NAME);
        touch(&link);
        assert_eq!(paths.sim_device(), Some(link));
    }
}
