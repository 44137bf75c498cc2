//! A container's root: its own writable layer (overlayfs, upper and work folders on the guest's
//! tmpfs) over the pulled image, and path resolution that never leaves it.

use std::io;
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use thiserror::Error;

/// Most symlinks followed while resolving one path (the kernel's limit).
const MAX_SYMLINKS: usize = 40;

/// A container root that could not be made or resolved.
#[derive(Debug, Error)]
pub enum RootfsError {
    /// A folder of the layer could not be created or removed.
    #[error("cannot prepare {0}")]
    Io(PathBuf, #[source] io::Error),
    /// The overlay mount failed (is the overlay module loaded?).
    #[error("cannot mount the container's writable layer on {0}")]
    Overlay(PathBuf, #[source] nix::errno::Errno),
    /// A path loops through symlinks.
    #[error("{0} has too many levels of symlinks")]
    SymlinkLoop(PathBuf),
}

/// The folders of a container's layer under its state folder.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    /// The container's folder (holds upper, work and rootfs).
    pub dir: PathBuf,
    /// The merged root the container runs in.
    pub rootfs: PathBuf,
}

/// Mounts a writable overlay of `lower` (read-only, shared by the pod's containers of that
/// image) at `dir/rootfs`. nodev: device nodes the container makes cannot be opened.
pub(crate) fn mount_layer(lower: &Path, dir: &Path) -> Result<Layer, RootfsError> {
    let upper = dir.join("upper");
    let work = dir.join("work");
    let rootfs = dir.join("rootfs");
    for d in [&upper, &work, &rootfs] {
        create_private_dir(d).map_err(|e| RootfsError::Io(d.clone(), e))?;
    }
    // The upper folder is the container's `/`: readable by its non-root users (the folders
    // above it stay private to the agent).
    std::fs::set_permissions(&upper, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(|e| RootfsError::Io(upper.clone(), e))?;
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        &rootfs,
        Some("overlay"),
        MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        Some(data.as_str()),
    )
    .map_err(|e| RootfsError::Overlay(rootfs.clone(), e))?;
    Ok(Layer {
        dir: dir.to_owned(),
        rootfs,
    })
}

/// Unmounts the layer and removes its folder: the container's writes are gone from memory.
pub(crate) fn remove_layer(layer: &Layer) -> Result<(), RootfsError> {
    match umount2(&layer.rootfs, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(RootfsError::Io(layer.rootfs.clone(), e.into())),
    }
    match std::fs::remove_dir_all(&layer.dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RootfsError::Io(layer.dir.clone(), e)),
    }
}

pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// `path` (as seen inside the container) resolved under `root`, following symlinks as the
/// container would see them: an absolute link restarts at `root`, `..` stops at `root`. The
/// result is always inside `root`, whatever links the image holds. Components that do not exist
/// yet are appended as they are.
pub(crate) fn secure_join(root: &Path, path: &Path) -> Result<PathBuf, RootfsError> {
    let mut resolved = PathBuf::new();
    let mut pending: Vec<std::ffi::OsString> = components(path);
    pending.reverse();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let full = root.join(&candidate);
        match std::fs::symlink_metadata(&full) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(RootfsError::SymlinkLoop(path.to_owned()));
                }
                let target =
                    std::fs::read_link(&full).map_err(|e| RootfsError::Io(full.clone(), e))?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                let mut more = components(&target);
                more.reverse();
                pending.extend(more);
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

fn components(path: &Path) -> Vec<std::ffi::OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn plain_paths_join() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("a/b")).unwrap();
        assert_eq!(
            secure_join(root.path(), Path::new("/a/b/c")).unwrap(),
            root.path().join("a/b/c")
        );
    }

    #[test]
    fn absolute_symlinks_stay_in_the_root() {
        let root = tempfile::tempdir().unwrap();
        symlink("/etc", root.path().join("escape")).unwrap();
        assert_eq!(
            secure_join(root.path(), Path::new("/escape/passwd")).unwrap(),
            root.path().join("etc/passwd")
        );
    }

    #[test]
    fn dotdot_symlinks_stop_at_the_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("proc")).unwrap();
        symlink("../../../../../../tmp", root.path().join("proc/x")).unwrap();
        assert_eq!(
            secure_join(root.path(), Path::new("/proc/x/y")).unwrap(),
            root.path().join("tmp/y")
        );
        assert_eq!(
            secure_join(root.path(), Path::new("/../../etc")).unwrap(),
            root.path().join("etc")
        );
    }

    #[test]
    fn symlink_loops_end() {
        let root = tempfile::tempdir().unwrap();
        symlink("/b", root.path().join("a")).unwrap();
        symlink("/a", root.path().join("b")).unwrap();
        assert!(matches!(
            secure_join(root.path(), Path::new("/a/x")),
            Err(RootfsError::SymlinkLoop(p)) if p == Path::new("/a/x")
        ));
    }
}
