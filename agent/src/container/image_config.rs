//! Defaults from the image config: what runs when the spec names no program (as with
//! `ctr run --rootfs`), its environment, working directory and user.

use std::path::Path;

use serde_json::Value;

use super::rootfs::secure_join;
use super::spec::{MAX_ENV, ProcessPlan, SpecError};

/// Members of the image config's `config` object that decide how the image starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageDefaults {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`.
    pub env: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: String,
    /// `User`: `uid`, `uid:gid`, `name` or `name:group`.
    pub user: String,
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

impl ImageDefaults {
    /// Reads the defaults from an image config's members (those beside `rootfs`).
    pub fn from_config(extra: &serde_json::Map<String, Value>) -> Self {
        let Some(Value::Object(config)) = extra.get("config") else {
            return Self::default();
        };
        let text = |key: &str| {
            config
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        ImageDefaults {
            entrypoint: strings(config.get("Entrypoint")),
            cmd: strings(config.get("Cmd")),
            env: strings(config.get("Env")),
            working_dir: text("WorkingDir"),
            user: text("User"),
        }
    }
}

/// Fills what the spec left to the image: the program when `args` is empty (entrypoint then
/// command), the image's environment under the spec's (the spec wins for a name both set), the
/// working directory when the spec has none, and the user when the spec did not name one.
/// `rootfs` is where names in `User` are looked up (its /etc/passwd and /etc/group, resolved
/// inside the rootfs).
pub(crate) fn apply_defaults(
    process: Option<ProcessPlan>,
    image: &ImageDefaults,
    rootfs: &Path,
) -> Result<ProcessPlan, SpecError> {
    let mut plan = process.unwrap_or_else(|| ProcessPlan {
        args: Vec::new(),
        env: Vec::new(),
        cwd: String::new(),
        uid: 0,
        gid: 0,
        additional_gids: Vec::new(),
        umask: None,
        terminal: false,
        capabilities: Default::default(),
        rlimits: Vec::new(),
        no_new_privileges: false,
        user_from_spec: false,
    });
    if plan.args.is_empty() {
        plan.args = image.entrypoint.iter().chain(&image.cmd).cloned().collect();
    }
    if plan.args.is_empty() {
        return Err(SpecError::Invalid(
            "no program: the spec has no process.args and the image no Entrypoint or Cmd".into(),
        ));
    }
    let mut env: Vec<String> = image
        .env
        .iter()
        .filter(|entry| {
            let name = entry.split('=').next().unwrap_or("");
            !plan
                .env
                .iter()
                .any(|own| own.split('=').next() == Some(name))
        })
        .cloned()
        .collect();
    env.append(&mut plan.env);
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    if env.len() > MAX_ENV || env.iter().any(|e| e.contains('\0')) {
        return Err(SpecError::Invalid(
            "environment: too many entries or a NUL byte".into(),
        ));
    }
    plan.env = env;
    if plan.cwd.is_empty() {
        plan.cwd = if image.working_dir.is_empty() {
            "/".into()
        } else {
            super::spec::clean_path("image WorkingDir", &image.working_dir)?
                .to_string_lossy()
                .into_owned()
        };
    }
    if !plan.user_from_spec && !image.user.is_empty() {
        let (uid, gid) = resolve_user(&image.user, rootfs)?;
        plan.uid = uid;
        plan.gid = gid;
    }
    Ok(plan)
}

/// `uid`, `uid:gid`, `name` or `name:group`, names looked up in the rootfs.
fn resolve_user(user: &str, rootfs: &Path) -> Result<(u32, u32), SpecError> {
    let (who, group) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, default_gid) = match who.parse::<u32>() {
        Ok(uid) => (
            uid,
            lookup(rootfs, "/etc/passwd", |f| f[2] == who).unwrap_or(0),
        ),
        Err(_) => {
            let uid = lookup_field(rootfs, "/etc/passwd", who, 2).ok_or_else(|| {
                SpecError::Invalid(format!(
                    "image user {who:?} is not in the image's /etc/passwd"
                ))
            })?;
            let gid = lookup_field(rootfs, "/etc/passwd", who, 3).unwrap_or(0);
            (uid, gid)
        }
    };
    let gid = match group {
        None => default_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup_field(rootfs, "/etc/group", g, 2).ok_or_else(|| {
                SpecError::Invalid(format!(
                    "image group {g:?} is not in the image's /etc/group"
                ))
            })?,
        },
    };
    Ok((uid, gid))
}

