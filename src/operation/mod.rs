//! The operation layer: one in-flight IRP and everything the provider may
//! touch while it is in flight, in one non-paged, reference-counted block.
//!
//! # The rule against use-after-free
//! The block holds the IRP, the payload (buffers, MDLs, addresses, the
//! `WSK_BUF`), the completion event and the waker. The owner
//! ([`Operation`]) holds one reference; submitting gives the completion
//! routine a second one, which it gives back exactly once. Dropping the owner
//! never frees anything the provider may still touch: with the IRP in
//! flight it cancels the IRP and marks the operation abandoned; whoever
//! drops the last reference frees the block (or, for a block embedded in
//! another, hands it back to its [`Home`]). A result nobody consumed is
//! released by [`Payload::unconsumed`] when a block is freed; a socket
//! created for a caller who has gone is closed by its socket block's home
//! (see `objects::socket::shared`).
//!
//! # Lifecycle
//! Every transition goes through [`crate::operation::lifecycle::Protocol`], which is
//! model-checked on its own:
//!
//! ```text
//! Idle --submit--> InFlight --completion routine--> Completed
//!                     |
//!                     +--owner dropped--> Abandoned --completion routine--> (freed)
//! ```

pub mod calls;
pub mod lifecycle;

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::future::Future;
use core::mem::ManuallyDrop;
use core::pin::Pin;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, Ordering};
use core::task::{Context, Poll};
use core::time::Duration;

use atomic_waker::AtomicWaker;

use self::lifecycle::{Completion, Lifecycle, Protocol};
use crate::abi::{IRP, NTSTATUS, STATUS_MORE_PROCESSING_REQUIRED, STATUS_PENDING};
use crate::error::{Error, Result};
use crate::kernel::event::{EventKind, RawEvent, WaitError};
use crate::kernel::irp::Irp;
use crate::kernel::irql::{AtMostApc, PassiveLevel};
use crate::kernel::pool::{PoolBox, PoolTag};
use crate::kernel::time::Deadline;
use crate::objects::registration::{InFlight, RegistrationRef};
use crate::objects::tracking::{Kind, Node, What};
use crate::status::NtStatus;

/// What an operation carries for the provider, and how to release a result
/// nobody took.
pub trait Payload: Send + 'static {
    /// Called once when the IRP has completed (in the completion routine,
    /// or by the submitter of a call that returned without completing it),
    /// before the owner can see the result. Runs at IRQL <=
    /// `DISPATCH_LEVEL`: it must not wait.
    fn completed(&mut self, _status: NtStatus, _information: usize) {}

    /// Called once when the block is freed if the operation succeeded but
    /// its result was never consumed (the caller dropped the future or timed
    /// out). Runs at IRQL <= `DISPATCH_LEVEL`, possibly in a completion
    /// routine: it must not wait.
    fn unconsumed(&mut self, _status: NtStatus, _information: usize) {}
}

impl Payload for () {}

/// How a submission is counted and found by deregistration.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Listing {
    /// Listed for deregistration's sweep, which cancels it (a client-level
    /// call: `WskSocket`, `WskSocketConnect`).
    Listed,
    /// A call on a socket: not listed. Deregistration's sweep closes the
    /// socket, and `WskCloseSocket` cancels and completes the socket's
    /// pending IRPs; deregistration waits for them through the guard.
    OnSocket,
    /// Clean-up (a close) that must run even while deregistration drains;
    /// not listed, and it cannot fail.
    CleanUp,
}

/// The guard of a submitted operation, and whether its node is listed.
struct Submitted {
    guard: InFlight,
    listed: bool,
}

/// The block shared by the owner and the completion routine.
///
/// # Invariants
/// `protocol` counts the owner and, while in flight, the completion routine;
/// the block is freed when the count drops to zero. `guard` and `payload`
/// are touched by one party at a time, as the lifecycle says. `node` is
/// the first field, so a node pointer is a block pointer; a listed
/// submission (a socket-creating call) links it in the registration's list
/// from submission until the completion (or the reclaim).
#[repr(C)]
struct Block<P> {
    node: Node,
    /// The block this one lives in, if any ([`Embedded`]).
    home: Option<Home>,
    protocol: Protocol,
    /// The status a call returned when its completion routine never ran
    /// (`STATUS_PENDING` otherwise: the result is then the IRP's).
    reclaimed: AtomicI32,
    /// `Payload::completed` ran (or is running): it runs once even if a
    /// rule-breaking provider's completion races the submitter's reclaim.
    hooked: AtomicBool,
    waker: AtomicWaker,
    done: RawEvent,
    irp: ManuallyDrop<Irp>,
    guard: UnsafeCell<Option<Submitted>>,
    payload: UnsafeCell<P>,
}

impl<P: Payload> Block<P> {
    /// How deregistration's sweep cancels a forgotten operation.
    const KIND: &'static Kind = &Kind {
        what: What::Operation,
        retain: retain::<P>,
        force: force::<P>,
    };
}

impl<P> Block<P> {
    fn state(&self) -> Lifecycle {
        self.protocol.state()
    }

