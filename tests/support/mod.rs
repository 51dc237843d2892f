//! Test support: a private `clickhouse-server` per test binary (or the one
//! `CLICKHOUSE_URL` names), and a minimal HTTP client to query it.
//!
//! The private server runs on free loopback ports with its data on /dev/shm
//! (tmpfs: dropping tables on this machine's disk slows file creation for
//! minutes) and dies with the test binary (PR_SET_PDEATHSIG on a thread that
//! never exits). Under `CI=true` a missing server is a failure, never a skip.

#![allow(dead_code)]

pub mod check;
pub mod cluster;
pub mod pki;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct Server {
    pub url: String,
    pub version: String,
    http: String,
    child: Option<std::sync::Mutex<Child>>,
    dir: Option<PathBuf>,
}

/// The server shared by every test in this binary, or `None` (with a notice)
/// when no server can be had outside CI.
pub fn shared() -> Option<&'static Server> {
    static SERVER: OnceLock<Option<Server>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            if let Ok(url) = std::env::var("CLICKHOUSE_URL") {
                return Some(Server::external(url));
            }
            match Server::start() {
                Ok(s) => Some(s),
                Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                    panic!("CI=true and no ClickHouse server could be started: {e}")
                }
                Err(e) => {
                    eprintln!("NOTICE: skipping ClickHouse tests, no server: {e}");
                    None
                }
            }
        })
        .as_ref()
}

/// Shorthand for tests: the shared server, or return early (outside CI only).
#[macro_export]
macro_rules! server_or_skip {
    () => {
        match support::shared() {
            Some(s) => s,
            None => return,
        }
    };
}

/// A free loopback port below the kernel's ephemeral range (32768 and up
/// here), so no client connection of this or another test can be holding
/// it when the server binds it (an `Address already in use` failed a CI
/// run when the port came from the ephemeral range).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 512) as u16 * 24;
    for _ in 0..12_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (base - 20_000 + n) % 12_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

const BINARY: &str = "/usr/sbin/clickhouse-server";

/// `Authorization: Basic` for `user` and `password`.
pub fn basic_auth(user: &str, password: &str) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = format!("{user}:{password}").into_bytes();
    let mut out = String::from("Basic ");
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, &b| n << 8 | b as u32) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            let c = if i <= chunk.len() {
                ABC[(n >> (18 - 6 * i) & 63) as usize]
            } else {
                b'='
            };
            out.push(c as char);
        }
    }
    out
}

/// The private server's users besides `default`: `reader`, whose profile
/// is `readonly = 1` (ClickHouse refuses its INSERTs with code 164), and
/// `elsewhere`, who may use only the `system` database (code 291 for
/// `default`'s tables), and `writer`, who may insert anywhere, whose
/// quota is keyed (by `X-ClickHouse-Quota` / `quota_key`) and whose
/// queries are in `system.query_log`.
pub const READER_PASSWORD: &str = "r3ader-pw";
pub const WRITER_PASSWORD: &str = "wr1ter-s3cret-pw";
pub const ELSEWHERE_PASSWORD: &str = "elsewh3re-pw";

impl Server {
    fn external(url: String) -> Self {
        let http = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let mut s = Server {
            url,
            version: String::new(),
            http,
            child: None,
            dir: None,
        };
        s.version = s.query("SELECT version()").trim().to_string();
        s
    }

