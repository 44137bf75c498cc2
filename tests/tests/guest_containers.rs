//! Containers in one sim-snp guest, through the agent's Container service directly (no shim):
//! the guest attests to the broker (HTTPS, pinned CA), pulls and decrypts an encrypted busybox
//! image once, and runs containers from it with their output, exit codes, exec, signals, stdin,
//! a tty, an OOM kill and a refused host bind mount.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a panic is the failure report"
)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    Broker, BrokerPki, HOST_FROM_GUEST, KEY_ID, Registry, free_port, guest_cmdline, hex_of,
    networked_config, rand_bytes, run, tsuba_bin, write_busybox_image,
};
use tokio::io::AsyncReadExt as _;
use tsuba_image_rs::Digest;
use tsuba_protocols::agent::{
    CloseStdinRequest, ContainerClient, CreateContainerRequest, CreateContainerResponse,
    ExecProcessRequest, GetOOMEventRequest, HELLO, ListProcessesRequest, ReadStreamRequest,
    RemoveContainerRequest, SignalProcessRequest, StartContainerRequest, TtyWinResizeRequest,
    WaitProcessRequest, WaitProcessResponse, WriteStreamRequest,
};
use tsuba_tests::{AGENT_TIMEOUT, Artefacts, assert_nothing_left, options_in};
use tsuba_vmm_tee::{LaunchOptions, Vm, launch_reference_values};
use ttrpc::asynchronous::transport::Socket;

/// The first create attests and pulls (TCG, loaded machine).
const CREATE_TIMEOUT: Duration = Duration::from_secs(180);
/// Any other call, including waiting for a short-lived process.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

fn ctx(timeout: Duration) -> ttrpc::context::Context {
    ttrpc::context::with_timeout(i64::try_from(timeout.as_nanos()).unwrap())
}

/// An OCI spec with ctr's usual mounts and namespaces; `process` may be absent.
fn spec(process: Option<serde_json::Value>, memory_limit: Option<i64>) -> Vec<u8> {
    let mut spec = serde_json::json!({
        "ociVersion": "1.1.0",
        "hostname": "box",
        "root": {"path": "rootfs"},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"}, {"type": "ipc"}, {"type": "network"}],
            "maskedPaths": ["/proc/kcore", "/sys/firmware"],
            "readonlyPaths": ["/proc/sys"]
        }
    });
    if let Some(p) = process {
        spec["process"] = p;
    }
    if let Some(limit) = memory_limit {
        spec["linux"]["resources"] = serde_json::json!({"memory": {"limit": limit}});
    }
    serde_json::to_vec(&spec).unwrap()
}

fn process(args: &[&str], terminal: bool) -> serde_json::Value {
    serde_json::json!({
        "args": args, "cwd": "/", "terminal": terminal, "env": ["PATH=/bin"],
        "user": {"uid": 0, "gid": 0},
        "noNewPrivileges": true,
        "capabilities": {
            "bounding": ["CAP_KILL", "CAP_CHOWN"], "effective": ["CAP_KILL", "CAP_CHOWN"],
            "permitted": ["CAP_KILL", "CAP_CHOWN"]
        }
    })
}

/// The Container service of the guest's agent.
struct Agent {
    client: ContainerClient,
    image: String,
}

impl Agent {
    async fn create(&self, id: &str, spec: Vec<u8>) -> ttrpc::Result<CreateContainerResponse> {
        let mut req = CreateContainerRequest::new();
        req.container_id = id.into();
        req.sandbox_id = "pod".into();
        req.image = self.image.clone();
        req.oci_spec = spec;
        self.client
            .create_container(ctx(CREATE_TIMEOUT), &req)
            .await
    }

    async fn start(&self, id: &str) {
        let mut req = StartContainerRequest::new();
        req.container_id = id.into();
        self.client
            .start_container(ctx(CALL_TIMEOUT), &req)
            .await
            .unwrap();
    }

    async fn run(&self, id: &str, spec: Vec<u8>) -> CreateContainerResponse {
        let created = self.create(id, spec).await.unwrap();
        self.start(id).await;
        created
    }

