//! QEMU command lines, one module per QEMU object, each turning its settings into arguments.
//!
//! [`command_line`] assembles them for a launch. It is a pure function of the launch config and
//! the run paths, so every mode's arguments are unit-tested here even where the host cannot run
//! them (SNP, TDX).

mod boot;
mod machine;
mod net;
mod serial;
mod sev_snp;
mod tdx;
mod vsock;

use std::path::{Path, PathBuf};

pub(crate) use boot::DirectBoot;
pub(crate) use machine::Machine;
pub(crate) use net::VirtioNet;
pub(crate) use serial::{Console, SerialPort, VirtioSerial};
pub(crate) use sev_snp::SevSnpGuest;
pub(crate) use tdx::TdxGuest;
pub(crate) use vsock::VhostVsock;

use crate::accel::Accel;
use crate::config::{AgentTransport, LaunchConfig, Mode};

/// Something that contributes arguments to a QEMU command line.
pub(crate) trait ToQemuArgs {
    /// Appends this object's arguments.
    fn push_args(&self, args: &mut Vec<String>);
}

/// `value` as one value inside a QEMU option list such as `-chardev file,id=c,path=VALUE`.
///
/// QEMU splits an option list at every comma and reads `,,` as one literal comma. Without
/// doubling, a path like `/run/x,path=/etc/y` (a run directory under a parent whose name the
/// host's caller chose) would add an option and send the console log elsewhere; doubled, it
/// stays the one value it is. Arguments that QEMU takes whole (`-bios`, `-kernel`, `-initrd`,
/// `-append`) are not option lists and must not be escaped: QEMU opens them as written.
pub(crate) fn option_value(value: &str) -> String {
    value.replace(',', ",,")
}

/// A path as one value inside a QEMU option list (see [`option_value`]).
pub(crate) fn option_path(path: &Path) -> String {
    option_value(&path.display().to_string())
}

/// Where a launch's host-side files live (all inside the run directory).
#[derive(Debug, Clone)]
pub struct RunPaths {
    /// Guest serial console, captured to a file.
    pub console_log: PathBuf,
    /// Unix socket QEMU serves for the agent's virtio-serial port.
    pub agent_socket: PathBuf,
    /// Unix socket QEMU serves for the tee-sim port (sim modes with a device attached).
    pub teesim_socket: Option<PathBuf>,
    /// vsock guest CID (vsock transport only).
    pub vsock_cid: Option<u32>,
}

/// The QEMU object id of the confidential-guest-support object.
const CGS_ID: &str = "cgs0";
/// The QEMU object id of the guest RAM backend when the TEE needs an explicit one.
const RAM_ID: &str = "ram0";

/// The full QEMU argument list (without the binary) for `config` under `accel`.
pub fn command_line(config: &LaunchConfig, accel: Accel, paths: &RunPaths) -> Vec<String> {
    let mut args: Vec<String> = ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]
        .map(String::from)
        .to_vec();
    let mut objects: Vec<Box<dyn ToQemuArgs>> = Vec::new();
    let memory = config.memory;

    match config.mode {
        Mode::Snp => {
            objects.push(Box::new(Machine {
                accel,
                cpu: config.snp_vcpu_type.clone(),
                vcpus: config.vcpus,
                memory,
                confidential_guest: Some(CGS_ID),
                memfd_backend: Some(RAM_ID),
                split_irqchip: false,
            }));
            objects.push(Box::new(SevSnpGuest {
                id: CGS_ID,
                host_data: config.initdata.as_ref().map(|i| *i.host_data().as_bytes()),
            }));
        }
        Mode::Tdx => {
            objects.push(Box::new(Machine {
                accel,
                cpu: "host".into(),
                vcpus: config.vcpus,
                memory,
                confidential_guest: Some(CGS_ID),
                memfd_backend: None,
                split_irqchip: true,
            }));
            objects.push(Box::new(TdxGuest {
                id: CGS_ID,
                mr_config_id: config
                    .initdata
                    .as_ref()
                    .map(|i| *i.mr_config_id().as_bytes()),
            }));
        }
        Mode::SimSnp | Mode::SimTdx | Mode::None => {
            objects.push(Box::new(Machine {
                accel,
                cpu: match accel {
                    Accel::Kvm => "host".into(),
                    Accel::Tcg => "max".into(),
                },
                vcpus: config.vcpus,
                memory,
                confidential_guest: None,
                memfd_backend: None,
                split_irqchip: false,
            }));
        }
    }

    objects.push(Box::new(DirectBoot {
        firmware: config.firmware.boot.clone(),
        kernel: config.kernel.clone(),
        initrd: config.initrd.clone(),
        cmdline: config.kernel_cmdline(),
    }));
    objects.push(Box::new(Console {
        log: paths.console_log.clone(),
    }));

    let mut ports = Vec::new();
    if config.agent_transport == AgentTransport::Serial {
        ports.push(SerialPort {
            id: "agent",
            name: tsuba_protocols::agent::SERIAL_PORT_NAME,
            socket: paths.agent_socket.clone(),
        });
    }
    if let Some(socket) = &paths.teesim_socket {
        ports.push(SerialPort {
            id: "teesim",
            name: TEESIM_PORT_NAME,
            socket: socket.clone(),
        });
    }
    if !ports.is_empty() {
        objects.push(Box::new(VirtioSerial { ports }));
    }
    if let (AgentTransport::Vsock, Some(cid)) = (config.agent_transport, paths.vsock_cid) {
        objects.push(Box::new(VhostVsock { guest_cid: cid }));
    }
    if let Some(network) = config.network {
        objects.push(Box::new(VirtioNet {
            backend: network.backend,
        }));
    }

    for object in &objects {
        object.push_args(&mut args);
    }
    args
}

/// Name of the virtio-serial port that carries the tee-sim device in sim modes.
pub const TEESIM_PORT_NAME: &str = "tsuba.teesim";

#[cfg(test)]
mod tests;
