//! Copying images between an OCI layout and a real distribution registry on loopback (the
//! owner's side of `tsuba image encrypt`): a push keeps the manifest digest, a second push
//! re-uses the registry's blobs, a fetch into a layout checks every digest, and tampered blobs
//! (in the registry or in the layout) are refused without being named.

#![allow(
    clippy::unwrap_used,
    reason = "integration test: a failed unwrap is a failed test"
)]

mod common;

use std::time::Duration;

use common::*;
use tsuba_image_rs::{CopyError, OciLayout, PullError, Registry, RegistryOptions};

fn registry_for(reg: &TestRegistry) -> Registry {
    Registry::new(RegistryOptions {
        plain_http: vec![reg.addr.clone()],
        request_timeout: Duration::from_secs(10),
        attempts: 1,
        ..RegistryOptions::default()
    })
    .unwrap()
}

#[test]
fn push_then_fetch_keeps_every_digest() {
    let reg = TestRegistry::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = OciLayout::create(t.join("src")).unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
    let desc = write_image(
        &src,
        "v1",
        &[vec![("a", b"one"), ("big", &big)], vec![("b", b"two")]],
    );
    let registry = registry_for(&reg);
    let dest = format!("{}/app:v1", reg.addr);

    let pushed = block_on(registry.push_layout(&src, "v1", &dest)).unwrap();
    assert_eq!(
        pushed, desc.digest,
        "the manifest bytes are pushed as stored"
    );
    // Again, now that the registry has every blob.
    let again = block_on(registry.push_layout(&src, "v1", &format!("{}/app:v2", reg.addr)));
    assert_eq!(again.unwrap(), desc.digest);

    let dst = OciLayout::create(t.join("dst")).unwrap();
    let fetched = block_on(registry.pull_to_layout(&dest, &dst, "copy")).unwrap();
    assert_eq!(fetched.digest, desc.digest);
    let (ours, theirs) = (manifest(&src, "v1"), manifest(&dst, "copy"));
    assert_eq!(ours.layers.len(), 2);
    for d in ours.layers.iter().chain(std::iter::once(&ours.config)) {
        assert_eq!(
            std::fs::read(src.blob_path(&d.digest)).unwrap(),
            std::fs::read(dst.blob_path(&d.digest)).unwrap()
        );
    }
    assert_eq!(theirs.layers.len(), ours.layers.len());
}

#[test]
fn destinations_need_a_tag() {
    let reg = TestRegistry::start();
    let tmp = tempfile::tempdir().unwrap();
    let src = OciLayout::create(tmp.path().join("src")).unwrap();
    let desc = write_image(&src, "v1", &[vec![("a", b"one")]]);
    let registry = registry_for(&reg);
    for bad in [
        format!("{}/app@{}", reg.addr, desc.digest),
        "not a reference".to_owned(),
    ] {
        assert!(
            matches!(
                block_on(registry.push_layout(&src, "v1", &bad)),
                Err(CopyError::Reference(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn tampered_blobs_are_refused_on_fetch_and_on_push() {
    let reg = TestRegistry::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = OciLayout::create(t.join("src")).unwrap();
    write_image(&src, "v1", &[vec![("a", b"one")], vec![("b", b"two")]]);
    let registry = registry_for(&reg);
    let dest = format!("{}/app:v1", reg.addr);
    block_on(registry.push_layout(&src, "v1", &dest)).unwrap();

    // A layer changed in the registry's storage (same length): the fetch fails and the layout
    // neither holds that blob nor names the image.
    let layer = manifest(&src, "v1").layers[1].clone();
    let file = reg.blob_file(&layer.digest);
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let dst = OciLayout::create(t.join("dst")).unwrap();
    let err = block_on(registry.pull_to_layout(&dest, &dst, "copy")).unwrap_err();
    assert!(
        matches!(
            &err,
            CopyError::Registry {
                source: PullError::DigestMismatch { .. } | PullError::Registry { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!dst.blob_path(&layer.digest).exists());
    assert!(dst.resolve("copy").is_err());

    // A layer changed in the local layout: nothing is pushed under the new tag.
    let local = src.blob_path(&layer.digest);
    let mut bytes = std::fs::read(&local).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&local, &bytes).unwrap();
    let v2 = format!("{}/app:v2", reg.addr);
    assert!(matches!(
        block_on(registry.push_layout(&src, "v1", &format!("{}/other:v2", reg.addr))),
        Err(CopyError::Layout(_))
    ));
    assert!(block_on(registry.resolve(&v2)).is_err());
    assert!(block_on(registry.resolve(&format!("{}/other:v2", reg.addr))).is_err());
}

#[test]
fn a_docker_schema2_source_is_encrypted_as_an_oci_image_that_skopeo_decrypts() {
    let reg = TestRegistry::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = OciLayout::create(t.join("src")).unwrap();
    write_image(&src, "v1", &[vec![("a", b"one")], vec![("b", b"two")]]);
    run(std::process::Command::new("skopeo")
        .args(["copy", "--format", "v2s2", "--dest-tls-verify=false"])
        .arg(oci_ref(&t.join("src"), "v1"))
        .arg(format!("docker://{}/docker:v1", reg.addr)));
    let registry = registry_for(&reg);
    let fetched = OciLayout::create(t.join("fetched")).unwrap();
    let desc =
        block_on(registry.pull_to_layout(&format!("{}/docker:v1", reg.addr), &fetched, "v1"))
            .unwrap();
    assert_eq!(
        desc.media_type,
        tsuba_image_rs::oci::MEDIA_TYPE_DOCKER_MANIFEST
    );

    let key = ec_keys(t, "p384", "P-384");
    let enc = OciLayout::create(t.join("enc")).unwrap();
    let recipients = tsuba_image_rs::ocicrypt::Recipients {
        jwe: vec![key.public_key()],
        provider: None,
    };
    let enc_desc = tsuba_image_rs::encrypt_layout(&fetched, "v1", &enc, "v1", &recipients).unwrap();
    assert_eq!(
        enc_desc.media_type,
        tsuba_image_rs::oci::MEDIA_TYPE_MANIFEST
    );
    let m = manifest(&enc, "v1");
    assert_eq!(m.config.media_type, tsuba_image_rs::oci::MEDIA_TYPE_CONFIG);
    assert!(
        m.layers
            .iter()
            .all(|l| l.media_type == "application/vnd.oci.image.layer.v1.tar+gzip+encrypted")
    );
    block_on(registry.push_layout(&enc, "v1", &format!("{}/docker-enc:v1", reg.addr))).unwrap();

    // skopeo decrypts it from the registry to the source's layers.
    run(std::process::Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "--decryption-key"])
        .arg(&key.private)
        .arg(format!("docker://{}/docker-enc:v1", reg.addr))
        .arg(oci_ref(&t.join("dec"), "v1")));
    let dec = OciLayout::open(t.join("dec")).unwrap();
    let digests =
        |l: &OciLayout| -> Vec<_> { manifest(l, "v1").layers.iter().map(|d| d.digest).collect() };
    assert_eq!(digests(&dec), digests(&src));
}
