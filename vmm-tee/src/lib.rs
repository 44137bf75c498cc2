//! Launching and supervising tsuba guest VMs.
//!
//! Turns a launch configuration (mode, firmware, kernel, initrd, command line, vCPUs, memory,
//! initdata digest) into a QEMU invocation for SEV-SNP, TDX or simulation mode, supervises the
//! process (exit, crash, timeout), captures the guest console, and tears everything down on every
//! path. It also probes the host for what it can run (`tsuba check`).
