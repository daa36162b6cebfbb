//! The operation lifecycle as a protocol of its own: the state enum, the
//! reference count and every transition, apart from the kernel objects, so
//! that the completion-vs-cancel-vs-drop race is model-checked with loom
//! (`RUSTFLAGS="--cfg loom" cargo test --release --lib lifecycle`).
//!
//! ```text
//! Idle --submit--> InFlight --complete--> Completed
//!                     |  \--reclaim (a call that returned without completing)--> Completed
//!                     +--abandon (owner dropped)--> Abandoned --complete--> (last release frees)
//! ```
//!
//! Besides the owner and the completion routine, deregistration's sweep may
//! hold a reference for a moment ([`Protocol::retain`]) while it cancels an
//! IRP the driver forgot.

#[cfg(not(loom))]
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
#[cfg(loom)]
use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

/// Where an operation is in its life.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Lifecycle {
    /// Built, not submitted: only the owner touches it.
    Idle = 0,
    /// Submitted; the completion routine has not run.
    InFlight = 1,
    /// The completion routine ran (or the submitter reclaimed a call that
    /// returned without completing): the result is ready.
    Completed = 2,
    /// The owner went away while the IRP was in flight.
    Abandoned = 3,
}

impl Lifecycle {
    const fn from_raw(raw: u8) -> Self {
        match raw {
            0 => Self::Idle,
            1 => Self::InFlight,
            2 => Self::Completed,
            _ => Self::Abandoned,
        }
    }
}

/// What the completion routine found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Completion {
    /// The owner is there: signal it.
    Owned,
    /// The owner left: nobody to signal.
    Orphaned,
    /// The submitter already reclaimed this completion (a provider that
    /// returned without completing, then completed anyway): the result
    /// stands; the routine only gives back its quarantined reference.
    Stale,
}

/// The shared part of an operation block.
///
/// # Invariants
/// `refs` counts the owner, the completion routine from `submit` until it
/// runs (a reclaimed call keeps the routine's reference: the block stays
/// quarantined until a late completion, if any, gives it back), and any
/// sweep that retained the block. The party whose `release` returns `Some`
/// frees the block.
pub struct Protocol {
    refs: AtomicUsize,
    state: AtomicU8,
    consumed: AtomicBool,
}

impl Protocol {
    /// An idle operation owned by its creator.
    #[allow(
        clippy::missing_const_for_fn,
        reason = "loom's atomics have no const constructor"
    )]
    pub fn new() -> Self {
        Self {
            refs: AtomicUsize::new(1),
            state: AtomicU8::new(Lifecycle::Idle as u8),
            consumed: AtomicBool::new(false),
        }
    }

    /// The current state.
    pub fn state(&self) -> Lifecycle {
        Lifecycle::from_raw(self.state.load(Ordering::Acquire))
    }

    /// The one place the state changes: `from` -> `to`, or the state found.
    fn transition(&self, from: Lifecycle, to: Lifecycle) -> Result<(), Lifecycle> {
        self.state
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .map(drop)
            .map_err(Lifecycle::from_raw)
    }

    /// Idle -> in flight; the completion routine gets its reference.
    ///
    /// # Panics
    /// If submitted twice.
    pub fn submit(&self) {
        self.refs.fetch_add(1, Ordering::Relaxed);
        assert_eq!(
            self.transition(Lifecycle::Idle, Lifecycle::InFlight),
            Ok(()),
            "an operation is submitted once"
        );
    }

    /// The submitter takes the completion's part after a call that returned
    /// anything but `STATUS_PENDING`, unless the routine already ran.
    /// Returns whether it did (the caller then publishes the result).
    ///
    /// The routine's reference is *not* dropped: a provider that broke the
    /// rule once may still complete the IRP later, so the block stays
    /// allocated (quarantined) until it does.
    pub fn reclaim(&self) -> bool {
        self.transition(Lifecycle::InFlight, Lifecycle::Completed)
            .is_ok()
    }

    /// Another party (deregistration's sweep) takes a reference, unless
    /// the count already reached zero (the block is being freed). Returns
    /// whether it took one.
    pub fn retain(&self) -> bool {
        self.refs
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |count| {
                (count != 0).then_some(count + 1)
            })
            .is_ok()
    }

    /// The completion routine's transition.
    pub fn complete(&self) -> Completion {
        match self.transition(Lifecycle::InFlight, Lifecycle::Completed) {
            Ok(()) => Completion::Owned,
            Err(Lifecycle::Abandoned) => Completion::Orphaned,
            Err(_) => Completion::Stale,
        }
    }

    /// The owner leaves while in flight; returns whether it was in flight
    /// (if not, it had completed and the owner handles the result).
    pub fn abandon(&self) -> bool {
        self.transition(Lifecycle::InFlight, Lifecycle::Abandoned)
            .is_ok()
    }

    /// Completed -> idle again, for another submission of the same block,
    /// if the owner is the only party left: the completion routine has
    /// given its reference back (so it touches the block no more), and no
    /// sweep holds one. A block is never listed for a sweep once completed,
    /// so no new reference can appear. Returns whether it recycled.
    pub fn recycle(&self) -> bool {
        // Acquire: the routine's writes before its release are visible.
        if self.refs.load(Ordering::Acquire) != 1 {
            return false;
        }
        if self
            .transition(Lifecycle::Completed, Lifecycle::Idle)
            .is_err()
        {
            return false;
        }
        self.consumed.store(false, Ordering::Relaxed);
        true
    }

    /// A block whose last reference was released made idle again, with one
    /// new owner: for a block that outlives its operations (one embedded in
    /// a socket block). Only with the block to itself: the count is zero,
    /// and a completed block is never listed, so no sweep can retain it.
    pub fn revive(&self) {
        debug_assert_eq!(
            self.refs.load(Ordering::Relaxed),
            0,
            "revived while referenced"
        );
        self.refs.store(1, Ordering::Relaxed);
        self.state.store(Lifecycle::Idle as u8, Ordering::Relaxed);
        self.consumed.store(false, Ordering::Relaxed);
    }

    /// The result was taken: no clean-up of it is due.
    pub fn consume(&self) {
        self.consumed.store(true, Ordering::Relaxed);
    }

    /// Drops one reference. For the last one, returns whether a completed
    /// result was never consumed (its clean-up is due); the caller frees.
    pub fn release(&self) -> Option<bool> {
        if self.refs.fetch_sub(1, Ordering::AcqRel) != 1 {
            return None;
        }
        let completed = matches!(self.state(), Lifecycle::Completed | Lifecycle::Abandoned);
        Some(completed && !self.consumed.load(Ordering::Relaxed))
    }
}

