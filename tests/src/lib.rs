//! End-to-end test support for tsuba.
//!
//! The tests under `tests/tests/` run the real components (QEMU, containerd, the distribution
//! registry, skopeo, the key broker on loopback); this library holds what they share: locating
//! the built artefacts and bounding every process a test starts.

#![forbid(unsafe_code)]
