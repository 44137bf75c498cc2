//! Per-sandbox state on the host: `<state_root>/<sandbox id>/`, holding the VM's run directory
//! (sockets, console and QEMU logs) and QEMU's pid, so that `shim delete` can stop a VM and
//! remove everything after the shim that ran it was killed.
//!
//! The container's bundle (which containerd owns and passes to `shim delete`) gets a
//! [`BUNDLE_MARKER`] naming the state folder.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;
use tracing::{info, warn};
use tsuba_protocols::agent::is_valid_id;

/// File in the bundle naming the sandbox's state folder.
pub const BUNDLE_MARKER: &str = "tsuba-state";
/// File in the state folder holding QEMU's pid.
const QEMU_PID: &str = "qemu.pid";

/// The state folder could not be made or cleaned.
#[derive(Debug, Error)]
pub enum StateError {
    /// A file or folder operation failed.
    #[error("tsuba state {0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    /// The sandbox id cannot name a folder.
    #[error("sandbox id {0:?} is not a containerd identifier")]
    BadId(String),
    /// The bundle names a state folder that is not one of ours.
    #[error("the bundle's {BUNDLE_MARKER} names {0}, which is not a tsuba state folder")]
    BadMarker(PathBuf),
}

/// The state folder of one sandbox.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// Creates `<root>/<sandbox_id>` (mode 0700). A folder left by a crashed shim is cleaned
    /// first (its QEMU stopped).
    pub fn create(root: &Path, sandbox_id: &str) -> Result<Self, StateError> {
        if !is_valid_id(sandbox_id) {
            return Err(StateError::BadId(sandbox_id.to_owned()));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(root)
            .map_err(|e| StateError::Io(root.to_owned(), e))?;
        let path = root.join(sandbox_id);
        if path.exists() {
            warn!(path = %path.display(), "state of an earlier run of this sandbox; cleaning it");
            cleanup(&path)?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| StateError::Io(path.clone(), e))?;
        Ok(StateDir { path })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records QEMU's pid.
    pub fn record_qemu(&self, pid: u32) -> Result<(), StateError> {
        let file = self.path.join(QEMU_PID);
        write_new(&file, pid.to_string().as_bytes())
    }

    /// Writes the marker into `bundle`.
    pub fn mark_bundle(&self, bundle: &Path) -> Result<(), StateError> {
        let file = bundle.join(BUNDLE_MARKER);
        write_new(&file, self.path.as_os_str().as_encoded_bytes())
    }
}

fn write_new(file: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)
        .map_err(|e| StateError::Io(file.to_owned(), e))?;
    f.write_all(bytes)
        .map_err(|e| StateError::Io(file.to_owned(), e))
}

/// The state folder `bundle`'s marker names, if it has one.
pub fn state_of_bundle(bundle: &Path) -> Result<Option<PathBuf>, StateError> {
    let file = bundle.join(BUNDLE_MARKER);
    let text = match std::fs::read(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StateError::Io(file, e)),
    };
    let path = PathBuf::from(String::from_utf8_lossy(&text).into_owned());
    let named_ok = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(is_valid_id);
    if !path.is_absolute() || !named_ok || path.components().any(|c| c.as_os_str() == "..") {
        return Err(StateError::BadMarker(path));
    }
    Ok(Some(path))
}

/// What [`cleanup`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cleaned {
    /// The QEMU pid that was killed.
    pub killed: Option<u32>,
    /// Whether the folder existed and was removed.
    pub removed: bool,
}

