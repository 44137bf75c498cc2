//! Writes the seed corpus (`fuzz/corpus/<target>/`): valid samples made with the project's own
//! encoders, plus real evidence copied from a folder given with `--real-evidence DIR` (the
//! shared test data: Trustee's and dcap-qvl's public samples, see corpus/PROVENANCE.md). The
//! OpenPGP-signed seeds of `simple_signing` are made with gpg once and kept as they are.
//!
//! `cargo run --bin tsuba-fuzz-seeds -- [--real-evidence DIR] [OUT]` (OUT: fuzz/corpus).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use protobuf::Message as _;
use serde_json::json;
use tsuba_attestation_agent::kbs::{TeeKey, TeeKeyKind};
use tsuba_fuzz::seeds;
use tsuba_image_rs::Digest;
use tsuba_image_rs::ocicrypt::{KeyId, PrivateKey, Recipients, encrypt_layer};
use tsuba_image_rs::signature::{PayloadKind, SignedPayload};
use tsuba_protocols::agent::{
    CheckRequest, CreateContainerRequest, DiagnosticReportRequest, ProvideInitdataRequest,
    PullImageRequest, SignalProcessRequest, VersionRequest,
};
use tsuba_protocols::evidence::{GUID_ARK, GUID_VCEK, ReportData, SnpCertEntry, SnpCertTable};
use tsuba_protocols::simdev::{Request, Response, SimTee, encode_request, encode_response};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut real = None;
    let mut out = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/corpus"));
    while let Some(arg) = args.next() {
        if arg == "--real-evidence" {
            real = Some(PathBuf::from(
                args.next().context("--real-evidence needs a folder")?,
            ));
        } else {
            out = PathBuf::from(arg);
        }
    }
    let w = Writer { out };
    evidence(&w, real.as_deref())?;
    firmware(&w, real.as_deref())?;
    kbs(&w)?;
    image(&w)?;
    agent(&w)?;
    simdev(&w)?;
    Ok(())
}

struct Writer {
    out: PathBuf,
}

impl Writer {
    fn put(&self, target: &str, name: &str, bytes: &[u8]) -> Result<()> {
        let dir = self.out.join(target);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    }

