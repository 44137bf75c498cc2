//! The table of allowed and refused requests, with the refusal messages asserted.

use serde_json::{Value, json};

use super::*;

const IMAGE: &str = "registry.local:5000/app@sha256:1111111111111111111111111111111111111111111111111111111111111111";
const OTHER_DIGEST: &str = "registry.local:5000/app@sha256:2222222222222222222222222222222222222222222222222222222222222222";
const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const CAPS: [&str; 3] = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

fn mount(destination: &str, kind: &str, source: &str) -> MountPolicy {
    MountPolicy {
        destination: destination.into(),
        kind: kind.into(),
        source: source.into(),
    }
}

fn app() -> ContainerPolicy {
    ContainerPolicy {
        name: "app".into(),
        image: IMAGE.into(),
        signed: false,
        args: vec!["sh".into(), "-c".into(), "echo hi".into()],
        env: vec![PATH.into(), "MODE=prod".into()],
        env_any_value: vec!["HOSTNAME".into()],
        cwd: "/".into(),
        uid: Some(0),
        capabilities: CAPS.iter().map(|c| (*c).to_owned()).collect(),
        mounts: vec![
            mount("/proc", "proc", "proc"),
            mount("/dev", "tmpfs", "tmpfs"),
        ],
        seccomp_required: true,
        no_new_privileges: true,
        exec: vec![vec!["cat".into(), "/etc/hostname".into()]],
    }
}

fn data() -> PolicyData {
    PolicyData {
        containers: vec![app()],
        ..PolicyData::default()
    }
}

fn policy(data: &PolicyData) -> AgentPolicy {
    AgentPolicy::compile(&render_policy(data)).unwrap()
}

/// A request exactly as the policy allows it (CRI-named, as containerd's CRI sends it).
fn create() -> Value {
    json!({
        "container_id": "c1",
        "sandbox_id": "pod",
        "image": IMAGE,
        "oci": {
            "ociVersion": "1.1.0",
            "annotations": {"io.kubernetes.cri.container-name": "app"},
            "process": {
                "user": {"uid": 0, "gid": 0},
                "args": ["sh", "-c", "echo hi"],
                "env": [PATH, "MODE=prod", "HOSTNAME=pod-1"],
                "cwd": "/",
                "capabilities": {"bounding": CAPS, "effective": ["CAP_CHOWN"], "permitted": CAPS},
                "noNewPrivileges": true
            },
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid"]},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"}
            ],
            "linux": {
                "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                               {"type": "mount"}, {"type": "network"}],
                "seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": []}
            }
        }
    })
}

fn refusal(policy: &AgentPolicy, request: AgentRequest, input: &Value) -> String {
    policy.decide(request, input).unwrap_err().to_string()
}

#[test]
fn the_generated_shape_allows_exactly_the_listed_container() {
    let policy = policy(&data());
    policy
        .decide(AgentRequest::CreateContainer, &create())
        .unwrap();
    // Without CRI, the container is found by its image.
    let mut unnamed = create();
    unnamed["oci"]["annotations"] = json!({});
    policy
        .decide(AgentRequest::CreateContainer, &unnamed)
        .unwrap();
    policy
        .decide(AgentRequest::PullImage, &json!({"image": IMAGE}))
        .unwrap();
    for harmless in [
        AgentRequest::StartContainer,
        AgentRequest::SignalProcess,
        AgentRequest::WaitProcess,
        AgentRequest::CloseStdin,
        AgentRequest::StatsContainer,
        AgentRequest::RemoveContainer,
        AgentRequest::GetOomEvent,
        AgentRequest::DiagnosticReport,
    ] {
        policy
            .decide(harmless, &json!({"container_id": "c1"}))
            .unwrap();
    }
}

