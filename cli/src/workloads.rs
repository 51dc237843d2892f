//! End-to-end workloads against a real ClickHouse: ch-ingest and the peers a
//! user would otherwise pick, at one batch size each.
//!
//! Owns: driving each peer the same way (same events, same producer count,
//! same HTTP client with TCP_NODELAY, same table) and measuring rows/s and
//! INSERT latency. Shared by `ch-ingest bench sweep` and `benches/end_to_end.rs`
//! (included there by path), so the CLI and criterion measure one thing.
//! Must not: use anything but the library's public API, or print.
//!
//! Every peer gets the nodelay client: without TCP_NODELAY the crate's
//! default client waits out Nagle's delay on every INSERT (10x slower at
//! 500-row INSERTs on this machine), which would measure the kernel, not the
//! peer.

use ch_ingest::sink::{ClickHouseSink, InsertBatch, InsertFormat, InsertOrder, Sink, SinkError};
use ch_ingest::{Buffer, PostEvent, TrackError};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What gets events into ClickHouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// ch-ingest in its default shape (sorted by the table's key, Native):
    /// `size` is the shard threshold (`max_rows`); INSERTs coalesce.
    ChIngest,
    /// ch-ingest, sorted, as RowBinary.
    ChIngestSortedRowBinary,
    /// ch-ingest, in arrival order, as Native.
    ChIngestArrivalNative,
    /// ch-ingest in arrival order as RowBinary: the shape before INSERT
    /// shaping, and what the `Inserter` sends.
    ChIngestArrivalRowBinary,
    /// The `clickhouse` crate's `Inserter`, owned by one task that also makes the events.
    Inserter,
    /// One `Inserter` shared by the producer threads through a tokio Mutex.
    InserterMutex,
    /// Producer threads send to one task that owns the `Inserter` (flume channel).
    InserterChannel,
    /// Pre-encoded RowBinary of `size` rows posted back to back: the ceiling.
    Ceiling,
    /// The same with two POSTs in flight, as ch-ingest's default `max_inflight`.
    Ceiling2,
}

impl Peer {
    pub const ALL: [Peer; 9] = [
        Peer::ChIngest,
        Peer::ChIngestSortedRowBinary,
        Peer::ChIngestArrivalNative,
        Peer::ChIngestArrivalRowBinary,
        Peer::Inserter,
        Peer::InserterMutex,
        Peer::InserterChannel,
        Peer::Ceiling,
        Peer::Ceiling2,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Peer::ChIngest => "ch_ingest",
            Peer::ChIngestSortedRowBinary => "ch_ingest_sorted_rowbinary",
            Peer::ChIngestArrivalNative => "ch_ingest_arrival_native",
            Peer::ChIngestArrivalRowBinary => "ch_ingest_arrival_rowbinary",
            Peer::Inserter => "inserter_1_task",
            Peer::InserterMutex => "inserter_mutex_2_threads",
            Peer::InserterChannel => "inserter_channel_2_threads",
            Peer::Ceiling => "raw_http_ceiling",
            Peer::Ceiling2 => "raw_http_ceiling_2_inflight",
        }
    }

    /// The INSERT shape of a ch-ingest peer; `None` for the others.
    pub fn shape(self) -> Option<(InsertOrder, InsertFormat)> {
        match self {
            Peer::ChIngest => Some((InsertOrder::default(), InsertFormat::default())),
            Peer::ChIngestSortedRowBinary => Some((InsertOrder::Sorted, InsertFormat::RowBinary)),
            Peer::ChIngestArrivalNative => Some((InsertOrder::Arrival, InsertFormat::Native)),
            Peer::ChIngestArrivalRowBinary => Some((InsertOrder::Arrival, InsertFormat::RowBinary)),
            _ => None,
        }
    }
}

/// One measured point.
#[derive(Debug, Clone)]
pub struct Point {
    pub peer: Peer,
    pub size: u64,
    /// Rows ClickHouse acknowledged.
    pub rows: u64,
    /// From the first event to the last acknowledgement.
    pub elapsed: Duration,
    pub inserts: u64,
    pub insert_p50: Duration,
    pub insert_p99: Duration,
}

