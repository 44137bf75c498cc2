//! The Container service with the real runner on this machine (root, namespaces, overlayfs, the
//! cgroup v2 tree), over ttrpc on a socket pair: a busybox rootfs stands in for a pulled image.
//! Skipped, saying so, when not root or without busybox.

#![allow(
    clippy::unwrap_used,
    clippy::print_stderr,
    reason = "integration tests: a panic is the failure report, the skip is said on stderr"
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use tokio::io::AsyncWriteExt as _;
use tsuba_agent::{
    AttestationService, CgroupRoot, ContainerService, Containers, Gate, GuestPuller, HealthService,
    ImageDefaults, ImageService, InitdataService, PullConfig, PulledImage, Reaper, Runner,
};
use tsuba_protocols::agent::{
    ContainerClient, CreateContainerRequest, ExecProcessRequest, HELLO, ReadStreamRequest,
    RemoveContainerRequest, SignalProcessRequest, StartContainerRequest, TtyWinResizeRequest,
    WaitProcessRequest, WriteStreamRequest,
};
use ttrpc::asynchronous::transport::{Listener, Socket};

const CALL: Duration = Duration::from_secs(20);

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(i64::try_from(CALL.as_nanos()).unwrap())
}

/// A rootfs with busybox and its applets as symlinks.
fn busybox_rootfs(dir: &Path) -> Option<()> {
    let busybox = std::env::var_os("TSUBA_BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/bin/busybox"));
    if !busybox.is_file() {
        return None;
    }
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(&busybox, bin.join("busybox")).unwrap();
    for applet in [
        "sh", "cat", "echo", "sleep", "stty", "true", "id", "hostname", "ls",
    ] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    for d in ["proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    // An image link pointing out of the rootfs: mounts through it must stay inside.
    std::os::unix::fs::symlink("/", dir.join("escape")).unwrap();
    Some(())
}

struct Fixture {
    client: ContainerClient,
    _server: ttrpc::asynchronous::Server,
    cgroup_parent: PathBuf,
    root_holder: PathBuf,
    state: tempfile::TempDir,
    _image: tempfile::TempDir,
}

impl Drop for Fixture {
    /// Even when the test failed half-way: kill what runs, unmount the layers, remove the
    /// cgroups and the root holder.
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.cgroup_parent) {
            for cgroup in entries.flatten().filter(|e| e.path().is_dir()) {
                let _ = std::fs::write(cgroup.path().join("cgroup.kill"), "1");
                for _ in 0..100 {
                    if std::fs::remove_dir(cgroup.path()).is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.state.path().join("containers")) {
            for container in entries.flatten() {
                let _ = nix::mount::umount2(
                    &container.path().join("rootfs"),
                    nix::mount::MntFlags::MNT_DETACH,
                );
            }
        }
        let _ = std::fs::remove_dir(&self.cgroup_parent);
        let _ = std::fs::remove_dir(&self.root_holder);
    }
}

