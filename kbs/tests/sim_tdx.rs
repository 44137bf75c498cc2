//! End to end with simulated TDX evidence from tee-sim, through the verifier set that
//! `tsuba kbs serve --insecure-accept-simulated-evidence --insecure-sim-roots roots.pem
//! --tdx-collateral-dir D` builds from what `tsuba sim export-roots --tdx-collateral-out
//! D/sim.json` writes: the quote's
//! RTMRs and CC event log are those TDVF and the kernel's EFI stub extend for the booted kernel,
//! initrd and command line, and the default policy compares them with the reference values
//! `tsuba measure --tee tdx` predicts (the same `TdvfBoot` model).

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed unwrap is a failed test"
)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use sha2::{Digest, Sha384};
use tsuba_attestation_agent::kbs::{
    BrokerTrust, EvidenceProvider, KbsClient, KbsClientConfig, KbsClientError,
};
use tsuba_kbs::{
    AdminAuth, Broker, BrokerConfig, EvidenceTrust, HttpLimits, ResourcePath, Transport,
    VerifierOptions, build_verifiers, router, serve,
};
use tsuba_policy::Initdata;
use tsuba_protocols::evidence::ReportData;
use tsuba_protocols::evidence::ccel::TdvfBoot;
use tsuba_tee_sim::{SimAmdSp, SimTdx, TdxLaunch, TdxQuoteRequest};

const MRTD: [u8; 48] = [0x6d; 48];
const CMDLINE: &str = "console=hvc0 tsuba.kbs=https://kbs";

fn boot(initrd: &[u8], cmdline: &str) -> TdvfBoot {
    TdvfBoot {
        kernel_authenticode: Sha384::digest(b"genuine kernel").into(),
        kernel_len: 14,
        initrd: Some(Sha384::digest(initrd).into()),
        cmdline: Some(cmdline.into()),
    }
}

/// A sim-tdx guest: the firmware is always the genuine one (same MRTD); `booted` is what the
/// host really booted, `logged` the event log it sends.
struct SimTdxGuest {
    sim: Arc<SimTdx>,
    booted: TdvfBoot,
    logged: TdvfBoot,
    /// What the launcher bound into MRCONFIGID (an initdata digest, or zeros).
    mr_config_id: [u8; 48],
}

impl EvidenceProvider for SimTdxGuest {
    fn tee(&self) -> &'static str {
        "tdx"
    }

    fn evidence(
        &self,
        binding: &[u8; 48],
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let launch = TdxLaunch::new(MRTD, self.mr_config_id).with_boot(&self.booted);
        let mut report_data = [0u8; 64];
        report_data[..48].copy_from_slice(binding);
        let mut request =
            TdxQuoteRequest::new(launch.mr_td, launch.mr_config_id, ReportData(report_data));
        request.rtmr = launch.rtmr;
        let quote = self.sim.quote(&request)?;
        Ok(serde_json::json!({
            "quote": STANDARD.encode(quote),
            "cc_eventlog": STANDARD.encode(self.logged.event_log().to_bytes()),
        }))
    }
}

struct Setup {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    sim: Arc<SimTdx>,
    server: tsuba_kbs::RunningServer,
}

/// The reference values `tsuba measure --tee tdx` gives for the genuine boot.
fn genuine_refs() -> BTreeMap<String, Vec<String>> {
    let rtmr = boot(b"genuine initrd", CMDLINE).event_log().replay();
    BTreeMap::from([
        ("measurement".to_owned(), vec![hex::encode(MRTD)]),
        ("tdx_rtmr1".to_owned(), vec![hex::encode(rtmr[1])]),
        ("tdx_rtmr2".to_owned(), vec![hex::encode(rtmr[2])]),
    ])
}

fn setup(refs: &BTreeMap<String, Vec<String>>) -> Setup {
    let sim_dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    // What `tsuba sim export-roots` writes: the public roots, and the TDX collateral.
    let sp = SimAmdSp::open_or_create_with_published_test_roots(sim_dir.path()).unwrap();
    let sim = Arc::new(SimTdx::open_or_create(sim_dir.path()).unwrap());
    let public = sim_dir.path().join("public");
    std::fs::create_dir(&public).unwrap();
    std::fs::write(
        public.join("roots.pem"),
        sp.public_roots_pem().unwrap() + &sim.public_root_pem().unwrap(),
    )
    .unwrap();
    std::fs::write(
        public.join("sim.json"),
        sim.collateral().unwrap().to_json().unwrap(),
    )
    .unwrap();
    let mut options = VerifierOptions::hardware_only();
    options.trust = EvidenceTrust::InsecureAcceptSimulated;
    options.sim_roots = Some(public.join("roots.pem"));
    options.tdx_collateral_dir = Some(public);
    let verifiers = build_verifiers(&options).unwrap();
    let mut config = BrokerConfig::new(
        state.path().to_path_buf(),
        AdminAuth::new(common::admin_key().verifying_key()),
    );
    config.insecure_release_to_simulated = true;
    let broker = Arc::new(Broker::new(config, verifiers).unwrap());
    broker.set_reference_values(refs).unwrap();
    broker
        .set_resource(
            &ResourcePath::parse("default/key/1").unwrap(),
            b"tdx-secret",
        )
        .unwrap();
    let server = serve(
        "127.0.0.1:0".parse().unwrap(),
        Transport::InsecurePlainHttpLoopbackOnly,
        router(broker, HttpLimits::default()),
    )
    .unwrap();
    Setup {
        _dirs: (sim_dir, state),
        sim,
        server,
    }
}

fn client(setup: &Setup, booted: TdvfBoot, logged: TdvfBoot) -> KbsClient {
    guest(setup, booted, logged, [0; 48], None)
}

