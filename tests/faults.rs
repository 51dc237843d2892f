//! Production faults whose cause is ours or the local filesystem's (the
//! ClickHouse-side ones are in `production_faults.rs`, against real
//! servers): a panicking `Serialize`, a full disk under the spill
//! directory, a dropped runtime, a spill file that cannot be deleted or
//! always fails, a crash between two file operations, a FIFO planted where
//! a dead letter is written under a current-thread runtime, and a clock
//! that steps back.

use ch_ingest::sink::{InsertBatch, MemorySink, Sink, SinkError};
use ch_ingest::{Buffer, PostEvent, RetryPolicy, SpillFullPolicy, TrackError};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod support;
use support::check::{assert_accounted, quick_retries, tweet_ids, wait_until};

fn ev(i: u64) -> PostEvent {
    PostEvent::new("like", i, 1_700_000_000)
}

fn files_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.to_string_lossy().ends_with(ext));
    v.sort();
    v
}

/// A small tmpfs of our own (root only; CI runs as root). `None` with a
/// notice where mounting is not allowed, outside CI.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap().keep();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "CI=true and no tmpfs could be mounted"
            );
            eprintln!("NOTICE: skipping: cannot mount a tmpfs here");
            return None;
        }
        Some(Tmpfs(dir))
    }

    fn remount(&self, mode: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------- item 3

#[derive(Serialize)]
struct Flaky {
    id: u64,
    #[serde(serialize_with = "panics_on_odd_thousands")]
    payload: (u64, String),
    tail: u32,
}

fn panics_on_odd_thousands<S: serde::Serializer>(
    v: &(u64, String),
    s: S,
) -> Result<S::Ok, S::Error> {
    // Half the row is already in the buffer when this runs.
    if v.0 % 1000 == 7 {
        panic!("a bug in the user's Serialize");
    }
    s.serialize_str(&v.1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_inside_a_users_serialize_leaves_no_half_row_behind() {
    let sink = MemorySink::new();
    let b: Buffer<Flaky> = Buffer::builder()
        .shards(1)
        .max_rows(500)
        .build(sink.clone())
        .unwrap();
    // The ten panics are the point: keep them out of the test output.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let ours = info
            .payload()
            .downcast_ref::<&str>()
            .is_some_and(|m| m.contains("a bug in the user's Serialize"));
        if !ours {
            default_hook(info);
        }
    }));
    let mut panicked = 0;
    for i in 0..10_000u64 {
        let row = Flaky {
            id: i,
            payload: (i, format!("p{i}")),
            tail: i as u32,
        };
        let b2 = b.clone();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || b2.track(row))) {
            Ok(r) => r.unwrap(),
            Err(_) => panicked += 1,
        }
    }
    assert_eq!(panicked, 10);
    let report = b.shutdown().await.unwrap();
    assert_eq!(report.rows, 9_990);
    assert!(report.is_complete());
    // Every stored row decodes to exactly what was tracked.
    let schema = ch_ingest::Schema::parse("id UInt64, payload String, tail UInt32").unwrap();
    let rows = ch_ingest::rowbinary::decode_all(&schema, &sink.concat()).unwrap();
    assert_eq!(rows.len(), 9_990);
    for row in rows {
        let id = row["id"].as_u64().unwrap();
        assert_ne!(id % 1000, 7);
        assert_eq!(row["payload"], format!("p{id}"));
        assert_eq!(row["tail"].as_u64(), Some(id));
    }
    assert_accounted(&b);
}

// ---------------------------------------------------------------- item 4

