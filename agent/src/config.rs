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
    /// The key broker's base URL (`https://...`; `http://` is accepted because the broker
    /// releases resources only as JWE to the guest's own key, and the URL is measured).
    pub kbs_url: Option<String>,
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
        for word in cmdline.split_ascii_whitespace() {
            let Some(option) = word.strip_prefix("tsuba.agent.") else {
                continue;
            };
            let (key, value) = option.split_once('=').unwrap_or((option, ""));
            match key {
                "transport" => {
                    config.transport = match value {
                        "serial" => Transport::Serial,
                        "vsock" => Transport::Vsock,
                        other => return Err(ConfigError::UnknownTransport(other.to_owned())),
                    }
                }
                "log" => value.clone_into(&mut config.log),
                "net" => {
                    if config.net.is_some() {
                        return Err(ConfigError::Repeated("net"));
                    }
                    config.net = Some(NetConfig::parse(value)?);
                }
                "kbs" => set_once(&mut config.pull.kbs_url, "kbs", value, check_kbs_url)?,
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
        Ok(config)
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
            "tsuba.agent.net=10.0.2.15/24,gw=10.0.2.2 tsuba.agent.kbs=http://10.0.2.2:8080 \
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
        assert_eq!(config.pull.kbs_url.as_deref(), Some("http://10.0.2.2:8080"));
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
