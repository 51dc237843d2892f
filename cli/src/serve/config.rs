//! `serve` configuration: the TOML file, the flags that override it, and
//! validation that names the offending key.
//!
//! Owns: turning `--config FILE` plus flags into a checked [`ServeConfig`].
//! Must not: log secrets (passwords and tokens are read here, kept out of
//! `Debug`, and never printed), or accept a key it does not know.

use super::super::parse_duration;
use ch_ingest::RetryPolicy;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The file, as written. Every key is optional except what `validate` needs.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    listen: Option<String>,
    /// A PEM certificate chain and key that make the listener (NDJSON API
    /// and front door) speak HTTPS; re-read when they change or on SIGHUP.
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    /// With it, clients must show a certificate signed by this CA.
    tls_client_ca: Option<PathBuf>,
    /// Largest request body accepted, as sent (compressed or not).
    max_body_bytes: Option<usize>,
    /// Largest body after gzip/zstd decompression.
    max_decompressed_bytes: Option<usize>,
    /// Longest NDJSON line (one event).
    max_line_bytes: Option<usize>,
    /// The most one front-door request's rows may hold once decoded
    /// (default: `max_decompressed_bytes`); past it the request is refused
    /// with code 393 and nothing of it is kept.
    max_decoded_bytes: Option<usize>,
    /// Event requests read and decoded at once (default 32); more wait
    /// without their bodies being read.
    max_concurrent_requests: Option<usize>,
    /// How long a client may take to send a body (default 30s; then 408).
    body_timeout: Option<String>,
    /// Connections open at once (default 512); more wait to be accepted.
    max_connections: Option<usize>,
    /// How long a client may take to send a request's headers, and how long
    /// a keep-alive connection may sit idle (default 30s; then it is closed).
    header_timeout: Option<String>,
    /// How long a shutdown waits for requests in progress before it drains
    /// anyway (default 30s).
    shutdown_grace: Option<String>,
    /// Bearer tokens allowed to call `POST /v1/flush` (none: anyone).
    admin_tokens: Option<Vec<String>>,
    #[serde(alias = "admin_token_env")]
    admin_tokens_env: Option<String>,
    /// Where rows ClickHouse cannot take are kept: `spill/` (retried
    /// errors past the retry window, replayed when the server is back) and
    /// `dead/` (permanent errors), one subdirectory per table. Default
    /// `ch-ingest-data` in the working directory; `""` keeps nothing (such
    /// rows are then dropped, and a warning says so at start).
    data_dir: Option<PathBuf>,
    /// Base directories overriding `data_dir`'s; each table gets a
    /// subdirectory.
    spill_dir: Option<PathBuf>,
    dead_letter_dir: Option<PathBuf>,
    /// How often the table schemas are read again (a schema error on an
    /// INSERT also triggers it at once).
    schema_refresh: Option<String>,
    #[serde(default)]
    clickhouse: ClickHouseFile,
    /// The ClickHouse-protocol listener's settings (`/`, `/?query=`, `/ping`).
    #[serde(default)]
    front_door: FrontDoorFile,
    /// Settings every table starts from.
    #[serde(default)]
    defaults: TableFile,
    #[serde(default)]
    tables: BTreeMap<String, TableFile>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ClickHouseFile {
    urls: Option<Vec<String>>,
    /// A cluster in `<remote_servers>`, discovered through `urls`.
    cluster: Option<String>,
    /// HTTP ports of the cluster's replicas, by `host` or `host:tcp_port`
    /// as `system.clusters` names them (default: the seed URL's port).
    http_ports: Option<BTreeMap<String, u16>>,
    /// The shards, each a list of replica URLs (instead of `urls`).
    shards: Option<Vec<Vec<String>>>,
    /// One weight per shard (default 1 each).
    shard_weights: Option<Vec<u32>>,
    user: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    /// A JWT sent as `Authorization: Bearer` (ClickHouse Cloud), instead
    /// of `user` and a password: read from this environment variable...
    access_token_env: Option<String>,
    /// ...or this file.
    access_token_file: Option<PathBuf>,
    /// Sent as `X-ClickHouse-Quota`: the key ClickHouse's keyed quotas
    /// count this traffic under.
    quota_key: Option<String>,
    database: Option<String>,
    /// Accept any certificate the servers show (no CA, name or date
    /// check; a warning is logged at start). Default false.
    danger_accept_invalid_certs: Option<bool>,
    /// A PEM file of CA certificates to trust for `https://` URLs, besides
    /// the platform's and Mozilla's roots and `SSL_CERT_FILE`'s.
    ca_cert: Option<PathBuf>,
    /// A PEM certificate chain and key shown to servers that ask (mutual
    /// TLS); both or neither.
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    /// What the front door forwards to ClickHouse of what is not an
    /// INSERT of data: `all`, `read` (default: SELECT, DESCRIBE, SHOW,
    /// EXISTS, EXPLAIN) or `none`.
    passthrough: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FrontDoorFile {
    /// How a ClickHouse client's credentials are checked: `clickhouse`
    /// (default: validated once against the server, then cached for a
    /// minute) or `none` (anyone may insert into the allowed tables).
    auth: Option<String>,
    /// How long a waiting INSERT's rows may wait for company before they
    /// are sent (default 200ms, as ClickHouse's
    /// `async_insert_busy_timeout_ms`); a request's own
    /// `async_insert_busy_timeout_ms` setting overrides it.
    busy_timeout: Option<String>,
    /// The users the front door knows, by name (with `auth = "users"`,
    /// the default when any is given).
    users: Option<BTreeMap<String, UserFile>>,
    /// How long ClickHouse's yes to a user (its password, its right to
    /// insert into a table) is used without asking again (default 60s):
    /// the longest a revoked right keeps working.
    credentials_ttl: Option<String>,
    /// While no ClickHouse server can be asked, how long a yes stays good
    /// (default 1h), so an outage spills verified users' rows instead of
    /// turning them away.
    credentials_outage_ttl: Option<String>,
    /// How long an INSERT's `insert_deduplication_token` is remembered
    /// (default 10m): a retry with it into the same table within this
    /// window is answered from the first attempt and not stored again.
    dedup_window: Option<String>,
    /// The client addresses the front door answers (`"10.0.0.0/8"`,
    /// `"::1"`; default: any). ClickHouse sees serve's address, not the
    /// client's, so its own `<networks>` cannot do this.
    allow_from: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UserFile {
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    /// The tables this user may insert into (default: every allowed table).
    tables: Option<Vec<String>>,
}

/// A front-door user: its password and the tables it may insert into.
#[derive(Clone)]
pub struct FrontDoorUser {
    pub name: String,
    pub password: String,
    /// `None`: every allowed table.
    pub tables: Option<Vec<String>>,
}

impl std::fmt::Debug for FrontDoorUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontDoorUser")
            .field("name", &self.name)
            .field("tables", &self.tables)
            .finish_non_exhaustive()
    }
}

/// What the front door forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passthrough {
    All,
    Read,
    None,
}

/// How the front door checks credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontDoorAuth {
    ClickHouse,
    Users,
    None,
}

