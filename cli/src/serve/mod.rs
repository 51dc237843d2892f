//! `ch-ingest serve`: the engine as an HTTP sidecar, for services not
//! written in Rust.
//!
//! Owns: start-up (configuration, runtime, listener), the signal handling
//! (first SIGTERM/SIGINT: stop accepting, drain every table, exit 0; a
//! second: exit at once, saying how many rows were left). The routes live in
//! `http`, the accept loop in `listener`, the per-table engines in `tables`,
//! the settings in `config`.
//! Must not: print secrets, or exit 0 with accepted rows undelivered.

mod config;
mod front_door;
mod http;
mod listener;
mod listener_tls;
mod tables;

use config::{ServeConfig, ServeFlags};
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    flags: ServeFlags,
}

pub fn run(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg = ServeConfig::load(args.flags)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.max(2))
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // Registered once, before anything else: a signal that arrives while
        // the first is being handled is queued here, never lost.
        let mut signals = Signals::new()?;
        let tables = tables::Tables::new(&mut cfg)?;
        tables.start();
        // One bound on the requests being read and decoded, both doors.
        let working = Arc::new(tokio::sync::Semaphore::new(cfg.max_concurrent_requests));
        let limits = http::Limits {
            max_body_bytes: cfg.max_body_bytes,
            max_decompressed_bytes: cfg.max_decompressed_bytes,
            max_line_bytes: cfg.max_line_bytes,
            admin_tokens: std::mem::take(&mut cfg.admin_tokens),
            working: working.clone(),
            body_timeout: cfg.body_timeout,
        };
        let upstream = cfg.tls.connector()?;
        let door = front_door::Limits {
            max_body_bytes: cfg.max_body_bytes,
            max_decompressed_bytes: cfg.max_decompressed_bytes,
            max_decoded_bytes: cfg.max_decoded_bytes,
            max_line_bytes: cfg.max_line_bytes,
            body_timeout: cfg.body_timeout,
            working,
            upstream,
        };
        let mut registry = prometheus_client::registry::Registry::default();
        let door_metrics = front_door::Metrics::register(&mut registry);
        let router = http::router(tables.clone(), limits, registry).merge(front_door::routes(
            tables.clone(),
            cfg.front_door.clone(),
            cfg.database.clone(),
            door,
            door_metrics,
        ));
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
        let tls = match cfg.listener_tls.clone() {
            None => None,
            Some(files) => {
                let tls = listener_tls::Tls::load(files)?;
                tokio::spawn(tls.clone().watch());
                #[cfg(unix)]
                {
                    let on_hup = tls.clone();
                    let mut hup = tokio::signal::unix::signal(
                        tokio::signal::unix::SignalKind::hangup(),
                    )?;
                    tokio::spawn(async move {
                        while hup.recv().await.is_some() {
                            on_hup.reload("SIGHUP");
                        }
                    });
                }
                Some(tls)
            }
        };
        let mut names: Vec<_> = tables.by_name.keys().cloned().collect();
        names.sort();
        // Always printed (tests and operators read the bound address here).
        eprintln!(
            "ch-ingest serve: listening on {}://{} (tables: {}; ClickHouse: {})",
            if tls.is_some() { "https" } else { "http" },
            listener.local_addr()?,
            names.join(", "),
            cfg.urls.join(", ")
        );
        match &cfg.kept {
            (Some(spill), Some(dead)) => eprintln!(
                "ch-ingest serve: rows ClickHouse cannot take are kept in {} (replayed) and {} (dead letters)",
                spill.display(),
                dead.display()
            ),
            (spill, dead) => {
                if spill.is_none() {
                    eprintln!(
                        "ch-ingest serve: WARNING: no spill directory: rows ClickHouse does not take \
                         within the retry window are dropped"
                    );
                }
                if dead.is_none() {
                    eprintln!(
                        "ch-ingest serve: WARNING: no dead-letter directory: rows ClickHouse refuses \
                         for good are dropped"
                    );
                }
            }
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let watcher = tables.clone();
        tokio::spawn(async move {
            signals.recv().await;
            eprintln!("ch-ingest serve: stopping; draining every table (a second signal exits at once)");
            stop_tx.send_replace(true);
            signals.recv().await;
            eprintln!(
                "ch-ingest serve: second signal; exiting now with {} rows not delivered",
                watcher.undelivered()
            );
            std::process::exit(130);
        });
        let conn_limits = listener::ConnLimits {
            max_connections: cfg.max_connections,
            header_timeout: cfg.header_timeout,
        };
        let server = listener::serve(listener, router, conn_limits, tls, stop_rx.clone());
        // A client that never finishes its request must not hold the drain
        // (and the rows already accepted) hostage: after the grace period
        // the drain starts anyway; requests still running then find the
        // engines closed and are told to retry (503).
        let mut stopping = stop_rx;
        let grace = cfg.shutdown_grace;
        tokio::select! {
            () = server => {}
            () = async move {
                let _ = stopping.wait_for(|s| *s).await;
                tokio::time::sleep(grace).await;
            } => eprintln!(
                "ch-ingest serve: requests still open after shutdown_grace ({grace:?}); draining anyway"
            ),
        }
        let drained = tables.drain().await;
        let mut failed = 0;
        let mut names: Vec<_> = tables.by_name.values().collect();
        names.sort_by(|a, b| a.name.cmp(&b.name));
        for table in names {
            let (s, _) = table.totals();
            failed += s.failed_rows;
            eprintln!(
                "ch-ingest serve: {}: {} rows delivered, {} failed, {} spilled for replay, {} rejected lines",
                table.name, s.acked_rows, s.failed_rows, s.spill_pending_rows, s.encode_errors
            );
        }
        // Exit 0 means the drain delivered (or spilled) everything it held,
        // engines replaced by a schema change included. Every failed batch is
        // reported once: a replaced engine's failures go to the `/v1/flush`
        // answer that collects them first (502), else to this exit code;
        // all of them are logged and counted in `failed_rows` as they happen.
        if drained.failed_rows > 0 {
            return Err(format!(
                "{} rows could not be delivered while draining ({failed} failed in all)",
                drained.failed_rows
            )
            .into());
        }
        Ok(())
    })
}

/// SIGTERM and SIGINT, as one stream.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
