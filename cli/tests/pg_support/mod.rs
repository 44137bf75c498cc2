//! A PostgreSQL server of its own for the broker-replica tests: Debian's `postgresql` binaries,
//! a cluster in a temporary folder, on a loopback port; stopped and removed when dropped, even
//! when the test fails. PostgreSQL refuses to run as root, so as root the server runs as the
//! `postgres` user (`runuser`), with the folder handed to it.
//!
//! Also `tsuba kbs serve --database` replicas on loopback, killed when dropped.

#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a failure here is a test failure"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::encrypt_support::{free_port, run_bounded, run_ok};

/// Longest the server may take to start or stop.
const PG_DEADLINE_SECS: &str = "30";
/// Longest a replica may take to become ready.
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// The newest installed server's `bin` folder (`/usr/lib/postgresql/<version>/bin`).
fn server_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .expect("no PostgreSQL server under /usr/lib/postgresql/<version>/bin: run scripts/setup (Debian package postgresql)")
}

fn is_root() -> bool {
    run_ok(Command::new("id").arg("-u")).trim() == "0"
}

/// A PostgreSQL cluster in a temporary folder, listening on 127.0.0.1:`port`.
pub(crate) struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub(crate) port: u16,
    as_postgres: bool,
    /// With TLS: the CA that signed the server's certificate (for 127.0.0.1).
    pub(crate) ca: Option<PathBuf>,
}

impl Postgres {
    pub(crate) fn start() -> Self {
        Self::start_with(false)
    }

    /// A server that also takes TLS connections, with a certificate for 127.0.0.1 from a CA
    /// made here (`self.ca`).
    pub(crate) fn start_tls() -> Self {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Self {
        let bin = server_bin();
        let dir = tempfile::Builder::new()
            .prefix("tsuba-pg-")
            .tempdir()
            .unwrap();
        let as_postgres = is_root();
        if as_postgres {
            run_ok(
                Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(dir.path()),
            );
        }
        let mut pg = Self {
            dir,
            bin,
            port: free_port(),
            as_postgres,
            ca: None,
        };
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data().display().to_string(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        if tls {
            pg.ca = Some(pg.make_certificates());
        }
        pg.start_server();
        pg
    }

    /// A CA and a server certificate for IP 127.0.0.1 (openssl); returns the CA's path.
    fn make_certificates(&self) -> PathBuf {
        let dir = self.dir.path();
        let ca = dir.join("ca.pem");
        let openssl = |args: &[&str]| run_ok(Command::new("openssl").args(args).current_dir(dir));
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let mut args = vec![
            "req",
            "-x509",
            "-days",
            "2",
            "-subj",
            "/CN=tsuba test db ca",
        ];
        args.extend(ec);
        args.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
        openssl(&args);
        let mut args = vec!["req", "-subj", "/CN=127.0.0.1"];
        args.extend(ec);
        args.extend(["-keyout", "server.key", "-out", "server.csr"]);
        openssl(&args);
        std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ]);
        std::fs::set_permissions(
            dir.join("server.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        if self.as_postgres {
            run_ok(
                Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(dir.join("server.key"))
                    .arg(dir.join("server.crt")),
            );
        }
        ca
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs a server tool, as the `postgres` user when we are root.
    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) -> String {
        run_ok(self.command(tool).args(args).current_dir(self.dir.path()))
    }

    fn start_server(&self) {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        if self.ca.is_some() {
            let dir = self.dir.path().display();
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key"
            ));
        }
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-l",
                &self.dir.path().join("server.log").display().to_string(),
                "-o",
                &options,
                "-w",
                "-t",
                PG_DEADLINE_SECS,
                "start",
            ],
        );
    }

    /// Stops the server (fast: connections are cut, as when the database goes away).
    pub(crate) fn stop(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-m",
                "fast",
                "-w",
                "-t",
                PG_DEADLINE_SECS,
                "stop",
            ],
        );
    }

    /// Starts the stopped server again, on the same port.
    pub(crate) fn restart(&self) {
        self.start_server();
    }

    /// `postgres://` URL of the `postgres` database (trust authentication on loopback).
    pub(crate) fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    /// `postgres://` URL asking for TLS (`sslmode=require`: the broker then verifies the
    /// certificate against `--database-ca`).
    pub(crate) fn tls_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=require",
            self.port
        )
    }

    /// Runs SQL through psql (over the Unix socket, so it is no TCP client itself); returns its
    /// unaligned output.
    pub(crate) fn psql(&self, sql: &str) -> String {
        self.run(
            "psql",
            &[
                "-h",
                &self.dir.path().display().to_string(),
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
        )
    }

    /// A plain-text `pg_dump` of the database.
    pub(crate) fn dump(&self) -> Vec<u8> {
        let out = run_bounded(self.command("pg_dump").args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "postgres",
        ]));
        assert!(
            out.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate: nothing to keep; bounded by -t. The folder goes with `dir`.
        let _ = run_bounded(self.command("pg_ctl").args([
            "-D",
            &self.data().display().to_string(),
            "-m",
            "immediate",
            "-w",
            "-t",
            PG_DEADLINE_SECS,
            "stop",
        ]));
    }
}

