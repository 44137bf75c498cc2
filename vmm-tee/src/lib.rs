//! Launching and supervising tsuba guest VMs.
//!
//! Turns a launch configuration (mode, firmware, kernel, initrd, command line, vCPUs, memory,
//! initdata digest) into a QEMU invocation for SEV-SNP, TDX or simulation mode, supervises the
//! process (exit, crash, timeout), captures the guest console, and tears everything down on every
//! path. It also builds the guest image (kernel + reproducible initrd) and probes the host for
//! what it can run (`tsuba check`).

mod accel;
mod config;
pub mod guest_image;
mod launcher;
mod measure;
mod probe;
mod qemu;
mod sim_device;

pub use accel::{Accel, AccelError, HostVirt, cpuinfo_has_virt, resolve as resolve_accel};
pub use config::{
    AccelChoice, AgentTransport, ConfigError, Firmware, FirmwareFile, LaunchConfig,
    LaunchConfigFile, MemoryMib, Mode, Network, NetworkBackend, NetworkFile,
};
pub use launcher::{LaunchError, LaunchOptions, Vm, tail};
pub use measure::{MeasureError, launch_reference_values, measurement_inputs};
pub use probe::{FirmwareReport, HostReport, KvmReport, QemuReport, parse_qemu_version};
pub use qemu::{RunPaths, TEESIM_PORT_NAME, command_line};