#[derive(Serialize)]
struct Blob {
    id: u64,
    pad: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_after_eviction_keeps_the_accounting_and_leaves_no_temporary_file() {
    let Some(fs) = Tmpfs::mount("256k") else {
        return;
    };
    let spill = fs.0.join("spill");
    let sink = MemorySink::new();
    sink.set_failing(true);
    let b: Buffer<Blob> = Buffer::builder()
        .shards(1)
        .max_rows(1)
        .max_insert_rows(1)
        .max_inflight(1)
        .retry(RetryPolicy::NONE)
        .spill_dir(&spill)
        .spill_max_bytes(4_000)
        .spill_full_policy(SpillFullPolicy::DropOldest)
        .build(sink.clone())
        .unwrap();
    // Three small spill files (about 1 KB each).
    for id in 0..3 {
        b.track(Blob {
            id,
            pad: "s".repeat(1_000),
        })
        .unwrap();
        assert_eq!(b.flush().await.unwrap().spilled_rows, 1);
    }
    // The disk fills up (another process, logs...).
    let ballast = fs.0.join("ballast");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&ballast).unwrap();
        while f
            .write_all(&[0u8; 4096])
            .and_then(|()| f.sync_all())
            .is_ok()
        {}
    }
    // A 20 KB batch: over the budget, so the three are evicted, and then
    // the disk has no room for it either.
    b.track(Blob {
        id: 3,
        pad: "b".repeat(20_000),
    })
    .unwrap();
    let report = b.flush().await.unwrap();
    assert_eq!(
        (report.spilled_rows, report.failed_rows),
        (0, 1),
        "{report:?}"
    );
    let s = b.stats();
    // A file the background replayer is trying at that moment is held and
    // not evicted (evicting it could count delivered rows as lost); it
    // stays spilled. Every other one is evicted and counted, although the
    // new file then could not be written.
    let held = s.spill_pending_rows;
    assert!(held <= 1, "only the file being replayed is held: {s:?}");
    assert_eq!(
        s.spill_evicted_rows + held,
        3,
        "evicted rows counted although the write failed: {s:?}"
    );
    assert_eq!(
        s.failed_rows,
        1 + s.spill_evicted_rows,
        "the evicted ones and the one not spilled: {s:?}"
    );
    assert_accounted(&b);
    let left: Vec<String> = std::fs::read_dir(&spill)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter().all(|n| !n.ends_with(".tmp")),
        "no temporary file stays behind: {left:?}"
    );
    assert_eq!(
        left.len() as u64,
        held,
        "only the held file stays: {left:?}"
    );
    b.shutdown().await.unwrap();
}

// ---------------------------------------------------------------- item 5

#[test]
fn after_the_runtime_is_dropped_track_says_closed_and_counts_it() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let b: Buffer<PostEvent> = rt.block_on(async {
        Buffer::builder()
            .shards(1)
            .build(MemorySink::new())
            .unwrap()
    });
    b.track(ev(1)).unwrap();
    drop(rt);
    for i in 0..2_000 {
        match b.track(ev(i)) {
            Err(TrackError::Closed(_)) => {}
            other => panic!("row {i}: {other:?} (the coordinator is gone)"),
        }
    }
    assert_eq!(b.stats().rejected_closed, 2_000);
}

// ---------------------------------------------------------------- item 6

