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
    /// The guest printed a line that means it will never boot (the kernel's EFI stub failed,
    /// the firmware fell back to its shell or to network boot, the kernel panicked).
    #[error("the guest VM failed to boot: {line}; last guest console lines:\n{console_tail}")]
    BootFailed {
        /// The console line that showed it.
        line: String,
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

/// Console lines after which a guest never boots, and what each means.
const BOOT_FAILURES: &[(&str, &str)] = &[
    ("EFI stub: ERROR:", "the kernel's EFI stub failed"),
    (
        "UEFI Interactive Shell",
        "the firmware found nothing to boot and fell back to its shell",
    ),
    (
        "Start PXE over IPv",
        "the firmware found nothing to boot and fell back to network boot",
    ),
    (
        "Start HTTP Boot over IPv",
        "the firmware found nothing to boot and fell back to network boot",
    ),
    (
        "No bootable option or device was found",
        "the firmware found nothing to boot",
    ),
    ("Kernel panic - not syncing", "the guest kernel panicked"),
];

/// The first console line in `console` that shows a failed boot, with what it means.
pub fn boot_failure(console: &str) -> Option<String> {
    console.lines().find_map(|line| {
        BOOT_FAILURES.iter().find_map(|(needle, meaning)| {
            line.contains(needle)
                .then(|| format!("{meaning} ({:?})", line.trim()))
        })
    })
}

enum BootWatch {
    Failed(String),
    Agent(AgentClientError),
}

/// Reads the console log as it grows until it shows a boot failure.
async fn watch_console(path: &std::path::Path) -> String {
    use tokio::io::AsyncReadExt as _;
    // Console output before the agent is small; a bound keeps a chatty guest from growing this.
    const MAX_WATCHED: usize = 4 << 20;
    let mut seen = Vec::new();
    let mut file = None;
    loop {
        if file.is_none() {
            file = tokio::fs::File::open(path).await.ok();
        }
        if let Some(f) = &mut file {
            let mut chunk = [0u8; 8192];
            while let Ok(n @ 1..) = f.read(&mut chunk).await {
                if seen.len() < MAX_WATCHED {
                    seen.extend_from_slice(&chunk[..n]);
                }
            }
            if let Some(line) = boot_failure(&String::from_utf8_lossy(&seen)) {
                return line;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Gives the guest its initdata; logs how long it took and the agent's memory with the policy
/// compiled, which the answer carries (docs/performance.md). A refusal (another document than the launch bound, a bad one)
/// is the agent's error, with its reason.
async fn provide_initdata(
    agent: AgentClient,
    doc: &tsuba_policy::Initdata,
    timeout: Duration,
) -> Result<AgentClient, AgentClientError> {
    let providing = std::time::Instant::now();
    let provided = agent
        .provide_initdata(doc.as_str().as_bytes(), timeout)
        .await?;
    let took = providing.elapsed();
    info!(
        binding = %provided.binding,
        policy = %provided.policy,
        initdata_ms = tsuba_protocols::agent::millis(took),
        agent_rss_kib = provided.agent_rss_kib,
        "the guest took its initdata"
    );
    Ok(agent)
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
        Self::start_with(config, options, agent_timeout, |_| {}).await
    }

    /// As [`Sandbox::start`], calling `on_launch` with the VM as soon as QEMU runs (to record
    /// its pid for crash cleanup). A guest whose console shows a boot failure
    /// ([`boot_failure`]) is reported at once, not after `agent_timeout`.
    pub async fn start_with(
        config: &LaunchConfig,
        options: &LaunchOptions,
        agent_timeout: Duration,
        on_launch: impl FnOnce(&Vm),
    ) -> Result<Self, SandboxError> {
        let mut vm = Vm::launch(config, options).await?;
        on_launch(&vm);
        let console = vm.console_log().to_owned();
        let agent_stream = vm.take_agent_stream();
        let connect = async {
            let agent = match (config.agent_transport, agent_stream) {
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
            };
            agent.map_err(BootWatch::Agent)
        };
        let outcome = {
            let mut connect = std::pin::pin!(connect);
            tokio::select! {
                agent = &mut connect => Ok(agent),
                exit = vm.wait_exit() => Err(exit),
                line = watch_console(&console) => Ok(Err(BootWatch::Failed(line))),
            }
        };
        let outcome = match outcome {
            Ok(Err(BootWatch::Failed(line))) => {
                let console_tail = vm.console_tail();
                let _ = vm.shutdown().await;
                return Err(SandboxError::BootFailed { line, console_tail });
            }
            Ok(Err(BootWatch::Agent(e))) => Ok(Err(e)),
            Ok(Ok(agent)) => Ok(Ok(agent)),
            Err(e) => Err(e),
        };
        // Before anything else: a TEE guest serves nothing until it has its initdata.
        let outcome = match (outcome, &config.initdata) {
            (Ok(Ok(agent)), Some(doc)) => Ok(provide_initdata(agent, doc, agent_timeout).await),
            (outcome, _) => outcome,
        };
        match outcome {
            Ok(Ok(agent)) => {
                info!(
                    ready_ms = tsuba_protocols::agent::millis(vm.started().elapsed()),
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

    /// Splits the sandbox into its agent and its VM.
    pub fn into_parts(self) -> (AgentClient, Vm) {
        (self.agent, self.vm)
    }

    /// Stops the VM and removes its files.
    pub async fn stop(self) -> Result<ExitStatus, SandboxError> {
        Ok(self.vm.shutdown().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_boot_failures_are_recognised_with_their_line() {
        let console =
            "BdsDxe: loading Boot0001\r\nEFI stub: ERROR: Failed to decompress kernel\r\n";
        assert_eq!(
            boot_failure(console).unwrap(),
            "the kernel's EFI stub failed (\"EFI stub: ERROR: Failed to decompress kernel\")"
        );
        let shell = "BdsDxe: No bootable option or device was found.\nShell> ";
        assert!(
            boot_failure(shell)
                .unwrap()
                .starts_with("the firmware found nothing to boot")
        );
        let pxe = ">>Start PXE over IPv4.\n";
        assert!(boot_failure(pxe).unwrap().contains("network boot"));
    }

    #[test]
    fn a_normal_boot_is_not_a_failure() {
        let console = "EFI stub: Loaded initrd from LINUX_EFI_INITRD_MEDIA_GUID device path\n\
                       [    0.000000] Linux version 6.12\ntsuba-agent: ready\n";
        assert_eq!(boot_failure(console), None);
    }

    #[tokio::test]
    async fn the_console_watcher_sees_a_failure_written_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let writer = {
            let path = path.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(150)).await;
                std::fs::write(&path, b"booting\n").unwrap();
                tokio::time::sleep(Duration::from_millis(150)).await;
                std::fs::write(&path, b"booting\nUEFI Interactive Shell v2.2\n").unwrap();
            })
        };
        let line = tokio::time::timeout(Duration::from_secs(5), watch_console(&path))
            .await
            .unwrap();
        assert!(line.contains("UEFI Interactive Shell v2.2"), "{line}");
        writer.await.unwrap();
    }
}
