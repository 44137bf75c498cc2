//! Cosign (sigstore) signatures against a real distribution registry on loopback, checked
//! against the Go code that cosign and containers/image use (`tests/sigstore_go/main.go`:
//! go-tuf's `encrypted` package for key files, crypto/x509 and crypto/ecdsa for keys and
//! signatures). Debian's skopeo has sigstore patched out ("Debian-local change: sigstore
//! disabled"), so it only pushes the unsigned test images here.
//!
//! - A key written by our keygen is opened by Go, whose signature (pushed as a sigstore
//!   attachment laid out as containers/image writes it) satisfies our `sigstoreSigned` check.
//! - A signature made by our `sign_image` verifies in Go.
//! - Keys written by Go are read by us.
//! - Missing, misdirected and tampered signatures, wrong keys and passphrases are refused.

#![allow(
    clippy::unwrap_used,
    reason = "integration test: a failed unwrap is a failed test"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::*;
use oci_client::Reference;
use oci_client::secrets::RegistryAuth;
use tsuba_image_rs::oci::{MEDIA_TYPE_MANIFEST, Manifest};
use tsuba_image_rs::ocicrypt::DecryptConfig;
use tsuba_image_rs::signature::{
    CosignKeyError, CosignPrivateKey, CosignPublicKey, KdfStrength, PayloadKind,
    SIGNATURE_ANNOTATION, SIGNATURE_MEDIA_TYPE, SignedIdentity, SignedPayload, SigstoreError,
    attachment_tag, sign_image, verify_sigstore_signed,
};
use tsuba_image_rs::{
    Digest, OciLayout, Policy, PullError, Registry, RegistryOptions, UnpackOptions,
};

const PASSPHRASE: &str = "correct horse battery";

/// The Go interop helper, built once per test binary.
fn go_helper() -> &'static Path {
    static HELPER: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &HELPER
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let bin = dir.path().join("sigstore-go");
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sigstore_go/main.go");
            let mut cmd = Command::new("go");
            cmd.arg("build")
                .arg("-o")
                .arg(&bin)
                .arg(&src)
                // GOPATH mode against Debian's packaged sources: no network.
                .env("GO111MODULE", "off")
                .env("GOPATH", "/usr/share/gocode")
                .env("GOFLAGS", "");
            let out = run_bounded(cmd, Duration::from_secs(300));
            assert!(
                out.status.success(),
                "building the Go helper failed (needs golang-go and \
                 golang-github-theupdateframework-go-tuf-dev): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            (dir, bin)
        })
        .1
}

/// Runs the Go helper with `args`.
fn go(args: &[&str]) -> Output {
    let mut cmd = Command::new(go_helper());
    cmd.args(args);
    run_bounded(cmd, Duration::from_secs(60))
}

/// A key pair made by our keygen, written once per test binary (scrypt is slow in debug builds).
struct Keys {
    _dir: tempfile::TempDir,
    key: CosignPrivateKey,
    private: PathBuf,
    public: PathBuf,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let key = CosignPrivateKey::generate();
        let private = dir.path().join("cosign.key");
        let public = dir.path().join("cosign.pub");
        let pem = key
            .to_encrypted_pem(PASSPHRASE.as_bytes(), KdfStrength::default())
            .unwrap();
        std::fs::write(&private, pem.as_bytes()).unwrap();
        std::fs::write(&public, key.public_key().to_pem().unwrap()).unwrap();
        Keys {
            _dir: dir,
            key,
            private,
            public,
        }
    })
}

/// A registry and a permissive skopeo policy for pushing unsigned test images.
struct Env {
    reg: TestRegistry,
    tmp: tempfile::TempDir,
    accept_all: PathBuf,
}

impl Env {
    fn new() -> Self {
        let reg = TestRegistry::start();
        let tmp = tempfile::tempdir().unwrap();
        let accept_all = tmp.path().join("accept-all.json");
        std::fs::write(
            &accept_all,
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .unwrap();
        Self {
            reg,
            tmp,
            accept_all,
        }
    }

    fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// `host:port/repo_tag`.
    fn image(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.reg.addr)
    }

    /// Pushes a one-layer image holding `content` as `repo_tag`, unsigned.
    fn push_unsigned(&self, repo_tag: &str, content: &[u8]) {
        let dir = self
            .path()
            .join(format!("src-{}", repo_tag.replace(['/', ':'], "-")));
        let layout = OciLayout::create(&dir).unwrap();
        write_image(&layout, "v1", &[vec![("etc/content", content)]]);
        let mut cmd = Command::new("skopeo");
        cmd.arg("--policy")
            .arg(&self.accept_all)
            .args(["copy", "--dest-tls-verify=false"])
            .arg(oci_ref(&dir, "v1"))
            .arg(self.reg.docker_ref(repo_tag));
        assert_ok(&run_bounded(cmd, Duration::from_secs(120)));
    }