impl Point {
    pub fn rows_per_sec(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// When a workload stops producing: after this many events, or at this
/// deadline, whichever comes first. What was produced is then drained.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub events: u64,
    pub time: Duration,
}

/// Producer threads for the peers that have them (the seed's shape: a server
/// with two request threads on this two-core machine).
pub const PRODUCERS: u64 = 2;

/// The `i`-th event: cheap to make, realistic in size (about 45 bytes).
pub fn event(i: u64) -> PostEvent {
    const TYPES: [&str; 4] = ["impression", "impression", "like", "click"];
    PostEvent {
        event_type: TYPES[(i % 4) as usize].into(),
        tweet_id: 1_000_000_000_000_000_000 + (i * 7919) % 10_000_000,
        occurred_at: 1_700_000_000 + (i % 86_400) as u32,
        user_id: (!i.is_multiple_of(4)).then_some(i % 50_000_000),
        session_id: i
            .is_multiple_of(2)
            .then(|| format!("s-{:08x}", i % 100_000)),
        client: ["ios", "android", "web"][(i % 3) as usize].into(),
        country: *b"US",
        dwell_ms: i.is_multiple_of(3).then_some((i % 30_000) as u32),
    }
}

/// Runs one peer at one size into `table` (which must exist with
/// [`PostEvent::DDL`]'s columns).
pub fn run(
    rt: &tokio::runtime::Runtime,
    client: &clickhouse::Client,
    table: &str,
    peer: Peer,
    size: u64,
    budget: Budget,
) -> Result<Point, BoxError> {
    let client = client.clone().with_validation(false);
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let deadline = started + budget.time;
    let rows = match peer {
        Peer::ChIngest
        | Peer::ChIngestSortedRowBinary
        | Peer::ChIngestArrivalNative
        | Peer::ChIngestArrivalRowBinary => {
            let shape = peer.shape().ok_or("a ch-ingest peer has a shape")?;
            ch_ingest(
                rt, &client, table, size, shape, budget, deadline, &latencies,
            )?
        }
        Peer::Inserter => rt.block_on(inserter_one_task(
            &client, table, size, budget, deadline, &latencies,
        ))?,
        Peer::InserterMutex => {
            inserter_mutex(rt, &client, table, size, budget, deadline, &latencies)?
        }
        Peer::InserterChannel => {
            inserter_channel(rt, &client, table, size, budget, deadline, &latencies)?
        }
        Peer::Ceiling => {
            rt.block_on(ceiling(&client, table, size, budget, deadline, &latencies))?
        }
        Peer::Ceiling2 => rt.block_on(async {
            let half = Budget {
                events: budget.events / 2,
                ..budget
            };
            let (a, b) = tokio::join!(
                ceiling(&client, table, size, half, deadline, &latencies),
                ceiling(&client, table, size, half, deadline, &latencies),
            );
            Ok::<_, BoxError>(a? + b?)
        })?,
    };
    let elapsed = started.elapsed();
    let mut lat = std::mem::take(&mut *latencies.lock().unwrap_or_else(|p| p.into_inner()));
    lat.sort_unstable();
    let q = |f: f64| quantile(&lat, f);
    Ok(Point {
        peer,
        size,
        rows,
        elapsed,
        inserts: lat.len() as u64,
        insert_p50: q(0.50),
        insert_p99: q(0.99),
    })
}

/// The `f` quantile (0..=1) of sorted `durations`, nearest rank; zero when
/// there are none.
pub fn quantile(sorted: &[Duration], f: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 * f).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or_default()
}

/// Runs `produce(i)` for event numbers split over [`PRODUCERS`] threads until
/// the budget is spent; returns how many events were produced.
fn producers(
    budget: Budget,
    deadline: Instant,
    produce: impl Fn(u64) -> Result<(), BoxError> + Sync,
) -> Result<u64, BoxError> {
    let produced = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let (produce, produced, stop) = (&produce, &produced, &stop);
                s.spawn(move || -> Result<(), BoxError> {
                    let quota = budget.events / PRODUCERS;
                    let mut i = 0;
                    while i < quota {
                        if i.is_multiple_of(1024)
                            && (stop.load(Relaxed) || Instant::now() >= deadline)
                        {
                            stop.store(true, Relaxed);
                            break;
                        }
                        produce(p * quota + i)?;
                        i += 1;
                    }
                    produced.fetch_add(i, Relaxed);
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "producer thread panicked")??;
        }
        Ok(produced.load(Relaxed))
    })
}

/// Records how long each INSERT took.
struct TimedSink {
    inner: ClickHouseSink,
    latencies: Arc<Mutex<Vec<Duration>>>,
}

impl Sink for TimedSink {
    async fn insert(&self, batch: &InsertBatch) -> Result<(), SinkError> {
        let t = Instant::now();
        let r = self.inner.insert(batch).await;
        let took = t.elapsed();
        self.latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(took);
        r
    }

    fn insert_shape(&self, order: &InsertOrder, format: InsertFormat) {
        self.inner.insert_shape(order, format)
    }