    /// Starts a private server. It is killed when this value is dropped, or
    /// when the test binary exits.
    pub fn start() -> Result<Server, String> {
        // A port can still be taken between our check and the server's
        // bind: try other ports a few times.
        let mut last = String::new();
        for _ in 0..3 {
            match Self::start_once() {
                Ok(s) => return Ok(s),
                Err(e) if e.contains("Address already in use") => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    fn start_once() -> Result<Server, String> {
        Self::start_node(free_port(), free_port(), "")
    }

    /// Starts a private server on these ports, with `extra` XML inside its
    /// `<yandex>` config (a cluster node's ZooKeeper, macros, shards).
    pub fn start_node(http_port: u16, tcp_port: u16, extra: &str) -> Result<Server, String> {
        if !std::path::Path::new(BINARY).exists() {
            return Err(format!(
                "{BINARY} not found (apt-get install clickhouse-server)"
            ));
        }
        clean_stale_dirs();
        let dir = PathBuf::from(format!(
            "/dev/shm/ch-ingest-test-{}-{http_port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let d = dir.display();
        let config = format!(
            r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/server.err.log</errorlog><console>0</console></logger>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <users_config>{d}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
{extra}
</yandex>
"#
        );
        let users = r#"<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage><allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type></default><readonly><readonly>1</readonly></readonly><logged><profile>default</profile><log_queries>1</log_queries></logged></profiles>
  <users><default><password></password><networks><ip>::/0</ip></networks><profile>default</profile><quota>default</quota></default>
    <reader><password>{READER_PASSWORD}</password><networks><ip>::/0</ip></networks><profile>readonly</profile><quota>default</quota></reader>
    <elsewhere><password>{ELSEWHERE_PASSWORD}</password><networks><ip>::/0</ip></networks><profile>default</profile><quota>default</quota><allow_databases><database>system</database></allow_databases></elsewhere>
    <writer><password>{WRITER_PASSWORD}</password><networks><ip>::/0</ip></networks><profile>logged</profile><quota>keyed</quota></writer></users>
  <quotas><keyed><keyed/><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></keyed><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
"#;
        std::fs::write(dir.join("config.xml"), config).map_err(|e| e.to_string())?;
        let users = users
            .replace("{READER_PASSWORD}", READER_PASSWORD)
            .replace("{ELSEWHERE_PASSWORD}", ELSEWHERE_PASSWORD)
            .replace("{WRITER_PASSWORD}", WRITER_PASSWORD);
        std::fs::write(dir.join("users.xml"), users).map_err(|e| e.to_string())?;
        let child = spawn_tied_to_process(dir.join("config.xml"))?;
        let mut s = Server {
            url: format!("http://127.0.0.1:{http_port}"),
            version: String::new(),
            http: format!("127.0.0.1:{http_port}"),
            child: Some(std::sync::Mutex::new(child)),
            dir: Some(dir),
        };
        s.wait_ready(Duration::from_secs(30))?;
        s.version = s.query("SELECT version()").trim().to_string();
        Ok(s)
    }

    fn wait_ready(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok((200, body)) = self.request("GET", "/ping", b"") {
                if body.starts_with(b"Ok") {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                let log = self
                    .dir
                    .as_ref()
                    .and_then(|d| std::fs::read_to_string(d.join("server.err.log")).ok())
                    .unwrap_or_default();
                return Err(format!(
                    "server did not answer /ping within {limit:?}: {log}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a signal to the private server (SIGKILL, SIGSTOP, SIGCONT...).
    pub fn signal(&self, sig: &str) {
        let child = self.child.as_ref().expect("not a private server");
        let pid = child.lock().unwrap().id();
        Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
    }

    /// Kills the private server with SIGKILL and starts it again on the same
    /// ports and data after `down`, then waits until it answers.
    pub fn kill_and_restart(&self, down: Duration) {
        let child = self.child.as_ref().expect("not a private server");
        let dir = self.dir.as_ref().expect("not a private server");
        {
            let mut c = child.lock().unwrap();
            let _ = c.kill();
            let _ = c.wait();
        }
        std::thread::sleep(down);
        let fresh = spawn_tied_to_process(dir.join("config.xml")).expect("restart");
        *child.lock().unwrap() = fresh;
        self.wait_ready(Duration::from_secs(60))
            .expect("restarted server");
    }

    /// Stops the private server gracefully (SIGTERM, as a rolling restart
    /// or `systemctl restart` does), waits until it has exited, and starts
    /// it again on the same ports and data after `down`.
    pub fn terminate_and_restart(&self, down: Duration) {
        let child = self.child.as_ref().expect("not a private server");
        let dir = self.dir.as_ref().expect("not a private server");
        {
            let mut c = child.lock().unwrap();
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while c.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        std::thread::sleep(down);
        let fresh = spawn_tied_to_process(dir.join("config.xml")).expect("restart");
        *child.lock().unwrap() = fresh;
        self.wait_ready(Duration::from_secs(60))
            .expect("restarted server");
    }

    /// The HTTP port.
    pub fn port(&self) -> u16 {
        self.http
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// Runs `sql`; the server's error as text instead of a panic.
    pub fn try_query(&self, sql: &str) -> Result<String, String> {
        match self.request("POST", "/", sql.as_bytes()) {
            Ok((200, body)) => Ok(String::from_utf8_lossy(&body).into_owned()),
            Ok((status, body)) => Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body))),
            Err(e) => Err(e),
        }
    }

    /// Runs `sql`, panics on an error, returns the body as text.
    pub fn query(&self, sql: &str) -> String {
        String::from_utf8(self.query_bytes(sql)).expect("utf8 response")
    }

    /// Runs `sql`, panics on an error, returns the raw body.
    pub fn query_bytes(&self, sql: &str) -> Vec<u8> {
        match self.request("POST", "/", sql.as_bytes()) {
            Ok((200, body)) => body,
            Ok((status, body)) => {
                panic!("{sql}: HTTP {status}: {}", String::from_utf8_lossy(&body))
            }
            Err(e) => panic!("{sql}: {e}"),
        }
    }

    pub fn count(&self, table: &str) -> u64 {
        self.query(&format!("SELECT count() FROM {table}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// A fresh table name; the table is dropped first if it exists.
    pub fn fresh_table(&self, name: &str, columns_and_engine: &str) -> String {
        let table = format!("{name}_{}", std::process::id());
        self.query(&format!("DROP TABLE IF EXISTS {table}"));
        self.query(&format!("CREATE TABLE {table} {columns_and_engine}"));
        table
    }

    fn request(&self, method: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
        http(&self.http, method, path, &[], body).map(|(status, _, body)| (status, body))
    }
}

/// A minimal HTTP/1.0 request: `(status, head, body)`. Header names in the
/// returned head are as the server sent them.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, String, Vec<u8>), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let mut head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    // A server may answer (413, 401) before the body is all sent and then
    // close: write from another thread while this one reads, ignore the
    // writer's broken pipe, and keep whatever answer arrived before a reset.
    let mut writer = s.try_clone().map_err(|e| e.to_string())?;
    let body = body.to_vec();
    let sent = std::thread::spawn(move || writer.write_all(&body));
    let mut resp = Vec::new();
    let read = s.read_to_end(&mut resp);
    // The answer is complete: a writer still blocked has nobody to write to.
    let _ = s.shutdown(std::net::Shutdown::Both);
    let sent = sent.join().map_err(|_| "the writer panicked")?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no HTTP answer (read: {read:?}, write: {sent:?})"))?;
    let status: u16 = std::str::from_utf8(resp.get(9..12).ok_or("short answer")?)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    Ok((status, head, resp[split + 4..].to_vec()))
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            let mut c = child.lock().unwrap_or_else(|p| p.into_inner());
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Spawns the server from a thread that never exits, with PR_SET_PDEATHSIG,
/// so the server dies with the test process even if statics are never dropped.
fn spawn_tied_to_process(config: PathBuf) -> Result<Child, String> {
    spawn_tied(BINARY, vec![format!("--config-file={}", config.display())])
}

/// Spawns `program` so that it dies with the test process (see above).
pub fn spawn_tied(program: &'static str, args: Vec<String>) -> Result<Child, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut cmd = Command::new(program);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let _ = tx.send(cmd.spawn().map_err(|e| e.to_string()));
        loop {
            std::thread::park();
        }
    });
    rx.recv().map_err(|e| e.to_string())?
}

/// Removes data directories left by test processes that no longer exist.
fn clean_stale_dirs() {
    let Ok(entries) = std::fs::read_dir("/dev/shm") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(rest) = name.strip_prefix("ch-ingest-test-") {
            let pid = rest.split('-').next().unwrap_or("");
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// What the engine logs through `tracing` on this thread, captured while
/// the guard lives.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    /// Starts capturing this thread's logs (a current-thread runtime keeps
    /// the engine's tasks on it).
    pub fn start() -> (Captured, tracing::subscriber::DefaultGuard) {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
