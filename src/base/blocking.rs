//! Marks the calls that wait on the outside world (a network peer, a disk flush, a slow hash).
//! Request handlers run in place on the async workers when the state store and directory are
//! in-process; such a call then hands the worker's other tasks to another thread for its
//! duration (`block_in_place`), instead of every request paying a hop to the blocking pool.

/// Runs `work`, which may block for a while. On a worker of the multi-threaded runtime the
/// worker's other tasks move elsewhere meanwhile; anywhere else it simply runs.
pub fn may_block<R>(work: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}
