//! Helpers for the `tsuba image` end-to-end tests: the `tsuba` binary run with a deadline, a
//! distribution registry, a `tsuba kbs serve` broker and tee-sim's device server on loopback,
//! each stopped when dropped.

#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a failure here is a test failure"
)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest any one `tsuba` or tool invocation may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(120);
/// Longest a server may take to listen.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// Runs `cmd` with stdout and stderr captured through files, killing it at the deadline.
pub(crate) fn run_bounded(cmd: &mut Command) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is it installed?)"));
    let deadline = Instant::now() + COMMAND_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish in {COMMAND_DEADLINE:?}: {}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read(&out).unwrap(),
        stderr: std::fs::read(&err).unwrap(),
    }
}

/// Runs a tool, panicking with its output when it fails.
pub(crate) fn run_ok(cmd: &mut Command) -> String {
    let out = run_bounded(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the `tsuba` binary built with this test.
pub(crate) fn tsuba<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    tsuba_with_env(args, &[])
}

/// Runs the `tsuba` binary with extra environment variables.
pub(crate) fn tsuba_with_env<S: AsRef<std::ffi::OsStr>>(
    args: &[S],
    env: &[(&str, &str)],
) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tsuba"));
    cmd.args(args).env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_bounded(&mut cmd)
}

/// A free loopback port (bound, then released for the server to take).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(child: &mut Child, addr: &str, what: &str, log: &Path) {
    let deadline = Instant::now() + START_DEADLINE;
    while std::net::TcpStream::connect(addr).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "{what} exited with {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How the registry authenticates clients.
pub(crate) enum RegistryAuth<'a> {
    /// htpasswd (bcrypt) basic auth.
    Htpasswd(&'a str),
    /// Bearer tokens from `realm`, signed by the key of the PEM certificate bundle `rootcert`.
    Token {
        /// Token endpoint.
        realm: &'a str,
        /// Expected issuer.
        issuer: &'a str,
        /// Expected audience (service).
        service: &'a str,
        /// Certificates whose keys sign tokens.
        rootcert: &'a Path,
    },
}

/// A distribution registry (`/usr/bin/docker-registry`) on a free loopback port with its
/// storage in a temp dir; killed when dropped.
pub(crate) struct Registry {
    child: Child,
    pub(crate) addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Anonymous, or basic auth with `htpasswd` (file contents).
    pub(crate) fn start(htpasswd: Option<&str>) -> Self {
        Self::start_with(htpasswd.map(RegistryAuth::Htpasswd))
    }

    pub(crate) fn start_with(auth: Option<RegistryAuth<'_>>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.path().join("storage").display()
        );
        match auth {
            None => {}
            Some(RegistryAuth::Htpasswd(h)) => {
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, h).unwrap();
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                    path.display()
                ));
            }
            Some(RegistryAuth::Token {
                realm,
                issuer,
                service,
                rootcert,
            }) => config.push_str(&format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                rootcert.display()
            )),
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.path().join("registry.log");
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("docker-registry (Debian package docker-registry) must be installed");
        // The guard exists before the wait, so a registry that never listens is still killed.
        let mut registry = Self {
            child,
            addr,
            _dir: dir,
        };
        wait_listening(&mut registry.child, &registry.addr, "registry", &log);
        registry
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The manifest of `image` (`repo:tag`) as the registry serves it (anonymous registries only).
pub(crate) fn inspect_raw(registry: &Registry, image: &str) -> serde_json::Value {
    let raw = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}/{image}", registry.addr)),
    );
    serde_json::from_str(&raw).unwrap()
}

/// `tsuba kbs serve` on loopback (plain HTTP, simulated evidence accepted, tee-sim's public roots
/// exported from `sim_dir` by `tsuba sim export-roots`) with the given measurements as reference
/// values; killed when dropped.
pub(crate) struct Broker {
    child: Child,
    pub(crate) addr: String,
    pub(crate) admin_key: PathBuf,
    pub(crate) sim_dir: PathBuf,
    log: PathBuf,
}

impl Broker {
    pub(crate) fn start(dir: &Path, measurements: &[&str]) -> Self {
        Self::start_with(
            dir,
            &serde_json::json!({ "measurement": measurements }),
            &[],
        )
    }

