//! Timers for futures: a one-shot kernel timer (`KTIMER`) whose DPC wakes
//! the task, [`sleep`], and [`timeout`] to bound any future, so async code
//! gets timeouts without an executor timer.
//!
//! The timer and its DPC live in a reference-counted non-paged block: the
//! owner holds one reference, the armed DPC the other. Dropping the owner
//! cancels the timer; if `KeCancelTimer` finds it still queued the DPC will
//! never run and the owner drops both references, otherwise the DPC drops
//! its own when it runs. Nothing is freed while the DPC may touch it.
//! While a registration is open, the last reference sets the block aside
//! in the driver image instead (up to a few), and the next timer reuses
//! it: a loop of timeouts allocates nothing in steady state.
//!
//! Armed timers are listed in the driver image (`kernel::image`): the
//! driver's last deregistration cancels those still armed (a forgotten or
//! merely long `sleep`), so no timer DPC runs after the driver unloads and
//! nothing waits for one to fire. A timer cancelled that way ends its
//! future with [`Error::Cancelled`], and so does one started after the
//! driver's last registration is gone, until it registers again (an image
//! that has never registered arms timers freely).

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::future::Future;
use core::pin::Pin;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use core::task::{Context, Poll};
use core::time::Duration;

use atomic_waker::AtomicWaker;

use super::image::{self, Image};
use super::pool::{PoolBox, PoolTag};
use crate::abi::{DISPATCHER_HEADER, FALSE, KDPC, KTIMER, LIST_ENTRY};
use crate::error::{Error, Result};
use crate::objects::tracking::{Kind, Node, What, try_retain};
use crate::status::NtStatus;
use crate::sys;

/// Timer blocks.
const TAG: PoolTag = PoolTag::new(*b"WskT");

/// A timer block.
///
/// # Invariants
/// `node` is the first field, linked in `image`'s timer list while the timer
/// is armed.
#[repr(C)]
struct TimerBlock {
    node: Node,
    refs: AtomicUsize,
    fired: AtomicBool,
    cancelled: AtomicBool,
    waker: AtomicWaker,
    timer: UnsafeCell<KTIMER>,
    dpc: UnsafeCell<KDPC>,
    image: &'static Image,
}

const KIND: &Kind = &Kind {
    what: What::Timer,
    retain,
    force,
};

/// An armed one-shot kernel timer.
///
/// # Invariants
/// `block` is live and this value owns one reference; while armed, the DPC
/// owns the other.
struct Timer {
    block: NonNull<TimerBlock>,
}

// SAFETY: the block's shared state is atomic or the kernel's (KTIMER/KDPC
// are synchronised by the kernel).
unsafe impl Send for Timer {}
// SAFETY: as above.
unsafe impl Sync for Timer {}

/// An ended timer's block, set aside in its image for the next timer.
///
/// # Invariants
/// No reference is counted: neither armed nor running its DPC, unlinked,
/// and its waker taken (by the last `release`).
pub struct IdleTimer {
    block: PoolBox<TimerBlock>,
}

// SAFETY: nothing refers to an idle block but its holder (invariant), so
// moving it to another thread shares nothing; its timer and DPC are not
// armed or queued.
#[allow(clippy::non_send_fields_in_send_ty, reason = "see the SAFETY comment")]
unsafe impl Send for IdleTimer {}

impl IdleTimer {
    /// The block again, counting two references (the owner's and the
    /// DPC's, about to be armed). Its timer and DPC stay initialised.
    fn reuse(self) -> NonNull<TimerBlock> {
        let mut block = self.block;
        let shared = &mut *block;
        shared.node = Node::new(KIND);
        *shared.refs.get_mut() = 2;
        *shared.fired.get_mut() = false;
        *shared.cancelled.get_mut() = false;
        block.into_raw()
    }
}

