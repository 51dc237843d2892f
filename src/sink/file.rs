//! RowBinary files on local disk: the embedded default, no server needed.
//!
//! Owns: writing each batch to its own file atomically (through the engine's
//! one durable-write helper, with fsync when asked), and the `INSERT.sql` /
//! `load.sh` beside them that load the files into ClickHouse later. Must
//! not: read files back or delete them.

use super::{insert_sql, InsertBatch, Sink, SinkError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Mode of the files written here (before the umask): what `File::create`
/// gives. They are output for a loader, maybe run as another user, not the
/// engine's private spill or dead letters (those are 0600).
const OUTPUT_FILE: u32 = 0o666;

/// Writes each batch as `<dir>/<table>-<run>-<batch id>.rowbinary`.
///
/// Beside them it writes `INSERT.sql` (the statement the files fit) and
/// `load.sh`, which streams every file (RowBinary files concatenate) into
/// `clickhouse-client --query "$(cat INSERT.sql)"`. A file only appears
/// under its final name once completely written, so a crash leaves at worst a
/// `.tmp` file, never a truncated `.rowbinary`.
#[derive(Clone)]
pub struct FileSink {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    table: String,
    run: String,
    fsync: AtomicBool,
    wrote_loader: AtomicBool,
}

impl FileSink {
    /// Writes under `dir` (created if missing), files named for `table`.
    pub fn new(dir: impl Into<PathBuf>, table: impl Into<String>) -> std::io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(Self {
            inner: Arc::new(Inner {
                dir,
                table: table.into(),
                // Unique per process start, so a second run never overwrites
                // the files of the first.
                run: format!("{}-{}", now.as_millis(), std::process::id()),
                fsync: AtomicBool::new(false),
                wrote_loader: AtomicBool::new(false),
            }),
        })
    }

    /// Also fsync each file and the directory before acknowledging (default:
    /// off; the file is complete but may sit in the page cache).
    pub fn with_fsync(self, fsync: bool) -> Self {
        self.inner.fsync.store(fsync, Ordering::Relaxed);
        self
    }

    /// The output directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

impl Inner {
    fn write(&self, batch: &InsertBatch) -> std::io::Result<()> {
        if !self.wrote_loader.load(Ordering::Relaxed) {
            self.write_loader(batch.columns())?;
            self.wrote_loader.store(true, Ordering::Relaxed);
        }
        let name = format!("{}-{}-{:012}.rowbinary", self.table, self.run, batch.id());
        let fsync = self.fsync.load(Ordering::Relaxed);
        crate::durable::write_atomically(&self.dir.join(name), fsync, OUTPUT_FILE, |f| {
            batch
                .chunks()
                .iter()
                .try_for_each(|chunk| f.write_all(chunk))
        })
    }

    fn write_loader(&self, columns: &[impl AsRef<str>]) -> std::io::Result<()> {
        let sql = insert_sql(&self.table, columns);
        crate::durable::write_atomically(&self.dir.join("INSERT.sql"), false, OUTPUT_FILE, |f| {
            writeln!(f, "{sql}")
        })?;
        let script = format!(
            "#!/bin/sh\n\
             # Loads every RowBinary batch in this directory into ClickHouse.\n\
             # Usage: ./load.sh [clickhouse-client options, e.g. --port 9000]\n\
             set -e\n\
             cd \"$(dirname \"$0\")\"\n\
             # RowBinary files concatenate: one client, one streamed INSERT.\n\
             ls {table}-*.rowbinary >/dev/null 2>&1 || exit 0\n\
             cat {table}-*.rowbinary | clickhouse-client \"$@\" --query \"$(cat INSERT.sql)\"\n",
            table = self.table
        );
        let path = self.dir.join("load.sh");
        crate::durable::write_atomically(&path, false, OUTPUT_FILE, |f| {
            f.write_all(script.as_bytes())
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(())
    }
}

impl Sink for FileSink {
    async fn insert(&self, batch: &InsertBatch) -> Result<(), SinkError> {
        let inner = self.inner.clone();
        let batch = batch.clone(); // cheap: Bytes are reference-counted
        tokio::task::spawn_blocking(move || inner.write(&batch))
            .await
            .map_err(|e| SinkError::Other(format!("file writer task failed: {e}")))?
            .map_err(SinkError::from_io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[tokio::test]
    async fn writes_batches_and_loader() {
        let dir = tempfile::tempdir().unwrap();
        let sink = FileSink::new(dir.path(), "t").unwrap();
        let batch = InsertBatch::from_parts(
            3,
            &["a", "b"],
            vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cd")],
            2,
        );
        sink.insert(&batch).await.unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".rowbinary"))
            .collect();
        assert_eq!(files.len(), 1);
        assert_eq!(std::fs::read(dir.path().join(&files[0])).unwrap(), b"abcd");
        let sql = std::fs::read_to_string(dir.path().join("INSERT.sql")).unwrap();
        assert_eq!(sql.trim(), "INSERT INTO `t` (`a`, `b`) FORMAT RowBinary");
        assert!(dir.path().join("load.sh").exists());
    }
}
