//! End to end with simulated SNP evidence from tee-sim: the same verifier code as real SNP, with
//! tee-sim's roots added only under the insecure option.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed unwrap is a failed test"
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use tsuba_attestation_agent::kbs::{
    BrokerTrust, EvidenceProvider, KbsClient, KbsClientConfig, KbsClientError,
};
use tsuba_kbs::{
    AdminAuth, Broker, BrokerConfig, EvidenceTrust, HttpLimits, PolicyKind, ResourcePath,
    SnpProduct, SnpVerifier, Tee, Transport, VerifierSet, router, serve,
};
use tsuba_policy::Initdata;
use tsuba_protocols::evidence::{GuestPolicy, ReportData};
use tsuba_tee_sim::{SIM_DEFAULT_POLICY, SIM_DEFAULT_TCB, SimAmdSp, SnpReportRequest};

const MEASUREMENT: [u8; 48] = [0x5a; 48];

struct SimSnp {
    sp: Arc<SimAmdSp>,
    debug: bool,
    /// What the launcher bound into HOST_DATA (an initdata digest, or zeros).
    host_data: [u8; 32],
    /// Send the evidence in guest-components' JSON shape instead of tsuba's.
    guest_components: bool,
}

/// The sim report and certificate table as guest-components' SNP attester sends them: the
/// report in the serde form of `sev` 6.3.1 (the release that attester uses), and the
/// certificate table as a list of typed entries.
fn guest_components_shape(report: &[u8], cert_table: &[u8]) -> Value {
    use sev_gc::firmware::host::{CertTableEntry, CertType};
    use tsuba_protocols::evidence::{GUID_ARK, GUID_ASK, GUID_VCEK, GUID_VLEK, SnpCertTable};

    let report = sev_gc::firmware::guest::AttestationReport::from_bytes(report).unwrap();
    let chain: Vec<CertTableEntry> = SnpCertTable::parse(cert_table)
        .unwrap()
        .entries
        .into_iter()
        .map(|entry| CertTableEntry {
            cert_type: match entry.guid {
                g if g == GUID_ARK => CertType::ARK,
                g if g == GUID_ASK => CertType::ASK,
                g if g == GUID_VCEK => CertType::VCEK,
                g if g == GUID_VLEK => CertType::VLEK,
                other => panic!("unexpected certificate {other:02x?}"),
            },
            data: entry.data,
        })
        .collect();
    serde_json::json!({ "attestation_report": report, "cert_chain": chain })
}

impl EvidenceProvider for SimSnp {
    fn tee(&self) -> &'static str {
        "snp"
    }

    fn evidence(
        &self,
        binding: &[u8; 48],
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let mut report_data = [0u8; 64];
        report_data[..48].copy_from_slice(binding);
        let mut request =
            SnpReportRequest::new(MEASUREMENT, self.host_data, ReportData(report_data));
        if self.debug {
            request.policy = GuestPolicy(SIM_DEFAULT_POLICY.0 | GuestPolicy::DEBUG);
        }
        let signed = self.sp.report(&request)?;
        if self.guest_components {
            return Ok(guest_components_shape(&signed.report, &signed.cert_table));
        }
        Ok(serde_json::json!({
            "report": STANDARD.encode(&signed.report),
            "cert_table": STANDARD.encode(&signed.cert_table),
        }))
    }
}

struct Setup {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    sp: Arc<SimAmdSp>,
    broker: Arc<Broker>,
    server: tsuba_kbs::RunningServer,
}

fn setup(trust: EvidenceTrust) -> Setup {
    let sim_dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let sp = Arc::new(SimAmdSp::open_or_create_with_published_test_roots(sim_dir.path()).unwrap());
    let mut snp = SnpVerifier::with_amd_roots().unwrap();
    if trust == EvidenceTrust::InsecureAcceptSimulated {
        snp = snp
            .insecure_add_simulated_root(sp.ark_der(), sp.ask_der())
            .unwrap()
            .with_min_tcb(SnpProduct::Genoa, SIM_DEFAULT_TCB);
    }
    let mut verifiers = VerifierSet::new(trust);
    verifiers.insert(Tee::Snp, Box::new(snp)).unwrap();
    let mut config = BrokerConfig::new(
        state.path().to_path_buf(),
        AdminAuth::new(common::admin_key().verifying_key()),
    );
    config.insecure_release_to_simulated = true;
    let broker = Arc::new(Broker::new(config, verifiers).unwrap());
    broker
        .set_reference_values(&common::refs(&[&hex::encode(MEASUREMENT)]))
        .unwrap();
    broker
        .set_resource(
            &ResourcePath::parse("default/key/1").unwrap(),
            b"sim-secret",
        )
        .unwrap();
    let server = serve(
        "127.0.0.1:0".parse().unwrap(),
        Transport::InsecurePlainHttpLoopbackOnly,
        router(Arc::clone(&broker), HttpLimits::default()),
    )
    .unwrap();
    Setup {
        _dirs: (sim_dir, state),
        sp,
        broker,
        server,
    }
}

