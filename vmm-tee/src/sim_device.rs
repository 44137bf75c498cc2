//! The simulated TEE device of sim-snp and sim-tdx launches: what tee-sim signs for this
//! launch, served on the guest's `tsuba.teesim` port.
//!
//! Only in builds with the `insecure-sim` feature. Without it the launcher has no simulator
//! and no simulated roots: a sim mode fails at launch, naming the feature, so a production build
//! cannot be configured into running a guest whose evidence anyone with the sim roots could sign.

use std::path::Path;

use tokio::net::UnixStream;

use crate::config::{LaunchConfig, Mode};
use crate::launcher::LaunchError;

#[cfg(feature = "insecure-sim")]
pub(crate) use enabled::SimDevice;

#[cfg(not(feature = "insecure-sim"))]
pub(crate) use disabled::SimDevice;

#[cfg(feature = "insecure-sim")]
mod enabled {
    use std::sync::Arc;

    use tracing::{info, warn};
    use tsuba_tee_sim::{SimAmdSp, SimLaunch, SimTdx, SnpLaunch, TdxLaunch};

    use super::*;
    use crate::measure::{MeasureError, launch_reference_values};

    /// What tee-sim signs for one launch.
    pub(crate) struct SimDevice(SimLaunch);

    impl std::fmt::Debug for SimDevice {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("SimDevice").finish_non_exhaustive()
        }
    }

    impl SimDevice {
        /// The device for `config`, decided before anything runs: only the launcher computes
        /// the measurement, and nothing the guest sends can change it. `None` outside sim modes.
        pub(crate) fn for_launch(
            config: &LaunchConfig,
            state: &Path,
        ) -> Result<Option<Self>, LaunchError> {
            match config.mode {
                Mode::SimSnp => Ok(Some(Self(sim_snp_launch(config, state)?))),
                Mode::SimTdx => Ok(Some(Self(sim_tdx_launch(config, state)?))),
                Mode::Snp | Mode::Tdx | Mode::None => Ok(None),
            }
        }

        /// Serves the device on `stream` until the guest or the VM goes away.
        pub(crate) fn serve(self, stream: UnixStream) -> tokio::task::JoinHandle<()> {
            tokio::spawn(async move {
                if let Err(error) = tsuba_tee_sim::serve(stream, self.0).await {
                    warn!(%error, "tee-sim device stopped");
                }
            })
        }
    }

    /// What tee-sim signs for a sim-snp launch: the measurement of exactly these files, and the
    /// initdata digest as HOST_DATA.
    fn sim_snp_launch(config: &LaunchConfig, state: &Path) -> Result<SimLaunch, LaunchError> {
        let values = launch_reference_values(config)?;
        let snp = values.snp.ok_or(MeasureError::NotMeasured)?;
        let host_data = snp.host_data.map_or([0; 32], |h| *h.as_bytes());
        let sp = SimAmdSp::open_or_create(state)
            .map_err(|e| LaunchError::TeeSim(state.into(), e.to_string()))?;
        info!(
            measurement = %snp.launch_digest.to_hex(),
            "sim-snp: tee-sim signs this launch measurement"
        );
        Ok(SimLaunch::Snp {
            sp: Arc::new(sp),
            launch: SnpLaunch::new(snp.launch_digest.0, host_data),
        })
    }

    /// What tee-sim signs for a sim-tdx launch: the MRTD of the measured firmware, the initdata
    /// digest as MRCONFIGID, and the RTMRs (with their event log) that TDVF and the kernel's EFI
    /// stub would extend for exactly the booted kernel, initrd and command line.
    fn sim_tdx_launch(config: &LaunchConfig, state: &Path) -> Result<SimLaunch, LaunchError> {
        let values = launch_reference_values(config)?;
        let tdx = values.tdx.ok_or(MeasureError::NotMeasured)?;
        let mr_config_id = tdx.mr_config_id.map_or([0; 48], |m| *m.as_bytes());
        let sim = SimTdx::open_or_create(state)
            .map_err(|e| LaunchError::TeeSim(state.into(), e.to_string()))?;
        let mut launch = TdxLaunch::new(tdx.mrtd.0, mr_config_id);
        if let Some(boot) = &tdx.boot {
            launch = launch.with_boot(&boot.events);
        }
        info!(
            mrtd = %hex::encode(tdx.mrtd.0),
            rtmr1 = %hex::encode(launch.rtmr[1]),
            rtmr2 = %hex::encode(launch.rtmr[2]),
            "sim-tdx: tee-sim signs this MRTD and these RTMRs"
        );
        Ok(SimLaunch::Tdx {
            sim: Arc::new(sim),
            launch: Box::new(launch),
        })
    }
}

#[cfg(not(feature = "insecure-sim"))]
mod disabled {
    use super::*;

    /// No simulator in this build: there is never a device.
    #[derive(Debug)]
    pub(crate) enum SimDevice {}

    impl SimDevice {
        /// Sim modes are refused; the others have no device.
        pub(crate) fn for_launch(
            config: &LaunchConfig,
            _state: &Path,
        ) -> Result<Option<Self>, LaunchError> {
            match config.mode {
                Mode::SimSnp | Mode::SimTdx => Err(LaunchError::SimulationNotBuilt(config.mode)),
                Mode::Snp | Mode::Tdx | Mode::None => Ok(None),
            }
        }

        pub(crate) fn serve(self, _stream: UnixStream) -> tokio::task::JoinHandle<()> {
            match self {}
        }
    }
}

#[cfg(all(test, not(feature = "insecure-sim")))]
mod tests {
    use super::*;

    use std::num::NonZeroU8;
    use std::path::PathBuf;

    use crate::config::{AccelChoice, AgentTransport, Firmware, MemoryMib};

    #[test]
    fn a_build_without_the_simulator_refuses_sim_modes_by_name() {
        for mode in [Mode::SimSnp, Mode::SimTdx] {
            let config = LaunchConfig {
                mode,
                firmware: Firmware {
                    boot: PathBuf::from("/fw/boot.fd"),
                    measured: PathBuf::from("/fw/measured.fd"),
                },
                kernel: PathBuf::from("/k/vmlinuz"),
                initrd: PathBuf::from("/k/initrd"),
                extra_cmdline: String::new(),
                vcpus: NonZeroU8::MIN,
                memory: MemoryMib::new(256).unwrap(),
                initdata: None,
                accel: AccelChoice::Auto,
                agent_transport: AgentTransport::Serial,
                snp_vcpu_type: "EPYC-v4".into(),
                network: None,
            };
            let err = SimDevice::for_launch(&config, Path::new("/nonexistent")).unwrap_err();
            assert!(matches!(err, LaunchError::SimulationNotBuilt(m) if m == mode));
            assert!(err.to_string().contains("insecure-sim"), "{err}");
        }
    }
}
