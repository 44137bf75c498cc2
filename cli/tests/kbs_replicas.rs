//! The key broker as a fleet: three `tsuba kbs serve --database` replicas on one PostgreSQL
//! server that the test starts in a temporary folder. Any step of the exchange on any replica,
//! nonces and admin tokens single-use across replicas, tokens accepted by every replica, policy
//! changes applied at once, a database outage answered with 503 and recovered from without a
//! restart, a newer schema refused, no plaintext in a dump, and export/import between the
//! folder and the database.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed unwrap is a failed test"
)]

mod encrypt_support;
mod pg_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use pg_support::{Backend, Keys, Postgres, Replica};
use serde_json::{Value, json};
use tsuba_attestation_agent::kbs::{EvidenceProvider, InsecureSampleEvidence, TeeKey, TeeKeyKind};
use tsuba_kbs::BindingDigest;

const AUTH: &str = r#"{"version":"0.4.0","tee":"sample","extra-params":""}"#;
const AUTH_SNP: &str = r#"{"version":"0.4.0","tee":"snp","extra-params":""}"#;
const SECRET: &[u8] = b"fleet-secret-0123456789";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A reply: status, the problem `type` name (for errors) and the body.
struct Reply {
    status: u16,
    body: Vec<u8>,
    cookie: Option<String>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn kind(&self) -> String {
        self.json()["type"]
            .as_str()
            .unwrap_or("")
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_owned()
    }

    fn detail(&self) -> String {
        self.json()["detail"].as_str().unwrap_or("").to_owned()
    }
}

async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    Reply {
        status,
        cookie,
        body: response.bytes().await.unwrap().to_vec(),
    }
}

/// The launch measurement of the load bench's simulated SNP guests.
const SIM_MEASUREMENT: [u8; 48] = [0x42; 48];

/// What a guest attests with: Trustee's unsigned sample evidence, or a simulated SNP report
/// signed by tee-sim (the broker verifies its certificate chain and signature).
#[derive(Clone)]
enum Evidence {
    Sample,
    SimSnp(Arc<tsuba_tee_sim::SimAmdSp>),
}

impl Evidence {
    /// The `auth` request body.
    fn auth(&self) -> &'static str {
        match self {
            Self::Sample => AUTH,
            Self::SimSnp(_) => AUTH_SNP,
        }
    }

    fn evidence(&self, binding: &[u8; 48]) -> Value {
        match self {
            Self::Sample => InsecureSampleEvidence::default().evidence(binding).unwrap(),
            Self::SimSnp(sp) => {
                let mut report_data = [0u8; 64];
                report_data[..48].copy_from_slice(binding);
                let signed = sp
                    .report(&tsuba_tee_sim::SnpReportRequest::new(
                        SIM_MEASUREMENT,
                        [0; 32],
                        tsuba_protocols::evidence::ReportData(report_data),
                    ))
                    .unwrap();
                let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
                json!({"report": b64(&signed.report), "cert_table": b64(&signed.cert_table)})
            }
        }
    }
}

/// A guest: its ephemeral key and its evidence.
struct Guest {
    key: TeeKey,
    evidence: Evidence,
}

impl Guest {
    fn new() -> Self {
        Self::with(Evidence::Sample)
    }

    fn with(evidence: Evidence) -> Self {
        Self {
            key: TeeKey::generate(TeeKeyKind::EcP256).unwrap(),
            evidence,
        }
    }

    /// `auth` on `url`: the session cookie and the nonce.
    async fn auth(&self, url: &str) -> (String, String) {
        let reply = send(
            http()
                .post(format!("{url}/kbs/v0/auth"))
                .header("content-type", "application/json")
                .body(AUTH),
        )
        .await;
        assert_eq!(reply.status, 200, "auth: {}", reply.detail());
        (
            reply.cookie.clone().unwrap(),
            reply.json()["nonce"].as_str().unwrap().to_owned(),
        )
    }

    /// The attestation body for `nonce`.
    fn attestation(&self, nonce: &str) -> String {
        let jwk = self.key.public_jwk();
        let binding = BindingDigest::compute(nonce, &jwk, "");
        let evidence = self.evidence.evidence(binding.as_bytes());
        json!({
            "init-data": null,
            "runtime-data": {"nonce": nonce, "tee-pubkey": jwk},
            "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""},
        })
        .to_string()
    }

    async fn attest(&self, url: &str, cookie: &str, body: &str) -> Reply {
        send(
            http()
                .post(format!("{url}/kbs/v0/attest"))
                .header("cookie", cookie)
                .header("content-type", "application/json")
                .body(body.to_owned()),
        )
        .await
    }

    /// The resource by cookie or bearer token; on 200 the plaintext is decrypted.
    async fn resource(&self, url: &str, auth: Auth<'_>, path: &str) -> (Reply, Option<Vec<u8>>) {
        let mut request = http().get(format!("{url}/kbs/v0/resource/{path}"));
        request = match auth {
            Auth::Cookie(cookie) => request.header("cookie", cookie),
            Auth::Token(token) => request.header("authorization", format!("Bearer {token}")),
        };
        let reply = send(request).await;
        let plain = (reply.status == 200).then(|| self.key.decrypt(&reply.body).unwrap().to_vec());
        (reply, plain)
    }

    /// auth, attest and resource all on `url`; the plaintext.
    async fn fetch(&self, url: &str, path: &str) -> Vec<u8> {
        let (cookie, nonce) = self.auth(url).await;
        let reply = self.attest(url, &cookie, &self.attestation(&nonce)).await;
        assert_eq!(reply.status, 200, "attest: {}", reply.detail());
        let (reply, plain) = self.resource(url, Auth::Cookie(&cookie), path).await;
        assert_eq!(reply.status, 200, "resource: {}", reply.detail());
        plain.unwrap()
    }
}

