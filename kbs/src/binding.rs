//! Report-data binding, defined once in `tsuba_protocols::kbs_binding` and shared with the guest's
//! KBS client, so the two sides cannot drift apart.

pub use tsuba_protocols::evidence::REPORT_DATA_LEN;
pub use tsuba_protocols::kbs_binding::BindingDigest;