/// The front door's settings, checked.
#[derive(Debug, Clone)]
pub struct FrontDoorConfig {
    pub passthrough: Passthrough,
    pub auth: FrontDoorAuth,
    pub busy_timeout: Duration,
    pub users: Vec<FrontDoorUser>,
    pub credentials_ttl: Duration,
    pub credentials_outage_ttl: Duration,
    pub dedup_window: Duration,
    /// `None`: any address.
    pub allow_from: Option<Vec<Network>>,
}

/// An address range, `addr/prefix` (a bare address is the one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl Network {
    pub fn parse(text: &str) -> Result<Network, String> {
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let addr: std::net::IpAddr = addr
            .parse()
            .map_err(|_| format!("`{text}` is not an address or addr/prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix must be 0 to {max}"))?,
        };
        Ok(Network { addr, prefix })
    }

    /// Whether `ip` is in this range (an IPv4 address mapped into IPv6
    /// counts as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::{V4, V6};
        let bits = |a: u128, b: u128, width: u32| {
            let shift = width - u32::from(self.prefix);
            shift >= width || (a >> shift) == (b >> shift)
        };
        match (self.addr, ip.to_canonical()) {
            (V4(net), V4(ip)) => bits(u32::from(net).into(), u32::from(ip).into(), 32),
            (V6(net), V6(ip)) => bits(u128::from(net), u128::from(ip), 128),
            _ => false,
        }
    }
}

/// Per-table engine settings; see `Builder` in the library for each default.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct TableFile {
    max_rows: Option<u64>,
    max_bytes: Option<usize>,
    flush_interval: Option<String>,
    shards: Option<usize>,
    max_inflight: Option<usize>,
    queue_bytes: Option<usize>,
    max_insert_rows: Option<u64>,
    max_insert_bytes: Option<usize>,
    linger: Option<String>,
    insert_timeout: Option<String>,
    retry_attempts: Option<u32>,
    retry_max_elapsed: Option<String>,
    spill_max_bytes: Option<u64>,
    /// `arrival`, `sorted` (default: by the table's key) or `sorted(col, ...)`.
    insert_order: Option<String>,
    /// `Native` (default) or `RowBinary`.
    insert_format: Option<String>,
    /// With a cluster: the shards' local table to insert into (default:
    /// the table's own name, which with `cluster` must then be the
    /// `Distributed` table whose definition names the local one).
    local_table: Option<String>,
    /// With a cluster: route rows by this sharding-key expression.
    sharding_key: Option<String>,
    /// Reject JSON keys that are not columns (default: ignore them).
    deny_unknown_fields: Option<bool>,
    /// Bearer tokens for this table (none: open).
    tokens: Option<Vec<String>>,
    /// Name of an environment variable holding comma-separated tokens.
    tokens_env: Option<String>,
}

/// Flags that override the file.
#[derive(clap::Args, Debug, Default)]
pub struct ServeFlags {
    /// TOML configuration file (docs/sidecar.md lists the keys).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long)]
    pub listen: Option<String>,
    /// ClickHouse HTTP URL; repeat for failover between replicas.
    #[arg(long = "clickhouse-url")]
    pub clickhouse_urls: Vec<String>,
    /// ClickHouse user.
    #[arg(long)]
    pub user: Option<String>,
    /// Read the ClickHouse password from this environment variable.
    #[arg(long)]
    pub password_env: Option<String>,
    /// Read the ClickHouse password from this file.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Allow this table (with default settings); repeat for more.
    #[arg(long = "table")]
    pub tables: Vec<String>,
    /// Rows per shard batch, for every table.
    #[arg(long)]
    pub max_rows: Option<u64>,
    /// Flush tick for every table, e.g. 10s.
    #[arg(long)]
    pub flush_interval: Option<String>,
    /// Largest request body, in bytes [default: 16 MiB].
    #[arg(long)]
    pub max_body_bytes: Option<usize>,
    /// Where undeliverable rows are kept (spill/ and dead/ in it)
    /// [default: ch-ingest-data; "" keeps nothing].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Spill directory (one subdirectory per table) [default: DATA_DIR/spill].
    #[arg(long)]
    pub spill_dir: Option<PathBuf>,
    /// Dead-letter directory (one subdirectory per table) [default: DATA_DIR/dead].
    #[arg(long)]
    pub dead_letter_dir: Option<PathBuf>,
}

/// `data_dir`'s default, in the working directory.
pub const DEFAULT_DATA_DIR: &str = "ch-ingest-data";

