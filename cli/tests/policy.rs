//! `tsuba policy generate` and `tsuba policy test`, run as the built binary.
//!
//! The generated files of the pods in `tests/fixtures/policy/` are compared byte for byte with
//! the checked-in files under `tests/fixtures/policy/expected/<pod>/`. After an intended change
//! of the output, regenerate them with
//!
//! ```text
//! TSUBA_BLESS=1 cargo test -p tsuba-cli --test policy
//! ```
//!
//! and review the diff: every changed byte changes the pod's HOST_DATA.
//!
//! The digest look-up test needs docker-registry, skopeo and umoci (Debian packages), as the
//! `tsuba image` tests do.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed unwrap is a failed test"
)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod encrypt_support;

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha384};

const TSUBA: &str = env!("CARGO_BIN_EXE_tsuba");

const FILES: [&str; 4] = [
    "policy.rego",
    "initdata.toml",
    "annotation.txt",
    "reference-values.txt",
];

const SIMPLE_IMAGE: &str = "registry.example:5000/hello@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const SERVER_IMAGE: &str = "registry.example:5000/server@sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
const SIDECAR_IMAGE: &str = "registry.example:5000/sidecar@sha256:fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9";
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const CTR_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/policy")
}

fn tsuba(args: &[&str]) -> Output {
    Command::new(TSUBA)
        .args(args)
        .env("TSUBA_LOG", "error")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The pods with checked-in output, and the flags each is generated with.
fn cases() -> Vec<(&'static str, Vec<String>)> {
    let ca = fixtures().join("kbs-ca.pem");
    vec![
        ("simple", vec![]),
        (
            "two-containers",
            vec![
                "--kbs-url".into(),
                "https://kbs.example:8443".into(),
                "--kbs-pin".into(),
                format!("sha256:{}", "ab".repeat(32)),
                "--kbs-cert".into(),
                ca.to_str().unwrap().into(),
                "--no-read-stderr".into(),
            ],
        ),
        (
            "signed",
            vec![
                "--offline".into(),
                "--signed-image".into(),
                "registry.example:5000/signed".into(),
                "--image-policy".into(),
                "kbs:///default/security-policy/test".into(),
                "--signature-storage".into(),
                "kbs:///default/image/lookaside".into(),
                "--registry-auth".into(),
                "kbs:///default/credential/registry".into(),
                "--plain-http-registry".into(),
                "registry.example:5000".into(),
                "--kbs-url".into(),
                "http://10.0.2.2:8080".into(),
                "--insecure-kbs-http".into(),
            ],
        ),
    ]
}

/// Runs `generate` for `pod` into a fresh directory; returns it and stdout.
fn generate(pod: &str, flags: &[String]) -> (tempfile::TempDir, String) {
    let out = tempfile::tempdir().unwrap();
    let yaml = fixtures().join(format!("{pod}.yaml"));
    let mut args = vec![
        "policy",
        "generate",
        yaml.to_str().unwrap(),
        "--output-dir",
        out.path().to_str().unwrap(),
    ];
    args.extend(flags.iter().map(String::as_str));
    let run = tsuba(&args);
    assert!(run.status.success(), "{pod}: {}", text(&run.stderr));
    (out, text(&run.stdout))
}

/// The value of `key=` in `key=value` lines.
fn value_of<'a>(output: &'a str, key: &str) -> &'a str {
    output
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {output}"))
}

