//! The launch configuration: everything that decides what a guest is, and so what it measures to.
//!
//! [`LaunchConfigFile`] is what a user writes (TOML); [`LaunchConfig`] is what the launcher and
//! `tsuba measure` take. Turning one into the other checks every field once, so an invalid
//! configuration cannot reach QEMU. The kernel command line the guest boots with is derived here,
//! in one place, because it is part of the measurement.

use std::fmt;
use std::num::NonZeroU8;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tsuba_policy::{Initdata, InitdataError};

/// Which kind of guest to launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// AMD SEV-SNP on real hardware.
    Snp,
    /// Intel TDX on real hardware.
    Tdx,
    /// Simulated SEV-SNP: an ordinary VM, evidence from tee-sim in the SNP formats.
    SimSnp,
    /// Simulated TDX: an ordinary VM, evidence from tee-sim in the TDX formats.
    SimTdx,
    /// No attestation at all; for debugging only.
    None,
}

impl Mode {
    /// Whether the guest runs in real TEE hardware.
    pub fn is_hardware_tee(self) -> bool {
        matches!(self, Mode::Snp | Mode::Tdx)
    }

    /// Whether the launcher serves tee-sim to the guest.
    pub fn is_simulated(self) -> bool {
        matches!(self, Mode::SimSnp | Mode::SimTdx)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Snp => "snp",
            Mode::Tdx => "tdx",
            Mode::SimSnp => "sim-snp",
            Mode::SimTdx => "sim-tdx",
            Mode::None => "none",
        })
    }
}

/// The hypervisor accelerator requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    /// KVM where the CPU has hardware virtualisation and `/dev/kvm` opens, else TCG.
    #[default]
    Auto,
    /// KVM, or fail.
    Kvm,
    /// QEMU's software emulation.
    Tcg,
}

/// How the agent API reaches the host. Part of the command line, so part of the measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentTransport {
    /// A virtio-serial port, exposed on the host as a Unix socket. Works everywhere.
    #[default]
    Serial,
    /// vsock; needs `/dev/vhost-vsock` on the host.
    Vsock,
}

impl AgentTransport {
    fn cmdline_value(self) -> &'static str {
        match self {
            AgentTransport::Serial => "serial",
            AgentTransport::Vsock => "vsock",
        }
    }
}

/// The guest's network, when the launch asks for one. Off by default: most guests need none, and
/// the network is the host's (untrusted in TEE modes); what the guest fetches over it is checked
/// by the key broker's protocol and by digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkBackend {
    /// QEMU user networking (slirp): no host privileges needed; the guest is 10.0.2.15/24 and
    /// reaches the host's loopback services at 10.0.2.2.
    #[default]
    User,
}

/// A checked `[network]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    /// How the virtio-net device is backed on the host.
    pub backend: NetworkBackend,
}

impl Network {
    /// The guest's static address and route as the agent reads them from the (measured) command
    /// line: QEMU user networking's fixed guest address and gateway.
    fn cmdline_value(self) -> &'static str {
        match self.backend {
            NetworkBackend::User => "10.0.2.15/24,gw=10.0.2.2",
        }
    }
}

/// The `[network]` section of a config file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkFile {
    /// `user` (the default).
    #[serde(default)]
    pub backend: NetworkBackend,
}

/// Guest memory in MiB: at least [`MemoryMib::MIN`], at most [`MemoryMib::MAX`], a multiple of 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemoryMib(u32);

impl MemoryMib {
    /// Smallest guest the agent is built to run in.
    pub const MIN: u32 = 64;
    /// 1 TiB: far beyond any pod, small enough to catch a unit mistake (bytes given as MiB).
    pub const MAX: u32 = 1024 * 1024;

    /// Checks a size in MiB.
    pub fn new(mib: u32) -> Result<Self, ConfigError> {
        if !(Self::MIN..=Self::MAX).contains(&mib) || !mib.is_multiple_of(2) {
            return Err(ConfigError::Memory(mib));
        }
        Ok(MemoryMib(mib))
    }

    /// The size in MiB.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// The firmware images of a launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firmware {
    /// The image QEMU boots.
    pub boot: PathBuf,
    /// The image the launch measurement is computed over. In TEE modes it is the booted one; in
    /// sim modes it is the AmdSev (or TDVF) build that real hardware would measure, while a plain
    /// OVMF boots (the AmdSev build refuses to boot without SEV).
    pub measured: PathBuf,
}

