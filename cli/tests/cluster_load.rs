//! `ch-ingest load` into the real 2x2 test cluster (`support::cluster`):
//! explicit `--shard` lists and `--cluster` discovery, each ending with the
//! count check summed over the shards and the duplicates check of
//! `--unique-events`. Here, not in the library's tests, because they run
//! the binary.

#[path = "../../tests/support/mod.rs"]
mod support;

const COLUMNS: &str = "event_type String, tweet_id UInt64, occurred_at DateTime, \
    user_id Nullable(UInt64), session_id Nullable(String), client String, \
    country FixedString(2), dwell_ms Nullable(UInt32)";

fn load(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ch-ingest"))
        .arg("load")
        .args([
            "--events",
            "50000",
            "--producers",
            "2",
            "--quiet",
            "--unique-events",
        ])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn load_into_explicit_shards_and_a_discovered_cluster_checks_counts_and_duplicates() {
    let cluster = cluster_or_skip!();
    let (local, dist) = cluster.create_tables("cli_load", COLUMNS, "tweet_id", "rand()");
    let shards: Vec<String> = cluster.shard_urls().iter().map(|r| r.join(",")).collect();
    let out = load(&[
        "--table", &local, "--shard", &shards[0], "--shard", &shards[1],
    ]);
    println!("{out}");
    assert!(out.contains("50000 new rows"), "{out}");
    assert!(out.contains(": match"), "{out}");
    assert!(out.contains(": none"), "{out}");
    // Every replica caught up: the Distributed table may read either one.
    let per_replica = cluster.replica_counts(&local);
    assert_eq!(per_replica.iter().sum::<u64>(), 100_000, "{per_replica:?}");
    assert_eq!(cluster.nodes[0].count(&dist), 50_000);

    // Discovery: system.clusters lists native ports, so this only works
    // when every node shares the seed's HTTP port; the test cluster's nodes
    // do not, so discovery must fail loudly rather than write elsewhere.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ch-ingest"))
        .args(["load", "--events", "10", "--quiet", "--table", &local])
        .args([
            "--cluster",
            "no_such_cluster",
            "--clickhouse-url",
            &cluster.nodes[0].url,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no cluster `no_such_cluster`"), "{stderr}");
}

/// `--sharding-key`: every row on the shard its key picks (the explicit
/// shards weigh 1 each, so shard i holds `cityHash64(tweet_id) % 2 = i`),
/// with the count and duplicates checks passing.
#[test]
fn load_by_sharding_key_places_every_row_by_its_key() {
    let cluster = cluster_or_skip!();
    let (local, _) =
        cluster.create_tables("cli_keyed", COLUMNS, "tweet_id", "cityHash64(tweet_id)");
    let shards: Vec<String> = cluster.shard_urls().iter().map(|r| r.join(",")).collect();
    let out = load(&[
        "--table",
        &local,
        "--shard",
        &shards[0],
        "--shard",
        &shards[1],
        "--sharding-key",
        "cityHash64(tweet_id)",
    ]);
    println!("{out}");
    assert!(out.contains("50000 new rows"), "{out}");
    assert!(out.contains(": none"), "{out}");
    for (i, shard) in [0u64, 1].iter().zip([0usize, 1]) {
        let node = &cluster.shard(shard)[0];
        let misplaced = node.query(&format!(
            "SELECT count() FROM {local} WHERE cityHash64(tweet_id) % 2 != {i}"
        ));
        assert_eq!(misplaced.trim(), "0", "shard {shard}");
        assert!(node.count(&local) > 0, "shard {shard} took rows");
    }
    // A key we do not compute is refused before any row is sent.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ch-ingest"))
        .args(["load", "--events", "10", "--quiet", "--table", &local])
        .args(["--shard", &shards[0], "--sharding-key", "halfMD5(tweet_id)"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("halfMD5(tweet_id)") && stderr.contains("Distributed"),
        "{stderr}"
    );
}
