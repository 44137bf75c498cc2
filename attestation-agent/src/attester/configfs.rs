//! configfs-tsm (`/sys/kernel/config/tsm/report`), the kernel's TEE-neutral report interface
//! (Documentation/ABI/testing/configfs-tsm-report): make an entry directory, write the 64 bytes of
//! report data to `inblob` (and optionally `privlevel`), read the evidence from `outblob` and
//! the SNP certificate table from `auxblob`, then remove the entry. `provider` names the TEE
//! driver (`sev_guest`, `tdx_guest`) and `generation` counts writes, so a reader can tell that
//! nobody else wrote to the entry between its write and its read.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use thiserror::Error;
use tracing::warn;
use tsuba_protocols::evidence::ReportData;

/// Where configfs-tsm report entries live.
pub const CONFIGFS_TSM_REPORT: &str = "/sys/kernel/config/tsm/report";
/// Largest `outblob` or `auxblob` read (quotes and certificate tables are a few KiB).
const MAX_BLOB_LEN: u64 = 64 * 1024;
/// Largest small attribute (`provider`, `generation`).
const MAX_ATTR_LEN: u64 = 64;

/// Errors of configfs-tsm.
#[derive(Debug, Error)]
pub enum TsmError {
    /// A file operation on the entry failed.
    #[error("configfs-tsm {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The entry belongs to another TEE driver than expected.
    #[error("configfs-tsm provider is {found:?}, expected {expected:?}")]
    WrongProvider {
        /// What `provider` says.
        found: String,
        /// What the attester needs.
        expected: &'static str,
    },
    /// A blob is larger than the limit.
    #[error("configfs-tsm {0} is larger than the limit")]
    Oversized(&'static str),
    /// `generation` is not a number.
    #[error("configfs-tsm generation is malformed")]
    Generation,
    /// Someone else wrote to the entry between our write and our read.
    #[error("configfs-tsm entry was written concurrently (generation {before} then {after})")]
    Race {
        /// Generation after our write.
        before: u64,
        /// Generation after our read.
        after: u64,
    },
}

/// Making and removing report entries: `mkdir` and `rmdir` in configfs. A trait so tests can pass
/// a fake configfs directory explicitly.
pub trait TsmEntries: Send + Sync + fmt::Debug {
    /// Create a fresh entry and return its directory.
    fn create(&self) -> io::Result<PathBuf>;
    /// Remove an entry.
    fn remove(&self, entry: &Path) -> io::Result<()>;
}

/// The real configfs-tsm under a root directory.
#[derive(Debug)]
pub struct ConfigfsTsm {
    root: PathBuf,
    counter: AtomicU32,
}

impl ConfigfsTsm {
    /// configfs-tsm at `root` (normally [`CONFIGFS_TSM_REPORT`]).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            counter: AtomicU32::new(0),
        }
    }

    /// Whether the root exists (the kernel has configfs-tsm and configfs is mounted).
    pub fn is_present(&self) -> bool {
        self.root.is_dir()
    }
}

impl TsmEntries for ConfigfsTsm {
    fn create(&self) -> io::Result<PathBuf> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let entry = self.root.join(format!("tsuba-{}-{n}", std::process::id()));
        fs::create_dir(&entry)?;
        Ok(entry)
    }

    fn remove(&self, entry: &Path) -> io::Result<()> {
        fs::remove_dir(entry)
    }
}

/// What one configfs-tsm request returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TsmReport {
    /// The report or quote.
    pub(crate) outblob: Vec<u8>,
    /// Auxiliary data (SNP: the certificate table), when the host provided some.
    pub(crate) auxblob: Option<Vec<u8>>,
}

/// Removes the entry however the request ends.
struct EntryGuard<'a> {
    entries: &'a dyn TsmEntries,
    path: PathBuf,
}