    /// A seed whose first byte selects what the target does with the rest.
    fn put_selected(&self, target: &str, name: &str, selector: u8, rest: &[u8]) -> Result<()> {
        let mut bytes = vec![selector];
        bytes.extend_from_slice(rest);
        self.put(target, name, &bytes)
    }
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>> {
    let path = dir.join(name);
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

fn evidence(w: &Writer, real: Option<&Path>) -> Result<()> {
    let Some(real) = real else { return Ok(()) };
    let snp = real.join("snp");
    let tdx = real.join("tdx");
    for name in ["trustee-test-report.bin", "trustee-test-vlek-report.bin"] {
        w.put("snp_report", name, &read(&snp, name)?)?;
    }
    let hex_text = String::from_utf8(read(&snp, "sev-report_milan.hex")?)?;
    let milan: String = hex_text.chars().filter(char::is_ascii_hexdigit).collect();
    w.put("snp_report", "sev-report_milan.bin", &hex::decode(milan)?)?;
    let table = SnpCertTable {
        entries: vec![
            SnpCertEntry {
                guid: GUID_VCEK,
                data: read(&snp, "trustee-test-vcek.der")?,
            },
            SnpCertEntry {
                guid: GUID_ARK,
                data: vec![0x30, 0x03, 0x02, 0x01, 0x01],
            },
        ],
    };
    w.put("snp_cert_table", "vcek-and-ark.bin", &table.to_bytes()?)?;
    w.put(
        "snp_cert_table",
        "empty.bin",
        &SnpCertTable::default().to_bytes()?,
    )?;
    for name in [
        "dcapqvl-tdx_quote",
        "trustee-tdx_quote_4.dat",
        "trustee-tdx_quote_5.dat",
    ] {
        w.put("tdx_quote", name, &read(&tdx, name)?)?;
    }
    for name in ["trustee-CCEL_data", "trustee-CCEL_data_ovmf"] {
        let mut log = read(&tdx, name)?;
        // The logs come in fixed buffers padded with 0xff (OVMF) or zeros (td-shim), which
        // the parser allows: keep eight bytes of it.
        if let Some(&pad) = log.last().filter(|&&b| b == 0 || b == 0xff) {
            while log.last() == Some(&pad) {
                log.pop();
            }
            log.extend_from_slice(&[pad; 8]);
        }
        w.put("cc_eventlog", name, &log)?;
    }
    Ok(())
}

fn firmware(w: &Writer, _real: Option<&Path>) -> Result<()> {
    // Debian's OVMF (SEV and TDX metadata): its last 64 KiB hold the footer table and both
    // metadata blocks, which the target finds from the end of the image.
    for (name, path) in [
        ("ovmf-code-tail", "/usr/share/OVMF/OVMF_CODE.fd"),
        ("ovmf-code-4m-tail", "/usr/share/OVMF/OVMF_CODE_4M.fd"),
    ] {
        if let Ok(image) = std::fs::read(path) {
            w.put(
                "ovmf_metadata",
                name,
                &image[image.len().saturating_sub(64 << 10)..],
            )?;
        }
    }
    let doc = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n\n[data]\n\"policy.rego\" = '''\npackage agent_policy\ndefault AllowRequestsFailingPolicy := false\n'''\n\"aa.toml\" = '''\n[token_configs.kbs]\nurl = \"https://127.0.0.1:8080\"\n'''\n";
    w.put("initdata", "sha384.toml", doc.as_bytes())?;
    w.put(
        "initdata",
        "sha256.toml",
        doc.replace("sha384", "sha256").as_bytes(),
    )?;
    w.put(
        "initdata",
        "sha512.toml",
        doc.replace("sha384", "sha512").as_bytes(),
    )?;
    Ok(())
}

fn kbs(w: &Writer) -> Result<()> {
    for tee in ["snp", "tdx", "sample", "sgx"] {
        let body = json!({"version": "0.4.0", "tee": tee, "extra-params": ""});
        w.put("kbs_auth", tee, body.to_string().as_bytes())?;
    }
    let key = TeeKey::generate(TeeKeyKind::EcP256)?;
    let jwk = key.public_jwk();
    let nonce = String::from_utf8(seeds::NONCE_MARKER.to_vec())?;
    let binding = String::from_utf8(seeds::BINDING_MARKER.to_vec())?;
    let attestation = |evidence: serde_json::Value| {
        json!({
            "init-data": null,
            "runtime-data": {"nonce": nonce, "tee-pubkey": jwk},
            "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""},
        })
        .to_string()
    };
    let sample = attestation(json!({"report_data": binding, "svn": "1"}));
    w.put_selected("kbs_attest", "sample", 2, sample.as_bytes())?;
    let report = STANDARD.encode(vec![0u8; 1184]);
    let snp = attestation(json!({"report": report, "cert_table": null}));
    w.put_selected("kbs_attest", "snp", 0, snp.as_bytes())?;
    let tdx = attestation(json!({"quote": STANDARD.encode(vec![0u8; 632]), "cc_eventlog": null}));
    w.put_selected("kbs_attest", "tdx", 1, tdx.as_bytes())?;

    // JWE answers shaped as the broker's (flattened JSON), for the guest's EC and RSA keys.
    let protected = |header: serde_json::Value| URL_SAFE_NO_PAD.encode(header.to_string());
    let jwe = |protected: String, encrypted_key: usize| {
        json!({
            "protected": protected,
            "encrypted_key": URL_SAFE_NO_PAD.encode(vec![7u8; encrypted_key]),
            "iv": URL_SAFE_NO_PAD.encode([1u8; 12]),
            "ciphertext": URL_SAFE_NO_PAD.encode(b"secret resource"),
            "tag": URL_SAFE_NO_PAD.encode([2u8; 16]),
        })
        .to_string()
    };
    let ec = protected(json!({"alg": "ECDH-ES+A256KW", "enc": "A256GCM",
        "epk": {"kty": "EC", "crv": "P-256", "x": jwk["x"], "y": jwk["y"]}}));
    w.put_selected("jwe_tee_key", "ec", 0, jwe(ec, 40).as_bytes())?;
    let rsa = protected(json!({"alg": "RSA-OAEP-256", "enc": "A256GCM"}));
    w.put_selected("jwe_tee_key", "rsa", 1, jwe(rsa, 256).as_bytes())?;
    Ok(())
}

fn image(w: &Writer) -> Result<()> {
    use tsuba_fuzz::seeds::{OCICRYPT_KEY_PEM, PROVIDER_KEK, PROVIDER_KEY_ID};
    let layer = tar_layer()?;
    let digest = Digest::of(&layer);
    let public = PrivateKey::from_pem(OCICRYPT_KEY_PEM)?.public_key();
    let kek = zeroize_vec(PROVIDER_KEK.to_vec());
    for (name, recipients) in [
        (
            "jwe",
            Recipients {
                jwe: vec![public.clone()],
                provider: None,
            },
        ),
        (
            "provider",
            Recipients {
                jwe: vec![],
                provider: Some((KeyId::parse(PROVIDER_KEY_ID)?, kek.clone())),
            },
        ),
        (
            "both",
            Recipients {
                jwe: vec![public],
                provider: Some((KeyId::parse(PROVIDER_KEY_ID)?, kek)),
            },
        ),
    ] {
        let encrypted = encrypt_layer(&layer[..], std::io::sink(), &digest, &recipients)?;
        w.put(
            "ocicrypt_keys",
            name,
            serde_json::to_string(&encrypted.annotations)?.as_bytes(),
        )?;
    }

    let config_digest = Digest::of(b"{}");
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest.to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
                    "digest": digest.to_string(), "size": layer.len(),
                    "annotations": {"org.opencontainers.image.enc.pubopts": "e30="}}],
        "annotations": {"org.opencontainers.image.ref.name": "1"},
    });
    w.put("oci_manifest", "manifest", manifest.to_string().as_bytes())?;
    let index = json!({
        "schemaVersion": 2,
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest.to_string(),
             "size": 500, "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": config_digest.to_string(),
             "size": 500, "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
        ],
    });
    w.put("oci_manifest", "index", index.to_string().as_bytes())?;
    let list = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": index["manifests"],
    });
    w.put("oci_manifest", "docker-list", list.to_string().as_bytes())?;
    let config = json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [digest.to_string()]}, "config": {"Cmd": ["/app"]}});
    w.put("oci_manifest", "config", config.to_string().as_bytes())?;

    w.put("tar_unpack", "plain.tar", &layer)?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&layer)?;
    w.put("tar_unpack", "layer.tar.gz", &gz.finish()?)?;
    w.put(
        "tar_unpack",
        "layer.tar.zst",
        &zstd::encode_all(&layer[..], 3)?,
    )?;
    w.put("tar_unpack", "whiteouts.tar", &whiteout_layer()?)?;

    for (name, policy) in [
        (
            "accept-anything",
            json!({"default": [{"type": "insecureAcceptAnything"}]}),
        ),
        (
            "scoped",
            json!({"default": [{"type": "reject"}], "transports": {"docker": {
            "reg.io/team": [{"type": "insecureAcceptAnything"}],
            "*.internal": [{"type": "reject"}],
            "registry.example:5000/fuzz": [{"type": "signedBy", "keyType": "GPGKeys",
                "keyData": STANDARD.encode(tsuba_fuzz::seeds::SIGNING_KEYRING),
                "signedIdentity": {"type": "matchRepository"}}]}}}),
        ),
        (
            "sigstore",
            json!({"default": [{"type": "sigstoreSigned",
            "keyData": STANDARD.encode(b"-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n"),
            "signedIdentity": {"type": "remapIdentity", "prefix": "a.io", "signedPrefix": "b.io"}}]}),
        ),
    ] {
        w.put("containers_policy", name, policy.to_string().as_bytes())?;
    }

    let manifest_digest: Digest = tsuba_fuzz::seeds::SIGNED_MANIFEST.parse()?;
    let simple = SignedPayload::new(
        PayloadKind::SimpleSigning,
        tsuba_fuzz::seeds::SIGNED_REFERENCE,
        manifest_digest,
    )
    .with_creator("tsuba fuzz seeds")
    .with_timestamp(1_700_000_000);
    w.put_selected("simple_signing", "payload-simple", 1, &simple.to_json())?;
    let cosign = SignedPayload::new(
        PayloadKind::Cosign,
        tsuba_fuzz::seeds::SIGNED_REFERENCE,
        manifest_digest,
    );
    w.put_selected("simple_signing", "payload-cosign", 2, &cosign.to_json())?;
    w.put_selected(
        "simple_signing",
        "keyring",
        3,
        tsuba_fuzz::seeds::SIGNING_KEYRING,
    )?;
    Ok(())
}

