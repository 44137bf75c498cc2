//! Agent configuration: transport, logging and network from the kernel command line; image pulls
//! from the pod's initdata.
//!
//! The command line is part of the launch measurement (kernel hashes in SNP, RTMR in TDX), so the
//! host cannot change it without the broker noticing. Only `tsuba.agent.*` keys are read; an
//! unknown value is an error, never a default. It holds only what is the same for every pod of a
//! release, so one guest image gives one reference value.
//!
//! What one pod trusts (the key broker's URL and key, the signature policy's location, the
//! registries reached over plain HTTP) comes from initdata ([`PullConfig::from_settings`]), whose
//! digest the launch binds into HOST_DATA / MRCONFIGID and the agent checks before using it.

use std::net::Ipv4Addr;

use thiserror::Error;
use tsuba_attestation_agent::kbs::{BrokerTrust, SpkiPin};
use tsuba_policy::GuestSettings;

/// How the agent API reaches the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A virtio-serial port named [`tsuba_protocols::agent::SERIAL_PORT_NAME`].
    Serial,
    /// vsock, on port [`tsuba_protocols::agent::VSOCK_PORT`].
    Vsock,
}

/// The agent's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// Transport for the agent API.
    pub transport: Transport,
    /// Log filter (tracing `EnvFilter` syntax).
    pub log: String,
    /// Static IPv4 settings for `eth0` (`tsuba.agent.net=<addr>/<prefix>[,gw=<addr>]`); no
    /// networking without it.
    pub net: Option<NetConfig>,
}

/// Static IPv4 settings of the guest's one network interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    /// The interface's address.
    pub address: Ipv4Addr,
    /// Its prefix length (0 to 32).
    pub prefix: u8,
    /// The default route's gateway, if any.
    pub gateway: Option<Ipv4Addr>,
}

/// Where image pulls get their keys and their signature policy (from initdata).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullConfig {
    /// The key broker's base URL: `https://...` with [`PullConfig::kbs_pin`] or
    /// [`PullConfig::kbs_ca`], or `http://...` only with [`PullConfig::insecure_kbs_http`].
    pub kbs_url: Option<String>,
    /// The broker's public-key pin (`tsuba.toml` `kbs_pin = "sha256:<hex>"`): the SHA-256 of the
    /// SubjectPublicKeyInfo of the broker's certificate or of the CA it sends that issued it.
    /// In initdata, so the host cannot point the guest at a broker of its own.
    pub kbs_pin: Option<SpkiPin>,
    /// The CA certificates (PEM) the broker's certificate must chain to (`aa.toml`
    /// `[token_configs.kbs] cert`), when there is no pin.
    pub kbs_ca: Option<String>,
    /// `insecure_kbs_http`: allow a plain `http://` broker, whose answers anyone on the path (the
    /// host) can forge. Refused in snp and tdx guests whatever initdata says.
    pub insecure_kbs_http: bool,
    /// `insecure_registry_credentials_over_http`: allow sending the broker's registry
    /// credentials to a plain-HTTP registry or token service, where the host reads them.
    pub insecure_registry_credentials_over_http: bool,
    /// The broker resource holding the containers-policy.json signature policy
    /// (`kbs:///repo/type/tag`).
    pub image_policy: Option<String>,
    /// The broker resource holding the signature storage (lookaside) configuration that
    /// `signedBy` requirements read signatures from (`kbs:///repo/type/tag`); optional.
    pub signature_storage: Option<String>,
    /// The broker resource holding the registries' credentials, as a containers auth.json
    /// (`kbs:///repo/type/tag`); optional: anonymous pulls without it.
    pub registry_auth: Option<String>,
    /// Registries (`host:port`) reached over plain HTTP; the content is still checked against
    /// its digests and the signature policy.
    pub plain_http_registries: Vec<String>,
}

