//! The KBS protocol client: request, challenge, attestation, response (RCAR), then resource
//! fetches with the attestation token, which is cached until shortly before it expires.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, SET_COOKIE};
use serde::Serialize;
use serde_json::Value;
use tsuba_policy::Initdata;
use tsuba_protocols::kbs_binding::BindingDigest;
use zeroize::Zeroizing;

use super::error::KbsClientError;
use super::evidence::EvidenceProvider;
use super::tee_key::{TeeKey, TeeKeyKind};
use super::trust::BrokerTrust;
use super::uri::ResourceUri;

/// The protocol version spoken.
const PROTOCOL_VERSION: &str = "0.4.0";
/// Largest response body read from the broker.
const MAX_RESPONSE: usize = 16 * 1024 * 1024;
/// A cached token is renewed this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(10);

/// How the client reaches the broker.
#[derive(Debug, Clone)]
pub struct KbsClientConfig {
    /// Base URL of the broker, e.g. `https://kbs.example:8080`.
    pub url: String,
    /// What authenticates the broker (no built-in roots are ever used).
    pub trust: BrokerTrust,
    /// The kind of ephemeral key generated per session.
    pub key_kind: TeeKeyKind,
    /// Attempts per step for transient failures (at least 1).
    pub attempts: u32,
    /// First backoff delay; doubled after each failed attempt.
    pub backoff: Duration,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// The initdata document this guest was launched with, presented in every attestation
    /// request as `"init-data": {"format": "toml", "body": <its exact text>}`. The broker checks
    /// its digest against the evidence's `HOST_DATA` / `MRCONFIGID` and refuses a document that
    /// does not match; `None` sends `"init-data": null`.
    pub init_data: Option<Initdata>,
}

impl KbsClientConfig {
    /// Defaults for `url` under `trust`: EC key, 4 attempts from 100 ms backoff, 30 s per
    /// request.
    pub fn new(url: impl Into<String>, trust: BrokerTrust) -> Self {
        Self {
            url: url.into(),
            trust,
            key_kind: TeeKeyKind::EcP256,
            attempts: 4,
            backoff: Duration::from_millis(100),
            request_timeout: Duration::from_secs(30),
            init_data: None,
        }
    }
}

/// The attestation request, serialised in the field order of `kbs_types::Attestation` (what
/// guest-components sends; docs/interop.md, the wire capture).
#[derive(Serialize)]
struct AttestRequest<'a> {
    #[serde(rename = "init-data")]
    init_data: Option<InitDataBody<'a>>,
    #[serde(rename = "runtime-data")]
    runtime_data: RuntimeDataBody<'a>,
    #[serde(rename = "tee-evidence")]
    tee_evidence: TeeEvidenceBody<'a>,
}

#[derive(Serialize)]
struct InitDataBody<'a> {
    format: &'static str,
    body: &'a str,
}

#[derive(Serialize)]
struct RuntimeDataBody<'a> {
    nonce: &'a str,
    #[serde(rename = "tee-pubkey")]
    tee_pubkey: &'a Value,
}

#[derive(Serialize)]
struct TeeEvidenceBody<'a> {
    primary_evidence: &'a Value,
    additional_evidence: &'a str,
}

/// The body of `POST /kbs/v0/attest`.
fn attestation_body(
    init_data: Option<&Initdata>,
    nonce: &str,
    tee_pubkey: &Value,
    evidence: &Value,
) -> Result<String, KbsClientError> {
    let request = AttestRequest {
        init_data: init_data.map(|document| InitDataBody {
            format: "toml",
            body: document.as_str(),
        }),
        runtime_data: RuntimeDataBody { nonce, tee_pubkey },
        tee_evidence: TeeEvidenceBody {
            primary_evidence: evidence,
            additional_evidence: "",
        },
    };
    serde_json::to_string(&request).map_err(|_| KbsClientError::Protocol {
        step: "attest",
        what: "attestation request could not be serialised",
    })
}

struct Attested {
    token: String,
    expires: u64,
    key: Arc<TeeKey>,
}

/// A KBS client bound to one broker and one evidence provider.
pub struct KbsClient {
    http: reqwest::Client,
    base: String,
    config: KbsClientConfig,
    evidence: Arc<dyn EvidenceProvider>,
    cached: tokio::sync::Mutex<Option<Attested>>,
}

