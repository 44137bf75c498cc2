//! The guest's image pipeline (`tsuba_image_rs`): ocicrypt key unwrapping (JWE and key-provider
//! packets), OCI manifests and indexes, layer unpacking, containers-policy.json, simple-signing
//! signatures and payloads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tsuba_image_rs::oci::{self, ImageConfig, Index, Manifest, Platform};
use tsuba_image_rs::ocicrypt::{
    DecryptConfig, KeyId, PrivateKey, StaticKeyProvider, unwrap_layer_key,
};
use tsuba_image_rs::signature::{
    DockerReference, GpgKeyring, PayloadKind, SignedIdentity, SignedPayload, open_signature,
    verify_simple_signing,
};
use tsuba_image_rs::{
    DeviceNodes, Digest, Ownership, Policy, UnpackOptions, media_type_of, unpack_layer_sniffed,
};

use crate::{block_on, split_selector};

/// The test-only P-256 key the `ocicrypt_keys` seeds are wrapped for (keys/PROVENANCE.md).
pub const OCICRYPT_KEY_PEM: &str = include_str!("../keys/ocicrypt-p256.pem");
/// The key-provider id and key-encryption key of the `ocicrypt_keys` seeds.
pub const PROVIDER_KEY_ID: &str = "kbs:///default/key/fuzz";
/// The key-encryption key under [`PROVIDER_KEY_ID`] (test only).
pub const PROVIDER_KEK: [u8; 32] = [0x42; 32];
/// The test-only OpenPGP public key the `simple_signing` seeds are signed with.
pub const SIGNING_KEYRING: &[u8] = include_bytes!("../keys/simple-signing.pub.asc");
/// The manifest digest the `simple_signing` payload seeds sign.
pub const SIGNED_MANIFEST: &str =
    "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// The reference the `simple_signing` payload seeds sign.
pub const SIGNED_REFERENCE: &str = "registry.example:5000/fuzz/app:1";

/// `unwrap_layer_key` over a layer descriptor's annotations (a JSON object of strings), with
/// the test JWE key and a key provider holding the test key-encryption key.
pub(crate) fn ocicrypt_keys(data: &[u8]) {
    static CONFIG: OnceLock<DecryptConfig> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let key = PrivateKey::from_pem(OCICRYPT_KEY_PEM)
            .unwrap_or_else(|e| panic!("cannot read the test ocicrypt key: {e}"));
        let id = KeyId::parse(PROVIDER_KEY_ID)
            .unwrap_or_else(|e| panic!("cannot read the test key id: {e}"));
        let mut provider = StaticKeyProvider::default();
        provider.insert(id, PROVIDER_KEK.to_vec());
        DecryptConfig {
            jwe_keys: vec![key],
            provider: Some(Arc::new(provider)),
        }
    });
    let Ok(annotations) = serde_json::from_slice::<BTreeMap<String, String>>(data) else {
        return;
    };
    let _ = block_on(unwrap_layer_key(&annotations, config));
}

/// A registry's manifest or index, classified and parsed as `Registry::resolve` does; a parsed
/// document must re-serialise without loss (the encryption path rewrites manifests).
pub(crate) fn oci_manifest(data: &[u8]) {
    if let Ok(config) = serde_json::from_slice::<ImageConfig>(data) {
        roundtrip(&config, "image config");
    }
    let Ok(media_type) = media_type_of(data) else {
        return;
    };
    if oci::is_index(&media_type) {
        let Ok(index) = serde_json::from_slice::<Index>(data) else {
            return;
        };
        let want = Platform::current();
        let _ = index
            .manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| want.matches(p)));
        roundtrip(&index, "index");
    } else {
        let Ok(manifest) = serde_json::from_slice::<Manifest>(data) else {
            return;
        };
        for layer in &manifest.layers {
            let _ = tsuba_image_rs::ocicrypt::is_encrypted(&layer.media_type);
            let _ = tsuba_image_rs::ocicrypt::decrypted_media_type(&layer.media_type);
        }
        roundtrip(&manifest, "manifest");
    }
}

fn roundtrip<T>(value: &T, what: &str)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = serde_json::to_vec(value)
        .unwrap_or_else(|e| panic!("a parsed {what} does not serialise: {e}"));
    let again: T = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("a serialised {what} does not parse: {e}"));
    assert_eq!(*value, again, "{what} changed across serialise/parse");
}

struct Scratch {
    base: tempfile::TempDir,
    next: AtomicU64,
}

const CANARY: &[u8] = b"outside the rootfs: must never change";

