//! HTTPS to ClickHouse (the `tls` feature) against a private 18.16 that
//! serves HTTPS with a CA made for the run: the library sink delivers
//! through a custom CA, through `SSL_CERT_FILE`, and refuses a server its
//! roots do not vouch for, naming the host and the reason; it
//! authenticates every way ClickHouse's HTTP interface takes; and it waits
//! for a service that accepts connections but takes 20 s to wake up.

mod support;

use ch_ingest::sink::{nodelay_client, ClickHouseSink, SinkError, Tls};
use ch_ingest::{Buffer, PostEvent};
use support::check::rich_event as ev;

/// A private server with an HTTPS port, its HTTPS URL, and its PKI.
fn tls_server(dir: &std::path::Path) -> Option<(support::Server, String, support::pki::Pki)> {
    if std::env::var("CLICKHOUSE_URL").is_ok() {
        eprintln!("NOTICE: CLICKHOUSE_URL set; the TLS tests need a private server");
        return None;
    }
    let pki = support::pki::Pki::new(dir);
    let (server, url) = match pki.start_server(false) {
        Ok(s) => s,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => panic!("no server: {e}"),
        Err(e) => {
            eprintln!("NOTICE: skipping the TLS tests, no server: {e}");
            return None;
        }
    };
    Some((server, url, pki))
}

async fn deliver(client: clickhouse::Client, table: &str, n: u64) -> Result<u64, SinkError> {
    deliver_counting(client, table, n).await.0
}

