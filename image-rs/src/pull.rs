//! Pulling images from a registry with `oci-client`: manifest resolution (multi-arch indexes to
//! this platform), every manifest and blob checked against its digest, blobs streamed to a spool
//! file (never held whole in memory) with their size bounded by the descriptor, retries on
//! transient failures, timeouts for registries that stall, and progress events.
//!
//! The signature check ([`ImageVerifier`]) runs after the manifest is resolved and before any
//! layer is fetched. Only then are layers downloaded, verified, decrypted and unpacked.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::Reference;
use oci_client::secrets::RegistryAuth;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use crate::digest::Digest;
use crate::image::{ImageError, ImageStats, apply_layer, layer_key};
use crate::oci::{self, Descriptor, ImageConfig, Index, MAX_JSON_DOCUMENT, Manifest};
use crate::ocicrypt::DecryptConfig;
use crate::unpack::UnpackOptions;

/// Credentials for a registry. Debug output never shows secrets.
#[derive(Clone, Default)]
pub enum Credentials {
    /// No credentials.
    #[default]
    Anonymous,
    /// HTTP basic (also used to obtain a bearer token when the registry asks for one).
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// A bearer token given directly.
    Bearer(String),
}

impl Drop for Credentials {
    fn drop(&mut self) {
        // Passwords and tokens come from the broker in the guest: they leave no copy behind in
        // freed memory (the registry client's own copy is oci-client's to keep).
        use zeroize::Zeroize as _;
        match self {
            Self::Anonymous => {}
            Self::Basic { password, .. } => password.zeroize(),
            Self::Bearer(token) => token.zeroize(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Anonymous => "Anonymous",
            Self::Basic { .. } => "Basic(..)",
            Self::Bearer(_) => "Bearer(..)",
        })
    }
}

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Registries (`host:port`) reached over plain HTTP; all others use HTTPS.
    pub plain_http: Vec<String>,
    /// INSECURE: send [`RegistryOptions::credentials`] to a plain-HTTP registry, or to a token
    /// service with an `http://` realm, where anyone on the path reads them.
    pub insecure_credentials_over_http: bool,
    /// Credentials.
    pub credentials: Credentials,
    /// Largest blob accepted (the descriptor's size is checked before fetching).
    pub max_blob_bytes: u64,
    /// Time for one manifest request, or between two reads of a blob.
    pub request_timeout: Duration,
    /// Time for one whole blob download attempt.
    pub blob_timeout: Duration,
    /// Attempts per request (1 = no retry).
    pub attempts: u32,
    /// Directory for blob spool files (guest memory in the guest).
    pub spool_dir: PathBuf,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            plain_http: Vec::new(),
            insecure_credentials_over_http: false,
            credentials: Credentials::Anonymous,
            max_blob_bytes: 8 << 30,
            request_timeout: Duration::from_secs(30),
            blob_timeout: Duration::from_secs(3600),
            attempts: 3,
            spool_dir: std::env::temp_dir(),
        }
    }
}

