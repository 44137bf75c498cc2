//! Whole-image operations on OCI layouts: unpack (decrypting as needed), decrypt into another
//! layout, and encrypt into another layout (the owner's side).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::digest::Digest;
use crate::layout::{LayoutError, OciLayout};
use crate::oci::{self, Descriptor, ImageConfig, Manifest};
use crate::ocicrypt::{self, DecryptConfig, LayerKey, OcicryptError, Recipients};
use crate::unpack::{self, Compression, LayerStats, UnpackError, UnpackOptions};

/// Errors from whole-image operations.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Reading or writing the layout failed.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// Unwrapping or applying a layer key failed.
    #[error("layer {layer}")]
    Ocicrypt {
        /// The layer's digest.
        layer: Digest,
        /// The cause.
        #[source]
        source: OcicryptError,
    },
    /// Unpacking a layer failed.
    #[error("layer {layer}")]
    Unpack {
        /// The layer's digest.
        layer: Digest,
        /// The cause.
        #[source]
        source: UnpackError,
    },
    /// The config's `diff_ids` do not pair up with the manifest's layers.
    #[error("manifest has {layers} layers but the config lists {diff_ids} diff_ids")]
    LayerCount {
        /// Layers in the manifest.
        layers: usize,
        /// `diff_ids` in the config.
        diff_ids: usize,
    },
    /// A layer media type this crate does not unpack.
    #[error("unsupported layer media type {0:?}")]
    MediaType(String),
    /// Copying bytes failed.
    #[error("copying layer {layer}")]
    Io {
        /// The layer's digest.
        layer: Digest,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The key for `desc`, if it is encrypted.
pub async fn layer_key(
    desc: &Descriptor,
    config: &DecryptConfig,
) -> Result<Option<LayerKey>, ImageError> {
    if !ocicrypt::is_encrypted(&desc.media_type) {
        return Ok(None);
    }
    ocicrypt::unwrap_layer_key(&desc.annotations, config)
        .await
        .map(Some)
        .map_err(|source| ImageError::Ocicrypt {
            layer: desc.digest,
            source,
        })
}

/// The plaintext of a layer blob that was already checked against its descriptor: the blob
/// itself, or, for an encrypted layer, its decryption after the HMAC matched.
pub fn layer_plaintext(
    blob: File,
    desc: &Descriptor,
    key: Option<&LayerKey>,
) -> Result<Box<dyn Read + Send>, ImageError> {
    match key {
        None if ocicrypt::is_encrypted(&desc.media_type) => Err(ImageError::Ocicrypt {
            layer: desc.digest,
            source: OcicryptError::NoWrappedKeys,
        }),
        None => Ok(Box::new(blob)),
        Some(k) => k
            .open(blob)
            .map(|p| Box::new(p) as Box<dyn Read + Send>)
            .map_err(|e| ImageError::Ocicrypt {
                layer: desc.digest,
                source: e.into(),
            }),
    }
}

/// Verifies, decrypts when needed, and unpacks one layer blob on local storage into `rootfs`.
pub fn apply_layer(
    blob: File,
    desc: &Descriptor,
    key: Option<&LayerKey>,
    diff_id: &Digest,
    rootfs: &Path,
    options: &UnpackOptions,
) -> Result<LayerStats, ImageError> {
    let media = ocicrypt::decrypted_media_type(&desc.media_type);
    let compression = Compression::from_media_type(media)
        .ok_or_else(|| ImageError::MediaType(media.chars().take(128).collect()))?;
    let plain = layer_plaintext(blob, desc, key)?;
    unpack::unpack_layer(plain, compression, rootfs, Some(diff_id), options).map_err(|source| {
        ImageError::Unpack {
            layer: desc.digest,
            source,
        }
    })
}

/// What unpacking an image did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageStats {
    /// The manifest's digest.
    pub manifest: Digest,
    /// Per layer, lowest first.
    pub layers: Vec<LayerStats>,
    /// The image config (its `config` member holds the entrypoint, command, environment,
    /// working directory and user a runtime starts the image with).
    pub config: ImageConfig,
}

