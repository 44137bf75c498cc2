//! The OCI runtime spec from the host, checked and turned into what the runner does.
//!
//! The spec is untrusted host input. It is parsed into the subset of the OCI runtime spec the
//! runner honours; every member that could widen the container's reach beyond its own rootfs,
//! namespaces and cgroup is refused by name (bind mounts, host devices, namespaces joined by
//! path, user namespaces, capabilities beyond the default set, hooks, sysctls...); a seccomp
//! profile is checked here and applied by the runner (seccomp.rs). The
//! rule is documented in docs/guest.md ("What the agent refuses in a spec").

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;
use tsuba_protocols::agent::MAX_OCI_SPEC;

/// Most mounts, masked or read-only paths, rlimits, environment entries or arguments a spec may
/// list.
pub(crate) const MAX_LIST: usize = 256;
/// Most environment entries.
pub(crate) const MAX_ENV: usize = 4096;
/// Longest path in a spec.
const MAX_PATH: usize = 4096;
/// Longest hostname (the kernel's limit).
const MAX_HOSTNAME: usize = 64;

/// The capabilities a container may hold: containerd's and Docker's default set. Anything
/// else (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_SYS_PTRACE, CAP_SYS_MODULE...) is a privileged
/// request and refused. CAP_MKNOD is harmless here: every file system the container can write
/// is mounted nodev.
pub(crate) const ALLOWED_CAPABILITIES: &[&str] = &tsuba_policy::containerd::CAPABILITIES;

/// The device nodes every container gets, bound from the guest's own /dev (OCI's default set).
pub(crate) const DEFAULT_DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

