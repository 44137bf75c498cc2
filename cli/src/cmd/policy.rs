//! `tsuba policy generate` and `tsuba policy test`: the agent policy of one pod, and a dry run
//! of a request against a policy.
//!
//! `generate` reads a Pod YAML, writes the policy that allows exactly that pod (see `pod.rs`),
//! puts it with the guest settings into an initdata document, and gives the document's digests
//! (what the launch reports as SNP HOST_DATA / TDX MRCONFIGID) and the pod annotation that
//! carries it. The same YAML and flags always give the same bytes. `test` evaluates one agent
//! request with the very engine the guest agent uses.

mod pod;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;
use tsuba_policy::agent::{PERMISSIVE_POLICY, default_policy_text};
use tsuba_policy::{
    AgentPolicy, AgentRequest, GuestSettings, Initdata, InitdataAlgorithm, MAX_INITDATA_LEN,
    POLICY_REGO, render_initdata, render_policy,
};

use self::pod::{MAX_POD_YAML_LEN, Pod, PolicyImage, Stdio};

/// The pod annotation Kata's runtime reads initdata from (gzip, then base64).
pub(crate) const INITDATA_ANNOTATION: &str = "io.katacontainers.config.runtime.cc_init_data";

/// The largest request file `policy test` reads (an OCI spec is at most 1 MiB on the API).
const MAX_REQUEST_LEN: usize = 4 * 1024 * 1024;

/// The largest CA certificate file read for `--kbs-cert`.
const MAX_CERT_LEN: usize = 64 * 1024;

/// Generate or test agent policies.
#[derive(Debug, clap::Args)]
pub(crate) struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Debug, clap::Subcommand)]
enum PolicyCommand {
    /// Write the agent policy that allows exactly one Pod, in an initdata document, with its
    /// digests and pod annotation.
    Generate(GenerateArgs),
    /// Decide one agent request with a policy (or an initdata document's policy).
    Test(TestArgs),
}

/// The initdata digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Algorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl From<Algorithm> for InitdataAlgorithm {
    fn from(a: Algorithm) -> Self {
        match a {
            Algorithm::Sha256 => Self::Sha256,
            Algorithm::Sha384 => Self::Sha384,
            Algorithm::Sha512 => Self::Sha512,
        }
    }
}

#[derive(Debug, clap::Args)]
struct GenerateArgs {
    /// The Pod YAML (`apiVersion: v1`, `kind: Pod`; at most 1 MiB).
    pod: PathBuf,
    /// Write policy.rego, initdata.toml, annotation.txt and reference-values.txt here (created
    /// if missing); without it, print the digests and the annotation.
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// The host may not read the containers' stdout.
    #[arg(long)]
    no_read_stdout: bool,
    /// The host may not read the containers' stderr.
    #[arg(long)]
    no_read_stderr: bool,
    /// The host may write to the containers' stdin.
    #[arg(long)]
    allow_stdin: bool,
    /// Do not ask registries for digests: every image must be pinned (`name@sha256:…`) or
    /// covered by --signed-image.
    #[arg(long)]
    offline: bool,
    /// An image repository (e.g. `registry.example/app`) covered by the signature policy of
    /// --image-policy: its images are allowed by repository, with any tag or digest. Repeatable.
    #[arg(long, value_name = "REPOSITORY")]
    signed_image: Vec<String>,
    /// A registry (`host:port`) reached over plain HTTP, for digest look-ups here and for the
    /// guest's pulls. Repeatable.
    #[arg(long, value_name = "HOST:PORT")]
    plain_http_registry: Vec<String>,
    /// The key broker's URL, for the guest.
    #[arg(long)]
    kbs_url: Option<String>,
    /// The key broker's public-key pin, `sha256:<hex>`.
    #[arg(long)]
    kbs_pin: Option<String>,
    /// The CA certificate (PEM file) that authenticates the key broker.
    #[arg(long, value_name = "PEM_FILE")]
    kbs_cert: Option<PathBuf>,
    /// INSECURE, simulation only: allow an `http://` key broker.
    #[arg(long)]
    insecure_kbs_http: bool,
    /// The broker resource holding the image signature policy (`kbs:///repo/type/tag`).
    #[arg(long, value_name = "KBS_URI")]
    image_policy: Option<String>,
    /// The broker resource holding the registries' auth.json (`kbs:///…`).
    #[arg(long, value_name = "KBS_URI")]
    registry_auth: Option<String>,
    /// The broker resource holding the signature storage configuration (`kbs:///…`).
    #[arg(long, value_name = "KBS_URI")]
    signature_storage: Option<String>,
    /// The initdata digest algorithm (CoCo's default is sha384).
    #[arg(long, value_enum, default_value = "sha384")]
    algorithm: Algorithm,
    /// INSECURE, debugging only: put the permissive policy (every request allowed, exec and
    /// stdin included) in initdata instead of the pod's.
    #[arg(long)]
    permissive: bool,
}

