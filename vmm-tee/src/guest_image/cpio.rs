//! A reproducible `newc` cpio writer: the initramfs format the kernel unpacks.
//!
//! Reproducible means the bytes depend only on the entries: callers add entries in any order,
//! [`Archive::finish`] sorts them by path, and every header carries fixed owners, a fixed mtime and
//! inode numbers assigned in that sorted order.

use std::collections::BTreeMap;
use std::io::{self, Write};

use thiserror::Error;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file with its contents.
    File(Vec<u8>),
    /// A symbolic link to the target.
    Symlink(String),
    /// A character device (major, minor).
    CharDevice(u32, u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: EntryKind,
    mode: u32,
}

/// An entry could not be added.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CpioError {
    /// The path is empty, absolute, or contains `.`/`..` components.
    #[error("initrd path {0:?} must be relative, without . or .. components")]
    BadPath(String),
    /// Two entries with one path and different contents.
    #[error("initrd path {0:?} added twice with different contents")]
    Conflict(String),
    /// A field does not fit the format's 32-bit fields.
    #[error("initrd entry {0:?} is too large for the cpio format")]
    TooLarge(String),
}

/// The archive being built.
#[derive(Debug, Default)]
pub(crate) struct Archive {
    entries: BTreeMap<String, Entry>,
    mtime: u32,
}

const NEWC_MAGIC: &str = "070701";
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

impl Archive {
    /// An empty archive whose entries all carry `mtime` (seconds since the epoch).
    pub(crate) fn new(mtime: u32) -> Self {
        Archive {
            entries: BTreeMap::new(),
            mtime,
        }
    }

    /// Adds an entry, creating its parent directories (mode 0755) as needed.
    pub(crate) fn add(&mut self, path: &str, kind: EntryKind, mode: u32) -> Result<(), CpioError> {
        let path = path.trim_start_matches('/');
        if path.is_empty()
            || path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(CpioError::BadPath(path.to_owned()));
        }
        let mut parent = String::new();
        let components: Vec<&str> = path.split('/').collect();
        if let Some((_, dirs)) = components.split_last() {
            for dir in dirs {
                if !parent.is_empty() {
                    parent.push('/');
                }
                parent.push_str(dir);
                self.insert(&parent, EntryKind::Dir, 0o755)?;
            }
        }
        self.insert(path, kind, mode)
    }

    fn insert(&mut self, path: &str, kind: EntryKind, mode: u32) -> Result<(), CpioError> {
        let entry = Entry {
            kind,
            mode: mode & 0o7777,
        };
        match self.entries.get(path) {
            Some(existing) if *existing == entry => Ok(()),
            // An implied parent directory may later be added explicitly with another mode.
            Some(existing) if existing.kind == EntryKind::Dir && entry.kind == EntryKind::Dir => {
                self.entries.insert(path.to_owned(), entry);
                Ok(())
            }
            Some(_) => Err(CpioError::Conflict(path.to_owned())),
            None => {
                self.entries.insert(path.to_owned(), entry);
                Ok(())
            }
        }
    }

    /// Writes the archive, entries sorted by path, then the trailer.
    pub(crate) fn finish(&self, out: &mut impl Write) -> Result<(), FinishError> {
        let mut written = 0usize;
        for (ino, (path, entry)) in (1u32..).zip(&self.entries) {
            let (file_type, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match &entry.kind {
                EntryKind::Dir => (S_IFDIR, 2, &[], (0, 0)),
                EntryKind::File(bytes) => (S_IFREG, 1, bytes, (0, 0)),
                EntryKind::Symlink(target) => (S_IFLNK, 1, target.as_bytes(), (0, 0)),
                EntryKind::CharDevice(major, minor) => (S_IFCHR, 1, &[], (*major, *minor)),
            };
            let size = u32::try_from(data.len()).map_err(|_| CpioError::TooLarge(path.clone()))?;
            let header = Header {
                ino,
                mode: file_type | entry.mode,
                nlink,
                mtime: self.mtime,
                size,
                rdev,
                name: path,
            };
            written += header.write(out)?;
            out.write_all(data)?;
            written += data.len();
            written += pad4(out, written)?;
        }
        let trailer = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime: 0,
            size: 0,
            rdev: (0, 0),
            name: "TRAILER!!!",
        };
        written += trailer.write(out)?;
        pad4(out, written)?;
        Ok(())
    }
}

