//! A sim-mode guest under real QEMU (TCG here): boot, agent API, failure paths, teardown.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a panic is the failure report"
)]

use std::time::Duration;

use tsuba_shim::{Sandbox, SandboxError};
use tsuba_tests::{AGENT_TIMEOUT, Artefacts, assert_nothing_left, options_in, sim_config};

const CALL_TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_guest_boots_and_its_agent_answers_then_nothing_is_left() {
    let a = Artefacts::from_env();
    let work = tempfile::tempdir().unwrap();
    let runs = tempfile::tempdir().unwrap();
    let config = sim_config(&a, work.path(), &a.initrd(), "");
    let sandbox = Sandbox::start(&config, &options_in(runs.path()), AGENT_TIMEOUT)
        .await
        .unwrap();
    let run_dir = sandbox.vm().run_dir().to_owned();
    assert!(run_dir.join("agent.sock").exists());

    // A sim-snp guest launched without initdata serves nothing but health until it gets the
    // document its launch bound (none: HOST_DATA is zero), and says so.
    let check = sandbox.agent().check(CALL_TIMEOUT).await.unwrap();
    assert_eq!(
        check.status.enum_value_or_default(),
        tsuba_protocols::agent::ServingStatus::NOT_SERVING
    );
    assert!(
        check.reason.contains("initdata has not been given"),
        "{}",
        check.reason
    );
    assert!(check.agent_rss_kib > 0, "agent reports its memory use");
    // The host swaps in a document of its own: refused against the guest's own HOST_DATA, and
    // the agent is locked for good, saying why.
    let swapped = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"policy.rego\" = \"package agent_policy\"\n";
    let refused = sandbox
        .agent()
        .provide_initdata(swapped.as_bytes(), CALL_TIMEOUT)
        .await
        .unwrap_err();
    let refused = format!("{refused:?}");
    assert!(refused.contains("HOST_DATA"), "{refused}");
    let check = sandbox.agent().check(CALL_TIMEOUT).await.unwrap();
    assert!(
        check.reason.contains("refused its initdata"),
        "{}",
        check.reason
    );
    let pull = sandbox
        .agent()
        .pull_image("10.0.2.2:5000/app:1", CALL_TIMEOUT)
        .await
        .unwrap_err();
    let pull = format!("{pull:?}");
    assert!(pull.contains("refused its initdata"), "{pull}");
    let version = sandbox.agent().version(CALL_TIMEOUT).await.unwrap();
    assert_eq!(
        version.protocol_version,
        tsuba_protocols::agent::PROTOCOL_VERSION
    );
    assert_eq!(version.agent_version, env!("CARGO_PKG_VERSION"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.guest_dir.join("release/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(
        version.kernel_release,
        manifest["contents"]["kernel_release"].as_str().unwrap(),
        "the guest runs the kernel the image was built from"
    );

    sandbox.stop().await.unwrap();
    assert!(!run_dir.exists(), "run dir removed");
    assert_nothing_left(runs.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_initrd_panics_the_kernel_and_the_error_quotes_the_console() {
    let a = Artefacts::from_env();
    let work = tempfile::tempdir().unwrap();
    let runs = tempfile::tempdir().unwrap();
    let garbage = work.path().join("garbage.img");
    std::fs::write(&garbage, vec![0x5a_u8; 64 * 1024]).unwrap();
    let config = sim_config(&a, work.path(), &garbage, "");

    let err = Sandbox::start(&config, &options_in(runs.path()), AGENT_TIMEOUT)
        .await
        .unwrap_err();
    // Two ends race, both by design: QEMU exits (the panicked kernel reboots, and the VM runs
    // with -no-reboot), or the console watcher reads the panic line first (a panic is one of
    // `shim::sandbox`'s boot failures). Either way the error quotes the panic.
    match &err {
        SandboxError::GuestExited { console_tail, .. } => {
            assert!(
                console_tail.contains("Kernel panic"),
                "console tail:\n{console_tail}"
            );
        }
        SandboxError::BootFailed { line, console_tail } => {
            assert!(
                line.starts_with("the guest kernel panicked") && line.contains("Kernel panic"),
                "{line}"
            );
            assert!(
                console_tail.contains("Kernel panic"),
                "console tail:\n{console_tail}"
            );
        }
        other => panic!("expected the guest to exit or to fail its boot, got: {other}"),
    }
    assert!(
        err.to_string().contains("Kernel panic"),
        "the error message quotes the console"
    );
    assert_nothing_left(runs.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_fatal_error_powers_the_guest_off_and_the_host_sees_it() {
    let a = Artefacts::from_env();
    let work = tempfile::tempdir().unwrap();
    let runs = tempfile::tempdir().unwrap();
    // An option the agent does not know is a fatal configuration error in the guest.
    let config = sim_config(&a, work.path(), &a.initrd(), "tsuba.agent.no_such_option=1");

    let err = Sandbox::start(&config, &options_in(runs.path()), AGENT_TIMEOUT)
        .await
        .unwrap_err();
    match &err {
        SandboxError::GuestExited {
            status,
            console_tail,
        } => {
            assert!(
                console_tail.contains("unknown agent option"),
                "console tail:\n{console_tail}"
            );
            assert!(
                console_tail.contains("powering off"),
                "console tail:\n{console_tail}"
            );
            // A guest power-off is an orderly QEMU exit, unlike a crash.
            assert!(status.success(), "{status}");
        }
        other => panic!("expected the guest to exit, got: {other}"),
    }
    assert_nothing_left(runs.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_running_sandbox_kills_qemu_and_removes_its_files() {
    let a = Artefacts::from_env();
    let work = tempfile::tempdir().unwrap();
    let runs = tempfile::tempdir().unwrap();
    let config = sim_config(&a, work.path(), &a.initrd(), "");
    let vm = tsuba_vmm_tee::Vm::launch(&config, &options_in(runs.path()))
        .await
        .unwrap();
    let pid = vm.pid().unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    // No shutdown(): the test path that panics or returns early relies on Drop.
    drop(vm);
    assert_nothing_left(runs.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_that_dies_after_its_agent_was_up_is_seen_by_the_host() {
    use std::os::unix::process::ExitStatusExt as _;
    let a = Artefacts::from_env();
    let work = tempfile::tempdir().unwrap();
    let runs = tempfile::tempdir().unwrap();
    let config = sim_config(&a, work.path(), &a.initrd(), "");
    let mut sandbox = Sandbox::start(&config, &options_in(runs.path()), AGENT_TIMEOUT)
        .await
        .unwrap();
    sandbox.agent().check(CALL_TIMEOUT).await.unwrap();
    // Crash the VM from outside, as an OOM kill or a QEMU fault would.
    let pid = i32::try_from(sandbox.vm().pid().unwrap()).unwrap();
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), sandbox.wait_exit())
        .await
        .expect("the host notices the exit")
        .unwrap();
    assert_eq!(status.signal(), Some(9), "{status}");
    // The agent is gone with it: a call fails instead of hanging.
    let call = tokio::time::timeout(Duration::from_secs(30), sandbox.agent().check(CALL_TIMEOUT))
        .await
        .expect("the call is bounded");
    assert!(call.is_err());
    sandbox.stop().await.unwrap();
    assert_nothing_left(runs.path());
}