/// A validated configuration.
pub struct ServeConfig {
    pub listen: SocketAddr,
    /// Where undeliverable rows are kept: the spill and dead-letter base
    /// directories (`None`: dropped), for the start line.
    pub kept: (Option<PathBuf>, Option<PathBuf>),
    /// HTTPS on the listener, when configured.
    pub listener_tls: Option<super::listener_tls::Files>,
    pub max_body_bytes: usize,
    pub max_decompressed_bytes: usize,
    pub max_decoded_bytes: usize,
    pub max_line_bytes: usize,
    pub max_concurrent_requests: usize,
    pub body_timeout: Duration,
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub shutdown_grace: Duration,
    pub admin_tokens: Vec<String>,
    pub schema_refresh: Duration,
    /// The servers that answer `DESCRIBE` and the health ping: `urls`, or
    /// every replica of every shard given.
    pub urls: Vec<String>,
    pub destination: Destination,
    pub user: Option<String>,
    pub password: Option<String>,
    /// A JWT for `Authorization: Bearer`, instead of user and password.
    pub access_token: Option<String>,
    /// `X-ClickHouse-Quota` on every request of serve's own.
    pub quota_key: Option<String>,
    pub database: Option<String>,
    /// How `https://` servers are checked, and which certificate is shown.
    pub tls: ch_ingest::sink::Tls,
    pub tables: Vec<TableConfig>,
    pub front_door: FrontDoorConfig,
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("listen", &self.listen)
            .field("urls", &self.urls)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("access_token", &self.access_token.as_ref().map(|_| "<set>"))
            .field(
                "tables",
                &self.tables.iter().map(|t| &t.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Where the rows go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// One server (or replicas of one table) at `urls`, failed over.
    Server,
    /// Shards given in the file, each a list of replicas, with weights.
    Shards(Vec<ch_ingest::sink::ClusterShard>),
    /// The cluster of this name, discovered through `urls` (and read again
    /// every `schema_refresh`).
    Cluster {
        name: String,
        http_ports: Vec<(String, u16)>,
    },
}

/// One allowed table and the engine settings it gets.
pub struct TableConfig {
    pub name: String,
    /// With a cluster: the local table, and a sharding key.
    pub local_table: Option<String>,
    pub sharding_key: Option<String>,
    pub builder: ch_ingest::Builder,
    pub deny_unknown_fields: bool,
    pub tokens: Vec<String>,
}

/// A configuration error; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

fn err(key: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("`{key}`: {why}"))
}

const DEFAULT_BODY: usize = 16 << 20;

impl ServeConfig {
    /// Reads the file (if any), applies the flags, validates.
    pub fn load(flags: ServeFlags) -> Result<Self, ConfigError> {
        let file = match &flags.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
                parse_file(&text, &path.display().to_string())?
            }
            None => FileConfig::default(),
        };
        Self::from_parts(file, flags)
    }

    pub fn from_parts(mut file: FileConfig, flags: ServeFlags) -> Result<Self, ConfigError> {
        let listen_text = flags
            .listen
            .or(file.listen.take())
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = listen_text
            .parse()
            .map_err(|e| err("listen", format!("`{listen_text}`: {e}")))?;
        let mut urls = if flags.clickhouse_urls.is_empty() {
            file.clickhouse.urls.take().unwrap_or_default()
        } else {
            flags.clickhouse_urls
        };
        for (i, u) in urls.iter().enumerate() {
            check_url(u).map_err(|why| err(&format!("clickhouse.urls[{i}]"), why))?;
        }
        let destination = destination(&mut file.clickhouse, &mut urls)?;
        if urls.is_empty() {
            return Err(err(
                "clickhouse.urls",
                "at least one ClickHouse URL is required",
            ));
        }
        let (user, password, access_token) = credentials(
            &mut file.clickhouse,
            flags.user,
            flags.password_env,
            flags.password_file,
        )?;
        let listener_tls = listener_tls(&mut file)?;
        let tls = upstream_tls(&mut file.clickhouse)?;
        let positive = |key: &str, v: Option<usize>, default: usize| match v {
            Some(0) => Err(err(key, "must be at least 1")),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        let max_body_bytes = positive(
            "max_body_bytes",
            flags.max_body_bytes.or(file.max_body_bytes),
            DEFAULT_BODY,
        )?;
        let max_decompressed_bytes = positive(
            "max_decompressed_bytes",
            file.max_decompressed_bytes,
            max_body_bytes.saturating_mul(4),
        )?;
        let max_line_bytes = positive("max_line_bytes", file.max_line_bytes, 1 << 20)?;
        let max_decoded_bytes = positive(
            "max_decoded_bytes",
            file.max_decoded_bytes,
            max_decompressed_bytes,
        )?;
        // Caps far above any sane setting, so a slipped digit is refused at
        // start instead of meaning "no limit".
        let capped = |key: &str, v: Option<usize>, default: usize, max: usize| match positive(
            key, v, default,
        )? {
            n if n > max => Err(err(key, format!("at most {max}"))),
            n => Ok(n),
        };
        let max_concurrent_requests = capped(
            "max_concurrent_requests",
            file.max_concurrent_requests,
            32,
            1 << 16,
        )?;
        let body_timeout = nonzero_duration(
            "body_timeout",
            file.body_timeout.as_deref(),
            Duration::from_secs(30),
        )?;
        let max_connections = capped("max_connections", file.max_connections, 512, 1 << 20)?;
        let header_timeout = nonzero_duration(
            "header_timeout",
            file.header_timeout.as_deref(),
            Duration::from_secs(30),
        )?;
        let shutdown_grace = duration(
            "shutdown_grace",
            file.shutdown_grace.as_deref(),
            Duration::from_secs(30),
        )?;
        let admin_tokens = tokens(
            "admin_tokens",
            file.admin_tokens.take(),
            file.admin_tokens_env.take(),
        )?;
        let schema_refresh = nonzero_duration(
            "schema_refresh",
            file.schema_refresh.as_deref(),
            Duration::from_secs(60),
        )?;
        for name in flags.tables {
            file.tables.entry(name).or_default();
        }
        if file.tables.is_empty() {
            return Err(err(
                "tables",
                "allow at least one table ([tables.NAME] or --table NAME)",
            ));
        }
        let (spill_dir, dead_letter_dir) = kept_dirs(
            flags.data_dir.or(file.data_dir.take()),
            flags.spill_dir.or(file.spill_dir.take()),
            flags.dead_letter_dir.or(file.dead_letter_dir.take()),
        )?;
        let kept = (spill_dir.clone(), dead_letter_dir.clone());
        let mut tables = Vec::new();
        for (name, t) in &file.tables {
            check_table_name(name).map_err(|why| err(&format!("tables.{name}"), why))?;
            let mut t = merge(&file.defaults, t);
            if flags.max_rows.is_some() {
                t.max_rows = flags.max_rows;
            }
            if flags.flush_interval.is_some() {
                t.flush_interval = flags.flush_interval.clone();
            }
            let kept = (spill_dir.as_deref(), dead_letter_dir.as_deref());
            tables.push(table(name, &t, kept, &destination)?);
        }
        let front_door = front_door(&mut file)?;
        Ok(ServeConfig {
            kept,
            front_door,
            listen,
            listener_tls,
            max_body_bytes,
            max_decompressed_bytes,
            max_decoded_bytes,
            max_line_bytes,
            max_concurrent_requests,
            body_timeout,
            max_connections,
            header_timeout,
            shutdown_grace,
            admin_tokens,
            schema_refresh,
            urls,
            destination,
            user,
            password,
            access_token,
            quota_key: file.clickhouse.quota_key.take(),
            database: file.clickhouse.database.take(),
            tls,
            tables,
        })
    }
}

/// Serve's own ClickHouse credentials: a user, a password, a JWT.
type Credentials = (Option<String>, Option<String>, Option<String>);

/// `[clickhouse]`'s credentials (flags win): a user and password, or a
/// JWT, never both (the `clickhouse` crate would panic).
fn credentials(
    ch: &mut ClickHouseFile,
    user_flag: Option<String>,
    password_env_flag: Option<String>,
    password_file_flag: Option<PathBuf>,
) -> Result<Credentials, ConfigError> {
    // A password flag replaces both of the file's sources (flags win).
    let (password_env, password_file) =
        if password_env_flag.is_some() || password_file_flag.is_some() {
            (password_env_flag, password_file_flag)
        } else {
            (ch.password_env.take(), ch.password_file.take())
        };
    let password = read_password("clickhouse", password_env, password_file)?;
    let access_token = read_secret(
        "clickhouse",
        "access_token",
        ch.access_token_env.take(),
        ch.access_token_file.take(),
    )?;
    let user = user_flag.or(ch.user.take());
    if access_token.is_some() && (user.is_some() || password.is_some()) {
        return Err(err(
            "clickhouse.access_token_env",
            "a JWT names its user: give access_token_env/access_token_file or \
                 user and a password, not both",
        ));
    }
    Ok((user, password, access_token))
}

/// `tls_cert_file`, `tls_key_file`, `tls_client_ca`: serve's listener over
/// HTTPS, or not.
fn listener_tls(file: &mut FileConfig) -> Result<Option<super::listener_tls::Files>, ConfigError> {
    let files = match (
        file.tls_cert_file.take(),
        file.tls_key_file.take(),
        file.tls_client_ca.take(),
    ) {
        (Some(cert), Some(key), client_ca) => Some(super::listener_tls::Files {
            cert,
            key,
            client_ca,
        }),
        (None, None, None) => None,
        (None, None, Some(_)) => {
            return Err(err(
                "tls_client_ca",
                "needs tls_cert_file and tls_key_file (client certificates are a TLS feature)",
            ))
        }
        _ => {
            return Err(err(
                "tls_cert_file",
                "give tls_cert_file and tls_key_file together",
            ))
        }
    };
    Ok(files)
}

