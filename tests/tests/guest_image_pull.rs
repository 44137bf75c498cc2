//! The headline flow, end to end under real QEMU: a sim-snp guest with a network attests to the
//! key broker (`tsuba kbs serve`), pulls an image encrypted in the key-provider form from the
//! distribution registry, gets the layer keys' key-encryption key from the broker and unpacks the
//! image in guest memory. The host only ever holds ciphertext: the KEK goes from the owner to the
//! broker, and from the broker to the guest as JWE to the guest's own key.
//!
//! Before that, the host answers at the broker's address with a working broker of its own (its
//! own certificate, accepting this guest's evidence): the guest, which knows its broker by a
//! measured key pin, refuses it in the TLS handshake, before any evidence or request.
//!
//! Then the same guest with one more (harmless) kernel argument: another launch measurement,
//! which the broker refuses, and the pull fails with the broker's reason.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a panic is the failure report"
)]

use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tsuba_image_rs::oci::{self, ImageConfig, Manifest, RootFs};
use tsuba_image_rs::{Digest, OciLayout};
use tsuba_shim::{AgentClientError, Sandbox};
mod common;

use common::{
    Broker, BrokerPki, HOST_FROM_GUEST, KEY_ID, Registry, descriptor, free_port, hex_of,
    networked_config, permissive_initdata, rand_bytes, run, tsuba_bin,
};
use tsuba_tests::{AGENT_TIMEOUT, Artefacts, assert_nothing_left, options_in};
use tsuba_vmm_tee::{LaunchConfig, LaunchOptions, launch_reference_values};

/// A pull over user networking under TCG on a loaded machine: attestation, two small layers.
const PULL_TIMEOUT: Duration = Duration::from_secs(120);
/// A gzip layer holding `files`; returns (blob, diff_id).
fn gzip_layer(files: &[(String, Vec<u8>)]) -> (Vec<u8>, Digest) {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, name, &data[..]).unwrap();
    }
    let tar = tar.into_inner().unwrap();
    let diff_id = Digest::of(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    (gz.finish().unwrap(), diff_id)
}

/// Writes a plaintext image of `layers` (each a list of files) into a new OCI layout at `dir`,
/// tagged `v1`.
fn write_plain_image(dir: &Path, layers: &[Vec<(String, Vec<u8>)>]) {
    let layout = OciLayout::create(dir).unwrap();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for files in layers {
        let (blob, diff_id) = gzip_layer(files);
        let (digest, size) = layout.write_blob(&blob).unwrap();
        descs.push(descriptor(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            digest,
            size,
        ));
        diff_ids.push(diff_id);
    }
    let mut extra = serde_json::Map::new();
    extra.insert(
        "architecture".into(),
        oci::Platform::current().architecture.into(),
    );
    extra.insert("os".into(), "linux".into());
    let config = ImageConfig {
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids,
        },
        extra,
    };
    let (config_digest, config_size) = layout.write_json(&config).unwrap();
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_TYPE_MANIFEST.into()),
        config: descriptor(oci::MEDIA_TYPE_CONFIG, config_digest, config_size),
        layers: descs,
        annotations: Default::default(),
        extra: Default::default(),
    };
    let (digest, size) = layout.write_json(&manifest).unwrap();
    layout
        .set_ref("v1", descriptor(oci::MEDIA_TYPE_MANIFEST, digest, size))
        .unwrap();
}

type PullResult = Result<tsuba_protocols::agent::PullImageResponse, AgentClientError>;

async fn boot_and_pull(
    config: &LaunchConfig,
    options: &LaunchOptions,
    image: &str,
) -> (PullResult, String) {
    let sandbox = Sandbox::start(config, options, AGENT_TIMEOUT)
        .await
        .unwrap();
    let result = timed_pull(&sandbox, image).await;
    let console = sandbox.vm().console_tail();
    sandbox.stop().await.unwrap();
    (result, console)
}

