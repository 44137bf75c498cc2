//! `tsuba kbs get-resource`: attest to a broker as a guest would and print or write one
//! resource. What an operator runs to check a broker's reference values and policies, against
//! `tsuba kbs serve` or Trustee's KBS alike (the role of Trustee's `kbs-client get-resource`).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use tsuba_attestation_agent::attester::AttesterKind;
use tsuba_attestation_agent::kbs::{
    AttesterEvidence, EvidenceProvider, InsecureSampleEvidence, KbsClient, KbsClientConfig,
};

/// Where the evidence comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum EvidenceSource {
    /// This machine is an SEV-SNP guest.
    Snp,
    /// This machine is a TDX guest.
    Tdx,
    /// tee-sim's simulated SEV-SNP, through --sim-device.
    SimSnp,
    /// tee-sim's simulated TDX, through --sim-device.
    SimTdx,
    /// Trustee's unsigned `sample` TEE: evidence anyone can write (needs
    /// --insecure-sample-attester).
    Sample,
}

impl EvidenceSource {
    fn attester(self) -> Option<AttesterKind> {
        match self {
            Self::Snp => Some(AttesterKind::Snp),
            Self::Tdx => Some(AttesterKind::Tdx),
            Self::SimSnp => Some(AttesterKind::SimSnp),
            Self::SimTdx => Some(AttesterKind::SimTdx),
            Self::Sample => None,
        }
    }
}

/// Attest, then print or write one resource.
#[derive(Debug, clap::Args)]
pub(super) struct GetResourceArgs {
    /// Broker URL, e.g. https://kbs.example:8080.
    #[arg(long)]
    url: String,
    /// CA certificates (PEM) to trust for the broker's TLS certificate.
    #[arg(long, conflicts_with = "pin")]
    ca: Option<PathBuf>,
    /// The broker's public-key pin, `sha256:<hex>` (`tsuba kbs pin --cert FILE` prints it).
    #[arg(long)]
    pin: Option<String>,
    /// INSECURE: an `http://` broker URL (a broker on loopback in tests).
    #[arg(long, conflicts_with_all = ["ca", "pin"])]
    insecure_plain_http: bool,
    /// Where the evidence comes from (chosen explicitly, never detected).
    #[arg(long, value_enum)]
    attester: EvidenceSource,
    /// The tee-sim device for `sim-*` attesters: its character device or a Unix socket served
    /// by tee-sim.
    #[arg(long)]
    sim_device: Option<PathBuf>,
    /// INSECURE: allow `--attester sample`. Its evidence is unsigned, so only a broker that
    /// accepts sample evidence (Trustee's default, tsuba's `--insecure-accept-sample-evidence`)
    /// takes it, and whatever it releases is released to anyone.
    #[arg(long)]
    insecure_sample_attester: bool,
    /// The launch digest the sample evidence claims (the broker compares it with its
    /// reference values; Trustee's sample verifier reports `abcde` when none is given).
    #[arg(long, requires = "insecure_sample_attester")]
    sample_launch_digest: Option<String>,
    /// The resource: `repo/type/tag` or `kbs:///repo/type/tag`.
    resource: String,
    /// Write the resource to this new file (mode 0600) instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub(super) async fn run(args: GetResourceArgs) -> anyhow::Result<ExitCode> {
    let uri = if args.resource.starts_with("kbs://") {
        args.resource.clone()
    } else {
        format!("kbs:///{}", args.resource)
    };
    let evidence = evidence_provider(&args).await?;
    let trust = super::broker_client::broker_trust(
        args.insecure_plain_http,
        args.pin.as_deref(),
        args.ca.as_deref(),
        ("--ca", "--pin"),
    )?;
    let client = KbsClient::new(KbsClientConfig::new(args.url.clone(), trust), evidence)?;
    let resource = client
        .get_resource(&uri)
        .await
        .with_context(|| format!("cannot get {uri} from {}", args.url))?;
    match &args.out {
        Some(path) => {
            // A new file only: an existing one may be readable by others, or be something else.
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| {
                    format!("cannot create {} (it must not exist yet)", path.display())
                })?;
            file.write_all(&resource)
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            tracing::info!(resource = %uri, bytes = resource.len(), out = %path.display(), "resource written");
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&resource)
                .and_then(|()| stdout.flush())
                .context("cannot write to stdout")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn evidence_provider(args: &GetResourceArgs) -> anyhow::Result<Arc<dyn EvidenceProvider>> {
    let Some(kind) = args.attester.attester() else {
        if !args.insecure_sample_attester {
            bail!(
                "--attester sample sends unsigned evidence anyone can forge: \
                 add --insecure-sample-attester to use it against a test broker"
            );
        }
        if args.sim_device.is_some() {
            bail!("--sim-device is only for the sim-snp and sim-tdx attesters");
        }
        tracing::warn!(
            "using Trustee's unsigned SAMPLE evidence: a broker that takes it releases to anyone"
        );
        return Ok(Arc::new(match &args.sample_launch_digest {
            Some(digest) => InsecureSampleEvidence::with_launch_digest(digest.clone()),
            None => InsecureSampleEvidence::default(),
        }));
    };
    if args.insecure_sample_attester {
        bail!("--insecure-sample-attester is only for --attester sample");
    }
    let attester = super::broker_client::attester(kind, args.sim_device.clone()).await?;
    Ok(Arc::new(AttesterEvidence::new(attester)))
}
