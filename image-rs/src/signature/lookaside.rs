//! Signature storage beside the registry ("lookaside", containers-registries.d(5)).
//!
//! Simple-signing signatures are not stored in the registry: a `lookaside` base URL per
//! registry or namespace says where they are, and the signatures of manifest `sha256:<hex>` of
//! repository `<path>` are `<base>/<path>@sha256=<hex>/signature-1`, `signature-2`, … up to the
//! first one that does not exist. The configuration uses registries.d's field names (`docker`
//! namespaces, most specific wins, then `default-docker`); in the guest it comes from initdata
//! or the key broker, never from the host. `file://`, `http://` and `https://` bases are
//! supported; every signature and the number of signatures are bounded.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::digest::Digest;
use crate::signature::identity::DockerReference;
use crate::tls::TlsRoots;

/// Largest signature file accepted.
pub const MAX_SIGNATURE_BYTES: usize = 64 * 1024;
/// Most signatures read for one manifest (later ones are not looked at).
pub const MAX_SIGNATURES: usize = 16;
/// Largest configuration accepted.
const MAX_CONFIG_BYTES: usize = 256 * 1024;
/// Time for one HTTP request, including its body.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors from configuring or reading signature storage.
#[derive(Debug, thiserror::Error)]
pub enum LookasideError {
    /// The configuration JSON is malformed.
    #[error("malformed signature storage configuration")]
    Malformed(#[source] serde_json::Error),
    /// The configuration is larger than allowed.
    #[error("signature storage configuration exceeds {MAX_CONFIG_BYTES} bytes")]
    ConfigTooLarge,
    /// A base URL does not parse or has an unsupported scheme.
    #[error("signature storage URL {0:?} is not a file://, http:// or https:// URL")]
    Url(String),
    /// No lookaside is configured for the image.
    #[error("no signature storage is configured for {0}")]
    NotConfigured(String),
    /// A signature file is larger than [`MAX_SIGNATURE_BYTES`].
    #[error("signature {0} exceeds {MAX_SIGNATURE_BYTES} bytes")]
    TooLarge(String),
    /// Reading a signature file failed (other than "not found").
    #[error("reading signature {0}")]
    Io(String, #[source] std::io::Error),
    /// An HTTP request failed (other than 404).
    #[error("fetching signature {0}")]
    Http(String, #[source] reqwest::Error),
    /// The HTTP client for a store cannot trust the configured roots.
    #[error("signature store {0}")]
    TlsRoots(String, #[source] crate::tls::TlsRootsError),
    /// The server answered with an unexpected status.
    #[error("fetching signature {url}: HTTP status {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
}

/// Where to find signatures for one namespace (a registries.d `docker` entry).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookasideNamespace {
    /// The base URL signatures are read from.
    #[serde(default)]
    pub lookaside: Option<String>,
    /// The former name of `lookaside`.
    #[serde(default)]
    pub sigstore: Option<String>,
    /// Where signers write (unused when reading; accepted so registries.d entries parse).
    #[serde(default, rename = "lookaside-staging")]
    pub lookaside_staging: Option<String>,
    /// The former name of `lookaside-staging` (unused when reading).
    #[serde(default, rename = "sigstore-staging")]
    pub sigstore_staging: Option<String>,
    /// Whether cosign attachments are used (for sigstore; unused here).
    #[serde(default, rename = "use-cosign-attachments")]
    pub use_cosign_attachments: Option<bool>,
}

impl LookasideNamespace {
    /// A namespace entry reading from `url`.
    pub fn new(url: &str) -> Self {
        Self {
            lookaside: Some(url.to_owned()),
            ..Self::default()
        }
    }

    fn read_url(&self) -> Option<&str> {
        self.lookaside.as_deref().or(self.sigstore.as_deref())
    }
}

/// Signature storage locations: registries.d's merged configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookasideConfig {
    /// Used when no `docker` namespace matches.
    #[serde(default, rename = "default-docker")]
    pub default_docker: Option<LookasideNamespace>,
    /// Per registry, namespace, repository or reference (fully expanded form).
    #[serde(default)]
    pub docker: BTreeMap<String, LookasideNamespace>,
}

impl LookasideConfig {
    /// Parses the JSON form of a registries.d configuration; every URL is checked.
    pub fn from_json(json: &[u8]) -> Result<Self, LookasideError> {
        if json.len() > MAX_CONFIG_BYTES {
            return Err(LookasideError::ConfigTooLarge);
        }
        let cfg: Self = serde_json::from_slice(json).map_err(LookasideError::Malformed)?;
        for ns in cfg.default_docker.iter().chain(cfg.docker.values()) {
            if let Some(u) = ns.read_url() {
                parse_base(u)?;
            }
        }
        Ok(cfg)
    }

    /// The same configuration with `url` as the default location.
    pub fn with_default(mut self, url: &str) -> Self {
        self.default_docker = Some(LookasideNamespace::new(url));
        self
    }

    /// The same configuration with `url` for `namespace` (`host[:port][/path…]`).
    pub fn with_namespace(mut self, namespace: &str, url: &str) -> Self {
        self.docker
            .insert(namespace.to_owned(), LookasideNamespace::new(url));
        self
    }

    /// The base URL for `image`: the full reference, its repository, each parent namespace, the
    /// registry host and `*.` wildcard domains (most specific first) are tried in that order,
    /// then `default-docker`.
    pub fn base_for(&self, image: &DockerReference) -> Option<&str> {
        let full = image.to_string();
        let name = image.name();
        let mut candidates = vec![full, name.clone()];
        let mut ns = name.as_str();
        while let Some(i) = ns.rfind('/') {
            ns = &ns[..i];
            candidates.push(ns.to_owned());
        }
        let host = image.domain().split(':').next().unwrap_or_default();
        let mut rest = host;
        while let Some(i) = rest.find('.') {
            rest = &rest[i + 1..];
            candidates.push(format!("*.{rest}"));
        }
        candidates
            .iter()
            .find_map(|c| self.docker.get(c).and_then(LookasideNamespace::read_url))
            .or_else(|| {
                self.default_docker
                    .as_ref()
                    .and_then(LookasideNamespace::read_url)
            })
    }
}

/// A signature store reader. The HTTP client is made only when an `http(s)://` store is read
/// (a guest may have no TLS roots at all, and `file://` stores need none).
#[derive(Debug)]
pub struct Lookaside {
    config: LookasideConfig,
}

/// A parsed base URL.
enum Base {
    File(PathBuf),
    Http(reqwest::Url),
}

/// A parsed base, ready to read from.
enum Store {
    File(PathBuf),
    Http(reqwest::Client, reqwest::Url),
}

fn parse_base(s: &str) -> Result<Base, LookasideError> {
    let bad = || LookasideError::Url(s.chars().take(200).collect());
    let url = reqwest::Url::parse(s).map_err(|_| bad())?;
    match url.scheme() {
        "file" => url.to_file_path().map(Base::File).map_err(|()| bad()),
        "http" | "https" => Ok(Base::Http(url)),
        _ => Err(bad()),
    }
}

impl Lookaside {
    /// A reader for `config`.
    pub fn new(config: LookasideConfig) -> Self {
        Self { config }
    }

    /// The configuration.
    pub fn config(&self) -> &LookasideConfig {
        &self.config
    }

    /// The signatures stored for `manifest` of `image`, in order (`signature-1` first), at
    /// most [`MAX_SIGNATURES`]. No signatures is an empty list, not an error.
    /// HTTPS stores are checked against `roots`, the registry client's.
    pub async fn signatures(
        &self,
        image: &DockerReference,
        manifest: &Digest,
        roots: &TlsRoots,
    ) -> Result<Vec<Vec<u8>>, LookasideError> {
        let base = self
            .config
            .base_for(image)
            .ok_or_else(|| LookasideError::NotConfigured(image.name()))?;
        let dir = format!("{}@sha256={}", image.path(), manifest.hex());
        // One parse and, for HTTP stores, one client (one connection pool) for every file.
        let store = match parse_base(base)? {
            Base::File(root) => Store::File(root),
            Base::Http(url) => Store::Http(http_client(&url, roots)?, url),
        };
        let mut out = Vec::new();
        for n in 1..=MAX_SIGNATURES {
            let leaf = format!("{dir}/signature-{n}");
            let found = match &store {
                Store::File(root) => read_file(root.join(&leaf))?,
                Store::Http(http, url) => get(http, url, &leaf).await?,
            };
            match found {
                Some(sig) => out.push(sig),
                None => break,
            }
        }
        tracing::debug!(image = %image, count = out.len(), "lookaside signatures");
        Ok(out)
    }
}

/// The HTTP client for a lookaside store at `base`.
fn http_client(base: &reqwest::Url, roots: &TlsRoots) -> Result<reqwest::Client, LookasideError> {
    // rustls with ring, as for the registry client; a provider installed earlier is kept.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .connect_timeout(HTTP_TIMEOUT);
    roots
        .apply(builder)
        .map_err(|e| LookasideError::TlsRoots(base.to_string(), e))?
        .build()
        .map_err(|e| LookasideError::Http(base.to_string(), e))
}

/// `leaf` under `base`: `None` when the store has no such file.
async fn get(
    http: &reqwest::Client,
    base: &reqwest::Url,
    leaf: &str,
) -> Result<Option<Vec<u8>>, LookasideError> {
    let mut url = base.clone();
    let path = format!("{}/{leaf}", base.path().trim_end_matches('/'));
    url.set_path(&path);
    let shown = url.to_string();
    let mut resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| LookasideError::Http(shown.clone(), e))?;
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(LookasideError::Status {
            url: shown,
            status: status.as_u16(),
        });
    }
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_SIGNATURE_BYTES as u64)
    {
        return Err(LookasideError::TooLarge(shown));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| LookasideError::Http(shown.clone(), e))?
    {
        if body.len() + chunk.len() > MAX_SIGNATURE_BYTES {
            return Err(LookasideError::TooLarge(shown));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// Reads a signature file; `None` when it does not exist.
fn read_file(path: PathBuf) -> Result<Option<Vec<u8>>, LookasideError> {
    let shown = || path.display().to_string();
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LookasideError::Io(shown(), e)),
    };
    let mut out = Vec::new();
    file.take(MAX_SIGNATURE_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| LookasideError::Io(shown(), e))?;
    if out.len() > MAX_SIGNATURE_BYTES {
        return Err(LookasideError::TooLarge(shown()));
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(s: &str) -> DockerReference {
        DockerReference::parse_pulled(s).unwrap()
    }

    #[test]
    fn most_specific_namespace_wins() {
        let cfg = LookasideConfig::from_json(
            br#"{"default-docker":{"lookaside":"file:///default"},
                 "docker":{"reg.io":{"lookaside":"https://sigs.reg.io"},
                           "reg.io/team":{"sigstore":"file:///team","sigstore-staging":"file:///w"},
                           "reg.io/team/app:v1":{"lookaside":"file:///exact"},
                           "docker.io/library":{"lookaside":"file:///official"}}}"#,
        )
        .unwrap();
        let base = |s: &str| cfg.base_for(&reference(s)).map(str::to_owned);
        assert_eq!(base("reg.io/team/app:v1").as_deref(), Some("file:///exact"));
        assert_eq!(base("reg.io/team/app:v2").as_deref(), Some("file:///team"));
        assert_eq!(
            base("reg.io/other/app").as_deref(),
            Some("https://sigs.reg.io")
        );
        assert_eq!(base("busybox").as_deref(), Some("file:///official"));
        assert_eq!(base("elsewhere.io/a").as_deref(), Some("file:///default"));
        // `reg.io` must not match `reg.io:5000` or `reg.iox`.
        assert_eq!(base("reg.io:5000/a").as_deref(), Some("file:///default"));
        // Wildcard domains, the most specific first, after every exact namespace.
        let wild = LookasideConfig::default()
            .with_namespace("*.example.com", "file:///wide")
            .with_namespace("*.eu.example.com", "file:///eu")
            .with_namespace("reg.eu.example.com/team", "file:///team");
        let base = |s: &str| wild.base_for(&reference(s)).map(str::to_owned);
        assert_eq!(
            base("reg.eu.example.com/team/a").as_deref(),
            Some("file:///team")
        );
        assert_eq!(
            base("reg.eu.example.com:5000/x/a").as_deref(),
            Some("file:///eu")
        );
        assert_eq!(
            base("reg.us.example.com/a").as_deref(),
            Some("file:///wide")
        );
        assert_eq!(base("example.com/a"), None);
        let none = LookasideConfig::default().with_namespace("reg.io", "file:///x");
        assert_eq!(none.base_for(&reference("other.io/a")), None);
    }

    #[test]
    fn bad_configuration_is_refused() {
        for bad in [
            r#"{"docker":{"reg.io":{"lookaside":"ftp://x"}}}"#,
            r#"{"docker":{"reg.io":{"lookaside":"not a url"}}}"#,
            r#"{"docker":{"reg.io":{"lookasid":"file:///x"}}}"#,
            r#"{"dockr":{}}"#,
            r#"{"default-docker":{"lookaside":"file://host/x"}}"#,
        ] {
            assert!(LookasideConfig::from_json(bad.as_bytes()).is_err(), "{bad}");
        }
        let big = vec![b' '; MAX_CONFIG_BYTES + 1];
        assert!(matches!(
            LookasideConfig::from_json(&big),
            Err(LookasideError::ConfigTooLarge)
        ));
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn file_store_reads_signatures_until_the_first_gap() {
        let dir = tempfile::tempdir().unwrap();
        let digest = Digest::of(b"manifest");
        let sigdir = dir.path().join(format!("team/app@sha256={}", digest.hex()));
        std::fs::create_dir_all(&sigdir).unwrap();
        std::fs::write(sigdir.join("signature-1"), b"one").unwrap();
        std::fs::write(sigdir.join("signature-2"), b"two").unwrap();
        std::fs::write(sigdir.join("signature-4"), b"four").unwrap();
        let url = format!("file://{}/", dir.path().display());
        let store = Lookaside::new(LookasideConfig::default().with_default(&url));
        let sigs = block_on(store.signatures(
            &reference("reg.io/team/app:v1"),
            &digest,
            &TlsRoots::System,
        ))
        .unwrap();
        assert_eq!(sigs, vec![b"one".to_vec(), b"two".to_vec()]);
        // Another manifest has none.
        let none = block_on(store.signatures(
            &reference("reg.io/team/app:v1"),
            &Digest::of(b"x"),
            &TlsRoots::System,
        ))
        .unwrap();
        assert!(none.is_empty());
        // Oversized files are refused, not truncated.
        std::fs::write(
            sigdir.join("signature-3"),
            vec![0u8; MAX_SIGNATURE_BYTES + 1],
        )
        .unwrap();
        assert!(matches!(
            block_on(store.signatures(
                &reference("reg.io/team/app:v1"),
                &digest,
                &TlsRoots::System
            )),
            Err(LookasideError::TooLarge(_))
        ));
        // The number read is bounded.
        for n in 1..=MAX_SIGNATURES + 3 {
            std::fs::write(sigdir.join(format!("signature-{n}")), b"s").unwrap();
        }
        let many = block_on(store.signatures(
            &reference("reg.io/team/app:v1"),
            &digest,
            &TlsRoots::System,
        ))
        .unwrap();
        assert_eq!(many.len(), MAX_SIGNATURES);
        // Nothing configured for the image.
        let unconfigured = Lookaside::new(LookasideConfig::default());
        assert!(matches!(
            block_on(unconfigured.signatures(
                &reference("reg.io/a:v1"),
                &digest,
                &TlsRoots::System
            )),
            Err(LookasideError::NotConfigured(_))
        ));
    }

    /// A one-request-at-a-time HTTP server on loopback answering from a map of paths.
    fn serve(routes: BTreeMap<String, (u16, Vec<u8>)>) -> (String, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                let path = req.split_whitespace().nth(1).unwrap_or("").to_owned();
                let (status, body) = routes.get(&path).cloned().unwrap_or((404, Vec::new()));
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
            }
        });
        (format!("http://{addr}"), task)
    }

    #[test]
    fn http_store_reads_signatures_and_reports_errors() {
        block_on(async {
            let digest = Digest::of(b"manifest");
            let dir = format!("/sigs/team/app@sha256={}", digest.hex());
            let mut routes = BTreeMap::new();
            routes.insert(format!("{dir}/signature-1"), (200, b"one".to_vec()));
            routes.insert(format!("{dir}/signature-2"), (200, b"two".to_vec()));
            let other = Digest::of(b"other");
            let odir = format!("/sigs/team/app@sha256={}", other.hex());
            routes.insert(format!("{odir}/signature-1"), (500, Vec::new()));
            let big = Digest::of(b"big");
            let bdir = format!("/sigs/team/app@sha256={}", big.hex());
            routes.insert(
                format!("{bdir}/signature-1"),
                (200, vec![1u8; MAX_SIGNATURE_BYTES + 1]),
            );
            let (base, task) = serve(routes);
            let store =
                Lookaside::new(LookasideConfig::default().with_default(&format!("{base}/sigs")));
            let image = reference("reg.io/team/app:v1");
            assert_eq!(
                store
                    .signatures(&image, &digest, &TlsRoots::System)
                    .await
                    .unwrap(),
                vec![b"one".to_vec(), b"two".to_vec()]
            );
            assert!(matches!(
                store.signatures(&image, &other, &TlsRoots::System).await,
                Err(LookasideError::Status { status: 500, .. })
            ));
            assert!(matches!(
                store.signatures(&image, &big, &TlsRoots::System).await,
                Err(LookasideError::TooLarge(_))
            ));
            task.abort();
        });
    }
}
