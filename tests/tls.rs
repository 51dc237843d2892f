//! HTTPS to ClickHouse (the `tls` feature) against a private 18.16 that
//! serves HTTPS with a CA made for the run: the library sink delivers
//! through a custom CA, through `SSL_CERT_FILE`, and refuses a server its
//! roots do not vouch for, saying why.

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
    let https = support::free_port();
    let server = match support::Server::start_node(
        support::free_port(),
        support::free_port(),
        &pki.server_xml(https),
    ) {
        Ok(s) => s,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => panic!("no server: {e}"),
        Err(e) => {
            eprintln!("NOTICE: skipping the TLS tests, no server: {e}");
            return None;
        }
    };
    Some((server, format!("https://localhost:{https}"), pki))
}

async fn deliver(client: clickhouse::Client, table: &str, n: u64) -> Result<u64, SinkError> {
    let sink = ClickHouseSink::new(client, table);
    let buffer: Buffer<PostEvent> = Buffer::builder()
        .retry(support::check::quick_retries())
        .build(sink)
        .unwrap();
    for i in 0..n {
        buffer.track(ev(i)).unwrap();
    }
    let report = buffer.shutdown().await.unwrap();
    match report.failures.into_iter().next() {
        Some(f) => Err(f.error),
        None => Ok(report.rows),
    }
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
    let e = deliver(wrong, table, 10).await.unwrap_err().to_string();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
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
    assert_eq!(server.count(table), 1_520);
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
