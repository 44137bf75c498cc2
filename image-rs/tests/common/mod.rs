//! Shared helpers for the integration tests: test images, keys, external tools.

#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failure here is a test failure"
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use tsuba_image_rs::oci::{self, Descriptor, ImageConfig, Manifest, RootFs};
use tsuba_image_rs::ocicrypt::{PrivateKey, PublicKey};
use tsuba_image_rs::{Digest, OciLayout};

/// A gzip layer with the given files; returns (blob, diff_id).
pub(crate) fn gzip_layer(files: &[(&str, &[u8])]) -> (Vec<u8>, Digest) {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, *data).unwrap();
    }
    let tar = b.into_inner().unwrap();
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

/// Writes an image of `layers` (each a list of files) into `layout` as `reference`.
pub(crate) fn write_image(
    layout: &OciLayout,
    reference: &str,
    layers: &[Vec<(&str, &[u8])>],
) -> Descriptor {
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for files in layers {
        let (blob, diff_id) = gzip_layer(files);
        let (d, n) = layout.write_blob(&blob).unwrap();
        descs.push(descriptor(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            d,
            n,
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
    let (cd, cn) = layout.write_json(&config).unwrap();
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_TYPE_MANIFEST.into()),
        config: descriptor(oci::MEDIA_TYPE_CONFIG, cd, cn),
        layers: descs,
        annotations: Default::default(),
        extra: Default::default(),
    };
    let (md, mn) = layout.write_json(&manifest).unwrap();
    let desc = descriptor(oci::MEDIA_TYPE_MANIFEST, md, mn);
    layout.set_ref(reference, desc.clone()).unwrap();
    desc
}

/// Runs a command, panicking with its output when it fails.
pub(crate) fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is it installed?)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Key files made with openssl: (private PEM path, public PEM path).
pub(crate) struct KeyPair {
    pub(crate) private: PathBuf,
    pub(crate) public: PathBuf,
}

impl KeyPair {
    pub(crate) fn private_key(&self) -> PrivateKey {
        PrivateKey::from_pem(&std::fs::read_to_string(&self.private).unwrap()).unwrap()
    }

    pub(crate) fn public_key(&self) -> PublicKey {
        PublicKey::from_pem(&std::fs::read_to_string(&self.public).unwrap()).unwrap()
    }
}

/// An RSA 2048 key pair (PKCS#8) in `dir`.
pub(crate) fn rsa_keys(dir: &Path, name: &str) -> KeyPair {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    run(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&private));
    run(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public));
    KeyPair { private, public }
}

/// An EC key pair (PKCS#8) on `curve` (`P-256` or `P-384`) in `dir`.
pub(crate) fn ec_keys(dir: &Path, name: &str, curve: &str) -> KeyPair {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    run(Command::new("openssl")
        .args(["genpkey", "-algorithm", "EC", "-pkeyopt"])
        .arg(format!("ec_paramgen_curve:{curve}"))
        .arg("-out")
        .arg(&private));
    run(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public));
    KeyPair { private, public }
}

/// `oci:<dir>:<ref>` for skopeo.
pub(crate) fn oci_ref(dir: &Path, reference: &str) -> String {
    format!("oci:{}:{reference}", dir.display())
}

/// The manifest of `reference` in `layout`.
pub(crate) fn manifest(layout: &OciLayout, reference: &str) -> Manifest {
    let d = layout.resolve(reference).unwrap();
    layout.read_json(&d, "manifest").unwrap()
}

pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A distribution registry (`/usr/bin/docker-registry`) on a free loopback port with its
/// storage in a temp dir; killed when dropped.
pub(crate) struct TestRegistry {
    child: std::process::Child,
    pub(crate) addr: String,
    pub(crate) storage: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestRegistry {
    pub(crate) fn start() -> Self {
        Self::start_with_auth(None)
    }

    /// With `htpasswd` (a bcrypt htpasswd file's contents), the registry asks for basic auth.
    pub(crate) fn start_with_auth(htpasswd: Option<&str>) -> Self {
        Self::start_with(htpasswd, None)
    }

    /// Over HTTPS with `tls` (certificate chain PEM, private key PEM).
    #[allow(
        dead_code,
        reason = "used by some of the test binaries that share this module"
    )]
    pub(crate) fn start_tls(cert_pem: &str, key_pem: &str) -> Self {
        Self::start_with(None, Some((cert_pem, key_pem)))
    }

    fn start_with(htpasswd: Option<&str>, tls: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let storage = dir.path().join("storage");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            storage.display()
        );
        if let Some((cert, key)) = tls {
            let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            std::fs::write(&cert_path, cert).unwrap();
            std::fs::write(&key_path, key).unwrap();
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert_path.display(),
                key_path.display()
            ));
        }
        if let Some(h) = htpasswd {
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, h).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                path.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry (Debian package docker-registry) must be installed");
        let reg = Self {
            child,
            addr,
            storage,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(&reg.addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "registry did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        reg
    }

    /// `docker://<addr>/<repo>` for skopeo.
    pub(crate) fn docker_ref(&self, repo: &str) -> String {
        format!("docker://{}/{repo}", self.addr)
    }

    /// The file holding a blob in the registry's storage.
    pub(crate) fn blob_file(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.storage.join(format!(
            "docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
