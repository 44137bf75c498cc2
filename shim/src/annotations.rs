//! What a container's OCI annotations mean to tsuba: its place in a pod, its image, and the
//! configuration overrides a pod may ask for.
//!
//! Annotations come from the pod spec, which the host controls. Every `io.tsuba.` key is checked
//! against a fixed list; an unknown one is refused naming it, and the ones that change what the
//! guest measures are refused unless the runtime configuration allows them.

use std::collections::HashMap;

use thiserror::Error;
use tsuba_protocols::agent::{MAX_IMAGE_REFERENCE, is_valid_id};
use tsuba_vmm_tee::LaunchConfigFile;

use crate::config::Timeouts;

/// CRI: `sandbox` for the pod's sandbox container, `container` for the others.
pub const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// CRI: the pod's sandbox id.
pub const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// CRI: the image the container runs.
pub const CRI_IMAGE_NAME: &str = "io.kubernetes.cri.image-name";
/// tsuba: the image the container runs, for `ctr` (which sets no CRI annotation).
pub const TSUBA_IMAGE: &str = "io.tsuba.image";
/// Every tsuba annotation starts with this.
const TSUBA_PREFIX: &str = "io.tsuba.";
/// Configuration overrides start with this.
const CONFIG_PREFIX: &str = "io.tsuba.config.";
/// Longest annotation value read.
const MAX_VALUE: usize = 4096;

/// The part a container plays in its pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A CRI sandbox container: it boots the pod's VM and runs no workload of its own.
    Sandbox,
    /// A CRI container of the pod `sandbox_id`: it runs in that pod's VM.
    Container {
        /// The pod's sandbox id.
        sandbox_id: String,
    },
    /// A container without CRI annotations (e.g. `ctr run`): its own sandbox, its own VM.
    Standalone,
}

impl Role {
    /// The sandbox (pod) this container belongs to.
    pub fn sandbox_id<'a>(&'a self, container_id: &'a str) -> &'a str {
        match self {
            Role::Container { sandbox_id } => sandbox_id,
            Role::Sandbox | Role::Standalone => container_id,
        }
    }

    /// Whether this container boots (and owns) the VM.
    pub fn owns_vm(&self) -> bool {
        !matches!(self, Role::Container { .. })
    }
}

/// An annotation that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AnnotationError {
    /// A `io.tsuba.` key tsuba does not know.
    #[error("unknown annotation {0}: tsuba knows {TSUBA_IMAGE} and io.tsuba.config.{{{known}}}", known = OVERRIDES.iter().map(|o| o.key).collect::<Vec<_>>().join(","))]
    Unknown(String),
    /// A key that changes the measurement, without `allow_measured_overrides`.
    #[error(
        "annotation {0} changes what the guest measures and is refused: set \
         allow_measured_overrides = true in the runtime config to allow it"
    )]
    Measured(String),
    /// A value that does not parse or is out of range.
    #[error("annotation {key} has an invalid value {value:?}: {why}")]
    Value {
        /// The key.
        key: String,
        /// The value (truncated).
        value: String,
        /// What is expected.
        why: &'static str,
    },
    /// The CRI annotations do not make sense.
    #[error("annotation {key} is invalid: {why}")]
    Cri {
        /// The key.
        key: &'static str,
        /// Why.
        why: &'static str,
    },
    /// The initdata annotation is not base64 of a gzip-compressed initdata document.
    #[error("annotation {INITDATA_ANNOTATION} is invalid: {0}")]
    Initdata(String),
    /// No image named.
    #[error(
        "no image: tsuba pulls the image in the guest and needs {CRI_IMAGE_NAME} (CRI) or \
         {TSUBA_IMAGE} (ctr run --annotation {TSUBA_IMAGE}=<ref>)"
    )]
    NoImage,
}

/// The pod's initdata, as Kata and CoCo's tooling give it: the TOML document, gzip-compressed,
/// then base64 (standard alphabet).
pub const INITDATA_ANNOTATION: &str = "io.katacontainers.config.runtime.cc_init_data";

