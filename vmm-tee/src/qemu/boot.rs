//! Firmware and measured direct kernel boot.

use std::path::PathBuf;

use super::ToQemuArgs;

/// `-bios` plus `-kernel`/`-initrd`/`-append`: the files the launch measurement covers. QEMU
/// takes each of these values whole (they are not option lists: a comma in them is part of the
/// file name or command line), so they are passed as written, never comma-escaped.
pub(crate) struct DirectBoot {
    pub(crate) firmware: PathBuf,
    pub(crate) kernel: PathBuf,
    pub(crate) initrd: PathBuf,
    pub(crate) cmdline: String,
}

impl ToQemuArgs for DirectBoot {
    fn push_args(&self, args: &mut Vec<String>) {
        args.extend(["-bios".into(), self.firmware.display().to_string()]);
        args.extend(["-kernel".into(), self.kernel.display().to_string()]);
        args.extend(["-initrd".into(), self.initrd.display().to_string()]);
        args.extend(["-append".into(), self.cmdline.clone()]);
    }
}
