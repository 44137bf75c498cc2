//! The runtime configuration: one TOML file that says how the shim boots a pod's VM.
//!
//! It is read from the path containerd passes in the runtime options (`ConfigPath`, as Kata
//! does), else from [`DEFAULT_CONFIG_PATH`]. A pod may change a few values through
//! `io.tsuba.config.*` annotations ([`crate::annotations`]); what is measured (firmware, kernel,
//! initrd, command line, vCPUs) only when the file sets `allow_measured_overrides`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;
use tsuba_vmm_tee::{ConfigError as LaunchConfigError, LaunchConfig, LaunchConfigFile};

/// Where the configuration is read from when containerd passes no `ConfigPath`.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/tsuba/runtime.toml";
/// Where per-sandbox state goes by default (`<state_root>/<sandbox id>`).
pub const DEFAULT_STATE_ROOT: &str = "/run/tsuba";
/// Largest configuration file read.
const MAX_CONFIG_FILE: u64 = 256 * 1024;

/// Timeouts, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// From QEMU's start to the agent's hello (default 120).
    #[serde(default = "default_agent_ready")]
    pub agent_ready_secs: u32,
    /// A task create: attestation, pull, decrypt and unpack in the guest (default 300).
    #[serde(default = "default_create")]
    pub create_secs: u32,
    /// A guest whose agent does not answer a health check within this is killed (default 30).
    #[serde(default = "default_unresponsive")]
    pub unresponsive_secs: u32,
    /// Time between two health checks (default 10).
    #[serde(default = "default_health_interval")]
    pub health_interval_secs: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            agent_ready_secs: default_agent_ready(),
            create_secs: default_create(),
            unresponsive_secs: default_unresponsive(),
            health_interval_secs: default_health_interval(),
        }
    }
}

fn default_agent_ready() -> u32 {
    120
}
fn default_create() -> u32 {
    300
}
fn default_unresponsive() -> u32 {
    30
}
fn default_health_interval() -> u32 {
    10
}

impl Timeouts {
    /// Agent-ready timeout.
    pub fn agent_ready(&self) -> Duration {
        Duration::from_secs(self.agent_ready_secs.into())
    }
    /// Create timeout.
    pub fn create(&self) -> Duration {
        Duration::from_secs(self.create_secs.into())
    }
    /// Unresponsive-guest timeout.
    pub fn unresponsive(&self) -> Duration {
        Duration::from_secs(self.unresponsive_secs.into())
    }
    /// Health-check interval.
    pub fn health_interval(&self) -> Duration {
        Duration::from_secs(self.health_interval_secs.max(1).into())
    }
}

/// The runtime configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfigFile {
    /// The guest VM: the same table as a `tsuba` launch config (mode, firmware, kernel, initrd,
    /// cmdline, vcpus, memory_mib, initdata, accel, agent_transport, network).
    pub vm: LaunchConfigFile,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Parent of the per-sandbox state folders (default `/run/tsuba`).
    #[serde(default)]
    pub state_root: Option<PathBuf>,
    /// The QEMU binary (default `qemu-system-x86_64` on `PATH`).
    #[serde(default)]
    pub qemu: Option<PathBuf>,
    /// tee-sim's state folder (sim modes; default as `tsuba`).
    #[serde(default)]
    pub tee_sim_state: Option<PathBuf>,
    /// Whether `io.tsuba.config.*` annotations may change what is measured (firmware, kernel,
    /// initrd, command line, vCPUs). Off by default: the host's pod spec then cannot change what
    /// the guest measures to.
    #[serde(default)]
    pub allow_measured_overrides: bool,
}

