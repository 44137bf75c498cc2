//! `tsuba image`: pull (policy check, decryption, safe unpack) and encrypt container images.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use tsuba_attestation_agent::attester::AttesterKind;
use tsuba_attestation_agent::kbs::{
    AttesterEvidence, KbsClient, KbsClientConfig, KbsKeyProvider, ResourceUri,
    fetch_registry_credentials,
};
use tsuba_image_rs::ocicrypt::{
    DecryptConfig, KeyId, KeyProvider, PrivateKey, PublicKey, Recipients, StaticKeyProvider,
};
use tsuba_image_rs::signature::{CosignPrivateKey, LookasideConfig, sign_image};
use tsuba_image_rs::{Credentials, OciLayout, Policy, Registry, RegistryOptions, UnpackOptions};
use tsuba_kbs::{AdminClient, ResourcePath};
use zeroize::Zeroizing;

/// Pull or encrypt container images.
#[derive(Debug, clap::Args)]
pub(crate) struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ImageCommand {
    /// Pull an image, check the signature policy, decrypt its layers and unpack it.
    Pull(PullArgs),
    /// Encrypt every layer of an image, each with a fresh key, into a registry or an OCI layout.
    Encrypt(EncryptArgs),
    #[command(flatten)]
    Signing(super::image_sign::SignCommand),
}

/// Registry user name and the environment variable holding the password.
#[derive(Debug, Clone, Default, clap::Args)]
pub(super) struct LoginArgs {
    /// Registry user name (the password comes from `--password-env`).
    #[arg(long, requires = "password_env")]
    username: Option<String>,
    /// Environment variable holding the registry password.
    #[arg(long, requires = "username")]
    password_env: Option<String>,
    /// INSECURE: send registry credentials (from --username or the broker) over plain HTTP too:
    /// to a --plain-http registry or to a token service with an http:// realm. Refused without
    /// it, since anyone on the path reads them.
    #[arg(long)]
    pub(super) insecure_credentials_over_http: bool,
}

/// How to reach the key broker and which attester proves this machine to it.
#[derive(Debug, Clone, Default, clap::Args)]
struct KbsArgs {
    /// Key broker URL: key-provider keys (and `--registry-auth-resource`) are fetched from it
    /// after attestation.
    #[arg(long, requires = "attester", conflicts_with = "provider_key")]
    kbs_url: Option<String>,
    /// CA certificates (PEM) to trust for the broker's TLS certificate.
    #[arg(long, requires = "kbs_url")]
    kbs_ca: Option<PathBuf>,
    /// The broker's public key pin, `sha256:<hex>` of its certificate's or its CA's
    /// SubjectPublicKeyInfo (`tsuba kbs pin --cert FILE` prints it).
    #[arg(long, requires = "kbs_url", conflicts_with = "kbs_ca")]
    kbs_pin: Option<String>,
    /// INSECURE: allow an `http://` broker URL (a broker on loopback in tests).
    #[arg(long, requires = "kbs_url", conflicts_with_all = ["kbs_ca", "kbs_pin"])]
    kbs_insecure_plain_http: bool,
    /// Where the evidence comes from: `snp`, `tdx`, `sim-snp` or `sim-tdx` (chosen explicitly,
    /// never detected).
    #[arg(long, requires = "kbs_url")]
    attester: Option<AttesterKind>,
    /// The tee-sim device for `sim-*` attesters: its character device or a Unix socket served
    /// by tee-sim.
    #[arg(long, requires = "attester")]
    sim_device: Option<PathBuf>,
    /// Registry credentials as a broker resource (`kbs:///repo/type/tag`, containers auth.json).
    #[arg(long, requires = "kbs_url", conflicts_with_all = ["username", "bearer_env"])]
    registry_auth_resource: Option<String>,
}

