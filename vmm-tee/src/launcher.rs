//! Starting, supervising and tearing down one guest VM.
//!
//! A [`Vm`] owns its QEMU process and its run directory (sockets, console log, QEMU's own log).
//! Dropping it kills QEMU, reaps it and removes the directory, so no path — success, error or
//! panic — leaves a process or a file behind. [`Vm::shutdown`] is the orderly way.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tracing::{debug, info, warn};

use crate::accel::{self, Accel, AccelError, HostVirt};
use crate::config::{AgentTransport, LaunchConfig, Mode};
use crate::measure::MeasureError;
use crate::qemu::{RunPaths, command_line};
use crate::sim_device::SimDevice;

/// How long QEMU may take to create its sockets before the launch is declared failed.
const QEMU_START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long QEMU gets to exit after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(3);
/// How much of a log file an error message quotes.
const TAIL_BYTES: u64 = 16 * 1024;

/// Host-side settings of a launch that are not part of the guest's identity.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// Where the run directory is created (it holds Unix sockets: keep the path short).
    pub run_dir_parent: PathBuf,
    /// What the host offers, for the accelerator choice.
    pub host: HostVirt,
    /// State directory of tee-sim's simulated roots of trust (created on first use, 0600
    /// keys). Sim modes serve the guest a tee-sim device signing with these roots.
    pub tee_sim_state: PathBuf,
    /// vsock context id for the guest (vsock transport only).
    pub vsock_cid: u32,
}

impl LaunchOptions {
    /// Options for this host: `qemu-system-x86_64` from `PATH`, run directories under the
    /// system temporary folder.
    pub fn for_this_host() -> Self {
        LaunchOptions {
            qemu: PathBuf::from("qemu-system-x86_64"),
            run_dir_parent: std::env::temp_dir(),
            host: HostVirt::probe(),
            tee_sim_state: default_tee_sim_state(),
            vsock_cid: 3,
        }
    }
}

/// `$TSUBA_TEE_SIM_STATE`, else `$XDG_STATE_HOME/tsuba/tee-sim`, else
/// `$HOME/.local/state/tsuba/tee-sim`.
fn default_tee_sim_state() -> PathBuf {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("TSUBA_TEE_SIM_STATE")
        .or_else(|| var("XDG_STATE_HOME").map(|p| p.join("tsuba/tee-sim")))
        .or_else(|| var("HOME").map(|p| p.join(".local/state/tsuba/tee-sim")))
        .unwrap_or_else(|| PathBuf::from("/var/lib/tsuba/tee-sim"))
}

