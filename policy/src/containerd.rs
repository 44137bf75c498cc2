//! What containerd 1.6 puts in every container's spec before the pod's settings: the guest
//! runs containers with `ctr run`, which starts from these. Source: containerd `oci/spec.go`
//! (`defaultUnixEnv`, `defaultUnixCaps`, `populateDefaultUnixSpec`) and `oci/mounts_linux.go`
//! (`defaultMounts`); the spec `ctr run` sends is `CTR_SPEC` in
//! `fuzz/src/bin/tsuba-fuzz-seeds.rs`.

/// The `PATH` containerd sets.
pub const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The capabilities containerd grants, in its order.
pub const CAPABILITIES: [&str; 14] = [
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

/// The mounts containerd adds: (destination, type, source).
pub const MOUNTS: [(&str, &str, &str); 7] = [
    ("/proc", "proc", "proc"),
    ("/dev", "tmpfs", "tmpfs"),
    ("/dev/pts", "devpts", "devpts"),
    ("/dev/shm", "tmpfs", "shm"),
    ("/dev/mqueue", "mqueue", "mqueue"),
    ("/sys", "sysfs", "sysfs"),
    ("/run", "tmpfs", "tmpfs"),
];
