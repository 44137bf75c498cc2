//! Kernel modules for the guest: find them in an unpacked kernel package, read each module's
//! dependencies from its `.modinfo` section, and order them so each loads after what it needs.
//!
//! Debian ships modules xz-compressed; they go into the initrd uncompressed (the initrd as a whole
//! is compressed), so the guest can load them without in-kernel decompression.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

use object::{Object as _, ObjectSection as _};
use thiserror::Error;

/// Largest module accepted, uncompressed: the biggest in a cloud kernel is a few MiB.
const MAX_MODULE_SIZE: u64 = 64 * 1024 * 1024;

/// A module could not be resolved.
#[derive(Debug, Error)]
pub enum ModuleError {
    /// The modules tree could not be read.
    #[error("cannot read the kernel modules under {0}")]
    Tree(PathBuf, #[source] io::Error),
    /// No module of that name in the package and it is not built in.
    #[error("kernel module {0:?} is neither in the kernel package nor built into the kernel")]
    NotFound(String),
    /// A module file could not be read or decompressed.
    #[error("cannot read kernel module {0}")]
    Read(PathBuf, #[source] io::Error),
    /// The xz stream is broken.
    #[error("cannot decompress kernel module {0}")]
    Decompress(PathBuf, #[source] lzma_rs::error::Error),
    /// The module is not an ELF object with a `.modinfo` section.
    #[error("kernel module {0} is not a valid ELF object with a .modinfo section")]
    Elf(PathBuf),
    /// Larger than any real module.
    #[error("kernel module {0} is larger than {MAX_MODULE_SIZE} bytes uncompressed")]
    TooLarge(PathBuf),
}

/// A module ready to go into the initrd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModule {
    /// Canonical name (dashes as underscores).
    pub name: String,
    /// Where it came from.
    pub source: PathBuf,
    /// The uncompressed object.
    pub bytes: Vec<u8>,
}

/// The kernel's module names treat `-` and `_` alike.
fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// Modules of one kernel release, as unpacked from its package.
#[derive(Debug)]
pub(crate) struct ModuleTree {
    files: BTreeMap<String, PathBuf>,
    builtin: BTreeSet<String>,
}

impl ModuleTree {
    /// Indexes `<modules_dir>` (i.e. `lib/modules/<release>`).
    pub(crate) fn open(modules_dir: &Path) -> Result<Self, ModuleError> {
        let mut files = BTreeMap::new();
        index(&modules_dir.join("kernel"), &mut files)?;
        let builtin_list = modules_dir.join("modules.builtin");
        let builtin = std::fs::read_to_string(&builtin_list)
            .map_err(|e| ModuleError::Tree(builtin_list, e))?
            .lines()
            .filter_map(|l| Path::new(l).file_name()?.to_str())
            .filter_map(|f| f.strip_suffix(".ko"))
            .map(canonical)
            .collect();
        Ok(ModuleTree { files, builtin })
    }

    /// Resolves `wanted` and everything they depend on, dependencies first. Built-in modules
    /// are skipped. The order is deterministic.
    pub(crate) fn resolve(&self, wanted: &[&str]) -> Result<Vec<ResolvedModule>, ModuleError> {
        let mut done = BTreeSet::new();
        let mut order = Vec::new();
        for name in wanted {
            self.visit(
                &canonical(name),
                &mut done,
                &mut BTreeSet::new(),
                &mut order,
            )?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        done: &mut BTreeSet<String>,
        in_progress: &mut BTreeSet<String>,
        order: &mut Vec<ResolvedModule>,
    ) -> Result<(), ModuleError> {
        if done.contains(name) || self.builtin.contains(name) || !in_progress.insert(name.into()) {
            // Already placed, built in, or a dependency cycle (the kernel refuses those anyway).
            return Ok(());
        }
        let path = self
            .files
            .get(name)
            .ok_or_else(|| ModuleError::NotFound(name.to_owned()))?;
        let bytes = read_module(path)?;
        for dep in depends(&bytes, path)? {
            self.visit(&canonical(&dep), done, in_progress, order)?;
        }
        in_progress.remove(name);
        done.insert(name.to_owned());
        order.push(ResolvedModule {
            name: name.to_owned(),
            source: path.clone(),
            bytes,
        });
        Ok(())
    }
}

fn index(dir: &Path, files: &mut BTreeMap<String, PathBuf>) -> Result<(), ModuleError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ModuleError::Tree(dir.to_owned(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ModuleError::Tree(dir.to_owned(), e))?;
        let path = entry.path();
        let file_type = entry
            .file_type()
            .map_err(|e| ModuleError::Tree(path.clone(), e))?;
        if file_type.is_dir() {
            index(&path, files)?;
        } else if let Some(file) = path.file_name().and_then(|f| f.to_str()) {
            let stem = file
                .strip_suffix(".ko.xz")
                .or_else(|| file.strip_suffix(".ko"));
            if let Some(stem) = stem {
                files.insert(canonical(stem), path.clone());
            }
        }
    }
    Ok(())
}

fn read_module(path: &Path) -> Result<Vec<u8>, ModuleError> {
    let file = std::fs::File::open(path).map_err(|e| ModuleError::Read(path.to_owned(), e))?;
    let mut limited = io::BufReader::new(file).take(MAX_MODULE_SIZE + 1);
    let mut bytes = Vec::new();
    if path.extension().is_some_and(|e| e == "xz") {
        lzma_rs::xz_decompress(&mut limited, &mut bytes)
            .map_err(|e| ModuleError::Decompress(path.to_owned(), e))?;
    } else {
        limited
            .read_to_end(&mut bytes)
            .map_err(|e| ModuleError::Read(path.to_owned(), e))?;
    }
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_MODULE_SIZE {
        return Err(ModuleError::TooLarge(path.to_owned()));
    }
    Ok(bytes)
}

/// The `depends=` list of a module's `.modinfo` section.
fn depends(bytes: &[u8], path: &Path) -> Result<Vec<String>, ModuleError> {
    let elf = object::File::parse(bytes).map_err(|_| ModuleError::Elf(path.to_owned()))?;
    let modinfo = elf
        .section_by_name(".modinfo")
        .and_then(|s| s.data().ok())
        .ok_or_else(|| ModuleError::Elf(path.to_owned()))?;
    Ok(modinfo
        .split(|b| *b == 0)
        .filter_map(|field| field.strip_prefix(b"depends="))
        .flat_map(|list| list.split(|b| *b == b','))
        .filter(|dep| !dep.is_empty())
        .map(|dep| String::from_utf8_lossy(dep).into_owned())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names_fold_dashes() {
        assert_eq!(canonical("dm-crypt"), "dm_crypt");
        assert_eq!(canonical("virtio_net"), "virtio_net");
    }

    #[test]
    fn a_non_elf_module_is_refused() {
        let err = depends(b"not an elf", Path::new("x.ko")).unwrap_err();
        assert!(matches!(err, ModuleError::Elf(_)));
    }

    #[test]
    fn a_corrupt_xz_module_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.ko.xz");
        std::fs::write(&path, b"\xfd7zXZ\0garbage").unwrap();
        assert!(matches!(
            read_module(&path),
            Err(ModuleError::Decompress(..))
        ));
    }

    #[test]
    fn unknown_module_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("kernel")).unwrap();
        std::fs::write(
            dir.path().join("modules.builtin"),
            "kernel/drivers/char/virtio_console.ko\n",
        )
        .unwrap();
        let tree = ModuleTree::open(dir.path()).unwrap();
        // Built in: nothing to load, no error.
        assert!(tree.resolve(&["virtio-console"]).unwrap().is_empty());
        let err = tree.resolve(&["no_such_module"]).unwrap_err();
        assert!(err.to_string().contains("no_such_module"));
    }
}