enum Auth<'a> {
    Cookie(&'a str),
    Token(&'a str),
}

async fn admin_post(url: &str, bearer: &str, path: &str, body: Vec<u8>) -> Reply {
    send(
        http()
            .post(format!("{url}{path}"))
            .header("authorization", bearer)
            .header("content-type", "application/octet-stream")
            .body(body),
    )
    .await
}

async fn admin_ok(url: &str, keys: &Keys, path: &str, body: Vec<u8>) {
    let reply = admin_post(url, &keys.bearer(), path, body).await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.detail());
}

fn policy_upload(rego: &str) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rego);
    json!({ "policy": encoded }).to_string().into_bytes()
}

/// Reference values and one resource, through `url`.
async fn provision(url: &str, keys: &Keys) {
    admin_ok(
        url,
        keys,
        "/kbs/v0/reference-values",
        // The sample evidence's launch digest, and the load bench's simulated SNP guests'.
        json!({"measurement": ["abcde", hex::encode(SIM_MEASUREMENT)]})
            .to_string()
            .into_bytes(),
    )
    .await;
    admin_ok(url, keys, "/kbs/v0/resource/default/key/1", SECRET.to_vec()).await;
}

struct Fleet {
    replicas: Vec<Replica>,
    keys: Keys,
    pg: Postgres,
    dir: tempfile::TempDir,
}