/// Unpacks image `reference` of `layout` into the existing directory `rootfs`.
pub async fn unpack_from_layout(
    layout: &OciLayout,
    reference: &str,
    decrypt: &DecryptConfig,
    rootfs: &Path,
    options: &UnpackOptions,
) -> Result<ImageStats, ImageError> {
    let mdesc = layout.resolve(reference)?;
    let manifest: Manifest = layout.read_json(&mdesc, "manifest")?;
    let config: ImageConfig = layout.read_json(&manifest.config, "image config")?;
    check_layer_count(&manifest, &config)?;
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for (desc, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
        let key = layer_key(desc, decrypt).await?;
        let blob = layout.open_blob_verified(desc)?;
        layers.push(apply_layer(
            blob,
            desc,
            key.as_ref(),
            diff_id,
            rootfs,
            options,
        )?);
        tracing::info!(layer = %desc.digest, "layer applied");
    }
    Ok(ImageStats {
        manifest: mdesc.digest,
        layers,
        config,
    })
}

fn check_layer_count(manifest: &Manifest, config: &ImageConfig) -> Result<(), ImageError> {
    if manifest.layers.len() != config.rootfs.diff_ids.len() {
        return Err(ImageError::LayerCount {
            layers: manifest.layers.len(),
            diff_ids: config.rootfs.diff_ids.len(),
        });
    }
    Ok(())
}

