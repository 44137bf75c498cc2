# The rules of a tsuba agent policy.
#
# A policy is `package agent_policy`, a `policy_data` object that lists what one pod may run
# (`tsuba policy generate` writes it from the Pod YAML), and these rules. The agent evaluates the
# rule named after each request message (CreateContainerRequest, ExecProcessRequest,
# ReadStreamRequest...) with the request as `input`; anything but `true` refuses it, and the
# strings in `reasons` say why. The host sent the request, so nothing here trusts it: every
# field that decides what runs is compared with `policy_data`.

default CreateContainerRequest := false

default StartContainerRequest := true

default ExecProcessRequest := false

default SignalProcessRequest := true

default WaitProcessRequest := true

default ReadStreamRequest := false

default WriteStreamRequest := false

default CloseStdinRequest := true

default TtyWinResizeRequest := true

default ListProcessesRequest := true

default StatsContainerRequest := true

default RemoveContainerRequest := true

default GetOOMEventRequest := true

default PullImageRequest := false

default DiagnosticReportRequest := true

# --- images ---------------------------------------------------------------------------------

# A container's image is allowed by exact reference (name@sha256:digest), or, when the policy
# marks it `signed`, by repository name with any tag or digest: the image signature policy in
# initdata then decides which manifests are accepted.
image_ok(c, image) if image == c.image

image_ok(c, image) if {
	c.signed
	repository(image) == repository(c.image)
}

# The repository of a reference: without its digest, and without a tag after the last slash.
repository(ref) := name if {
	not contains(ref, "@")
	name := strip_tag(ref)
}

repository(ref) := name if {
	contains(ref, "@")
	name := strip_tag(split(ref, "@")[0])
}

strip_tag(ref) := ref if {
	parts := split(ref, "/")
	not contains(parts[count(parts) - 1], ":")
}

strip_tag(ref) := name if {
	parts := split(ref, "/")
	last := parts[count(parts) - 1]
	contains(last, ":")
	tagless := array.concat(array.slice(parts, 0, count(parts) - 1), [split(last, ":")[0]])
	name := concat("/", tagless)
}

PullImageRequest if {
	some c in policy_data.containers
	image_ok(c, input.image)
}

reasons contains msg if {
	input.image
	not input.oci
	not PullImageRequest
	msg := sprintf("PullImageRequest: image %s is not allowed by the policy", [input.image])
}

# --- create ---------------------------------------------------------------------------------

# The CRI container name, when containerd's CRI created the container.
request_name := object.get(object.get(input.oci, "annotations", {}), "io.kubernetes.cri.container-name", "")

# The policy's entries this request is compared with: by name under CRI, else by image.
candidate(c) if {
	request_name != ""
	c.name == request_name
}

candidate(c) if {
	request_name == ""
	image_ok(c, input.image)
}

has_candidate if {
	some c in policy_data.containers
	candidate(c)
}

CreateContainerRequest if {
	some c in policy_data.containers
	candidate(c)
	count(container_failures(c)) == 0
}

reasons contains msg if {
	input.oci
	not has_candidate
	request_name != ""
	msg := sprintf("CreateContainerRequest: no container named %s in the policy", [request_name])
}

reasons contains msg if {
	input.oci
	not has_candidate
	request_name == ""
	msg := sprintf("CreateContainerRequest: image %s is not allowed by the policy", [input.image])
}

reasons contains msg if {
	input.oci
	not CreateContainerRequest
	some c in policy_data.containers
	candidate(c)
	some failure in container_failures(c)
	msg := sprintf("CreateContainerRequest: %s", [failure])
}

container_failures(c) := (((((((image_failures(c) | args_failures(c)) | env_failures(c)) | cwd_failures(c)) | user_failures(c)) | capability_failures(c)) | namespace_failures(c)) | mount_failures(c)) | security_failures(c)

image_failures(c) := {msg |
	not image_ok(c, input.image)
	msg := sprintf("image %s is not the policy's %s", [input.image, c.image])
}

process := object.get(input.oci, "process", {})

# Absent and null are the same: no arguments (the image's own command).
request_args := args if {
	args := object.get(process, "args", [])
	args != null
}

request_args := [] if object.get(process, "args", []) == null

# An empty `args` in the policy allows only the image's own entrypoint and command.
args_failures(c) := {msg |
	request_args != c.args
	msg := sprintf("command %v is not the policy's %v", [request_args, c.args])
}

env_allowed(c, entry) if entry in c.env

env_allowed(c, entry) if {
	name := split(entry, "=")[0]
	name in c.env_any_value
}