/// A checked launch configuration.
#[derive(Debug, Clone)]
pub struct LaunchConfig {
    /// Kind of guest.
    pub mode: Mode,
    /// Firmware images.
    pub firmware: Firmware,
    /// Guest kernel (bzImage).
    pub kernel: PathBuf,
    /// Guest initrd.
    pub initrd: PathBuf,
    /// Extra kernel command line given by the user (see [`LaunchConfig::kernel_cmdline`]).
    pub extra_cmdline: String,
    /// Number of vCPUs.
    pub vcpus: NonZeroU8,
    /// Guest memory.
    pub memory: MemoryMib,
    /// Initdata document whose digest is bound into the launch (HOST_DATA / MRCONFIGID).
    pub initdata: Option<Initdata>,
    /// Accelerator.
    pub accel: AccelChoice,
    /// Agent transport.
    pub agent_transport: AgentTransport,
    /// vCPU model for SNP guests (QEMU `-cpu` name, e.g. `EPYC-v4`): it is part of the VMSA and
    /// so of the launch digest.
    pub snp_vcpu_type: String,
    /// The guest's network; none when `None`. Part of the command line, so of the measurement.
    pub network: Option<Network>,
}

/// A launch configuration that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A file the launch needs is not there.
    #[error("{what} {path} does not exist or is not a file; check the path in the launch config")]
    MissingFile {
        /// What the file is for.
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// Memory size out of range.
    #[error(
        "guest memory of {0} MiB is not usable: give an even number of MiB from {min} to {max}",
        min = MemoryMib::MIN,
        max = MemoryMib::MAX
    )]
    Memory(u32),
    /// vCPU count of zero.
    #[error("a guest needs at least one vCPU")]
    NoVcpus,
    /// A sim mode without the firmware to measure.
    #[error(
        "mode {0} needs firmware.measured (the AmdSev/TDVF build real hardware would measure); \
         run scripts/setup to build it"
    )]
    NoMeasuredFirmware(Mode),
    /// A TEE mode whose measured and booted firmware differ.
    #[error(
        "mode {0} boots the measured firmware itself: firmware.measured must equal firmware.boot or be unset"
    )]
    MeasuredNotBooted(Mode),
    /// The command line tries to set what the launcher owns.
    #[error("the kernel command line may not set {0:?}: the launcher derives it from the config")]
    ReservedCmdline(String),
    /// The config file could not be read.
    #[error("cannot read launch config {0}")]
    Read(PathBuf, #[source] std::io::Error),
    /// The config file is not valid TOML of the expected shape.
    #[error("launch config {0} is invalid")]
    Parse(PathBuf, #[source] toml::de::Error),
    /// The initdata document is invalid.
    #[error("initdata {0} is invalid")]
    Initdata(PathBuf, #[source] InitdataError),
}

/// The launch configuration as written in a TOML file. Relative paths are relative to the file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchConfigFile {
    /// `snp`, `tdx`, `sim-snp`, `sim-tdx` or `none`.
    pub mode: Mode,
    /// Firmware images.
    pub firmware: FirmwareFile,
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Guest initrd.
    pub initrd: PathBuf,
    /// Extra kernel command line.
    #[serde(default)]
    pub cmdline: String,
    /// vCPUs (default 1).
    #[serde(default = "default_vcpus")]
    pub vcpus: u8,
    /// Memory in MiB (default 512).
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u32,
    /// Path of an initdata TOML document.
    #[serde(default)]
    pub initdata: Option<PathBuf>,
    /// `auto`, `kvm` or `tcg`.
    #[serde(default)]
    pub accel: AccelChoice,
    /// `serial` or `vsock`.
    #[serde(default)]
    pub agent_transport: AgentTransport,
    /// SNP vCPU model (default `EPYC-v4`).
    #[serde(default = "default_snp_vcpu_type")]
    pub snp_vcpu_type: String,
    /// A virtio-net device for the guest (none without this section).
    #[serde(default)]
    pub network: Option<NetworkFile>,
}

/// Firmware paths in a config file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FirmwareFile {
    /// The image QEMU boots.
    pub boot: PathBuf,
    /// The image measured, when it differs (sim modes).
    #[serde(default)]
    pub measured: Option<PathBuf>,
}

fn default_vcpus() -> u8 {
    1
}
fn default_memory_mib() -> u32 {
    512
}
fn default_snp_vcpu_type() -> String {
    "EPYC-v4".to_owned()
}

/// Command-line keys the launcher owns; a user setting them would fork the measurement.
const RESERVED_CMDLINE_KEYS: &[&str] = &[
    "console",
    "panic",
    "tsuba.agent.transport",
    "tsuba.agent.net",
];