    fn registry(&self) -> Registry {
        Registry::new(RegistryOptions {
            plain_http: vec![self.reg.addr.clone()],
            request_timeout: Duration::from_secs(10),
            attempts: 1,
            ..RegistryOptions::default()
        })
        .unwrap()
    }

    fn manifest_digest(&self, repo_tag: &str) -> Digest {
        block_on(self.registry().resolve(&self.image(repo_tag)))
            .unwrap()
            .manifest_digest
    }

    /// Our verdict on `repo_tag` for `keys` under `rule`.
    fn verify(
        &self,
        repo_tag: &str,
        keys: &[CosignPublicKey],
        rule: &SignedIdentity,
    ) -> Result<SignedPayload, SigstoreError> {
        let registry = self.registry();
        block_on(async {
            let resolved = registry.resolve(&self.image(repo_tag)).await.unwrap();
            verify_sigstore_signed(&registry, &resolved, keys, rule).await
        })
    }

    /// A raw registry client, independent of image-rs's: it writes attachments the way
    /// containers/image lays them out, and moves and alters them.
    fn raw(&self) -> oci_client::Client {
        oci_client::Client::new(oci_client::client::ClientConfig {
            protocol: oci_client::client::ClientProtocol::HttpsExcept(vec![self.reg.addr.clone()]),
            ..Default::default()
        })
    }

    fn reference(&self, repo: &str, tag: &str) -> Reference {
        Reference::with_tag(self.reg.addr.clone(), repo.into(), tag.into())
    }

    fn get_manifest(&self, repo: &str, tag: &str) -> Vec<u8> {
        block_on(self.raw().pull_manifest_raw(
            &self.reference(repo, tag),
            &RegistryAuth::Anonymous,
            &[MEDIA_TYPE_MANIFEST],
        ))
        .unwrap()
        .0
        .to_vec()
    }

    fn put_manifest(&self, repo: &str, tag: &str, bytes: Vec<u8>) {
        block_on(self.raw().push_manifest_raw(
            &self.reference(repo, tag),
            bytes,
            MEDIA_TYPE_MANIFEST.parse().unwrap(),
        ))
        .unwrap();
    }

    fn get_blob(&self, repo: &str, digest: &Digest) -> Vec<u8> {
        let mut out = Vec::new();
        block_on(self.raw().pull_blob(
            &self.reference(repo, "v1"),
            digest.to_string().as_str(),
            &mut out,
        ))
        .unwrap();
        out
    }

    fn put_blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let d = Digest::of(bytes);
        block_on(
            self.raw()
                .push_blob(&self.reference(repo, "v1"), bytes.to_vec(), &d.to_string()),
        )
        .unwrap();
        d
    }

    /// Stores one signature as the attachment of `digest` in `repo`, laid out as
    /// containers/image writes it: the payload blob as a layer of the simple-signing media type
    /// with the signature annotation, a config listing it in `rootfs.diff_ids`, an OCI manifest
    /// tagged `sha256-<hex>.sig`.
    fn put_attachment(&self, repo: &str, digest: &Digest, payload: &[u8], signature: &str) {
        let layer = self.put_blob(repo, payload);
        let config = format!(
            r#"{{"architecture":"","os":"","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{layer}"]}}}}"#
        );
        let config_digest = self.put_blob(repo, config.as_bytes());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest.to_string(),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": SIGNATURE_MEDIA_TYPE,
                "digest": layer.to_string(),
                "size": payload.len(),
                "annotations": {SIGNATURE_ANNOTATION: signature},
            }],
        });
        self.put_manifest(
            repo,
            &attachment_tag(digest),
            manifest.to_string().into_bytes(),
        );
    }
}

/// Runs `cmd` with a deadline; the process is killed if it overruns.
fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is it installed?)"));
    let deadline = Instant::now() + limit;
    // The pipes are small and the outputs short; poll until exit.
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "command failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Go signs a cosign payload for `digest` and `reference` with the key file; returns
/// (payload, base64 signature).
fn go_sign(key: &Path, passphrase: &str, digest: &Digest, reference: &str) -> (Vec<u8>, String) {
    let out = go(&[
        "sign",
        key.to_str().unwrap(),
        passphrase,
        &digest.to_string(),
        reference,
    ]);
    assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let payload = BASE64.decode(v["payload"].as_str().unwrap()).unwrap();
    (payload, v["signature"].as_str().unwrap().to_owned())
}

