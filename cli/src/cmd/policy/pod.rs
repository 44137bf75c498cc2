//! A Kubernetes Pod YAML turned into the agent policy's [`PolicyData`].
//!
//! Only what the policy pins is read; whatever the generator cannot express faithfully (host
//! namespaces, privileged containers, volumes, variables from other objects) is refused with a
//! message naming the field, so a policy never allows less or more than the pod asks for
//! without saying so. Image references are decided by the caller ([`PolicyImage`]), which may
//! need the registry.

use std::collections::BTreeMap;

use serde::Deserialize;
use tsuba_policy::{ContainerPolicy, MountPolicy, PolicyData};

/// The largest Pod YAML read.
pub(crate) const MAX_POD_YAML_LEN: usize = 1024 * 1024;

/// Pod annotation prefix for extra exec commands: `io.tsuba.policy/exec.<container-name>`
/// holds a JSON array of argv arrays.
pub(crate) const EXEC_ANNOTATION_PREFIX: &str = "io.tsuba.policy/exec.";

/// The variables the runtime sets with values the policy cannot know.
///
/// `HOSTNAME` comes from the CRI. kubelet injects the `kubernetes` service's variables
/// (`KUBERNETES_SERVICE_HOST`, `KUBERNETES_PORT_443_TCP`...) into every container, whatever
/// `enableServiceLinks` says (it only switches off the variables of the pod's own namespace's
/// other services, whose names cannot be known here: see [`Generated::warnings`]).
const RUNTIME_ENV: [&str; 9] = [
    "HOSTNAME",
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
    "KUBERNETES_SERVICE_PORT_HTTPS",
    "KUBERNETES_PORT",
    "KUBERNETES_PORT_443_TCP",
    "KUBERNETES_PORT_443_TCP_PROTO",
    "KUBERNETES_PORT_443_TCP_PORT",
    "KUBERNETES_PORT_443_TCP_ADDR",
];