impl LaunchConfigFile {
    /// Reads a config file.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_owned(), e))?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse(path.to_owned(), e))
    }

    /// Checks every field and resolves relative paths against `base`.
    pub fn into_config(self, base: &Path) -> Result<LaunchConfig, ConfigError> {
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let boot = existing_file("firmware.boot", resolve(self.firmware.boot))?;
        let measured = match (self.mode.is_simulated(), self.firmware.measured) {
            (true, Some(m)) => existing_file("firmware.measured", resolve(m))?,
            (true, None) => return Err(ConfigError::NoMeasuredFirmware(self.mode)),
            (false, Some(m)) if resolve(m.clone()) != boot => {
                return Err(ConfigError::MeasuredNotBooted(self.mode));
            }
            (false, _) => boot.clone(),
        };
        let initdata = match self.initdata {
            None => None,
            Some(path) => {
                let path = resolve(path);
                let bytes = std::fs::read(&path).map_err(|e| ConfigError::Read(path.clone(), e))?;
                Some(Initdata::from_bytes(&bytes).map_err(|e| ConfigError::Initdata(path, e))?)
            }
        };
        for word in self.cmdline.split_ascii_whitespace() {
            let key = word.split_once('=').map_or(word, |(k, _)| k);
            if RESERVED_CMDLINE_KEYS.contains(&key) {
                return Err(ConfigError::ReservedCmdline(key.to_owned()));
            }
        }
        Ok(LaunchConfig {
            mode: self.mode,
            firmware: Firmware { boot, measured },
            kernel: existing_file("kernel", resolve(self.kernel))?,
            initrd: existing_file("initrd", resolve(self.initrd))?,
            extra_cmdline: self.cmdline,
            vcpus: NonZeroU8::new(self.vcpus).ok_or(ConfigError::NoVcpus)?,
            memory: MemoryMib::new(self.memory_mib)?,
            initdata,
            accel: self.accel,
            agent_transport: self.agent_transport,
            snp_vcpu_type: self.snp_vcpu_type,
            network: self.network.map(|n| Network { backend: n.backend }),
        })
    }
}

fn existing_file(what: &'static str, path: PathBuf) -> Result<PathBuf, ConfigError> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(ConfigError::MissingFile { what, path })
    }
}

