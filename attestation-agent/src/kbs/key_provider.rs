//! The KBS client as image-rs's [`KeyProvider`], and registry credentials fetched from the broker.
//!
//! A key-provider key id is a `kbs:///repo/type/tag` URI; the key-encryption key is the resource
//! at that path, released by the broker only after attestation. When the broker refuses, the
//! [`KbsClientError`] (with the broker's reason) is kept as the source of image-rs's error.
//!
//! Registry credentials are a resource in the containers auth file shape that
//! guest-components' image-rs also reads: `{"auths": {"<registry>[/<path>]": {"auth":
//! base64("user:password")}}}`, matched against the image by longest prefix.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use tsuba_image_rs::Credentials;
use tsuba_image_rs::ocicrypt::{KeyFuture, KeyId, KeyProvider, KeyProviderError};
use zeroize::Zeroizing;

use super::client::KbsClient;
use super::error::KbsClientError;

/// Supplies image-rs with key-encryption keys fetched from the key broker after attestation.
#[derive(Debug, Clone)]
pub struct KbsKeyProvider {
    client: Arc<KbsClient>,
}

impl KbsKeyProvider {
    /// Wraps a client; its token cache is shared with every other user of the same `Arc`.
    pub fn new(client: Arc<KbsClient>) -> Self {
        Self { client }
    }

    /// The client used.
    pub fn client(&self) -> &Arc<KbsClient> {
        &self.client
    }
}

impl KeyProvider for KbsKeyProvider {
    fn get_key<'a>(&'a self, key_id: &'a KeyId) -> KeyFuture<'a> {
        Box::pin(async move {
            self.client
                .get_resource(key_id.as_str())
                .await
                .map_err(|e| KeyProviderError {
                    key_id: key_id.clone(),
                    source: Box::new(e),
                })
        })
    }
}

/// Largest number of entries read from an auth file.
const MAX_AUTH_ENTRIES: usize = 1024;

/// Why registry credentials could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum RegistryAuthError {
    /// The broker did not release the auth file.
    #[error("registry credentials could not be fetched from the broker")]
    Fetch(#[source] KbsClientError),
    /// The resource is not a containers auth file.
    #[error("registry credentials resource is not an auth.json document")]
    Malformed(#[source] serde_json::Error),
    /// The auth file has more entries than accepted.
    #[error("registry credentials resource has more than {MAX_AUTH_ENTRIES} entries")]
    TooManyEntries,
    /// The matching entry's `auth` field is not base64 of `user:password`.
    #[error("registry credentials entry {0:?} is not base64 of user:password")]
    BadEntry(String),
}

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
}

/// Fetches the auth file at `uri` (`kbs:///repo/type/tag`) and returns the credentials for
/// `image` (`host[:port]/path[:tag][@digest]`); [`Credentials::Anonymous`] when no entry matches.
pub async fn fetch_registry_credentials(
    client: &KbsClient,
    uri: &str,
    image: &str,
) -> Result<Credentials, RegistryAuthError> {
    let file = client
        .get_resource(uri)
        .await
        .map_err(RegistryAuthError::Fetch)?;
    credentials_for_image(&file, image)
}

/// The credentials for `image` in an auth file (`{"auths": {...}}`), by longest prefix: the
/// repository path first, then each shorter path, then the registry host alone. Keys may carry
/// an `http://`/`https://` scheme and a trailing `/`, as docker writes them.
pub fn credentials_for_image(
    auth_json: &[u8],
    image: &str,
) -> Result<Credentials, RegistryAuthError> {
    let file: AuthFile = serde_json::from_slice(auth_json).map_err(RegistryAuthError::Malformed)?;
    if file.auths.len() > MAX_AUTH_ENTRIES {
        return Err(RegistryAuthError::TooManyEntries);
    }
    let entries: BTreeMap<&str, &AuthEntry> = file
        .auths
        .iter()
        .map(|(k, v)| (normalise_key(k), v))
        .collect();
    let mut candidate = repository_of(image);
    loop {
        if let Some(entry) = entries.get(candidate) {
            return decode_entry(candidate, entry);
        }
        match candidate.rsplit_once('/') {
            Some((shorter, _)) => candidate = shorter,
            None => return Ok(Credentials::Anonymous),
        }
    }
}

fn normalise_key(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.trim_end_matches('/')
}

/// `host[:port]/path` of an image reference, without tag or digest.
fn repository_of(image: &str) -> &str {
    let image = image.split_once('@').map_or(image, |(name, _)| name);
    // A tag is a `:` after the last `/` (a `:` before it is the registry port).
    match image.rfind(':') {
        Some(colon) if image[colon..].find('/').is_none() && image.contains('/') => &image[..colon],
        _ => image,
    }
}

