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

/// Dead letters in `dir`, oldest first: the paths of their JSON sidecars.
pub fn list(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    v.sort();
    Ok(v)
}

/// Reads a dead letter back from its sidecar: the table it was for and the
/// INSERT to send again. The data file's length must match the sidecar.
pub fn read(sidecar: &Path) -> std::io::Result<(Option<String>, InsertBatch)> {
    let bad = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(sidecar)?)
        .map_err(|e| bad(format!("{}: {e}", sidecar.display())))?;
    let data_name = meta["data"]
        .as_str()
        .ok_or_else(|| bad(format!("{}: no `data`", sidecar.display())))?;
    let data = std::fs::read(sidecar.with_file_name(data_name))?;
    if meta["bytes"].as_u64() != Some(data.len() as u64) {
        return Err(bad(format!(
            "{data_name}: length does not match its sidecar"
        )));
    }
    let columns: Vec<&str> = meta["columns"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c.as_str()).collect())
        .unwrap_or_default();
    let rows = meta["rows"].as_u64().unwrap_or(0);
    let id = meta["insert_id"].as_u64().unwrap_or(0);
    let origin = meta["origin"].as_u64().unwrap_or(0);
    let insert =
        InsertBatch::new(id, &columns, vec![bytes::Bytes::from(data)], rows).with_origin(origin);
    Ok((meta["table"].as_str().map(str::to_owned), insert))
}

/// Deletes a dead letter (its sidecar and data file) after a replay.
pub fn remove(sidecar: &Path) -> std::io::Result<()> {
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sidecar)?).unwrap_or_default();
    if let Some(data) = meta["data"].as_str() {
        std::fs::remove_file(sidecar.with_file_name(data))?;
    }
    std::fs::remove_file(sidecar)
}

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
        "origin": insert.origin(),
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
