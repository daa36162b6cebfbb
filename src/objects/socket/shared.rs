//! One WSK socket shared by its handle, the operation that created it, and
//! deregistration's sweep: the `WSK_SOCKET`, its run-down protection, and a
//! close operation set aside so that closing never fails for want of
//! memory.
//!
//! Exactly one party closes the socket (the run-down picks it): the handle
//! when it is closed or dropped, deregistration when the driver forgot the
//! handle or still holds it, the creating operation's clean-up when its
//! caller went away, or a timeout that had to give up on the socket. Calls
//! hold the protection only while they are inside the provider, so a close
//! never overlaps a call, and pending IRPs are left to the close, which
//! cancels them.
//!
//! When the last reference goes, the block (with its close operation, if
//! that came back, and its send and receive operations) is set aside in
//! the registration for the next socket, so that a driver connecting again
//! and again allocates nothing in steady state.

use core::cell::UnsafeCell;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use core::time::Duration;

use crate::abi::{IRP, WSK_SOCKET};
use crate::error::{Error, Result};
use crate::kernel::irql::AtMostApc;
use crate::kernel::pool::{PoolBox, PoolTag};
use crate::objects::registration::{Missing, RegistrationRef};
use crate::objects::rundown::{Begin, RunDown};
use crate::objects::tracking::{Kind, Node, What, try_retain};
use crate::operation::calls::{self, Address, Data, SocketHandle, SocketKind};
use crate::operation::{Escalation, Operation, Spare};
use crate::status::NtStatus;

/// Socket blocks.
const TAG: PoolTag = PoolTag::new(*b"WskS");

/// The shared block.
///
/// # Invariants
/// `refs` counts the [`SocketRef`]s and any sweep that retained the block.
/// `raw` is null until the provider created the socket, then a live socket
/// until the run-down's winner closes it. `closer` is touched only by that
/// winner. `node` is the first field; it is linked from the socket's
/// creation until its close.
#[repr(C)]
struct SocketBlock {
    node: Node,
    refs: AtomicUsize,
    rundown: RunDown,
    raw: AtomicPtr<WSK_SOCKET>,
    kind: SocketKind,
    closer: UnsafeCell<Option<Operation<()>>>,
    /// A send and a receive operation set aside for the next ones.
    spares: [Spare<Data>; 2],
    /// An operation set aside for the next bind, connect or address query.
    address: Spare<Address>,
    registration: RegistrationRef,
}

/// Which way a transfer goes (which spare it uses).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Direction {
    /// `WskSend`.
    Send = 0,
    /// `WskReceive`.
    Receive = 1,
}

/// A counted reference to a socket block.
///
/// # Invariants
/// The block is live and this value owns one of its references.
pub struct SocketRef {
    block: NonNull<SocketBlock>,
}

// SAFETY: the block's shared state is atomic, or the closer, which the
// run-down hands to one party; WSK sockets may be used from any thread.
unsafe impl Send for SocketRef {}
// SAFETY: as above: shared access only enters the run-down or closes.
unsafe impl Sync for SocketRef {}

const KIND: &Kind = &Kind {
    what: What::Socket,
    retain,
    force,
};

/// A closed socket's block, set aside in its registration for the next
/// socket.
///
/// # Invariants
/// No [`SocketRef`] refers to it; its node is unlinked; its socket was
/// closed or never created.
pub struct IdleSocket {
    block: PoolBox<SocketBlock>,
}

// SAFETY: nothing refers to an idle block but its holder (invariant), so
// moving it to another thread shares nothing; its operations and its
// registration reference are `Send`.
#[allow(clippy::non_send_fields_in_send_ty, reason = "see the SAFETY comment")]
unsafe impl Send for IdleSocket {}

impl SocketRef {
    /// A block for a socket about to be created, with its close operation:
    /// `idle`'s, if the registration had one set aside.
    ///
    /// # Errors
    /// [`Error::InsufficientResources`] when the block or the close
    /// operation cannot be allocated.
    pub fn new(
        kind: SocketKind,
        registration: &RegistrationRef,
        idle: Option<IdleSocket>,
    ) -> Result<Self> {
        if let Some(idle) = idle {
            return Self::reuse(idle, kind);
        }
        let closer = Operation::new(())?;
        let block = SocketBlock {
            node: Node::new(KIND),
            refs: AtomicUsize::new(1),
            rundown: RunDown::new(),
            raw: AtomicPtr::new(ptr::null_mut()),
            kind,
            closer: UnsafeCell::new(Some(closer)),
            spares: [Spare::new(), Spare::new()],
            address: Spare::new(),
            registration: registration.clone(),
        };
        let block = PoolBox::new(block, TAG)?;
        // INVARIANT: the one reference counted at creation.
        Ok(Self {
            block: block.into_raw(),
        })
    }

