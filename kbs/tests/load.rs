//! Load: concurrent clients each doing full handshakes (auth, attest with sim-SNP evidence, one
//! resource fetch) against a broker on loopback, for a fixed time; every handshake must succeed.
//! Not part of the default run (`#[ignore]`); `bench/kbs-load.sh` runs it in release mode and
//! prints handshakes/s and latency percentiles. Knobs: KBS_LOAD_CLIENTS (64), KBS_LOAD_SECS (30).

#![allow(
    clippy::unwrap_used,
    reason = "load test: a failed unwrap is a failed run"
)]
#![allow(
    clippy::print_stdout,
    reason = "the load test reports its figures on stdout"
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use tsuba_attestation_agent::kbs::{BrokerTrust, EvidenceProvider, KbsClient, KbsClientConfig};
use tsuba_kbs::{
    AdminAuth, Broker, BrokerConfig, EvidenceTrust, HttpLimits, ResourcePath, SnpProduct,
    SnpVerifier, Tee, Transport, VerifierSet, router, serve,
};
use tsuba_protocols::evidence::ReportData;
use tsuba_tee_sim::{SIM_DEFAULT_TCB, SimAmdSp, SnpReportRequest};

const MEASUREMENT: [u8; 48] = [0x42; 48];

struct SimSnp(Arc<SimAmdSp>);

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
        let signed = self.0.report(&SnpReportRequest::new(
            MEASUREMENT,
            [0; 32],
            ReportData(report_data),
        ))?;
        Ok(serde_json::json!({
            "report": STANDARD.encode(&signed.report),
            "cert_table": STANDARD.encode(&signed.cert_table),
        }))
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) * p + 50) / 100;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "load test: run with bench/kbs-load.sh (release mode)"]
async fn full_handshakes_under_load() {
    let clients = env_or("KBS_LOAD_CLIENTS", 64);
    let secs = env_or("KBS_LOAD_SECS", 30);
    let sim_dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let sp = Arc::new(SimAmdSp::open_or_create_with_published_test_roots(sim_dir.path()).unwrap());
    let snp = SnpVerifier::with_amd_roots()
        .unwrap()
        .insecure_add_simulated_root(sp.ark_der(), sp.ask_der())
        .unwrap()
        .with_min_tcb(SnpProduct::Genoa, SIM_DEFAULT_TCB);
    let mut verifiers = VerifierSet::new(EvidenceTrust::InsecureAcceptSimulated);
    verifiers.insert(Tee::Snp, Box::new(snp)).unwrap();
    let mut config = BrokerConfig::new(
        state.path().into(),
        AdminAuth::new(common::admin_key().verifying_key()),
    );
    config.insecure_release_to_simulated = true;
    let broker = Arc::new(Broker::new(config, verifiers).unwrap());
    broker
        .set_reference_values(&common::refs(&[&hex::encode(MEASUREMENT)]))
        .unwrap();
    broker
        .set_resource(&ResourcePath::parse("default/key/1").unwrap(), &[7u8; 32])
        .unwrap();
    let server = serve(
        "127.0.0.1:0".parse().unwrap(),
        Transport::InsecurePlainHttpLoopbackOnly,
        router(Arc::clone(&broker), HttpLimits::default()),
    )
    .unwrap();
    let url = format!("http://{}", server.local_addr());

    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let url = url.clone();
        let sp = Arc::clone(&sp);
        tasks.push(tokio::spawn(async move {
            let mut config = KbsClientConfig::new(url, BrokerTrust::InsecurePlainHttp);
            config.attempts = 1;
            let client = KbsClient::new(config, Arc::new(SimSnp(sp))).unwrap();
            let mut latencies = Vec::new();
            let mut errors = Vec::new();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                // attest() always runs a fresh RCAR; the fetch then uses its token.
                let result = match client.attest().await {
                    Ok(_) => client
                        .get_resource("kbs:///default/key/1")
                        .await
                        .map(|s| s.len()),
                    Err(err) => Err(err),
                };
                match result {
                    Ok(32) => latencies.push(t0.elapsed()),
                    Ok(other) => errors.push(format!("wrong resource length {other}")),
                    Err(err) => errors.push(format!("{err:#}")),
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    for task in tasks {
        let (l, e) = task.await.unwrap();
        latencies.extend(l);
        errors.extend(e);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    println!(
        "kbs-load: clients={clients} secs={:.1} handshakes={} errors={} rate={rate:.0}/s p50={:.2}ms p99={:.2}ms max={:.2}ms",
        elapsed.as_secs_f64(),
        latencies.len(),
        errors.len(),
        percentile(&latencies, 50).as_secs_f64() * 1e3,
        percentile(&latencies, 99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    assert!(!latencies.is_empty());
}

/// Cost of the pieces of one handshake, one at a time (for profiling the figures above).
#[test]
#[ignore = "micro-measurement: run in release with --ignored --nocapture"]
fn handshake_piece_costs() {
    use tsuba_kbs::{BindingDigest, Verifier};

    let sim_dir = tempfile::tempdir().unwrap();
    let sp = Arc::new(SimAmdSp::open_or_create_with_published_test_roots(sim_dir.path()).unwrap());
    let snp = SnpVerifier::with_amd_roots()
        .unwrap()
        .insecure_add_simulated_root(sp.ark_der(), sp.ask_der())
        .unwrap()
        .with_min_tcb(SnpProduct::Genoa, SIM_DEFAULT_TCB);
    let binding = BindingDigest::compute("nonce", &serde_json::json!({"kty": "EC"}), "");
    let provider = SimSnp(Arc::clone(&sp));
    let rounds = 200u32;
    let t0 = Instant::now();
    let mut evidence = Value::Null;
    for _ in 0..rounds {
        evidence = provider.evidence(binding.as_bytes()).unwrap();
    }
    let sign = t0.elapsed() / rounds;
    let t0 = Instant::now();
    for _ in 0..rounds {
        snp.verify(&evidence, &binding, std::time::SystemTime::now())
            .unwrap();
    }
    let verify = t0.elapsed() / rounds;
    let state = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::new(
        state.path().into(),
        AdminAuth::new(common::admin_key().verifying_key()),
    );
    config.insecure_release_to_simulated = true;
    let broker = Broker::new(config, VerifierSet::new(EvidenceTrust::HardwareOnly)).unwrap();
    let t0 = Instant::now();
    for _ in 0..rounds {
        let _ = broker.resource(
            None,
            Some("Bearer x.y.z"),
            &ResourcePath::parse("a/b/c").unwrap(),
        );
    }
    let token_reject = t0.elapsed() / rounds;
    println!(
        "kbs-pieces: sim-snp report {sign:?}, snp verify {verify:?}, bad-token resource call {token_reject:?}"
    );
}