/// Leaves one spill file per 10 rows, ids from `first`, `n` rows in all.
async fn leave_spill_files(dir: &Path, first: u64, n: u64) {
    let sink = MemorySink::new();
    sink.set_failing(true);
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(1)
        .max_rows(10)
        .max_insert_rows(10)
        .max_inflight(1)
        .retry(RetryPolicy::NONE)
        .spill_dir(dir)
        .build(sink)
        .unwrap();
    for i in first..first + n {
        b.track(ev(i)).unwrap();
        if i % 10 == 9 {
            b.flush().await.unwrap();
        }
    }
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_file_that_cannot_be_deleted_is_never_sent_again() {
    let Some(fs) = Tmpfs::mount("4m") else {
        return;
    };
    let spill = fs.0.join("spill");
    leave_spill_files(&spill, 0, 30).await;
    fs.remount("ro");
    let sink = MemorySink::new();
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(1)
        .spill_dir(&spill)
        .build(sink.clone())
        .unwrap();
    wait_until("the replay", || sink.rows() == 30).await;
    // Several passes (one a second) while the files cannot go.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let mut ids = tweet_ids(&sink);
    ids.sort_unstable();
    assert_eq!(ids, (0..30).collect::<Vec<_>>(), "each row once");
    assert_eq!(b.stats().replayed_foreign_rows, 30);
    fs.remount("rw");
    wait_until("the delete", || files_with(&spill, ".spill").is_empty()).await;
    assert_eq!(sink.rows(), 30);
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_dead_letter_and_spill_delete_makes_no_second_dead_letter() {
    let tmp = tempfile::tempdir().unwrap();
    let (spill, dead) = (tmp.path().join("spill"), tmp.path().join("dead"));
    leave_spill_files(&spill, 0, 30).await;
    let saved = files_with(&spill, ".spill")[0].clone();
    let copy = tmp.path().join("copy");
    std::fs::copy(&saved, &copy).unwrap();
    let refuse = || {
        let sink = MemorySink::new();
        sink.fail_with(SinkError::Server {
            code: Some(60),
            message: "Code: 60. no table".into(),
        });
        sink.set_failing(true);
        sink
    };
    let run = |sink: MemorySink| {
        let (spill, dead) = (spill.clone(), dead.clone());
        async move {
            let b: Buffer<PostEvent> = Buffer::builder()
                .shards(1)
                .spill_dir(&spill)
                .dead_letter_dir(&dead)
                .build(sink)
                .unwrap();
            wait_until("the dead letters", || {
                files_with(&spill, ".spill").is_empty()
            })
            .await;
            b.shutdown().await.unwrap();
        }
    };
    run(refuse()).await;
    assert_eq!(files_with(&dead, ".json").len(), 3);
    // The crash: the dead letter was written, the spill file not deleted.
    std::fs::copy(&copy, &saved).unwrap();
    run(refuse()).await;
    assert_eq!(
        files_with(&dead, ".json").len(),
        3,
        "the same INSERT, the same dead letter"
    );
    // And when the table is back, the spill file is delivered and its dead
    // letter goes with it (or `ch-ingest replay` would send it again).
    std::fs::copy(&copy, &saved).unwrap();
    let ok = MemorySink::new();
    run(ok.clone()).await;
    assert_eq!(ok.rows(), 10);
    assert_eq!(files_with(&dead, ".json").len(), 2);
}

// ---------------------------------------------------------------- item 9

/// Fails (retryably, like a proxy's 502 or a 241 on a huge INSERT) every
/// INSERT of exactly 7 rows; stores everything else.
#[derive(Clone)]
struct PoisonSeven(MemorySink);

impl Sink for PoisonSeven {
    async fn insert(&self, batch: &InsertBatch) -> Result<(), SinkError> {
        if batch.rows() == 7 {
            return Err(SinkError::Server {
                code: Some(241),
                message: "Code: 241. Memory limit".into(),
            });
        }
        self.0.insert(batch).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_poison_spill_file_does_not_stop_the_others_and_is_given_up_after_bounded_tries() {
    let tmp = tempfile::tempdir().unwrap();
    let (spill, dead) = (tmp.path().join("spill"), tmp.path().join("dead"));
    // The two oldest files have 7 rows (the poison), then 20 good rows.
    {
        let sink = MemorySink::new();
        sink.set_failing(true);
        let b: Buffer<PostEvent> = Buffer::builder()
            .shards(1)
            .max_rows(10)
            .max_insert_rows(10)
            .max_inflight(1)
            .retry(RetryPolicy::NONE)
            .spill_dir(&spill)
            .build(sink)
            .unwrap();
        for first in [0, 10] {
            for i in first..first + 7 {
                b.track(ev(i)).unwrap();
            }
            b.flush().await.unwrap();
        }
        for i in 100..120 {
            b.track(ev(i)).unwrap();
        }
        b.shutdown().await.unwrap();
    }
    assert_eq!(files_with(&spill, ".spill").len(), 4);
    let sink = MemorySink::new();
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(1)
        .max_rows(10)
        .retry(quick_retries())
        .spill_dir(&spill)
        .dead_letter_dir(&dead)
        .build(PoisonSeven(sink.clone()))
        .unwrap();
    wait_until("the good files", || sink.rows() == 20).await;
    // Live traffic keeps flowing (so the sink is known to be up) while the
    // poison file keeps failing; it is given up on after a bounded number.
    let mut i = 1_000;
    while b.stats().replay_given_up_files < 2 {
        for _ in 0..3 {
            b.track(ev(i)).unwrap();
            i += 1;
        }
        b.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(i < 1_000 + 3 * 1_000, "never given up on");
    }
    assert!(files_with(&spill, ".spill").is_empty());
    let letters = files_with(&dead, ".json");
    assert_eq!(letters.len(), 2);
    for letter in &letters {
        let (_, insert) = ch_ingest::test_util::dead_letter::read(letter).unwrap();
        assert_eq!(insert.rows(), 7);
        let meta = std::fs::read_to_string(letter).unwrap();
        assert!(
            meta.contains("\"code\": 241"),
            "the server's last error is kept: {meta}"
        );
    }
    b.shutdown().await.unwrap();
}

// ---------------------------------------------------------------- item 12

#[test]
fn a_fifo_at_a_dead_letters_temporary_name_stalls_nothing_and_is_never_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let (spill, dead) = (tmp.path().join("spill"), tmp.path().join("dead"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(leave_spill_files(&spill, 0, 10));
    // Where the replayer's dead-letter write puts its temporary file: a
    // FIFO there would block an open until somebody reads it, like a hung
    // NFS server. Temporaries are created new (O_EXCL), so it is never
    // opened: the write takes another name and the runtime keeps ticking.
    let file = files_with(&spill, ".spill")[0].clone();
    let spilled = ch_ingest::test_util::spill::read(&file).unwrap();
    std::fs::create_dir_all(&dead).unwrap();
    let fifo = dead.join(format!(
        "{:016x}-{:020}.rowbinary.tmp",
        spilled.instance, spilled.insert_id
    ));
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let ticks = rt.block_on(async {
        let sink = MemorySink::new();
        sink.fail_with(SinkError::Server {
            code: Some(60),
            message: "Code: 60. no table".into(),
        });
        sink.set_failing(true);
        let b: Buffer<PostEvent> = Buffer::builder()
            .shards(1)
            .spill_dir(&spill)
            .dead_letter_dir(&dead)
            .build(sink)
            .unwrap();
        // The replayer meets the refusal at once and writes the dead
        // letter; this task must keep ticking meanwhile.
        let mut ticks = 0;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(1_500) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            ticks += 1;
        }
        b.track(ev(99)).unwrap();
        b.flush().await.unwrap();
        b.shutdown().await.unwrap();
        ticks
    });
    assert!(
        ticks > 50,
        "the runtime stalled: {ticks} ticks of 10 ms in 1.5 s"
    );
    use std::os::unix::fs::FileTypeExt;
    let fifo_type = std::fs::symlink_metadata(&fifo).unwrap().file_type();
    assert!(fifo_type.is_fifo(), "the FIFO was replaced");
    let sidecar = dead.join(format!(
        "{:016x}-{:020}.json",
        spilled.instance, spilled.insert_id
    ));
    let (_, insert) = ch_ingest::test_util::dead_letter::read(&sidecar).unwrap();
    assert_eq!(insert.rows(), spilled.rows, "dead-lettered beside the FIFO");
}

// ---------------------------------------------------------------- item 16

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spill_order_survives_a_clock_that_stepped_back() {
    let tmp = tempfile::tempdir().unwrap();
    let spill = tmp.path().join("spill");
    leave_spill_files(&spill, 0, 10).await;
    // A file an earlier process wrote while the clock was far ahead (or
    // one of an earlier version): its name carries that time.
    let old = files_with(&spill, ".spill")[0].clone();
    let ahead = spill.join("9999999999999-000000-0.spill");
    std::fs::rename(&old, &ahead).unwrap();
    // Written later, with the clock back to now: they must still sort
    // after it, or replay and `DropOldest` take the newest data first.
    leave_spill_files(&spill, 100, 20).await;
    let listed = ch_ingest::test_util::spill::list(&spill).unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0], ahead, "{listed:?}");
    let first_ids: Vec<u64> = listed[1..]
        .iter()
        .map(|f| {
            let kept = ch_ingest::test_util::spill::read(f).unwrap();
            let schema = ch_ingest::Schema::new(PostEvent::SCHEMA.iter().copied()).unwrap();
            let rows = ch_ingest::rowbinary::decode_all(&schema, &kept.data).unwrap();
            rows[0]["tweet_id"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(first_ids, [100, 110], "in the order they were written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tables_spill_file_is_judged_by_its_header_not_read_whole() {
    struct ForTable(MemorySink);
    impl Sink for ForTable {
        async fn insert(&self, batch: &InsertBatch) -> Result<(), SinkError> {
            self.0.insert(batch).await
        }
        fn table(&self) -> Option<&str> {
            Some("mine")
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let spill = tmp.path().join("spill");
    {
        struct Theirs(MemorySink);
        impl Sink for Theirs {
            async fn insert(&self, batch: &InsertBatch) -> Result<(), SinkError> {
                self.0.insert(batch).await
            }
            fn table(&self) -> Option<&str> {
                Some("theirs")
            }
        }
        let sink = MemorySink::new();
        sink.set_failing(true);
        let b: Buffer<PostEvent> = Buffer::builder()
            .shards(1)
            .retry(RetryPolicy::NONE)
            .spill_dir(&spill)
            .build(Theirs(sink))
            .unwrap();
        b.track(ev(1)).unwrap();
        b.shutdown().await.unwrap();
    }
    // Its body goes bad; that is for its own table's engine to find.
    let file = files_with(&spill, ".spill")[0].clone();
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let b: Buffer<PostEvent> = Buffer::builder()
        .shards(1)
        .spill_dir(&spill)
        .build(ForTable(MemorySink::new()))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(b.stats().quarantined_files, 0);
    assert!(file.exists());
    b.shutdown().await.unwrap();
}
