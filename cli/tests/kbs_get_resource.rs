//! `tsuba kbs get-resource` against `tsuba kbs serve` on loopback: it attests with tee-sim's
//! simulated SNP and TDX (through tee-sim's device server) and with Trustee's unsigned sample
//! evidence (only with its insecure flag), and prints or writes the resource. Refusals carry
//! the broker's reason: a measurement that is not a reference value, a TDX boot whose command
//! line differs, a resource policy that denies, a broker that does not take sample evidence.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failure is a test failure"
)]

mod encrypt_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use encrypt_support::{Broker, SimDevice, tsuba};
use sha2::{Digest, Sha384};
use tsuba_protocols::evidence::ccel::TdvfBoot;
use tsuba_tee_sim::TdxLaunch;

const MEASUREMENT: [u8; 48] = [0x5a; 48];
const MRTD: [u8; 48] = [0x6d; 48];
const SECRET: &[u8] = b"the sealed secret\n\x00\xff";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `tsuba kbs get-resource --url <broker> --insecure-plain-http <args...>`.
fn get(broker: &Broker, args: &[&str]) -> Output {
    let url = broker.url();
    let mut all = vec![
        "kbs",
        "get-resource",
        "--url",
        &url,
        "--insecure-plain-http",
    ];
    all.extend_from_slice(args);
    tsuba(&all)
}

/// `get` with the simulated evidence of `device`.
fn get_sim(broker: &Broker, attester: &str, device: &SimDevice, args: &[&str]) -> Output {
    let socket = device.socket.display().to_string();
    let mut all = vec!["--attester", attester, "--sim-device", &socket];
    all.extend_from_slice(args);
    get(broker, &all)
}

/// The call failed, printed nothing on stdout, and said `reason` on stderr.
fn assert_refused(out: &Output, reason: &str) {
    assert!(!out.status.success(), "{}", stderr(out));
    assert!(out.stdout.is_empty());
    assert!(stderr(out).contains(reason), "{}", stderr(out));
}

fn store(broker: &Broker, dir: &Path, path: &str, bytes: &[u8]) {
    let file = dir.join("resource-in");
    std::fs::write(&file, bytes).unwrap();
    broker.admin(&["set-resource", path, &file.display().to_string()]);
}