#[derive(Debug, clap::Args)]
struct TestArgs {
    /// A policy (`.rego`), or an initdata document (`.toml`) whose `policy.rego` is tested.
    #[arg(long)]
    policy: PathBuf,
    /// The request: `{"request": "CreateContainerRequest", "input": {…}}`, the input as the
    /// agent builds it.
    #[arg(
        long,
        required_unless_present = "oci_spec",
        conflicts_with = "oci_spec"
    )]
    request: Option<PathBuf>,
    /// An OCI spec (config.json): test the CreateContainerRequest that carries it.
    #[arg(long, requires = "image")]
    oci_spec: Option<PathBuf>,
    /// The image of the --oci-spec request.
    #[arg(long, requires = "oci_spec")]
    image: Option<String>,
}

pub(crate) fn run(args: PolicyArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        PolicyCommand::Generate(args) => generate(args),
        PolicyCommand::Test(args) => test(args),
    }
}

/// A note for the user on stderr (stdout stays machine-readable).
fn note(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "tsuba: {message}");
}

/// Reads at most `limit` bytes of `path`; more is an error naming `what`.
fn read_bounded(path: &Path, limit: usize, what: &str) -> anyhow::Result<Vec<u8>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open the {what} {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read the {what} {}", path.display()))?;
    if bytes.len() > limit {
        bail!(
            "the {what} {} is larger than {limit} bytes: give a smaller file",
            path.display()
        );
    }
    Ok(bytes)
}

