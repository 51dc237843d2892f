//! Spill: INSERTs the sink could not take in time, kept on disk until it can.
//!
//! Owns: the spill directory's file format, its size budget, listing files
//! oldest first, and quarantining files that fail their checksum. Must not:
//! talk to a sink (that is `replay`) or decide when to spill (the
//! coordinator).
//!
//! One file per INSERT, named `s<sequence>-<instance>-<insert-id>.spill`.
//! The sequence (20 digits) continues from the highest one in the directory
//! when an engine opens it, so names sort by creation across restarts
//! whatever the wall clock does (files of earlier versions, named
//! `<unix-ms>-...`, sort before all of them):
//!
//! ```text
//! b"CHSPILL1" | header length: u32 LE | header: JSON | RowBinary | CRC-32: u32 LE
//! ```
//!
//! The header holds the table, columns, rows, the writing engine's
//! instance id and, when the sink names one, the destination the INSERT
//! went to (a cluster shard's replicas); the CRC-32 covers everything
//! before it. Files are written
//! through [`crate::durable`], so a crash or a full disk leaves either no
//! file or a complete one.
//!
//! A replayer [`claim`]s a file (an exclusive `flock`) before sending it, so
//! two replayers on one directory (two engines of one table across a schema
//! swap, or an engine and `ch-ingest replay`) never send the same file twice.
//! The kernel drops the lock with the process, so a crash leaves no stale
//! claim behind.
//!
//! Spill files hold user data: the directory and `quarantine/` are created
//! 0700 and the files 0600; a configured directory that is a symlink is
//! refused, and no file is ever written, read, claimed or listed through a
//! symlink (see [`crate::durable`]).

use crate::batch::InsertBatch;
use bytes::Bytes;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

const MAGIC: &[u8; 8] = b"CHSPILL1";
const EXT: &str = "spill";
/// Where corrupt files go, inside the spill directory.
pub const QUARANTINE: &str = "quarantine";

/// What happens when a batch would take the spill directory past its size
/// budget. Each case is counted in [`Stats`](crate::Stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpillFullPolicy {
    /// Keep what is on disk; the new batch is dropped (`spill_rejected_rows`).
    #[default]
    DropNewest,
    /// Delete the oldest spill files until the new one fits
    /// (`spill_evicted_rows`): the most recent data survives.
    DropOldest,
}

/// A spill file read back and verified.
#[derive(Debug)]
#[non_exhaustive]
pub struct Spilled {
    /// The table the INSERT was for, when the sink had one.
    pub table: Option<String>,
    /// Column names, in RowBinary order.
    pub columns: Vec<String>,
    /// Rows in `data`.
    pub rows: u64,
    /// The INSERT's id.
    pub insert_id: u64,
    /// The writing engine's random instance id.
    pub instance: u64,
    /// Where the sink said the INSERT went (a cluster shard's replicas).
    pub destination: Option<Vec<String>>,
    /// The RowBinary body.
    pub data: Bytes,
}

impl Spilled {
    /// The INSERT to send again.
    pub fn to_insert(&self) -> InsertBatch {
        let columns: Vec<&str> = self.columns.iter().map(String::as_str).collect();
        InsertBatch::from_parts(self.insert_id, &columns, vec![self.data.clone()], self.rows)
            .with_origin(self.instance)
            .with_recorded(self.destination.clone())
    }
}

/// Why a spill file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpillError {
    /// Reading failed (the file may be fine).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The file failed its checks: quarantine it.
    #[error("corrupt spill file: {0}")]
    Corrupt(String),
}

pub(crate) struct SpillDir {
    dir: PathBuf,
    max_bytes: u64,
    policy: SpillFullPolicy,
    /// This engine's instance id (its rows count as acknowledged when
    /// replayed; a previous process's do not), and those of the engines it
    /// took over or was taken over by.
    family: Family,
    counter: AtomicU64,
    /// Serialises writers so the size check and the write agree.
    write_lock: Mutex<()>,
}

/// Rows deleted to make room for a new spill file.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Evicted {
    pub rows: u64,
    /// Of `rows`, this engine's.
    pub own_rows: u64,
    /// Files that failed their check on the way out: moved to `quarantine/`
    /// (their rows, when the header still reads, are in `rows`).
    pub quarantined: u64,
}

