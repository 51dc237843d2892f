//! `ch-ingest inspect FILE --schema '...'`: prints a RowBinary batch file as
//! JSON lines, one object per row, decoded with the given schema.

use ch_ingest::rowbinary::decode_row;
use ch_ingest::Schema;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// A RowBinary file (e.g. one the file sink wrote).
    file: PathBuf,
    /// Columns as `name Type, name Type` (e.g. "id UInt64, tags Array(String)").
    /// Default: the PostEvent schema.
    #[arg(long)]
    schema: Option<String>,
}

pub fn run(args: InspectArgs) -> Result<(), Box<dyn std::error::Error>> {
    let schema = match &args.schema {
        Some(s) => Schema::parse(s)?,
        None => Schema::new(ch_ingest::PostEvent::SCHEMA.iter().copied())?,
    };
    let data = std::fs::read(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let mut input = &data[..];
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut rows = 0u64;
    while !input.is_empty() {
        let at = data.len() - input.len();
        let row = decode_row(&schema, &mut input).map_err(|mut e| {
            e.offset += at;
            format!("{}: row {}: {e}", args.file.display(), rows + 1)
        })?;
        serde_json::to_writer(&mut out, &row)?;
        out.write_all(b"\n")?;
        rows += 1;
    }
    out.flush()?;
    eprintln!("{rows} rows, {} bytes", data.len());
    Ok(())
}