#[cfg(all(test, loom))]
mod model {
    //! Exhaustive interleavings of the owner and the completion routine.

    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::thread;

    use super::{Completion, Lifecycle, Protocol};

    /// A block: the protocol, a result the completion writes and the owner
    /// reads, and counters for frees and clean-ups.
    struct Block {
        protocol: Protocol,
        result: UnsafeCell<u32>,
        /// What the routine touches after its transition and before its
        /// release (the event it sets, the waker, the guard slot).
        signal: UnsafeCell<u32>,
        freed: AtomicUsize,
        cleanups: AtomicUsize,
    }

    impl Block {
        fn release(&self) {
            if let Some(cleanup_due) = self.protocol.release() {
                if cleanup_due {
                    self.cleanups.fetch_add(1, Ordering::Relaxed);
                }
                assert_eq!(self.freed.fetch_add(1, Ordering::Relaxed), 0, "freed twice");
            }
        }

        fn touch(&self) {
            assert_eq!(self.freed.load(Ordering::Relaxed), 0, "used after free");
        }
    }

    fn submitted() -> Arc<Block> {
        let block = Arc::new(Block {
            protocol: Protocol::new(),
            result: UnsafeCell::new(0),
            signal: UnsafeCell::new(0),
            freed: AtomicUsize::new(0),
            cleanups: AtomicUsize::new(0),
        });
        block.protocol.submit();
        block
    }

    /// The provider writes the result into the IRP, then completes it
    /// (a late, rule-breaking provider after a reclaim writes nothing of
    /// ours: the library's routine only reads the IRP).
    fn completion_routine(block: &Block, provider_writes: bool) {
        block.touch();
        if provider_writes {
            // SAFETY: the provider writes before the transition publishes it.
            block.result.with_mut(|result| unsafe { *result = 42 });
        }
        // Whatever it found, the routine signals, then gives its reference
        // back.
        if block.protocol.complete() == Completion::Owned {
            // SAFETY: the routine's until its release (what `recycle`
            // must wait for).
            block.signal.with_mut(|signal| unsafe { *signal += 1 });
        }
        block.release();
    }

    /// The provider completing `block` on a thread of its own.
    fn spawn_routine(block: &Arc<Block>) -> thread::JoinHandle<()> {
        let block = block.clone();
        thread::spawn(move || completion_routine(&block, true))
    }

    #[test]
    fn completion_races_the_owner_dropping_the_future() {
        loom::model(|| {
            let block = submitted();
            let provider = spawn_routine(&block);
            // The owner drops without consuming: cancel (a no-op here), then
            // abandon if still in flight.
            block.touch();
            let _ = block.protocol.abandon();
            block.release();
            provider.join().unwrap();
            assert_eq!(block.freed.load(Ordering::Relaxed), 1);
            assert_eq!(
                block.cleanups.load(Ordering::Relaxed),
                1,
                "an untaken result is cleaned up once"
            );
        });
    }

