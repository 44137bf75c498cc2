//! CC event log, OVMF/TDVF metadata (`tsuba_firmware`), initdata (`tsuba_policy`).

use std::num::NonZeroU32;

use tsuba_firmware::{
    Firmware, GuestFeatures, SnpLaunch, TdvfMetadata, TdxPageOrder, VcpuType, snp_launch_digest,
};
use tsuba_policy::Initdata;
use tsuba_protocols::evidence::ccel::EventLog;

/// `EventLog::parse`; a parsed log must verify against its own replay.
pub(crate) fn cc_eventlog(data: &[u8]) {
    let Ok(log) = EventLog::parse(data) else {
        return;
    };
    let replayed = log.replay();
    if let Err(e) = log.verify(&replayed, 0..4) {
        panic!("an event log does not verify against its own replay: {e}");
    }
    assert!(
        log.events().iter().all(|e| e.rtmr < 4),
        "event with rtmr >= 4"
    );
}

const PAGE: usize = 4096;
/// Largest image the target builds (the input is its tail; metadata is found from the end).
const MAX_IMAGE: usize = 1 << 20;

/// `Firmware::parse` and everything read from an image: SEV metadata and reset block, the
/// kernel-hashes address, the TDVF metadata and MRTD, the SNP launch digest. The input is the
/// image's tail: it is zero-padded in front to a whole number of pages, as OVMF's footer table
/// and metadata are found from the end of the image.
pub(crate) fn ovmf_metadata(data: &[u8]) {
    let data = &data[data.len().saturating_sub(MAX_IMAGE)..];
    let len = data.len().div_ceil(PAGE).max(1) * PAGE;
    let mut image = vec![0u8; len - data.len()];
    image.extend_from_slice(data);
    let Ok(firmware) = Firmware::parse(image) else {
        return;
    };
    let _ = firmware.gpa();
    let _ = firmware.sev_es_reset_eip();
    let _ = firmware.sev_hashes_table_gpa();
    if firmware.sev_sections().is_ok()
        && let Ok(vcpu_type) = "EPYC-v4".parse::<VcpuType>()
    {
        let launch = SnpLaunch {
            vcpus: NonZeroU32::MIN,
            vcpu_type,
            guest_features: GuestFeatures::default(),
        };
        let _ = snp_launch_digest(&firmware, &launch, None);
    }
    if let Ok(tdvf) = TdvfMetadata::parse(&firmware) {
        let _ = tdvf.sections();
        let _ = tdvf.mrtd(&firmware, TdxPageOrder::PerPage);
        let _ = tdvf.mrtd(&firmware, TdxPageOrder::PerSection);
    }
}

/// `Initdata::from_bytes`; a parsed document must match its own HOST_DATA and MRCONFIGID.
pub(crate) fn initdata(data: &[u8]) {
    let Ok(doc) = Initdata::from_bytes(data) else {
        return;
    };
    assert_eq!(
        doc.as_str().as_bytes(),
        data,
        "initdata text is not the input"
    );
    let _ = doc.algorithm();
    for key in doc.data().keys() {
        let _ = doc.get(key);
    }
    if let Err(e) = doc.verify_host_data(doc.host_data().as_bytes()) {
        panic!("initdata does not match its own host data: {e}");
    }
    if let Err(e) = doc.verify_mr_config_id(doc.mr_config_id().as_bytes()) {
        panic!("initdata does not match its own mrconfigid: {e}");
    }
}
