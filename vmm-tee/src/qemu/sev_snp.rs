//! The `sev-snp-guest` object (QEMU >= 9.1).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::ToQemuArgs;

/// Guest policy: bit 17 is reserved-must-be-one, bit 16 allows SMT; debug (bit 19) stays off.
const SNP_POLICY: u64 = 0x30000;
/// C-bit position and physical address bits lost to encryption on Milan, Genoa and Turin.
const CBITPOS: u32 = 51;
const REDUCED_PHYS_BITS: u32 = 1;

/// An SEV-SNP guest with measured direct boot (kernel hashes) and optional HOST_DATA.
pub(crate) struct SevSnpGuest {
    pub(crate) id: &'static str,
    /// The initdata digest as bound into the report's HOST_DATA.
    pub(crate) host_data: Option<[u8; 32]>,
}

impl ToQemuArgs for SevSnpGuest {
    fn push_args(&self, args: &mut Vec<String>) {
        let mut object = format!(
            "sev-snp-guest,id={},cbitpos={CBITPOS},reduced-phys-bits={REDUCED_PHYS_BITS},\
             policy={SNP_POLICY:#x},kernel-hashes=on",
            self.id
        );
        if let Some(host_data) = &self.host_data {
            object.push_str(",host-data=");
            object.push_str(&STANDARD.encode(host_data));
        }
        args.extend(["-object".into(), object]);
    }
}