    /// The completed result: the reclaimed status, or the IRP's `IoStatus`.
    fn result(&self) -> (NtStatus, usize) {
        let reclaimed = self.reclaimed.load(Ordering::Relaxed);
        if reclaimed == STATUS_PENDING {
            (self.irp.status(), self.irp.information())
        } else {
            (NtStatus(reclaimed), 0)
        }
    }
}

/// The owner of one operation.
///
/// # Invariants
/// `block` is live and this value owns one of its references.
pub struct Operation<P: Payload> {
    block: NonNull<Block<P>>,
}

// SAFETY: the block's shared fields are atomic or handed between the owner
// and the completion routine by the lifecycle; the payload is `Send`.
unsafe impl<P: Payload> Send for Operation<P> {}
// SAFETY: shared access only reads atomics and cancels the IRP, which the
// kernel synchronises.
unsafe impl<P: Payload> Sync for Operation<P> {}

impl<P: Payload> Operation<P> {
    /// A new idle operation with one IRP stack location.
    ///
    /// # Errors
    /// [`Error::InsufficientResources`] when the IRP or the block cannot be
    /// allocated.
    pub fn new(payload: P) -> Result<Self> {
        let irp = Irp::allocate(1)?;
        let init = |slot: *mut Block<P>| {
            let block = Block {
                node: Node::new(Block::<P>::KIND),
                home: None,
                protocol: Protocol::new(),
                reclaimed: AtomicI32::new(STATUS_PENDING),
                hooked: AtomicBool::new(false),
                waker: AtomicWaker::new(),
                done: RawEvent::zeroed(),
                irp: ManuallyDrop::new(irp),
                guard: UnsafeCell::new(None),
                payload: UnsafeCell::new(payload),
            };
            // SAFETY: `slot` is a fresh, aligned block of the right size.
            unsafe { slot.write(block) };
            // SAFETY: initialised just now; only the address is taken.
            let done = unsafe { &raw mut (*slot).done };
            // SAFETY: the event is at its final, non-paged address;
            // <= DISPATCH_LEVEL.
            unsafe { RawEvent::init(done, EventKind::Notification, false) };
        };
        // SAFETY: `init` initialises every field.
        let block = unsafe { PoolBox::new_with(PoolTag::OPERATION, init)? };
        // INVARIANT: the owner's one reference.
        Ok(Self {
            block: block.into_raw(),
        })
    }