/// Go's verdict on a payload and signature.
fn go_verify(
    dir: &Path,
    public: &Path,
    payload: &[u8],
    signature: &str,
    digest: &Digest,
    reference: &str,
) -> Output {
    let file = dir.join("payload.json");
    std::fs::write(&file, payload).unwrap();
    go(&[
        "verify",
        public.to_str().unwrap(),
        file.to_str().unwrap(),
        signature,
        &digest.to_string(),
        reference,
    ])
}

fn only_reason(r: Result<SignedPayload, SigstoreError>) -> String {
    match r {
        Err(SigstoreError::Rejected { rejections, .. }) => {
            assert_eq!(rejections.reasons().len(), 1, "{rejections}");
            format!("{:?}", rejections.reasons()[0])
        }
        other => panic!("expected a rejected signature, got {other:?}"),
    }
}

#[test]
fn go_signs_with_our_key_file_and_we_accept_it() {
    let env = Env::new();
    let k = keys();
    let rule = SignedIdentity::default();
    env.push_unsigned("sig/app:v1", b"signed in go");
    let digest = env.manifest_digest("sig/app:v1");
    let reference = env.image("sig/app:v1");

    // Go opens our key file with go-tuf's `encrypted` (as containers/image 5.23 does).
    let (payload, signature) = go_sign(&k.private, PASSPHRASE, &digest, &reference);
    env.put_attachment("sig/app", &digest, &payload, &signature);
    let p = env
        .verify("sig/app:v1", &[k.key.public_key()], &rule)
        .unwrap();
    assert_eq!(p.docker_reference, reference);
    assert_eq!(p.manifest_digest, digest);
    assert_eq!(p.creator.as_deref(), Some("go interop helper"));

    // Another key: refused by the cryptographic check.
    let other = CosignPrivateKey::generate().public_key();
    let reason = only_reason(env.verify("sig/app:v1", std::slice::from_ref(&other), &rule));
    assert!(reason.contains("Cryptographic"), "{reason}");
    // Either of several trusted keys is enough.
    env.verify("sig/app:v1", &[other, k.key.public_key()], &rule)
        .unwrap();

    // A genuine signature that names another repository: refused by matchRepoDigestOrExact,
    // accepted by an exactRepository rule naming that repository.
    let (payload, signature) = go_sign(
        &k.private,
        PASSPHRASE,
        &digest,
        &env.image("sig/elsewhere:v1"),
    );
    env.put_attachment("sig/app", &digest, &payload, &signature);
    let reason = only_reason(env.verify("sig/app:v1", &[k.key.public_key()], &rule));
    assert!(reason.contains("Identity"), "{reason}");
    env.verify(
        "sig/app:v1",
        &[k.key.public_key()],
        &SignedIdentity::ExactRepository {
            docker_repository: env.image("sig/elsewhere"),
        },
    )
    .unwrap();

    // Go refuses our key file with the wrong passphrase: the passphrase really seals it.
    let out = go(&[
        "sign",
        k.private.to_str().unwrap(),
        "wrong",
        &digest.to_string(),
        &reference,
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("decrypt"), "{}", stderr(&out));
}

#[test]
fn our_signature_verifies_in_go() {
    let env = Env::new();
    let k = keys();
    env.push_unsigned("mine/app:v1", b"signed by tsuba");
    assert!(matches!(
        env.verify(
            "mine/app:v1",
            &[k.key.public_key()],
            &SignedIdentity::default()
        ),
        Err(SigstoreError::NoSignatures { .. })
    ));

    let registry = env.registry();
    let signed = block_on(sign_image(&registry, &env.image("mine/app:v1"), &k.key)).unwrap();
    let digest = env.manifest_digest("mine/app:v1");
    assert_eq!(signed.manifest_digest, digest);
    assert_eq!(signed.attachment_tag, attachment_tag(&digest));
    assert_eq!(signed.docker_reference, env.image("mine/app:v1"));
    env.verify(
        "mine/app:v1",
        &[k.key.public_key()],
        &SignedIdentity::MatchExact,
    )
    .unwrap();

    // Read the attachment back with the raw client: it is an OCI manifest whose layer is the
    // payload with the signature annotation, and Go verifies it.
    let bytes = env.get_manifest("mine/app", &signed.attachment_tag);
    let m: Manifest = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(m.media_type.as_deref(), Some(MEDIA_TYPE_MANIFEST));
    assert_eq!(m.layers.len(), 1);
    assert_eq!(m.layers[0].media_type, SIGNATURE_MEDIA_TYPE);
    let config: serde_json::Value =
        serde_json::from_slice(&env.get_blob("mine/app", &m.config.digest)).unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"][0].as_str(),
        Some(m.layers[0].digest.to_string().as_str())
    );
    let payload = env.get_blob("mine/app", &m.layers[0].digest);
    let signature = &m.layers[0].annotations[SIGNATURE_ANNOTATION];
    let reference = env.image("mine/app:v1");
    assert_ok(&go_verify(
        env.path(),
        &k.public,
        &payload,
        signature,
        &digest,
        &reference,
    ));
    // Go's check is real: another key, a changed payload, another digest all fail.
    let other = CosignPrivateKey::generate();
    let other_pub = env.path().join("other.pub");
    std::fs::write(&other_pub, other.public_key().to_pem().unwrap()).unwrap();
    let out = go_verify(
        env.path(),
        &other_pub,
        &payload,
        signature,
        &digest,
        &reference,
    );
    assert!(
        stderr(&out).contains("verification failed"),
        "{}",
        stderr(&out)
    );
    let mut changed = payload.clone();
    let i = changed.len() - 2;
    changed[i] ^= 1;
    assert!(
        !go_verify(
            env.path(),
            &k.public,
            &changed,
            signature,
            &digest,
            &reference
        )
        .status
        .success()
    );
    let out = go_verify(
        env.path(),
        &k.public,
        &payload,
        signature,
        &Digest::of(b"x"),
        &reference,
    );
    assert!(stderr(&out).contains("payload digest"), "{}", stderr(&out));

    // A second signature is appended, not substituted: both keys verify afterwards.
    block_on(sign_image(&registry, &env.image("mine/app:v1"), &other)).unwrap();
    let m: Manifest =
        serde_json::from_slice(&env.get_manifest("mine/app", &signed.attachment_tag)).unwrap();
    assert_eq!(m.layers.len(), 2);
    for key in [&k.key, &other] {
        env.verify(
            "mine/app:v1",
            &[key.public_key()],
            &SignedIdentity::default(),
        )
        .unwrap();
    }

    // A name without tag or digest is not signed.
    assert!(matches!(
        block_on(sign_image(&registry, &env.image("mine/app"), &k.key)),
        Err(SigstoreError::NameOnly(_))
    ));
}

