//! P-521 JWE recipients (ECDH-ES+A256KW) against skopeo's ocicrypt, both ways: skopeo encrypts
//! for a P-521 key and we decrypt to skopeo's own bytes; we encrypt for a P-521 key and skopeo
//! decrypts to the source layers.

#![allow(
    clippy::unwrap_used,
    reason = "integration test: a failed unwrap is a failed test"
)]

mod common;

use std::process::Command;

use common::*;
use tsuba_image_rs::OciLayout;
use tsuba_image_rs::ocicrypt::{DecryptConfig, Recipients};

fn layer_digests(layout: &OciLayout) -> Vec<tsuba_image_rs::Digest> {
    manifest(layout, "v1")
        .layers
        .iter()
        .map(|l| l.digest)
        .collect()
}

#[test]
fn skopeo_p521_recipients_decrypt_here_and_ours_decrypt_in_skopeo() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let p521 = ec_keys(t, "p521", "P-521");
    let stranger = ec_keys(t, "stranger", "P-521");
    let src = OciLayout::create(t.join("src")).unwrap();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    write_image(
        &src,
        "v1",
        &[
            vec![("etc/conf", b"p521\n"), ("bin/big", &big)],
            vec![("etc/conf", b"two\n")],
        ],
    );

    // skopeo encrypts for the P-521 key; we decrypt to the source layers.
    run(Command::new("skopeo")
        .args(["copy", "--encryption-key"])
        .arg(format!("jwe:{}", p521.public.display()))
        .arg(oci_ref(&t.join("src"), "v1"))
        .arg(oci_ref(&t.join("theirs"), "v1")));
    let theirs = OciLayout::open(t.join("theirs")).unwrap();
    let m = manifest(&theirs, "v1");
    assert!(
        m.layers
            .iter()
            .all(|l| l.media_type.ends_with("+encrypted"))
    );
    let config = DecryptConfig {
        jwe_keys: vec![p521.private_key()],
        provider: None,
    };
    let dec = OciLayout::create(t.join("ours-dec")).unwrap();
    block_on(tsuba_image_rs::decrypt_layout(
        &theirs, "v1", &dec, "v1", &config,
    ))
    .unwrap();
    assert_eq!(layer_digests(&dec), layer_digests(&src));
    // Another P-521 key does not open it.
    let wrong = DecryptConfig {
        jwe_keys: vec![stranger.private_key()],
        provider: None,
    };
    let dec2 = OciLayout::create(t.join("wrong-dec")).unwrap();
    assert!(
        block_on(tsuba_image_rs::decrypt_layout(
            &theirs, "v1", &dec2, "v1", &wrong
        ))
        .is_err()
    );

    // We encrypt for the P-521 key; skopeo decrypts to the source layers.
    let ours = OciLayout::create(t.join("ours")).unwrap();
    let recipients = Recipients {
        jwe: vec![p521.public_key()],
        provider: None,
    };
    tsuba_image_rs::encrypt_layout(&src, "v1", &ours, "v1", &recipients).unwrap();
    run(Command::new("skopeo")
        .args(["copy", "--decryption-key"])
        .arg(&p521.private)
        .arg(oci_ref(&t.join("ours"), "v1"))
        .arg(oci_ref(&t.join("skopeo-dec"), "v1")));
    let skopeo_dec = OciLayout::open(t.join("skopeo-dec")).unwrap();
    assert_eq!(layer_digests(&skopeo_dec), layer_digests(&src));
    // skopeo with the wrong P-521 key refuses.
    let out = Command::new("skopeo")
        .args(["copy", "--decryption-key"])
        .arg(&stranger.private)
        .arg(oci_ref(&t.join("ours"), "v1"))
        .arg(oci_ref(&t.join("skopeo-wrong"), "v1"))
        .output()
        .unwrap();
    assert!(!out.status.success());
}
