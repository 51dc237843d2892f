//! `ch-ingest bench sweep`: the batch-size sweep against a given ClickHouse,
//! written as a CSV and a PNG plot, so users tune on their own server.
//!
//! Owns: the sweep loop (a fresh table per point), the CSV and the plot.
//! The workloads themselves live in `workloads` (shared with the criterion
//! `end_to_end` bench). Must not: leave its table behind.

use super::workloads::{self, Budget, Peer, Point};
use ch_ingest::sink::sql::quote_table;
use ch_ingest::PostEvent;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(clap::Subcommand, Debug)]
enum BenchCommand {
    /// Rows/s and p99 INSERT latency against batch size, for ch-ingest, the
    /// clickhouse crate's Inserter (three ways) and raw pre-encoded HTTP.
    Sweep(SweepArgs),
    /// The ways to feed a replicated cluster, side by side: straight to the
    /// shards, through the Distributed table (sync and async).
    Cluster(super::cluster_bench::ClusterBenchArgs),
    /// What each INSERT shape (arrival or sorted, RowBinary or Native)
    /// costs the server, beside the clickhouse crate's Inserter.
    Shapes(super::shape_bench::ShapeBenchArgs),
    /// Many small INSERTs from ClickHouse clients, straight to ClickHouse
    /// and through a running serve's front door (waiting and not).
    FrontDoor(super::door_bench::DoorBenchArgs),
}

#[derive(clap::Args, Debug)]
pub struct SweepArgs {
    /// ClickHouse HTTP URL, e.g. http://127.0.0.1:8123.
    #[arg(long)]
    clickhouse_url: String,
    #[command(flatten)]
    tls: crate::tls_args::TlsArgs,
    /// Scratch table, dropped and re-created for every point, dropped at the end.
    #[arg(long, default_value = "ch_ingest_sweep")]
    table: String,
    /// Batch sizes in rows (shard threshold for ch-ingest, max_rows for the Inserter).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100,500,2000,10000,100000"
    )]
    sizes: Vec<u64>,
    /// Peers to run (default: all): ch_ingest (its default INSERT shape),
    /// ch_ingest_sorted_rowbinary, ch_ingest_arrival_native,
    /// ch_ingest_arrival_rowbinary, inserter_1_task,
    /// inserter_mutex_2_threads, inserter_channel_2_threads, raw_http_ceiling,
    /// raw_http_ceiling_2_inflight.
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// Time budget per point; what was produced in it is then drained.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Event budget per point (whichever of the two budgets ends first).
    #[arg(long, default_value_t = 20_000_000)]
    events: u64,
    /// Output prefix: writes PREFIX.csv and PREFIX.png.
    #[arg(long, default_value = "docs/sweep")]
    out: PathBuf,
    /// A TrueType font for the plot's text (default: DejaVu Sans or Liberation Sans).
    #[arg(long)]
    font: Option<PathBuf>,
}

pub fn run(args: BenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    match args.command {
        BenchCommand::Sweep(a) => sweep(a),
        BenchCommand::Cluster(a) => super::cluster_bench::run(a),
        BenchCommand::Shapes(a) => super::shape_bench::run(a),
        BenchCommand::FrontDoor(a) => super::door_bench::run(a),
    }
}

fn sweep(args: SweepArgs) -> Result<(), Box<dyn std::error::Error>> {
    let peers: Vec<Peer> = if args.peers.is_empty() {
        Peer::ALL.to_vec()
    } else {
        args.peers
            .iter()
            .map(|name| {
                Peer::ALL
                    .into_iter()
                    .find(|p| p.name() == name)
                    .ok_or_else(|| format!("--peers: unknown peer `{name}`"))
            })
            .collect::<Result<_, _>>()?
    };
    if args.sizes.contains(&0) {
        return Err("--sizes: a batch size must be at least 1 row".into());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let client = args
        .tls
        .client()?
        .with_url(&args.clickhouse_url)
        .with_validation(false);
    let version: String = rt.block_on(client.query("SELECT version()").fetch_one())?;
    let budget = Budget {
        events: args.events,
        time: Duration::from_secs_f64(args.seconds),
    };
    let table = quote_table(&args.table);
    let recreate = |rt: &tokio::runtime::Runtime| -> Result<(), clickhouse::error::Error> {
        rt.block_on(async {
            client
                .query(&format!("DROP TABLE IF EXISTS {table}"))
                .execute()
                .await?;
            client
                .query(&PostEvent::create_table_sql(&args.table))
                .execute()
                .await
        })
    };
    println!(
        "sweep against ClickHouse {version} at {}",
        args.clickhouse_url
    );
    println!(
        "{:<28} {:>8} {:>12} {:>8} {:>10} {:>10}",
        "peer", "size", "rows/s", "inserts", "p50 ms", "p99 ms"
    );
    let mut points = Vec::new();
    for &size in &args.sizes {
        for &peer in &peers {
            recreate(&rt)?;
            let p = workloads::run(&rt, &client, &args.table, peer, size, budget)
                .map_err(|e| format!("{} at {size}: {e}", peer.name()))?;
            let counted: u64 = rt.block_on(
                client
                    .query(&format!("SELECT count() FROM {table}"))
                    .fetch_one(),
            )?;
            if counted != p.rows {
                return Err(format!(
                    "{} at {size}: {} rows acknowledged but {counted} in the table",
                    peer.name(),
                    p.rows
                )
                .into());
            }
            println!(
                "{:<28} {:>8} {:>12.0} {:>8} {:>10.1} {:>10.1}",
                peer.name(),
                size,
                p.rows_per_sec(),
                p.inserts,
                p.insert_p50.as_secs_f64() * 1e3,
                p.insert_p99.as_secs_f64() * 1e3
            );
            points.push(p);
        }
    }
    rt.block_on(
        client
            .query(&format!("DROP TABLE IF EXISTS {table}"))
            .execute(),
    )?;
    if let Some(dir) = args.out.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    let csv = args.out.with_extension("csv");
    write_csv(&csv, &version, &points)?;
    println!("wrote {}", csv.display());
    let png = args.out.with_extension("png");
    match plot(&png, &version, &points, args.font.as_deref()) {
        Ok(()) => println!("wrote {}", png.display()),
        Err(e) => eprintln!("no plot: {e} (the CSV has every number)"),
    }
    Ok(())
}

fn write_csv(path: &Path, version: &str, points: &[Point]) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "# ch-ingest bench sweep, ClickHouse {version}")?;
    writeln!(
        f,
        "peer,batch_rows,rows,seconds,rows_per_sec,inserts,insert_p50_ms,insert_p99_ms"
    )?;
    for p in points {
        writeln!(
            f,
            "{},{},{},{:.3},{:.0},{},{:.2},{:.2}",
            p.peer.name(),
            p.size,
            p.rows,
            p.elapsed.as_secs_f64(),
            p.rows_per_sec(),
            p.inserts,
            p.insert_p50.as_secs_f64() * 1e3,
            p.insert_p99.as_secs_f64() * 1e3
        )?;
    }
    f.flush()
}

