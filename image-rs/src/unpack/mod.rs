//! Safe unpacking of layer tarballs into a rootfs directory.
//!
//! A layer is untrusted input. [`unpack_layer`] decompresses it (gzip, zstd or none), applies its
//! entries in order (whiteouts and opaque directories as the OCI layer spec defines them), keeps
//! every path inside the rootfs (see `rootfs.rs`), refuses device nodes unless allowed, bounds the
//! uncompressed size and the entry count, and checks the uncompressed digest against the image
//! config's `diff_id` once the stream is consumed.
//!
//! On any error the rootfs is left part-written and must be discarded by the caller; nothing is
//! ever written outside it.

mod apply;
mod rootfs;

use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, HashingReader, limit_hit};

pub use rootfs::RootfsError;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (`+gzip`, Docker's `tar.gzip`).
    Gzip,
    /// zstd (`+zstd`).
    Zstd,
}

impl Compression {
    /// The compression named by a layer media type (OCI or Docker, with or without
    /// `+encrypted`); `None` when the media type is not a layer type this crate knows.
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        let base = media_type.strip_suffix("+encrypted").unwrap_or(media_type);
        match base {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Some(Self::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Self::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Some(Self::Zstd),
            _ => None,
        }
    }

    /// Guesses the compression from the first bytes of a blob (gzip and zstd magic numbers).
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }
}

/// Whether device nodes (character and block) in a layer are created or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceNodes {
    /// Refuse the layer (the default: a container gets its devices from the runtime).
    #[default]
    Refuse,
    /// Create them (needs `CAP_MKNOD`).
    Create,
}

/// Whether file owners from the layer are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ownership {
    /// Apply uid/gid from the layer when running as root, else keep the caller's (the default).
    #[default]
    PreserveWhenRoot,
    /// Never change owners.
    Ignore,
}

/// Limits and choices for unpacking one layer.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Most uncompressed bytes (tar headers and contents) one layer may produce.
    pub max_uncompressed_bytes: u64,
    /// Most entries one layer may hold.
    pub max_entries: u64,
    /// Longest entry path or link target accepted, in bytes.
    pub max_path_len: usize,
    /// Device node handling.
    pub devices: DeviceNodes,
    /// Owner handling.
    pub ownership: Ownership,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self {
            max_uncompressed_bytes: 8 << 30,
            max_entries: 1_000_000,
            max_path_len: 4096,
            devices: DeviceNodes::default(),
            ownership: Ownership::default(),
        }
    }
}

/// Errors from unpacking a layer.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// Reading or decompressing the layer stream failed.
    #[error("reading the layer stream")]
    Read(#[source] io::Error),
    /// The uncompressed layer is larger than allowed (decompression bomb).
    #[error("layer exceeds the limit of {limit} uncompressed bytes")]
    TooLarge {
        /// The limit that was hit.
        limit: u64,
    },
    /// The layer has more entries than allowed.
    #[error("layer exceeds the limit of {limit} entries")]
    TooManyEntries {
        /// The limit that was hit.
        limit: u64,
    },
    /// An entry path or link target is longer than allowed.
    #[error("entry path longer than {limit} bytes")]
    PathTooLong {
        /// The limit that was hit.
        limit: usize,
    },
    /// An entry path or link target cannot be placed inside the rootfs.
    #[error("unsafe entry {entry:?}")]
    Path {
        /// The entry's path as written in the layer.
        entry: PathBuf,
        /// Why.
        #[source]
        source: RootfsError,
    },
    /// A device node in a layer that is not allowed to create them.
    #[error("device node {0:?} refused")]
    DeviceRefused(PathBuf),
    /// A tar entry type this crate does not create.
    #[error("unsupported entry type {kind:?} for {entry:?}")]
    Unsupported {
        /// The entry's path.
        entry: PathBuf,
        /// The tar type byte.
        kind: u8,
    },
    /// A uid or gid that no file can have.
    #[error("invalid owner id in {0:?}")]
    InvalidOwner(PathBuf),
    /// Writing an entry into the rootfs failed.
    #[error("writing {entry:?}")]
    Write {
        /// The entry's path.
        entry: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The uncompressed layer does not match the config's `diff_id`.
    #[error("layer diff_id mismatch: expected {expected}, got {actual}")]
    DiffIdMismatch {
        /// From the image config.
        expected: Digest,
        /// Computed over the uncompressed stream.
        actual: Digest,
    },
}

/// What unpacking one layer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerStats {
    /// Entries applied (including whiteouts).
    pub entries: u64,
    /// Uncompressed bytes read.
    pub uncompressed_bytes: u64,
    /// The uncompressed digest (the layer's `diff_id`).
    pub diff_id: Digest,
}