/// A kernel command line the agent cannot run with.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// `tsuba.agent.transport` names no known transport.
    #[error("unknown agent transport {0:?} on the kernel command line (expected serial or vsock)")]
    UnknownTransport(String),
    /// A `tsuba.agent.*` key the agent does not know: most likely a typo in the launch config.
    #[error("unknown agent option {0:?} on the kernel command line")]
    UnknownOption(String),
    /// `tsuba.agent.net` is not `<ipv4>/<prefix>[,gw=<ipv4>]`.
    #[error(
        "tsuba.agent.net={0:?} is not valid (expected <ipv4>/<prefix>[,gw=<ipv4>], e.g. 10.0.2.15/24,gw=10.0.2.2)"
    )]
    Net(String),
    /// A pull setting from initdata with an empty or malformed value.
    #[error("initdata setting {key} = {value:?} is not valid: {why}")]
    PullOption {
        /// The option.
        key: &'static str,
        /// Its value as given.
        value: String,
        /// What is wrong.
        why: &'static str,
    },
    /// An option that may appear once appears twice: the measured line must be unambiguous.
    #[error("tsuba.agent.{0} appears more than once on the kernel command line")]
    Repeated(&'static str),
    /// `tsuba.agent.log` is not a valid log filter.
    #[error("tsuba.agent.log={0:?} is not a valid log filter (e.g. info, or tsuba_agent=debug)")]
    Log(String),
    /// The broker settings do not say how the broker is authenticated.
    #[error("initdata's key broker settings: {0}")]
    BrokerTrust(&'static str),
    /// A pull setting on the command line: it belongs in the pod's initdata now.
    #[error(
        "tsuba.agent.{0} is no longer read from the kernel command line: the key broker, image \
         policy and registry settings are per pod and come from initdata (docs/initdata.md)"
    )]
    MovedToInitdata(String),
}

/// Most plain-HTTP registries one initdata document may name.
const MAX_PLAIN_HTTP_REGISTRIES: usize = 16;

/// Longest value accepted for a URL or resource option.
const MAX_OPTION_LEN: usize = 512;

impl NetConfig {
    /// Parses `<ipv4>/<prefix>[,gw=<ipv4>]`.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::Net(value.chars().take(MAX_OPTION_LEN).collect());
        let mut parts = value.split(',');
        let (address, prefix) = parts
            .next()
            .and_then(|cidr| cidr.split_once('/'))
            .ok_or_else(bad)?;
        let address: Ipv4Addr = address.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 || address.is_unspecified() || address.is_broadcast() {
            return Err(bad());
        }
        let mut gateway = None;
        for part in parts {
            match part.split_once('=') {
                Some(("gw", gw)) if gateway.is_none() => {
                    gateway = Some(gw.parse::<Ipv4Addr>().map_err(|_| bad())?);
                }
                _ => return Err(bad()),
            }
        }
        Ok(NetConfig {
            address,
            prefix,
            gateway,
        })
    }
}

/// `value` for `key`, checked by `check`.
fn checked(
    key: &'static str,
    value: &str,
    check: fn(&str) -> Result<(), &'static str>,
) -> Result<String, ConfigError> {
    let invalid = |why| ConfigError::PullOption {
        key,
        value: value.chars().take(MAX_OPTION_LEN).collect(),
        why,
    };
    if value.is_empty() || value.len() > MAX_OPTION_LEN {
        return Err(invalid("empty or too long"));
    }
    check(value).map_err(invalid)?;
    Ok(value.to_owned())
}

fn check_kbs_url(value: &str) -> Result<(), &'static str> {
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
        .ok_or("the broker URL must start with https:// or http://")?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err("the broker URL has no host");
    }
    Ok(())
}

fn check_resource_uri(value: &str) -> Result<(), &'static str> {
    tsuba_attestation_agent::kbs::ResourceUri::parse(value)
        .map(drop)
        .map_err(|_| "expected a kbs:///repo/type/tag resource")
}

fn check_registry(value: &str) -> Result<(), &'static str> {
    let ok = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if ok {
        Ok(())
    } else {
        Err("expected host or host:port")
    }
}