/// The runtime configuration could not be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error(
        "cannot read the tsuba runtime config {0}; create it (docs/shim.md) or pass ConfigPath"
    )]
    Read(PathBuf, #[source] std::io::Error),
    /// The file is too large to be a configuration.
    #[error("the tsuba runtime config {0} is larger than {MAX_CONFIG_FILE} bytes")]
    TooLarge(PathBuf),
    /// The file is not TOML of the expected shape.
    #[error("the tsuba runtime config {0} is invalid")]
    Parse(PathBuf, #[source] toml::de::Error),
    /// The `[vm]` table is invalid.
    #[error("the [vm] table of the tsuba runtime config {0} is invalid")]
    Vm(PathBuf, #[source] Box<LaunchConfigError>),
}

/// A checked runtime configuration.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The file it came from.
    pub path: PathBuf,
    /// What the VM is (before annotation overrides).
    pub file: RuntimeConfigFile,
}

impl RuntimeConfig {
    /// Reads `path` (bounded) and checks it.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        use std::io::Read as _;
        let file = std::fs::File::open(path).map_err(|e| ConfigError::Read(path.to_owned(), e))?;
        let mut text = String::new();
        file.take(MAX_CONFIG_FILE + 1)
            .read_to_string(&mut text)
            .map_err(|e| ConfigError::Read(path.to_owned(), e))?;
        if text.len() as u64 > MAX_CONFIG_FILE {
            return Err(ConfigError::TooLarge(path.to_owned()));
        }
        Self::parse(path, &text)
    }

    /// Parses `text` as if read from `path`, and checks the launch table.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let file: RuntimeConfigFile =
            toml::from_str(text).map_err(|e| ConfigError::Parse(path.to_owned(), e))?;
        let config = RuntimeConfig {
            path: path.to_owned(),
            file,
        };
        // Check the launch table now, so a broken file is reported at create, naming it.
        config.launch_config(&config.file.vm)?;
        Ok(config)
    }

    /// Where relative paths in the file are resolved from.
    fn base(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("/"))
    }

    /// The checked launch config for `vm` (the file's table, possibly overridden). The key
    /// broker is not here: it is per pod, in the initdata (`vm.initdata`, or the pod's
    /// annotation), whose digest the launch binds.
    pub fn launch_config(&self, vm: &LaunchConfigFile) -> Result<LaunchConfig, ConfigError> {
        vm.clone()
            .into_config(self.base())
            .map_err(|e| ConfigError::Vm(self.path.clone(), Box::new(e)))
    }

    /// The state root.
    pub fn state_root(&self) -> PathBuf {
        self.file
            .state_root
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_ROOT))
    }
}