#[test]
fn generated_files_match_the_checked_in_ones_and_are_reproducible() {
    let bless = std::env::var_os("TSUBA_BLESS").is_some();
    for (pod, flags) in cases() {
        let (first, stdout) = generate(pod, &flags);
        let (second, _) = generate(pod, &flags);
        let expected = fixtures().join("expected").join(pod);
        for file in FILES {
            let got = std::fs::read(first.path().join(file)).unwrap();
            // The same YAML twice gives the same bytes.
            assert_eq!(
                got,
                std::fs::read(second.path().join(file)).unwrap(),
                "{pod}/{file}"
            );
            if bless {
                std::fs::create_dir_all(&expected).unwrap();
                std::fs::write(expected.join(file), &got).unwrap();
            }
            let want = std::fs::read(expected.join(file)).unwrap_or_else(|e| {
                panic!("{pod}/{file}: {e}; run with TSUBA_BLESS=1 to write it")
            });
            assert!(
                got == want,
                "{pod}/{file} differs from the checked-in file; if intended, run with TSUBA_BLESS=1\n{}",
                text(&got)
            );
        }

        // The annotation is the document, gzip-compressed then base64.
        let initdata = std::fs::read(first.path().join("initdata.toml")).unwrap();
        let annotation = std::fs::read_to_string(first.path().join("annotation.txt")).unwrap();
        let gz = base64::engine::general_purpose::STANDARD
            .decode(annotation.trim_end())
            .unwrap();
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, initdata, "{pod}");

        // The printed digests are sha384 over the document's bytes, cut to each field.
        let digest = hex::encode(Sha384::digest(&initdata));
        assert_eq!(value_of(&stdout, "host_data"), &digest[..64], "{pod}");
        assert_eq!(value_of(&stdout, "mr_config_id"), digest, "{pod}");
        let reference = std::fs::read_to_string(first.path().join("reference-values.txt")).unwrap();
        assert_eq!(value_of(&reference, "host_data"), &digest[..64]);
        assert_eq!(value_of(&reference, "algorithm"), "sha384");

        // The policy in the document is the policy file.
        let policy = std::fs::read_to_string(first.path().join("policy.rego")).unwrap();
        assert!(policy.starts_with("package agent_policy\n"));
        let doc = tsuba_policy::Initdata::from_bytes(&initdata).unwrap();
        assert_eq!(doc.get("policy.rego"), Some(policy.as_str()), "{pod}");
    }
}

#[test]
fn stdout_without_output_dir_carries_the_annotation_of_the_same_document() {
    let yaml = fixtures().join("simple.yaml");
    let run = tsuba(&["policy", "generate", yaml.to_str().unwrap()]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let stdout = text(&run.stdout);
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    let expected = fixtures().join("expected/simple");
    let annotation = std::fs::read_to_string(expected.join("annotation.txt")).unwrap();
    assert_eq!(
        value_of(&stdout, "io.katacontainers.config.runtime.cc_init_data"),
        annotation.trim_end()
    );
    let initdata = std::fs::read(expected.join("initdata.toml")).unwrap();
    let digest = hex::encode(Sha384::digest(&initdata));
    assert_eq!(value_of(&stdout, "host_data"), &digest[..64]);

    // Another algorithm is another document, and sha256 is zero-padded into MRCONFIGID.
    let run = tsuba(&[
        "policy",
        "generate",
        yaml.to_str().unwrap(),
        "--algorithm",
        "sha256",
    ]);
    let stdout = text(&run.stdout);
    assert_ne!(value_of(&stdout, "host_data"), &digest[..64]);
    assert!(value_of(&stdout, "mr_config_id").ends_with(&"0".repeat(32)));
}

/// A CreateContainer input as the agent builds it from the spec `ctr run` sends (containerd's
/// defaults: mounts, namespaces, capabilities), for one container of a pod.
struct Spec {
    name: Option<&'static str>,
    image: &'static str,
    args: Vec<&'static str>,
    env: Vec<&'static str>,
    cwd: &'static str,
    uid: u32,
    caps: Vec<&'static str>,
    no_new_privileges: bool,
    seccomp: bool,
}

impl Spec {
    fn ctr(image: &'static str) -> Self {
        Self {
            name: None,
            image,
            args: vec![],
            env: vec![PATH_ENV],
            cwd: "/",
            uid: 0,
            caps: CTR_CAPS.to_vec(),
            no_new_privileges: true,
            seccomp: false,
        }
    }

    fn input(&self) -> Value {
        let mut oci = json!({
            "ociVersion": "1.1.0",
            "process": {
                "user": {"uid": self.uid, "gid": 0},
                "args": self.args,
                "env": self.env,
                "cwd": self.cwd,
                "capabilities": {
                    "bounding": self.caps, "effective": self.caps, "permitted": self.caps
                },
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                "noNewPrivileges": self.no_new_privileges
            },
            "root": {"path": "rootfs"},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc",
                 "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                 "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                 "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
                {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                 "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                 "options": ["nosuid", "noexec", "nodev", "ro"]},
                {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}
            ],
            "linux": {
                "resources": {"devices": [{"allow": false, "access": "rwm"}]},
                "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                               {"type": "mount"}, {"type": "network"}],
                "maskedPaths": ["/proc/kcore", "/sys/firmware"],
                "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"]
            }
        });
        if let Some(name) = self.name {
            oci["annotations"] = json!({"io.kubernetes.cri.container-name": name});
        }
        if self.seccomp {
            oci["linux"]["seccomp"] = json!({
                "defaultAction": "SCMP_ACT_ERRNO",
                "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [{"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"}]
            });
        }
        json!({"container_id": "c1", "sandbox_id": "pod", "image": self.image, "oci": oci})
    }
}