async fn fixture() -> Option<Fixture> {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED: the runner tests need root (namespaces, mounts, cgroups)");
        return None;
    }
    let image = tempfile::tempdir().unwrap();
    if busybox_rootfs(image.path()).is_none() {
        eprintln!("SKIPPED: no busybox (TSUBA_BUSYBOX) for the test rootfs");
        return None;
    }
    let cgroup_mount = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(Path::new)
        .find(|p| {
            nix::sys::statfs::statfs(*p)
                .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        });
    let Some(cgroup_mount) = cgroup_mount else {
        eprintln!("SKIPPED: no cgroup v2 hierarchy on this machine");
        return None;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .with_test_writer()
        .try_init();
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let reaper = Reaper::new();
    tokio::spawn(tsuba_agent::reap_children(Arc::clone(&reaper)));
    let state = tempfile::tempdir().unwrap();
    // The runner moves each root through a folder on the root mount: this test's own.
    let root_holder = PathBuf::from(format!("/.tsuba-test-root-{}", std::process::id()));
    let subtree = format!("tsuba-test-{}", std::process::id());
    let cgroups = CgroupRoot::setup(cgroup_mount, &subtree).unwrap();
    let cgroup_parent = cgroups.path().to_owned();
    let rootfs = image.path().to_owned();
    let pulls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let puller = Arc::new(GuestPuller::new(
        PullConfig::default(),
        Err("no attester".into()),
    ));
    // No TEE on the host: the gate is open (no initdata, no policy), as in a guest without one.
    let gate = Arc::new(Gate::new(Err("no attester".into()), Arc::clone(&puller)));
    let containers = Containers::new(
        Arc::clone(&puller),
        Runner::new(
            PathBuf::from(env!("CARGO_BIN_EXE_tsuba-agent")),
            state.path().join("control"),
            root_holder.clone(),
            reaper,
        ),
        Ok(cgroups),
        state.path().to_owned(),
    )
    .with_pull_hook(Arc::new(move |reference| {
        pulls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(reference, "test/busybox:1");
        Ok(PulledImage {
            manifest_digest: "sha256:test".into(),
            rootfs: rootfs.clone(),
            defaults: ImageDefaults {
                cmd: vec!["sh".into(), "-c".into(), "echo from-image-cmd".into()],
                env: vec!["FROM_IMAGE=yes".into()],
                ..ImageDefaults::default()
            },
            timings: tsuba_agent::PullTimings::default(),
        })
    }));
    let (host, mut guest) = tokio::net::UnixStream::pair().unwrap();
    guest.write_all(HELLO).await.unwrap();
    let listener = Listener::new(
        futures::stream::iter([Ok::<_, std::io::Error>(guest)]).chain(futures::stream::pending()),
    );
    let server = tsuba_agent::serve_all(
        listener,
        HealthService::new(Instant::now(), "none", Arc::clone(&gate)),
        InitdataService::new(Arc::clone(&gate)),
        AttestationService::new(Err("none".into()), Arc::clone(&gate)),
        ImageService::new(puller, Arc::clone(&gate)),
        Some(ContainerService::new(containers, gate)),
    )
    .await
    .unwrap();
    let mut host = host;
    let mut hello = [0u8; HELLO.len()];
    tokio::io::AsyncReadExt::read_exact(&mut host, &mut hello)
        .await
        .unwrap();
    let client = ContainerClient::new(ttrpc::asynchronous::Client::new(Socket::new(host)));
    Some(Fixture {
        client,
        _server: server,
        cgroup_parent,
        root_holder,
        state,
        _image: image,
    })
}

fn spec(process: Option<serde_json::Value>, extra: serde_json::Value) -> Vec<u8> {
    let mut spec = serde_json::json!({
        "ociVersion": "1.1.0",
        "hostname": "box",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["newinstance", "ptmxmode=0666"]},
            {"destination": "/escape/tmp", "type": "tmpfs", "source": "tmpfs"}
        ],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"}, {"type": "ipc"}]}
    });
    if let Some(p) = process {
        spec["process"] = p;
    }
    if let serde_json::Value::Object(extra) = extra {
        for (k, v) in extra {
            spec[k] = v;
        }
    }
    serde_json::to_vec(&spec).unwrap()
}

fn process(args: &[&str], terminal: bool) -> serde_json::Value {
    serde_json::json!({
        "args": args, "cwd": "/", "terminal": terminal, "env": ["PATH=/bin"],
        "user": {"uid": 0, "gid": 0},
        "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]}
    })
}

impl Fixture {
    async fn create(
        &self,
        id: &str,
        spec: Vec<u8>,
    ) -> ttrpc::Result<tsuba_protocols::agent::CreateContainerResponse> {
        let mut req = CreateContainerRequest::new();
        req.container_id = id.into();
        req.image = "test/busybox:1".into();
        req.oci_spec = spec;
        self.client.create_container(ctx(), &req).await
    }

    async fn start(&self, id: &str) {
        let mut req = StartContainerRequest::new();
        req.container_id = id.into();
        self.client.start_container(ctx(), &req).await.unwrap();
    }