fn load_font(explicit: Option<&Path>) -> Result<&'static [u8], String> {
    const CANDIDATES: [&str; 3] = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
    ];
    let paths: Vec<PathBuf> = match explicit {
        Some(p) => vec![p.to_path_buf()],
        None => CANDIDATES.iter().map(PathBuf::from).collect(),
    };
    for p in &paths {
        if let Ok(bytes) = std::fs::read(p) {
            // Registered once per process for the plot's lifetime.
            return Ok(Box::leak(bytes.into_boxed_slice()));
        }
    }
    Err(format!(
        "no TrueType font found (tried {}; pass --font FILE, or apt-get install fonts-dejavu-core)",
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

fn plot(
    path: &Path,
    version: &str,
    points: &[Point],
    font: Option<&Path>,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let font = load_font(font)?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| "the font could not be parsed")?;
    if points.is_empty() {
        return Err("no points".into());
    }
    let root = BitMapBackend::new(path, (1400, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        &format!("ch-ingest bench sweep: ClickHouse {version}, PostEvent rows (~45 B)"),
        ("sans-serif", 22),
    )?;
    let (left, right) = root.split_horizontally(700);
    let min_size = points.iter().map(|p| p.size).min().unwrap_or(1) as f64;
    let max_size = points.iter().map(|p| p.size).max().unwrap_or(1) as f64;
    let x_range = (min_size / 1.5)..(max_size * 1.5);
    let peers: Vec<Peer> = Peer::ALL
        .into_iter()
        .filter(|peer| points.iter().any(|p| p.peer == *peer))
        .collect();
    let colors = [
        RGBColor(214, 39, 40),
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(90, 90, 90),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(188, 189, 34),
    ];

    type Panel = (&'static str, &'static str, fn(&Point) -> f64);
    let panels: [Panel; 2] = [
        ("throughput", "rows/s", |p| p.rows_per_sec().max(1.0)),
        ("p99 INSERT latency", "ms", |p| {
            (p.insert_p99.as_secs_f64() * 1e3).max(0.01)
        }),
    ];
    for (area, (title, unit, value)) in [left, right].iter().zip(panels) {
        let lo = points.iter().map(value).fold(f64::MAX, f64::min);
        let hi = points.iter().map(value).fold(0.0, f64::max);
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                x_range.clone().log_scale(),
                // Room below the lowest line for the legend.
                ((lo / 30.0)..(hi * 2.0)).log_scale(),
            )?;
        chart
            .configure_mesh()
            .x_desc("batch size (rows)")
            .y_desc(unit)
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 14))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| {
                if *v >= 1e6 {
                    format!("{:.1}M", v / 1e6)
                } else if *v >= 1e3 {
                    format!("{:.0}k", v / 1e3)
                } else {
                    format!("{v:.1}")
                }
            })
            .draw()?;
        for (peer, color) in peers.iter().zip(colors.iter().cycle()) {
            let series: Vec<(f64, f64)> = points
                .iter()
                .filter(|p| p.peer == *peer)
                .map(|p| (p.size as f64, value(p)))
                .collect();
            chart
                .draw_series(LineSeries::new(series.clone(), color.stroke_width(2)))?
                .label(match peer {
                    Peer::ChIngest => {
                        "ch_ingest, sorted Native (default; x = shard max_rows; INSERTs coalesce)"
                    }
                    other => other.name(),
                })
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart.draw_series(
                series
                    .iter()
                    .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
