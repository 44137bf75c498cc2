//! The guest image: the kernel plus a reproducible initrd holding the agent and the kernel
//! modules the guest needs, and nothing else in release builds.

mod builder;
mod cpio;
mod modules;

pub use builder::{
    DEFAULT_MODULES, GuestImage, GuestImageError, GuestImageManifest, GuestImageSpec,
    ImageContents, build,
};
pub use cpio::{CpioError, FinishError};
pub use modules::{ModuleError, ResolvedModule};
