//! Layer decrypt-and-verify throughput: HMAC-SHA256 pass over the ciphertext, then AES-256-CTR
//! decryption pass, for a 64 MiB layer held in memory (as a spooled blob in guest memory is).
//!
//! Run: `CARGO_BUILD_JOBS=2 cargo bench -p tsuba-image-rs --bench layer_decrypt`
//! Peer (same run, one core): `image-rs/benches/openssl_peer.sh`.

#![allow(
    clippy::unwrap_used,
    reason = "benchmark setup: a failed unwrap is a failed run"
)]

use std::hint::black_box;
use std::io::Cursor;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tsuba_image_rs::Digest;
use tsuba_image_rs::ocicrypt::{
    DecryptConfig, KeyId, Recipients, StaticKeyProvider, encrypt_layer, unwrap_layer_key,
};

const SIZE: usize = 64 << 20;

fn bench(c: &mut Criterion) {
    let plain: Vec<u8> = (0..SIZE)
        .map(|i| (i as u64).wrapping_mul(0x9e37_79b9).to_le_bytes()[3])
        .collect();
    let kid = KeyId::parse("kbs:///default/bench/1").unwrap();
    let kek = vec![1u8; 32];
    let recipients = Recipients {
        jwe: vec![],
        provider: Some((kid.clone(), kek.clone().into())),
    };
    let mut ct = Vec::with_capacity(SIZE);
    let enc = encrypt_layer(&plain[..], &mut ct, &Digest::of(&plain), &recipients).unwrap();
    let mut provider = StaticKeyProvider::default();
    provider.insert(kid, kek);
    let config = DecryptConfig {
        jwe_keys: vec![],
        provider: Some(Arc::new(provider)),
    };
    let key = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(unwrap_layer_key(&enc.annotations, &config))
        .unwrap();

    let mut g = c.benchmark_group("layer");
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.sample_size(10);
    g.bench_function("decrypt_and_verify_64MiB", |b| {
        b.iter(|| {
            let mut plain = key.open(Cursor::new(black_box(&ct[..]))).unwrap();
            std::io::copy(&mut plain, &mut std::io::sink()).unwrap()
        })
    });
    // The first pass alone: HMAC-SHA256 over the ciphertext (no plaintext is produced).
    g.bench_function("verify_only_64MiB", |b| {
        b.iter(|| key.open(Cursor::new(black_box(&ct[..]))).is_ok())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
