//! GPG simple signing interop: images signed by `skopeo copy --sign-by` (gpg keys made here,
//! signatures in a `file://` lookaside) satisfy a `signedBy` policy; unsigned images,
//! signatures by other keys, for other images or claiming other repositories, tampered
//! signatures and unmatched `signedIdentity` rules are refused before any layer is fetched.

#![allow(
    clippy::unwrap_used,
    reason = "integration test: a failed unwrap is a failed test"
)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use common::*;
use tsuba_image_rs::ocicrypt::DecryptConfig;
use tsuba_image_rs::signature::{
    DockerReference, GpgKeyring, KeyringError, LookasideConfig, PayloadKind, SignatureFailure,
    SignedIdentity, SignedPayload, SimpleSigningError, verify_simple_signing,
};
use tsuba_image_rs::{
    Digest, OciLayout, Policy, PolicyError, ProgressEvent, PullError, Registry, RegistryOptions,
    UnpackOptions,
};

/// A throwaway GnuPG home; its agent is stopped when dropped.
struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    fn new() -> Self {
        let home = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            home.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        Self { home }
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("GNUPGHOME", self.home.path());
        c
    }

    /// A new signing key (`ed25519` or `rsa3072`) without passphrase; its fingerprint.
    fn gen_key(&self, name: &str, algo: &str) -> String {
        run(self.cmd("gpg").args([
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--quick-gen-key",
            &format!("{name} <{name}@example.invalid>"),
            algo,
            "sign",
            "never",
        ]));
        let out = run(self
            .cmd("gpg")
            .args(["--batch", "--with-colons", "--list-keys", name]));
        out.lines()
            .find_map(|l| l.strip_prefix("fpr:::::::::"))
            .map(|f| f.trim_end_matches(':').to_owned())
            .unwrap()
    }

    /// The public key `fpr`, binary or armored.
    fn export(&self, fpr: &str, armor: bool) -> Vec<u8> {
        let mut c = self.cmd("gpg");
        c.args(["--batch", "--export"]);
        if armor {
            c.arg("--armor");
        }
        let out = c.arg(fpr).output().unwrap();
        assert!(out.status.success() && !out.stdout.is_empty());
        out.stdout
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = self
            .cmd("gpgconf")
            .args(["--kill", "all"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A registry, a GnuPG home and a lookaside directory that skopeo signs into.
struct Setup {
    reg: TestRegistry,
    gpg: Gpg,
    tmp: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let reg = TestRegistry::start();
        let tmp = tempfile::tempdir().unwrap();
        let sigs = tmp.path().join("sigs");
        std::fs::create_dir_all(&sigs).unwrap();
        let regd = tmp.path().join("registries.d");
        std::fs::create_dir_all(&regd).unwrap();
        std::fs::write(
            regd.join("test.yaml"),
            format!(
                "docker:\n  {}:\n    lookaside-staging: file://{}\n",
                reg.addr,
                sigs.display()
            ),
        )
        .unwrap();
        Self {
            reg,
            gpg: Gpg::new(),
            tmp,
        }
    }

    fn sigs(&self) -> PathBuf {
        self.tmp.path().join("sigs")
    }

    /// Pushes a one-layer image holding `content` as `repo` (e.g. `team/app:v1`), signed by
    /// `signer` (claiming `identity` when given).
    fn push(&self, repo: &str, content: &[u8], signer: Option<&str>, identity: Option<&str>) {
        let layout_dir = self
            .tmp
            .path()
            .join(format!("src-{}", repo.replace(['/', ':'], "-")));
        let layout = OciLayout::create(&layout_dir).unwrap();
        write_image(&layout, "v1", &[vec![("etc/content", content)]]);
        let mut cmd = self.gpg.cmd("skopeo");
        cmd.args(["copy", "--dest-tls-verify=false", "--registries.d"])
            .arg(self.tmp.path().join("registries.d"));
        if let Some(fpr) = signer {
            cmd.args(["--sign-by", fpr]);
        }
        if let Some(id) = identity {
            cmd.args(["--sign-identity", id]);
        }
        run(cmd
            .arg(oci_ref(&layout_dir, "v1"))
            .arg(self.reg.docker_ref(repo)));
    }

    /// Pushes a two-platform image index as `repo` with `skopeo copy --all`, signed by
    /// `signer`: this platform's manifest holds `content`, the other platform's `other`.
    /// Returns the index digest and this platform's manifest digest.
    fn push_multi_platform(&self, repo: &str, content: &[u8], signer: &str) -> (Digest, Digest) {
        let layout_dir = self
            .tmp
            .path()
            .join(format!("multi-{}", repo.replace(['/', ':'], "-")));
        let layout = OciLayout::create(&layout_dir).unwrap();
        let here = write_image(&layout, "here", &[vec![("etc/content", content)]]);
        let there = write_image(&layout, "there", &[vec![("etc/content", b"other\n")]]);
        let arch = tsuba_image_rs::oci::Platform::current().architecture;
        let other_arch = if arch == "arm64" { "amd64" } else { "arm64" };
        let entry = |d: &tsuba_image_rs::oci::Descriptor, arch: &str| {
            serde_json::json!({
                "mediaType": d.media_type, "digest": d.digest.to_string(), "size": d.size,
                "platform": {"architecture": arch, "os": "linux"},
            })
        };
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": tsuba_image_rs::oci::MEDIA_TYPE_INDEX,
            "manifests": [entry(&here, &arch), entry(&there, other_arch)],
        }))
        .unwrap();
        let (index_digest, size) = layout.write_blob(&index).unwrap();
        let mut desc = here.clone();
        desc.media_type = tsuba_image_rs::oci::MEDIA_TYPE_INDEX.into();
        desc.digest = index_digest;
        desc.size = size;
        desc.annotations.clear();
        layout.set_ref("v1", desc).unwrap();
        let mut cmd = self.gpg.cmd("skopeo");
        cmd.args(["copy", "--all", "--dest-tls-verify=false", "--registries.d"])
            .arg(self.tmp.path().join("registries.d"))
            .args(["--sign-by", signer]);
        run(cmd
            .arg(oci_ref(&layout_dir, "v1"))
            .arg(self.reg.docker_ref(repo)));
        (index_digest, here.digest)
    }

    fn image(&self, repo: &str) -> String {
        format!("{}/{repo}", self.reg.addr)
    }

    /// The keyring file holding `fpr`'s public key.
    fn keyring(&self, fpr: &str) -> PathBuf {
        let path = self.tmp.path().join(format!("{fpr}.gpg"));
        std::fs::write(&path, self.gpg.export(fpr, false)).unwrap();
        path
    }

    /// A policy requiring `signedBy` with `key` (a policy JSON fragment) for the registry,
    /// reading signatures from the lookaside directory.
    fn policy(&self, key: &str, identity: Option<&str>) -> Policy {
        let identity = identity.map_or(String::new(), |i| format!(r#","signedIdentity":{i}"#));
        let json = format!(
            r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{"{}":[
                {{"type":"signedBy","keyType":"GPGKeys",{key}{identity}}}]}}}}}}"#,
            self.reg.addr
        );
        Policy::from_json(json.as_bytes()).unwrap().with_lookaside(
            LookasideConfig::default()
                .with_namespace(&self.reg.addr, &format!("file://{}", self.sigs().display())),
        )
    }

    fn key_path_policy(&self, fpr: &str, identity: Option<&str>) -> Policy {
        let key = format!(r#""keyPath":"{}""#, self.keyring(fpr).display());
        self.policy(&key, identity)
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

    /// Pulls `repo` under `policy`; the result and the progress events seen.
    fn pull(
        &self,
        repo: &str,
        policy: &Policy,
    ) -> (Result<PathBuf, PullError>, Vec<ProgressEvent>) {
        let rootfs = self.tmp.path().join(format!("rootfs-{}", rand_suffix()));
        std::fs::create_dir_all(&rootfs).unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let progress: tsuba_image_rs::Progress = Arc::new(move |e| sink.lock().unwrap().push(e));
        let decrypt = DecryptConfig {
            jwe_keys: Vec::new(),
            provider: None,
        };
        let registry = self.registry();
        let result = block_on(async {
            tokio::time::timeout(
                Duration::from_secs(60),
                registry.pull(
                    &self.image(repo),
                    policy,
                    &decrypt,
                    &rootfs,
                    &UnpackOptions::default(),
                    Some(progress),
                ),
            )
            .await
            .expect("pull timed out")
        })
        .map(|_| rootfs.clone());
        let events = events.lock().unwrap().clone();
        (result, events)
    }

    /// Pulls `repo`, expecting a refusal before anything was fetched; the policy error.
    fn refused(&self, repo: &str, policy: &Policy) -> PolicyError {
        let (result, events) = self.pull(repo, policy);
        let err = match result {
            Ok(_) => panic!("{repo} was accepted"),
            Err(PullError::Refused(e)) => e,
            Err(e) => panic!("{repo}: unexpected error {e:?}"),
        };
        assert!(events.is_empty(), "fetched after refusal: {events:?}");
        *err.downcast::<PolicyError>().unwrap()
    }

    /// The directory of signatures for `repo`'s manifest.
    fn sig_dir(&self, repo_path: &str, digest: &Digest) -> PathBuf {
        self.sigs()
            .join(format!("{repo_path}@sha256={}", digest.hex()))
    }

    fn manifest_digest(&self, repo: &str) -> Digest {
        block_on(self.registry().resolve(&self.image(repo)))
            .unwrap()
            .manifest_digest
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

/// The per-signature reasons of a `signedBy` refusal.
fn reasons(e: &PolicyError) -> &[(usize, SignatureFailure)] {
    match e {
        PolicyError::SignedBy {
            source: SimpleSigningError::Rejected { reasons, .. },
            ..
        } => reasons,
        other => panic!("expected signature rejections, got {other:?}"),
    }
}

fn accepted(s: &Setup, repo: &str, policy: &Policy, content: &[u8]) {
    let (result, events) = s.pull(repo, policy);
    let rootfs = result.unwrap_or_else(|e| panic!("{repo} refused: {e:?}"));
    assert_eq!(std::fs::read(rootfs.join("etc/content")).unwrap(), content);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ProgressEvent::LayerDone { .. }))
    );
}