    /// Everything the process writes to stdout until end of file.
    async fn output(&self, id: &str, exec: &str) -> String {
        let mut out = Vec::new();
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            assert!(Instant::now() < deadline, "{id}/{exec}: no end of file");
            let mut req = ReadStreamRequest::new();
            req.container_id = id.into();
            req.exec_id = exec.into();
            req.max_len = 4096;
            let resp = self
                .client
                .read_stdout(ctx(CALL_TIMEOUT), &req)
                .await
                .unwrap();
            if resp.eof {
                break;
            }
            out.extend(resp.data);
        }
        String::from_utf8(out).unwrap()
    }

    async fn wait(&self, id: &str, exec: &str) -> WaitProcessResponse {
        let mut req = WaitProcessRequest::new();
        req.container_id = id.into();
        req.exec_id = exec.into();
        self.client
            .wait_process(ctx(CALL_TIMEOUT), &req)
            .await
            .unwrap()
    }

    async fn exec(&self, id: &str, exec_id: &str, process: serde_json::Value) -> u32 {
        let mut req = ExecProcessRequest::new();
        req.container_id = id.into();
        req.exec_id = exec_id.into();
        req.process = serde_json::to_vec(&process).unwrap();
        self.client
            .exec_process(ctx(CALL_TIMEOUT), &req)
            .await
            .unwrap()
            .pid
    }

    async fn remove(&self, id: &str) {
        let mut req = RemoveContainerRequest::new();
        req.container_id = id.into();
        req.timeout_secs = 5;
        self.client
            .remove_container(ctx(CALL_TIMEOUT), &req)
            .await
            .unwrap();
    }
}

/// Boots the guest and connects to its agent's Container service.
async fn connect(vm: &mut Vm) -> ContainerClient {
    let mut stream = vm.take_agent_stream().expect("the agent's serial port");
    let mut hello = [0u8; HELLO.len()];
    tokio::time::timeout(AGENT_TIMEOUT, stream.read_exact(&mut hello))
        .await
        .unwrap_or_else(|_| panic!("no agent hello:\n{}", vm.console_tail()))
        .unwrap();
    assert_eq!(&hello, HELLO);
    ContainerClient::new(ttrpc::asynchronous::Client::new(Socket::new(stream)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_images_containers_run_in_one_guest_with_exec_signals_stdio_tty_and_oom() {
    let a = Artefacts::from_env();
    let work = tempfile::tempdir().unwrap();
    let runs = tempfile::tempdir().unwrap();
    let sim_state = work.path().join("tee-sim");
    let registry = Registry::start(work.path());
    let pki = BrokerPki::generate(work.path(), "containers");
    let broker_port = free_port();
    let cmdline = guest_cmdline(broker_port, &pki.pin(), registry.port);

    // The owner encrypts the busybox image for the broker's key and pushes it.
    let plain = work.path().join("plain");
    write_busybox_image(&plain);
    let kek = work.path().join("kek.bin");
    std::fs::write(&kek, rand_bytes()).unwrap();
    let encrypted = work.path().join("encrypted");
    run(Command::new(tsuba_bin())
        .args(["image", "encrypt", "--from"])
        .arg(format!("oci:{}:v1", plain.display()))
        .arg("--to")
        .arg(format!("oci:{}:v1", encrypted.display()))
        .args(["--key-id", KEY_ID, "--kek"])
        .arg(&kek));
    let pushed = format!("127.0.0.1:{}/e2e/busybox:v1", registry.port);
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", encrypted.display()))
        .arg(format!("docker://{pushed}")));
    let manifest_bytes = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{pushed}"),
    ]));

    let launch_dir = tempfile::tempdir().unwrap();
    let config = networked_config(&a, launch_dir.path(), &cmdline);
    let reference = launch_reference_values(&config).unwrap().snp.unwrap();
    let refs = work.path().join("refs.json");
    std::fs::write(
        &refs,
        serde_json::json!({ "measurement": [hex_of(&reference.launch_digest.0)] }).to_string(),
    )
    .unwrap();
    let policy = work.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let broker = Broker::start(&work.path().join("kbs"), broker_port, &pki, &sim_state);
    broker.admin(&["set-resource", "default/image-kek/e2e"], Some(&kek));
    broker.admin(
        &["set-resource", "default/security-policy/e2e"],
        Some(&policy),
    );
    broker.admin(&["set-reference-values"], Some(&refs));

    let options = LaunchOptions {
        tee_sim_state: sim_state.clone(),
        ..options_in(runs.path())
    };
    let mut vm = Vm::launch(&config, &options).await.unwrap();
    let client = connect(&mut vm).await;
    let agent = Agent {
        client,
        image: format!("{HOST_FROM_GUEST}:{}/e2e/busybox:v1", registry.port),
    };
    // Whatever fails below, the VM is stopped when `vm` drops (kill and reap).
    let outcome =
        tokio::time::timeout(Duration::from_secs(900), scenario(&agent, &manifest_bytes)).await;
    let console = vm.console_tail();
    vm.shutdown().await.unwrap();
    match outcome {
        Ok(()) => {}
        Err(_) => panic!("the scenario took more than 15 minutes\n{console}"),
    }
    assert!(
        !console.contains("tsuba-e2e-marker-in-the-image"),
        "no image content on the host-visible console"
    );
    assert_eq!(broker.requests("attest"), 1, "one attestation for the pod");
    broker.stop();
    drop(registry);
    assert_nothing_left(runs.path());
}

