//! End to end, owner to guest, with the key broker: `tsuba image encrypt --key-provider` uploads
//! the key-encryption key to a `tsuba kbs serve` broker and pushes the encrypted image to a
//! distribution registry on loopback; `tsuba image pull --kbs-url --attester sim-snp` attests
//! with evidence from tee-sim's device server, gets the key, decrypts and unpacks. Refusals: a
//! launch measurement that is not a reference value, a wrong key in the broker, a registry that
//! needs credentials the broker does not give.
//!
//! Needs: docker-registry, skopeo, umoci (Debian packages).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration test: a failed unwrap is a failed test"
)]

mod encrypt_support;

use std::path::Path;
use std::sync::Arc;

use encrypt_support::{
    Broker, Registry, SimDevice, inspect_raw, run_ok, source_image, tree, tsuba,
};

const MEASUREMENT: [u8; 48] = [0x5a; 48];
const KID: &str = "kbs:///default/image-key/demo";

fn accept_anything(dir: &Path) -> String {
    let path = dir.join("policy.json");
    std::fs::write(&path, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
    path.display().to_string()
}

/// A policy that wants a cosign signature by `cosign.pub` in the test dir.
fn sigstore_policy(dir: &Path) -> String {
    let path = dir.join("sigstore-policy.json");
    let policy = serde_json::json!({"default": [{
        "type": "sigstoreSigned",
        "keyPath": dir.join("cosign.pub"),
    }]});
    std::fs::write(&path, policy.to_string()).unwrap();
    path.display().to_string()
}

/// Pull `image` from `registry` through the broker (with `--sigstore` in `extra`, under a
/// policy that wants the owner's cosign signature), with the evidence of `device`.
fn pull(
    t: &Path,
    registry: &Registry,
    broker: &Broker,
    device: &SimDevice,
    image: &str,
    rootfs: &Path,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "image".to_owned(),
        "pull".into(),
        format!("{}/{image}", registry.addr),
        "--rootfs".into(),
        rootfs.display().to_string(),
        "--policy".into(),
        if extra.contains(&"--sigstore") {
            sigstore_policy(t)
        } else {
            accept_anything(t)
        },
        "--plain-http".into(),
        registry.addr.clone(),
        "--kbs-url".into(),
        broker.url(),
        "--kbs-insecure-plain-http".into(),
        "--attester".into(),
        "sim-snp".into(),
        "--sim-device".into(),
        device.socket.display().to_string(),
    ];
    args.extend(
        extra
            .iter()
            .filter(|s| **s != "--sigstore")
            .map(|s| (*s).to_owned()),
    );
    tsuba(&args)
}

fn is_empty(dir: &Path) -> bool {
    !dir.exists() || std::fs::read_dir(dir).unwrap().next().is_none()
}

