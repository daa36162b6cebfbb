//! Run-down protection for a WSK socket or provider capture that more than
//! one party may end: its owner, deregistration, or a timeout that has to
//! close it.
//!
//! WSK forbids closing a socket (`WskCloseSocket`) or releasing a capture
//! (`WskReleaseProviderNPI`) while another call on it is in progress. Every
//! call therefore *acquires* the protection for as long as it is inside the
//! provider's dispatch function (not while its IRP is pending: the close
//! cancels those), and whoever ends the object first *begins* the run-down:
//! from then on acquiring fails. If no call is inside, the party that began
//! ends the object at once; otherwise the last call to leave ends it. Nobody
//! waits, so this works at `DISPATCH_LEVEL`, and exactly one party ends the
//! object, never while a call is inside.
//!
//! ```text
//! Open(0) --begin--> Closing(0): the beginner ends it
//! Open(n) --begin--> Closing(n) --last release--> Closing(0): the last call ends it
//! ```
//!
//! The protocol is pure atomics, model-checked with loom
//! (`RUSTFLAGS="--cfg loom" cargo test --release --lib rundown`).

#[cfg(not(loom))]
use core::sync::atomic::{AtomicUsize, Ordering};
#[cfg(loom)]
use loom::sync::atomic::{AtomicUsize, Ordering};

/// Bit 0: the run-down has begun. The rest: calls inside, in units of 2.
const CLOSING: usize = 1;
const ONE_CALL: usize = 2;

/// The outcome of [`RunDown::begin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// This caller began the run-down and no call is inside: it ends the
    /// object now.
    EndNow,
    /// This caller began the run-down while calls were inside: the last of
    /// them to leave ([`RunDown::release`] returns `true`) ends the object.
    EndedByLastCall,
    /// Someone else began it first and sees to the end.
    Lost,
}

/// Run-down protection (an `EX_RUNDOWN_REF` of our own, so that it works at
/// `DISPATCH_LEVEL` and under Wine).
///
/// # Invariants
/// Once `CLOSING` is set it stays set, and the count only goes down.
#[derive(Debug)]
pub struct RunDown {
    state: AtomicUsize,
}

impl RunDown {
    /// Open, with no call inside.
    #[allow(
        clippy::missing_const_for_fn,
        reason = "loom's atomics have no const constructor"
    )]
    pub fn new() -> Self {
        Self {
            state: AtomicUsize::new(0),
        }
    }

    /// A call enters; `false` once the run-down has begun (the object is
    /// closed or closing: the call must not touch it).
    pub fn acquire(&self) -> bool {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            if state & CLOSING != 0 {
                return false;
            }
            match self.state.compare_exchange_weak(
                state,
                state + ONE_CALL,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => state = now,
            }
        }
    }

    /// A call leaves. Returns `true` when it was the last one inside a
    /// run-down that has begun: the caller ends the object.
    pub fn release(&self) -> bool {
        self.state.fetch_sub(ONE_CALL, Ordering::AcqRel) == CLOSING + ONE_CALL
    }

    /// Begins the run-down: no call may enter any more.
    pub fn begin(&self) -> Begin {
        let previous = self.state.fetch_or(CLOSING, Ordering::AcqRel);
        if previous & CLOSING != 0 {
            Begin::Lost
        } else if previous == 0 {
            Begin::EndNow
        } else {
            Begin::EndedByLastCall
        }
    }
}

#[cfg(all(test, loom))]
mod model {
    //! Calls racing two parties that both try to end the object.

    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use loom::thread;

    use super::{Begin, RunDown};

    struct Object {
        rundown: RunDown,
        inside: AtomicUsize,
        closed: AtomicBool,
        closes: AtomicUsize,
    }

    impl Object {
        fn close(&self) {
            assert_eq!(
                self.inside.load(Ordering::Acquire),
                0,
                "closed with a call inside"
            );
            self.closed.store(true, Ordering::Release);
            self.closes.fetch_add(1, Ordering::Relaxed);
        }

        /// One call: enter, use the object, leave (ending it if last out).
        fn call(&self) {
            if self.rundown.acquire() {
                self.inside.fetch_add(1, Ordering::AcqRel);
                assert!(
                    !self.closed.load(Ordering::Acquire),
                    "a call ran on a closed object"
                );
                self.inside.fetch_sub(1, Ordering::AcqRel);
                if self.rundown.release() {
                    self.close();
                }
            }
        }

        /// Begins the run-down: ends the object if nobody is inside.
        fn end(&self) {
            if self.rundown.begin() == Begin::EndNow {
                self.close();
            }
        }
    }

    #[test]
    fn a_call_never_overlaps_the_close_and_one_party_closes() {
        loom::model(|| {
            let object = Arc::new(Object {
                rundown: RunDown::new(),
                inside: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
                closes: AtomicUsize::new(0),
            });
            let caller = {
                let object = object.clone();
                thread::spawn(move || object.call())
            };
            let deregistration = {
                let object = object.clone();
                thread::spawn(move || object.end())
            };
            object.end(); // the owner's close
            caller.join().unwrap();
            deregistration.join().unwrap();
            assert_eq!(
                object.closes.load(Ordering::Relaxed),
                1,
                "closed exactly once"
            );
            assert!(!object.rundown.acquire(), "closed objects refuse calls");
        });
    }

    #[test]
    fn two_calls_and_a_close() {
        loom::model(|| {
            let object = Arc::new(Object {
                rundown: RunDown::new(),
                inside: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
                closes: AtomicUsize::new(0),
            });
            let callers: [_; 2] = core::array::from_fn(|_| {
                let object = object.clone();
                thread::spawn(move || object.call())
            });
            object.end();
            for caller in callers {
                caller.join().unwrap();
            }
            assert_eq!(
                object.closes.load(Ordering::Relaxed),
                1,
                "closed exactly once"
            );
        });
    }
}