/// `tsuba policy test` of one request against `policy`: (allowed, stdout).
fn decide(policy: &Path, request: &str, input: Value) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("request.json");
    std::fs::write(
        &path,
        serde_json::to_vec(&json!({"request": request, "input": input})).unwrap(),
    )
    .unwrap();
    let run = tsuba(&[
        "policy",
        "test",
        "--policy",
        policy.to_str().unwrap(),
        "--request",
        path.to_str().unwrap(),
    ]);
    let stdout = text(&run.stdout);
    match run.status.code() {
        Some(0) => assert_eq!(stdout, "allowed\n"),
        Some(1) => assert!(
            stdout.starts_with(&format!("refused by rule {request}\n")),
            "{stdout}{}",
            text(&run.stderr)
        ),
        other => panic!("exit {other:?}: {}", text(&run.stderr)),
    }
    (run.status.success(), stdout)
}

fn expected(pod: &str, file: &str) -> PathBuf {
    fixtures().join("expected").join(pod).join(file)
}

#[test]
fn the_simple_pod_admits_its_ctr_spec_and_nothing_else() {
    let policy = expected("simple", "policy.rego");
    // The image's own entrypoint: ctr sends no args, the agent takes the image's.
    let (ok, out) = decide(
        &policy,
        "CreateContainerRequest",
        Spec::ctr(SIMPLE_IMAGE).input(),
    );
    assert!(ok, "{out}");
    // The initdata document decides the same way as its policy.
    let (ok, _) = decide(
        &expected("simple", "initdata.toml"),
        "CreateContainerRequest",
        Spec::ctr(SIMPLE_IMAGE).input(),
    );
    assert!(ok);

    let mut shell = Spec::ctr(SIMPLE_IMAGE);
    shell.args = vec!["/bin/sh"];
    let (ok, out) = decide(&policy, "CreateContainerRequest", shell.input());
    assert!(!ok);
    assert!(
        out.contains("CreateContainerRequest: command [\"/bin/sh\"] is not the policy's []"),
        "{out}"
    );

    let mut other = Spec::ctr(SIMPLE_IMAGE);
    other.image = SERVER_IMAGE;
    let (ok, out) = decide(&policy, "CreateContainerRequest", other.input());
    assert!(!ok);
    assert!(
        out.contains(&format!(
            "CreateContainerRequest: image {SERVER_IMAGE} is not allowed by the policy"
        )),
        "{out}"
    );

    // No exec at all, stdin closed, output readable.
    let exec = json!({"container_id": "c1", "exec_id": "e1",
                      "container": {"name": "", "image": SIMPLE_IMAGE},
                      "process": {"args": ["ls"]}});
    let (ok, out) = decide(&policy, "ExecProcessRequest", exec);
    assert!(!ok);
    assert!(
        out.contains("ExecProcessRequest: exec of [\"ls\"] is not allowed by the policy"),
        "{out}"
    );
    let (ok, _) = decide(&policy, "WriteStreamRequest", json!({"stream": "stdin"}));
    assert!(!ok);
    let (ok, _) = decide(&policy, "ReadStreamRequest", json!({"stream": "stderr"}));
    assert!(ok);
}

