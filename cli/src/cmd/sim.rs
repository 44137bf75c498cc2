//! `tsuba sim`: tee-sim's simulated roots of trust, for a development broker. Only a build with
//! the `insecure-sim` feature has it; any other build says so and does nothing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The simulated TEE's public roots, for a development key broker.
#[derive(Debug, clap::Args)]
pub(crate) struct SimArgs {
    #[command(subcommand)]
    command: SimCommand,
}

#[derive(Debug, clap::Subcommand)]
enum SimCommand {
    /// Write tee-sim's PUBLIC root certificates (simulated SNP ARK and ASK, simulated TDX root
    /// CA) as PEM, for `tsuba kbs serve --insecure-sim-roots`. Creates the simulated roots in
    /// the state directory when it has none (RSA-4096 generation: seconds to minutes).
    ExportRoots {
        /// tee-sim's state directory (the launcher's, TSUBA_TEE_SIM_STATE).
        #[arg(long, env = "TSUBA_TEE_SIM_STATE")]
        state_dir: PathBuf,
        /// Where to write the PEM file.
        #[arg(long)]
        out: PathBuf,
        /// Also write the simulated TDX platform's DCAP collateral (valid 30 days from now) to
        /// this JSON file, for `tsuba kbs serve --tdx-collateral-dir`.
        #[arg(long)]
        tdx_collateral_out: Option<PathBuf>,
    },
}

pub(crate) fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        SimCommand::ExportRoots {
            state_dir,
            out,
            tdx_collateral_out,
        } => export_roots(&state_dir, &out, tdx_collateral_out.as_deref()),
    }
}

#[cfg(feature = "insecure-sim")]
fn export_roots(
    state_dir: &Path,
    out: &Path,
    tdx_collateral_out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    use anyhow::Context;

    let sp = tsuba_tee_sim::SimAmdSp::open_or_create(state_dir).with_context(|| {
        format!(
            "cannot open or create tee-sim's state in {}",
            state_dir.display()
        )
    })?;
    let tdx = tsuba_tee_sim::SimTdx::open_or_create(state_dir).with_context(|| {
        format!(
            "cannot open or create tee-sim's tdx state in {}",
            state_dir.display()
        )
    })?;
    let pem = sp
        .public_roots_pem()
        .context("cannot encode the simulated roots")?
        + &tdx
            .public_root_pem()
            .context("cannot encode the simulated tdx root")?;
    std::fs::write(out, pem).with_context(|| format!("cannot write {}", out.display()))?;
    if let Some(path) = tdx_collateral_out {
        let json = tdx
            .collateral()
            .and_then(|c| c.to_json().map_err(tsuba_tee_sim::TdxSimError::Json))
            .context("cannot build the simulated tdx collateral")?;
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "insecure-sim"))]
fn export_roots(
    _state_dir: &Path,
    _out: &Path,
    _tdx_collateral_out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    anyhow::bail!(
        "this tsuba was built without simulation support (cargo feature insecure-sim): build \
         it with default features for development"
    )
}
