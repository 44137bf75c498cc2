//! The MRTD this crate computes equals the one `testdata/derive-mrtd.py` derives: a standard
//! library Python script written from the TDX module ABI and the TDVF metadata layout, sharing no
//! code with the Rust parser. Run on every firmware image the project measures for TDX, in both
//! page orders, and on an image both must refuse.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tsuba_firmware::{
    MeasurementInputs, ReferenceError, TdxLaunch, TdxPageOrder, reference_values,
};

fn script(firmware: &Path, order: &str) -> Output {
    Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/derive-mrtd.py"
        ))
        .arg(firmware)
        .arg(order)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): scripts/setup installs it"))
}

fn ours(firmware: &Path, page_order: TdxPageOrder) -> Result<String, ReferenceError> {
    let inputs = MeasurementInputs {
        firmware: firmware.to_owned(),
        kernel: None,
        initrd: None,
        cmdline: None,
        initdata: None,
        snp: None,
        tdx: Some(TdxLaunch { page_order }),
    };
    Ok(reference_values(&inputs)?.tdx.unwrap().mrtd.to_hex())
}

/// The AmdSev build scripts/setup makes (it carries TDX metadata too).
fn amdsev() -> PathBuf {
    std::env::var_os("TSUBA_AMDSEV_OVMF")
        .filter(|v| !v.is_empty())
        .map_or_else(
            || {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/tsuba/firmware/amdsev/OVMF.fd")
            },
            PathBuf::from,
        )
}

#[test]
fn mrtd_equals_the_independent_script_for_each_image_and_page_order() {
    let images = [PathBuf::from("/usr/share/ovmf/OVMF.fd"), amdsev()];
    let mut seen = Vec::new();
    for image in &images {
        assert!(
            image.is_file(),
            "{} missing: run scripts/setup",
            image.display()
        );
        for (order, name) in [
            (TdxPageOrder::PerPage, "per-page"),
            (TdxPageOrder::PerSection, "per-section"),
        ] {
            let out = script(image, name);
            assert!(
                out.status.success(),
                "derive-mrtd.py {} {name}: {}",
                image.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let theirs = String::from_utf8(out.stdout).unwrap().trim().to_owned();
            assert_eq!(theirs.len(), 96, "a SHA-384 in hex: {theirs}");
            assert_eq!(
                ours(image, order).unwrap(),
                theirs,
                "{} {name}",
                image.display()
            );
            seen.push(theirs);
        }
    }
    // Two images, two orders: four different values, so neither input is ignored.
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 4);
}

#[test]
fn both_refuse_a_code_image_whose_metadata_points_past_its_end() {
    // OVMF_CODE.fd carries the combined image's TDX metadata: its sections lie beyond this file.
    let code = Path::new("/usr/share/OVMF/OVMF_CODE.fd");
    let out = script(code, "per-page");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "section at GPA 0xffe20000 lies outside the image or is not whole pages"
    );
    assert!(out.stdout.is_empty());
    assert!(matches!(
        ours(code, TdxPageOrder::PerPage),
        Err(ReferenceError::Tdx(_))
    ));
}