# Only the variable's name is repeated in a refusal: the value may be long, and it is the
# host's own input anyway.
env_failures(c) := {msg |
	some entry in object.get(process, "env", [])
	not env_allowed(c, entry)
	msg := sprintf("environment variable %s is not allowed by the policy", [split(entry, "=")[0]])
}

cwd_failures(c) := {msg |
	c.cwd != ""
	object.get(process, "cwd", "/") != c.cwd
	msg := sprintf("working directory %s is not the policy's %s", [object.get(process, "cwd", "/"), c.cwd])
}

request_uid := object.get(object.get(process, "user", {}), "uid", 0)

user_failures(c) := {msg |
	c.uid != null
	request_uid != c.uid
	msg := sprintf("user %v is not the policy's %v", [request_uid, c.uid])
}

request_capabilities contains cap if {
	some set in ["bounding", "effective", "permitted", "inheritable", "ambient"]
	some cap in object.get(object.get(process, "capabilities", {}), set, [])
}

capability_failures(c) := {msg |
	some cap in request_capabilities
	not cap in c.capabilities
	msg := sprintf("capability %s is not allowed by the policy", [cap])
}

# A container has each of these namespaces of its own: one missing, or one joined by path,
# shares the guest's (host network, host PID...).
required_namespaces := ["pid", "network", "mount", "ipc", "uts"]

request_namespaces := object.get(object.get(input.oci, "linux", {}), "namespaces", [])

own_namespace(kind) if {
	some ns in request_namespaces
	ns.type == kind
	object.get(ns, "path", "") == ""
}

namespace_failures(c) := {msg |
	some kind in required_namespaces
	not own_namespace(kind)
	msg := sprintf("the container shares the pod VM's %s namespace (host %s): not allowed by the policy", [kind, kind])
}

mount_allowed(c, m) if {
	some allowed in c.mounts
	allowed.destination == m.destination
	allowed.type == object.get(m, "type", "")
	allowed.source == object.get(m, "source", "")
}

mount_failures(c) := {msg |
	some m in object.get(input.oci, "mounts", [])
	not mount_allowed(c, m)
	msg := sprintf("mount of %s on %s (type %s) is not allowed by the policy", [object.get(m, "source", ""), m.destination, object.get(m, "type", "")])
}

request_linux := object.get(input.oci, "linux", {})

security_failures(c) := (seccomp_failures(c) | nnp_failures(c)) | device_failures(c)

seccomp_failures(c) := {msg |
	c.seccomp_required
	not confining_seccomp
	msg := "the policy requires a seccomp profile that does not allow every system call"
}

confining_seccomp if {
	profile := request_linux.seccomp
	profile.defaultAction != "SCMP_ACT_ALLOW"
}

nnp_failures(c) := {msg |
	c.no_new_privileges
	not object.get(process, "noNewPrivileges", false)
	msg := "the policy requires noNewPrivileges (allowPrivilegeEscalation: false)"
}

# The device nodes OCI gives every container (ctr adds them to its specs); the agent makes
# them from the guest's own /dev. Any other device is a host device.
default_devices := {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"}

device_failures(c) := {msg |
	some d in object.get(request_linux, "devices", [])
	not object.get(d, "path", "") in default_devices
	msg := sprintf("device %s is not allowed by the policy", [object.get(d, "path", "")])
}

# --- exec -----------------------------------------------------------------------------------

# `input.container` is what the agent recorded when the policy admitted the container at
# create: its CRI name (empty without CRI) and image.
exec_entry(c) if {
	input.container.name != ""
	c.name == input.container.name
}

exec_entry(c) if {
	input.container.name == ""
	image_ok(c, input.container.image)
}

ExecProcessRequest if {
	some c in policy_data.containers
	exec_entry(c)
	object.get(input.process, "args", []) in c.exec
}

reasons contains msg if {
	input.process
	not ExecProcessRequest
	msg := sprintf("ExecProcessRequest: exec of %v is not allowed by the policy", [object.get(input.process, "args", [])])
}

# --- streams --------------------------------------------------------------------------------

ReadStreamRequest if {
	input.stream == "stdout"
	policy_data.read_stdout
}

ReadStreamRequest if {
	input.stream == "stderr"
	policy_data.read_stderr
}

reasons contains msg if {
	input.stream in ["stdout", "stderr"]
	not ReadStreamRequest
	msg := sprintf("ReadStreamRequest: reading %s is switched off by the policy (read_%s)", [input.stream, input.stream])
}

WriteStreamRequest if {
	input.stream == "stdin"
	policy_data.write_stdin
}

reasons contains msg if {
	input.stream == "stdin"
	not WriteStreamRequest
	msg := "WriteStreamRequest: writing to stdin is switched off by the policy (write_stdin)"
}