#[derive(Debug, clap::Args)]
struct PullArgs {
    /// `HOST[:PORT]/REPO[:TAG|@DIGEST]` from a registry, or `oci:DIR[:REF]` from an OCI layout
    /// (a local layout is the owner's own copy: no signature policy applies to it).
    image: String,
    /// Directory to unpack into; created, and must be empty if it exists.
    #[arg(long)]
    rootfs: PathBuf,
    /// Signature policy (containers-policy.json); required for registry pulls.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Where `signedBy` signatures are: registries.d's `docker`/`default-docker` entries as
    /// JSON, e.g. `{"default-docker":{"lookaside":"https://sigs.example.com"}}`.
    #[arg(long, requires = "policy")]
    signature_storage: Option<PathBuf>,
    /// A registry (`HOST:PORT`) to reach over plain HTTP; may be repeated.
    #[arg(long)]
    plain_http: Vec<String>,
    #[command(flatten)]
    login: LoginArgs,
    /// Environment variable holding a registry bearer token.
    #[arg(long, conflicts_with = "username")]
    bearer_env: Option<String>,
    /// Private key (PEM: RSA, EC P-256/P-384/P-521) for JWE-wrapped layer keys; may be repeated.
    #[arg(long)]
    decryption_key: Vec<PathBuf>,
    /// Key-encryption key for key-provider-wrapped layers, as `KID=FILE` (`kbs:///...` id,
    /// file of 32 raw bytes); may be repeated.
    #[arg(long)]
    provider_key: Vec<String>,
    #[command(flatten)]
    kbs: KbsArgs,
    /// Create device nodes found in layers (refused by default).
    #[arg(long)]
    allow_devices: bool,
}

#[derive(Debug, clap::Args)]
struct EncryptArgs {
    /// Source image: `docker://HOST[:PORT]/REPO[:TAG]` or `oci:DIR[:REF]`.
    #[arg(long)]
    from: String,
    /// Destination: `docker://HOST[:PORT]/REPO:TAG` (pushed) or `oci:DIR[:REF]` (created if
    /// missing).
    #[arg(long)]
    to: String,
    /// A registry (`HOST:PORT`) to reach over plain HTTP; may be repeated.
    #[arg(long)]
    plain_http: Vec<String>,
    /// Source registry user name (the password comes from `--src-password-env`).
    #[arg(long, requires = "src_password_env")]
    src_username: Option<String>,
    /// Environment variable holding the source registry password.
    #[arg(long, requires = "src_username")]
    src_password_env: Option<String>,
    /// Destination registry user name (the password comes from `--dest-password-env`).
    #[arg(long, requires = "dest_password_env")]
    dest_username: Option<String>,
    /// Environment variable holding the destination registry password.
    #[arg(long, requires = "dest_username")]
    dest_password_env: Option<String>,
    /// A JWE recipient: `jwe:PUBLIC.pem` (RSA, EC P-256/P-384/P-521); may be repeated.
    #[arg(long)]
    recipient: Vec<String>,
    /// Key-provider form: the key-encryption key's id in the key broker (`kbs:///repo/type/tag`).
    #[arg(long, visible_alias = "key-id")]
    key_provider: Option<String>,
    /// File with the 32 raw bytes of the key-encryption key; generated when not given.
    #[arg(long, requires = "key_provider")]
    kek: Option<PathBuf>,
    /// Write the key-encryption key (generated or given) to this new file (mode 0600).
    #[arg(long, requires = "key_provider")]
    kek_out: Option<PathBuf>,
    /// Upload the key-encryption key to this broker's admin API under the key id, before the
    /// image is written.
    #[arg(long, requires_all = ["key_provider", "kbs_admin_key"])]
    kbs_admin_url: Option<String>,
    /// Administrator's private key (PKCS#8 PEM) for `--kbs-admin-url`.
    #[arg(long, requires = "kbs_admin_url")]
    kbs_admin_key: Option<PathBuf>,
    /// CA certificates (PEM) to trust for the broker's TLS certificate.
    #[arg(long, requires = "kbs_admin_url")]
    kbs_admin_ca: Option<PathBuf>,
    /// Sign the pushed image with this cosign private key (as `tsuba image sign` does); only
    /// for a `docker://` destination.
    #[arg(long)]
    sign_key: Option<PathBuf>,
    /// File whose first line is the signing key's passphrase; without it the passphrase is
    /// empty.
    #[arg(long, requires = "sign_key")]
    sign_passphrase_file: Option<PathBuf>,
    /// INSECURE: send the source and destination credentials over plain HTTP too (a
    /// --plain-http registry, or an http:// token service).
    #[arg(long)]
    insecure_credentials_over_http: bool,
}