fn signed_image_is_accepted(algo: &str) {
    let s = Setup::new();
    let fpr = s.gpg.gen_key("signer", algo);
    s.push("team/app:v1", b"signed app\n", Some(&fpr), None);
    // keyPath, binary keyring.
    accepted(
        &s,
        "team/app:v1",
        &s.key_path_policy(&fpr, None),
        b"signed app\n",
    );
    // keyData, armored keyring.
    let data = base64::engine::general_purpose::STANDARD.encode(s.gpg.export(&fpr, true));
    let p = s.policy(&format!(r#""keyData":"{data}""#), None);
    accepted(&s, "team/app:v1", &p, b"signed app\n");
    // Matching identity rules.
    for rule in [
        r#"{"type":"matchExact"}"#.to_owned(),
        r#"{"type":"matchRepository"}"#.to_owned(),
        format!(
            r#"{{"type":"exactRepository","dockerRepository":"{}"}}"#,
            s.image("team/app")
        ),
        format!(
            r#"{{"type":"exactReference","dockerReference":"{}"}}"#,
            s.image("team/app:v1")
        ),
    ] {
        accepted(
            &s,
            "team/app:v1",
            &s.key_path_policy(&fpr, Some(&rule)),
            b"signed app\n",
        );
    }
    // Pulled by digest: matchRepoDigestOrExact accepts the tag's signature.
    let digest = s.manifest_digest("team/app:v1");
    accepted(
        &s,
        &format!("team/app@{digest}"),
        &s.key_path_policy(&fpr, None),
        b"signed app\n",
    );
}

#[test]
fn skopeo_ed25519_signature_satisfies_signed_by() {
    signed_image_is_accepted("ed25519");
}

#[test]
fn skopeo_rsa_signature_satisfies_signed_by() {
    signed_image_is_accepted("rsa3072");
}

#[test]
fn signed_by_refusals() {
    let s = Setup::new();
    let fpr = s.gpg.gen_key("trusted", "ed25519");
    let other = s.gpg.gen_key("stranger", "ed25519");
    s.push("team/app:v1", b"signed app\n", Some(&fpr), None);
    let policy = s.key_path_policy(&fpr, None);
    accepted(&s, "team/app:v1", &policy, b"signed app\n");
    let app_digest = s.manifest_digest("team/app:v1");
    let good_sig = std::fs::read(s.sig_dir("team/app", &app_digest).join("signature-1")).unwrap();

    // No signature at all.
    s.push("team/unsigned:v1", b"unsigned\n", None, None);
    assert!(matches!(
        s.refused("team/unsigned:v1", &policy),
        PolicyError::SignedBy {
            source: SimpleSigningError::NoSignatures,
            ..
        }
    ));

    // Signed by a key the policy does not trust.
    s.push("team/stranger:v1", b"stranger\n", Some(&other), None);
    let e = s.refused("team/stranger:v1", &policy);
    assert!(matches!(
        reasons(&e),
        [(1, SignatureFailure::UntrustedOrInvalid(_))]
    ));
    // …and the stranger's key alone accepts it (the refusal was about the key).
    accepted(
        &s,
        "team/stranger:v1",
        &s.key_path_policy(&other, None),
        b"stranger\n",
    );

    // A valid signature of another image, copied beside this one's manifest.
    let unsigned_digest = s.manifest_digest("team/unsigned:v1");
    let dir = s.sig_dir("team/unsigned", &unsigned_digest);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("signature-1"), &good_sig).unwrap();
    let e = s.refused("team/unsigned:v1", &policy);
    let msg = error_chain(&e);
    assert!(
        matches!(reasons(&e), [(1, SignatureFailure::Payload(_))]) && msg.contains("not sha256:"),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    // A signature claiming another repository for this very manifest.
    s.push(
        "team/claims:v1",
        b"claims\n",
        Some(&fpr),
        Some(&s.image("team/elsewhere:v1")),
    );
    let e = s.refused("team/claims:v1", &policy);
    let msg = error_chain(&e);
    assert!(
        msg.contains("matchRepoDigestOrExact") && msg.contains("team/elsewhere:v1"),
        "{msg}"
    );

    // An exactRepository rule naming another repository.
    let rule = format!(
        r#"{{"type":"exactRepository","dockerRepository":"{}"}}"#,
        s.image("team/other")
    );
    let e = s.refused("team/app:v1", &s.key_path_policy(&fpr, Some(&rule)));
    assert!(error_chain(&e).contains("exactRepository"));

    // Tampered signature bytes (each byte position class: header, body, signature tail) and
    // truncated ones; the good signature is restored afterwards.
    let sig_file = s.sig_dir("team/app", &app_digest).join("signature-1");
    for pos in [3, good_sig.len() / 2, good_sig.len() - 5] {
        let mut bad = good_sig.clone();
        bad[pos] ^= 0x40;
        std::fs::write(&sig_file, &bad).unwrap();
        let e = s.refused("team/app:v1", &policy);
        assert_eq!(reasons(&e).len(), 1, "{}", error_chain(&e));
    }
    std::fs::write(&sig_file, &good_sig[..good_sig.len() / 2]).unwrap();
    let e = s.refused("team/app:v1", &policy);
    assert_eq!(reasons(&e).len(), 1);
    // A bad signature before a good one is skipped.
    std::fs::write(&sig_file, b"garbage").unwrap();
    std::fs::write(sig_file.with_file_name("signature-2"), &good_sig).unwrap();
    accepted(&s, "team/app:v1", &policy, b"signed app\n");

    // No lookaside configured for the registry: refused, not accepted.
    let no_store = Policy::from_json(
        format!(
            r#"{{"default":[{{"type":"signedBy","keyType":"GPGKeys","keyPath":"{}"}}]}}"#,
            s.keyring(&fpr).display()
        )
        .as_bytes(),
    )
    .unwrap();
    assert!(matches!(
        s.refused("team/app:v1", &no_store),
        PolicyError::Lookaside { .. }
    ));
}

/// `gpg --sign` of `data` by `fpr` (what skopeo does, without a registry), at `time` when given
/// (gpg's `--faked-system-time`).
fn gpg_sign(gpg: &Gpg, fpr: &str, data: &[u8], time: Option<&str>) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("payload.json");
    let output = dir.path().join("signature");
    std::fs::write(&input, data).unwrap();
    let mut cmd = gpg.cmd("gpg");
    cmd.args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""]);
    if let Some(t) = time {
        cmd.args(["--faked-system-time", t]);
    }
    run(cmd
        .args(["--local-user", fpr, "--sign", "--output"])
        .arg(&output)
        .arg(&input));
    std::fs::read(output).unwrap()
}

