//! Bearer-token registry auth: the distribution registry configured with `auth: token`, and a
//! small token server in this test that checks basic credentials and issues RS256 tokens
//! (signed with `openssl`, certificate in the `x5c` header, trusted by the registry's
//! `rootcertbundle`). `tsuba image encrypt` pushes through it and `tsuba image pull` pulls
//! through it; wrong or missing credentials, and a token for another repository, are refused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration test: a failed unwrap is a failed test"
)]

mod encrypt_support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use encrypt_support::{Registry, RegistryAuth, run_ok, source_image, tree, tsuba_with_env};

const ISSUER: &str = "tsuba-test-issuer";
const SERVICE: &str = "tsuba-test-registry";
const USER: &str = "owner";
const PASSWORD: &str = "token-password";

/// The signing key and its self-signed certificate.
struct Signer {
    key: PathBuf,
    cert_pem: PathBuf,
    cert_der_b64: String,
}

impl Signer {
    fn new(dir: &Path) -> Self {
        let (key, cert_pem) = (dir.join("token.key"), dir.join("token.crt"));
        run_ok(
            Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                ])
                .args(["-subj", "/CN=tsuba test token signer", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert_pem),
        );
        let der = encrypt_support::run_bounded(
            Command::new("openssl")
                .args(["x509", "-outform", "DER", "-in"])
                .arg(&cert_pem),
        );
        assert!(der.status.success());
        Self {
            key,
            cert_pem,
            cert_der_b64: STANDARD.encode(der.stdout),
        }
    }

    /// An RS256 token granting `actions` on repository `name`.
    fn token(&self, name: &str, actions: &[&str]) -> String {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [self.cert_der_b64]});
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": USER, "aud": SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{name}"),
            "access": [{"type": "repository", "name": name, "actions": actions}],
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("input");
        std::fs::write(&path, &input).unwrap();
        let sig = encrypt_support::run_bounded(
            Command::new("openssl")
                .args(["dgst", "-sha256", "-binary", "-sign"])
                .arg(&self.key)
                .arg(&path),
        );
        assert!(sig.status.success());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.stdout))
    }
}

/// The token endpoint on loopback; stopped when dropped.
struct TokenServer {
    addr: String,
    issued: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenServer {
    fn start(signer: Arc<Signer>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (issued, refused, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (i, r, s) = (issued.clone(), refused.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if answer(stream, &signer) {
                            i.fetch_add(1, Ordering::Relaxed);
                        } else {
                            r.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self {
            addr,
            issued,
            refused,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers one token request; true when a token was issued.
fn answer(stream: TcpStream, signer: &Signer) -> bool {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return false;
    }
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            authorization = Some(value.trim().to_owned());
        }
    }
    let expected = format!("Basic {}", STANDARD.encode(format!("{USER}:{PASSWORD}")));
    let target = request_line.split(' ').nth(1).unwrap_or("");
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let mut scopes = Vec::new();
    let mut service = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = v
            .replace("%3A", ":")
            .replace("%2C", ",")
            .replace("%2F", "/");
        match k {
            "scope" => scopes.push(v),
            "service" => service = Some(v),
            _ => {}
        }
    }
    let mut out = stream;
    if authorization.as_deref() != Some(expected.as_str()) || service.as_deref() != Some(SERVICE) {
        let _ = out.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        );
        return false;
    }
    // One scope (`repository:NAME:ACTIONS`) per request from the clients used here.
    let (name, actions) = scopes
        .first()
        .and_then(|s| s.strip_prefix("repository:"))
        .and_then(|s| s.rsplit_once(':'))
        .map(|(n, a)| {
            (
                n.to_owned(),
                a.split(',').map(str::to_owned).collect::<Vec<_>>(),
            )
        })
        .unwrap_or_default();
    let actions: Vec<&str> = actions.iter().map(String::as_str).collect();
    let token = signer.token(&name, &actions);
    let body =
        serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
    let _ = out.write_all(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    true
}

fn ec_keys(dir: &Path) -> (PathBuf, PathBuf) {
    let (private, public) = (dir.join("p521.pem"), dir.join("p521.pub.pem"));
    run_ok(
        Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-521",
                "-out",
            ])
            .arg(&private),
    );
    run_ok(
        Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public),
    );
    (private, public)
}

fn is_empty(dir: &Path) -> bool {
    !dir.exists() || std::fs::read_dir(dir).unwrap().next().is_none()
}

