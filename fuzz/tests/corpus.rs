//! The seed corpus and every past crash, replayed through the targets without AFL: none may
//! panic, and the seeds that exist to reach deep code do reach it.

#![allow(
    clippy::unwrap_used,
    reason = "a test: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tsuba_fuzz::{TARGETS, seeds};
use tsuba_image_rs::ocicrypt::{DecryptConfig, PrivateKey, unwrap_layer_key};
use tsuba_image_rs::signature::{
    DockerReference, GpgKeyring, SignedIdentity, open_signature, verify_simple_signing,
};

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

fn seed(target: &str, name: &str) -> Vec<u8> {
    std::fs::read(dir("corpus").join(target).join(name)).unwrap()
}

#[test]
fn every_target_has_seeds_and_no_seed_or_past_crash_panics() {
    for (name, target) in TARGETS {
        let seeds = files(&dir("corpus").join(name));
        assert!(
            !seeds.is_empty(),
            "target {name} has no seed in corpus/{name}"
        );
        for input in seeds.iter().chain(&files(&dir("regressions").join(name))) {
            let bytes = std::fs::read(input).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&bytes));
            assert!(outcome.is_ok(), "{name} panicked on {}", input.display());
        }
    }
}

#[test]
fn corpus_folders_are_targets_and_the_corpus_stays_small() {
    let mut total = 0u64;
    for folder in files(&dir("corpus")).into_iter().filter(|p| p.is_dir()) {
        let name = folder.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(
            tsuba_fuzz::target(&name).is_some(),
            "corpus/{name} names no target"
        );
        total += files(&folder)
            .iter()
            .map(|f| f.metadata().unwrap().len())
            .sum::<u64>();
    }
    assert!(
        total < 2 << 20,
        "the seed corpus is {total} bytes, above 2 MiB"
    );
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn ocicrypt_seeds_unwrap_with_the_test_key() {
    let config = DecryptConfig {
        jwe_keys: vec![PrivateKey::from_pem(seeds::OCICRYPT_KEY_PEM).unwrap()],
        provider: None,
    };
    for name in ["jwe", "both"] {
        let annotations: BTreeMap<String, String> =
            serde_json::from_slice(&seed("ocicrypt_keys", name)).unwrap();
        block_on(unwrap_layer_key(&annotations, &config)).unwrap();
    }
}

#[test]
fn signed_seeds_verify_against_the_test_keyring() {
    let keyring = GpgKeyring::from_bytes(seeds::SIGNING_KEYRING, "fuzz keyring").unwrap();
    let manifest = seeds::SIGNED_MANIFEST.parse().unwrap();
    let pulled = DockerReference::parse_pulled(seeds::SIGNED_REFERENCE).unwrap();
    for name in ["signature", "signature-uncompressed"] {
        let bytes = seed("simple_signing", name);
        assert_eq!(bytes[0], 0, "{name} must select the signature path");
        let opened = open_signature(&keyring, &bytes[1..]).unwrap();
        assert_eq!(opened.payload.docker_reference, seeds::SIGNED_REFERENCE);
        verify_simple_signing(
            &keyring,
            &[bytes[1..].to_vec()],
            &manifest,
            &SignedIdentity::default(),
            &pulled,
        )
        .unwrap();
    }
}