/// A guest whose launch bound `mr_config_id`, presenting `init_data`.
fn guest(
    setup: &Setup,
    booted: TdvfBoot,
    logged: TdvfBoot,
    mr_config_id: [u8; 48],
    init_data: Option<Initdata>,
) -> KbsClient {
    let mut config = KbsClientConfig::new(
        format!("http://{}", setup.server.local_addr()),
        BrokerTrust::InsecurePlainHttp,
    );
    config.attempts = 1;
    config.backoff = Duration::from_millis(10);
    config.init_data = init_data;
    KbsClient::new(
        config,
        Arc::new(SimTdxGuest {
            sim: Arc::clone(&setup.sim),
            booted,
            logged,
            mr_config_id,
        }),
    )
    .unwrap()
}

async fn refusal(client: &KbsClient) -> (String, String) {
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        client.get_resource("kbs:///default/key/1"),
    )
    .await
    .unwrap()
    .unwrap_err();
    match err {
        KbsClientError::Refused { kind, detail, .. } => (kind, detail),
        other => panic!("not a refusal: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genuine_sim_tdx_boot_gets_the_resource_with_boot_claims() {
    let setup = setup(&genuine_refs());
    let genuine = boot(b"genuine initrd", CMDLINE);
    let client = client(&setup, genuine.clone(), genuine.clone());
    let secret = client.get_resource("kbs:///default/key/1").await.unwrap();
    assert_eq!(&secret[..], b"tdx-secret");
    let token = client.attest().await.unwrap();
    let claims = common::token_payload(&token);
    assert_eq!(claims["submods"]["cpu0"]["tsuba.simulated"], true);
    let tdx = &common::annotated_evidence(&claims)["tdx"];
    // Trustee's names too, as its default policy reads them.
    assert_eq!(tdx["quote"]["header"]["tee_type"], "81000000");
    assert_eq!(tdx["tcb_status"], "UpToDate");
    assert_eq!(tdx["collateral_expiration_status"], "0");
    assert_eq!(tdx["td_attributes"]["debug"], false);
    assert_eq!(tdx["quote"]["body"]["mr_td"], tdx["measurement"]);
    let details = &tdx["details"];
    assert_eq!(
        details["event_log"]["initrd"],
        hex::encode(Sha384::digest(b"genuine initrd"))
    );
    assert_eq!(
        details["rtmr"][2],
        hex::encode(genuine.event_log().replay()[2])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_initrd_or_cmdline_with_the_same_firmware_is_refused_naming_rtmr2() {
    let setup = setup(&genuine_refs());
    // The host boots its own initrd, or adds a kernel argument, and sends the honest log.
    for booted in [
        boot(b"host's initrd: /init prints the secrets", CMDLINE),
        boot(b"genuine initrd", &format!("{CMDLINE} init=/bin/sh")),
    ] {
        let (kind, detail) = refusal(&client(&setup, booted.clone(), booted)).await;
        assert_eq!(kind, "AttestationDenied");
        assert_eq!(
            detail,
            "attestation policy denied: rtmr2 (initrd and command line) is not a reference value"
        );
    }
    // The host boots its own initrd and sends the genuine boot's log: the log does not replay.
    let (kind, detail) = refusal(&client(
        &setup,
        boot(b"host's initrd", CMDLINE),
        boot(b"genuine initrd", CMDLINE),
    ))
    .await;
    assert_eq!(kind, "AttestationFailed");
    assert_eq!(
        detail,
        "evidence verification failed: cc event log does not replay to the quote's rtmr2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tdx_without_rtmr_reference_values_is_refused() {
    // Only the MRTD configured, as before RTMRs were checked.
    let refs = BTreeMap::from([("measurement".to_owned(), vec![hex::encode(MRTD)])]);
    let setup = setup(&refs);
    let genuine = boot(b"genuine initrd", CMDLINE);
    let (kind, detail) = refusal(&client(&setup, genuine.clone(), genuine)).await;
    assert_eq!(kind, "AttestationDenied");
    assert_eq!(
        detail,
        "attestation policy denied: tdx: no rtmr1 and rtmr2 reference values (tdx_rtmr1, tdx_rtmr2) are configured, so the kernel, initrd and command line are unchecked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initdata_is_checked_against_mrconfigid() {
    let setup = setup(&genuine_refs());
    let genuine = boot(b"genuine initrd", CMDLINE);
    // sha256: the MRCONFIGID form is the digest zero-padded to 48 bytes.
    let doc = |note: &str| {
        Initdata::parse(&format!(
            "version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[data]\n\"note\" = \"{note}\"\n"
        ))
        .unwrap()
    };
    let (a, b) = (doc("a"), doc("b"));
    let launched_with_a = *a.mr_config_id().as_bytes();

    let client = guest(
        &setup,
        genuine.clone(),
        genuine.clone(),
        launched_with_a,
        Some(a.clone()),
    );
    let secret = client.get_resource("kbs:///default/key/1").await.unwrap();
    assert_eq!(&secret[..], b"tdx-secret");
    let token = client.attest().await.unwrap();
    let claims = common::token_payload(&token);
    let evidence = common::annotated_evidence(&claims);
    assert_eq!(evidence["init_data"], a.mr_config_id().to_hex());
    assert!(
        evidence["init_data"]
            .as_str()
            .unwrap()
            .ends_with(&"00".repeat(16))
    );
    assert_eq!(evidence["init_data_claims"]["note"], "a");

    let (kind, detail) = refusal(&guest(
        &setup,
        genuine.clone(),
        genuine,
        launched_with_a,
        Some(b),
    ))
    .await;
    assert_eq!(kind, "InitDataMismatch");
    assert_eq!(
        detail,
        "init-data refused: init-data does not match the MRCONFIGID bound into the evidence"
    );
}
