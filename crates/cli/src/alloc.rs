//! The process's memory: its allocator, how long freed memory is kept, and huge pages.

/// mimalloc instead of the system allocator: servers allocate from many threads at once
/// (client connections, replication, snapshots), where glibc's arenas contend.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_e`, mimalloc.h, v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed memory before returning it to the system, in milliseconds.
///
/// Its default, 10 ms, returns a commit log's freed batches only to fault them in again
/// (zeroed by the kernel) a moment later; 1 s reuses them (TPC-C 1x3: about 10% more txn/s).
const PURGE_DELAY_MS: std::ffi::c_long = 1000;

/// Sets the process's memory behaviour; `main` calls it first.
///
/// - Transparent huge pages off, for this process and the servers it starts (the setting is
///   inherited), as Redis and most databases advise. With them, every first touch of a fresh
///   2 MiB region zeroes all of it and every return of freed memory splits one: on a 2-core
///   VM that took 14–20% of the CPU of in-process clusters (`clear_page_erms`), cut TPC-C 1x3
///   throughput by about a quarter and more than doubled its release p99.
/// - mimalloc's purge delay at [`PURGE_DELAY_MS`], unless `MIMALLOC_PURGE_DELAY` is set.
pub fn tune() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes integers only; it sets a flag of this process.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if rc != 0 {
            tracing::warn!(
                "could not turn transparent huge pages off: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option of mimalloc, which reads it at each purge.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
}
