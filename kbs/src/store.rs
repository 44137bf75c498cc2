//! Persistent state of the broker: resources, reference values, policies and the token signing
//! key, behind one trait ([`StateStore`]) with two backends: a local folder ([`Store`], the
//! embedded default) and PostgreSQL (`crate::postgres`, feature `postgres`, shared by replicas).
//!
//! In the folder every write is atomic (temporary file in the same directory, fsync, rename,
//! fsync of the directory), so a broker killed at any moment leaves either the old or the new
//! content, never a torn file.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Longest path segment of a resource (`repo`, `type` or `tag`).
pub(crate) const MAX_SEGMENT_LEN: usize = 64;

/// Largest resource accepted.
pub(crate) const MAX_RESOURCE_LEN: usize = 1024 * 1024;

const TOKEN_KEY: &str = "token-key.pem";
const TOKEN_MODE: &str = "token-key.mode";
const REFERENCE_VALUES: &str = "reference-values.json";
const ATTESTATION_POLICY: &str = "attestation-policy.rego";
const RESOURCE_POLICY: &str = "resource-policy.rego";
const RESOURCES: &str = "resources";

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state database cannot be reached or did not answer in time: the request is refused
    /// (503) rather than answered from partial state.
    #[error("state database is unavailable: {reason}")]
    Unavailable {
        /// What went wrong, without credentials.
        reason: String,
    },
    /// The database holds a schema newer than this broker knows.
    #[error(
        "database schema version {found} is newer than this broker's {known}: run a broker \
         release that knows it"
    )]
    SchemaTooNew {
        /// The version in the database.
        found: i32,
        /// The newest version this broker knows.
        known: i32,
    },
    /// A database statement failed.
    #[cfg(feature = "postgres")]
    #[error("database statement failed")]
    Database(#[source] tokio_postgres::Error),
    /// The database URL or its TLS settings are not usable.
    #[error("database configuration is not usable: {0}")]
    DatabaseConfig(String),
    /// A stored value could not be opened with the at-rest keys.
    #[error("stored {what} cannot be decrypted with the configured at-rest keys")]
    Sealed {
        /// Which value.
        what: String,
    },
    /// A stored value is not what this broker wrote.
    #[error("stored {what} is malformed")]
    Malformed {
        /// Which value.
        what: String,
    },
    /// The token signing key in the shared store belongs to another trust mode: replicas run
    /// with different insecure options.
    #[error(
        "the shared token key was made for trust mode {stored:?}, this replica runs {ours:?}: \
         give every replica the same insecure options"
    )]
    TrustModeMismatch {
        /// The stored key's mode.
        stored: String,
        /// This replica's mode.
        ours: String,
    },
    /// A file system operation failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The stored reference values are not valid JSON.
    #[error("stored reference values are malformed")]
    ReferenceValues(#[source] serde_json::Error),
    /// A resource is larger than [`MAX_RESOURCE_LEN`].
    #[error("resource is larger than {MAX_RESOURCE_LEN} bytes")]
    ResourceTooLarge,
}

/// A validated `repo/type/tag` resource path: three segments of 1 to 64 characters from
/// `[A-Za-z0-9._-]`, none of them `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourcePath {
    repo: String,
    kind: String,
    tag: String,
}

/// A resource path that failed validation.
#[derive(Debug, thiserror::Error)]
#[error("invalid resource path segment")]
pub struct InvalidResourcePath;

impl ResourcePath {
    /// Validates the three segments.
    pub fn new(repo: &str, kind: &str, tag: &str) -> Result<Self, InvalidResourcePath> {
        for segment in [repo, kind, tag] {
            let charset_ok = segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if segment.is_empty()
                || segment.len() > MAX_SEGMENT_LEN
                || !charset_ok
                || segment == "."
                || segment == ".."
            {
                return Err(InvalidResourcePath);
            }
        }
        Ok(Self {
            repo: repo.into(),
            kind: kind.into(),
            tag: tag.into(),
        })
    }

    /// Parses `repo/type/tag`.
    pub fn parse(path: &str) -> Result<Self, InvalidResourcePath> {
        let mut parts = path.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(repo), Some(kind), Some(tag), None) => Self::new(repo, kind, tag),
            _ => Err(InvalidResourcePath),
        }
    }

    /// The repository segment.
    pub fn repo(&self) -> &str {
        &self.repo
    }

    /// The type segment.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The tag segment.
    pub fn tag(&self) -> &str {
        &self.tag
    }
}