/// Each row changes one thing in an allowed request, and names the message it must get.
#[test]
fn refused_requests_name_the_rule_and_say_why() {
    let policy = policy(&data());
    type Edit = fn(&mut Value);
    let rows: [(&str, Edit, &str); 12] = [
        (
            "another image digest",
            |r| r["image"] = json!(OTHER_DIGEST),
            "image registry.local:5000/app@sha256:2222222222222222222222222222222222222222222222222222222222222222 is not the policy's registry.local:5000/app@sha256:1111",
        ),
        (
            "an extra env var",
            |r| {
                r["oci"]["process"]["env"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("RUST_LOG=trace"))
            },
            "environment variable RUST_LOG is not allowed by the policy",
        ),
        (
            "a changed env value",
            |r| r["oci"]["process"]["env"][1] = json!("MODE=debug"),
            "environment variable MODE is not allowed by the policy",
        ),
        (
            "a changed command",
            |r| r["oci"]["process"]["args"][2] = json!("cat /proc/self/environ"),
            "command [\"sh\", \"-c\", \"cat /proc/self/environ\"] is not the policy's [\"sh\", \"-c\", \"echo hi\"]",
        ),
        (
            "an added capability",
            |r| {
                r["oci"]["process"]["capabilities"]["effective"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("CAP_SYS_PTRACE"))
            },
            "capability CAP_SYS_PTRACE is not allowed by the policy",
        ),
        (
            "a privileged container (every capability and the host's devices)",
            |r| {
                r["oci"]["process"]["capabilities"]["bounding"] =
                    json!(["CAP_SYS_ADMIN", "CAP_CHOWN"]);
                r["oci"]["linux"]["devices"] = json!([{"path": "/dev/sda", "type": "b"}]);
            },
            "capability CAP_SYS_ADMIN is not allowed by the policy",
        ),
        (
            "host network namespace",
            |r| {
                r["oci"]["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|n| n["type"] != "network")
            },
            "the container shares the pod VM's network namespace (host network)",
        ),
        (
            "host PID namespace (joined by path)",
            |r| {
                r["oci"]["linux"]["namespaces"][0] =
                    json!({"type": "pid", "path": "/proc/1/ns/pid"})
            },
            "the container shares the pod VM's pid namespace (host pid)",
        ),
        (
            "a host-path mount",
            |r| {
                r["oci"]["mounts"].as_array_mut().unwrap().push(json!({"destination": "/data", "type": "bind", "source": "/var/lib/secrets", "options": ["rbind"]}))
            },
            "mount of /var/lib/secrets on /data (type bind) is not allowed by the policy",
        ),
        (
            "no seccomp profile",
            |r| {
                r["oci"]["linux"]
                    .as_object_mut()
                    .unwrap()
                    .retain(|k, _| k != "seccomp")
            },
            "the policy requires a seccomp profile",
        ),
        (
            "privilege escalation",
            |r| r["oci"]["process"]["noNewPrivileges"] = json!(false),
            "the policy requires noNewPrivileges",
        ),
        (
            "another user",
            |r| r["oci"]["process"]["user"]["uid"] = json!(1000),
            "user 1000 is not the policy's 0",
        ),
    ];
    for (what, edit, message) in rows {
        let mut request = create();
        edit(&mut request);
        let got = refusal(&policy, AgentRequest::CreateContainer, &request);
        assert!(
            got.starts_with("refused by the agent policy (rule CreateContainerRequest): "),
            "{what}: {got}"
        );
        assert!(got.contains(message), "{what}: {got}");
    }
    // OCI's default devices are not host devices; the privileged row's device is.
    let mut request = create();
    request["oci"]["linux"]["devices"] =
        json!([{"path": "/dev/null", "type": "c"}, {"path": "/dev/tty", "type": "c"}]);
    policy
        .decide(AgentRequest::CreateContainer, &request)
        .unwrap();
    let mut request = create();
    request["oci"]["linux"]["devices"] = json!([{"path": "/dev/sda", "type": "b"}]);
    assert!(
        refusal(&policy, AgentRequest::CreateContainer, &request)
            .contains("device /dev/sda is not allowed")
    );
}

#[test]
fn an_unknown_container_or_image_is_refused_by_name() {
    let policy = policy(&data());
    let mut named = create();
    named["oci"]["annotations"]["io.kubernetes.cri.container-name"] = json!("debug");
    assert_eq!(
        refusal(&policy, AgentRequest::CreateContainer, &named),
        "refused by the agent policy (rule CreateContainerRequest): CreateContainerRequest: no container named debug in the policy"
    );
    let mut unnamed = create();
    unnamed["oci"]["annotations"] = json!({});
    unnamed["image"] = json!("registry.local:5000/other:1");
    assert!(
        refusal(&policy, AgentRequest::CreateContainer, &unnamed)
            .ends_with("image registry.local:5000/other:1 is not allowed by the policy")
    );
    assert!(
        refusal(
            &policy,
            AgentRequest::PullImage,
            &json!({"image": OTHER_DIGEST})
        )
        .contains("PullImageRequest: image registry.local:5000/app@sha256:2222")
    );
}

#[test]
fn exec_is_refused_unless_the_policy_lists_the_command() {
    let policy = policy(&data());
    let exec = |args: Value, name: &str| {
        json!({"container_id": "c1", "exec_id": "e1", "process": {"args": args, "cwd": "/"},
               "container": {"name": name, "image": IMAGE}})
    };
    let shell = exec(json!(["sh"]), "app");
    assert_eq!(
        refusal(&policy, AgentRequest::ExecProcess, &shell),
        "refused by the agent policy (rule ExecProcessRequest): ExecProcessRequest: exec of [\"sh\"] is not allowed by the policy"
    );
    policy
        .decide(
            AgentRequest::ExecProcess,
            &exec(json!(["cat", "/etc/hostname"]), "app"),
        )
        .unwrap();
    // Listed for another container only: refused.
    let mut other = data();
    other.containers[0].exec.clear();
    let mut sidecar = app();
    sidecar.name = "sidecar".into();
    other.containers.push(sidecar);
    let other = super::AgentPolicy::compile(&render_policy(&other)).unwrap();
    assert!(
        other
            .decide(
                AgentRequest::ExecProcess,
                &exec(json!(["cat", "/etc/hostname"]), "app")
            )
            .is_err()
    );
    other
        .decide(
            AgentRequest::ExecProcess,
            &exec(json!(["cat", "/etc/hostname"]), "sidecar"),
        )
        .unwrap();
}

#[test]
fn stdio_is_readable_by_default_and_switchable() {
    let on = policy(&data());
    on.decide(
        AgentRequest::ReadStream,
        &json!({"container_id": "c1", "stream": "stdout"}),
    )
    .unwrap();
    on.decide(
        AgentRequest::ReadStream,
        &json!({"container_id": "c1", "stream": "stderr"}),
    )
    .unwrap();
    assert_eq!(
        refusal(
            &on,
            AgentRequest::WriteStream,
            &json!({"container_id": "c1", "stream": "stdin"})
        ),
        "refused by the agent policy (rule WriteStreamRequest): WriteStreamRequest: writing to stdin is switched off by the policy (write_stdin)"
    );
    let off = policy(&PolicyData {
        read_stdout: false,
        ..data()
    });
    assert_eq!(
        refusal(
            &off,
            AgentRequest::ReadStream,
            &json!({"container_id": "c1", "stream": "stdout"})
        ),
        "refused by the agent policy (rule ReadStreamRequest): ReadStreamRequest: reading stdout is switched off by the policy (read_stdout)"
    );
    off.decide(
        AgentRequest::ReadStream,
        &json!({"container_id": "c1", "stream": "stderr"}),
    )
    .unwrap();
}

#[test]
fn absent_or_null_arguments_mean_the_image_s_own_command() {
    let mut data = data();
    data.containers[0].args.clear();
    let policy = policy(&data);
    let mut request = create();
    request["oci"]["process"]["args"] = json!(null);
    policy
        .decide(AgentRequest::CreateContainer, &request)
        .unwrap();
    request["oci"]["process"]
        .as_object_mut()
        .unwrap()
        .remove("args");
    policy
        .decide(AgentRequest::CreateContainer, &request)
        .unwrap();
    request["oci"]["process"]["args"] = json!(["sh"]);
    assert!(
        refusal(&policy, AgentRequest::CreateContainer, &request)
            .contains("command [\"sh\"] is not the policy's []")
    );
}

#[test]
fn a_signed_image_is_allowed_by_repository_with_any_tag_or_digest() {
    let mut signed = app();
    signed.signed = true;
    signed.image = "registry.local:5000/app:1.0".into();
    let policy = policy(&PolicyData {
        containers: vec![signed],
        ..PolicyData::default()
    });
    for image in [
        "registry.local:5000/app:2.0",
        OTHER_DIGEST,
        "registry.local:5000/app",
    ] {
        policy
            .decide(AgentRequest::PullImage, &json!({"image": image}))
            .unwrap_or_else(|e| panic!("{image}: {e}"));
    }
    for image in [
        "registry.local:5000/app2:1.0",
        "evil.example/app:1.0",
        "registry.local:5000/x/app:1.0",
    ] {
        assert!(
            policy
                .decide(AgentRequest::PullImage, &json!({"image": image}))
                .is_err(),
            "{image}"
        );
    }
}

#[test]
fn the_default_policy_runs_nothing_and_the_permissive_one_everything() {
    let default = AgentPolicy::compile(&default_policy_text()).unwrap();
    assert!(
        refusal(&default, AgentRequest::CreateContainer, &create())
            .contains("no container named app")
    );
    assert!(
        default
            .decide(AgentRequest::PullImage, &json!({"image": IMAGE}))
            .is_err()
    );
    let permissive = AgentPolicy::compile(PERMISSIVE_POLICY).unwrap();
    let mut anything = create();
    anything["image"] = json!("evil.example/x:1");
    for request in AgentRequest::ALL {
        permissive.decide(request, &anything).unwrap();
    }
}

#[test]
fn malformed_policies_and_undefined_rules_fail_closed() {
    assert!(matches!(
        AgentPolicy::compile("package agent_policy\nallow if {"),
        Err(AgentPolicyError::Compile(_))
    ));
    assert!(matches!(
        AgentPolicy::compile("package policy\ndefault allow := true\n"),
        Err(AgentPolicyError::Compile(m)) if m.contains("package agent_policy")
    ));
    let huge = format!(
        "package agent_policy\n# {}\n",
        "x".repeat(MAX_AGENT_POLICY_LEN)
    );
    assert!(matches!(
        AgentPolicy::compile(&huge),
        Err(AgentPolicyError::TooLarge { .. })
    ));
    // A policy that defines only one rule refuses the others, saying so.
    let partial =
        AgentPolicy::compile("package agent_policy\ndefault StartContainerRequest := true\n")
            .unwrap();
    assert_eq!(
        refusal(&partial, AgentRequest::ExecProcess, &json!({})),
        "refused by the agent policy (rule ExecProcessRequest): the policy defines no rule ExecProcessRequest (an undefined rule refuses)"
    );
    // A rule that is not a boolean refuses.
    let odd = AgentPolicy::compile("package agent_policy\ndefault StartContainerRequest := true\nExecProcessRequest := \"yes\"\n").unwrap();
    assert!(odd.decide(AgentRequest::ExecProcess, &json!({})).is_err());
    // Garbage input shapes refuse rather than err open.
    let policy = policy(&data());
    for junk in [
        json!(null),
        json!([]),
        json!({"oci": 5, "image": 3}),
        json!({"oci": {"process": "x"}}),
    ] {
        assert!(
            policy.decide(AgentRequest::CreateContainer, &junk).is_err(),
            "{junk}"
        );
    }
}

#[test]
fn rendering_is_deterministic_and_round_trips_the_data() {
    let a = render_policy(&data());
    assert_eq!(a, render_policy(&data()));
    let json_start = a.find("policy_data := ").unwrap() + "policy_data := ".len();
    let json_end = a.find("\n}\n").unwrap() + 2;
    let back: PolicyData = serde_json::from_str(&a[json_start..json_end]).unwrap();
    assert_eq!(back, data());
    assert_eq!(
        AgentRequest::from_rule("GetOOMEventRequest"),
        Some(AgentRequest::GetOomEvent)
    );
    assert_eq!(AgentRequest::from_rule("Nope"), None);
}
