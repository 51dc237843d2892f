//! `ch-ingest replay` against a real ClickHouse (the private 18.16 server,
//! or `CLICKHOUSE_URL`): dead letters after a dropped table, spill files a
//! SIGKILLed `ch-ingest load` left, and a directory a crash left untidy.
//! Here, not in the library's tests, because they run the binary.

#[path = "../../tests/support/mod.rs"]
mod support;

use ch_ingest::sink::{nodelay_client, ClickHouseSink};
use ch_ingest::{Buffer, PostEvent};
use std::time::Duration;
use support::check::rich_event as ev;

fn sink(server: &support::Server, table: &str) -> ClickHouseSink {
    ClickHouseSink::new(nodelay_client().with_url(&server.url), table)
}

fn post_table(server: &support::Server, name: &str) -> String {
    let table = format!("{name}_{}", std::process::id());
    server.query(&format!("DROP TABLE IF EXISTS {table}"));
    server.query(&PostEvent::create_table_sql(&table));
    table
}

/// The table is dropped mid-run: a permanent error, so the batch is
/// dead-lettered at once (no retry loop); once the table is back,
/// `ch-ingest replay` delivers the dead letters and the count is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_table_dead_letters_without_retrying_and_replay_recovers() {
    let server = server_or_skip!();
    let table = post_table(server, "dropped");
    let dl = tempfile::tempdir().unwrap();
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(1)
        .dead_letter_dir(dl.path())
        .build(sink(server, &table))
        .unwrap();
    for i in 0..1_000 {
        b.track(ev(i)).unwrap();
    }
    assert!(b.flush().await.unwrap().is_complete());
    server.query(&format!("DROP TABLE {table}"));
    for i in 1_000..3_000 {
        b.track(ev(i)).unwrap();
    }
    let report = b.flush().await.unwrap();
    assert_eq!(report.failed_rows, 2_000);
    assert!(
        report.failures.iter().all(|f| f.attempts == 1),
        "never retried"
    );
    // Asked again twice before it was believed, and the error says so.
    let said = report.failures[0].error.to_string();
    assert!(said.contains("the same answer 3 times"), "{said}");
    assert!(report.failures.iter().all(|f| f.dead_letter.is_some()));
    let s = b.stats();
    assert_eq!(
        (s.retried_inserts, s.dead_lettered_rows, s.dropped_rows),
        (0, 2_000, 0)
    );
    b.shutdown().await.unwrap();

    server.query(&PostEvent::create_table_sql(&table));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ch-ingest"))
        .args([
            "replay",
            &dl.path().display().to_string(),
            "--clickhouse-url",
            &server.url,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    assert_eq!(server.count(&table), 2_000);
    let ids = server.query(&format!(
        "SELECT min(tweet_id), max(tweet_id), uniqExact(tweet_id) FROM {table}"
    ));
    assert_eq!(
        ids.split_whitespace().collect::<Vec<_>>(),
        ["1000", "2999", "2000"]
    );
    assert_eq!(
        std::fs::read_dir(dl.path()).unwrap().count(),
        0,
        "replayed letters are removed"
    );
}

/// `ch-ingest replay` on a directory a crash left untidy: a spill file
/// whose dead letter was already written (the crash came before the spill
/// file's delete) and a dead letter whose data file is gone (an older
/// layout deleted data first). Every row arrives once and the run goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_a_crash_sends_each_insert_once_and_skips_half_deleted_letters() {
    use ch_ingest::sink::{MemorySink, SinkError};
    let server = server_or_skip!();
    let table = post_table(server, "untidy");
    let dir = tempfile::tempdir().unwrap();
    let files = |ext: &str| -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(ext))
            .collect();
        v.sort();
        v
    };
    // Three spill files of 10 rows (ids 0..30).
    {
        let failing = MemorySink::new();
        failing.set_failing(true);
        let b: Buffer<PostEvent> = Buffer::builder()
            .shards(1)
            .max_rows(10)
            .max_insert_rows(10)
            .max_inflight(1)
            .retry(ch_ingest::RetryPolicy::NONE)
            .spill_dir(dir.path())
            .build(failing)
            .unwrap();
        for i in 0..30 {
            b.track(ev(i)).unwrap();
            if i % 10 == 9 {
                b.flush().await.unwrap();
            }
        }
        b.shutdown().await.unwrap();
    }
    let spills = files(".spill");
    assert_eq!(spills.len(), 3);
    let first = std::fs::read(&spills[0]).unwrap();
    // Refused for good on replay: all three become dead letters here.
    {
        let refusing = MemorySink::new();
        refusing.fail_with(SinkError::Server {
            code: Some(60),
            message: "Code: 60. gone".into(),
        });
        refusing.set_failing(true);
        let b: Buffer<PostEvent> = Buffer::builder()
            .shards(1)
            .spill_dir(dir.path())
            .dead_letter_dir(dir.path())
            .build(refusing)
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !files(".spill").is_empty() {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        b.shutdown().await.unwrap();
    }
    let letters = files(".json");
    assert_eq!(letters.len(), 3);
    // The crash: the first spill file is back beside its dead letter.
    std::fs::write(&spills[0], first).unwrap();
    // An older layout's half-deleted letter: data gone, sidecar left.
    std::fs::remove_file(letters[1].with_extension("rowbinary")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ch-ingest"))
        .args([
            "replay",
            &dir.path().display().to_string(),
            "--clickhouse-url",
            &server.url,
            "--table",
            &table,
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    println!("{text}");
    let got = server.query(&format!("SELECT count(), uniqExact(tweet_id) FROM {table}"));
    // The first file once (not again from its dead letter), the third's
    // dead letter; the second's rows went with its lost data file.
    assert_eq!(
        got.split_whitespace().collect::<Vec<_>>(),
        ["20", "20"],
        "{text}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "{text}");
}

/// The ingesting process is SIGKILLed while batches sit spilled (server
/// down): `ch-ingest replay` after the restart delivers exactly the rows in
/// the spill files. (Rows still in memory at the kill are lost: see README,
/// "Delivery guarantees".)
#[test]
fn spilled_batches_survive_a_sigkill_of_the_ingesting_process() {
    if support::shared().is_none() {
        return;
    }
    let server = std::sync::Arc::new(support::Server::start().expect("private server"));
    let table = format!("crash_{}", std::process::id());
    server.query(&PostEvent::create_table_sql(&table));
    let spill = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_ch-ingest");
    let mut load = std::process::Command::new(bin)
        .args(["load", "--duration", "120s", "--rate", "50000", "--quiet"])
        .args(["--clickhouse-url", &server.url, "--table", &table])
        .args(["--retry-attempts", "2", "--retry-max-elapsed", "300ms"])
        .arg("--spill-dir")
        .arg(spill.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    let outage = {
        let server = server.clone();
        std::thread::spawn(move || server.kill_and_restart(std::time::Duration::from_secs(6)))
    };
    // Wait until something is spilled, then kill the ingesting process.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while ch_ingest::test_util::spill::list(spill.path())
        .unwrap()
        .is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "nothing spilled");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(1_000));
    load.kill().unwrap();
    load.wait().unwrap();
    outage.join().unwrap();

    let files = ch_ingest::test_util::spill::list(spill.path()).unwrap();
    let spilled: u64 = files
        .iter()
        .map(|f| ch_ingest::test_util::spill::read(f).unwrap().rows)
        .sum();
    let before = server.count(&table);
    let out = std::process::Command::new(bin)
        .arg("replay")
        .arg(spill.path())
        .args(["--clickhouse-url", &server.url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = server.count(&table);
    println!(
        "process SIGKILLed with {} spill files ({spilled} rows): {} rows before replay, {after} after; {}",
        files.len(),
        before,
        String::from_utf8_lossy(&out.stdout).trim()
    );
    assert!(spilled > 0);
    assert_eq!(after - before, spilled, "exactly the spilled rows, once");
    assert!(ch_ingest::test_util::spill::list(spill.path())
        .unwrap()
        .is_empty());
}

/// Mutual TLS to ClickHouse, and `replay` over it: a server that requires
/// a client certificate signed by its CA. The library sink with the
/// certificate dead-letters a batch for a missing table; without it the
/// handshake fails as a certificate error naming the host. `ch-ingest
/// replay` with `--ca-cert`, `--client-cert` and `--client-key` delivers
/// the letters; without the client certificate it fails and keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_and_the_sink_speak_mutual_tls() {
    if std::env::var("CLICKHOUSE_URL").is_ok() {
        return; // needs a private server with an HTTPS port
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = support::pki::Pki::new(dir.path());
    let (server, url) = pki
        .start_server(true)
        .expect("a private server with an HTTPS port");
    let table = "mtls_events";
    let tls = ch_ingest::sink::Tls::new().ca_cert(&pki.ca);
    let mutual = tls.clone().client_auth(&pki.client_cert, &pki.client_key);

    // Without our certificate: refused in the handshake, by name.
    let b: Buffer<PostEvent> = Buffer::builder()
        .retry(support::check::quick_retries())
        .build(ClickHouseSink::new(
            tls.client().unwrap().with_url(&url),
            table,
        ))
        .unwrap();
    b.track(ev(0)).unwrap();
    let report = b.shutdown().await.unwrap();
    let error = &report.failures[0].error;
    assert!(
        matches!(error, ch_ingest::sink::SinkError::Certificate { host, .. } if host == "localhost"),
        "{error:?}"
    );
    assert!(b.stats().certificate_errors >= 1);

    // With it: the table is missing, so the batch is dead-lettered.
    let letters = dir.path().join("dead");
    let b: Buffer<PostEvent> = Buffer::builder()
        .dead_letter_dir(&letters)
        .build(ClickHouseSink::new(
            mutual.client().unwrap().with_url(&url),
            table,
        ))
        .unwrap();
    for i in 0..1_000 {
        b.track(ev(i)).unwrap();
    }
    let report = b.shutdown().await.unwrap();
    assert_eq!(report.failed_rows, 1_000, "{:?}", report.failures);
    server.query(&PostEvent::create_table_sql(table));

    let replay = |with_cert: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ch-ingest"));
        cmd.arg("replay")
            .arg(&letters)
            .args(["--clickhouse-url", &url, "--ca-cert"])
            .arg(&pki.ca);
        if with_cert {
            cmd.arg("--client-cert")
                .arg(&pki.client_cert)
                .arg("--client-key")
                .arg(&pki.client_key);
        }
        cmd.output().unwrap()
    };
    let out = replay(false);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("certificate"), "{text}");
    assert_eq!(server.count(table), 0);
    assert_ne!(
        std::fs::read_dir(&letters).unwrap().count(),
        0,
        "letters kept"
    );
    let out = replay(true);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert_eq!(server.count(table), 1_000);
    assert_eq!(std::fs::read_dir(&letters).unwrap().count(), 0, "{text}");
}