impl Timer {
    /// Arms a timer that fires once after `duration`.
    fn start(duration: Duration) -> Result<Self> {
        let image = image::current();
        let units = (duration.as_nanos() / 100).clamp(1, i64::MAX as u128);
        let due = -i64::try_from(units).unwrap_or(i64::MAX);
        {
            // Taken from the idle ones, listed and armed under one hold of
            // the image's lock, so that the last deregistration's sweep sees
            // it either not yet listed or armed. Only a new block is
            // allocated outside the lock.
            let mut timers = image.timers.lock();
            let raw = if let Some(idle) = timers.idle.take() {
                idle.reuse()
            } else {
                drop(timers);
                let raw = Self::allocate(image)?;
                timers = image.timers.lock();
                raw
            };
            // SAFETY: the node lives in the block, which stays until the
            // timer's DPC ran or it was cancelled, both of which unlink it.
            if !unsafe { timers.armed.push(raw.cast::<Node>()) } {
                drop(timers);
                // The driver's last registration is gone (or going).
                // SAFETY: never armed nor shared: ours to free.
                drop(unsafe { PoolBox::from_raw(raw, TAG) });
                return Err(Error::Cancelled(NtStatus::CANCELLED));
            }
            // SAFETY: the block is ours; only addresses are taken.
            let shared = unsafe { raw.as_ref() };
            // SAFETY: an initialised timer and DPC in the block; relative
            // due time; DISPATCH_LEVEL (the lock). The DPC cannot run on
            // this processor before the lock is released, and elsewhere it
            // waits for the lock to unlink the timer.
            unsafe { sys::KeSetTimer(shared.timer.get(), due, shared.dpc.get()) };
            // INVARIANT: two references: ours and the DPC's, armed above.
            Ok(Self { block: raw })
        }
    }

    /// A new block with its timer and DPC initialised, counting two
    /// references (the owner's and the DPC's, about to be armed).
    fn allocate(image: &'static Image) -> Result<NonNull<TimerBlock>> {
        let init = |slot: *mut TimerBlock| {
            let block = TimerBlock {
                node: Node::new(KIND),
                refs: AtomicUsize::new(2),
                fired: AtomicBool::new(false),
                cancelled: AtomicBool::new(false),
                waker: AtomicWaker::new(),
                timer: UnsafeCell::new(blank_timer()),
                dpc: UnsafeCell::new(blank_dpc()),
                image,
            };
            // SAFETY: a fresh block of the right size and alignment.
            unsafe { slot.write(block) };
            // SAFETY: initialised just now; nothing else refers to it yet.
            let block = unsafe { &*slot };
            // SAFETY: the DPC is in non-paged pool that lives until its
            // routine has run or the timer was cancelled; <= DISPATCH_LEVEL.
            unsafe {
                sys::KeInitializeDpc(block.dpc.get(), Some(on_expiry), slot.cast::<c_void>());
            };
            // SAFETY: as above, for the timer.
            unsafe { sys::KeInitializeTimer(block.timer.get()) };
        };
        // SAFETY: `init` initialises every field.
        let block = unsafe { PoolBox::new_with(TAG, init)? };
        Ok(block.into_raw())
    }

    const fn shared(&self) -> &TimerBlock {
        // SAFETY: live while we hold a reference (invariant).
        unsafe { self.block.as_ref() }
    }

