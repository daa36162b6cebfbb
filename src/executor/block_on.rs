//! `block_on`: runs a future to completion on a `PASSIVE_LEVEL` thread,
//! sleeping on a kernel event between polls.

use core::future::Future;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use crate::error::Result;
use crate::kernel::event::{EventKind, RawEvent, WaitError};
use crate::kernel::irql::PassiveLevel;
use crate::kernel::pool::{PoolBox, PoolTag};

/// Runs `future` to completion on this `PASSIVE_LEVEL` thread.
///
/// Between polls the thread sleeps on a kernel event that the future's
/// waker sets (wakers may be invoked at any IRQL <= `DISPATCH_LEVEL`, e.g.
/// from a completion routine).
///
/// # IRQL
/// `PASSIVE_LEVEL` (the token proves it).
///
/// # Errors
/// [`Error::InsufficientResources`](crate::Error::InsufficientResources)
/// when the wake-up event cannot be allocated;
/// [`Error::IrqlTooHigh`](crate::Error::IrqlTooHigh) when the thread turns
/// out to run above `APC_LEVEL` when it would wait (the future is dropped);
/// otherwise the future's own output is returned.
pub fn block_on<F: Future>(irql: &PassiveLevel, future: F) -> Result<F::Output> {
    let signal = Signal::new()?;
    let waker = signal.waker();
    let mut context = Context::from_waker(&waker);
    let mut future = core::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return Ok(output);
        }
        // SAFETY: the signal lives as long as `signal` (and its wakers).
        let event = unsafe { &(*signal.0.as_ptr()).event };
        if let Err(WaitError::IrqlTooHigh(error)) = event.wait(&irql.at_most_apc(), None) {
            // The token was copied before the IRQL was raised: never spin
            // or wait here. Dropping the future cancels what it started.
            return Err(error.into());
        }
    }
}

/// A reference-counted, pool-allocated wake-up event.
struct SignalBlock {
    refs: AtomicUsize,
    event: RawEvent,
}

/// One reference to a [`SignalBlock`].
///
/// # Invariants
/// The block is live and this value owns one reference.
struct Signal(NonNull<SignalBlock>);

impl Signal {
    fn new() -> Result<Self> {
        let init = |slot: *mut SignalBlock| {
            // SAFETY: a fresh, aligned block of the right size.
            unsafe {
                slot.write(SignalBlock {
                    refs: AtomicUsize::new(1),
                    event: RawEvent::zeroed(),
                });
            };
            // SAFETY: initialised just now; only the address is taken.
            let event = unsafe { &raw mut (*slot).event };
            // SAFETY: the event is at its final non-paged address.
            unsafe { RawEvent::init(event, EventKind::Synchronization, false) };
        };
        // SAFETY: `init` initialises every field.
        let block = unsafe { PoolBox::new_with(PoolTag::EVENT, init)? };
        // INVARIANT: the one reference counted at creation.
        Ok(Self(block.into_raw()))
    }

    fn waker(&self) -> Waker {
        let raw = clone(self.0.as_ptr().cast());
        // SAFETY: the vtable's functions uphold the `RawWaker` contract:
        // each waker owns one reference, released exactly once.
        unsafe { Waker::from_raw(raw) }
    }
}

impl Drop for Signal {
    fn drop(&mut self) {
        drop_ref(self.0.as_ptr().cast());
    }
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake_by_ref, drop_ref);

const fn block<'a>(data: *const ()) -> &'a SignalBlock {
    // SAFETY: every waker holds a reference, so the block is live.
    unsafe { &*data.cast::<SignalBlock>() }
}

fn clone(data: *const ()) -> RawWaker {
    block(data).refs.fetch_add(1, Ordering::Relaxed);
    RawWaker::new(data, &VTABLE)
}

fn wake(data: *const ()) {
    wake_by_ref(data);
    drop_ref(data);
}

fn wake_by_ref(data: *const ()) {
    block(data).event.set();
}

fn drop_ref(data: *const ()) {
    if block(data).refs.fetch_sub(1, Ordering::AcqRel) == 1 {
        let ptr = NonNull::new(data.cast_mut().cast::<SignalBlock>()).expect("non-null waker data");
        // SAFETY: the last reference to a block from `PoolBox::into_raw`.
        drop(unsafe { PoolBox::from_raw(ptr, PoolTag::EVENT) });
    }
}