    /// `idle` made idle again with its payload as it is, for the caller to
    /// reset (nothing allocated or copied), or a new operation with
    /// `make`'s payload.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn reuse_or(idle: Option<Self>, make: impl FnOnce() -> P) -> Result<Self> {
        Self::recycled(idle).map_or_else(|| Self::new(make()), Ok)
    }

    /// `idle`, if there is one and it can be made idle again
    /// ([`recycle_soon`](Self::recycle_soon)); otherwise it is let go.
    fn recycled(idle: Option<Self>) -> Option<Self> {
        let mut op = idle?;
        op.recycle_soon().then_some(op)
    }

    const fn block(&self) -> &Block<P> {
        // SAFETY: live while the owner holds its reference (invariant).
        unsafe { self.block.as_ref() }
    }

    /// The payload, while nobody else can touch it (idle or completed).
    ///
    /// # Panics
    /// If the operation is in flight.
    pub fn payload_mut(&mut self) -> &mut P {
        let state = self.block().state();
        assert!(
            matches!(state, Lifecycle::Idle | Lifecycle::Completed),
            "payload accessed while {state:?}"
        );
        // SAFETY: idle or completed: neither the provider nor the completion
        // routine touches the payload any more, and `&mut self` is unique.
        unsafe { &mut *self.block().payload.get() }
    }

    /// Submits the IRP: installs the completion routine, counts the
    /// operation against the registration, and calls `call` with the IRP
    /// and the payload (whose addresses stay valid until completion).
    ///
    /// A call that returns anything but `STATUS_PENDING` has completed its
    /// IRP (the WDM rule). If the completion routine did not run (a provider
    /// that breaks the rule), the returned status is the result and the
    /// routine's reference is reclaimed.
    ///
    /// # Errors
    /// [`Error::ProviderUnavailable`] when deregistration has begun; nothing
    /// is called then.
    ///
    /// # Safety
    /// `call` must pass the IRP to exactly one WSK function and return its
    /// status; the payload pointers it hands over must stay within the
    /// payload.
    pub unsafe fn submit(
        &mut self,
        registration: &RegistrationRef,
        call: impl FnOnce(*mut IRP, *mut P) -> NTSTATUS,
    ) -> Result<()> {
        let guard = registration.begin_operation()?;
        // SAFETY: forwarded contract; the guard counts this operation.
        unsafe { self.submit_with(guard, Listing::Listed, call) }
    }

    /// [`submit`](Self::submit) for a call on a socket: not listed for
    /// deregistration's sweep (no spin lock at submission or completion),
    /// which ends it by closing the socket: `WskCloseSocket` cancels and
    /// completes the socket's pending IRPs.
    ///
    /// # Errors
    /// As for `submit`.
    ///
    /// # Safety
    /// As for `submit`, and the caller holds the socket's run-down
    /// protection: the socket is listed (or being closed) until the call
    /// has returned.
    pub unsafe fn submit_on_socket(
        &mut self,
        registration: &RegistrationRef,
        call: impl FnOnce(*mut IRP, *mut P) -> NTSTATUS,
    ) -> Result<()> {
        let guard = registration.begin_operation()?;
        // SAFETY: forwarded contract; the guard counts this operation.
        unsafe { self.submit_with(guard, Listing::OnSocket, call) }
    }

    /// [`submit`](Self::submit) for clean-up work that must run even while
    /// deregistration drains (closing a socket nobody took).
    ///
    /// # Safety
    /// As for `submit`.
    pub unsafe fn submit_cleanup(
        &mut self,
        registration: &RegistrationRef,
        call: impl FnOnce(*mut IRP, *mut P) -> NTSTATUS,
    ) {
        let guard = registration.begin_cleanup();
        // SAFETY: forwarded contract. Clean-up (a close) is not listed for
        // the sweep: nothing is left to cancel, and deregistration waits for
        // it through the guard. It cannot fail (see `install_routine`).
        let _ = unsafe { self.submit_with(guard, Listing::CleanUp, call) };
    }

    /// Installs the completion routine: through `IoSetCompletionRoutineEx`
    /// when the registration has a device object (the I/O manager then
    /// holds the device, and so the driver image, until the routine has
    /// returned), else the `IoSetCompletionRoutine` port.
    ///
    /// # Errors
    /// [`Error::InsufficientResources`] when `IoSetCompletionRoutineEx`
    /// cannot allocate, unless `must_succeed` (clean-up that cannot be put
    /// off: the port is used then).
    #[allow(
        clippy::needless_pass_by_ref_mut,
        reason = "the IRP is written through the block pointer: exclusive access is the point"
    )]
    fn install_routine(
        &mut self,
        registration: &RegistrationRef,
        must_succeed: bool,
    ) -> Result<()> {
        let raw = self.block.as_ptr();
        // The `Irp` is only read: the routine goes into the IRP's own
        // memory. (A shared reference: an embedded block is reached
        // through its home's shared references.)
        let irp: &Irp = &self.block().irp;
        let installed = registration.with_device(|device| {
            let device = device?;
            // SAFETY: the IRP is not in flight; the routine and its context
            // (this block) stay valid until the routine has run, since it
            // holds a reference; the routine returns
            // STATUS_MORE_PROCESSING_REQUIRED. The device is held by the
            // registration's run-down protection meanwhile.
            Some(unsafe {
                irp.set_completion_routine_ex(device, on_complete::<P>, raw.cast::<c_void>())
            })
        });
        match installed {
            Some(Ok(())) => return Ok(()),
            Some(Err(error)) if !must_succeed => return Err(error),
            Some(Err(_)) | None => {}
        }
        // SAFETY: as above.
        unsafe { irp.set_completion_routine(on_complete::<P>, raw.cast::<c_void>()) };
        Ok(())
    }

    /// Submits with `guard` counting the operation, listed for
    /// deregistration's sweep as `listing` says.
    ///
    /// # Safety
    /// As for [`submit`](Self::submit).
    unsafe fn submit_with(
        &mut self,
        guard: InFlight,
        listing: Listing,
        call: impl FnOnce(*mut IRP, *mut P) -> NTSTATUS,
    ) -> Result<()> {
        let raw = self.block.as_ptr();
        assert_eq!(
            self.block().state(),
            Lifecycle::Idle,
            "an operation is submitted once"
        );
        self.install_routine(guard.registration(), listing == Listing::CleanUp)?;
        let missed_sweep;
        {
            let block = self.block();
            // Deregistration can cancel it from now on. If it has swept
            // already (it began between `begin_operation` and here), cancel
            // it right after the call instead.
            // SAFETY: the node is alive until the completion unlinks it.
            missed_sweep = listing == Listing::Listed
                && !unsafe { guard.registration().track(NonNull::from(&block.node)) };
            let listed = listing == Listing::Listed && !missed_sweep;
            // SAFETY: idle: only the owner touches the guard slot.
            unsafe { *block.guard.get() = Some(Submitted { guard, listed }) };
            // The completion routine gets its reference.
            block.protocol.submit();
        }
        // SAFETY: the block is live; only the pointer is read.
        let irp_ptr = unsafe { (*raw).irp.as_ptr() };
        // SAFETY: the payload lives in the block, which outlives the call.
        let payload = unsafe { (*raw).payload.get() };
        let returned = call(irp_ptr, payload);
        if missed_sweep {
            self.cancel();
        }
        if returned != STATUS_PENDING {
            let block = self.block();
            // The owner (us, exclusively) reads the result only after this
            // returns, so publishing it after the transition is fine.
            if block.protocol.reclaim() {
                // The routine has not run: take its part, but keep its
                // reference (the block is quarantined, see `reclaim`).
                block.reclaimed.store(returned, Ordering::Relaxed);
                if !block.hooked.swap(true, Ordering::AcqRel) {
                    // SAFETY: reclaimed: the payload is the owner's (us).
                    unsafe { (*block.payload.get()).completed(NtStatus(returned), 0) };
                }
                // SAFETY: reclaimed, so the guard slot is ours again.
                if let Some(Submitted { guard, listed }) = unsafe { (*block.guard.get()).take() } {
                    if listed {
                        // SAFETY: our live node, listed at submission.
                        unsafe { guard.registration().untrack(NonNull::from(&block.node)) };
                    }
                    guard.registration().quarantine();
                }
                block.done.set();
            }
        }
        Ok(())
    }

    /// Lets the operation finish on its own: the owner goes away without
    /// cancelling (a close nobody waits for). The completion routine frees
    /// the block.
    pub fn detach(self) {
        let this = ManuallyDrop::new(self);
        let block = this.block();
        let _ = block.protocol.abandon();
        release(this.block);
    }

    /// Whether the result is ready.
    pub fn is_complete(&self) -> bool {
        self.block().state() == Lifecycle::Completed
    }

    /// Polls for completion, registering the task's waker.
    pub fn poll_complete(&self, cx: &Context<'_>) -> Poll<()> {
        let block = self.block();
        if block.state() == Lifecycle::Completed {
            return Poll::Ready(());
        }
        block.waker.register(cx.waker());
        if block.state() == Lifecycle::Completed {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Waits for completion, at most `timeout` (`None`: no limit).
    ///
    /// # Errors
    /// [`WaitError::TimedOut`] when the timeout passed first;
    /// [`WaitError::IrqlTooHigh`] when the thread runs above `APC_LEVEL`.
    pub fn wait(&self, irql: &AtMostApc, timeout: Option<Duration>) -> Result<(), WaitError> {
        self.block().done.wait(irql, timeout)
    }

    /// Asks the provider to complete the IRP early (`IoCancelIrp`).
    pub fn cancel(&self) {
        let block = self.block();
        if block.state() == Lifecycle::InFlight {
            // The IRP lives as long as the block, which our reference keeps.
            let _ = block.irp.cancel();
        }
    }

    /// The completion status.
    ///
    /// # Panics
    /// If the operation has not completed.
    pub fn status(&self) -> NtStatus {
        assert!(self.is_complete(), "status read before completion");
        self.block().result().0
    }

    /// The completion status and `IoStatus.Information`, read once.
    ///
    /// # Panics
    /// If the operation has not completed.
    pub fn outcome(&self) -> (NtStatus, usize) {
        assert!(self.is_complete(), "outcome read before completion");
        self.block().result()
    }

    /// The status as a `Result`.
    ///
    /// # Errors
    /// The typed error for a failure status.
    pub fn result(&self) -> Result<usize> {
        let (status, information) = self.outcome();
        status.ok().map(|()| information)
    }

    /// Whether the call returned without completing its IRP (a provider
    /// that broke the WDM rule): the block stays quarantined.
    pub fn was_reclaimed(&self) -> bool {
        self.block().reclaimed.load(Ordering::Relaxed) != STATUS_PENDING
    }

    /// Drops the waker the last poll registered, so that an operation set
    /// aside for reuse does not keep the finished task alive.
    pub fn forget_waker(&self) {
        drop(self.block().waker.take());
    }

    /// Marks the result as taken: [`Payload::unconsumed`] will not run.
    pub fn consume(&self) {
        self.block().protocol.consume();
    }

    /// Makes a completed operation idle again, its IRP reset with
    /// `IoReuseIrp`, for another submission of the same block: no pool
    /// block and no IRP allocated. Only when the owner is the last party
    /// (see [`Protocol::recycle`]); the payload is the caller's to reset.
    /// Returns whether it recycled.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    #[allow(
        clippy::needless_pass_by_ref_mut,
        reason = "the block is reset through its pointer: exclusive access is the point"
    )]
    pub fn recycle(&mut self) -> bool {
        // A call the provider returned from without completing broke the
        // WDM rule once: its IRP is not trusted again, even after a late
        // completion gave the quarantined reference back.
        if self.was_reclaimed() || !self.block().protocol.recycle() {
            return false;
        }
        {
            let block = self.block();
            // The completion routine took the guard, and a reclaimed call
            // is never recycled (its routine's reference is still counted).
            debug_assert!(
                // SAFETY: idle: only the owner touches the guard slot.
                unsafe { (*block.guard.get()).is_none() },
                "a recycled operation holds no guard"
            );
            // `reclaimed` is still STATUS_PENDING (checked above). The event
            // is cleared here, where it cannot race its `KeSetEvent`: the
            // routine set it before it gave its reference back, and
            // `recycle` saw that reference gone (Acquire). A lazy clear in
            // the next wait could not be ordered against the set
            // (`KeClearEvent` is a plain store) and could miss it.
            block.hooked.store(false, Ordering::Relaxed);
            block.done.clear();
            drop(block.waker.take());
        }
        // SAFETY: idle again and owned by us alone: nothing else touches
        // the IRP, which is not in flight.
        unsafe { self.block().irp.reuse_unshared() };
        true
    }

    /// Makes the operation idle, if it is not already: as
    /// [`recycle`](Self::recycle), looking again a bounded number of
    /// times (the owner may run on as soon as the completion routine has
    /// signalled, a few instructions before the routine gives its
    /// reference back). Allows those instructions, never a wait. Returns
    /// whether the operation is idle.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    pub fn recycle_soon(&mut self) -> bool {
        if self.block().state() == Lifecycle::Idle {
            return true;
        }
        if self.was_reclaimed() {
            return false;
        }
        for _ in 0..RECYCLE_SPINS {
            if self.recycle() {
                return true;
            }
            crate::sys::yield_processor();
        }
        false
    }
}

