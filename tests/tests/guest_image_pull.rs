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
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tsuba_image_rs::oci::{self, Descriptor, ImageConfig, Manifest, RootFs};
use tsuba_image_rs::{Digest, OciLayout};
use tsuba_shim::{AgentClientError, Sandbox};
use tsuba_tests::{AGENT_TIMEOUT, Artefacts, assert_nothing_left, options_in, sim_config};
use tsuba_vmm_tee::{LaunchConfig, LaunchOptions, launch_reference_values};

/// A pull over user networking under TCG on a loaded machine: attestation, two small layers.
const PULL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a started service gets to listen.
const SERVICE_START: Duration = Duration::from_secs(30);

const KEY_ID: &str = "kbs:///default/image-kek/e2e";
const POLICY_ID: &str = "kbs:///default/security-policy/e2e";
/// The guest reaches the host's loopback at this address (QEMU user networking).
const HOST_FROM_GUEST: &str = "10.0.2.2";

/// A child process killed and reaped when dropped, so no path leaves it running.
struct Guarded {
    child: Child,
    what: &'static str,
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Guarded {
    fn spawn(what: &'static str, cmd: &mut Command, log: &Path) -> Self {
        let log = std::fs::File::create(log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({cmd:?}): {e}"));
        Guarded { child, what }
    }

    /// Waits until `addr` accepts connections, failing early if the process exits.
    fn wait_listening(&mut self, addr: &str) {
        let deadline = Instant::now() + SERVICE_START;
        while TcpStream::connect(addr).is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited ({status}) before listening on {addr}", self.what);
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen on {addr}",
                self.what
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn tsuba_bin() -> PathBuf {
    match std::env::var_os("TSUBA_BIN") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => panic!("TSUBA_BIN is not set: run the end-to-end tests with `make e2e`"),
    }
}

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

fn descriptor(media_type: &str, digest: Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest,
        size,
        annotations: Default::default(),
        platform: None,
        extra: Default::default(),
    }
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

/// The distribution registry on loopback.
struct Registry {
    _process: Guarded,
    port: u16,
}

impl Registry {
    fn start(work: &Path) -> Self {
        let port = free_port();
        let storage = work.join("registry");
        let config = work.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                storage.display()
            ),
        )
        .unwrap();
        let mut process = Guarded::spawn(
            "docker-registry",
            Command::new("/usr/bin/docker-registry")
                .arg("serve")
                .arg(&config),
            &work.join("registry.log"),
        );
        process.wait_listening(&format!("127.0.0.1:{port}"));
        Registry {
            _process: process,
            port,
        }
    }
}

/// A CA and the broker certificate it issued, for the addresses the broker is reached at: the
/// host's loopback (admin calls) and the host as the guest sees it.
struct BrokerPki {
    ca: PathBuf,
    chain: PathBuf,
    key: PathBuf,
}

impl BrokerPki {
    fn generate(dir: &Path, name: &str) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} broker CA"));
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![
            SanType::IpAddress([127, 0, 0, 1].into()),
            SanType::IpAddress(HOST_FROM_GUEST.parse().unwrap()),
        ];
        let leaf = params.signed_by(&key, &ca, &ca_key).unwrap();
        let pki = BrokerPki {
            ca: dir.join(format!("{name}-ca.pem")),
            chain: dir.join(format!("{name}-chain.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        std::fs::write(&pki.ca, ca.pem()).unwrap();
        // The CA travels in the chain: a guest that pins the CA's key finds it there.
        std::fs::write(&pki.chain, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
        std::fs::write(&pki.key, key.serialize_pem()).unwrap();
        pki
    }

    /// `sha256:<hex>` of the CA's key, as `tsuba kbs pin` prints it.
    fn pin(&self) -> String {
        let out = run(Command::new(tsuba_bin())
            .args(["kbs", "pin", "--cert"])
            .arg(&self.ca));
        String::from_utf8(out).unwrap().trim().to_owned()
    }
}

/// `tsuba kbs serve` over HTTPS on loopback, trusting tee-sim's public roots from `sim_state`,
/// with its admin key.
struct Broker {
    process: Guarded,
    port: u16,
    admin_key: PathBuf,
    ca: PathBuf,
}

impl Broker {
    fn start(dir: &Path, port: u16, pki: &BrokerPki, sim_state: &Path) -> Self {
        let tsuba = tsuba_bin();
        std::fs::create_dir_all(dir).unwrap();
        // tee-sim's public roots from `sim_state` (the launcher signs with them), exported by
        // `tsuba sim export-roots`: the broker never reads their private keys.
        let roots = dir.join("sim-roots.pem");
        let collateral = dir.join("tdx-collateral");
        std::fs::create_dir_all(&collateral).unwrap();
        run(Command::new(&tsuba)
            .args(["sim", "export-roots", "--state-dir"])
            .arg(sim_state)
            .arg("--out")
            .arg(&roots)
            .arg("--tdx-collateral-out")
            .arg(collateral.join("sim.json")));
        let admin_key = dir.join("admin.pem");
        let admin_pub = dir.join("admin.pub.pem");
        run(Command::new(&tsuba)
            .args(["kbs", "admin-keygen", "--private"])
            .arg(&admin_key)
            .arg("--public")
            .arg(&admin_pub));
        let mut process = Guarded::spawn(
            "tsuba kbs serve",
            Command::new(&tsuba)
                .args(["kbs", "serve", "--state-dir"])
                .arg(dir.join("state"))
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--admin-public-key")
                .arg(&admin_pub)
                .arg("--tls-cert")
                .arg(&pki.chain)
                .arg("--tls-key")
                .arg(&pki.key)
                .args([
                    "--insecure-accept-simulated-evidence",
                    "--insecure-release-resources-to-simulated",
                    // tee-sim's platform TCB (SIM_DEFAULT_TCB) on its simulated Genoa.
                    "--snp-min-tcb",
                    "genoa=bootloader:10,tee:0,snp:23,microcode:84",
                    "--insecure-sim-roots",
                ])
                .arg(&roots)
                .arg("--tdx-collateral-dir")
                .arg(&collateral),
            &dir.join("kbs.log"),
        );
        process.wait_listening(&format!("127.0.0.1:{port}"));
        Broker {
            process,
            port,
            admin_key,
            ca: pki.ca.clone(),
        }
    }

    fn admin(&self, args: &[&str], file: Option<&Path>) {
        let mut cmd = Command::new(tsuba_bin());
        cmd.args(["kbs", "admin", "--url"])
            .arg(format!("https://127.0.0.1:{}", self.port))
            .arg("--key")
            .arg(&self.admin_key)
            .arg("--ca")
            .arg(&self.ca)
            .args(args);
        if let Some(file) = file {
            cmd.arg(file);
        }
        run(&mut cmd);
    }

    /// Requests this broker counted on `/kbs/v0/auth`, from its metrics.
    fn auth_requests(&self) -> u64 {
        self.requests("auth")
    }

    /// Requests this broker counted on an endpoint (`auth`, `attest`, `resource`).
    fn requests(&self, endpoint: &str) -> u64 {
        let metrics = run(Command::new("curl")
            .args(["--silent", "--show-error", "--fail", "--cacert"])
            .arg(&self.ca)
            .arg(format!("https://127.0.0.1:{}/metrics", self.port)));
        let prefix = format!("kbs_http_requests_total{{endpoint=\"{endpoint}\"}} ");
        String::from_utf8(metrics)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map_or(0, |n| n.parse().unwrap())
    }

    /// Stops the broker and frees its port.
    fn stop(self) {
        drop(self.process);
    }
}

/// The measured command-line keys that point the guest at the broker on `broker_port`, known
/// by the key `pin`, and at the registry.
fn guest_cmdline(broker_port: u16, pin: &str, registry_port: u16) -> String {
    format!(
        "tsuba.agent.kbs=https://{HOST_FROM_GUEST}:{broker_port} tsuba.agent.kbs-pin={pin} \
         tsuba.agent.image-policy={POLICY_ID} \
         tsuba.agent.plain-http-registry={HOST_FROM_GUEST}:{reg}",
        reg = registry_port,
    )
}

/// A sim-snp launch config with networking and `extra` kernel arguments, in `dir`.
fn networked_config(a: &Artefacts, dir: &Path, extra: &str) -> LaunchConfig {
    drop(sim_config(a, dir, &a.initrd(), extra));
    let path = dir.join("launch.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("[network]\nbackend = \"user\"\n");
    std::fs::write(&path, text).unwrap();
    let config = LaunchConfig::from_file(&path).unwrap();
    assert!(config.network.is_some());
    config
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
    let cmdline = guest_cmdline(broker_port, &real_pki.pin(), registry.port);

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
    let good = networked_config(&a, good_dir.path(), &cmdline);
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
        &format!("{cmdline} tsuba.e2e=tampered"),
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
fn networked_tdx_config(a: &Artefacts, dir: &Path, extra: &str) -> LaunchConfig {
    let toml = format!(
        "mode = \"sim-tdx\"\nkernel = {kernel:?}\ninitrd = {initrd:?}\ncmdline = {extra:?}\n\
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
    let cmdline = guest_cmdline(port, &pki.pin(), 1);
    let good_dir = tempfile::tempdir().unwrap();
    let good = networked_tdx_config(&a, good_dir.path(), &cmdline);
    let tampered_dir = tempfile::tempdir().unwrap();
    let tampered = networked_tdx_config(
        &a,
        tampered_dir.path(),
        &format!("{cmdline} tsuba.e2e=tampered"),
    );
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

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 random bytes for the KEK, from the kernel.
fn rand_bytes() -> Vec<u8> {
    use std::io::Read as _;
    let mut key = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut key)
        .unwrap();
    key
}