pub(crate) fn run(args: ImageArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match args.command {
        ImageCommand::Pull(a) => rt.block_on(pull(a)),
        ImageCommand::Encrypt(a) => rt.block_on(encrypt(&a)),
        ImageCommand::Signing(c) => super::image_sign::run(c, &rt),
    }
}

/// `oci:DIR[:REF]` → (DIR, REF); REF defaults to `latest`.
fn parse_oci(s: &str) -> Option<(PathBuf, String)> {
    let rest = s.strip_prefix("oci:")?;
    Some(match rest.rsplit_once(':') {
        Some((dir, r)) if !r.contains('/') && !r.is_empty() => (PathBuf::from(dir), r.to_owned()),
        _ => (PathBuf::from(rest), "latest".to_owned()),
    })
}

/// An image location for `encrypt`: a registry reference or an OCI layout.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    Registry(String),
    Layout(PathBuf, String),
}

fn parse_location(s: &str) -> anyhow::Result<Location> {
    if let Some(reference) = s.strip_prefix("docker://") {
        if reference.is_empty() {
            bail!("{s:?}: docker:// needs HOST[:PORT]/REPO[:TAG]");
        }
        return Ok(Location::Registry(reference.to_owned()));
    }
    let (dir, reference) =
        parse_oci(s).with_context(|| format!("{s:?} is neither docker://REF nor oci:DIR[:REF]"))?;
    Ok(Location::Layout(dir, reference))
}

fn read_kek(path: &Path) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let kek = Zeroizing::new(
        std::fs::read(path)
            .with_context(|| format!("reading key-encryption key {}", path.display()))?,
    );
    if kek.len() != 32 {
        bail!(
            "key-encryption key {} must be 32 raw bytes, not {}",
            path.display(),
            kek.len()
        );
    }
    Ok(kek)
}

/// 32 bytes from the kernel's CSPRNG.
fn generate_kek() -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let mut kek = Zeroizing::new(vec![0u8; 32]);
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut kek))
        .context("reading /dev/urandom")?;
    Ok(kek)
}

/// Writes a new file only its owner can read; refuses to replace one.
fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    super::image_sign::write_new(path, bytes, 0o600)
}

pub(super) fn credentials(
    login: &LoginArgs,
    bearer_env: Option<&String>,
) -> anyhow::Result<Credentials> {
    Ok(match (&login.username, &login.password_env, bearer_env) {
        (Some(u), Some(var), _) => Credentials::Basic {
            username: u.clone(),
            password: std::env::var(var).with_context(|| format!("reading ${var}"))?,
        },
        (_, _, Some(var)) => {
            Credentials::Bearer(std::env::var(var).with_context(|| format!("reading ${var}"))?)
        }
        _ => Credentials::Anonymous,
    })
}

