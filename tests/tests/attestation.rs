//! A sim-snp guest gets its evidence from the tee-sim device the launcher serves: the report
//! carries the measurement `tsuba measure` computes for exactly the booted files, HOST_DATA from
//! initdata, and report data the host could not choose. Because the launcher itself tells tee-sim
//! what to sign with that same function, the measurement is also checked against sources that
//! share no code with tsuba: `sev-snp-measure` (SNP), `firmware/testdata/derive-mrtd.py` (TDX).

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a panic is the failure report"
)]

use std::path::Path;
use std::time::Duration;

use tsuba_protocols::agent::diagnostic_report_data;
use tsuba_protocols::evidence::{SnpReport, TdxQuote};
use tsuba_shim::Sandbox;
use tsuba_tests::{
    AGENT_TIMEOUT, Artefacts, SnpBoot, assert_nothing_left, options_in, sev_snp_measure_digest,
    sim_config,
};
use tsuba_vmm_tee::{LaunchConfig, launch_reference_values};

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The `-append` of a sim-snp launch with no extra command line (pinned by vmm-tee's QEMU tests).
const SIM_APPEND: &str = "console=ttyS0 panic=-1 tsuba.agent.transport=serial";

const INITDATA: &str =
    "version = \"0.1.0\"\nalgorithm = \"sha384\"\n\n[data]\n\"note\" = \"e2e\"\n";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Boots `config`, asks the agent for a diagnostic report with `nonce`, stops the guest.
async fn report_of(config: &LaunchConfig, runs: &Path, nonce: &[u8]) -> (String, SnpReport) {
    let sandbox = Sandbox::start(config, &options_in(runs), AGENT_TIMEOUT)
        .await
        .unwrap();
    let version = sandbox.agent().version(CALL_TIMEOUT).await.unwrap();
    let resp = sandbox.agent().diagnostic_report(nonce, CALL_TIMEOUT).await;
    sandbox.stop().await.unwrap();
    let resp = resp.unwrap();
    assert_eq!(version.tee, "sim-snp", "the agent detected the sim device");
    assert!(
        !resp.cert_table.is_empty(),
        "the sim hands out its certificate table"
    );
    (resp.attester, SnpReport::parse(&resp.evidence).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_report_carries_the_measured_launch_and_changes_with_the_initrd() {
    let a = Artefacts::from_env();
    let work = tempfile::tempdir().unwrap();
    let runs = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("initdata.toml"), INITDATA).unwrap();
    let toml_with_initdata = |initrd: &Path, dir: &Path| {
        let config = sim_config(&a, dir, initrd, "");
        let text = std::fs::read_to_string(dir.join("launch.toml")).unwrap();
        let text = format!("initdata = {:?}\n{text}", work.path().join("initdata.toml"));
        std::fs::write(dir.join("launch.toml"), text).unwrap();
        drop(config);
        LaunchConfig::from_file(&dir.join("launch.toml")).unwrap()
    };

    // Release image, with initdata.
    let release_dir = tempfile::tempdir().unwrap();
    let release = toml_with_initdata(&a.initrd(), release_dir.path());
    let expected = launch_reference_values(&release).unwrap().snp.unwrap();
    let nonce = b"e2e-nonce-1";
    let (attester, report) = report_of(&release, runs.path(), nonce).await;
    assert_eq!(attester, "sim-snp");
    assert_eq!(
        report.measurement, expected.launch_digest.0,
        "measurement = tsuba measure"
    );
    // sim_config: one vCPU, the default vCPU model; the AmdSev build is what hardware measures.
    let independent = |initrd: &Path| {
        sev_snp_measure_digest(&SnpBoot {
            firmware: &a.amdsev_ovmf,
            kernel: &a.kernel(),
            initrd,
            append: SIM_APPEND,
            vcpus: 1,
            vcpu_type: "EPYC-v4",
        })
    };
    assert_eq!(
        hex(&report.measurement),
        independent(&a.initrd()),
        "measurement = sev-snp-measure"
    );
    let initdata = release.initdata.as_ref().unwrap();
    assert_eq!(
        &report.host_data,
        initdata.host_data().as_bytes(),
        "HOST_DATA = initdata digest"
    );
    assert_eq!(
        report.report_data,
        diagnostic_report_data(nonce),
        "host could not pick report data"
    );
    assert_ne!(report.report_data[..nonce.len()], nonce[..]);

    // Another initrd (the debug image): another measurement, again the predicted one.
    let debug_dir = tempfile::tempdir().unwrap();
    let debug = toml_with_initdata(&a.guest_dir.join("debug/initrd.img"), debug_dir.path());
    let expected_debug = launch_reference_values(&debug).unwrap().snp.unwrap();
    assert_ne!(expected_debug.launch_digest, expected.launch_digest);
    let (_, debug_report) = report_of(&debug, runs.path(), b"e2e-nonce-2").await;
    assert_eq!(debug_report.measurement, expected_debug.launch_digest.0);
    assert_eq!(
        hex(&debug_report.measurement),
        independent(&a.guest_dir.join("debug/initrd.img"))
    );
    assert_ne!(
        debug_report.measurement, report.measurement,
        "changing the initrd changes it"
    );

    assert_nothing_left(runs.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_nonce_is_refused_by_the_agent() {
    let a = Artefacts::from_env();
    let work = tempfile::tempdir().unwrap();
    let runs = tempfile::tempdir().unwrap();
    // With initdata (no policy: the default allows diagnostic reports), so the refusal below is
    // the nonce's bound and not the wait for initdata.
    std::fs::write(work.path().join("initdata.toml"), INITDATA).unwrap();
    drop(sim_config(&a, work.path(), &a.initrd(), ""));
    let launch = work.path().join("launch.toml");
    let text = std::fs::read_to_string(&launch).unwrap();
    std::fs::write(
        &launch,
        format!("initdata = {:?}\n{text}", work.path().join("initdata.toml")),
    )
    .unwrap();
    let config = LaunchConfig::from_file(&launch).unwrap();
    let sandbox = Sandbox::start(&config, &options_in(runs.path()), AGENT_TIMEOUT)
        .await
        .unwrap();
    let result = sandbox
        .agent()
        .diagnostic_report(&[7u8; 65], CALL_TIMEOUT)
        .await;
    // The agent is still serving after the refusal.
    let check = sandbox.agent().check(CALL_TIMEOUT).await;
    sandbox.stop().await.unwrap();
    let err = result.unwrap_err();
    assert!(err.to_string().contains("GetDiagnosticReport"), "{err}");
    assert!(
        format!("{err:?}").contains("nonce longer than 64 bytes"),
        "{err:?}"
    );
    assert_eq!(
        check.unwrap().status.enum_value_or_default(),
        tsuba_protocols::agent::ServingStatus::SERVING
    );
    assert_nothing_left(runs.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sim_tdx_guest_quote_carries_the_predicted_mrtd_mrconfigid_and_rtmrs() {
    let a = Artefacts::from_env();
    let work = tempfile::tempdir().unwrap();
    let runs = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("initdata.toml"), INITDATA).unwrap();
    // Debian's plain OVMF carries TDX metadata: it is the image whose MRTD is predicted.
    let toml = format!(
        "mode = \"sim-tdx\"\nkernel = {kernel:?}\ninitrd = {initrd:?}\nmemory_mib = 256\n\
         initdata = \"initdata.toml\"\n[firmware]\nboot = {fw:?}\nmeasured = {fw:?}\n",
        kernel = a.kernel(),
        initrd = a.initrd(),
        fw = a.ovmf,
    );
    std::fs::write(work.path().join("launch.toml"), toml).unwrap();
    let config = LaunchConfig::from_file(&work.path().join("launch.toml")).unwrap();
    let expected = launch_reference_values(&config).unwrap().tdx.unwrap();

    let sandbox = Sandbox::start(&config, &options_in(runs.path()), AGENT_TIMEOUT)
        .await
        .unwrap();
    let resp = sandbox
        .agent()
        .diagnostic_report(b"tdx-nonce", CALL_TIMEOUT)
        .await;
    sandbox.stop().await.unwrap();
    let resp = resp.unwrap();
    assert_eq!(resp.attester, "sim-tdx");
    let quote = TdxQuote::parse(&resp.evidence).unwrap();
    assert_eq!(quote.body.mr_td, expected.mrtd.0, "MRTD = tsuba measure");
    // And the MRTD the independent script derives for the same firmware (QEMU 10: per page).
    let script = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../firmware/testdata/derive-mrtd.py"
        ))
        .arg(&a.ovmf)
        .arg("per-page")
        .output()
        .unwrap();
    assert!(script.status.success(), "{script:?}");
    assert_eq!(
        hex(&quote.body.mr_td),
        String::from_utf8(script.stdout).unwrap().trim(),
        "MRTD = derive-mrtd.py"
    );
    // RTMR1 (kernel) and RTMR2 (initrd, command line) = tsuba measure's prediction for these
    // files; RTMR3 is untouched.
    let boot = expected.boot.as_ref().unwrap();
    assert_eq!(
        hex(&quote.body.rtmr[1]),
        boot.rtmr1,
        "RTMR1 = tsuba measure"
    );
    assert_eq!(
        hex(&quote.body.rtmr[2]),
        boot.rtmr2,
        "RTMR2 = tsuba measure"
    );
    assert_eq!(hex(&quote.body.rtmr[0]), boot.rtmr0_sim);
    assert_eq!(quote.body.rtmr[3], [0; 48]);
    let initdata = config.initdata.as_ref().unwrap();
    assert_eq!(&quote.body.mr_config_id, initdata.mr_config_id().as_bytes());
    assert_eq!(quote.body.report_data, diagnostic_report_data(b"tdx-nonce"));
    assert_nothing_left(runs.path());
}