#[test]
fn expired_and_revoked_keys_are_not_trusted() {
    let gpg = Gpg::new();
    let good = gpg.gen_key("good", "ed25519");
    // A key made in 2020 that expired a day later, and a key revoked with the revocation
    // certificate gpg wrote for it.
    run(gpg.cmd("gpg").args([
        "--batch",
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
        "--faked-system-time",
        "20200101T000000!",
        "--quick-gen-key",
        "expired <expired@example.invalid>",
        "ed25519",
        "sign",
        "1d",
    ]));
    let expired = gpg
        .cmd("gpg")
        .args(["--batch", "--with-colons", "--list-keys", "expired"])
        .output()
        .unwrap();
    let expired = String::from_utf8_lossy(&expired.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("fpr:::::::::"))
        .map(|f| f.trim_end_matches(':').to_owned())
        .unwrap();
    let revoked = gpg.gen_key("revoked", "ed25519");

    let manifest = Digest::of(b"manifest");
    let payload =
        SignedPayload::new(PayloadKind::SimpleSigning, "reg.io/team/app:v1", manifest).to_json();
    let by_good = gpg_sign(&gpg, &good, &payload, None);
    let by_expired = gpg_sign(&gpg, &expired, &payload, Some("20200101T000100!"));
    let by_revoked = gpg_sign(&gpg, &revoked, &payload, None);
    let rev = std::fs::read_to_string(
        gpg.home
            .path()
            .join(format!("openpgp-revocs.d/{revoked}.rev")),
    )
    .unwrap();
    let rev_file = gpg.home.path().join("revoke.asc");
    std::fs::write(&rev_file, rev.replace(":-----BEGIN", "-----BEGIN")).unwrap();
    run(gpg.cmd("gpg").args(["--batch", "--import"]).arg(&rev_file));

    let mut all = gpg.export(&good, false);
    all.extend(gpg.export(&expired, false));
    all.extend(gpg.export(&revoked, false));
    let ring = GpgKeyring::from_bytes(&all, "all").unwrap();
    assert_eq!(ring.fingerprints(), vec![good.clone()]);
    let pulled = DockerReference::parse_pulled("reg.io/team/app:v1").unwrap();
    let verify = |sig: &[u8]| {
        verify_simple_signing(
            &ring,
            &[sig.to_vec()],
            &manifest,
            &SignedIdentity::default(),
            &pulled,
        )
    };
    assert_eq!(verify(&by_good).unwrap().signer, good);
    for sig in [&by_expired, &by_revoked] {
        match verify(sig) {
            Err(SimpleSigningError::Rejected { reasons, .. }) => {
                assert!(matches!(
                    reasons[..],
                    [(1, SignatureFailure::UntrustedOrInvalid(_))]
                ));
            }
            other => panic!("{other:?}"),
        }
    }
    // A keyring holding only an expired key is refused when loaded.
    assert!(matches!(
        GpgKeyring::from_bytes(&gpg.export(&expired, false), "expired"),
        Err(KeyringError::Empty(_))
    ));
}