impl AgentConfig {
    /// Parses the `tsuba.agent.*` keys of a kernel command line.
    pub fn from_cmdline(cmdline: &str) -> Result<Self, ConfigError> {
        let mut config = AgentConfig {
            transport: Transport::Serial,
            log: "info".to_owned(),
            net: None,
        };
        let (mut transport_seen, mut log_seen) = (false, false);
        for word in cmdline.split_ascii_whitespace() {
            let Some(option) = word.strip_prefix("tsuba.agent.") else {
                continue;
            };
            let (key, value) = option.split_once('=').unwrap_or((option, ""));
            match key {
                "transport" => {
                    if std::mem::replace(&mut transport_seen, true) {
                        return Err(ConfigError::Repeated("transport"));
                    }
                    config.transport = match value {
                        "serial" => Transport::Serial,
                        "vsock" => Transport::Vsock,
                        other => return Err(ConfigError::UnknownTransport(other.to_owned())),
                    }
                }
                "log" => {
                    if std::mem::replace(&mut log_seen, true) {
                        return Err(ConfigError::Repeated("log"));
                    }
                    // A typo must not silently leave the default: the line is measured, and
                    // what it says should be what runs.
                    if value.is_empty()
                        || value.len() > MAX_OPTION_LEN
                        || tracing_subscriber::EnvFilter::try_new(value).is_err()
                    {
                        return Err(ConfigError::Log(
                            value.chars().take(MAX_OPTION_LEN).collect(),
                        ));
                    }
                    value.clone_into(&mut config.log);
                }
                "net" => {
                    if config.net.is_some() {
                        return Err(ConfigError::Repeated("net"));
                    }
                    config.net = Some(NetConfig::parse(value)?);
                }
                "kbs"
                | "kbs-pin"
                | "insecure-kbs-http"
                | "insecure-registry-credentials-over-http"
                | "image-policy"
                | "signature-storage"
                | "registry-auth"
                | "plain-http-registry" => {
                    return Err(ConfigError::MovedToInitdata(key.to_owned()));
                }
                _ => return Err(ConfigError::UnknownOption(word.to_owned())),
            }
        }
        Ok(config)
    }
}

impl PullConfig {
    /// The pull settings of an initdata document, checked: URL schemes, resource URIs, the pin,
    /// the CA certificates, and that the broker is authenticated as its scheme says.
    pub fn from_settings(settings: &GuestSettings) -> Result<Self, ConfigError> {
        let resource = |key, value: &Option<String>| {
            value
                .as_deref()
                .map(|v| checked(key, v, check_resource_uri))
                .transpose()
        };
        let kbs_pin = match &settings.kbs_pin {
            None => None,
            Some(pin) => Some(SpkiPin::parse(pin).map_err(|_| ConfigError::PullOption {
                key: "kbs_pin",
                value: pin.chars().take(MAX_OPTION_LEN).collect(),
                why: "expected sha256:<64 hex digits>",
            })?),
        };
        if let Some(pem) = &settings.kbs_cert
            && BrokerTrust::ca_pem(pem.as_bytes()).is_err()
        {
            return Err(ConfigError::PullOption {
                key: "kbs cert",
                value: pem.chars().take(64).collect(),
                why: "expected PEM CA certificates",
            });
        }
        if settings.plain_http_registries.len() > MAX_PLAIN_HTTP_REGISTRIES {
            return Err(ConfigError::PullOption {
                key: "plain_http_registries",
                value: format!("{} registries", settings.plain_http_registries.len()),
                why: "at most 16",
            });
        }
        let config = PullConfig {
            kbs_url: settings
                .kbs_url
                .as_deref()
                .map(|v| checked("kbs url", v, check_kbs_url))
                .transpose()?,
            kbs_pin,
            kbs_ca: settings.kbs_cert.clone(),
            insecure_kbs_http: settings.insecure_kbs_http,
            insecure_registry_credentials_over_http: settings
                .insecure_registry_credentials_over_http,
            image_policy: resource("image_security_policy_uri", &settings.image_policy)?,
            signature_storage: resource("signature_storage", &settings.signature_storage)?,
            registry_auth: resource(
                "authenticated_registry_credentials_uri",
                &settings.registry_auth,
            )?,
            plain_http_registries: settings
                .plain_http_registries
                .iter()
                .map(|r| checked("plain_http_registries", r, check_registry))
                .collect::<Result<_, _>>()?,
        };
        config.check_broker_trust()?;
        Ok(config)
    }