/// A spec, or a process of an exec, that the agent refuses.
#[derive(Debug, Error)]
pub enum SpecError {
    /// Larger than the protocol allows.
    #[error("the OCI spec is {0} bytes, more than the {MAX_OCI_SPEC} allowed")]
    TooLarge(usize),
    /// Not JSON, or members of the wrong type.
    #[error("the OCI spec does not parse")]
    Json(#[source] serde_json::Error),
    /// A member the agent refuses, named.
    #[error("refused: {0}")]
    Refused(String),
    /// A value out of bounds or malformed, named.
    #[error("invalid: {0}")]
    Invalid(String),
}

fn refused(what: impl Into<String>) -> SpecError {
    SpecError::Refused(what.into())
}

fn invalid(what: impl Into<String>) -> SpecError {
    SpecError::Invalid(what.into())
}

// ---- the parsed subset of the OCI runtime spec ----

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpec {
    #[serde(default)]
    oci_version: String,
    process: Option<RawProcess>,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    root: Option<RawRoot>,
    #[serde(default)]
    mounts: Vec<RawMount>,
    #[serde(default)]
    hooks: Option<Value>,
    #[serde(default)]
    linux: Option<RawLinux>,
}

#[derive(Debug, Default, Deserialize)]
struct RawRoot {
    #[serde(default)]
    readonly: bool,
}

/// The OCI `process` object (also the body of an exec).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawProcess {
    #[serde(default)]
    terminal: bool,
    #[serde(default)]
    user: RawUser,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    cwd: String,
    #[serde(default)]
    capabilities: Option<RawCapabilities>,
    #[serde(default)]
    rlimits: Vec<RawRlimit>,
    #[serde(default)]
    no_new_privileges: bool,
    #[serde(default)]
    command_line: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawUser {
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
    #[serde(default)]
    umask: Option<u32>,
    #[serde(default)]
    additional_gids: Vec<u32>,
}

#[derive(Debug, Default, Deserialize)]
struct RawCapabilities {
    #[serde(default)]
    bounding: Vec<String>,
    #[serde(default)]
    effective: Vec<String>,
    #[serde(default)]
    inheritable: Vec<String>,
    #[serde(default)]
    permitted: Vec<String>,
    #[serde(default)]
    ambient: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct RawRlimit {
    #[serde(rename = "type")]
    kind: String,
    hard: u64,
    soft: u64,
}

#[derive(Debug, Deserialize)]
struct RawMount {
    destination: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    options: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLinux {
    #[serde(default)]
    namespaces: Vec<RawNamespace>,
    #[serde(default)]
    devices: Vec<RawDevice>,
    #[serde(default)]
    resources: Option<RawResources>,
    #[serde(default)]
    uid_mappings: Vec<Value>,
    #[serde(default)]
    gid_mappings: Vec<Value>,
    #[serde(default)]
    sysctl: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    seccomp: Option<Value>,
    #[serde(default)]
    masked_paths: Vec<String>,
    #[serde(default)]
    readonly_paths: Vec<String>,
    #[serde(default)]
    intel_rdt: Option<Value>,
    #[serde(default)]
    personality: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct RawNamespace {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawDevice {
    path: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawResources {
    #[serde(default)]
    memory: Option<RawMemory>,
    #[serde(default)]
    cpu: Option<RawCpu>,
    #[serde(default)]
    pids: Option<RawPids>,
    #[serde(default)]
    unified: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawMemory {
    #[serde(default)]
    limit: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
struct RawCpu {
    #[serde(default)]
    shares: Option<u64>,
    #[serde(default)]
    quota: Option<i64>,
    #[serde(default)]
    period: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct RawPids {
    #[serde(default)]
    limit: i64,
}

// ---- what the runner does ----

/// Namespaces a container gets (mount and PID always; the network is the pod's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Namespaces {
    /// A UTS namespace of its own (the spec's hostname).
    pub uts: bool,
    /// An IPC namespace of its own.
    pub ipc: bool,
    /// A cgroup namespace rooted at its cgroup.
    pub cgroup: bool,
}

/// A file system mounted in the container, of a type the guest makes itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MountPlan {
    /// Absolute, normal path inside the container.
    pub destination: PathBuf,
    /// One of proc, sysfs, tmpfs, devpts, mqueue, cgroup2.
    pub fstype: String,
    /// Mount flags (MS_*) as bits.
    pub flags: u64,
    /// Data options (mode=, size=...).
    pub data: String,
}

/// Capability sets by name (`CAP_*`), all within [`ALLOWED_CAPABILITIES`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CapabilitySets {
    /// Bounding set.
    pub bounding: BTreeSet<String>,
    /// Effective set.
    pub effective: BTreeSet<String>,
    /// Inheritable set.
    pub inheritable: BTreeSet<String>,
    /// Permitted set.
    pub permitted: BTreeSet<String>,
    /// Ambient set.
    pub ambient: BTreeSet<String>,
}

/// A resource limit by its `RLIMIT_*` name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Rlimit {
    /// `RLIMIT_NOFILE`...
    pub kind: String,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// The program a container or exec runs, and as whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProcessPlan {
    /// Argument vector; may be empty only before the image defaults are applied.
    pub args: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    /// Working directory inside the container (absolute); empty before image defaults.
    pub cwd: String,
    /// User ID.
    pub uid: u32,
    /// Group ID.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// File mode creation mask.
    pub umask: Option<u32>,
    /// With a terminal (a pty) instead of pipes.
    pub terminal: bool,
    /// Capabilities.
    pub capabilities: CapabilitySets,
    /// Resource limits.
    pub rlimits: Vec<Rlimit>,
    /// PR_SET_NO_NEW_PRIVS.
    pub no_new_privileges: bool,
    /// Whether the spec named the user (else the image's user may apply).
    pub user_from_spec: bool,
}

/// cgroup v2 limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    /// memory.max in bytes.
    pub memory_max: Option<u64>,
    /// cpu.max: quota and period in microseconds.
    pub cpu_max: Option<(u64, u64)>,
    /// cpu.weight (1..=10000), from the spec's shares.
    pub cpu_weight: Option<u64>,
    /// pids.max.
    pub pids_max: Option<u64>,
}

/// A checked container spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContainerPlan {
    /// The init process; `None` (or empty args) means the image config decides.
    pub process: Option<ProcessPlan>,
    /// Hostname, with its own UTS namespace.
    pub hostname: Option<String>,
    /// Mounts, in spec order.
    pub mounts: Vec<MountPlan>,
    /// The namespaces beyond mount and PID.
    pub namespaces: Namespaces,
    /// Mount the root read-only.
    pub readonly_root: bool,
    /// Paths hidden from the container.
    pub masked_paths: Vec<PathBuf>,
    /// Paths made read-only.
    pub readonly_paths: Vec<PathBuf>,
    /// cgroup limits.
    pub limits: Limits,
    /// The seccomp profile every process of the container runs under.
    pub seccomp: Option<super::seccomp::SeccompPlan>,
}

/// Parses and checks a container's OCI spec.
pub(crate) fn parse_container_spec(json: &[u8]) -> Result<ContainerPlan, SpecError> {
    if json.len() > MAX_OCI_SPEC {
        return Err(SpecError::TooLarge(json.len()));
    }
    let raw: RawSpec = serde_json::from_slice(json).map_err(SpecError::Json)?;
    if !raw.oci_version.starts_with("1.") {
        return Err(invalid(format!(
            "ociVersion {:?}: only 1.x specs are understood",
            bounded(&raw.oci_version)
        )));
    }
    if raw.hooks.as_ref().is_some_and(|h| !is_empty_value(h)) {
        return Err(refused(
            "hooks (a runtime hook would run a program of the host's choosing in the guest)",
        ));
    }
    let linux = raw.linux.unwrap_or_default();
    let namespaces = check_namespaces(&linux.namespaces)?;
    check_linux_extras(&linux)?;
    let hostname = match raw.hostname {
        Some(h) if !h.is_empty() => {
            if h.len() > MAX_HOSTNAME || !h.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid("hostname: longer than 64 bytes or not printable"));
            }
            if !namespaces.uts {
                return Err(refused(
                    "hostname without a uts namespace (it would rename the guest)",
                ));
            }
            Some(h)
        }
        _ => None,
    };
    if raw.mounts.len() > MAX_LIST {
        return Err(invalid(format!("more than {MAX_LIST} mounts")));
    }
    let mounts = raw
        .mounts
        .iter()
        .map(check_mount)
        .collect::<Result<Vec<_>, _>>()?;
    let masked_paths = check_paths("maskedPaths", &linux.masked_paths)?;
    let readonly_paths = check_paths("readonlyPaths", &linux.readonly_paths)?;
    let limits = check_resources(linux.resources.as_ref())?;
    let seccomp = match &linux.seccomp {
        Some(profile) if !profile.is_null() => {
            let plan = super::seccomp::parse(profile).map_err(invalid)?;
            // Compiled here too, so that a profile the kernel could not take fails the create.
            super::seccomp::compile(&plan).map_err(invalid)?;
            Some(plan)
        }
        _ => None,
    };
    let process = raw.process.map(|p| check_process(p, true)).transpose()?;
    Ok(ContainerPlan {
        process,
        hostname,
        mounts,
        namespaces,
        readonly_root: raw.root.is_some_and(|r| r.readonly),
        masked_paths,
        readonly_paths,
        limits,
        seccomp,
    })
}

/// Parses and checks the OCI `process` of an exec; its args must not be empty.
pub(crate) fn parse_exec_process(json: &[u8]) -> Result<ProcessPlan, SpecError> {
    if json.len() > MAX_OCI_SPEC {
        return Err(SpecError::TooLarge(json.len()));
    }
    let raw: RawProcess = serde_json::from_slice(json).map_err(SpecError::Json)?;
    let plan = check_process(raw, false)?;
    if plan.args.is_empty() {
        return Err(invalid("process.args: an exec needs a program"));
    }
    Ok(plan)
}

fn is_empty_value(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => map.values().all(is_empty_value),
        Value::Array(list) => list.is_empty(),
        _ => false,
    }
}

