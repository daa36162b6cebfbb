//! `KEVENT`: [`Event`] in its own pool block, and the embeddable
//! `RawEvent` for blocks that already live in pool.

use core::cell::UnsafeCell;
use core::time::Duration;

use super::irql::{AtMostApc, AtMostDispatch, IrqlTooHigh};
use super::pool::{PoolBox, PoolTag};
use crate::abi::{
    Executive, FALSE, KEVENT, KernelMode, NotificationEvent, STATUS_SUCCESS, STATUS_TIMEOUT,
    SynchronizationEvent, TRUE,
};
use crate::error::{Error, Result};
use crate::status::NtStatus;
use crate::sys;

/// Whether a satisfied wait resets the event.
///
/// # IRQL
/// Any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Stays signalled until cleared; releases every waiter
    /// (`NotificationEvent`).
    Notification,
    /// Resets when one waiter is released (`SynchronizationEvent`).
    Synchronization,
}

/// Why a wait ended without the event.
///
/// # IRQL
/// Any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// The timeout passed before the event was signalled.
    #[error("wait timed out")]
    TimedOut,
    /// The thread runs above `APC_LEVEL`, where a wait that may block is not
    /// allowed: nothing waited. A token proves the IRQL only when it was
    /// made; a copy can outlive that (a spin lock taken since), so every
    /// blocking wait checks again.
    #[error("refused to wait: {0}")]
    IrqlTooHigh(#[from] IrqlTooHigh),
}

/// A `KEVENT` embedded in a larger non-paged block.
///
/// # Invariants
/// Once [`init`](Self::init) has run the event must not move (its wait list
/// head points at itself) and lives in non-paged memory.
#[repr(transparent)]
pub(crate) struct RawEvent(pub(crate) UnsafeCell<KEVENT>);

// SAFETY: the kernel synchronises every operation on a KEVENT internally;
// its list pointers only ever point into the event itself.
#[allow(clippy::non_send_fields_in_send_ty, reason = "see the SAFETY comment")]
unsafe impl Send for RawEvent {}
// SAFETY: as above.
unsafe impl Sync for RawEvent {}

impl RawEvent {
    /// `KeInitializeEvent` in place.
    ///
    /// # Safety
    /// `this` points to writable non-paged memory that stays put for the
    /// event's life; IRQL <= `DISPATCH_LEVEL`.
    pub(crate) unsafe fn init(this: *mut Self, kind: EventKind, signalled: bool) {
        let kind = match kind {
            EventKind::Notification => NotificationEvent,
            EventKind::Synchronization => SynchronizationEvent,
        };
        // SAFETY: per the contract; `RawEvent` is a transparent `KEVENT`.
        unsafe {
            sys::KeInitializeEvent(
                this.cast::<KEVENT>(),
                kind,
                if signalled { TRUE } else { FALSE },
            );
        };
    }

    /// An all-zero event, to be initialised in place with
    /// [`init`](Self::init) once it has reached its final address.
    pub(crate) const fn zeroed() -> Self {
        let head = crate::abi::LIST_ENTRY {
            Flink: core::ptr::null_mut(),
            Blink: core::ptr::null_mut(),
        };
        Self(UnsafeCell::new(KEVENT {
            Header: crate::abi::DISPATCHER_HEADER {
                Type: 0,
                Signalling: 0,
                Size: 0,
                Reserved1: 0,
                SignalState: 0,
                WaitListHead: head,
            },
        }))
    }

    const fn raw(&self) -> *mut KEVENT {
        self.0.get()
    }

    /// `KeSetEvent`.
    pub(crate) fn set(&self) {
        // SAFETY: initialised per the invariant; allowed at <= DISPATCH_LEVEL,
        // where all library code runs, and `Wait` is FALSE.
        unsafe { sys::KeSetEvent(self.raw(), 0, FALSE) };
    }

    /// `KeClearEvent`.
    pub(crate) fn clear(&self) {
        // SAFETY: initialised per the invariant; <= DISPATCH_LEVEL.
        unsafe { sys::KeClearEvent(self.raw()) };
    }

    /// `KeReadStateEvent`.
    pub(crate) fn is_set(&self) -> bool {
        // SAFETY: initialised per the invariant; <= DISPATCH_LEVEL.
        unsafe { sys::KeReadStateEvent(self.raw()) != 0 }
    }

