//! What the kernels need from a thread pool: a parallel-for callback, a shared output pointer, and the pool's
//! thread count as a hint for task sizes (results never depend on it).

use std::sync::atomic::{AtomicUsize, Ordering};

/// Raw output pointer shared by parallel tasks that each write their own part of the output.
pub struct OutPtr<T = f32>(pub *mut T);

impl<T> Clone for OutPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for OutPtr<T> {}
// SAFETY: an OutPtr is only dereferenced by tasks that write disjoint parts of one live buffer, which outlives the
// parallel-for call that hands the pointer to them (every user documents which part each task writes).
unsafe impl<T: Send> Send for OutPtr<T> {}
// SAFETY: as above: shared references only copy the pointer; the writes through it never overlap.
unsafe impl<T: Send> Sync for OutPtr<T> {}

impl<T> OutPtr<T> {
    /// The pointer (a method, so that closures capture the Sync wrapper rather than its raw field).
    pub fn get(self) -> *mut T {
        self.0
    }
}

/// Runs `f(i)` for `i in 0..total`, possibly in parallel.
pub type ParFor<'p> = &'p dyn Fn(usize, &(dyn Fn(usize) + Sync));

/// Sequential `ParFor`.
pub fn sequential(total: usize, f: &(dyn Fn(usize) + Sync)) {
    (0..total).for_each(f)
}

static POOL_THREADS: AtomicUsize = AtomicUsize::new(2);

/// Threads that run the `ParFor` tasks (a hint for task sizes; results do not depend on it).
pub fn set_pool_threads(n: usize) {
    POOL_THREADS.store(n.max(1), Ordering::Relaxed);
}

pub(crate) fn pool_threads() -> usize {
    POOL_THREADS.load(Ordering::Relaxed)
}