fn zeroize_vec(v: Vec<u8>) -> zeroize::Zeroizing<Vec<u8>> {
    zeroize::Zeroizing::new(v)
}

fn tar_layer() -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    b.append_data(&mut dir, "etc/", std::io::empty())?;
    let content = b"hello from a fuzz seed\n";
    let mut file = tar::Header::new_gnu();
    file.set_mode(0o644);
    file.set_size(content.len() as u64);
    b.append_data(&mut file, "etc/hello", &content[..])?;
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    b.append_link(&mut link, "etc/link", "hello")?;
    let mut hard = tar::Header::new_gnu();
    hard.set_entry_type(tar::EntryType::Link);
    hard.set_size(0);
    b.append_link(&mut hard, "etc/hard", "etc/hello")?;
    let mut abs = tar::Header::new_gnu();
    abs.set_entry_type(tar::EntryType::Symlink);
    abs.set_size(0);
    b.append_link(&mut abs, "etc/abs", "/etc/passwd")?;
    Ok(b.into_inner()?)
}

fn whiteout_layer() -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for name in ["etc/.wh.hello", "var/.wh..wh..opq"] {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(0);
        b.append_data(&mut h, name, std::io::empty())?;
    }
    Ok(b.into_inner()?)
}

/// The OCI spec `ctr run` writes (containerd 1.6's defaults), with a memory limit and a small
/// seccomp profile in Docker's shape.
const CTR_SPEC: &str = r#"{"ociVersion":"1.1.0","process":{"user":{"uid":0,"gid":0,"additionalGids":[10]},"args":["sh","-c","echo hi"],"env":["PATH=/bin","TERM=xterm"],"cwd":"/","capabilities":{"bounding":["CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FSETID","CAP_FOWNER","CAP_MKNOD","CAP_NET_RAW","CAP_SETGID","CAP_SETUID","CAP_SETFCAP","CAP_SETPCAP","CAP_NET_BIND_SERVICE","CAP_SYS_CHROOT","CAP_KILL","CAP_AUDIT_WRITE"],"effective":["CAP_CHOWN","CAP_KILL"],"permitted":["CAP_CHOWN","CAP_KILL"]},"rlimits":[{"type":"RLIMIT_NOFILE","hard":1024,"soft":1024}],"noNewPrivileges":true},"root":{"path":"rootfs"},"hostname":"c1","mounts":[{"destination":"/proc","type":"proc","source":"proc","options":["nosuid","noexec","nodev"]},{"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","strictatime","mode=755","size=65536k"]},{"destination":"/dev/pts","type":"devpts","source":"devpts","options":["nosuid","noexec","newinstance","ptmxmode=0666","mode=0620","gid=5"]},{"destination":"/dev/shm","type":"tmpfs","source":"shm","options":["nosuid","noexec","nodev","mode=1777","size=65536k"]},{"destination":"/dev/mqueue","type":"mqueue","source":"mqueue","options":["nosuid","noexec","nodev"]},{"destination":"/sys","type":"sysfs","source":"sysfs","options":["nosuid","noexec","nodev","ro"]},{"destination":"/run","type":"tmpfs","source":"tmpfs","options":["nosuid","strictatime","mode=755","size=65536k"]}],"linux":{"resources":{"devices":[{"allow":false,"access":"rwm"}],"memory":{"limit":16777216}},"namespaces":[{"type":"pid"},{"type":"ipc"},{"type":"uts"},{"type":"mount"},{"type":"network"}],"maskedPaths":["/proc/kcore","/sys/firmware"],"readonlyPaths":["/proc/sys","/proc/sysrq-trigger"],"seccomp":{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],"syscalls":[{"names":["read","write","exit_group"],"action":"SCMP_ACT_ALLOW"},{"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":0,"op":"SCMP_CMP_EQ"}]},{"names":["clone"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]},{"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}}}"#;

