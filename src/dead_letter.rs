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
//! instead of adding a second copy.
//!
//! The directory is created 0700 and both files 0600, never written through
//! a symlink (see [`crate::durable`]). A sidecar is data, not trusted: its
//! `data` field must be a plain file name, and the data file is only opened
//! beside the sidecar and never through a symlink, so a planted or edited
//! sidecar cannot make a replay read (or a removal delete) a file elsewhere.
//! Must not: retry, or decide what is a dead letter (the coordinator and the
//! replayer do).

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
    /// The data file's name, beside the sidecar (checked by [`data_path`]).
    data: String,
}

/// The data file a sidecar names: `data` must be a plain file name, so the
/// file is in the sidecar's own directory. Anything else (`../x`,
/// `/etc/passwd`, `a/b`, empty) is `InvalidData` naming the field.
fn data_path(sidecar: &Path, data: &str) -> std::io::Result<PathBuf> {
    let why = if data.is_empty() {
        Some("it is empty")
    } else if data.starts_with('/') {
        Some("it is an absolute path")
    } else if data.split('/').any(|part| part == "..") {
        Some("it contains `..`")
    } else if data.contains('/') {
        Some("it contains `/`")
    } else if data == "." {
        Some("it names the directory itself")
    } else if data.contains('\0') {
        Some("it contains a NUL byte")
    } else {
        None
    };
    match why {
        Some(why) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{}: field `data` ({data:?}) must be a plain file name beside the sidecar: {why}",
                sidecar.display()
            ),
        )),
        None => Ok(sidecar.with_file_name(data)),
    }
}

/// Dead letters in `dir`, oldest first (by the time each was written): the
/// paths of their JSON sidecars. Only regular files count: a symlink is not
/// a sidecar the engine wrote, and would be refused when read.
pub fn list(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        // `DirEntry::file_type` does not follow a symlink.
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
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
/// missing data file is [`std::io::ErrorKind::NotFound`]. A `data` field
/// that is not a plain file name, or a sidecar or data file that is a
/// symlink, is [`std::io::ErrorKind::InvalidData`].
pub fn read(sidecar: &Path) -> std::io::Result<(Option<String>, InsertBatch)> {
    let bad = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
    let meta: Sidecar = serde_json::from_slice(&crate::durable::read_no_symlink(sidecar)?)
        .map_err(|e| bad(format!("{}: {e}", sidecar.display())))?;
    let data = crate::durable::read_no_symlink(&data_path(sidecar, &meta.data)?)?;
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
/// A sidecar whose `data` is not a plain file name is left, with nothing
/// deleted (`InvalidData`): the name it gives is never acted on.
pub fn remove(sidecar: &Path) -> std::io::Result<()> {
    let data = crate::durable::read_no_symlink(sidecar)
        .ok()
        .and_then(|b| serde_json::from_slice::<Sidecar>(&b).ok())
        .map(|m| data_path(sidecar, &m.data))
        .transpose()?;
    // Unlinking never follows a symlink: a linked sidecar or data file
    // loses the link, never its target.
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
    crate::durable::create_private_dir(dir)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let stem = stem(insert);
    let data = dir.join(format!("{stem}.rowbinary"));
    crate::durable::write_atomically(&data, true, crate::durable::PRIVATE_FILE, |f| {
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
    let json = dir.join(format!("{stem}.json"));
    crate::durable::write_atomically(&json, true, crate::durable::PRIVATE_FILE, |f| {
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

    #[test]
    fn the_directory_is_0700_and_both_files_0600() {
        use crate::durable::{after_umask, mode_of};
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("dead").join("letters");
        let data = write(
            &dir,
            Some("t"),
            &insert(7),
            1,
            &SinkError::Other("no".into()),
        )
        .unwrap();
        assert_eq!(mode_of(&d.path().join("dead")), after_umask(0o700));
        assert_eq!(mode_of(&dir), after_umask(0o700));
        assert_eq!(mode_of(&data), after_umask(0o600));
        assert_eq!(mode_of(&data.with_extension("json")), after_umask(0o600));
    }

    #[test]
    fn a_symlinked_dead_letter_directory_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = d.path().join("dead");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = write(&link, None, &insert(7), 1, &SinkError::Other("no".into())).unwrap_err();
        assert!(e.to_string().contains(&*link.to_string_lossy()), "{e}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0);
    }

    #[test]
    fn a_symlink_planted_at_a_dead_letters_names_is_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("target");
        std::fs::write(&target, b"precious").unwrap();
        let dir = d.path().join("dead");
        std::fs::create_dir(&dir).unwrap();
        let stem = stem(&insert(7));
        for name in [
            format!("{stem}.rowbinary"),
            format!("{stem}.rowbinary.tmp"),
            format!("{stem}.json"),
            format!("{stem}.json.tmp"),
        ] {
            std::os::unix::fs::symlink(&target, dir.join(name)).unwrap();
        }
        let data = write(
            &dir,
            Some("t"),
            &insert(7),
            1,
            &SinkError::Other("no".into()),
        )
        .unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        assert!(std::fs::symlink_metadata(&data).unwrap().is_file());
        let (_, back) = read(&data.with_extension("json")).unwrap();
        assert_eq!(back.chunks().concat(), b"12345678");
    }

    /// A sidecar in `dir` naming `data` as its data file.
    fn sidecar_naming(dir: &Path, data: &str) -> PathBuf {
        let e = SinkError::Other("no".into());
        let written = write(dir, Some("t"), &insert(7), 1, &e).unwrap();
        let sidecar = written.with_extension("json");
        let mut meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&sidecar).unwrap()).unwrap();
        meta["data"] = data.into();
        std::fs::write(&sidecar, serde_json::to_vec(&meta).unwrap()).unwrap();
        sidecar
    }

    #[test]
    fn a_data_field_that_is_not_a_plain_file_name_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("dead");
        // Files a sidecar might try to reach: one beside the directory, one
        // below it; neither may be read or deleted through `data`.
        std::fs::write(d.path().join("x"), b"12345678").unwrap();
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::write(dir.join("a").join("b"), b"12345678").unwrap();
        for data in ["../x", "/etc/passwd", "a/b", "", "..", ".", "a\0b"] {
            let sidecar = sidecar_naming(&dir, data);
            let e = read(&sidecar).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{data:?}: {e}");
            assert!(e.to_string().contains("field `data`"), "{data:?}: {e}");
            let e = remove(&sidecar).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{data:?}: {e}");
            assert!(sidecar.exists(), "{data:?}: nothing removed");
        }
        assert!(d.path().join("x").exists());
        assert!(dir.join("a").join("b").exists());
        // Each reason is named.
        let why = |data| read(&sidecar_naming(&dir, data)).unwrap_err().to_string();
        assert!(why("../x").contains("`..`"));
        assert!(why("/etc/passwd").contains("absolute"));
        assert!(why("a/b").contains("`/`"));
        assert!(why("").contains("empty"));
        assert!(why("a\0b").contains("NUL"));
    }

    #[test]
    fn a_data_file_that_is_a_symlink_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("dead");
        let outside = d.path().join("outside");
        std::fs::write(&outside, b"12345678").unwrap();
        let sidecar = sidecar_naming(&dir, "link.rowbinary");
        std::os::unix::fs::symlink(&outside, dir.join("link.rowbinary")).unwrap();
        let e = read(&sidecar).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // Removing it unlinks the link, never its target.
        remove(&sidecar).unwrap();
        assert!(std::fs::symlink_metadata(dir.join("link.rowbinary")).is_err());
        assert_eq!(std::fs::read(&outside).unwrap(), b"12345678");
    }
}
