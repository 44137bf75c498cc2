//! Pulling from a real distribution registry on loopback: skopeo-encrypted images decrypt to
//! skopeo's bytes; tampered blobs and manifests, wrong keys and stalled registries are refused.

#![allow(
    clippy::unwrap_used,
    reason = "integration test: a failed unwrap is a failed test"
)]

mod common;

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use tsuba_image_rs::ocicrypt::DecryptConfig;
use tsuba_image_rs::{
    ImageError, ImageVerifier, OciLayout, PullError, Registry, RegistryOptions, ResolvedImage,
    TlsRoots, UnpackOptions, VerifyFuture,
};

/// Accepts everything: these tests are about transport, not signatures.
struct AcceptAll;

impl ImageVerifier for AcceptAll {
    fn verify<'a>(&'a self, _: &'a Registry, _: &'a ResolvedImage) -> VerifyFuture<'a> {
        Box::pin(async { Ok(()) })
    }
}

fn registry_for(reg: &TestRegistry) -> Registry {
    Registry::new(RegistryOptions {
        plain_http: vec![reg.addr.clone()],
        request_timeout: Duration::from_secs(10),
        ..RegistryOptions::default()
    })
    .unwrap()
}

fn push_encrypted(reg: &TestRegistry, t: &std::path::Path, keys: &[&KeyPair], repo: &str) {
    let src = OciLayout::create(t.join("src")).unwrap();
    let big: Vec<u8> = (0..500_000u32).map(|i| (i * 13).to_le_bytes()[0]).collect();
    write_image(
        &src,
        "v1",
        &[
            vec![("etc/hello", b"hello\n"), ("bin/big", &big)],
            vec![("etc/motd", b"hi\n")],
        ],
    );
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--dest-tls-verify=false"]);
    for k in keys {
        cmd.arg("--encryption-key")
            .arg(format!("jwe:{}", k.public.display()));
    }
    run(cmd
        .arg(oci_ref(&t.join("src"), "v1"))
        .arg(reg.docker_ref(repo)));
}

#[test]
fn skopeo_encrypted_image_pulls_decrypts_and_unpacks_like_skopeo() {
    let reg = TestRegistry::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let rsa = rsa_keys(t, "rsa");
    let ec = ec_keys(t, "ec", "P-256");
    push_encrypted(&reg, t, &[&rsa, &ec], "enc/img:v1");
    run(Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "--decryption-key"])
        .arg(&rsa.private)
        .arg(reg.docker_ref("enc/img:v1"))
        .arg(oci_ref(&t.join("skopeo-dec"), "v1")));
    let theirs = manifest(&OciLayout::open(t.join("skopeo-dec")).unwrap(), "v1");

    let registry = registry_for(&reg);
    let image = format!("{}/enc/img:v1", reg.addr);
    for key in [&rsa, &ec] {
        let cfg = DecryptConfig {
            jwe_keys: vec![key.private_key()],
            provider: None,
        };
        // Layer by layer: our plaintext has the digest of skopeo's decrypted layer.
        let resolved = block_on(registry.resolve(&image)).unwrap();
        let reference = image.parse().unwrap();
        for (desc, want) in resolved.manifest.layers.iter().zip(&theirs.layers) {
            let key = block_on(tsuba_image_rs::layer_key(desc, &cfg)).unwrap();
            let mut spool = tokio::fs::File::from_std(tempfile::tempfile().unwrap());
            block_on(registry.fetch_blob(&reference, desc, &mut spool, None)).unwrap();
            let mut file = block_on(spool.into_std());
            std::io::Seek::rewind(&mut file).unwrap();
            let mut plain = Vec::new();
            tsuba_image_rs::layer_plaintext(file, desc, key.as_ref())
                .unwrap()
                .read_to_end(&mut plain)
                .unwrap();
            assert_eq!(tsuba_image_rs::Digest::of(&plain), want.digest);
        }
        // The whole pipeline.
        let rootfs = tempfile::tempdir().unwrap();
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = events.clone();
        let progress: tsuba_image_rs::Progress =
            std::sync::Arc::new(move |e| sink.lock().unwrap().push(e));
        let stats = block_on(registry.pull(
            &image,
            &AcceptAll,
            &cfg,
            rootfs.path(),
            &UnpackOptions::default(),
            Some(progress),
        ))
        .unwrap();
        assert_eq!(stats.layers.len(), 2);
        assert_eq!(
            std::fs::read(rootfs.path().join("etc/hello")).unwrap(),
            b"hello\n"
        );
        assert_eq!(
            std::fs::read(rootfs.path().join("etc/motd")).unwrap(),
            b"hi\n"
        );
        let events = events.lock().unwrap();
        let done = events
            .iter()
            .filter(|e| matches!(e, tsuba_image_rs::ProgressEvent::LayerDone { .. }))
            .count();
        assert_eq!(done, 2);
    }
}

