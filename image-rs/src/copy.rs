//! Copying images between a registry and an OCI layout, for the owner's side (`tsuba image
//! encrypt`): fetch an image into a layout with every digest checked, and push an image from a
//! layout to a registry (blobs the registry lacks, then the config, then the manifest exactly as
//! stored, so its digest is kept).

use std::io::Read;
use std::path::Path;

use futures_util::stream;
use oci_client::Reference;
use oci_client::RegistryOperation;
use tokio::io::AsyncWriteExt;

use crate::digest::Digest;
use crate::layout::{LayoutError, OciLayout};
use crate::oci::{Descriptor, MAX_JSON_DOCUMENT, Manifest};
use crate::pull::{PullError, Registry};

/// Bytes read from a layout blob per upload chunk.
const PUSH_CHUNK: usize = 1 << 20;

/// Errors from copying images between a registry and a layout.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The registry reference does not parse, or names a digest where a tag is needed.
    #[error("invalid destination reference {0:?}: a registry reference with a tag is needed")]
    Reference(String),
    /// Reading or writing the layout failed.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The registry refused or failed a request (after retries).
    #[error("copying {what}")]
    Registry {
        /// The blob or manifest being copied.
        what: String,
        /// The cause.
        #[source]
        source: PullError,
    },
    /// A layout blob could not be read while uploading it.
    #[error("reading blob {0} for upload")]
    Read(Digest, #[source] std::io::Error),
}

impl Registry {
    /// Fetches `image` (resolved to this platform's manifest) into `layout`, named `reference`;
    /// every blob is checked against its digest before it gets its name in the layout. Returns
    /// the manifest's descriptor.
    pub async fn pull_to_layout(
        &self,
        image: &str,
        layout: &OciLayout,
        reference: &str,
    ) -> Result<Descriptor, CopyError> {
        let registry = |what: &str| {
            let what = what.to_owned();
            move |source| CopyError::Registry { what, source }
        };
        let resolved = self.resolve(image).await.map_err(registry(image))?;
        let parsed: Reference = image
            .parse()
            .map_err(|_| CopyError::Reference(image.chars().take(256).collect()))?;
        let manifest = &resolved.manifest;
        for desc in std::iter::once(&manifest.config).chain(&manifest.layers) {
            let path = layout.blob_path(&desc.digest);
            if path.exists() {
                continue;
            }
            let dir = path.parent().unwrap_or(Path::new("."));
            let spool = tempfile::NamedTempFile::new_in(dir)
                .map_err(crate::layout::io_err("create", dir))?;
            let file = spool
                .reopen()
                .map_err(crate::layout::io_err("open", spool.path()))?;
            let mut sink = tokio::fs::File::from_std(file);
            self.fetch_blob(&parsed, desc, &mut sink, None)
                .await
                .map_err(registry(&desc.digest.to_string()))?;
            sink.flush()
                .await
                .map_err(crate::layout::io_err("write", spool.path()))?;
            spool.persist(&path).map_err(|e| LayoutError::Io {
                op: "persist",
                path: path.clone(),
                source: e.error,
            })?;
        }
        let (digest, size) = layout.write_blob(&resolved.manifest_bytes)?;
        let desc = Descriptor {
            media_type: manifest
                .media_type
                .clone()
                .unwrap_or_else(|| crate::oci::MEDIA_TYPE_MANIFEST.to_owned()),
            digest,
            size,
            annotations: Default::default(),
            platform: None,
            extra: Default::default(),
        };
        layout.set_ref(reference, desc.clone())?;
        Ok(desc)
    }

