//! tsuba's fuzz targets: one function per parser of hostile input, each calling the project's
//! real public entry point. `tsuba-fuzz <target>` runs one of them under AFL++ (cargo-afl);
//! `tests/corpus.rs` replays the seed corpus and every past crash through the same functions
//! without AFL, so `cargo test` in this folder proves they still pass.
//!
//! A target may only panic when the code under test breaks one of its own promises (a parse
//! that does not round-trip, an unpack that writes outside its rootfs): every such panic is a
//! bug. Errors returned for malformed input are the expected outcome.

mod agent;
mod evidence;
mod firmware;
mod image;
mod kbs;
mod simdev;

/// What the seed corpus is made with (`tsuba-fuzz-seeds`): the fixed keys and markers the
/// targets know.
pub mod seeds {
    pub use crate::image::{
        OCICRYPT_KEY_PEM, PROVIDER_KEK, PROVIDER_KEY_ID, SIGNED_MANIFEST, SIGNED_REFERENCE,
        SIGNING_KEYRING,
    };
    pub use crate::kbs::{BINDING_MARKER, NONCE_MARKER};
}

/// A fuzz target: takes any bytes, panics only on a bug.
pub type Target = fn(&[u8]);

/// Every target, by the name `make fuzz` and the corpus folders use.
pub const TARGETS: &[(&str, Target)] = &[
    ("snp_report", evidence::snp_report),
    ("snp_cert_table", evidence::snp_cert_table),
    ("tdx_quote", evidence::tdx_quote),
    ("cc_eventlog", firmware::cc_eventlog),
    ("ovmf_metadata", firmware::ovmf_metadata),
    ("initdata", firmware::initdata),
    ("kbs_auth", kbs::auth),
    ("kbs_attest", kbs::attest),
    ("jwe_tee_key", kbs::jwe_tee_key),
    ("ocicrypt_keys", image::ocicrypt_keys),
    ("oci_manifest", image::oci_manifest),
    ("tar_unpack", image::tar_unpack),
    ("containers_policy", image::containers_policy),
    ("simple_signing", image::simple_signing),
    ("agent_request", agent::agent_request),
    ("simdev_frames", simdev::simdev_frames),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Splits the first byte off `data` as a selector (0 when empty).
fn split_selector(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((first, rest)) => (*first, rest),
        None => (0, data),
    }
}

/// A single-threaded runtime for the async entry points, built once per process.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot build a tokio runtime: {e}"));
    }
    RUNTIME.with(|rt| rt.block_on(f))
}