/// How `https://` ClickHouse servers are checked and which certificate is
/// shown them; the files are read now, so a bad one stops serve at start.
fn upstream_tls(ch: &mut ClickHouseFile) -> Result<ch_ingest::sink::Tls, ConfigError> {
    let mut tls = ch_ingest::sink::Tls::new();
    if let Some(ca) = ch.ca_cert.take() {
        tls = tls.ca_cert(ca);
    }
    tls = tls.danger_accept_invalid_certs(ch.danger_accept_invalid_certs.take().unwrap_or(false));
    match (ch.client_cert.take(), ch.client_key.take()) {
        (Some(cert), Some(key)) => tls = tls.client_auth(cert, key),
        (None, None) => {}
        _ => {
            return Err(err(
                "clickhouse.client_cert",
                "give client_cert and client_key together",
            ))
        }
    }
    // Read now, so a bad file stops serve at start, naming it.
    tls.config().map_err(|e| err("clickhouse", e.to_string()))?;
    Ok(tls)
}

/// The spill and dead-letter base directories: given, or under
/// `data_dir` (default [`DEFAULT_DATA_DIR`]; `""` keeps nothing).
fn kept_dirs(
    data_dir: Option<PathBuf>,
    spill_dir: Option<PathBuf>,
    dead_letter_dir: Option<PathBuf>,
) -> Result<(Option<PathBuf>, Option<PathBuf>), ConfigError> {
    let data_dir = data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let data_dir = if data_dir.as_os_str().is_empty() {
        None
    } else {
        // Absolute, so the start line says exactly where.
        Some(std::path::absolute(&data_dir).map_err(|e| err("data_dir", e.to_string()))?)
    };
    let spill_dir = spill_dir.or_else(|| data_dir.as_ref().map(|d| d.join("spill")));
    let dead_letter_dir = dead_letter_dir.or_else(|| data_dir.as_ref().map(|d| d.join("dead")));
    Ok((spill_dir, dead_letter_dir))
}

/// One `[tables.NAME]` section (merged with `[defaults]`): its engine's
/// builder, its cluster settings and its tokens, each value checked.
fn table(
    name: &str,
    t: &TableFile,
    kept: (Option<&std::path::Path>, Option<&std::path::Path>),
    destination: &Destination,
) -> Result<TableConfig, ConfigError> {
    let key = |k: &str| format!("tables.{name}.{k}");
    let mut b = ch_ingest::Buffer::builder();
    if let Some(n) = t.max_rows {
        nonzero(&key("max_rows"), n as usize)?;
        b = b.max_rows(n);
    }
    if let Some(n) = t.max_bytes {
        b = b.max_bytes(nonzero(&key("max_bytes"), n)?);
    }
    if let Some(s) = &t.flush_interval {
        b = b.flush_interval(nonzero_duration(
            &key("flush_interval"),
            Some(s),
            Duration::ZERO,
        )?);
    }
    if let Some(n) = t.shards {
        b = b.shards(nonzero(&key("shards"), n)?);
    }
    if let Some(n) = t.max_inflight {
        b = b.max_inflight(nonzero(&key("max_inflight"), n)?);
    }
    if let Some(n) = t.queue_bytes {
        b = b.queue_bytes(nonzero(&key("queue_bytes"), n)?);
    }
    if let Some(n) = t.max_insert_rows {
        nonzero(&key("max_insert_rows"), n as usize)?;
        b = b.max_insert_rows(n);
    }
    if let Some(n) = t.max_insert_bytes {
        b = b.max_insert_bytes(nonzero(&key("max_insert_bytes"), n)?);
    }
    if let Some(s) = &t.linger {
        b = b.linger(duration(&key("linger"), Some(s), Duration::ZERO)?);
    }
    if let Some(s) = &t.insert_order {
        b = b.insert_order(s.parse().map_err(|e| err(&key("insert_order"), e))?);
    }
    if let Some(s) = &t.insert_format {
        b = b.insert_format(s.parse().map_err(|e| err(&key("insert_format"), e))?);
    }
    if let Some(s) = &t.insert_timeout {
        b = b.insert_timeout(nonzero_duration(
            &key("insert_timeout"),
            Some(s),
            Duration::ZERO,
        )?);
    }
    if t.retry_attempts.is_some() || t.retry_max_elapsed.is_some() {
        let mut policy = RetryPolicy::default();
        if let Some(n) = t.retry_attempts {
            policy.max_attempts = nonzero(&key("retry_attempts"), n as usize)? as u32;
        }
        if let Some(s) = &t.retry_max_elapsed {
            policy.max_elapsed = duration(&key("retry_max_elapsed"), Some(s), Duration::ZERO)?;
        }
        b = b.retry(policy);
    }
    if let Some(dir) = kept.0 {
        b = b.spill_dir(dir.join(dir_name(name).map_err(|why| err(&key("spill_dir"), why))?));
        if let Some(n) = t.spill_max_bytes {
            nonzero(&key("spill_max_bytes"), n as usize)?;
            b = b.spill_max_bytes(n);
        }
    } else if t.spill_max_bytes.is_some() {
        return Err(err(
            &key("spill_max_bytes"),
            "needs a spill directory (data_dir is \"\" and no spill_dir is given)",
        ));
    }
    if let Some(dir) = kept.1 {
        b = b.dead_letter_dir(
            dir.join(dir_name(name).map_err(|why| err(&key("dead_letter_dir"), why))?),
        );
    }
    if *destination == Destination::Server {
        for (k, given) in [
            ("local_table", t.local_table.is_some()),
            ("sharding_key", t.sharding_key.is_some()),
        ] {
            if given {
                return Err(err(
                    &key(k),
                    "needs a cluster (clickhouse.cluster or clickhouse.shards)",
                ));
            }
        }
    }
    if let Some(lt) = &t.local_table {
        check_table_name(lt).map_err(|why| err(&key("local_table"), why))?;
    }
    if let Some(k) = &t.sharding_key {
        if !ch_ingest::sink::ClusterSink::can_route_by(k) {
            return Err(err(
                &key("sharding_key"),
                format!(
                    "`{k}` is not a key ch-ingest computes (a column, intHash64(c), \
                     cityHash64(c) or sipHash64(c)); for others, insert through the \
                     Distributed table (clickhouse.urls, no cluster)"
                ),
            ));
        }
    }
    Ok(TableConfig {
        name: name.to_string(),
        local_table: t.local_table.clone(),
        sharding_key: t.sharding_key.clone(),
        builder: b,
        deny_unknown_fields: t.deny_unknown_fields.unwrap_or(false),
        tokens: tokens(&key("tokens"), t.tokens.clone(), t.tokens_env.clone())?,
    })
}