    /// Pushes image `reference` of `layout` to `destination` (`host[:port]/repo:tag`): each blob
    /// the registry does not have yet, streamed from the layout, then the config, then the
    /// manifest bytes exactly as stored. Returns the manifest's digest.
    pub async fn push_layout(
        &self,
        layout: &OciLayout,
        reference: &str,
        destination: &str,
    ) -> Result<Digest, CopyError> {
        let bad_reference = || CopyError::Reference(destination.chars().take(256).collect());
        let dest: Reference = destination.parse().map_err(|_| bad_reference())?;
        if dest.digest().is_some() || dest.tag().is_none() {
            return Err(bad_reference());
        }
        let mdesc = layout.resolve(reference)?;
        let manifest: Manifest = layout.read_json(&mdesc, "manifest")?;
        let what = mdesc.digest.to_string();
        self.check_credentials_transport(&dest)
            .await
            .map_err(|source| CopyError::Registry {
                what: what.clone(),
                source,
            })?;
        self.client
            .auth(&dest, &self.auth, RegistryOperation::Push)
            .await
            .map_err(|source| CopyError::Registry {
                what: what.clone(),
                source: PullError::Registry {
                    what: "push authorisation".into(),
                    source,
                },
            })?;
        for desc in manifest
            .layers
            .iter()
            .chain(std::iter::once(&manifest.config))
        {
            self.push_blob_from_layout(layout, &dest, desc).await?;
        }
        let mut bytes = Vec::new();
        layout
            .open_blob_verified(&mdesc)?
            .take(MAX_JSON_DOCUMENT + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| CopyError::Read(mdesc.digest, e))?;
        self.retry(&what, self.options.request_timeout, async || {
            let content_type = mdesc
                .media_type
                .parse()
                .map_err(|_| PullError::MediaType(mdesc.media_type.chars().take(128).collect()))?;
            self.client
                .push_manifest_raw(&dest, bytes.clone(), content_type)
                .await
                .map(drop)
                .map_err(|source| PullError::Registry {
                    what: what.clone(),
                    source,
                })
        })
        .await
        .map_err(|source| CopyError::Registry {
            what: what.clone(),
            source,
        })?;
        tracing::info!(manifest = %mdesc.digest, destination, "image pushed");
        Ok(mdesc.digest)
    }

    async fn push_blob_from_layout(
        &self,
        layout: &OciLayout,
        dest: &Reference,
        desc: &Descriptor,
    ) -> Result<(), CopyError> {
        let what = desc.digest.to_string();
        let registry_error = |source| CopyError::Registry {
            what: what.clone(),
            source,
        };
        let exists = self
            .retry(&what, self.options.request_timeout, async || {
                self.client
                    .blob_exists(dest, &what)
                    .await
                    .map_err(|source| PullError::Registry {
                        what: what.clone(),
                        source,
                    })
            })
            .await
            .map_err(registry_error)?;
        if exists {
            tracing::debug!(blob = %desc.digest, "blob already in the registry");
            return Ok(());
        }
        // Checked once against its descriptor; the registry checks the digest of what it gets.
        drop(layout.open_blob_verified(desc)?);
        let path = layout.blob_path(&desc.digest);
        self.retry(&what, self.options.blob_timeout, async || {
            let file = std::fs::File::open(&path).map_err(PullError::Spool)?;
            self.client
                .push_blob_stream(dest, chunks(file), &what, Some(desc.size))
                .await
                .map(drop)
                .map_err(|source| PullError::Registry {
                    what: what.clone(),
                    source,
                })
        })
        .await
        .map_err(registry_error)?;
        tracing::debug!(blob = %desc.digest, size = desc.size, "blob pushed");
        Ok(())
    }
}

/// A file as a stream of chunks for upload. Reads are small and sequential (the owner's side,
/// not the guest), so they run inline.
fn chunks(
    file: std::fs::File,
) -> impl futures_util::Stream<Item = oci_client::errors::Result<bytes::Bytes>> + Send + 'static {
    stream::unfold(Some(file), |state| async move {
        let mut file = state?;
        let mut buf = vec![0u8; PUSH_CHUNK];
        match file.read(&mut buf) {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e.into()), None)),
        }
    })
}
