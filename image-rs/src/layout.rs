//! OCI image layouts on disk (`oci-layout`, `index.json`, `blobs/sha256/<hex>`): the input and
//! output of `tsuba image encrypt`, and what skopeo and umoci write.
//!
//! Blob paths are built only from parsed digests, so a descriptor cannot name a file outside
//! `blobs/`; every blob read back is checked against its digest and size.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::oci::{self, Descriptor, Index, MAX_JSON_DOCUMENT};

/// Errors from an OCI layout.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// A file operation failed.
    #[error("{op} {path:?}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A JSON document is malformed.
    #[error("malformed {0}")]
    Json(&'static str, #[source] serde_json::Error),
    /// A blob does not match its descriptor.
    #[error("blob {expected} does not match its descriptor (got {actual}, {size} bytes)")]
    DigestMismatch {
        /// From the descriptor.
        expected: Digest,
        /// Computed.
        actual: Digest,
        /// Bytes read.
        size: u64,
    },
    /// A JSON document is larger than allowed.
    #[error("document {0} larger than {MAX_JSON_DOCUMENT} bytes")]
    TooLarge(Digest),
    /// No manifest carries the reference name.
    #[error("no manifest named {0:?} in the layout")]
    NoSuchRef(String),
    /// An index has no manifest for this platform.
    #[error("no manifest for platform {0} in the index")]
    NoPlatform(String),
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> LayoutError + 'a {
    move |source| LayoutError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// An OCI layout directory.
#[derive(Debug, Clone)]
pub struct OciLayout {
    root: PathBuf,
}

impl OciLayout {
    /// Opens an existing layout.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, LayoutError> {
        let root = root.into();
        let marker = root.join("oci-layout");
        std::fs::metadata(&marker).map_err(io_err("open", &marker))?;
        Ok(Self { root })
    }

    /// Creates an empty layout (the directory may exist).
    pub fn create(root: impl Into<PathBuf>) -> Result<Self, LayoutError> {
        let root = root.into();
        let blobs = root.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).map_err(io_err("create", &blobs))?;
        let marker = root.join("oci-layout");
        std::fs::write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(io_err("write", &marker))?;
        let layout = Self { root };
        if !layout.root.join("index.json").exists() {
            layout.write_index(&Index {
                schema_version: 2,
                media_type: Some(oci::MEDIA_TYPE_INDEX.into()),
                manifests: vec![],
                annotations: Default::default(),
                extra: Default::default(),
            })?;
        }
        Ok(layout)
    }

    /// The path of a blob (which may not exist).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// The layout's `index.json`.
    pub fn index(&self) -> Result<Index, LayoutError> {
        let path = self.root.join("index.json");
        let f = File::open(&path).map_err(io_err("open", &path))?;
        let mut buf = Vec::new();
        f.take(MAX_JSON_DOCUMENT + 1)
            .read_to_end(&mut buf)
            .map_err(io_err("read", &path))?;
        serde_json::from_slice(&buf).map_err(|e| LayoutError::Json("index.json", e))
    }

    fn write_index(&self, index: &Index) -> Result<(), LayoutError> {
        let path = self.root.join("index.json");
        let json = serde_json::to_vec(index).map_err(|e| LayoutError::Json("index.json", e))?;
        std::fs::write(&path, json).map_err(io_err("write", &path))
    }

    /// The manifest descriptor named `reference`, resolving an index to this platform's entry.
    pub fn resolve(&self, reference: &str) -> Result<Descriptor, LayoutError> {
        let index = self.index()?;
        let desc = index
            .manifests
            .into_iter()
            .find(|d| {
                d.annotations
                    .get(oci::ANNOTATION_REF_NAME)
                    .map(String::as_str)
                    == Some(reference)
            })
            .ok_or_else(|| LayoutError::NoSuchRef(reference.chars().take(128).collect()))?;
        if oci::is_index(&desc.media_type) {
            let inner: Index = self.read_json(&desc, "image index")?;
            let want = oci::Platform::current();
            return inner
                .manifests
                .into_iter()
                .find(|d| d.platform.as_ref().is_some_and(|p| want.matches(p)))
                .ok_or_else(|| {
                    LayoutError::NoPlatform(format!("{}/{}", want.os, want.architecture))
                });
        }
        Ok(desc)
    }

    /// Reads and parses a JSON blob, checking its digest and the size limit.
    pub fn read_json<T: DeserializeOwned>(
        &self,
        desc: &Descriptor,
        what: &'static str,
    ) -> Result<T, LayoutError> {
        if desc.size > MAX_JSON_DOCUMENT {
            return Err(LayoutError::TooLarge(desc.digest));
        }
        let path = self.blob_path(&desc.digest);
        let f = File::open(&path).map_err(io_err("open", &path))?;
        let mut buf = Vec::new();
        f.take(MAX_JSON_DOCUMENT + 1)
            .read_to_end(&mut buf)
            .map_err(io_err("read", &path))?;
        let actual = Digest::of(&buf);
        if actual != desc.digest || buf.len() as u64 != desc.size {
            return Err(LayoutError::DigestMismatch {
                expected: desc.digest,
                actual,
                size: buf.len() as u64,
            });
        }
        serde_json::from_slice(&buf).map_err(|e| LayoutError::Json(what, e))
    }

    /// Opens a blob after checking, in one pass, that it matches `desc`; the file is rewound.
    pub fn open_blob_verified(&self, desc: &Descriptor) -> Result<File, LayoutError> {
        let path = self.blob_path(&desc.digest);
        let mut f = File::open(&path).map_err(io_err("open", &path))?;
        verify_file(&mut f, desc).map_err(|e| match e {
            VerifyError::Io(source) => LayoutError::Io {
                op: "read",
                path: path.clone(),
                source,
            },
            VerifyError::Mismatch { actual, size } => LayoutError::DigestMismatch {
                expected: desc.digest,
                actual,
                size,
            },
        })?;
        Ok(f)
    }

    /// Writes a blob; returns its digest and size.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<(Digest, u64), LayoutError> {
        let mut w = self.blob_writer()?;
        w.write_all(bytes).map_err(io_err("write", &self.root))?;
        w.commit()
    }

    /// A writer for a blob whose digest is known once written.
    pub fn blob_writer(&self) -> Result<BlobWriter, LayoutError> {
        let dir = self.root.join("blobs/sha256");
        let file = tempfile::NamedTempFile::new_in(&dir).map_err(io_err("create", &dir))?;
        Ok(BlobWriter {
            layout: self.clone(),
            file,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Serialises `value` as a blob.
    pub fn write_json<T: serde::Serialize>(&self, value: &T) -> Result<(Digest, u64), LayoutError> {
        let json = serde_json::to_vec(value).map_err(|e| LayoutError::Json("document", e))?;
        self.write_blob(&json)
    }

    /// Names `desc` as `reference` in `index.json`, replacing an entry of the same name.
    pub fn set_ref(&self, reference: &str, mut desc: Descriptor) -> Result<(), LayoutError> {
        let mut index = self.index()?;
        index.manifests.retain(|d| {
            d.annotations
                .get(oci::ANNOTATION_REF_NAME)
                .map(String::as_str)
                != Some(reference)
        });
        desc.annotations
            .insert(oci::ANNOTATION_REF_NAME.into(), reference.into());
        index.manifests.push(desc);
        self.write_index(&index)
    }
}

/// A blob being written; [`BlobWriter::commit`] moves it to its digest's path.
#[derive(Debug)]
pub struct BlobWriter {
    layout: OciLayout,
    file: tempfile::NamedTempFile,
    hasher: Sha256,
    size: u64,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or_default());
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter {
    /// Finishes the blob; returns its digest and size.
    pub fn commit(self) -> Result<(Digest, u64), LayoutError> {
        let digest = Digest::from_bytes(self.hasher.finalize().into());
        let path = self.layout.blob_path(&digest);
        self.file.persist(&path).map_err(|e| LayoutError::Io {
            op: "persist",
            path,
            source: e.error,
        })?;
        Ok((digest, self.size))
    }
}

/// Why a blob failed verification.
#[derive(Debug)]
pub(crate) enum VerifyError {
    Io(io::Error),
    Mismatch { actual: Digest, size: u64 },
}

/// Reads `f` to the end checking digest and size against `desc` (reading at most `size + 1`
/// bytes), then rewinds it.
pub(crate) fn verify_file<F: Read + Seek>(f: &mut F, desc: &Descriptor) -> Result<(), VerifyError> {
    let mut hasher = Sha256::new();
    let mut limited = f.by_ref().take(desc.size.saturating_add(1));
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = match limited.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(VerifyError::Io(e)),
        };
        hasher.update(buf.get(..n).unwrap_or_default());
        size += n as u64;
    }
    let actual = Digest::from_bytes(hasher.finalize().into());
    if actual != desc.digest || size != desc.size {
        return Err(VerifyError::Mismatch { actual, size });
    }
    f.rewind().map_err(VerifyError::Io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: oci::MEDIA_TYPE_MANIFEST.into(),
            digest,
            size,
            annotations: Default::default(),
            platform: None,
            extra: Default::default(),
        }
    }

    #[test]
    fn blobs_round_trip_and_tampering_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let l = OciLayout::create(dir.path()).unwrap();
        let (d, n) = l.write_blob(b"{\"a\":1}").unwrap();
        assert_eq!(d, Digest::of(b"{\"a\":1}"));
        let v: serde_json::Value = l.read_json(&desc(d, n), "doc").unwrap();
        assert_eq!(v["a"], 1);
        let mut f = l.open_blob_verified(&desc(d, n)).unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "{\"a\":1}");

        std::fs::write(l.blob_path(&d), b"{\"a\":2}").unwrap();
        assert!(matches!(
            l.read_json::<serde_json::Value>(&desc(d, n), "doc"),
            Err(LayoutError::DigestMismatch { .. })
        ));
        assert!(matches!(
            l.open_blob_verified(&desc(d, n)),
            Err(LayoutError::DigestMismatch { .. })
        ));
        // A size that lies is caught too.
        std::fs::write(l.blob_path(&d), b"{\"a\":1}").unwrap();
        assert!(matches!(
            l.open_blob_verified(&desc(d, n - 1)),
            Err(LayoutError::DigestMismatch { .. })
        ));
        assert!(matches!(
            l.read_json::<serde_json::Value>(&desc(d, MAX_JSON_DOCUMENT + 1), "doc"),
            Err(LayoutError::TooLarge(_))
        ));
    }

    #[test]
    fn refs_resolve_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let l = OciLayout::create(dir.path()).unwrap();
        let (d1, n1) = l.write_blob(b"1").unwrap();
        let (d2, n2) = l.write_blob(b"2").unwrap();
        l.set_ref("v1", desc(d1, n1)).unwrap();
        l.set_ref("v1", desc(d2, n2)).unwrap();
        assert_eq!(l.resolve("v1").unwrap().digest, d2);
        assert_eq!(l.index().unwrap().manifests.len(), 1);
        assert!(matches!(l.resolve("v2"), Err(LayoutError::NoSuchRef(_))));
    }
}