    /// The broker must be authenticated as the URL's scheme says: `https://` with a pin,
    /// `http://` only with the insecure flag; neither setting without a broker.
    fn check_broker_trust(&self) -> Result<(), ConfigError> {
        let authenticated = self.kbs_pin.is_some() || self.kbs_ca.is_some();
        let Some(url) = &self.kbs_url else {
            if authenticated || self.insecure_kbs_http {
                return Err(ConfigError::BrokerTrust(
                    "a broker pin, CA or insecure_kbs_http is set but no broker URL",
                ));
            }
            return Ok(());
        };
        match (
            url.starts_with("https://"),
            authenticated,
            self.insecure_kbs_http,
        ) {
            (true, true, false) | (false, false, true) => Ok(()),
            (true, false, _) => Err(ConfigError::BrokerTrust(
                "an https:// broker needs tsuba.toml kbs_pin = \"sha256:<hex>\" (the key of its \
                 certificate or of its CA) or aa.toml's cert; no built-in roots are trusted",
            )),
            (true, true, true) => Err(ConfigError::BrokerTrust(
                "insecure_kbs_http is for an http:// broker only",
            )),
            (false, _, false) => Err(ConfigError::BrokerTrust(
                "a plain http:// broker can be impersonated by the host: use https:// with \
                 kbs_pin, or add insecure_kbs_http = true (sim modes only)",
            )),
            (false, true, true) => Err(ConfigError::BrokerTrust(
                "a pin or CA cannot authenticate an http:// broker",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_serial_when_the_cmdline_says_nothing() {
        let config = AgentConfig::from_cmdline("console=ttyS0 panic=-1\n").unwrap();
        assert_eq!(config.transport, Transport::Serial);
        assert_eq!(config.log, "info");
    }

    #[test]
    fn reads_transport_and_log() {
        let config =
            AgentConfig::from_cmdline("quiet tsuba.agent.transport=vsock tsuba.agent.log=debug")
                .unwrap();
        assert_eq!(config.transport, Transport::Vsock);
        assert_eq!(config.log, "debug");
    }

    #[test]
    fn reads_network_settings() {
        let config =
            AgentConfig::from_cmdline("tsuba.agent.net=10.0.2.15/24,gw=10.0.2.2 quiet").unwrap();
        assert_eq!(
            config.net,
            Some(NetConfig {
                address: Ipv4Addr::new(10, 0, 2, 15),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
            })
        );
        let plain = AgentConfig::from_cmdline("tsuba.agent.net=192.168.1.9/32").unwrap();
        assert_eq!(plain.net.unwrap().gateway, None);
    }

    #[test]
    fn refuses_malformed_network_settings() {
        for bad in [
            "10.0.2.15",
            "10.0.2.15/33",
            "10.0.2.15/x",
            "0.0.0.0/24",
            "255.255.255.255/24",
            "10.0.2/24",
            "10.0.2.15/24,gw=10.0.2",
            "10.0.2.15/24,gw=10.0.2.2,gw=10.0.2.3",
            "10.0.2.15/24,dns=10.0.2.3",
            "fe80::1/64",
            "",
        ] {
            let err = AgentConfig::from_cmdline(&format!("tsuba.agent.net={bad}")).unwrap_err();
            assert_eq!(err, ConfigError::Net(bad.to_owned()), "{bad}");
        }
        assert_eq!(
            AgentConfig::from_cmdline("tsuba.agent.net=10.0.0.2/8 tsuba.agent.net=10.0.0.3/8"),
            Err(ConfigError::Repeated("net"))
        );
    }

    #[test]
    fn pull_settings_on_the_command_line_are_refused_as_moved_to_initdata() {
        for key in [
            "kbs=https://10.0.2.2:1",
            "kbs-pin=sha256:00",
            "insecure-kbs-http",
            "image-policy=kbs:///a/b/c",
            "plain-http-registry=10.0.2.2:5000",
            "signature-storage=kbs:///a/b/c",
            "registry-auth=kbs:///a/b/c",
            "insecure-registry-credentials-over-http",
        ] {
            let err = AgentConfig::from_cmdline(&format!("tsuba.agent.{key}")).unwrap_err();
            let name = key.split('=').next().unwrap();
            assert_eq!(err, ConfigError::MovedToInitdata(name.to_owned()));
            assert!(err.to_string().contains("come from initdata"), "{err}");
        }
    }

    const PIN: &str = "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn settings() -> GuestSettings {
        GuestSettings {
            kbs_url: Some("https://10.0.2.2:8080".into()),
            kbs_pin: Some(PIN.into()),
            image_policy: Some("kbs:///default/security-policy/test".into()),
            signature_storage: Some("kbs:///default/image/lookaside".into()),
            registry_auth: Some("kbs:///default/credential/registry".into()),
            plain_http_registries: vec!["10.0.2.2:5000".into(), "registry.local".into()],
            ..GuestSettings::default()
        }
    }

    #[test]
    fn reads_pull_settings_from_initdata() {
        let pull = PullConfig::from_settings(&settings()).unwrap();
        assert_eq!(pull.kbs_url.as_deref(), Some("https://10.0.2.2:8080"));
        assert_eq!(pull.kbs_pin.map(|p| p.to_string()).as_deref(), Some(PIN));
        assert!(!pull.insecure_kbs_http && !pull.insecure_registry_credentials_over_http);
        assert_eq!(
            pull.image_policy.as_deref(),
            Some("kbs:///default/security-policy/test")
        );
        assert_eq!(
            pull.plain_http_registries,
            ["10.0.2.2:5000", "registry.local"]
        );
        assert_eq!(
            pull.signature_storage.as_deref(),
            Some("kbs:///default/image/lookaside")
        );
        assert_eq!(
            pull.registry_auth.as_deref(),
            Some("kbs:///default/credential/registry")
        );
        assert_eq!(
            PullConfig::from_settings(&GuestSettings::default()).unwrap(),
            PullConfig::default()
        );
    }

    #[test]
    fn refuses_malformed_pull_settings() {
        type Edit = fn(&mut GuestSettings);
        let rows: [(Edit, &str); 8] = [
            (|s| s.kbs_url = Some("ftp://10.0.2.2".into()), "kbs url"),
            (|s| s.kbs_url = Some(String::new()), "kbs url"),
            (|s| s.kbs_url = Some("http://".into()), "kbs url"),
            (
                |s| s.image_policy = Some("https://x/policy.json".into()),
                "image_security_policy_uri",
            ),
            (
                |s| s.image_policy = Some("kbs:///default/../x".into()),
                "image_security_policy_uri",
            ),
            (
                |s| s.plain_http_registries = vec!["a/b".into()],
                "plain_http_registries",
            ),
            (
                |s| s.signature_storage = Some("file:///etc/lookaside.json".into()),
                "signature_storage",
            ),
            (
                |s| s.registry_auth = Some("kbs:///a/b".into()),
                "authenticated_registry_credentials_uri",
            ),
        ];
        for (edit, key) in rows {
            let mut s = settings();
            edit(&mut s);
            match PullConfig::from_settings(&s) {
                Err(ConfigError::PullOption { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: {other:?}"),
            }
        }
        let mut long = settings();
        long.kbs_url = Some(format!("https://{}", "a".repeat(600)));
        assert!(PullConfig::from_settings(&long).is_err());
        let mut many = settings();
        many.plain_http_registries = vec!["r:1".into(); 17];
        assert!(PullConfig::from_settings(&many).is_err());
        let mut bad_ca = settings();
        bad_ca.kbs_pin = None;
        bad_ca.kbs_cert = Some("not a pem".into());
        assert!(matches!(
            PullConfig::from_settings(&bad_ca),
            Err(ConfigError::PullOption {
                key: "kbs cert",
                ..
            })
        ));
        for bad in ["sha256:00", "sha1:0011", "00112233"] {
            let mut s = settings();
            s.kbs_pin = Some(bad.into());
            assert!(matches!(
                PullConfig::from_settings(&s),
                Err(ConfigError::PullOption { key: "kbs_pin", .. })
            ));
        }
    }

    #[test]
    fn the_broker_must_be_authenticated_as_its_scheme_says() {
        let with = |url: &str, pin: bool, insecure: bool| GuestSettings {
            kbs_url: (!url.is_empty()).then(|| url.to_owned()),
            kbs_pin: pin.then(|| PIN.to_owned()),
            insecure_kbs_http: insecure,
            ..GuestSettings::default()
        };
        let https = PullConfig::from_settings(&with("https://10.0.2.2:1", true, false)).unwrap();
        assert!(https.kbs_pin.is_some() && !https.insecure_kbs_http);
        let http = PullConfig::from_settings(&with("http://10.0.2.2:1", false, true)).unwrap();
        assert!(http.insecure_kbs_http && http.kbs_pin.is_none());
        let refused = |s: GuestSettings, why: &str| match PullConfig::from_settings(&s) {
            Err(ConfigError::BrokerTrust(w)) => assert!(w.contains(why), "{w}"),
            other => panic!("{s:?}: {other:?}"),
        };
        refused(
            with("https://10.0.2.2:1", false, false),
            "needs tsuba.toml kbs_pin",
        );
        refused(
            with("http://10.0.2.2:1", false, false),
            "can be impersonated by the host",
        );
        refused(
            with("http://10.0.2.2:1", true, false),
            "can be impersonated by the host",
        );
        refused(
            with("http://10.0.2.2:1", true, true),
            "cannot authenticate an http:// broker",
        );
        refused(
            with("https://10.0.2.2:1", true, true),
            "for an http:// broker only",
        );
        refused(with("", true, false), "no broker URL");
        refused(with("", false, true), "no broker URL");
    }

    #[test]
    fn log_and_transport_are_checked_and_given_once() {
        for bad in ["", "info,[", "tsuba=notalevel"] {
            assert_eq!(
                AgentConfig::from_cmdline(&format!("tsuba.agent.log={bad}")),
                Err(ConfigError::Log(bad.to_owned())),
                "{bad}"
            );
        }
        assert_eq!(
            AgentConfig::from_cmdline("tsuba.agent.log=debug tsuba.agent.log=info"),
            Err(ConfigError::Repeated("log"))
        );
        assert_eq!(
            AgentConfig::from_cmdline("tsuba.agent.transport=vsock tsuba.agent.transport=serial"),
            Err(ConfigError::Repeated("transport"))
        );
        assert_eq!(
            AgentConfig::from_cmdline("tsuba.agent.log=tsuba_agent=debug,info")
                .unwrap()
                .log,
            "tsuba_agent=debug,info"
        );
    }

    #[test]
    fn refuses_unknown_transport_and_options() {
        assert_eq!(
            AgentConfig::from_cmdline("tsuba.agent.transport=tcp"),
            Err(ConfigError::UnknownTransport("tcp".into()))
        );
        assert_eq!(
            AgentConfig::from_cmdline("tsuba.agent.trasnport=serial"),
            Err(ConfigError::UnknownOption(
                "tsuba.agent.trasnport=serial".into()
            ))
        );
    }
}