fn server() -> Spec {
    Spec {
        name: Some("server"),
        image: SERVER_IMAGE,
        args: vec!["/bin/server", "--listen", ":8080", "--mode", "$(date)"],
        env: vec![PATH_ENV, "MODE=production", "EMPTY=", "HOSTNAME=web"],
        cwd: "/srv",
        uid: 1000,
        caps: vec!["CAP_NET_BIND_SERVICE"],
        no_new_privileges: true,
        seccomp: true,
    }
}

#[test]
fn the_two_container_pod_pins_command_env_caps_user_seccomp_and_exec() {
    let policy = expected("two-containers", "policy.rego");
    let (ok, out) = decide(&policy, "CreateContainerRequest", server().input());
    assert!(ok, "{out}");

    let mut sidecar = Spec::ctr(SIDECAR_IMAGE);
    sidecar.name = Some("sidecar");
    sidecar.args = vec!["sh", "-c", "while true; do sleep 60; done"];
    sidecar.env = vec![PATH_ENV, "TERM=xterm"];
    sidecar.seccomp = true;
    sidecar.caps = CTR_CAPS
        .iter()
        .copied()
        .filter(|c| *c != "CAP_NET_RAW" && *c != "CAP_MKNOD")
        .chain(["CAP_SYS_PTRACE"])
        .collect();
    let (ok, out) = decide(&policy, "CreateContainerRequest", sidecar.input());
    assert!(ok, "{out}");

    let refused = |spec: Spec, reason: &str| {
        let (ok, out) = decide(&policy, "CreateContainerRequest", spec.input());
        assert!(!ok && out.contains(reason), "expected {reason:?} in {out}");
    };
    let mut s = server();
    s.args = vec!["/bin/server", "--listen", ":9090", "--mode", "$(date)"];
    refused(
        s,
        "CreateContainerRequest: command [\"/bin/server\", \"--listen\", \":9090\"",
    );
    let mut s = server();
    s.env.push("LD_PRELOAD=/tmp/evil.so");
    refused(
        s,
        "CreateContainerRequest: environment variable LD_PRELOAD is not allowed by the policy",
    );
    let mut s = server();
    s.env[1] = "MODE=debug";
    refused(
        s,
        "CreateContainerRequest: environment variable MODE is not allowed by the policy",
    );
    let mut s = server();
    s.caps.push("CAP_SYS_ADMIN");
    refused(
        s,
        "CreateContainerRequest: capability CAP_SYS_ADMIN is not allowed by the policy",
    );
    let mut s = server();
    s.uid = 0;
    refused(s, "CreateContainerRequest: user 0 is not the policy's 1000");
    let mut s = server();
    s.seccomp = false;
    refused(
        s,
        "CreateContainerRequest: the policy requires a seccomp profile",
    );
    let mut s = server();
    s.no_new_privileges = false;
    refused(
        s,
        "CreateContainerRequest: the policy requires noNewPrivileges",
    );
    let mut s = server();
    s.cwd = "/";
    refused(
        s,
        "CreateContainerRequest: working directory / is not the policy's /srv",
    );
    // The sidecar's name with the server's spec: compared with the sidecar's entry.
    let mut s = server();
    s.name = Some("sidecar");
    refused(
        s,
        "is not the policy's registry.example:5000/sidecar@sha256:",
    );

    let exec = |name: &str, image: &str, args: Value| {
        json!({"container_id": "c1", "exec_id": "e1",
               "container": {"name": name, "image": image},
               "process": {"args": args}})
    };
    // The readiness probe, and the annotation's command for the sidecar.
    assert!(
        decide(
            &policy,
            "ExecProcessRequest",
            exec("server", SERVER_IMAGE, json!(["/bin/server", "--check"]))
        )
        .0
    );
    assert!(
        decide(
            &policy,
            "ExecProcessRequest",
            exec("sidecar", SIDECAR_IMAGE, json!(["cat", "/etc/hostname"]))
        )
        .0
    );
    let (ok, out) = decide(
        &policy,
        "ExecProcessRequest",
        exec("server", SERVER_IMAGE, json!(["cat", "/etc/hostname"])),
    );
    assert!(!ok);
    assert!(
        out.contains(
            "ExecProcessRequest: exec of [\"cat\", \"/etc/hostname\"] is not allowed by the policy"
        ),
        "{out}"
    );
    // --no-read-stderr.
    let (ok, out) = decide(&policy, "ReadStreamRequest", json!({"stream": "stderr"}));
    assert!(!ok);
    assert!(
        out.contains("reading stderr is switched off by the policy"),
        "{out}"
    );
    assert!(decide(&policy, "ReadStreamRequest", json!({"stream": "stdout"})).0);
}