/// Errors from pulling.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The image reference does not parse.
    #[error("invalid image reference {0:?}")]
    Reference(String, #[source] oci_client::ParseError),
    /// The registry request failed (after retries).
    #[error("registry request for {what} failed")]
    Registry {
        /// What was asked for.
        what: String,
        /// The cause.
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    /// The registry did not answer in time.
    #[error("registry timed out on {0} after {1:?}")]
    Timeout(String, Duration),
    /// Content does not match its digest.
    #[error("{what} digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was fetched.
        what: &'static str,
        /// Expected digest.
        expected: String,
        /// Computed digest.
        actual: String,
    },
    /// A document or blob is larger than allowed or than its descriptor says.
    #[error("{what} exceeds {limit} bytes")]
    TooLarge {
        /// What was fetched.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// A manifest or config does not parse.
    #[error("malformed {0}")]
    Json(&'static str, #[source] serde_json::Error),
    /// An index has no manifest for this platform.
    #[error("no manifest for platform {0} in the image index")]
    NoPlatform(String),
    /// Nested indexes or another unexpected manifest type.
    #[error("unexpected manifest media type {0:?}")]
    MediaType(String),
    /// The signature policy refused the image.
    #[error("signature policy refused the image")]
    Refused(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Spool file I/O failed.
    #[error("spool file")]
    Spool(#[source] std::io::Error),
    /// Verifying, decrypting or unpacking a layer failed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A layer task failed to run to completion.
    #[error("layer task aborted")]
    Task(#[source] tokio::task::JoinError),
    /// Credentials would be sent where the path can read them.
    #[error(
        "refusing to send registry credentials for {registry}: {to} (allow it only explicitly, \
         with the insecure credentials-over-http option)"
    )]
    CredentialsInTheClear {
        /// The registry.
        registry: String,
        /// Where they would have gone in the clear.
        to: String,
    },
    /// The registry's authentication challenge could not be read before sending credentials.
    #[error("cannot check how {registry} takes credentials: {what}")]
    CredentialProbe {
        /// The registry.
        registry: String,
        /// What failed.
        what: String,
    },
}

/// Progress of a pull, for logs and the shim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgressEvent {
    /// The manifest was resolved.
    Resolved {
        /// Manifest digest.
        manifest: Digest,
        /// Layer count.
        layers: usize,
    },
    /// Bytes of a layer received so far.
    LayerBytes {
        /// Layer digest.
        layer: Digest,
        /// Received.
        received: u64,
        /// Expected total.
        total: u64,
    },
    /// A layer was verified and unpacked.
    LayerDone {
        /// Layer digest.
        layer: Digest,
    },
}

/// A sink for progress events.
pub type Progress = Arc<dyn Fn(ProgressEvent) + Send + Sync>;

/// An image whose manifest and config were fetched and verified.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The reference as asked for.
    pub reference: String,
    /// Registry host (as used for requests).
    pub registry: String,
    /// Repository path.
    pub repository: String,
    /// Digest of the platform manifest (the one whose layers are pulled).
    pub manifest_digest: Digest,
    /// Digest of the top-level manifest the reference named: the image index when it resolved
    /// to one, else the platform manifest. Signatures name this digest, as containers/image
    /// and cosign sign it; the index lists the platform manifest by a digest that was checked,
    /// so a signed index covers the platform manifest too.
    pub signed_digest: Digest,
    /// The manifest bytes exactly as served.
    pub manifest_bytes: Vec<u8>,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The parsed config.
    pub config: ImageConfig,
}

/// The future an [`ImageVerifier`] returns.
pub type VerifyFuture<'a> =
    Pin<Box<dyn Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + Send + 'a>>;

/// Decides whether a resolved image may be used (the signature policy implements it).
pub trait ImageVerifier: Send + Sync {
    /// `Ok` to go on; any error refuses the image before a layer is fetched.
    fn verify<'a>(&'a self, registry: &'a Registry, image: &'a ResolvedImage) -> VerifyFuture<'a>;
}

/// A registry client.
pub struct Registry {
    pub(crate) client: oci_client::Client,
    pub(crate) auth: RegistryAuth,
    pub(crate) options: RegistryOptions,
    /// Registries whose credential transport was checked (see `credential_guard`).
    pub(crate) credentials_checked: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

const MANIFEST_TYPES: [&str; 4] = [
    oci::MEDIA_TYPE_MANIFEST,
    oci::MEDIA_TYPE_INDEX,
    oci::MEDIA_TYPE_DOCKER_MANIFEST,
    oci::MEDIA_TYPE_DOCKER_LIST,
];

impl Registry {
    /// A client with `options`.
    pub fn new(options: RegistryOptions) -> Self {
        // rustls with ring; a provider installed earlier by the process is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = oci_client::client::ClientConfig {
            protocol: oci_client::client::ClientProtocol::HttpsExcept(options.plain_http.clone()),
            read_timeout: Some(options.request_timeout),
            connect_timeout: Some(options.request_timeout),
            platform_resolver: None,
            ..Default::default()
        };
        let auth = match &options.credentials {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Credentials::Bearer(t) => RegistryAuth::Bearer(t.clone()),
        };
        Self {
            client: oci_client::Client::new(config),
            auth,
            options,
            credentials_checked: std::sync::Mutex::default(),
        }
    }

