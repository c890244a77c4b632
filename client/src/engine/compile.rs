//! Stage 3: the compile workers, which take each miss as stage 1 or the server lookup finds it.
//!
//! The pool sits behind [`Compiler`], so the run's ordering logic is tested with a fake.

use crate::workers::{CompileJob, CompileOutcome};

/// What the engine needs from a pool of compile workers.
pub trait Compiler: Sync {
    /// Queues a job without blocking.
    fn submit(&self, job: CompileJob);
    /// The next finished job, in completion order; `None` when the workers are gone.
    fn next_result(&self) -> Option<(u64, CompileOutcome)>;
    /// Worker processes started so far.
    fn workers_started(&self) -> usize;
}
