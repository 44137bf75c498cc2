//! The vhost-vsock device (production transport for the agent API).

use super::ToQemuArgs;

/// A vsock device with the guest's context id.
pub(crate) struct VhostVsock {
    pub(crate) guest_cid: u32,
}

impl ToQemuArgs for VhostVsock {
    fn push_args(&self, args: &mut Vec<String>) {
        args.extend([
            "-device".into(),
            format!("vhost-vsock-pci,id=vsock0,guest-cid={}", self.guest_cid),
        ]);
    }
}