#[test]
fn wrong_key_tampered_blob_and_tampered_manifest_are_refused() {
    let reg = TestRegistry::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ec = ec_keys(t, "ec", "P-256");
    let stranger = ec_keys(t, "stranger", "P-256");
    push_encrypted(&reg, t, &[&ec], "enc/img:v1");
    let registry = registry_for(&reg);
    let image = format!("{}/enc/img:v1", reg.addr);
    let opts = UnpackOptions::default();

    // Wrong key: refused before any layer is unpacked.
    let rootfs = tempfile::tempdir().unwrap();
    let cfg = DecryptConfig {
        jwe_keys: vec![stranger.private_key()],
        provider: None,
    };
    let err =
        block_on(registry.pull(&image, &AcceptAll, &cfg, rootfs.path(), &opts, None)).unwrap_err();
    assert!(
        matches!(err, PullError::Image(ImageError::Ocicrypt { .. })),
        "{err:?}"
    );
    assert_eq!(std::fs::read_dir(rootfs.path()).unwrap().count(), 0);

    // Tampered ciphertext in the registry's storage: digest mismatch, nothing unpacked.
    let cfg = DecryptConfig {
        jwe_keys: vec![ec.private_key()],
        provider: None,
    };
    let resolved = block_on(registry.resolve(&image)).unwrap();
    let layer = resolved.manifest.layers[0].clone();
    let path = reg.blob_file(&layer.digest);
    let original = std::fs::read(&path).unwrap();
    let mut bad = original.clone();
    bad[10] ^= 0x01;
    std::fs::write(&path, &bad).unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    let err =
        block_on(registry.pull(&image, &AcceptAll, &cfg, rootfs.path(), &opts, None)).unwrap_err();
    assert!(
        matches!(err, PullError::DigestMismatch { what: "blob", .. }),
        "{err:?}"
    );
    assert_eq!(std::fs::read_dir(rootfs.path()).unwrap().count(), 0);
    std::fs::write(&path, &original).unwrap();

    // Tampered manifest, pulled by digest.
    let by_digest = format!("{}/enc/img@{}", reg.addr, resolved.manifest_digest);
    let mpath = reg.blob_file(&resolved.manifest_digest);
    let mut m = std::fs::read(&mpath).unwrap();
    let pos = m.iter().position(|b| *b == b'2').unwrap();
    m[pos] = b' ';
    std::fs::write(&mpath, &m).unwrap();
    let err = block_on(registry.resolve(&by_digest)).unwrap_err();
    assert!(
        matches!(
            err,
            PullError::DigestMismatch {
                what: "manifest",
                ..
            } | PullError::Registry { .. }
        ),
        "{err:?}"
    );
}

