//! `tsuba kbs`: run the key broker (`serve`), administer one (`admin`), and fetch a resource
//! from one as an attested client (`get-resource`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::signal::unix::{SignalKind, signal};
use tsuba_kbs::{
    AdminAuth, AdminClient, Broker, BrokerConfig, EvidenceTrust, HttpLimits, PolicyKind,
    ResourcePath, SnpProduct, SnpTcbOption, Transport, VerifierOptions, build_verifiers,
    generate_admin_key, load_pem, parse_snp_min_tcb,
};
use tsuba_protocols::evidence::TcbParts;

/// How long requests in flight may take to finish once a stop signal arrives.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Run or administer the key broker.
#[derive(Debug, clap::Args)]
pub(crate) struct KbsArgs {
    #[command(subcommand)]
    command: KbsCommand,
}

#[derive(Debug, clap::Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once per process; boxing would only move the bytes"
)]
enum KbsCommand {
    /// Run the key broker until SIGTERM or SIGINT, then finish requests in flight and exit.
    Serve(ServeArgs),
    /// Call a running broker's admin API.
    Admin(AdminArgs),
    /// Attest to a broker as a guest would, then print (or write) one resource.
    GetResource(super::get_resource::GetResourceArgs),
    /// Generate an administrator Ed25519 key pair (PKCS#8 private, SPKI public PEM).
    AdminKeygen {
        /// Where to write the private key (mode 0600).
        #[arg(long)]
        private: PathBuf,
        /// Where to write the public key (give it to `serve --admin-public-key`).
        #[arg(long)]
        public: PathBuf,
    },
    /// Copy a PostgreSQL store's state (resources, policies, reference values, token key) into
    /// a new state directory, the format `serve --state-dir` runs on: a backup in clear, or a
    /// move back to the folder backend. The directory is made private (0700).
    Export {
        #[command(flatten)]
        database: DatabaseArgs,
        /// The state directory to write; must not exist or be empty.
        #[arg(long)]
        to: PathBuf,
    },
    /// Copy a state directory (of `serve --state-dir`, or written by `export`) into a
    /// PostgreSQL store; what the store already holds under the same names is replaced.
    Import {
        #[command(flatten)]
        database: DatabaseArgs,
        /// The state directory to read.
        #[arg(long)]
        from: PathBuf,
    },
    /// Re-seal every resource and the token key of a PostgreSQL store under the current
    /// at-rest key (give the old one with --at-rest-previous-key-file), after a key rotation.
    Reseal {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Replace the token signing key of a store (replicas pick it up with their next request;
    /// tokens signed before are refused, clients attest again).
    RotateTokenKey {
        /// A state directory (when no --database is given).
        #[arg(long, conflicts_with = "database")]
        state_dir: Option<PathBuf>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Print the public-key pin of a broker's TLS certificate or of its CA (the first PEM
    /// certificate in the file), for a guest's measured `tsuba.agent.kbs-pin=` or `--kbs-pin`.
    Pin {
        /// A PEM certificate: the broker's own, or the CA that the broker sends in its chain.
        #[arg(long)]
        cert: PathBuf,
    },
}

/// Where a PostgreSQL store is and how to open it.
#[derive(Debug, clap::Args)]
struct DatabaseArgs {
    /// PostgreSQL URL, e.g. postgres://kbs@db.example/kbs?sslmode=require. A database that is
    /// not on loopback or a Unix socket needs sslmode=require and --database-ca. Prefer the
    /// environment variable when the URL holds a password.
    #[arg(long, env = "TSUBA_KBS_DATABASE", hide_env_values = true)]
    database: Option<String>,
    /// CA certificates (PEM) the database server's TLS certificate must chain to.
    #[arg(long)]
    database_ca: Option<PathBuf>,
    /// File holding the at-rest key (64 hex characters, e.g. `openssl rand -hex 32`) that seals
    /// resources and the token key in the database. Without it, the key is read from the
    /// environment variable TSUBA_KBS_AT_REST_KEY.
    #[arg(long)]
    at_rest_key_file: Option<PathBuf>,
    /// An older at-rest key (file, repeatable): values sealed under it can still be read, and
    /// `reseal` moves them to the current key.
    #[arg(long)]
    at_rest_previous_key_file: Vec<PathBuf>,
    /// How long to wait for the database at start, in seconds.
    #[arg(long, default_value_t = 30)]
    database_wait: u64,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Directory for resources, policies, reference values and the token signing key (the
    /// single-broker default), unless --database is given.
    #[arg(
        long,
        required_unless_present = "database",
        conflicts_with = "database"
    )]
    state_dir: Option<PathBuf>,
    #[command(flatten)]
    database: DatabaseArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Administrator's public key (SPKI PEM): Ed25519 (tokens signed EdDSA, as `admin-keygen`
    /// makes), P-256 (ES256) or RSA of 2048 to 4096 bits (RS256).
    #[arg(long, required_unless_present = "admin_disabled")]
    admin_public_key: Option<PathBuf>,
    /// No admin API: every admin call is refused (Trustee's DenyAll). The state is managed
    /// offline (`tsuba kbs import`, or another replica of the same database).
    #[arg(long, conflicts_with = "admin_public_key")]
    admin_disabled: bool,
    /// How often one admin token may be used: once (each call signs a new one, as `tsuba kbs
    /// admin` does), or until it expires, as Trustee accepts them (for `kbs-client config
    /// --admin-token-file`, which sends the same token every time).
    #[arg(long, value_enum, default_value = "single-use")]
    admin_tokens: AdminTokens,
    /// TLS certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP instead of HTTPS; refused unless --listen is a loopback address.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    insecure_plain_http: bool,
    /// INSECURE: also accept evidence signed by tee-sim's simulated roots (given with
    /// --insecure-sim-roots). Every token issued is marked simulated, and the signing key of
    /// tokens changes with the insecure options. Never in production; refused by a build
    /// without the insecure-sim feature.
    #[arg(long)]
    insecure_accept_simulated_evidence: bool,
    /// INSECURE: also accept Trustee's unsigned `sample` TEE, whose measurement is whatever the
    /// client claims. Every token issued is marked simulated. Never in production; refused by
    /// a build without the insecure-sim feature.
    #[arg(long)]
    insecure_accept_sample_evidence: bool,
    /// PEM file of tee-sim's public roots, written by `tsuba sim export-roots` (needs
    /// --insecure-accept-simulated-evidence).
    #[arg(long, requires = "insecure_accept_simulated_evidence")]
    insecure_sim_roots: Option<PathBuf>,
    /// INSECURE: let the default resource policy release resources to guests whose token is
    /// marked simulated (it refuses them otherwise). An uploaded resource policy decides for
    /// itself (the token's `submods.cpu0["tsuba.simulated"]`).
    #[arg(long)]
    insecure_release_resources_to_simulated: bool,
    /// Directory of VCEK certificates (DER) for SNP reports that carry none.
    #[arg(long)]
    snp_vcek_cache: Option<PathBuf>,
    /// Minimum SNP TCB for one product (repeatable), e.g.
    /// milan=bootloader:3,tee:0,snp:8,microcode:115 (fmc:N too, on turin). SNP reports of a
    /// product without a minimum are refused.
    #[arg(long, value_parser = parse_snp_min_tcb)]
    snp_min_tcb: Vec<(SnpProduct, TcbParts)>,
    /// INSECURE: accept SNP reports of any TCB, including firmware with known flaws a hypervisor
    /// can exploit. Never in production.
    #[arg(long, conflicts_with = "snp_min_tcb")]
    insecure_snp_accept_any_tcb: bool,
    /// AMD certificate revocation list (PEM or DER, signed by a trusted ARK or ASK; repeatable):
    /// reports whose ASK or VCEK it lists are refused.
    #[arg(long)]
    snp_crl: Vec<PathBuf>,
    /// Directory of DCAP collateral JSON files for TDX quotes.
    #[arg(long)]
    tdx_collateral_dir: Option<PathBuf>,
    /// TDX TCB status to accept besides UpToDate (repeatable), e.g. SWHardeningNeeded.
    #[arg(long)]
    tdx_accept_status: Vec<String>,
    /// Session lifetime in seconds (auth to attest, and resource requests by cookie), at most a
    /// day.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    session_ttl: u64,
    /// Most sessions one client address (IPv6: its /64) may have waiting for attestation; more
    /// auth calls from it are refused with 429 until it attests or its sessions expire. Without
    /// --database only: with one, auth stores nothing to bound.
    #[arg(long, default_value_t = 256)]
    max_sessions_per_client: usize,
    /// Most live sessions in this process; challenges make room before attested sessions, and
    /// when all are attested more auth calls get 503. Without --database only: with one, auth
    /// stores nothing to bound.
    #[arg(long, default_value_t = 65_536)]
    max_sessions: usize,
    /// Attestation token lifetime in seconds.
    #[arg(long, default_value_t = 300)]
    token_ttl: u64,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    max_body: usize,
}

/// How often one admin token may be used (`serve --admin-tokens`).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AdminTokens {
    /// Each token is accepted once.
    SingleUse,
    /// A token is accepted until it expires.
    Reusable,
}

#[derive(Debug, clap::Args)]
struct AdminArgs {
    /// Broker URL, e.g. https://kbs.example:8080.
    #[arg(long)]
    url: String,
    /// Administrator's private key (PKCS#8 PEM).
    #[arg(long)]
    key: PathBuf,
    /// CA certificates (PEM) to trust for the broker's TLS certificate.
    #[arg(long)]
    ca: Option<PathBuf>,
    #[command(subcommand)]
    call: AdminCall,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PolicyName {
    /// Decides whether verified evidence earns a token.
    Attestation,
    /// Decides which attested guest may read which resource.
    Resource,
}

impl From<PolicyName> for PolicyKind {
    fn from(name: PolicyName) -> Self {
        match name {
            PolicyName::Attestation => Self::Attestation,
            PolicyName::Resource => Self::Resource,
        }
    }
}

#[derive(Debug, clap::Subcommand)]
enum AdminCall {
    /// Store a resource from a file.
    SetResource {
        /// repo/type/tag
        path: String,
        /// File with the resource bytes.
        file: PathBuf,
    },
    /// Delete a resource.
    DeleteResource {
        /// repo/type/tag
        path: String,
    },
    /// List resource paths (tsuba's broker only).
    ListResources,
    /// Replace a policy with a Rego file.
    SetPolicy {
        /// Which policy.
        kind: PolicyName,
        /// Rego file (`package policy`, rule `allow`).
        file: PathBuf,
    },
    /// Forget a policy: the broker's built-in default applies again (tsuba's broker only).
    DeletePolicy {
        /// Which policy.
        kind: PolicyName,
    },
    /// Print a policy.
    GetPolicy {
        /// Which policy.
        kind: PolicyName,
    },
    /// Replace the reference values with a JSON file `{"measurement": ["<hex>", ...], ...}`.
    SetReferenceValues {
        /// JSON file.
        file: PathBuf,
    },
    /// Print the reference values as JSON (tsuba's broker only).
    GetReferenceValues,
    /// Set one reference value's values, leaving the others (Trustee's RVPS message; works
    /// against Trustee's broker too).
    SetReferenceValue {
        /// Its name, e.g. `measurement` or `init_data`.
        name: String,
        /// Its values (none clears it).
        values: Vec<String>,
    },
    /// Print one reference value's values as JSON.
    GetReferenceValue {
        /// Its name.
        name: String,
    },
}

pub(crate) fn run(args: KbsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        KbsCommand::AdminKeygen { private, public } => keygen(&private, &public),
        KbsCommand::Pin { cert } => {
            let pem =
                std::fs::read(&cert).with_context(|| format!("reading {}", cert.display()))?;
            let pin = tsuba_attestation_agent::kbs::SpkiPin::of_pem_certificate(&pem)
                .with_context(|| format!("{} holds no usable PEM certificate", cert.display()))?;
            println!("{pin}");
            Ok(ExitCode::SUCCESS)
        }
        KbsCommand::Serve(serve) => runtime()?.block_on(serve_until_interrupted(serve)),
        KbsCommand::Export { database, to } => {
            let db = open_database(&database)?;
            if std::fs::read_dir(&to).is_ok_and(|mut entries| entries.next().is_some()) {
                bail!("{} is not empty: export into a new directory", to.display());
            }
            let folder = tsuba_kbs::FolderStore::open(&to)
                .with_context(|| format!("cannot create {}", to.display()))?;
            let count = tsuba_kbs::copy_state(db.as_ref(), &folder).context("export failed")?;
            println!(
                "exported {count} resources, policies, reference values and the token key to {}",
                to.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        KbsCommand::Import { database, from } => {
            if !from.join("resources").is_dir() {
                bail!(
                    "{} is not a broker state directory (no resources/)",
                    from.display()
                );
            }
            let folder = tsuba_kbs::FolderStore::open(&from)
                .with_context(|| format!("cannot open {}", from.display()))?;
            let db = open_database(&database)?;
            let count = tsuba_kbs::copy_state(&folder, db.as_ref()).context("import failed")?;
            println!("imported {count} resources, policies, reference values and the token key");
            Ok(ExitCode::SUCCESS)
        }
        KbsCommand::Reseal { database } => reseal(&database),
        KbsCommand::RotateTokenKey {
            state_dir,
            database,
        } => {
            let store: Arc<dyn tsuba_kbs::StateStore> = match state_dir {
                Some(dir) => Arc::new(
                    tsuba_kbs::FolderStore::open(&dir)
                        .with_context(|| format!("cannot open {}", dir.display()))?,
                ),
                None => open_database(&database)?,
            };
            tsuba_kbs::rotate_token_key(store.as_ref()).context("token key rotation failed")?;
            println!("new token signing key stored; tokens signed before are no longer accepted");
            Ok(ExitCode::SUCCESS)
        }
        KbsCommand::Admin(admin) => runtime()?.block_on(admin_call(admin)),
        KbsCommand::GetResource(args) => runtime()?.block_on(super::get_resource::run(args)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn keygen(private: &std::path::Path, public: &std::path::Path) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    let (private_pem, public_pem) = generate_admin_key()?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(private)
        .and_then(|mut file| file.write_all(private_pem.as_bytes()))
        .with_context(|| format!("cannot write {}", private.display()))?;
    std::fs::write(public, public_pem)
        .with_context(|| format!("cannot write {}", public.display()))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve_until_interrupted(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let (args_admin_disabled, args_admin_tokens) = (args.admin_disabled, args.admin_tokens);
    let admin = match &args.admin_public_key {
        Some(key) => {
            let pem = std::fs::read_to_string(key)
                .with_context(|| format!("cannot read {}", key.display()))?;
            let token_use = match args.admin_tokens {
                AdminTokens::SingleUse => tsuba_kbs::TokenUse::Once,
                AdminTokens::Reusable => tsuba_kbs::TokenUse::UntilExpiry,
            };
            AdminAuth::from_public_key_pem(&pem)?.with_token_use(token_use)
        }
        None => AdminAuth::disabled(),
    };
    let trust = EvidenceTrust::new(
        args.insecure_accept_simulated_evidence,
        args.insecure_accept_sample_evidence,
    );
    let verifiers = build_verifiers(&VerifierOptions {
        trust,
        sim_roots: args.insecure_sim_roots,
        snp_vcek_cache: args.snp_vcek_cache,
        snp_tcb: if args.insecure_snp_accept_any_tcb {
            SnpTcbOption::InsecureAcceptAny
        } else {
            SnpTcbOption::Minimum(snp_minimums(args.snp_min_tcb)?)
        },
        snp_crls: args.snp_crl,
        tdx_collateral_dir: args.tdx_collateral_dir,
        tdx_accept_status: args.tdx_accept_status,
    })?;
    let mut config = BrokerConfig::new(args.state_dir.clone().unwrap_or_default(), admin);
    config.session_ttl = Duration::from_secs(args.session_ttl);
    config.max_sessions_per_client = args.max_sessions_per_client;
    config.max_sessions = args.max_sessions;
    config.token_ttl = Duration::from_secs(args.token_ttl);
    config.insecure_release_to_simulated = args.insecure_release_resources_to_simulated;
    let broker = Arc::new(match args.state_dir {
        Some(_) => Broker::new(config, verifiers)?,
        None => broker_on_database(config, verifiers, &args.database)?,
    });
    let transport = match (args.tls_cert, args.tls_key, args.insecure_plain_http) {
        (Some(cert), Some(key), false) => {
            let cert =
                std::fs::read(&cert).with_context(|| format!("cannot read {}", cert.display()))?;
            let key =
                std::fs::read(&key).with_context(|| format!("cannot read {}", key.display()))?;
            let (cert_chain, key) = load_pem(&cert, &key)?;
            Transport::Https { cert_chain, key }
        }
        (None, None, true) => Transport::InsecurePlainHttpLoopbackOnly,
        _ => bail!("give --tls-cert and --tls-key, or --insecure-plain-http on a loopback address"),
    };
    let limits = HttpLimits {
        max_body: args.max_body,
        ..HttpLimits::default()
    };
    // Listen for the signals before serving, so that none is missed.
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch for SIGINT")?;
    let server = tsuba_kbs::serve(args.listen, transport, tsuba_kbs::router(broker, limits))?;
    tracing::info!(addr = %server.local_addr(), "tsuba kbs serving; SIGTERM or SIGINT to stop");
    match (args_admin_disabled, args_admin_tokens) {
        (true, _) => tracing::info!("admin api disabled: every admin call is refused"),
        (false, AdminTokens::Reusable) => tracing::warn!(
            "admin tokens are reusable until they expire: a token seen on the wire or in a log \
             can be replayed until then"
        ),
        (false, AdminTokens::SingleUse) => {}
    }
    let stop = async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
        }
    };
    server
        .run_until(stop, SHUTDOWN_GRACE)
        .await
        .context("server failed")?;
    Ok(ExitCode::SUCCESS)
}

/// The `--snp-min-tcb` values by product; a product given twice is an error, not a silent
/// override.
fn snp_minimums(
    values: Vec<(SnpProduct, TcbParts)>,
) -> anyhow::Result<BTreeMap<SnpProduct, TcbParts>> {
    let mut map = BTreeMap::new();
    for (product, min) in values {
        if map.insert(product, min).is_some() {
            bail!("--snp-min-tcb gives {product} twice: give each product one minimum");
        }
    }
    Ok(map)
}

async fn admin_call(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let key = std::fs::read_to_string(&args.key)
        .with_context(|| format!("cannot read {}", args.key.display()))?;
    let ca = args
        .ca
        .as_ref()
        .map(|path| std::fs::read(path).with_context(|| format!("cannot read {}", path.display())))
        .transpose()?;
    let client = AdminClient::new(&args.url, &key, ca.as_deref())?;
    let mut out = String::new();
    match args.call {
        AdminCall::SetResource { path, file } => {
            let path = ResourcePath::parse(&path).context("resource path must be repo/type/tag")?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            client.set_resource(&path, bytes).await?;
        }
        AdminCall::DeleteResource { path } => {
            let path = ResourcePath::parse(&path).context("resource path must be repo/type/tag")?;
            client.delete_resource(&path).await?;
        }
        AdminCall::ListResources => {
            for path in client.list_resources().await? {
                out.push_str(&path);
                out.push('\n');
            }
        }
        AdminCall::SetPolicy { kind, file } => {
            let rego = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            client.set_policy(kind.into(), &rego).await?;
        }
        AdminCall::GetPolicy { kind } => out = client.policy(kind.into()).await?,
        AdminCall::DeletePolicy { kind } => client.delete_policy(kind.into()).await?,
        AdminCall::SetReferenceValues { file } => {
            let text =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let values: BTreeMap<String, Vec<String>> = serde_json::from_slice(&text)
                .context("reference values must be {\"name\": [\"value\", ...]}")?;
            client.set_reference_values(&values).await?;
        }
        AdminCall::GetReferenceValues => {
            out = serde_json::to_string_pretty(&client.reference_values().await?)?;
            out.push('\n');
        }
        AdminCall::SetReferenceValue { name, values } => {
            client.set_reference_value(&name, &values).await?;
        }
        AdminCall::GetReferenceValue { name } => {
            out = serde_json::to_string(&client.reference_value(&name).await?)?;
            out.push('\n');
        }
    }
    use std::io::Write;
    std::io::stdout()
        .write_all(out.as_bytes())
        .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// The operator's at-rest keys: --at-rest-key-file, else TSUBA_KBS_AT_REST_KEY; older keys
/// from --at-rest-previous-key-file.
#[cfg(feature = "postgres")]
fn at_rest_keys(args: &DatabaseArgs) -> anyhow::Result<tsuba_kbs::AtRestKeys> {
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path)
            .map(zeroize::Zeroizing::new)
            .with_context(|| format!("cannot read {}", path.display()))
    };
    let current = match &args.at_rest_key_file {
        Some(path) => read(path)?,
        None => zeroize::Zeroizing::new(std::env::var("TSUBA_KBS_AT_REST_KEY").map_err(|_| {
            anyhow::anyhow!(
                "a database store needs the at-rest key: give --at-rest-key-file or set \
                 TSUBA_KBS_AT_REST_KEY (64 hex characters, e.g. from `openssl rand -hex 32`)"
            )
        })?),
    };
    let previous = args
        .at_rest_previous_key_file
        .iter()
        .map(read)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let previous: Vec<&str> = previous.iter().map(|key| key.as_str()).collect();
    Ok(tsuba_kbs::AtRestKeys::from_hex(&current, &previous)?)
}

#[cfg(feature = "postgres")]
fn open_postgres(args: &DatabaseArgs) -> anyhow::Result<Arc<tsuba_kbs::PgStore>> {
    let Some(url) = &args.database else {
        bail!("give --database postgres://… (or set TSUBA_KBS_DATABASE)");
    };
    let ca_pem = args
        .database_ca
        .as_ref()
        .map(|path| std::fs::read(path).with_context(|| format!("cannot read {}", path.display())))
        .transpose()?;
    let options = tsuba_kbs::PgOptions {
        url: url.clone(),
        ca_pem,
        keys: at_rest_keys(args)?,
    };
    let store = tsuba_kbs::PgStore::connect(options, Duration::from_secs(args.database_wait))
        .context("cannot open the state database")?;
    Ok(Arc::new(store))
}

#[cfg(feature = "postgres")]
fn open_database(args: &DatabaseArgs) -> anyhow::Result<Arc<dyn tsuba_kbs::StateStore>> {
    Ok(open_postgres(args)?)
}

#[cfg(feature = "postgres")]
fn broker_on_database(
    config: BrokerConfig,
    verifiers: tsuba_kbs::VerifierSet,
    args: &DatabaseArgs,
) -> anyhow::Result<Broker> {
    Ok(Broker::with_postgres(
        config,
        verifiers,
        open_postgres(args)?,
    )?)
}

#[cfg(feature = "postgres")]
fn reseal(args: &DatabaseArgs) -> anyhow::Result<ExitCode> {
    let store = open_postgres(args)?;
    let changed = store.reseal().context("reseal failed")?;
    println!("{changed} values re-sealed under the current at-rest key");
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "postgres"))]
const NO_POSTGRES: &str =
    "this tsuba was built without PostgreSQL support (cargo feature `postgres`)";

#[cfg(not(feature = "postgres"))]
fn open_database(_: &DatabaseArgs) -> anyhow::Result<Arc<dyn tsuba_kbs::StateStore>> {
    bail!(NO_POSTGRES)
}

#[cfg(not(feature = "postgres"))]
fn broker_on_database(
    _: BrokerConfig,
    _: tsuba_kbs::VerifierSet,
    _: &DatabaseArgs,
) -> anyhow::Result<Broker> {
    bail!(NO_POSTGRES)
}

#[cfg(not(feature = "postgres"))]
fn reseal(_: &DatabaseArgs) -> anyhow::Result<ExitCode> {
    bail!(NO_POSTGRES)
}