/// Writing the archive failed.
#[derive(Debug, Error)]
pub enum FinishError {
    /// An entry does not fit the format.
    #[error(transparent)]
    Cpio(#[from] CpioError),
    /// The output could not be written.
    #[error("cannot write the initrd")]
    Io(#[from] io::Error),
}

struct Header<'a> {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    size: u32,
    rdev: (u32, u32),
    name: &'a str,
}

impl Header<'_> {
    fn write(&self, out: &mut impl Write) -> Result<usize, FinishError> {
        let namesize = u32::try_from(self.name.len() + 1)
            .map_err(|_| CpioError::TooLarge(self.name.to_owned()))?;
        // Fields: ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor
        // namesize check, each eight hex digits.
        let header = format!(
            "{NEWC_MAGIC}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            self.mode,
            0,
            0,
            self.nlink,
            self.mtime,
            self.size,
            0,
            0,
            self.rdev.0,
            self.rdev.1,
            namesize,
            0
        );
        out.write_all(header.as_bytes())?;
        out.write_all(self.name.as_bytes())?;
        out.write_all(&[0])?;
        let written = header.len() + self.name.len() + 1;
        Ok(written + pad4(out, written)?)
    }
}

/// Pads the stream to a multiple of four bytes; returns the padding written.
fn pad4(out: &mut impl Write, written: usize) -> io::Result<usize> {
    let pad = (4 - written % 4) % 4;
    out.write_all(&[0u8; 3][..pad])?;
    Ok(pad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(archive: &Archive) -> Vec<u8> {
        let mut out = Vec::new();
        archive.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn order_of_adding_does_not_change_the_bytes() {
        let mut a = Archive::new(0);
        a.add("init", EntryKind::File(b"agent".to_vec()), 0o755)
            .unwrap();
        a.add("lib/modules/x.ko", EntryKind::File(b"ko".to_vec()), 0o644)
            .unwrap();
        let mut b = Archive::new(0);
        b.add("lib/modules/x.ko", EntryKind::File(b"ko".to_vec()), 0o644)
            .unwrap();
        b.add("init", EntryKind::File(b"agent".to_vec()), 0o755)
            .unwrap();
        assert_eq!(bytes(&a), bytes(&b));
    }

    #[test]
    fn layout_matches_the_newc_format() {
        let mut a = Archive::new(0x5eed);
        a.add("init", EntryKind::File(b"hello".to_vec()), 0o755)
            .unwrap();
        let out = bytes(&a);
        // Header: magic, ino 1, mode 0100755, uid 0, gid 0, nlink 1, mtime, size 5, ...
        let header = std::str::from_utf8(&out[..110]).unwrap();
        assert_eq!(&header[..6], "070701");
        assert_eq!(&header[6..14], "00000001");
        assert_eq!(&header[14..22], "000081ed");
        assert_eq!(&header[22..38], "0000000000000000");
        assert_eq!(&header[38..46], "00000001");
        assert_eq!(&header[46..54], "00005eed");
        assert_eq!(&header[54..62], "00000005");
        assert_eq!(&header[94..102], "00000005"); // namesize "init\0"
        // Name, padded so the data starts 4-aligned: 110 + 5 = 115 -> 116.
        assert_eq!(&out[110..116], b"init\0\0");
        assert_eq!(&out[116..121], b"hello");
        assert!(out.windows(10).any(|w| w == b"TRAILER!!!"));
        assert_eq!(out.len() % 4, 0);
    }

    #[test]
    fn parents_are_implied_and_devices_carry_rdev() {
        let mut a = Archive::new(0);
        a.add("dev/console", EntryKind::CharDevice(5, 1), 0o600)
            .unwrap();
        let out = String::from_utf8_lossy(&bytes(&a)).into_owned();
        assert!(out.contains("dev\0"));
        // rdevmajor 5, rdevminor 1 for the console entry.
        assert!(out.contains("0000000500000001"));
    }

    #[test]
    fn bad_paths_and_conflicts_are_refused() {
        let mut a = Archive::new(0);
        for bad in ["", "a/../b", "a//b", "./a"] {
            assert!(matches!(
                a.add(bad, EntryKind::Dir, 0o755),
                Err(CpioError::BadPath(_))
            ));
        }
        a.add("x", EntryKind::File(b"1".to_vec()), 0o644).unwrap();
        a.add("x", EntryKind::File(b"1".to_vec()), 0o644).unwrap();
        assert_eq!(
            a.add("x", EntryKind::File(b"2".to_vec()), 0o644),
            Err(CpioError::Conflict("x".into()))
        );
    }
}