    /// An idle block made new for a socket of `kind`: its spares stay,
    /// and its close operation if it came back.
    fn reuse(idle: IdleSocket, kind: SocketKind) -> Result<Self> {
        let mut block = idle.block;
        let shared = &mut *block;
        // The close operation that came back has long completed: its
        // routine has let go by now, or it is not reused.
        let closer = shared.closer.get_mut();
        if !closer.as_mut().is_some_and(Operation::recycle_soon) {
            *closer = Some(Operation::new(())?);
        }
        shared.node = Node::new(KIND);
        *shared.refs.get_mut() = 1;
        shared.rundown = RunDown::new();
        *shared.raw.get_mut() = ptr::null_mut();
        shared.kind = kind;
        // INVARIANT: the one reference counted above.
        Ok(Self {
            block: block.into_raw(),
        })
    }

    const fn shared(&self) -> &SocketBlock {
        // SAFETY: live while this reference is held (invariant).
        unsafe { self.block.as_ref() }
    }

    /// The registration the socket belongs to.
    pub const fn registration(&self) -> &RegistrationRef {
        &self.shared().registration
    }

    /// The operation set aside for the next bind, connect or address query.
    pub const fn address_spare(&self) -> &Spare<Address> {
        &self.shared().address
    }

    /// The operation set aside for the next transfer going `direction`.
    pub const fn spare(&self, direction: Direction) -> &Spare<Data> {
        &self.shared().spares[direction as usize]
    }

    /// The provider created the socket: records it and lists it for
    /// deregistration, or closes it at once if deregistration has swept
    /// already. Called once, by the creating operation's completion.
    pub fn attach(&self, raw: NonNull<WSK_SOCKET>) {
        let shared = self.shared();
        shared.raw.store(raw.as_ptr(), Ordering::Release);
        // SAFETY: the node lives in the block, unlinked when the socket is
        // closed, before the block can be freed.
        if !unsafe { shared.registration.track(NonNull::from(&shared.node)) } {
            self.close_detached();
        }
    }

    /// The socket's kind.
    pub const fn kind(&self) -> SocketKind {
        self.shared().kind
    }

    /// Whether the provider created the socket.
    pub fn is_attached(&self) -> bool {
        !self.shared().raw.load(Ordering::Acquire).is_null()
    }

    /// Run-down protection for one call into the provider.
    ///
    /// # Errors
    /// [`Error::ForcedClosed`] (`STATUS_FILE_FORCED_CLOSED`) once the socket
    /// is closed or closing (by deregistration, say).
    pub fn enter(&self) -> Result<Entered<'_>> {
        let shared = self.shared();
        let raw = NonNull::new(shared.raw.load(Ordering::Acquire));
        let Some(raw) = raw.filter(|_| shared.rundown.acquire()) else {
            return Err(Error::ForcedClosed(NtStatus::FILE_FORCED_CLOSED));
        };
        Ok(Entered {
            shared,
            // INVARIANT: a live socket of `kind`: created, and not closed
            // while the protection is held.
            handle: SocketHandle::new(raw, shared.kind),
        })
    }

    /// Begins the close: if this caller wins the run-down and no call is
    /// inside, submits `WskCloseSocket` and returns the operation to await.
    /// `None` when someone else closes it (or the last call to leave will).
    pub fn close(&self) -> Option<Operation<()>> {
        let shared = self.shared();
        if !self.is_attached() {
            return None;
        }
        match shared.rundown.begin() {
            Begin::EndNow => Some(close_now(shared)),
            Begin::EndedByLastCall | Begin::Lost => None,
        }
    }

    /// Gives the completed close operation back to the block, for the next
    /// socket that reuses it. Only the caller that [`close`](Self::close)
    /// handed it to, once it has completed.
    pub fn close_done(&self, op: Operation<()>) {
        if !op.is_complete() || !crate::kernel::idle::reuse_allowed() {
            return;
        }
        op.forget_waker();
        // SAFETY: the run-down's winner (our caller) took the closer and
        // the socket is closed: nobody else touches the slot again.
        let slot = unsafe { &mut *self.shared().closer.get() };
        *slot = Some(op);
    }

    /// [`close`](Self::close) without waiting: the completion frees what
    /// the close used. Safe at `DISPATCH_LEVEL`.
    pub fn close_detached(&self) {
        if let Some(op) = self.close() {
            op.detach();
        }
    }
}

