//! The tsuba guest agent.
//!
//! Runs as PID 1 inside the confidential guest: sets up the minimal system (proc, sys, dev, run,
//! kernel modules), serves the agent API to the host over vsock or virtio-serial, enforces the
//! policy on every host request, reaps children and powers the guest off on a fatal error.

#![forbid(unsafe_code)]