    fn prepare(
        &self,
        batch: Arc<InsertBatch>,
    ) -> impl std::future::Future<Output = Arc<InsertBatch>> + Send {
        self.inner.prepare(batch)
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "the peers' common arguments, plus the shape"
)]
fn ch_ingest(
    rt: &tokio::runtime::Runtime,
    client: &clickhouse::Client,
    table: &str,
    size: u64,
    (order, format): (InsertOrder, InsertFormat),
    budget: Budget,
    deadline: Instant,
    latencies: &Arc<Mutex<Vec<Duration>>>,
) -> Result<u64, BoxError> {
    let sink = TimedSink {
        inner: ClickHouseSink::new(client.clone(), table),
        latencies: latencies.clone(),
    };
    let buffer: Buffer<PostEvent> = rt.block_on(async {
        Buffer::builder()
            .shards(PRODUCERS as usize)
            .max_rows(size)
            // Large enough that the row threshold decides, as in the sweep's intent.
            .max_bytes((size as usize * 128).max(1 << 20))
            .insert_order(order)
            .insert_format(format)
            .build(sink)
    })?;
    producers(budget, deadline, |i| {
        let mut e = event(i);
        loop {
            match buffer.track(e) {
                Ok(()) => return Ok(()),
                Err(TrackError::Full(back)) => {
                    e = back;
                    std::thread::sleep(Duration::from_micros(50));
                }
                Err(other) => return Err(other.to_string().into()),
            }
        }
    })?;
    let report = rt.block_on(buffer.shutdown())?;
    if report.failed_rows > 0 {
        return Err(format!("{} rows failed: {:?}", report.failed_rows, report.failures).into());
    }
    Ok(buffer.stats().acked_rows)
}

fn inserter(
    client: &clickhouse::Client,
    table: &str,
    size: u64,
) -> clickhouse::inserter::Inserter<PostEvent> {
    client
        .inserter::<PostEvent>(table)
        .with_max_rows(size)
        .with_max_bytes(u64::MAX)
}

/// Times the commits that actually ended an INSERT.
async fn timed_commit(
    ins: &mut clickhouse::inserter::Inserter<PostEvent>,
    latencies: &Mutex<Vec<Duration>>,
) -> Result<u64, clickhouse::error::Error> {
    let t = Instant::now();
    let q = ins.commit().await?;
    if q.rows > 0 {
        latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(t.elapsed());
    }
    Ok(q.rows)
}

async fn inserter_one_task(
    client: &clickhouse::Client,
    table: &str,
    size: u64,
    budget: Budget,
    deadline: Instant,
    latencies: &Mutex<Vec<Duration>>,
) -> Result<u64, BoxError> {
    let mut ins = inserter(client, table, size);
    let mut rows = 0;
    for i in 0..budget.events {
        if i.is_multiple_of(1024) && Instant::now() >= deadline {
            break;
        }
        ins.write(&event(i)).await?;
        rows += timed_commit(&mut ins, latencies).await?;
    }
    Ok(rows + ins.end().await?.rows)
}

fn inserter_mutex(
    rt: &tokio::runtime::Runtime,
    client: &clickhouse::Client,
    table: &str,
    size: u64,
    budget: Budget,
    deadline: Instant,
    latencies: &Mutex<Vec<Duration>>,
) -> Result<u64, BoxError> {
    let shared = tokio::sync::Mutex::new(inserter(client, table, size));
    let rows = AtomicU64::new(0);
    producers(budget, deadline, |i| {
        rt.block_on(async {
            let mut ins = shared.lock().await;
            ins.write(&event(i)).await?;
            rows.fetch_add(timed_commit(&mut ins, latencies).await?, Relaxed);
            Ok(())
        })
    })?;
    let ins = shared.into_inner();
    Ok(rows.load(Relaxed) + rt.block_on(ins.end())?.rows)
}

fn inserter_channel(
    rt: &tokio::runtime::Runtime,
    client: &clickhouse::Client,
    table: &str,
    size: u64,
    budget: Budget,
    deadline: Instant,
    latencies: &Arc<Mutex<Vec<Duration>>>,
) -> Result<u64, BoxError> {
    let (tx, rx) = flume::bounded::<PostEvent>(4096);
    let mut ins = inserter(client, table, size);
    let lat = latencies.clone();
    let consumer = rt.spawn(async move {
        let mut rows = 0;
        while let Ok(e) = rx.recv_async().await {
            ins.write(&e).await?;
            rows += timed_commit(&mut ins, &lat).await?;
        }
        Ok::<_, clickhouse::error::Error>(rows + ins.end().await?.rows)
    });
    producers(budget, deadline, |i| {
        tx.send(event(i))
            .map_err(|_| "the inserter task stopped".into())
    })?;
    drop(tx);
    Ok(rt.block_on(consumer)??)
}

async fn ceiling(
    client: &clickhouse::Client,
    table: &str,
    size: u64,
    budget: Budget,
    deadline: Instant,
    latencies: &Mutex<Vec<Duration>>,
) -> Result<u64, BoxError> {
    let mut body = bytes::BytesMut::new();
    let mut columns = None;
    for i in 0..size {
        let learned = ch_ingest::rowbinary::encode_row(&event(i), &mut body, columns.as_deref())?;
        columns = columns.or(learned);
    }
    let body = body.freeze();
    let sql = ch_ingest::sink::sql::insert_sql(table, &columns.unwrap_or_default());
    let mut rows = 0;
    while rows < budget.events && Instant::now() < deadline {
        let t = Instant::now();
        let mut insert = client.insert_formatted_with(sql.clone());
        insert.send(body.clone()).await?;
        insert.end().await?;
        latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(t.elapsed());
        rows += size;
    }
    Ok(rows)
}
