//! The guest vCPU model and SEV features that go into each VMSA of an SNP launch.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};
use sev::measurement::vcpu_types::CpuType;

/// Errors from naming a vCPU type or guest features.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// The name is not one of QEMU's EPYC models.
    #[error(
        "unknown vcpu type {0:?}, expected a QEMU EPYC model: EPYC, EPYC-Rome, EPYC-Milan, \
         EPYC-Genoa, EPYC-Turin (optionally with a -vN suffix)"
    )]
    UnknownType(String),
    /// The guest features value is not a hexadecimal `u64`.
    #[error("guest features {0:?} are not a hex number such as 0x1")]
    BadGuestFeatures(String),
}

/// A QEMU EPYC vCPU model. Its CPUID signature is what QEMU puts in RDX of every VMSA, so the
/// model changes the launch digest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VcpuType(CpuType);

impl VcpuType {
    /// The 32-bit CPUID family/model/stepping signature.
    pub fn signature(self) -> u32 {
        // The signature of every known model is a small positive number.
        u32::try_from(self.0.sig()).unwrap_or(0)
    }

    pub(crate) fn cpu_type(self) -> CpuType {
        self.0
    }
}

impl FromStr for VcpuType {
    type Err = VcpuError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        CpuType::try_from(name)
            .map(Self)
            .map_err(|_| VcpuError::UnknownType(name.to_owned()))
    }
}

impl fmt::Display for VcpuType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Serialize for VcpuType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The SEV features the guest runs with (VMSA `SEV_FEATURES`; bit 0 = SNP active). QEMU's
/// default for an SNP guest is `0x1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GuestFeatures(pub u64);

impl Default for GuestFeatures {
    fn default() -> Self {
        Self(0x1)
    }
}

impl FromStr for GuestFeatures {
    type Err = VcpuError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        u64::from_str_radix(digits, 16)
            .map(Self)
            .map_err(|_| VcpuError::BadGuestFeatures(s.to_owned()))
    }
}

impl fmt::Display for GuestFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl Serialize for GuestFeatures {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_amd_signatures() {
        // Family/model/stepping from QEMU's builtin_x86_defs, encoded per AMD CPUID Fn0000_0001_EAX.
        for (name, sig) in [
            ("EPYC", 0x0080_0f12),
            ("EPYC-v4", 0x0080_0f12),
            ("EPYC-Rome", 0x0083_0f10),
            ("EPYC-Milan", 0x00a0_0f11),
            ("epyc-milan-v2", 0x00a0_0f11),
            ("EPYC-Genoa", 0x00a1_0f10),
            ("EPYC-Turin", 0x00b0_0f00),
        ] {
            let t: VcpuType = name.parse().unwrap();
            assert_eq!(t.signature(), sig, "{name}");
        }
        assert_eq!(
            "epyc-genoa".parse::<VcpuType>().unwrap().to_string(),
            "EPYC-Genoa"
        );
    }

    #[test]
    fn unknown_vcpu_type_is_refused() {
        for name in ["", "host", "Skylake-Server", "EPYC-Milan-v9", "EPYC Milan"] {
            assert!(
                matches!(name.parse::<VcpuType>(), Err(VcpuError::UnknownType(n)) if n == name),
                "{name}"
            );
        }
    }

    #[test]
    fn guest_features_parse_hex() {
        assert_eq!("0x1".parse::<GuestFeatures>().unwrap(), GuestFeatures(1));
        assert_eq!("21".parse::<GuestFeatures>().unwrap(), GuestFeatures(0x21));
        assert_eq!(GuestFeatures(0x21).to_string(), "0x21");
        assert_eq!(GuestFeatures::default(), GuestFeatures(1));
        for bad in ["", "0x", "zz", "0x1ffffffffffffffff"] {
            assert!(matches!(
                bad.parse::<GuestFeatures>(),
                Err(VcpuError::BadGuestFeatures(_))
            ));
        }
    }
}