/// A Pod YAML the generator cannot turn into a policy. Each message says what to change.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PodError {
    /// Larger than [`MAX_POD_YAML_LEN`].
    #[error("the Pod YAML is larger than {MAX_POD_YAML_LEN} bytes: give one Pod, not a bundle")]
    TooLarge,
    /// Not YAML of a Pod's shape.
    #[error("the Pod YAML does not parse: {0} (give one `apiVersion: v1`, `kind: Pod` document)")]
    Yaml(String),
    /// Another kind of object.
    #[error(
        "the YAML is a {kind} of apiVersion {api_version}, not a v1 Pod: give an \
         `apiVersion: v1`, `kind: Pod` document (for a workload such as a Deployment, its pod \
         template written out as a Pod)"
    )]
    NotAPod {
        /// The kind found.
        kind: String,
        /// The apiVersion found.
        api_version: String,
    },
    /// A pod-level setting that a confidential pod cannot have.
    #[error("the pod sets {field}: {why}; remove it to generate a policy")]
    PodSetting {
        /// The field.
        field: &'static str,
        /// Why it is refused.
        why: &'static str,
    },
    /// A container-level field that is refused.
    #[error("container {container}: {message}")]
    Container {
        /// The container's name.
        container: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// The pod has no container, or two with one name.
    #[error("{0}")]
    Containers(String),
    /// An `io.tsuba.policy/` annotation that is not understood.
    #[error("annotation {key}: {message}")]
    Annotation {
        /// The annotation's key.
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
}

fn container_error(container: &Container, message: impl Into<String>) -> PodError {
    PodError::Container {
        container: container.name.clone(),
        message: message.into(),
    }
}

#[derive(Deserialize)]
struct Header {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

/// The fields of a Pod that the generator reads (all others are ignored).
#[derive(Debug, Deserialize)]
pub(crate) struct Pod {
    #[serde(default)]
    metadata: Metadata,
    spec: PodSpec,
}

#[derive(Debug, Default, Deserialize)]
struct Metadata {
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    #[serde(default)]
    containers: Vec<Container>,
    #[serde(default)]
    init_containers: Vec<Container>,
    #[serde(default)]
    host_network: bool,
    // Kubernetes spells these two hostPID and hostIPC, not camelCase.
    #[serde(default, rename = "hostPID")]
    host_pid: bool,
    #[serde(default, rename = "hostIPC")]
    host_ipc: bool,
    #[serde(default)]
    share_process_namespace: bool,
    enable_service_links: Option<bool>,
    #[serde(default)]
    security_context: PodSecurityContext,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSecurityContext {
    run_as_user: Option<i64>,
    seccomp_profile: Option<SeccompProfile>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Container {
    name: String,
    #[serde(default)]
    image: String,
    command: Option<Vec<String>>,
    args: Option<Vec<String>>,
    #[serde(default)]
    working_dir: String,
    #[serde(default)]
    env: Vec<EnvVar>,
    #[serde(default)]
    env_from: Vec<serde_norway::Value>,
    #[serde(default)]
    volume_mounts: Vec<VolumeMount>,
    #[serde(default)]
    volume_devices: Vec<VolumeMount>,
    security_context: Option<SecurityContext>,
    liveness_probe: Option<Handler>,
    readiness_probe: Option<Handler>,
    startup_probe: Option<Handler>,
    lifecycle: Option<Lifecycle>,
    #[serde(default)]
    tty: bool,
    #[serde(default)]
    stdin: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvVar {
    name: String,
    value: Option<String>,
    value_from: Option<serde_norway::Value>,
}

#[derive(Debug, Deserialize)]
struct VolumeMount {
    name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecurityContext {
    privileged: Option<bool>,
    allow_privilege_escalation: Option<bool>,
    capabilities: Option<Capabilities>,
    run_as_user: Option<i64>,
    seccomp_profile: Option<SeccompProfile>,
}

#[derive(Debug, Default, Deserialize)]
struct Capabilities {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    drop: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct SeccompProfile {
    #[serde(rename = "type")]
    kind: String,
}

/// A probe or a lifecycle hook: only its `exec` form runs a command in the container.
#[derive(Debug, Deserialize)]
struct Handler {
    exec: Option<ExecAction>,
}

#[derive(Debug, Deserialize)]
struct ExecAction {
    #[serde(default)]
    command: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Lifecycle {
    post_start: Option<Handler>,
    pre_stop: Option<Handler>,
}

/// How the policy names one container's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PolicyImage {
    /// The reference the policy allows (`name@sha256:…`, or as given when signed).
    pub(crate) reference: String,
    /// The image signature policy in initdata covers the repository.
    pub(crate) signed: bool,
}

/// The stdio switches of the generated policy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stdio {
    /// The host may read stdout.
    pub(crate) read_stdout: bool,
    /// The host may read stderr.
    pub(crate) read_stderr: bool,
    /// The host may write stdin.
    pub(crate) write_stdin: bool,
}

/// The policy data, and what the user should know about it.
#[derive(Debug)]
pub(crate) struct Generated {
    /// The data for `render_policy`.
    pub(crate) data: PolicyData,
    /// Things the policy allows or refuses that the user may not expect.
    pub(crate) warnings: Vec<String>,
}

impl Pod {
    /// Parses a Pod YAML (bounded; `apiVersion: v1`, `kind: Pod`).
    pub(crate) fn parse(yaml: &[u8]) -> Result<Self, PodError> {
        if yaml.len() > MAX_POD_YAML_LEN {
            return Err(PodError::TooLarge);
        }
        let header: Header =
            serde_norway::from_slice(yaml).map_err(|e| PodError::Yaml(e.to_string()))?;
        if header.kind != "Pod" || header.api_version != "v1" {
            return Err(PodError::NotAPod {
                kind: if header.kind.is_empty() {
                    "document without `kind`".to_owned()
                } else {
                    header.kind
                },
                api_version: if header.api_version.is_empty() {
                    "no apiVersion".to_owned()
                } else {
                    header.api_version
                },
            });
        }
        serde_norway::from_slice(yaml).map_err(|e| PodError::Yaml(e.to_string()))
    }

    /// Init containers then containers, as the kubelet creates them.
    fn all_containers(&self) -> impl Iterator<Item = &Container> {
        self.spec
            .init_containers
            .iter()
            .chain(&self.spec.containers)
    }

    /// Each container's image reference, as written, in creation order.
    pub(crate) fn images(&self) -> Vec<(String, String)> {
        self.all_containers()
            .map(|c| (c.name.clone(), c.image.clone()))
            .collect()
    }

    /// The policy data that allows exactly this pod. `images` maps each reference as written
    /// (see [`Pod::images`]) to the policy's.
    pub(crate) fn policy_data(
        &self,
        images: &BTreeMap<String, PolicyImage>,
        stdio: Stdio,
    ) -> Result<Generated, PodError> {
        let spec = &self.spec;
        for (set, field, why) in [
            (
                spec.host_network,
                "hostNetwork: true",
                "the container would share the pod VM's network namespace",
            ),
            (
                spec.host_pid,
                "hostPID: true",
                "the container would see every process of the pod VM",
            ),
            (
                spec.host_ipc,
                "hostIPC: true",
                "the container would share the pod VM's IPC namespace",
            ),
            (
                spec.share_process_namespace,
                "shareProcessNamespace: true",
                "the containers would join one PID namespace, which the policy refuses",
            ),
        ] {
            if set {
                return Err(PodError::PodSetting { field, why });
            }
        }
        if spec.containers.is_empty() {
            return Err(PodError::Containers(
                "the pod has no containers: a policy for it would allow nothing".to_owned(),
            ));
        }
        let mut names: Vec<&str> = Vec::new();
        for c in self.all_containers() {
            if c.name.is_empty() {
                return Err(PodError::Containers(
                    "a container has no name: give every container a `name`".to_owned(),
                ));
            }
            if names.contains(&c.name.as_str()) {
                return Err(PodError::Containers(format!(
                    "two containers are named {}: give each a name of its own",
                    c.name
                )));
            }
            names.push(&c.name);
        }
        let extra_exec = self.exec_annotations(&names)?;
        let mut containers = Vec::new();
        for c in self.all_containers() {
            let image = images
                .get(&c.image)
                .cloned()
                .ok_or_else(|| container_error(c, format!("image {} was not resolved", c.image)))?;
            let exec = extra_exec.get(c.name.as_str()).cloned().unwrap_or_default();
            containers.push(self.container_policy(c, image, exec)?);
        }
        let mut warnings = Vec::new();
        for c in self
            .all_containers()
            .filter(|c| c.stdin && !stdio.write_stdin)
        {
            warnings.push(format!(
                "container {} sets stdin: true, but the policy refuses writes to stdin \
                 (give --allow-stdin if the host must write to it)",
                c.name
            ));
        }
        if spec.enable_service_links != Some(false) {
            warnings.push(
                "enableServiceLinks is not false: kubelet adds variables for every other service \
                 in the pod's namespace, which the policy refuses (their names cannot be known \
                 here); set `enableServiceLinks: false` unless the namespace has no other service"
                    .to_owned(),
            );
        }
        Ok(Generated {
            data: PolicyData {
                containers,
                read_stdout: stdio.read_stdout,
                read_stderr: stdio.read_stderr,
                write_stdin: stdio.write_stdin,
            },
            warnings,
        })
    }

    /// The `io.tsuba.policy/exec.<name>` annotations, by container name.
    fn exec_annotations<'a>(
        &self,
        names: &[&'a str],
    ) -> Result<BTreeMap<&'a str, Vec<Vec<String>>>, PodError> {
        let mut out = BTreeMap::new();
        for (key, value) in &self.metadata.annotations {
            if !key.starts_with("io.tsuba.policy/") {
                continue;
            }
            let err = |message: String| PodError::Annotation {
                key: key.clone(),
                message,
            };
            let Some(name) = key.strip_prefix(EXEC_ANNOTATION_PREFIX) else {
                return Err(err(format!(
                    "not a tsuba policy annotation (the only one is {EXEC_ANNOTATION_PREFIX}<container-name>)"
                )));
            };
            let Some(name) = names.iter().find(|n| **n == name) else {
                return Err(err(format!("the pod has no container named {name}")));
            };
            let commands: Vec<Vec<String>> = serde_json::from_str(value).map_err(|e| {
                err(format!(
                    "not a JSON array of argv arrays ({e}), e.g. [[\"cat\", \"/tmp/ready\"]]"
                ))
            })?;
            if commands.iter().any(Vec::is_empty) {
                return Err(err("an exec command is empty".to_owned()));
            }
            out.insert(*name, commands);
        }
        Ok(out)
    }

    fn container_policy(
        &self,
        c: &Container,
        image: PolicyImage,
        annotation_exec: Vec<Vec<String>>,
    ) -> Result<ContainerPolicy, PodError> {
        let sc = c.security_context.as_ref();
        let default_sc = SecurityContext::default();
        let sc_or_default = sc.unwrap_or(&default_sc);
        if sc_or_default.privileged == Some(true) {
            return Err(container_error(
                c,
                "privileged: true gives the container the whole pod VM (every device, every \
                 capability); a confidential pod is never privileged: remove it",
            ));
        }
        let env = env(c)?;
        let args = args(c, &env)?;
        let uid = match sc_or_default
            .run_as_user
            .or(self.spec.security_context.run_as_user)
        {
            None => None,
            Some(uid) => Some(u32::try_from(uid).map_err(|_| {
                container_error(
                    c,
                    format!("runAsUser {uid} is not a user ID (0 to 4294967295)"),
                )
            })?),
        };
        let seccomp = sc_or_default.seccomp_profile.as_ref().or(self
            .spec
            .security_context
            .seccomp_profile
            .as_ref());
        let seccomp_required = match seccomp.map(|p| p.kind.as_str()) {
            Some("RuntimeDefault" | "Localhost") => true,
            None | Some("Unconfined") => false,
            Some(other) => {
                return Err(container_error(
                    c,
                    format!(
                        "seccompProfile type {other} is not one of RuntimeDefault, Localhost, \
                         Unconfined"
                    ),
                ));
            }
        };
        let mut exec: Vec<Vec<String>> = Vec::new();
        // kubelet runs exec probes and exec lifecycle hooks through ExecProcess.
        let handlers = [
            c.liveness_probe.as_ref(),
            c.readiness_probe.as_ref(),
            c.startup_probe.as_ref(),
            c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()),
            c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()),
        ];
        let probe_commands = handlers
            .into_iter()
            .filter_map(|h| h.and_then(|h| h.exec.as_ref()))
            .map(|e| e.command.clone());
        for command in probe_commands.chain(annotation_exec) {
            if command.is_empty() {
                return Err(container_error(
                    c,
                    "an exec probe or hook has an empty command: give its command",
                ));
            }
            if !exec.contains(&command) {
                exec.push(command);
            }
        }
        Ok(ContainerPolicy {
            name: c.name.clone(),
            image: image.reference,
            signed: image.signed,
            args,
            env: env.entries,
            env_any_value: RUNTIME_ENV.iter().map(|v| (*v).to_owned()).collect(),
            cwd: c.working_dir.clone(),
            uid,
            capabilities: capabilities(c, sc.and_then(|s| s.capabilities.as_ref()))?,
            mounts: mounts(c)?,
            seccomp_required,
            no_new_privileges: sc_or_default.allow_privilege_escalation == Some(false),
            exec,
        })
    }
}

/// A container's environment: the entries the policy allows, and the names kubelet knows
/// (for `$(NAME)` references).
struct Env {
    entries: Vec<String>,
    names: Vec<String>,
}

fn env(c: &Container) -> Result<Env, PodError> {
    if !c.env_from.is_empty() {
        return Err(container_error(
            c,
            "envFrom is not supported yet (the variables come from another object, so the \
             policy cannot pin them): write the variables out under `env`",
        ));
    }
    let mut entries = vec![tsuba_policy::containerd::PATH.to_owned()];
    let mut names: Vec<String> = RUNTIME_ENV.iter().map(|v| (*v).to_owned()).collect();
    for var in &c.env {
        if var.value_from.is_some() {
            return Err(container_error(
                c,
                format!(
                    "variable {} uses valueFrom, which is not supported yet (its value comes \
                     from another object, so the policy cannot pin it): give it a `value`",
                    var.name
                ),
            ));
        }
        if var.name.is_empty() || var.name.contains('=') {
            return Err(container_error(
                c,
                format!(
                    "variable name {:?} is empty or holds '=': give a plain name",
                    var.name
                ),
            ));
        }
        let value = var.value.as_deref().unwrap_or("");
        no_kubelet_expansion(c, &format!("variable {}", var.name), value, &names)?;
        entries.push(format!("{}={value}", var.name));
        names.push(var.name.clone());
    }
    if c.tty {
        entries.push("TERM=xterm".to_owned());
    }
    Ok(Env { entries, names })
}

/// kubelet replaces `$(NAME)` with the value of a variable it knows and `$$` with `$` in
/// commands, arguments and values: the policy would then pin a string the container never
/// gets. Such strings are refused instead of guessed at.
fn no_kubelet_expansion(
    c: &Container,
    what: &str,
    value: &str,
    known: &[String],
) -> Result<(), PodError> {
    if value.contains("$$") {
        return Err(container_error(
            c,
            format!(
                "{what} contains $$, which kubelet turns into $: write the string the \
                 container should get"
            ),
        ));
    }
    let mut rest = value;
    while let Some(start) = rest.find("$(") {
        let after = &rest[start + 2..];
        if let Some(end) = after.find(')') {
            let name = &after[..end];
            if known.iter().any(|k| k == name) {
                return Err(container_error(
                    c,
                    format!(
                        "{what} refers to $({name}), which kubelet replaces with the variable's \
                         value: write the value out"
                    ),
                ));
            }
        }
        rest = after;
    }
    Ok(())
}

/// The process's arguments: `command` then `args`; none means the image's own.
fn args(c: &Container, env: &Env) -> Result<Vec<String>, PodError> {
    let args = match (&c.command, &c.args) {
        (None, None) => Vec::new(),
        (None, Some(_)) => {
            return Err(container_error(
                c,
                "`args` without `command` runs the image's entrypoint with them, which the \
                 policy cannot pin: give `command` too, so the policy pins the whole command \
                 line",
            ));
        }
        (Some(command), args) => command
            .iter()
            .chain(args.iter().flatten())
            .cloned()
            .collect(),
    };
    if c.command.as_ref().is_some_and(Vec::is_empty) {
        return Err(container_error(
            c,
            "`command` is empty: give the command, or leave `command` out to run the image's \
             own entrypoint",
        ));
    }
    for (i, arg) in args.iter().enumerate() {
        no_kubelet_expansion(c, &format!("argument {i}"), arg, &env.names)?;
    }
    Ok(args)
}

/// containerd's default capabilities, less `drop` (`ALL` drops every one), plus `add`.
fn capabilities(c: &Container, caps: Option<&Capabilities>) -> Result<Vec<String>, PodError> {
    let default = Capabilities::default();
    let caps = caps.unwrap_or(&default);
    let name = |raw: &str| -> Result<String, PodError> {
        if let Some(bare) = raw.strip_prefix("CAP_") {
            return Err(container_error(
                c,
                format!(
                    "capability {raw}: Kubernetes names capabilities without the CAP_ prefix \
                     (write {bare})"
                ),
            ));
        }
        if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(container_error(
                c,
                format!("capability {raw:?} is not a capability name (e.g. NET_ADMIN)"),
            ));
        }
        Ok(format!("CAP_{}", raw.to_ascii_uppercase()))
    };
    if caps.add.iter().any(|a| a.eq_ignore_ascii_case("ALL")) {
        return Err(container_error(
            c,
            "capabilities add: ALL gives every capability: list the ones the container needs",
        ));
    }
    let drop_all = caps.drop.iter().any(|d| d.eq_ignore_ascii_case("ALL"));
    let dropped = caps
        .drop
        .iter()
        .filter(|d| !d.eq_ignore_ascii_case("ALL"))
        .map(|d| name(d))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out: Vec<String> = if drop_all {
        Vec::new()
    } else {
        tsuba_policy::containerd::CAPABILITIES
            .iter()
            .map(|c| (*c).to_owned())
            .filter(|c| !dropped.contains(c))
            .collect()
    };
    for add in &caps.add {
        let add = name(add)?;
        if !out.contains(&add) {
            out.push(add);
        }
    }
    Ok(out)
}

/// The mounts the container may have: containerd's defaults. Volumes are refused until the
/// guest's storage work can mount them (this is where they will be added).
fn mounts(c: &Container) -> Result<Vec<MountPolicy>, PodError> {
    if let Some(v) = c.volume_mounts.first().or(c.volume_devices.first()) {
        return Err(container_error(
            c,
            format!(
                "volume {} is not supported yet (the guest cannot mount pod volumes): remove \
                 its volumeMounts/volumeDevices entry",
                v.name
            ),
        ));
    }
    Ok(tsuba_policy::containerd::MOUNTS
        .iter()
        .map(|(destination, kind, source)| MountPolicy {
            destination: (*destination).to_owned(),
            kind: (*kind).to_owned(),
            source: (*source).to_owned(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST_REF: &str =
        "r.example/app@sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn generate(yaml: &str) -> Result<Generated, PodError> {
        let pod = Pod::parse(yaml.as_bytes())?;
        let images = pod
            .images()
            .into_iter()
            .map(|(_, image)| {
                (
                    image.clone(),
                    PolicyImage {
                        reference: image,
                        signed: false,
                    },
                )
            })
            .collect();
        pod.policy_data(
            &images,
            Stdio {
                read_stdout: true,
                read_stderr: true,
                write_stdin: false,
            },
        )
    }

    fn pod(container: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: app\n    image: {DIGEST_REF}\n{container}"
        )
    }

    #[test]
    fn capabilities_follow_containerd_then_drop_then_add() {
        let g = generate(&pod(
            "    securityContext:\n      capabilities:\n        drop: [NET_RAW, MKNOD]\n        add: [NET_ADMIN, CHOWN]\n",
        ))
        .unwrap();
        let caps = &g.data.containers[0].capabilities;
        assert_eq!(caps.len(), 13);
        assert!(!caps.iter().any(|c| c == "CAP_NET_RAW" || c == "CAP_MKNOD"));
        assert_eq!(caps.last().map(String::as_str), Some("CAP_NET_ADMIN"));
        assert_eq!(caps.iter().filter(|c| *c == "CAP_CHOWN").count(), 1);
        let g = generate(&pod(
            "    securityContext:\n      capabilities:\n        drop: [ALL]\n        add: [net_bind_service]\n",
        ))
        .unwrap();
        assert_eq!(
            g.data.containers[0].capabilities,
            vec!["CAP_NET_BIND_SERVICE"]
        );
        for bad in ["add: [CAP_NET_ADMIN]", "add: [ALL]", "drop: [\"NET RAW\"]"] {
            let err = generate(&pod(&format!(
                "    securityContext:\n      capabilities:\n        {bad}\n"
            )))
            .unwrap_err();
            assert!(matches!(err, PodError::Container { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn kubelet_expansion_is_refused_only_where_kubelet_expands() {
        // $(date) names no variable: kubelet leaves it as is, and so does the policy.
        let g = generate(&pod(
            "    command: [sh, -c, 'echo $(date)']\n    env:\n    - name: MODE\n      value: prod\n",
        ))
        .unwrap();
        assert_eq!(g.data.containers[0].args[2], "echo $(date)");
        for bad in [
            "    command: [sh, -c, 'echo $(MODE)']\n    env:\n    - name: MODE\n      value: prod\n",
            "    command: [sh, -c, 'echo $(KUBERNETES_SERVICE_HOST)']\n",
            "    command: [sh, -c, 'echo $$HOME']\n",
            "    env:\n    - name: A\n      value: x\n    - name: B\n      value: $(A)/y\n",
        ] {
            let err = generate(&pod(bad)).unwrap_err().to_string();
            assert!(err.contains("kubelet"), "{bad}: {err}");
        }
    }

    #[test]
    fn uid_and_seccomp_come_from_the_container_over_the_pod() {
        let yaml = format!(
            "apiVersion: v1\nkind: Pod\nspec:\n  securityContext:\n    runAsUser: 1000\n    seccompProfile:\n      type: RuntimeDefault\n  containers:\n  - name: a\n    image: {DIGEST_REF}\n  - name: b\n    image: {DIGEST_REF}\n    securityContext:\n      runAsUser: 0\n      seccompProfile:\n        type: Unconfined\n"
        );
        let g = generate(&yaml).unwrap();
        assert_eq!(g.data.containers[0].uid, Some(1000));
        assert!(g.data.containers[0].seccomp_required);
        assert_eq!(g.data.containers[1].uid, Some(0));
        assert!(!g.data.containers[1].seccomp_required);
        let negative = yaml.replace("runAsUser: 0", "runAsUser: -1");
        assert!(
            generate(&negative)
                .unwrap_err()
                .to_string()
                .contains("runAsUser -1")
        );
    }

    #[test]
    fn exec_annotations_must_name_a_container_and_be_argv_arrays() {
        let with = |key: &str, value: &str| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  annotations:\n    {key}: '{value}'\nspec:\n  containers:\n  - name: app\n    image: {DIGEST_REF}\n    readinessProbe:\n      exec:\n        command: [cat, /tmp/ready]\n"
            )
        };
        let g = generate(&with(
            "io.tsuba.policy/exec.app",
            r#"[["ls"],["cat","/tmp/ready"]]"#,
        ))
        .unwrap();
        // The probe first, then the annotation's, without the duplicate.
        assert_eq!(
            g.data.containers[0].exec,
            vec![vec!["cat", "/tmp/ready"], vec!["ls"]]
        );
        for (key, value, expect) in [
            (
                "io.tsuba.policy/exec.other",
                "[[\"ls\"]]",
                "no container named other",
            ),
            ("io.tsuba.policy/exec.app", "[\"ls\"]", "argv arrays"),
            ("io.tsuba.policy/exec.app", "[[]]", "empty"),
            (
                "io.tsuba.policy/execs.app",
                "[]",
                "not a tsuba policy annotation",
            ),
        ] {
            let err = generate(&with(key, value)).unwrap_err().to_string();
            assert!(err.contains(expect), "{key}={value}: {err}");
        }
    }

    #[test]
    fn refuses_duplicate_names_no_containers_and_bad_documents() {
        let two = format!(
            "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: a\n    image: {DIGEST_REF}\n  - name: a\n    image: {DIGEST_REF}\n"
        );
        assert!(
            generate(&two)
                .unwrap_err()
                .to_string()
                .contains("two containers")
        );
        let none = "apiVersion: v1\nkind: Pod\nspec:\n  containers: []\n";
        assert!(
            generate(none)
                .unwrap_err()
                .to_string()
                .contains("no containers")
        );
        assert!(matches!(
            Pod::parse(b"apiVersion: apps/v1\nkind: Deployment\n"),
            Err(PodError::NotAPod { kind, .. }) if kind == "Deployment"
        ));
        assert!(matches!(
            Pod::parse(b"apiVersion: v1\nkind: Pod\nspec: [1]\n"),
            Err(PodError::Yaml(_))
        ));
        assert!(matches!(Pod::parse(b"- [unclosed"), Err(PodError::Yaml(_))));
        assert!(matches!(
            Pod::parse(b"apiVersion: v2\nkind: Pod\nspec: {}\n"),
            Err(PodError::NotAPod { api_version, .. }) if api_version == "v2"
        ));
        let big = format!(
            "apiVersion: v1\nkind: Pod\n#{}\n",
            "x".repeat(MAX_POD_YAML_LEN)
        );
        assert!(matches!(
            Pod::parse(big.as_bytes()),
            Err(PodError::TooLarge)
        ));
    }

    #[test]
    fn refuses_env_from_host_pid_and_bad_names_and_warns_of_stdin_and_service_links() {
        for (bad, expect) in [
            (
                "    envFrom:\n    - configMapRef:\n        name: cfg\n",
                "envFrom",
            ),
            (
                "    env:\n    - name: \"A=B\"\n      value: x\n",
                "holds '='",
            ),
            (
                "    volumeDevices:\n    - name: disk\n      devicePath: /dev/xvda\n",
                "volume disk",
            ),
            ("    command: []\n", "`command` is empty"),
            (
                "    readinessProbe:\n      exec:\n        command: []\n",
                "empty command",
            ),
            (
                "    securityContext:\n      runAsUser: 4294967296\n",
                "runAsUser 4294967296",
            ),
            (
                "    securityContext:\n      seccompProfile:\n        type: Custom\n",
                "Custom",
            ),
        ] {
            let err = generate(&pod(bad)).unwrap_err().to_string();
            assert!(
                err.starts_with("container app: ") && err.contains(expect),
                "{bad}: {err}"
            );
        }
        for (field, yaml) in [
            ("hostPID: true", "  hostPID: true\n"),
            ("hostIPC: true", "  hostIPC: true\n"),
            ("hostNetwork: true", "  hostNetwork: true\n"),
            (
                "shareProcessNamespace: true",
                "  shareProcessNamespace: true\n",
            ),
        ] {
            let yaml = pod("").replace("spec:\n", &format!("spec:\n{yaml}"));
            assert!(
                matches!(generate(&yaml), Err(PodError::PodSetting { field: f, .. }) if f == field),
                "{field}"
            );
        }
        let g = generate(&pod("    stdin: true\n")).unwrap();
        assert_eq!(g.warnings.len(), 2, "{:?}", g.warnings);
        assert!(g.warnings[0].contains("container app sets stdin: true"));
        assert!(g.warnings[1].contains("enableServiceLinks"));
        let quiet = pod("").replace("spec:\n", "spec:\n  enableServiceLinks: false\n");
        assert!(generate(&quiet).unwrap().warnings.is_empty());
    }
}
