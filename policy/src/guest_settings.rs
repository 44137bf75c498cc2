//! The guest's trust settings as they travel in initdata.
//!
//! CoCo's initdata carries the attestation agent's configuration (`aa.toml`), the confidential
//! data hub's (`cdh.toml`) and the agent policy (`policy.rego`) as entries of its `[data]` table.
//! tsuba reads the keys of those files that it has a use for, so a document written by CoCo's
//! tooling configures a tsuba guest too, and keeps what CoCo has no key for in `tsuba.toml`:
//!
//! | setting | entry and key |
//! |---|---|
//! | broker URL | `aa.toml` `[token_configs.kbs] url` (or `cdh.toml` `[kbc] url`; both must agree) |
//! | broker CA certificate (PEM) | `aa.toml` `[token_configs.kbs] cert` (or `cdh.toml` `[kbc] kbs_cert`) |
//! | image signature policy | `cdh.toml` `[image] image_security_policy_uri` |
//! | registry credentials | `cdh.toml` `[image] authenticated_registry_credentials_uri` |
//! | broker key pin | `tsuba.toml` `kbs_pin` |
//! | signature storage (lookaside) | `tsuba.toml` `signature_storage` |
//! | plain-HTTP registries | `tsuba.toml` `plain_http_registries` |
//! | insecure switches | `tsuba.toml` `insecure_kbs_http`, `insecure_registry_credentials_over_http` |
//!
//! Only the shape is checked here; the agent checks the values (URL schemes, resource URIs, the
//! pin) before it uses them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{INITDATA_VERSION, Initdata, InitdataAlgorithm};

/// `[data]` entry holding the attestation agent's configuration.
pub const AA_TOML: &str = "aa.toml";
/// `[data]` entry holding the confidential data hub's configuration.
pub const CDH_TOML: &str = "cdh.toml";
/// `[data]` entry holding tsuba's own settings.
pub const TSUBA_TOML: &str = "tsuba.toml";
/// `[data]` entry holding the agent policy.
pub const POLICY_REGO: &str = "policy.rego";

/// The guest settings in one initdata document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestSettings {
    /// The key broker's base URL.
    pub kbs_url: Option<String>,
    /// The CA certificate (PEM) that authenticates the broker.
    pub kbs_cert: Option<String>,
    /// The broker's public-key pin, `sha256:<hex>`.
    pub kbs_pin: Option<String>,
    /// Allow a plain `http://` broker (simulation only).
    pub insecure_kbs_http: bool,
    /// The broker resource holding containers-policy.json (`kbs:///repo/type/tag`).
    pub image_policy: Option<String>,
    /// The broker resource holding the registries' auth.json.
    pub registry_auth: Option<String>,
    /// The broker resource holding the signature storage configuration.
    pub signature_storage: Option<String>,
    /// Registries (`host:port`) reached over plain HTTP.
    pub plain_http_registries: Vec<String>,
    /// Allow registry credentials over plain HTTP.
    pub insecure_registry_credentials_over_http: bool,
}

/// An entry of the document is not of the shape tsuba reads.
#[derive(Debug, thiserror::Error)]
pub enum GuestSettingsError {
    /// An entry is not TOML of the expected shape.
    #[error("initdata entry {entry} is not valid: {source}")]
    Entry {
        /// The `[data]` entry.
        entry: &'static str,
        /// What the TOML parser said.
        #[source]
        source: toml::de::Error,
    },
    /// `aa.toml` and `cdh.toml` name different brokers or certificates.
    #[error("aa.toml and cdh.toml disagree on the broker's {0}: give one value")]
    Disagree(&'static str),
    /// The document could not be written.
    #[error("initdata could not be written: {0}")]
    Render(String),
}

#[derive(Default, Deserialize, Serialize)]
struct AaToml {
    #[serde(default)]
    token_configs: AaTokenConfigs,
}

#[derive(Default, Deserialize, Serialize)]
struct AaTokenConfigs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kbs: Option<AaKbs>,
}

#[derive(Default, Deserialize, Serialize)]
struct AaKbs {
    url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cert: Option<String>,
}

#[derive(Default, Deserialize, Serialize)]
struct CdhToml {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kbc: Option<CdhKbc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image: Option<CdhImage>,
}

#[derive(Default, Deserialize, Serialize)]
struct CdhKbc {
    name: String,
    url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kbs_cert: Option<String>,
}

#[derive(Default, Deserialize, Serialize)]
struct CdhImage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image_security_policy_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    authenticated_registry_credentials_uri: Option<String>,
}

