//! The layout of the guest initrd: the contract between the image builder on the host
//! (`vmm-tee`'s guest image builder) and the agent that runs from it.

/// Where the agent binary sits; the kernel runs it as PID 1.
pub const INIT_PATH: &str = "/init";

/// Folder holding the kernel modules, uncompressed, one `<name>.ko` each.
pub const MODULES_DIR: &str = "/lib/modules";

/// Text file listing the module file names under [`MODULES_DIR`], one per line, in an order
/// where every module comes after the modules it depends on.
pub const MODULES_LOAD_ORDER: &str = "/lib/modules/load-order";

/// JSON manifest of what went into the image (see the builder), for audits from inside.
pub const MANIFEST_PATH: &str = "/etc/tsuba/guest-image.json";