/// `deliver`, and the engine's final stats.
async fn deliver_counting(
    client: clickhouse::Client,
    table: &str,
    n: u64,
) -> (Result<u64, SinkError>, ch_ingest::Stats) {
    let sink = ClickHouseSink::new(client, table);
    let buffer: Buffer<PostEvent> = Buffer::builder()
        .retry(support::check::quick_retries())
        .build(sink)
        .unwrap();
    for i in 0..n {
        buffer.track(ev(i)).unwrap();
    }
    let report = buffer.shutdown().await.unwrap();
    let stats = buffer.stats();
    let result = match report.failures.into_iter().next() {
        Some(f) => Err(f.error),
        None => Ok(report.rows),
    };
    (result, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_speaks_https_with_a_custom_ca_and_refuses_an_unknown_one() {
    let dir = tempfile::tempdir().unwrap();
    let Some((server, url, pki)) = tls_server(dir.path()) else {
        return;
    };
    let table = "tls_events";
    server.query(&PostEvent::create_table_sql(table));
    // The CA the server's certificate chains to: delivered, hostname
    // checked (`localhost` is in the certificate).
    let client = Tls::new().ca_cert(&pki.ca).client().unwrap().with_url(&url);
    assert_eq!(deliver(client, table, 1_000).await.unwrap(), 1_000);
    assert_eq!(server.count(table), 1_000);
    // A CA that signed nothing here: refused, and the error says it is the
    // certificate, not a generic connection failure.
    let wrong = Tls::new()
        .ca_cert(&pki.other_ca)
        .client()
        .unwrap()
        .with_url(&url);
    let (result, stats) = deliver_counting(wrong, table, 10).await;
    match result {
        Err(SinkError::Certificate { host, reason }) => {
            assert_eq!(host, "localhost");
            assert!(reason.contains("UnknownIssuer"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(stats.certificate_errors >= 1, "{stats:?}");
    assert_eq!(stats.failed_rows, 10);
    // Only through the switch whose name says it is dangerous: any
    // certificate passes.
    let blind = Tls::new()
        .danger_accept_invalid_certs(true)
        .client()
        .unwrap()
        .with_url(&url);
    assert_eq!(deliver(blind, table, 10).await.unwrap(), 10);
    // The default client knows only the platform's and Mozilla's roots...
    let plain = nodelay_client().with_url(&url);
    let e = deliver(plain, table, 10).await.unwrap_err().to_string();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    // ...and SSL_CERT_FILE's, as OpenSSL-based tools read it.
    std::env::set_var("SSL_CERT_FILE", &pki.ca);
    let from_env = nodelay_client().with_url(&url);
    let delivered = deliver(from_env, table, 500).await;
    std::env::remove_var("SSL_CERT_FILE");
    assert_eq!(delivered.unwrap(), 500);
    // The IP address is in the certificate too; plain HTTP still works.
    let by_ip = url.replace("localhost", "127.0.0.1");
    let client = Tls::new()
        .ca_cert(&pki.ca)
        .client()
        .unwrap()
        .with_url(&by_ip);
    assert_eq!(deliver(client, table, 10).await.unwrap(), 10);
    let http = Tls::new()
        .ca_cert(&pki.ca)
        .client()
        .unwrap()
        .with_url(&server.url);
    assert_eq!(deliver(http, table, 10).await.unwrap(), 10);
    assert_eq!(server.count(table), 1_530);
    // A file that holds no certificate is named in the error.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let e = Tls::new().ca_cert(&empty).client().unwrap_err().to_string();
    assert!(e.contains("ca_cert") && e.contains("empty.pem"), "{e}");
    let e = Tls::new()
        .client_auth(&pki.client_cert, &empty)
        .client()
        .unwrap_err()
        .to_string();
    assert!(e.contains("client_key"), "{e}");
}

/// Every way ClickHouse's HTTP interface takes a user, through the sink
/// over HTTPS: `X-ClickHouse-User`/`X-ClickHouse-Key` (the crate's
/// `with_user`/`with_password`), `Authorization: Basic`, `user` and
/// `password` URL parameters, and the quota key as `X-ClickHouse-Quota`;
/// `Authorization: Bearer` (a JWT, ClickHouse Cloud's) reaches the server,
/// which on 18.16 knows no JWT and says so. A wrong password is refused
/// for good, and no error text carries a password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_authenticates_every_way_clickhouse_takes() {
    let dir = tempfile::tempdir().unwrap();
    let Some((server, url, pki)) = tls_server(dir.path()) else {
        return;
    };
    let table = "auth_events";
    server.query(&PostEvent::create_table_sql(table));
    let pw = support::WRITER_PASSWORD;
    let base = || Tls::new().ca_cert(&pki.ca).client().unwrap().with_url(&url);
    let headers = base().with_user("writer").with_password(pw);
    assert_eq!(deliver(headers, table, 10).await.unwrap(), 10);
    let basic = base().with_header("Authorization", support::basic_auth("writer", pw));
    assert_eq!(deliver(basic, table, 10).await.unwrap(), 10);
    let params = base()
        .with_setting("user", "writer")
        .with_setting("password", pw);
    assert_eq!(deliver(params, table, 10).await.unwrap(), 10);
    let keyed = base()
        .with_user("writer")
        .with_password(pw)
        .with_header("X-ClickHouse-Quota", "tenant-7");
    assert_eq!(deliver(keyed, table, 10).await.unwrap(), 10);
    assert_eq!(server.count(table), 40);
    server.query("SYSTEM FLUSH LOGS");
    let keyed_inserts = server.query(&format!(
        "SELECT count() FROM system.query_log WHERE quota_key = 'tenant-7' \
         AND user = 'writer' AND query LIKE 'INSERT INTO `{table}`%'"
    ));
    assert_ne!(keyed_inserts.trim(), "0", "no INSERT under the quota key");

    let wrong = base().with_user("writer").with_password("not-the-password");
    let e = deliver(wrong, table, 10).await.unwrap_err();
    assert!(!e.is_retryable(), "{e}");
    assert!(
        matches!(
            e,
            SinkError::Server {
                code: Some(193),
                ..
            }
        ),
        "{e}"
    );
    let jwt = base().with_access_token("eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl");
    let e = deliver(jwt, table, 10).await.unwrap_err();
    // 18.16: "No authentication information found: Basic authentication
    // expected" — the Bearer header arrived; a server with JWT takes it.
    assert!(matches!(e, SinkError::Server { .. }), "{e}");
    assert!(e.to_string().contains("authentication"), "{e}");
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(
            !text.contains(pw) && !text.contains("c2lnbmF0dXJl"),
            "{text}"
        );
    }
    assert_eq!(server.count(table), 40);
}

/// A managed service waking from idle: it accepts the TCP connection at
/// once but answers nothing for `asleep` (ClickHouse Cloud takes 20-30 s).
/// Counts the connections open through it now.
struct SleepyProxy {
    port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl SleepyProxy {
    async fn start(to: std::net::SocketAddr, asleep: std::time::Duration) -> Self {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let wake_at = tokio::time::Instant::now() + asleep;
        let counted = open.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let open = counted.clone();
                open.fetch_add(1, SeqCst);
                tokio::spawn(async move {
                    tokio::time::sleep_until(wake_at).await;
                    if let Ok(mut server) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                    open.fetch_sub(1, SeqCst);
                });
            }
        });
        SleepyProxy { port, open }
    }

    fn open(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A service that accepts connections but takes 20 s to answer is waited
/// for within the retry window: every row stored, none spilled or
/// dead-lettered. Then the idle connection is closed by us well before
/// the 10 s after which ClickHouse Cloud would close it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_waking_from_idle_is_waited_for_and_idle_connections_close_first() {
    let dir = tempfile::tempdir().unwrap();
    let Some((server, url, pki)) = tls_server(dir.path()) else {
        return;
    };
    let table = "waking_events";
    server.query(&PostEvent::create_table_sql(table));
    let https: std::net::SocketAddr = url
        .trim_start_matches("https://")
        .replace("localhost", "127.0.0.1")
        .parse()
        .unwrap();
    let asleep = std::time::Duration::from_secs(20);
    let proxy = SleepyProxy::start(https, asleep).await;
    let client = Tls::new()
        .ca_cert(&pki.ca)
        .client()
        .unwrap()
        .with_url(format!("https://localhost:{}", proxy.port));
    let started = std::time::Instant::now();
    // The defaults: a 60 s insert_timeout and retry window.
    let buffer: Buffer<PostEvent> = Buffer::builder()
        .spill_dir(dir.path().join("spill"))
        .dead_letter_dir(dir.path().join("dead"))
        .build(ClickHouseSink::new(client, table))
        .unwrap();
    for i in 0..5_000 {
        buffer.track(ev(i)).unwrap();
    }
    buffer.flush().await.unwrap();
    assert!(started.elapsed() >= asleep, "{:?}", started.elapsed());
    assert_eq!(server.count(table), 5_000);
    // Idle: our side closes the kept-alive connections after IDLE_CLOSE.
    let answered = std::time::Instant::now();
    while proxy.open() > 0 && answered.elapsed() < std::time::Duration::from_secs(10) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let closed_after = answered.elapsed();
    eprintln!(
        "idle connections closed {closed_after:?} after the last answer (IDLE_CLOSE {:?})",
        ch_ingest::sink::IDLE_CLOSE
    );
    assert_eq!(proxy.open(), 0, "still open after {closed_after:?}");
    assert!(
        closed_after < std::time::Duration::from_secs(8),
        "{closed_after:?}"
    );
    let stats = buffer.stats();
    assert_eq!(
        (
            stats.spilled_rows,
            stats.dead_lettered_rows,
            stats.failed_rows
        ),
        (0, 0, 0),
        "{stats:?}"
    );
    buffer.shutdown().await.unwrap();
    assert_eq!(server.count(table), 5_000);
}
