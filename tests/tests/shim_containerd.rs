//! `containerd-shim-tsuba-v2` under a real containerd (Debian's 1.6), started by each test with
//! its own root, state, sockets and config in a temporary folder, and driven with `ctr`.
//!
//! `ctr run --rootfs <empty folder>` with the image named by `io.tsuba.image`: the host fetches
//! no layer; the guest attests to the broker, pulls and decrypts the image and runs the
//! container. Everything each test starts (containerd, shims, QEMU, registry, broker) is stopped
//! and removed when it ends, pass or fail.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a panic is the failure report"
)]

mod common;

use std::collections::HashSet;
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    Broker, BrokerPki, Guarded, HOST_FROM_GUEST, KEY_ID, Registry, free_port, guest_settings,
    hex_of, permissive_initdata, rand_bytes, run, tsuba_bin, write_busybox_image,
};
use tsuba_shim::config::RuntimeConfig;
use tsuba_tests::{Artefacts, processes_mentioning};
use tsuba_vmm_tee::launch_reference_values;

const RUNTIME: &str = "io.containerd.tsuba.v2";
/// The marker `write_busybox_image` bakes into /etc/marker.
const MARKER: &str = "tsuba-e2e-marker-in-the-image";
/// A `ctr` call that boots a guest, attests and pulls (TCG, loaded machine).
const CTR_TIMEOUT: Duration = Duration::from_secs(240);
/// Where containerd keeps the shims' sockets (fixed by the shim protocol).
const SHIM_SOCKETS: &str = "/run/containerd/s";

/// The shim binary, built beside the `tsuba` binary (`cargo build -p tsuba-shim`).
fn shim_dir() -> PathBuf {
    let dir = tsuba_bin().parent().unwrap().to_owned();
    assert!(
        dir.join("containerd-shim-tsuba-v2").is_file(),
        "{}/containerd-shim-tsuba-v2 is missing: run `cargo build -p tsuba-shim` (make e2e does)",
        dir.display()
    );
    dir
}