async fn timed_pull(sandbox: &Sandbox, image: &str) -> PullResult {
    let started = Instant::now();
    let result = sandbox.agent().pull_image(image, PULL_TIMEOUT).await;
    // For docs/performance.md: attestation + pull + decrypt + unpack, as the host sees it.
    #[allow(
        clippy::print_stderr,
        reason = "a figure for the test log (--nocapture)"
    )]
    {
        eprintln!("Image.Pull answered in {:?}", started.elapsed());
    }
    result
}

/// The ttrpc status of a pull refused with `code`.
fn refusal(result: PullResult, console: &str, code: ttrpc::Code) -> ttrpc::proto::Status {
    match result {
        Err(AgentClientError::Rpc {
            source: ttrpc::Error::RpcStatus(status),
            ..
        }) => {
            assert_eq!(status.code(), code, "{status:?}\n{console}");
            status
        }
        other => panic!("the pull must be refused, got {other:?}\n{console}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_attests_pulls_and_decrypts_its_image_and_a_tampered_launch_is_refused() {
    let a = Artefacts::from_env();
    let work = tempfile::tempdir().unwrap();
    let runs = tempfile::tempdir().unwrap();
    let sim_state = work.path().join("tee-sim");
    let registry = Registry::start(work.path());
    let real_pki = BrokerPki::generate(work.path(), "real");
    let broker_port = free_port();
    let initdata = permissive_initdata(work.path(), broker_port, &real_pki.pin(), registry.port);

    // The owner's side: a two-layer image, encrypted in the key-provider form, pushed.
    let files = |layer: usize, n: usize| -> Vec<(String, Vec<u8>)> {
        (0..n)
            .map(|i| {
                (
                    format!("app/layer{layer}/file{i}.txt"),
                    format!("layer {layer} file {i}\n").repeat(100).into_bytes(),
                )
            })
            .collect()
    };
    let layers = [files(0, 5), files(1, 3)];
    let expected_entries: u64 = layers.iter().map(|l| l.len() as u64).sum();
    let plain = work.path().join("plain");
    write_plain_image(&plain, &layers);
    let kek = work.path().join("kek.bin");
    std::fs::write(&kek, rand_bytes()).unwrap();
    let encrypted = work.path().join("encrypted");
    run(Command::new(tsuba_bin())
        .args(["image", "encrypt", "--from"])
        .arg(format!("oci:{}:v1", plain.display()))
        .arg("--to")
        .arg(format!("oci:{}:v1", encrypted.display()))
        .args(["--key-id", KEY_ID, "--kek"])
        .arg(&kek));
    let pushed = format!("127.0.0.1:{}/e2e/app:v1", registry.port);
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", encrypted.display()))
        .arg(format!("docker://{pushed}")));
    let manifest_bytes = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{pushed}"),
    ]));
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes).unwrap();
    assert!(
        manifest
            .layers
            .iter()
            .all(|l| l.media_type.ends_with("+encrypted")),
        "the registry holds only encrypted layers"
    );

    // The launch the guest makes, and its one reference measurement.
    let good_dir = tempfile::tempdir().unwrap();
    let good = networked_config(&a, good_dir.path(), "", Some(&initdata));
    let reference = launch_reference_values(&good).unwrap().snp.unwrap();
    let refs = work.path().join("refs.json");
    std::fs::write(
        &refs,
        serde_json::json!({ "measurement": [hex_of(&reference.launch_digest.0)] }).to_string(),
    )
    .unwrap();
    let policy = work.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let provision = |broker: &Broker, kek: &Path| {
        broker.admin(&["set-resource", "default/image-kek/e2e"], Some(kek));
        broker.admin(
            &["set-resource", "default/security-policy/e2e"],
            Some(&policy),
        );
        broker.admin(&["set-reference-values"], Some(&refs));
    };

    // First the host answers at the broker's address itself: a working broker of its own, with
    // its own certificate, that would accept this guest's evidence and release a policy and a
    // key of the host's choosing.
    let fake_pki = BrokerPki::generate(work.path(), "fake");
    let fake = Broker::start(
        &work.path().join("fake"),
        broker_port,
        &fake_pki,
        &sim_state,
    );
    let host_kek = work.path().join("host-kek.bin");
    std::fs::write(&host_kek, rand_bytes()).unwrap();
    provision(&fake, &host_kek);

    let options = LaunchOptions {
        tee_sim_state: sim_state.clone(),
        ..options_in(runs.path())
    };
    let image = format!("{HOST_FROM_GUEST}:{}/e2e/app:v1", registry.port);
    let sandbox = Sandbox::start(&good, &options, AGENT_TIMEOUT)
        .await
        .unwrap();
    let result = timed_pull(&sandbox, &image).await;
    let console = sandbox.vm().console_tail();
    let status = refusal(result, &console, ttrpc::Code::UNAUTHENTICATED);
    assert!(
        status.message.contains("is not the trusted key broker")
            && status.message.contains(&format!(
                "no key matching the measured pin {}",
                real_pki.pin()
            )),
        "the refusal says why: {}",
        status.message
    );
    // Refused in the TLS handshake: the impostor never saw a protocol request, so no evidence.
    assert_eq!(fake.auth_requests(), 0);
    fake.stop();

    // The real broker at the same address: the same guest attests, pulls, decrypts, unpacks.
    let real = Broker::start(
        &work.path().join("real"),
        broker_port,
        &real_pki,
        &sim_state,
    );
    provision(&real, &kek);
    let result = timed_pull(&sandbox, &image).await;
    let console = sandbox.vm().console_tail();
    sandbox.stop().await.unwrap();
    let pulled = result.unwrap_or_else(|e| panic!("pull failed: {e:?}\nconsole:\n{console}"));
    assert_eq!(real.auth_requests(), 1);
    assert_eq!(
        pulled.manifest_digest,
        Digest::of(&manifest_bytes).to_string()
    );
    assert_eq!(pulled.layers, 2);
    assert_eq!(pulled.entries, expected_entries);
    let content_bytes: u64 = layers
        .iter()
        .flatten()
        .map(|(_, data)| data.len() as u64)
        .sum();
    assert!(
        pulled.unpacked_bytes > content_bytes,
        "tar bytes {} cover the {content_bytes} content bytes",
        pulled.unpacked_bytes
    );
    // The failed pull's folder was removed: this pull is the guest's second.
    assert_eq!(pulled.rootfs, "/run/tsuba/images/1/rootfs");
    assert!(console.contains("network up"), "{console}");
    assert!(
        !console.contains("layer 0 file 0"),
        "no content on the host-visible console"
    );

    // One extra kernel argument: another measurement, refused by the broker before any key.
    let tampered_dir = tempfile::tempdir().unwrap();
    let tampered = networked_config(
        &a,
        tampered_dir.path(),
        "tsuba.e2e=tampered",
        Some(&initdata),
    );
    assert_ne!(
        launch_reference_values(&tampered)
            .unwrap()
            .snp
            .unwrap()
            .launch_digest
            .0,
        reference.launch_digest.0
    );
    let (result, console) = boot_and_pull(&tampered, &options, &image).await;
    let status = refusal(result, &console, ttrpc::Code::PERMISSION_DENIED);
    assert!(
        status
            .message
            .contains("measurement is not a reference value"),
        "the broker's reason reaches the host: {}",
        status.message
    );

    real.stop();
    drop(registry);
    assert_nothing_left(runs.path());
}

