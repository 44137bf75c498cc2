//! The `tsuba` command: one subcommand per module under `cmd/`.
//!
//! The binary stays thin: each subcommand parses its arguments, calls the library crates and turns
//! their typed errors into a message that says what failed and what to do.

#![forbid(unsafe_code)]

mod cmd;

use clap::{Parser, Subcommand};

/// tsuba: confidential-computing sandbox runtime.
#[derive(Debug, Parser)]
#[command(name = "tsuba", version, about)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `tsuba_vmm_tee=debug`.
    #[arg(long, global = true, env = "TSUBA_LOG", default_value = "warn")]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compute a launch's reference values (SNP launch digest, TDX MRTD) as JSON.
    Measure(cmd::measure::MeasureArgs),
    /// Report what this host can run; exit status says whether --mode can run here.
    Check(cmd::check::CheckArgs),
    /// Build the guest image (kernel + reproducible initrd).
    Guest(cmd::guest::GuestArgs),
    /// Boot a sandbox VM from a launch config and show its agent's answers.
    Demo(cmd::demo::DemoArgs),
    /// Run the key broker (`serve`) or call its admin API (`admin`).
    Kbs(cmd::kbs::KbsArgs),
    /// Pull (policy, decryption, safe unpack) or encrypt container images.
    Image(cmd::image::ImageArgs),
    /// INSECURE, development only: export tee-sim's public roots for a development broker.
    Sim(cmd::sim::SimArgs),
    /// Generate a pod's agent policy and initdata (`generate`), or test a request (`test`).
    Policy(cmd::policy::PolicyArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log);
    match cmd::run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            #[allow(
                clippy::print_stderr,
                reason = "the binary's edge reports the error chain"
            )]
            {
                eprintln!("tsuba: error: {err:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
