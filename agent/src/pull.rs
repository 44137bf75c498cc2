//! Image pulls inside the guest: attest to the key broker, fetch the signature policy from it,
//! then pull, verify, decrypt (layer keys released by the broker) and unpack into a rootfs on the
//! guest's tmpfs. The host names only the image; everything that decides what is trusted comes
//! from the [`PullConfig`] of the pod's initdata, checked against the launch before use.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;
use tracing::info;
use tsuba_attestation_agent::attester::Attester;
use tsuba_attestation_agent::kbs::{
    AttesterEvidence, BrokerTrust, KbsClient, KbsClientConfig, KbsClientError, KbsKeyProvider,
    RegistryAuthError, fetch_registry_credentials,
};
use tsuba_image_rs::ocicrypt::DecryptConfig;
use tsuba_image_rs::signature::{LookasideConfig, LookasideError};
use tsuba_image_rs::{Policy, PolicyError, PullError, Registry, RegistryOptions, UnpackOptions};
use tsuba_policy::Initdata;
use tsuba_protocols::agent::MAX_IMAGE_REFERENCE;

use crate::config::PullConfig;

/// Where rootfs folders go: `/run` is the tmpfs PID 1 mounted, so guest memory.
pub const IMAGES_DIR: &str = "/run/tsuba/images";

/// Largest signature policy accepted from the broker.
const MAX_POLICY_BYTES: usize = 1 << 20;

/// Pulls that may run at once: each holds a registry connection, a spool and layer buffers.
pub(crate) const MAX_CONCURRENT_PULLS: usize = 2;

/// Rootfs folders one guest may hold: every pull is a new folder in guest memory, and the host
/// asks for pulls.
pub(crate) const MAX_PULLED_IMAGES: u64 = 64;

