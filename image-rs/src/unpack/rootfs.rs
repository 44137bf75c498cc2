//! A directory that every path is resolved under, never escaping it.
//!
//! Paths from a layer are attacker-controlled. Every operation here walks the path one component
//! at a time from a directory file descriptor of the rootfs, opening each component with
//! `O_NOFOLLOW`; a symlink met on the way is read and its target resolved *inside* the rootfs (an
//! absolute target restarts at the rootfs, `..` stops at the rootfs), the way the container will
//! later see it. The final component is only ever touched through `*at` calls on its parent's
//! descriptor with no-follow semantics, so a symlink planted by an earlier entry can never redirect
//! a write outside the rootfs.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// Symlinks followed while resolving one path, as Linux's `MAXSYMLINKS`.
const MAX_SYMLINK_FOLLOWS: u32 = 40;

/// Errors from resolving a path under the rootfs.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A filesystem call failed.
    #[error("{op} {path:?}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path, relative to the rootfs.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The path climbs above the rootfs with `..`.
    #[error("path {0:?} escapes the rootfs")]
    Escapes(PathBuf),
    /// More symlinks than Linux would follow.
    #[error("too many levels of symbolic links resolving {0:?}")]
    SymlinkLoop(PathBuf),
    /// A component that must be a directory is something else.
    #[error("{0:?} is not a directory")]
    NotADirectory(PathBuf),
    /// The path has no final name (empty, `/` or `.`).
    #[error("path {0:?} names no entry")]
    NoName(PathBuf),
}

fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(rustix::io::Errno) -> RootfsError + 'a {
    move |e| RootfsError::Io {
        op,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// A layer path split into its normalised parent components and final name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntryPath {
    /// Parent components (no `.`, `..`, or empty parts).
    pub(crate) parent: Vec<Vec<u8>>,
    /// The final name.
    pub(crate) name: Vec<u8>,
}

impl EntryPath {
    /// Normalises a path from a layer: leading `/` and `.` parts are dropped, `..` pops a
    /// component, and a `..` that would climb above the root is refused.
    pub(crate) fn parse(path: &Path) -> Result<Self, RootfsError> {
        let mut parts: Vec<Vec<u8>> = Vec::new();
        for c in path.components() {
            match c {
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    if parts.pop().is_none() {
                        return Err(RootfsError::Escapes(path.to_path_buf()));
                    }
                }
                Component::Normal(n) => parts.push(n.as_bytes().to_vec()),
            }
        }
        let name = parts
            .pop()
            .ok_or_else(|| RootfsError::NoName(path.to_path_buf()))?;
        Ok(Self {
            parent: parts,
            name,
        })
    }

    /// The normalised path, relative to the rootfs.
    pub(crate) fn to_path(&self) -> PathBuf {
        let mut p = self.parent_path();
        p.push(OsStr::from_bytes(&self.name));
        p
    }

    /// The normalised parent path, relative to the rootfs.
    pub(crate) fn parent_path(&self) -> PathBuf {
        self.parent.iter().map(|c| OsStr::from_bytes(c)).collect()
    }
}

/// The rootfs directory, held open.
#[derive(Debug)]
pub(crate) struct Rootfs {
    fd: OwnedFd,
}

impl Rootfs {
    /// Opens an existing directory as the rootfs.
    pub(crate) fn open(path: &Path) -> Result<Self, RootfsError> {
        let fd = rustix::fs::open(
            path,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err("open rootfs", path))?;
        Ok(Self { fd })
    }

    /// The rootfs's own descriptor.
    #[cfg(test)]
    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Opens the directory at `components` (already resolved: each one a real directory), with
    /// `O_NOFOLLOW` at every step.
    fn walk(&self, components: &[Vec<u8>]) -> Result<OwnedFd, RootfsError> {
        let mut cur = rustix::io::dup(&self.fd).map_err(io_err("dup rootfs", Path::new("/")))?;
        for (i, c) in components.iter().enumerate() {
            cur = open_dir_nofollow(&cur, c).map_err(|e| {
                let p: PathBuf = components
                    .iter()
                    .take(i + 1)
                    .map(|c| OsStr::from_bytes(c))
                    .collect();
                match e {
                    rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP => {
                        RootfsError::NotADirectory(p)
                    }
                    e => RootfsError::Io {
                        op: "open directory",
                        path: p,
                        source: e.into(),
                    },
                }
            })?;
        }
        Ok(cur)
    }

