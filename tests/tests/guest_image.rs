//! The guest image builder on the real kernel package and the real agent: reproducible, and
//! holding what it says it holds.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a panic is the failure report"
)]

use std::path::Path;

use tsuba_tests::Artefacts;
use tsuba_vmm_tee::guest_image::{DEFAULT_MODULES, GuestImageSpec, build};

fn spec(a: &Artefacts, agent: &Path) -> GuestImageSpec {
    GuestImageSpec {
        kernel_package: a.kernel_package.clone(),
        agent: agent.to_owned(),
        modules: DEFAULT_MODULES.iter().map(|m| (*m).to_owned()).collect(),
        debug_busybox: None,
        source_date_epoch: 0,
    }
}

#[test]
fn building_twice_gives_byte_identical_initrds_with_resolved_module_dependencies() {
    let a = Artefacts::from_env();
    // The agent make built; any file would do for reproducibility, the real one is the honest input.
    let agent = a
        .guest_dir
        .join("../../target/x86_64-unknown-linux-gnu/release/tsuba-agent");
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    let first = build(&spec(&a, &agent), one.path()).unwrap();
    let second = build(&spec(&a, &agent), two.path()).unwrap();
    assert_eq!(
        std::fs::read(&first.initrd).unwrap(),
        std::fs::read(&second.initrd).unwrap(),
        "same inputs, same initrd bytes"
    );
    assert_eq!(first.manifest, second.manifest);

    let modules: Vec<&str> = first
        .manifest
        .contents
        .modules
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    // Every requested module is there, after what it depends on (from .modinfo depends=).
    for wanted in DEFAULT_MODULES {
        assert!(
            modules.contains(wanted),
            "{wanted} missing from {modules:?}"
        );
    }
    let at = |name: &str| modules.iter().position(|m| *m == name).unwrap();
    assert!(at("vsock") < at("vmw_vsock_virtio_transport_common"));
    assert!(at("vmw_vsock_virtio_transport_common") < at("vmw_vsock_virtio_transport"));
    assert!(at("dm_mod") < at("dm_crypt"));
    assert!(at("tsm") < at("sev_guest"));
    // Release images carry no shell.
    assert_eq!(first.manifest.contents.debug_busybox_sha256, None);
    // The goal for a release initrd: under 10 MiB compressed.
    assert!(first.manifest.initrd_bytes < 10 * 1024 * 1024);
}

#[test]
fn a_different_agent_gives_a_different_initrd() {
    let a = Artefacts::from_env();
    let dir = tempfile::tempdir().unwrap();
    let agent = dir.path().join("agent");
    std::fs::write(&agent, b"agent one").unwrap();
    let first = build(&spec(&a, &agent), &dir.path().join("one")).unwrap();
    std::fs::write(&agent, b"agent two").unwrap();
    let second = build(&spec(&a, &agent), &dir.path().join("two")).unwrap();
    assert_ne!(first.manifest.initrd_sha256, second.manifest.initrd_sha256);
    assert_eq!(first.manifest.kernel_sha256, second.manifest.kernel_sha256);
}