fn shim_sockets() -> HashSet<PathBuf> {
    std::fs::read_dir(SHIM_SOCKETS)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// A private containerd: its root, state, sockets and log under `dir`. Dropping it kills it,
/// every shim and QEMU whose command line names the test's folder (`dir`'s parent), and the
/// shim sockets they left.
struct Containerd {
    dir: PathBuf,
    process: Option<Guarded>,
    sockets_before: HashSet<PathBuf>,
    starts: u32,
}

impl Containerd {
    fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("containerd.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{d}/containerd.sock\"\n\
                 [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n\
                 [debug]\n  level = \"debug\"\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let mut c = Containerd {
            dir: dir.to_owned(),
            process: None,
            sockets_before: shim_sockets(),
            starts: 0,
        };
        c.spawn();
        c
    }

    fn spawn(&mut self) {
        // containerd finds `containerd-shim-tsuba-v2` on its PATH.
        let path = format!(
            "{}:{}",
            shim_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        self.starts += 1;
        let mut process = Guarded::spawn(
            "containerd",
            Command::new("/usr/bin/containerd")
                .arg("--config")
                .arg(self.dir.join("containerd.toml"))
                .env("PATH", path),
            &self.dir.join(format!("containerd-{}.log", self.starts)),
        );
        let socket = self.dir.join("containerd.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                process.child.try_wait().unwrap().is_none(),
                "containerd exited"
            );
            assert!(Instant::now() < deadline, "containerd did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.process = Some(process);
    }

    /// Stops containerd (SIGTERM) and starts it again on the same root and state.
    fn restart(&mut self) {
        if let Some(mut p) = self.process.take() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(p.child.id()).unwrap());
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
            let _ = p.child.wait();
        }
        self.spawn();
    }

    fn ctr_command(&self) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.arg(CTR_TIMEOUT.as_secs().to_string())
            .arg("ctr")
            .arg("--address")
            .arg(self.dir.join("containerd.sock"));
        cmd
    }

    /// Runs `ctr args` with `stdin`, bounded in time.
    fn ctr(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .ctr_command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// `ctr run --rootfs` of `id` with the tsuba runtime, `config` and `extra` flags.
    fn run_args(
        config: &Path,
        empty: &Path,
        id: &str,
        extra: &[&str],
        cmd: &[&str],
    ) -> Vec<String> {
        let mut args: Vec<String> = [
            "run",
            "--rootfs",
            "--runtime",
            RUNTIME,
            "--runtime-config-path",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.push(config.display().to_string());
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args.push(empty.display().to_string());
        args.push(id.to_owned());
        args.extend(cmd.iter().map(|s| (*s).to_owned()));
        args
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        drop(self.process.take());
        // Shims and QEMU outlive containerd by design: stop the ones this test started (their
        // command lines name the test's folder: containerd's socket, the sandbox state).
        let work = self.dir.parent().unwrap_or(&self.dir);
        let needle = work.display().to_string();
        for (pid, _) in processes_mentioning(&needle) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for socket in shim_sockets().difference(&self.sockets_before) {
            let _ = std::fs::remove_file(socket);
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A runtime config for the test's artefacts in `dir`, with `extra` TOML appended and the pod's
/// `initdata`, if any.
fn runtime_config(
    a: &Artefacts,
    dir: &Path,
    name: &str,
    cmdline: &str,
    extra: &str,
    initdata: Option<&Path>,
) -> PathBuf {
    let path = dir.join(name);
    let initdata = initdata.map_or_else(String::new, |p| format!("initdata = {p:?}\n"));
    std::fs::write(
        &path,
        format!(
            "state_root = \"{state}\"\ntee_sim_state = \"{sim}\"\n{extra}\n\
             [vm]\n{initdata}mode = \"sim-snp\"\nkernel = {kernel:?}\ninitrd = {initrd:?}\n\
             cmdline = {cmdline:?}\nvcpus = 1\nmemory_mib = 512\n\
             [vm.firmware]\nboot = {boot:?}\nmeasured = {measured:?}\n\
             [vm.network]\nbackend = \"user\"\n\
             [timeouts]\nagent_ready_secs = 150\ncreate_secs = 200\n",
            state = dir.join("s").display(),
            sim = dir.join("tee-sim").display(),
            kernel = a.kernel(),
            initrd = a.initrd(),
            boot = a.ovmf,
            measured = a.amdsev_ovmf,
        ),
    )
    .unwrap();
    path
}

/// Asserts the shims, QEMU and sandbox state of this test are all gone.
fn assert_no_sandbox_left(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // `<dir>/s/`: the sandbox state, named in QEMU's command line.
        let procs: Vec<_> = processes_mentioning(&format!("{}/s/", dir.display()))
            .into_iter()
            .chain(
                processes_mentioning("containerd-shim-tsuba-v2")
                    .into_iter()
                    .filter(|(_, cmd)| cmd.contains(&dir.display().to_string())),
            )
            .collect();
        let state: Vec<_> = std::fs::read_dir(dir.join("s"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if procs.is_empty() && state.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: processes {procs:?}, state {state:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn containerd_starts_the_shim_which_refuses_bad_annotations_and_reads_its_config_path() {
    let a = Artefacts::from_env();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let containerd = Containerd::start(&dir.join("containerd"));
    let good = runtime_config(&a, dir, "runtime.toml", "", "", None);
    let image = "--annotation=io.tsuba.image=127.0.0.1:1/none:v1";

    let refused = |config: &Path, id: &str, extra: &[&str]| -> String {
        let args = Containerd::run_args(config, &empty, id, extra, &["true"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = containerd.ctr(&args, b"");
        assert!(
            !out.status.success(),
            "{id} was not refused: {}",
            text(&out.stdout)
        );
        text(&out.stderr)
    };

    let err = refused(&good, "unknown", &[image, "--annotation=io.tsuba.bogus=1"]);
    assert!(
        err.contains("unknown annotation io.tsuba.bogus:") && err.contains("invalid argument"),
        "{err}"
    );
    let err = refused(
        &good,
        "measured",
        &[image, "--annotation=io.tsuba.config.kernel=/k"],
    );
    assert!(
        err.contains("annotation io.tsuba.config.kernel changes what the guest measures"),
        "{err}"
    );
    let err = refused(
        &good,
        "badvalue",
        &[image, "--annotation=io.tsuba.config.memory_mib=lots"],
    );
    assert!(
        err.contains("annotation io.tsuba.config.memory_mib has an invalid value \"lots\""),
        "{err}"
    );
    let err = refused(&good, "noimage", &[]);
    assert!(
        err.contains("no image: tsuba pulls the image in the guest"),
        "{err}"
    );

    // The config path containerd passes is the one read: this one names a missing kernel.
    let broken = dir.join("broken.toml");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&good)
            .unwrap()
            .replace(&a.kernel().display().to_string(), "/nonexistent/vmlinuz"),
    )
    .unwrap();
    let err = refused(&broken, "broken", &[image]);
    assert!(
        err.contains(&format!(
            "the [vm] table of the tsuba runtime config {} is invalid: kernel /nonexistent/vmlinuz does not exist",
            broken.display()
        )),
        "{err}"
    );

    // Every refusal happened before a VM: no shim, no QEMU, no state is left.
    assert_no_sandbox_left(dir);
    let content = containerd.ctr(&["content", "ls", "-q"], b"");
    assert_eq!(text(&content.stdout), "", "the host fetched content");
}

/// The owner's side: a registry with the busybox image encrypted for the broker's key, and a
/// broker that knows the reference measurement of `config`'s launch.
struct World {
    _registry: Registry,
    broker: Broker,
    image: String,
    /// The image by its manifest digest, as a generated agent policy pins it.
    pinned: String,
    /// Initdata naming this broker and registry, with the permissive agent policy.
    initdata: PathBuf,
    /// What a generated initdata tells the guest: this broker, its pin, this registry.
    settings: tsuba_policy::GuestSettings,
}

fn world(a: &Artefacts, dir: &Path) -> World {
    let registry = Registry::start(dir);
    let pki = BrokerPki::generate(dir, "shim");
    let broker_port = free_port();
    let pin = pki.pin();
    let plain = dir.join("plain");
    write_busybox_image(&plain);
    let kek = dir.join("kek.bin");
    std::fs::write(&kek, rand_bytes()).unwrap();
    let encrypted = dir.join("encrypted");
    run(Command::new(tsuba_bin())
        .args(["image", "encrypt", "--from"])
        .arg(format!("oci:{}:v1", plain.display()))
        .arg("--to")
        .arg(format!("oci:{}:v1", encrypted.display()))
        .args(["--key-id", KEY_ID, "--kek"])
        .arg(&kek));
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", encrypted.display()))
        .arg(format!(
            "docker://127.0.0.1:{}/e2e/busybox:v1",
            registry.port
        )));
    let initdata = permissive_initdata(dir, broker_port, &pin, registry.port);
    let settings = guest_settings(broker_port, &pin, registry.port);
    let manifest = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://127.0.0.1:{}/e2e/busybox:v1", registry.port),
    ]));
    let broker = Broker::start(&dir.join("kbs"), broker_port, &pki, &dir.join("tee-sim"));
    broker.admin(&["set-resource", "default/image-kek/e2e"], Some(&kek));
    let policy = dir.join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    broker.admin(
        &["set-resource", "default/security-policy/e2e"],
        Some(&policy),
    );
    let _ = a;
    World {
        image: format!("{HOST_FROM_GUEST}:{}/e2e/busybox:v1", registry.port),
        pinned: format!(
            "{HOST_FROM_GUEST}:{}/e2e/busybox@{}",
            registry.port,
            tsuba_image_rs::Digest::of(&manifest)
        ),
        _registry: registry,
        broker,
        initdata,
        settings,
    }
}

impl World {
    /// A runtime config pointing the guest at this world's broker and registry.
    fn config(&self, a: &Artefacts, dir: &Path, name: &str, extra_cmdline: &str) -> PathBuf {
        self.config_with(a, dir, name, extra_cmdline, &self.initdata)
    }

    /// As [`World::config`], with another initdata document.
    fn config_with(
        &self,
        a: &Artefacts,
        dir: &Path,
        name: &str,
        extra_cmdline: &str,
        initdata: &Path,
    ) -> PathBuf {
        runtime_config(a, dir, name, extra_cmdline, "", Some(initdata))
    }

    /// The initdata `tsuba policy generate` writes for `pod_yaml`, with this world's broker and
    /// registry: the agent policy allows exactly the pod's containers.
    fn generated_initdata(&self, dir: &Path, pod_yaml: &str) -> PathBuf {
        let yaml = dir.join("pod.yaml");
        std::fs::write(&yaml, pod_yaml).unwrap();
        let out = dir.join("generated");
        let s = &self.settings;
        run(Command::new(tsuba_bin())
            .args(["policy", "generate"])
            .arg(&yaml)
            .arg("--output-dir")
            .arg(&out)
            .args(["--kbs-url", s.kbs_url.as_deref().unwrap()])
            .args(["--kbs-pin", s.kbs_pin.as_deref().unwrap()])
            .args(["--image-policy", s.image_policy.as_deref().unwrap()])
            .args(["--plain-http-registry", &s.plain_http_registries[0]]));
        out.join("initdata.toml")
    }

    /// Registers `config`'s launch measurement as the only reference value.
    fn trust(&self, dir: &Path, config: &Path) {
        let rc = RuntimeConfig::read(config).unwrap();
        let launch = rc.launch_config(&rc.file.vm).unwrap();
        let reference = launch_reference_values(&launch).unwrap().snp.unwrap();
        let refs = dir.join("refs.json");
        std::fs::write(
            &refs,
            serde_json::json!({ "measurement": [hex_of(&reference.launch_digest.0)] }).to_string(),
        )
        .unwrap();
        self.broker.admin(&["set-reference-values"], Some(&refs));
    }
}

/// A `ctr run` in the foreground whose output is collected as it comes; killed when dropped.
struct Foreground {
    child: Child,
    out: Arc<Mutex<String>>,
}

impl Drop for Foreground {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Foreground {
    fn spawn(containerd: &Containerd, args: &[String]) -> Self {
        let mut child = containerd
            .ctr_command()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = out.clone();
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(stream);
                let mut line = Vec::new();
                while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                    out.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&line));
                    line.clear();
                }
            });
        }
        Foreground { child, out }
    }

    fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + CTR_TIMEOUT;
        while !self.out.lock().unwrap().contains(needle) {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "ctr run exited ({status}) before printing {needle:?}: {}",
                    self.out.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in time: {}",
                self.out.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait(mut self) -> (i32, String) {
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let out = self.out.lock().unwrap().clone();
        (status.code().unwrap_or(-1), out)
    }
}