/// `unpack_layer_sniffed` of a layer blob (plain, gzip or zstd tar) into a fresh rootfs inside
/// a scratch folder that also holds a canary file. Whatever the layer says, nothing may appear
/// or change in the scratch folder outside the rootfs.
pub(crate) fn tar_unpack(data: &[u8]) {
    static SCRATCH: OnceLock<Scratch> = OnceLock::new();
    let scratch = SCRATCH.get_or_init(|| {
        let base =
            tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a scratch folder: {e}"));
        std::fs::write(base.path().join("canary"), CANARY)
            .unwrap_or_else(|e| panic!("cannot write the canary: {e}"));
        Scratch {
            base,
            next: AtomicU64::new(0),
        }
    });
    let base = scratch.base.path();
    let rootfs = base.join(format!(
        "rootfs{}",
        scratch.next.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&rootfs).unwrap_or_else(|e| panic!("cannot create {rootfs:?}: {e}"));
    let options = UnpackOptions {
        max_uncompressed_bytes: 64 << 20,
        max_entries: 10_000,
        max_path_len: 4096,
        devices: DeviceNodes::Refuse,
        ownership: Ownership::Ignore,
    };
    let _ = unpack_layer_sniffed(data, &rootfs, None, &options);
    check_scratch(base, &rootfs);
    remove_all(&rootfs);
}

fn check_scratch(base: &Path, rootfs: &Path) {
    let canary = std::fs::read(base.join("canary"))
        .unwrap_or_else(|e| panic!("the canary outside the rootfs is gone: {e}"));
    assert_eq!(canary, CANARY, "the canary outside the rootfs was changed");
    let entries: Vec<PathBuf> = std::fs::read_dir(base)
        .unwrap_or_else(|e| panic!("cannot list the scratch folder: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    for entry in entries {
        assert!(
            entry == rootfs || entry == base.join("canary"),
            "the layer created {entry:?} outside the rootfs"
        );
    }
}

fn remove_all(rootfs: &Path) {
    // A layer may leave directories without write permission; root removes them anyway, others
    // get them back first.
    if std::fs::remove_dir_all(rootfs).is_err() {
        let _ = std::process::Command::new("chmod")
            .args(["-R", "u+rwx"])
            .arg(rootfs)
            .status();
        let _ = std::fs::remove_dir_all(rootfs);
    }
}

/// `Policy::from_json` of a containers-policy.json, then the requirements for a few references.
pub(crate) fn containers_policy(data: &[u8]) {
    let Ok(policy) = Policy::from_json(data) else {
        return;
    };
    for reference in [
        "docker.io/library/busybox:latest",
        "10.0.2.2:5000/app:1",
        SIGNED_REFERENCE,
        "quay.io/ns/repo@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        let _ = policy.requirements_for(reference);
    }
}

/// Simple signing: the first byte selects an OpenPGP signature (opened and verified against
/// the test keyring, its payload checked), a bare simple-signing or cosign payload, or a
/// keyring.
pub(crate) fn simple_signing(data: &[u8]) {
    struct Fixed {
        keyring: GpgKeyring,
        manifest: Digest,
        pulled: DockerReference,
    }
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    let fixed = FIXED.get_or_init(|| Fixed {
        keyring: GpgKeyring::from_bytes(SIGNING_KEYRING, "fuzz keyring")
            .unwrap_or_else(|e| panic!("cannot read the test keyring: {e}")),
        manifest: SIGNED_MANIFEST
            .parse()
            .unwrap_or_else(|e| panic!("bad test digest: {e}")),
        pulled: DockerReference::parse_pulled(SIGNED_REFERENCE)
            .unwrap_or_else(|e| panic!("bad test reference: {e}")),
    });
    let rule = SignedIdentity::default();
    let (selector, body) = split_selector(data);
    match selector % 4 {
        0 => {
            if let Ok(verified) = open_signature(&fixed.keyring, body) {
                let _ = verified
                    .payload
                    .check_claims(&fixed.manifest, &rule, &fixed.pulled);
            }
            let _ = verify_simple_signing(
                &fixed.keyring,
                &[body.to_vec()],
                &fixed.manifest,
                &rule,
                &fixed.pulled,
            );
        }
        1 | 2 => {
            let kind = if selector % 4 == 1 {
                PayloadKind::SimpleSigning
            } else {
                PayloadKind::Cosign
            };
            if let Ok(payload) = SignedPayload::parse(body, kind) {
                let _ = payload.check_claims(&fixed.manifest, &rule, &fixed.pulled);
                let again = SignedPayload::parse(&payload.to_json(), kind)
                    .unwrap_or_else(|e| panic!("a parsed payload does not parse back: {e}"));
                assert_eq!(payload, again, "payload changed across to_json/parse");
            }
        }
        _ => {
            let _ = GpgKeyring::from_bytes(body, "fuzzed keyring");
        }
    }
}