/// Engines that take over one another on one spill directory (a successor
/// and its predecessors): each counts every member's files as its own when
/// it replays or evicts them, in both directions, so the members' stats
/// added together account for every spilled row whichever engine moved it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Family(Arc<Mutex<Vec<u64>>>);

impl Family {
    fn join(&self, instance: u64) {
        let mut members = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !members.contains(&instance) {
            members.push(instance);
        }
    }

    fn contains(&self, instance: u64) -> bool {
        let members = self.0.lock().unwrap_or_else(|p| p.into_inner());
        members.contains(&instance)
    }
}

/// Outcome of [`SpillDir::write`].
pub(crate) enum Written {
    Spilled(PathBuf),
    /// Over budget under `DropNewest`.
    Rejected,
}

impl SpillDir {
    pub(crate) fn open(
        dir: &Path,
        max_bytes: u64,
        policy: SpillFullPolicy,
        instance: u64,
        family: Option<Family>,
    ) -> std::io::Result<Self> {
        crate::durable::create_private_dir(dir)?;
        let family = family.unwrap_or_default();
        family.join(instance);
        Ok(Self {
            dir: dir.to_path_buf(),
            max_bytes,
            policy,
            family,
            counter: AtomicU64::new(next_sequence(dir)?),
            write_lock: Mutex::new(()),
        })
    }

    /// Whether a file written by engine `instance` is this engine's to
    /// account for.
    pub(crate) fn owns(&self, instance: u64) -> bool {
        self.family.contains(instance)
    }

    pub(crate) fn family(&self) -> &Family {
        &self.family
    }

    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// Spill files, oldest first.
    pub(crate) fn list(&self) -> std::io::Result<Vec<PathBuf>> {
        list(&self.dir)
    }

