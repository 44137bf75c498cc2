//! The containerd shim for tsuba (`containerd-shim-tsuba-v2`).
//!
//! Implements the containerd shim v2 task API with one confidential sandbox VM per pod, and talks to
//! the guest agent over the agent protocol.

#![forbid(unsafe_code)]
