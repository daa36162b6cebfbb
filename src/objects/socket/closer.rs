//! Who closes a socket with the operation that created it.
//!
//! A socket block holds one operation of its own, with one IRP: it creates
//! the socket (`WskSocket`, `WskSocketConnect`), then closes it
//! (`WskCloseSocket`), so that a socket costs one pool block and one IRP.
//! The close may be asked for while that operation is still busy with the
//! creation: the creator has not let go of it yet (its owner is reading
//! the result; its completion routine is returning), or it never will (a
//! forgotten future). This protocol decides, without waiting, which of
//! three ways the close goes:
//!
//! ```text
//! Busy --last release of the creation--> Free --close--> Closing (the own operation closes)
//! Busy --close, deferred--> CloseWanted --last release of the creation--> Closing (it closes)
//! Busy --close, with an operation of the closer's own--> Closing (the creation only lets go)
//! Free --lent to a call on the socket (bind, connect, an address)--> Busy (as above)
//! ```
//!
//! The run-down picks the one party that closes; this protocol only
//! settles the race between that party and the creation's last release.
//! Pure atomics, model-checked with loom
//! (`RUSTFLAGS="--cfg loom" cargo test --release --lib closer`).

#[cfg(not(loom))]
use core::sync::atomic::{AtomicU8, Ordering};
#[cfg(loom)]
use loom::sync::atomic::{AtomicU8, Ordering};

/// The own operation is creating the socket (or its creator still holds it).
const BUSY: u8 = 0;
/// The creation let go: the own operation waits to close the socket.
const FREE: u8 = 1;
/// The close was asked for while busy: the creation's last release closes.
const CLOSE_WANTED: u8 = 2;
/// The close is under way or done (by the own operation or another one).
const CLOSING: u8 = 3;

/// What the closer does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// The own operation is the closer's: close with it.
    Own,
    /// Still busy with the creation: close with another operation
    /// ([`Closer::take_over`]) or leave it to the creation
    /// ([`Closer::defer`]).
    Busy,
}

/// What the creation's last release does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// Nothing: the socket stays open (or was never created).
    Kept,
    /// A close was deferred to it: close with the own operation now.
    CloseNow,
    /// Someone closed with another operation: nothing more.
    ClosedElsewhere,
}

/// The state of a socket block's own operation.
///
/// # Invariants
/// Moves only along the arrows of the module's diagram; `CLOSING` is final
/// until the block is made new for another socket.
#[derive(Debug)]
pub struct Closer {
    state: AtomicU8,
}

impl Closer {
    /// Busy creating a socket.
    #[allow(
        clippy::missing_const_for_fn,
        reason = "loom's atomics have no const constructor"
    )]
    pub fn busy() -> Self {
        Self {
            state: AtomicU8::new(BUSY),
        }
    }

    /// Busy again, for the next socket of a block set aside (only its
    /// holder touches it).
    pub fn reset(&self) {
        self.state.store(BUSY, Ordering::Relaxed);
    }

    /// A call on the open socket borrows the own operation (`false`: it is
    /// busy or closing, and the call makes its own). Until the call's last
    /// release it is busy again, exactly as during the creation.
    pub fn lend(&self) -> bool {
        self.state
            .compare_exchange(FREE, BUSY, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// The closer (the run-down's winner, once) asks for the own
    /// operation.
    ///
    /// # Panics
    /// If the socket is closed twice.
    pub fn take(&self) -> Take {
        match self
            .state
            .compare_exchange(FREE, CLOSING, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Take::Own,
            Err(BUSY) => Take::Busy,
            Err(state) => panic!("a socket is closed once (closer state {state})"),
        }
    }

    /// After [`Take::Busy`]: the closer closes with an operation of its
    /// own, and the creation will only let go. `false` when the creation
    /// let go meanwhile: [`take`](Self::take) again.
    pub fn take_over(&self) -> bool {
        self.state
            .compare_exchange(BUSY, CLOSING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// After [`Take::Busy`]: the creation's last release closes. `false`
    /// when it let go meanwhile: [`take`](Self::take) again.
    pub fn defer(&self) -> bool {
        self.state
            .compare_exchange(BUSY, CLOSE_WANTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The creation's (or a borrowing call's) last reference is gone (once
    /// per use).
    ///
    /// # Panics
    /// If called when the own operation was not busy creating.
    pub fn released(&self) -> Released {
        match self
            .state
            .compare_exchange(BUSY, FREE, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Released::Kept,
            Err(CLOSE_WANTED) => {
                self.state.store(CLOSING, Ordering::Release);
                Released::CloseNow
            }
            Err(CLOSING) => Released::ClosedElsewhere,
            Err(state) => panic!("the creation is released once (closer state {state})"),
        }
    }
}

#[cfg(all(test, loom))]
mod model {
    //! The closer against the creation's last release, every interleaving.

    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::thread;

    use super::{Closer, Released, Take};

    /// Counts the closes and whether the own operation closed while the
    /// creation still held it.
    #[derive(Default)]
    struct Socket {
        closes: AtomicUsize,
        own_in_use: AtomicUsize,
    }

    impl Socket {
        fn close_with_own(&self) {
            assert_eq!(
                self.own_in_use.load(Ordering::Acquire),
                0,
                "the own operation closes only once the creation let go"
            );
            self.closes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The creation lets go of the own operation.
    fn creation_released(closer: &Closer, socket: &Socket) {
        socket.own_in_use.store(0, Ordering::Release);
        match closer.released() {
            Released::CloseNow => socket.close_with_own(),
            Released::Kept | Released::ClosedElsewhere => {}
        }
    }

    /// The run-down's winner closes; `spare` says whether it has an
    /// operation of its own to close with when the own one is busy.
    fn close(closer: &Closer, socket: &Socket, spare: bool) {
        loop {
            match closer.take() {
                Take::Own => return socket.close_with_own(),
                Take::Busy if spare => {
                    if closer.take_over() {
                        socket.closes.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                Take::Busy => {
                    if closer.defer() {
                        return;
                    }
                }
            }
        }
    }

    fn race(spare: bool) {
        loom::model(move || {
            let closer = Arc::new(Closer::busy());
            let socket = Arc::new(Socket::default());
            socket.own_in_use.store(1, Ordering::Relaxed);
            let creation = {
                let (closer, socket) = (closer.clone(), socket.clone());
                thread::spawn(move || creation_released(&closer, &socket))
            };
            close(&closer, &socket, spare);
            creation.join().unwrap();
            assert_eq!(
                socket.closes.load(Ordering::Relaxed),
                1,
                "the socket is closed exactly once"
            );
        });
    }

    #[test]
    fn closer_deferring_races_the_creation_letting_go() {
        race(false);
    }

    #[test]
    fn closer_with_an_operation_of_its_own_races_the_creation_letting_go() {
        race(true);
    }

    #[test]
    fn closer_races_a_call_borrowing_the_operation_and_letting_go() {
        loom::model(|| {
            let closer = Arc::new(Closer::busy());
            let socket = Arc::new(Socket::default());
            // The creation let go: the operation is free.
            assert_eq!(closer.released(), Released::Kept);
            let call = {
                let (closer, socket) = (closer.clone(), socket.clone());
                thread::spawn(move || {
                    if closer.lend() {
                        socket.own_in_use.store(1, Ordering::Relaxed);
                        creation_released(&closer, &socket);
                    }
                })
            };
            close(&closer, &socket, false);
            call.join().unwrap();
            assert_eq!(
                socket.closes.load(Ordering::Relaxed),
                1,
                "the socket is closed exactly once"
            );
        });
    }
}