/// The config path containerd passed in its runtime options, if any.
///
/// containerd 1.6 passes `runtimeoptions.v1.Options` (`ctr run --runtime-config-path`, and CRI's
/// `ConfigPath` option for non-runc runtimes): field 2 is `config_path`. Any other options type
/// (or none) means the default path.
pub fn config_path_from_options(type_url: &str, value: &[u8]) -> Result<Option<PathBuf>, String> {
    if type_url.is_empty() && value.is_empty() {
        return Ok(None);
    }
    let name = type_url.rsplit('/').next().unwrap_or(type_url);
    if name != "runtimeoptions.v1.Options" {
        return Err(format!(
            "runtime options of type {type_url:?} are not understood by tsuba: \
             give runtimeoptions.v1.Options (ConfigPath) or none"
        ));
    }
    let mut input = protobuf::CodedInputStream::from_bytes(value);
    let mut path = None;
    loop {
        let tag = match input.read_raw_tag_or_eof() {
            Ok(Some(tag)) => tag,
            Ok(None) => break,
            Err(e) => return Err(format!("runtime options are malformed: {e}")),
        };
        let (field, wire) = (tag >> 3, tag & 7);
        if field == 2 && wire == 2 {
            let p = input
                .read_string()
                .map_err(|e| format!("runtime options are malformed: {e}"))?;
            path = Some(p);
        } else {
            let wire_type = protobuf::rt::WireType::new(wire)
                .ok_or_else(|| format!("runtime options are malformed: wire type {wire}"))?;
            input
                .skip_field(wire_type)
                .map_err(|e| format!("runtime options are malformed: {e}"))?;
        }
    }
    Ok(path.filter(|p| !p.is_empty()).map(PathBuf::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in ["OVMF.fd", "AMDSEV.fd", "vmlinuz", "initrd.img"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        dir
    }

    pub(crate) const GOOD: &str = r#"
        state_root = "/tmp/tsuba-state"
        [vm]
        mode = "sim-snp"
        kernel = "vmlinuz"
        initrd = "initrd.img"
        cmdline = "quiet"
        memory_mib = 512
        [vm.firmware]
        boot = "OVMF.fd"
        measured = "AMDSEV.fd"
        [timeouts]
        agent_ready_secs = 60
    "#;

    #[test]
    fn parses_a_full_config() {
        let dir = fixture();
        let c = RuntimeConfig::parse(&dir.path().join("runtime.toml"), GOOD).unwrap();
        assert_eq!(c.file.timeouts.agent_ready_secs, 60);
        assert_eq!(c.file.timeouts.create_secs, 300);
        assert_eq!(c.state_root(), PathBuf::from("/tmp/tsuba-state"));
        let launch = c.launch_config(&c.file.vm).unwrap();
        assert_eq!(launch.kernel, dir.path().join("vmlinuz"));
        assert_eq!(launch.extra_cmdline, "quiet");
    }

    #[test]
    fn unknown_keys_are_refused_naming_them() {
        let dir = fixture();
        let text = GOOD.replace("[timeouts]", "[timeouts]\nagent_ready = 5");
        let err = RuntimeConfig::parse(&dir.path().join("r.toml"), &text).unwrap_err();
        let ConfigError::Parse(_, source) = &err else {
            panic!("{err:?}")
        };
        assert!(source.to_string().contains("agent_ready"), "{source}");
    }

    #[test]
    fn a_missing_kernel_names_the_file_and_the_config() {
        let dir = fixture();
        std::fs::remove_file(dir.path().join("vmlinuz")).unwrap();
        let path = dir.path().join("r.toml");
        let err = RuntimeConfig::parse(&path, GOOD).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Vm(p, e) if *p == path
                && matches!(**e, LaunchConfigError::MissingFile { what: "kernel", .. })),
            "{err:?}"
        );
    }

    #[test]
    fn a_broker_table_is_refused_it_belongs_in_initdata() {
        let dir = fixture();
        let text = format!("{GOOD}\n[broker]\nurl = \"https://10.0.2.2:8443\"\n");
        let err = RuntimeConfig::parse(&dir.path().join("r.toml"), &text).unwrap_err();
        assert!(matches!(err, ConfigError::Parse(..)), "{err:?}");
    }

    #[test]
    fn an_oversized_file_is_refused() {
        let dir = fixture();
        let path = dir.path().join("r.toml");
        let mut text = GOOD.to_owned();
        text.push_str(&"#".repeat(usize::try_from(MAX_CONFIG_FILE).unwrap()));
        std::fs::write(&path, text).unwrap();
        let err = RuntimeConfig::read(&path).unwrap_err();
        assert!(matches!(err, ConfigError::TooLarge(_)), "{err:?}");
    }

    #[test]
    fn runtime_options_give_the_config_path() {
        // runtimeoptions.v1.Options { type_url: "x" (field 1), config_path: "/etc/t.toml" (2) }.
        let mut v = vec![0x0a, 1, b'x', 0x12, 11];
        v.extend_from_slice(b"/etc/t.toml");
        let got = config_path_from_options("runtimeoptions.v1.Options", &v).unwrap();
        assert_eq!(got, Some(PathBuf::from("/etc/t.toml")));
        assert_eq!(config_path_from_options("", &[]).unwrap(), None);
        // Truncated: length says 11, 3 bytes follow.
        let err = config_path_from_options("runtimeoptions.v1.Options", &v[..8]).unwrap_err();
        assert!(err.starts_with("runtime options are malformed"), "{err}");
        let err = config_path_from_options("containerd.runc.v1.Options", &v).unwrap_err();
        assert!(err.contains("containerd.runc.v1.Options"), "{err}");
    }
}