fn generate(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let yaml = read_bounded(&args.pod, MAX_POD_YAML_LEN, "Pod YAML")?;
    let pod = Pod::parse(&yaml).with_context(|| format!("Pod YAML {}", args.pod.display()))?;
    let settings = guest_settings(&args)?;
    let policy = if args.permissive {
        note(
            "WARNING: --permissive: the policy allows EVERY request (any container, exec, stdin); \
             for debugging only, never for a pod that holds secrets",
        );
        PERMISSIVE_POLICY.to_owned()
    } else {
        if !args.signed_image.is_empty() && settings.image_policy.is_none() {
            bail!(
                "--signed-image allows any image of a repository that the guest's signature \
                 policy accepts, but no --image-policy is given: give --image-policy kbs:///… \
                 naming the signature policy"
            );
        }
        let images = resolve_images(&pod, &args)?;
        let generated = pod
            .policy_data(
                &images,
                Stdio {
                    read_stdout: !args.no_read_stdout,
                    read_stderr: !args.no_read_stderr,
                    write_stdin: args.allow_stdin,
                },
            )
            .with_context(|| format!("Pod YAML {}", args.pod.display()))?;
        for warning in &generated.warnings {
            note(&format!("warning: {warning}"));
        }
        render_policy(&generated.data)
    };
    AgentPolicy::compile(&policy)
        .context("the generated policy cannot be loaded by the agent (fewer containers?)")?;
    let mut entries = settings
        .to_entries()
        .context("cannot write the guest settings")?;
    entries.insert(POLICY_REGO.to_owned(), policy.clone());
    let initdata = render_initdata(args.algorithm.into(), &entries)
        .context("cannot write the initdata document (is the pod too large for initdata?)")?;
    let annotation = annotation(&initdata)?;
    let host_data = initdata.host_data().to_hex();
    let mr_config_id = initdata.mr_config_id().to_hex();
    let mut out = std::io::stdout().lock();
    match &args.output_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the output directory {}", dir.display()))?;
            let reference_values = format!(
                "algorithm={}\nhost_data={host_data}\nmr_config_id={mr_config_id}\n",
                initdata.algorithm()
            );
            for (name, content) in [
                ("policy.rego", policy.as_str()),
                ("initdata.toml", initdata.as_str()),
                ("annotation.txt", &format!("{annotation}\n")),
                ("reference-values.txt", &reference_values),
            ] {
                let path = dir.join(name);
                std::fs::write(&path, content)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            note(&format!(
                "wrote policy.rego, initdata.toml, annotation.txt (the value of pod annotation \
                 {INITDATA_ANNOTATION}) and reference-values.txt to {}",
                dir.display()
            ));
            writeln!(out, "host_data={host_data}\nmr_config_id={mr_config_id}")?;
        }
        None => {
            writeln!(
                out,
                "host_data={host_data}\nmr_config_id={mr_config_id}\n{INITDATA_ANNOTATION}={annotation}"
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The guest settings of the flags, checked enough that a typo fails here and not in the
/// guest at launch.
fn guest_settings(args: &GenerateArgs) -> anyhow::Result<GuestSettings> {
    if let Some(url) = &args.kbs_url {
        let plain = url.starts_with("http://");
        if !plain && !url.starts_with("https://") {
            bail!("--kbs-url {url} is not an https:// URL: give the broker's https:// URL");
        }
        if plain && !args.insecure_kbs_http {
            bail!(
                "--kbs-url {url} is plain HTTP: give the broker's https:// URL (or, for \
                 simulation only, --insecure-kbs-http)"
            );
        }
    }
    if let Some(pin) = &args.kbs_pin {
        let hex = pin.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("--kbs-pin {pin} is not sha256:<64 hex digits>: give the broker's key pin");
        }
    }
    for (flag, value) in [
        ("--image-policy", &args.image_policy),
        ("--registry-auth", &args.registry_auth),
        ("--signature-storage", &args.signature_storage),
    ] {
        if let Some(uri) = value
            && !uri.starts_with("kbs:///")
        {
            bail!("{flag} {uri} is not a broker resource: give kbs:///<repository>/<type>/<tag>");
        }
    }
    if (args.kbs_pin.is_some() || args.kbs_cert.is_some()) && args.kbs_url.is_none() {
        bail!("--kbs-pin and --kbs-cert authenticate a broker: give its --kbs-url too");
    }
    let kbs_cert = match &args.kbs_cert {
        None => None,
        Some(path) => {
            let bytes = read_bounded(path, MAX_CERT_LEN, "broker CA certificate")?;
            let pem = String::from_utf8(bytes)
                .ok()
                .filter(|pem| pem.contains("-----BEGIN CERTIFICATE-----"));
            let Some(pem) = pem else {
                bail!(
                    "--kbs-cert {} is not a PEM certificate: give the broker CA's PEM file",
                    path.display()
                );
            };
            Some(pem)
        }
    };
    Ok(GuestSettings {
        kbs_url: args.kbs_url.clone(),
        kbs_cert,
        kbs_pin: args.kbs_pin.clone(),
        insecure_kbs_http: args.insecure_kbs_http,
        image_policy: args.image_policy.clone(),
        registry_auth: args.registry_auth.clone(),
        signature_storage: args.signature_storage.clone(),
        plain_http_registries: args.plain_http_registry.clone(),
        insecure_registry_credentials_over_http: false,
    })
}

/// The repository of an image reference: without digest, and without a tag after the last
/// slash (the rules' `repository`).
fn repository(reference: &str) -> &str {
    let name = reference.split('@').next().unwrap_or(reference);
    let last = name.rfind('/').map_or(0, |i| i + 1);
    match name[last..].find(':') {
        Some(colon) => &name[..last + colon],
        None => name,
    }
}

/// How the policy will name one image.
#[derive(Debug, PartialEq, Eq)]
enum ImagePlan {
    /// Known without the registry.
    Known(PolicyImage),
    /// Ask the registry for the digest.
    Resolve,
}

fn plan_image(reference: &str, signed: &[String], offline: bool) -> anyhow::Result<ImagePlan> {
    if let Some((_, digest)) = reference.split_once('@') {
        let hex = digest.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            bail!(
                "image {reference}: the digest is not sha256:<64 lowercase hex digits>: pin the \
                 image by its sha256 manifest digest"
            );
        }
        return Ok(ImagePlan::Known(PolicyImage {
            reference: reference.to_owned(),
            signed: false,
        }));
    }
    if signed.iter().any(|s| s == repository(reference)) {
        return Ok(ImagePlan::Known(PolicyImage {
            reference: reference.to_owned(),
            signed: true,
        }));
    }
    if offline {
        bail!(unpinned(reference, "--offline is given"));
    }
    Ok(ImagePlan::Resolve)
}

fn unpinned(reference: &str, why: &str) -> String {
    format!(
        "image {reference} is not pinned by digest and {why}: pin it in the Pod YAML as \
         {}@sha256:<digest>, or, when the guest's signature policy covers it, give \
         --signed-image {} (with --image-policy)",
        repository(reference),
        repository(reference)
    )
}

/// Each image reference of the pod, as the policy names it.
fn resolve_images(pod: &Pod, args: &GenerateArgs) -> anyhow::Result<BTreeMap<String, PolicyImage>> {
    let mut images = BTreeMap::new();
    let mut to_resolve = Vec::new();
    for (container, reference) in pod.images() {
        if reference.is_empty() {
            bail!("container {container} has no image: give its `image`");
        }
        match plan_image(&reference, &args.signed_image, args.offline)? {
            ImagePlan::Known(image) => {
                images.insert(reference, image);
            }
            ImagePlan::Resolve if !to_resolve.contains(&reference) => to_resolve.push(reference),
            ImagePlan::Resolve => {}
        }
    }
    if to_resolve.is_empty() {
        return Ok(images);
    }
    let registry = tsuba_image_rs::Registry::new(tsuba_image_rs::RegistryOptions {
        plain_http: args.plain_http_registry.clone(),
        attempts: 2,
        request_timeout: std::time::Duration::from_secs(20),
        ..tsuba_image_rs::RegistryOptions::default()
    })
    .context("cannot set up the registry client")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    for reference in to_resolve {
        let resolved = rt
            .block_on(registry.resolve(&reference))
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .with_context(|| unpinned(&reference, "the registry could not be asked"))?;
        let pinned = format!("{}@{}", repository(&reference), resolved.signed_digest);
        note(&format!(
            "image {reference} is {pinned}: the policy allows only that reference, so the pod \
             must name it (write it into the Pod YAML)"
        ));
        images.insert(
            reference,
            PolicyImage {
                reference: pinned,
                signed: false,
            },
        );
    }
    Ok(images)
}

/// The annotation value: the document gzip-compressed, then base64 (standard alphabet).
/// The gzip header has no time and no file name, and the level is fixed, so the same document
/// always gives the same annotation.
fn annotation(initdata: &Initdata) -> anyhow::Result<String> {
    let mut gz = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::new(9));
    gz.write_all(initdata.as_str().as_bytes())
        .context("cannot compress the initdata document")?;
    let bytes = gz
        .finish()
        .context("cannot compress the initdata document")?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// A request file of `policy test`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestFile {
    request: String,
    input: Value,
}

fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let policy_text = load_policy(&args.policy)?;
    let policy = AgentPolicy::compile(&policy_text)
        .with_context(|| format!("policy {}", args.policy.display()))?;
    let (request, input) = match (&args.request, &args.oci_spec, &args.image) {
        (Some(path), _, _) => {
            let bytes = read_bounded(path, MAX_REQUEST_LEN, "request")?;
            let file: RequestFile = serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "request {} is not {{\"request\": \"<RuleName>\", \"input\": {{…}}}}",
                    path.display()
                )
            })?;
            let Some(request) = AgentRequest::from_rule(&file.request) else {
                let names: Vec<&str> = AgentRequest::ALL.iter().map(|r| r.rule()).collect();
                bail!(
                    "request {}: {} is not an agent request; give one of {}",
                    path.display(),
                    file.request,
                    names.join(", ")
                );
            };
            (request, file.input)
        }
        (None, Some(spec), Some(image)) => {
            let bytes = read_bounded(spec, MAX_REQUEST_LEN, "OCI spec")?;
            let oci: Value = serde_json::from_slice(&bytes)
                .with_context(|| format!("OCI spec {} is not JSON", spec.display()))?;
            let input = serde_json::json!({
                "container_id": "policy-test",
                "sandbox_id": "policy-test",
                "image": image,
                "oci": oci,
            });
            (AgentRequest::CreateContainer, input)
        }
        _ => bail!("give --request, or --oci-spec with --image"),
    };
    let mut out = std::io::stdout().lock();
    match policy.decide(request, &input) {
        Ok(()) => {
            writeln!(out, "allowed")?;
            Ok(ExitCode::SUCCESS)
        }
        Err(refusal) => {
            writeln!(out, "refused by rule {}", refusal.rule)?;
            for reason in &refusal.reasons {
                writeln!(out, "  {reason}")?;
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The policy text of a `.rego` file, or of a `.toml` initdata document's `policy.rego` (the
/// default policy when it has none, as in the guest).
fn load_policy(path: &Path) -> anyhow::Result<String> {
    let is_initdata = path.extension().is_some_and(|e| e == "toml");
    let bytes = read_bounded(path, MAX_INITDATA_LEN, "policy")?;
    if is_initdata {
        let doc =
            Initdata::from_bytes(&bytes).with_context(|| format!("initdata {}", path.display()))?;
        return Ok(match doc.get(POLICY_REGO) {
            Some(text) => text.to_owned(),
            None => {
                note(&format!(
                    "initdata {} has no {POLICY_REGO}: testing the default policy the guest \
                     applies then (no container runs)",
                    path.display()
                ));
                default_policy_text()
            }
        });
    }
    String::from_utf8(bytes).map_err(|_| {
        anyhow::anyhow!(
            "policy {} is not UTF-8 text: give a .rego policy or a .toml initdata document",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "1111111111111111111111111111111111111111111111111111111111111111";

    #[test]
    fn repository_strips_tag_and_digest_but_not_a_registry_port() {
        assert_eq!(repository("r.example:5000/app:1"), "r.example:5000/app");
        assert_eq!(repository("r.example:5000/app"), "r.example:5000/app");
        assert_eq!(
            repository(&format!("r.example/app:1@sha256:{HEX}")),
            "r.example/app"
        );
        assert_eq!(repository("nginx:1.25"), "nginx");
    }

    #[test]
    fn images_are_pinned_signed_resolved_or_refused() {
        let pinned = format!("r.example/app@sha256:{HEX}");
        assert_eq!(
            plan_image(&pinned, &[], true).unwrap(),
            ImagePlan::Known(PolicyImage {
                reference: pinned.clone(),
                signed: false
            })
        );
        let signed = ["r.example:5000/app".to_owned()];
        assert_eq!(
            plan_image("r.example:5000/app:1", &signed, true).unwrap(),
            ImagePlan::Known(PolicyImage {
                reference: "r.example:5000/app:1".into(),
                signed: true
            })
        );
        assert_eq!(
            plan_image("r.example:5000/app:1", &[], false).unwrap(),
            ImagePlan::Resolve
        );
        let offline = plan_image("r.example:5000/other:1", &signed, true)
            .unwrap_err()
            .to_string();
        assert!(
            offline.contains("--offline")
                && offline.contains("--signed-image r.example:5000/other"),
            "{offline}"
        );
        for bad in [
            "r.example/app@sha256:1234",
            "r.example/app@sha512:1111",
            &format!("r.example/app@sha256:{}", "AB".repeat(32)),
        ] {
            assert!(plan_image(bad, &[], true).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_annotation_is_deterministic_gzip() {
        let doc = Initdata::parse("version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n").unwrap();
        let a = annotation(&doc).unwrap();
        assert_eq!(a, annotation(&doc).unwrap());
        let gz = base64::engine::general_purpose::STANDARD
            .decode(&a)
            .unwrap();
        // gzip magic, deflate, no flags (no file name), mtime 0.
        assert_eq!(&gz[..8], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]);
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, doc.as_str());
    }
}