/// The KBS client for `--kbs-url`, with the attester named by `--attester`.
async fn kbs_client(a: &KbsArgs) -> anyhow::Result<Option<Arc<KbsClient>>> {
    let Some(url) = &a.kbs_url else {
        return Ok(None);
    };
    let kind = a.attester.context("--kbs-url needs --attester")?;
    let attester = super::broker_client::attester(kind, a.sim_device.clone()).await?;
    let trust = super::broker_client::broker_trust(
        a.kbs_insecure_plain_http,
        a.kbs_pin.as_deref(),
        a.kbs_ca.as_deref(),
        ("--kbs-ca", "--kbs-pin"),
    )?;
    let config = KbsClientConfig::new(url.clone(), trust);
    let client = KbsClient::new(config, Arc::new(AttesterEvidence::new(attester)))?;
    Ok(Some(Arc::new(client)))
}

fn decrypt_config(a: &PullArgs, kbs: Option<&Arc<KbsClient>>) -> anyhow::Result<DecryptConfig> {
    let mut jwe_keys = Vec::new();
    for p in &a.decryption_key {
        let pem = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        jwe_keys
            .push(PrivateKey::from_pem(&pem).with_context(|| format!("parsing {}", p.display()))?);
    }
    let provider: Option<Arc<dyn KeyProvider>> = if let Some(client) = kbs {
        Some(Arc::new(KbsKeyProvider::new(Arc::clone(client))))
    } else if a.provider_key.is_empty() {
        None
    } else {
        let mut keys = StaticKeyProvider::default();
        for spec in &a.provider_key {
            let (kid, file) = spec
                .rsplit_once('=')
                .context("--provider-key must be KID=FILE")?;
            keys.insert(KeyId::parse(kid)?, read_kek(Path::new(file))?.to_vec());
        }
        Some(Arc::new(keys))
    };
    Ok(DecryptConfig { jwe_keys, provider })
}

fn prepare_rootfs(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if std::fs::read_dir(dir)?.next().is_some() {
        bail!(
            "{} is not empty: unpack into a new or empty directory",
            dir.display()
        );
    }
    Ok(())
}