#[test]
fn pushes_and_pulls_through_a_token_server() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let signer = Arc::new(Signer::new(t));
    let tokens = TokenServer::start(Arc::clone(&signer));
    let realm = format!("http://{}/token", tokens.addr);
    let registry = Registry::start_with(Some(RegistryAuth::Token {
        realm: &realm,
        issuer: ISSUER,
        service: SERVICE,
        rootcert: &signer.cert_pem,
    }));
    let bundle = source_image(&t.join("src"), t);
    let (private, public) = ec_keys(t);
    let policy = t.join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let image = format!("{}/private/app:v1", registry.addr);

    // Encrypt for a P-521 recipient and push with a token obtained with basic credentials.
    let out = tsuba_with_env(
        &[
            "image",
            "encrypt",
            "--from",
            &format!("oci:{}:v1", t.join("src").display()),
            "--to",
            &format!("docker://{image}"),
            "--plain-http",
            &registry.addr,
            "--dest-username",
            USER,
            "--dest-password-env",
            "PW",
            "--insecure-credentials-over-http",
            "--recipient",
            &format!("jwe:{}", public.display()),
        ],
        &[("PW", PASSWORD)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let issued_for_push = tokens.issued.load(Ordering::Relaxed);
    assert!(
        issued_for_push > 0,
        "the push went through the token server"
    );

    let pull = |rootfs: &Path, extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec![
            "image".to_owned(),
            "pull".into(),
            image.clone(),
            "--rootfs".into(),
            rootfs.display().to_string(),
            "--policy".into(),
            policy.display().to_string(),
            "--plain-http".into(),
            registry.addr.clone(),
            "--decryption-key".into(),
            private.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        tsuba_with_env(&args, env)
    };

    // The registry is plain HTTP: without the explicit insecure option the password is never
    // sent, not even to the token server.
    let issued_before = tokens.issued.load(Ordering::Relaxed);
    let refused_before = tokens.refused.load(Ordering::Relaxed);
    let cleartext = t.join("cleartext");
    let out = pull(
        &cleartext,
        &["--username", USER, "--password-env", "PW"],
        &[("PW", PASSWORD)],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "refusing to send registry credentials for {}: the registry itself is reached over plain HTTP",
            registry.addr
        )),
        "{stderr}"
    );
    assert_eq!(tokens.issued.load(Ordering::Relaxed), issued_before);
    assert_eq!(tokens.refused.load(Ordering::Relaxed), refused_before);
    assert!(is_empty(&cleartext));

    // Basic credentials exchanged for a token: the rootfs is the plaintext image.
    let rootfs = t.join("rootfs");
    let out = pull(
        &rootfs,
        &[
            "--username",
            USER,
            "--password-env",
            "PW",
            "--insecure-credentials-over-http",
        ],
        &[("PW", PASSWORD)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tree(&rootfs), tree(&bundle.join("rootfs")));
    assert!(tokens.issued.load(Ordering::Relaxed) > issued_for_push);

    // A wrong password: the token server refuses, so does the pull; nothing unpacked.
    let refused_before = tokens.refused.load(Ordering::Relaxed);
    let wrong = t.join("wrong");
    let out = pull(
        &wrong,
        &[
            "--username",
            USER,
            "--password-env",
            "PW",
            "--insecure-credentials-over-http",
        ],
        &[("PW", "not-the-password")],
    );
    assert!(!out.status.success());
    assert!(tokens.refused.load(Ordering::Relaxed) > refused_before);
    assert!(is_empty(&wrong));

    // Anonymous: refused.
    let anonymous = t.join("anonymous");
    assert!(!pull(&anonymous, &[], &[]).status.success());
    assert!(is_empty(&anonymous));

    // A bearer token given directly: one for this repository works, one for another does not.
    let direct = t.join("direct");
    let token = signer.token("private/app", &["pull"]);
    let out = pull(
        &direct,
        &["--bearer-env", "TOKEN", "--insecure-credentials-over-http"],
        &[("TOKEN", &token)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tree(&direct), tree(&bundle.join("rootfs")));
    let other = t.join("other");
    let token = signer.token("private/other", &["pull"]);
    let out = pull(
        &other,
        &["--bearer-env", "TOKEN", "--insecure-credentials-over-http"],
        &[("TOKEN", &token)],
    );
    assert!(!out.status.success());
    assert!(is_empty(&other));
}
