//! `tsuba-agent`: PID 1 of the tsuba guest.
//!
//! Sets up the system, starts the agent API, then reaps children until the guest is powered off.
//! Any fatal error powers the guest off, so the host sees the VM exit with the reason on the
//! console instead of a guest that hangs.

#![forbid(unsafe_code)]

use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use std::sync::Arc;

use tsuba_agent::{
    AgentConfig, AttestationService, CgroupRoot, ContainerService, Containers, Gate, GuestPuller,
    HealthService, ImageService, InitdataService, Reaper, Runner,
};
use tsuba_attestation_agent::attester::{Attester, DetectPaths, detect};
use tsuba_protocols::guest_image::{MODULES_DIR, MODULES_LOAD_ORDER};

fn main() {
    // The container runner's stages are this binary too: they run before anything else.
    if let Some(code) = tsuba_agent::run_if_stage() {
        std::process::exit(code);
    }
    let started = Instant::now();
    let is_init = std::process::id() == 1;
    // Logging comes first, so that even a failure to set up the system reaches the console.
    let log_filter = init_tracing();
    if let Err(error) = run(started, is_init, &log_filter) {
        tracing::error!("fatal: {error:#}");
        if is_init {
            tracing::error!("powering off");
            let errno = tsuba_agent::power_off();
            tracing::error!(%errno, "power-off refused");
        }
        std::process::exit(1);
    }
}

fn run(started: Instant, is_init: bool, log_filter: &LogFilter) -> anyhow::Result<()> {
    if is_init {
        tsuba_agent::mount_system().context("setting up the guest system")?;
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
    let config = AgentConfig::from_cmdline(&cmdline)?;
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_new(&config.log) {
        let _ = log_filter.reload(filter);
    }
    tracing::info!(version = env!("CARGO_PKG_VERSION"), ?config.transport, "tsuba agent starting");
    if is_init {
        // For oci-client's throwaway default client (tls_roots.rs); ours are given the roots.
        // Written before initdata says whether this pod pulls: it is the same for every pod.
        let roots = tsuba_agent::install_system_store(Path::new(tsuba_agent::SYSTEM_CA_BUNDLE))?;
        tracing::debug!(roots, "system TLS store written from the compiled-in roots");
    }
    if is_init {
        tsuba_agent::load_modules(Path::new(MODULES_DIR), Path::new(MODULES_LOAD_ORDER))?;
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        if let Some(net) = &config.net {
            tsuba_agent::bring_up_network(net)
                .await
                .context("setting up the network")?;
        }
        // The listener waits for the agent's port; QEMU announces all ports together, so after
        // it the tee-sim port (sim modes) is there for detection too.
        let listener = tsuba_agent::listener(config.transport).await?;
        let attester = tokio::task::spawn_blocking(open_attester)
            .await
            .context("attester detection task")?;
        let tee = attester
            .as_ref()
            .map_or_else(|_| "none".to_owned(), |a| a.kind().to_string());
        // Pulls are configured by the pod's initdata, once the gate has checked it.
        let puller = Arc::new(GuestPuller::unconfigured(
            attester.clone(),
            tsuba_agent::IMAGES_DIR.into(),
        ));
        let gate = Arc::new(Gate::new(attester.clone(), Arc::clone(&puller)));
        let reaper = Reaper::new();
        if !is_init && let Err(error) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(%error, "not a child subreaper: container exits may be lost");
        }
        let cgroups = CgroupRoot::setup(
            Path::new(tsuba_agent::CGROUP_MOUNT),
            tsuba_agent::CGROUP_PARENT,
        )
        .map_err(|e| {
            tracing::error!(error = %e, "cgroup v2 unavailable: containers cannot run");
            e.to_string()
        });
        let containers = Containers::new(
            Arc::clone(&puller),
            Runner::new(
                "/proc/self/exe".into(),
                "/run/tsuba/control".into(),
                "/.tsuba-root".into(),
                Arc::clone(&reaper),
            ),
            cgroups,
            "/run/tsuba".into(),
        );
        let _server = tsuba_agent::serve_all(
            listener,
            HealthService::new(started, tee, Arc::clone(&gate)),
            InitdataService::new(Arc::clone(&gate)),
            AttestationService::new(attester, Arc::clone(&gate)),
            ImageService::new(puller, Arc::clone(&gate)),
            Some(ContainerService::new(containers, gate)),
        )
        .await?;
        tracing::info!(
            ready_ms = tsuba_protocols::agent::millis(started.elapsed()),
            "agent ready"
        );
        tsuba_agent::reap_children(reaper).await;
        anyhow::bail!("the child reaper stopped")
    })
}

/// The attester of the TEE this guest runs in, found by detection (which never falls back to the
/// simulator: no TEE, or more than one, is an answer, not a guess).
fn open_attester() -> Result<Arc<dyn Attester>, String> {
    let paths = DetectPaths::default();
    let kind = match detect(&paths) {
        Ok(kind) => kind,
        Err(error) => {
            tracing::info!(%error, "no attester");
            return Err(error.to_string());
        }
    };
    match tsuba_attestation_agent::attester::open_attester(kind, &paths) {
        Ok(attester) => Ok(Arc::from(attester)),
        Err(error) => {
            tracing::warn!(%error, attester = %kind, "cannot open the attester");
            Err(format!("cannot open the {kind} attester: {error}"))
        }
    }
}

type LogFilter =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// Logs to the console at `info` until the command line says otherwise; returns the handle that
/// changes the filter.
fn init_tracing() -> LogFilter {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let (filter, handle) =
        tracing_subscriber::reload::Layer::new(tracing_subscriber::EnvFilter::new("info"));
    // The console is host-visible: the agent never logs secrets, keys or workload data.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false),
        )
        .try_init();
    handle
}
