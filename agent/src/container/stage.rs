//! The runner's stages, run in fresh single-threaded processes of the agent binary (see
//! `runner.rs`): stage 1 joins the cgroup and enters the namespaces, stage 2 sets up the root
//! and credentials, waits for the start byte and execs the program.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use super::rootfs::secure_join;
use super::runner::{
    FRAME_ERROR, FRAME_PID, FRAME_PLAN, FRAME_READY, FRAME_START, RootPlan, STAGE1_ARG, STAGE2_ARG,
    Stage1Plan, Stage2Plan, read_frame, write_frame,
};
use super::spec::{DEFAULT_DEVICES, ProcessPlan};

/// Runs a stage when the agent binary was started as one; `None` when it was not.
pub fn run_if_stage() -> Option<i32> {
    let mut args = std::env::args_os().skip(1);
    let stage = args.next()?;
    // Stage 2 is PID 1 of its own PID namespace, so the PID cannot tell a stage from the
    // guest's init; the guest's init gets its arguments from the measured command line.
    let socket = PathBuf::from(args.next()?);
    let result = if stage == STAGE1_ARG {
        stage1(&socket)
    } else if stage == STAGE2_ARG {
        stage2(&socket)
    } else {
        return None;
    };
    Some(match result {
        Ok(()) => 0,
        Err(_) => 1,
    })
}

/// An error of a stage: sent to the agent on the control socket when it is there.
struct Failed;

fn fail(control: &mut UnixStream, what: impl std::fmt::Display) -> Failed {
    let _ = write_frame(control, FRAME_ERROR, what.to_string().as_bytes());
    Failed
}

fn read_plan<T: serde::de::DeserializeOwned>(control: &mut UnixStream) -> Result<T, Failed> {
    match read_frame(control) {
        Ok(Some((FRAME_PLAN, body))) => {
            serde_json::from_slice(&body).map_err(|e| fail(control, format!("bad plan: {e}")))
        }
        _ => Err(fail(control, "no plan")),
    }
}

fn stage1(socket: &Path) -> Result<(), Failed> {
    let mut control = UnixStream::connect(socket).map_err(|_| Failed)?;
    let plan: Stage1Plan = read_plan(&mut control)?;
    let procs = plan.cgroup.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string())
        .map_err(|e| fail(&mut control, format!("cannot join the cgroup: {e}")))?;
    match plan.join {
        None => {
            let mut flags = CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS;
            if plan.namespaces.uts {
                flags |= CloneFlags::CLONE_NEWUTS;
            }
            if plan.namespaces.ipc {
                flags |= CloneFlags::CLONE_NEWIPC;
            }
            if plan.namespaces.cgroup {
                flags |= CloneFlags::CLONE_NEWCGROUP;
            }
            unshare(flags).map_err(|e| fail(&mut control, format!("unshare: {e}")))?;
            // Nothing mounted for the container propagates back to the guest.
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .map_err(|e| fail(&mut control, format!("making mounts private: {e}")))?;
        }
        Some(pid) => {
            let ns = File::open(format!("/proc/{pid}/ns/pid"))
                .map_err(|e| fail(&mut control, format!("the container is gone: {e}")))?;
            setns(&ns, CloneFlags::CLONE_NEWPID)
                .map_err(|e| fail(&mut control, format!("joining the pid namespace: {e}")))?;
        }
    }
    let child = Command::new("/proc/self/exe")
        .arg(STAGE2_ARG)
        .arg(socket)
        .env_clear()
        .spawn()
        .map_err(|e| fail(&mut control, format!("cannot start stage 2: {e}")))?;
    write_frame(&mut control, FRAME_PID, child.id().to_string().as_bytes()).map_err(|_| Failed)
}

fn stage2(socket: &Path) -> Result<(), Failed> {
    let mut control = UnixStream::connect(socket).map_err(|_| Failed)?;
    let plan: Stage2Plan = read_plan(&mut control)?;
    if let Some(root) = &plan.root {
        setup_root(root).map_err(|e| fail(&mut control, e))?;
        if let Some(hostname) = &root.hostname {
            nix::unistd::sethostname(hostname)
                .map_err(|e| fail(&mut control, format!("sethostname: {e}")))?;
        }
    } else if let Some(pid) = plan.join {
        join_namespaces(pid, &plan).map_err(|e| fail(&mut control, e))?;
    }
    let program = resolve_program(&plan.process).map_err(|e| fail(&mut control, e))?;
    let filters = match &plan.seccomp {
        Some(profile) => super::seccomp::compile(profile).map_err(|e| fail(&mut control, e))?,
        None => Vec::new(),
    };
    setup_process(&plan.process).map_err(|e| fail(&mut control, e))?;
    write_frame(&mut control, FRAME_READY, &[]).map_err(|_| Failed)?;
    match read_frame(&mut control) {
        Ok(Some((FRAME_START, _))) => {}
        _ => return Err(Failed),
    }
    let process = &plan.process;
    let mut command = Command::new(&program);
    command
        .arg0(&process.args[0])
        .args(&process.args[1..])
        .env_clear();
    for entry in &process.env {
        if let Some((k, v)) = entry.split_once('=') {
            command.env(k, v);
        }
    }
    // Last, so that the filter constrains the program and not the set-up above.
    super::seccomp::install(&filters).map_err(|e| fail(&mut control, e))?;
    // exec resets SIGPIPE and the signal mask the Rust runtime set; the control socket is
    // close-on-exec, so the agent sees end of file once the program runs.
    let error = command.exec();
    Err(fail(
        &mut control,
        format!("cannot execute {:?}: {error}", process.args[0]),
    ))
}