/// The block an [`Embedded`] operation lives in, and what happens when the
/// operation's last reference goes: instead of being freed, the operation
/// is handed back to its home.
///
/// # IRQL
/// `released` runs wherever the last reference goes: at `DISPATCH_LEVEL` or
/// below, possibly in a completion routine.
#[derive(Clone, Copy)]
pub struct Home {
    /// The enclosing block, passed back to `released`.
    pub parent: NonNull<c_void>,
    /// Called once per life of the operation, with its last reference gone
    /// and whether a completed result was never consumed. The operation is
    /// dead then: its home may revive it ([`Embedded::revive`]) or free
    /// the enclosing block.
    pub released: unsafe fn(parent: NonNull<c_void>, result_untaken: bool),
}

/// An operation block inside another block (a socket's own operation), with
/// its IRP: allocated with the enclosing block, used again and again for
/// the enclosing block's calls, and freed with it.
///
/// # Invariants
/// Once [`settle`](Self::settle)d, its `home` is set and the block stays at
/// its address until dropped; it is dropped only while dead (no reference).
#[repr(transparent)]
pub struct Embedded<P: Payload> {
    block: Block<P>,
}

impl<P: Payload> Embedded<P> {
    /// A block with `payload` and a new IRP, to be placed in its home and
    /// then [`settle`](Self::settle)d.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// [`Error::InsufficientResources`] when the IRP cannot be allocated.
    pub fn new(payload: P) -> Result<Self> {
        let irp = Irp::allocate(1)?;
        Ok(Self {
            block: Block {
                node: Node::new(Block::<P>::KIND),
                home: None,
                protocol: Protocol::new(),
                reclaimed: AtomicI32::new(STATUS_PENDING),
                hooked: AtomicBool::new(false),
                waker: AtomicWaker::new(),
                done: RawEvent::zeroed(),
                irp: ManuallyDrop::new(irp),
                guard: UnsafeCell::new(None),
                payload: UnsafeCell::new(payload),
            },
        })
    }