/// At most 100 characters of a host-chosen string, for error messages.
fn bounded(text: &str) -> String {
    text.chars().take(100).collect()
}

fn check_namespaces(list: &[RawNamespace]) -> Result<Namespaces, SpecError> {
    if list.len() > 16 {
        return Err(invalid("more than 16 namespaces"));
    }
    let mut seen = BTreeSet::new();
    let mut ns = Namespaces {
        uts: false,
        ipc: false,
        cgroup: false,
    };
    for entry in list {
        let kind = entry.kind.as_str();
        if !seen.insert(kind) {
            return Err(invalid(format!(
                "namespace {:?} listed twice",
                bounded(kind)
            )));
        }
        // The network is the pod's: a network entry (a host netns path means nothing in the
        // guest) is not honoured, as in Kata; every container sees the pod's interfaces.
        if kind == "network" {
            continue;
        }
        if let Some(path) = &entry.path
            && !path.is_empty()
        {
            return Err(refused(format!(
                "namespace {kind} joins the existing namespace at {:?}",
                bounded(path)
            )));
        }
        match kind {
            "pid" | "mount" => {}
            "uts" => ns.uts = true,
            "ipc" => ns.ipc = true,
            "cgroup" => ns.cgroup = true,
            "user" => return Err(refused("user namespace (not supported in the guest)")),
            "time" => return Err(refused("time namespace (not supported in the guest)")),
            other => {
                return Err(invalid(format!(
                    "unknown namespace type {:?}",
                    bounded(other)
                )));
            }
        }
    }
    for required in ["pid", "mount"] {
        if !seen.contains(required) {
            return Err(refused(format!(
                "no {required} namespace (the container would share the guest's)"
            )));
        }
    }
    Ok(ns)
}

fn check_linux_extras(linux: &RawLinux) -> Result<(), SpecError> {
    if let Some(device) = linux
        .devices
        .iter()
        .find(|d| !DEFAULT_DEVICES.contains(&d.path.as_str()))
    {
        return Err(refused(format!(
            "device {:?} (only the default devices {DEFAULT_DEVICES:?} are given)",
            bounded(&device.path)
        )));
    }
    if linux.devices.len() > MAX_LIST {
        return Err(invalid(format!("more than {MAX_LIST} devices")));
    }
    if !linux.uid_mappings.is_empty() || !linux.gid_mappings.is_empty() {
        return Err(refused("uidMappings/gidMappings (no user namespaces)"));
    }
    if let Some(key) = linux.sysctl.keys().next() {
        return Err(refused(format!("sysctl {:?}", bounded(key))));
    }
    if linux.intel_rdt.as_ref().is_some_and(|s| !s.is_null()) {
        return Err(refused("linux.intelRdt"));
    }
    if linux.personality.as_ref().is_some_and(|s| !s.is_null()) {
        return Err(refused("linux.personality"));
    }
    Ok(())
}

