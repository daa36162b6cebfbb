//! The task state machine, apart from the kernel objects, so that the races
//! between wakers (completion routines and timer DPCs at `DISPATCH_LEVEL`),
//! the worker that polls, and an abort are model-checked with loom
//! (`RUSTFLAGS="--cfg loom" cargo test --release --lib executor`).
//!
//! ```text
//! Idle --wake--> Queued --worker--> Running --Pending--> Idle
//!                  ^                  |  \--wake--> RunningWoken --Pending--> Queued
//!                  +------------------+--Ready, or cancelled--> Done
//! ```
//!
//! A task is in the run queue exactly when it is `Queued`, so it is queued
//! at most once, and polled by one worker at a time. An abort marks it
//! cancelled and queues it: the worker then drops the future instead of
//! polling it. Every transition happens under the task's lock.

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Waiting for a wake.
    Idle,
    /// In the run queue.
    Queued,
    /// Being polled by a worker.
    Running,
    /// Being polled, and woken meanwhile: polled again afterwards.
    RunningWoken,
    /// Finished or dropped: never polled again.
    Done,
}

/// What a worker does with a task it took off the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Poll the future.
    Poll,
    /// Drop the future: the task was aborted.
    Cancel,
}

/// A task's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    schedule: Schedule,
    cancelled: bool,
}

impl State {
    /// A new task, queued for its first poll.
    pub const fn queued() -> Self {
        Self {
            schedule: Schedule::Queued,
            cancelled: false,
        }
    }

    /// Where it is.
    pub const fn schedule(self) -> Schedule {
        self.schedule
    }

    /// A waker fired. Returns whether the caller must put the task on the
    /// run queue.
    pub const fn wake(&mut self) -> bool {
        match self.schedule {
            Schedule::Idle => {
                self.schedule = Schedule::Queued;
                true
            }
            Schedule::Running => {
                self.schedule = Schedule::RunningWoken;
                false
            }
            Schedule::Queued | Schedule::RunningWoken | Schedule::Done => false,
        }
    }

    /// An abort. Returns whether the caller must put the task on the run
    /// queue (where a worker drops the future).
    pub const fn cancel(&mut self) -> bool {
        if matches!(self.schedule, Schedule::Done) {
            return false;
        }
        self.cancelled = true;
        self.wake()
    }

    /// A worker took the task off the queue.
    ///
    /// # Panics
    /// If the task was not queued.
    pub fn start(&mut self) -> Start {
        assert_eq!(self.schedule, Schedule::Queued, "only queued tasks run");
        self.schedule = Schedule::Running;
        if self.cancelled {
            Start::Cancel
        } else {
            Start::Poll
        }
    }

    /// The poll returned `Pending`. Returns whether the task goes back on
    /// the run queue (it was woken, or aborted, while it ran).
    ///
    /// # Panics
    /// If the task was not running.
    pub fn pending(&mut self) -> bool {
        match self.schedule {
            Schedule::Running => {
                self.schedule = Schedule::Idle;
                false
            }
            Schedule::RunningWoken => {
                self.schedule = Schedule::Queued;
                true
            }
            other => panic!("a poll ended in state {other:?}"),
        }
    }

    /// The future finished, or was dropped.
    pub const fn finish(&mut self) {
        self.schedule = Schedule::Done;
    }
}

#[cfg(all(test, loom))]
mod model {
    //! A task woken by two completion routines while a worker polls it and
    //! a join handle aborts it.

    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::sync::{Arc, Mutex};
    use loom::thread;

    use super::{Schedule, Start, State};

    struct Task {
        state: Mutex<State>,
        /// Queue entries (the run queue, as a count).
        queued: AtomicUsize,
        /// Workers inside `poll` at once.
        polling: AtomicUsize,
        polls: AtomicUsize,
        drops: AtomicUsize,
    }

    impl Task {
        fn wake(&self) {
            if self.state.lock().unwrap().wake() {
                assert_eq!(
                    self.queued.fetch_add(1, Ordering::SeqCst),
                    0,
                    "queued twice"
                );
            }
        }

        fn abort(&self) {
            if self.state.lock().unwrap().cancel() {
                assert_eq!(
                    self.queued.fetch_add(1, Ordering::SeqCst),
                    0,
                    "queued twice"
                );
            }
        }

        /// One worker pass: takes the task if queued, polls it once (the
        /// future is pending until polled twice), or drops it if aborted.
        fn work(&self) -> bool {
            if self
                .queued
                .compare_exchange(1, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                return false;
            }
            let start = self.state.lock().unwrap().start();
            assert_eq!(
                self.polling.fetch_add(1, Ordering::SeqCst),
                0,
                "polled concurrently"
            );
            let ready = match start {
                Start::Poll => self.polls.fetch_add(1, Ordering::SeqCst) + 1 >= 2,
                Start::Cancel => {
                    self.drops.fetch_add(1, Ordering::SeqCst);
                    true
                }
            };
            self.polling.fetch_sub(1, Ordering::SeqCst);
            let mut state = self.state.lock().unwrap();
            if ready {
                state.finish();
            } else if state.pending() {
                assert_eq!(
                    self.queued.fetch_add(1, Ordering::SeqCst),
                    0,
                    "queued twice"
                );
            }
            true
        }
    }

    #[test]
    fn wakes_polls_and_an_abort_never_overlap_or_lose_the_task() {
        loom::model(|| {
            let task = Arc::new(Task {
                state: Mutex::new(State::queued()),
                queued: AtomicUsize::new(1),
                polling: AtomicUsize::new(0),
                polls: AtomicUsize::new(0),
                drops: AtomicUsize::new(0),
            });
            let waker = {
                let task = task.clone();
                thread::spawn(move || task.wake())
            };
            let aborter = {
                let task = task.clone();
                thread::spawn(move || task.abort())
            };
            // The first poll races the wake and the abort; then the worker
            // runs whatever is queued.
            assert!(task.work(), "a new task is queued");
            waker.join().unwrap();
            aborter.join().unwrap();
            while task.work() {}
            assert_eq!(
                task.state.lock().unwrap().schedule(),
                Schedule::Done,
                "the task was lost: neither queued nor done"
            );
            assert_eq!(
                task.queued.load(Ordering::SeqCst),
                0,
                "done tasks are not queued"
            );
            assert!(
                task.drops.load(Ordering::SeqCst) <= 1,
                "dropped once at most"
            );
            let finished = task.polls.load(Ordering::SeqCst) >= 2;
            let dropped = task.drops.load(Ordering::SeqCst) == 1;
            assert!(finished ^ dropped, "either it finished or it was dropped");
        });
    }
}