impl std::fmt::Debug for KbsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KbsClient")
            .field("url", &self.base)
            .field("tee", &self.evidence.tee())
            .finish_non_exhaustive()
    }
}

impl KbsClient {
    /// Builds a client. The URL's scheme must match the trust: `https://` under a CA or a pin,
    /// `http://` only under [`BrokerTrust::InsecurePlainHttp`].
    pub fn new(
        config: KbsClientConfig,
        evidence: Arc<dyn EvidenceProvider>,
    ) -> Result<Self, KbsClientError> {
        let base = config.url.trim_end_matches('/').to_owned();
        let plain = matches!(config.trust, BrokerTrust::InsecurePlainHttp);
        let scheme_ok = if plain {
            base.starts_with("http://")
        } else {
            base.starts_with("https://")
        };
        if !scheme_ok {
            return Err(KbsClientError::Protocol {
                step: "config",
                what: "broker url must be https:// (http:// only under an explicitly insecure trust)",
            });
        }
        let builder = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .user_agent(concat!(
                "tsuba-attestation-agent/",
                env!("CARGO_PKG_VERSION")
            ))
            .https_only(!plain)
            // A redirect could lead anywhere, over anything: the broker's URL is the one given.
            .redirect(reqwest::redirect::Policy::none())
            .use_preconfigured_tls(config.trust.tls_config().map_err(KbsClientError::Trust)?);
        let http = builder.build().map_err(KbsClientError::Config)?;
        Ok(Self {
            http,
            base,
            config,
            evidence,
            cached: tokio::sync::Mutex::new(None),
        })
    }

    /// Fetches and decrypts the resource at `uri` (`kbs:///repo/type/tag`), attesting first
    /// when there is no valid token.
    pub async fn get_resource(&self, uri: &str) -> Result<Zeroizing<Vec<u8>>, KbsClientError> {
        let uri = ResourceUri::parse(uri)?;
        let (token, key) = self.token().await?;
        match self.fetch(&uri, &token, &key).await {
            // The broker no longer accepts the token (restarted with a new key, expired early):
            // attest once more.
            Err(KbsClientError::Refused {
                status: 401,
                ref kind,
                ..
            }) if kind == "TokenVerification" || kind == "TokenNotFound" => {
                self.invalidate().await;
                let (token, key) = self.token().await?;
                self.fetch(&uri, &token, &key).await
            }
            other => other,
        }
    }

    /// Runs RCAR now (ignoring a cached token) and returns the new token.
    pub async fn attest(&self) -> Result<String, KbsClientError> {
        self.invalidate().await;
        Ok(self.token().await?.0)
    }

    async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn token(&self) -> Result<(String, Arc<TeeKey>), KbsClientError> {
        let mut cached = self.cached.lock().await;
        let now = unix_now();
        if let Some(attested) = cached.as_ref()
            && attested.expires > now.saturating_add(TOKEN_MARGIN.as_secs())
        {
            return Ok((attested.token.clone(), Arc::clone(&attested.key)));
        }
        let attested = self.retry(|| self.rcar()).await?;
        let out = (attested.token.clone(), Arc::clone(&attested.key));
        *cached = Some(attested);
        Ok(out)
    }