/// An administrator key pair (the test signs its own admin tokens) and an at-rest key, in `dir`.
pub(crate) struct Keys {
    pub(crate) admin: ed25519_dalek::SigningKey,
    pub(crate) admin_pub: PathBuf,
    pub(crate) admin_private: PathBuf,
    pub(crate) at_rest: PathBuf,
}

impl Keys {
    pub(crate) fn new(dir: &Path) -> Self {
        use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};

        let admin = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let admin_pub = dir.join("admin.pub.pem");
        let admin_private = dir.join("admin.pem");
        let lf = ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF;
        std::fs::write(
            &admin_pub,
            admin.verifying_key().to_public_key_pem(lf).unwrap(),
        )
        .unwrap();
        std::fs::write(&admin_private, admin.to_pkcs8_pem(lf).unwrap().as_bytes()).unwrap();
        let at_rest = dir.join("at-rest.key");
        std::fs::write(&at_rest, format!("{}\n", "5a".repeat(32))).unwrap();
        Self {
            admin,
            admin_pub,
            admin_private,
            at_rest,
        }
    }

    /// The same administrator with another at-rest key file.
    pub(crate) fn with_at_rest(&self, at_rest: &Path) -> Self {
        Self {
            admin: self.admin.clone(),
            admin_pub: self.admin_pub.clone(),
            admin_private: self.admin_private.clone(),
            at_rest: at_rest.to_path_buf(),
        }
    }

    /// A fresh single-use admin bearer token.
    pub(crate) fn bearer(&self) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        format!(
            "Bearer {}",
            tsuba_kbs::sign_admin_token(&self.admin, now, now + 300)
        )
    }
}

/// Where a replica keeps its state.
pub(crate) enum Backend<'a> {
    Database(&'a Postgres),
    /// Over TLS, verified against this CA.
    DatabaseTls(&'a Postgres, &'a Path),
    Folder(&'a Path),
}

/// `tsuba kbs serve` on loopback accepting Trustee's sample evidence and releasing to it;
/// killed when dropped.
pub(crate) struct Replica {
    child: Child,
    pub(crate) url: String,
    log: PathBuf,
}

impl Replica {
    /// Starts a replica and waits until `/ready` answers 200.
    pub(crate) fn start(backend: Backend<'_>, keys: &Keys, log: &Path) -> Self {
        let replica = Self::spawn(backend, keys, log, &[]);
        replica.wait_ready();
        replica
    }

    /// Starts a replica without waiting.
    pub(crate) fn spawn(backend: Backend<'_>, keys: &Keys, log: &Path, extra: &[&str]) -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tsuba"));
        cmd.args(["kbs", "serve", "--listen", &addr, "--admin-public-key"])
            .arg(&keys.admin_pub)
            .args([
                "--insecure-plain-http",
                "--insecure-accept-sample-evidence",
                "--insecure-release-resources-to-simulated",
            ])
            .args(extra);
        match backend {
            Backend::Database(pg) => {
                cmd.args(["--database", &pg.url(), "--at-rest-key-file"])
                    .arg(&keys.at_rest);
            }
            Backend::DatabaseTls(pg, ca) => {
                cmd.args(["--database", &pg.tls_url(), "--database-ca"])
                    .arg(ca)
                    .arg("--at-rest-key-file")
                    .arg(&keys.at_rest);
            }
            Backend::Folder(dir) => {
                cmd.arg("--state-dir").arg(dir);
            }
        }
        let child = cmd
            .env("TSUBA_LOG", "info")
            .env_remove("TSUBA_KBS_DATABASE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        Self {
            child,
            url: format!("http://{addr}"),
            log: log.to_path_buf(),
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn wait_ready(&self) {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            let ready = std::net::TcpStream::connect(self.url.trim_start_matches("http://"))
                .ok()
                .and_then(|mut stream| {
                    use std::io::{Read, Write};
                    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
                    stream
                        .write_all(b"GET /ready HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                        .ok()?;
                    let mut head = [0u8; 12];
                    stream.read_exact(&mut head).ok()?;
                    Some(head.ends_with(b"200"))
                })
                .unwrap_or(false);
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replica not ready in {READY_DEADLINE:?}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: the replica dies with whatever it had in flight.
    pub(crate) fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Waits for the process to exit (bounded) and returns its status.
    pub(crate) fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "replica did not exit: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