/// Files under `root` (not following links) whose bytes contain `needle`.
fn files_containing(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(d) = std::fs::read_dir(&p) {
                stack.extend(d.flatten().map(|e| e.path()));
            }
        } else if meta.is_file()
            && let Ok(bytes) = std::fs::read(&p)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            found.push(p);
        }
    }
    found
}

fn qemu_processes(dir: &Path) -> Vec<(u32, String)> {
    processes_mentioning(&format!("{}/s/", dir.display()))
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("qemu-system"))
        .collect()
}

#[test]
fn ctr_runs_an_encrypted_image_in_its_guest_with_exec_stdin_tty_and_kill() {
    let a = Artefacts::from_env();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let w = world(&a, dir);
    let config = w.config(&a, dir, "runtime.toml", "");
    w.trust(dir, &config);
    let containerd = Containerd::start(&dir.join("containerd"));
    let image = format!("--annotation=io.tsuba.image={}", w.image);

    // `--seccomp`: containerd's own default profile (hundreds of syscalls, argument rules for
    // clone, personality and socket) is in the spec; every process below runs under it.
    let args = Containerd::run_args(
        &config,
        &empty,
        "c1",
        &[&image, "--seccomp"],
        &[
            "sh",
            "-c",
            "cat /etc/marker; echo started; sleep 600 & wait $!",
        ],
    );
    let mut c1 = Foreground::spawn(&containerd, &args);
    c1.wait_for("started");
    assert!(
        c1.out.lock().unwrap().starts_with(MARKER),
        "{}",
        c1.out.lock().unwrap()
    );

    // The exec runs under the container's filter (mode 2: a BPF filter).
    let out = containerd.ctr(
        &[
            "task",
            "exec",
            "--exec-id",
            "e0",
            "c1",
            "sh",
            "-c",
            "while read -r l; do case $l in Seccomp:*) echo $l;; esac; done < /proc/self/status",
        ],
        b"",
    );
    assert_eq!(text(&out.stdout), "Seccomp: 2\n", "{}", text(&out.stderr));

    // A second process with its own output and exit code.
    let out = containerd.ctr(
        &[
            "task",
            "exec",
            "--exec-id",
            "e1",
            "c1",
            "sh",
            "-c",
            "echo from-exec; exit 7",
        ],
        b"",
    );
    assert_eq!(text(&out.stdout), "from-exec\n");
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    // stdin reaches cat, and its end closes cat's stdin.
    let out = containerd.ctr(
        &["task", "exec", "--exec-id", "e2", "c1", "cat"],
        b"through stdin\n",
    );
    assert_eq!(
        text(&out.stdout),
        "through stdin\n",
        "{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
    // A tty whose size follows ctr's terminal.
    let tty = Command::new("timeout")
        .arg("120")
        .args(["script", "-qec"])
        .arg(format!(
            "stty rows 33 cols 101; ctr --address {} task exec -t --exec-id e3 c1 \
             sh -c 'test -t 0 && echo is-a-tty; sleep 2; stty size'",
            containerd.dir.join("containerd.sock").display()
        ))
        .arg("/dev/null")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        text(&tty.stdout).contains("33 101"),
        "{}{}",
        text(&tty.stdout),
        text(&tty.stderr)
    );
    let pids = containerd.ctr(&["task", "ps", "c1"], b"");
    assert!(pids.status.success(), "{}", text(&pids.stderr));

    // One QEMU, and the marker in no host file: containerd's root and state, the shim state,
    // QEMU's command line, its logs and the console.
    let qemus = qemu_processes(dir);
    assert_eq!(qemus.len(), 1, "{qemus:?}");
    assert!(!qemus[0].1.contains(MARKER));
    for root in [dir.join("containerd"), dir.join("s")] {
        let found = files_containing(&root, MARKER.as_bytes());
        assert!(found.is_empty(), "the marker is on the host in {found:?}");
    }
    let content = containerd.ctr(&["content", "ls", "-q"], b"");
    assert_eq!(text(&content.stdout), "", "the host fetched content");

    // SIGTERM to every process of the container (PID 1, the shell, ignores it, as under runc):
    // sleep dies of it, the shell's `wait` returns 143 and so does the container. Then the VM
    // and its state go.
    let kill = containerd.ctr(&["task", "kill", "--all", "c1"], b"");
    assert!(kill.status.success(), "{}", text(&kill.stderr));
    let (code, out) = c1.wait();
    assert_eq!(code, 143, "{out}");
    let del = containerd.ctr(&["container", "rm", "c1"], b"");
    assert!(del.status.success(), "{}", text(&del.stderr));
    assert_no_sandbox_left(dir);
}