/// Stops the QEMU recorded in `dir` (only if that pid is still a process whose command line
/// names `dir`, so a reused pid is never killed) and removes `dir`.
pub fn cleanup(dir: &Path) -> Result<Cleaned, StateError> {
    let mut cleaned = Cleaned::default();
    if let Ok(text) = std::fs::read_to_string(dir.join(QEMU_PID))
        && let Ok(pid) = text.trim().parse::<u32>()
        && process_mentions(pid, dir)
        && let Ok(raw) = i32::try_from(pid)
    {
        let pid_t = nix::unistd::Pid::from_raw(raw);
        if nix::sys::signal::kill(pid_t, nix::sys::signal::Signal::SIGKILL).is_ok() {
            info!(pid, "killed the QEMU of a sandbox whose shim is gone");
            cleaned.killed = Some(pid);
            // It is not our child: wait until it is gone from /proc (or a zombie of another).
            for _ in 0..200 {
                if !process_mentions(pid, dir) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => cleaned.removed = true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StateError::Io(dir.to_owned(), e)),
    }
    Ok(cleaned)
}

/// Whether `pid` is a live (non-zombie) process whose command line mentions `dir`.
fn process_mentions(pid: u32, dir: &Path) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let Ok(cmdline) = std::fs::read(proc.join("cmdline")) else {
        return false;
    };
    if cmdline.is_empty() {
        // Zombies have an empty command line.
        return false;
    }
    let needle = dir.as_os_str().as_encoded_bytes();
    cmdline.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_kills_the_recorded_qemu_and_removes_the_folder() {
        let root = tempfile::tempdir().unwrap();
        let state = StateDir::create(root.path(), "sb1").unwrap();
        // A stand-in for QEMU whose command line names the state folder, as QEMU's does.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 60; true", state.path().to_str().unwrap()])
            .spawn()
            .unwrap();
        state.record_qemu(child.id()).unwrap();
        std::fs::write(state.path().join("console.log"), b"x").unwrap();
        // Until it has exec'd, its command line is still this test's.
        for _ in 0..200 {
            if process_mentions(child.id(), state.path()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }

        let cleaned = cleanup(state.path()).unwrap();
        assert_eq!(
            cleaned,
            Cleaned {
                killed: Some(child.id()),
                removed: true
            }
        );
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert!(!state.path().exists());
        // Again: nothing to do, no error.
        assert_eq!(cleanup(state.path()).unwrap(), Cleaned::default());
    }

    #[test]
    fn cleanup_never_kills_a_pid_that_is_not_this_sandboxs_qemu() {
        let root = tempfile::tempdir().unwrap();
        let state = StateDir::create(root.path(), "sb2").unwrap();
        let mut other = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        state.record_qemu(other.id()).unwrap();
        let cleaned = cleanup(state.path()).unwrap();
        assert_eq!(
            cleaned,
            Cleaned {
                killed: None,
                removed: true
            }
        );
        assert!(
            other.try_wait().unwrap().is_none(),
            "an unrelated process was killed"
        );
        other.kill().unwrap();
        other.wait().unwrap();
    }

    #[test]
    fn the_bundle_marker_round_trips_and_a_forged_one_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let bundle = tempfile::tempdir().unwrap();
        assert_eq!(state_of_bundle(bundle.path()).unwrap(), None);
        let state = StateDir::create(root.path(), "sb3").unwrap();
        state.mark_bundle(bundle.path()).unwrap();
        assert_eq!(
            state_of_bundle(bundle.path()).unwrap(),
            Some(state.path().to_owned())
        );
        for forged in [
            "relative/sb",
            "/",
            "/run/tsuba/../../etc",
            "/run/tsuba/bad id",
        ] {
            std::fs::write(bundle.path().join(BUNDLE_MARKER), forged).unwrap();
            let err = state_of_bundle(bundle.path()).unwrap_err();
            assert!(matches!(err, StateError::BadMarker(_)), "{forged}: {err}");
        }
    }

    #[test]
    fn bad_sandbox_ids_make_no_folder() {
        let root = tempfile::tempdir().unwrap();
        for bad in ["", "..", "a/b", ".hidden"] {
            let err = StateDir::create(root.path(), bad).unwrap_err();
            assert!(matches!(err, StateError::BadId(_)), "{bad}");
        }
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_leftover_folder_is_cleaned_before_reuse() {
        let root = tempfile::tempdir().unwrap();
        let first = StateDir::create(root.path(), "sb4").unwrap();
        std::fs::write(first.path().join("stale"), b"x").unwrap();
        let second = StateDir::create(root.path(), "sb4").unwrap();
        assert!(!second.path().join("stale").exists());
    }
}
