//! Agent configuration, read from the kernel command line.
//!
//! The command line is part of the launch measurement (kernel hashes in SNP, RTMR in TDX), so the
//! host cannot change it without the broker noticing. Only `tsuba.agent.*` keys are read; an
//! unknown value is an error, never a default.

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
}

impl AgentConfig {
    /// Parses the `tsuba.agent.*` keys of a kernel command line.
    pub fn from_cmdline(cmdline: &str) -> Result<Self, ConfigError> {
        let mut config = AgentConfig {
            transport: Transport::Serial,
            log: "info".to_owned(),
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