    async fn output(&self, id: &str, exec: &str) -> String {
        let mut out = Vec::new();
        loop {
            let mut req = ReadStreamRequest::new();
            req.container_id = id.into();
            req.exec_id = exec.into();
            req.max_len = 4096;
            let resp = self.client.read_stdout(ctx(), &req).await.unwrap();
            if resp.eof {
                break;
            }
            out.extend(resp.data);
        }
        String::from_utf8(out).unwrap()
    }

    async fn wait(&self, id: &str, exec: &str) -> i32 {
        let mut req = WaitProcessRequest::new();
        req.container_id = id.into();
        req.exec_id = exec.into();
        self.client
            .wait_process(ctx(), &req)
            .await
            .unwrap()
            .exit_status
    }

    async fn remove(&self, id: &str) {
        let mut req = RemoveContainerRequest::new();
        req.container_id = id.into();
        req.timeout_secs = 0;
        self.client.remove_container(ctx(), &req).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_run_with_their_output_exit_codes_exec_signals_stdin_and_tty() {
    let Some(f) = fixture().await else { return };

    // The image's command when the spec has no process; its own hostname and PID namespace.
    let created = f
        .create("c1", spec(None, serde_json::json!({})))
        .await
        .unwrap();
    assert!(created.pulled);
    assert!(created.pid > 1);
    f.start("c1").await;
    assert_eq!(f.output("c1", "").await, "from-image-cmd\n");
    assert_eq!(f.wait("c1", "").await, 0);
    f.remove("c1").await;
    assert!(
        !f.state.path().join("containers/c1").exists(),
        "the layer is gone"
    );

    // Exit codes, PID 1, hostname, env from the image, the escaping link kept inside.
    let script = "echo pid=$$ host=$(hostname) img=$FROM_IMAGE; ls /tmp; exit 7";
    let created = f
        .create(
            "c2",
            spec(
                Some(process(&["sh", "-c", script], false)),
                serde_json::json!({}),
            ),
        )
        .await
        .unwrap();
    assert!(!created.pulled, "the image is pulled once");
    f.start("c2").await;
    assert_eq!(f.output("c2", "").await, "pid=1 host=box img=yes\n");
    assert_eq!(f.wait("c2", "").await, 7);
    f.remove("c2").await;

    // A sleeping container: exec, stdin to cat, a tty that sees its size, SIGTERM gives 143.
    let sleeper = "trap 'exit 143' TERM; while true; do sleep 1; done";
    f.create(
        "c3",
        spec(
            Some(process(&["sh", "-c", sleeper], false)),
            serde_json::json!({}),
        ),
    )
    .await
    .unwrap();
    f.start("c3").await;
    let mut exec = ExecProcessRequest::new();
    exec.container_id = "c3".into();
    exec.exec_id = "e1".into();
    exec.process =
        serde_json::to_vec(&process(&["sh", "-c", "echo exec-$$; exit 3"], false)).unwrap();
    let pid = f.client.exec_process(ctx(), &exec).await.unwrap().pid;
    assert!(pid > 1);
    assert!(f.output("c3", "e1").await.starts_with("exec-"));
    assert_eq!(f.wait("c3", "e1").await, 3);

    // Another user: the container's root is readable by it, it holds no capability, and
    // no_new_privileges holds.
    let mut user = process(&["sh", "-c", "id -u; cat /proc/self/status"], false);
    user["user"] = serde_json::json!({"uid": 1000, "gid": 1000});
    user["noNewPrivileges"] = serde_json::json!(true);
    exec.exec_id = "user".into();
    exec.process = serde_json::to_vec(&user).unwrap();
    f.client.exec_process(ctx(), &exec).await.unwrap();
    let out = f.output("c3", "user").await;
    assert!(out.starts_with("1000\n"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(
        out.contains("CapBnd:\t0000000000000020"),
        "only CAP_KILL: {out}"
    );
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert_eq!(f.wait("c3", "user").await, 0);

    exec.exec_id = "cat".into();
    exec.process = serde_json::to_vec(&process(&["cat"], false)).unwrap();
    f.client.exec_process(ctx(), &exec).await.unwrap();
    let mut write = WriteStreamRequest::new();
    write.container_id = "c3".into();
    write.exec_id = "cat".into();
    write.data = b"through stdin\n".to_vec();
    assert_eq!(f.client.write_stdin(ctx(), &write).await.unwrap().len, 14);
    let mut close = tsuba_protocols::agent::CloseStdinRequest::new();
    close.container_id = "c3".into();
    close.exec_id = "cat".into();
    f.client.close_stdin(ctx(), &close).await.unwrap();
    assert_eq!(f.output("c3", "cat").await, "through stdin\n");
    assert_eq!(f.wait("c3", "cat").await, 0);

    exec.exec_id = "tty".into();
    exec.process = serde_json::to_vec(&process(&["sh", "-c", "sleep 1; stty size"], true)).unwrap();
    f.client.exec_process(ctx(), &exec).await.unwrap();
    let mut resize = TtyWinResizeRequest::new();
    resize.container_id = "c3".into();
    resize.exec_id = "tty".into();
    resize.rows = 42;
    resize.columns = 132;
    f.client.tty_win_resize(ctx(), &resize).await.unwrap();
    assert_eq!(f.output("c3", "tty").await.trim(), "42 132");
    assert_eq!(f.wait("c3", "tty").await, 0);

    let mut signal = SignalProcessRequest::new();
    signal.container_id = "c3".into();
    signal.signal = 15;
    f.client.signal_process(ctx(), &signal).await.unwrap();
    assert_eq!(f.wait("c3", "").await, 143);
    f.remove("c3").await;

    // A seccomp profile holds for the init process and its execs: mkdir fails with the errno the
    // profile names (EACCES, not the default EPERM), the rest runs, and no_new_privileges is on.
    let profile = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
    });
    let linux = serde_json::json!({
        "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"}, {"type": "ipc"}],
        "seccomp": profile
    });
    let check = "mkdir /tmp/x 2>&1; grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status";
    let init = format!("{check}; trap 'exit 143' TERM; while true; do sleep 1; done");
    f.create(
        "c5",
        spec(
            Some(process(&["sh", "-c", &init], false)),
            serde_json::json!({"linux": linux}),
        ),
    )
    .await
    .unwrap();
    f.start("c5").await;
    let mut exec = ExecProcessRequest::new();
    exec.container_id = "c5".into();
    exec.exec_id = "e1".into();
    exec.process = serde_json::to_vec(&process(&["sh", "-c", check], false)).unwrap();
    f.client.exec_process(ctx(), &exec).await.unwrap();
    let expected = "mkdir: can't create directory '/tmp/x': Permission denied\n\
                    NoNewPrivs:\t1\nSeccomp:\t2\n";
    assert_eq!(f.output("c5", "e1").await, expected);
    assert_eq!(f.wait("c5", "e1").await, 0);
    let mut signal = SignalProcessRequest::new();
    signal.container_id = "c5".into();
    signal.signal = 15;
    f.client.signal_process(ctx(), &signal).await.unwrap();
    assert_eq!(f.output("c5", "").await, expected);
    assert_eq!(f.wait("c5", "").await, 143);
    f.remove("c5").await;

    // A host bind mount is refused, naming it; nothing is left of the attempt.
    let bind = spec(
        Some(process(&["true"], false)),
        serde_json::json!({"mounts": [{"destination": "/host", "type": "bind", "source": "/etc", "options": ["rbind"]}]}),
    );
    let status = match f.create("c4", bind).await {
        Err(ttrpc::Error::RpcStatus(status)) => status,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(status.code(), ttrpc::Code::INVALID_ARGUMENT);
    assert!(
        status.message.contains("bind mount of \"/etc\" on /host"),
        "{}",
        status.message
    );
    assert!(!f.state.path().join("containers/c4").exists());
    assert_eq!(
        std::fs::read_dir(f.state.path().join("containers"))
            .unwrap()
            .count(),
        0,
        "no layer is left"
    );
}