    async fn rcar(&self) -> Result<Attested, KbsClientError> {
        let kind = self.config.key_kind;
        let key = tokio::task::spawn_blocking(move || TeeKey::generate(kind))
            .await
            .map_err(|_| KbsClientError::Protocol {
                step: "key",
                what: "key generation task failed",
            })??;
        let request = serde_json::json!({
            "version": PROTOCOL_VERSION,
            "tee": self.evidence.tee(),
            "extra-params": {"supported-hash-algorithms": ["sha384"]},
        });
        let url = format!("{}/kbs/v0/auth", self.base);
        let response = self
            .send("auth", self.http.post(&url).json_body(&request), &url)
            .await?;
        let cookie = session_cookie(&response).ok_or(KbsClientError::Protocol {
            step: "auth",
            what: "no kbs-session-id cookie",
        })?;
        let challenge: Value = read_json("auth", response).await?;
        let nonce = challenge
            .get("nonce")
            .and_then(Value::as_str)
            .ok_or(KbsClientError::Protocol {
                step: "auth",
                what: "no nonce in challenge",
            })?
            .to_owned();
        let jwk = key.public_jwk();
        let binding = *BindingDigest::compute(&nonce, &jwk, "").as_bytes();
        // Attesters do blocking file, ioctl or device I/O.
        let provider = Arc::clone(&self.evidence);
        let evidence = tokio::task::spawn_blocking(move || provider.evidence(&binding))
            .await
            .map_err(|_| KbsClientError::Protocol {
                step: "attest",
                what: "attester task failed",
            })?
            .map_err(KbsClientError::Attester)?;
        let attestation =
            attestation_body(self.config.init_data.as_ref(), &nonce, &jwk, &evidence)?;
        let url = format!("{}/kbs/v0/attest", self.base);
        let request = self
            .http
            .post(&url)
            .header(COOKIE, cookie)
            .header(CONTENT_TYPE, "application/json")
            .body(attestation);
        let response = self.send("attest", request, &url).await?;
        let body: Value = read_json("attest", response).await?;
        let token = body
            .get("token")
            .and_then(Value::as_str)
            .ok_or(KbsClientError::Protocol {
                step: "attest",
                what: "no token",
            })?
            .to_owned();
        let expires = token_expiry(&token).unwrap_or(0);
        tracing::debug!(
            tee = self.evidence.tee(),
            expires,
            "attested to the key broker"
        );
        Ok(Attested {
            token,
            expires,
            key: Arc::new(key),
        })
    }

    async fn fetch(
        &self,
        uri: &ResourceUri,
        token: &str,
        key: &TeeKey,
    ) -> Result<Zeroizing<Vec<u8>>, KbsClientError> {
        let url = format!("{}/kbs/v0/resource/{}", self.base, uri.path());
        let body = self
            .retry(|| async {
                let request = self
                    .http
                    .get(&url)
                    .header(AUTHORIZATION, format!("Bearer {token}"));
                let response = self.send("resource", request, &url).await?;
                read_bounded("resource", response).await
            })
            .await?;
        Ok(key.decrypt(&body)?)
    }

    /// Sends a request; a non-2xx answer becomes [`KbsClientError::Refused`] with the broker's
    /// explanation.
    async fn send(
        &self,
        step: &'static str,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<reqwest::Response, KbsClientError> {
        let response = request
            .send()
            .await
            .map_err(|source| KbsClientError::transport(url, source))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = read_bounded(step, response).await.unwrap_or_default();
        let problem: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let kind = problem
            .get("type")
            .and_then(Value::as_str)
            .and_then(|t| t.rsplit('/').next())
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error"))
            .chars()
            .take(100)
            .collect();
        let detail = problem
            .get("detail")
            .and_then(Value::as_str)
            .unwrap_or("")
            .chars()
            .take(1000)
            .collect();
        Err(KbsClientError::Refused {
            step,
            status: status_u16(status),
            kind,
            detail,
        })
    }