/// Unpacks one layer from `blob` into the existing directory `rootfs`, applying it on top of what
/// earlier layers left there, and checks the uncompressed digest against `expected_diff_id`.
pub fn unpack_layer<R: Read>(
    blob: R,
    compression: Compression,
    rootfs: &Path,
    expected_diff_id: Option<&Digest>,
    options: &UnpackOptions,
) -> Result<LayerStats, UnpackError> {
    let root = rootfs::Rootfs::open(rootfs).map_err(|source| UnpackError::Path {
        entry: PathBuf::from("/"),
        source,
    })?;
    let decompressed: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(blob),
        // Multi-member: parallel gzip writers (umoci, pigz) emit several members.
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(blob)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(blob).map_err(UnpackError::Read)?)
        }
    };
    let hashing = HashingReader::new(decompressed, options.max_uncompressed_bytes);
    let flag = hashing.limit_flag();
    let too_large = |e: io::Error| {
        if limit_hit(&flag) {
            UnpackError::TooLarge {
                limit: options.max_uncompressed_bytes,
            }
        } else {
            UnpackError::Read(e)
        }
    };
    let mut archive = tar::Archive::new(hashing);
    let entries = apply::apply_entries(&mut archive, &root, options).map_err(|e| match e {
        UnpackError::Read(io) | UnpackError::Write { source: io, .. } if limit_hit(&flag) => {
            too_large(io)
        }
        e => e,
    })?;
    let (diff_id, uncompressed_bytes) = archive.into_inner().finish().map_err(too_large)?;
    if let Some(expected) = expected_diff_id
        && *expected != diff_id
    {
        return Err(UnpackError::DiffIdMismatch {
            expected: *expected,
            actual: diff_id,
        });
    }
    tracing::debug!(entries, uncompressed_bytes, %diff_id, "layer unpacked");
    Ok(LayerStats {
        entries,
        uncompressed_bytes,
        diff_id,
    })
}

