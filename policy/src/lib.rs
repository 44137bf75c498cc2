//! Policy types shared by host and guest.
//!
//! Holds the agent-API policy (Rego) that the guest agent enforces on every host request, the
//! initdata document and its digest (bound into the launch as SNP HOST_DATA or TDX MRCONFIGID), and
//! the image signature policy types. A leaf crate: it does no I/O.

#![forbid(unsafe_code)]

pub mod agent;
pub mod containerd;
mod guest_settings;
mod initdata;

pub use agent::{
    AgentPolicy, AgentPolicyError, AgentRequest, ContainerPolicy, MountPolicy, PolicyData,
    PolicyRefusal, render_policy,
};
pub use guest_settings::{
    AA_TOML, CDH_TOML, GuestSettings, GuestSettingsError, POLICY_REGO, TSUBA_TOML, render_initdata,
};
pub use initdata::{
    HOST_DATA_LEN, HostData, INITDATA_VERSION, Initdata, InitdataAlgorithm, InitdataError,
    MAX_INITDATA_LEN, MR_CONFIG_ID_LEN, MrConfigId,
};