    /// A broker with the reference values `refs` and `extra` options for `kbs serve`.
    pub(crate) fn start_with(dir: &Path, refs: &serde_json::Value, extra: &[&str]) -> Self {
        let dir = dir.join("broker");
        let sim_dir = dir.join("sim");
        std::fs::create_dir_all(&sim_dir).unwrap();
        // The published test roots: a fresh state dir would otherwise generate RSA-4096 keys.
        tsuba_tee_sim::SimAmdSp::open_or_create_with_published_test_roots(&sim_dir).unwrap();
        let roots = dir.join("sim-roots.pem");
        std::fs::create_dir_all(dir.join("tdx-collateral")).unwrap();
        let out = tsuba(&[
            "sim",
            "export-roots",
            "--state-dir",
            &sim_dir.display().to_string(),
            "--out",
            &roots.display().to_string(),
            "--tdx-collateral-out",
            &dir.join("tdx-collateral")
                .join("sim.json")
                .display()
                .to_string(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (admin_key, admin_pub) = (dir.join("admin.pem"), dir.join("admin.pub.pem"));
        let out = tsuba(&[
            "kbs",
            "admin-keygen",
            "--private",
            &admin_key.display().to_string(),
            "--public",
            &admin_pub.display().to_string(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let addr = format!("127.0.0.1:{}", free_port());
        let log = dir.join("broker.log");
        let child = Command::new(env!("CARGO_BIN_EXE_tsuba"))
            .args(["kbs", "serve", "--state-dir"])
            .arg(dir.join("state"))
            .args(["--listen", &addr, "--admin-public-key"])
            .arg(&admin_pub)
            .args([
                "--insecure-plain-http",
                "--insecure-accept-simulated-evidence",
                "--insecure-release-resources-to-simulated",
                // tee-sim's platform TCB (SIM_DEFAULT_TCB) on its simulated Genoa.
                "--snp-min-tcb",
                "genoa=bootloader:10,tee:0,snp:23,microcode:84",
            ])
            .arg("--insecure-sim-roots")
            .arg(&roots)
            .arg("--tdx-collateral-dir")
            .arg(dir.join("tdx-collateral"))
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut broker = Self {
            child,
            addr,
            admin_key,
            sim_dir,
            log,
        };
        wait_listening(
            &mut broker.child,
            &broker.addr,
            "tsuba kbs serve",
            &broker.log,
        );
        let refs_json = refs;
        let refs = dir.join("refs.json");
        std::fs::write(&refs, refs_json.to_string()).unwrap();
        broker.admin(&["set-reference-values", &refs.display().to_string()]);
        broker
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `tsuba kbs admin <call...>`, which must succeed.
    pub(crate) fn admin(&self, call: &[&str]) {
        let key = self.admin_key.display().to_string();
        let url = self.url();
        let mut args = vec!["kbs", "admin", "--url", &url, "--key", &key];
        args.extend_from_slice(call);
        let out = tsuba(&args);
        assert!(
            out.status.success(),
            "kbs admin {call:?}: {}\nbroker log: {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// tee-sim's device server for one simulated SNP launch, on a Unix socket; stopped when
/// dropped.
pub(crate) struct SimDevice {
    pub(crate) socket: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl SimDevice {
    pub(crate) fn start(
        rt: &tokio::runtime::Runtime,
        sim_dir: &Path,
        socket: &Path,
        measurement: [u8; 48],
    ) -> Self {
        let sp = Arc::new(
            tsuba_tee_sim::SimAmdSp::open_or_create_with_published_test_roots(sim_dir).unwrap(),
        );
        Self::serve(rt, socket, move || tsuba_tee_sim::SimLaunch::Snp {
            sp: Arc::clone(&sp),
            launch: tsuba_tee_sim::SnpLaunch::new(measurement, [0; 32]),
        })
    }

    /// A simulated TDX launch of the TDX module in `sim_dir`.
    pub(crate) fn start_tdx(
        rt: &tokio::runtime::Runtime,
        sim_dir: &Path,
        socket: &Path,
        launch: tsuba_tee_sim::TdxLaunch,
    ) -> Self {
        let sim = Arc::new(tsuba_tee_sim::SimTdx::open_or_create(sim_dir).unwrap());
        Self::serve(rt, socket, move || tsuba_tee_sim::SimLaunch::Tdx {
            sim: Arc::clone(&sim),
            launch: Box::new(launch.clone()),
        })
    }

    /// Serves `launch()` to every connection on `socket`.
    fn serve(
        rt: &tokio::runtime::Runtime,
        socket: &Path,
        launch: impl Fn() -> tsuba_tee_sim::SimLaunch + Send + 'static,
    ) -> Self {
        let listener = {
            let _guard = rt.enter();
            tokio::net::UnixListener::bind(socket).unwrap()
        };
        let task = rt.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let launch = launch();
                tokio::spawn(async move {
                    let _ = tsuba_tee_sim::serve(stream, launch).await;
                });
            }
        });
        Self {
            socket: socket.to_path_buf(),
            task,
        }
    }
}

impl Drop for SimDevice {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A two-layer image in an OCI layout at `dir` (`:v1`), made with umoci; returns the bundle
/// whose `rootfs` holds the expected plaintext tree.
pub(crate) fn source_image(dir: &Path, scratch: &Path) -> PathBuf {
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
    let root = bundle.join("rootfs");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/owner"),
        b"the owner's secret configuration\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("app/bin")).unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("app/bin/data"), &big).unwrap();
    run_ok(
        Command::new("umoci")
            .args(["repack", "--refresh-bundle", "--image"])
            .arg(&image)
            .arg(&bundle),
    );
    // Second layer: a change, a new file with its own mode, a symlink.
    std::fs::write(root.join("etc/owner"), b"changed in layer two\n").unwrap();
    std::fs::write(root.join("app/bin/run"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(
        root.join("app/bin/run"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    std::os::unix::fs::symlink("bin/run", root.join("app/start")).unwrap();
    run_ok(
        Command::new("umoci")
            .args(["repack", "--image"])
            .arg(&image)
            .arg(&bundle),
    );
    bundle
}

/// What a file is, for comparing trees: kind, permission bits, and contents or link target.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    Dir(u32),
    File(u32, Vec<u8>),
    Symlink(PathBuf),
}

/// Every entry under `root`, by relative path.
pub(crate) fn tree(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let mode = meta.mode() & 0o7777;
            let e = if meta.file_type().is_symlink() {
                Entry::Symlink(std::fs::read_link(&path).unwrap())
            } else if meta.is_dir() {
                stack.push(path.clone());
                Entry::Dir(mode)
            } else {
                Entry::File(mode, std::fs::read(&path).unwrap())
            };
            out.insert(rel, e);
        }
    }
    out
}
