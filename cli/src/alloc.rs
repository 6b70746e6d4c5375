//! The process's allocator: jemalloc, with one change. jemalloc hands out zeroed memory from
//! a reused block by `madvise(MADV_DONTNEED)` on it (`pages_purge_forced`), so the kernel
//! zeroes it, one page fault per page, on first touch. The learner asks for zeroed buffers of
//! up to tens of MB on every update (gradients, convolution outputs): measured, ~100 such
//! madvise calls an update and 10–20 % of the update in page faults and TLB shootdowns.
//! Zeroing with `memset` instead keeps the pages resident.

use std::alloc::{GlobalAlloc, Layout};

pub struct Allocator;

unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        tikv_jemallocator::Jemalloc.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = tikv_jemallocator::Jemalloc.alloc(layout);
        if !p.is_null() {
            std::ptr::write_bytes(p, 0, layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        tikv_jemallocator::Jemalloc.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        tikv_jemallocator::Jemalloc.realloc(ptr, layout, new_size)
    }
}