/// The error and its causes, joined.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// `skopeo copy --all --sign-by` signs the image index, as containers/image does; the pull of
/// this platform's manifest is accepted through that signature (the index names the manifest
/// by a digest the pull checks), and a signature on the platform manifest alone is not what the
/// policy looks for.
#[test]
fn signature_on_a_multi_platform_index_covers_its_manifest() {
    let s = Setup::new();
    let fpr = s.gpg.gen_key("signer", "ed25519");
    let (index, platform) = s.push_multi_platform("team/multi:v1", b"multi here\n", &fpr);
    assert_ne!(index, platform);
    let resolved = block_on(s.registry().resolve(&s.image("team/multi:v1"))).unwrap();
    assert_eq!(resolved.signed_digest, index);
    assert_eq!(resolved.manifest_digest, platform);
    assert!(
        s.sig_dir("team/multi", &index)
            .join("signature-1")
            .is_file()
    );

    let policy = s.key_path_policy(&fpr, None);
    accepted(&s, "team/multi:v1", &policy, b"multi here\n");
    // Pulled by the index digest too (matchRepoDigestOrExact).
    accepted(&s, &format!("team/multi@{index}"), &policy, b"multi here\n");

    // skopeo also signs each instance; with the index's signature gone, only the platform
    // manifest's remains. containers/image checks the top-level manifest, and so does the
    // policy: nothing under the index digest, refused before fetching a layer.
    assert!(
        s.sig_dir("team/multi", &platform)
            .join("signature-1")
            .is_file()
    );
    std::fs::remove_dir_all(s.sig_dir("team/multi", &index)).unwrap();
    assert!(matches!(
        s.refused("team/multi:v1", &policy),
        PolicyError::SignedBy {
            source: SimpleSigningError::NoSignatures,
            ..
        }
    ));
}