fn fleet(count: usize) -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    let keys = Keys::new(dir.path());
    let replicas = (0..count)
        .map(|n| {
            Replica::start(
                Backend::Database(&pg),
                &keys,
                &dir.path().join(format!("replica-{n}.log")),
            )
        })
        .collect();
    Fleet {
        replicas,
        keys,
        pg,
        dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_attest_and_resource_on_three_different_replicas() {
    let f = fleet(3);
    let (a, b, c) = (&f.replicas[0].url, &f.replicas[1].url, &f.replicas[2].url);
    provision(a, &f.keys).await;
    let guest = Guest::new();
    let (cookie, nonce) = guest.auth(a).await;
    let body = guest.attestation(&nonce);
    let attested = guest.attest(b, &cookie, &body).await;
    assert_eq!(attested.status, 200, "{}", attested.detail());
    // The resource uploaded through A, by the session attested on B, from C.
    let (reply, plain) = guest
        .resource(c, Auth::Cookie(&cookie), "default/key/1")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.detail());
    assert_eq!(plain.unwrap(), SECRET);

    // The nonce, replayed on another replica (with the same cookie and evidence), is refused.
    for replay_on in [c, a, b] {
        let replay = guest.attest(replay_on, &cookie, &body).await;
        assert_eq!(
            (
                replay.status,
                replay.kind().as_str(),
                replay.detail().as_str()
            ),
            (
                401,
                "InvalidSession",
                "session is not usable: session nonce already used"
            )
        );
    }

    // The token B signed is accepted by A and C.
    let token = attested.json()["token"].as_str().unwrap().to_owned();
    for url in [a, c] {
        let (reply, plain) = guest
            .resource(url, Auth::Token(&token), "default/key/1")
            .await;
        assert_eq!(reply.status, 200, "{}", reply.detail());
        assert_eq!(plain.unwrap(), SECRET);
    }
    // A token altered by one byte is not.
    let mut forged = token.clone().into_bytes();
    let at = forged.len() - 3;
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let (reply, _) = guest
        .resource(
            c,
            Auth::Token(std::str::from_utf8(&forged).unwrap()),
            "default/key/1",
        )
        .await;
    assert_eq!(
        (reply.status, reply.kind().as_str()),
        (401, "TokenVerification")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_token_is_used_once_across_replicas() {
    let f = fleet(3);
    let bearer = f.keys.bearer();
    let upload = |url: String, bearer: String| async move {
        admin_post(
            &url,
            &bearer,
            "/kbs/v0/resource/default/key/2",
            b"v".to_vec(),
        )
        .await
    };
    let first = upload(f.replicas[0].url.clone(), bearer.clone()).await;
    assert_eq!(first.status, 200, "{}", first.detail());
    for replica in &f.replicas {
        let replay = upload(replica.url.clone(), bearer.clone()).await;
        assert_eq!(
            (
                replay.status,
                replay.kind().as_str(),
                replay.detail().as_str()
            ),
            (
                401,
                "AdminAuth",
                "admin authentication failed: admin token was already used"
            )
        );
    }
    // A fresh token is accepted by any replica.
    let fresh = upload(f.replicas[2].url.clone(), f.keys.bearer()).await;
    assert_eq!(fresh.status, 200, "{}", fresh.detail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_through_one_replica_applies_on_the_others_at_once() {
    let f = fleet(3);
    let (a, b, c) = (&f.replicas[0].url, &f.replicas[1].url, &f.replicas[2].url);
    provision(a, &f.keys).await;
    let guest = Guest::new();
    // C has served this resource (and so has its policies loaded) before the change.
    assert_eq!(guest.fetch(c, "default/key/1").await, SECRET);
    let (cookie, nonce) = guest.auth(c).await;
    let attested = guest.attest(c, &cookie, &guest.attestation(&nonce)).await;
    let token = attested.json()["token"].as_str().unwrap().to_owned();

    // Through B: only tag "2" may be read.
    admin_ok(
        b,
        &f.keys,
        "/kbs/v0/resource-policy",
        policy_upload(
            "package policy\ndefault allow := false\nallow if data[\"resource-path\"][2] == \"2\"\n",
        ),
    )
    .await;
    // The very next request on A and C is judged by the new policy: the documented bound is
    // "the next request after the change is acknowledged".
    for (url, auth) in [(a, Auth::Token(&token)), (c, Auth::Cookie(&cookie))] {
        let (reply, plain) = guest.resource(url, auth, "default/key/1").await;
        assert_eq!(
            (reply.status, reply.kind().as_str(), plain),
            (401, "PolicyDeny".to_owned().as_str(), None)
        );
    }
    // Deleting the policy through C brings the default back on A at once.
    let deleted = send(
        http()
            .delete(format!("{c}/kbs/v0/resource-policy"))
            .header("authorization", f.keys.bearer()),
    )
    .await;
    assert_eq!(deleted.status, 200, "{}", deleted.detail());
    let (reply, plain) = guest
        .resource(a, Auth::Token(&token), "default/key/1")
        .await;
    assert_eq!((reply.status, plain.as_deref()), (200, Some(SECRET)));
    // Reference values too: through C, "abcde" is no longer a reference value; attestation on A
    // is refused. (A appraises first under what it has loaded, which still allows; the
    // statement that would spend the nonce records nothing and shows the change, and A
    // appraises again.)
    admin_ok(
        c,
        &f.keys,
        "/kbs/v0/reference-values",
        json!({"measurement": ["ffff"]}).to_string().into_bytes(),
    )
    .await;
    let (cookie, nonce) = guest.auth(a).await;
    let body = guest.attestation(&nonce);
    let refused = guest.attest(a, &cookie, &body).await;
    assert_eq!(
        (refused.status, refused.kind().as_str()),
        (401, "AttestationDenied")
    );
    // The denial spent the nonce, and attested nothing: once "abcde" is back, the same
    // evidence is refused as a replay on B, and the cookie reads nothing.
    admin_ok(
        c,
        &f.keys,
        "/kbs/v0/reference-values",
        json!({"measurement": ["abcde"]}).to_string().into_bytes(),
    )
    .await;
    let replay = guest.attest(b, &cookie, &body).await;
    assert_eq!(
        (replay.status, replay.detail()),
        (
            401,
            "session is not usable: session nonce already used".to_owned()
        )
    );
    let (reply, plain) = guest
        .resource(b, Auth::Cookie(&cookie), "default/key/1")
        .await;
    assert_eq!((reply.status, plain), (401, None));
    assert_eq!(
        f.pg.psql("SELECT count(*) FROM tsuba_kbs_sessions WHERE state = 1 AND claims IS NULL")
            .trim(),
        "1"
    );
}

/// Polls until `check` is true, for at most `within`.
async fn eventually(within: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_503_with_the_reason_and_recovers_without_restart() {
    let f = fleet(2);
    let (a, b) = (&f.replicas[0].url, &f.replicas[1].url);
    provision(a, &f.keys).await;
    let guest = Guest::new();
    let (cookie, nonce) = guest.auth(a).await;
    let attested = guest.attest(b, &cookie, &guest.attestation(&nonce)).await;
    assert_eq!(attested.status, 200);
    let token = attested.json()["token"].as_str().unwrap().to_owned();

    f.pg.stop();
    // Nothing is released: neither by a valid token nor by an attested session.
    for (url, auth) in [(a, Auth::Token(&token)), (b, Auth::Cookie(&cookie))] {
        let (reply, plain) = guest.resource(url, auth, "default/key/1").await;
        assert_eq!(
            (reply.status, reply.kind().as_str(), plain),
            (503, "StoreUnavailable", None)
        );
        assert!(
            reply
                .detail()
                .starts_with("storage failed: state database is unavailable: "),
            "{}",
            reply.detail()
        );
    }
    let auth = send(http().post(format!("{a}/kbs/v0/auth")).body(AUTH)).await;
    assert_eq!(
        (auth.status, auth.kind().as_str()),
        (503, "StoreUnavailable")
    );
    let ready = send(http().get(format!("{b}/ready"))).await;
    assert_eq!((ready.status, ready.kind().as_str()), (503, "NotReady"));
    assert!(
        ready
            .detail()
            .starts_with("not ready: state database is unavailable: "),
        "{}",
        ready.detail()
    );
    let health = send(http().get(format!("{b}/health"))).await;
    assert_eq!(health.status, 200);

    f.pg.restart();
    // Both replicas serve again, without a restart, within a few seconds.
    for url in [a, b] {
        let recovered = eventually(Duration::from_secs(20), async || {
            send(http().get(format!("{url}/ready"))).await.status == 200
        })
        .await;
        assert!(recovered, "not ready again");
    }
    let (reply, plain) = guest
        .resource(a, Auth::Token(&token), "default/key/1")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.detail());
    assert_eq!(plain.unwrap(), SECRET);
    assert_eq!(Guest::new().fetch(b, "default/key/1").await, SECRET);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_of_the_database_holds_no_plaintext_secret() {
    let f = fleet(1);
    provision(&f.replicas[0].url, &f.keys).await;
    assert_eq!(
        Guest::new()
            .fetch(&f.replicas[0].url, "default/key/1")
            .await,
        SECRET
    );
    let dump = f.pg.dump();
    let contains = |needle: &[u8]| dump.windows(needle.len()).any(|w| w == needle);
    // The dump is real: it has the resource's row.
    assert!(contains(b"default/key/1"));
    assert!(!contains(SECRET), "resource plaintext in the dump");
    // pg_dump writes bytea as hex: look for that form too.
    assert!(!contains(hex::encode(SECRET).as_bytes()));
    // Nor the token signing key.
    assert!(!contains(b"PRIVATE KEY"));
    assert!(!contains(hex::encode(b"PRIVATE KEY").as_bytes()));
}

#[test]
fn a_database_with_a_newer_schema_is_refused_at_start() {
    let f = fleet(1);
    drop(f.replicas);
    f.pg.psql("UPDATE tsuba_kbs_schema SET version = 999");
    let log = f.dir.path().join("newer.log");
    let mut replica = Replica::spawn(Backend::Database(&f.pg), &f.keys, &log, &[]);
    let status = replica.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    assert!(
        replica
            .log()
            .contains("database schema version 999 is newer than this broker's 2"),
        "{}",
        replica.log()
    );
}

/// Every file under `root`, by relative path.
fn files(root: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(root).unwrap().display().to_string();
                out.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_from_a_folder_import_into_postgres_serves_the_same_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let state = dir.path().join("state");
    {
        let folder = Replica::start(
            Backend::Folder(&state),
            &keys,
            &dir.path().join("folder.log"),
        );
        provision(&folder.url, &keys).await;
        admin_ok(
            &folder.url,
            &keys,
            "/kbs/v0/resource/other/cert/a.pem",
            vec![0, 1, 2, 255],
        )
        .await;
        admin_ok(
            &folder.url,
            &keys,
            "/kbs/v0/resource-policy",
            policy_upload("package policy\ndefault allow := false\nallow if data[\"resource-path\"][0] == \"default\"\nallow if data[\"resource-path\"][0] == \"other\"\n"),
        )
        .await;
        assert_eq!(
            Guest::new().fetch(&folder.url, "default/key/1").await,
            SECRET
        );
    }
    let pg = Postgres::start();
    let db = |cmd: &str, folder_flag: &str, folder: &std::path::Path| {
        encrypt_support::run_ok(
            std::process::Command::new(env!("CARGO_BIN_EXE_tsuba"))
                .args(["kbs", cmd, "--database", &pg.url(), "--at-rest-key-file"])
                .arg(&keys.at_rest)
                .arg(folder_flag)
                .arg(folder)
                .env_remove("TSUBA_KBS_DATABASE"),
        )
    };
    // Import needs the schema: a replica creates it (import on an empty database would too).
    let replica = Replica::start(Backend::Database(&pg), &keys, &dir.path().join("pg.log"));
    db("import", "--from", &state);
    let guest = Guest::new();
    assert_eq!(guest.fetch(&replica.url, "default/key/1").await, SECRET);
    assert_eq!(
        guest.fetch(&replica.url, "other/cert/a.pem").await,
        vec![0, 1, 2, 255]
    );

    // And back: the exported directory holds the same bytes as the original.
    let exported = dir.path().join("exported");
    db("export", "--to", &exported);
    let (original, back) = (files(&state), files(&exported));
    assert_eq!(
        original.keys().collect::<Vec<_>>(),
        back.keys().collect::<Vec<_>>()
    );
    assert_eq!(original, back);
    assert!(back.contains_key("resources/default/key/1"));
    assert!(back.contains_key("resource-policy.rego"));
    // Export refuses to write over existing state.
    let again = encrypt_support::run_bounded(
        std::process::Command::new(env!("CARGO_BIN_EXE_tsuba"))
            .args([
                "kbs",
                "export",
                "--database",
                &pg.url(),
                "--at-rest-key-file",
            ])
            .arg(&keys.at_rest)
            .arg("--to")
            .arg(&exported)
            .env_remove("TSUBA_KBS_DATABASE"),
    );
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr)
            .contains("is not empty: export into a new directory"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

/// p-th percentile of sorted durations, in milliseconds.
fn percentile_ms(sorted: &[Duration], p: usize) -> f64 {
    let index = (sorted.len() * p / 100).min(sorted.len() - 1);
    sorted[index].as_secs_f64() * 1000.0
}

/// The figure for docs/performance.md ("Key broker on PostgreSQL"): auth + attest + resource
/// (sample evidence, one client, sequential) through one replica on the folder backend and one
/// on PostgreSQL, same binary, same machine. Run by `bench/kbs-backends.sh`; not a test of
/// speed (nothing is asserted about it), but it fails if any handshake fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bench/kbs-backends.sh"]
async fn bench_attest_and_resource_latency_folder_vs_postgres() {
    let rounds: usize = std::env::var("KBS_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let pg = Postgres::start();
    let state = dir.path().join("state");
    let folder = Replica::start(Backend::Folder(&state), &keys, &dir.path().join("f.log"));
    let database = Replica::start(Backend::Database(&pg), &keys, &dir.path().join("p.log"));
    for (name, replica) in [("folder", &folder), ("postgres", &database)] {
        provision(&replica.url, &keys).await;
        let guest = Guest::new();
        for _ in 0..rounds / 10 {
            assert_eq!(guest.fetch(&replica.url, "default/key/1").await, SECRET);
        }
        let mut times = Vec::with_capacity(rounds);
        let start = Instant::now();
        for _ in 0..rounds {
            let one = Instant::now();
            assert_eq!(guest.fetch(&replica.url, "default/key/1").await, SECRET);
            times.push(one.elapsed());
        }
        let total = start.elapsed();
        times.sort();
        println!(
            "kbs-backends: backend={name} rounds={rounds} auth+attest+resource p50={:.2}ms p99={:.2}ms mean={:.2}ms",
            percentile_ms(&times, 50),
            percentile_ms(&times, 99),
            total.as_secs_f64() * 1000.0 / rounds as f64,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_connection_is_tls_verified_against_the_given_ca() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let pg = Postgres::start_tls();
    let ca = pg.ca.clone().unwrap();
    let replica = Replica::start(
        Backend::DatabaseTls(&pg, &ca),
        &keys,
        &dir.path().join("tls.log"),
    );
    provision(&replica.url, &keys).await;
    assert_eq!(
        Guest::new().fetch(&replica.url, "default/key/1").await,
        SECRET
    );
    // Every TCP client of the server (the replica's pooled connections) speaks TLS.
    let tls = pg.psql(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
         FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.client_addr IS NOT NULL",
    );
    let (with, without) = tls.trim().split_once('|').unwrap();
    assert!(with.parse::<u32>().unwrap() >= 1, "{tls}");
    assert_eq!(without, "0", "{tls}");

    // A CA that did not sign the server's certificate: the replica does not start.
    let other = Postgres::start_tls();
    let wrong_ca = other.ca.clone().unwrap();
    let log = dir.path().join("wrong-ca.log");
    let mut refused = Replica::spawn(
        Backend::DatabaseTls(&pg, &wrong_ca),
        &keys,
        &log,
        &["--database-wait", "2"],
    );
    let status = refused.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    assert!(
        refused.log().contains("cannot open the state database")
            && refused.log().contains("invalid peer certificate"),
        "{}",
        refused.log()
    );
}

/// `tsuba kbs <args>` with the at-rest key given (or not) in the environment.
fn tsuba_kbs(args: &[&str], at_rest_env: Option<&str>) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tsuba"));
    cmd.arg("kbs")
        .args(args)
        .env_remove("TSUBA_KBS_DATABASE")
        .env_remove("TSUBA_KBS_AT_REST_KEY");
    if let Some(key) = at_rest_env {
        cmd.env("TSUBA_KBS_AT_REST_KEY", key);
    }
    encrypt_support::run_bounded(&mut cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_key_and_at_rest_key_rotate_without_losing_anything() {
    let f = fleet(2);
    let (a, b) = (&f.replicas[0].url, &f.replicas[1].url);
    provision(a, &f.keys).await;
    let guest = Guest::new();
    let (cookie, nonce) = guest.auth(a).await;
    let token = guest
        .attest(a, &cookie, &guest.attestation(&nonce))
        .await
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let old_key = f.keys.at_rest.display().to_string();
    let url = f.pg.url();

    // The token key: replaced in the database; both running replicas refuse the old token at
    // once and sign new ones with the new key.
    let out = tsuba_kbs(
        &[
            "rotate-token-key",
            "--database",
            &url,
            "--at-rest-key-file",
            &old_key,
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for url in [a, b] {
        let (reply, plain) = guest
            .resource(url, Auth::Token(&token), "default/key/1")
            .await;
        assert_eq!(
            (reply.status, reply.kind().as_str(), plain),
            (401, "TokenVerification", None)
        );
    }
    let (cookie, nonce) = guest.auth(b).await;
    let fresh = guest
        .attest(b, &cookie, &guest.attestation(&nonce))
        .await
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (reply, _) = guest
        .resource(a, Auth::Token(&fresh), "default/key/1")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.detail());

    // The at-rest key, rolled out as docs/kbs-operations.md says: a replica that has the new key
    // only as previous (step 1) checks the challenge cookies of one that already tags with it
    // (step 2), and the other way round; a replica that has never heard of the new key refuses
    // them, which is why step 1 comes first.
    let new_key = "c3".repeat(32);
    let new_file = f.dir.path().join("new.key");
    std::fs::write(&new_file, &new_key).unwrap();
    let new_keys = f.keys.with_at_rest(&new_file);
    let new_file_arg = new_file.display().to_string();
    let step1 = Replica::spawn(
        Backend::Database(&f.pg),
        &f.keys,
        &f.dir.path().join("step1.log"),
        &["--at-rest-previous-key-file", &new_file_arg],
    );
    let step2 = Replica::spawn(
        Backend::Database(&f.pg),
        &new_keys,
        &f.dir.path().join("step2.log"),
        &["--at-rest-previous-key-file", &old_key],
    );
    step1.wait_ready();
    step2.wait_ready();
    for (first, second) in [(&step2.url, &step1.url), (&step1.url, &step2.url)] {
        let (cookie, nonce) = guest.auth(first).await;
        let reply = guest
            .attest(second, &cookie, &guest.attestation(&nonce))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.detail());
        let (reply, plain) = guest
            .resource(first, Auth::Cookie(&cookie), "default/key/1")
            .await;
        assert_eq!((reply.status, plain.as_deref()), (200, Some(SECRET)));
    }
    let (cookie, nonce) = guest.auth(&step2.url).await;
    let reply = guest.attest(a, &cookie, &guest.attestation(&nonce)).await;
    assert_eq!(
        (reply.status, reply.detail()),
        (401, "session is not usable: no such session".to_owned())
    );
    drop((step1, step2));

    // Then the values: re-sealed under the new key, given from the environment, with the old
    // one as previous.
    let reseal = |expect: &str| {
        let out = tsuba_kbs(
            &[
                "reseal",
                "--database",
                &url,
                "--at-rest-previous-key-file",
                &old_key,
            ],
            Some(&new_key),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), expect);
    };
    // One resource and the token key; then nothing is left under the old key.
    reseal("2 values re-sealed under the current at-rest key\n");
    reseal("0 values re-sealed under the current at-rest key\n");
    drop(f.replicas);
    let replica = Replica::start(
        Backend::Database(&f.pg),
        &new_keys,
        &f.dir.path().join("new.log"),
    );
    assert_eq!(
        Guest::new().fetch(&replica.url, "default/key/1").await,
        SECRET
    );
    // The old key alone no longer opens anything: a replica with it does not start.
    let log = f.dir.path().join("old.log");
    let mut stale = Replica::spawn(Backend::Database(&f.pg), &f.keys, &log, &[]);
    assert!(!stale.wait_exit(Duration::from_secs(30)).success());
    assert!(
        stale.log().contains(
            "stored setting/token-key cannot be decrypted with the configured at-rest keys"
        ),
        "{}",
        stale.log()
    );
    // And no key at all is refused with what to do.
    let out = tsuba_kbs(&["reseal", "--database", &url], None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("give --at-rest-key-file or set TSUBA_KBS_AT_REST_KEY"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Why one handshake attempt did not complete.
enum Failure {
    /// No HTTP answer (connection refused or reset): retry on another replica.
    Transport,
    /// An HTTP answer other than 200: a failed handshake.
    Refused(String),
}

async fn try_send(request: reqwest::RequestBuilder) -> Result<Reply, Failure> {
    let response = request.send().await.map_err(|_| Failure::Transport)?;
    let status = response.status().as_u16();
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    let body = response
        .bytes()
        .await
        .map_err(|_| Failure::Transport)?
        .to_vec();
    let reply = Reply {
        status,
        cookie,
        body,
    };
    if status == 200 {
        Ok(reply)
    } else {
        Err(Failure::Refused(format!("{status} {}", reply.detail())))
    }
}

/// One step sent to the replicas in turn from `first`, until one answers (as a client behind a
/// load balancer would see it); the number of replicas that did not answer is added to `retries`.
async fn step(
    urls: &[String],
    first: usize,
    retries: &mut u32,
    request: impl Fn(&str) -> reqwest::RequestBuilder,
) -> Result<Reply, String> {
    for offset in 0..urls.len() {
        match try_send(request(&urls[(first + offset) % urls.len()])).await {
            Ok(reply) => return Ok(reply),
            Err(Failure::Transport) => *retries += 1,
            Err(Failure::Refused(why)) => return Err(why),
        }
    }
    Err("no replica answered".into())
}

/// auth, attest and resource, each step starting on another replica.
async fn spread_handshake(
    guest: &Guest,
    urls: &[String],
    path: &str,
    first: usize,
    retries: &mut u32,
) -> Result<Vec<u8>, String> {
    let client = http();
    let auth = step(urls, first, retries, |url| {
        client
            .post(format!("{url}/kbs/v0/auth"))
            .body(guest.evidence.auth())
    })
    .await?;
    let cookie = auth.cookie.clone().ok_or("no cookie")?;
    let nonce = auth.json()["nonce"].as_str().unwrap_or("").to_owned();
    let body = guest.attestation(&nonce);
    step(urls, first + 1, retries, |url| {
        client
            .post(format!("{url}/kbs/v0/attest"))
            .header("cookie", &cookie)
            .body(body.clone())
    })
    .await?;
    let resource = step(urls, first + 2, retries, |url| {
        client
            .get(format!("{url}/kbs/v0/resource/{path}"))
            .header("cookie", &cookie)
    })
    .await?;
    guest
        .key
        .decrypt(&resource.body)
        .map(|plain| plain.to_vec())
        .map_err(|e| format!("decrypt: {e}"))
}

/// What a load run saw: handshakes done, the failures, steps retried on another replica, and
/// each handshake's start (since the run began) and duration.
#[derive(Default)]
struct Load {
    done: u32,
    failed: Vec<String>,
    retries: u32,
    handshakes: Vec<(Duration, Duration)>,
}

impl Load {
    async fn collect(clients: Vec<tokio::task::JoinHandle<Load>>) -> Load {
        let mut all = Load::default();
        for client in clients {
            let one = client.await.unwrap();
            all.done += one.done;
            all.failed.extend(one.failed);
            all.retries += one.retries;
            all.handshakes.extend(one.handshakes);
        }
        all
    }
}

/// The resource a load run fetches, and the plaintext it must decrypt to (any, when none is
/// known: a broker the run did not provision).
#[derive(Clone)]
struct Target {
    path: String,
    expected: Option<Vec<u8>>,
}

impl Target {
    /// The resource `provision` stores.
    fn provisioned() -> Self {
        Self {
            path: "default/key/1".into(),
            expected: Some(SECRET.to_vec()),
        }
    }
}

/// `clients` guests doing spread handshakes (each step on another replica, retried on the next
/// when one does not answer) until `run_for` has passed since `start`.
fn spawn_load(
    urls: &[String],
    target: &Target,
    evidence: &Evidence,
    clients: usize,
    start: Instant,
    run_for: Duration,
) -> Vec<tokio::task::JoinHandle<Load>> {
    (0..clients)
        .map(|client| {
            let urls = urls.to_vec();
            let target = target.clone();
            let evidence = evidence.clone();
            tokio::spawn(async move {
                let guest = Guest::with(evidence);
                let mut load = Load::default();
                let mut round = client;
                while start.elapsed() < run_for {
                    round += 1;
                    let before = load.retries;
                    let began = start.elapsed();
                    let mut result =
                        spread_handshake(&guest, &urls, &target.path, round, &mut load.retries)
                            .await;
                    // An attest cut off by a kill may have taken the nonce: like any client,
                    // start again from auth. Only after a transport failure in this handshake.
                    if load.retries > before
                        && matches!(&result, Err(why) if why.contains("session nonce already used"))
                    {
                        result = spread_handshake(
                            &guest,
                            &urls,
                            &target.path,
                            round + 1,
                            &mut load.retries,
                        )
                        .await;
                    }
                    load.handshakes.push((began, start.elapsed() - began));
                    match result {
                        Ok(plain) if target.expected.as_ref().is_none_or(|e| *e == plain) => {
                            load.done += 1;
                        }
                        Ok(_) => load.failed.push("wrong plaintext".to_owned()),
                        Err(why) => load.failed.push(why),
                    }
                }
                load
            })
        })
        .collect()
}

/// The load figures for docs/performance.md ("Key broker on PostgreSQL"): `KBS_LOAD_CLIENTS`
/// clients (64) for `KBS_LOAD_SECS` (30) of handshakes on one replica on the folder backend, one
/// on PostgreSQL, and three on PostgreSQL with one SIGKILLed halfway, side by side in one run.
/// `KBS_LOAD_EVIDENCE` is `sim-snp` (the default: tee-sim signs an SNP report per handshake and
/// the broker verifies its chain) or `sample` (Trustee's unsigned evidence: the broker's state
/// handling and HTTP alone). Run by `bench/kbs-load-replicas.sh`; fails if any handshake fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bench/kbs-load-replicas.sh"]
async fn bench_handshakes_on_one_and_three_replicas_with_a_kill() {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let clients = usize::try_from(env("KBS_LOAD_CLIENTS", 64)).unwrap();
    let run_for = Duration::from_secs(env("KBS_LOAD_SECS", 30));
    // Another broker (Trustee's KBS, or a tsuba fleet behind a load balancer), provisioned by its
    // operator with the resource KBS_LOAD_RESOURCE and accepting sample evidence: only it is
    // measured.
    if let Ok(url) = std::env::var("KBS_LOAD_URL") {
        let target = Target {
            path: std::env::var("KBS_LOAD_RESOURCE").unwrap_or_else(|_| "default/key/1".into()),
            expected: std::env::var("KBS_LOAD_EXPECT_FILE")
                .ok()
                .map(|file| std::fs::read(file).unwrap()),
        };
        let start = Instant::now();
        let load = Load::collect(spawn_load(
            std::slice::from_ref(&url),
            &target,
            &Evidence::Sample,
            clients,
            start,
            run_for,
        ))
        .await;
        report(
            &format!("external {url}"),
            clients,
            start.elapsed(),
            load,
            None,
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let pg = Postgres::start();
    let state = dir.path().join("state");
    let kind = std::env::var("KBS_LOAD_EVIDENCE").unwrap_or_else(|_| "sim-snp".into());
    // Each setup in turn, so they do not share the 2 cores; the limits are raised so that the
    // load generator (one address) is not throttled as one client.
    let mut args = vec!["--max-sessions-per-client".to_owned(), "100000".to_owned()];
    let evidence = match kind.as_str() {
        "sample" => Evidence::Sample,
        "sim-snp" => {
            let sp = tsuba_tee_sim::SimAmdSp::open_or_create_with_published_test_roots(
                &dir.path().join("tee-sim"),
            )
            .unwrap();
            let roots = dir.path().join("sim-roots.pem");
            std::fs::write(&roots, sp.public_roots_pem().unwrap()).unwrap();
            args.extend([
                "--insecure-accept-simulated-evidence".to_owned(),
                "--insecure-sim-roots".to_owned(),
                roots.display().to_string(),
                "--insecure-snp-accept-any-tcb".to_owned(),
            ]);
            Evidence::SimSnp(Arc::new(sp))
        }
        other => panic!("KBS_LOAD_EVIDENCE is sim-snp or sample, not {other:?}"),
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let start_replica = |backend: Backend<'_>, name: &str| {
        let replica = Replica::spawn(backend, &keys, &dir.path().join(name), &args);
        replica.wait_ready();
        replica
    };
    let setups: Vec<(&str, Vec<Replica>, bool)> = vec![
        (
            "folder x1",
            vec![start_replica(Backend::Folder(&state), "f.log")],
            false,
        ),
        (
            "postgres x1",
            vec![start_replica(Backend::Database(&pg), "p.log")],
            false,
        ),
        (
            "postgres x3, one killed halfway",
            (0..3)
                .map(|n| start_replica(Backend::Database(&pg), &format!("p{n}.log")))
                .collect(),
            true,
        ),
    ];
    for (name, mut replicas, kill) in setups {
        let urls: Vec<String> = replicas.iter().map(|r| r.url.clone()).collect();
        provision(&urls[0], &keys).await;
        let start = Instant::now();
        let load = spawn_load(
            &urls,
            &Target::provisioned(),
            &evidence,
            clients,
            start,
            run_for,
        );
        let killed_at = if kill {
            tokio::time::sleep(run_for / 2).await;
            replicas[1].kill();
            Some(start.elapsed())
        } else {
            None
        };
        let load = Load::collect(load).await;
        report(
            &format!("{name}, {kind}"),
            clients,
            start.elapsed(),
            load,
            killed_at,
        );
    }
}

/// Prints one setup's figures; fails on any failed handshake.
fn report(name: &str, clients: usize, elapsed: Duration, load: Load, killed_at: Option<Duration>) {
    let Load {
        done,
        failed,
        retries,
        handshakes,
    } = load;
    assert!(
        failed.is_empty(),
        "{name}: {} failed: {failed:?}",
        failed.len()
    );
    let mut times: Vec<Duration> = handshakes.iter().map(|(_, took)| *took).collect();
    times.sort();
    // The longest handshake in flight when the replica died.
    let around_kill = killed_at.map_or(0.0, |at| {
        handshakes
            .iter()
            .filter(|(began, took)| *began <= at && *began + *took >= at)
            .map(|(_, took)| took.as_secs_f64() * 1000.0)
            .fold(0.0, f64::max)
    });
    println!(
        "kbs-load: setup=\"{name}\" clients={clients} secs={:.1} handshakes={done} per_sec={:.0} \
         p50={:.1}ms p99={:.1}ms max={:.1}ms longest_at_kill={around_kill:.1}ms retried={retries} failed=0",
        elapsed.as_secs_f64(),
        f64::from(done) / elapsed.as_secs_f64(),
        percentile_ms(&times, 50),
        percentile_ms(&times, 99),
        times.last().map_or(0.0, |t| t.as_secs_f64() * 1000.0),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_costs_no_handshake_and_no_acknowledged_write() {
    let mut f = fleet(3);
    provision(&f.replicas[0].url, &f.keys).await;
    let urls: Vec<String> = f.replicas.iter().map(|r| r.url.clone()).collect();
    let run_for = Duration::from_secs(6);
    let start = Instant::now();
    let clients = spawn_load(
        &urls,
        &Target::provisioned(),
        &Evidence::Sample,
        12,
        start,
        run_for,
    );
    // A writer: uploads through the replicas in turn; remembers what was acknowledged.
    let writer = {
        let urls = urls.clone();
        let bearer = f.keys.admin.clone();
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut n = 0usize;
            while start.elapsed() < run_for {
                n += 1;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let token = format!(
                    "Bearer {}",
                    tsuba_kbs::sign_admin_token(&bearer, now, now + 300)
                );
                let url = &urls[n % urls.len()];
                let path = format!("/kbs/v0/resource/written/key/{n}");
                if let Ok(reply) = try_send(
                    http()
                        .post(format!("{url}{path}"))
                        .header("authorization", token)
                        .body(n.to_string()),
                )
                .await
                {
                    assert_eq!(reply.status, 200);
                    acknowledged.push(n);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acknowledged
        })
    };
    tokio::time::sleep(run_for / 2).await;
    f.replicas[1].kill();
    let Load {
        done,
        failed,
        retries,
        ..
    } = Load::collect(clients).await;
    let acknowledged = writer.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} failed handshakes: {failed:?}",
        failed.len()
    );
    assert!(done > 20, "only {done} handshakes");
    println!("kbs-fault: {done} handshakes, {retries} retried after the kill, 0 failed");
    // Every acknowledged write is there, read back through a surviving replica.
    let guest = Guest::new();
    let (cookie, nonce) = guest.auth(&urls[2]).await;
    let attested = guest
        .attest(&urls[0], &cookie, &guest.attestation(&nonce))
        .await;
    assert_eq!(attested.status, 200);
    for n in &acknowledged {
        let path = format!("written/key/{n}");
        let (reply, plain) = guest.resource(&urls[2], Auth::Cookie(&cookie), &path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.detail());
        assert_eq!(plain.unwrap(), n.to_string().into_bytes());
    }
    assert!(acknowledged.len() > 10, "{acknowledged:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_nonce_sent_to_three_replicas_at_once_is_taken_once() {
    let f = fleet(3);
    provision(&f.replicas[0].url, &f.keys).await;
    let guest = Guest::new();
    for _ in 0..5 {
        let (cookie, nonce) = guest.auth(&f.replicas[0].url).await;
        let body = guest.attestation(&nonce);
        let (a, b, c) = tokio::join!(
            guest.attest(&f.replicas[0].url, &cookie, &body),
            guest.attest(&f.replicas[1].url, &cookie, &body),
            guest.attest(&f.replicas[2].url, &cookie, &body),
        );
        let mut outcomes: Vec<(u16, String)> = [a, b, c]
            .iter()
            .map(|reply| (reply.status, reply.detail()))
            .collect();
        outcomes.sort();
        assert_eq!(
            outcomes,
            vec![
                (200, String::new()),
                (
                    401,
                    "session is not usable: session nonce already used".into()
                ),
                (
                    401,
                    "session is not usable: session nonce already used".into()
                ),
            ]
        );
    }
}

/// An auth from the loopback address `from` (each 127.0.0.x is another client to the broker).
async fn auth_from(url: &str, from: [u8; 4]) -> Reply {
    let client = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(from))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    send(client.post(format!("{url}/kbs/v0/auth")).body(AUTH)).await
}

/// With a database, `auth` stores nothing: a flood of challenges from one address leaves the
/// sessions table empty; each challenge cookie is checked by every replica, a forged one by
/// none; evidence that fails verification leaves the challenge usable; and the first verified
/// attestation writes the one row that spends it. An expired challenge or session is refused,
/// by the replicas' clocks and by the database's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenges_cost_the_database_nothing_until_evidence_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    let keys = Keys::new(dir.path());
    let replicas: Vec<Replica> = (0..3)
        .map(|n| {
            let replica = Replica::spawn(
                Backend::Database(&pg),
                &keys,
                &dir.path().join(format!("challenges-{n}.log")),
                &["--session-ttl", "5"],
            );
            replica.wait_ready();
            replica
        })
        .collect();
    let urls: Vec<String> = replicas.iter().map(|r| r.url.clone()).collect();
    provision(&urls[0], &keys).await;
    let rows = || {
        pg.psql("SELECT count(*) FROM tsuba_kbs_sessions")
            .trim()
            .to_owned()
    };
    let burst: Vec<_> = (0..600)
        .map(|n| {
            let url = urls[n % urls.len()].clone();
            tokio::spawn(async move { auth_from(&url, [127, 0, 0, 2]).await.status })
        })
        .collect();
    for auth in burst {
        assert_eq!(auth.await.unwrap(), 200);
    }
    assert_eq!(rows(), "0");

    let guest = Guest::new();
    let (cookie, nonce) = guest.auth(&urls[0]).await;
    // One character of the cookie changed: no session, on any replica, for attest or resource.
    let (name, value) = cookie.split_once('=').unwrap();
    let middle = value.len() / 2;
    let swapped = if &value[middle..=middle] == "A" {
        "B"
    } else {
        "A"
    };
    let forged = format!(
        "{name}={}{swapped}{}",
        &value[..middle],
        &value[middle + 1..]
    );
    for url in &urls {
        let reply = guest.attest(url, &forged, &guest.attestation(&nonce)).await;
        assert_eq!(
            (reply.status, reply.detail()),
            (401, "session is not usable: no such session".to_owned())
        );
        let (reply, plain) = guest
            .resource(url, Auth::Cookie(&forged), "default/key/1")
            .await;
        assert_eq!(reply.status, 401, "{}", reply.detail());
        assert!(plain.is_none());
    }
    // Evidence bound to another nonce fails on B and spends nothing.
    let mut wrong: Value = serde_json::from_str(&guest.attestation("another nonce")).unwrap();
    wrong["runtime-data"]["nonce"] = json!(nonce);
    let reply = guest.attest(&urls[1], &cookie, &wrong.to_string()).await;
    assert_eq!(
        (reply.status, reply.kind().as_str()),
        (401, "AttestationFailed"),
        "{}",
        reply.detail()
    );
    assert_eq!(rows(), "0");
    // The right evidence on C attests, with the one row; a replay on A is refused; the
    // resource is served on B by the same cookie.
    let body = guest.attestation(&nonce);
    let reply = guest.attest(&urls[2], &cookie, &body).await;
    assert_eq!(reply.status, 200, "{}", reply.detail());
    assert_eq!(rows(), "1");
    let replay = guest.attest(&urls[0], &cookie, &body).await;
    assert_eq!(
        (replay.status, replay.detail()),
        (
            401,
            "session is not usable: session nonce already used".to_owned()
        )
    );
    let (reply, plain) = guest
        .resource(&urls[1], Auth::Cookie(&cookie), "default/key/1")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.detail());
    assert_eq!(plain.unwrap(), SECRET);
    // The database's clock decides too: with the row expired by it, the cookie (live for a few
    // seconds more by the replicas' clocks) reads nothing.
    pg.psql("UPDATE tsuba_kbs_sessions SET expires = now() - interval '1 second'");
    let (reply, plain) = guest
        .resource(&urls[0], Auth::Cookie(&cookie), "default/key/1")
        .await;
    assert_eq!(
        (reply.status, reply.kind().as_str(), plain),
        (401, "TokenNotFound", None),
        "{}",
        reply.detail()
    );
    // A challenge past its 5 s is refused by every replica.
    let (late, late_nonce) = guest.auth(&urls[1]).await;
    tokio::time::sleep(Duration::from_millis(5_200)).await;
    for url in &urls {
        let reply = guest
            .attest(url, &late, &guest.attestation(&late_nonce))
            .await;
        assert_eq!(
            (reply.status, reply.detail()),
            (401, "session is not usable: session expired".to_owned())
        );
    }
}