fn strip_enc_annotations(a: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    a.iter()
        .filter(|(k, _)| !k.starts_with(ocicrypt::ANNOTATION_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Decrypts image `reference` of `src` into `dst` as `dst_ref` (what `skopeo copy
/// --decryption-key` does); returns the new manifest's descriptor.
pub async fn decrypt_layout(
    src: &OciLayout,
    reference: &str,
    dst: &OciLayout,
    dst_ref: &str,
    decrypt: &DecryptConfig,
) -> Result<Descriptor, ImageError> {
    let mdesc = src.resolve(reference)?;
    let mut manifest: Manifest = src.read_json(&mdesc, "manifest")?;
    copy_blob(src, dst, &manifest.config)?;
    for desc in &mut manifest.layers {
        if !ocicrypt::is_encrypted(&desc.media_type) {
            copy_blob(src, dst, desc)?;
            continue;
        }
        let key = layer_key(desc, decrypt).await?;
        let blob = src.open_blob_verified(desc)?;
        let mut plain = layer_plaintext(blob, desc, key.as_ref())?;
        let mut w = dst.blob_writer()?;
        io::copy(&mut plain, &mut w).map_err(|source| ImageError::Io {
            layer: desc.digest,
            source,
        })?;
        let (digest, size) = w.commit()?;
        desc.media_type = ocicrypt::decrypted_media_type(&desc.media_type).to_owned();
        desc.annotations = strip_enc_annotations(&desc.annotations);
        desc.digest = digest;
        desc.size = size;
    }
    write_manifest(dst, dst_ref, &mdesc, &manifest)
}

/// Encrypts every plain layer of image `reference` of `src` into `dst` as `dst_ref`, each with a
/// fresh key wrapped for `recipients`; returns the new manifest's descriptor.
pub fn encrypt_layout(
    src: &OciLayout,
    reference: &str,
    dst: &OciLayout,
    dst_ref: &str,
    recipients: &Recipients,
) -> Result<Descriptor, ImageError> {
    let mut mdesc = src.resolve(reference)?;
    let mut manifest: Manifest = src.read_json(&mdesc, "manifest")?;
    copy_blob(src, dst, &manifest.config)?;
    if docker_to_oci(&mut manifest) {
        mdesc.media_type = oci::MEDIA_TYPE_MANIFEST.to_owned();
    }
    for desc in &mut manifest.layers {
        if ocicrypt::is_encrypted(&desc.media_type) {
            copy_blob(src, dst, desc)?;
            continue;
        }
        let blob = src.open_blob_verified(desc)?;
        let mut w = dst.blob_writer()?;
        let enc =
            ocicrypt::encrypt_layer(blob, &mut w, &desc.digest, recipients).map_err(|source| {
                ImageError::Ocicrypt {
                    layer: desc.digest,
                    source,
                }
            })?;
        let (digest, size) = w.commit()?;
        desc.media_type = ocicrypt::encrypted_media_type(&desc.media_type);
        desc.annotations.extend(enc.annotations);
        desc.digest = digest;
        desc.size = size;
    }
    write_manifest(dst, dst_ref, &mdesc, &manifest)
}

/// Docker schema 2 media types and their OCI equivalents.
const DOCKER_TO_OCI: [(&str, &str); 4] = [
    (
        "application/vnd.docker.container.image.v1+json",
        oci::MEDIA_TYPE_CONFIG,
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.oci.image.layer.v1.tar+gzip",
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.oci.image.layer.v1.tar",
    ),
    (
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    ),
];

/// Rewrites a Docker schema 2 manifest as an OCI one (same blobs, OCI media types), as
/// containers/image does before encrypting: ocicrypt's `+encrypted` layer types exist only for
/// OCI, and skopeo refuses them in a Docker manifest. Returns whether anything changed.
fn docker_to_oci(manifest: &mut Manifest) -> bool {
    if manifest.media_type.as_deref() != Some(oci::MEDIA_TYPE_DOCKER_MANIFEST) {
        return false;
    }
    manifest.media_type = Some(oci::MEDIA_TYPE_MANIFEST.to_owned());
    for desc in std::iter::once(&mut manifest.config).chain(&mut manifest.layers) {
        if let Some((_, to)) = DOCKER_TO_OCI
            .iter()
            .find(|(from, _)| *from == desc.media_type)
        {
            desc.media_type = (*to).to_owned();
        }
    }
    true
}

fn copy_blob(src: &OciLayout, dst: &OciLayout, desc: &Descriptor) -> Result<(), ImageError> {
    let mut blob = src.open_blob_verified(desc)?;
    let mut w = dst.blob_writer()?;
    io::copy(&mut blob, &mut w).map_err(|source| ImageError::Io {
        layer: desc.digest,
        source,
    })?;
    w.commit()?;
    Ok(())
}

fn write_manifest(
    dst: &OciLayout,
    dst_ref: &str,
    old: &Descriptor,
    manifest: &Manifest,
) -> Result<Descriptor, ImageError> {
    let (digest, size) = dst.write_json(manifest)?;
    let desc = Descriptor {
        media_type: old.media_type.clone(),
        digest,
        size,
        annotations: BTreeMap::new(),
        platform: old.platform.clone(),
        extra: Default::default(),
    };
    dst.set_ref(dst_ref, desc.clone())?;
    Ok(desc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(media_type: &str) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: Digest::of(b""),
            size: 0,
            annotations: BTreeMap::new(),
            platform: None,
            extra: Default::default(),
        }
    }

    #[test]
    fn encrypted_layers_need_a_key_and_unknown_media_types_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let blob = || tempfile::tempfile().unwrap();
        let opts = UnpackOptions::default();
        let d = desc("application/vnd.oci.image.layer.v1.tar+gzip+encrypted");
        let err = apply_layer(blob(), &d, None, &Digest::of(b""), root.path(), &opts).unwrap_err();
        assert!(matches!(
            err,
            ImageError::Ocicrypt {
                source: OcicryptError::NoWrappedKeys,
                ..
            }
        ));
        let d = desc("application/vnd.example.weird");
        let err = apply_layer(blob(), &d, None, &Digest::of(b""), root.path(), &opts).unwrap_err();
        assert!(matches!(err, ImageError::MediaType(_)));
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn docker_manifests_become_oci_before_encryption() {
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{d}","size":1}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{d}","size":1}},{{"mediaType":"application/vnd.example.other","digest":"{d}","size":1}}]}}"#,
            oci::MEDIA_TYPE_DOCKER_MANIFEST,
            d = Digest::of(b"")
        );
        let mut m: Manifest = serde_json::from_str(&json).unwrap();
        assert!(docker_to_oci(&mut m));
        assert_eq!(m.media_type.as_deref(), Some(oci::MEDIA_TYPE_MANIFEST));
        assert_eq!(m.config.media_type, oci::MEDIA_TYPE_CONFIG);
        assert_eq!(
            m.layers[0].media_type,
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        // Unknown types are left for the encrypt step to judge.
        assert_eq!(m.layers[1].media_type, "application/vnd.example.other");
        // An OCI manifest is left alone.
        assert!(!docker_to_oci(&mut m));
    }

    #[test]
    fn encryption_annotations_are_stripped_and_others_kept() {
        let mut a = BTreeMap::new();
        a.insert(ocicrypt::ANNOTATION_JWE.to_owned(), "x".to_owned());
        a.insert(ocicrypt::ANNOTATION_PUBOPTS.to_owned(), "y".to_owned());
        a.insert("org.example.keep".to_owned(), "z".to_owned());
        let kept = strip_enc_annotations(&a);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept["org.example.keep"], "z");
    }
}