fn join_namespaces(pid: i32, plan: &Stage2Plan) -> Result<(), String> {
    let mut wanted = Vec::new();
    if plan.namespaces.ipc {
        wanted.push(("ipc", CloneFlags::CLONE_NEWIPC));
    }
    if plan.namespaces.uts {
        wanted.push(("uts", CloneFlags::CLONE_NEWUTS));
    }
    if plan.namespaces.cgroup {
        wanted.push(("cgroup", CloneFlags::CLONE_NEWCGROUP));
    }
    // The mount namespace last: after it, /proc is the container's.
    wanted.push(("mnt", CloneFlags::CLONE_NEWNS));
    let files = wanted
        .iter()
        .map(|(name, flag)| {
            File::open(format!("/proc/{pid}/ns/{name}"))
                .map(|f| (f, *flag))
                .map_err(|e| format!("the container is gone ({name}): {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (file, flag) in files {
        setns(&file, flag).map_err(|e| format!("setns {flag:?}: {e}"))?;
    }
    Ok(())
}

fn mnt(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    mount(source, target, fstype, flags, data).map_err(|e| {
        format!(
            "mount {:?} on {}: {e}",
            fstype.unwrap_or("bind"),
            target.display()
        )
    })
}

fn setup_root(root: &RootPlan) -> Result<(), String> {
    let rootfs = &root.rootfs;
    mnt(
        Some(rootfs),
        rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    let mut has_devpts = false;
    for m in &root.mounts {
        let target = secure_join(rootfs, &m.destination).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&target)
            .map_err(|e| format!("cannot create {}: {e}", m.destination.display()))?;
        let flags = MsFlags::from_bits_truncate(m.flags);
        let data = (!m.data.is_empty()).then_some(m.data.as_str());
        mnt(
            Some(Path::new(&m.fstype)),
            &target,
            Some(&m.fstype),
            flags,
            data,
        )?;
        has_devpts |= m.fstype == "devpts" && m.destination == Path::new("/dev/pts");
    }
    for device in DEFAULT_DEVICES {
        let target = secure_join(rootfs, Path::new(device)).map_err(|e| e.to_string())?;
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot create /dev: {e}"))?;
        }
        if std::fs::symlink_metadata(&target).is_err() {
            File::create(&target).map_err(|e| format!("cannot create {device}: {e}"))?;
        }
        mnt(
            Some(Path::new(device)),
            &target,
            None,
            MsFlags::MS_BIND,
            None,
        )?;
    }
    let dev = secure_join(rootfs, Path::new("/dev")).map_err(|e| e.to_string())?;
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    if has_devpts {
        links.push(("pts/ptmx", "ptmx"));
    }
    for (target, name) in links {
        let link = dev.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            let _ = std::os::unix::fs::symlink(target, &link);
        }
    }
    enter_root(rootfs, &root.holder)?;
    // Inside the new root no path can leave it, whatever the links.
    for path in &root.masked_paths {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => mnt(
                Some(Path::new("tmpfs")),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
                Some("size=0"),
            )?,
            Ok(_) => mnt(
                Some(Path::new("/dev/null")),
                path,
                None,
                MsFlags::MS_BIND,
                None,
            )?,
            Err(_) => {}
        }
    }
    for path in &root.readonly_paths {
        if std::fs::symlink_metadata(path).is_err() {
            continue;
        }
        mnt(
            Some(path),
            path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        mnt(
            None,
            path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
            None,
        )?;
    }
    if root.readonly {
        mnt(
            None,
            Path::new("/"),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )?;
    }
    Ok(())
}

/// Makes `rootfs` the root of this mount namespace. pivot_root refuses a root on the initramfs
/// (the guest's root), so the container's root is moved onto `holder` (an empty folder on the
/// root mount), every other mount of the namespace is detached (the guest's /run with other
/// containers' layers and the pulled images, /proc, /sys, /dev, /tmp), the root mount is made
/// read-only in this namespace, and the container's root is moved over `/` and chrooted into.
/// Under it there is only the read-only initramfs (public, measured content); setns into this
/// namespace lands on the container's root, the topmost mount on `/`.
fn enter_root(rootfs: &Path, holder: &Path) -> Result<(), String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading the mount table: {e}"))?;
    mnt(Some(rootfs), holder, None, MsFlags::MS_MOVE, None)?;
    let mut others: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| p != Path::new("/") && !p.starts_with(holder))
        .collect();
    // Deepest first; a mount already detached with its parent answers EINVAL.
    others.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for path in others {
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(format!("detaching {}: {e}", path.display())),
        }
    }
    mnt(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
        None,
    )?;
    std::env::set_current_dir(holder).map_err(|e| format!("chdir to the root: {e}"))?;
    mnt(
        Some(Path::new(".")),
        Path::new("/"),
        None,
        MsFlags::MS_MOVE,
        None,
    )?;
    nix::unistd::chroot(".").map_err(|e| format!("chroot: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    Ok(())
}

/// A mount point from /proc/self/mountinfo, whose spaces, tabs, newlines and backslashes are
/// octal escapes.
fn unescape_mount_path(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt as _;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// The program's path: as given when it has a `/`, else the first match in the process's PATH.
fn resolve_program(process: &ProcessPlan) -> Result<PathBuf, String> {
    let name = process.args.first().ok_or("no program")?;
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let path = process
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| format!("{name:?} is not in the container's PATH"))
}

fn rlimit_resource(name: &str) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource as R;
    Some(match name {
        "RLIMIT_AS" => R::RLIMIT_AS,
        "RLIMIT_CORE" => R::RLIMIT_CORE,
        "RLIMIT_CPU" => R::RLIMIT_CPU,
        "RLIMIT_DATA" => R::RLIMIT_DATA,
        "RLIMIT_FSIZE" => R::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => R::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => R::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => R::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => R::RLIMIT_NICE,
        "RLIMIT_NOFILE" => R::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => R::RLIMIT_NPROC,
        "RLIMIT_RSS" => R::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => R::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => R::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => R::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => R::RLIMIT_STACK,
        _ => return None,
    })
}