/// A sim-tdx launch config with networking and `extra` kernel arguments, in `dir`. Debian's
/// plain OVMF carries TDX metadata: it is both what boots and what is measured.
fn networked_tdx_config(a: &Artefacts, dir: &Path, extra: &str, initdata: &Path) -> LaunchConfig {
    let toml = format!(
        "initdata = {initdata:?}\nmode = \"sim-tdx\"\nkernel = {kernel:?}\ninitrd = {initrd:?}\ncmdline = {extra:?}\n\
         vcpus = 1\nmemory_mib = 256\n[firmware]\nboot = {fw:?}\nmeasured = {fw:?}\n\
         [network]\nbackend = \"user\"\n",
        kernel = a.kernel(),
        initrd = a.initrd(),
        fw = a.ovmf,
    );
    let path = dir.join("launch.toml");
    std::fs::write(&path, toml).unwrap();
    LaunchConfig::from_file(&path).unwrap()
}

/// TDX binds the kernel, initrd and command line through RTMR1 and RTMR2, not MRTD: a guest
/// booted from the genuine firmware with another command line has the same MRTD, and the
/// broker must still refuse it, saying which register differs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sim_tdx_guest_with_another_command_line_but_the_same_firmware_is_refused_naming_rtmr2() {
    let a = Artefacts::from_env();
    let work = tempfile::tempdir().unwrap();
    let runs = tempfile::tempdir().unwrap();
    let sim_state = work.path().join("tee-sim");
    let pki = BrokerPki::generate(work.path(), "tdx");
    let port = free_port();
    // No registry listens at port 1: a launch the broker accepts gets its policy, then fails at
    // the registry; that failure is the proof that attestation passed.
    let initdata = permissive_initdata(work.path(), port, &pki.pin(), 1);
    let good_dir = tempfile::tempdir().unwrap();
    let good = networked_tdx_config(&a, good_dir.path(), "", &initdata);
    let tampered_dir = tempfile::tempdir().unwrap();
    let tampered = networked_tdx_config(&a, tampered_dir.path(), "tsuba.e2e=tampered", &initdata);
    let reference = launch_reference_values(&good).unwrap().tdx.unwrap();
    let other = launch_reference_values(&tampered).unwrap().tdx.unwrap();
    let boot = reference.boot.as_ref().unwrap();
    assert_eq!(other.mrtd.0, reference.mrtd.0, "the firmware is the same");
    assert_eq!(
        other.boot.as_ref().unwrap().rtmr1,
        boot.rtmr1,
        "so is the kernel"
    );
    assert_ne!(other.boot.as_ref().unwrap().rtmr2, boot.rtmr2);

    let broker = Broker::start(&work.path().join("kbs"), port, &pki, &sim_state);
    let policy = work.path().join("policy.json");
    std::fs::write(&policy, r#"{"default":[{"type":"reject"}]}"#).unwrap();
    broker.admin(
        &["set-resource", "default/security-policy/e2e"],
        Some(&policy),
    );
    let refs = work.path().join("refs.json");
    std::fs::write(
        &refs,
        serde_json::json!({
            "measurement": [hex_of(&reference.mrtd.0)],
            "tdx_rtmr1": [boot.rtmr1],
            "tdx_rtmr2": [boot.rtmr2],
        })
        .to_string(),
    )
    .unwrap();
    broker.admin(&["set-reference-values"], Some(&refs));
    let options = LaunchOptions {
        tee_sim_state: sim_state.clone(),
        ..options_in(runs.path())
    };
    let image = format!("{HOST_FROM_GUEST}:1/e2e/app:v1");

    // The genuine boot: attested and given its (reject-all) policy; the pull then fails at the
    // registry, where nothing listens.
    let (result, console) = boot_and_pull(&good, &options, &image).await;
    let status = refusal(result, &console, ttrpc::Code::UNAVAILABLE);
    assert!(
        status.message.starts_with("pulling the image failed")
            && !status.message.contains("broker refused"),
        "past the broker, stopped at the registry: {}",
        status.message
    );
    assert_eq!(broker.requests("attest"), 1);
    assert_eq!(broker.requests("resource"), 1);

    // The same firmware and kernel with one more kernel argument: refused at attestation,
    // naming the register.
    let (result, console) = boot_and_pull(&tampered, &options, &image).await;
    let status = refusal(result, &console, ttrpc::Code::PERMISSION_DENIED);
    assert!(
        status
            .message
            .contains("rtmr2 (initrd and command line) is not a reference value"),
        "the broker's reason names RTMR2: {}",
        status.message
    );
    assert_eq!(broker.requests("resource"), 1, "nothing more was released");

    broker.stop();
    assert_nothing_left(runs.path());
}