impl std::fmt::Display for ResourcePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.repo, self.kind, self.tag)
    }
}

use crate::broker::PolicyKind;

/// Where the broker's persistent state lives. Every method is synchronous (the PostgreSQL
/// backend runs its queries on its own runtime, bounded in time); call them off the async I/O
/// threads.
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// The stored token signing key (PKCS#8 PEM) and the trust mode it was made for, if any.
    fn token_key(&self) -> Result<Option<(zeroize::Zeroizing<String>, String)>, StoreError>;
    /// Stores the token signing key with its trust mode (one change as seen by readers).
    fn set_token_key(&self, pem: &str, mode: &str) -> Result<(), StoreError>;
    /// The reference values (name → accepted values).
    fn reference_values(&self) -> Result<BTreeMap<String, Vec<String>>, StoreError>;
    /// Replaces the reference values.
    fn set_reference_values(
        &self,
        values: &BTreeMap<String, Vec<String>>,
    ) -> Result<(), StoreError>;
    /// A stored policy, if one was set.
    fn policy(&self, kind: PolicyKind) -> Result<Option<String>, StoreError>;
    /// Stores a policy.
    fn set_policy(&self, kind: PolicyKind, text: &str) -> Result<(), StoreError>;
    /// Forgets a stored policy, so the broker's built-in default applies again.
    fn delete_policy(&self, kind: PolicyKind) -> Result<(), StoreError>;
    /// A resource's bytes, if it exists; wiped from memory when dropped.
    fn resource(
        &self,
        path: &ResourcePath,
    ) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, StoreError>;
    /// Stores a resource.
    fn set_resource(&self, path: &ResourcePath, bytes: &[u8]) -> Result<(), StoreError>;
    /// Deletes a resource; false when there was none.
    fn delete_resource(&self, path: &ResourcePath) -> Result<bool, StoreError>;
    /// Lists stored resource paths, sorted.
    fn list_resources(&self) -> Result<Vec<ResourcePath>, StoreError>;
    /// For a store shared by replicas: a number that changes with every change of policies,
    /// reference values or the token key, so that a replica knows when to reload them. `None`
    /// for a store only this process writes.
    fn generation(&self) -> Result<Option<i64>, StoreError>;
    /// Whether the store can serve requests now (reachable, schema migrated).
    fn check_ready(&self) -> Result<(), StoreError>;
}

/// Copies every resource, both policies, the reference values and the token key from `from`
/// to `to` (`tsuba kbs export` / `import`). Returns the number of resources copied.
pub fn copy_state(from: &dyn StateStore, to: &dyn StateStore) -> Result<usize, StoreError> {
    let paths = from.list_resources()?;
    for path in &paths {
        if let Some(bytes) = from.resource(path)? {
            to.set_resource(path, &bytes)?;
        }
    }
    for kind in [PolicyKind::Attestation, PolicyKind::Resource] {
        if let Some(text) = from.policy(kind)? {
            to.set_policy(kind, &text)?;
        }
    }
    to.set_reference_values(&from.reference_values()?)?;
    if let Some((pem, mode)) = from.token_key()? {
        to.set_token_key(&pem, &mode)?;
    }
    Ok(paths.len())
}

/// The broker's state directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the state directory at `root`. The directory and its
    /// `resources` folder are made private (mode 0700) whatever the umask, and an existing
    /// state directory is narrowed to 0700: it holds the token key and the resources.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

        let resources = root.join(RESOURCES);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&resources)
            .map_err(|source| StoreError::Io {
                op: "create directory",
                path: resources.clone(),
                source,
            })?;
        for dir in [root, resources.as_path()] {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|source| {
                StoreError::Io {
                    op: "make private",
                    path: dir.into(),
                    source,
                }
            })?;
        }
        Ok(Self { root: root.into() })
    }

    fn token_mode(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .read_string(&self.root.join(TOKEN_MODE))?
            .map(|mode| mode.trim().to_owned()))
    }

    fn resource_file(&self, path: &ResourcePath) -> PathBuf {
        self.root
            .join(RESOURCES)
            .join(&path.repo)
            .join(&path.kind)
            .join(&path.tag)
    }

    fn read_string(&self, file: &Path) -> Result<Option<String>, StoreError> {
        match fs::read_to_string(file) {
            Ok(text) => Ok(Some(text)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io {
                op: "read",
                path: file.into(),
                source,
            }),
        }
    }
}