/// An absolute path without `..`, normalised; `what` names it in errors.
pub(crate) fn clean_path(what: &str, path: &str) -> Result<PathBuf, SpecError> {
    if path.len() > MAX_PATH || path.contains('\0') {
        return Err(invalid(format!("{what}: too long or has a NUL byte")));
    }
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(invalid(format!(
            "{what} {:?} is not absolute",
            bounded(path)
        )));
    }
    let mut clean = PathBuf::from("/");
    for component in p.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => clean.push(part),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(invalid(format!("{what} {:?} has '..'", bounded(path))));
            }
        }
    }
    Ok(clean)
}

fn check_paths(what: &str, paths: &[String]) -> Result<Vec<PathBuf>, SpecError> {
    if paths.len() > MAX_LIST {
        return Err(invalid(format!("{what}: more than {MAX_LIST} paths")));
    }
    paths.iter().map(|p| clean_path(what, p)).collect()
}

/// Mount flags by option name: (set, clear).
fn mount_flag(option: &str) -> Option<(u64, u64)> {
    use nix::mount::MsFlags as F;
    let bits = |f: F| f.bits();
    Some(match option {
        "ro" => (bits(F::MS_RDONLY), 0),
        "rw" => (0, bits(F::MS_RDONLY)),
        "nosuid" => (bits(F::MS_NOSUID), 0),
        "suid" => (0, bits(F::MS_NOSUID)),
        "nodev" => (bits(F::MS_NODEV), 0),
        "dev" => (0, 0),
        "noexec" => (bits(F::MS_NOEXEC), 0),
        "exec" => (0, bits(F::MS_NOEXEC)),
        "relatime" => (bits(F::MS_RELATIME), 0),
        "norelatime" => (0, bits(F::MS_RELATIME)),
        "strictatime" => (bits(F::MS_STRICTATIME), 0),
        "noatime" => (bits(F::MS_NOATIME), 0),
        "nodiratime" => (bits(F::MS_NODIRATIME), 0),
        "private" | "rprivate" | "slave" | "rslave" => (0, 0),
        _ => return None,
    })
}

/// Data options accepted for the file systems the guest makes.
fn data_option_allowed(option: &str) -> bool {
    let key = option.split('=').next().unwrap_or("");
    matches!(
        key,
        "mode" | "size" | "nr_inodes" | "nr_blocks" | "newinstance" | "ptmxmode" | "gid" | "uid"
    ) && option.len() <= 64
}

fn check_mount(m: &RawMount) -> Result<MountPlan, SpecError> {
    use nix::mount::MsFlags as F;
    let destination = clean_path("mount destination", &m.destination)?;
    let source = m.source.as_deref().unwrap_or("");
    let dest = destination.display();
    if m.options.iter().any(|o| o == "bind" || o == "rbind") || m.kind.as_deref() == Some("bind") {
        return Err(refused(format!(
            "bind mount of {:?} on {dest} (host paths are never mounted in the guest)",
            bounded(source)
        )));
    }
    let fstype = m.kind.as_deref().unwrap_or("");
    let fstype = match fstype {
        "cgroup" => "cgroup2",
        "proc" | "sysfs" | "tmpfs" | "devpts" | "mqueue" | "cgroup2" => fstype,
        other => {
            return Err(refused(format!(
                "mount of type {:?} from {:?} on {dest} (only proc, sysfs, tmpfs, devpts, mqueue \
                 and cgroup are made in the guest)",
                bounded(other),
                bounded(source)
            )));
        }
    };
    if m.options.len() > 64 {
        return Err(invalid(format!("mount on {dest}: more than 64 options")));
    }
    let mut flags = 0u64;
    let mut data = Vec::new();
    for option in &m.options {
        if let Some((set, clear)) = mount_flag(option) {
            flags = (flags | set) & !clear;
        } else if data_option_allowed(option) {
            data.push(option.as_str());
        } else {
            return Err(refused(format!(
                "mount option {:?} on {dest}",
                bounded(option)
            )));
        }
    }
    // Nothing the container can write holds device nodes it made, and the guest's sysfs and
    // cgroup tree are read-only views.
    flags |= F::MS_NODEV.bits() | F::MS_NOSUID.bits();
    if matches!(fstype, "sysfs" | "cgroup2") && flags & F::MS_RDONLY.bits() == 0 {
        return Err(refused(format!(
            "{fstype} on {dest} read-write (the guest's {fstype} is given read-only: add \"ro\")"
        )));
    }
    Ok(MountPlan {
        destination,
        fstype: fstype.to_owned(),
        flags,
        data: data.join(","),
    })
}

fn check_caps(what: &str, names: &[String]) -> Result<BTreeSet<String>, SpecError> {
    if names.len() > 64 {
        return Err(invalid(format!(
            "capabilities.{what}: more than 64 entries"
        )));
    }
    let mut set = BTreeSet::new();
    for name in names {
        if !ALLOWED_CAPABILITIES.contains(&name.as_str()) {
            return Err(refused(format!(
                "capability {:?} in the {what} set (privileged; allowed: the default set)",
                bounded(name)
            )));
        }
        set.insert(name.clone());
    }
    Ok(set)
}

