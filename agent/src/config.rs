//! Agent configuration, read from the kernel command line.
//!
//! The command line is part of the launch measurement (kernel hashes in SNP, RTMR in TDX), so the
//! host cannot change it without the broker noticing. Only `tsuba.agent.*` keys are read; an
//! unknown value is an error, never a default.
//!
//! Networking and image pulls are configured here too, for the same reason: the key broker's URL,
//! the signature policy's location and the registries reached over plain HTTP decide what the
//! guest trusts, so they come from the measured command line and never from a host request.

use std::net::Ipv4Addr;

use thiserror::Error;
use tsuba_attestation_agent::kbs::SpkiPin;

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
    /// Image pulls (`tsuba.agent.kbs`, `tsuba.agent.image-policy`,
    /// `tsuba.agent.plain-http-registry`); no pulls without a broker.
    pub pull: PullConfig,
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

/// Where image pulls get their keys and their signature policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullConfig {
    /// The key broker's base URL: `https://...` with [`PullConfig::kbs_pin`], or `http://...`
    /// only with [`PullConfig::insecure_kbs_http`].
    pub kbs_url: Option<String>,
    /// The broker's public-key pin (`tsuba.agent.kbs-pin=sha256:<hex>`): the SHA-256 of the
    /// SubjectPublicKeyInfo of the broker's certificate or of the CA it sends that issued it.
    /// Measured, so the host cannot point the guest at a broker of its own.
    pub kbs_pin: Option<SpkiPin>,
    /// `tsuba.agent.insecure-kbs-http`: allow a plain `http://` broker, whose answers anyone on
    /// the path (the host) can forge. Refused in snp and tdx guests whatever the line says.
    pub insecure_kbs_http: bool,
    /// `tsuba.agent.insecure-registry-credentials-over-http`: allow sending the broker's
    /// registry credentials to a plain-HTTP registry or token service, where the host reads them.
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
    /// A pull option with an empty or malformed value.
    #[error("tsuba.agent.{key}={value:?} is not valid: {why}")]
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
    #[error("tsuba.agent.kbs: {0}")]
    BrokerTrust(&'static str),
}

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

fn set_once(
    slot: &mut Option<String>,
    key: &'static str,
    value: &str,
    check: fn(&str) -> Result<(), &'static str>,
) -> Result<(), ConfigError> {
    if slot.is_some() {
        return Err(ConfigError::Repeated(key));
    }
    let invalid = |why| ConfigError::PullOption {
        key,
        value: value.chars().take(MAX_OPTION_LEN).collect(),
        why,
    };
    if value.is_empty() || value.len() > MAX_OPTION_LEN {
        return Err(invalid("empty or too long"));
    }
    check(value).map_err(invalid)?;
    *slot = Some(value.to_owned());
    Ok(())
}

fn set_flag(slot: &mut bool, key: &'static str, value: &str) -> Result<(), ConfigError> {
    if *slot {
        return Err(ConfigError::Repeated(key));
    }
    if !value.is_empty() {
        return Err(ConfigError::PullOption {
            key,
            value: value.chars().take(MAX_OPTION_LEN).collect(),
            why: "takes no value",
        });
    }
    *slot = true;
    Ok(())
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
            pull: PullConfig::default(),
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
                "kbs" => set_once(&mut config.pull.kbs_url, "kbs", value, check_kbs_url)?,
                "kbs-pin" => {
                    if config.pull.kbs_pin.is_some() {
                        return Err(ConfigError::Repeated("kbs-pin"));
                    }
                    let pin = SpkiPin::parse(value).map_err(|_| ConfigError::PullOption {
                        key: "kbs-pin",
                        value: value.chars().take(MAX_OPTION_LEN).collect(),
                        why: "expected sha256:<64 hex digits>",
                    })?;
                    config.pull.kbs_pin = Some(pin);
                }
                "insecure-kbs-http" => set_flag(
                    &mut config.pull.insecure_kbs_http,
                    "insecure-kbs-http",
                    value,
                )?,
                "insecure-registry-credentials-over-http" => set_flag(
                    &mut config.pull.insecure_registry_credentials_over_http,
                    "insecure-registry-credentials-over-http",
                    value,
                )?,
                "image-policy" => set_once(
                    &mut config.pull.image_policy,
                    "image-policy",
                    value,
                    check_resource_uri,
                )?,
                "signature-storage" => set_once(
                    &mut config.pull.signature_storage,
                    "signature-storage",
                    value,
                    check_resource_uri,
                )?,
                "registry-auth" => set_once(
                    &mut config.pull.registry_auth,
                    "registry-auth",
                    value,
                    check_resource_uri,
                )?,
                "plain-http-registry" => {
                    let mut slot = None;
                    set_once(&mut slot, "plain-http-registry", value, check_registry)?;
                    config.pull.plain_http_registries.extend(slot);
                }
                _ => return Err(ConfigError::UnknownOption(word.to_owned())),
            }
        }
        config.pull.check_broker_trust()?;
        Ok(config)
    }
}

