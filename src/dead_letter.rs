//! Dead letters: INSERTs the sink refused for good, kept on disk.
//!
//! Owns: the directory format. Each dead letter is two files named
//! `<unix-ms>-<insert-id>`: `.rowbinary` (the exact bytes of the INSERT,
//! loadable with `INSERT INTO t (cols) FORMAT RowBinary`) and `.json`, a small
//! sidecar with table, columns, rows, bytes, attempts, the server's error and
//! the time. Both are written to a temporary name, fsynced and renamed, the
//! sidecar last, so a sidecar always describes a complete data file.
//! Must not: retry, or decide what is a dead letter (the coordinator does).

use crate::batch::InsertBatch;
use crate::sink::SinkError;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `insert` and its sidecar under `dir`; returns the data file's path.
pub(crate) fn write(
    dir: &Path,
    table: Option<&str>,
    insert: &InsertBatch,
    attempts: u32,
    error: &SinkError,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let stem = format!("{}-{}", now.as_millis(), insert.id());
    let data = dir.join(format!("{stem}.rowbinary"));
    write_atomically(&data, |f| {
        for chunk in insert.chunks() {
            f.write_all(chunk)?;
        }
        Ok(())
    })?;
    let code = match error {
        SinkError::Server { code, .. } => *code,
        _ => None,
    };
    let sidecar = serde_json::json!({
        "table": table,
        "columns": insert.columns().iter().map(|c| c.as_ref()).collect::<Vec<&str>>(),
        "rows": insert.rows(),
        "bytes": insert.bytes(),
        "attempts": attempts,
        "error": error.to_string(),
        "code": code,
        "retryable": error.is_retryable(),
        "insert_id": insert.id(),
        "unix_ms": now.as_millis() as u64,
        "data": data.file_name().and_then(|n| n.to_str()),
    });
    write_atomically(&dir.join(format!("{stem}.json")), |f| {
        serde_json::to_writer_pretty(&mut *f, &sidecar)?;
        f.write_all(b"\n")
    })?;
    sync_dir(dir);
    Ok(data)
}

fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    fill(&mut f)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Makes the renames durable; best effort (not every filesystem allows it).
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}