/// The front door's settings (`[front_door]`, and `[clickhouse]
/// passthrough`); its users are checked against the allowed tables.
fn front_door(file: &mut FileConfig) -> Result<FrontDoorConfig, ConfigError> {
    Ok(FrontDoorConfig {
        passthrough: match file.clickhouse.passthrough.as_deref() {
            None | Some("read") => Passthrough::Read,
            Some("all") => Passthrough::All,
            Some("none") => Passthrough::None,
            Some(other) => {
                return Err(err(
                    "clickhouse.passthrough",
                    format!("`{other}` is not one of all, read, none"),
                ))
            }
        },
        auth: match (file.front_door.auth.as_deref(), &file.front_door.users) {
            (None, Some(_)) | (Some("users"), Some(_)) => FrontDoorAuth::Users,
            (Some("users"), None) => {
                return Err(err(
                    "front_door.auth",
                    "`users` needs [front_door.users.NAME] sections",
                ))
            }
            (None, None) | (Some("clickhouse"), _) => FrontDoorAuth::ClickHouse,
            (Some("none"), _) => FrontDoorAuth::None,
            (Some(other), _) => {
                return Err(err(
                    "front_door.auth",
                    format!("`{other}` is not one of clickhouse, users, none"),
                ))
            }
        },
        users: {
            let mut users = Vec::new();
            for (name, u) in file.front_door.users.take().unwrap_or_default() {
                let section = format!("front_door.users.{name}");
                let Some(password) = read_password(&section, u.password_env, u.password_file)?
                else {
                    return Err(err(
                        &format!("{section}.password_env"),
                        "give password_env or password_file (an empty variable or file \
                             is an empty password)",
                    ));
                };
                if let Some(list) = &u.tables {
                    if let Some(t) = list.iter().find(|t| !file.tables.contains_key(*t)) {
                        return Err(err(
                            &format!("{section}.tables"),
                            format!("`{t}` is not an allowed table ([tables.{t}])"),
                        ));
                    }
                }
                users.push(FrontDoorUser {
                    name,
                    password,
                    tables: u.tables,
                });
            }
            users
        },
        busy_timeout: match &file.front_door.busy_timeout {
            None => Duration::from_millis(200),
            Some(s) => parse_duration(s).map_err(|e| err("front_door.busy_timeout", e))?,
        },
        credentials_ttl: duration(
            "front_door.credentials_ttl",
            file.front_door.credentials_ttl.as_deref(),
            Duration::from_secs(60),
        )?,
        credentials_outage_ttl: duration(
            "front_door.credentials_outage_ttl",
            file.front_door.credentials_outage_ttl.as_deref(),
            Duration::from_secs(3600),
        )?,
        allow_from: match file.front_door.allow_from.take() {
            None => None,
            Some(list) => Some(
                list.iter()
                    .map(|n| Network::parse(n))
                    .collect::<Result<_, _>>()
                    .map_err(|e| err("front_door.allow_from", e))?,
            ),
        },
        dedup_window: duration(
            "front_door.dedup_window",
            file.front_door.dedup_window.as_deref(),
            Duration::from_secs(600),
        )?,
    })
}

/// `[clickhouse]`'s `cluster` or `shards` (not both); with `shards`, the
/// replicas become the servers that answer `DESCRIBE` and pings.
fn destination(
    file: &mut ClickHouseFile,
    urls: &mut Vec<String>,
) -> Result<Destination, ConfigError> {
    let weights = file.shard_weights.take();
    let http_ports = file.http_ports.take();
    match (file.cluster.take(), file.shards.take()) {
        (Some(_), Some(_)) => Err(err(
            "clickhouse.shards",
            "give clickhouse.cluster (discovered) or clickhouse.shards (listed), not both",
        )),
        (Some(name), None) => {
            if weights.is_some() {
                return Err(err(
                    "clickhouse.shard_weights",
                    "a discovered cluster's weights come from system.clusters",
                ));
            }
            if name.is_empty() {
                return Err(err("clickhouse.cluster", "must not be empty"));
            }
            Ok(Destination::Cluster {
                name,
                http_ports: http_ports.unwrap_or_default().into_iter().collect(),
            })
        }
        (None, Some(shards)) => {
            if http_ports.is_some() {
                return Err(err(
                    "clickhouse.http_ports",
                    "only for a discovered cluster (clickhouse.cluster)",
                ));
            }
            if !urls.is_empty() {
                return Err(err(
                    "clickhouse.urls",
                    "with clickhouse.shards the replicas are listed there; leave urls out",
                ));
            }
            if shards.is_empty() {
                return Err(err("clickhouse.shards", "list at least one shard"));
            }
            let weights = weights.unwrap_or_else(|| vec![1; shards.len()]);
            if weights.len() != shards.len() {
                return Err(err(
                    "clickhouse.shard_weights",
                    format!(
                        "{} weights for {} shards (one per shard)",
                        weights.len(),
                        shards.len()
                    ),
                ));
            }
            if weights.iter().all(|&w| w == 0) {
                return Err(err(
                    "clickhouse.shard_weights",
                    "at least one shard needs a weight above 0",
                ));
            }
            let mut out = Vec::new();
            for (i, (replicas, weight)) in shards.into_iter().zip(weights).enumerate() {
                if replicas.is_empty() {
                    return Err(err(
                        &format!("clickhouse.shards[{i}]"),
                        "a shard needs at least one replica URL",
                    ));
                }
                for (j, u) in replicas.iter().enumerate() {
                    check_url(u)
                        .map_err(|why| err(&format!("clickhouse.shards[{i}][{j}]"), why))?;
                }
                urls.extend(replicas.iter().cloned());
                out.push(ch_ingest::sink::ClusterShard::new(replicas).with_weight(weight));
            }
            Ok(Destination::Shards(out))
        }
        (None, None) => {
            if weights.is_some() || http_ports.is_some() {
                let k = if weights.is_some() {
                    "shard_weights"
                } else {
                    "http_ports"
                };
                return Err(err(
                    &format!("clickhouse.{k}"),
                    "needs clickhouse.shards or clickhouse.cluster",
                ));
            }
            Ok(Destination::Server)
        }
    }
}

/// Parses the TOML text of `origin`. toml's own error display quotes the
/// offending source line, which may hold a token: this says where and why,
/// not what.
fn parse_file(text: &str, origin: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str::<FileConfig>(text).map_err(|e| {
        let at = e.span().map_or(String::new(), |span| {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!(" (line {line})")
        });
        ConfigError(format!("{origin}{at}: {}", redact(e.message())))
    })
}

/// serde's type errors quote the value (`invalid type: string "…",
/// expected a sequence`): keep the kind, drop the value.
fn redact(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let (found, expected) = rest.rsplit_once(", expected ").unwrap_or((rest, "?"));
            let kind = found.split([' ', '`', '"']).next().unwrap_or("value");
            return format!("{prefix}{kind}, expected {expected}");
        }
    }
    message.to_string()
}

fn merge(defaults: &TableFile, t: &TableFile) -> TableFile {
    // A table that names its own tokens (in either key) replaces the
    // defaults' tokens rather than adding to them.
    let defaults = &if t.tokens.is_some() || t.tokens_env.is_some() {
        TableFile {
            tokens: None,
            tokens_env: None,
            ..defaults.clone()
        }
    } else {
        defaults.clone()
    };
    macro_rules! pick {
        ($($f:ident),*) => { TableFile { $( $f: t.$f.clone().or_else(|| defaults.$f.clone()), )* } };
    }
    pick!(
        max_rows,
        max_bytes,
        flush_interval,
        shards,
        max_inflight,
        queue_bytes,
        max_insert_rows,
        max_insert_bytes,
        linger,
        insert_timeout,
        retry_attempts,
        retry_max_elapsed,
        spill_max_bytes,
        insert_order,
        insert_format,
        local_table,
        sharding_key,
        deny_unknown_fields,
        tokens,
        tokens_env
    )
}