fn cap_set(names: &BTreeSet<String>) -> Result<caps::CapsHashSet, String> {
    names
        .iter()
        .map(|n| {
            n.parse::<caps::Capability>()
                .map_err(|e| format!("{n}: {e}"))
        })
        .collect()
}

/// rlimits, umask, the terminal, user and groups, capabilities, no_new_privileges, cwd.
fn setup_process(process: &ProcessPlan) -> Result<(), String> {
    use caps::CapSet;
    for limit in &process.rlimits {
        let resource = rlimit_resource(&limit.kind).ok_or("unknown rlimit")?;
        nix::sys::resource::setrlimit(resource, limit.soft, limit.hard)
            .map_err(|e| format!("setrlimit {}: {e}", limit.kind))?;
    }
    if let Some(mask) = process.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    if process.terminal {
        nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
        rustix::process::ioctl_tiocsctty(std::io::stdin())
            .map_err(|e| format!("taking the terminal: {e}"))?;
    }
    let bounding = cap_set(&process.capabilities.bounding)?;
    for cap in caps::all() {
        if !bounding.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| format!("dropping {cap} from the bounding set: {e}"))?;
        }
    }
    nix::sys::prctl::set_keepcaps(true).map_err(|e| format!("keepcaps: {e}"))?;
    let groups: Vec<nix::unistd::Gid> = process
        .additional_gids
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups: {e}"))?;
    let gid = nix::unistd::Gid::from_raw(process.gid);
    let uid = nix::unistd::Uid::from_raw(process.uid);
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setgid {gid}: {e}"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setuid {uid}: {e}"))?;
    let effective = cap_set(&process.capabilities.effective)?;
    let permitted = cap_set(&process.capabilities.permitted)?;
    let inheritable = cap_set(&process.capabilities.inheritable)?;
    let ambient = cap_set(&process.capabilities.ambient)?;
    let narrowed: caps::CapsHashSet = effective.intersection(&permitted).copied().collect();
    caps::set(None, CapSet::Effective, &narrowed).map_err(|e| format!("effective caps: {e}"))?;
    caps::set(None, CapSet::Inheritable, &inheritable)
        .map_err(|e| format!("inheritable caps: {e}"))?;
    caps::set(None, CapSet::Permitted, &permitted).map_err(|e| format!("permitted caps: {e}"))?;
    caps::set(None, CapSet::Effective, &effective).map_err(|e| format!("effective caps: {e}"))?;
    caps::set(None, CapSet::Ambient, &ambient).map_err(|e| format!("ambient caps: {e}"))?;
    nix::sys::prctl::set_keepcaps(false).map_err(|e| format!("keepcaps: {e}"))?;
    if process.no_new_privileges {
        nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    }
    std::env::set_current_dir(&process.cwd).map_err(|e| {
        format!(
            "cannot change to the working directory {}: {e}",
            process.cwd
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(unescape_mount_path("/run/a\\040b"), Path::new("/run/a b"));
        assert_eq!(unescape_mount_path("/x\\134y"), Path::new("/x\\y"));
        assert_eq!(unescape_mount_path("/plain"), Path::new("/plain"));
        assert_eq!(unescape_mount_path("/bad\\9"), Path::new("/bad\\9"));
    }
}