/// tsuba's own entry: unknown keys are refused, a typo must not leave a default in place.
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct TsubaToml {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kbs_pin: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    insecure_kbs_http: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signature_storage: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    plain_http_registries: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    insecure_registry_credentials_over_http: bool,
}

fn entry<'a, T: Deserialize<'a> + Default>(
    doc: &'a Initdata,
    name: &'static str,
) -> Result<T, GuestSettingsError> {
    match doc.get(name) {
        None => Ok(T::default()),
        Some(text) => toml::from_str(text).map_err(|source| GuestSettingsError::Entry {
            entry: name,
            source,
        }),
    }
}

/// `a` or `b`, which must agree when both are given.
fn one_of(
    a: Option<String>,
    b: Option<String>,
    what: &'static str,
) -> Result<Option<String>, GuestSettingsError> {
    match (a, b) {
        (Some(a), Some(b)) if a != b => Err(GuestSettingsError::Disagree(what)),
        (a, b) => Ok(a.or(b)),
    }
}

impl GuestSettings {
    /// Reads the settings from a document's `aa.toml`, `cdh.toml` and `tsuba.toml`; missing
    /// entries leave their settings unset.
    pub fn from_initdata(doc: &Initdata) -> Result<Self, GuestSettingsError> {
        let aa: AaToml = entry(doc, AA_TOML)?;
        let cdh: CdhToml = entry(doc, CDH_TOML)?;
        let tsuba: TsubaToml = entry(doc, TSUBA_TOML)?;
        let (aa_url, aa_cert) = aa
            .token_configs
            .kbs
            .map_or((None, None), |k| (Some(k.url), k.cert));
        let (cdh_url, cdh_cert) = cdh.kbc.map_or((None, None), |k| (Some(k.url), k.kbs_cert));
        let image = cdh.image.unwrap_or_default();
        Ok(Self {
            kbs_url: one_of(aa_url, cdh_url, "url")?,
            kbs_cert: one_of(aa_cert, cdh_cert, "certificate")?,
            kbs_pin: tsuba.kbs_pin,
            insecure_kbs_http: tsuba.insecure_kbs_http,
            image_policy: image.image_security_policy_uri,
            registry_auth: image.authenticated_registry_credentials_uri,
            signature_storage: tsuba.signature_storage,
            plain_http_registries: tsuba.plain_http_registries,
            insecure_registry_credentials_over_http: tsuba.insecure_registry_credentials_over_http,
        })
    }

    /// The `[data]` entries that carry these settings (only those with something to say).
    pub fn to_entries(&self) -> Result<BTreeMap<String, String>, GuestSettingsError> {
        let mut entries = BTreeMap::new();
        if let Some(url) = &self.kbs_url {
            let aa = AaToml {
                token_configs: AaTokenConfigs {
                    kbs: Some(AaKbs {
                        url: url.clone(),
                        cert: self.kbs_cert.clone(),
                    }),
                },
            };
            entries.insert(AA_TOML.to_owned(), render(&aa)?);
        }
        let image =
            (self.image_policy.is_some() || self.registry_auth.is_some()).then(|| CdhImage {
                image_security_policy_uri: self.image_policy.clone(),
                authenticated_registry_credentials_uri: self.registry_auth.clone(),
            });
        let kbc = self.kbs_url.as_ref().map(|url| CdhKbc {
            name: "cc_kbc".to_owned(),
            url: url.clone(),
            kbs_cert: self.kbs_cert.clone(),
        });
        if kbc.is_some() || image.is_some() {
            entries.insert(CDH_TOML.to_owned(), render(&CdhToml { kbc, image })?);
        }
        let tsuba = TsubaToml {
            kbs_pin: self.kbs_pin.clone(),
            insecure_kbs_http: self.insecure_kbs_http,
            signature_storage: self.signature_storage.clone(),
            plain_http_registries: self.plain_http_registries.clone(),
            insecure_registry_credentials_over_http: self.insecure_registry_credentials_over_http,
        };
        let tsuba_text = render(&tsuba)?;
        if !tsuba_text.trim().is_empty() {
            entries.insert(TSUBA_TOML.to_owned(), tsuba_text);
        }
        Ok(entries)
    }
}

/// One entry as TOML.
fn render<T: Serialize>(value: &T) -> Result<String, GuestSettingsError> {
    toml::to_string(value).map_err(|e| GuestSettingsError::Render(e.to_string()))
}

#[derive(Serialize)]
struct Document<'a> {
    version: &'static str,
    algorithm: &'static str,
    data: &'a BTreeMap<String, String>,
}