fn decode_entry(key: &str, entry: &AuthEntry) -> Result<Credentials, RegistryAuthError> {
    let bad = || RegistryAuthError::BadEntry(key.chars().take(200).collect());
    let encoded = entry.auth.as_deref().ok_or_else(bad)?;
    let decoded = Zeroizing::new(B64.decode(encoded.trim()).map_err(|_| bad())?);
    let text = std::str::from_utf8(&decoded).map_err(|_| bad())?;
    // Some tools end the encoded pair with a newline (as `echo | base64` does).
    let text = text.strip_suffix('\n').unwrap_or(text);
    let (username, password) = text.split_once(':').ok_or_else(bad)?;
    if username.is_empty() {
        return Err(bad());
    }
    Ok(Credentials::Basic {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(c: Credentials) -> (String, String) {
        match &c {
            Credentials::Basic { username, password } => (username.clone(), password.clone()),
            other => panic!("expected basic credentials, got {other:?}"),
        }
    }

    fn auth(user_pass: &str) -> String {
        B64.encode(user_pass)
    }

    #[test]
    fn longest_prefix_wins() {
        let json = serde_json::json!({"auths": {
            "127.0.0.1:5000": {"auth": auth("host:h")},
            "127.0.0.1:5000/team": {"auth": auth("team:t")},
            "127.0.0.1:5000/team/app": {"auth": auth("app:a:with:colons")},
        }})
        .to_string();
        let j = json.as_bytes();
        assert_eq!(
            basic(credentials_for_image(j, "127.0.0.1:5000/team/app:v1").unwrap()),
            ("app".into(), "a:with:colons".into())
        );
        assert_eq!(
            basic(credentials_for_image(j, "127.0.0.1:5000/team/other@sha256:ab").unwrap()),
            ("team".into(), "t".into())
        );
        assert_eq!(
            basic(credentials_for_image(j, "127.0.0.1:5000/x/y").unwrap()),
            ("host".into(), "h".into())
        );
        // `team` must not match `teamwork` (prefixes are whole path segments).
        assert_eq!(
            basic(credentials_for_image(j, "127.0.0.1:5000/teamwork/app").unwrap()),
            ("host".into(), "h".into())
        );
        assert!(matches!(
            credentials_for_image(j, "other.example/app:1").unwrap(),
            Credentials::Anonymous
        ));
    }

    #[test]
    fn docker_style_keys_and_trailing_newline() {
        let json = serde_json::json!({"auths": {
            "https://registry.example/": {"auth": B64.encode("u:p\n")},
        }})
        .to_string();
        assert_eq!(
            basic(credentials_for_image(json.as_bytes(), "registry.example/a/b:c").unwrap()),
            ("u".into(), "p".into())
        );
    }

    #[test]
    fn bad_files_and_entries_are_refused() {
        assert!(matches!(
            credentials_for_image(b"not json", "r/a"),
            Err(RegistryAuthError::Malformed(_))
        ));
        assert!(matches!(
            credentials_for_image(br#"{"auths": []}"#, "r/a"),
            Err(RegistryAuthError::Malformed(_))
        ));
        for entry in [
            serde_json::json!({}),
            serde_json::json!({"auth": "!!!"}),
            serde_json::json!({"auth": auth("no-colon")}),
            serde_json::json!({"auth": auth(":empty-user")}),
            serde_json::json!({"auth": B64.encode([0xff, b':', b'x'])}),
        ] {
            let json = serde_json::json!({"auths": {"r": entry}}).to_string();
            assert!(
                matches!(
                    credentials_for_image(json.as_bytes(), "r/a"),
                    Err(RegistryAuthError::BadEntry(_))
                ),
                "{json}"
            );
        }
        let many: BTreeMap<String, serde_json::Value> = (0..=MAX_AUTH_ENTRIES)
            .map(|i| (format!("r{i}"), serde_json::json!({"auth": auth("u:p")})))
            .collect();
        let json = serde_json::json!({ "auths": many }).to_string();
        assert!(matches!(
            credentials_for_image(json.as_bytes(), "r/a"),
            Err(RegistryAuthError::TooManyEntries)
        ));
    }

    #[test]
    fn provider_errors_keep_the_client_error() {
        // Nothing listens on port 1 of loopback: the transport error must come back intact as
        // the source, with the key id asked for.
        let mut config = super::super::KbsClientConfig::new(
            "http://127.0.0.1:1",
            super::super::BrokerTrust::InsecurePlainHttp,
        );
        config.attempts = 1;
        let evidence = Arc::new(super::super::InsecureSampleEvidence::with_launch_digest(
            "00",
        ));
        let provider = KbsKeyProvider::new(Arc::new(KbsClient::new(config, evidence).unwrap()));
        let kid = KeyId::parse("kbs:///default/image-key/demo").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt.block_on(provider.get_key(&kid)).unwrap_err();
        assert_eq!(err.key_id, kid);
        let source = err.source.downcast_ref::<KbsClientError>().unwrap();
        assert!(
            matches!(source, KbsClientError::Transport { url, .. } if url.ends_with("/kbs/v0/auth")),
            "{source:?}"
        );
    }

    #[test]
    fn repository_strips_tag_and_digest_but_not_port() {
        assert_eq!(repository_of("127.0.0.1:5000/a/b:v1"), "127.0.0.1:5000/a/b");
        assert_eq!(repository_of("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b");
        assert_eq!(
            repository_of("127.0.0.1:5000/a@sha256:00"),
            "127.0.0.1:5000/a"
        );
        assert_eq!(repository_of("host:5000"), "host:5000");
    }
}
