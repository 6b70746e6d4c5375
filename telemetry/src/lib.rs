//! Logging and metrics set-up shared by every oni process: `tracing` to stderr, and a
//! Prometheus `/metrics` endpoint with histogram buckets chosen per metric family.

pub mod metric_names;
pub mod tensorboard;

mod endpoint;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Renders the process's metrics as Prometheus text.
pub type Metrics = PrometheusHandle;

/// The value of the sample whose series (name and labels, as rendered) is exactly `series`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid metrics address `{0}`")]
    BadAddress(String),
    #[error("cannot start the metrics endpoint on {0}: {1}")]
    Exporter(String, String),
}

/// Logs to stderr; `RUST_LOG` overrides `default_level`.
pub fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}

/// Histogram buckets of one metric family.
pub type Buckets<'a> = (&'a str, &'a [f64]);

/// Installs the global metrics recorder, with `buckets` for the histograms named there. With
/// `listen` set, serves `/metrics` there (needs a tokio runtime); either way returns a
/// handle that renders the exposition text.
pub fn init_metrics(listen: Option<&str>, buckets: &[Buckets<'_>]) -> Result<PrometheusHandle, TelemetryError> {
    let mut b = PrometheusBuilder::new();
    for (name, buckets) in buckets {
        b = b
            .set_buckets_for_metric(Matcher::Full((*name).to_string()), buckets)
            .map_err(|e| TelemetryError::Exporter(name.to_string(), e.to_string()))?;
    }
    let recorder = b.build_recorder();
    let handle = recorder.handle();
    if let Some(addr) = listen {
        let sock: SocketAddr = addr.parse().map_err(|_| TelemetryError::BadAddress(addr.into()))?;
        let std_listener = std::net::TcpListener::bind(sock)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| TelemetryError::Exporter(addr.into(), e.to_string()))?;
        let listener = tokio::net::TcpListener::from_std(std_listener)
            .map_err(|e| TelemetryError::Exporter(addr.into(), e.to_string()))?;
        endpoint::spawn(listener, handle.clone());
    }
    metrics::set_global_recorder(recorder).map_err(|e| TelemetryError::Exporter("-".into(), e.to_string()))?;
    // Nothing else drains the histograms' sample buffers: they grew by every recorded value
    // (about 8 MB a minute in a keyroom run) until upkeep ran.
    spawn_process_metrics(Some(handle.clone()));
    Ok(handle)
}

/// Resident memory and CPU time of this process from /proc, every 5 s; and the recorder's
/// upkeep when no exporter task runs it.
fn spawn_process_metrics(upkeep: Option<PrometheusHandle>) {
    let _ = std::thread::Builder::new().name("process-metrics".into()).spawn(move || {
        let ticks = 100.0; // USER_HZ on Linux
        let page = 4096.0;
        loop {
            if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
                // fields after the parenthesised command name
                if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    let utime = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
                    let stime = f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
                    let rss = f.get(21).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
                    metrics::gauge!(crate::metric_names::PROCESS_CPU_SECONDS).set((utime + stime) / ticks);
                    metrics::gauge!(crate::metric_names::PROCESS_RESIDENT_MEMORY).set(rss * page);
                }
            }
            if let Some(h) = &upkeep {
                h.run_upkeep();
            }
            std::thread::sleep(Duration::from_secs(5));
        }
    });
}