async fn scenario(agent: &Agent, manifest_bytes: &[u8]) {
    // The first container pulls (attest, policy, key, decrypt): its output and exit code.
    let started = Instant::now();
    let script =
        "echo hello from $(hostname) pid $$; cat /etc/marker >/dev/null; touch /written; exit 7";
    let created = agent
        .run(
            "c1",
            spec(Some(process(&["sh", "-c", script], false)), None),
        )
        .await;
    #[allow(
        clippy::print_stderr,
        reason = "a figure for the test log (--nocapture)"
    )]
    {
        eprintln!(
            "first CreateContainer+Start (attest, pull, decrypt, unpack, start) took {:?}",
            started.elapsed()
        );
    }
    assert!(created.pulled, "the first container pulls");
    // The guest's split of the call: attestation and the pull took time, and they fit in the
    // call the host timed.
    assert!(created.attest_ms > 0 && created.pull_ms > 0, "{created:?}");
    assert!(
        u128::from(created.attest_ms + created.pull_ms + created.setup_ms)
            <= started.elapsed().as_millis(),
        "{created:?}"
    );
    assert!(created.pid > 1);
    assert_eq!(
        created.manifest_digest,
        Digest::of(manifest_bytes).to_string()
    );
    assert_eq!(agent.output("c1", "").await, "hello from box pid 1\n");
    let exit = agent.wait("c1", "").await;
    assert_eq!((exit.exit_status, exit.oom_killed), (7, false));

    // A second container of the same image: no second pull; no process in the spec runs the
    // image's command with the image's environment.
    let started = Instant::now();
    let second = agent.run("c2", spec(None, None)).await;
    #[allow(
        clippy::print_stderr,
        reason = "a figure for the test log (--nocapture)"
    )]
    {
        eprintln!(
            "second CreateContainer+Start (no pull) took {:?}",
            started.elapsed()
        );
    }
    assert!(!second.pulled, "the pod already holds the image");
    assert_eq!((second.attest_ms, second.pull_ms), (0, 0), "{second:?}");
    assert_eq!(agent.output("c2", "").await, "from-image-cmd yes\n");
    assert_eq!(agent.wait("c2", "").await.exit_status, 0);

    // A sleeping container: exec with its own output and code, stdin to cat, a tty's size,
    // then SIGTERM.
    let sleeper = "trap 'exit 143' TERM; while true; do sleep 1; done";
    agent
        .run(
            "c3",
            spec(Some(process(&["sh", "-c", sleeper], false)), None),
        )
        .await;
    let pid = agent
        .exec(
            "c3",
            "e1",
            process(&["sh", "-c", "echo exec output; exit 3"], false),
        )
        .await;
    assert!(pid > 1);
    assert_eq!(agent.output("c3", "e1").await, "exec output\n");
    assert_eq!(agent.wait("c3", "e1").await.exit_status, 3);

    agent.exec("c3", "cat", process(&["cat"], false)).await;
    let mut write = WriteStreamRequest::new();
    write.container_id = "c3".into();
    write.exec_id = "cat".into();
    write.data = b"stdin reaches cat\n".to_vec();
    let taken = agent
        .client
        .write_stdin(ctx(CALL_TIMEOUT), &write)
        .await
        .unwrap();
    assert_eq!(taken.len, 18);
    let mut close = CloseStdinRequest::new();
    close.container_id = "c3".into();
    close.exec_id = "cat".into();
    agent
        .client
        .close_stdin(ctx(CALL_TIMEOUT), &close)
        .await
        .unwrap();
    assert_eq!(agent.output("c3", "cat").await, "stdin reaches cat\n");
    assert_eq!(agent.wait("c3", "cat").await.exit_status, 0);

    // The tty process waits until the host has resized its terminal, then prints its size.
    agent
        .exec(
            "c3",
            "tty",
            process(
                &[
                    "sh",
                    "-c",
                    "while test ! -e /tmp/resized; do sleep 1; done; stty size",
                ],
                true,
            ),
        )
        .await;
    let mut resize = TtyWinResizeRequest::new();
    resize.container_id = "c3".into();
    resize.exec_id = "tty".into();
    resize.rows = 42;
    resize.columns = 132;
    agent
        .client
        .tty_win_resize(ctx(CALL_TIMEOUT), &resize)
        .await
        .unwrap();
    agent
        .exec("c3", "mark", process(&["touch", "/tmp/resized"], false))
        .await;
    assert_eq!(agent.wait("c3", "mark").await.exit_status, 0);
    assert_eq!(agent.output("c3", "tty").await, "42 132\r\n");
    assert_eq!(agent.wait("c3", "tty").await.exit_status, 0);

    let mut list = ListProcessesRequest::new();
    list.container_id = "c3".into();
    let pids = agent
        .client
        .list_processes(ctx(CALL_TIMEOUT), &list)
        .await
        .unwrap()
        .pids;
    assert!(!pids.is_empty(), "the sleeper is listed");
    let mut signal = SignalProcessRequest::new();
    signal.container_id = "c3".into();
    signal.signal = 15;
    agent
        .client
        .signal_process(ctx(CALL_TIMEOUT), &signal)
        .await
        .unwrap();
    assert_eq!(agent.wait("c3", "").await.exit_status, 143);

    // Over its 16 MiB memory limit: OOM-killed, 137, and the OOM event names it.
    let hog = process(
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
        false,
    );
    agent.run("c4", spec(Some(hog), Some(16 << 20))).await;
    let exit = agent.wait("c4", "").await;
    assert_eq!((exit.exit_status, exit.oom_killed), (137, true));
    let oom = agent
        .client
        .get_oom_event(ctx(CALL_TIMEOUT), &GetOOMEventRequest::new())
        .await
        .unwrap();
    assert_eq!(oom.container_id, "c4");

    // A host bind mount is refused, naming it.
    let mut bind: serde_json::Value =
        serde_json::from_slice(&spec(Some(process(&["true"], false)), None)).unwrap();
    bind["mounts"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(
            {"destination": "/host", "type": "bind", "source": "/etc", "options": ["rbind", "ro"]}
        ));
    match agent.create("c5", serde_json::to_vec(&bind).unwrap()).await {
        Err(ttrpc::Error::RpcStatus(status)) => {
            assert_eq!(status.code(), ttrpc::Code::INVALID_ARGUMENT);
            assert!(
                status.message.contains("bind mount of \"/etc\" on /host"),
                "{}",
                status.message
            );
        }
        other => panic!("a host bind mount must be refused, got {other:?}"),
    }

    // Removal leaves no rootfs: c1 comes back under its ID without what the first c1 wrote.
    for id in ["c1", "c2", "c3", "c4"] {
        agent.remove(id).await;
    }
    let mut stats = tsuba_protocols::agent::StatsContainerRequest::new();
    stats.container_id = "c1".into();
    match agent
        .client
        .stats_container(ctx(CALL_TIMEOUT), &stats)
        .await
    {
        Err(ttrpc::Error::RpcStatus(status)) => {
            assert_eq!(status.code(), ttrpc::Code::NOT_FOUND);
        }
        other => panic!("a removed container is gone, got {other:?}"),
    }
    let again = agent
        .run(
            "c1",
            spec(
                Some(process(
                    &["sh", "-c", "test -e /written && echo left || echo fresh"],
                    false,
                )),
                None,
            ),
        )
        .await;
    assert!(!again.pulled);
    assert_eq!(agent.output("c1", "").await, "fresh\n");
    assert_eq!(agent.wait("c1", "").await.exit_status, 0);
    agent.remove("c1").await;
}