#[test]
fn the_signed_pod_allows_its_repository_by_any_tag_through_oci_spec_shortcut() {
    let initdata = expected("signed", "initdata.toml");
    let dir = tempfile::tempdir().unwrap();
    let run_spec = |image: &str, args: Vec<&'static str>| {
        let mut spec = Spec::ctr("unused");
        spec.args = args;
        let path = dir.path().join("config.json");
        std::fs::write(&path, serde_json::to_vec(&spec.input()["oci"]).unwrap()).unwrap();
        tsuba(&[
            "policy",
            "test",
            "--policy",
            initdata.to_str().unwrap(),
            "--oci-spec",
            path.to_str().unwrap(),
            "--image",
            image,
        ])
    };
    for image in [
        "registry.example:5000/signed:v1",
        "registry.example:5000/signed:v2",
        "registry.example:5000/signed@sha256:0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let run = run_spec(image, vec!["/app"]);
        assert!(run.status.success(), "{image}: {}", text(&run.stdout));
        assert_eq!(text(&run.stdout), "allowed\n");
    }
    let run = run_spec("registry.example:5000/unsigned:v1", vec!["/app"]);
    assert_eq!(run.status.code(), Some(1));
    assert!(
        text(&run.stdout).contains(
            "CreateContainerRequest: image registry.example:5000/unsigned:v1 is not allowed"
        ),
        "{}",
        text(&run.stdout)
    );
    let run = run_spec("registry.example:5000/signed:v1", vec!["/bin/sh"]);
    assert_eq!(run.status.code(), Some(1));
    assert!(text(&run.stdout).contains("command [\"/bin/sh\"] is not the policy's [\"/app\"]"));
}

