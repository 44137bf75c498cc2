//! The tsuba guest agent.
//!
//! Runs as PID 1 inside the confidential guest: sets up the minimal system (proc, sys, dev, run,
//! kernel modules), serves the agent API to the host over vsock or virtio-serial, enforces the
//! policy on every host request, reaps children and powers the guest off on a fatal error.

#![forbid(unsafe_code)]

mod config;
mod init;
mod reaper;
mod service;
mod transport;

pub use config::{AgentConfig, ConfigError, Transport};
pub use init::{InitError, load_modules, mount_system, power_off};
pub use reaper::reap_children;
pub use service::{AttestationService, HealthService, ServiceError, serve};
pub use transport::{TransportError, find_serial_port, listener};