#[test]
fn keys_written_by_go_are_read_by_us() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("go.key");
    let public = dir.path().join("go.pub");
    assert_ok(&go(&[
        "keygen",
        key.to_str().unwrap(),
        public.to_str().unwrap(),
        "go pass",
        "ENCRYPTED SIGSTORE PRIVATE KEY",
    ]));
    let pem = std::fs::read(&key).unwrap();
    let ours = CosignPrivateKey::from_encrypted_pem(&pem, b"go pass").unwrap();
    let go_public = CosignPublicKey::from_pem(&std::fs::read(&public).unwrap()).unwrap();
    assert_eq!(ours.public_key(), go_public);

    // Our signature with Go's key verifies in Go.
    let digest = Digest::of(b"some manifest");
    let payload = SignedPayload::new(PayloadKind::Cosign, "reg.io/a/b:v1", digest).to_json();
    let signature = BASE64.encode(ours.sign(&payload).unwrap());
    assert_ok(&go_verify(
        dir.path(),
        &public,
        &payload,
        &signature,
        &digest,
        "reg.io/a/b:v1",
    ));

    // Wrong passphrase, truncated file, a public key where a private one belongs.
    assert!(matches!(
        CosignPrivateKey::from_encrypted_pem(&pem, b"wrong"),
        Err(CosignKeyError::Decrypt)
    ));
    assert!(CosignPrivateKey::from_encrypted_pem(&pem[..pem.len() / 2], b"go pass").is_err());
    assert!(matches!(
        CosignPrivateKey::from_encrypted_pem(&std::fs::read(&public).unwrap(), b""),
        Err(CosignKeyError::PemType(_))
    ));
    assert!(matches!(
        CosignPublicKey::from_pem(&pem),
        Err(CosignKeyError::PublicKey)
    ));
}

