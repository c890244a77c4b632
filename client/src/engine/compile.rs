//! Stage 3: hand what is still missing to the compile workers.
//!
//! The pool sits behind [`Compiler`], so the run's ordering logic is tested with a fake.

use super::resolve::Resolution;
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

/// Submits every miss whose job has not been handed on (and that the server did not have).
pub fn submit_remaining(resolution: &mut Resolution, compiler: &dyn Compiler) {
    for miss in &mut resolution.misses {
        if let Some(job) = miss.job.take() {
            compiler.submit(job);
        }
    }
}