#[test]
fn sim_snp_evidence_gets_the_resource_to_stdout_or_a_new_private_file() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let rt = runtime();
    let broker = Broker::start(t, &[&hex::encode(MEASUREMENT)]);
    store(&broker, t, "default/test/one", SECRET);
    let good = SimDevice::start(&rt, &broker.sim_dir, &t.join("good.sock"), MEASUREMENT);
    let bad = SimDevice::start(&rt, &broker.sim_dir, &t.join("bad.sock"), [0x11; 48]);

    // To stdout, byte for byte; the short and the kbs:/// forms name the same resource.
    for resource in ["default/test/one", "kbs:///default/test/one"] {
        let out = get_sim(&broker, "sim-snp", &good, &[resource]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(out.stdout, SECRET);
    }

    // To a new file, readable by its owner only, and never over an existing one.
    let file = t.join("secret.out");
    let file_arg = file.display().to_string();
    let args = ["default/test/one", "--out", &file_arg];
    let out = get_sim(&broker, "sim-snp", &good, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read(&file).unwrap(), SECRET);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    std::fs::write(&file, b"kept").unwrap();
    let out = get_sim(&broker, "sim-snp", &good, &args);
    assert_refused(&out, "must not exist yet");
    assert_eq!(std::fs::read(&file).unwrap(), b"kept");

    // A launch whose measurement is not a reference value: the broker's reason, no bytes.
    let out = get_sim(&broker, "sim-snp", &bad, &["default/test/one"]);
    assert_refused(&out, "measurement is not a reference value");

    // A resource the policy denies: refused with the policy's own reason; others still pass.
    store(&broker, t, "default/test/production", b"not for this guest");
    let policy = t.join("resource.rego");
    std::fs::write(
        &policy,
        r#"package policy

default allow := false

allow if {
    data.plugin == "resource"
    data["resource-path"][2] != "production"
}

reasons contains "production resources go to production guests only" if {
    data["resource-path"][2] == "production"
}
"#,
    )
    .unwrap();
    broker.admin(&["set-policy", "resource", &policy.display().to_string()]);
    let out = get_sim(&broker, "sim-snp", &good, &["default/test/production"]);
    assert_refused(&out, "access denied by policy");
    assert_refused(&out, "production resources go to production guests only");
    let out = get_sim(&broker, "sim-snp", &good, &["default/test/one"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, SECRET);

    // A device that simulates SNP is not taken for TDX.
    let out = get_sim(&broker, "sim-tdx", &good, &["default/test/one"]);
    assert_refused(&out, "simulates sim-snp, not sim-tdx");
}

fn boot(cmdline: &str) -> TdvfBoot {
    TdvfBoot {
        kernel_authenticode: Sha384::digest(b"the released kernel").into(),
        kernel_len: 19,
        initrd: Some(Sha384::digest(b"the released initrd").into()),
        cmdline: Some(cmdline.into()),
    }
}

#[test]
fn sim_tdx_evidence_with_its_event_log_gets_the_resource_and_another_cmdline_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let rt = runtime();
    let genuine = boot("console=hvc0 tsuba.agent.kbs=https://kbs");
    let rtmr = genuine.event_log().replay();
    let refs = serde_json::json!({
        "measurement": [hex::encode(MRTD)],
        "tdx_rtmr1": [hex::encode(rtmr[1])],
        "tdx_rtmr2": [hex::encode(rtmr[2])],
    });
    let broker = Broker::start_with(t, &refs, &[]);
    store(&broker, t, "default/test/one", SECRET);
    let good = SimDevice::start_tdx(
        &rt,
        &broker.sim_dir,
        &t.join("tdx.sock"),
        TdxLaunch::new(MRTD, [0; 48]).with_boot(&genuine),
    );
    let other = SimDevice::start_tdx(
        &rt,
        &broker.sim_dir,
        &t.join("other.sock"),
        TdxLaunch::new(MRTD, [0; 48]).with_boot(&boot("console=hvc0 init=/bin/sh")),
    );

    let out = get_sim(&broker, "sim-tdx", &good, &["default/test/one"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, SECRET);

    // The genuine firmware (same MRTD) with another command line: refused naming RTMR2.
    let out = get_sim(&broker, "sim-tdx", &other, &["default/test/one"]);
    assert_refused(&out, "rtmr2");
}

#[test]
fn sample_evidence_needs_its_insecure_flag_and_a_broker_that_takes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // Trustee's sample verifier reports `abcde` as the measurement when none is claimed.
    let taking = Broker::start_with(
        &t.join("taking"),
        &serde_json::json!({ "measurement": ["abcde"] }),
        &["--insecure-accept-sample-evidence"],
    );
    store(&taking, t, "default/test/one", SECRET);

    // Without the flag, refused before anything is sent.
    let out = get(&taking, &["--attester", "sample", "default/test/one"]);
    assert_refused(&out, "add --insecure-sample-attester");

    let out = get(
        &taking,
        &[
            "--attester",
            "sample",
            "--insecure-sample-attester",
            "default/test/one",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, SECRET);

    // A claimed launch digest that is not a reference value.
    let out = get(
        &taking,
        &[
            "--attester",
            "sample",
            "--insecure-sample-attester",
            "--sample-launch-digest",
            "ffff",
            "default/test/one",
        ],
    );
    assert_refused(&out, "measurement is not a reference value");

    // A broker not started to take sample evidence refuses it.
    let refusing = Broker::start(&t.join("refusing"), &["abcde"]);
    store(&refusing, t, "default/test/one", SECRET);
    let out = get(
        &refusing,
        &[
            "--attester",
            "sample",
            "--insecure-sample-attester",
            "default/test/one",
        ],
    );
    assert_refused(&out, "sample");
}

#[test]
fn an_https_broker_needs_a_ca_or_a_pin() {
    let out = tsuba(&[
        "kbs",
        "get-resource",
        "--url",
        "https://127.0.0.1:1",
        "--attester",
        "sample",
        "--insecure-sample-attester",
        "default/test/one",
    ]);
    assert_refused(&out, "needs --ca or --pin");
}
