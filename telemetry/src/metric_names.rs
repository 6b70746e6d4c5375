//! The metric families this crate records, with the HELP text that `/metrics` shows.

/// CPU seconds this process used.
pub const PROCESS_CPU_SECONDS: &str = "oni_process_cpu_seconds_total";
/// Resident memory of this process.
pub const PROCESS_RESIDENT_MEMORY: &str = "oni_process_resident_memory_bytes";

/// Bytes in live allocations (the allocator's count; what grows when memory leaks).
pub const HEAP_ALLOCATED: &str = "oni_process_heap_allocated_bytes";
/// Bytes the allocator keeps resident: live allocations plus freed pages kept for reuse.
pub const HEAP_RESIDENT: &str = "oni_process_heap_resident_bytes";
/// Times the allocator's free pages were handed back to the kernel.
pub const HEAP_PURGES: &str = "oni_process_heap_purges_total";

pub fn describe() {
    metrics::describe_gauge!(PROCESS_CPU_SECONDS, "CPU seconds this process used.");
    metrics::describe_gauge!(PROCESS_RESIDENT_MEMORY, "Resident memory of this process.");
    metrics::describe_gauge!(
        HEAP_ALLOCATED,
        "Bytes in live heap allocations (jemalloc's count; grows when memory leaks)."
    );
    metrics::describe_gauge!(
        HEAP_RESIDENT,
        "Bytes the heap allocator keeps resident: live allocations plus freed pages kept for reuse."
    );
    metrics::describe_counter!(HEAP_PURGES, "Times the heap allocator's free pages were handed back to the kernel.");
}