/// The gid (field 3) of the passwd line `matches` selects.
fn lookup(rootfs: &Path, file: &str, matches: impl Fn(&[&str]) -> bool) -> Option<u32> {
    let text = read_small(rootfs, file)?;
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && matches(f))
        .and_then(|f| f[3].parse().ok())
}

fn lookup_field(rootfs: &Path, file: &str, name: &str, field: usize) -> Option<u32> {
    let text = read_small(rootfs, file)?;
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > field && f[0] == name)
        .and_then(|f| f[field].parse().ok())
}

/// A file of the image, resolved inside the rootfs (an image's symlink cannot point the agent
/// at a guest file), at most 1 MiB.
fn read_small(rootfs: &Path, file: &str) -> Option<String> {
    use std::io::Read as _;
    let path = secure_join(rootfs, Path::new(file)).ok()?;
    let f = std::fs::File::open(path).ok()?;
    let mut text = String::new();
    f.take(1 << 20).read_to_string(&mut text).ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> ImageDefaults {
        let config: serde_json::Map<String, Value> = serde_json::from_str(
            r#"{"config":{"Entrypoint":["/bin/sh","-c"],"Cmd":["echo hi"],"Env":["PATH=/bin","A=image","B=image"],"WorkingDir":"/srv","User":"app"}}"#,
        )
        .unwrap();
        ImageDefaults::from_config(&config)
    }

    fn rootfs_with_passwd() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        dir
    }

    #[test]
    fn no_process_takes_everything_from_the_image() {
        let root = rootfs_with_passwd();
        let plan = apply_defaults(None, &defaults(), root.path()).unwrap();
        assert_eq!(plan.args, ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(plan.env, ["PATH=/bin", "A=image", "B=image"]);
        assert_eq!(plan.cwd, "/srv");
        assert_eq!((plan.uid, plan.gid), (1000, 1001));
    }

    #[test]
    fn the_spec_wins_where_it_speaks() {
        let root = rootfs_with_passwd();
        let spec = super::super::spec::parse_exec_process(
            br#"{"args":["/bin/true"],"env":["A=spec"],"cwd":"/tmp","user":{"uid":5,"gid":6}}"#,
        )
        .unwrap();
        let plan = apply_defaults(Some(spec), &defaults(), root.path()).unwrap();
        assert_eq!(plan.args, ["/bin/true"]);
        assert_eq!(plan.env, ["PATH=/bin", "B=image", "A=spec"]);
        assert_eq!(plan.cwd, "/tmp");
        assert_eq!((plan.uid, plan.gid), (5, 6));
    }

    #[test]
    fn users_and_groups_resolve_in_the_rootfs() {
        let root = rootfs_with_passwd();
        assert_eq!(resolve_user("7", root.path()).unwrap(), (7, 0));
        assert_eq!(resolve_user("1000", root.path()).unwrap(), (1000, 1001));
        assert_eq!(resolve_user("7:8", root.path()).unwrap(), (7, 8));
        assert_eq!(resolve_user("app:staff", root.path()).unwrap(), (1000, 50));
        assert!(matches!(
            resolve_user("nobody", root.path()),
            Err(SpecError::Invalid(w)) if w == "image user \"nobody\" is not in the image's /etc/passwd"
        ));
    }

    #[test]
    fn a_passwd_symlink_out_of_the_rootfs_is_read_inside_it() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("passwd"), "evil:x:0:0::/:/bin/sh\n").unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("passwd"),
            root.path().join("etc/passwd"),
        )
        .unwrap();
        assert!(matches!(
            resolve_user("evil", root.path()),
            Err(SpecError::Invalid(_))
        ));
    }

    #[test]
    fn nothing_to_run_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let err = apply_defaults(None, &ImageDefaults::default(), root.path()).unwrap_err();
        assert!(matches!(err, SpecError::Invalid(w) if w.starts_with("no program")));
        let plan = apply_defaults(
            None,
            &ImageDefaults {
                cmd: vec!["sh".into()],
                ..Default::default()
            },
            root.path(),
        )
        .unwrap();
        assert_eq!(plan.cwd, "/");
        assert!(plan.env[0].starts_with("PATH="));
    }
}