    /// Readies the block at its final address and hands out its first
    /// owner (the block is idle, with one reference).
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    ///
    /// # Safety
    /// `this` is the block's final address, in non-paged memory inside
    /// `home.parent`, where it stays until dropped; called once, before
    /// anything else uses the block; `home.released` may be called with
    /// `home.parent` whenever the operation's last reference goes.
    pub unsafe fn settle(this: *mut Self, home: Home) -> Operation<P> {
        // SAFETY: per the contract, `this` is ours alone for now.
        let block = unsafe { &raw mut (*this).block };
        // SAFETY: as above.
        unsafe { (*block).home = Some(home) };
        // SAFETY: as above; only the field's address is taken.
        let done = unsafe { &raw mut (*block).done };
        // SAFETY: the event is at its final, non-paged address;
        // <= DISPATCH_LEVEL.
        unsafe { RawEvent::init(done, EventKind::Notification, false) };
        // INVARIANT: the one reference `Protocol::new` counted.
        Operation {
            // SAFETY: from a non-null `this`.
            block: unsafe { NonNull::new_unchecked(block) },
        }
    }

    /// A dead operation (its last reference gone, [`Home::released`]
    /// called) made idle again, its IRP reset with `IoReuseIrp`, with one
    /// new owner. The payload is the caller's to reset.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    ///
    /// # Safety
    /// The operation is dead and the caller has it to itself (its home
    /// hands it to one party).
    pub unsafe fn revive(&self) -> Operation<P> {
        let block = &self.block;
        // The last release (AcqRel) ordered everything the completion
        // routine did (its `KeSetEvent` included) before this.
        block.protocol.revive();
        block.reclaimed.store(STATUS_PENDING, Ordering::Relaxed);
        block.hooked.store(false, Ordering::Relaxed);
        block.done.clear();
        drop(block.waker.take());
        // SAFETY: dead, so not in flight, and ours alone (contract).
        unsafe { block.irp.reuse_unshared() };
        // INVARIANT: the reference `revive` counted.
        Operation {
            block: NonNull::from(block),
        }
    }

    /// Whether the operation's last call returned without completing its
    /// IRP (a provider that broke the WDM rule; see
    /// [`Operation::was_reclaimed`]): its home must not use it again.
    pub fn was_reclaimed(&self) -> bool {
        self.block.reclaimed.load(Ordering::Relaxed) != STATUS_PENDING
    }