fn nonzero(key: &str, n: usize) -> Result<usize, ConfigError> {
    if n == 0 {
        return Err(err(key, "must be at least 1"));
    }
    Ok(n)
}

fn duration(key: &str, text: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
    match text {
        Some(s) => parse_duration(s).map_err(|e| err(key, e)),
        None => Ok(default),
    }
}

/// A ClickHouse URL is printed at start and logged with every endpoint
/// failure, so it must not be able to carry a secret: no `user:pass@`
/// anywhere (`http::Uri` ends the authority at the first `/`, so
/// `http://u:p/w@h` would pass a check of the authority alone), and no query
/// (`?password=` is one ClickHouse accepts). The answer never repeats the
/// URL, which may hold the very secret it refuses.
fn check_url(u: &str) -> Result<(), &'static str> {
    if u.contains('@') {
        return Err(
            "credentials do not go in a URL (URLs are printed and logged): \
                    use clickhouse.user and password_env or password_file",
        );
    }
    if u.contains(['?', '#']) {
        return Err(
            "a URL here takes no query or fragment (URLs are printed and logged): \
                    use clickhouse.user, password_env/password_file and clickhouse.database",
        );
    }
    match u.parse::<axum::http::Uri>() {
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {
            Ok(())
        }
        _ => Err("not an http(s) URL (`http://host:port`)"),
    }
}

/// A duration that must be more than zero when given.
fn nonzero_duration(
    key: &str,
    text: Option<&str>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let d = duration(key, text, default)?;
    if d.is_zero() {
        return Err(err(key, "must be more than zero"));
    }
    Ok(d)
}

