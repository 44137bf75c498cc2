//! Applying tar entries to the rootfs, one at a time, each through its parent's descriptor.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid};
use tar::EntryType;

use super::rootfs::{EntryPath, Rootfs, RootfsError, clear_dir, file_type_at, remove_all_at};
use super::{DeviceNodes, Ownership, UnpackError, UnpackOptions};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// Per-entry metadata taken from the tar header.
struct Meta {
    mode: Mode,
    owner: Option<(Uid, Gid)>,
    mtime: Option<i64>,
}

/// Applies every entry of `archive`; returns how many there were.
pub(super) fn apply_entries<R: Read>(
    archive: &mut tar::Archive<R>,
    root: &Rootfs,
    options: &UnpackOptions,
) -> Result<u64, UnpackError> {
    let as_root = rustix::process::geteuid().is_root();
    let chown = as_root && options.ownership == Ownership::PreserveWhenRoot;
    // Paths this layer wrote: whiteouts and opaque markers only hide what lower layers left.
    let mut written: HashSet<PathBuf> = HashSet::new();
    let mut count = 0u64;
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        count += 1;
        if count > options.max_entries {
            return Err(UnpackError::TooManyEntries {
                limit: options.max_entries,
            });
        }
        let raw_path = entry.path_bytes().into_owned();
        if raw_path.len() > options.max_path_len {
            return Err(UnpackError::PathTooLong {
                limit: options.max_path_len,
            });
        }
        let shown = PathBuf::from(OsStr::from_bytes(&raw_path));
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader) {
            continue;
        }
        let path = match EntryPath::parse(&shown) {
            Ok(p) => p,
            // The layer's own root (`./`) carries nothing to apply.
            Err(RootfsError::NoName(_)) if kind.is_dir() => continue,
            Err(source) => {
                return Err(UnpackError::Path {
                    entry: shown,
                    source,
                });
            }
        };
        let path_err = |source| UnpackError::Path {
            entry: shown.clone(),
            source,
        };
        let write_err = |source: io::Error| UnpackError::Write {
            entry: shown.clone(),
            source,
        };
        let errno_err = |e: rustix::io::Errno| write_err(e.into());

        if path.name.starts_with(WHITEOUT_PREFIX) {
            apply_whiteout(root, &path, &written).map_err(|e| match e {
                WhiteoutError::Path(p) => path_err(p),
                WhiteoutError::Io(e) => errno_err(e),
            })?;
            continue;
        }

        let meta = meta_of(entry.header(), chown)
            .ok_or_else(|| UnpackError::InvalidOwner(shown.clone()))?;
        let parent = root
            .resolve_dir(&path.parent, true)
            .map_err(path_err)?
            .ok_or_else(|| path_err(RootfsError::NotADirectory(path.parent_path())))?;
        let name = path.name.as_slice();

        match kind {
            EntryType::Directory => {
                if file_type_at(&parent, name).map_err(errno_err)? != Some(FileType::Directory) {
                    remove_all_at(&parent, name, 0).map_err(errno_err)?;
                    rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700))
                        .map_err(errno_err)?;
                }
                let fd = rustix::fs::openat(
                    &parent,
                    name,
                    OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(errno_err)?;
                set_fd_meta(&fd, &meta, false).map_err(errno_err)?;
            }
            EntryType::Regular | EntryType::Continuous => {
                remove_all_at(&parent, name, 0).map_err(errno_err)?;
                let fd = rustix::fs::openat(
                    &parent,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(errno_err)?;
                let mut file = File::from(fd);
                io::copy(&mut entry, &mut file).map_err(write_err)?;
                set_fd_meta(&OwnedFd::from(file), &meta, true).map_err(errno_err)?;
            }
            EntryType::Symlink => {
                let target = link_target(&entry, options, &shown)?;
                remove_all_at(&parent, name, 0).map_err(errno_err)?;
                rustix::fs::symlinkat(target.as_slice(), &parent, name).map_err(errno_err)?;
                set_at_meta(&parent, name, &meta, false).map_err(errno_err)?;
            }
            EntryType::Link => {
                let target = link_target(&entry, options, &shown)?;
                let target =
                    EntryPath::parse(Path::new(OsStr::from_bytes(&target))).map_err(path_err)?;
                if target == path {
                    continue;
                }
                let target_parent = root
                    .resolve_dir(&target.parent, false)
                    .map_err(path_err)?
                    .ok_or_else(|| path_err(RootfsError::NotADirectory(target.parent_path())))?;
                match file_type_at(&target_parent, &target.name).map_err(errno_err)? {
                    None => {
                        return Err(write_err(io::Error::new(
                            io::ErrorKind::NotFound,
                            format!("hard link target {:?} does not exist", target.to_path()),
                        )));
                    }
                    Some(FileType::Directory) => {
                        return Err(write_err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "hard link to a directory",
                        )));
                    }
                    Some(_) => {}
                }
                remove_all_at(&parent, name, 0).map_err(errno_err)?;
                // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
                rustix::fs::linkat(
                    &target_parent,
                    target.name.as_slice(),
                    &parent,
                    name,
                    AtFlags::empty(),
                )
                .map_err(errno_err)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let file_type = match kind {
                    EntryType::Char => FileType::CharacterDevice,
                    EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                if file_type != FileType::Fifo && options.devices == DeviceNodes::Refuse {
                    return Err(UnpackError::DeviceRefused(shown));
                }
                let dev = if file_type == FileType::Fifo {
                    0
                } else {
                    let major = entry
                        .header()
                        .device_major()
                        .map_err(write_err)?
                        .unwrap_or(0);
                    let minor = entry
                        .header()
                        .device_minor()
                        .map_err(write_err)?
                        .unwrap_or(0);
                    rustix::fs::makedev(major, minor)
                };
                remove_all_at(&parent, name, 0).map_err(errno_err)?;
                rustix::fs::mknodat(&parent, name, file_type, meta.mode, dev).map_err(errno_err)?;
                set_at_meta(&parent, name, &meta, true).map_err(errno_err)?;
            }
            other => {
                return Err(UnpackError::Unsupported {
                    entry: shown,
                    kind: other.as_byte(),
                });
            }
        }
        written.insert(path.to_path());
    }
    Ok(count)
}

