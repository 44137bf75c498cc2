//! Registry credentials go only where the host cannot read them: never to a plain-HTTP registry,
//! and never to a token service that the registry names with an `http://` realm, unless the
//! caller explicitly allows it ([`RegistryOptions::insecure_credentials_over_http`]).
//!
//! In the guest the credentials come from the key broker; the network is the host's, so anything
//! sent in the clear is the host's too.
//!
//! [`RegistryOptions::insecure_credentials_over_http`]: crate::RegistryOptions

use std::time::Duration;

use oci_client::Reference;

use crate::pull::{Credentials, PullError, Registry};

/// Longest `WWW-Authenticate` header read from a registry.
const MAX_CHALLENGE: usize = 4096;

impl Registry {
    /// Refuses, before any request carries them, to send credentials for `reference`'s registry
    /// over plain HTTP: the registry itself, or the token realm its challenge names. Each
    /// registry is checked once per client.
    pub(crate) async fn check_credentials_transport(
        &self,
        reference: &Reference,
    ) -> Result<(), PullError> {
        if matches!(self.options.credentials, Credentials::Anonymous)
            || self.options.insecure_credentials_over_http
        {
            return Ok(());
        }
        let registry = reference.resolve_registry().to_owned();
        if self.options.plain_http.contains(&registry) {
            return Err(PullError::CredentialsInTheClear {
                registry,
                to: "the registry itself is reached over plain HTTP".into(),
            });
        }
        if self
            .credentials_checked
            .lock()
            .is_ok_and(|set| set.contains(&registry))
        {
            return Ok(());
        }
        let realm = self.token_realm(&registry).await?;
        if let Some(realm) = realm
            && !realm.starts_with("https://")
        {
            return Err(PullError::CredentialsInTheClear {
                registry,
                to: format!(
                    "its token service {:?} is not https",
                    realm.chars().take(200).collect::<String>()
                ),
            });
        }
        if let Ok(mut set) = self.credentials_checked.lock() {
            set.insert(registry);
        }
        Ok(())
    }

    /// The `realm` of the registry's Bearer challenge on `/v2/`, if it asks for a token.
    async fn token_realm(&self, registry: &str) -> Result<Option<String>, PullError> {
        let probe_error = |what: &str| PullError::CredentialProbe {
            registry: registry.to_owned(),
            what: what.to_owned(),
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let timeout = self.options.request_timeout.min(Duration::from_secs(30));
        let builder = reqwest::Client::builder()
            .timeout(timeout)
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none());
        let client = self
            .options
            .tls_roots
            .apply(builder)?
            .build()
            .map_err(|e| probe_error(&e.to_string()))?;
        let response = client
            .get(format!("https://{registry}/v2/"))
            .send()
            .await
            .map_err(|e| probe_error(&e.to_string()))?;
        let Some(challenge) = response.headers().get(reqwest::header::WWW_AUTHENTICATE) else {
            return Ok(None);
        };
        if challenge.len() > MAX_CHALLENGE {
            return Err(probe_error("the authentication challenge is too long"));
        }
        let challenge = challenge
            .to_str()
            .map_err(|_| probe_error("the authentication challenge is not text"))?;
        Ok(bearer_realm(challenge))
    }
}

/// The `realm` parameter of a `Bearer` challenge (`Bearer realm="https://auth/token",service=..`).
fn bearer_realm(challenge: &str) -> Option<String> {
    let (scheme, params) = challenge.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let start = params.to_ascii_lowercase().find("realm=")? + "realm=".len();
    let rest = params.get(start..)?;
    let value = match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next()?,
        None => rest.split(',').next()?.trim(),
    };
    Some(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RegistryOptions;

    fn registry(credentials: Credentials, plain_http: &[&str], insecure: bool) -> Registry {
        Registry::new(RegistryOptions {
            plain_http: plain_http.iter().map(|s| (*s).to_owned()).collect(),
            credentials,
            insecure_credentials_over_http: insecure,
            attempts: 1,
            request_timeout: Duration::from_secs(5),
            ..RegistryOptions::default()
        })
        .unwrap()
    }

    fn basic() -> Credentials {
        Credentials::Basic {
            username: "u".into(),
            password: "p".into(),
        }
    }

    #[test]
    fn bearer_realms_are_read_from_challenges() {
        assert_eq!(
            bearer_realm(r#"Bearer realm="https://auth.example/token",service="r""#).as_deref(),
            Some("https://auth.example/token")
        );
        assert_eq!(
            bearer_realm(r#"bearer service="r",Realm="http://10.0.2.2:1/t""#).as_deref(),
            Some("http://10.0.2.2:1/t")
        );
        assert_eq!(
            bearer_realm("Bearer realm=http://x/t,service=r").as_deref(),
            Some("http://x/t")
        );
        assert_eq!(bearer_realm(r#"Basic realm="registry""#), None);
        assert_eq!(bearer_realm("Bearer"), None);
        assert_eq!(bearer_realm(""), None);
    }

    #[test]
    fn credentials_never_go_to_a_plain_http_registry_unless_allowed() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let reference: Reference = "10.0.2.2:5000/app:1".parse().unwrap();
        let err = rt
            .block_on(
                registry(basic(), &["10.0.2.2:5000"], false)
                    .check_credentials_transport(&reference),
            )
            .unwrap_err();
        assert!(
            matches!(&err, PullError::CredentialsInTheClear { registry, .. } if registry == "10.0.2.2:5000"),
            "{err}"
        );
        assert!(err.to_string().contains("10.0.2.2:5000"), "{err}");
        let token = Credentials::Bearer("t".into());
        assert!(matches!(
            rt.block_on(
                registry(token, &["10.0.2.2:5000"], false).check_credentials_transport(&reference)
            ),
            Err(PullError::CredentialsInTheClear { .. })
        ));
        // Explicitly allowed, or nothing to send: no refusal and no request made.
        rt.block_on(
            registry(basic(), &["10.0.2.2:5000"], true).check_credentials_transport(&reference),
        )
        .unwrap();
        rt.block_on(
            registry(Credentials::Anonymous, &["10.0.2.2:5000"], false)
                .check_credentials_transport(&reference),
        )
        .unwrap();
    }
}