fn client(setup: &Setup, debug: bool) -> KbsClient {
    client_with(setup, debug, false)
}

fn client_with(setup: &Setup, debug: bool, guest_components: bool) -> KbsClient {
    let mut config = KbsClientConfig::new(
        format!("http://{}", setup.server.local_addr()),
        BrokerTrust::InsecurePlainHttp,
    );
    config.attempts = 1;
    config.backoff = Duration::from_millis(10);
    KbsClient::new(
        config,
        Arc::new(SimSnp {
            sp: Arc::clone(&setup.sp),
            debug,
            host_data: [0; 32],
            guest_components,
        }),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_snp_evidence_with_reference_measurement_gets_the_resource() {
    let setup = setup(EvidenceTrust::InsecureAcceptSimulated);
    let client = client(&setup, false);
    let secret = client.get_resource("kbs:///default/key/1").await.unwrap();
    assert_eq!(&secret[..], b"sim-secret");
    // The token says simulated.
    let token = client.attest().await.unwrap();
    let claims = common::token_payload(&token);
    assert_eq!(claims["submods"]["cpu0"]["tsuba.simulated"], true);
    // Simulated roots are not genuine hardware, whatever a policy allowed.
    assert_eq!(claims["submods"]["cpu0"]["ear.status"], "contraindicated");
    assert_eq!(
        claims["submods"]["cpu0"]["ear.trustworthiness-vector"]["hardware"],
        97
    );
    let evidence = common::annotated_evidence(&claims);
    assert_eq!(evidence["snp"]["details"]["root"], "tee-sim");
    assert_eq!(evidence["snp"]["measurement"], hex::encode(MEASUREMENT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_components_shaped_evidence_gets_the_resource_and_debug_is_still_refused() {
    let setup = setup(EvidenceTrust::InsecureAcceptSimulated);
    let secret = client_with(&setup, false, true)
        .get_resource("kbs:///default/key/1")
        .await
        .unwrap();
    assert_eq!(&secret[..], b"sim-secret");
    let err = client_with(&setup, true, true)
        .get_resource("kbs:///default/key/1")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, KbsClientError::Refused { kind, detail, .. } if kind == "AttestationDenied" && detail.contains("debug is enabled")),
        "{err:?}"
    );
}

/// guest-components-shaped evidence whose measurement was changed after signing.
struct Tampered(SimSnp);

impl EvidenceProvider for Tampered {
    fn tee(&self) -> &'static str {
        "snp"
    }

    fn evidence(
        &self,
        binding: &[u8; 48],
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let mut evidence = self.0.evidence(binding)?;
        evidence["attestation_report"]["measurement"][0] = serde_json::json!(0x5b);
        Ok(evidence)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_guest_components_evidence_is_refused() {
    let setup = setup(EvidenceTrust::InsecureAcceptSimulated);
    let mut config = KbsClientConfig::new(
        format!("http://{}", setup.server.local_addr()),
        BrokerTrust::InsecurePlainHttp,
    );
    config.attempts = 1;
    let client = KbsClient::new(
        config,
        Arc::new(Tampered(SimSnp {
            sp: Arc::clone(&setup.sp),
            debug: false,
            host_data: [0; 32],
            guest_components: true,
        })),
    )
    .unwrap();
    let err = client
        .get_resource("kbs:///default/key/1")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, KbsClientError::Refused { status: 401, kind, detail, .. } if kind == "AttestationFailed" && detail.contains("signature")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_snp_refusals_explain_which_check_failed() {
    let setup = setup(EvidenceTrust::InsecureAcceptSimulated);
    // Debug guest.
    let err = client(&setup, true)
        .get_resource("kbs:///default/key/1")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, KbsClientError::Refused { kind, detail, .. } if kind == "AttestationDenied" && detail.contains("debug is enabled")),
        "{err:?}"
    );
    // Measurement no longer a reference value.
    setup
        .broker
        .set_reference_values(&common::refs(&["00"]))
        .unwrap();
    let err = client(&setup, false)
        .get_resource("kbs:///default/key/1")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, KbsClientError::Refused { kind, detail, .. } if kind == "AttestationDenied" && detail.contains("measurement is not a reference value")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_without_the_sim_option_refuses_sim_evidence() {
    let setup = setup(EvidenceTrust::HardwareOnly);
    let err = client(&setup, false)
        .get_resource("kbs:///default/key/1")
        .await
        .unwrap_err();
    match err {
        KbsClientError::Refused {
            step,
            status,
            kind,
            detail,
        } => {
            assert_eq!(
                (step, status, kind.as_str()),
                ("attest", 401, "AttestationFailed")
            );
            assert!(detail.contains("signature"), "{detail}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn hardware_only_set_refuses_a_verifier_with_sim_roots() {
    let sim_dir = tempfile::tempdir().unwrap();
    let sp = SimAmdSp::open_or_create_with_published_test_roots(sim_dir.path()).unwrap();
    let snp = SnpVerifier::with_amd_roots()
        .unwrap()
        .insecure_add_simulated_root(sp.ark_der(), sp.ask_der())
        .unwrap()
        .with_min_tcb(SnpProduct::Genoa, SIM_DEFAULT_TCB);
    let mut set = VerifierSet::new(EvidenceTrust::HardwareOnly);
    assert!(set.insert(Tee::Snp, Box::new(snp)).is_err());
    assert!(!set.accepts(Tee::Snp));
}

/// The guest's real path: the sim-snp attester talking to tee-sim's device server, wrapped for
/// the KBS client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_device_attester_through_the_kbs_client() {
    use tsuba_attestation_agent::attester::SimDeviceAttester;
    use tsuba_attestation_agent::kbs::AttesterEvidence;
    use tsuba_tee_sim::{SimLaunch, SnpLaunch};

    let setup = setup(EvidenceTrust::InsecureAcceptSimulated);
    let (guest_end, host_end) = std::os::unix::net::UnixStream::pair().unwrap();
    host_end.set_nonblocking(true).unwrap();
    let host_end = tokio::net::UnixStream::from_std(host_end).unwrap();
    let launch = SimLaunch::Snp {
        sp: Arc::clone(&setup.sp),
        launch: SnpLaunch::new(MEASUREMENT, [0; 32]),
    };
    let device = tokio::spawn(tsuba_tee_sim::serve(host_end, launch));
    let attester =
        tokio::task::spawn_blocking(move || SimDeviceAttester::from_stream(Box::new(guest_end)))
            .await
            .unwrap()
            .unwrap();
    let config = KbsClientConfig::new(
        format!("http://{}", setup.server.local_addr()),
        BrokerTrust::InsecurePlainHttp,
    );
    let client =
        KbsClient::new(config, Arc::new(AttesterEvidence::new(Arc::new(attester)))).unwrap();
    let secret = client.get_resource("kbs:///default/key/1").await.unwrap();
    assert_eq!(&secret[..], b"sim-secret");
    drop(client);
    device.abort();
}

/// Two initdata documents that differ only in their `[data]`.
fn initdata(note: &str) -> Initdata {
    Initdata::parse(&format!(
        "version = \"0.1.0\"\nalgorithm = \"sha384\"\n\n[data]\n\"note\" = \"{note}\"\n"
    ))
    .unwrap()
}

/// A sim-snp guest launched with `launched_with` bound into HOST_DATA (zeros when `None`),
/// presenting `presents` in its attestation requests.
fn initdata_client(
    setup: &Setup,
    launched_with: Option<&Initdata>,
    presents: Option<Initdata>,
) -> KbsClient {
    let mut config = KbsClientConfig::new(
        format!("http://{}", setup.server.local_addr()),
        BrokerTrust::InsecurePlainHttp,
    );
    config.attempts = 1;
    config.init_data = presents;
    KbsClient::new(
        config,
        Arc::new(SimSnp {
            sp: Arc::clone(&setup.sp),
            debug: false,
            host_data: launched_with.map_or([0; 32], |doc| *doc.host_data().as_bytes()),
            guest_components: false,
        }),
    )
    .unwrap()
}

fn refused(err: &KbsClientError) -> (&'static str, u16, &str, &str) {
    match err {
        KbsClientError::Refused {
            step,
            status,
            kind,
            detail,
        } => (*step, *status, kind.as_str(), detail.as_str()),
        other => panic!("not a refusal: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_and_the_attestation_policy_see_the_initdata_the_evidence_binds() {
    let setup = setup(EvidenceTrust::InsecureAcceptSimulated);
    let (a, b) = (initdata("a"), initdata("b"));
    setup
        .broker
        .set_policy(
            PolicyKind::Attestation,
            r#"package policy
default allow := false
allow if {
    input.claims.report_data == input.expected_report_data
    input.init_data == input.claims.host_data
    input.init_data_claims.note == "a"
}
reasons contains "initdata note is not a" if not allow
"#,
        )
        .unwrap();

    let token = initdata_client(&setup, Some(&a), Some(a.clone()))
        .attest()
        .await
        .unwrap();
    let claims = common::token_payload(&token);
    let evidence = common::annotated_evidence(&claims);
    assert_eq!(evidence["init_data"], a.host_data().to_hex());
    assert_eq!(
        evidence["init_data_claims"],
        serde_json::json!({"note": "a"})
    );
    assert_eq!(evidence["snp"]["host_data"], a.host_data().to_hex());

    // A guest launched with, and presenting, another document: the policy sees its data.
    let err = initdata_client(&setup, Some(&b), Some(b.clone()))
        .attest()
        .await
        .unwrap_err();
    let (step, status, kind, detail) = refused(&err);
    assert_eq!((step, status, kind), ("attest", 401, "AttestationDenied"));
    assert!(detail.contains("initdata note is not a"), "{detail}");

    // A guest presenting no document: the claims are null, so this policy refuses it.
    let err = initdata_client(&setup, Some(&a), None)
        .attest()
        .await
        .unwrap_err();
    assert_eq!(refused(&err).2, "AttestationDenied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_policy_requiring_one_initdata_releases_only_to_guests_launched_with_it() {
    let setup = setup(EvidenceTrust::InsecureAcceptSimulated);
    let (a, b) = (initdata("a"), initdata("b"));
    setup
        .broker
        .set_policy(
            PolicyKind::Resource,
            &format!(
                r#"package policy
default allow := false
allow if input.submods.cpu0["ear.veraison.annotated-evidence"].init_data == "{}"
reasons contains "the guest was not launched with the required initdata" if not allow
"#,
                a.host_data().to_hex()
            ),
        )
        .unwrap();

    let secret = initdata_client(&setup, Some(&a), Some(a.clone()))
        .get_resource("kbs:///default/key/1")
        .await
        .unwrap();
    assert_eq!(&secret[..], b"sim-secret");

    for (launched_with, presents) in [(Some(&b), Some(b.clone())), (Some(&a), None), (None, None)] {
        let err = initdata_client(&setup, launched_with, presents)
            .get_resource("kbs:///default/key/1")
            .await
            .unwrap_err();
        let (step, status, kind, detail) = refused(&err);
        assert_eq!((step, status, kind), ("resource", 401, "PolicyDeny"));
        assert!(
            detail.contains("not launched with the required initdata"),
            "{detail}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initdata_that_is_not_the_one_bound_at_launch_is_refused_naming_host_data() {
    let setup = setup(EvidenceTrust::InsecureAcceptSimulated);
    let (a, b) = (initdata("a"), initdata("b"));
    // Launched with A, presents B (a host swapping the document after launch).
    let err = initdata_client(&setup, Some(&a), Some(b.clone()))
        .get_resource("kbs:///default/key/1")
        .await
        .unwrap_err();
    let (step, status, kind, detail) = refused(&err);
    assert_eq!((step, status, kind), ("attest", 401, "InitDataMismatch"));
    assert!(
        detail.contains("init-data does not match the HOST_DATA bound into the evidence"),
        "{detail}"
    );
    // Launched without initdata (HOST_DATA zero), presents one.
    let err = initdata_client(&setup, None, Some(a.clone()))
        .attest()
        .await
        .unwrap_err();
    assert_eq!(refused(&err).2, "InitDataMismatch");
    // The same document with one byte more is another document.
    let spaced = Initdata::parse(&format!("{}\n", a.as_str())).unwrap();
    let err = initdata_client(&setup, Some(&a), Some(spaced))
        .attest()
        .await
        .unwrap_err();
    assert_eq!(refused(&err).2, "InitDataMismatch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initdata_too_large_to_carry_in_a_token_gets_no_token() {
    let setup = setup(EvidenceTrust::InsecureAcceptSimulated);
    // Valid and bound, but its [data] table would make a token the broker refuses as a bearer
    // token (64 KiB): none is issued, and the guest is told why.
    let big = initdata(&"x".repeat(60 * 1024));
    let err = initdata_client(&setup, Some(&big), Some(big.clone()))
        .attest()
        .await
        .unwrap_err();
    let (step, status, kind, detail) = refused(&err);
    assert_eq!((step, status, kind), ("attest", 413, "TokenTooLarge"));
    assert!(detail.contains("more than the 65536"), "{detail}");
    // A modest document still attests.
    let small = initdata(&"x".repeat(1024));
    initdata_client(&setup, Some(&small), Some(small.clone()))
        .attest()
        .await
        .unwrap();
}