/// A launch that failed.
#[derive(Debug, Error)]
pub enum LaunchError {
    /// The accelerator cannot be had.
    #[error(transparent)]
    Accel(#[from] AccelError),
    /// The run directory could not be created.
    #[error("cannot create a run directory under {0}")]
    RunDir(PathBuf, #[source] std::io::Error),
    /// QEMU could not be started.
    #[error("cannot start {qemu}; is QEMU installed (scripts/setup installs it)?")]
    Spawn {
        /// The binary.
        qemu: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// QEMU exited before the guest started.
    #[error("QEMU exited ({status}) before the guest started; QEMU said:\n{log_tail}")]
    QemuExited {
        /// Its exit status.
        status: ExitStatus,
        /// The end of QEMU's own output.
        log_tail: String,
    },
    /// QEMU did not create its sockets in time.
    #[error("QEMU did not open {socket} within {waited:?}; QEMU said:\n{log_tail}")]
    QemuStartTimeout {
        /// The socket waited for.
        socket: PathBuf,
        /// How long.
        waited: Duration,
        /// The end of QEMU's own output.
        log_tail: String,
    },
    /// Supervising the process failed.
    #[error("cannot supervise the QEMU process")]
    Supervise(#[source] std::io::Error),
    /// The launch measurement tee-sim must sign could not be computed.
    #[error("cannot compute the launch measurement for the simulated TEE")]
    Measure(#[from] MeasureError),
    /// tee-sim's simulated AMD-SP or TDX module state could not be loaded or created.
    #[error("cannot open tee-sim's simulated TEE state in {}: {}", .0.display(), .1)]
    TeeSim(PathBuf, String),
    /// A sim mode in a build without the simulator.
    #[error(
        "mode {0} needs the simulated TEE, which this build leaves out: build with the \
         insecure-sim feature for development and CI, or use snp or tdx"
    )]
    SimulationNotBuilt(Mode),
}

/// A running guest VM.
#[derive(Debug)]
pub struct Vm {
    child: Option<Child>,
    paths: RunPaths,
    qemu_log: PathBuf,
    accel: Accel,
    started: Instant,
    agent_stream: Option<UnixStream>,
    /// The task serving the tee-sim device (sim modes); aborted with the VM.
    tee_sim: Option<tokio::task::JoinHandle<()>>,
    // Last, so it is removed after the process is gone.
    run_dir: tempfile::TempDir,
}

impl Vm {
    /// Starts QEMU for `config` and connects the host ends of the guest's ports.
    ///
    /// Returns once the guest is running; the agent may not be up yet (see the shim's agent
    /// client, which waits for its hello).
    pub async fn launch(config: &LaunchConfig, options: &LaunchOptions) -> Result<Vm, LaunchError> {
        let accel = accel::resolve(config.accel, config.mode, options.host)?;
        // In sim modes, decide what the simulated TEE signs before anything runs.
        let sim_device = SimDevice::for_launch(config, &options.tee_sim_state)?;
        let run_dir = tempfile::Builder::new()
            .prefix("tsuba-vm-")
            .tempdir_in(&options.run_dir_parent)
            .map_err(|e| LaunchError::RunDir(options.run_dir_parent.clone(), e))?;
        let dir = run_dir.path();
        let paths = RunPaths {
            console_log: dir.join("console.log"),
            agent_socket: dir.join("agent.sock"),
            teesim_socket: sim_device.is_some().then(|| dir.join("teesim.sock")),
            vsock_cid: (config.agent_transport == AgentTransport::Vsock)
                .then_some(options.vsock_cid),
        };
        let qemu_log = dir.join("qemu.log");
        let args = command_line(config, accel, &paths);
        debug!(qemu = %options.qemu.display(), ?args, "starting QEMU");

        let log = std::fs::File::create(&qemu_log)
            .map_err(|e| LaunchError::RunDir(qemu_log.clone(), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| LaunchError::RunDir(qemu_log.clone(), e))?;
        let started = Instant::now();
        let child = Command::new(&options.qemu)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| LaunchError::Spawn {
                qemu: options.qemu.clone(),
                source,
            })?;
        info!(pid = child.id(), mode = %config.mode, accel = accel.qemu_name(), "QEMU started");

        let mut vm = Vm {
            child: Some(child),
            paths,
            qemu_log,
            accel,
            started,
            agent_stream: None,
            tee_sim: None,
            run_dir,
        };
        // QEMU waits on each socket in command-line order before it runs the guest.
        if config.agent_transport == AgentTransport::Serial {
            let socket = vm.paths.agent_socket.clone();
            vm.agent_stream = Some(vm.connect_port(&socket).await?);
        }
        if let (Some(socket), Some(device)) = (vm.paths.teesim_socket.clone(), sim_device) {
            let stream = vm.connect_port(&socket).await?;
            vm.tee_sim = Some(device.serve(stream));
        }
        Ok(vm)
    }

    /// Connects to a socket QEMU serves, while watching that QEMU is still alive.
    async fn connect_port(&mut self, socket: &Path) -> Result<UnixStream, LaunchError> {
        let deadline = Instant::now() + QEMU_START_TIMEOUT;
        loop {
            if let Some(status) = self.try_exit_status()? {
                return Err(LaunchError::QemuExited {
                    status,
                    log_tail: tail(&self.qemu_log),
                });
            }
            match UnixStream::connect(socket).await {
                Ok(stream) => return Ok(stream),
                Err(error) if Instant::now() >= deadline => {
                    debug!(%error, "last connect attempt");
                    return Err(LaunchError::QemuStartTimeout {
                        socket: socket.to_owned(),
                        waited: QEMU_START_TIMEOUT,
                        log_tail: tail(&self.qemu_log),
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn try_exit_status(&mut self) -> Result<Option<ExitStatus>, LaunchError> {
        match &mut self.child {
            Some(child) => child.try_wait().map_err(LaunchError::Supervise),
            None => Ok(None),
        }
    }

    /// The host end of the agent's virtio-serial port (serial transport), once.
    pub fn take_agent_stream(&mut self) -> Option<UnixStream> {
        self.agent_stream.take()
    }

    /// The accelerator in use.
    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// When QEMU was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// QEMU's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The run directory (removed when the VM is dropped).
    pub fn run_dir(&self) -> &Path {
        self.run_dir.path()
    }

    /// The guest console log file.
    pub fn console_log(&self) -> &Path {
        &self.paths.console_log
    }

    /// The last lines of the guest console, for error messages.
    pub fn console_tail(&self) -> String {
        tail(&self.paths.console_log)
    }

    /// Waits until QEMU exits, for any reason (guest power-off, panic, crash, kill).
    pub async fn wait_exit(&mut self) -> Result<ExitStatus, LaunchError> {
        match &mut self.child {
            Some(child) => child.wait().await.map_err(LaunchError::Supervise),
            None => std::future::pending().await,
        }
    }

    /// Stops QEMU (SIGTERM, then SIGKILL after a grace period), reaps it and removes the run
    /// directory.
    pub async fn shutdown(mut self) -> Result<ExitStatus, LaunchError> {
        let Some(mut child) = self.child.take() else {
            return Err(LaunchError::Supervise(std::io::Error::other(
                "VM already stopped",
            )));
        };
        if let Ok(Some(status)) = child.try_wait() {
            return Ok(status);
        }
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        match tokio::time::timeout(TERM_GRACE, child.wait()).await {
            Ok(status) => status.map_err(LaunchError::Supervise),
            Err(_) => {
                warn!("QEMU ignored SIGTERM; killing it");
                child.kill().await.map_err(LaunchError::Supervise)?;
                child.wait().await.map_err(LaunchError::Supervise)
            }
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(task) = self.tee_sim.take() {
            task.abort();
        }
        // Backstop for paths that did not call shutdown(): kill and reap synchronously, so
        // neither a running QEMU nor a zombie outlives the Vm.
        if let Some(child) = &mut self.child
            && matches!(child.try_wait(), Ok(None))
        {
            let _ = child.start_kill();
            for _ in 0..200 {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// The last [`TAIL_BYTES`] of a log file, from a line start, lossily decoded.
pub fn tail(path: &Path) -> String {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::from("(no output)");
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(TAIL_BYTES);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return String::from("(unreadable)");
    }
    let text = String::from_utf8_lossy(&bytes);
    let text = if start > 0 {
        text.split_once('\n').map_or(&*text, |(_, rest)| rest)
    } else {
        &text
    };
    // Drop carriage returns and other control bytes a guest may print, but keep newlines.
    text.chars()
        .filter(|c| *c == '\n' || !c.is_control())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end_from_a_line_start_and_strips_control_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut text = "x".repeat(usize::try_from(TAIL_BYTES).unwrap());
        text.push_str("\nKernel panic - not syncing\r\n\x1b[0mend\n");
        std::fs::write(&path, &text).unwrap();
        let tail = tail(&path);
        assert!(tail.starts_with("Kernel panic - not syncing\n"), "{tail:?}");
        assert!(tail.ends_with("[0mend\n"), "{tail:?}");
        assert!(!tail.contains('\r'));
    }

    #[test]
    fn tail_of_a_missing_file_says_so() {
        assert_eq!(tail(Path::new("/nonexistent/console.log")), "(no output)");
    }

    #[tokio::test]
    async fn a_missing_qemu_binary_is_a_clear_error_and_leaves_no_run_dir() {
        let parent = tempfile::tempdir().unwrap();
        let options = options_with_qemu("/nonexistent/qemu-system-x86_64", parent.path());
        let err = Vm::launch(&test_config(parent.path()), &options)
            .await
            .unwrap_err();
        assert!(matches!(err, LaunchError::Spawn { .. }), "{err}");
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 1); // only fixtures/
    }

    #[tokio::test]
    async fn qemu_that_exits_at_once_is_reported_with_its_output() {
        // `false` stands in for a QEMU that refuses its arguments.
        let parent = tempfile::tempdir().unwrap();
        let options = options_with_qemu("false", parent.path());
        let err = Vm::launch(&test_config(parent.path()), &options)
            .await
            .unwrap_err();
        match err {
            LaunchError::QemuExited { status, .. } => assert!(!status.success()),
            other => panic!("unexpected {other}"),
        }
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 1);
    }

    /// Options that run `qemu` (a stand-in) with everything under `parent`, on a host without KVM.
    fn options_with_qemu(qemu: &str, parent: &Path) -> LaunchOptions {
        LaunchOptions {
            qemu: PathBuf::from(qemu),
            run_dir_parent: parent.to_owned(),
            host: HostVirt {
                cpu_has_virt: false,
                kvm_opens: false,
            },
            tee_sim_state: parent.join("tee-sim"),
            vsock_cid: 3,
        }
    }

    fn test_config(dir: &Path) -> LaunchConfig {
        let fixtures = dir.join("fixtures");
        std::fs::create_dir_all(&fixtures).unwrap();
        for f in ["fw", "k", "i"] {
            std::fs::write(fixtures.join(f), b"x").unwrap();
        }
        let file: crate::config::LaunchConfigFile = toml::from_str(
            "mode = \"none\"\nkernel = \"k\"\ninitrd = \"i\"\naccel = \"tcg\"\n[firmware]\nboot = \"fw\"\n",
        )
        .unwrap();
        file.into_config(&fixtures).unwrap()
    }
}
