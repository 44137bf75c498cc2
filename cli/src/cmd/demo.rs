//! `tsuba demo`: boot a sandbox VM from a launch config and show what its agent answers; with
//! `--pull`, have the guest attest to its key broker and pull, decrypt and unpack an image.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use tsuba_protocols::agent::PullImageResponse;
use tsuba_protocols::evidence::SnpReport;
use tsuba_shim::{AgentClientError, Sandbox};
use tsuba_vmm_tee::{LaunchConfig, LaunchOptions, Vm, launch_reference_values};

/// Boot the guest described by a launch config, call the agent, shut down.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Launch config (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Seconds to wait for the agent.
    #[arg(long, default_value_t = 120)]
    agent_timeout: u64,
    /// Do not talk to an agent: boot, wait until the guest powers off, print how long it took.
    /// Measures the boot floor with an initrd whose init only powers off (bench/boot.sh).
    #[arg(long)]
    until_exit: bool,
    /// After the health checks, ask the agent to pull this image (`HOST:PORT/REPO:TAG`, as the
    /// guest reaches it) with `Image.Pull`: the guest attests to the broker named on its measured
    /// command line, then pulls, decrypts and unpacks in guest memory. Exits with status 3 when
    /// the broker refuses the guest.
    #[arg(long)]
    pull: Option<String>,
    /// Seconds the pull (attestation, download, decryption, unpacking) may take.
    #[arg(long, default_value_t = 180)]
    pull_timeout: u64,
}

/// Exit status when the key broker refused the guest (the pull's `PERMISSION_DENIED`).
const EXIT_REFUSED: u8 = 3;

/// How an `Image.Pull` ended, as the demo reports it.
enum PullOutcome {
    Pulled(PullImageResponse, Duration),
    /// The broker's reason, as the agent passed it on.
    Refused(String, Duration),
}

pub(crate) fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let config = LaunchConfig::from_file(&args.config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let options = LaunchOptions::for_this_host();
        println!("launching a {} guest ...", config.mode);
        if args.until_exit {
            let mut vm = Vm::launch(&config, &options).await?;
            let deadline = Duration::from_secs(args.agent_timeout);
            let status = tokio::time::timeout(deadline, vm.wait_exit())
                .await
                .context("the guest did not power off in time")??;
            println!(
                "guest exited after {:.1} s ({status}, {})",
                vm.started().elapsed().as_secs_f64(),
                vm.accel().qemu_name()
            );
            vm.shutdown().await?;
            return Ok(ExitCode::SUCCESS);
        }
        let sandbox =
            Sandbox::start(&config, &options, Duration::from_secs(args.agent_timeout)).await?;
        let ready = sandbox.vm().started().elapsed();
        let timeout = Duration::from_secs(10);
        let result = async {
            let check = sandbox.agent().check(timeout).await?;
            let version = sandbox.agent().version(timeout).await?;
            // In sim-snp mode, the guest's own evidence, from the tee-sim device. Without
            // initdata the agent serves nothing but health (Health.Check says why).
            let report = if config.mode == tsuba_vmm_tee::Mode::SimSnp && config.initdata.is_some()
            {
                let asked = std::time::Instant::now();
                let report = sandbox.agent().diagnostic_report(b"tsuba demo", timeout).await?;
                Some((report, asked.elapsed()))
            } else {
                None
            };
            let pull = match &args.pull {
                Some(image) => Some(pull(&sandbox, image, args.pull_timeout).await?),
                None => None,
            };
            anyhow::Ok((check, version, report, pull))
        }
        .await;
        let accel = sandbox.vm().accel().qemu_name();
        sandbox.stop().await?;
        let (check, version, report, pull) = result?;
        println!("agent ready after {:.1} s ({accel})", ready.as_secs_f64());
        println!(
            "Health.Check: status {:?}, uptime {} ms, agent RSS {} KiB",
            check.status.enum_value_or_default(),
            check.uptime_ms,
            check.agent_rss_kib
        );
        if !check.reason.is_empty() {
            println!("  not serving: {}", check.reason);
        }
        println!(
            "Health.Version: agent {}, protocol v{}, guest kernel {}, tee {}",
            version.agent_version, version.protocol_version, version.kernel_release, version.tee
        );
        if let Some((report, round_trip)) = report {
            let parsed = SnpReport::parse(&report.evidence).context("the guest's report")?;
            let expected = launch_reference_values(&config)?
                .snp
                .context("sim-snp launch without an SNP reference value")?;
            let matches = parsed.measurement == expected.launch_digest.0;
            println!(
                "guest evidence ({}, {:.1} ms round trip): measurement {}\n  tsuba measure predicts   {} -> {}",
                report.attester,
                round_trip.as_secs_f64() * 1000.0,
                hex::encode(parsed.measurement),
                expected.launch_digest.to_hex(),
                if matches { "MATCH" } else { "MISMATCH" }
            );
            if !matches {
                anyhow::bail!("the guest's measurement is not the predicted one");
            }
        }
        match pull {
            None => Ok(ExitCode::SUCCESS),
            Some(PullOutcome::Pulled(pulled, took)) => {
                println!(
                    "Image.Pull: attested, pulled, decrypted and unpacked in the guest in {:.1} s\n  \
                     manifest {}: layers {}, tar entries {}, {} bytes unpacked into {} (guest memory)",
                    took.as_secs_f64(),
                    pulled.manifest_digest,
                    pulled.layers,
                    pulled.entries,
                    pulled.unpacked_bytes,
                    pulled.rootfs
                );
                Ok(ExitCode::SUCCESS)
            }
            Some(PullOutcome::Refused(reason, took)) => {
                println!(
                    "Image.Pull refused after {:.1} s: {reason}",
                    took.as_secs_f64()
                );
                Ok(ExitCode::from(EXIT_REFUSED))
            }
        }
    })
}

/// Calls `Image.Pull`; a broker refusal is an outcome, any other failure an error (with the end
/// of the guest's console, which never holds image content, to say why).
async fn pull(sandbox: &Sandbox, image: &str, timeout_s: u64) -> anyhow::Result<PullOutcome> {
    let started = std::time::Instant::now();
    match sandbox
        .agent()
        .pull_image(image, Duration::from_secs(timeout_s))
        .await
    {
        Ok(pulled) => Ok(PullOutcome::Pulled(pulled, started.elapsed())),
        Err(AgentClientError::Rpc {
            source: ttrpc::Error::RpcStatus(status),
            ..
        }) if status.code() == ttrpc::Code::PERMISSION_DENIED => Ok(PullOutcome::Refused(
            status.message.clone(),
            started.elapsed(),
        )),
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "pulling {image} in the guest failed; guest console:\n{}",
            sandbox.vm().console_tail()
        ))),
    }
}