/// The initdata document of the pod's annotation, if it has one. The host chooses it like
/// everything else here; what makes it trustworthy is that the launcher binds its digest into
/// the launch and the guest checks that binding.
pub fn initdata(
    annotations: &HashMap<String, String>,
) -> Result<Option<tsuba_policy::Initdata>, AnnotationError> {
    use base64::Engine as _;
    use std::io::Read as _;
    let Some(value) = annotations.get(INITDATA_ANNOTATION) else {
        return Ok(None);
    };
    let max = tsuba_policy::MAX_INITDATA_LEN;
    // base64 of gzip never needs more than twice the document's own bound.
    if value.len() > 2 * max {
        return Err(AnnotationError::Initdata(format!(
            "{} bytes, more than {}",
            value.len(),
            2 * max
        )));
    }
    let gzipped = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|e| AnnotationError::Initdata(format!("not base64 ({e})")))?;
    let mut document = Vec::new();
    flate2::read::GzDecoder::new(gzipped.as_slice())
        .take(max as u64 + 1)
        .read_to_end(&mut document)
        .map_err(|e| AnnotationError::Initdata(format!("not gzip ({e})")))?;
    if document.len() > max {
        return Err(AnnotationError::Initdata(format!(
            "the document is larger than {max} bytes"
        )));
    }
    tsuba_policy::Initdata::from_bytes(&document)
        .map(Some)
        .map_err(|e| AnnotationError::Initdata(e.to_string()))
}

/// One configuration override a pod may ask for.
struct Override {
    key: &'static str,
    measured: bool,
    apply: fn(&mut Settings, &str) -> Result<(), &'static str>,
}

/// What the annotations may change.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The VM table.
    pub vm: LaunchConfigFile,
    /// Timeouts.
    pub timeouts: Timeouts,
}

fn parse_u32(v: &str) -> Result<u32, &'static str> {
    v.parse().map_err(|_| "expected a decimal number")
}

const OVERRIDES: &[Override] = &[
    Override {
        key: "memory_mib",
        measured: false,
        apply: |s, v| {
            s.vm.memory_mib = parse_u32(v)?;
            Ok(())
        },
    },
    Override {
        key: "agent_ready_secs",
        measured: false,
        apply: |s, v| {
            s.timeouts.agent_ready_secs = bounded_secs(v)?;
            Ok(())
        },
    },
    Override {
        key: "create_secs",
        measured: false,
        apply: |s, v| {
            s.timeouts.create_secs = bounded_secs(v)?;
            Ok(())
        },
    },
    Override {
        key: "unresponsive_secs",
        measured: false,
        apply: |s, v| {
            s.timeouts.unresponsive_secs = bounded_secs(v)?;
            Ok(())
        },
    },
    // vCPUs are measured on SNP: one VMSA per vCPU goes into the launch digest.
    Override {
        key: "vcpus",
        measured: true,
        apply: |s, v| {
            s.vm.vcpus = u8::try_from(parse_u32(v)?).map_err(|_| "expected 1 to 255")?;
            Ok(())
        },
    },
    Override {
        key: "kernel",
        measured: true,
        apply: |s, v| {
            s.vm.kernel = v.into();
            Ok(())
        },
    },
    Override {
        key: "initrd",
        measured: true,
        apply: |s, v| {
            s.vm.initrd = v.into();
            Ok(())
        },
    },
    Override {
        key: "firmware",
        measured: true,
        apply: |s, v| {
            s.vm.firmware.boot = v.into();
            Ok(())
        },
    },
    Override {
        key: "cmdline",
        measured: true,
        apply: |s, v| {
            v.clone_into(&mut s.vm.cmdline);
            Ok(())
        },
    },
];

fn bounded_secs(v: &str) -> Result<u32, &'static str> {
    match parse_u32(v)? {
        s @ 1..=3600 => Ok(s),
        _ => Err("expected 1 to 3600 seconds"),
    }
}

/// The container's role from its CRI annotations.
pub fn role(annotations: &HashMap<String, String>) -> Result<Role, AnnotationError> {
    match annotations.get(CRI_CONTAINER_TYPE).map(String::as_str) {
        None => Ok(Role::Standalone),
        Some("sandbox") => Ok(Role::Sandbox),
        Some("container") => {
            let sandbox_id = annotations
                .get(CRI_SANDBOX_ID)
                .ok_or(AnnotationError::Cri {
                    key: CRI_SANDBOX_ID,
                    why: "a CRI container must name its sandbox",
                })?;
            if !is_valid_id(sandbox_id) {
                return Err(AnnotationError::Cri {
                    key: CRI_SANDBOX_ID,
                    why: "not a containerd identifier",
                });
            }
            Ok(Role::Container {
                sandbox_id: sandbox_id.clone(),
            })
        }
        Some(_) => Err(AnnotationError::Cri {
            key: CRI_CONTAINER_TYPE,
            why: "expected sandbox or container",
        }),
    }
}

/// Which shim serves container `id`: the one of its pod's sandbox. `shim start` groups a CRI
/// pod's containers into one shim (and one VM) by this.
pub fn grouping_id(id: &str, annotations: &HashMap<String, String>) -> String {
    match role(annotations) {
        Ok(Role::Container { sandbox_id }) => sandbox_id,
        // A broken annotation gets its own shim, whose create reports the error.
        _ => id.to_owned(),
    }
}

