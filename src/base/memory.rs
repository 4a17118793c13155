//! The process allocator (mimalloc) with per-thread accounting: it counts, for the current thread, the
//! bytes allocated minus the bytes freed, so the script host can stop a hook that grows the
//! process by more than its budget (Rhai checks a value's size only after building it, and many
//! values within their limits still add up). The count costs one thread-local add per
//! allocation.

use std::alloc::{GlobalAlloc, Layout};

/// The allocator underneath: mimalloc. With glibc's, the long-lived records of sign-ins
/// interleaved with each request's short-lived buffers left the heap fragmented: a sign-in
/// waiting at its passcode step grew the process by about 5 KB for 1 KB of records; with
/// mimalloc (size-segregated pages), about 1 KB (`cargo bench --bench load`).
static UNDERLYING: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::cell::Cell;

thread_local! {
    static NET_BYTES: Cell<i64> = const { Cell::new(0) };
}

fn add(bytes: i64) {
    // `try_with`: allocations during thread teardown must not touch a destroyed thread-local.
    let _ = NET_BYTES.try_with(|net| net.set(net.get().wrapping_add(bytes)));
}

/// Bytes this thread has allocated and not freed since it started (frees of memory another
/// thread allocated make it drift; only differences over a short span are meaningful).
pub fn thread_net_bytes() -> i64 {
    NET_BYTES.try_with(Cell::get).unwrap_or(0)
}

/// The underlying allocator, counting per thread.
pub struct CountingAllocator;

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the underlying allocator.
        let pointer = unsafe { UNDERLYING.alloc(layout) };
        if !pointer.is_null() {
            add(layout.size() as i64);
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the underlying allocator.
        let pointer = unsafe { UNDERLYING.alloc_zeroed(layout) };
        if !pointer.is_null() {
            add(layout.size() as i64);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: `pointer` came from this allocator, which is the underlying allocator.
        unsafe { UNDERLYING.dealloc(pointer, layout) };
        add(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged to the underlying allocator.
        let moved = unsafe { UNDERLYING.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            add(new_size as i64 - layout.size() as i64);
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_this_thread_keeps() {
        let before = thread_net_bytes();
        let kept = vec![0u8; 1 << 20];
        assert!(thread_net_bytes() - before >= 1 << 20);
        drop(kept);
        assert!(thread_net_bytes() - before < 1 << 10);
    }
}