const RLIMITS: &[&str] = &[
    "RLIMIT_AS",
    "RLIMIT_CORE",
    "RLIMIT_CPU",
    "RLIMIT_DATA",
    "RLIMIT_FSIZE",
    "RLIMIT_LOCKS",
    "RLIMIT_MEMLOCK",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_NOFILE",
    "RLIMIT_NPROC",
    "RLIMIT_RSS",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
    "RLIMIT_SIGPENDING",
    "RLIMIT_STACK",
];

fn check_process(raw: RawProcess, in_container: bool) -> Result<ProcessPlan, SpecError> {
    if raw.command_line.is_some() {
        return Err(invalid("process.commandLine is for Windows"));
    }
    if raw.args.len() > MAX_LIST * 16 || raw.env.len() > MAX_ENV {
        return Err(invalid("process: too many args or env entries"));
    }
    if raw.args.iter().chain(&raw.env).any(|s| s.contains('\0')) {
        return Err(invalid("process: an argument or env entry has a NUL byte"));
    }
    if let Some(bad) = raw.env.iter().find(|e| !e.contains('=')) {
        return Err(invalid(format!("env entry {:?} has no '='", bounded(bad))));
    }
    let cwd = if raw.cwd.is_empty() {
        String::new()
    } else {
        clean_path("process.cwd", &raw.cwd)?
            .to_string_lossy()
            .into_owned()
    };
    if raw.user.additional_gids.len() > 64 {
        return Err(invalid("process.user.additionalGids: more than 64"));
    }
    let caps = raw.capabilities.unwrap_or_default();
    let capabilities = CapabilitySets {
        bounding: check_caps("bounding", &caps.bounding)?,
        effective: check_caps("effective", &caps.effective)?,
        inheritable: check_caps("inheritable", &caps.inheritable)?,
        permitted: check_caps("permitted", &caps.permitted)?,
        ambient: check_caps("ambient", &caps.ambient)?,
    };
    if raw.rlimits.len() > RLIMITS.len() {
        return Err(invalid("process.rlimits: too many"));
    }
    let mut rlimits = Vec::new();
    for r in raw.rlimits {
        if !RLIMITS.contains(&r.kind.as_str()) {
            return Err(invalid(format!("unknown rlimit {:?}", bounded(&r.kind))));
        }
        if r.soft > r.hard {
            return Err(invalid(format!("rlimit {}: soft above hard", r.kind)));
        }
        rlimits.push(Rlimit {
            kind: r.kind,
            soft: r.soft,
            hard: r.hard,
        });
    }
    // An exec names its user; a container's user may come from the image when the spec's is
    // root by default and the image says otherwise.
    let user_from_spec = !in_container || raw.user.uid != 0 || raw.user.gid != 0;
    Ok(ProcessPlan {
        args: raw.args,
        env: raw.env,
        cwd,
        uid: raw.user.uid,
        gid: raw.user.gid,
        additional_gids: raw.user.additional_gids,
        umask: raw.user.umask,
        terminal: raw.terminal,
        capabilities,
        rlimits,
        no_new_privileges: raw.no_new_privileges,
        user_from_spec,
    })
}