/// A password from `{section}.password_env` or `{section}.password_file`
/// (one of them, or neither).
fn read_password(
    section: &str,
    env: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<String>, ConfigError> {
    read_secret(section, "password", env, file)
}

/// A secret from `{section}.{name}_env` or `{section}.{name}_file` (one of
/// them, or neither): secrets are never written in the TOML itself.
fn read_secret(
    section: &str,
    name: &str,
    env: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<String>, ConfigError> {
    let key = |k: &str| format!("{section}.{name}_{k}");
    match (env, file) {
        (Some(_), Some(_)) => Err(err(
            &key("env"),
            format!("give {name}_env or {name}_file, not both"),
        )),
        (Some(var), None) => std::env::var(&var).map(Some).map_err(|_| {
            err(
                &key("env"),
                format!("environment variable `{var}` is not set"),
            )
        }),
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map(|p| Some(p.trim_end_matches(['\r', '\n']).to_string()))
            .map_err(|e| err(&key("file"), format!("{}: {e}", path.display()))),
        (None, None) => Ok(None),
    }
}

fn tokens(
    key: &str,
    list: Option<Vec<String>>,
    env: Option<String>,
) -> Result<Vec<String>, ConfigError> {
    let given = list.is_some() || env.is_some();
    let mut out = list.unwrap_or_default();
    if let Some(var) = &env {
        let v = std::env::var(var)
            .map_err(|_| err(key, format!("environment variable `{var}` is not set")))?;
        out.extend(v.split(',').map(|t| t.trim().to_string()));
    }
    out.retain(|t| !t.is_empty());
    // No tokens means open to anyone: that must be said, not fallen into
    // because a variable came out empty.
    if given && out.is_empty() {
        return Err(err(
            key,
            match env {
                Some(var) => format!("no tokens given (environment variable `{var}` is empty)"),
                None => "no tokens given (leave the key out to allow anyone)".into(),
            },
        ));
    }
    if out.iter().any(|t| t.len() < 16) {
        return Err(err(
            key,
            "a token shorter than 16 characters is too easy to guess",
        ));
    }
    Ok(out)
}

/// Table names are quoted wherever they reach SQL; this only keeps them
/// printable and usable as a directory name.
fn check_table_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 {
        return Err("a table name is 1 to 255 bytes".into());
    }
    if name.chars().any(|c| c.is_control()) {
        return Err("a table name has no control characters".into());
    }
    if name.split('.').count() > 2 || name.starts_with('.') || name.ends_with('.') {
        return Err("a table is `name` or `database.name`".into());
    }
    Ok(())
}

/// A directory name for `table`, one-to-one (two tables never share a
/// spill directory) and unable to climb out of its parent: bytes other than
/// ASCII letters, digits, `_`, `-` and `.` are written `%XX`.
/// `check_table_name` already refuses `.`, `..` and leading dots.
fn dir_name(table: &str) -> Result<String, String> {
    let mut out = String::with_capacity(table.len());
    for b in table.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > 255 {
        return Err(format!(
            "the table's directory name would be {} bytes, over the 255 a file system allows",
            out.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ServeConfig, ConfigError> {
        ServeConfig::from_parts(parse_file(text, "test.toml")?, ServeFlags::default())
    }

    #[test]
    fn the_documented_example_is_accepted() {
        let c = parse(
            r#"
            listen = "127.0.0.1:8080"
            [clickhouse]
            urls = ["http://127.0.0.1:8123"]
            user = "default"
            [tables.post_events]
            max_rows = 500
            flush_interval = "10s"
            [tables.other]
            "#,
        )
        .unwrap();
        assert_eq!(c.tables.len(), 2);
        assert_eq!(c.listen.port(), 8080);
        assert_eq!(c.user.as_deref(), Some("default"));
    }

    #[test]
    fn errors_name_the_key() {
        let base = "[clickhouse]\nurls = [\"http://h:8123\"]\n";
        for (text, key) in [
            ("[tables.t]\nmax_rows = 0", "tables.t.max_rows"),
            (
                "[tables.t]\nflush_interval = \"soon\"",
                "tables.t.flush_interval",
            ),
            (
                "[tables.t]\nflush_interval = \"-1s\"",
                "tables.t.flush_interval",
            ),
            ("[tables.t]\ntokens = [\"short\"]", "tables.t.tokens"),
            (
                "data_dir = \"\"\n[tables.t]\nspill_max_bytes = 10",
                "tables.t.spill_max_bytes",
            ),
            ("listen = \"nowhere\"\n[tables.t]", "listen"),
            ("header_timeout = \"0s\"\n[tables.t]", "header_timeout"),
            ("max_connections = 0\n[tables.t]", "max_connections"),
            ("max_connections = 2000000\n[tables.t]", "max_connections"),
            (
                "[tables.t]\ninsert_timeout = \"0ms\"",
                "tables.t.insert_timeout",
            ),
            ("", "tables"),
        ] {
            let e = parse(&format!("{text}\n{base}"))
                .expect_err(text)
                .to_string();
            assert!(e.contains(&format!("`{key}`")), "{text}: {e}");
        }
        let e = parse("[clickhouse]\nurls = [\"ftp://h\"]\n[tables.t]")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("clickhouse.urls[0]"), "{e}");
        let e = parse("[clickhouse]\nurls = []\n[tables.t]\nmax_rowz = 1")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("max_rowz"), "{e}");
    }

    #[test]
    fn flags_win_over_the_file() {
        let file: FileConfig = toml::from_str(
            "listen = \"127.0.0.1:1\"\n[clickhouse]\nurls = [\"http://a:1\"]\n[tables.t]\nmax_rows = 7",
        )
        .unwrap();
        let flags = ServeFlags {
            listen: Some("127.0.0.1:2".into()),
            clickhouse_urls: vec!["http://b:1".into()],
            tables: vec!["u".into()],
            ..Default::default()
        };
        let c = ServeConfig::from_parts(file, flags).unwrap();
        assert_eq!(c.listen.port(), 2);
        assert_eq!(c.urls, vec!["http://b:1".to_string()]);
        let names: Vec<_> = c.tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["t", "u"]);
    }

    #[test]
    fn directory_names_cannot_escape_or_collide() {
        assert_eq!(dir_name("db.t").unwrap(), "db.t");
        assert_eq!(dir_name("a/b").unwrap(), "a%2Fb");
        assert!(!dir_name("../../etc").unwrap().contains('/'));
        // Before: both were `a_b`.
        assert_ne!(dir_name("a b").unwrap(), dir_name("a_b").unwrap());
        assert_ne!(dir_name("a%20b").unwrap(), dir_name("a b").unwrap());
        assert!(dir_name(&"/".repeat(100)).is_err());
    }

    #[test]
    fn table_tokens_replace_the_defaults() {
        std::env::set_var("CH_INGEST_TEST_TOKENS", "env-token-0123456789");
        let c = parse(
            r#"
            [clickhouse]
            urls = ["http://h:8123"]
            [defaults]
            tokens_env = "CH_INGEST_TEST_TOKENS"
            [tables.open_to_defaults]
            [tables.own]
            tokens = ["own-token-0123456789"]
            "#,
        )
        .unwrap();
        let tokens = |name: &str| {
            c.tables
                .iter()
                .find(|t| t.name == name)
                .map(|t| t.tokens.clone())
                .unwrap()
        };
        assert_eq!(tokens("open_to_defaults"), ["env-token-0123456789"]);
        assert_eq!(tokens("own"), ["own-token-0123456789"]);
    }

    #[test]
    fn a_token_source_that_yields_no_token_is_an_error_not_an_open_table() {
        std::env::set_var("CH_INGEST_TEST_EMPTY_TOKENS", " , ");
        let e = parse(
            "[clickhouse]\nurls = [\"http://h:8123\"]\n[tables.t]\ntokens_env = \"CH_INGEST_TEST_EMPTY_TOKENS\"",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("tables.t.tokens") && e.contains("empty"), "{e}");
        let e = parse("admin_tokens = []\n[clickhouse]\nurls = [\"http://h:8123\"]\n[tables.t]")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("admin_tokens"), "{e}");
    }

    #[test]
    fn a_syntax_error_does_not_echo_the_line() {
        let e = parse("[clickhouse]\nurls = [\"http://h:8123\"]\n[tables.t]\ntokens = [\"secret-token-0123456789\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("test.toml (line ") && !e.contains("secret"),
            "{e}"
        );
    }

    #[test]
    fn front_door_settings_are_checked_by_key() {
        let base = "[clickhouse]\nurls = [\"http://h:8123\"]\n[tables.t]\n";
        let c = parse(base).unwrap();
        assert_eq!(c.front_door.passthrough, Passthrough::Read);
        assert_eq!(c.front_door.auth, FrontDoorAuth::ClickHouse);
        assert_eq!(c.front_door.busy_timeout, Duration::from_millis(200));
        std::env::set_var("CH_INGEST_TEST_DOOR_PW", "pw");
        let c = parse(&format!(
            "{base}[front_door.users.u]\npassword_env = \"CH_INGEST_TEST_DOOR_PW\"\ntables = [\"t\"]\n"
        ))
        .unwrap();
        assert_eq!(c.front_door.auth, FrontDoorAuth::Users);
        assert_eq!(c.front_door.users[0].password, "pw");
        assert!(!format!("{:?}", c.front_door.users).contains("pw\""));
        for (extra, key) in [
            ("[front_door.users.u]\ntables = [\"t\"]\n", "front_door.users.u.password_env"),
            (
                "[front_door.users.u]\npassword_env = \"CH_INGEST_TEST_DOOR_PW\"\ntables = [\"nope\"]\n",
                "front_door.users.u.tables",
            ),
            ("[front_door]\nauth = \"users\"\n", "front_door.auth"),
            ("[front_door]\nauth = \"maybe\"\n", "front_door.auth"),
            ("[front_door]\nbusy_timeout = \"soon\"\n", "front_door.busy_timeout"),
        ] {
            let e = parse(&format!("{base}{extra}")).err().unwrap().to_string();
            assert!(e.contains(key), "{extra}: {e}");
        }
        let e = parse(&base.replace("[tables.t]", "passthrough = \"some\"\n[tables.t]"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("clickhouse.passthrough"), "{e}");
    }

    #[test]
    fn a_wrongly_typed_secret_is_not_echoed() {
        let e = parse("[clickhouse]\nurls = [\"http://h:8123\"]\n[tables.t]\ntokens = \"secret-token-0123456789\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("line 4") && e.contains("invalid type: string") && !e.contains("secret"),
            "{e}"
        );
    }

    #[test]
    fn a_password_flag_replaces_the_files_source() {
        std::env::set_var("CH_INGEST_TEST_PASSWORD", "from-env");
        let file = parse_file(
            "[clickhouse]\nurls = [\"http://h:1\"]\npassword_file = \"/nonexistent\"\n[tables.t]",
            "test.toml",
        )
        .unwrap();
        let flags = ServeFlags {
            password_env: Some("CH_INGEST_TEST_PASSWORD".into()),
            ..Default::default()
        };
        let c = ServeConfig::from_parts(file, flags).unwrap();
        assert_eq!(c.password.as_deref(), Some("from-env"));
    }

    #[test]
    fn undeliverable_rows_are_kept_under_a_data_directory_by_default() {
        let base = "[clickhouse]\nurls = [\"http://h:8123\"]\n[tables.t]\n";
        let c = parse(base).unwrap();
        let here = std::env::current_dir().unwrap().join(DEFAULT_DATA_DIR);
        assert_eq!(c.kept, (Some(here.join("spill")), Some(here.join("dead"))));
        let c = parse(&format!("data_dir = \"/srv/ch\"\n{base}")).unwrap();
        assert_eq!(
            c.kept,
            (Some("/srv/ch/spill".into()), Some("/srv/ch/dead".into()))
        );
        let c = parse(&format!(
            "data_dir = \"/srv/ch\"\nspill_dir = \"/fast\"\n{base}"
        ))
        .unwrap();
        assert_eq!(c.kept, (Some("/fast".into()), Some("/srv/ch/dead".into())));
        // Only when asked: nothing kept.
        let c = parse(&format!("data_dir = \"\"\n{base}")).unwrap();
        assert_eq!(c.kept, (None, None));
    }

    #[test]
    fn a_jwt_comes_from_the_environment_or_a_file_and_stays_out_of_debug() {
        std::env::set_var("CH_INGEST_TEST_JWT", "eyJ.secret-jwt.sig");
        let base = "[clickhouse]\nurls = [\"https://h:8443\"]\n";
        let c = parse(&format!(
            "{base}access_token_env = \"CH_INGEST_TEST_JWT\"\nquota_key = \"tenant\"\n\
             danger_accept_invalid_certs = true\n[tables.t]"
        ))
        .unwrap();
        assert_eq!(c.access_token.as_deref(), Some("eyJ.secret-jwt.sig"));
        assert_eq!(c.quota_key.as_deref(), Some("tenant"));
        assert!(!format!("{c:?}").contains("secret-jwt"), "{c:?}");
        for (extra, key) in [
            (
                "access_token_env = \"CH_INGEST_TEST_JWT\"\nuser = \"u\"",
                "clickhouse.access_token_env",
            ),
            (
                "access_token_env = \"CH_INGEST_TEST_JWT\"\naccess_token_file = \"/x\"",
                "clickhouse.access_token_env",
            ),
            (
                "access_token_file = \"/nonexistent/jwt\"",
                "clickhouse.access_token_file",
            ),
            ("access_token = \"eyJ.inline\"", "access_token"),
        ] {
            let e = parse(&format!("{base}{extra}\n[tables.t]")).unwrap_err();
            assert!(e.to_string().contains(key), "{extra}: {e}");
            assert!(!e.to_string().contains("secret-jwt"), "{e}");
        }
    }

    #[test]
    fn credentials_in_urls_are_refused_without_being_repeated() {
        for url in [
            "http://u:secret@h:8123",
            // `http::Uri` ends the authority at the `/`: `u:secret` would
            // have been taken for host:port.
            "http://u:sec/ret@h:8123",
            "http://h:8123/?password=secret",
            "http://h:8123/?user=u&password=secret",
            "http://h:8123/#secret",
            "http://h:8123/ \"secret",
        ] {
            let e = parse(&format!(
                "[clickhouse]\nurls = [\"http://ok:1\", {url:?}]\n[tables.t]"
            ))
            .err()
            .unwrap_or_else(|| panic!("{url} was accepted"))
            .to_string();
            assert!(
                e.contains("clickhouse.urls[1]") && !e.contains("secret") && !e.contains("sec/"),
                "{url}: {e}"
            );
        }
        assert!(
            parse("[clickhouse]\nurls = [\"https://h:8443/\", \"http://h\"]\n[tables.t]").is_ok()
        );
    }

    #[test]
    fn a_cluster_is_listed_or_discovered_and_every_mistake_names_its_key() {
        let c = parse(
            "[clickhouse]\nshards = [[\"http://a:1\", \"http://b:1\"], [\"http://c:1\"]]\n\
             shard_weights = [1, 2]\n[tables.t]\nlocal_table = \"t_local\"\n\
             sharding_key = \"cityHash64(id)\"",
        )
        .unwrap();
        assert_eq!(c.urls, ["http://a:1", "http://b:1", "http://c:1"]);
        let Destination::Shards(shards) = &c.destination else {
            panic!("{:?}", c.destination)
        };
        assert_eq!(shards[1].weight(), 2);
        assert_eq!(c.tables[0].local_table.as_deref(), Some("t_local"));
        let c = parse(
            "[clickhouse]\nurls = [\"http://seed:8123\"]\ncluster = \"events\"\n\
             http_ports = { \"ch-2:9000\" = 8124 }\n[tables.t]",
        )
        .unwrap();
        assert_eq!(
            c.destination,
            Destination::Cluster {
                name: "events".into(),
                http_ports: vec![("ch-2:9000".into(), 8124)],
            }
        );
        for (text, key) in [
            (
                "shards = [[\"http://a:1\"]]\ncluster = \"c\"\nurls = [\"http://a:1\"]",
                "clickhouse.shards",
            ),
            (
                "shards = [[\"http://a:1\"]]\nurls = [\"http://a:1\"]",
                "clickhouse.urls",
            ),
            ("shards = []", "clickhouse.shards"),
            ("shards = [[]]", "clickhouse.shards[0]"),
            ("shards = [[\"http://u:p@a:1\"]]", "clickhouse.shards[0][0]"),
            (
                "shards = [[\"http://a:1\"]]\nshard_weights = [1, 2]",
                "clickhouse.shard_weights",
            ),
            (
                "shards = [[\"http://a:1\"]]\nshard_weights = [0]",
                "clickhouse.shard_weights",
            ),
            (
                "urls = [\"http://a:1\"]\nshard_weights = [1]",
                "clickhouse.shard_weights",
            ),
            (
                "urls = [\"http://a:1\"]\ncluster = \"c\"\nshard_weights = [1]",
                "clickhouse.shard_weights",
            ),
            (
                "urls = [\"http://a:1\"]\nhttp_ports = { a = 1 }",
                "clickhouse.http_ports",
            ),
            ("cluster = \"c\"", "clickhouse.urls"),
        ] {
            let e = parse(&format!("[clickhouse]\n{text}\n[tables.t]"))
                .err()
                .unwrap_or_else(|| panic!("accepted: {text}"));
            assert!(e.to_string().contains(&format!("`{key}`")), "{text}: {e}");
        }
        let server = "[clickhouse]\nurls = [\"http://a:1\"]\n[tables.t]\n";
        for (extra, key) in [
            ("local_table = \"x\"", "tables.t.local_table"),
            ("sharding_key = \"id\"", "tables.t.sharding_key"),
        ] {
            let e = parse(&format!("{server}{extra}")).err().unwrap();
            assert!(e.to_string().contains(&format!("`{key}`")), "{e}");
            assert!(e.to_string().contains("needs a cluster"), "{e}");
        }
        let listed = "[clickhouse]\nshards = [[\"http://a:1\"]]\n[tables.t]\n";
        let e = parse(&format!("{listed}sharding_key = \"halfMD5(id)\""))
            .err()
            .unwrap();
        assert!(e.to_string().contains("`tables.t.sharding_key`"), "{e}");
        assert!(e.to_string().contains("Distributed"), "{e}");
    }
}

#[cfg(test)]
mod network_tests {
    use super::Network;

    #[test]
    fn address_ranges_match_as_written() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let lo = Network::parse("127.0.0.0/8").unwrap();
        assert!(lo.contains(ip("127.1.2.3")));
        assert!(lo.contains(ip("::ffff:127.0.0.1")));
        assert!(!lo.contains(ip("10.0.0.1")));
        assert!(!lo.contains(ip("::1")));
        let one = Network::parse("::1").unwrap();
        assert!(one.contains(ip("::1")) && !one.contains(ip("::2")));
        assert!(Network::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Network::parse("10.0.0.0/7")
            .unwrap()
            .contains(ip("11.255.0.1")));
        for bad in ["10.0.0.0/33", "x", "::/129", "1.2.3.4/"] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
    }
}
