//! The guest console (a 16550 UART captured to a file) and the virtio-serial ports that carry
//! the agent API and the tee-sim device.

use std::path::PathBuf;

use super::{ToQemuArgs, option_path};

/// The serial console, written to a log file on the host.
pub(crate) struct Console {
    pub(crate) log: PathBuf,
}

impl ToQemuArgs for Console {
    fn push_args(&self, args: &mut Vec<String>) {
        args.extend([
            "-chardev".into(),
            format!("file,id=console,path={}", option_path(&self.log)),
            "-serial".into(),
            "chardev:console".into(),
        ]);
    }
}

/// One named virtio-serial port, backed by a Unix socket that QEMU serves.
pub(crate) struct SerialPort {
    pub(crate) id: &'static str,
    pub(crate) name: &'static str,
    pub(crate) socket: PathBuf,
}

/// A virtio-serial controller with its ports.
pub(crate) struct VirtioSerial {
    pub(crate) ports: Vec<SerialPort>,
}

impl ToQemuArgs for VirtioSerial {
    fn push_args(&self, args: &mut Vec<String>) {
        args.extend(["-device".into(), "virtio-serial-pci,id=vser0".into()]);
        for port in &self.ports {
            // wait=on: QEMU does not start the guest before the launcher has connected, so no
            // byte the guest writes (the agent's hello) can be lost to an absent reader.
            args.extend([
                "-chardev".into(),
                format!(
                    "socket,id={},path={},server=on,wait=on",
                    port.id,
                    option_path(&port.socket)
                ),
                "-device".into(),
                format!(
                    "virtserialport,bus=vser0.0,chardev={},name={}",
                    port.id, port.name
                ),
            ]);
        }
    }
}