async fn pull(a: PullArgs) -> anyhow::Result<ExitCode> {
    if parse_oci(&a.image).is_some() && a.kbs.registry_auth_resource.is_some() {
        bail!("--registry-auth-resource is for registry pulls, not oci: layouts");
    }
    let kbs = kbs_client(&a.kbs).await?;
    let decrypt = decrypt_config(&a, kbs.as_ref())?;
    prepare_rootfs(&a.rootfs)?;
    let unpack = UnpackOptions {
        devices: if a.allow_devices {
            tsuba_image_rs::DeviceNodes::Create
        } else {
            tsuba_image_rs::DeviceNodes::Refuse
        },
        ..UnpackOptions::default()
    };
    let stats = if let Some((dir, reference)) = parse_oci(&a.image) {
        let layout = OciLayout::open(&dir)?;
        tsuba_image_rs::unpack_from_layout(&layout, &reference, &decrypt, &a.rootfs, &unpack)
            .await?
    } else {
        let policy_path = a
            .policy
            .as_ref()
            .context("registry pulls need --policy (containers-policy.json)")?;
        let json = std::fs::read(policy_path)
            .with_context(|| format!("reading {}", policy_path.display()))?;
        let mut policy = Policy::from_json(&json)?;
        if let Some(path) = &a.signature_storage {
            let json =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            policy = policy.with_lookaside(LookasideConfig::from_json(&json)?);
        }
        let credentials = match (&a.kbs.registry_auth_resource, &kbs) {
            (Some(uri), Some(client)) => fetch_registry_credentials(client, uri, &a.image).await?,
            _ => credentials(&a.login, a.bearer_env.as_ref())?,
        };
        let registry = Registry::new(RegistryOptions {
            plain_http: a.plain_http.clone(),
            insecure_credentials_over_http: a.login.insecure_credentials_over_http,
            credentials,
            ..RegistryOptions::default()
        })?;
        let progress: tsuba_image_rs::Progress =
            Arc::new(|e| tracing::info!(event = ?e, "pull progress"));
        registry
            .pull(
                &a.image,
                &policy,
                &decrypt,
                &a.rootfs,
                &unpack,
                Some(progress),
            )
            .await?
    };
    let out = serde_json::json!({
        "manifest": stats.manifest.to_string(),
        "layers": stats.layers.iter().map(|l| serde_json::json!({
            "diff_id": l.diff_id.to_string(), "entries": l.entries, "bytes": l.uncompressed_bytes,
        })).collect::<Vec<_>>(),
    });
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn recipients(a: &EncryptArgs) -> anyhow::Result<(Recipients, Option<Zeroizing<Vec<u8>>>)> {
    let mut recipients = Recipients::default();
    for r in &a.recipient {
        let path = r
            .strip_prefix("jwe:")
            .context("--recipient must be jwe:PUBLIC.pem")?;
        let pem = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        recipients
            .jwe
            .push(PublicKey::from_pem(&pem).with_context(|| format!("parsing {path}"))?);
    }
    let mut kek_used = None;
    if let Some(kid) = &a.key_provider {
        let kid = KeyId::parse(kid)?;
        let kek = match &a.kek {
            Some(path) => read_kek(path)?,
            None if a.kbs_admin_url.is_none() && a.kek_out.is_none() => bail!(
                "a generated key-encryption key must go somewhere: give --kbs-admin-url or --kek-out (or --kek)"
            ),
            None => generate_kek()?,
        };
        recipients.provider = Some((kid, kek.to_vec().into()));
        kek_used = Some(kek);
    }
    if recipients.jwe.is_empty() && recipients.provider.is_none() {
        bail!("give at least one --recipient jwe:PEM or --key-provider kbs:///repo/type/tag");
    }
    Ok((recipients, kek_used))
}

/// The cosign key for `--sign-key`, read before anything is written.
fn signing_key(a: &EncryptArgs, to: &Location) -> anyhow::Result<Option<CosignPrivateKey>> {
    let Some(path) = &a.sign_key else {
        return Ok(None);
    };
    if !matches!(to, Location::Registry(_)) {
        bail!("--sign-key needs a docker:// destination (signatures live in the registry)");
    }
    let passphrase = super::image_sign::passphrase(a.sign_passphrase_file.as_deref())?;
    let pem = Zeroizing::new(super::image_sign::read_bounded(path)?);
    let key = CosignPrivateKey::from_encrypted_pem(&pem, passphrase.as_bytes())
        .with_context(|| format!("reading signing key {}", path.display()))?;
    Ok(Some(key))
}

/// Stores the key-encryption key in the broker under the key id's path.
async fn upload_kek(a: &EncryptArgs, url: &str, kek: &[u8]) -> anyhow::Result<()> {
    let kid = a
        .key_provider
        .as_deref()
        .context("--kbs-admin-url needs --key-provider")?;
    let uri = ResourceUri::parse(kid)?;
    let path = ResourcePath::parse(&uri.path())?;
    let key_path = a
        .kbs_admin_key
        .as_ref()
        .context("--kbs-admin-url needs --kbs-admin-key")?;
    let key_pem = Zeroizing::new(
        std::fs::read_to_string(key_path)
            .with_context(|| format!("reading {}", key_path.display()))?,
    );
    let ca = match &a.kbs_admin_ca {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let admin = AdminClient::new(url, &key_pem, ca.as_deref())?;
    admin
        .set_resource(&path, kek.to_vec())
        .await
        .with_context(|| format!("uploading the key-encryption key to {url} as {path}"))?;
    tracing::info!(resource = %path, "key-encryption key stored in the broker");
    Ok(())
}

async fn encrypt(a: &EncryptArgs) -> anyhow::Result<ExitCode> {
    let from = parse_location(&a.from).context("--from")?;
    let to = parse_location(&a.to).context("--to")?;
    let (recipients, kek) = recipients(a)?;
    let sign_key = signing_key(a, &to)?;
    if let (Some(kek), Some(out)) = (&kek, &a.kek_out) {
        write_secret(out, kek)?;
    }
    // The key first: an image nobody can decrypt is worse than a key nobody uses.
    if let (Some(kek), Some(url)) = (&kek, &a.kbs_admin_url) {
        upload_kek(a, url, kek).await?;
    }
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let registry = |login: LoginArgs| -> anyhow::Result<Registry> {
        Ok(Registry::new(RegistryOptions {
            plain_http: a.plain_http.clone(),
            insecure_credentials_over_http: login.insecure_credentials_over_http,
            credentials: credentials(&login, None)?,
            spool_dir: scratch.path().to_path_buf(),
            ..RegistryOptions::default()
        })?)
    };
    let (src, src_ref) = match &from {
        Location::Layout(dir, reference) => (OciLayout::open(dir)?, reference.clone()),
        Location::Registry(image) => {
            let layout = OciLayout::create(scratch.path().join("source"))?;
            let login = LoginArgs {
                username: a.src_username.clone(),
                password_env: a.src_password_env.clone(),
                insecure_credentials_over_http: a.insecure_credentials_over_http,
            };
            registry(login)?
                .pull_to_layout(image, &layout, "source")
                .await?;
            (layout, "source".to_owned())
        }
    };
    let (dst, dst_ref) = match &to {
        Location::Layout(dir, reference) => (OciLayout::create(dir)?, reference.clone()),
        Location::Registry(_) => (
            OciLayout::create(scratch.path().join("encrypted"))?,
            "encrypted".to_owned(),
        ),
    };
    let desc = {
        let (src, dst, src_ref, dst_ref) = (src.clone(), dst.clone(), src_ref, dst_ref.clone());
        tokio::task::spawn_blocking(move || {
            tsuba_image_rs::encrypt_layout(&src, &src_ref, &dst, &dst_ref, &recipients)
        })
        .await
        .context("encryption task")??
    };
    if let Location::Registry(image) = &to {
        let login = LoginArgs {
            username: a.dest_username.clone(),
            password_env: a.dest_password_env.clone(),
            insecure_credentials_over_http: a.insecure_credentials_over_http,
        };
        let registry = registry(login)?;
        let digest = registry.push_layout(&dst, &dst_ref, image).await?;
        if let Some(key) = &sign_key {
            // Signed under the name as given (so a pull by that tag matches the identity),
            // and only if the tag still names what was just pushed.
            let signed = sign_image(&registry, image, key)
                .await
                .with_context(|| format!("signing {image}"))?;
            if signed.manifest_digest != digest {
                bail!(
                    "{image} changed to {} while it was being signed (pushed {digest})",
                    signed.manifest_digest
                );
            }
            tracing::info!(tag = %signed.attachment_tag, "signature pushed");
        }
    }
    println!(
        "{}",
        serde_json::json!({ "manifest": desc.digest.to_string(), "to": a.to })
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn run_ok(cmd: &mut Command) {
        let out = cmd.output().expect("tool installed (skopeo, openssl)");
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A one-layer image (`/etc/owner`) in an OCI layout, made with umoci (unpack, add, repack:
    /// `umoci insert` 0.4 writes tar streams without their end blocks, which a strict reader
    /// rightly refuses).
    fn source_image(dir: &Path, scratch: &Path) {
        let bundle = scratch.join("bundle");
        let image = format!("{}:v1", dir.display());
        run_ok(Command::new("umoci").args(["init", "--layout"]).arg(dir));
        run_ok(Command::new("umoci").args(["new", "--image"]).arg(&image));
        run_ok(
            Command::new("umoci")
                .args(["unpack", "--rootless", "--image"])
                .arg(&image)
                .arg(&bundle),
        );
        std::fs::create_dir_all(bundle.join("rootfs/etc")).unwrap();
        std::fs::write(bundle.join("rootfs/etc/owner"), b"secret").unwrap();
        run_ok(
            Command::new("umoci")
                .args(["repack", "--image"])
                .arg(&image)
                .arg(&bundle),
        );
    }

    fn encrypt_args(from: String, to: String) -> EncryptArgs {
        EncryptArgs {
            from,
            to,
            plain_http: vec![],
            src_username: None,
            src_password_env: None,
            dest_username: None,
            insecure_credentials_over_http: false,
            dest_password_env: None,
            recipient: vec![],
            key_provider: None,
            kek: None,
            kek_out: None,
            kbs_admin_url: None,
            kbs_admin_key: None,
            kbs_admin_ca: None,
            sign_key: None,
            sign_passphrase_file: None,
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        <ImageArgs as clap::Args>::augment_args(clap::Command::new("image")).debug_assert();
    }

    #[test]
    fn parses_locations() {
        assert_eq!(
            parse_location("docker://127.0.0.1:5000/a/b:v1").unwrap(),
            Location::Registry("127.0.0.1:5000/a/b:v1".into())
        );
        assert_eq!(
            parse_location("oci:/x:v2").unwrap(),
            Location::Layout("/x".into(), "v2".into())
        );
        for bad in ["docker://", "127.0.0.1:5000/a", "http://x/y"] {
            assert!(parse_location(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_generated_kek_must_be_kept_somewhere() {
        let tmp = tempfile::tempdir().unwrap();
        let mut a = encrypt_args("oci:/nonexistent".into(), "oci:/nonexistent2".into());
        a.key_provider = Some("kbs:///default/image-key/demo".into());
        let err = recipients(&a).unwrap_err().to_string();
        assert!(err.contains("--kek-out"), "{err}");
        // With --kek-out, a fresh 32-byte key each time, written 0600, never over a file.
        a.kek_out = Some(tmp.path().join("kek"));
        let (r1, k1) = recipients(&a).unwrap();
        let (_, k2) = recipients(&a).unwrap();
        let (k1, k2) = (k1.unwrap(), k2.unwrap());
        assert_eq!(k1.len(), 32);
        assert_ne!(k1, k2);
        assert!(r1.provider.is_some() && r1.jwe.is_empty());
        write_secret(&tmp.path().join("kek"), &k1).unwrap();
        assert!(write_secret(&tmp.path().join("kek"), &k2).is_err());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tmp.path().join("kek"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A KEK file of the wrong size is refused.
        std::fs::write(tmp.path().join("short"), [1u8; 16]).unwrap();
        a.kek = Some(tmp.path().join("short"));
        assert!(recipients(&a).is_err());
        // An invalid key id is refused.
        a.kek = None;
        a.key_provider = Some("kbs:///only/two".into());
        assert!(recipients(&a).is_err());
    }

    #[test]
    fn signing_needs_a_registry_destination_and_a_readable_key() {
        let tmp = tempfile::tempdir().unwrap();
        let mut a = encrypt_args("oci:/a".into(), "oci:/b".into());
        assert!(
            signing_key(&a, &Location::Layout("/b".into(), "v1".into()))
                .unwrap()
                .is_none()
        );
        a.sign_key = Some(tmp.path().join("missing.key"));
        let err = signing_key(&a, &Location::Layout("/b".into(), "v1".into())).unwrap_err();
        assert!(err.to_string().contains("docker://"), "{err}");
        let registry = Location::Registry("127.0.0.1:5000/a:v1".into());
        assert!(signing_key(&a, &registry).is_err());
    }

    #[test]
    fn registry_credentials_from_the_broker_are_refused_for_layouts() {
        let tmp = tempfile::tempdir().unwrap();
        let rootfs = tmp.path().join("rootfs");
        let args = PullArgs {
            image: format!("oci:{}:v1", tmp.path().display()),
            rootfs: rootfs.clone(),
            policy: None,
            signature_storage: None,
            plain_http: vec![],
            login: LoginArgs::default(),
            bearer_env: None,
            decryption_key: vec![],
            provider_key: vec![],
            kbs: KbsArgs {
                registry_auth_resource: Some("kbs:///default/credential/registry".into()),
                ..KbsArgs::default()
            },
            allow_devices: false,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let err = rt.block_on(pull(args)).unwrap_err().to_string();
        assert!(err.contains("registry pulls"), "{err}");
        assert!(!rootfs.exists());
    }

    #[test]
    fn parses_oci_references() {
        assert_eq!(
            parse_oci("oci:/a/b:v1"),
            Some((PathBuf::from("/a/b"), "v1".into()))
        );
        assert_eq!(
            parse_oci("oci:/a/b"),
            Some((PathBuf::from("/a/b"), "latest".into()))
        );
        assert_eq!(parse_oci("reg.io/x:v1"), None);
    }

    #[test]
    fn encrypted_here_decrypts_with_skopeo_and_with_tsuba_pull() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let (key, public) = (t.join("k.pem"), t.join("k.pub.pem"));
        run_ok(
            Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-out",
                ])
                .arg(&key),
        );
        run_ok(
            Command::new("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(&key)
                .arg("-out")
                .arg(&public),
        );
        std::fs::write(t.join("kek"), [4u8; 32]).unwrap();
        source_image(&t.join("src"), t);
        let oci = |d: &str| format!("oci:{}:v1", t.join(d).display());

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(encrypt(&EncryptArgs {
            recipient: vec![format!("jwe:{}", public.display())],
            key_provider: Some("kbs:///default/image-kek/1".into()),
            kek: Some(t.join("kek")),
            ..encrypt_args(oci("src"), oci("enc"))
        }))
        .unwrap();

        // skopeo decrypts it to the original layer.
        run_ok(
            Command::new("skopeo")
                .args(["copy", "--decryption-key"])
                .arg(&key)
                .arg(oci("enc"))
                .arg(oci("dec")),
        );
        let layer_of = |d: &str| {
            let l = OciLayout::open(t.join(d)).unwrap();
            let m: tsuba_image_rs::oci::Manifest =
                l.read_json(&l.resolve("v1").unwrap(), "manifest").unwrap();
            m.layers[0].clone()
        };
        assert_eq!(layer_of("dec").digest, layer_of("src").digest);
        assert!(layer_of("enc").media_type.ends_with("+encrypted"));

        // tsuba image pull decrypts it with the JWE key and, separately, the key-provider KEK.
        for (jwe, provider, dir) in [
            (vec![key.clone()], vec![], "rootfs-jwe"),
            (
                vec![],
                vec![format!(
                    "kbs:///default/image-kek/1={}",
                    t.join("kek").display()
                )],
                "rootfs-kp",
            ),
        ] {
            let args = PullArgs {
                image: oci("enc"),
                rootfs: t.join(dir),
                policy: None,
                signature_storage: None,
                plain_http: vec![],
                login: LoginArgs::default(),
                bearer_env: None,
                decryption_key: jwe,
                provider_key: provider,
                kbs: KbsArgs::default(),
                allow_devices: false,
            };
            rt.block_on(pull(args)).unwrap();
            assert_eq!(
                std::fs::read(t.join(dir).join("etc/owner")).unwrap(),
                b"secret"
            );
        }

        // No key: refused, nothing unpacked.
        let args = PullArgs {
            image: oci("enc"),
            rootfs: t.join("rootfs-none"),
            policy: None,
            signature_storage: None,
            plain_http: vec![],
            login: LoginArgs::default(),
            bearer_env: None,
            decryption_key: vec![],
            provider_key: vec![],
            kbs: KbsArgs::default(),
            allow_devices: false,
        };
        assert!(rt.block_on(pull(args)).is_err());
        assert_eq!(std::fs::read_dir(t.join("rootfs-none")).unwrap().count(), 0);
    }
}