    #[test]
    fn the_owner_reads_a_result_only_after_completion_and_consumes_it() {
        loom::model(|| {
            let block = submitted();
            let provider = spawn_routine(&block);
            while block.protocol.state() != Lifecycle::Completed {
                thread::yield_now();
            }
            // SAFETY: read after observing Completed (acquire).
            assert_eq!(block.result.with(|result| unsafe { *result }), 42);
            block.protocol.consume();
            block.release();
            provider.join().unwrap();
            assert_eq!(block.freed.load(Ordering::Relaxed), 1);
            assert_eq!(block.cleanups.load(Ordering::Relaxed), 0);
        });
    }

    #[test]
    fn a_sweep_cancelling_a_forgotten_operation_races_the_completion() {
        loom::model(|| {
            let block = submitted();
            // The owner was forgotten (`mem::forget`): its reference never
            // comes back; the sweep retains under the lock, then cancels.
            assert!(block.protocol.retain(), "the owner's count is there");
            let provider = spawn_routine(&block);
            block.touch();
            block.release();
            provider.join().unwrap();
            assert_eq!(
                block.freed.load(Ordering::Relaxed),
                0,
                "the owner still holds one"
            );
            // Had the owner not been forgotten, its drop frees.
            let _ = block.protocol.abandon();
            block.release();
            assert_eq!(block.freed.load(Ordering::Relaxed), 1);
        });
    }

    #[test]
    fn recycling_waits_for_the_routine_and_the_next_use_completes_again() {
        loom::model(|| {
            let block = submitted();
            let provider = spawn_routine(&block);
            // The owner sees the result (it may run ahead of the routine's
            // release), then tries to recycle as a spare would.
            while block.protocol.state() != Lifecycle::Completed {
                thread::yield_now();
            }
            block.protocol.consume();
            let recycled = block.protocol.recycle();
            if recycled {
                // Only the owner is left: resetting what the routine
                // touched races nobody.
                // SAFETY: the routine gave its reference back.
                block.result.with_mut(|result| unsafe { *result = 0 });
                // SAFETY: as above (the event cleared, the waker taken).
                block.signal.with_mut(|signal| unsafe { *signal = 0 });
                assert_eq!(block.protocol.state(), Lifecycle::Idle);
                // The next use of the same block.
                block.protocol.submit();
                let again = spawn_routine(&block);
                again.join().unwrap();
                assert_eq!(block.protocol.state(), Lifecycle::Completed);
                block.protocol.consume();
            }
            provider.join().unwrap();
            block.release();
            assert_eq!(block.freed.load(Ordering::Relaxed), 1);
            assert_eq!(block.cleanups.load(Ordering::Relaxed), 0);
        });
    }

    #[test]
    fn an_embedded_block_revived_after_its_last_release_completes_again() {
        loom::model(|| {
            let block = submitted();
            let provider = {
                let block = block.clone();
                thread::spawn(move || {
                    block.touch();
                    let _ = block.protocol.complete();
                    block.protocol.release()
                })
            };
            // The owner leaves (a dropped future); whichever release is
            // last hands the dead block to its home.
            let _ = block.protocol.abandon();
            let mine = block.protocol.release();
            let theirs = provider.join().unwrap();
            assert!(mine.is_some() != theirs.is_some(), "one last release");
            // The home revives it for the next call (the close).
            block.protocol.revive();
            assert_eq!(block.protocol.state(), Lifecycle::Idle);
            block.protocol.submit();
            spawn_routine(&block).join().unwrap();
            assert_eq!(block.protocol.state(), Lifecycle::Completed);
            block.protocol.consume();
            block.release();
            assert_eq!(block.freed.load(Ordering::Relaxed), 1);
            assert_eq!(block.cleanups.load(Ordering::Relaxed), 0);
        });
    }

    #[test]
    fn a_quarantined_call_is_not_recycled() {
        loom::model(|| {
            let block = submitted();
            assert!(block.protocol.reclaim());
            assert!(
                !block.protocol.recycle(),
                "the quarantined routine's reference is still counted"
            );
        });
    }

    #[test]
    fn a_reclaimed_call_without_a_late_completion_stays_quarantined() {
        loom::model(|| {
            let block = submitted();
            assert!(block.protocol.reclaim());
            block.protocol.consume();
            block.release();
            assert_eq!(
                block.freed.load(Ordering::Relaxed),
                0,
                "the routine's reference is kept"
            );
        });
    }

    #[test]
    fn a_reclaimed_call_and_a_late_completion_free_once() {
        loom::model(|| {
            let block = submitted();
            let late = {
                let block = block.clone();
                thread::spawn(move || completion_routine(&block, false))
            };
            if block.protocol.reclaim() {
                // SAFETY: reclaimed: the completion will not write.
                block.result.with_mut(|result| unsafe { *result = 7 });
            }
            block.protocol.consume();
            late.join().unwrap();
            block.release();
            assert_eq!(block.freed.load(Ordering::Relaxed), 1);
        });
    }
}
