//! Building the guest image from an unpacked kernel package and the agent binary.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tsuba_protocols::guest_image::{INIT_PATH, MANIFEST_PATH, MODULES_DIR, MODULES_LOAD_ORDER};

use super::cpio::{Archive, CpioError, EntryKind, FinishError};
use super::modules::{ModuleError, ModuleTree};

/// The modules every guest gets: vsock, virtio net and block, overlay for container rootfs,
/// dm-crypt and dm-integrity for encrypted scratch storage, and the SNP/TDX guest drivers
/// (which skip themselves on other platforms). The virtio console and PCI transport are built in.
/// virtio-rng is left out on purpose: it is entropy from the host.
pub const DEFAULT_MODULES: &[&str] = &[
    "vmw_vsock_virtio_transport",
    "virtio_net",
    "virtio_blk",
    "overlay",
    "dm_crypt",
    "dm_integrity",
    "sev_guest",
    "tdx_guest",
];

/// What goes into a guest image.
#[derive(Debug, Clone)]
pub struct GuestImageSpec {
    /// Root of an unpacked `linux-image-*` package (holds `boot/` and `lib/modules/`).
    pub kernel_package: PathBuf,
    /// The statically linked agent.
    pub agent: PathBuf,
    /// Modules to include (with their dependencies).
    pub modules: Vec<String>,
    /// A static busybox to add as `/bin/busybox` and `/bin/sh`: debug builds only.
    pub debug_busybox: Option<PathBuf>,
    /// Timestamp every initrd entry carries (`SOURCE_DATE_EPOCH`).
    pub source_date_epoch: u32,
}

/// What the initrd contains, recorded inside it and beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageContents {
    /// Kernel release the modules belong to.
    pub kernel_release: String,
    /// sha256 of the agent binary.
    pub agent_sha256: String,
    /// Modules in load order: (name, sha256 of the uncompressed object).
    pub modules: Vec<(String, String)>,
    /// sha256 of busybox in debug images; `None` in release images.
    pub debug_busybox_sha256: Option<String>,
    /// The entries' timestamp.
    pub source_date_epoch: u32,
}

/// The manifest written beside the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestImageManifest {
    /// What is inside the initrd.
    pub contents: ImageContents,
    /// sha256 of the kernel image.
    pub kernel_sha256: String,
    /// sha256 of the compressed initrd.
    pub initrd_sha256: String,
    /// Size of the compressed initrd in bytes.
    pub initrd_bytes: u64,
}

/// A built image.
#[derive(Debug, Clone)]
pub struct GuestImage {
    /// The kernel, copied into the output folder.
    pub kernel: PathBuf,
    /// The initrd.
    pub initrd: PathBuf,
    /// Where the manifest was written.
    pub manifest_path: PathBuf,
    /// The manifest.
    pub manifest: GuestImageManifest,
}