#[test]
fn key_provider_image_is_released_by_attestation_and_refused_otherwise() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap(),
    );
    let registry = Registry::start(None);
    let broker = Broker::start(t, &[&hex::encode(MEASUREMENT)]);
    let good = SimDevice::start(&rt, &broker.sim_dir, &t.join("good.sock"), MEASUREMENT);
    let bad = SimDevice::start(&rt, &broker.sim_dir, &t.join("bad.sock"), [0x11; 48]);

    // The owner's plaintext image, in the registry.
    let bundle = source_image(&t.join("src"), t);
    run_ok(
        std::process::Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:v1", t.join("src").display()))
            .arg(format!("docker://{}/plain:v1", registry.addr)),
    );

    // The owner's cosign key pair.
    std::fs::write(t.join("passphrase"), "owner passphrase\n").unwrap();
    let out = tsuba(&[
        "image",
        "keygen",
        "--out",
        &t.join("cosign").display().to_string(),
        "--passphrase-file",
        &t.join("passphrase").display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Encrypt from the registry to the registry; the KEK is generated and uploaded, the
    // pushed image signed.
    let kek_out = t.join("kek");
    let out = tsuba(&[
        "image",
        "encrypt",
        "--sign-key",
        &t.join("cosign.key").display().to_string(),
        "--sign-passphrase-file",
        &t.join("passphrase").display().to_string(),
        "--from",
        &format!("docker://{}/plain:v1", registry.addr),
        "--to",
        &format!("docker://{}/secret:v1", registry.addr),
        "--plain-http",
        &registry.addr,
        "--key-provider",
        KID,
        "--kek-out",
        &kek_out.display().to_string(),
        "--kbs-admin-url",
        &broker.url(),
        "--kbs-admin-key",
        &broker.admin_key.display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kek = std::fs::read(&kek_out).unwrap();
    assert_eq!(kek.len(), 32);

    // Every layer is encrypted, each wrapped in the key-provider form under the key id.
    let plain = inspect_raw(&registry, "plain:v1");
    let secret = inspect_raw(&registry, "secret:v1");
    let (plain_layers, secret_layers) = (
        plain["layers"].as_array().unwrap(),
        secret["layers"].as_array().unwrap(),
    );
    assert_eq!(plain_layers.len(), 2);
    assert_eq!(secret_layers.len(), plain_layers.len());
    let mut packets = Vec::new();
    for (p, s) in plain_layers.iter().zip(secret_layers) {
        assert_eq!(
            s["mediaType"].as_str().unwrap(),
            format!("{}+encrypted", p["mediaType"].as_str().unwrap())
        );
        assert_ne!(s["digest"], p["digest"]);
        let packet =
            s["annotations"]["org.opencontainers.image.enc.keys.provider.attestation-agent"]
                .as_str()
                .unwrap();
        let packet: serde_json::Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::STANDARD, packet).unwrap(),
        )
        .unwrap();
        assert_eq!(packet["kid"], KID);
        packets.push(packet["wrapped_data"].clone());
    }
    assert_ne!(packets[0], packets[1], "each layer has its own wrapped key");

    // A guest whose measurement is a reference value gets the key: the rootfs is the
    // plaintext image, file for file.
    let rootfs = t.join("rootfs");
    let out = pull(
        t,
        &registry,
        &broker,
        &good,
        "secret:v1",
        &rootfs,
        &["--sigstore"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tree(&rootfs), tree(&bundle.join("rootfs")));
    assert!(!tree(&rootfs).is_empty());

    // The unsigned plaintext image does not satisfy the signature policy.
    let unsigned = t.join("unsigned");
    let out = pull(
        t,
        &registry,
        &broker,
        &good,
        "plain:v1",
        &unsigned,
        &["--sigstore"],
    );
    assert!(!out.status.success());
    assert!(is_empty(&unsigned));

    // Another measurement: the broker refuses, with its reason, and nothing is unpacked.
    let refused = t.join("refused");
    let out = pull(t, &registry, &broker, &bad, "secret:v1", &refused, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("measurement is not a reference value"),
        "{stderr}"
    );
    assert!(is_empty(&refused));

    // A different KEK in the broker under the same id: the unwrap fails, nothing unpacked.
    std::fs::write(t.join("wrong-kek"), [0x42u8; 32]).unwrap();
    broker.admin(&[
        "set-resource",
        "default/image-key/demo",
        &t.join("wrong-kek").display().to_string(),
    ]);
    let wrong = t.join("wrong");
    let out = pull(t, &registry, &broker, &good, "secret:v1", &wrong, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("wrong key-encryption key"), "{stderr}");
    assert!(is_empty(&wrong));
    drop(rt);
}

#[test]
fn registry_credentials_come_from_the_broker() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap(),
    );
    let htpasswd = format!("owner:{}\n", bcrypt::hash("owner-password", 4).unwrap());
    let registry = Registry::start(Some(&htpasswd));
    let broker = Broker::start(t, &[&hex::encode(MEASUREMENT)]);
    let good = SimDevice::start(&rt, &broker.sim_dir, &t.join("good.sock"), MEASUREMENT);
    let bundle = source_image(&t.join("src"), t);

    // From a layout to the authenticated registry, with a KEK given by the owner.
    std::fs::write(t.join("kek"), [0x24u8; 32]).unwrap();
    let out = tsuba_env(
        &[
            "image",
            "encrypt",
            "--from",
            &format!("oci:{}:v1", t.join("src").display()),
            "--to",
            &format!("docker://{}/private/app:v1", registry.addr),
            "--plain-http",
            &registry.addr,
            "--dest-username",
            "owner",
            "--dest-password-env",
            "REGISTRY_PASSWORD",
            "--insecure-credentials-over-http",
            "--key-provider",
            KID,
            "--kek",
            &t.join("kek").display().to_string(),
            "--kbs-admin-url",
            &broker.url(),
            "--kbs-admin-key",
            &broker.admin_key.display().to_string(),
        ],
        &[("REGISTRY_PASSWORD", "owner-password")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without credentials the registry refuses; nothing is unpacked.
    let anonymous = t.join("anonymous");
    let out = pull(
        t,
        &registry,
        &broker,
        &good,
        "private/app:v1",
        &anonymous,
        &[],
    );
    assert!(!out.status.success());
    assert!(is_empty(&anonymous));

    // The auth file as a broker resource, fetched after attestation.
    let auth = serde_json::json!({"auths": {
        registry.addr.clone(): {"auth": base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD, "owner:owner-password")},
    }});
    std::fs::write(t.join("auth.json"), auth.to_string()).unwrap();
    broker.admin(&[
        "set-resource",
        "default/credential/registry",
        &t.join("auth.json").display().to_string(),
    ]);
    // The broker's password is not sent to the plain-HTTP registry without the explicit
    // insecure option.
    let cleartext = t.join("cleartext");
    let out = pull(
        t,
        &registry,
        &broker,
        &good,
        "private/app:v1",
        &cleartext,
        &[
            "--registry-auth-resource",
            "kbs:///default/credential/registry",
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to send registry credentials"),
        "{stderr}"
    );
    assert!(is_empty(&cleartext));
    let rootfs = t.join("rootfs");
    let out = pull(
        t,
        &registry,
        &broker,
        &good,
        "private/app:v1",
        &rootfs,
        &[
            "--registry-auth-resource",
            "kbs:///default/credential/registry",
            "--insecure-credentials-over-http",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tree(&rootfs), tree(&bundle.join("rootfs")));

    // A wrong password in the broker's auth file: refused by the registry.
    let auth = serde_json::json!({"auths": {
        registry.addr.clone(): {"auth": base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD, "owner:wrong")},
    }});
    std::fs::write(t.join("auth.json"), auth.to_string()).unwrap();
    broker.admin(&[
        "set-resource",
        "default/credential/registry",
        &t.join("auth.json").display().to_string(),
    ]);
    let denied = t.join("denied");
    let out = pull(
        t,
        &registry,
        &broker,
        &good,
        "private/app:v1",
        &denied,
        &[
            "--registry-auth-resource",
            "kbs:///default/credential/registry",
            "--insecure-credentials-over-http",
        ],
    );
    assert!(!out.status.success());
    assert!(is_empty(&denied));
    drop(rt);
}

fn tsuba_env(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    encrypt_support::tsuba_with_env(args, env)
}