/// Runs `generate` that must fail; returns stderr, and checks that nothing was written.
fn refused(yaml: &Path, flags: &[&str]) -> String {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("out");
    let mut args = vec![
        "policy",
        "generate",
        yaml.to_str().unwrap(),
        "--output-dir",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(flags);
    let run = tsuba(&args);
    assert_eq!(run.status.code(), Some(1), "{}", text(&run.stdout));
    assert!(run.stdout.is_empty(), "{}", text(&run.stdout));
    assert!(!dir.exists(), "output written for a refused pod");
    text(&run.stderr)
}

#[test]
fn refuses_pods_it_cannot_express_and_says_what_to_change() {
    for (file, expect) in [
        (
            "refuse-privileged.yaml",
            "container root: privileged: true gives the container the whole pod VM",
        ),
        (
            "refuse-host-network.yaml",
            "the pod sets hostNetwork: true: the container would share the pod VM's network namespace",
        ),
        (
            "refuse-args-without-command.yaml",
            "container app: `args` without `command`",
        ),
        (
            "refuse-value-from.yaml",
            "container app: variable PASSWORD uses valueFrom, which is not supported yet",
        ),
        (
            "refuse-volume-mounts.yaml",
            "container app: volume data is not supported yet",
        ),
        (
            "refuse-deployment.yaml",
            "the YAML is a Deployment of apiVersion apps/v1, not a v1 Pod",
        ),
    ] {
        let stderr = refused(&fixtures().join(file), &[]);
        assert!(stderr.contains(expect), "{file}: {stderr}");
    }
}

#[test]
fn refuses_unpinned_images_it_cannot_resolve_or_trust() {
    let signed = fixtures().join("signed.yaml");
    let stderr = refused(&signed, &["--offline"]);
    assert!(
        stderr.contains(
            "image registry.example:5000/signed:v1 is not pinned by digest and --offline is given"
        ) && stderr.contains("--signed-image registry.example:5000/signed"),
        "{stderr}"
    );
    // Another repository does not cover it.
    let stderr = refused(
        &signed,
        &[
            "--offline",
            "--signed-image",
            "registry.example:5000/other",
            "--image-policy",
            "kbs:///default/security-policy/test",
        ],
    );
    assert!(stderr.contains("is not pinned by digest"), "{stderr}");
    // Signed without a signature policy would allow the whole repository unchecked.
    let stderr = refused(
        &signed,
        &[
            "--offline",
            "--signed-image",
            "registry.example:5000/signed",
        ],
    );
    assert!(stderr.contains("no --image-policy is given"), "{stderr}");

    // A registry that cannot be reached (nothing listens on port 1): the same two options.
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("pod.yaml");
    std::fs::write(
        &yaml,
        "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: app\n    image: 127.0.0.1:1/app:1\n",
    )
    .unwrap();
    let stderr = refused(&yaml, &["--plain-http-registry", "127.0.0.1:1"]);
    assert!(
        stderr.contains(
            "image 127.0.0.1:1/app:1 is not pinned by digest and the registry could not be asked"
        ) && stderr.contains("--signed-image 127.0.0.1:1/app"),
        "{stderr}"
    );
}

#[test]
fn refuses_oversized_yaml_and_bad_flags() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    let simple = std::fs::read_to_string(fixtures().join("simple.yaml")).unwrap();
    std::fs::write(&big, format!("{simple}#{}\n", "x".repeat(1024 * 1024))).unwrap();
    let stderr = refused(&big, &[]);
    assert!(stderr.contains("is larger than 1048576 bytes"), "{stderr}");

    let simple = fixtures().join("simple.yaml");
    for (flags, expect) in [
        (
            &["--kbs-url", "http://kbs.example"][..],
            "is plain HTTP: give the broker's https:// URL",
        ),
        (
            &["--kbs-url", "https://kbs.example", "--kbs-pin", "sha256:12"][..],
            "--kbs-pin sha256:12 is not sha256:<64 hex digits>",
        ),
        (
            &["--image-policy", "https://policy.example/p.json"][..],
            "is not a broker resource: give kbs:///",
        ),
    ] {
        let stderr = refused(&simple, flags);
        assert!(stderr.contains(expect), "{flags:?}: {stderr}");
    }
}

