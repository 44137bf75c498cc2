//! Containers in one sim-snp guest, through the agent's Container service directly (no shim):
//! the guest attests to the broker (HTTPS, pinned CA), pulls and decrypts an encrypted busybox
//! image once, and runs containers from it with their output, exit codes, exec, signals, stdin,
//! a tty, an OOM kill and a refused host bind mount.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a panic is the failure report"
)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    Broker, BrokerPki, HOST_FROM_GUEST, KEY_ID, Registry, free_port, guest_settings, hex_of,
    networked_config, permissive_initdata, rand_bytes, run, tsuba_bin, write_busybox_image,
    write_initdata,
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

/// Boots the guest, gives its agent the launch's initdata (whose policy the agent must report as
/// `policy`), and returns the agent's ttrpc client.
async fn connect(vm: &mut Vm, initdata: &Path, policy: &str) -> ttrpc::asynchronous::Client {
    let mut stream = vm.take_agent_stream().expect("the agent's serial port");
    let mut hello = [0u8; HELLO.len()];
    tokio::time::timeout(AGENT_TIMEOUT, stream.read_exact(&mut hello))
        .await
        .unwrap_or_else(|_| panic!("no agent hello:\n{}", vm.console_tail()))
        .unwrap();
    assert_eq!(&hello, HELLO);
    let client = ttrpc::asynchronous::Client::new(Socket::new(stream));
    let mut provide = tsuba_protocols::agent::ProvideInitdataRequest::new();
    provide.document = std::fs::read(initdata).unwrap();
    let provided = tsuba_protocols::agent::InitdataClient::new(client.clone())
        .provide(ctx(AGENT_TIMEOUT), &provide)
        .await
        .unwrap();
    assert_eq!(provided.policy, policy);
    client
}

/// The owner's side: the busybox image encrypted for the broker's key, pushed to `registry`.
struct OwnerSide {
    kek: std::path::PathBuf,
    manifest_bytes: Vec<u8>,
}

fn owner_side(work: &Path, registry: &Registry) -> OwnerSide {
    // The owner encrypts the busybox image for the broker's key and pushes it.
    let plain = work.join("plain");
    write_busybox_image(&plain);
    let kek = work.join("kek.bin");
    std::fs::write(&kek, rand_bytes()).unwrap();
    let encrypted = work.join("encrypted");
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

    OwnerSide {
        kek,
        manifest_bytes,
    }
}