    fn poll_expired(&self, cx: &Context<'_>) -> Poll<Result<()>> {
        let shared = self.shared();
        let outcome = || {
            if shared.cancelled.load(Ordering::Acquire) {
                Poll::Ready(Err(Error::Cancelled(NtStatus::CANCELLED)))
            } else if shared.fired.load(Ordering::Acquire) {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        };
        if let ready @ Poll::Ready(_) = outcome() {
            return ready;
        }
        shared.waker.register(cx.waker());
        outcome()
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let shared = self.shared();
        // SAFETY: an initialised timer; <= DISPATCH_LEVEL.
        if unsafe { sys::KeCancelTimer(shared.timer.get()) } != FALSE {
            // Dequeued before it expired: its DPC will never run.
            unlist(self.block);
            release(self.block);
        }
        release(self.block);
    }
}

/// Storage for a timer, before `KeInitializeTimer`.
const fn blank_timer() -> KTIMER {
    KTIMER {
        Header: DISPATCHER_HEADER {
            Type: 0,
            Signalling: 0,
            Size: 0,
            Reserved1: 0,
            SignalState: 0,
            WaitListHead: blank_list(),
        },
        DueTime: 0,
        TimerListEntry: blank_list(),
        Dpc: core::ptr::null_mut(),
        Processor: 0,
        Period: 0,
    }
}

/// Storage for a DPC, before `KeInitializeDpc`.
const fn blank_dpc() -> KDPC {
    KDPC {
        Type: 0,
        Importance: 0,
        Number: 0,
        Padding: 0,
        DpcListEntry: blank_list(),
        DeferredRoutine: None,
        DeferredContext: core::ptr::null_mut(),
        SystemArgument1: core::ptr::null_mut(),
        SystemArgument2: core::ptr::null_mut(),
        DpcData: core::ptr::null_mut(),
    }
}

const fn blank_list() -> LIST_ENTRY {
    LIST_ENTRY {
        Flink: core::ptr::null_mut(),
        Blink: core::ptr::null_mut(),
    }
}

/// Takes a live block's node off its image's list of armed timers (if the
/// sweep has not).
fn unlist(block: NonNull<TimerBlock>) {
    // SAFETY: the caller holds a reference, so the block is live.
    let image = unsafe { block.as_ref() }.image;
    // SAFETY: the block's own node, only ever linked in its image's list.
    unsafe { image.timers.lock().armed.remove(block.cast::<Node>()) };
}

/// Drops one reference; the last sets the block aside in its image for
/// the next timer, or frees it.
fn release(block: NonNull<TimerBlock>) {
    // SAFETY: the caller holds a reference, so the block is live.
    if unsafe { block.as_ref() }
        .refs
        .fetch_sub(1, Ordering::AcqRel)
        == 1
    {
        // SAFETY: the last reference to a block from `PoolBox::into_raw`;
        // the timer is neither armed nor running its DPC any more.
        let block = unsafe { PoolBox::from_raw(block, TAG) };
        // The finished task's waker goes now, not at the next reuse.
        drop(block.waker.take());
        let image = block.image;
        // INVARIANT: no reference counted, unlinked (by the DPC, the
        // cancel or the sweep), not armed.
        let refused = image.timers.lock().idle.put(IdleTimer { block });
        // Freed outside the lock, if the image keeps no more.
        drop(refused);
    }
}

/// The timer's DPC: marks it fired, wakes the task, gives back the DPC's
/// reference. Runs at `DISPATCH_LEVEL`.
///
/// # Safety
/// Called by the kernel with the context given to `KeInitializeDpc`.
unsafe extern "system" fn on_expiry(
    _dpc: *mut KDPC,
    context: *mut c_void,
    _: *mut c_void,
    _: *mut c_void,
) {
    let block = context.cast::<TimerBlock>();
    // SAFETY: the armed DPC holds a reference, so the block is live.
    let shared = unsafe { &*block };
    // SAFETY: non-null: the block's own address.
    let block = unsafe { NonNull::new_unchecked(block) };
    unlist(block);
    shared.fired.store(true, Ordering::Release);
    shared.waker.wake();
    release(block);
}

/// The sweep's `retain` for a timer.
///
/// # Safety
/// `node` is the node of an allocated `TimerBlock`, under the lock.
unsafe fn retain(node: NonNull<Node>) -> bool {
    // SAFETY: per the contract; the node is the first field.
    try_retain(&unsafe { node.cast::<TimerBlock>().as_ref() }.refs)
}

/// The sweep's `force` for a timer: cancels it if still armed, ending its
/// future with `Error::Cancelled`.
///
/// # Safety
/// `node` is the node of a `TimerBlock` retained by the sweep.
unsafe fn force(node: NonNull<Node>) -> bool {
    let block = node.cast::<TimerBlock>();
    // SAFETY: retained, so alive.
    let shared = unsafe { block.as_ref() };
    // SAFETY: an initialised timer; <= DISPATCH_LEVEL.
    let cancelled = unsafe { sys::KeCancelTimer(shared.timer.get()) } != FALSE;
    if cancelled {
        // The DPC will never run: take its part.
        shared.cancelled.store(true, Ordering::Release);
        shared.waker.wake();
        release(block);
    }
    release(block);
    cancelled
}

/// Completes after `duration`: a kernel timer whose DPC wakes the task.
///
/// # IRQL
/// Create, poll and drop at `DISPATCH_LEVEL` or below.
///
/// # Errors
/// The output is [`Error::Cancelled`] when the driver's last deregistration
/// cancelled the timer; [`Error::InsufficientResources`] when the timer block
/// cannot be allocated.
pub const fn sleep(duration: Duration) -> Sleep {
    Sleep {
        duration,
        timer: None,
    }
}

/// The future of [`sleep`].
#[must_use = "futures do nothing unless polled"]
pub struct Sleep {
    duration: Duration,
    timer: Option<Timer>,
}

impl Future for Sleep {
    type Output = Result<()>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.timer.is_none() {
            match Timer::start(self.duration) {
                Ok(timer) => self.timer = Some(timer),
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
        self.timer
            .as_ref()
            .map_or(Poll::Ready(Ok(())), |timer| timer.poll_expired(cx))
    }
}

impl core::fmt::Debug for Sleep {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Sleep")
            .field("duration", &self.duration)
            .finish_non_exhaustive()
    }
}

/// Bounds `future` by `duration`.
///
/// The output is the future's, or [`Error::TimedOut`] (`STATUS_IO_TIMEOUT`)
/// when the time passes first; the future is then dropped at once, which
/// cancels any IRP it has in flight (the IRP completes later; nothing the
/// provider may touch is freed before).
///
/// A send or receive cut this way loses track of its data: bytes may have
/// been sent, or taken from the stream, before the cancel took effect.
/// Close a connection after a timed-out transfer (or use the blocking
/// calls, whose timeout waits for the completion and keeps what arrived).
///
/// ```no_run
/// # async fn demo(connection: &wsk::Connection, buffer: wsk::PoolBuffer) -> Result<(), wsk::Error> {
/// use core::time::Duration;
/// let (received, buffer) = wsk::timeout(Duration::from_secs(2), connection.receive(buffer)).await?;
/// # let _ = (received?, buffer); Ok(()) }
/// ```
///
/// # IRQL
/// Create, poll and drop at `DISPATCH_LEVEL` or below.
///
/// # Errors
/// The output is [`Error::TimedOut`] on expiry, [`Error::Cancelled`] when
/// the driver's last deregistration cancelled the timer, or
/// [`Error::InsufficientResources`] when the timer cannot be allocated.
pub const fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    Timeout {
        future: Some(future),
        sleep: sleep(duration),
    }
}

pin_project_lite::pin_project! {
    /// The future of [`timeout`].
    #[must_use = "futures do nothing unless polled"]
    pub struct Timeout<F> {
        #[pin]
        future: Option<F>,
        sleep: Sleep,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(future) = this.future.as_mut().as_pin_mut() else {
            return Poll::Ready(Err(Error::TimedOut(NtStatus::IO_TIMEOUT)));
        };
        if let Poll::Ready(output) = future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        match Pin::new(this.sleep).poll(cx) {
            Poll::Ready(Ok(())) => {
                // Drop the bounded future now: its IRP is cancelled here,
                // not whenever the caller drops this one.
                this.future.set(None);
                Poll::Ready(Err(Error::TimedOut(NtStatus::IO_TIMEOUT)))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        }
    }
}
