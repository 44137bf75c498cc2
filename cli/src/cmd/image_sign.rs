//! `tsuba image keygen` and `tsuba image sign`: cosign-compatible key pairs and signatures,
//! for image owners. The signature is stored as a sigstore attachment in the image's own
//! repository, where a `sigstoreSigned` policy (ours, or containers/image's) finds it.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use tsuba_image_rs::signature::{CosignPrivateKey, KdfStrength, sign_image};
use tsuba_image_rs::{Registry, RegistryOptions};
use zeroize::Zeroizing;

/// Largest key or passphrase file read.
const MAX_FILE: u64 = 64 << 10;

/// Key generation and signing.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum SignCommand {
    /// Generate a cosign key pair: `PREFIX.key` (encrypted, mode 0600) and `PREFIX.pub`.
    Keygen(KeygenArgs),
    /// Sign an image in a registry with a cosign private key (pushes `sha256-<hex>.sig`).
    Sign(SignArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct KeygenArgs {
    /// Path prefix of the two files written; neither may exist yet.
    #[arg(long)]
    out: PathBuf,
    /// File whose first line is the passphrase that encrypts the private key (as skopeo's
    /// `--sign-passphrase-file`); without it the passphrase is empty.
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct SignArgs {
    /// The image: `[docker://]HOST[:PORT]/REPO:TAG` or `…@sha256:…`.
    image: String,
    /// The encrypted private key (`ENCRYPTED COSIGN PRIVATE KEY` or `ENCRYPTED SIGSTORE
    /// PRIVATE KEY` PEM, as `tsuba image keygen` and cosign write).
    #[arg(long)]
    key: PathBuf,
    /// File whose first line is the key's passphrase; without it the passphrase is empty.
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
    /// A registry (`HOST:PORT`) to reach over plain HTTP; may be repeated.
    #[arg(long)]
    plain_http: Vec<String>,
    #[command(flatten)]
    login: super::image::LoginArgs,
}

pub(crate) fn run(command: SignCommand, rt: &tokio::runtime::Runtime) -> anyhow::Result<ExitCode> {
    match command {
        SignCommand::Keygen(a) => keygen(&a),
        SignCommand::Sign(a) => rt.block_on(sign(a)),
    }
}

fn keygen(a: &KeygenArgs) -> anyhow::Result<ExitCode> {
    let passphrase = passphrase(a.passphrase_file.as_deref())?;
    let (key_path, pub_path) = keygen_files(&a.out, passphrase.as_bytes())?;
    println!("private key: {}", key_path.display());
    println!("public key:  {}", pub_path.display());
    Ok(ExitCode::SUCCESS)
}

/// Writes a fresh key pair to `PREFIX.key` and `PREFIX.pub`.
fn keygen_files(prefix: &Path, passphrase: &[u8]) -> anyhow::Result<(PathBuf, PathBuf)> {
    let with_ext = |ext: &str| {
        let mut p = prefix.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p)
    };
    let (key_path, pub_path) = (with_ext(".key"), with_ext(".pub"));
    for p in [&key_path, &pub_path] {
        if p.exists() {
            bail!("{} already exists", p.display());
        }
    }
    if passphrase.is_empty() {
        tracing::warn!("the private key is encrypted with an empty passphrase");
    }
    let key = CosignPrivateKey::generate();
    // Legacy scrypt cost: the one set every reader accepts (containers/image 5.x's go-tuf
    // reader takes nothing else).
    let pem = key.to_encrypted_pem(passphrase, KdfStrength::Legacy)?;
    let public = key.public_key().to_pem()?;
    write_new(&key_path, pem.as_bytes(), 0o600)?;
    write_new(&pub_path, public.as_bytes(), 0o644)?;
    Ok((key_path, pub_path))
}

async fn sign(a: SignArgs) -> anyhow::Result<ExitCode> {
    let passphrase = passphrase(a.passphrase_file.as_deref())?;
    let pem = read_bounded(&a.key)?;
    let key = CosignPrivateKey::from_encrypted_pem(&pem, passphrase.as_bytes())
        .with_context(|| format!("reading private key {}", a.key.display()))?;
    let credentials = super::image::credentials(&a.login, None)?;
    let registry = Registry::new(RegistryOptions {
        plain_http: a.plain_http.clone(),
        insecure_credentials_over_http: a.login.insecure_credentials_over_http,
        credentials,
        ..RegistryOptions::default()
    })?;
    let image = a.image.strip_prefix("docker://").unwrap_or(&a.image);
    let signed = sign_image(&registry, image, &key)
        .await
        .with_context(|| format!("signing {image}"))?;
    println!(
        "signed {} ({}) as {}",
        signed.docker_reference, signed.manifest_digest, signed.attachment_tag
    );
    Ok(ExitCode::SUCCESS)
}

/// The passphrase in the first line of `file` (without its line ending), as skopeo reads
/// `--sign-passphrase-file`; empty without a file.
pub(super) fn passphrase(file: Option<&Path>) -> anyhow::Result<Zeroizing<String>> {
    let Some(path) = file else {
        return Ok(Zeroizing::new(String::new()));
    };
    let bytes = Zeroizing::new(read_bounded(path)?);
    let text = std::str::from_utf8(&bytes)
        .with_context(|| format!("passphrase file {} is not UTF-8", path.display()))?;
    if text.is_empty() {
        bail!("passphrase file {} is empty", path.display());
    }
    let line = text.split('\n').next().unwrap_or_default();
    Ok(Zeroizing::new(line.to_owned()))
}

pub(super) fn read_bounded(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE + 1).read_to_end(&mut out))
        .with_context(|| format!("reading {}", path.display()))?;
    if out.len() as u64 > MAX_FILE {
        bail!("{} exceeds {MAX_FILE} bytes", path.display());
    }
    Ok(out)
}

pub(super) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use tsuba_image_rs::signature::{CosignKeyError, CosignPublicKey};

    use super::*;

    #[test]
    fn passphrase_is_the_first_line_like_skopeo() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "secret words\nsecond line\n").unwrap();
        assert_eq!(passphrase(Some(&f)).unwrap().as_str(), "secret words");
        std::fs::write(&f, "no newline").unwrap();
        assert_eq!(passphrase(Some(&f)).unwrap().as_str(), "no newline");
        std::fs::write(&f, "").unwrap();
        assert!(passphrase(Some(&f)).is_err());
        std::fs::write(&f, vec![b'a'; usize::try_from(MAX_FILE).unwrap() + 1]).unwrap();
        assert!(passphrase(Some(&f)).is_err());
        assert_eq!(passphrase(None).unwrap().as_str(), "");
    }

    #[test]
    fn keygen_writes_a_readable_pair_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("owner");
        let (key, public) = keygen_files(&prefix, b"pw").unwrap();
        assert_eq!(key, dir.path().join("owner.key"));
        assert_eq!(public, dir.path().join("owner.pub"));
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let pem = std::fs::read(&key).unwrap();
        assert!(pem.starts_with(b"-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----"));
        let back = CosignPrivateKey::from_encrypted_pem(&pem, b"pw").unwrap();
        let public = CosignPublicKey::from_pem(&std::fs::read(&public).unwrap()).unwrap();
        assert_eq!(back.public_key(), public);
        // The same prefix again: refused, files untouched.
        assert!(keygen_files(&prefix, b"pw").is_err());
        assert_eq!(std::fs::read(&key).unwrap(), pem);
        // The wrong passphrase does not open it.
        assert!(matches!(
            CosignPrivateKey::from_encrypted_pem(&pem, b"other"),
            Err(CosignKeyError::Decrypt)
        ));
    }
}