    /// Resolves `components` as a directory inside the rootfs, following symlinks the way the
    /// container would but never out of the rootfs. Missing directories are created (mode 0755)
    /// when `create` is set, else `Ok(None)` is returned.
    pub(crate) fn resolve_dir(
        &self,
        components: &[Vec<u8>],
        create: bool,
    ) -> Result<Option<OwnedFd>, RootfsError> {
        let shown: PathBuf = components.iter().map(|c| OsStr::from_bytes(c)).collect();
        let mut queue: std::collections::VecDeque<Vec<u8>> = components.iter().cloned().collect();
        let mut resolved: Vec<Vec<u8>> = Vec::new();
        let mut cur = rustix::io::dup(&self.fd).map_err(io_err("dup rootfs", &shown))?;
        let mut follows = 0u32;
        while let Some(c) = queue.pop_front() {
            if c.is_empty() || c == b"." {
                continue;
            }
            if c == b".." {
                // `..` at the rootfs stays at the rootfs, as it does for a chrooted process.
                resolved.pop();
                cur = self.walk(&resolved)?;
                continue;
            }
            match rustix::fs::statat(&cur, c.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => match FileType::from_raw_mode(st.st_mode) {
                    FileType::Directory => {
                        cur = open_dir_nofollow(&cur, &c)
                            .map_err(io_err("open directory", &shown))?;
                        resolved.push(c);
                    }
                    FileType::Symlink => {
                        follows += 1;
                        if follows > MAX_SYMLINK_FOLLOWS {
                            return Err(RootfsError::SymlinkLoop(shown));
                        }
                        let target = rustix::fs::readlinkat(&cur, c.as_slice(), Vec::new())
                            .map_err(io_err("read symlink", &shown))?;
                        let target = target.as_bytes();
                        if target.first() == Some(&b'/') {
                            resolved.clear();
                            cur =
                                rustix::io::dup(&self.fd).map_err(io_err("dup rootfs", &shown))?;
                        }
                        for part in target.split(|b| *b == b'/').rev() {
                            queue.push_front(part.to_vec());
                        }
                    }
                    _ => return Err(RootfsError::NotADirectory(shown)),
                },
                Err(rustix::io::Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&cur, c.as_slice(), Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(io_err("create directory", &shown)(e)),
                    }
                    cur = open_dir_nofollow(&cur, &c).map_err(io_err("open directory", &shown))?;
                    resolved.push(c);
                }
                Err(rustix::io::Errno::NOENT) => return Ok(None),
                Err(e) => return Err(io_err("stat", &shown)(e)),
            }
        }
        Ok(Some(cur))
    }
}

/// Opens one component of `dir` as a directory without following a symlink.
fn open_dir_nofollow<Fd: AsFd>(dir: Fd, name: &[u8]) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// What is at `name` in `dir`, without following a symlink; `None` when nothing is.
pub(crate) fn file_type_at<Fd: AsFd>(dir: Fd, name: &[u8]) -> rustix::io::Result<Option<FileType>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes `name` from `dir`, recursively when it is a directory; nothing there is fine.
/// Never follows symlinks: a symlink is removed, not its target.
pub(crate) fn remove_all_at<Fd: AsFd>(dir: Fd, name: &[u8], depth: u32) -> rustix::io::Result<()> {
    let dir = dir.as_fd();
    match file_type_at(dir, name)? {
        None => Ok(()),
        Some(FileType::Directory) => {
            if depth > 1024 {
                return Err(rustix::io::Errno::LOOP);
            }
            let sub = open_dir_nofollow(dir, name)?;
            clear_dir(&sub, depth + 1, &|_| false)?;
            rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
        }
        Some(_) => rustix::fs::unlinkat(dir, name, AtFlags::empty()),
    }
}