    /// Runs `op` up to `attempts` times with a growing pause, each bounded by `timeout`.
    pub(crate) async fn retry<T, F>(
        &self,
        what: &str,
        timeout: Duration,
        mut op: F,
    ) -> Result<T, PullError>
    where
        F: AsyncFnMut() -> Result<T, PullError>,
    {
        let attempts = self.options.attempts.max(1);
        let mut pause = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            let result = match tokio::time::timeout(timeout, op()).await {
                Ok(r) => r,
                Err(_) => Err(PullError::Timeout(what.to_owned(), timeout)),
            };
            match result {
                Err(e) if attempt < attempts && transient(&e) => {
                    tracing::warn!(what, attempt, error = %e, "registry request failed, retrying");
                    tokio::time::sleep(pause).await;
                    pause = pause.saturating_mul(2);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn manifest_raw(&self, reference: &Reference, what: &str) -> Result<Vec<u8>, PullError> {
        self.check_credentials_transport(reference).await?;
        let bytes = self
            .retry(what, self.options.request_timeout, || async {
                self.client
                    .pull_manifest_raw(reference, &self.auth, &MANIFEST_TYPES)
                    .await
                    .map(|(b, _)| b)
                    .map_err(|source| PullError::Registry {
                        what: what.to_owned(),
                        source,
                    })
            })
            .await?;
        if bytes.len() as u64 > MAX_JSON_DOCUMENT {
            return Err(PullError::TooLarge {
                what: what.to_owned(),
                limit: MAX_JSON_DOCUMENT,
            });
        }
        let actual = Digest::of(&bytes);
        if let Some(expected) = reference.digest()
            && expected != actual.to_string()
        {
            return Err(PullError::DigestMismatch {
                what: "manifest",
                expected: expected.to_owned(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes.to_vec())
    }

    /// Fetches and verifies the manifest (through an index when needed) and the config.
    pub async fn resolve(&self, image: &str) -> Result<ResolvedImage, PullError> {
        let reference: Reference = image
            .parse()
            .map_err(|e| PullError::Reference(image.chars().take(256).collect(), e))?;
        let mut bytes = self.manifest_raw(&reference, image).await?;
        let mut digest = Digest::of(&bytes);
        let signed_digest = digest;
        let media_type = media_type_of(&bytes)?;
        if oci::is_index(&media_type) {
            let index: Index =
                serde_json::from_slice(&bytes).map_err(|e| PullError::Json("image index", e))?;
            let want = oci::Platform::current();
            let entry = index
                .manifests
                .iter()
                .find(|d| d.platform.as_ref().is_some_and(|p| want.matches(p)))
                .ok_or_else(|| {
                    PullError::NoPlatform(format!("{}/{}", want.os, want.architecture))
                })?;
            let by_digest = reference.clone_with_digest(entry.digest.to_string());
            bytes = self.manifest_raw(&by_digest, image).await?;
            digest = Digest::of(&bytes);
            if digest != entry.digest {
                return Err(PullError::DigestMismatch {
                    what: "manifest",
                    expected: entry.digest.to_string(),
                    actual: digest.to_string(),
                });
            }
            let inner = media_type_of(&bytes)?;
            if oci::is_index(&inner) {
                return Err(PullError::MediaType(inner));
            }
        }
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| PullError::Json("manifest", e))?;
        if manifest.config.size > MAX_JSON_DOCUMENT {
            return Err(PullError::TooLarge {
                what: "image config".into(),
                limit: MAX_JSON_DOCUMENT,
            });
        }
        let mut config_bytes = Vec::new();
        self.fetch_blob(&reference, &manifest.config, &mut config_bytes, None)
            .await?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| PullError::Json("image config", e))?;
        Ok(ResolvedImage {
            reference: image.to_owned(),
            registry: reference.resolve_registry().to_owned(),
            repository: reference.repository().to_owned(),
            manifest_digest: digest,
            signed_digest,
            manifest_bytes: bytes,
            manifest,
            config,
        })
    }

    /// Downloads a blob of `reference`'s repository into `out`, checking its size against the
    /// descriptor while streaming and its digest at the end.
    pub async fn fetch_blob<W: BlobSink>(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        out: &mut W,
        progress: Option<&Progress>,
    ) -> Result<(), PullError> {
        let what = desc.digest.to_string();
        if desc.size > self.options.max_blob_bytes {
            return Err(PullError::TooLarge {
                what,
                limit: self.options.max_blob_bytes,
            });
        }
        self.retry(&what, self.options.blob_timeout, async || {
            out.reset().await.map_err(PullError::Spool)?;
            let digest = desc.digest.to_string();
            let mut stream = self
                .client
                .pull_blob_stream(reference, digest.as_str())
                .await
                .map_err(|source| PullError::Registry {
                    what: what.clone(),
                    source,
                })?;
            if stream.content_length.is_some_and(|n| n > desc.size) {
                return Err(PullError::TooLarge {
                    what: what.clone(),
                    limit: desc.size,
                });
            }
            let mut hasher = Sha256::new();
            let mut received = 0u64;
            while let Some(chunk) = stream.stream.next().await {
                let chunk = chunk.map_err(|e| stream_error(&what, e))?;
                received += chunk.len() as u64;
                if received > desc.size {
                    return Err(PullError::TooLarge {
                        what: what.clone(),
                        limit: desc.size,
                    });
                }
                hasher.update(&chunk);
                out.write(&chunk).await.map_err(PullError::Spool)?;
                if let Some(p) = progress {
                    p(ProgressEvent::LayerBytes {
                        layer: desc.digest,
                        received,
                        total: desc.size,
                    });
                }
            }
            let actual = Digest::from_bytes(hasher.finalize().into());
            if actual != desc.digest || received != desc.size {
                return Err(PullError::DigestMismatch {
                    what: "blob",
                    expected: desc.digest.to_string(),
                    actual: actual.to_string(),
                });
            }
            Ok(())
        })
        .await
    }

    /// Pulls `image`: resolves it, asks `verifier`, then fetches, verifies, decrypts and unpacks
    /// each layer into the existing directory `rootfs`.
    pub async fn pull(
        &self,
        image: &str,
        verifier: &dyn ImageVerifier,
        decrypt: &DecryptConfig,
        rootfs: &Path,
        unpack: &UnpackOptions,
        progress: Option<Progress>,
    ) -> Result<ImageStats, PullError> {
        let resolved = self.resolve(image).await?;
        verifier
            .verify(self, &resolved)
            .await
            .map_err(PullError::Refused)?;
        let manifest = &resolved.manifest;
        let diff_ids = &resolved.config.rootfs.diff_ids;
        if manifest.layers.len() != diff_ids.len() {
            return Err(ImageError::LayerCount {
                layers: manifest.layers.len(),
                diff_ids: diff_ids.len(),
            }
            .into());
        }
        if let Some(p) = &progress {
            p(ProgressEvent::Resolved {
                manifest: resolved.manifest_digest,
                layers: manifest.layers.len(),
            });
        }
        let reference: Reference = image
            .parse()
            .map_err(|e| PullError::Reference(image.into(), e))?;
        let mut layers = Vec::with_capacity(manifest.layers.len());
        for (desc, diff_id) in manifest.layers.iter().zip(diff_ids) {
            // Unwrap the key first: no point downloading what cannot be decrypted.
            let key = layer_key(desc, decrypt).await?;
            let spool = tempfile::tempfile_in(&self.options.spool_dir).map_err(PullError::Spool)?;
            let mut sink = tokio::fs::File::from_std(spool);
            self.fetch_blob(&reference, desc, &mut sink, progress.as_ref())
                .await?;
            sink.flush().await.map_err(PullError::Spool)?;
            let mut spool = sink.into_std().await;
            std::io::Seek::rewind(&mut spool).map_err(PullError::Spool)?;
            let (desc2, diff_id, rootfs, unpack) =
                (desc.clone(), *diff_id, rootfs.to_path_buf(), unpack.clone());
            let stats = tokio::task::spawn_blocking(move || {
                apply_layer(spool, &desc2, key.as_ref(), &diff_id, &rootfs, &unpack)
            })
            .await
            .map_err(PullError::Task)??;
            layers.push(stats);
            if let Some(p) = &progress {
                p(ProgressEvent::LayerDone { layer: desc.digest });
            }
        }
        Ok(ImageStats {
            manifest: resolved.manifest_digest,
            layers,
            config: resolved.config.clone(),
        })
    }
}

// Tagged manifests and small pushes, for sigstore signature attachments
// (`signature/sigstore.rs`).
impl Registry {
    /// The manifest tagged `tag` in `image`'s repository, bounded by [`MAX_JSON_DOCUMENT`];
    /// `None` when the registry says there is no such manifest. One attempt, bounded by the
    /// request timeout (the call sits in `Send` futures, which `retry`'s async closures are not
    /// provably).
    pub(crate) async fn tagged_manifest(
        &self,
        image: &Reference,
        tag: &str,
    ) -> Result<Option<Vec<u8>>, PullError> {
        let tagged = Reference::with_tag(
            image.registry().to_owned(),
            image.repository().to_owned(),
            tag.to_owned(),
        );
        self.check_credentials_transport(&tagged).await?;
        let timeout = self.options.request_timeout;
        let fetched = tokio::time::timeout(
            timeout,
            self.client
                .pull_manifest_raw(&tagged, &self.auth, &MANIFEST_TYPES),
        )
        .await
        .map_err(|_| PullError::Timeout(tag.to_owned(), timeout))?;
        let bytes = match fetched {
            Ok((bytes, _)) => bytes,
            Err(source) if manifest_unknown(&source) => return Ok(None),
            Err(source) => {
                return Err(PullError::Registry {
                    what: tag.to_owned(),
                    source,
                });
            }
        };
        if bytes.len() as u64 > MAX_JSON_DOCUMENT {
            return Err(PullError::TooLarge {
                what: tag.to_owned(),
                limit: MAX_JSON_DOCUMENT,
            });
        }
        Ok(Some(bytes.to_vec()))
    }

    /// A small blob of `image`'s repository, into memory: refused unless the descriptor says
    /// at most `limit` bytes; size and digest checked against the descriptor while reading. One
    /// attempt, bounded by the request timeout.
    pub(crate) async fn small_blob(
        &self,
        image: &Reference,
        desc: &Descriptor,
        limit: u64,
    ) -> Result<Vec<u8>, PullError> {
        let what = desc.digest.to_string();
        if desc.size > limit {
            return Err(PullError::TooLarge { what, limit });
        }
        let timeout = self.options.request_timeout;
        let fetch = async {
            let mut stream = self
                .client
                .pull_blob_stream(image, what.as_str())
                .await
                .map_err(|source| PullError::Registry {
                    what: what.clone(),
                    source,
                })?;
            let mut out = Vec::new();
            while let Some(chunk) = stream.stream.next().await {
                let chunk = chunk.map_err(|e| stream_error(&what, e))?;
                if (out.len() + chunk.len()) as u64 > desc.size {
                    return Err(PullError::TooLarge {
                        what: what.clone(),
                        limit: desc.size,
                    });
                }
                out.extend_from_slice(&chunk);
            }
            let actual = Digest::of(&out);
            if actual != desc.digest || out.len() as u64 != desc.size {
                return Err(PullError::DigestMismatch {
                    what: "blob",
                    expected: what.clone(),
                    actual: actual.to_string(),
                });
            }
            Ok(out)
        };
        tokio::time::timeout(timeout, fetch)
            .await
            .map_err(|_| PullError::Timeout(what.clone(), timeout))?
    }

    /// Pushes `bytes` as a blob of `image`'s repository; returns its digest.
    pub(crate) async fn push_blob_bytes(
        &self,
        image: &Reference,
        bytes: Vec<u8>,
    ) -> Result<Digest, PullError> {
        let digest = Digest::of(&bytes);
        let what = digest.to_string();
        let registry_error = |source| PullError::Registry {
            what: what.clone(),
            source,
        };
        self.check_credentials_transport(image).await?;
        self.client
            .auth(image, &self.auth, oci_client::RegistryOperation::Push)
            .await
            .map_err(registry_error)?;
        self.client
            .push_blob(image, bytes, &what)
            .await
            .map_err(registry_error)?;
        Ok(digest)
    }

    /// Pushes `manifest` (of `media_type`) under `tag` in `image`'s repository.
    pub(crate) async fn push_tagged_manifest(
        &self,
        image: &Reference,
        tag: &str,
        manifest: Vec<u8>,
        media_type: &str,
    ) -> Result<(), PullError> {
        let tagged = Reference::with_tag(
            image.registry().to_owned(),
            image.repository().to_owned(),
            tag.to_owned(),
        );
        let registry_error = |source| PullError::Registry {
            what: tag.to_owned(),
            source,
        };
        let content_type = media_type
            .parse()
            .map_err(|_| PullError::MediaType(media_type.into()))?;
        self.check_credentials_transport(&tagged).await?;
        self.client
            .auth(&tagged, &self.auth, oci_client::RegistryOperation::Push)
            .await
            .map_err(registry_error)?;
        self.client
            .push_manifest_raw(&tagged, manifest, content_type)
            .await
            .map_err(registry_error)?;
        Ok(())
    }
}

/// Whether a registry error says the manifest does not exist (404 / `MANIFEST_UNKNOWN`).
fn manifest_unknown(e: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode};
    match e {
        E::ImageManifestNotFoundError(_) => true,
        E::ServerError { code, .. } => *code == 404,
        E::RegistryError { envelope, .. } => envelope.errors.iter().any(|x| {
            matches!(
                x.code,
                OciErrorCode::ManifestUnknown | OciErrorCode::NotFound
            )
        }),
        _ => false,
    }
}

/// A failed blob stream: a digest verdict from oci-client's own check is a mismatch (final),
/// anything else a registry error (maybe transient).
fn stream_error(what: &str, e: std::io::Error) -> PullError {
    use oci_client::errors::DigestError;
    if let Some(DigestError::VerificationError { expected, actual }) =
        e.get_ref().and_then(|i| i.downcast_ref::<DigestError>())
    {
        return PullError::DigestMismatch {
            what: "blob",
            expected: expected.clone(),
            actual: actual.clone(),
        };
    }
    PullError::Registry {
        what: what.to_owned(),
        source: e.into(),
    }
}

/// The media type of a registry's manifest or index document, as [`Registry::resolve`] tells
/// them apart (its `mediaType`, else an index when it has `manifests`). The entry point of
/// manifest parsing: `resolve` then reads the bytes as an [`oci::Index`] or [`oci::Manifest`]
/// (the fuzz targets in `fuzz/` call it so).
pub fn media_type_of(bytes: &[u8]) -> Result<String, PullError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let p: Probe = serde_json::from_slice(bytes).map_err(|e| PullError::Json("manifest", e))?;
    Ok(match p.media_type {
        Some(m) => m,
        None if p.manifests.is_some() => oci::MEDIA_TYPE_INDEX.to_owned(),
        None => oci::MEDIA_TYPE_MANIFEST.to_owned(),
    })
}

fn transient(e: &PullError) -> bool {
    use oci_client::errors::OciDistributionError as E;
    match e {
        PullError::Timeout(..) => true,
        PullError::Registry { source, .. } => match source {
            E::RequestError(r) => r.is_timeout() || r.is_connect() || r.is_request() || r.is_body(),
            E::IoError(_) => true,
            E::ServerError { code, .. } => *code >= 500,
            _ => false,
        },
        _ => false,
    }
}

/// Where a downloaded blob goes: a spool file or memory.
pub trait BlobSink: Send {
    /// Drops what an earlier attempt wrote.
    fn reset(&mut self) -> impl Future<Output = std::io::Result<()>> + Send;
    /// Appends a chunk.
    fn write(&mut self, chunk: &[u8]) -> impl Future<Output = std::io::Result<()>> + Send;
}

impl BlobSink for Vec<u8> {
    async fn reset(&mut self) -> std::io::Result<()> {
        self.clear();
        Ok(())
    }

    async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.extend_from_slice(chunk);
        Ok(())
    }
}

impl BlobSink for tokio::fs::File {
    async fn reset(&mut self) -> std::io::Result<()> {
        self.set_len(0).await?;
        tokio::io::AsyncSeekExt::rewind(self).await.map(drop)
    }

