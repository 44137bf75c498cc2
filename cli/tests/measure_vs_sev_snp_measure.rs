//! `tsuba measure` against an independent implementation: for the same launch files, its SNP
//! launch digest must equal the one computed by `sev-snp-measure`, the public Python reference
//! tool (pinned and installed by `scripts/setup`, which writes its path to the env file). Both run
//! as subprocesses, `tsuba` on a launch config, so the launcher's derived command line is covered.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use tsuba_tests::{SnpBoot, sev_snp_measure_digest_with};

/// A path from the environment, else from the env file `scripts/setup` writes.
fn setup_path(name: &str) -> PathBuf {
    if let Some(value) = std::env::var_os(name).filter(|v| !v.is_empty()) {
        return PathBuf::from(value);
    }
    let cache = std::env::var_os("TSUBA_CACHE")
        .filter(|v| !v.is_empty())
        .map_or_else(
            || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/tsuba"),
            PathBuf::from,
        );
    let env_file = cache.join("env");
    let text = std::fs::read_to_string(&env_file).unwrap_or_else(|e| {
        panic!(
            "{name} is not set and {} cannot be read ({e}): run scripts/setup",
            env_file.display()
        )
    });
    let value = text
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "{name} is missing from {}: run scripts/setup",
                env_file.display()
            )
        });
    PathBuf::from(value)
}

fn sev_snp_measure() -> PathBuf {
    let path = setup_path("TSUBA_SEV_SNP_MEASURE");
    assert!(
        path.is_file(),
        "sev-snp-measure missing at {}: run scripts/setup",
        path.display()
    );
    path
}

/// Deterministic, non-repeating bytes (so a digest over the wrong range cannot match by luck).
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `tsuba measure --config`: the launch digest of exactly what that launch boots.
fn tsuba_digest(config: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tsuba"))
        .arg("measure")
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tsuba measure: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["snp"]["launch_digest"].as_str().unwrap().to_owned()
}

const INITDATA: &str = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n\n[data]\n\"a\" = \"b\"\n";

#[test]
fn tsuba_measure_of_a_launch_config_equals_sev_snp_measure_of_what_qemu_boots() {
    // Sim modes boot the plain OVMF and measure the AmdSev build; snp mode boots the AmdSev build.
    let amdsev = setup_path("TSUBA_AMDSEV_OVMF");
    let plain = setup_path("TSUBA_OVMF");
    let sim_firmware = format!("[firmware]\nboot = {plain:?}\nmeasured = {amdsev:?}\n");
    let snp_firmware = format!("[firmware]\nboot = {amdsev:?}\n");
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinuz");
    let initrd = dir.path().join("initrd.img");
    let other_initrd = dir.path().join("other-initrd.img");
    std::fs::write(&kernel, pseudo_random(3 * 1024 * 1024 + 123, 1)).unwrap();
    std::fs::write(&initrd, pseudo_random(1024 * 1024 + 7, 2)).unwrap();
    let mut other = pseudo_random(1024 * 1024 + 7, 2);
    other[4096] ^= 1;
    std::fs::write(&other_initrd, other).unwrap();
    std::fs::write(dir.path().join("initdata.toml"), INITDATA).unwrap();

    // (config lines, firmware section, initrd, the `-append` QEMU gets, vCPUs, vCPU model). The
    // command lines are written out here, not derived: they are what vmm-tee's QEMU tests pin.
    let cases: [(&str, &String, &str, &str, u8, &str); 4] = [
        (
            "mode = \"sim-snp\"\n",
            &sim_firmware,
            "initrd.img",
            "console=ttyS0 panic=-1 tsuba.agent.transport=serial",
            1,
            "EPYC-v4",
        ),
        (
            "mode = \"sim-snp\"\ncmdline = \"quiet\"\nvcpus = 4\nsnp_vcpu_type = \"EPYC-Milan\"\n\
             initdata = \"initdata.toml\"\n",
            &sim_firmware,
            "initrd.img",
            "console=ttyS0 panic=-1 tsuba.agent.transport=serial quiet",
            4,
            "EPYC-Milan",
        ),
        (
            "mode = \"snp\"\nagent_transport = \"vsock\"\nvcpus = 2\n\
             snp_vcpu_type = \"EPYC-Genoa\"\n[network]\nbackend = \"user\"\n",
            &snp_firmware,
            "initrd.img",
            "console=ttyS0 panic=-1 tsuba.agent.transport=vsock tsuba.agent.net=10.0.2.15/24,gw=10.0.2.2",
            2,
            "EPYC-Genoa",
        ),
        // One bit of the initrd differs from the first case.
        (
            "mode = \"sim-snp\"\n",
            &sim_firmware,
            "other-initrd.img",
            "console=ttyS0 panic=-1 tsuba.agent.transport=serial",
            1,
            "EPYC-v4",
        ),
    ];
    let mut digests = Vec::new();
    for (i, (lines, firmware, initrd_name, append, vcpus, vcpu_type)) in
        cases.into_iter().enumerate()
    {
        let config = dir.path().join(format!("launch-{i}.toml"));
        // [firmware] goes after the top-level keys, [network] (if any) after [firmware].
        let (top, network) = lines.split_once("[network]").unwrap_or((lines, ""));
        let network = if network.is_empty() {
            String::new()
        } else {
            format!("[network]{network}")
        };
        std::fs::write(
            &config,
            format!("{top}kernel = \"vmlinuz\"\ninitrd = {initrd_name:?}\n{firmware}{network}"),
        )
        .unwrap();
        let ours = tsuba_digest(&config);
        let theirs = sev_snp_measure_digest_with(
            &sev_snp_measure(),
            &SnpBoot {
                firmware: &amdsev,
                kernel: &kernel,
                initrd: &dir.path().join(initrd_name),
                append,
                vcpus,
                vcpu_type,
            },
        );
        assert_eq!(ours, theirs, "case {i}: {lines}");
        digests.push(ours);
    }
    // Every case measures differently: the inputs above all reach the digest.
    for (i, a) in digests.iter().enumerate() {
        for b in &digests[i + 1..] {
            assert_ne!(a, b);
        }
    }
}