    /// Waits up to `timeout` (`None`: forever), after checking that the
    /// thread still runs at `APC_LEVEL` or below: `irql` may be a copy made
    /// before the IRQL was raised (a spin lock taken since).
    pub(crate) fn wait(
        &self,
        _irql: &AtMostApc,
        timeout: Option<Duration>,
    ) -> Result<(), WaitError> {
        // Every wait here has a NULL or non-zero timeout, so it may block.
        AtMostApc::check()?;
        let relative = timeout.map(to_relative_100ns);
        let timeout_ptr = relative
            .as_ref()
            .map_or(core::ptr::null(), core::ptr::from_ref);
        // SAFETY: an initialised event in non-paged memory; IRQL <=
        // APC_LEVEL, which a wait that may block needs, checked just now.
        let status = unsafe {
            sys::KeWaitForSingleObject(self.raw().cast(), Executive, KernelMode, FALSE, timeout_ptr)
        };
        wait_result(status)
    }

    /// Consumes the signal if set, without blocking (a zero-timeout wait).
    pub(crate) fn try_wait(&self, _irql: &AtMostDispatch) -> bool {
        let zero = 0_i64;
        // SAFETY: an initialised event; a zero timeout is allowed at
        // DISPATCH_LEVEL, which the token bounds.
        let status = unsafe {
            sys::KeWaitForSingleObject(
                self.raw().cast(),
                Executive,
                KernelMode,
                FALSE,
                &raw const zero,
            )
        };
        status == STATUS_SUCCESS
    }
}

fn wait_result(status: i32) -> Result<(), WaitError> {
    match status {
        STATUS_SUCCESS => Ok(()),
        STATUS_TIMEOUT => Err(WaitError::TimedOut),
        other => panic!(
            "KeWaitForSingleObject on an event returned {}",
            NtStatus(other)
        ),
    }
}

/// A relative kernel timeout: negative, in 100 ns units, at least one unit
/// (zero would mean "do not wait").
fn to_relative_100ns(timeout: Duration) -> i64 {
    let units = (timeout.as_nanos() / 100).clamp(1, i64::MAX as u128);
    -i64::try_from(units).unwrap_or(i64::MAX)
}

/// A kernel event in its own non-paged block.
///
/// # IRQL
/// Creating, setting, clearing and reading at `DISPATCH_LEVEL` or below;
/// [`wait`](Self::wait) at `APC_LEVEL` or below.
pub struct Event {
    block: PoolBox<RawEvent>,
}

impl Event {
    /// A new event, signalled or not.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// [`Error::InsufficientResources`] when the pool is exhausted.
    pub fn new(kind: EventKind, signalled: bool) -> Result<Self, Error> {
        let init = |slot: *mut RawEvent| {
            // SAFETY: `slot` is a fresh pool block (non-paged, never moves);
            // <= DISPATCH_LEVEL.
            unsafe { RawEvent::init(slot, kind, signalled) };
        };
        // SAFETY: `RawEvent::init` fully initialises the block.
        let block = unsafe { PoolBox::new_with(PoolTag::EVENT, init)? };
        Ok(Self { block })
    }

    /// Signals the event.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    pub fn set(&self) {
        self.block.set();
    }

    /// Resets the event.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    pub fn clear(&self) {
        self.block.clear();
    }

    /// Whether the event is signalled.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    #[must_use]
    pub fn is_set(&self) -> bool {
        self.block.is_set()
    }

    /// Waits until the event is signalled or `timeout` passes (`None`:
    /// no limit). A synchronization event is reset by the wait.
    ///
    /// # IRQL
    /// `APC_LEVEL` or below: the token proves it was so when the token was
    /// made, and the wait checks again before it blocks.
    ///
    /// # Errors
    /// [`WaitError::TimedOut`] when the timeout passed first;
    /// [`WaitError::IrqlTooHigh`], without waiting, when the thread runs
    /// above `APC_LEVEL` (a copied token that outlived its proof).
    pub fn wait(&self, irql: &AtMostApc, timeout: Option<Duration>) -> Result<(), WaitError> {
        self.block.wait(irql, timeout)
    }

    /// Takes the signal if the event is signalled, without blocking.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below (the token proves it).
    #[must_use]
    pub fn try_wait(&self, irql: &AtMostDispatch) -> bool {
        self.block.try_wait(irql)
    }
}

impl core::fmt::Debug for Event {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}

#[cfg(all(test, wsk_emulator))]
#[path = "event_tests.rs"]
mod tests;
