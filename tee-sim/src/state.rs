//! The state directory: simulated keys and certificates persisted once per installation.
//!
//! Each component keeps its files in one subdirectory (e.g. `snp/`). A subdirectory is written
//! whole into a private temporary directory and renamed into place, so a reader never sees half
//! of it and two processes creating it at once agree on one winner. Directories are 0700 and
//! files 0600: they hold private keys.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use thiserror::Error;

/// Errors from reading or writing the state directory.
#[derive(Debug, Error)]
pub enum StateError {
    /// A file or directory operation failed.
    #[error("state file {path}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Create `dir` (and parents) with mode 0700 if missing.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), StateError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))
}

/// Write a new file with mode 0600; fails if it exists.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

/// Read a whole file.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, StateError> {
    fs::read(path).map_err(io_err(path))
}

/// Populate `parent/name` once: if it is missing, `fill` writes the files into a fresh private
/// temporary directory which is then renamed into place. Losing a creation race is fine: the
/// winner's directory is kept and ours removed.
pub(crate) fn create_once(
    parent: &Path,
    name: &str,
    fill: impl FnOnce(&Path) -> Result<(), StateError>,
) -> Result<PathBuf, StateError> {
    let target = parent.join(name);
    if target.is_dir() {
        return Ok(target);
    }
    ensure_private_dir(parent)?;
    // Unique per process and per call, so concurrent creators never share a temporary.
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = parent.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    DirBuilder::new()
        .mode(0o700)
        .create(&tmp)
        .map_err(io_err(&tmp))?;
    if let Err(e) = fill(&tmp) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match fs::rename(&tmp, &target) {
        Ok(()) => Ok(target),
        Err(_) if target.is_dir() => {
            fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
            Ok(target)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(io_err(&target)(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_and_dirs_are_private_and_created_once() {
        let root = tempfile::tempdir().unwrap();
        let parent = root.path().join("state");
        let dir = create_once(&parent, "snp", |d| write_private(&d.join("k"), b"one")).unwrap();
        assert_eq!(mode(&parent), 0o700);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("k")), 0o600);
        // Second call keeps the first contents and never runs `fill`.
        let again = create_once(&parent, "snp", |_| panic!("must not refill")).unwrap();
        assert_eq!(read(&again.join("k")).unwrap(), b"one");
        assert!(
            write_private(&dir.join("k"), b"two").is_err(),
            "no overwrite"
        );
    }

    #[test]
    fn concurrent_creators_agree_on_one_winner() {
        let root = tempfile::tempdir().unwrap();
        let parent = root.path().to_path_buf();
        let handles: Vec<_> = (0..4u8)
            .map(|i| {
                let parent = parent.clone();
                std::thread::spawn(move || {
                    let dir =
                        create_once(&parent, "snp", |d| write_private(&d.join("k"), &[i])).unwrap();
                    read(&dir.join("k")).unwrap()
                })
            })
            .collect();
        let seen: Vec<Vec<u8>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
        // No temporaries left behind.
        let names: Vec<_> = fs::read_dir(&parent)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("snp")]);
    }

    #[test]
    fn failed_fill_leaves_nothing_behind() {
        let root = tempfile::tempdir().unwrap();
        let err = create_once(root.path(), "snp", |d| {
            write_private(&d.join("a"), b"x")?;
            read(&d.join("missing")).map(|_| ())
        });
        assert!(matches!(err, Err(StateError::Io { .. })));
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
    }
}