#[test]
fn a_tampered_launch_is_refused_at_create_with_the_brokers_reason() {
    let a = Artefacts::from_env();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let w = world(&a, dir);
    let genuine = w.config(&a, dir, "runtime.toml", "");
    w.trust(dir, &genuine);
    // The same release with one more kernel argument: another launch measurement.
    let tampered = w.config(&a, dir, "tampered.toml", "tsuba.e2e=tampered");
    let containerd = Containerd::start(&dir.join("containerd"));
    let image = format!("--annotation=io.tsuba.image={}", w.image);
    let args = Containerd::run_args(&tampered, &empty, "t1", &[&image], &["true"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = containerd.ctr(&args, b"");
    let err = text(&out.stderr);
    assert!(!out.status.success());
    // The broker's reason, as the broker gave it, through the agent, the shim and containerd.
    assert!(
        err.contains("attestation refused: ")
            && err.contains("measurement is not a reference value"),
        "{err}"
    );
    assert_no_sandbox_left(dir);
}

/// The status `ctr task ls` shows for `id`, if listed.
fn task_status(containerd: &Containerd, id: &str) -> Option<String> {
    let out = containerd.ctr(&["task", "ls"], b"");
    text(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&id))
        .and_then(|cols| cols.last().map(|s| (*s).to_owned()))
}

fn wait_status(containerd: &Containerd, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = task_status(containerd, id);
        if got.as_deref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} is {got:?}, not {want}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_pods_containers_share_one_vm_with_exit_codes_oom_and_a_containerd_restart() {
    let a = Artefacts::from_env();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let w = world(&a, dir);
    // The pod's agent policy, generated from its Pod YAML: exactly these three commands of the
    // pinned image (ctr gives no CRI names: the policy finds them by image and command).
    let pod_yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pod1\nspec:\n  enableServiceLinks: false\n  \
         containers:\n\
         \x20 - name: c2\n    image: {img}\n    command: [\"sh\", \"-c\", \"echo in-the-pod; exit 7\"]\n\
         \x20 - name: c3\n    image: {img}\n    command: [\"sh\", \"-c\", \"echo c3-up; sleep 600 & wait $!\"]\n\
         \x20 - name: c4\n    image: {img}\n    command: [\"dd\", \"if=/dev/zero\", \"of=/dev/null\", \"bs=64M\", \"count=1\"]\n",
        img = w.pinned
    );
    let initdata = w.generated_initdata(dir, &pod_yaml);
    let config = w.config_with(&a, dir, "runtime.toml", "", &initdata);
    w.trust(dir, &config);
    let mut containerd = Containerd::start(&dir.join("containerd"));
    let mut events = Foreground::spawn(&containerd, &["events".to_owned()]);

    // The pod's sandbox (as CRI marks it) boots the VM; its containers join it.
    let sandbox = Containerd::run_args(
        &config,
        &empty,
        "pod1",
        &[
            "-d",
            "--annotation=io.kubernetes.cri.container-type=sandbox",
            "--annotation=io.kubernetes.cri.sandbox-id=pod1",
        ],
        &[],
    );
    let sandbox: Vec<&str> = sandbox.iter().map(String::as_str).collect();
    let out = containerd.ctr(&sandbox, b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let member = |id: &str, extra: &[&str], cmd: &[&str]| {
        let image = format!("--annotation=io.kubernetes.cri.image-name={}", w.pinned);
        let mut flags = vec![
            "--annotation=io.kubernetes.cri.container-type=container",
            "--annotation=io.kubernetes.cri.sandbox-id=pod1",
            image.as_str(),
        ];
        flags.extend_from_slice(extra);
        Containerd::run_args(&config, &empty, id, &flags, cmd)
    };
    let c2 = Foreground::spawn(
        &containerd,
        &member("c2", &[], &["sh", "-c", "echo in-the-pod; exit 7"]),
    );
    let (code, out) = c2.wait();
    assert_eq!((code, out.as_str()), (7, "in-the-pod\n"));
    let mut c3 = Foreground::spawn(
        &containerd,
        &member("c3", &[], &["sh", "-c", "echo c3-up; sleep 600 & wait $!"]),
    );
    c3.wait_for("c3-up");
    assert_eq!(qemu_processes(dir).len(), 1, "one VM for the pod");

    // What the pod's policy does not list: another command, and any exec.
    let other = member("c5", &[], &["sh", "-c", "cat /etc/marker"]);
    let other: Vec<&str> = other.iter().map(String::as_str).collect();
    let out = containerd.ctr(&other, b"");
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("rule CreateContainerRequest"),
        "{err}"
    );
    assert!(
        !text(&out.stdout).contains(MARKER),
        "the refused container printed nothing"
    );
    let _ = containerd.ctr(&["container", "rm", "c5"], b"");
    let exec = containerd.ctr(
        &[
            "task",
            "exec",
            "--exec-id",
            "x1",
            "c3",
            "cat",
            "/etc/marker",
        ],
        b"",
    );
    let err = text(&exec.stderr);
    assert!(
        !exec.status.success() && err.contains("rule ExecProcessRequest"),
        "{err}"
    );

    // Over its 16 MiB limit: OOM-killed with 137, and containerd gets the OOM event.
    let c4 = Foreground::spawn(
        &containerd,
        &member(
            "c4",
            &["--memory-limit", "16777216"],
            &["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
        ),
    );
    let (code, out) = c4.wait();
    assert_eq!(code, 137, "{out}");
    events.wait_for("/tasks/oom {\"container_id\":\"c4\"}");

    // containerd restarts: the tasks are still listed and can be killed.
    drop(events);
    containerd.restart();
    wait_status(&containerd, "c3", "RUNNING");
    wait_status(&containerd, "pod1", "RUNNING");
    let kill = containerd.ctr(&["task", "kill", "--all", "c3"], b"");
    assert!(kill.status.success(), "{}", text(&kill.stderr));
    wait_status(&containerd, "c3", "STOPPED");
    // The old `ctr run` lost its containerd; the task's end is what counts.
    drop(c3);
    for id in ["c2", "c3", "c4"] {
        let rm = containerd.ctr(&["task", "rm", id], b"");
        let _ = rm;
        let rm = containerd.ctr(&["container", "rm", id], b"");
        assert!(rm.status.success(), "{id}: {}", text(&rm.stderr));
    }
    let kill = containerd.ctr(&["task", "kill", "pod1"], b"");
    assert!(kill.status.success(), "{}", text(&kill.stderr));
    wait_status(&containerd, "pod1", "STOPPED");
    let rm = containerd.ctr(&["task", "rm", "pod1"], b"");
    assert!(rm.status.success(), "{}", text(&rm.stderr));
    assert_no_sandbox_left(dir);
}

#[test]
fn a_killed_qemu_ends_its_task_and_a_killed_shim_is_cleaned_up_by_containerd() {
    let a = Artefacts::from_env();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let w = world(&a, dir);
    let config = w.config(&a, dir, "runtime.toml", "");
    w.trust(dir, &config);
    let containerd = Containerd::start(&dir.join("containerd"));
    let image = format!("--annotation=io.tsuba.image={}", w.image);
    let detached = |id: &str| {
        let args = Containerd::run_args(&config, &empty, id, &["-d", &image], &["sleep", "600"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = containerd.ctr(&args, b"");
        assert!(out.status.success(), "{id}: {}", text(&out.stderr));
        wait_status(&containerd, id, "RUNNING");
    };
    let kill9 = |pid: u32| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    };

    // QEMU dies under a running task: the task exits with 255, and nothing is left.
    let args = Containerd::run_args(
        &config,
        &empty,
        "f1",
        &[&image],
        &["sh", "-c", "echo up; exec sleep 600"],
    );
    let mut f1 = Foreground::spawn(&containerd, &args);
    f1.wait_for("up");
    let qemus = qemu_processes(dir);
    assert_eq!(qemus.len(), 1, "{qemus:?}");
    kill9(qemus[0].0);
    let (code, out) = f1.wait();
    assert_eq!(code, 255, "{out}");
    assert_no_sandbox_left(dir);

    // The shim dies: containerd runs `shim delete`, which stops QEMU and removes the state.
    detached("f2");
    let shims: Vec<_> = processes_mentioning("containerd-shim-tsuba-v2")
        .into_iter()
        .filter(|(_, cmd)| {
            cmd.contains(&containerd.dir.display().to_string()) && cmd.contains("-id f2")
        })
        .collect();
    assert_eq!(shims.len(), 1, "{shims:?}");
    assert_eq!(qemu_processes(dir).len(), 1);
    kill9(shims[0].0);
    assert_no_sandbox_left(dir);
    let _ = containerd.ctr(&["task", "rm", "f2"], b"");
    let rm = containerd.ctr(&["container", "rm", "f1", "f2"], b"");
    assert!(rm.status.success(), "{}", text(&rm.stderr));
}
