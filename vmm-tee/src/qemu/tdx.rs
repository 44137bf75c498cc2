//! The `tdx-guest` object (QEMU >= 10.1).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::ToQemuArgs;

/// A TDX guest with optional MRCONFIGID.
pub(crate) struct TdxGuest {
    pub(crate) id: &'static str,
    /// The initdata digest as bound into the TD's MRCONFIGID.
    pub(crate) mr_config_id: Option<[u8; 48]>,
}

impl ToQemuArgs for TdxGuest {
    fn push_args(&self, args: &mut Vec<String>) {
        let mut object = format!("tdx-guest,id={}", self.id);
        if let Some(mr_config_id) = &self.mr_config_id {
            object.push_str(",mrconfigid=");
            object.push_str(&STANDARD.encode(mr_config_id));
        }
        args.extend(["-object".into(), object]);
    }
}