impl LaunchConfig {
    /// Reads and checks a TOML launch config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let base = path.parent().unwrap_or(Path::new("."));
        LaunchConfigFile::read(path)?.into_config(base)
    }

    /// The exact kernel command line the guest boots with, and that is measured: the launcher's
    /// own keys first, then the user's.
    pub fn kernel_cmdline(&self) -> String {
        let mut cmdline = format!(
            "console=ttyS0 panic=-1 tsuba.agent.transport={}",
            self.agent_transport.cmdline_value()
        );
        if let Some(network) = self.network {
            cmdline.push_str(" tsuba.agent.net=");
            cmdline.push_str(network.cmdline_value());
        }
        if !self.extra_cmdline.trim().is_empty() {
            cmdline.push(' ');
            cmdline.push_str(self.extra_cmdline.trim());
        }
        cmdline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            for f in ["OVMF.fd", "AMDSEV.fd", "vmlinuz", "initrd.img"] {
                std::fs::write(dir.path().join(f), b"x").unwrap();
            }
            Fixture { dir }
        }

        fn parse(&self, toml_text: &str) -> Result<LaunchConfig, ConfigError> {
            let file: LaunchConfigFile =
                toml::from_str(toml_text).map_err(|e| ConfigError::Parse("t".into(), e))?;
            file.into_config(self.dir.path())
        }
    }

    const SIM: &str = r#"
        mode = "sim-snp"
        kernel = "vmlinuz"
        initrd = "initrd.img"
        [firmware]
        boot = "OVMF.fd"
        measured = "AMDSEV.fd"
    "#;

    #[test]
    fn a_sim_config_resolves_paths_and_defaults() {
        let fx = Fixture::new();
        let config = fx.parse(SIM).unwrap();
        assert_eq!(config.mode, Mode::SimSnp);
        assert_eq!(config.firmware.boot, fx.dir.path().join("OVMF.fd"));
        assert_eq!(config.firmware.measured, fx.dir.path().join("AMDSEV.fd"));
        assert_eq!(config.vcpus.get(), 1);
        assert_eq!(config.memory.get(), 512);
        assert_eq!(config.accel, AccelChoice::Auto);
        assert_eq!(
            config.kernel_cmdline(),
            "console=ttyS0 panic=-1 tsuba.agent.transport=serial"
        );
    }

    #[test]
    fn missing_firmware_is_named() {
        let fx = Fixture::new();
        let err = fx.parse(&SIM.replace("OVMF.fd", "nope.fd")).unwrap_err();
        match &err {
            ConfigError::MissingFile { what, path } => {
                assert_eq!(*what, "firmware.boot");
                assert!(path.ends_with("nope.fd"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("nope.fd"));
    }

    #[test]
    fn sim_mode_without_measured_firmware_is_refused() {
        let fx = Fixture::new();
        let err = fx
            .parse(&SIM.replace("measured = \"AMDSEV.fd\"", ""))
            .unwrap_err();
        assert!(
            matches!(err, ConfigError::NoMeasuredFirmware(Mode::SimSnp)),
            "{err}"
        );
    }

    #[test]
    fn hardware_mode_must_measure_what_it_boots() {
        let fx = Fixture::new();
        let err = fx.parse(&SIM.replace("sim-snp", "snp")).unwrap_err();
        assert!(
            matches!(err, ConfigError::MeasuredNotBooted(Mode::Snp)),
            "{err}"
        );
        let config = fx
            .parse(
                &SIM.replace("sim-snp", "snp")
                    .replace("measured = \"AMDSEV.fd\"", ""),
            )
            .unwrap();
        assert_eq!(config.firmware.measured, config.firmware.boot);
    }

    #[test]
    fn bad_memory_sizes_are_refused() {
        let fx = Fixture::new();
        for bad in [0, 32, 63, 129, 2 * 1024 * 1024] {
            let err = fx.parse(&format!("memory_mib = {bad}\n{SIM}")).unwrap_err();
            assert!(
                matches!(err, ConfigError::Memory(m) if m == bad),
                "{bad}: {err}"
            );
        }
        assert_eq!(
            fx.parse(&format!("memory_mib = 128\n{SIM}"))
                .unwrap()
                .memory
                .get(),
            128
        );
    }

    #[test]
    fn unknown_mode_and_unknown_keys_are_refused() {
        let fx = Fixture::new();
        let err = fx.parse(&SIM.replace("sim-snp", "sev-es")).unwrap_err();
        assert!(
            err.source_text().contains("unknown variant `sev-es`"),
            "{err:?}"
        );
        let err = fx.parse(&format!("vcpu = 2\n{SIM}")).unwrap_err();
        assert!(
            err.source_text().contains("unknown field `vcpu`"),
            "{err:?}"
        );
    }

    #[test]
    fn zero_vcpus_is_refused() {
        let fx = Fixture::new();
        let err = fx.parse(&format!("vcpus = 0\n{SIM}")).unwrap_err();
        assert!(matches!(err, ConfigError::NoVcpus));
    }

    #[test]
    fn the_launcher_owns_console_panic_and_transport() {
        let fx = Fixture::new();
        for key in ["console=hvc0", "panic=0", "tsuba.agent.transport=vsock"] {
            let err = fx
                .parse(&format!("cmdline = \"quiet {key}\"\n{SIM}"))
                .unwrap_err();
            assert!(
                matches!(err, ConfigError::ReservedCmdline(_)),
                "{key}: {err}"
            );
        }
        let config = fx
            .parse(&format!(
                "cmdline = \"quiet\"\nagent_transport = \"vsock\"\n{SIM}"
            ))
            .unwrap();
        assert_eq!(
            config.kernel_cmdline(),
            "console=ttyS0 panic=-1 tsuba.agent.transport=vsock quiet"
        );
    }

    #[test]
    fn network_is_off_unless_asked_for_and_then_on_the_measured_line() {
        let fx = Fixture::new();
        assert_eq!(fx.parse(SIM).unwrap().network, None);
        let config = fx
            .parse(&format!("cmdline = \"quiet\"\n{SIM}\n[network]\n"))
            .unwrap();
        assert_eq!(
            config.network,
            Some(Network {
                backend: NetworkBackend::User
            })
        );
        assert_eq!(
            config.kernel_cmdline(),
            "console=ttyS0 panic=-1 tsuba.agent.transport=serial \
             tsuba.agent.net=10.0.2.15/24,gw=10.0.2.2 quiet"
        );
        let err = fx
            .parse(&format!("{SIM}\n[network]\nbackend = \"tap\"\n"))
            .unwrap_err();
        assert!(
            err.source_text().contains("unknown variant `tap`"),
            "{err:?}"
        );
        let err = fx
            .parse(&format!("{SIM}\n[network]\nrestrict = false\n"))
            .unwrap_err();
        assert!(
            err.source_text().contains("unknown field `restrict`"),
            "{err:?}"
        );
        // The user may not set the address themselves: the launcher derives it.
        let err = fx
            .parse(&format!("cmdline = \"tsuba.agent.net=10.9.9.9/8\"\n{SIM}"))
            .unwrap_err();
        assert!(matches!(err, ConfigError::ReservedCmdline(k) if k == "tsuba.agent.net"));
    }

    impl ConfigError {
        fn source_text(&self) -> String {
            match self {
                ConfigError::Parse(_, e) => e.to_string(),
                other => other.to_string(),
            }
        }
    }
}