impl StateStore for Store {
    fn token_key(&self) -> Result<Option<(zeroize::Zeroizing<String>, String)>, StoreError> {
        let key = self.read_string(&self.root.join(TOKEN_KEY))?;
        let mode = self.token_mode()?;
        Ok(key.map(|pem| {
            (
                zeroize::Zeroizing::new(pem),
                mode.unwrap_or_else(|| "unknown".into()),
            )
        }))
    }

    /// The mode is written after the key: a broker killed in between finds the old mode and
    /// makes a new key, never the new key under the old mode's name.
    fn set_token_key(&self, pem: &str, mode: &str) -> Result<(), StoreError> {
        write_atomic(&self.root.join(TOKEN_KEY), pem.as_bytes())?;
        write_atomic(&self.root.join(TOKEN_MODE), mode.as_bytes())
    }

    fn reference_values(&self) -> Result<BTreeMap<String, Vec<String>>, StoreError> {
        match self.read_string(&self.root.join(REFERENCE_VALUES))? {
            Some(text) => serde_json::from_str(&text).map_err(StoreError::ReferenceValues),
            None => Ok(BTreeMap::new()),
        }
    }

    fn set_reference_values(
        &self,
        values: &BTreeMap<String, Vec<String>>,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(values).map_err(StoreError::ReferenceValues)?;
        write_atomic(&self.root.join(REFERENCE_VALUES), &json)
    }

    fn policy(&self, kind: PolicyKind) -> Result<Option<String>, StoreError> {
        self.read_string(&self.root.join(policy_file(kind)))
    }

    fn set_policy(&self, kind: PolicyKind, text: &str) -> Result<(), StoreError> {
        write_atomic(&self.root.join(policy_file(kind)), text.as_bytes())
    }

    fn delete_policy(&self, kind: PolicyKind) -> Result<(), StoreError> {
        let file = self.root.join(policy_file(kind));
        match fs::remove_file(&file) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Io {
                op: "delete",
                path: file,
                source,
            }),
        }
    }

    fn resource(
        &self,
        path: &ResourcePath,
    ) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, StoreError> {
        let file = self.resource_file(path);
        match fs::read(&file) {
            Ok(bytes) => Ok(Some(zeroize::Zeroizing::new(bytes))),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io {
                op: "read",
                path: file,
                source,
            }),
        }
    }

    fn set_resource(&self, path: &ResourcePath, bytes: &[u8]) -> Result<(), StoreError> {
        if bytes.len() > MAX_RESOURCE_LEN {
            return Err(StoreError::ResourceTooLarge);
        }
        let file = self.resource_file(path);
        if let Some(dir) = file.parent() {
            std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o700)
                .create(dir)
                .map_err(|source| StoreError::Io {
                    op: "create directory",
                    path: dir.into(),
                    source,
                })?;
        }
        write_atomic(&file, bytes)
    }

    fn delete_resource(&self, path: &ResourcePath) -> Result<bool, StoreError> {
        let file = self.resource_file(path);
        match fs::remove_file(&file) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(StoreError::Io {
                op: "delete",
                path: file,
                source,
            }),
        }
    }

    fn list_resources(&self) -> Result<Vec<ResourcePath>, StoreError> {
        let mut out = Vec::new();
        let root = self.root.join(RESOURCES);
        for repo in read_dir_names(&root)? {
            for kind in read_dir_names(&root.join(&repo))? {
                for tag in read_dir_names(&root.join(&repo).join(&kind))? {
                    // Skip temporary files of interrupted writes and anything not a valid path.
                    if let Ok(path) = ResourcePath::new(&repo, &kind, &tag) {
                        out.push(path);
                    }
                }
            }
        }
        out.sort_by_key(ToString::to_string);
        Ok(out)
    }

    fn generation(&self) -> Result<Option<i64>, StoreError> {
        Ok(None)
    }

    fn check_ready(&self) -> Result<(), StoreError> {
        fs::metadata(self.root.join(RESOURCES))
            .map(|_| ())
            .map_err(|source| StoreError::Io {
                op: "stat",
                path: self.root.join(RESOURCES),
                source,
            })
    }
}

