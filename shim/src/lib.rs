//! The containerd shim for tsuba (`containerd-shim-tsuba-v2`).
//!
//! Implements the containerd shim v2 task API with one confidential sandbox VM per pod, and talks to
//! the guest agent over the agent protocol. Today it holds the agent client and the sandbox
//! (VM + agent) lifecycle; the task API comes next.

#![forbid(unsafe_code)]

mod agent_client;
mod sandbox;

pub use agent_client::{AgentClient, AgentClientError};
pub use sandbox::{Sandbox, SandboxError};