/// A symlink or hard link target, bounded in length.
fn link_target<R: Read>(
    entry: &tar::Entry<'_, R>,
    options: &UnpackOptions,
    shown: &Path,
) -> Result<Vec<u8>, UnpackError> {
    let target = entry
        .link_name_bytes()
        .ok_or_else(|| UnpackError::Path {
            entry: shown.to_path_buf(),
            source: RootfsError::NoName(shown.to_path_buf()),
        })?
        .into_owned();
    if target.len() > options.max_path_len {
        return Err(UnpackError::PathTooLong {
            limit: options.max_path_len,
        });
    }
    Ok(target)
}

fn meta_of(header: &tar::Header, chown: bool) -> Option<Meta> {
    let mode = header.mode().ok()? & 0o7777;
    let owner = if chown {
        // `u32::MAX` is the "unchanged" sentinel of chown(2), never a real id.
        let uid = u32::try_from(header.uid().ok()?)
            .ok()
            .filter(|v| *v != u32::MAX)?;
        let gid = u32::try_from(header.gid().ok()?)
            .ok()
            .filter(|v| *v != u32::MAX)?;
        Some((Uid::from_raw(uid), Gid::from_raw(gid)))
    } else {
        None
    };
    let mtime = header.mtime().ok().and_then(|t| i64::try_from(t).ok());
    Some(Meta {
        mode: Mode::from_raw_mode(mode),
        owner,
        mtime,
    })
}

fn timestamps(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Owner first (chown clears set-id bits), then mode, then mtime.
fn set_fd_meta(fd: &OwnedFd, meta: &Meta, times: bool) -> rustix::io::Result<()> {
    if let Some((uid, gid)) = meta.owner {
        rustix::fs::fchown(fd, Some(uid), Some(gid))?;
    }
    rustix::fs::fchmod(fd, meta.mode)?;
    if let (true, Some(mtime)) = (times, meta.mtime) {
        rustix::fs::futimens(fd, &timestamps(mtime))?;
    }
    Ok(())
}

/// For entries that cannot be opened (symlinks, device nodes): all calls are no-follow or act on
/// a node this function's caller just created.
fn set_at_meta<Fd: AsFd>(dir: Fd, name: &[u8], meta: &Meta, chmod: bool) -> rustix::io::Result<()> {
    let dir = dir.as_fd();
    if let Some((uid, gid)) = meta.owner {
        rustix::fs::chownat(dir, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)?;
    }
    if chmod {
        rustix::fs::chmodat(dir, name, meta.mode, AtFlags::empty())?;
    }
    if let Some(mtime) = meta.mtime {
        rustix::fs::utimensat(dir, name, &timestamps(mtime), AtFlags::SYMLINK_NOFOLLOW)?;
    }
    Ok(())
}

enum WhiteoutError {
    Path(RootfsError),
    Io(rustix::io::Errno),
}

/// `.wh.<name>` removes `<name>` from lower layers; `.wh..wh..opq` empties its directory of
/// everything lower layers put there. Other `.wh..wh.` names are AUFS bookkeeping and ignored.
fn apply_whiteout(
    root: &Rootfs,
    path: &EntryPath,
    written: &HashSet<PathBuf>,
) -> Result<(), WhiteoutError> {
    let parent_path = path.parent_path();
    if path.name == OPAQUE_MARKER {
        let Some(dir) = root
            .resolve_dir(&path.parent, true)
            .map_err(WhiteoutError::Path)?
        else {
            return Ok(());
        };
        let keep = |child: &[u8]| written.contains(&parent_path.join(OsStr::from_bytes(child)));
        return clear_dir(&dir, 0, &keep).map_err(WhiteoutError::Io);
    }
    if path.name.starts_with(b".wh..wh.") {
        return Ok(());
    }
    let target = path.name.get(WHITEOUT_PREFIX.len()..).unwrap_or_default();
    if target.is_empty() || target == b"." || target == b".." {
        return Err(WhiteoutError::Path(RootfsError::NoName(path.to_path())));
    }
    if written.contains(&parent_path.join(OsStr::from_bytes(target))) {
        return Ok(());
    }
    let Some(dir) = root
        .resolve_dir(&path.parent, false)
        .map_err(WhiteoutError::Path)?
    else {
        return Ok(());
    };
    remove_all_at(&dir, target, 0).map_err(WhiteoutError::Io)
}
