//! A sandbox: one guest VM and its agent, started together and stopped together.

use std::process::ExitStatus;
use std::time::Duration;

use thiserror::Error;
use tracing::info;
use tsuba_vmm_tee::{AgentTransport, LaunchConfig, LaunchError, LaunchOptions, Vm};

use crate::agent_client::{AgentClient, AgentClientError};

/// How long a failed agent connection waits to see whether the VM is exiting.
const EXIT_GRACE: Duration = Duration::from_secs(3);

/// Starting or running a sandbox failed.
#[derive(Debug, Error)]
pub enum SandboxError {
    /// The VM could not be launched.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// The guest stopped before its agent answered: a kernel panic, a broken initrd, or an agent
    /// that hit a fatal error and powered off.
    #[error(
        "the guest VM exited ({status}) before its agent answered; last guest console lines:\n{console_tail}"
    )]
    GuestExited {
        /// QEMU's exit status.
        status: ExitStatus,
        /// The end of the guest console.
        console_tail: String,
    },
    /// The agent did not answer in time, or answered wrongly.
    #[error("{source}; last guest console lines:\n{console_tail}")]
    Agent {
        /// What went wrong.
        #[source]
        source: AgentClientError,
        /// The end of the guest console.
        console_tail: String,
    },
}

/// A running sandbox VM with a connected agent.
#[derive(Debug)]
pub struct Sandbox {
    vm: Vm,
    agent: AgentClient,
}

impl Sandbox {
    /// Launches the VM and waits (up to `agent_timeout`) for its agent to come up.
    ///
    /// Whatever fails, the VM is stopped and its files removed before this returns.
    pub async fn start(
        config: &LaunchConfig,
        options: &LaunchOptions,
        agent_timeout: Duration,
    ) -> Result<Self, SandboxError> {
        let mut vm = Vm::launch(config, options).await?;
        let agent_stream = vm.take_agent_stream();
        let connect = async {
            match (config.agent_transport, agent_stream) {
                (AgentTransport::Serial, Some(stream)) => {
                    AgentClient::handshake(stream, agent_timeout).await
                }
                _ => {
                    AgentClient::connect_vsock(
                        options.vsock_cid,
                        tsuba_protocols::agent::VSOCK_PORT,
                        agent_timeout,
                    )
                    .await
                }
            }
        };
        let outcome = {
            let mut connect = std::pin::pin!(connect);
            tokio::select! {
                agent = &mut connect => Ok(agent),
                exit = vm.wait_exit() => Err(exit),
            }
        };
        match outcome {
            Ok(Ok(agent)) => {
                info!(
                    ready_ms =
                        u64::try_from(vm.started().elapsed().as_millis()).unwrap_or(u64::MAX),
                    "agent ready"
                );
                Ok(Sandbox { vm, agent })
            }
            Ok(Err(source)) => {
                // The agent's stream closes when QEMU exits, which can be noticed before the
                // exit itself: a guest that is going away is reported as the exit it is.
                let exited = tokio::time::timeout(EXIT_GRACE, vm.wait_exit()).await;
                let console_tail = vm.console_tail();
                let _ = vm.shutdown().await;
                match exited {
                    Ok(Ok(status)) => Err(SandboxError::GuestExited {
                        status,
                        console_tail,
                    }),
                    _ => Err(SandboxError::Agent {
                        source,
                        console_tail,
                    }),
                }
            }
            Err(exit) => {
                let console_tail = vm.console_tail();
                let status = exit?;
                let _ = vm.shutdown().await;
                Err(SandboxError::GuestExited {
                    status,
                    console_tail,
                })
            }
        }
    }

    /// The agent client.
    pub fn agent(&self) -> &AgentClient {
        &self.agent
    }

    /// The VM.
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    /// Waits until the VM exits on its own (agent died, guest powered off, QEMU crashed).
    pub async fn wait_exit(&mut self) -> Result<ExitStatus, SandboxError> {
        Ok(self.vm.wait_exit().await?)
    }

    /// Stops the VM and removes its files.
    pub async fn stop(self) -> Result<ExitStatus, SandboxError> {
        Ok(self.vm.shutdown().await?)
    }
}
