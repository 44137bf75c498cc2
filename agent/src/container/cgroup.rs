//! cgroup v2 in the guest: one cgroup per container under `tsuba/`, with the spec's memory, CPU
//! and pids limits; its files answer ListProcesses, StatsContainer and the OOM watch.

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;
use tracing::{debug, warn};

use super::spec::Limits;

/// Where the agent mounts cgroup2 when nothing is mounted there.
pub const CGROUP_MOUNT: &str = "/sys/fs/cgroup";
/// The agent's subtree, parent of every container cgroup.
pub const CGROUP_PARENT: &str = "tsuba";
/// Controllers the agent enables for containers.
const CONTROLLERS: &[&str] = &["memory", "cpu", "pids"];

/// A cgroup operation that failed.
#[derive(Debug, Error)]
pub enum CgroupError {
    /// Mounting cgroup2 failed.
    #[error("cannot mount cgroup2 on {0}")]
    Mount(PathBuf, #[source] nix::errno::Errno),
    /// A cgroup file or folder could not be read or written.
    #[error("cannot access {0}")]
    Io(PathBuf, #[source] io::Error),
    /// The spec asks for a limit whose controller this kernel does not offer.
    #[error("the guest kernel has no {0} cgroup controller, which the spec's limits need")]
    NoController(&'static str),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |e| CgroupError::Io(path.to_owned(), e)
}

/// The guest's cgroup v2 tree, with the agent's subtree made and its controllers enabled.
#[derive(Debug, Clone)]
pub struct CgroupRoot {
    parent: PathBuf,
}

impl CgroupRoot {
    /// Mounts cgroup2 at `mount_point` if it is not one, enables the memory, cpu and pids
    /// controllers for the agent's subtree `subtree` (those the kernel has), and makes it.
    pub fn setup(mount_point: &Path, subtree: &str) -> Result<Self, CgroupError> {
        let is_cgroup2 = nix::sys::statfs::statfs(mount_point)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
        if !is_cgroup2 {
            std::fs::create_dir_all(mount_point).map_err(io_error(mount_point))?;
            nix::mount::mount(
                Some("cgroup2"),
                mount_point,
                Some("cgroup2"),
                nix::mount::MsFlags::MS_NOSUID
                    | nix::mount::MsFlags::MS_NODEV
                    | nix::mount::MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .map_err(|e| CgroupError::Mount(mount_point.to_owned(), e))?;
        }
        let parent = mount_point.join(subtree);
        match std::fs::create_dir(&parent) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(CgroupError::Io(parent, e)),
        }
        enable_controllers(mount_point);
        enable_controllers(&parent);
        Ok(CgroupRoot { parent })
    }

    /// The subtree's folder.
    pub fn path(&self) -> &Path {
        &self.parent
    }

    /// Creates the cgroup of container `id` (an ID checked by the caller) with `limits`.
    pub(crate) fn create(&self, id: &str, limits: &Limits) -> Result<Cgroup, CgroupError> {
        let path = self.parent.join(id);
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(CgroupError::Io(path, e)),
        }
        let cgroup = Cgroup { path };
        if let Err(error) = cgroup.apply(limits) {
            let _ = cgroup.remove();
            return Err(error);
        }
        Ok(cgroup)
    }
}

/// Turns on the controllers `dir`'s children may use, one at a time (the kernel refuses a
/// write naming one it lacks).
fn enable_controllers(dir: &Path) {
    let control = dir.join("cgroup.subtree_control");
    for controller in CONTROLLERS {
        if let Err(error) = std::fs::write(&control, format!("+{controller}")) {
            debug!(dir = %dir.display(), controller, %error, "controller not enabled");
        }
    }
}

/// One container's cgroup.
#[derive(Debug, Clone)]
pub(crate) struct Cgroup {
    path: PathBuf,
}

/// Figures from a cgroup's files (zero where a file is missing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CgroupStats {
    /// memory.current.
    pub memory_usage: u64,
    /// memory.max, 0 for "max".
    pub memory_limit: u64,
    /// memory.events oom_kill.
    pub oom_kills: u64,
    /// cpu.stat usage_usec.
    pub cpu_usage_usec: u64,
    /// cpu.stat user_usec.
    pub cpu_user_usec: u64,
    /// cpu.stat system_usec.
    pub cpu_system_usec: u64,
    /// pids.current.
    pub pids: u64,
}

impl Cgroup {
    /// The cgroup's folder.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn write(&self, file: &str, value: &str) -> Result<(), CgroupError> {
        let path = self.path.join(file);
        std::fs::write(&path, value).map_err(io_error(&path))
    }

    fn require(&self, file: &str, controller: &'static str) -> Result<(), CgroupError> {
        if self.path.join(file).exists() {
            Ok(())
        } else {
            Err(CgroupError::NoController(controller))
        }
    }

    fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        if let Some(max) = limits.memory_max {
            self.require("memory.max", "memory")?;
            self.write("memory.max", &max.to_string())?;
            // No swap in the guest; where there is, the limit holds for it too.
            if self.path.join("memory.swap.max").exists() {
                self.write("memory.swap.max", "0")?;
            }
        }
        if let Some((quota, period)) = limits.cpu_max {
            self.require("cpu.max", "cpu")?;
            self.write("cpu.max", &format!("{quota} {period}"))?;
        }
        if let Some(weight) = limits.cpu_weight {
            self.require("cpu.weight", "cpu")?;
            self.write("cpu.weight", &weight.to_string())?;
        }
        if let Some(max) = limits.pids_max {
            self.require("pids.max", "pids")?;
            self.write("pids.max", &max.to_string())?;
        }
        Ok(())
    }

    /// PIDs of the processes in the cgroup (as the agent sees them).
    pub(crate) fn procs(&self) -> Result<Vec<u32>, CgroupError> {
        let path = self.path.join("cgroup.procs");
        let text = std::fs::read_to_string(&path).map_err(io_error(&path))?;
        Ok(parse_procs(&text))
    }

    /// SIGKILLs every process in the cgroup (cgroup.kill, or one by one on kernels without it).
    pub(crate) fn kill_all(&self) -> Result<(), CgroupError> {
        if self.path.join("cgroup.kill").exists() {
            return self.write("cgroup.kill", "1");
        }
        self.signal_all(nix::sys::signal::Signal::SIGKILL)
    }

    /// Sends `signal` to every process in the cgroup.
    pub(crate) fn signal_all(&self, signal: nix::sys::signal::Signal) -> Result<(), CgroupError> {
        for pid in self.procs()? {
            let Ok(pid) = i32::try_from(pid) else {
                continue;
            };
            if let Err(error) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
                debug!(pid, %error, "signal not delivered");
            }
        }
        Ok(())
    }

    /// oom_kill from memory.events (0 without the memory controller).
    pub(crate) fn oom_kills(&self) -> u64 {
        read_keyed(&self.path.join("memory.events"), "oom_kill")
    }

    /// The cgroup's figures.
    pub(crate) fn stats(&self) -> CgroupStats {
        let cpu = self.path.join("cpu.stat");
        CgroupStats {
            memory_usage: read_number(&self.path.join("memory.current")),
            memory_limit: read_number(&self.path.join("memory.max")),
            oom_kills: self.oom_kills(),
            cpu_usage_usec: read_keyed(&cpu, "usage_usec"),
            cpu_user_usec: read_keyed(&cpu, "user_usec"),
            cpu_system_usec: read_keyed(&cpu, "system_usec"),
            pids: read_number(&self.path.join("pids.current")),
        }
    }

    /// Removes the cgroup; it must hold no process (retried briefly while the kernel finishes
    /// tearing down the last ones).
    pub(crate) fn remove(&self) -> Result<(), CgroupError> {
        for _ in 0..50 {
            match std::fs::remove_dir(&self.path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(CgroupError::Io(self.path.clone(), e)),
            }
        }
        warn!(cgroup = %self.path.display(), "cgroup still busy");
        std::fs::remove_dir(&self.path).map_err(io_error(&self.path))
    }
}

/// At most 64 KiB of a cgroup file.
fn read_small(path: &Path) -> String {
    use std::io::Read as _;
    let mut text = String::new();
    if let Ok(file) = std::fs::File::open(path) {
        let _ = file.take(64 << 10).read_to_string(&mut text);
    }
    text
}

fn read_number(path: &Path) -> u64 {
    parse_number(&read_small(path))
}

fn read_keyed(path: &Path, key: &str) -> u64 {
    parse_keyed(&read_small(path), key)
}

/// A single-value file: a number, or `max` (0).
pub(crate) fn parse_number(text: &str) -> u64 {
    text.trim().parse().unwrap_or(0)
}

/// A flat-keyed file (`key value` lines): the value of `key`, 0 when absent.
pub(crate) fn parse_keyed(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// cgroup.procs: one PID a line.
pub(crate) fn parse_procs(text: &str) -> Vec<u32> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_keyed_files_parse() {
        let events = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(parse_keyed(events, "oom_kill"), 2);
        assert_eq!(parse_keyed(events, "oom"), 3);
        assert_eq!(parse_keyed(events, "missing"), 0);
        let cpu = "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 0\n";
        assert_eq!(parse_keyed(cpu, "usage_usec"), 1500);
        assert_eq!(parse_keyed(cpu, "system_usec"), 500);
        assert_eq!(parse_keyed("oom_kill x\n", "oom_kill"), 0);
    }

    #[test]
    fn single_values_and_max_parse() {
        assert_eq!(parse_number("67108864\n"), 64 << 20);
        assert_eq!(parse_number("max\n"), 0);
        assert_eq!(parse_number(""), 0);
    }

    #[test]
    fn procs_parse_and_skip_garbage() {
        assert_eq!(parse_procs("12\n345\n\nx\n"), [12, 345]);
    }

    #[test]
    fn limits_are_written_and_missing_controllers_named() {
        let dir = tempfile::tempdir().unwrap();
        let cgroup = Cgroup {
            path: dir.path().to_owned(),
        };
        for file in ["memory.max", "cpu.max", "pids.max"] {
            std::fs::write(dir.path().join(file), "max\n").unwrap();
        }
        cgroup
            .apply(&Limits {
                memory_max: Some(64 << 20),
                cpu_max: Some((50_000, 100_000)),
                cpu_weight: None,
                pids_max: Some(10),
            })
            .unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert_eq!(read("memory.max"), "67108864");
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(read("pids.max"), "10");
        let err = cgroup
            .apply(&Limits {
                cpu_weight: Some(5),
                ..Limits::default()
            })
            .unwrap_err();
        assert!(matches!(err, CgroupError::NoController("cpu")), "{err}");
    }
}