fn check_resources(resources: Option<&RawResources>) -> Result<Limits, SpecError> {
    let Some(r) = resources else {
        return Ok(Limits::default());
    };
    if let Some(key) = r.unified.keys().next() {
        return Err(refused(format!(
            "linux.resources.unified {:?} (cgroup files are written by the agent only)",
            bounded(key)
        )));
    }
    let mut limits = Limits::default();
    if let Some(limit) = r.memory.as_ref().and_then(|m| m.limit) {
        // -1 is "unlimited"; the kernel needs at least a few pages to start anything.
        if limit > 0 {
            let limit = u64::try_from(limit).unwrap_or(u64::MAX);
            if limit < 1 << 20 {
                return Err(invalid(format!(
                    "linux.resources.memory.limit {limit} is below 1 MiB"
                )));
            }
            limits.memory_max = Some(limit);
        } else if limit != -1 && limit != 0 {
            return Err(invalid("linux.resources.memory.limit is negative"));
        }
    }
    if let Some(cpu) = &r.cpu {
        if let Some(quota) = cpu.quota
            && quota > 0
        {
            let period = cpu.period.unwrap_or(100_000);
            if !(1_000..=1_000_000).contains(&period) {
                return Err(invalid("linux.resources.cpu.period out of 1000..=1000000"));
            }
            let quota = u64::try_from(quota).unwrap_or(u64::MAX);
            if quota < 1_000 {
                return Err(invalid("linux.resources.cpu.quota below 1000"));
            }
            limits.cpu_max = Some((quota, period));
        }
        if let Some(shares) = cpu.shares
            && shares > 0
        {
            // The conversion runc and crun use: shares 2..=262144 onto weight 1..=10000.
            let shares = shares.clamp(2, 262_144);
            limits.cpu_weight = Some(1 + ((shares - 2) * 9999) / 262_142);
        }
    }
    if let Some(pids) = &r.pids
        && pids.limit > 0
    {
        limits.pids_max = Some(u64::try_from(pids.limit).unwrap_or(u64::MAX));
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> String {
        format!(
            r#"{{"ociVersion":"1.1.0","process":{{"args":["sh"],"cwd":"/","user":{{"uid":0,"gid":0}}}},
            "linux":{{"namespaces":[{{"type":"pid"}},{{"type":"mount"}},{{"type":"ipc"}},{{"type":"uts"}},{{"type":"network"}}]}}{extra}}}"#
        )
    }

    fn with_linux(linux: &str) -> String {
        format!(
            r#"{{"ociVersion":"1.1.0","linux":{{"namespaces":[{{"type":"pid"}},{{"type":"mount"}}]{linux}}}}}"#
        )
    }

    fn refusal(json: &str) -> String {
        match parse_container_spec(json.as_bytes()) {
            Err(SpecError::Refused(what)) => what,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn invalidity(json: &str) -> String {
        match parse_container_spec(json.as_bytes()) {
            Err(SpecError::Invalid(what)) => what,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_spec_is_accepted_with_its_namespaces() {
        let plan = parse_container_spec(spec("").as_bytes()).unwrap();
        assert_eq!(
            plan.namespaces,
            Namespaces {
                uts: true,
                ipc: true,
                cgroup: false
            }
        );
        let process = plan.process.unwrap();
        assert_eq!(process.args, ["sh"]);
        assert_eq!(process.cwd, "/");
        assert!(!process.user_from_spec);
        assert!(process.capabilities.bounding.is_empty());
    }

    #[test]
    fn ctr_default_mounts_are_accepted_and_made_nodev_nosuid() {
        let mounts = r#","mounts":[
            {"destination":"/proc","type":"proc","source":"proc","options":["nosuid","noexec","nodev"]},
            {"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","strictatime","mode=755","size=65536k"]},
            {"destination":"/dev/pts","type":"devpts","source":"devpts","options":["nosuid","noexec","newinstance","ptmxmode=0666","mode=0620","gid=5"]},
            {"destination":"/dev/shm","type":"tmpfs","source":"shm","options":["nosuid","noexec","nodev","mode=1777","size=65536k"]},
            {"destination":"/dev/mqueue","type":"mqueue","source":"mqueue","options":["nosuid","noexec","nodev"]},
            {"destination":"/sys","type":"sysfs","source":"sysfs","options":["nosuid","noexec","nodev","ro"]},
            {"destination":"/run","type":"tmpfs","source":"tmpfs","options":["nosuid","strictatime","mode=755","size=65536k"]}]"#;
        let plan = parse_container_spec(spec(mounts).as_bytes()).unwrap();
        assert_eq!(plan.mounts.len(), 7);
        let dev = &plan.mounts[1];
        assert_eq!(dev.destination, Path::new("/dev"));
        assert_eq!(dev.data, "mode=755,size=65536k");
        let nodev = nix::mount::MsFlags::MS_NODEV.bits();
        assert!(plan.mounts.iter().all(|m| m.flags & nodev != 0));
    }

    #[test]
    fn malformed_truncated_and_oversized_specs_are_refused() {
        assert!(matches!(
            parse_container_spec(b"{not json"),
            Err(SpecError::Json(_))
        ));
        let full = spec("");
        let truncated = &full.as_bytes()[..full.len() / 2];
        assert!(matches!(
            parse_container_spec(truncated),
            Err(SpecError::Json(_))
        ));
        assert!(matches!(
            parse_container_spec(br#"{"ociVersion":"1.0.0","mounts":"x"}"#),
            Err(SpecError::Json(_))
        ));
        let big = vec![b' '; MAX_OCI_SPEC + 1];
        assert!(matches!(
            parse_container_spec(&big),
            Err(SpecError::TooLarge(n)) if n == MAX_OCI_SPEC + 1
        ));
        assert!(matches!(
            parse_exec_process(&big),
            Err(SpecError::TooLarge(_))
        ));
        assert_eq!(
            invalidity(r#"{"ociVersion":"0.9"}"#),
            "ociVersion \"0.9\": only 1.x specs are understood"
        );
    }

    #[test]
    fn host_bind_mounts_are_refused_naming_source_and_destination() {
        let what = refusal(&spec(
            r#","mounts":[{"destination":"/host","type":"bind","source":"/etc","options":["rbind","ro"]}]"#,
        ));
        assert_eq!(
            what,
            "bind mount of \"/etc\" on /host (host paths are never mounted in the guest)"
        );
        let what = refusal(&spec(
            r#","mounts":[{"destination":"/data","type":"none","source":"/var/lib","options":["bind"]}]"#,
        ));
        assert!(
            what.starts_with("bind mount of \"/var/lib\" on /data"),
            "{what}"
        );
    }

    #[test]
    fn block_devices_and_other_file_systems_are_refused() {
        let what = refusal(&spec(
            r#","mounts":[{"destination":"/disk","type":"ext4","source":"/dev/vda"}]"#,
        ));
        assert!(
            what.starts_with("mount of type \"ext4\" from \"/dev/vda\" on /disk"),
            "{what}"
        );
        let what = refusal(&spec(
            r#","mounts":[{"destination":"/o","type":"overlay","source":"overlay","options":["lowerdir=/"]}]"#,
        ));
        assert!(what.starts_with("mount of type \"overlay\""), "{what}");
        let what = refusal(&spec(
            r#","mounts":[{"destination":"/t","type":"tmpfs","source":"tmpfs","options":["context=x"]}]"#,
        ));
        assert_eq!(what, "mount option \"context=x\" on /t");
        let what = refusal(&spec(
            r#","mounts":[{"destination":"/sys","type":"sysfs","source":"sysfs","options":["rw"]}]"#,
        ));
        assert!(what.starts_with("sysfs on /sys read-write"), "{what}");
    }

    #[test]
    fn mount_destinations_cannot_climb() {
        let what = invalidity(&spec(
            r#","mounts":[{"destination":"/proc/../../etc","type":"tmpfs","source":"tmpfs"}]"#,
        ));
        assert_eq!(what, "mount destination \"/proc/../../etc\" has '..'");
        let what = invalidity(&spec(
            r#","mounts":[{"destination":"proc","type":"proc","source":"proc"}]"#,
        ));
        assert_eq!(what, "mount destination \"proc\" is not absolute");
        let what = invalidity(&with_linux(r#","maskedPaths":["/proc/../x"]"#));
        assert_eq!(what, "maskedPaths \"/proc/../x\" has '..'");
    }

    #[test]
    fn devices_beyond_the_default_set_are_refused() {
        let what = refusal(&with_linux(
            r#","devices":[{"path":"/dev/vda","type":"b","major":253,"minor":0}]"#,
        ));
        assert!(what.starts_with("device \"/dev/vda\""), "{what}");
        let ok = with_linux(r#","devices":[{"path":"/dev/null","type":"c","major":1,"minor":3}]"#);
        assert!(parse_container_spec(ok.as_bytes()).is_ok());
    }

    #[test]
    fn host_namespaces_are_refused() {
        let what = refusal(
            r#"{"ociVersion":"1.0.0","linux":{"namespaces":[{"type":"pid","path":"/proc/1/ns/pid"},{"type":"mount"}]}}"#,
        );
        assert_eq!(
            what,
            "namespace pid joins the existing namespace at \"/proc/1/ns/pid\""
        );
        let what = refusal(r#"{"ociVersion":"1.0.0","linux":{"namespaces":[{"type":"mount"}]}}"#);
        assert_eq!(
            what,
            "no pid namespace (the container would share the guest's)"
        );
        let what = refusal(r#"{"ociVersion":"1.0.0","linux":{"namespaces":[{"type":"pid"}]}}"#);
        assert_eq!(
            what,
            "no mount namespace (the container would share the guest's)"
        );
        let what = refusal(r#"{"ociVersion":"1.0.0"}"#);
        assert_eq!(
            what,
            "no pid namespace (the container would share the guest's)"
        );
        let what = refusal(
            &with_linux("").replace(r#"{"type":"mount"}"#, r#"{"type":"mount"},{"type":"user"}"#),
        );
        assert_eq!(what, "user namespace (not supported in the guest)");
        // A network namespace path is the host's: not honoured, the pod's network is used.
        let net = with_linux("").replace(
            r#"{"type":"mount"}"#,
            r#"{"type":"mount"},{"type":"network","path":"/var/run/netns/cni-1"}"#,
        );
        assert!(parse_container_spec(net.as_bytes()).is_ok());
        let what = invalidity(
            &with_linux("").replace(r#"{"type":"mount"}"#, r#"{"type":"mount"},{"type":"pid"}"#),
        );
        assert_eq!(what, "namespace \"pid\" listed twice");
    }

    #[test]
    fn privileged_capabilities_are_refused_in_every_set() {
        for set in [
            "bounding",
            "effective",
            "inheritable",
            "permitted",
            "ambient",
        ] {
            let json = spec("").replace(
                r#""cwd":"/""#,
                &format!(r#""cwd":"/","capabilities":{{"{set}":["CAP_KILL","CAP_SYS_ADMIN"]}}"#),
            );
            let what = refusal(&json);
            assert_eq!(
                what,
                format!(
                    "capability \"CAP_SYS_ADMIN\" in the {set} set (privileged; allowed: the \
                     default set)"
                )
            );
        }
        let json = spec("").replace(
            r#""cwd":"/""#,
            r#""cwd":"/","capabilities":{"bounding":["CAP_KILL","CAP_CHOWN"],"effective":["CAP_KILL"]}"#,
        );
        let caps = parse_container_spec(json.as_bytes())
            .unwrap()
            .process
            .unwrap()
            .capabilities;
        assert_eq!(
            caps.bounding.iter().map(String::as_str).collect::<Vec<_>>(),
            ["CAP_CHOWN", "CAP_KILL"]
        );
    }

    #[test]
    fn hooks_sysctls_mappings_and_unified_are_refused_and_seccomp_is_checked() {
        let hooks = spec(r#","hooks":{"prestart":[{"path":"/bin/sh"}]}"#);
        assert!(refusal(&hooks).starts_with("hooks"));
        assert!(parse_container_spec(spec(r#","hooks":{}"#).as_bytes()).is_ok());
        assert_eq!(
            refusal(&with_linux(r#","sysctl":{"kernel.shmmax":"1"}"#)),
            "sysctl \"kernel.shmmax\""
        );
        // A profile is applied (seccomp.rs); one the runner cannot honour is refused by name.
        let plan = parse_container_spec(
            with_linux(
                r#","seccomp":{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#,
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            plan.seccomp.map(|s| s.default),
            Some(super::super::seccomp::Action::Errno(1))
        );
        assert!(
            invalidity(&with_linux(
                r#","seccomp":{"defaultAction":"SCMP_ACT_NOTIFY"}"#
            ))
            .starts_with("linux.seccomp: SCMP_ACT_NOTIFY")
        );
        assert!(
            refusal(&with_linux(
                r#","uidMappings":[{"containerID":0,"hostID":0,"size":1}]"#
            ))
            .starts_with("uidMappings")
        );
        assert!(
            refusal(&with_linux(
                r#","resources":{"unified":{"memory.high":"1"}}"#
            ))
            .starts_with("linux.resources.unified \"memory.high\"")
        );
    }

    #[test]
    fn limits_are_converted_and_bounded() {
        let plan = parse_container_spec(
            with_linux(
                r#","resources":{"memory":{"limit":67108864},"cpu":{"quota":50000,"period":100000,"shares":1024},"pids":{"limit":100}}"#,
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            plan.limits,
            Limits {
                memory_max: Some(64 << 20),
                cpu_max: Some((50_000, 100_000)),
                cpu_weight: Some(39),
                pids_max: Some(100),
            }
        );
        assert_eq!(
            invalidity(&with_linux(r#","resources":{"memory":{"limit":4096}}"#)),
            "linux.resources.memory.limit 4096 is below 1 MiB"
        );
        assert_eq!(
            invalidity(&with_linux(
                r#","resources":{"cpu":{"quota":50000,"period":10}}"#
            )),
            "linux.resources.cpu.period out of 1000..=1000000"
        );
    }

    #[test]
    fn hostname_needs_its_own_uts_namespace() {
        let what = refusal(&with_linux("").replace(
            "{\"ociVersion\":\"1.1.0\"",
            "{\"ociVersion\":\"1.1.0\",\"hostname\":\"x\"",
        ));
        assert_eq!(
            what,
            "hostname without a uts namespace (it would rename the guest)"
        );
        let plan = parse_container_spec(spec(r#","hostname":"web""#).as_bytes()).unwrap();
        assert_eq!(plan.hostname.as_deref(), Some("web"));
    }

    #[test]
    fn exec_processes_are_checked_as_strictly() {
        let ok = parse_exec_process(br#"{"args":["sh","-c","echo hi"],"cwd":"/","env":["A=1"]}"#)
            .unwrap();
        assert_eq!(ok.args, ["sh", "-c", "echo hi"]);
        assert!(ok.user_from_spec);
        assert!(matches!(
            parse_exec_process(br#"{"args":[],"cwd":"/"}"#),
            Err(SpecError::Invalid(w)) if w == "process.args: an exec needs a program"
        ));
        assert!(matches!(
            parse_exec_process(br#"{"args":["sh"],"capabilities":{"effective":["CAP_SYS_MODULE"]}}"#),
            Err(SpecError::Refused(w)) if w.starts_with("capability \"CAP_SYS_MODULE\"")
        ));
        assert!(matches!(
            parse_exec_process(br#"{"args":["sh"],"env":["NOEQUALS"]}"#),
            Err(SpecError::Invalid(w)) if w == "env entry \"NOEQUALS\" has no '='"
        ));
        assert!(matches!(
            parse_exec_process(br#"{"args":["sh"],"rlimits":[{"type":"RLIMIT_NOFILE","hard":1,"soft":2}]}"#),
            Err(SpecError::Invalid(w)) if w == "rlimit RLIMIT_NOFILE: soft above hard"
        ));
        assert!(matches!(
            parse_exec_process(br#"{"args":["sh"],"cwd":"/../etc"}"#),
            Err(SpecError::Invalid(w)) if w == "process.cwd \"/../etc\" has '..'"
        ));
        assert!(matches!(
            parse_exec_process(b"[1]"),
            Err(SpecError::Json(_))
        ));
    }
}