    async fn retry<T, F, Fut>(&self, mut op: F) -> Result<T, KbsClientError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, KbsClientError>>,
    {
        let mut delay = self.config.backoff;
        let mut attempt = 1;
        loop {
            match op().await {
                Err(err) if err.is_transient() && attempt < self.config.attempts.max(1) => {
                    tracing::warn!(error = %err, attempt, "transient kbs failure, retrying");
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

trait JsonBody {
    fn json_body(self, value: &Value) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, value: &Value) -> Self {
        self.header(CONTENT_TYPE, "application/json")
            .body(value.to_string())
    }
}

fn status_u16(status: StatusCode) -> u16 {
    status.as_u16()
}

fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| {
            let pair = value.split(';').next()?.trim();
            pair.starts_with("kbs-session-id=").then(|| pair.to_owned())
        })
}

async fn read_bounded(
    step: &'static str,
    mut response: reqwest::Response,
) -> Result<Vec<u8>, KbsClientError> {
    let url = response.url().to_string();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|source| KbsClientError::Transport {
            url: url.clone(),
            source,
        })?
    {
        if body.len().saturating_add(chunk.len()) > MAX_RESPONSE {
            return Err(KbsClientError::Protocol {
                step,
                what: "response too large",
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn read_json(
    step: &'static str,
    response: reqwest::Response,
) -> Result<Value, KbsClientError> {
    let body = read_bounded(step, response).await?;
    serde_json::from_slice(&body).map_err(|_| KbsClientError::Protocol {
        step,
        what: "body is not json",
    })
}

/// The `exp` claim of a JWT, read without verifying it (the token is only shown back to the
/// broker that issued it).
fn token_expiry(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()?
        .get("exp")?
        .as_u64()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn attestation_body_is_the_wire_capture_shape_with_and_without_init_data() {
        let jwk = serde_json::json!({"kty": "EC", "crv": "P-256"});
        let evidence = serde_json::json!({"report_data": "cmQ=", "svn": "1"});
        // Byte for byte the shape of docs' wire capture (field order of kbs_types::Attestation).
        // The key and the evidence are written as their own values order their members (sorted,
        // or as inserted when the workspace turns on serde_json's preserve_order, as regorus
        // does): the envelope's order is what this function decides.
        let (key, primary) = (
            serde_json::to_string(&jwk).unwrap(),
            serde_json::to_string(&evidence).unwrap(),
        );
        assert_eq!(
            attestation_body(None, "bm9uY2U=", &jwk, &evidence).unwrap(),
            format!(
                r#"{{"init-data":null,"runtime-data":{{"nonce":"bm9uY2U=","tee-pubkey":{key}}},"tee-evidence":{{"primary_evidence":{primary},"additional_evidence":""}}}}"#
            )
        );
        let text =
            "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"a\" = '''\nb \"q\"\n'''\n";
        let document = Initdata::parse(text).unwrap();
        let body = attestation_body(Some(&document), "bm9uY2U=", &jwk, &evidence).unwrap();
        let expected_prefix = format!(
            r#"{{"init-data":{{"format":"toml","body":{}}},"runtime-data":{{"nonce":"bm9uY2U="#,
            serde_json::to_string(text).unwrap()
        );
        assert!(body.starts_with(&expected_prefix), "{body}");
        // The broker reads back the exact text, so its digest is the launcher's.
        let parsed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["init-data"]["body"].as_str(), Some(text));
        assert_eq!(
            Initdata::parse(parsed["init-data"]["body"].as_str().unwrap())
                .unwrap()
                .host_data(),
            document.host_data()
        );
    }

    #[test]
    fn a_new_config_presents_no_init_data() {
        let config = KbsClientConfig::new("http://127.0.0.1:1", BrokerTrust::InsecurePlainHttp);
        assert!(config.init_data.is_none());
    }

    #[test]
    fn token_expiry_reads_exp() {
        let payload = URL_SAFE_NO_PAD.encode(r#"{"exp":1234}"#);
        assert_eq!(token_expiry(&format!("h.{payload}.s")), Some(1234));
        assert_eq!(token_expiry("garbage"), None);
    }

    #[test]
    fn the_scheme_must_match_the_trust() {
        let evidence = Arc::new(super::super::evidence::InsecureSampleEvidence::default());
        let pin = BrokerTrust::Pin(
            super::super::trust::SpkiPin::parse(&format!("sha256:{}", "00".repeat(32))).unwrap(),
        );
        let scheme_error = |url: &str, trust: &BrokerTrust| {
            matches!(
                KbsClient::new(KbsClientConfig::new(url, trust.clone()), evidence.clone()),
                Err(KbsClientError::Protocol { step: "config", .. })
            )
        };
        // http:// under a pin or a CA would silently drop the authentication: refused.
        assert!(scheme_error("http://127.0.0.1:1", &pin));
        // https:// under the insecure trust is refused too: the trust says what is meant.
        assert!(scheme_error(
            "https://127.0.0.1:1",
            &BrokerTrust::InsecurePlainHttp
        ));
        assert!(scheme_error("ftp://x", &pin));
        assert!(scheme_error("ftp://x", &BrokerTrust::InsecurePlainHttp));
        assert!(
            KbsClient::new(
                KbsClientConfig::new("https://127.0.0.1:1", pin),
                evidence.clone()
            )
            .is_ok()
        );
        assert!(
            KbsClient::new(
                KbsClientConfig::new("http://127.0.0.1:1", BrokerTrust::InsecurePlainHttp),
                evidence
            )
            .is_ok()
        );
    }

    #[test]
    fn transient_classification() {
        let refused = |status| KbsClientError::Refused {
            step: "attest",
            status,
            kind: String::new(),
            detail: String::new(),
        };
        assert!(refused(503).is_transient());
        assert!(refused(429).is_transient());
        assert!(!refused(401).is_transient());
        assert!(!refused(400).is_transient());
    }
}