    /// The payload of a dead operation.
    ///
    /// # Safety
    /// As for [`revive`](Self::revive); the reference is not kept past
    /// the caller's exclusive use.
    #[allow(
        clippy::mut_from_ref,
        reason = "the home hands a dead operation to one party at a time"
    )]
    pub unsafe fn payload_of_dead(&self) -> &mut P {
        // SAFETY: dead and exclusive (contract).
        unsafe { &mut *self.block.payload.get() }
    }
}

impl<P: Payload> Drop for Embedded<P> {
    fn drop(&mut self) {
        // SAFETY: dead (invariant), so the IRP is not in flight; dropped
        // exactly once, here.
        unsafe { ManuallyDrop::drop(&mut self.block.irp) };
    }
}

/// How many times [`Operation::recycle_soon`] looks again for the completion routine
/// to let go (it is past signalling the owner, at `DISPATCH_LEVEL` on
/// Windows) before it allocates instead. Not measured on Windows.
pub const RECYCLE_SPINS: usize = 64;

/// One operation set aside for the next call of its kind on a socket (its
/// send, its receive), so that steady traffic allocates nothing: the next
/// call [`take`](Spare::take)s it and recycles it, and gives it back with
/// [`put`](Spare::put) once it has completed. Concurrent calls find the slot
/// empty or full and fall back to a fresh allocation, or free theirs.
///
/// # IRQL
/// Every method at `DISPATCH_LEVEL` or below.
///
/// # Invariants
/// `slot` is null or owns one reference to a completed (or idle) block.
pub struct Spare<P: Payload> {
    slot: AtomicPtr<Block<P>>,
}

// SAFETY: the slot hands whole operations between threads, and operations
// are `Send`.
unsafe impl<P: Payload> Send for Spare<P> {}
// SAFETY: the slot is only swapped atomically.
unsafe impl<P: Payload> Sync for Spare<P> {}

impl<P: Payload> Spare<P> {
    /// An empty slot.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            slot: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// The operation set aside, made idle again; `None` when the slot is
    /// empty, or when its completion routine has not let go of it yet
    /// (it is then freed when it does).
    pub fn take(&self) -> Option<Operation<P>> {
        Operation::recycled(self.take_raw())
    }

    /// Keeps `op` (idle or completed) whatever the reuse switch says, if the
    /// slot is free; otherwise hands it back.
    pub fn keep(&self, op: Operation<P>) -> Option<Operation<P>> {
        let op = ManuallyDrop::new(op);
        match self.slot.compare_exchange(
            ptr::null_mut(),
            op.block.as_ptr(),
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => None,
            Err(_) => Some(ManuallyDrop::into_inner(op)),
        }
    }

    /// Whether nothing is set aside.
    pub fn is_empty(&self) -> bool {
        self.slot.load(Ordering::Relaxed).is_null()
    }

    /// Frees the operation set aside, if any.
    pub fn clear(&self) {
        drop(self.take_raw());
    }