/// Building the image failed.
#[derive(Debug, Error)]
pub enum GuestImageError {
    /// The kernel package does not hold exactly one kernel.
    #[error(
        "{0} does not look like an unpacked linux-image package with exactly one kernel \
         (boot/vmlinuz-<release> and lib/modules/<release>); run scripts/setup to fetch it"
    )]
    KernelPackage(PathBuf),
    /// An input file could not be read.
    #[error("cannot read {0}")]
    Read(PathBuf, #[source] io::Error),
    /// The output could not be written.
    #[error("cannot write {0}")]
    Write(PathBuf, #[source] io::Error),
    /// A module could not be resolved.
    #[error(transparent)]
    Module(#[from] ModuleError),
    /// An initrd entry was invalid.
    #[error(transparent)]
    Cpio(#[from] CpioError),
    /// The initrd could not be written.
    #[error(transparent)]
    Finish(#[from] FinishError),
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Finds the single kernel release in an unpacked package.
fn kernel_release(package: &Path) -> Result<(String, PathBuf), GuestImageError> {
    let bad = || GuestImageError::KernelPackage(package.to_owned());
    let boot = package.join("boot");
    let mut kernels: Vec<String> = std::fs::read_dir(&boot)
        .map_err(|_| bad())?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|f| f.strip_prefix("vmlinuz-").map(str::to_owned))
        .collect();
    match (kernels.pop(), kernels.is_empty()) {
        (Some(release), true) if package.join("lib/modules").join(&release).is_dir() => {
            let vmlinuz = boot.join(format!("vmlinuz-{release}"));
            Ok((release, vmlinuz))
        }
        _ => Err(bad()),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, GuestImageError> {
    std::fs::read(path).map_err(|e| GuestImageError::Read(path.to_owned(), e))
}

/// Builds the image into `out_dir`: `vmlinuz`, `initrd.img` and `manifest.json`.
///
/// The same spec always gives byte-identical output.
pub fn build(spec: &GuestImageSpec, out_dir: &Path) -> Result<GuestImage, GuestImageError> {
    let (release, vmlinuz) = kernel_release(&spec.kernel_package)?;
    let tree = ModuleTree::open(&spec.kernel_package.join("lib/modules").join(&release))?;
    let wanted: Vec<&str> = spec.modules.iter().map(String::as_str).collect();
    let modules = tree.resolve(&wanted)?;

    let agent = read(&spec.agent)?;
    let mut archive = Archive::new(spec.source_date_epoch);
    archive.add(INIT_PATH, EntryKind::File(agent.clone()), 0o755)?;
    archive.add("dev/console", EntryKind::CharDevice(5, 1), 0o600)?;
    for dir in ["proc", "sys", "dev", "run", "tmp", "etc/tsuba"] {
        archive.add(dir, EntryKind::Dir, 0o755)?;
    }
    let mut load_order = String::new();
    for module in &modules {
        let file = format!("{}.ko", module.name);
        archive.add(
            &format!("{MODULES_DIR}/{file}"),
            EntryKind::File(module.bytes.clone()),
            0o644,
        )?;
        load_order.push_str(&file);
        load_order.push('\n');
    }
    archive.add(
        MODULES_LOAD_ORDER,
        EntryKind::File(load_order.into_bytes()),
        0o644,
    )?;

    let busybox = spec.debug_busybox.as_deref().map(read).transpose()?;
    if let Some(busybox) = &busybox {
        archive.add("bin/busybox", EntryKind::File(busybox.clone()), 0o755)?;
        archive.add("bin/sh", EntryKind::Symlink("busybox".into()), 0o777)?;
    }

    let contents = ImageContents {
        kernel_release: release,
        agent_sha256: sha256_hex(&agent),
        modules: modules
            .iter()
            .map(|m| (m.name.clone(), sha256_hex(&m.bytes)))
            .collect(),
        debug_busybox_sha256: busybox.as_deref().map(sha256_hex),
        source_date_epoch: spec.source_date_epoch,
    };
    let contents_json = serde_json::to_vec_pretty(&contents).map_err(io::Error::from);
    let contents_json =
        contents_json.map_err(|e| GuestImageError::Write(PathBuf::from(MANIFEST_PATH), e))?;
    archive.add(MANIFEST_PATH, EntryKind::File(contents_json), 0o644)?;

    let initrd = compress(&archive)?;
    let kernel = read(&vmlinuz)?;

    std::fs::create_dir_all(out_dir).map_err(|e| GuestImageError::Write(out_dir.into(), e))?;
    let kernel_path = out_dir.join("vmlinuz");
    let initrd_path = out_dir.join("initrd.img");
    let manifest_path = out_dir.join("manifest.json");
    let manifest = GuestImageManifest {
        contents,
        kernel_sha256: sha256_hex(&kernel),
        initrd_sha256: sha256_hex(&initrd),
        initrd_bytes: u64::try_from(initrd.len()).unwrap_or(u64::MAX),
    };
    let manifest_json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| GuestImageError::Write(manifest_path.clone(), e.into()))?;
    write_atomically(&kernel_path, &kernel)?;
    write_atomically(&initrd_path, &initrd)?;
    write_atomically(&manifest_path, &manifest_json)?;
    Ok(GuestImage {
        kernel: kernel_path,
        initrd: initrd_path,
        manifest_path,
        manifest,
    })
}

/// gzip with a fixed header (no name, mtime 0) and level, so the bytes are reproducible.
fn compress(archive: &Archive) -> Result<Vec<u8>, GuestImageError> {
    let mut gz = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::best());
    archive.finish(&mut gz)?;
    gz.flush()
        .and_then(|()| gz.finish())
        .map_err(|e| GuestImageError::Write(PathBuf::from("initrd.img"), e))
}

/// Writes via a temporary file and rename, so a reader never sees half an image.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), GuestImageError> {
    let err = |e| GuestImageError::Write(path.to_owned(), e);
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake kernel package: no real modules, so only built-ins may be asked for.
    fn fake_package(dir: &Path) {
        std::fs::create_dir_all(dir.join("boot")).unwrap();
        std::fs::write(dir.join("boot/vmlinuz-6.1.0-test"), b"bzImage").unwrap();
        let modules = dir.join("lib/modules/6.1.0-test");
        std::fs::create_dir_all(modules.join("kernel")).unwrap();
        std::fs::write(
            modules.join("modules.builtin"),
            "kernel/drivers/char/virtio_console.ko\n",
        )
        .unwrap();
    }

    fn spec(dir: &Path) -> GuestImageSpec {
        std::fs::write(dir.join("agent"), b"\x7fELF agent").unwrap();
        GuestImageSpec {
            kernel_package: dir.to_owned(),
            agent: dir.join("agent"),
            modules: vec!["virtio_console".into()],
            debug_busybox: None,
            source_date_epoch: 0,
        }
    }

    #[test]
    fn two_builds_give_identical_bytes() {
        let pkg = tempfile::tempdir().unwrap();
        fake_package(pkg.path());
        let out1 = tempfile::tempdir().unwrap();
        let out2 = tempfile::tempdir().unwrap();
        let a = build(&spec(pkg.path()), out1.path()).unwrap();
        let b = build(&spec(pkg.path()), out2.path()).unwrap();
        assert_eq!(read(&a.initrd).unwrap(), read(&b.initrd).unwrap());
        assert_eq!(a.manifest, b.manifest);
        assert_eq!(a.manifest.contents.kernel_release, "6.1.0-test");
        assert_eq!(a.manifest.kernel_sha256, sha256_hex(b"bzImage"));
    }

    #[test]
    fn the_agent_and_debug_flag_change_the_initrd() {
        let pkg = tempfile::tempdir().unwrap();
        fake_package(pkg.path());
        let out = tempfile::tempdir().unwrap();
        let release = build(&spec(pkg.path()), out.path()).unwrap().manifest;
        assert_eq!(release.contents.debug_busybox_sha256, None);

        std::fs::write(pkg.path().join("busybox"), b"busybox").unwrap();
        let mut debug = spec(pkg.path());
        debug.debug_busybox = Some(pkg.path().join("busybox"));
        let debug = build(&debug, out.path()).unwrap().manifest;
        assert_ne!(debug.initrd_sha256, release.initrd_sha256);
        assert_eq!(
            debug.contents.debug_busybox_sha256,
            Some(sha256_hex(b"busybox"))
        );
    }

    #[test]
    fn a_folder_without_a_kernel_is_refused() {
        let pkg = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        std::fs::write(pkg.path().join("agent"), b"a").unwrap();
        let err = build(&spec(pkg.path()), out.path()).unwrap_err();
        assert!(matches!(err, GuestImageError::KernelPackage(_)), "{err}");
    }
}
