//! What the guest end-to-end tests share: a guarded child process, the distribution registry,
//! the key broker over HTTPS with a generated CA, and the sim-snp launch with networking.

#![allow(
    dead_code,
    reason = "each test binary uses its own part of the shared helpers"
)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tsuba_image_rs::oci::{self, Descriptor, ImageConfig, Manifest, RootFs};
use tsuba_image_rs::{Digest, OciLayout};
use tsuba_tests::{Artefacts, sim_config};
use tsuba_vmm_tee::LaunchConfig;

/// Resource IDs the tests provision at the broker.
/// How long a started service gets to listen.
pub(crate) const SERVICE_START: Duration = Duration::from_secs(30);

pub(crate) const KEY_ID: &str = "kbs:///default/image-kek/e2e";
pub(crate) const POLICY_ID: &str = "kbs:///default/security-policy/e2e";
/// The guest reaches the host's loopback at this address (QEMU user networking).
pub(crate) const HOST_FROM_GUEST: &str = "10.0.2.2";

/// A child process killed and reaped when dropped, so no path leaves it running.
pub(crate) struct Guarded {
    pub(crate) child: Child,
    pub(crate) what: &'static str,
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Guarded {
    pub(crate) fn spawn(what: &'static str, cmd: &mut Command, log: &Path) -> Self {
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
    pub(crate) fn wait_listening(&mut self, addr: &str) {
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

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn run(cmd: &mut Command) -> Vec<u8> {
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

pub(crate) fn tsuba_bin() -> PathBuf {
    match std::env::var_os("TSUBA_BIN") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => panic!("TSUBA_BIN is not set: run the end-to-end tests with `make e2e`"),
    }
}

pub(crate) fn descriptor(media_type: &str, digest: Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest,
        size,
        annotations: Default::default(),
        platform: None,
        extra: Default::default(),
    }
}

/// The distribution registry on loopback.
pub(crate) struct Registry {
    pub(crate) _process: Guarded,
    pub(crate) port: u16,
}

impl Registry {
    pub(crate) fn start(work: &Path) -> Self {
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
pub(crate) struct BrokerPki {
    pub(crate) ca: PathBuf,
    pub(crate) chain: PathBuf,
    pub(crate) key: PathBuf,
}

impl BrokerPki {
    pub(crate) fn generate(dir: &Path, name: &str) -> Self {
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
    pub(crate) fn pin(&self) -> String {
        let out = run(Command::new(tsuba_bin())
            .args(["kbs", "pin", "--cert"])
            .arg(&self.ca));
        String::from_utf8(out).unwrap().trim().to_owned()
    }
}

/// `tsuba kbs serve` over HTTPS on loopback, trusting tee-sim's public roots from `sim_state`,
/// with its admin key.
pub(crate) struct Broker {
    pub(crate) process: Guarded,
    pub(crate) port: u16,
    pub(crate) admin_key: PathBuf,
    pub(crate) ca: PathBuf,
}

impl Broker {
    pub(crate) fn start(dir: &Path, port: u16, pki: &BrokerPki, sim_state: &Path) -> Self {
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

    pub(crate) fn admin(&self, args: &[&str], file: Option<&Path>) {
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
    pub(crate) fn auth_requests(&self) -> u64 {
        self.requests("auth")
    }

    /// Requests this broker counted on an endpoint (`auth`, `attest`, `resource`).
    pub(crate) fn requests(&self, endpoint: &str) -> u64 {
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
    pub(crate) fn stop(self) {
        drop(self.process);
    }
}

/// The guest settings that point the guest at the broker on `broker_port`, known by the key
/// `pin`, and at the registry.
pub(crate) fn guest_settings(
    broker_port: u16,
    pin: &str,
    registry_port: u16,
) -> tsuba_policy::GuestSettings {
    tsuba_policy::GuestSettings {
        kbs_url: Some(format!("https://{HOST_FROM_GUEST}:{broker_port}")),
        kbs_pin: Some(pin.to_owned()),
        image_policy: Some(POLICY_ID.to_owned()),
        plain_http_registries: vec![format!("{HOST_FROM_GUEST}:{registry_port}")],
        ..tsuba_policy::GuestSettings::default()
    }
}

/// An initdata document in `dir/name` with `settings` and the agent `policy`; returns its path.
pub(crate) fn write_initdata(
    dir: &Path,
    name: &str,
    settings: &tsuba_policy::GuestSettings,
    policy: &str,
) -> PathBuf {
    let mut data = settings.to_entries().unwrap();
    data.insert(tsuba_policy::POLICY_REGO.to_owned(), policy.to_owned());
    let doc =
        tsuba_policy::render_initdata(tsuba_policy::InitdataAlgorithm::Sha384, &data).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, doc.as_str()).unwrap();
    path
}

/// The initdata of the older guest tests: this broker and registry, and the permissive agent
/// policy (they exercise exec, stdin and terminals; the policy has tests of its own).
pub(crate) fn permissive_initdata(
    dir: &Path,
    broker_port: u16,
    pin: &str,
    registry_port: u16,
) -> PathBuf {
    write_initdata(
        dir,
        "initdata.toml",
        &guest_settings(broker_port, pin, registry_port),
        tsuba_policy::agent::PERMISSIVE_POLICY,
    )
}

/// A sim-snp launch config with networking, `extra` kernel arguments and `initdata`, in `dir`.
pub(crate) fn networked_config(
    a: &Artefacts,
    dir: &Path,
    extra: &str,
    initdata: Option<&Path>,
) -> LaunchConfig {
    drop(sim_config(a, dir, &a.initrd(), extra));
    let path = dir.join("launch.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    if let Some(initdata) = initdata {
        // A top-level key: before the first table.
        text = format!("initdata = {initdata:?}\n{text}");
    }
    text.push_str("[network]\nbackend = \"user\"\n");
    std::fs::write(&path, text).unwrap();
    let config = LaunchConfig::from_file(&path).unwrap();
    assert!(config.network.is_some());
    config
}

pub(crate) fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 random bytes for the KEK, from the kernel.
pub(crate) fn rand_bytes() -> Vec<u8> {
    use std::io::Read as _;
    let mut key = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut key)
        .unwrap();
    key
}

/// A gzip layer of busybox and its applets (symlinks), with /proc, /dev, /sys, /tmp.
pub(crate) fn busybox_layer() -> (Vec<u8>, Digest) {
    use std::io::Write as _;
    let busybox = std::env::var_os("TSUBA_BUSYBOX").unwrap_or_else(|| "/bin/busybox".into());
    let data = std::fs::read(&busybox).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let dir = |name: &str, tar: &mut tar::Builder<Vec<u8>>| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        header.set_mtime(1_700_000_000);
        header.set_uid(0);
        header.set_gid(0);
        tar.append_data(&mut header, name, std::io::empty())
            .unwrap();
    };
    for d in ["bin/", "proc/", "dev/", "sys/", "tmp/", "etc/"] {
        dir(d, &mut tar);
    }
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o755);
    header.set_mtime(1_700_000_000);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, "bin/busybox", &data[..])
        .unwrap();
    let marker = b"tsuba-e2e-marker-in-the-image\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(marker.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_uid(0);
    header.set_gid(0);
    tar.append_data(&mut header, "etc/marker", &marker[..])
        .unwrap();
    for applet in [
        "sh", "cat", "echo", "sleep", "stty", "true", "dd", "ls", "hostname", "touch", "test",
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        header.set_mtime(1_700_000_000);
        header.set_uid(0);
        header.set_gid(0);
        tar.append_link(&mut header, format!("bin/{applet}"), "busybox")
            .unwrap();
    }
    let tar = tar.into_inner().unwrap();
    let diff_id = Digest::of(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    (gz.finish().unwrap(), diff_id)
}

/// The plaintext busybox image at `dir`, tagged `v1`, whose config runs `echo from-image-cmd`.
pub(crate) fn write_busybox_image(dir: &Path) {
    let layout = OciLayout::create(dir).unwrap();
    let (blob, diff_id) = busybox_layer();
    let (digest, size) = layout.write_blob(&blob).unwrap();
    let layer = descriptor("application/vnd.oci.image.layer.v1.tar+gzip", digest, size);
    let mut extra = serde_json::Map::new();
    extra.insert(
        "architecture".into(),
        oci::Platform::current().architecture.into(),
    );
    extra.insert("os".into(), "linux".into());
    extra.insert(
        "config".into(),
        serde_json::json!({
            "Cmd": ["sh", "-c", "echo from-image-cmd $FROM_IMAGE"],
            "Env": ["PATH=/bin", "FROM_IMAGE=yes"],
        }),
    );
    let config = ImageConfig {
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![diff_id],
        },
        extra,
    };
    let (config_digest, config_size) = layout.write_json(&config).unwrap();
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_TYPE_MANIFEST.into()),
        config: descriptor(oci::MEDIA_TYPE_CONFIG, config_digest, config_size),
        layers: vec![layer],
        annotations: Default::default(),
        extra: Default::default(),
    };
    let (digest, size) = layout.write_json(&manifest).unwrap();
    layout
        .set_ref("v1", descriptor(oci::MEDIA_TYPE_MANIFEST, digest, size))
        .unwrap();
}