    /// Sets `op` aside if it has completed and the slot is free; otherwise
    /// lets it go.
    pub fn put(&self, op: Operation<P>) {
        if !op.is_complete() || !crate::kernel::idle::reuse_allowed() {
            return;
        }
        op.forget_waker();
        let op = ManuallyDrop::new(op);
        if self
            .slot
            .compare_exchange(
                ptr::null_mut(),
                op.block.as_ptr(),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_err()
        {
            drop(ManuallyDrop::into_inner(op));
        }
    }
}

impl<P: Payload> Default for Spare<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Payload> Drop for Spare<P> {
    fn drop(&mut self) {
        drop(self.take_raw());
    }
}

impl<P: Payload> Spare<P> {
    /// The operation set aside, as it is.
    fn take_raw(&self) -> Option<Operation<P>> {
        let block = NonNull::new(self.slot.swap(ptr::null_mut(), Ordering::Acquire))?;
        // INVARIANT: the slot's reference becomes the owner's.
        Some(Operation { block })
    }
}

impl<P: Payload> Drop for Operation<P> {
    fn drop(&mut self) {
        let block = self.block();
        if block.state() == Lifecycle::InFlight {
            // Nobody will poll again: let go of the task now rather than in
            // the completion routine, at DISPATCH_LEVEL on another thread.
            drop(block.waker.take());
            // The block (and so the IRP) is alive: we still hold a reference.
            let _ = block.irp.cancel();
            if block.protocol.abandon() {
                // The completion routine finishes the job.
                release(self.block);
                return;
            }
        }
        release(self.block);
    }
}

/// Drops one reference; the last one frees the block, releasing an
/// unconsumed result first.
fn release<P: Payload>(block: NonNull<Block<P>>) {
    // SAFETY: the caller owned a reference, so the block is live.
    let shared = unsafe { block.as_ref() };
    let Some(result_untaken) = shared.protocol.release() else {
        return;
    };
    if let Some(home) = shared.home {
        // SAFETY: an embedded block's last reference: its home decides what
        // comes next (per `Home`'s contract); nothing here touches the
        // block afterwards.
        unsafe { (home.released)(home.parent, result_untaken) };
        return;
    }
    let (status, information) = shared.result();
    if result_untaken && status.is_success() {
        // SAFETY: the last reference: nobody else touches the payload.
        unsafe { (*shared.payload.get()).unconsumed(status, information) };
    }
    // SAFETY: the last reference: the block came from `PoolBox::into_raw`
    // with this tag and is freed once. The IRP is not in flight (its
    // routine ran, or it was never submitted).
    let mut owned = unsafe { PoolBox::from_raw(block, PoolTag::OPERATION) };
    // SAFETY: dropped exactly once, here.
    unsafe { ManuallyDrop::drop(&mut owned.irp) };
    drop(owned);
}

/// The completion routine of every operation.
///
/// # Safety
/// Called by the I/O manager with the IRP of the operation whose block is
/// `context`, at IRQL <= `DISPATCH_LEVEL`.
unsafe extern "system" fn on_complete<P: Payload>(
    _device: *mut c_void,
    irp: *mut IRP,
    context: *mut c_void,
) -> NTSTATUS {
    let raw = context.cast::<Block<P>>();
    // SAFETY: the routine's reference keeps the block alive (a reclaimed
    // call keeps it too: the block is quarantined until this runs).
    let block = unsafe { &*raw };
    // SAFETY: a non-null block pointer from the context.
    let this = unsafe { NonNull::new_unchecked(raw) };
    // The result stays in the IRP's IoStatus, where the provider put it; the
    // owner reads it there once it sees the transition.
    let _ = irp;
    if block.state() != Lifecycle::Completed && !block.hooked.swap(true, Ordering::AcqRel) {
        // In flight or abandoned: until the transition below, the payload is
        // this routine's.
        // SAFETY: as just said.
        unsafe { (*block.payload.get()).completed(block.irp.status(), block.irp.information()) };
    }
    match block.protocol.complete() {
        Completion::Owned => {
            block.done.set();
            block.waker.wake();
        }
        Completion::Orphaned => {}
        Completion::Stale => {
            // A provider that returned a non-pending status and completed
            // the IRP later anyway broke the WDM rule; the submitter took the
            // result then. Give back the quarantined reference, nothing more.
            release(this);
            return STATUS_MORE_PROCESSING_REQUIRED;
        }
    }
    // SAFETY: completed by this routine: the owner does not touch the guard
    // slot once it was submitted.
    let submitted = unsafe { (*block.guard.get()).take() };
    if let Some(Submitted {
        guard,
        listed: true,
    }) = &submitted
    {
        // SAFETY: our live node, listed at submission.
        unsafe { guard.registration().untrack(NonNull::from(&block.node)) };
    }
    // `release` may start clean-up work (closing an untaken socket), which
    // counts itself in flight before this guard stops counting.
    release(this);
    drop(submitted);
    STATUS_MORE_PROCESSING_REQUIRED
}

/// The sweep's `retain`: one more reference on a linked block.
///
/// # Safety
/// `node` is the node of an allocated `Block<P>`, under the lock.
unsafe fn retain<P: Payload>(node: NonNull<Node>) -> bool {
    // SAFETY: per the contract; the node is the block's first field.
    unsafe { node.cast::<Block<P>>().as_ref() }
        .protocol
        .retain()
}

/// The sweep's `force`: cancels the IRP if it is still in flight, then gives
/// back the reference `retain` took.
///
/// # Safety
/// `node` is the node of a `Block<P>` retained by the sweep.
unsafe fn force<P: Payload>(node: NonNull<Node>) -> bool {
    let block = node.cast::<Block<P>>();
    // SAFETY: retained, so alive.
    let shared = unsafe { block.as_ref() };
    let in_flight = matches!(shared.state(), Lifecycle::InFlight | Lifecycle::Abandoned);
    if in_flight {
        // The reference keeps the IRP alive; <= DISPATCH_LEVEL.
        let _ = shared.irp.cancel();
    }
    release(block);
    in_flight
}

/// Awaits an operation's completion: as a future, or blocking with a
/// deadline. The flows of the socket layer are written once, generic over
/// this.
pub trait Waiter {
    /// Completes when `op` has completed. A blocking waiter whose deadline
    /// passes cancels the IRP, waits a bounded time for the completion
    /// (escalating, see [`Blocking`]), and returns [`Error::TimedOut`]: the
    /// operation may then still be in flight, so a flow checks
    /// [`Operation::is_complete`] before it touches the payload.
    fn complete<'a, P: Payload>(
        &'a mut self,
        op: &'a Operation<P>,
    ) -> impl Future<Output = Result<()>> + 'a;
}

/// Waits by awaiting.
pub struct Await;

impl Waiter for Await {
    fn complete<'a, P: Payload>(
        &'a mut self,
        op: &'a Operation<P>,
    ) -> impl Future<Output = Result<()>> + 'a {
        CompletionFuture { op }
    }
}

struct CompletionFuture<'a, P: Payload> {
    op: &'a Operation<P>,
}

impl<P: Payload> Future for CompletionFuture<'_, P> {
    type Output = Result<()>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        // An executor task whose operations keep completing inline yields
        // once its budget is spent (`consume_budget` wakes it again).
        if self.op.is_complete() && !crate::executor::consume_budget(cx) {
            return Poll::Pending;
        }
        self.op.poll_complete(cx).map(Ok)
    }
}

