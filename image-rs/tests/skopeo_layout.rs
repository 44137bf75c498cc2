//! Interoperability with skopeo's ocicrypt on OCI layouts: images encrypted by skopeo decrypt
//! here to the bytes skopeo's own decryption gives, and images encrypted here decrypt in skopeo.

#![allow(
    clippy::unwrap_used,
    reason = "integration test: a failed unwrap is a failed test"
)]

mod common;

use std::io::Read;
use std::process::Command;

use common::*;
use tsuba_image_rs::ocicrypt::{DecryptConfig, OcicryptError, Recipients, UnwrapFailure};
use tsuba_image_rs::{ImageError, OciLayout, UnpackOptions};

#[test]
fn skopeo_encrypted_images_decrypt_to_skopeos_bytes_for_every_recipient() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let rsa = rsa_keys(t, "rsa");
    let p256 = ec_keys(t, "p256", "P-256");
    let p384 = ec_keys(t, "p384", "P-384");
    let stranger = ec_keys(t, "stranger", "P-256");

    let src = OciLayout::create(t.join("src")).unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7).to_le_bytes()[0]).collect();
    write_image(
        &src,
        "v1",
        &[
            vec![("etc/hello", b"hello\n"), ("bin/big", &big)],
            vec![("etc/hello", b"layer two\n")],
        ],
    );
    let mut enc = Command::new("skopeo");
    enc.arg("copy");
    for k in [&rsa, &p256, &p384] {
        enc.arg("--encryption-key")
            .arg(format!("jwe:{}", k.public.display()));
    }
    run(enc
        .arg(oci_ref(&t.join("src"), "v1"))
        .arg(oci_ref(&t.join("enc"), "v1")));
    run(Command::new("skopeo")
        .args(["copy", "--decryption-key"])
        .arg(&rsa.private)
        .arg(oci_ref(&t.join("enc"), "v1"))
        .arg(oci_ref(&t.join("skopeo-dec"), "v1")));

    let enc_layout = OciLayout::open(t.join("enc")).unwrap();
    let skopeo_dec = OciLayout::open(t.join("skopeo-dec")).unwrap();
    let em = manifest(&enc_layout, "v1");
    assert!(
        em.layers
            .iter()
            .all(|l| l.media_type.ends_with("+encrypted"))
    );
    let theirs = manifest(&skopeo_dec, "v1");

    for (i, key) in [&rsa, &p256, &p384].into_iter().enumerate() {
        let cfg = DecryptConfig {
            jwe_keys: vec![key.private_key()],
            provider: None,
        };
        let ours_dir = t.join(format!("ours-{i}"));
        let ours = OciLayout::create(&ours_dir).unwrap();
        block_on(tsuba_image_rs::decrypt_layout(
            &enc_layout,
            "v1",
            &ours,
            "v1",
            &cfg,
        ))
        .unwrap();
        let om = manifest(&ours, "v1");
        assert_eq!(om.layers.len(), theirs.layers.len());
        for (a, b) in om.layers.iter().zip(&theirs.layers) {
            assert_eq!(
                a.digest, b.digest,
                "recipient {i}: decrypted layer differs from skopeo's"
            );
            let mut x = Vec::new();
            ours.open_blob_verified(a)
                .unwrap()
                .read_to_end(&mut x)
                .unwrap();
            let mut y = Vec::new();
            skopeo_dec
                .open_blob_verified(b)
                .unwrap()
                .read_to_end(&mut y)
                .unwrap();
            assert_eq!(x, y);
            assert_eq!(a.media_type, b.media_type);
        }

        let rootfs = t.join(format!("rootfs-{i}"));
        std::fs::create_dir(&rootfs).unwrap();
        let stats = block_on(tsuba_image_rs::unpack_from_layout(
            &enc_layout,
            "v1",
            &cfg,
            &rootfs,
            &UnpackOptions::default(),
        ))
        .unwrap();
        assert_eq!(stats.layers.len(), 2);
        assert_eq!(
            std::fs::read(rootfs.join("etc/hello")).unwrap(),
            b"layer two\n"
        );
        assert_eq!(std::fs::read(rootfs.join("bin/big")).unwrap(), big);
    }

    // A key that is not a recipient unwraps nothing, and nothing is unpacked.
    let cfg = DecryptConfig {
        jwe_keys: vec![stranger.private_key()],
        provider: None,
    };
    let rootfs = t.join("rootfs-stranger");
    std::fs::create_dir(&rootfs).unwrap();
    let err = block_on(tsuba_image_rs::unpack_from_layout(
        &enc_layout,
        "v1",
        &cfg,
        &rootfs,
        &UnpackOptions::default(),
    ))
    .unwrap_err();
    assert!(
        matches!(&err, ImageError::Ocicrypt { source: OcicryptError::Unwrap(f), .. } if matches!(f[..], [UnwrapFailure::Jwe(_)])),
        "{err:?}"
    );
    assert_eq!(std::fs::read_dir(&rootfs).unwrap().count(), 0);
}

#[test]
fn images_encrypted_here_decrypt_with_skopeo() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let rsa = rsa_keys(t, "rsa");
    let p256 = ec_keys(t, "p256", "P-256");
    let src = OciLayout::create(t.join("src")).unwrap();
    write_image(&src, "v1", &[vec![("a", b"one")], vec![("b", b"two")]]);
    let dst = OciLayout::create(t.join("enc")).unwrap();
    let recipients = Recipients {
        jwe: vec![rsa.public_key(), p256.public_key()],
        provider: None,
    };
    tsuba_image_rs::encrypt_layout(&src, "v1", &dst, "v1", &recipients).unwrap();
    let src_layers = manifest(&src, "v1").layers;

    for key in [&rsa, &p256] {
        let out = t.join(format!(
            "dec-{}",
            key.private.file_stem().unwrap().to_string_lossy()
        ));
        run(Command::new("skopeo")
            .args(["copy", "--decryption-key"])
            .arg(&key.private)
            .arg(oci_ref(&t.join("enc"), "v1"))
            .arg(oci_ref(&out, "v1")));
        let dec = OciLayout::open(&out).unwrap();
        let layers = manifest(&dec, "v1").layers;
        let digests: Vec<_> = layers.iter().map(|l| l.digest).collect();
        let want: Vec<_> = src_layers.iter().map(|l| l.digest).collect();
        assert_eq!(
            digests, want,
            "skopeo's decryption of our image differs from the source"
        );
    }

    // Without the key skopeo refuses too: the layers really are encrypted.
    let out = Command::new("skopeo")
        .arg("copy")
        .arg(oci_ref(&t.join("enc"), "v1"))
        .arg(oci_ref(&t.join("nokey"), "v1"))
        .output()
        .unwrap();
    let copied = OciLayout::open(t.join("nokey"))
        .ok()
        .map(|l| manifest(&l, "v1").layers);
    // skopeo copies encrypted layers verbatim when given no key: still ciphertext.
    if out.status.success() {
        let layers = copied.unwrap();
        assert!(layers.iter().all(|l| l.media_type.ends_with("+encrypted")));
    }
}
