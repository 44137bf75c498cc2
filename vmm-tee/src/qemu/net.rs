//! The guest's virtio-net device on QEMU user networking.

use super::ToQemuArgs;
use crate::config::NetworkBackend;

/// A virtio-net device and its host backend.
pub(crate) struct VirtioNet {
    pub(crate) backend: NetworkBackend,
}

impl ToQemuArgs for VirtioNet {
    fn push_args(&self, args: &mut Vec<String>) {
        match self.backend {
            // restrict=off: the guest reaches the host's loopback services through 10.0.2.2 (the
            // key broker and registry on 127.0.0.1). No hostfwd: nothing on the host connects
            // into the guest; the agent API stays on its own transport.
            NetworkBackend::User => args.extend([
                "-netdev".into(),
                "user,id=net0,restrict=off,ipv6=off".into(),
            ]),
        }
        // romfile= (empty): no iPXE option ROM; the guest boots its kernel directly, and the
        // firmware should not try the network.
        args.extend([
            "-device".into(),
            "virtio-net-pci,netdev=net0,romfile=".into(),
        ]);
    }
}
