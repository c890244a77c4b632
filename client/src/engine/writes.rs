//! `sync` writes its .pyc files on threads of their own: creating a file and renaming it into
//! place is most of a warm run's work, and it is the kernel's work, which one thread cannot
//! spread over the cores. The emit stage hands each write over and goes on; each file is
//! settled (counted, or its error reported) in the plan's order once its writes are done.
//! compileall mode writes in line, as py_compile does, so its lines and their order stay
//! compileall's own.

use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use pycache_proto::{Entry, Outcome};

use crate::pyc::{self, WriteError};

/// Writes handed over and not yet settled, at most: a bound on the entries held for them.
pub const IN_FLIGHT: usize = 256;

/// One .pyc to write.
struct Job {
    id: u64,
    cfile: OsString,
    mode: u32,
    header: [u8; 16],
    entry: Arc<Entry>,
}

/// A file whose writes are out, in plan order.
pub struct Pending<T> {
    /// What the caller settles it with.
    pub file: T,
    /// Its writes' ids.
    ids: Vec<u64>,
}

/// A file whose writes are done.
pub struct Settled<T> {
    /// What the caller handed over with it.
    pub file: T,
    /// Its .pyc files, in level order.
    pub written: usize,
    /// The first write that failed.
    pub error: Option<WriteError>,
}

/// The writer threads' side of the emit stage.
pub struct Writes<T> {
    jobs: Sender<Job>,
    done: Receiver<(u64, Result<(), WriteError>)>,
    finished: HashMap<u64, Result<(), WriteError>>,
    pending: VecDeque<Pending<T>>,
    next_id: u64,
    out: usize,
}

/// Writer threads for a scope: `threads` of them (none when fewer than 2: then the caller
/// writes in line).
pub fn start<'scope, T>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    threads: usize,
) -> Option<Writes<T>> {
    if threads < 2 {
        return None;
    }
    let (jobs, queue) = crossbeam_channel::bounded::<Job>(IN_FLIGHT);
    let (report, done) = crossbeam_channel::unbounded();
    for _ in 0..threads {
        let (queue, report) = (queue.clone(), report.clone());
        scope.spawn(move || {
            for job in queue {
                let written = match &job.entry.outcome {
                    Outcome::Compiled { body } => {
                        pyc::write_pyc(&job.cfile, Some(job.mode), &job.header, body)
                    }
                    Outcome::Failed { .. } => Err(WriteError {
                        class_name: "RuntimeError",
                        text: "a failed compile has no .pyc to write".to_owned(),
                    }),
                };
                if report.send((job.id, written)).is_err() {
                    return;
                }
            }
        });
    }
    Some(Writes {
        jobs,
        done,
        finished: HashMap::new(),
        pending: VecDeque::new(),
        next_id: 0,
        out: 0,
    })
}

impl<T> Writes<T> {
    /// Hands one .pyc over (`entry` must be a compiled one); returns its id for
    /// [`Writes::file_done`].
    pub fn write(&mut self, cfile: &OsStr, mode: u32, header: [u8; 16], entry: Arc<Entry>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let job = Job {
            id,
            cfile: cfile.to_os_string(),
            mode,
            header,
            entry,
        };
        self.out += 1;
        // The writer threads end only when this is dropped.
        let _ = self.jobs.send(job);
        id
    }

    /// Queues `file`, whose writes are `ids`, to be settled in turn.
    pub fn file_done(&mut self, file: T, ids: Vec<u64>) {
        self.pending.push_back(Pending { file, ids });
    }

    /// Files settled so far, in order; waits until at most `keep` writes are still out.
    pub fn settle(&mut self, keep: usize) -> Vec<Settled<T>> {
        let mut settled = Vec::new();
        loop {
            while let Ok((id, result)) = self.done.try_recv() {
                self.finished.insert(id, result);
            }
            while let Some(front) = self.pending.front() {
                if !front.ids.iter().all(|id| self.finished.contains_key(id)) {
                    break;
                }
                let front = self.pending.pop_front().expect("a front");
                let mut error = None;
                let mut written = 0;
                for id in &front.ids {
                    match self.finished.remove(id).expect("finished") {
                        Ok(()) => written += 1,
                        Err(e) => {
                            error.get_or_insert(e);
                        }
                    }
                    self.out -= 1;
                }
                settled.push(Settled {
                    file: front.file,
                    written,
                    error,
                });
            }
            if self.out <= keep || self.pending.is_empty() {
                return settled;
            }
            match self.done.recv() {
                Ok((id, result)) => {
                    self.finished.insert(id, result);
                }
                Err(_) => return settled,
            }
        }
    }
}