impl Drop for EntryGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.entries.remove(&self.path) {
            warn!(entry = %self.path.display(), error = %e, "removing configfs-tsm entry");
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> TsmError + '_ {
    move |source| TsmError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_bounded(path: &Path, max: u64, what: &'static str) -> Result<Vec<u8>, TsmError> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut out = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(io_err(path))?;
    if u64::try_from(out.len()).unwrap_or(u64::MAX) > max {
        return Err(TsmError::Oversized(what));
    }
    Ok(out)
}

fn read_generation(entry: &Path) -> Result<u64, TsmError> {
    let raw = read_bounded(&entry.join("generation"), MAX_ATTR_LEN, "generation")?;
    std::str::from_utf8(&raw)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or(TsmError::Generation)
}

/// Request evidence for `report_data` from the provider named `expected_provider`.
pub(crate) fn request(
    entries: &dyn TsmEntries,
    expected_provider: &'static str,
    report_data: &ReportData,
    privlevel: Option<u32>,
) -> Result<TsmReport, TsmError> {
    let path = entries.create().map_err(|e| TsmError::Io {
        path: PathBuf::from("<new entry>"),
        source: e,
    })?;
    let guard = EntryGuard { entries, path };
    let entry = guard.path.as_path();
    let provider = read_bounded(&entry.join("provider"), MAX_ATTR_LEN, "provider")?;
    let provider = String::from_utf8_lossy(&provider).trim().to_owned();
    if provider != expected_provider {
        return Err(TsmError::WrongProvider {
            found: provider,
            expected: expected_provider,
        });
    }
    if let Some(level) = privlevel {
        let p = entry.join("privlevel");
        fs::write(&p, level.to_string()).map_err(io_err(&p))?;
    }
    let inblob = entry.join("inblob");
    fs::write(&inblob, report_data.as_bytes()).map_err(io_err(&inblob))?;
    let before = read_generation(entry)?;
    let outblob = read_bounded(&entry.join("outblob"), MAX_BLOB_LEN, "outblob")?;
    let aux = entry.join("auxblob");
    let auxblob = match read_bounded(&aux, MAX_BLOB_LEN, "auxblob") {
        Ok(b) if b.is_empty() => None,
        Ok(b) => Some(b),
        Err(TsmError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let after = read_generation(entry)?;
    if after != before {
        return Err(TsmError::Race { before, after });
    }
    Ok(TsmReport { outblob, auxblob })
}

#[cfg(test)]
pub(crate) mod fake {
    //! A fake configfs-tsm: a temporary directory whose entries come pre-filled with what the
    //! kernel would show after the inblob write.

    use std::sync::Mutex;

    use super::*;

    #[derive(Debug)]
    pub(crate) struct FakeTsm {
        pub(crate) dir: tempfile::TempDir,
        pub(crate) provider: String,
        pub(crate) outblob: Vec<u8>,
        pub(crate) auxblob: Option<Vec<u8>>,
        pub(crate) generation: String,
        pub(crate) created: Mutex<Vec<PathBuf>>,
        pub(crate) removed: Mutex<Vec<PathBuf>>,
    }

    impl FakeTsm {
        pub(crate) fn new(provider: &str, outblob: Vec<u8>, auxblob: Option<Vec<u8>>) -> Self {
            Self {
                dir: tempfile::tempdir().expect("tempdir"),
                provider: format!("{provider}\n"),
                outblob,
                auxblob,
                generation: "1\n".into(),
                created: Mutex::default(),
                removed: Mutex::default(),
            }
        }

        pub(crate) fn last_entry(&self) -> PathBuf {
            self.created
                .lock()
                .expect("lock")
                .last()
                .expect("an entry")
                .clone()
        }
    }

    impl TsmEntries for FakeTsm {
        fn create(&self) -> io::Result<PathBuf> {
            let mut created = self.created.lock().expect("lock");
            let entry = self.dir.path().join(format!("entry{}", created.len()));
            fs::create_dir(&entry)?;
            fs::write(entry.join("provider"), &self.provider)?;
            fs::write(entry.join("outblob"), &self.outblob)?;
            if let Some(aux) = &self.auxblob {
                fs::write(entry.join("auxblob"), aux)?;
            }
            fs::write(entry.join("generation"), &self.generation)?;
            created.push(entry.clone());
            Ok(entry)
        }

        fn remove(&self, entry: &Path) -> io::Result<()> {
            self.removed.lock().expect("lock").push(entry.to_path_buf());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeTsm;
    use super::*;

    #[test]
    fn request_writes_inblob_and_reads_blobs() {
        let fake = FakeTsm::new("sev_guest", vec![1, 2, 3], Some(vec![4, 5]));
        let rd = ReportData([0x5A; 64]);
        let report = request(&fake, "sev_guest", &rd, Some(2)).unwrap();
        assert_eq!(report.outblob, vec![1, 2, 3]);
        assert_eq!(report.auxblob, Some(vec![4, 5]));
        let entry = fake.last_entry();
        assert_eq!(fs::read(entry.join("inblob")).unwrap(), vec![0x5A; 64]);
        assert_eq!(fs::read_to_string(entry.join("privlevel")).unwrap(), "2");
        assert_eq!(*fake.removed.lock().unwrap(), vec![entry]);
    }

    #[test]
    fn missing_or_empty_auxblob_is_none() {
        let fake = FakeTsm::new("tdx_guest", vec![9], None);
        let report = request(&fake, "tdx_guest", &ReportData::default(), None).unwrap();
        assert_eq!(report.auxblob, None);
        assert!(!fake.last_entry().join("privlevel").exists());
        let fake = FakeTsm::new("sev_guest", vec![9], Some(Vec::new()));
        let report = request(&fake, "sev_guest", &ReportData::default(), None).unwrap();
        assert_eq!(report.auxblob, None);
    }

    #[test]
    fn wrong_provider_is_refused_and_the_entry_removed() {
        let fake = FakeTsm::new("tdx_guest", vec![1], None);
        let err = request(&fake, "sev_guest", &ReportData::default(), None).unwrap_err();
        assert!(matches!(
            err,
            TsmError::WrongProvider {
                expected: "sev_guest",
                ..
            }
        ));
        assert_eq!(fake.removed.lock().unwrap().len(), 1);
    }

    #[test]
    fn oversized_outblob_and_bad_generation_are_errors() {
        let big = vec![0u8; usize::try_from(MAX_BLOB_LEN).unwrap() + 1];
        let fake = FakeTsm::new("sev_guest", big, None);
        assert!(matches!(
            request(&fake, "sev_guest", &ReportData::default(), None),
            Err(TsmError::Oversized("outblob"))
        ));
        let mut fake = FakeTsm::new("sev_guest", vec![1], None);
        fake.generation = "many".into();
        assert!(matches!(
            request(&fake, "sev_guest", &ReportData::default(), None),
            Err(TsmError::Generation)
        ));
        assert_eq!(fake.removed.lock().unwrap().len(), 1);
    }

    #[test]
    fn real_configfs_entries_are_made_and_removed_under_the_root() {
        let root = tempfile::tempdir().unwrap();
        let tsm = ConfigfsTsm::new(root.path());
        assert!(tsm.is_present());
        let a = tsm.create().unwrap();
        let b = tsm.create().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(root.path()));
        tsm.remove(&a).unwrap();
        assert!(!a.exists());
        assert!(!ConfigfsTsm::new(root.path().join("missing")).is_present());
    }
}
