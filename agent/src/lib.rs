//! The tsuba guest agent.
//!
//! Runs as PID 1 inside the confidential guest: sets up the minimal system (proc, sys, dev, run,
//! kernel modules, the network when the measured command line asks for it), serves the agent API
//! to the host over vsock or virtio-serial, takes the pod's initdata once it matches the launch,
//! pulls images after attesting to the key broker, enforces the initdata's policy on every host
//! request, reaps children and powers the guest off on a fatal
//! error.

#![forbid(unsafe_code)]

mod config;
mod container;
mod init;
mod initdata;
mod net;
mod pull;
mod reaper;
mod service;
mod tls_roots;
mod transport;

pub use config::{AgentConfig, ConfigError, NetConfig, PullConfig, Transport};
pub use container::{
    CGROUP_MOUNT, CGROUP_PARENT, CgroupError, CgroupRoot, ContainerError, Containers,
    ImageDefaults, PullHook, PulledImage, RootfsError, Runner, RunnerError, SpecError,
    run_if_stage,
};
pub use init::{InitError, load_modules, mount_system, power_off};
pub use initdata::{Gate, GateError, PolicySource, Provided};
pub use net::{GUEST_INTERFACE, NetError, bring_up as bring_up_network};
pub use pull::{GuestPullError, GuestPuller, IMAGES_DIR, PullSummary, PullTimings};
pub use reaper::{Exit, Reaper, reap_children};
pub use service::{
    AttestationService, ContainerService, HealthService, ImageService, InitdataService,
    ServiceError, serve, serve_all,
};
pub use tls_roots::{SYSTEM_CA_BUNDLE, TlsRootsError, install_system_store, registry_tls_roots};
pub use transport::{TransportError, find_serial_port, listener};