impl Escalation for SocketRef {
    fn abort(&self, irql: &AtMostApc, grace: Duration) {
        if self.registration().is_missing(Missing::Disconnect) {
            return;
        }
        let submitted = self
            .enter()
            .and_then(|entered| calls::disconnect(entered.handle(), self.registration(), true));
        if let Ok(op) = submitted {
            // Dropped after the grace: abandoned if still pending.
            if op.wait(irql, Some(grace)).is_ok() {
                self.registration().note(Missing::Disconnect, &op.result());
            }
        }
    }

    fn close(&self) {
        self.close_detached();
    }
}

/// Closes the socket: the run-down chose the caller and no call is inside.
fn close_now(shared: &SocketBlock) -> Operation<()> {
    // SAFETY: the block's own node, only ever linked in its registration.
    unsafe { shared.registration.untrack(NonNull::from(&shared.node)) };
    // SAFETY: only the run-down's winner touches the closer, once.
    let mut op = unsafe { (*shared.closer.get()).take() }.expect("a socket is closed once");
    let raw = shared.raw.load(Ordering::Acquire);
    // INVARIANT: created (the caller checked) and not yet closed.
    let handle = SocketHandle::new(
        NonNull::new(raw).expect("only created sockets close"),
        shared.kind,
    );
    let entry = handle
        .basic()
        .WskCloseSocket
        .expect("every WSK socket can be closed");
    let raw = handle.raw();
    // SAFETY: a live socket's entry; no other call on it is inside the
    // provider (run-down), and none may follow.
    let call = |irp: *mut IRP, _: *mut ()| unsafe { entry(raw, irp) };
    // SAFETY: one WSK call with the operation's IRP; a close counts in
    // flight even while deregistration drains.
    unsafe { op.submit_cleanup(&shared.registration, call) };
    op
}

/// One call inside the provider on a socket.
pub struct Entered<'a> {
    shared: &'a SocketBlock,
    handle: SocketHandle,
}

impl Entered<'_> {
    /// The socket, valid while `self` lives.
    pub const fn handle(&self) -> &SocketHandle {
        &self.handle
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        if self.shared.rundown.release() {
            // A close began while this call was inside: the last call out
            // closes, without waiting.
            close_now(self.shared).detach();
        }
    }
}

impl Clone for SocketRef {
    fn clone(&self) -> Self {
        self.shared().refs.fetch_add(1, Ordering::Relaxed);
        // INVARIANT: the reference just taken.
        Self { block: self.block }
    }
}

impl Drop for SocketRef {
    fn drop(&mut self) {
        release(self.block);
    }
}

fn release(block: NonNull<SocketBlock>) {
    // SAFETY: the caller holds a reference.
    if unsafe { block.as_ref() }
        .refs
        .fetch_sub(1, Ordering::AcqRel)
        == 1
    {
        // SAFETY: the last reference to a block from `PoolBox::into_raw`.
        // A created socket was closed (whoever holds a handle closes it on
        // drop), which unlinked the node.
        let block = unsafe { PoolBox::from_raw(block, TAG) };
        let registration = block.registration.clone();
        // INVARIANT: no reference left, unlinked, closed or never created.
        // Freed (with its operations) if the registration keeps no more.
        registration.set_aside(IdleSocket { block });
    }
}

/// The sweep's `retain` for a socket.
///
/// # Safety
/// `node` is the node of an allocated `SocketBlock`, under the lock.
unsafe fn retain(node: NonNull<Node>) -> bool {
    // SAFETY: per the contract; the node is the first field.
    try_retain(&unsafe { node.cast::<SocketBlock>().as_ref() }.refs)
}

/// The sweep's `force` for a socket: closes it, abortively (or leaves it to
/// the last call inside).
///
/// # Safety
/// `node` is the node of a `SocketBlock` retained by the sweep.
unsafe fn force(node: NonNull<Node>) -> bool {
    let block = node.cast::<SocketBlock>();
    // SAFETY: retained, so alive.
    let shared = unsafe { block.as_ref() };
    let forced = match shared.rundown.begin() {
        Begin::EndNow => {
            close_now(shared).detach();
            true
        }
        Begin::EndedByLastCall => true,
        Begin::Lost => false,
    };
    // A handle the driver forgot keeps its block, but not the operations
    // set aside in it (a handle still in use sets them aside again).
    shared.address.clear();
    for spare in &shared.spares {
        spare.clear();
    }
    release(block);
    forced
}
