//! `tsuba kbs admin-keygen` writes a private key operators' own tools load (PKCS#8 v1: OpenSSL
//! 3.0 and Python's `cryptography` refuse v2 Ed25519 keys), tokens signed with it by OpenSSL or
//! by `tsuba kbs admin` are accepted by `tsuba kbs serve`, and a v2 key written by earlier
//! releases still works. Runs the real binary on 127.0.0.1 and the `openssl` command.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed unwrap is a failed test"
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};

/// The broker process; killed on drop.
struct Broker {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tsuba() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tsuba"))
}

fn run(command: &mut Command) -> Output {
    let output = command.stdin(Stdio::null()).output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn start(dir: &Path, public: &Path) -> Broker {
    start_with(dir, &["--admin-public-key".as_ref(), public.as_os_str()])
}

fn start_with(dir: &Path, admin: &[&std::ffi::OsStr]) -> Broker {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let child = tsuba()
        .args(["kbs", "serve", "--insecure-plain-http", "--listen"])
        .arg(addr.to_string())
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(admin)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let broker = Broker { child, addr };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "broker did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    broker
}

/// `GET /kbs/v0/admin/resources` with `token`: the status line and the body.
fn list_with(broker: &Broker, token: &str) -> (String, String) {
    let mut stream = TcpStream::connect(broker.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET /kbs/v0/admin/resources HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
         connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// An admin token signed by `openssl pkeyutl` with the PEM key at `key`.
fn openssl_token(dir: &Path, key: &Path) -> String {
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    let now = since_epoch.as_secs();
    let claims = format!(
        r#"{{"iss":"tsuba","sub":"admin","aud":["KBS"],"role":"admin","iat":{now},"exp":{},"jti":"{:032x}"}}"#,
        now + 60,
        // Unique per token: a reused id would be refused as a replay.
        since_epoch.as_nanos()
    );
    openssl_sign(dir, key, &claims)
}

/// A JWT with `claims`, signed EdDSA by `openssl pkeyutl` with the PEM key at `key`.
fn openssl_sign(dir: &Path, key: &Path, claims: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","typ":"JWT"}"#);
    let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims));
    let input_file = dir.join("token-input");
    let sig_file = dir.join("token-sig");
    std::fs::write(&input_file, &input).unwrap();
    run(Command::new("openssl")
        .args(["pkeyutl", "-sign", "-rawin", "-inkey"])
        .arg(key)
        .arg("-in")
        .arg(&input_file)
        .arg("-out")
        .arg(&sig_file));
    let signature = std::fs::read(&sig_file).unwrap();
    assert_eq!(signature.len(), 64);
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[test]
fn generated_key_loads_in_openssl_and_signs_tokens_the_broker_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("admin.key");
    let public = dir.path().join("admin.pub");
    run(tsuba()
        .args(["kbs", "admin-keygen", "--private"])
        .arg(&key)
        .arg("--public")
        .arg(&public));

    // OpenSSL loads it, and derives the public key admin-keygen wrote.
    run(Command::new("openssl")
        .args(["pkey", "-noout", "-in"])
        .arg(&key));
    let derived = run(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key));
    assert_eq!(
        String::from_utf8(derived.stdout).unwrap(),
        std::fs::read_to_string(&public).unwrap()
    );

    let broker = start(dir.path(), &public);
    let url = format!("http://{}", broker.addr);
    let secret = dir.path().join("secret");
    std::fs::write(&secret, b"s3cret").unwrap();
    run(tsuba()
        .args(["kbs", "admin", "--url", &url, "--key"])
        .arg(&key)
        .args(["set-resource", "default/test/one"])
        .arg(&secret));

    // A token OpenSSL signed with the key is accepted, once; a tampered one is not.
    let token = openssl_token(dir.path(), &key);
    let (status, body) = list_with(&broker, &token);
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(body.contains("default/test/one"), "{body}");
    assert_eq!(list_with(&broker, &token).0, "HTTP/1.1 401 Unauthorized");
    // The tampered token is fresh (never presented), so only its signature can refuse it.
    let fresh = openssl_token(dir.path(), &key);
    let (input, signature) = fresh.rsplit_once('.').unwrap();
    let mut signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    signature[0] ^= 1;
    let tampered = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature));
    assert_eq!(list_with(&broker, &tampered).0, "HTTP/1.1 401 Unauthorized");

    // The same key as PKCS#8 v2 (public key embedded), as earlier releases wrote it, still works.
    let v1 = std::fs::read_to_string(&key).unwrap();
    let v2 = SigningKey::from_pkcs8_pem(&v1)
        .unwrap()
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap();
    assert_ne!(v2.as_str(), v1);
    let v2_key = dir.path().join("admin-v2.key");
    std::fs::write(&v2_key, v2.as_bytes()).unwrap();
    let listed = run(tsuba()
        .args(["kbs", "admin", "--url", &url, "--key"])
        .arg(&v2_key)
        .arg("list-resources"));
    assert_eq!(
        String::from_utf8(listed.stdout).unwrap(),
        "default/test/one\n"
    );
}

/// Trustee's docker-compose set-up: an Ed25519 key from `openssl genpkey`, and one long-lived
/// token (`iss`, `sub`, `aud`, `role`, ten years) that `kbs-client config --admin-token-file`
/// sends on every call. With `--admin-tokens reusable` the broker takes it every time; by default
/// only once; with `--admin-disabled` never.
#[test]
fn trustees_long_lived_admin_token_works_when_the_operator_makes_tokens_reusable() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("private.key");
    let public = dir.path().join("public.pub");
    run(Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&key));
    run(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public));
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = openssl_sign(
        dir.path(),
        &key,
        &format!(
            r#"{{"iss":"TrusteeInDocker","sub":"admin","aud":["KBS"],"role":"admin","iat":{now},"exp":{}}}"#,
            now + 315_360_000
        ),
    );

    let reusable = start_with(
        dir.path(),
        &[
            "--admin-public-key".as_ref(),
            public.as_os_str(),
            "--admin-tokens".as_ref(),
            "reusable".as_ref(),
        ],
    );
    for _ in 0..3 {
        assert_eq!(list_with(&reusable, &token).0, "HTTP/1.1 200 OK");
    }
    drop(reusable);

    let single_use = start(dir.path(), &public);
    assert_eq!(list_with(&single_use, &token).0, "HTTP/1.1 200 OK");
    let (status, body) = list_with(&single_use, &token);
    assert_eq!(status, "HTTP/1.1 401 Unauthorized");
    assert!(body.contains("already used"), "{body}");
    drop(single_use);

    let disabled = start_with(dir.path(), &["--admin-disabled".as_ref()]);
    let (status, body) = list_with(&disabled, &token);
    assert_eq!(status, "HTTP/1.1 401 Unauthorized");
    assert!(body.contains("disabled"), "{body}");
}
