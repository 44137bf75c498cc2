//! `-machine`, `-accel`, `-cpu`, `-smp`, `-m` and the guest RAM backend.

use std::num::NonZeroU8;

use super::ToQemuArgs;
use crate::accel::Accel;
use crate::config::MemoryMib;

/// The q35 machine with its CPU and memory.
pub(crate) struct Machine {
    pub(crate) accel: Accel,
    pub(crate) cpu: String,
    pub(crate) vcpus: NonZeroU8,
    pub(crate) memory: MemoryMib,
    /// Id of the confidential-guest-support object (SNP, TDX).
    pub(crate) confidential_guest: Option<&'static str>,
    /// Id of a memfd RAM backend to create and use (SNP, per QEMU's SEV documentation).
    pub(crate) memfd_backend: Option<&'static str>,
    /// TDX requires the split irqchip.
    pub(crate) split_irqchip: bool,
}

impl ToQemuArgs for Machine {
    fn push_args(&self, args: &mut Vec<String>) {
        let mut machine = String::from("q35");
        if self.split_irqchip {
            machine.push_str(",kernel-irqchip=split");
        }
        if let Some(id) = self.confidential_guest {
            machine.push_str(",confidential-guest-support=");
            machine.push_str(id);
        }
        if let Some(id) = self.memfd_backend {
            machine.push_str(",memory-backend=");
            machine.push_str(id);
        }
        args.extend(["-machine".into(), machine]);
        args.extend(["-accel".into(), self.accel.qemu_name().into()]);
        args.extend(["-cpu".into(), self.cpu.clone()]);
        args.extend(["-smp".into(), self.vcpus.to_string()]);
        args.extend(["-m".into(), format!("{}M", self.memory.get())]);
        if let Some(id) = self.memfd_backend {
            args.extend([
                "-object".into(),
                format!(
                    "memory-backend-memfd,id={id},size={}M,share=true,prealloc=false",
                    self.memory.get()
                ),
            ]);
        }
    }
}
