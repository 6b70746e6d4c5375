//! Logging and metrics set-up shared by every oni process: `tracing` to stderr, and a
//! Prometheus `/metrics` endpoint with histogram buckets chosen per metric family.

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

const BUCKETS: &[(&str, &[f64])] = &[
    ("oni_policy_lag_versions", &[0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 50.0, 100.0]),
    ("oni_episode_return", &[-10.0, -1.0, 0.0, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 1000.0]),
    ("oni_episode_length", &[10.0, 25.0, 50.0, 100.0, 200.0, 400.0, 1000.0, 5000.0, 20000.0]),
    ("oni_llm_request_seconds", &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0]),
    ("oni_inference_batch_envs", &[1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0]),
    ("oni_inference_forward_seconds", &[1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0]),
    ("oni_inference_queue_wait_seconds", &[1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 1.0]),
];

/// Installs the global metrics recorder. With `listen` set, serves `/metrics` there (needs
/// a tokio runtime); either way returns a handle that renders the exposition text.
pub fn init_metrics(listen: Option<&str>) -> Result<PrometheusHandle, TelemetryError> {
    let mut b = PrometheusBuilder::new();
    for (name, buckets) in BUCKETS {
        b = b
            .set_buckets_for_metric(Matcher::Full((*name).to_string()), buckets)
            .map_err(|e| TelemetryError::Exporter(name.to_string(), e.to_string()))?;
    }
    let handle = match listen {
        Some(addr) => {
            let sock: SocketAddr = addr.parse().map_err(|_| TelemetryError::BadAddress(addr.into()))?;
            let (recorder, exporter) =
                b.with_http_listener(sock).build().map_err(|e| TelemetryError::Exporter(addr.into(), e.to_string()))?;
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).map_err(|e| TelemetryError::Exporter(addr.into(), e.to_string()))?;
            tokio_spawn(exporter);
            handle
        }
        None => {
            let recorder = b.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).map_err(|e| TelemetryError::Exporter("-".into(), e.to_string()))?;
            // Without the exporter nothing drains the histograms' sample buffers: they grew by
            // every recorded value (about 8 MB a minute in a keyroom run) until upkeep ran.
            spawn_process_metrics(Some(handle.clone()));
            return Ok(handle);
        }
    };
    spawn_process_metrics(None);
    Ok(handle)
}

fn tokio_spawn<F>(fut: F)
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(fut);
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
                    metrics::gauge!("oni_process_cpu_seconds_total").set((utime + stime) / ticks);
                    metrics::gauge!("oni_process_resident_memory_bytes").set(rss * page);
                }
            }
            if let Some(h) = &upkeep {
                h.run_upkeep();
            }
            std::thread::sleep(Duration::from_secs(5));
        }
    });
}