    /// Bytes of spill files on disk now.
    pub(crate) fn used_bytes(&self) -> u64 {
        self.list()
            .unwrap_or_default()
            .iter()
            .filter_map(|p| std::fs::symlink_metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Writes `insert` as one spill file, applying the size budget. Returns
    /// the outcome and the rows evicted to make room (under `DropOldest`):
    /// those are gone even when the write then fails (a full disk), so they
    /// come back on both paths.
    pub(crate) fn write(
        &self,
        table: Option<&str>,
        insert: &InsertBatch,
    ) -> (std::io::Result<Written>, Evicted) {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut evicted = Evicted::default();
        let result = self.write_locked(table, insert, &mut evicted);
        (result, evicted)
    }

    fn write_locked(
        &self,
        table: Option<&str>,
        insert: &InsertBatch,
        evicted: &mut Evicted,
    ) -> std::io::Result<Written> {
        let header = serde_json::to_vec(&Header {
            table: table.map(str::to_owned),
            columns: insert.columns().iter().map(|c| c.to_string()).collect(),
            rows: insert.rows(),
            insert_id: insert.id(),
            instance: insert.origin(),
            destination: insert.recorded_destination().map(<[String]>::to_vec),
        })
        .map_err(std::io::Error::other)?;
        let size = (MAGIC.len() + 4 + header.len() + 4) as u64 + insert.bytes();
        let mut used = self.used_bytes();
        if used + size > self.max_bytes {
            match self.policy {
                SpillFullPolicy::DropNewest => return Ok(Written::Rejected),
                SpillFullPolicy::DropOldest => {
                    for old in self.list()? {
                        if used + size <= self.max_bytes {
                            break;
                        }
                        // A file being replayed is on its way out anyway;
                        // deleting it under the replayer would count
                        // delivered rows as evicted.
                        // An error claiming it (EMFILE, EACCES) skips it too:
                        // failing the write would drop the new rows instead.
                        let Ok(Some(mut held)) = claim(&old) else {
                            continue;
                        };
                        let len = held.file.metadata().map_or(0, |m| m.len());
                        let rows_of = |h: &Header, ev: &mut Evicted| {
                            ev.rows += h.rows;
                            if self.owns(h.instance) {
                                ev.own_rows += h.rows;
                            }
                        };
                        // Counted once it is really gone: a failed delete
                        // leaves the file to be replayed (and counted) later.
                        match held.read() {
                            Ok(s) => {
                                std::fs::remove_file(&old)?;
                                evicted.rows += s.rows;
                                if self.owns(s.instance) {
                                    evicted.own_rows += s.rows;
                                }
                            }
                            Err(SpillError::Corrupt(_)) => {
                                // Never deleted uncounted: kept for an
                                // operator, out of the budget's way.
                                let header = read_header(&old).ok();
                                quarantine(&self.dir, &old)?;
                                if let Some(h) = header {
                                    rows_of(&h, evicted);
                                }
                                evicted.quarantined += 1;
                            }
                            // Unreadable for now (EIO, EMFILE): leave it.
                            Err(SpillError::Io(_)) => continue,
                        }
                        used = used.saturating_sub(len);
                    }
                }
            }
        }
        // Past the highest name on disk too: another engine on this
        // directory (a successor across a schema swap) numbers its own.
        let on_disk = self
            .list()?
            .iter()
            .filter_map(|p| p.file_name().and_then(sequence_of))
            .max()
            .map_or(0, |n| n.saturating_add(1));
        self.counter.fetch_max(on_disk, Relaxed);
        let n = self.counter.fetch_add(1, Relaxed);
        let path = self.dir.join(format!(
            "s{n:020}-{:016x}-{}.{EXT}",
            insert.origin(),
            insert.id()
        ));
        crate::durable::write_atomically(&path, true, crate::durable::PRIVATE_FILE, |f| {
            let mut crc = crc32fast::Hasher::new();
            let mut put = |f: &mut std::fs::File, bytes: &[u8]| -> std::io::Result<()> {
                crc.update(bytes);
                f.write_all(bytes)
            };
            put(f, MAGIC)?;
            put(f, &(header.len() as u32).to_le_bytes())?;
            put(f, &header)?;
            for chunk in insert.chunks() {
                put(f, chunk)?;
            }
            f.write_all(&crc.finalize().to_le_bytes())
        })?;
        Ok(Written::Spilled(path))
    }
}

/// The sequence the next spill file in `dir` gets: one past the highest
/// there (in the directory or its quarantine), so a clock step never
/// reorders files.
fn next_sequence(dir: &Path) -> std::io::Result<u64> {
    let seq_of = sequence_of;
    let mut next = 0;
    for d in [dir.to_path_buf(), dir.join(QUARANTINE)] {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            if let Some(n) = seq_of(&e.file_name()) {
                next = next.max(n.saturating_add(1));
            }
        }
    }
    Ok(next)
}

/// The sequence number in a spill file's name (`s<sequence>-...`).
fn sequence_of(name: &std::ffi::OsStr) -> Option<u64> {
    let name = name.to_str()?;
    name.strip_prefix('s')?.split('-').next()?.parse().ok()
}

/// The JSON header of a spill file.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Header {
    pub table: Option<String>,
    pub columns: Vec<String>,
    pub rows: u64,
    pub insert_id: u64,
    pub instance: u64,
    /// The servers that may hold an earlier try's copy (the sink's
    /// `destination`); absent in files of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Vec<String>>,
}

/// Reads only the magic and the header of a spill file (not the rows, not
/// the checksum): enough to see which table and engine it belongs to.
pub(crate) fn read_header(path: &Path) -> Result<Header, SpillError> {
    use std::io::Read;
    let corrupt = |why: &str| SpillError::Corrupt(why.to_string());
    let mut f = crate::durable::open_no_symlink(path)?;
    let mut head = [0u8; 12];
    f.read_exact(&mut head)
        .map_err(|_| corrupt("shorter than a header (truncated?)"))?;
    if &head[..MAGIC.len()] != MAGIC {
        return Err(corrupt("bad magic"));
    }
    let len = u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as u64;
    if len > f.metadata()?.len() {
        return Err(corrupt("header longer than the file"));
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header)
        .map_err(|_| corrupt("header longer than the file"))?;
    serde_json::from_slice(&header).map_err(|e| SpillError::Corrupt(format!("header: {e}")))
}

/// Spill files in `dir`, oldest first (names sort by creation). Only
/// regular files: a symlink is not a file the engine wrote, so it is not
/// replayed, evicted or counted against the budget.
pub fn list(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        // `DirEntry::file_type` does not follow a symlink (`Path::is_file`
        // would).
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == EXT))
        .collect();
    files.sort();
    Ok(files)
}

