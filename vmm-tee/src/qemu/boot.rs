//! Firmware and measured direct kernel boot.

use std::path::PathBuf;

use super::ToQemuArgs;

/// `-bios` plus `-kernel`/`-initrd`/`-append`: the files the launch measurement covers.
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