fn policy_file(kind: PolicyKind) -> &'static str {
    match kind {
        PolicyKind::Attestation => ATTESTATION_POLICY,
        PolicyKind::Resource => RESOURCE_POLICY,
    }
}

fn read_dir_names(dir: &Path) -> Result<Vec<String>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(StoreError::Io {
                op: "list",
                path: dir.into(),
                source,
            });
        }
    };
    Ok(entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| !name.starts_with(".tmp-"))
        .collect())
}

/// Writes `bytes` to `path` atomically and durably, with mode 0600.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;

    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { op, path, source }
    };
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".tmp-{name}-{}", rand::random::<u64>()));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        file.write_all(bytes).map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("fsync", &tmp))?;
        fs::rename(&tmp, path).map_err(io("rename", path))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync directory", dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_paths_are_validated() {
        assert!(ResourcePath::new("default", "key", "1").is_ok());
        assert!(ResourcePath::parse("a.b/c_d/e-f").is_ok());
        for bad in ["..", ".", "", "a/b", "a b", "é", "a\0b", &"x".repeat(65)] {
            assert!(ResourcePath::new(bad, "key", "1").is_err(), "{bad:?}");
            assert!(ResourcePath::new("repo", "key", bad).is_err(), "{bad:?}");
        }
        for bad in ["a/b", "a/b/c/d", "../b/c", "a//c", "/a/b"] {
            assert!(ResourcePath::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn everything_persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = ResourcePath::new("default", "key", "1").unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.set_resource(&path, b"v1").unwrap();
            store.set_resource(&path, b"v2").unwrap();
            store.set_token_key("pem", "secure").unwrap();
            store.set_policy(PolicyKind::Attestation, "a").unwrap();
            store.set_policy(PolicyKind::Resource, "r").unwrap();
            store
                .set_reference_values(&BTreeMap::from([("measurement".into(), vec!["ab".into()])]))
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.resource(&path).unwrap().unwrap().as_slice(), b"v2");
        let (pem, mode) = store.token_key().unwrap().unwrap();
        assert_eq!((pem.as_str(), mode.as_str()), ("pem", "secure"));
        assert_eq!(store.policy(PolicyKind::Attestation).unwrap().unwrap(), "a");
        assert_eq!(store.policy(PolicyKind::Resource).unwrap().unwrap(), "r");
        assert_eq!(store.generation().unwrap(), None);
        assert_eq!(
            store.reference_values().unwrap()["measurement"],
            vec!["ab".to_owned()]
        );
        assert_eq!(store.list_resources().unwrap(), vec![path]);
        assert!(
            store
                .resource(&ResourcePath::new("default", "key", "2").unwrap())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn state_directory_is_private_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;

        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        // A new directory (with a new parent): 0700, not the umask's 0755.
        let fresh = dir.path().join("a/state");
        let store = Store::open(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        assert_eq!(mode(&fresh.join(RESOURCES)), 0o700);
        let path = ResourcePath::new("r", "t", "x").unwrap();
        store.set_resource(&path, b"secret").unwrap();
        assert_eq!(mode(&fresh.join("resources/r/t/x")), 0o600);
        assert_eq!(mode(&fresh.join("resources/r/t")), 0o700);
        // An existing world-readable directory is narrowed.
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
        Store::open(&open).unwrap();
        assert_eq!(mode(&open), 0o700);
    }

    #[test]
    fn leftover_temp_files_are_ignored_and_size_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let path = ResourcePath::new("r", "t", "x").unwrap();
        store.set_resource(&path, b"ok").unwrap();
        fs::write(dir.path().join("resources/r/t/.tmp-x-1"), b"torn").unwrap();
        assert_eq!(store.list_resources().unwrap(), vec![path.clone()]);
        assert!(matches!(
            store.set_resource(&path, &vec![0; MAX_RESOURCE_LEN + 1]),
            Err(StoreError::ResourceTooLarge)
        ));
        assert_eq!(store.resource(&path).unwrap().unwrap().as_slice(), b"ok");
        fs::write(dir.path().join(REFERENCE_VALUES), b"{broken").unwrap();
        assert!(matches!(
            store.reference_values(),
            Err(StoreError::ReferenceValues(_))
        ));
    }
}