/// Writes an initdata document with `data` as its `[data]` table. The same entries always give
/// the same bytes, so the same digest.
pub fn render_initdata(
    algorithm: InitdataAlgorithm,
    data: &BTreeMap<String, String>,
) -> Result<Initdata, GuestSettingsError> {
    let text = toml::to_string(&Document {
        version: INITDATA_VERSION,
        algorithm: algorithm.name(),
        data,
    })
    .map_err(|e| GuestSettingsError::Render(e.to_string()))?;
    Initdata::parse(&text).map_err(|e| GuestSettingsError::Render(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> GuestSettings {
        GuestSettings {
            kbs_url: Some("https://10.0.2.2:8443".into()),
            kbs_cert: Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into()),
            kbs_pin: Some(format!("sha256:{}", "ab".repeat(32))),
            insecure_kbs_http: false,
            image_policy: Some("kbs:///default/security-policy/test".into()),
            registry_auth: Some("kbs:///default/credential/registry".into()),
            signature_storage: Some("kbs:///default/image/lookaside".into()),
            plain_http_registries: vec!["10.0.2.2:5000".into()],
            insecure_registry_credentials_over_http: true,
        }
    }

    #[test]
    fn settings_round_trip_through_a_rendered_document() {
        let mut data = full().to_entries().unwrap();
        data.insert(POLICY_REGO.into(), "package agent_policy\n".into());
        let doc = render_initdata(InitdataAlgorithm::Sha384, &data).unwrap();
        assert_eq!(GuestSettings::from_initdata(&doc).unwrap(), full());
        assert_eq!(doc.get(POLICY_REGO), Some("package agent_policy\n"));
        // Deterministic: the same settings give the same bytes.
        let again = render_initdata(InitdataAlgorithm::Sha384, &data).unwrap();
        assert_eq!(doc.as_str(), again.as_str());
        // Nothing set writes nothing.
        assert!(GuestSettings::default().to_entries().unwrap().is_empty());
    }

    #[test]
    fn reads_a_coco_document_and_ignores_keys_it_has_no_use_for() {
        // The shape CoCo's documentation gives for initdata (keys tsuba does not read included).
        let text = r#"version = "0.1.0"
algorithm = "sha256"
[data]
"aa.toml" = '''
[token_configs]
[token_configs.coco_as]
url = "http://127.0.0.1:8000"

[token_configs.kbs]
url = "http://127.0.0.1:8080"
'''
"cdh.toml" = '''
socket = 'unix:///run/confidential-containers/cdh.sock'
credentials = []

[kbc]
name = "cc_kbc"
url = "http://127.0.0.1:8080"

[image]
image_security_policy_uri = 'kbs:///default/security-policy/test'
max_concurrent_layer_downloads_per_image = 3
'''
"policy.rego" = '''
package agent_policy
'''
"#;
        let doc = Initdata::parse(text).unwrap();
        let settings = GuestSettings::from_initdata(&doc).unwrap();
        assert_eq!(settings.kbs_url.as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(
            settings.image_policy.as_deref(),
            Some("kbs:///default/security-policy/test")
        );
        assert!(settings.kbs_pin.is_none() && !settings.insecure_kbs_http);
    }

    #[test]
    fn refuses_disagreeing_brokers_malformed_entries_and_unknown_tsuba_keys() {
        let doc = |data: &[(&str, &str)]| {
            let data = data
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            render_initdata(InitdataAlgorithm::Sha256, &data).unwrap()
        };
        let two = doc(&[
            (AA_TOML, "[token_configs.kbs]\nurl = \"https://a\"\n"),
            (CDH_TOML, "[kbc]\nname = \"cc_kbc\"\nurl = \"https://b\"\n"),
        ]);
        assert!(matches!(
            GuestSettings::from_initdata(&two),
            Err(GuestSettingsError::Disagree("url"))
        ));
        let typo = doc(&[(TSUBA_TOML, "kbs_pinn = \"sha256:00\"\n")]);
        assert!(matches!(
            GuestSettings::from_initdata(&typo),
            Err(GuestSettingsError::Entry {
                entry: TSUBA_TOML,
                ..
            })
        ));
        let broken = doc(&[(AA_TOML, "[token_configs.kbs\n")]);
        assert!(matches!(
            GuestSettings::from_initdata(&broken),
            Err(GuestSettingsError::Entry { entry: AA_TOML, .. })
        ));
        let wrong_type = doc(&[(TSUBA_TOML, "plain_http_registries = \"x:1\"\n")]);
        assert!(GuestSettings::from_initdata(&wrong_type).is_err());
    }
}