fn agent(w: &Writer) -> Result<()> {
    let frame =
        |stream_id: u32, service: &str, method: &str, payload: Vec<u8>| -> Result<Vec<u8>> {
            let mut req = ttrpc::Request::new();
            req.service = service.into();
            req.method = method.into();
            req.payload = payload;
            let body = req.write_to_bytes()?;
            let mut out = Vec::new();
            out.extend_from_slice(&u32::try_from(body.len())?.to_be_bytes());
            out.extend_from_slice(&stream_id.to_be_bytes());
            out.push(ttrpc::proto::MESSAGE_TYPE_REQUEST);
            out.push(0);
            out.extend_from_slice(&body);
            Ok(out)
        };
    let mut check = CheckRequest::new();
    check.service = "tsuba.agent.v1.Image".into();
    let mut diag = DiagnosticReportRequest::new();
    diag.nonce = b"fuzz-nonce".to_vec();
    let mut pull = PullImageRequest::new();
    pull.image = "registry.example:5000/app:1".into();
    let check = frame(1, "tsuba.agent.v1.Health", "Check", check.write_to_bytes()?)?;
    let version = frame(
        3,
        "tsuba.agent.v1.Health",
        "Version",
        VersionRequest::new().write_to_bytes()?,
    )?;
    let diag = frame(
        5,
        "tsuba.agent.v1.Attestation",
        "GetDiagnosticReport",
        diag.write_to_bytes()?,
    )?;
    let pull = frame(7, "tsuba.agent.v1.Image", "Pull", pull.write_to_bytes()?)?;
    // The spec `ctr run` sends, with a memory limit: it passes every check of the agent's.
    let mut create = CreateContainerRequest::new();
    create.container_id = "c1".into();
    create.sandbox_id = "c1".into();
    create.image = "10.0.2.2:5000/app:1".into();
    create.oci_spec = CTR_SPEC.as_bytes().to_vec();
    let create = frame(
        9,
        "tsuba.agent.v1.Container",
        "CreateContainer",
        create.write_to_bytes()?,
    )?;
    let mut signal = SignalProcessRequest::new();
    signal.container_id = "c1".into();
    signal.signal = 15;
    let signal = frame(
        11,
        "tsuba.agent.v1.Container",
        "SignalProcess",
        signal.write_to_bytes()?,
    )?;
    // The pod's initdata: broker settings and a generated-shape policy listing the container
    // above (parsed, checked and compiled by the agent's gate).
    let mut data = tsuba_policy::GuestSettings {
        kbs_url: Some("https://10.0.2.2:8443".into()),
        kbs_pin: Some(format!("sha256:{}", "ab".repeat(32))),
        image_policy: Some("kbs:///default/security-policy/app".into()),
        plain_http_registries: vec!["10.0.2.2:5000".into()],
        ..tsuba_policy::GuestSettings::default()
    }
    .to_entries()?;
    let policy = tsuba_policy::PolicyData {
        containers: vec![tsuba_policy::ContainerPolicy {
            name: String::new(),
            image: "10.0.2.2:5000/app:1".into(),
            signed: true,
            args: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: vec!["PATH=/bin".into(), "TERM=xterm".into()],
            env_any_value: Vec::new(),
            cwd: "/".into(),
            uid: Some(0),
            capabilities: vec!["CAP_CHOWN".into(), "CAP_KILL".into()],
            mounts: Vec::new(),
            seccomp_required: true,
            no_new_privileges: true,
            exec: vec![vec!["cat".into(), "/etc/hostname".into()]],
        }],
        ..tsuba_policy::PolicyData::default()
    };
    data.insert(
        tsuba_policy::POLICY_REGO.into(),
        tsuba_policy::render_policy(&policy),
    );
    let initdata = tsuba_policy::render_initdata(tsuba_policy::InitdataAlgorithm::Sha384, &data)?;
    let mut provide = ProvideInitdataRequest::new();
    provide.document = initdata.as_str().as_bytes().to_vec();
    let provide = frame(
        13,
        "tsuba.agent.v1.Initdata",
        "Provide",
        provide.write_to_bytes()?,
    )?;
    w.put("agent_request", "provide-initdata", &provide)?;
    w.put(
        "agent_request",
        "initdata-then-create",
        &[provide.clone(), create.clone()].concat(),
    )?;
    w.put("agent_request", "create-container", &create)?;
    w.put("agent_request", "signal-process", &signal)?;
    w.put("agent_request", "check", &check)?;
    w.put("agent_request", "version", &version)?;
    w.put("agent_request", "diagnostic-report", &diag)?;
    w.put("agent_request", "pull", &pull)?;
    w.put(
        "agent_request",
        "all",
        &[check, version, diag, pull, create, signal].concat(),
    )?;
    Ok(())
}

fn simdev(w: &Writer) -> Result<()> {
    let requests = [
        encode_request(1, &Request::Info),
        encode_request(
            2,
            &Request::SnpReport {
                report_data: ReportData([7; 64]),
                vmpl: 0,
            },
        ),
        encode_request(
            3,
            &Request::TdxQuote {
                report_data: ReportData([9; 64]),
            },
        ),
    ];
    w.put_selected("simdev_frames", "requests", 0, &requests.concat())?;
    let responses = [
        encode_response(1, &Response::Info { tee: SimTee::Snp })?,
        encode_response(
            2,
            &Response::SnpReport {
                report: vec![1; 1184],
                cert_table: vec![0; 24],
            },
        )?,
        encode_response(
            3,
            &Response::TdxQuote {
                quote: vec![4; 700],
            },
        )?,
        encode_response(
            4,
            &Response::Error {
                code: tsuba_protocols::simdev::ErrorCode::WrongTee,
                message: "wrong tee".into(),
            },
        )?,
    ];
    w.put_selected("simdev_frames", "responses", 1, &responses.concat())?;
    Ok(())
}