/// Removes every child of `dir` for which `keep` is false.
pub(crate) fn clear_dir<Fd: AsFd>(
    dir: Fd,
    depth: u32,
    keep: &dyn Fn(&[u8]) -> bool,
) -> rustix::io::Result<()> {
    let dir = dir.as_fd();
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." && !keep(n) {
            names.push(n.to_vec());
        }
    }
    for n in names {
        remove_all_at(dir, &n, depth)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_path_normalises_and_refuses_escape() {
        let p = EntryPath::parse(Path::new("/./a//b/../c")).unwrap();
        assert_eq!(p.to_path(), PathBuf::from("a/c"));
        assert_eq!(p.parent, vec![b"a".to_vec()]);
        assert!(matches!(
            EntryPath::parse(Path::new("../etc/passwd")),
            Err(RootfsError::Escapes(_))
        ));
        assert!(matches!(
            EntryPath::parse(Path::new("a/../../x")),
            Err(RootfsError::Escapes(_))
        ));
        assert!(matches!(
            EntryPath::parse(Path::new("/")),
            Err(RootfsError::NoName(_))
        ));
        assert!(matches!(
            EntryPath::parse(Path::new("./")),
            Err(RootfsError::NoName(_))
        ));
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib", root.path().join("lib")).unwrap();
        std::os::unix::fs::symlink("/usr", root.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../..", root.path().join("up")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("out")).unwrap();
        let r = Rootfs::open(root.path()).unwrap();

        let via_rel = r.resolve_dir(&[b"lib".to_vec()], false).unwrap().unwrap();
        let direct = r
            .resolve_dir(&[b"usr".to_vec(), b"lib".to_vec()], false)
            .unwrap()
            .unwrap();
        let (a, b) = (
            rustix::fs::fstat(&via_rel).unwrap(),
            rustix::fs::fstat(&direct).unwrap(),
        );
        assert_eq!((a.st_dev, a.st_ino), (b.st_dev, b.st_ino));

        // An absolute symlink restarts at the rootfs, not at the host's `/`.
        let via_abs = r.resolve_dir(&[b"abs".to_vec()], false).unwrap().unwrap();
        let usr = r.resolve_dir(&[b"usr".to_vec()], false).unwrap().unwrap();
        let (a, b) = (
            rustix::fs::fstat(&via_abs).unwrap(),
            rustix::fs::fstat(&usr).unwrap(),
        );
        assert_eq!((a.st_dev, a.st_ino), (b.st_dev, b.st_ino));

        // `..` chains stop at the rootfs.
        let via_up = r.resolve_dir(&[b"up".to_vec()], false).unwrap().unwrap();
        let (a, b) = (
            rustix::fs::fstat(&via_up).unwrap(),
            rustix::fs::fstat(r.fd()).unwrap(),
        );
        assert_eq!((a.st_dev, a.st_ino), (b.st_dev, b.st_ino));

        // A symlink to a host directory resolves to that path *inside* the rootfs; creating
        // through it creates inside the rootfs and leaves the host directory untouched.
        let d = r
            .resolve_dir(&[b"out".to_vec(), b"x".to_vec()], true)
            .unwrap()
            .unwrap();
        drop(d);
        assert!(
            root.path()
                .join(outside.path().strip_prefix("/").unwrap())
                .join("x")
                .is_dir()
        );
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn symlink_loops_are_refused() {
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("b", root.path().join("a")).unwrap();
        std::os::unix::fs::symlink("a", root.path().join("b")).unwrap();
        let r = Rootfs::open(root.path()).unwrap();
        assert!(matches!(
            r.resolve_dir(&[b"a".to_vec()], true),
            Err(RootfsError::SymlinkLoop(_))
        ));
    }

    #[test]
    fn a_file_in_the_way_is_not_a_directory() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("f"), b"x").unwrap();
        let r = Rootfs::open(root.path()).unwrap();
        assert!(matches!(
            r.resolve_dir(&[b"f".to_vec(), b"g".to_vec()], true),
            Err(RootfsError::NotADirectory(_))
        ));
    }

    #[test]
    fn remove_all_does_not_follow_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), b"x").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("d/e")).unwrap();
        std::fs::write(root.path().join("d/e/f"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("d/link")).unwrap();
        let r = Rootfs::open(root.path()).unwrap();
        remove_all_at(r.fd(), b"d", 0).unwrap();
        assert!(!root.path().join("d").exists());
        assert!(outside.path().join("keep").exists());
    }
}
