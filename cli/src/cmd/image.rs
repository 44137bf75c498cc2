//! `tsuba image`: pull (policy check, decryption, safe unpack) and encrypt container images.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use tsuba_image_rs::ocicrypt::{
    DecryptConfig, KeyId, PrivateKey, PublicKey, Recipients, StaticKeyProvider,
};
use tsuba_image_rs::{Credentials, OciLayout, Policy, Registry, RegistryOptions, UnpackOptions};

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
    /// Encrypt every layer of an image in an OCI layout, each with a fresh key.
    Encrypt(EncryptArgs),
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
    /// A registry (`HOST:PORT`) to reach over plain HTTP; may be repeated.
    #[arg(long)]
    plain_http: Vec<String>,
    /// Registry user name (the password comes from `--password-env`).
    #[arg(long, requires = "password_env")]
    username: Option<String>,
    /// Environment variable holding the registry password.
    #[arg(long, requires = "username")]
    password_env: Option<String>,
    /// Environment variable holding a registry bearer token.
    #[arg(long, conflicts_with = "username")]
    bearer_env: Option<String>,
    /// Private key (PEM: RSA, EC P-256/P-384) for JWE-wrapped layer keys; may be repeated.
    #[arg(long)]
    decryption_key: Vec<PathBuf>,
    /// Key-encryption key for key-provider-wrapped layers, as `KID=FILE` (`kbs:///...` id,
    /// file of 32 raw bytes); may be repeated.
    #[arg(long)]
    provider_key: Vec<String>,
    /// Create device nodes found in layers (refused by default).
    #[arg(long)]
    allow_devices: bool,
}

#[derive(Debug, clap::Args)]
struct EncryptArgs {
    /// Source image: `oci:DIR[:REF]`.
    #[arg(long)]
    from: String,
    /// Destination: `oci:DIR[:REF]` (created if missing).
    #[arg(long)]
    to: String,
    /// A JWE recipient: `jwe:PUBLIC.pem` (RSA, EC P-256/P-384); may be repeated.
    #[arg(long)]
    recipient: Vec<String>,
    /// Key-provider form: the key-encryption key's id in the key broker (`kbs:///repo/type/tag`).
    #[arg(long, requires = "kek")]
    key_id: Option<String>,
    /// Key-provider form: file with the 32 raw bytes of the key-encryption key (upload it to the
    /// broker under `--key-id` with `tsuba kbs admin`).
    #[arg(long, requires = "key_id")]
    kek: Option<PathBuf>,
}

pub(crate) fn run(args: ImageArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match args.command {
        ImageCommand::Pull(a) => rt.block_on(pull(a)),
        ImageCommand::Encrypt(a) => encrypt(&a),
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

fn read_kek(path: &Path) -> anyhow::Result<Vec<u8>> {
    let kek = std::fs::read(path)
        .with_context(|| format!("reading key-encryption key {}", path.display()))?;
    if kek.len() != 32 {
        bail!(
            "key-encryption key {} must be 32 raw bytes, not {}",
            path.display(),
            kek.len()
        );
    }
    Ok(kek)
}

fn decrypt_config(a: &PullArgs) -> anyhow::Result<DecryptConfig> {
    let mut jwe_keys = Vec::new();
    for p in &a.decryption_key {
        let pem = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        jwe_keys
            .push(PrivateKey::from_pem(&pem).with_context(|| format!("parsing {}", p.display()))?);
    }
    let provider = if a.provider_key.is_empty() {
        None
    } else {
        let mut keys = StaticKeyProvider::default();
        for spec in &a.provider_key {
            let (kid, file) = spec
                .rsplit_once('=')
                .context("--provider-key must be KID=FILE")?;
            keys.insert(KeyId::parse(kid)?, read_kek(Path::new(file))?);
        }
        Some(Arc::new(keys) as Arc<dyn tsuba_image_rs::ocicrypt::KeyProvider>)
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
    let decrypt = decrypt_config(&a)?;
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
        let policy = Policy::from_json(&json)?;
        let credentials = match (&a.username, &a.password_env, &a.bearer_env) {
            (Some(u), Some(var), _) => Credentials::Basic {
                username: u.clone(),
                password: std::env::var(var).with_context(|| format!("reading ${var}"))?,
            },
            (_, _, Some(var)) => {
                Credentials::Bearer(std::env::var(var).with_context(|| format!("reading ${var}"))?)
            }
            _ => Credentials::Anonymous,
        };
        let registry = Registry::new(RegistryOptions {
            plain_http: a.plain_http.clone(),
            credentials,
            ..RegistryOptions::default()
        });
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

fn encrypt(a: &EncryptArgs) -> anyhow::Result<ExitCode> {
    let (src_dir, src_ref) = parse_oci(&a.from).context("--from must be oci:DIR[:REF]")?;
    let (dst_dir, dst_ref) = parse_oci(&a.to).context("--to must be oci:DIR[:REF]")?;
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
    if let (Some(kid), Some(kek)) = (&a.key_id, &a.kek) {
        recipients.provider = Some((KeyId::parse(kid)?, read_kek(kek)?.into()));
    }
    if recipients.jwe.is_empty() && recipients.provider.is_none() {
        bail!("give at least one --recipient jwe:PEM or --key-id with --kek");
    }
    let src = OciLayout::open(&src_dir)?;
    let dst = OciLayout::create(&dst_dir)?;
    let desc = tsuba_image_rs::encrypt_layout(&src, &src_ref, &dst, &dst_ref, &recipients)?;
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

        encrypt(&EncryptArgs {
            from: oci("src"),
            to: oci("enc"),
            recipient: vec![format!("jwe:{}", public.display())],
            key_id: Some("kbs:///default/image-kek/1".into()),
            kek: Some(t.join("kek")),
        })
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
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
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
                plain_http: vec![],
                username: None,
                password_env: None,
                bearer_env: None,
                decryption_key: jwe,
                provider_key: provider,
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
            plain_http: vec![],
            username: None,
            password_env: None,
            bearer_env: None,
            decryption_key: vec![],
            provider_key: vec![],
            allow_devices: false,
        };
        assert!(rt.block_on(pull(args)).is_err());
        assert_eq!(std::fs::read_dir(t.join("rootfs-none")).unwrap().count(), 0);
    }
}