    async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.write_all(chunk).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_print_secrets() {
        let c = Credentials::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", Credentials::Bearer("tok123".into())).contains("tok123"));
    }

    #[test]
    fn manifest_kinds_are_told_apart() {
        assert_eq!(
            media_type_of(br#"{"schemaVersion":2,"manifests":[]}"#).unwrap(),
            oci::MEDIA_TYPE_INDEX
        );
        assert_eq!(
            media_type_of(br#"{"schemaVersion":2,"layers":[]}"#).unwrap(),
            oci::MEDIA_TYPE_MANIFEST
        );
        let docker = format!(r#"{{"mediaType":"{}"}}"#, oci::MEDIA_TYPE_DOCKER_LIST);
        assert!(oci::is_index(&media_type_of(docker.as_bytes()).unwrap()));
        assert!(matches!(media_type_of(b"[1,2"), Err(PullError::Json(..))));
    }

    #[test]
    fn only_transient_failures_are_retried() {
        assert!(transient(&PullError::Timeout(
            "x".into(),
            Duration::from_secs(1)
        )));
        let mismatch = PullError::DigestMismatch {
            what: "blob",
            expected: "a".into(),
            actual: "b".into(),
        };
        assert!(!transient(&mismatch));
        let server = |code| PullError::Registry {
            what: "x".into(),
            source: oci_client::errors::OciDistributionError::ServerError {
                code,
                url: String::new(),
                message: String::new(),
            },
        };
        assert!(transient(&server(503)));
        assert!(!transient(&server(404)));
    }
}
