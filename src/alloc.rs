//! The global allocator (mimalloc) and how `piste serve` keeps it from holding memory it no
//! longer uses.
//!
//! # Decisions
//!
//! - mimalloc for every command: loading a pipeline allocates many small strings and maps, and
//!   mimalloc makes `piste lint` of a 1,000-job file ~15% faster than the system allocator (see
//!   `make bench`). Built without its transparent-huge-page advice (Cargo.toml): half the
//!   resident memory of a `piste run`.
//! - `piste serve` after a burst. A server handed hundreds of webhooks at once holds every
//!   pipeline being planned, queued and run at the same time (`cargo bench --bench serve -- rss`:
//!   ~20 MiB of heap at the peak, under 2 MiB once they finished). mimalloc keeps what was freed in
//!   each thread's pages: two emptied pages per size class kept for reuse (`page_full_retain`),
//!   emptied pages returned to the OS only a second later (`purge_delay`), and blocks freed by
//!   another thread only noticed when the owning thread next allocates. Measured with the bench
//!   (`README.md`, "server memory"), that retention was most of the growth between 100 and 1,000
//!   finished pipelines. So [`tune_for_serving`] keeps no emptied page and returns it at once,
//!   and [`collect_when_parked`], called by a runtime worker that has run out of work, collects
//!   that thread's heap (at most every [`COLLECT_EVERY`]): a server that goes idle gives back
//!   what its last burst used. A worker that never parks is busy, and keeps its pages for the
//!   next task. The option numbers are those of mimalloc v3's `mi_option_e`, which the
//!   `libmimalloc-sys` bindings do not name: that crate is pinned (Cargo.toml) so that they
//!   cannot move under us.

use std::cell::Cell;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3 (`include/mimalloc.h`): milliseconds before freed
/// memory goes back to the OS (default 1,000).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// `mi_option_page_full_retain` in mimalloc v3: emptied pages kept per size class and thread
/// (default 2).
const MI_OPTION_PAGE_FULL_RETAIN: libmimalloc_sys::mi_option_t = 36;

/// The least time between two collections of one worker's heap.
pub const COLLECT_EVERY: Duration = Duration::from_millis(100);

/// Options for a long-running server: return freed pages to the OS at once, retain none.
pub fn tune_for_serving() {
    // SAFETY: plain setters of mimalloc's global options, valid at any time.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        libmimalloc_sys::mi_option_set(MI_OPTION_PAGE_FULL_RETAIN, 0);
    }
}

/// For `tokio::runtime::Builder::on_thread_park`: collects this thread's heap (blocks other
/// threads freed, emptied pages) and purges what the arenas hold, at most every
/// [`COLLECT_EVERY`] per thread.
pub fn collect_when_parked() {
    thread_local!(static LAST: Cell<Option<Instant>> = const { Cell::new(None) });
    if LAST.with(|last| due(last, Instant::now())) {
        // SAFETY: collects the calling thread's own heap; no pointer is passed.
        unsafe { libmimalloc_sys::mi_collect(true) };
    }
}

/// Whether a collection is due at `now`, the last one being at `last` (updated when due).
fn due(last: &Cell<Option<Instant>>, now: Instant) -> bool {
    let due = last.get().is_none_or(|t| now.saturating_duration_since(t) >= COLLECT_EVERY);
    if due {
        last.set(Some(now));
    }
    due
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_options_are_mimalloc_v3_purge_delay_and_page_full_retain() {
        // SAFETY: plain getters and setters of global options.
        let get = |o| unsafe { libmimalloc_sys::mi_option_get(o) };
        // Their v3 defaults first (1,000 ms, 2 pages): the numbers name these options, not
        // neighbours of theirs.
        assert_eq!((get(MI_OPTION_PURGE_DELAY), get(MI_OPTION_PAGE_FULL_RETAIN)), (1000, 2));
        tune_for_serving();
        assert_eq!((get(MI_OPTION_PURGE_DELAY), get(MI_OPTION_PAGE_FULL_RETAIN)), (0, 0));
        collect_when_parked();
    }

    #[test]
    fn a_worker_collects_at_most_once_per_interval() {
        let last = Cell::new(None);
        let t0 = Instant::now();
        assert!(due(&last, t0), "the first park collects");
        assert!(!due(&last, t0 + COLLECT_EVERY / 2), "not again within the interval");
        assert!(due(&last, t0 + COLLECT_EVERY), "again once it has passed");
        assert!(!due(&last, t0), "a clock read before the last one is within the interval");
    }
}