/// A pull that did not happen.
#[derive(Debug, Error)]
pub enum GuestPullError {
    /// The pod's initdata names no key broker or no signature policy (or has not been given).
    #[error("image pulls are not configured in this guest: {0}")]
    NotConfigured(&'static str),
    /// The guest has no attester, so the broker cannot release anything.
    #[error("this guest cannot attest: {0}")]
    NoAttester(String),
    /// The measured line allows a plain-HTTP broker, but this is a real snp or tdx guest: its
    /// secrets would be released to whoever answers on the path.
    #[error(
        "refusing the plain http:// broker in a {0} guest: use https:// with a kbs_pin or CA in \
         initdata (insecure_kbs_http is honoured in sim modes only)"
    )]
    InsecureBroker(String),
    /// As many pulls as allowed are running; the host should wait for one to finish.
    #[error("{MAX_CONCURRENT_PULLS} pulls are already running in this guest; retry when one ends")]
    Busy,
    /// The guest holds as many pulled images as allowed.
    #[error("this guest already holds {MAX_PULLED_IMAGES} pulled images")]
    TooManyImages,
    /// The image reference is empty, too long or has control characters.
    #[error("image reference is empty, longer than {MAX_IMAGE_REFERENCE} bytes, or not printable")]
    BadReference,
    /// The KBS client could not be built from the configuration.
    #[error("the key broker client cannot be set up")]
    Client(#[source] KbsClientError),
    /// Attesting to the broker or fetching the signature policy failed; a refusal carries the
    /// broker's reason.
    #[error("the key broker did not release the image signature policy")]
    Broker(#[source] KbsClientError),
    /// The signature policy from the broker is not valid.
    #[error("the image signature policy from the key broker is invalid")]
    Policy(#[source] PolicyError),
    /// The signature storage (lookaside) configuration could not be fetched from the broker.
    #[error("the key broker did not release the signature storage configuration")]
    SignatureStorageFetch(#[source] KbsClientError),
    /// The signature storage configuration from the broker is not valid.
    #[error("the signature storage configuration from the key broker is invalid")]
    SignatureStorage(#[source] LookasideError),
    /// The registry credentials could not be fetched from the broker or do not parse.
    #[error("the registry credentials from the key broker are unusable")]
    RegistryAuth(#[source] RegistryAuthError),
    /// The signature policy from the broker is larger than accepted.
    #[error("the image signature policy from the key broker exceeds {MAX_POLICY_BYTES} bytes")]
    PolicyTooLarge,
    /// The rootfs folder could not be created.
    #[error("cannot create the rootfs folder {0}")]
    Rootfs(PathBuf, #[source] std::io::Error),
    /// Pulling, verifying, decrypting or unpacking failed.
    #[error("pulling the image failed")]
    Pull(#[source] PullError),
}

impl GuestPullError {
    /// Whether the key broker refused (attestation or resource policy), anywhere in the chain:
    /// the policy fetch, or a layer key inside image-rs.
    pub fn broker_refused(&self) -> bool {
        self.any_client_error(|e| matches!(e, KbsClientError::Refused { .. }))
    }

    /// Whether the server at the broker's address failed TLS authentication (not the measured
    /// broker): nothing was sent to it.
    pub fn broker_untrusted(&self) -> bool {
        self.any_client_error(|e| matches!(e, KbsClientError::Untrusted { .. }))
    }

    fn any_client_error(&self, test: impl Fn(&KbsClientError) -> bool) -> bool {
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(error) = next {
            if error.downcast_ref::<KbsClientError>().is_some_and(&test) {
                return true;
            }
            next = error.source();
        }
        false
    }
}

/// What a pull unpacked (never its content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSummary {
    /// `sha256:<hex>` of the manifest.
    pub manifest_digest: String,
    /// Layers applied.
    pub layers: u32,
    /// Uncompressed bytes read.
    pub unpacked_bytes: u64,
    /// Tar entries applied.
    pub entries: u64,
    /// The rootfs folder.
    pub rootfs: PathBuf,
    /// The image config (entrypoint, command, environment... for containers of the image).
    pub image_config: tsuba_image_rs::oci::ImageConfig,
    /// Where the pull's time went.
    pub timings: PullTimings,
}

/// Where a pull's time went (reported to the host: durations only, never content).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PullTimings {
    /// Attestation (when the token was not cached) and the broker's policy, signature storage
    /// and registry credentials.
    pub attest: std::time::Duration,
    /// Manifest, layers, their keys from the broker, decryption and unpacking (streamed
    /// together, so not separable).
    pub pull: std::time::Duration,
}

/// What the initdata configured: the settings and the one KBS client built from them.
struct Configured {
    config: PullConfig,
    client: Result<Arc<KbsClient>, GuestPullError>,
}

/// Initdata names no key broker.
pub(crate) const NO_BROKER: &str = "initdata names no key broker (aa.toml [token_configs.kbs] url)";
/// Initdata names no image signature policy.
pub(crate) const NO_IMAGE_POLICY: &str =
    "initdata names no image signature policy (cdh.toml [image] image_security_policy_uri)";
/// The host has not given the initdata yet.
pub(crate) const NO_INITDATA: &str = "the pod's initdata has not been given";

/// Pulls images for the agent, with one KBS client (and so one cached token) for all pulls.
pub struct GuestPuller {
    attester: Result<Arc<dyn Attester>, String>,
    configured: std::sync::OnceLock<Configured>,
    images_dir: PathBuf,
    next: AtomicU64,
    running: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for GuestPuller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestPuller")
            .field("config", &self.configured.get().map(|c| &c.config))
            .field("images_dir", &self.images_dir)
            .finish_non_exhaustive()
    }
}

impl GuestPuller {
    /// A puller for `config`, attesting with `attester`. Nothing is contacted until the first
    /// pull.
    pub fn new(config: PullConfig, attester: Result<Arc<dyn Attester>, String>) -> Self {
        Self::with_images_dir(config, attester, PathBuf::from(IMAGES_DIR))
    }

    /// As [`GuestPuller::new`], with rootfs folders under `images_dir`.
    pub fn with_images_dir(
        config: PullConfig,
        attester: Result<Arc<dyn Attester>, String>,
        images_dir: PathBuf,
    ) -> Self {
        let puller = Self::unconfigured(attester, images_dir);
        puller.configure(config, None);
        puller
    }

    /// A puller that pulls nothing until [`GuestPuller::configure`] gives it the initdata's
    /// settings.
    pub fn unconfigured(attester: Result<Arc<dyn Attester>, String>, images_dir: PathBuf) -> Self {
        Self {
            attester,
            configured: std::sync::OnceLock::new(),
            images_dir,
            next: AtomicU64::new(0),
            running: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_PULLS)),
        }
    }

    /// Sets the pull settings, once (later calls are ignored and return false). `init_data` is
    /// the initdata document the KBS client shows the broker with its evidence.
    pub fn configure(&self, config: PullConfig, init_data: Option<Initdata>) -> bool {
        let client = match (&config.kbs_url, &self.attester) {
            (None, _) => Err(GuestPullError::NotConfigured(NO_BROKER)),
            (Some(_), Err(why)) => Err(GuestPullError::NoAttester(why.clone())),
            (Some(url), Ok(attester)) => broker_trust(&config, &**attester).and_then(|trust| {
                let mut client_config = KbsClientConfig::new(url.clone(), trust);
                client_config.init_data = init_data;
                KbsClient::new(
                    client_config,
                    Arc::new(AttesterEvidence::new(Arc::clone(attester))),
                )
                .map(Arc::new)
                .map_err(GuestPullError::Client)
            }),
        };
        self.configured.set(Configured { config, client }).is_ok()
    }

    /// Whether pulls can work at all: the initdata configured a broker and the client to it was
    /// built (an attester, an acceptable trust).
    pub fn is_ready(&self) -> bool {
        self.configured.get().is_some_and(|c| c.client.is_ok())
    }

    /// Why pulls cannot work, when they cannot; none when they can or when no broker is
    /// configured (a pod that pulls nothing is fine).
    pub fn unusable(&self) -> Option<String> {
        let configured = self.configured.get()?;
        match &configured.client {
            Ok(_) | Err(GuestPullError::NotConfigured(_)) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    /// Attests, fetches the signature policy, then pulls `image` into a new rootfs folder. A
    /// failed pull leaves no folder behind.
    pub async fn pull(&self, image: &str) -> Result<PullSummary, GuestPullError> {
        check_reference(image)?;
        let configured = self
            .configured
            .get()
            .ok_or(GuestPullError::NotConfigured(NO_INITDATA))?;
        let client = match &configured.client {
            Ok(client) => Arc::clone(client),
            Err(GuestPullError::NotConfigured(key)) => {
                return Err(GuestPullError::NotConfigured(key));
            }
            Err(GuestPullError::NoAttester(why)) => {
                return Err(GuestPullError::NoAttester(why.clone()));
            }
            Err(GuestPullError::InsecureBroker(tee)) => {
                return Err(GuestPullError::InsecureBroker(tee.clone()));
            }
            Err(_) => {
                return Err(GuestPullError::NoAttester(
                    "the key broker client could not be built".to_owned(),
                ));
            }
        };
        let _permit = Arc::clone(&self.running)
            .try_acquire_owned()
            .map_err(|_| GuestPullError::Busy)?;
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if n >= MAX_PULLED_IMAGES {
            return Err(GuestPullError::TooManyImages);
        }
        let image_dir = self.images_dir.join(n.to_string());
        create_private_dir(&image_dir).map_err(|e| GuestPullError::Rootfs(image_dir.clone(), e))?;
        let result = self
            .pull_into(&configured.config, client, image, &image_dir)
            .await;
        if result.is_err() {
            // Whatever was unpacked before the failure is workload content in guest memory that
            // nothing will use: it goes.
            let _ = std::fs::remove_dir_all(&image_dir);
        }
        result
    }

    async fn pull_into(
        &self,
        config: &PullConfig,
        client: Arc<KbsClient>,
        image: &str,
        image_dir: &Path,
    ) -> Result<PullSummary, GuestPullError> {
        let policy_uri = config
            .image_policy
            .as_deref()
            .ok_or(GuestPullError::NotConfigured(NO_IMAGE_POLICY))?;
        let attesting = std::time::Instant::now();
        // The first broker call attests; a refused attestation ends the pull here, before the
        // registry is contacted.
        let policy = client
            .get_resource(policy_uri)
            .await
            .map_err(GuestPullError::Broker)?;
        if policy.len() > MAX_POLICY_BYTES {
            return Err(GuestPullError::PolicyTooLarge);
        }
        let mut policy = Policy::from_json(&policy).map_err(GuestPullError::Policy)?;
        // Where `signedBy` finds its signatures: also the broker's word, never the host's.
        if let Some(uri) = &config.signature_storage {
            let json = client
                .get_resource(uri)
                .await
                .map_err(GuestPullError::SignatureStorageFetch)?;
            let lookaside =
                LookasideConfig::from_json(&json).map_err(GuestPullError::SignatureStorage)?;
            policy = policy.with_lookaside(lookaside);
        }
        let credentials = match &config.registry_auth {
            Some(uri) => fetch_registry_credentials(&client, uri, image)
                .await
                .map_err(GuestPullError::RegistryAuth)?,
            None => Default::default(),
        };
        let attest = attesting.elapsed();
        info!(image, "attested; signature policy from the key broker");
        let pulling = std::time::Instant::now();

        let rootfs = image_dir.join("rootfs");
        let spool = image_dir.join("spool");
        for dir in [&rootfs, &spool] {
            create_private_dir(dir).map_err(|e| GuestPullError::Rootfs(dir.clone(), e))?;
        }
        let registry = Registry::new(RegistryOptions {
            plain_http: config.plain_http_registries.clone(),
            insecure_credentials_over_http: config.insecure_registry_credentials_over_http,
            credentials,
            spool_dir: spool.clone(),
            tls_roots: crate::registry_tls_roots(),
            ..RegistryOptions::default()
        })
        .map_err(GuestPullError::Pull)?;
        let decrypt = DecryptConfig {
            jwe_keys: Vec::new(),
            provider: Some(Arc::new(KbsKeyProvider::new(client))),
        };
        let result = registry
            .pull(
                image,
                &policy,
                &decrypt,
                &rootfs,
                &UnpackOptions::default(),
                None,
            )
            .await;
        // Spool files are unlinked already; the folder goes too.
        let _ = std::fs::remove_dir_all(&spool);
        let stats = result.map_err(GuestPullError::Pull)?;
        let summary = PullSummary {
            manifest_digest: stats.manifest.to_string(),
            layers: u32::try_from(stats.layers.len()).unwrap_or(u32::MAX),
            unpacked_bytes: stats.layers.iter().map(|l| l.uncompressed_bytes).sum(),
            entries: stats.layers.iter().map(|l| l.entries).sum(),
            rootfs,
            image_config: stats.config,
            timings: PullTimings {
                attest,
                pull: pulling.elapsed(),
            },
        };
        info!(
            image,
            manifest = %summary.manifest_digest,
            layers = summary.layers,
            bytes = summary.unpacked_bytes,
            entries = summary.entries,
            "image pulled, decrypted and unpacked"
        );
        Ok(summary)
    }
}

/// How the broker is authenticated: the measured pin, or, in sim guests only and when the
/// measured line says so, not at all.
fn broker_trust(
    config: &PullConfig,
    attester: &dyn Attester,
) -> Result<BrokerTrust, GuestPullError> {
    if let Some(pin) = config.kbs_pin {
        return Ok(BrokerTrust::Pin(pin));
    }
    if let Some(pem) = &config.kbs_ca {
        return BrokerTrust::ca_pem(pem.as_bytes())
            .map_err(|e| GuestPullError::Client(KbsClientError::Trust(e)));
    }
    let kind = attester.kind();
    if config.insecure_kbs_http && kind.is_simulated() {
        tracing::warn!(attester = %kind, "INSECURE: the key broker is reached over plain HTTP");
        return Ok(BrokerTrust::InsecurePlainHttp);
    }
    Err(GuestPullError::InsecureBroker(kind.to_string()))
}

fn check_reference(image: &str) -> Result<(), GuestPullError> {
    if image.is_empty()
        || image.len() > MAX_IMAGE_REFERENCE
        || !image.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(GuestPullError::BadReference);
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsuba_attestation_agent::attester::{AttesterKind, Evidence};
    use tsuba_protocols::evidence::ReportData;

    /// An attester of `kind` that is never asked: every test here fails before attestation.
    #[derive(Debug)]
    struct NeverAsked(AttesterKind);

    impl Attester for NeverAsked {
        fn kind(&self) -> AttesterKind {
            self.0
        }

        fn evidence(
            &self,
            _report_data: &ReportData,
        ) -> Result<Evidence, tsuba_attestation_agent::attester::AttesterError> {
            panic!("attestation must not start")
        }
    }

    fn configured() -> PullConfig {
        PullConfig {
            kbs_url: Some("http://127.0.0.1:1".into()),
            insecure_kbs_http: true,
            image_policy: Some("kbs:///default/security-policy/test".into()),
            plain_http_registries: vec![],
            ..PullConfig::default()
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn pulls_need_a_measured_broker_and_policy() {
        let dir = tempfile::tempdir().unwrap();
        let attester = || Ok(Arc::new(NeverAsked(AttesterKind::SimSnp)) as Arc<dyn Attester>);
        let none =
            GuestPuller::with_images_dir(PullConfig::default(), attester(), dir.path().to_owned());
        let err = block_on(none.pull("10.0.2.2:5000/app:1")).unwrap_err();
        assert!(
            matches!(err, GuestPullError::NotConfigured(NO_BROKER)),
            "{err}"
        );
        let mut config = configured();
        config.image_policy = None;
        let no_policy = GuestPuller::with_images_dir(config, attester(), dir.path().to_owned());
        let err = block_on(no_policy.pull("10.0.2.2:5000/app:1")).unwrap_err();
        assert!(
            matches!(err, GuestPullError::NotConfigured(NO_IMAGE_POLICY)),
            "{err}"
        );
        let no_tee = GuestPuller::with_images_dir(
            configured(),
            Err("no TEE detected".into()),
            dir.path().to_owned(),
        );
        let err = block_on(no_tee.pull("10.0.2.2:5000/app:1")).unwrap_err();
        assert!(matches!(&err, GuestPullError::NoAttester(why) if why == "no TEE detected"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_plain_http_broker_is_refused_in_a_real_tee_whatever_the_line_says() {
        let dir = tempfile::tempdir().unwrap();
        let puller = GuestPuller::with_images_dir(
            configured(),
            Ok(Arc::new(NeverAsked(AttesterKind::Snp))),
            dir.path().to_owned(),
        );
        assert!(!puller.is_ready());
        let err = block_on(puller.pull("10.0.2.2:5000/app:1")).unwrap_err();
        assert!(
            matches!(&err, GuestPullError::InsecureBroker(tee) if tee == "snp"),
            "{err}"
        );
        // Without the measured insecure flag, not even a sim guest takes plain HTTP.
        let mut config = configured();
        config.insecure_kbs_http = false;
        let puller = GuestPuller::with_images_dir(
            config,
            Ok(Arc::new(NeverAsked(AttesterKind::SimSnp))),
            dir.path().to_owned(),
        );
        let err = block_on(puller.pull("10.0.2.2:5000/app:1")).unwrap_err();
        assert!(
            matches!(&err, GuestPullError::InsecureBroker(tee) if tee == "sim-snp"),
            "{err}"
        );
        // The sim guest with the flag builds its client.
        let puller = GuestPuller::with_images_dir(
            configured(),
            Ok(Arc::new(NeverAsked(AttesterKind::SimSnp))),
            dir.path().to_owned(),
        );
        assert!(puller.is_ready());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn pulls_are_bounded_in_number() {
        let dir = tempfile::tempdir().unwrap();
        let puller = GuestPuller::with_images_dir(
            configured(),
            Ok(Arc::new(NeverAsked(AttesterKind::SimSnp))),
            dir.path().to_owned(),
        );
        puller.next.store(MAX_PULLED_IMAGES, Ordering::Relaxed);
        let err = block_on(puller.pull("10.0.2.2:5000/app:1")).unwrap_err();
        assert!(matches!(err, GuestPullError::TooManyImages), "{err}");
        // Every running-pull slot taken: the next is refused at once, not queued.
        let permits: Vec<_> = (0..MAX_CONCURRENT_PULLS)
            .map(|_| Arc::clone(&puller.running).try_acquire_owned().unwrap())
            .collect();
        let err = block_on(puller.pull("10.0.2.2:5000/app:1")).unwrap_err();
        assert!(matches!(err, GuestPullError::Busy), "{err}");
        drop(permits);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn bad_references_are_refused_before_anything_else() {
        let dir = tempfile::tempdir().unwrap();
        let puller = GuestPuller::with_images_dir(
            configured(),
            Ok(Arc::new(NeverAsked(AttesterKind::SimSnp))),
            dir.path().to_owned(),
        );
        let long = format!("r/{}", "a".repeat(MAX_IMAGE_REFERENCE));
        for bad in ["", "app with space", "app\n", "app\u{0}", long.as_str()] {
            let err = block_on(puller.pull(bad)).unwrap_err();
            assert!(matches!(err, GuestPullError::BadReference), "{bad:?}");
        }
    }

    #[test]
    fn an_unreachable_broker_is_not_a_refusal() {
        // Port 1 on loopback: nothing listens, so the auth request fails before any evidence
        // is asked for, and the error says the broker could not be reached.
        let dir = tempfile::tempdir().unwrap();
        let puller = GuestPuller::with_images_dir(
            configured(),
            Ok(Arc::new(NeverAsked(AttesterKind::SimSnp))),
            dir.path().to_owned(),
        );
        let err = block_on(puller.pull("10.0.2.2:5000/app:1")).unwrap_err();
        assert!(
            matches!(
                err,
                GuestPullError::Broker(KbsClientError::Transport { .. })
            ),
            "{err}"
        );
        assert!(!err.broker_refused());
        // The pull's folder existed while it ran; nothing of it is left after the failure.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let refused = GuestPullError::Broker(KbsClientError::Refused {
            step: "attest",
            status: 401,
            kind: "AttestationDenied".into(),
            detail: "measurement is not a reference value".into(),
        });
        assert!(refused.broker_refused());
    }
}
