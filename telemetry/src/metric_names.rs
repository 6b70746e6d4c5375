//! The metric families this crate records, with the HELP text that `/metrics` shows.

/// CPU seconds this process used.
pub const PROCESS_CPU_SECONDS: &str = "oni_process_cpu_seconds_total";
/// Resident memory of this process.
pub const PROCESS_RESIDENT_MEMORY: &str = "oni_process_resident_memory_bytes";

pub fn describe() {
    metrics::describe_gauge!(PROCESS_CPU_SECONDS, "CPU seconds this process used.");
    metrics::describe_gauge!(PROCESS_RESIDENT_MEMORY, "Resident memory of this process.");
}