impl PullConfig {
    /// The broker must be authenticated as the URL's scheme says: `https://` with a pin,
    /// `http://` only with the insecure flag; neither setting without a broker.
    fn check_broker_trust(&self) -> Result<(), ConfigError> {
        let Some(url) = &self.kbs_url else {
            if self.kbs_pin.is_some() || self.insecure_kbs_http {
                return Err(ConfigError::BrokerTrust(
                    "a broker pin or tsuba.agent.insecure-kbs-http is set but no broker URL",
                ));
            }
            return Ok(());
        };
        match (
            url.starts_with("https://"),
            self.kbs_pin.is_some(),
            self.insecure_kbs_http,
        ) {
            (true, true, false) | (false, false, true) => Ok(()),
            (true, false, _) => Err(ConfigError::BrokerTrust(
                "an https:// broker needs tsuba.agent.kbs-pin=sha256:<hex> (the key of its \
                 certificate or of its CA); no built-in roots are trusted",
            )),
            (true, true, true) => Err(ConfigError::BrokerTrust(
                "tsuba.agent.insecure-kbs-http is for an http:// broker only",
            )),
            (false, _, false) => Err(ConfigError::BrokerTrust(
                "a plain http:// broker can be impersonated by the host: use https:// with \
                 tsuba.agent.kbs-pin, or add tsuba.agent.insecure-kbs-http (sim modes only)",
            )),
            (false, true, true) => Err(ConfigError::BrokerTrust(
                "tsuba.agent.kbs-pin cannot authenticate an http:// broker",
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
    fn reads_network_and_pull_settings() {
        let config = AgentConfig::from_cmdline(
            "tsuba.agent.net=10.0.2.15/24,gw=10.0.2.2 tsuba.agent.kbs=https://10.0.2.2:8080 \
             tsuba.agent.kbs-pin=sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff \
             tsuba.agent.image-policy=kbs:///default/security-policy/test \
             tsuba.agent.plain-http-registry=10.0.2.2:5000 \
             tsuba.agent.plain-http-registry=registry.local \
             tsuba.agent.signature-storage=kbs:///default/image/lookaside \
             tsuba.agent.registry-auth=kbs:///default/credential/registry",
        )
        .unwrap();
        assert_eq!(
            config.net,
            Some(NetConfig {
                address: Ipv4Addr::new(10, 0, 2, 15),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
            })
        );
        assert_eq!(
            config.pull.kbs_url.as_deref(),
            Some("https://10.0.2.2:8080")
        );
        assert_eq!(
            config.pull.kbs_pin.map(|p| p.to_string()).as_deref(),
            Some("sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
        );
        assert!(!config.pull.insecure_kbs_http);
        assert!(!config.pull.insecure_registry_credentials_over_http);
        assert_eq!(
            config.pull.image_policy.as_deref(),
            Some("kbs:///default/security-policy/test")
        );
        assert_eq!(
            config.pull.plain_http_registries,
            ["10.0.2.2:5000", "registry.local"]
        );
        assert_eq!(
            config.pull.signature_storage.as_deref(),
            Some("kbs:///default/image/lookaside")
        );
        assert_eq!(
            config.pull.registry_auth.as_deref(),
            Some("kbs:///default/credential/registry")
        );
        let plain = AgentConfig::from_cmdline("tsuba.agent.net=192.168.1.9/32").unwrap();
        assert_eq!(plain.net.unwrap().gateway, None);
        assert_eq!(
            AgentConfig::from_cmdline("quiet").unwrap().pull,
            PullConfig::default()
        );
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
    fn refuses_malformed_or_repeated_pull_settings() {
        for (line, key) in [
            ("tsuba.agent.kbs=ftp://10.0.2.2", "kbs"),
            ("tsuba.agent.kbs=", "kbs"),
            ("tsuba.agent.kbs=http://", "kbs"),
            (
                "tsuba.agent.image-policy=https://x/policy.json",
                "image-policy",
            ),
            (
                "tsuba.agent.image-policy=kbs:///default/../x",
                "image-policy",
            ),
            ("tsuba.agent.plain-http-registry=a/b", "plain-http-registry"),
            (
                "tsuba.agent.signature-storage=file:///etc/lookaside.json",
                "signature-storage",
            ),
            ("tsuba.agent.registry-auth=kbs:///a/b", "registry-auth"),
        ] {
            match AgentConfig::from_cmdline(line) {
                Err(ConfigError::PullOption { key: k, .. }) => assert_eq!(k, key, "{line}"),
                other => panic!("{line}: {other:?}"),
            }
        }
        let long = format!("tsuba.agent.kbs=https://{}", "a".repeat(600));
        assert!(matches!(
            AgentConfig::from_cmdline(&long),
            Err(ConfigError::PullOption { key: "kbs", .. })
        ));
        // A second broker would make the measured line ambiguous: the first must not win silently.
        assert_eq!(
            AgentConfig::from_cmdline("tsuba.agent.kbs=https://a tsuba.agent.kbs=https://b"),
            Err(ConfigError::Repeated("kbs"))
        );
        assert_eq!(
            AgentConfig::from_cmdline(
                "tsuba.agent.registry-auth=kbs:///a/b/c tsuba.agent.registry-auth=kbs:///a/b/d"
            ),
            Err(ConfigError::Repeated("registry-auth"))
        );
    }

    const PIN: &str = "tsuba.agent.kbs-pin=sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn the_broker_must_be_authenticated_as_its_scheme_says() {
        let ok = |line: &str| AgentConfig::from_cmdline(line).unwrap().pull;
        let https = ok(&format!("tsuba.agent.kbs=https://10.0.2.2:1 {PIN}"));
        assert!(https.kbs_pin.is_some() && !https.insecure_kbs_http);
        let http = ok("tsuba.agent.insecure-kbs-http tsuba.agent.kbs=http://10.0.2.2:1");
        assert!(http.insecure_kbs_http && http.kbs_pin.is_none());
        let refused = |line: &str, why: &str| match AgentConfig::from_cmdline(line) {
            Err(ConfigError::BrokerTrust(w)) => assert!(w.contains(why), "{line}: {w}"),
            other => panic!("{line}: {other:?}"),
        };
        refused(
            "tsuba.agent.kbs=https://10.0.2.2:1",
            "needs tsuba.agent.kbs-pin",
        );
        refused(
            "tsuba.agent.kbs=http://10.0.2.2:1",
            "can be impersonated by the host",
        );
        refused(
            &format!("tsuba.agent.kbs=http://10.0.2.2:1 {PIN}"),
            "can be impersonated by the host",
        );
        refused(
            &format!("tsuba.agent.kbs=http://10.0.2.2:1 {PIN} tsuba.agent.insecure-kbs-http"),
            "cannot authenticate an http:// broker",
        );
        refused(
            &format!("tsuba.agent.kbs=https://10.0.2.2:1 {PIN} tsuba.agent.insecure-kbs-http"),
            "for an http:// broker only",
        );
        refused(PIN, "no broker URL");
        refused("tsuba.agent.insecure-kbs-http", "no broker URL");
        for bad in ["sha256:00", "sha1:0011", "00112233"] {
            assert!(matches!(
                AgentConfig::from_cmdline(&format!("tsuba.agent.kbs-pin={bad}")),
                Err(ConfigError::PullOption { key: "kbs-pin", .. })
            ));
        }
        assert_eq!(
            AgentConfig::from_cmdline(&format!("{PIN} {PIN}")),
            Err(ConfigError::Repeated("kbs-pin"))
        );
        assert_eq!(
            AgentConfig::from_cmdline(
                "tsuba.agent.insecure-kbs-http tsuba.agent.insecure-kbs-http"
            ),
            Err(ConfigError::Repeated("insecure-kbs-http"))
        );
        assert!(matches!(
            AgentConfig::from_cmdline("tsuba.agent.insecure-kbs-http=1"),
            Err(ConfigError::PullOption {
                key: "insecure-kbs-http",
                why: "takes no value",
                ..
            })
        ));
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