/// How long a timed-out blocking call waits at each step of its escalation.
///
/// The steps: after the cancel; for the abortive disconnect's own call and
/// after it; and after closing the socket. A blocking call returns within
/// its timeout (counted from its first wait that blocks) plus four of
/// these, whatever the provider does.
///
/// # IRQL
/// Any (a constant).
pub const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// What a timed-out blocking call may do, beyond `IoCancelIrp`, to make the
/// provider give its IRP back: the socket layer's answer for the socket the
/// call works on.
pub trait Escalation {
    /// Ends the connection abortively (`WskDisconnect` with
    /// `WSK_FLAG_ABORTIVE`), waiting at most `grace` for that call.
    fn abort(&self, irql: &AtMostApc, grace: Duration);
    /// Closes the socket (`WskCloseSocket` cancels and completes every IRP
    /// pending on it); the handle answers a typed error afterwards.
    fn close(&self);
}

/// No socket to escalate on (a call that creates one).
pub struct NoEscalation;

impl<E: Escalation> Escalation for &E {
    fn abort(&self, irql: &AtMostApc, grace: Duration) {
        (**self).abort(irql, grace);
    }
    fn close(&self) {
        (**self).close();
    }
}

impl Escalation for NoEscalation {
    fn abort(&self, _irql: &AtMostApc, _grace: Duration) {}
    fn close(&self) {}
}

/// Waits by blocking the thread, with one deadline for a whole flow,
/// counted from the first wait that blocks (a call that completed inline
/// costs no wait and no clock reading).
///
/// When the deadline passes it cancels the IRP and waits
/// [`CANCEL_GRACE`]; if the provider still holds the IRP (a graceful
/// disconnect to a peer that stopped reading, a provider without cancel
/// routines) it escalates: an abortive disconnect, then closing the socket,
/// each followed by the same grace. If even that does not bring the IRP
/// back, the call returns anyway and leaves the operation abandoned (its
/// block is freed whenever the provider completes it).
pub struct Blocking<E: Escalation = NoEscalation> {
    irql: AtMostApc,
    timeout: Duration,
    /// Set by the first wait that blocks.
    deadline: Option<Deadline>,
    escalation: E,
}

impl Blocking {
    /// A waiter for a flow that must finish within `timeout`.
    pub const fn new(irql: &PassiveLevel, timeout: Duration) -> Self {
        Self {
            irql: irql.at_most_apc(),
            timeout,
            deadline: None,
            escalation: NoEscalation,
        }
    }
}

impl<E: Escalation> Blocking<E> {
    /// The same waiter, escalating with `escalation` after a timeout.
    pub fn escalating<F: Escalation>(self, escalation: F) -> Blocking<F> {
        Blocking {
            irql: self.irql,
            timeout: self.timeout,
            deadline: self.deadline,
            escalation,
        }
    }

    /// Waits for `op` without a future: the blocking paths that need no
    /// flow (a send, a receive) call this directly. As
    /// [`Waiter::complete`].
    ///
    /// # Errors
    /// As [`Waiter::complete`].
    pub fn block<P: Payload>(&mut self, op: &Operation<P>) -> Result<()> {
        if op.is_complete() {
            return Ok(());
        }
        let timeout = self.timeout;
        let deadline = *self
            .deadline
            .get_or_insert_with(|| Deadline::after(timeout));
        match op.wait(&self.irql, Some(deadline.remaining())) {
            Ok(()) => return Ok(()),
            Err(WaitError::IrqlTooHigh(error)) => {
                // Nothing may wait here: cancel and leave it abandoned.
                op.cancel();
                return Err(error.into());
            }
            Err(WaitError::TimedOut) => {}
        }
        let timed_out = Err(Error::TimedOut(NtStatus::IO_TIMEOUT));
        op.cancel();
        if self.settles(op) {
            return timed_out;
        }
        self.escalation.abort(&self.irql, CANCEL_GRACE);
        if self.settles(op) {
            return timed_out;
        }
        self.escalation.close();
        let _ = self.settles(op);
        timed_out
    }

    /// Waits one grace period for `op`.
    fn settles<P: Payload>(&self, op: &Operation<P>) -> bool {
        op.wait(&self.irql, Some(CANCEL_GRACE)).is_ok()
    }
}

impl<E: Escalation> Waiter for Blocking<E> {
    fn complete<'a, P: Payload>(
        &'a mut self,
        op: &'a Operation<P>,
    ) -> impl Future<Output = Result<()>> + 'a {
        core::future::ready(self.block(op))
    }
}

/// Runs a flow driven by a [`Blocking`] waiter: every await in it is ready
/// at once, so one poll finishes it.
pub fn run_blocking<T>(flow: impl Future<Output = T>) -> T {
    let mut flow = core::pin::pin!(flow);
    match flow
        .as_mut()
        .poll(&mut Context::from_waker(core::task::Waker::noop()))
    {
        Poll::Ready(value) => value,
        Poll::Pending => unreachable!("a blocking flow never waits through its waker"),
    }
}

#[cfg(all(test, wsk_emulator))]
#[path = "tests.rs"]
mod tests;