#[test]
fn misdirected_and_tampered_signatures_are_refused() {
    let env = Env::new();
    let k = keys();
    let key = [k.key.public_key()];
    let rule = SignedIdentity::default();
    let registry = env.registry();
    env.push_unsigned("t/x:a", b"image a");
    env.push_unsigned("t/x:b", b"image b");
    let signed = block_on(sign_image(&registry, &env.image("t/x:a"), &k.key)).unwrap();
    env.verify("t/x:a", &key, &rule).unwrap();
    let attachment = env.get_manifest("t/x", &signed.attachment_tag);

    // No signature for b at all.
    assert!(matches!(
        env.verify("t/x:b", &key, &rule),
        Err(SigstoreError::NoSignatures { .. })
    ));
    // a's signature placed where b's would be: it signs a's digest, not b's (and names a).
    let b = env.manifest_digest("t/x:b");
    env.put_manifest("t/x", &attachment_tag(&b), attachment.clone());
    let reason = only_reason(env.verify("t/x:b", &key, &SignedIdentity::MatchRepository));
    assert!(reason.contains("DigestMismatch"), "{reason}");

    // The signature annotation altered (still base64, one bit of the DER changed).
    let mut m: Manifest = serde_json::from_slice(&attachment).unwrap();
    let sig = m.layers[0]
        .annotations
        .get_mut(SIGNATURE_ANNOTATION)
        .unwrap();
    let mut raw = BASE64.decode(&*sig).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    *sig = BASE64.encode(&raw);
    env.put_manifest(
        "t/x",
        &signed.attachment_tag,
        serde_json::to_vec(&m).unwrap(),
    );
    let reason = only_reason(env.verify("t/x:a", &key, &rule));
    assert!(reason.contains("Cryptographic"), "{reason}");

    // A layer that is not a signature (an attestation, say) is not counted as one.
    let mut m: Manifest = serde_json::from_slice(&attachment).unwrap();
    m.layers[0].media_type = "application/vnd.dsse.envelope.v1+json".into();
    env.put_manifest(
        "t/x",
        &signed.attachment_tag,
        serde_json::to_vec(&m).unwrap(),
    );
    assert!(matches!(
        env.verify("t/x:a", &key, &rule),
        Err(SigstoreError::NoSignatures { .. })
    ));

    // Back to the genuine manifest, then the payload blob altered in the registry's storage:
    // its digest no longer matches, so it is refused before any signature check.
    env.put_manifest("t/x", &signed.attachment_tag, attachment.clone());
    env.verify("t/x:a", &key, &rule).unwrap();
    let original: Manifest = serde_json::from_slice(&attachment).unwrap();
    let blob = env.reg.blob_file(&original.layers[0].digest);
    let mut bytes = std::fs::read(&blob).unwrap();
    let i = bytes.len() - 5;
    bytes[i] ^= 1;
    std::fs::write(&blob, &bytes).unwrap();
    match env.verify("t/x:a", &key, &rule) {
        Err(SigstoreError::Registry(e)) => {
            assert!(matches!(*e, PullError::DigestMismatch { .. }), "{e:?}");
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
}

#[test]
fn a_sigstore_signed_policy_gates_the_pull() {
    let env = Env::new();
    let k = keys();
    let registry = env.registry();
    env.push_unsigned("p/signed:v1", b"allowed content");
    env.push_unsigned("p/unsigned:v1", b"never unpacked");
    block_on(sign_image(&registry, &env.image("p/signed:v1"), &k.key)).unwrap();

    let key_path = serde_json::json!({
        "type": "sigstoreSigned",
        "keyPath": k.public,
        "signedIdentity": {"type": "matchRepoDigestOrExact"}
    });
    let key_data = serde_json::json!({
        "type": "sigstoreSigned",
        "keyData": BASE64.encode(std::fs::read(&k.public).unwrap()),
    });
    for requirement in [key_path, key_data] {
        let policy = Policy::from_json(
            serde_json::json!({
                "default": [{"type": "reject"}],
                "transports": {"docker": {format!("{}/p", env.reg.addr): [requirement]}}
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let pull = |image: &str, rootfs: &Path| {
            std::fs::create_dir_all(rootfs).unwrap();
            block_on(registry.pull(
                &env.image(image),
                &policy,
                &DecryptConfig::default(),
                rootfs,
                &UnpackOptions::default(),
                None,
            ))
        };
        let ok = env.path().join("rootfs-ok");
        let _ = std::fs::remove_dir_all(&ok);
        pull("p/signed:v1", &ok).unwrap();
        assert_eq!(
            std::fs::read(ok.join("etc/content")).unwrap(),
            b"allowed content"
        );
        // Refused before any layer is fetched: nothing is unpacked.
        let refused = env.path().join("rootfs-refused");
        let _ = std::fs::remove_dir_all(&refused);
        let err = pull("p/unsigned:v1", &refused).unwrap_err();
        assert!(matches!(err, PullError::Refused(_)), "{err:?}");
        let chain = format!("{:?}", err);
        assert!(chain.contains("NoSignatures"), "{chain}");
        assert_eq!(std::fs::read_dir(&refused).unwrap().count(), 0);
    }
}
