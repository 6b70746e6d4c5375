//! The allocator's own account of memory, and the bound on what it keeps.
//!
//! jemalloc here keeps the pages it frees for reuse instead of handing them back to the
//! kernel (see the allocator settings in main.rs: the learner's update reuses hundreds of MB
//! each time, and returning them cost a third of the update in page faults). Kept pages are
//! per arena, and which arena reaches its peak when depends on timing: a run that other work
//! starved grew from 90 to 135 MiB resident in steps while its live allocations stayed flat.
//! So once a minute, when most of what the allocator holds is free, it is handed back: one
//! update a minute pays the page faults, and resident memory follows what the process uses.

use std::time::{Duration, Instant};
use tikv_jemalloc_ctl::{epoch, stats};

/// How often the kept pages may be handed back.
const PURGE_EVERY: Duration = Duration::from_secs(60);
/// Kept-but-free memory below this is left alone.
const PURGE_MIN_FREE: u64 = 8 << 20;

/// Live and resident bytes, read from jemalloc's statistics (refreshed first).
pub fn read() -> Option<(u64, u64)> {
    epoch::advance().ok()?;
    Some((stats::allocated::read().ok()? as u64, stats::resident::read().ok()? as u64))
}

/// Whether to hand back the free pages: more than half of what is resident, and more than
/// `PURGE_MIN_FREE`.
fn worth_purging(live: u64, resident: u64) -> bool {
    let free = resident.saturating_sub(live);
    free > PURGE_MIN_FREE && free * 2 > resident
}

/// Returns every arena's free pages to the kernel.
fn purge() -> bool {
    // "arena.<MALLCTL_ARENAS_ALL>.purge" takes and gives nothing
    const ALL_ARENAS_PURGE: &[u8] = b"arena.4096.purge\0";
    let name = ALL_ARENAS_PURGE.as_ptr().cast();
    // SAFETY: a NUL-terminated control name, and no input or output buffers, as this control
    // requires.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(name, std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut(), 0)
    };
    rc == 0
}

/// Sets the heap gauges every 5 s, and hands free pages back at most once a minute.
pub fn spawn_upkeep() {
    use oni_telemetry::metric_names::{HEAP_ALLOCATED, HEAP_PURGES, HEAP_RESIDENT};
    let _ = std::thread::Builder::new().name("heap-upkeep".into()).spawn(|| {
        let mut last_purge = Instant::now();
        loop {
            if let Some((live, resident)) = read() {
                metrics::gauge!(HEAP_ALLOCATED).set(live as f64);
                metrics::gauge!(HEAP_RESIDENT).set(resident as f64);
                if last_purge.elapsed() >= PURGE_EVERY && worth_purging(live, resident) {
                    last_purge = Instant::now();
                    if purge() {
                        metrics::counter!(HEAP_PURGES).increment(1);
                        tracing::debug!(
                            live_mib = live >> 20,
                            resident_mib = resident >> 20,
                            "free heap pages returned"
                        );
                    }
                }
            }
            std::thread::sleep(Duration::from_secs(5));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_mostly_free_heap_is_purged() {
        assert!(!worth_purging(100 << 20, 150 << 20), "a third free");
        assert!(worth_purging(30 << 20, 110 << 20), "the soak's 28 MiB live of 110");
        assert!(!worth_purging(1 << 20, 8 << 20), "small: left alone");
    }

    /// Freed memory the allocator kept is handed back: resident bytes fall.
    #[test]
    fn purging_returns_kept_pages() {
        let blocks: Vec<Vec<u8>> = (0..64).map(|_| vec![1u8; 1 << 20]).collect();
        drop(blocks);
        let (_, before) = read().unwrap();
        assert!(purge());
        let (_, after) = read().unwrap();
        assert!(after + (32 << 20) < before, "resident {before} → {after}");
    }
}
