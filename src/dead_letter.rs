//! Dead letters: INSERTs the sink refused for good, kept on disk.
//!
//! Owns: the directory format. Each dead letter is two files named after
//! the INSERT's identity, `<origin>-<insert-id>` (the engine instance in 16
//! hex digits, the id in 20 digits): `.rowbinary` (the exact bytes of the
//! INSERT, loadable with `INSERT INTO t (cols) FORMAT RowBinary`) and
//! `.json`, a small sidecar with table, columns, rows, bytes, attempts, the
//! server's error and the time. Both are written through
//! [`crate::durable`], the sidecar last, so a sidecar always describes a
//! complete data file; removal goes the other way (sidecar first), so a
//! crash never leaves a sidecar without its data. Because the name comes
//! from the INSERT, writing the same INSERT again (a crash between writing
//! the dead letter and deleting the spill file it came from) replaces it
//! instead of adding a second copy. Must not: retry, or decide what is a
//! dead letter (the coordinator and the replayer do).

use crate::batch::InsertBatch;
use crate::sink::SinkError;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The JSON sidecar of a dead letter.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Sidecar {
    table: Option<String>,
    columns: Vec<String>,
    rows: u64,
    bytes: u64,
    attempts: u32,
    error: String,
    code: Option<u32>,
    #[serde(default)]
    code_name: Option<String>,
    retryable: bool,
    insert_id: u64,
    origin: u64,
    unix_ms: u64,
    /// The data file's name, beside the sidecar.
    data: String,
}

/// Dead letters in `dir`, oldest first (by the time each was written): the
/// paths of their JSON sidecars.
pub fn list(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| {
            let t = e.metadata().and_then(|m| m.modified());
            (t.unwrap_or(std::time::UNIX_EPOCH), e.path())
        })
        .collect();
    v.sort();
    Ok(v.into_iter().map(|(_, p)| p).collect())
}

/// Reads a dead letter back from its sidecar: the table it was for and the
/// INSERT to send again. The data file's length must match the sidecar; a
/// missing data file is [`std::io::ErrorKind::NotFound`].
pub fn read(sidecar: &Path) -> std::io::Result<(Option<String>, InsertBatch)> {
    let bad = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
    let meta: Sidecar = serde_json::from_slice(&std::fs::read(sidecar)?)
        .map_err(|e| bad(format!("{}: {e}", sidecar.display())))?;
    let data = std::fs::read(sidecar.with_file_name(&meta.data))?;
    if meta.bytes != data.len() as u64 {
        return Err(bad(format!(
            "{}: length does not match its sidecar",
            meta.data
        )));
    }
    let columns: Vec<&str> = meta.columns.iter().map(String::as_str).collect();
    let insert = InsertBatch::from_parts(
        meta.insert_id,
        &columns,
        vec![bytes::Bytes::from(data)],
        meta.rows,
    )
    .with_origin(meta.origin);
    Ok((meta.table, insert))
}

/// Deletes a dead letter after a replay: the sidecar first, so a crash in
/// between leaves a data file nobody lists (never a sidecar that would be
/// sent again without its data). A data file that is already gone is fine.
pub fn remove(sidecar: &Path) -> std::io::Result<()> {
    let data = std::fs::read(sidecar)
        .ok()
        .and_then(|b| serde_json::from_slice::<Sidecar>(&b).ok())
        .map(|m| sidecar.with_file_name(m.data));
    std::fs::remove_file(sidecar)?;
    if let Some(data) = data {
        match std::fs::remove_file(data) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    if let Some(dir) = sidecar.parent() {
        crate::durable::sync_dir(dir);
    }
    Ok(())
}

/// Deletes the dead letter of `insert` under `dir`, if there is one.
pub(crate) fn remove_insert(dir: &Path, insert: &InsertBatch) -> std::io::Result<()> {
    let sidecar = dir.join(format!("{}.json", stem(insert)));
    match remove(&sidecar) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The file stem of `insert`'s dead letter: the same for every write of it.
fn stem(insert: &InsertBatch) -> String {
    format!("{:016x}-{:020}", insert.origin(), insert.id())
}

/// Writes `insert` and its sidecar under `dir` (replacing an earlier dead
/// letter of the same INSERT); returns the data file's path.
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
    let stem = stem(insert);
    let data = dir.join(format!("{stem}.rowbinary"));
    crate::durable::write_atomically(&data, true, |f| {
        for chunk in insert.chunks() {
            f.write_all(chunk)?;
        }
        Ok(())
    })?;
    let sidecar = Sidecar {
        table: table.map(str::to_owned),
        columns: insert.columns().iter().map(|c| c.to_string()).collect(),
        rows: insert.rows(),
        bytes: insert.bytes(),
        attempts,
        error: error.to_string(),
        code: match error {
            SinkError::Server { code, .. } => *code,
            _ => None,
        },
        code_name: error.code_name().map(str::to_owned),
        retryable: error.is_retryable(),
        insert_id: insert.id(),
        origin: insert.origin(),
        unix_ms: now.as_millis() as u64,
        data: format!("{stem}.rowbinary"),
    };
    crate::durable::write_atomically(&dir.join(format!("{stem}.json")), true, |f| {
        serde_json::to_writer_pretty(&mut *f, &sidecar)?;
        f.write_all(b"\n")
    })?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(id: u64) -> InsertBatch {
        InsertBatch::from_parts(id, &["a"], vec![bytes::Bytes::from_static(b"12345678")], 1)
            .with_origin(0xabc)
    }

    #[test]
    fn the_same_insert_written_twice_is_one_dead_letter() {
        let d = tempfile::tempdir().unwrap();
        let e = SinkError::Other("no".into());
        let a = write(d.path(), Some("t"), &insert(7), 1, &e).unwrap();
        let b = write(d.path(), Some("t"), &insert(7), 2, &e).unwrap();
        assert_eq!(a, b);
        write(d.path(), Some("t"), &insert(8), 1, &e).unwrap();
        assert_eq!(list(d.path()).unwrap().len(), 2);
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            4,
            "no temporaries"
        );
    }

    #[test]
    fn a_half_removed_dead_letter_is_never_listed_without_its_data() {
        let d = tempfile::tempdir().unwrap();
        let e = SinkError::Other("no".into());
        let data = write(d.path(), Some("t"), &insert(7), 1, &e).unwrap();
        let sidecar = data.with_extension("json");
        // A crash after the first step of `remove`: the sidecar is gone.
        std::fs::remove_file(&sidecar).unwrap();
        assert!(list(d.path()).unwrap().is_empty());
        // An earlier layout could leave the sidecar without its data:
        // reading says NotFound, removing it works.
        write(d.path(), Some("t"), &insert(7), 1, &e).unwrap();
        std::fs::remove_file(&data).unwrap();
        let err = read(&sidecar).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        remove(&sidecar).unwrap();
        assert!(list(d.path()).unwrap().is_empty());
    }
}