/// Like [`unpack_layer`], with the compression sniffed from the blob's first bytes.
pub fn unpack_layer_sniffed<R: Read>(
    blob: R,
    rootfs: &Path,
    expected_diff_id: Option<&Digest>,
    options: &UnpackOptions,
) -> Result<LayerStats, UnpackError> {
    let mut buffered = BufReader::new(blob);
    let compression = Compression::sniff(buffered.fill_buf().map_err(UnpackError::Read)?);
    unpack_layer(buffered, compression, rootfs, expected_diff_id, options)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    /// Appends an entry whose name is written into the header bytes as given, bypassing the tar
    /// crate's own path checks, as an attacker's layer would.
    fn raw(
        b: &mut tar::Builder<Vec<u8>>,
        kind: tar::EntryType,
        name: &str,
        link: &str,
        data: &[u8],
    ) {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(1234);
        h.set_gid(5678);
        h.set_mtime(1_600_000_000);
        {
            let u = h.as_ustar_mut().unwrap();
            u.name[..name.len()].copy_from_slice(name.as_bytes());
            u.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        raw(b, tar::EntryType::Regular, name, "", data);
    }

    fn dir(b: &mut tar::Builder<Vec<u8>>, name: &str) {
        raw(b, tar::EntryType::Directory, name, "", b"");
    }

    fn layer(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        f(&mut b);
        b.into_inner().unwrap()
    }

    fn unpack(tar: &[u8], root: &Path) -> Result<LayerStats, UnpackError> {
        unpack_layer(
            tar,
            Compression::None,
            root,
            None,
            &UnpackOptions::default(),
        )
    }

    /// Lists every path under `dir`, to prove that nothing was written there.
    fn tree(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.symlink_metadata().unwrap().is_dir() {
                    stack.push(p.clone());
                }
                out.push(p);
            }
        }
        out.sort();
        out
    }

    #[test]
    fn unpacks_files_dirs_links_with_metadata_and_checks_diff_id() {
        let tar = layer(|b| {
            dir(b, "./");
            dir(b, "etc/");
            file(b, "etc/hosts", b"127.0.0.1 localhost\n");
            raw(b, tar::EntryType::Symlink, "etc/alias", "hosts", b"");
            raw(b, tar::EntryType::Link, "etc/hard", "etc/hosts", b"");
            raw(b, tar::EntryType::Fifo, "etc/pipe", "", b"");
            file(b, "/abs/name", b"rooted");
        });
        let root = tempfile::tempdir().unwrap();
        let expected = Digest::of(&tar);
        let stats = unpack_layer(
            &tar[..],
            Compression::None,
            root.path(),
            Some(&expected),
            &UnpackOptions::default(),
        )
        .unwrap();
        assert_eq!(stats.entries, 7);
        assert_eq!(stats.diff_id, expected);
        assert_eq!(stats.uncompressed_bytes, tar.len() as u64);
        let r = root.path();
        assert_eq!(
            std::fs::read(r.join("etc/hosts")).unwrap(),
            b"127.0.0.1 localhost\n"
        );
        assert_eq!(
            std::fs::read_link(r.join("etc/alias")).unwrap(),
            PathBuf::from("hosts")
        );
        let (a, b) = (
            r.join("etc/hosts").metadata().unwrap(),
            r.join("etc/hard").metadata().unwrap(),
        );
        assert_eq!(a.ino(), b.ino());
        assert_eq!(a.permissions().mode() & 0o7777, 0o644);
        assert_eq!(a.mtime(), 1_600_000_000);
        {
            use std::os::unix::fs::FileTypeExt;
            assert!(
                r.join("etc/pipe")
                    .symlink_metadata()
                    .unwrap()
                    .file_type()
                    .is_fifo()
            );
        }
        assert_eq!(std::fs::read(r.join("abs/name")).unwrap(), b"rooted");
        if rustix::process::geteuid().is_root() {
            assert_eq!((a.uid(), a.gid()), (1234, 5678));
        }
    }

    #[test]
    fn gzip_and_zstd_layers_unpack_and_hash_the_uncompressed_stream() {
        let tar = layer(|b| file(b, "f", &[42u8; 10_000]));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        for (blob, c) in [(gz, Compression::Gzip), (zst, Compression::Zstd)] {
            assert_eq!(Compression::sniff(&blob), c);
            let root = tempfile::tempdir().unwrap();
            let s = unpack_layer_sniffed(
                &blob[..],
                root.path(),
                Some(&Digest::of(&tar)),
                &UnpackOptions::default(),
            )
            .unwrap();
            assert_eq!(s.diff_id, Digest::of(&tar));
            assert_eq!(
                std::fs::read(root.path().join("f")).unwrap(),
                vec![42u8; 10_000]
            );
        }
    }

    #[test]
    fn multi_member_gzip_is_read_to_the_end() {
        let tar = layer(|b| {
            file(b, "a", &[1u8; 3000]);
            file(b, "b", &[2u8; 3000]);
        });
        let (first, second) = tar.split_at(2048);
        let mut blob = Vec::new();
        for part in [first, second] {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(part).unwrap();
            blob.extend(gz.finish().unwrap());
        }
        let root = tempfile::tempdir().unwrap();
        let s = unpack_layer(
            &blob[..],
            Compression::Gzip,
            root.path(),
            Some(&Digest::of(&tar)),
            &UnpackOptions::default(),
        )
        .unwrap();
        assert_eq!(s.diff_id, Digest::of(&tar));
        assert_eq!(
            std::fs::read(root.path().join("b")).unwrap(),
            vec![2u8; 3000]
        );
    }

    #[test]
    fn media_types_map_to_compression() {
        use Compression as C;
        assert_eq!(
            C::from_media_type("application/vnd.oci.image.layer.v1.tar+gzip+encrypted"),
            Some(C::Gzip)
        );
        assert_eq!(
            C::from_media_type("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(C::Zstd)
        );
        assert_eq!(
            C::from_media_type("application/vnd.oci.image.layer.v1.tar"),
            Some(C::None)
        );
        assert_eq!(
            C::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(C::Gzip)
        );
        assert_eq!(C::from_media_type("application/json"), None);
    }

    #[test]
    fn diff_id_mismatch_is_refused() {
        let tar = layer(|b| file(b, "f", b"x"));
        let root = tempfile::tempdir().unwrap();
        let wrong = Digest::of(b"something else");
        let err = unpack_layer(
            &tar[..],
            Compression::None,
            root.path(),
            Some(&wrong),
            &UnpackOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, UnpackError::DiffIdMismatch { expected, .. } if expected == wrong));
    }

    #[test]
    fn whiteouts_and_opaque_dirs_hide_lower_layers_only() {
        let root = tempfile::tempdir().unwrap();
        let lower = layer(|b| {
            dir(b, "a/");
            file(b, "a/b", b"1");
            file(b, "a/c", b"2");
            dir(b, "d/");
            file(b, "d/e", b"3");
            dir(b, "d/sub/");
            file(b, "d/sub/deep", b"4");
        });
        unpack(&lower, root.path()).unwrap();
        let upper = layer(|b| {
            file(b, "a/.wh.b", b"");
            dir(b, "d/");
            file(b, "d/new", b"5");
            file(b, "d/.wh..wh..opq", b"");
            file(b, "a/.wh..wh.plnk", b"");
        });
        unpack(&upper, root.path()).unwrap();
        let r = root.path();
        assert!(!r.join("a/b").exists());
        assert!(r.join("a/c").exists());
        assert!(!r.join("d/e").exists());
        assert!(!r.join("d/sub").exists());
        assert_eq!(std::fs::read(r.join("d/new")).unwrap(), b"5");
        assert!(!r.join("a/.wh..wh.plnk").exists());
        assert!(!r.join("a/.wh.b").exists());
    }

    #[test]
    fn later_entries_replace_earlier_ones_of_another_kind() {
        let root = tempfile::tempdir().unwrap();
        unpack(
            &layer(|b| {
                dir(b, "x/");
                file(b, "x/y", b"1");
                file(b, "z", b"f");
            }),
            root.path(),
        )
        .unwrap();
        unpack(
            &layer(|b| {
                file(b, "x", b"now a file");
                dir(b, "z/");
            }),
            root.path(),
        )
        .unwrap();
        assert_eq!(std::fs::read(root.path().join("x")).unwrap(), b"now a file");
        assert!(root.path().join("z").is_dir());
    }

    #[test]
    fn dot_dot_entries_are_refused_and_nothing_escapes() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("rootfs");
        std::fs::create_dir(&root).unwrap();
        for name in ["../escaped", "a/../../escaped", "./../escaped"] {
            let tar = layer(|b| file(b, name, b"pwned"));
            let err = unpack(&tar, &root).unwrap_err();
            assert!(
                matches!(
                    err,
                    UnpackError::Path {
                        source: RootfsError::Escapes(_),
                        ..
                    }
                ),
                "{name}: {err}"
            );
        }
        assert_eq!(tree(base.path()), vec![root.clone()]);
    }

    #[test]
    fn writes_through_symlinks_stay_inside_the_rootfs() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim"), b"original").unwrap();
        let root = tempfile::tempdir().unwrap();
        let out = outside.path().to_str().unwrap();
        let tar = layer(|b| {
            // A directory symlink to the host path, then a write through it.
            raw(b, tar::EntryType::Symlink, "evil", out, b"");
            file(b, "evil/pwned", b"x");
            // A relative symlink climbing far up, then a write through it.
            raw(
                b,
                tar::EntryType::Symlink,
                "up",
                "../../../../../../../../",
                b"",
            );
            file(b, &format!("up{out}/pwned2"), b"x");
            // A symlink to a host file, then a regular file of the same name.
            raw(
                b,
                tar::EntryType::Symlink,
                "victim",
                &format!("{out}/victim"),
                b"",
            );
            file(b, "victim", b"overwritten?");
        });
        unpack(&tar, root.path()).unwrap();
        assert_eq!(
            std::fs::read(outside.path().join("victim")).unwrap(),
            b"original"
        );
        assert_eq!(tree(outside.path()), vec![outside.path().join("victim")]);
        let inner = root.path().join(out.trim_start_matches('/'));
        assert!(inner.join("pwned").is_file());
        assert!(inner.join("pwned2").is_file());
        assert_eq!(
            std::fs::read(root.path().join("victim")).unwrap(),
            b"overwritten?"
        );
    }

    #[test]
    fn hard_links_cannot_reach_outside() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"host secret").unwrap();
        let out = outside.path().to_str().unwrap();
        let root = tempfile::tempdir().unwrap();

        let tar = layer(|b| raw(b, tar::EntryType::Link, "h", "../../../../etc/passwd", b""));
        let err = unpack(&tar, root.path()).unwrap_err();
        assert!(
            matches!(
                err,
                UnpackError::Path {
                    source: RootfsError::Escapes(_),
                    ..
                }
            ),
            "{err}"
        );

        // Absolute and via-symlink targets resolve inside the rootfs, where nothing is.
        let tar = layer(|b| raw(b, tar::EntryType::Link, "h", &format!("{out}/secret"), b""));
        assert!(unpack(&tar, root.path()).is_err());
        let tar = layer(|b| {
            raw(b, tar::EntryType::Symlink, "s", out, b"");
            raw(b, tar::EntryType::Link, "h", "s/secret", b"");
        });
        assert!(unpack(&tar, root.path()).is_err());
        assert!(!root.path().join("h").exists());
        assert_eq!(outside.path().join("secret").metadata().unwrap().nlink(), 1);
    }

    #[test]
    fn device_nodes_are_refused_unless_allowed() {
        let root = tempfile::tempdir().unwrap();
        let mk = || {
            layer(|b| {
                let mut h = tar::Header::new_ustar();
                h.set_entry_type(tar::EntryType::Char);
                h.set_path("dev/null").unwrap();
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
                h.set_mode(0o666);
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(0);
                h.set_size(0);
                h.set_cksum();
                b.append(&h, &b""[..]).unwrap();
            })
        };
        let err = unpack(&mk(), root.path()).unwrap_err();
        assert!(matches!(err, UnpackError::DeviceRefused(_)), "{err}");
        assert!(!root.path().join("dev/null").exists());
        if rustix::process::geteuid().is_root() {
            let opts = UnpackOptions {
                devices: DeviceNodes::Create,
                ..UnpackOptions::default()
            };
            match unpack_layer(&mk()[..], Compression::None, root.path(), None, &opts) {
                Ok(_) => {
                    use std::os::unix::fs::FileTypeExt;
                    let m = root.path().join("dev/null").symlink_metadata().unwrap();
                    assert!(m.file_type().is_char_device());
                    assert_eq!(m.rdev(), rustix::fs::makedev(1, 3));
                }
                // A sandbox without CAP_MKNOD still refuses, with the kernel's error.
                Err(UnpackError::Write { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn decompression_bomb_hits_the_size_limit() {
        let tar = layer(|b| file(b, "zeros", &vec![0u8; 32 << 20]));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        assert!(gz.len() < 100 << 10, "the bomb is small: {}", gz.len());
        let root = tempfile::tempdir().unwrap();
        let opts = UnpackOptions {
            max_uncompressed_bytes: 4 << 20,
            ..UnpackOptions::default()
        };
        let err = unpack_layer(&gz[..], Compression::Gzip, root.path(), None, &opts).unwrap_err();
        assert!(
            matches!(err, UnpackError::TooLarge { limit } if limit == 4 << 20),
            "{err}"
        );
        let written = root
            .path()
            .join("zeros")
            .metadata()
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(written <= 4 << 20);
    }

    #[test]
    fn entry_count_and_path_length_are_bounded() {
        let tar = layer(|b| (0..20).for_each(|i| file(b, &format!("f{i}"), b"")));
        let root = tempfile::tempdir().unwrap();
        let opts = UnpackOptions {
            max_entries: 10,
            ..UnpackOptions::default()
        };
        let err = unpack_layer(&tar[..], Compression::None, root.path(), None, &opts).unwrap_err();
        assert!(matches!(err, UnpackError::TooManyEntries { limit: 10 }));

        let opts = UnpackOptions {
            max_path_len: 8,
            ..UnpackOptions::default()
        };
        let tar = layer(|b| file(b, "a-long-name", b""));
        let err = unpack_layer(&tar[..], Compression::None, root.path(), None, &opts).unwrap_err();
        assert!(matches!(err, UnpackError::PathTooLong { limit: 8 }));
    }

    #[test]
    fn truncated_and_garbage_streams_are_errors() {
        let tar = layer(|b| file(b, "f", &[1u8; 5000]));
        let root = tempfile::tempdir().unwrap();
        assert!(unpack(&tar[..3000], root.path()).is_err());
        let root = tempfile::tempdir().unwrap();
        let garbage = vec![0xabu8; 4096];
        assert!(unpack(&garbage, root.path()).is_err());
        assert!(
            unpack_layer(
                &garbage[..],
                Compression::Gzip,
                root.path(),
                None,
                &UnpackOptions::default()
            )
            .is_err()
        );
    }

    #[test]
    fn sparse_entries_are_unsupported() {
        let tar = layer(|b| raw(b, tar::EntryType::GNUSparse, "s", "", b""));
        let root = tempfile::tempdir().unwrap();
        assert!(matches!(
            unpack(&tar, root.path()),
            Err(UnpackError::Unsupported { kind: b'S', .. }) | Err(UnpackError::Read(_))
        ));
    }
}
