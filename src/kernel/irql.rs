//! IRQL as types: zero-sized proofs that the current thread runs at or
//! below a level.
//!
//! A token comes from a runtime check ([`PassiveLevel::check`]) or from an
//! `unsafe` assumption for code that knows its context (`DriverEntry`, a
//! system thread), which still asserts in debug builds. Tokens are neither
//! `Send` nor `Sync`: a proof about this thread means nothing on another.
//!
//! ```compile_fail
//! fn needs_send<T: Send>(_: T) {}
//! let passive = wsk::PassiveLevel::check().unwrap();
//! needs_send(passive); // a token cannot move to another thread
//! ```
//!
//! ```compile_fail
//! fn blocking(_: &wsk::PassiveLevel) {}
//! let dispatch = wsk::AtMostDispatch::check().unwrap();
//! blocking(&dispatch); // DISPATCH_LEVEL code cannot call a blocking function
//! ```

use core::fmt;
use core::marker::PhantomData;

use crate::abi::{APC_LEVEL, DISPATCH_LEVEL, PASSIVE_LEVEL};
use crate::sys;

/// An interrupt request level.
///
/// # IRQL
/// Any.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Irql(pub u8);

impl Irql {
    /// `PASSIVE_LEVEL` (0): threads; everything may block.
    pub const PASSIVE: Self = Self(PASSIVE_LEVEL);
    /// `APC_LEVEL` (1).
    pub const APC: Self = Self(APC_LEVEL);
    /// `DISPATCH_LEVEL` (2): DPCs, spin locks, completion routines; no waiting.
    pub const DISPATCH: Self = Self(DISPATCH_LEVEL);

    /// The current thread's IRQL (`KeGetCurrentIrql`).
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn current() -> Self {
        Self(sys::current_irql())
    }
}

impl fmt::Display for Irql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            PASSIVE_LEVEL => f.write_str("PASSIVE_LEVEL"),
            APC_LEVEL => f.write_str("APC_LEVEL"),
            DISPATCH_LEVEL => f.write_str("DISPATCH_LEVEL"),
            other => write!(f, "IRQL {other}"),
        }
    }
}

impl fmt::Debug for Irql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The thread runs at a higher IRQL than a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("running at {current}, but this needs {required} or below")]
pub struct IrqlTooHigh {
    /// Where the thread was.
    pub current: Irql,
    /// The highest IRQL the call allows.
    pub required: Irql,
}

type NotSend = PhantomData<*const ()>;

macro_rules! token {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy)]
        pub struct $name {
            _not_send: NotSend,
        }

        impl $name {
            /// Checks the current IRQL and gives the token if it is low enough.
            ///
            /// # IRQL
            /// Any.
            ///
            /// # Errors
            /// [`IrqlTooHigh`] when the thread runs above the level.
            pub fn check() -> Result<Self, IrqlTooHigh> {
                let current = Irql::current();
                if current <= $max {
                    Ok(Self { _not_send: PhantomData })
                } else {
                    Err(IrqlTooHigh { current, required: $max })
                }
            }

            /// The token without a runtime check, for code that knows its
            /// context. Debug builds still check.
            ///
            /// # Safety
            /// The current thread must run at or below the token's level for
            /// as long as the token (or a copy) is used.
            #[must_use]
            pub unsafe fn assume() -> Self {
                debug_assert!(
                    Irql::current() <= $max,
                    "assumed {} but running at {}",
                    $max,
                    Irql::current()
                );
                Self { _not_send: PhantomData }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(stringify!($name))
            }
        }
    };
}

token!(
    /// Proof that the thread runs at `PASSIVE_LEVEL`: blocking calls demand it.
    PassiveLevel,
    Irql::PASSIVE
);
token!(
    /// Proof that the thread runs at or below `APC_LEVEL`: waits that may
    /// block (a non-zero timeout) need it.
    AtMostApc,
    Irql::APC
);
token!(
    /// Proof that the thread runs at or below `DISPATCH_LEVEL`: enough for
    /// everything that never blocks.
    AtMostDispatch,
    Irql::DISPATCH
);

impl PassiveLevel {
    /// The weaker proof for waits.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL` (proved by `self`).
    #[must_use]
    pub const fn at_most_apc(self) -> AtMostApc {
        AtMostApc {
            _not_send: PhantomData,
        }
    }

    /// The weaker proof for non-blocking calls.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL` (proved by `self`).
    #[must_use]
    pub const fn at_most_dispatch(self) -> AtMostDispatch {
        AtMostDispatch {
            _not_send: PhantomData,
        }
    }
}

impl AtMostApc {
    /// The weaker proof for non-blocking calls.
    ///
    /// # IRQL
    /// At most `APC_LEVEL` (proved by `self`).
    #[must_use]
    pub const fn at_most_dispatch(self) -> AtMostDispatch {
        AtMostDispatch {
            _not_send: PhantomData,
        }
    }
}

impl From<PassiveLevel> for AtMostApc {
    fn from(token: PassiveLevel) -> Self {
        token.at_most_apc()
    }
}

impl From<PassiveLevel> for AtMostDispatch {
    fn from(token: PassiveLevel) -> Self {
        token.at_most_dispatch()
    }
}

impl From<AtMostApc> for AtMostDispatch {
    fn from(token: AtMostApc) -> Self {
        token.at_most_dispatch()
    }
}
