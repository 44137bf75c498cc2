//! Agent policy decisions for the generated policy of a five-container pod
//! (docs/performance.md, "Agent policy"): the heaviest request (CreateContainer with a full OCI
//! spec, matched against the fifth container), a refused one (an exec, whose reasons are
//! evaluated too) and the most frequent one (a stdout read). Before criterion's estimates, each
//! is timed 2,000 times one by one for its p50 and p99, the figures the goal is about.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use tsuba_policy::containerd::{CAPABILITIES as CAPS, MOUNTS, PATH};
use tsuba_policy::{
    AgentPolicy, AgentRequest, ContainerPolicy, MountPolicy, PolicyData, render_policy,
};

fn image(n: usize) -> String {
    format!(
        "registry.example:5000/app{n}@sha256:{}",
        format!("{n:x}").repeat(64)
    )
}

fn env(n: usize) -> Vec<String> {
    let mut env = vec![PATH.to_owned()];
    env.extend((0..5).map(|i| format!("SETTING_{i}=value-{n}-{i}")));
    env
}

fn pod() -> PolicyData {
    let containers = (1..=5)
        .map(|n| ContainerPolicy {
            name: format!("c{n}"),
            image: image(n),
            signed: false,
            args: vec!["/app".into(), "--serve".into(), format!("--id={n}")],
            env: env(n),
            env_any_value: vec!["HOSTNAME".into(), "KUBERNETES_SERVICE_HOST".into()],
            cwd: "/".into(),
            uid: Some(1000),
            capabilities: CAPS.iter().map(|c| (*c).to_owned()).collect(),
            mounts: MOUNTS
                .iter()
                .map(|(d, k, s)| MountPolicy {
                    destination: (*d).into(),
                    kind: (*k).into(),
                    source: (*s).into(),
                })
                .collect(),
            seccomp_required: true,
            no_new_privileges: true,
            exec: vec![vec!["/app".into(), "--health".into()]],
        })
        .collect();
    PolicyData {
        containers,
        ..PolicyData::default()
    }
}

fn create(n: usize) -> Value {
    let mounts: Vec<Value> = MOUNTS
        .iter()
        .map(|(d, k, s)| json!({"destination": d, "type": k, "source": s, "options": ["nosuid"]}))
        .collect();
    let mut env = env(n);
    env.push("HOSTNAME=pod-1".into());
    json!({
        "container_id": format!("c{n}"),
        "sandbox_id": "pod",
        "image": image(n),
        "oci": {
            "ociVersion": "1.1.0",
            "annotations": {"io.kubernetes.cri.container-name": format!("c{n}")},
            "process": {
                "user": {"uid": 1000, "gid": 1000},
                "args": ["/app", "--serve", format!("--id={n}")],
                "env": env,
                "cwd": "/",
                "capabilities": {"bounding": CAPS, "effective": CAPS, "permitted": CAPS},
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                "noNewPrivileges": true
            },
            "mounts": mounts,
            "linux": {
                "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                               {"type": "mount"}, {"type": "network"}],
                "seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
                            "syscalls": [{"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"}]},
                "maskedPaths": ["/proc/kcore"],
                "readonlyPaths": ["/proc/sys"]
            }
        }
    })
}

fn percentiles(policy: &AgentPolicy, request: AgentRequest, input: &Value, allowed: bool) {
    let mut samples: Vec<Duration> = (0..2000)
        .map(|_| {
            let start = Instant::now();
            let decision = policy.decide(request, input);
            let took = start.elapsed();
            assert_eq!(decision.is_ok(), allowed, "{decision:?}");
            took
        })
        .collect();
    samples.sort();
    let at = |p: usize| samples[samples.len() * p / 100];
    #[allow(clippy::print_stderr, reason = "the bench's own figures")]
    {
        eprintln!(
            "{request} ({}): p50 {:?}, p99 {:?}",
            if allowed { "allowed" } else { "refused" },
            at(50),
            at(99)
        );
    }
}

fn bench(c: &mut Criterion) {
    let text = render_policy(&pod());
    let policy = AgentPolicy::compile(&text).expect("the generated policy compiles");
    let create = create(5);
    let exec = json!({"container_id": "c5", "exec_id": "e1",
                      "process": {"args": ["sh"], "cwd": "/"},
                      "container": {"name": "c5", "image": image(5)}});
    let read = json!({"container_id": "c5", "exec_id": "", "stream": "stdout"});
    percentiles(&policy, AgentRequest::CreateContainer, &create, true);
    percentiles(&policy, AgentRequest::ExecProcess, &exec, false);
    percentiles(&policy, AgentRequest::ReadStream, &read, true);
    let mut group = c.benchmark_group("agent_policy_5_containers");
    group.bench_function("compile", |b| b.iter(|| AgentPolicy::compile(&text)));
    group.bench_function("create_container_allowed", |b| {
        b.iter(|| policy.decide(AgentRequest::CreateContainer, &create))
    });
    group.bench_function("exec_refused", |b| {
        b.iter(|| policy.decide(AgentRequest::ExecProcess, &exec))
    });
    group.bench_function("read_stdout_allowed", |b| {
        b.iter(|| policy.decide(AgentRequest::ReadStream, &read))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
