//! The CLI as a key broker's client, the way a guest reaches it: how the broker is
//! authenticated and which attester proves this machine. Shared by `tsuba image pull
//! --kbs-url` and `tsuba kbs get-resource`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use tsuba_attestation_agent::attester::{Attester, AttesterKind, DetectPaths, open_attester};
use tsuba_attestation_agent::kbs::{BrokerTrust, SpkiPin};

/// How the broker is authenticated: plain HTTP (explicitly insecure), a public-key pin, or CA
/// certificates (PEM). There are no built-in roots: a broker is trusted only as configured.
/// `flags` names the CA and pin options in the error when neither is given.
pub(super) fn broker_trust(
    insecure_plain_http: bool,
    pin: Option<&str>,
    ca: Option<&Path>,
    flags: (&str, &str),
) -> anyhow::Result<BrokerTrust> {
    Ok(if insecure_plain_http {
        BrokerTrust::InsecurePlainHttp
    } else if let Some(pin) = pin {
        BrokerTrust::Pin(SpkiPin::parse(pin).context("the broker pin")?)
    } else if let Some(ca) = ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        BrokerTrust::ca_pem(&pem).with_context(|| format!("broker CA {}", ca.display()))?
    } else {
        let (ca_flag, pin_flag) = flags;
        bail!(
            "an https:// broker needs {ca_flag} or {pin_flag} (no built-in roots are trusted; \
             `tsuba kbs pin --cert FILE` prints a pin)"
        );
    })
}

/// The attester of `kind`, opened off the async runtime (it may touch devices). Sim attesters
/// read tee-sim's device or socket at `sim_device`; the others never take one.
pub(super) async fn attester(
    kind: AttesterKind,
    sim_device: Option<PathBuf>,
) -> anyhow::Result<Arc<dyn Attester>> {
    tokio::task::spawn_blocking(move || open(kind, sim_device))
        .await
        .context("attester task")?
}

fn open(kind: AttesterKind, sim_device: Option<PathBuf>) -> anyhow::Result<Arc<dyn Attester>> {
    if !kind.is_simulated() {
        if sim_device.is_some() {
            bail!("--sim-device is only for the sim-snp and sim-tdx attesters");
        }
        return Ok(Arc::from(open_attester(kind, &DetectPaths::default())?));
    }
    let path = sim_device.with_context(|| format!("the {kind} attester needs --sim-device"))?;
    open_simulated(kind, &path)
}

#[cfg(feature = "insecure-sim")]
fn open_simulated(kind: AttesterKind, path: &Path) -> anyhow::Result<Arc<dyn Attester>> {
    use tsuba_attestation_agent::attester::SimDeviceAttester;
    let is_socket = std::os::unix::fs::FileTypeExt::is_socket(
        &std::fs::metadata(path)
            .with_context(|| format!("sim device {}", path.display()))?
            .file_type(),
    );
    let attester = if is_socket {
        let stream = std::os::unix::net::UnixStream::connect(path)
            .with_context(|| format!("connecting to sim device {}", path.display()))?;
        SimDeviceAttester::from_stream(Box::new(stream))?
    } else {
        SimDeviceAttester::open(path)?
    };
    if attester.kind() != kind {
        bail!(
            "sim device {} simulates {}, not {kind}",
            path.display(),
            attester.kind()
        );
    }
    tracing::warn!(attester = %kind, "using SIMULATED evidence: only a broker in insecure sim mode accepts it");
    Ok(Arc::new(attester))
}

#[cfg(not(feature = "insecure-sim"))]
fn open_simulated(kind: AttesterKind, _: &Path) -> anyhow::Result<Arc<dyn Attester>> {
    bail!("the {kind} attester is not in this build of tsuba (it needs the insecure-sim feature)")
}