/// The image the guest pulls for this container.
pub fn image(annotations: &HashMap<String, String>) -> Result<String, AnnotationError> {
    let image = annotations
        .get(CRI_IMAGE_NAME)
        .or_else(|| annotations.get(TSUBA_IMAGE))
        .ok_or(AnnotationError::NoImage)?;
    if image.is_empty() || image.len() > MAX_IMAGE_REFERENCE {
        return Err(AnnotationError::Value {
            key: TSUBA_IMAGE.to_owned(),
            value: truncate(image),
            why: "an image reference of 1 to 512 bytes",
        });
    }
    Ok(image.clone())
}

/// Checks every `io.tsuba.` annotation and applies the overrides to `settings`.
pub fn apply_overrides(
    annotations: &HashMap<String, String>,
    settings: &mut Settings,
    allow_measured: bool,
) -> Result<(), AnnotationError> {
    let mut keys: Vec<_> = annotations
        .keys()
        .filter(|k| k.starts_with(TSUBA_PREFIX))
        .collect();
    // Sorted, so the error names the same key every time.
    keys.sort();
    for key in keys {
        if key == TSUBA_IMAGE {
            continue;
        }
        let value = &annotations[key];
        let over = key
            .strip_prefix(CONFIG_PREFIX)
            .and_then(|name| OVERRIDES.iter().find(|o| o.key == name))
            .ok_or_else(|| AnnotationError::Unknown(key.clone()))?;
        if over.measured && !allow_measured {
            return Err(AnnotationError::Measured(key.clone()));
        }
        if value.len() > MAX_VALUE {
            return Err(AnnotationError::Value {
                key: key.clone(),
                value: truncate(value),
                why: "at most 4096 bytes",
            });
        }
        (over.apply)(settings, value).map_err(|why| AnnotationError::Value {
            key: key.clone(),
            value: truncate(value),
            why,
        })?;
    }
    Ok(())
}