#[test]
fn permissive_is_loud_and_allows_what_the_pod_policy_refuses() {
    let out = tempfile::tempdir().unwrap();
    let yaml = fixtures().join("simple.yaml");
    let run = tsuba(&[
        "policy",
        "generate",
        yaml.to_str().unwrap(),
        "--permissive",
        "--output-dir",
        out.path().to_str().unwrap(),
    ]);
    assert!(run.status.success());
    assert!(text(&run.stderr).contains("WARNING: --permissive"));
    let mut shell = Spec::ctr(SERVER_IMAGE);
    shell.args = vec!["/bin/sh"];
    let (ok, _) = decide(
        &out.path().join("initdata.toml"),
        "CreateContainerRequest",
        shell.input(),
    );
    assert!(ok);
}

#[test]
fn policy_test_refuses_malformed_requests() {
    let dir = tempfile::tempdir().unwrap();
    let policy = expected("simple", "policy.rego");
    let path = dir.path().join("request.json");
    std::fs::write(&path, r#"{"request": "FormatDiskRequest", "input": {}}"#).unwrap();
    let run = tsuba(&[
        "policy",
        "test",
        "--policy",
        policy.to_str().unwrap(),
        "--request",
        path.to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(1));
    assert!(run.stdout.is_empty());
    let stderr = text(&run.stderr);
    assert!(
        stderr.contains(
            "FormatDiskRequest is not an agent request; give one of CreateContainerRequest"
        ),
        "{stderr}"
    );
    std::fs::write(&path, r#"{"input": {}}"#).unwrap();
    let run = tsuba(&[
        "policy",
        "test",
        "--policy",
        policy.to_str().unwrap(),
        "--request",
        path.to_str().unwrap(),
    ]);
    assert!(text(&run.stderr).contains("is not {\"request\""));
    // A policy that is not Rego.
    let bad = dir.path().join("bad.rego");
    std::fs::write(&bad, "package other\n").unwrap();
    std::fs::write(
        &path,
        r#"{"request": "CreateContainerRequest", "input": {}}"#,
    )
    .unwrap();
    let run = tsuba(&[
        "policy",
        "test",
        "--policy",
        bad.to_str().unwrap(),
        "--request",
        path.to_str().unwrap(),
    ]);
    assert!(
        text(&run.stderr).contains("an agent policy is package agent_policy"),
        "{}",
        text(&run.stderr)
    );
}

#[test]
fn an_image_by_tag_is_pinned_to_the_digest_its_registry_serves() {
    let t = tempfile::tempdir().unwrap();
    let registry = encrypt_support::Registry::start(None);
    encrypt_support::source_image(&t.path().join("src"), t.path());
    encrypt_support::run_ok(
        Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:v1", t.path().join("src").display()))
            .arg(format!("docker://{}/app:v1", registry.addr)),
    );
    let digest = encrypt_support::run_ok(
        Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
            .arg(format!("docker://{}/app:v1", registry.addr)),
    );
    let pinned = format!("{}/app@{}", registry.addr, digest.trim());
    let yaml = t.path().join("pod.yaml");
    std::fs::write(
        &yaml,
        format!(
            "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: app\n    image: {}/app:v1\n    command: [/app/start]\n",
            registry.addr
        ),
    )
    .unwrap();
    let out = t.path().join("out");
    let run = tsuba(&[
        "policy",
        "generate",
        yaml.to_str().unwrap(),
        "--plain-http-registry",
        &registry.addr,
        "--output-dir",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    // The user is told that the pod must name the pinned reference.
    assert!(
        text(&run.stderr).contains(&format!(
            "image {}/app:v1 is {pinned}: the policy allows only that reference",
            registry.addr
        )),
        "{}",
        text(&run.stderr)
    );
    let policy = out.join("policy.rego");
    let mut spec = Spec::ctr("unused");
    spec.args = vec!["/app/start"];
    let mut input = spec.input();
    input["image"] = json!(pinned);
    assert!(decide(&policy, "CreateContainerRequest", input.clone()).0);
    input["image"] = json!(format!("{}/app:v1", registry.addr));
    let (ok, out) = decide(&policy, "CreateContainerRequest", input);
    assert!(!ok);
    assert!(out.contains("is not allowed by the policy"), "{out}");
}
