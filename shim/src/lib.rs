//! The containerd shim for tsuba (`containerd-shim-tsuba-v2`).
//!
//! Implements the containerd shim v2 task API with one confidential sandbox VM per pod, and talks to
//! the guest agent over the agent protocol. [`pod`] is the runtime-neutral model of a pod
//! (VM, containers, processes, events); [`task_v2`] adapts containerd's task API v2 to it. The
//! binary is `src/bin/containerd-shim-tsuba-v2.rs`; docs/shim.md describes its configuration.

#![forbid(unsafe_code)]

mod agent_client;
pub mod annotations;
pub mod config;
pub mod pod;
mod sandbox;
pub mod state;
pub mod task_v2;

pub use agent_client::{AgentClient, AgentClientError};
pub use sandbox::{Sandbox, SandboxError, boot_failure};