fn truncate(v: &str) -> String {
    v.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn settings() -> Settings {
        let vm: LaunchConfigFile = toml::from_str(
            "mode = \"sim-snp\"\nkernel = \"k\"\ninitrd = \"i\"\n[firmware]\nboot = \"b\"\n",
        )
        .unwrap();
        Settings {
            vm,
            timeouts: Timeouts::default(),
        }
    }

    #[test]
    fn ctr_containers_are_standalone_and_cri_containers_join_their_sandbox() {
        assert_eq!(role(&ann(&[])).unwrap(), Role::Standalone);
        assert_eq!(
            role(&ann(&[(CRI_CONTAINER_TYPE, "sandbox")])).unwrap(),
            Role::Sandbox
        );
        let c = ann(&[(CRI_CONTAINER_TYPE, "container"), (CRI_SANDBOX_ID, "pod1")]);
        assert_eq!(
            role(&c).unwrap(),
            Role::Container {
                sandbox_id: "pod1".into()
            }
        );
        assert_eq!(grouping_id("c1", &c), "pod1");
        assert_eq!(grouping_id("c1", &ann(&[])), "c1");
        assert_eq!(
            grouping_id("pod1", &ann(&[(CRI_CONTAINER_TYPE, "sandbox")])),
            "pod1"
        );
        assert!(Role::Standalone.owns_vm() && Role::Sandbox.owns_vm());
        assert!(!role(&c).unwrap().owns_vm());
    }

    #[test]
    fn broken_cri_annotations_are_refused() {
        let err = role(&ann(&[(CRI_CONTAINER_TYPE, "container")])).unwrap_err();
        assert_eq!(
            err,
            AnnotationError::Cri {
                key: CRI_SANDBOX_ID,
                why: "a CRI container must name its sandbox"
            }
        );
        let err = role(&ann(&[
            (CRI_CONTAINER_TYPE, "container"),
            (CRI_SANDBOX_ID, "../etc"),
        ]))
        .unwrap_err();
        assert!(
            matches!(
                err,
                AnnotationError::Cri {
                    key: CRI_SANDBOX_ID,
                    ..
                }
            ),
            "{err}"
        );
        let err = role(&ann(&[(CRI_CONTAINER_TYPE, "pod")])).unwrap_err();
        assert!(
            matches!(
                err,
                AnnotationError::Cri {
                    key: CRI_CONTAINER_TYPE,
                    ..
                }
            ),
            "{err}"
        );
        // A broken pod gets its own shim, which reports the error at create.
        assert_eq!(
            grouping_id("c1", &ann(&[(CRI_CONTAINER_TYPE, "container")])),
            "c1"
        );
    }

    #[test]
    fn image_comes_from_cri_first_then_tsuba() {
        assert_eq!(
            image(&ann(&[(TSUBA_IMAGE, "r/a:1"), (CRI_IMAGE_NAME, "r/b:1")])).unwrap(),
            "r/b:1"
        );
        assert_eq!(image(&ann(&[(TSUBA_IMAGE, "r/a:1")])).unwrap(), "r/a:1");
        assert_eq!(image(&ann(&[])).unwrap_err(), AnnotationError::NoImage);
        let long = "r/".to_owned() + &"a".repeat(MAX_IMAGE_REFERENCE);
        assert!(matches!(
            image(&ann(&[(TSUBA_IMAGE, &long)])).unwrap_err(),
            AnnotationError::Value { .. }
        ));
    }

    fn gzip_base64(bytes: &[u8]) -> String {
        use base64::Engine as _;
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(bytes).unwrap();
        base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap())
    }

    #[test]
    fn initdata_comes_from_kata_s_annotation_gzip_then_base64() {
        let doc = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"a\" = \"b\"\n";
        let parsed = initdata(&ann(&[(INITDATA_ANNOTATION, &gzip_base64(doc.as_bytes()))]))
            .unwrap()
            .unwrap();
        assert_eq!(parsed.as_str(), doc);
        assert_eq!(initdata(&ann(&[])).unwrap(), None);
        for (bad, why) in [
            ("%%%".to_owned(), "not base64"),
            (gzip_base64(b"not toml at all"), "not valid initdata toml"),
            ("aGVsbG8=".to_owned(), "not gzip"),
            (
                gzip_base64(&vec![b'#'; tsuba_policy::MAX_INITDATA_LEN + 1]),
                "larger than",
            ),
        ] {
            let err = initdata(&ann(&[(INITDATA_ANNOTATION, &bad)])).unwrap_err();
            assert!(err.to_string().contains(why), "{why}: {err}");
        }
    }

    #[test]
    fn whitelisted_overrides_apply() {
        let mut s = settings();
        apply_overrides(
            &ann(&[
                ("io.tsuba.config.memory_mib", "1024"),
                ("io.tsuba.config.create_secs", "60"),
                (TSUBA_IMAGE, "r/a:1"),
                ("io.kubernetes.cri.whatever", "x"),
            ]),
            &mut s,
            false,
        )
        .unwrap();
        assert_eq!(s.vm.memory_mib, 1024);
        assert_eq!(s.timeouts.create_secs, 60);
    }

    #[test]
    fn unknown_tsuba_annotations_are_refused_naming_them() {
        let mut s = settings();
        for key in [
            "io.tsuba.config.nope",
            "io.tsuba.imagex",
            "io.tsuba.config.",
        ] {
            let err = apply_overrides(&ann(&[(key, "1")]), &mut s, true).unwrap_err();
            assert_eq!(err, AnnotationError::Unknown(key.to_owned()));
            assert!(
                err.to_string()
                    .starts_with(&format!("unknown annotation {key}:"))
            );
        }
    }

    #[test]
    fn measured_overrides_need_the_config_to_allow_them() {
        for key in ["kernel", "initrd", "firmware", "cmdline", "vcpus"] {
            let key = format!("io.tsuba.config.{key}");
            let mut s = settings();
            let err = apply_overrides(&ann(&[(&key, "2")]), &mut s, false).unwrap_err();
            assert_eq!(err, AnnotationError::Measured(key.clone()));
            apply_overrides(&ann(&[(&key, "2")]), &mut s, true).unwrap();
        }
        let mut s = settings();
        apply_overrides(&ann(&[("io.tsuba.config.kernel", "/k2")]), &mut s, true).unwrap();
        assert_eq!(s.vm.kernel, std::path::PathBuf::from("/k2"));
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        let mut s = settings();
        for (key, value) in [
            ("io.tsuba.config.memory_mib", "lots"),
            ("io.tsuba.config.create_secs", "0"),
            ("io.tsuba.config.unresponsive_secs", "99999"),
            ("io.tsuba.config.agent_ready_secs", "-1"),
        ] {
            let err = apply_overrides(&ann(&[(key, value)]), &mut s, false).unwrap_err();
            assert!(
                matches!(&err, AnnotationError::Value { key: k, .. } if k == key),
                "{err}"
            );
        }
        let err =
            apply_overrides(&ann(&[("io.tsuba.config.vcpus", "256")]), &mut s, true).unwrap_err();
        assert!(matches!(
            err,
            AnnotationError::Value {
                why: "expected 1 to 255",
                ..
            }
        ));
        let big = "1".repeat(MAX_VALUE + 1);
        let err = apply_overrides(&ann(&[("io.tsuba.config.memory_mib", &big)]), &mut s, false)
            .unwrap_err();
        assert!(matches!(
            err,
            AnnotationError::Value {
                why: "at most 4096 bytes",
                ..
            }
        ));
    }
}