/// Starts the broker with the image's key, an accept-anything signature policy, and `config`'s
/// launch measurement as the only reference value.
fn start_broker(
    work: &Path,
    port: u16,
    pki: &BrokerPki,
    sim_state: &Path,
    kek: &Path,
    config: &tsuba_vmm_tee::LaunchConfig,
) -> Broker {
    let reference = launch_reference_values(config).unwrap().snp.unwrap();
    let refs = work.join("refs.json");
    std::fs::write(
        &refs,
        serde_json::json!({ "measurement": [hex_of(&reference.launch_digest.0)] }).to_string(),
    )
    .unwrap();
    let policy = work.join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let broker = Broker::start(&work.join("kbs"), port, pki, sim_state);
    broker.admin(&["set-resource", "default/image-kek/e2e"], Some(kek));
    broker.admin(
        &["set-resource", "default/security-policy/e2e"],
        Some(&policy),
    );
    broker.admin(&["set-reference-values"], Some(&refs));
    broker
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
    let initdata = permissive_initdata(work.path(), broker_port, &pki.pin(), registry.port);

    let owner = owner_side(work.path(), &registry);
    let manifest_bytes = owner.manifest_bytes.clone();
    let kek = owner.kek.clone();
    let launch_dir = tempfile::tempdir().unwrap();
    let config = networked_config(&a, launch_dir.path(), "", Some(&initdata));
    let broker = start_broker(work.path(), broker_port, &pki, &sim_state, &kek, &config);

    let options = LaunchOptions {
        tee_sim_state: sim_state.clone(),
        ..options_in(runs.path())
    };
    let mut vm = Vm::launch(&config, &options).await.unwrap();
    let client = ContainerClient::new(connect(&mut vm, &initdata, "permissive").await);
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

/// What the Pod YAML of the policy test would say, as policy data: the one container, with
/// exactly the spec [`spec`] and [`process`] give it.
fn one_container_policy(image: &str, args: &[&str]) -> tsuba_policy::PolicyData {
    let mount = |destination: &str, kind: &str| tsuba_policy::MountPolicy {
        destination: destination.into(),
        kind: kind.into(),
        source: kind.into(),
    };
    tsuba_policy::PolicyData {
        containers: vec![tsuba_policy::ContainerPolicy {
            name: String::new(),
            image: image.into(),
            signed: false,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: vec!["PATH=/bin".into()],
            env_any_value: Vec::new(),
            cwd: "/".into(),
            uid: Some(0),
            capabilities: vec!["CAP_KILL".into(), "CAP_CHOWN".into()],
            mounts: vec![
                mount("/proc", "proc"),
                mount("/dev", "tmpfs"),
                mount("/dev/pts", "devpts"),
                mount("/sys", "sysfs"),
            ],
            seccomp_required: false,
            no_new_privileges: true,
            exec: Vec::new(),
        }],
        ..tsuba_policy::PolicyData::default()
    }
}

fn denied(result: ttrpc::Result<impl std::fmt::Debug>) -> String {
    match result {
        Err(ttrpc::Error::RpcStatus(status)) => {
            assert_eq!(
                status.code(),
                ttrpc::Code::PERMISSION_DENIED,
                "{}",
                status.message
            );
            status.message
        }
        other => panic!("expected PERMISSION_DENIED, got {other:?}"),
    }
}

/// Issue 12 end to end through the agent API: a pod launched with initdata A has HOST_DATA =
/// digest(A); the broker releases a key tied to digest(A) and refuses once the key is tied to
/// digest(B); the agent runs the container its policy lists and refuses another command and
/// any exec; two documents give one launch measurement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_what_the_initdata_policy_lists_runs_and_the_broker_ties_the_key_to_that_initdata() {
    let a = Artefacts::from_env();
    let work = tempfile::tempdir().unwrap();
    let runs = tempfile::tempdir().unwrap();
    let sim_state = work.path().join("tee-sim");
    let registry = Registry::start(work.path());
    let pki = BrokerPki::generate(work.path(), "initdata");
    let broker_port = free_port();
    let owner = owner_side(work.path(), &registry);
    let pinned = format!(
        "{HOST_FROM_GUEST}:{}/e2e/busybox@{}",
        registry.port,
        Digest::of(&owner.manifest_bytes)
    );
    let allowed = ["sh", "-c", "echo policy-allowed"];
    let settings = guest_settings(broker_port, &pki.pin(), registry.port);
    let policy_a = tsuba_policy::render_policy(&one_container_policy(&pinned, &allowed));
    let initdata_a = write_initdata(work.path(), "a.toml", &settings, &policy_a);
    let mut data_b = one_container_policy(&pinned, &allowed);
    data_b.read_stderr = false;
    let initdata_b = write_initdata(
        work.path(),
        "b.toml",
        &settings,
        &tsuba_policy::render_policy(&data_b),
    );
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config_a = networked_config(&a, dir_a.path(), "", Some(&initdata_a));
    let config_b = networked_config(&a, dir_b.path(), "", Some(&initdata_b));
    let (doc_a, doc_b) = (
        config_a.initdata.clone().unwrap(),
        config_b.initdata.clone().unwrap(),
    );
    assert_ne!(doc_a.host_data(), doc_b.host_data());
    let (ref_a, ref_b) = (
        launch_reference_values(&config_a).unwrap().snp.unwrap(),
        launch_reference_values(&config_b).unwrap().snp.unwrap(),
    );
    assert_eq!(
        ref_a.launch_digest.0, ref_b.launch_digest.0,
        "one guest image and firmware: one reference value for every pod's initdata"
    );
    let broker = start_broker(
        work.path(),
        broker_port,
        &pki,
        &sim_state,
        &owner.kek,
        &config_a,
    );
    let tie_to = |doc: &tsuba_policy::Initdata, name: &str| {
        let path = work.path().join(name);
        std::fs::write(
            &path,
            format!(
                "package policy\ndefault allow := false\n\
                 allow if input.submods.cpu0[\"ear.veraison.annotated-evidence\"].init_data == \"{}\"\n\
                 reasons contains \"the key is tied to another initdata\" if not allow\n",
                doc.host_data().to_hex()
            ),
        )
        .unwrap();
        broker.admin(&["set-policy", "resource"], Some(&path));
    };
    tie_to(&doc_a, "tied-to-a.rego");

    let options = LaunchOptions {
        tee_sim_state: sim_state.clone(),
        ..options_in(runs.path())
    };
    let mut vm = Vm::launch(&config_a, &options).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(600), async {
        let raw = connect(&mut vm, &initdata_a, "initdata").await;
        // The guest's own evidence carries digest(A).
        let mut diag = tsuba_protocols::agent::DiagnosticReportRequest::new();
        diag.nonce = b"initdata-e2e".to_vec();
        let report = tsuba_protocols::agent::AttestationClient::new(raw.clone())
            .get_diagnostic_report(ctx(AGENT_TIMEOUT), &diag)
            .await
            .unwrap();
        let report = tsuba_protocols::evidence::SnpReport::parse(&report.evidence).unwrap();
        assert_eq!(&report.host_data, doc_a.host_data().as_bytes());
        let agent = Agent {
            client: ContainerClient::new(raw.clone()),
            image: pinned.clone(),
        };
        // The listed container runs (the broker released the key tied to A).
        agent
            .run("c1", spec(Some(process(&allowed, false)), None))
            .await;
        assert_eq!(agent.output("c1", "").await, "policy-allowed\n");
        // Another command: refused at create, naming the rule and the difference.
        let other = denied(
            agent
                .create(
                    "c2",
                    spec(Some(process(&["sh", "-c", "cat /etc/marker"], false)), None),
                )
                .await,
        );
        assert!(other.contains("rule CreateContainerRequest"), "{other}");
        assert!(other.contains("is not the policy's"), "{other}");
        // No exec under this policy.
        let mut exec = tsuba_protocols::agent::ExecProcessRequest::new();
        exec.container_id = "c1".into();
        exec.exec_id = "sh".into();
        exec.process = serde_json::to_vec(&process(&["sh"], false)).unwrap();
        let refused = denied(agent.client.exec_process(ctx(CALL_TIMEOUT), &exec).await);
        assert!(refused.contains("rule ExecProcessRequest"), "{refused}");
        // The key tied to B instead: the next pull is refused with the broker's reason.
        tie_to(&doc_b, "tied-to-b.rego");
        let mut pull = tsuba_protocols::agent::PullImageRequest::new();
        pull.image = pinned.clone();
        let refused = denied(
            tsuba_protocols::agent::ImageClient::new(raw)
                .pull(ctx(Duration::from_secs(120)), &pull)
                .await,
        );
        assert!(refused.contains("tied to another initdata"), "{refused}");
    })
    .await;
    let console = vm.console_tail();
    vm.shutdown().await.unwrap();
    if outcome.is_err() {
        panic!("the scenario took more than 10 minutes\n{console}");
    }
    broker.stop();
    drop(registry);
    assert_nothing_left(runs.path());
}