#[test]
fn a_stalled_registry_times_out() {
    // Accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    listener.set_nonblocking(true).unwrap();
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok((s, _)) = listener.accept() {
                held.push(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let registry = Registry::new(RegistryOptions {
        plain_http: vec![addr.clone()],
        request_timeout: Duration::from_millis(700),
        attempts: 2,
        ..RegistryOptions::default()
    })
    .unwrap();
    let start = Instant::now();
    let err = block_on(registry.resolve(&format!("{addr}/any/img:v1"))).unwrap_err();
    let took = start.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    holder.join().unwrap();
    assert!(
        matches!(err, PullError::Timeout(..) | PullError::Registry { .. }),
        "{err:?}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn basic_auth_is_used_and_needed() {
    let htpasswd = format!("tsuba:{}\n", bcrypt::hash("s3cret", 4).unwrap());
    let reg = TestRegistry::start_with_auth(Some(&htpasswd));
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = OciLayout::create(t.join("src")).unwrap();
    write_image(&src, "v1", &[vec![("etc/motd", b"authed\n")]]);
    run(Command::new("skopeo")
        .args([
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "tsuba:s3cret",
        ])
        .arg(oci_ref(&t.join("src"), "v1"))
        .arg(reg.docker_ref("private/img:v1")));
    let image = format!("{}/private/img:v1", reg.addr);
    // The loopback registry is plain HTTP: credentials go to it only when explicitly allowed.
    let registry = |credentials, insecure_credentials_over_http| {
        Registry::new(RegistryOptions {
            plain_http: vec![reg.addr.clone()],
            insecure_credentials_over_http,
            credentials,
            request_timeout: Duration::from_secs(10),
            attempts: 1,
            ..RegistryOptions::default()
        })
        .unwrap()
    };
    let with = |credentials| registry(credentials, true);
    let basic = |p: &str| tsuba_image_rs::Credentials::Basic {
        username: "tsuba".into(),
        password: p.into(),
    };

    let err = block_on(registry(basic("s3cret"), false).resolve(&image)).unwrap_err();
    assert!(
        matches!(&err, PullError::CredentialsInTheClear { registry, .. } if *registry == reg.addr),
        "{err:?}"
    );

    let rootfs = tempfile::tempdir().unwrap();
    block_on(with(basic("s3cret")).pull(
        &image,
        &AcceptAll,
        &DecryptConfig::default(),
        rootfs.path(),
        &UnpackOptions::default(),
        None,
    ))
    .unwrap();
    assert_eq!(
        std::fs::read(rootfs.path().join("etc/motd")).unwrap(),
        b"authed\n"
    );

    for creds in [tsuba_image_rs::Credentials::Anonymous, basic("wrong")] {
        let err = block_on(with(creds).resolve(&image)).unwrap_err();
        assert!(matches!(err, PullError::Registry { .. }), "{err:?}");
    }
}

/// Peak resident memory of this process since the last reset, in KiB.
/// A CA, and a certificate it issued for 127.0.0.1: (CA DER, chain PEM, key PEM).
fn ca_and_server_cert() -> (Vec<u8>, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "tsuba test registry CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    (ca.der().to_vec(), leaf.pem(), key.serialize_pem())
}

fn is_certificate_failure(err: &PullError) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if format!("{e:?}").contains("InvalidCertificate") {
            return true;
        }
        next = e.source();
    }
    false
}

#[test]
fn an_https_registry_is_trusted_only_through_the_roots_given() {
    let (ca, cert, key) = ca_and_server_cert();
    let (other_ca, _, _) = ca_and_server_cert();
    let reg = TestRegistry::start_tls(&cert, &key);
    let resolve = |roots: TlsRoots| {
        let registry = Registry::new(RegistryOptions {
            tls_roots: roots,
            request_timeout: Duration::from_secs(10),
            attempts: 1,
            ..RegistryOptions::default()
        })
        .unwrap();
        block_on(registry.resolve(&format!("{}/absent:1", reg.addr)))
    };
    // Its CA: the TLS handshake succeeds and the registry itself answers (no such image).
    let err = resolve(TlsRoots::Only(vec![ca])).unwrap_err();
    assert!(!is_certificate_failure(&err), "{err:?}");
    let answer = format!("{err:?}");
    assert!(
        answer.contains("ManifestUnknown") && answer.contains("url: \"https://"),
        "{answer}"
    );
    // Another CA (of the same name), or the system's roots: refused at the handshake.
    let err = resolve(TlsRoots::Only(vec![other_ca])).unwrap_err();
    assert!(is_certificate_failure(&err), "{err:?}");
    let err = resolve(TlsRoots::System).unwrap_err();
    assert!(is_certificate_failure(&err), "{err:?}");
    // An empty explicit list is refused, not read as "the system's".
    assert!(matches!(
        Registry::new(RegistryOptions {
            tls_roots: TlsRoots::Only(Vec::new()),
            ..RegistryOptions::default()
        }),
        Err(PullError::TlsRoots(_))
    ));
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The figure for docs/performance.md, not a check (wall clock is never asserted). Run alone:
/// `CARGO_BUILD_JOBS=2 cargo test --release -p tsuba-image-rs --test registry_pull -- --ignored --nocapture pull_200mb`
#[test]
#[ignore = "a benchmark: about a minute, 1 GB of temp space"]
fn pull_200mb_figure() {
    let reg = TestRegistry::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ec = ec_keys(t, "ec", "P-256");
    {
        let src = OciLayout::create(t.join("src")).unwrap();
        // Four 50 MiB layers of incompressible bytes (xorshift), so blobs are 200 MiB too.
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n / 8)
                .flat_map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x.to_le_bytes()
                })
                .collect()
        };
        let layers: Vec<Vec<u8>> = (0..4).map(|_| noise(50 << 20)).collect();
        let files: Vec<Vec<(&str, &[u8])>> = layers
            .iter()
            .map(|l| vec![("data/blob", l.as_slice())])
            .collect();
        write_image(&src, "v1", &files);
    }
    run(Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", "--encryption-key"])
        .arg(format!("jwe:{}", ec.public.display()))
        .arg(oci_ref(&t.join("src"), "v1"))
        .arg(reg.docker_ref("big/img:v1")));

    let start = Instant::now();
    run(Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "--decryption-key"])
        .arg(&ec.private)
        .arg(reg.docker_ref("big/img:v1"))
        .arg(oci_ref(&t.join("skopeo-dec"), "v1")));
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:v1", t.join("skopeo-dec").display()))
        .arg(t.join("bundle")));
    let peer = start.elapsed();

    let registry = Registry::new(RegistryOptions {
        plain_http: vec![reg.addr.clone()],
        spool_dir: t.to_path_buf(),
        ..RegistryOptions::default()
    })
    .unwrap();
    let cfg = DecryptConfig {
        jwe_keys: vec![ec.private_key()],
        provider: None,
    };
    let rootfs = t.join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    // Reset the peak-RSS counter: the test's own image building is not part of the pull.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let start = Instant::now();
    let stats = rt
        .block_on(registry.pull(
            &format!("{}/big/img:v1", reg.addr),
            &AcceptAll,
            &cfg,
            &rootfs,
            &UnpackOptions::default(),
            None,
        ))
        .unwrap();
    let ours = start.elapsed();
    let peak = peak_rss_kib();
    let bytes: u64 = stats.layers.iter().map(|l| l.uncompressed_bytes).sum();
    println!(
        "pull+decrypt+unpack {:.0} MiB: tsuba {:.2} s (peak RSS {} MiB), skopeo copy --decryption-key + umoci unpack {:.2} s",
        bytes as f64 / 1048576.0,
        ours.as_secs_f64(),
        peak / 1024,
        peer.as_secs_f64()
    );
}
