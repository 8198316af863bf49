//! The bounded queue of writes between callers and the writer thread (backpressure).

use std::collections::VecDeque;

use parking_lot::{Condvar, Mutex};

use crate::writer::Job;

/// Why a job was not queued; the job is handed back.
pub(crate) enum Refused {
    /// The queue is at its bound (only for non-blocking pushes).
    Full(Box<Job>),
    /// The store was shut down.
    Closed(Box<Job>),
}

struct State {
    jobs: VecDeque<Job>,
    /// Sum of the queued jobs' weights.
    bytes: usize,
    closed: bool,
}

/// A FIFO of jobs bounded by count and by encoded bytes. A job is admitted when the queue
/// is empty (so one job larger than the byte bound still goes through) or when both bounds
/// leave room for it. The writer takes whole batches, which frees room at once (before any
/// I/O of that batch).
pub(crate) struct JobQueue {
    state: Mutex<State>,
    /// Signalled when a job arrives or the queue closes.
    not_empty: Condvar,
    /// Signalled when the writer took jobs or the queue closes.
    not_full: Condvar,
    max_jobs: usize,
    max_bytes: usize,
}

/// What a job counts against the byte bound.
fn weight(job: &Job) -> usize {
    job.size.max(1)
}

impl JobQueue {
    /// An empty queue with the given bounds (each at least 1).
    pub fn new(max_jobs: usize, max_bytes: usize) -> Self {
        JobQueue {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                bytes: 0,
                closed: false,
            }),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            max_jobs: max_jobs.max(1),
            max_bytes: max_bytes.max(1),
        }
    }

    fn has_room(&self, s: &State, w: usize) -> bool {
        s.jobs.is_empty()
            || (s.jobs.len() < self.max_jobs && s.bytes.saturating_add(w) <= self.max_bytes)
    }

    /// Queues `job`. With `block`, waits while the queue is full; without, hands it back
    /// as `Full`. With `force`, ignores the bounds (used on the writer thread, which must
    /// never wait for itself).
    pub fn push(&self, job: Job, block: bool, force: bool) -> Result<(), Refused> {
        let w = weight(&job);
        let mut s = self.state.lock();
        loop {
            if s.closed {
                return Err(Refused::Closed(Box::new(job)));
            }
            if force || self.has_room(&s, w) {
                break;
            }
            if !block {
                return Err(Refused::Full(Box::new(job)));
            }
            self.not_full.wait(&mut s);
        }
        s.bytes += w;
        s.jobs.push_back(job);
        drop(s);
        self.not_empty.notify_one();
        Ok(())
    }

    /// Waits for at least one job and moves queued jobs into `out` until their encoded
    /// bytes reach `max_batch`. Returns false once the queue is closed and empty.
    pub fn pop_batch(&self, out: &mut Vec<Job>, max_batch: usize) -> bool {
        let mut s = self.state.lock();
        while s.jobs.is_empty() {
            if s.closed {
                return false;
            }
            self.not_empty.wait(&mut s);
        }
        let mut bytes = 0usize;
        while bytes < max_batch {
            let Some(j) = s.jobs.pop_front() else {
                break;
            };
            s.bytes -= weight(&j);
            bytes += j.bytes.len();
            out.push(j);
        }
        drop(s);
        self.not_full.notify_all();
        true
    }

    /// Whether [`JobQueue::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Refuses further pushes (waiting pushers get `Closed`); queued jobs stay to be drained.
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }
}