/// A spill file one replayer holds. Every other [`claim`] of it, in this
/// process or another, returns `None` until this is dropped; delete or move
/// the file before dropping it.
#[derive(Debug)]
pub struct Claimed {
    file: std::fs::File,
}

impl Claimed {
    /// Reads and verifies the held file.
    pub fn read(&mut self) -> Result<Spilled, SpillError> {
        use std::io::{Read, Seek};
        let mut bytes = Vec::new();
        self.file.rewind()?;
        self.file.read_to_end(&mut bytes)?;
        decode(&bytes)
    }
}

/// Takes `path` for replay. `Ok(None)` when another replayer holds it or it
/// is gone (delivered, evicted or quarantined meanwhile); an error when it
/// is a symlink (never followed).
pub fn claim(path: &Path) -> std::io::Result<Option<Claimed>> {
    use std::os::unix::fs::MetadataExt;
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let file = match crate::durable::open_no_symlink(path) {
        Ok(f) => f,
        Err(e) if gone(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
        Err(std::fs::TryLockError::Error(e)) => return Err(e),
    }
    // The previous holder may have deleted or moved the file between our
    // open and our lock: then what we hold is no longer the spill file. The
    // name is not followed: a symlink put there meanwhile is not the file.
    let held = file.metadata()?;
    match std::fs::symlink_metadata(path) {
        Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => Ok(Some(Claimed { file })),
        Ok(_) => Ok(None),
        Err(e) if gone(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads and verifies one spill file (without claiming it: for inspection).
#[cfg_attr(not(feature = "test-util"), allow(dead_code))]
pub fn read(path: &Path) -> Result<Spilled, SpillError> {
    decode(&crate::durable::read_no_symlink(path)?)
}

fn decode(bytes: &[u8]) -> Result<Spilled, SpillError> {
    let corrupt = |why: &str| SpillError::Corrupt(why.to_string());
    if bytes.len() < MAGIC.len() + 8 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt("bad magic or shorter than a header (truncated?)"));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes(tail.try_into().map_err(|_| corrupt("no checksum"))?);
    if crc32fast::hash(body) != stored {
        return Err(corrupt("checksum mismatch (truncated or bit-flipped)"));
    }
    let len_at = MAGIC.len();
    let header_len = u32::from_le_bytes(
        body[len_at..len_at + 4]
            .try_into()
            .map_err(|_| corrupt("header length"))?,
    ) as usize;
    let header_end = len_at + 4 + header_len;
    if header_end > body.len() {
        return Err(corrupt("header longer than the file"));
    }
    let header: Header = serde_json::from_slice(&body[len_at + 4..header_end])
        .map_err(|e| SpillError::Corrupt(format!("header: {e}")))?;
    Ok(Spilled {
        table: header.table,
        columns: header.columns,
        rows: header.rows,
        insert_id: header.insert_id,
        instance: header.instance,
        destination: header.destination,
        data: Bytes::copy_from_slice(&body[header_end..]),
    })
}

/// Moves a bad file into `<dir>/quarantine/`, out of the replay order. A
/// `quarantine` that is a symlink is refused: the file would leave the
/// private directory.
pub fn quarantine(dir: &Path, path: &Path) -> std::io::Result<PathBuf> {
    let q = dir.join(QUARANTINE);
    crate::durable::create_private_dir(&q)?;
    let to = q.join(path.file_name().unwrap_or_default());
    // rename(2) moves the name and replaces the one at `to`: it follows a
    // symlink at neither end.
    std::fs::rename(path, &to)?;
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(rows: u64, fill: u8) -> InsertBatch {
        InsertBatch::from_parts(
            7,
            &["a", "b"],
            vec![Bytes::from(vec![fill; 10]), Bytes::from(vec![fill; 5])],
            rows,
        )
    }

    #[test]
    fn round_trips_and_lists_oldest_first() {
        let d = tempfile::tempdir().unwrap();
        let s = SpillDir::open(d.path(), 1 << 20, SpillFullPolicy::DropNewest, 5, None).unwrap();
        for i in 0..3 {
            s.write(Some("t"), &insert(3, i)).0.unwrap();
        }
        let files = s.list().unwrap();
        assert_eq!(files.len(), 3);
        for (i, f) in files.iter().enumerate() {
            let r = read(f).unwrap();
            assert_eq!(r.data, vec![i as u8; 15]);
            assert_eq!((r.rows, r.insert_id, r.instance), (3, 7, 0));
            assert_eq!(r.columns, ["a", "b"]);
            assert_eq!(r.table.as_deref(), Some("t"));
        }
    }

    #[test]
    fn a_claimed_file_is_held_until_it_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir =
            SpillDir::open(tmp.path(), u64::MAX, SpillFullPolicy::DropNewest, 7, None).unwrap();
        let Written::Spilled(path) = dir.write(Some("t"), &insert(3, 1)).0.unwrap() else {
            panic!("not spilled");
        };
        let mut first = claim(&path).unwrap().expect("free file");
        assert!(claim(&path).unwrap().is_none(), "second claim while held");
        assert_eq!(first.read().unwrap().rows, 3);
        // Opened before the holder deletes it, locked after: must not count.
        let late = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        drop(first);
        late.try_lock().unwrap();
        assert!(claim(&path).unwrap().is_none(), "claimed a deleted file");
    }

    #[test]
    fn eviction_skips_a_file_being_replayed() {
        let tmp = tempfile::tempdir().unwrap();
        let one = insert(2, 1);
        let size = {
            let probe = SpillDir::open(
                &tmp.path().join("p"),
                u64::MAX,
                SpillFullPolicy::DropOldest,
                1,
                None,
            )
            .unwrap();
            let Written::Spilled(p) = probe.write(None, &one).0.unwrap() else {
                panic!()
            };
            std::fs::metadata(p).unwrap().len()
        };
        let dir =
            SpillDir::open(tmp.path(), 2 * size, SpillFullPolicy::DropOldest, 1, None).unwrap();
        let Written::Spilled(held_path) = dir.write(None, &one).0.unwrap() else {
            panic!()
        };
        let Written::Spilled(other) = dir.write(None, &one).0.unwrap() else {
            panic!()
        };
        let _held = claim(&held_path).unwrap().unwrap();
        let (written, evicted) = dir.write(None, &one);
        written.unwrap();
        assert_eq!(evicted.rows, 2);
        assert!(held_path.exists(), "the claimed file was evicted");
        assert!(!other.exists());
    }

    #[test]
    fn a_replayed_insert_keeps_its_dedup_token() {
        let d = tempfile::tempdir().unwrap();
        let s = SpillDir::open(d.path(), 1 << 20, SpillFullPolicy::DropNewest, 5, None).unwrap();
        let original = insert(2, 1).with_origin(0xfeed);
        s.write(None, &original).0.unwrap();
        let back = read(&s.list().unwrap()[0]).unwrap().to_insert();
        assert_eq!(back.dedup_token(), original.dedup_token());
        assert_ne!(
            back.dedup_token(),
            insert(2, 1).with_origin(0xbeef).dedup_token()
        );
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_detected() {
        let d = tempfile::tempdir().unwrap();
        let s = SpillDir::open(d.path(), 1 << 20, SpillFullPolicy::DropNewest, 5, None).unwrap();
        s.write(None, &insert(1, 9)).0.unwrap();
        let f = &s.list().unwrap()[0];
        let good = std::fs::read(f).unwrap();
        for cut in 0..good.len() {
            std::fs::write(f, &good[..cut]).unwrap();
            assert!(
                matches!(read(f), Err(SpillError::Corrupt(_))),
                "cut at {cut}"
            );
        }
        for bit in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            std::fs::write(f, &bad).unwrap();
            assert!(matches!(read(f), Err(SpillError::Corrupt(_))), "bit {bit}");
        }
    }

    #[test]
    fn the_budget_drops_newest_or_evicts_oldest() {
        let d = tempfile::tempdir().unwrap();
        let s = SpillDir::open(d.path(), 400, SpillFullPolicy::DropNewest, 5, None).unwrap();
        let mut kept = 0;
        for i in 0..10 {
            if let Written::Spilled(_) = s.write(None, &insert(1, i)).0.unwrap() {
                kept += 1;
            }
        }
        assert!(kept > 0 && kept < 10);
        assert!(s.used_bytes() <= 400);
        let d2 = tempfile::tempdir().unwrap();
        let s2 = SpillDir::open(d2.path(), 400, SpillFullPolicy::DropOldest, 5, None).unwrap();
        let mut evicted = 0;
        for i in 0..10 {
            let (written, ev) = s2.write(None, &insert(1, i));
            written.unwrap();
            evicted += ev.rows;
        }
        assert!(s2.used_bytes() <= 400);
        let newest = read(s2.list().unwrap().last().unwrap()).unwrap();
        assert_eq!(newest.data[0], 9, "the newest survives");
        assert_eq!(evicted as usize + s2.list().unwrap().len(), 10);
    }

    #[test]
    fn the_directories_are_0700_and_the_files_0600() {
        use crate::durable::{after_umask, mode_of};
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("spill").join("t");
        let s = SpillDir::open(&dir, 1 << 20, SpillFullPolicy::DropNewest, 5, None).unwrap();
        assert_eq!(mode_of(&d.path().join("spill")), after_umask(0o700));
        assert_eq!(mode_of(&dir), after_umask(0o700));
        let Written::Spilled(path) = s.write(None, &insert(1, 1)).0.unwrap() else {
            panic!("not spilled")
        };
        assert_eq!(mode_of(&path), after_umask(0o600));
        let moved = quarantine(&dir, &path).unwrap();
        assert_eq!(mode_of(&dir.join(QUARANTINE)), after_umask(0o700));
        assert_eq!(mode_of(&moved), after_umask(0o600));
    }

    #[test]
    fn a_symlinked_spill_or_quarantine_directory_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = d.path().join("spill");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = SpillDir::open(&link, 1 << 20, SpillFullPolicy::DropNewest, 5, None)
            .err()
            .expect("a symlinked spill directory");
        assert!(e.to_string().contains(&*link.to_string_lossy()), "{e}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // `quarantine/` planted as a link out of the directory: the bad file
        // stays where it is.
        let dir = d.path().join("own");
        let s = SpillDir::open(&dir, 1 << 20, SpillFullPolicy::DropNewest, 5, None).unwrap();
        let Written::Spilled(path) = s.write(None, &insert(1, 1)).0.unwrap() else {
            panic!("not spilled")
        };
        std::os::unix::fs::symlink(&real, dir.join(QUARANTINE)).unwrap();
        let e = quarantine(&dir, &path).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(path.exists());
        assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0);
    }

    #[test]
    fn a_symlink_planted_at_a_spill_files_name_is_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("target");
        std::fs::write(&target, b"precious").unwrap();
        let dir = d.path().join("spill");
        let s = SpillDir::open(&dir, 1 << 20, SpillFullPolicy::DropNewest, 5, None).unwrap();
        // The name the first file of an empty directory gets, and its
        // temporary.
        let next = dir.join(format!("s{:020}-{:016x}-{}.{EXT}", 0, 0, 7));
        let mut tmp = next.clone().into_os_string();
        tmp.push(".tmp");
        std::os::unix::fs::symlink(&target, &next).unwrap();
        std::os::unix::fs::symlink(&target, &tmp).unwrap();
        let Written::Spilled(path) = s.write(Some("t"), &insert(2, 3)).0.unwrap() else {
            panic!("not spilled")
        };
        assert_eq!(path, next);
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
        assert_eq!(read(&path).unwrap().rows, 2);
    }

    #[test]
    fn a_symlinked_spill_file_is_not_listed_claimed_or_read() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("spill");
        let elsewhere = d.path().join("elsewhere");
        // A valid spill file outside the directory, linked into it.
        let other =
            SpillDir::open(&elsewhere, 1 << 20, SpillFullPolicy::DropNewest, 5, None).unwrap();
        let Written::Spilled(outside) = other.write(None, &insert(1, 1)).0.unwrap() else {
            panic!("not spilled")
        };
        let s = SpillDir::open(&dir, 1 << 20, SpillFullPolicy::DropNewest, 5, None).unwrap();
        let link = dir.join(outside.file_name().unwrap());
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        assert!(s.list().unwrap().is_empty());
        assert_eq!(s.used_bytes(), 0);
        let e = claim(&link).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
        assert!(matches!(read(&link), Err(SpillError::Io(_))));
        assert!(matches!(read_header(&link), Err(SpillError::Io(_))));
        assert!(read(&outside).is_ok());
    }
}
