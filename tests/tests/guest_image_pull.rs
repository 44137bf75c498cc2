//! The headline flow, end to end under real QEMU: a sim-snp guest with a network attests to the
//! key broker (`tsuba kbs serve`), pulls an image encrypted in the key-provider form from the
//! distribution registry, gets the layer keys' key-encryption key from the broker and unpacks the
//! image in guest memory. The host only ever holds ciphertext: the KEK goes from the owner to the
//! broker, and from the broker to the guest as JWE to the guest's own key.
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

/// The key broker on loopback, its admin key, and the registry.
struct Services {
    _broker: Guarded,
    _registry: Guarded,
    broker_port: u16,
    registry_port: u16,
    admin_key: PathBuf,
}

impl Services {
    fn start(work: &Path, sim_state: &Path) -> Self {
        let tsuba = tsuba_bin();
        // Registry.
        let registry_port = free_port();
        let storage = work.join("registry");
        let registry_config = work.join("registry.yml");
        std::fs::write(
            &registry_config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{registry_port}\n",
                storage.display()
            ),
        )
        .unwrap();
        let mut registry = Guarded::spawn(
            "docker-registry",
            Command::new("/usr/bin/docker-registry")
                .arg("serve")
                .arg(&registry_config),
            &work.join("registry.log"),
        );
        registry.wait_listening(&format!("127.0.0.1:{registry_port}"));

        // Key broker, trusting tee-sim's public roots from `sim_state` (the launcher signs with
        // them), exported by `tsuba sim export-roots`.
        let roots = work.join("sim-roots.pem");
        run(Command::new(&tsuba)
            .args(["sim", "export-roots", "--state-dir"])
            .arg(sim_state)
            .arg("--out")
            .arg(&roots));
        let admin_key = work.join("admin.pem");
        let admin_pub = work.join("admin.pub.pem");
        run(Command::new(&tsuba)
            .args(["kbs", "admin-keygen", "--private"])
            .arg(&admin_key)
            .arg("--public")
            .arg(&admin_pub));
        let broker_port = free_port();
        let mut broker = Guarded::spawn(
            "tsuba kbs serve",
            Command::new(&tsuba)
                .args(["kbs", "serve", "--state-dir"])
                .arg(work.join("kbs-state"))
                .arg("--listen")
                .arg(format!("127.0.0.1:{broker_port}"))
                .arg("--admin-public-key")
                .arg(&admin_pub)
                .args([
                    "--insecure-plain-http",
                    "--insecure-accept-simulated-evidence",
                    "--insecure-release-resources-to-simulated",
                    // tee-sim's platform TCB (SIM_DEFAULT_TCB) on its simulated Genoa.
                    "--snp-min-tcb",
                    "genoa=bootloader:10,tee:0,snp:23,microcode:84",
                    "--insecure-sim-roots",
                ])
                .arg(&roots),
            &work.join("kbs.log"),
        );
        broker.wait_listening(&format!("127.0.0.1:{broker_port}"));
        Services {
            _broker: broker,
            _registry: registry,
            broker_port,
            registry_port,
            admin_key,
        }
    }

    fn admin(&self, args: &[&str], file: Option<&Path>) {
        let mut cmd = Command::new(tsuba_bin());
        cmd.args(["kbs", "admin", "--url"])
            .arg(format!("http://127.0.0.1:{}", self.broker_port))
            .arg("--key")
            .arg(&self.admin_key)
            .args(args);
        if let Some(file) = file {
            cmd.arg(file);
        }
        run(&mut cmd);
    }

    /// The measured command-line keys that point the guest at these services.
    fn guest_cmdline(&self) -> String {
        format!(
            "tsuba.agent.kbs=http://{HOST_FROM_GUEST}:{kbs} tsuba.agent.image-policy={POLICY_ID} \
             tsuba.agent.plain-http-registry={HOST_FROM_GUEST}:{reg}",
            kbs = self.broker_port,
            reg = self.registry_port,
        )
    }
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

async fn boot_and_pull(
    config: &LaunchConfig,
    options: &LaunchOptions,
    image: &str,
) -> (
    Result<tsuba_protocols::agent::PullImageResponse, AgentClientError>,
    String,
) {
    let sandbox = Sandbox::start(config, options, AGENT_TIMEOUT)
        .await
        .unwrap();
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
    let console = sandbox.vm().console_tail();
    sandbox.stop().await.unwrap();
    (result, console)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_attests_pulls_and_decrypts_its_image_and_a_tampered_launch_is_refused() {
    let a = Artefacts::from_env();
    let work = tempfile::tempdir().unwrap();
    let runs = tempfile::tempdir().unwrap();
    let sim_state = work.path().join("tee-sim");
    let services = Services::start(work.path(), &sim_state);

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
    let pushed = format!("127.0.0.1:{}/e2e/app:v1", services.registry_port);
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

    // The broker: the KEK, a signature policy, and the measurement of exactly this launch.
    services.admin(&["set-resource", "default/image-kek/e2e"], Some(&kek));
    let policy = work.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    services.admin(
        &["set-resource", "default/security-policy/e2e"],
        Some(&policy),
    );
    let good_dir = tempfile::tempdir().unwrap();
    let good = networked_config(&a, good_dir.path(), &services.guest_cmdline());
    let reference = launch_reference_values(&good).unwrap().snp.unwrap();
    let refs = work.path().join("refs.json");
    std::fs::write(
        &refs,
        serde_json::json!({ "measurement": [hex_of(&reference.launch_digest.0)] }).to_string(),
    )
    .unwrap();
    services.admin(&["set-reference-values"], Some(&refs));

    let options = LaunchOptions {
        tee_sim_state: sim_state.clone(),
        ..options_in(runs.path())
    };
    let image = format!("{HOST_FROM_GUEST}:{}/e2e/app:v1", services.registry_port);

    // The launch the broker knows: attested, pulled, decrypted, unpacked.
    let (result, console) = boot_and_pull(&good, &options, &image).await;
    let pulled = result.unwrap_or_else(|e| panic!("pull failed: {e:?}\nconsole:\n{console}"));
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
    assert!(pulled.rootfs.starts_with("/run/"), "{}", pulled.rootfs);
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
        &format!("{} tsuba.e2e=tampered", services.guest_cmdline()),
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
    match result {
        Err(AgentClientError::Rpc {
            source: ttrpc::Error::RpcStatus(status),
            ..
        }) => {
            assert_eq!(
                status.code(),
                ttrpc::Code::PERMISSION_DENIED,
                "{status:?}\n{console}"
            );
            assert!(
                status
                    .message
                    .contains("measurement is not a reference value"),
                "the broker's reason reaches the host: {}",
                status.message
            );
        }
        other => panic!("a tampered launch must be refused, got {other:?}\n{console}"),
    }

    drop(services);
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
