//! One WSK socket shared by its handle, the operation that created it, and
//! deregistration's sweep: the `WSK_SOCKET`, its run-down protection, and
//! an operation of its own that creates the socket and then closes it, so
//! that closing never fails for want of memory and a socket costs one pool
//! block and one IRP.
//!
//! Exactly one party closes the socket (the run-down picks it): the handle
//! when it is closed or dropped, deregistration when the driver forgot the
//! handle or still holds it, the creating operation's last release when its
//! caller went away, or a timeout that had to give up on the socket. Calls
//! hold the protection only while they are inside the provider, so a close
//! never overlaps a call, and pending IRPs are left to the close, which
//! cancels them. Whether the own operation is free to close, or still held
//! by the creation, is settled by [`Closer`].
//!
//! When the last reference goes, the block (with its own operation and its
//! send and receive operations) is set aside in the registration for the
//! next socket, so that a driver connecting again and again allocates
//! nothing in steady state.

use core::ffi::c_void;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use core::time::Duration;

use super::closer::{Closer, Released, Take};
use super::events::{DISPATCH, Indications};
use crate::abi::{IRP, WSK_CLIENT_CONNECTION_DISPATCH, WSK_SOCKET};
use crate::error::{Error, Result};
use crate::kernel::irql::AtMostApc;
use crate::kernel::pool::{PoolBox, PoolTag};
use crate::objects::addr::RawAddress;
use crate::objects::registration::{Missing, RegistrationRef};
use crate::objects::rundown::{Begin, RunDown};
use crate::objects::tracking::{Kind, Node, What, try_retain};
use crate::operation::calls::{self, Data, SocketHandle, Table};
use crate::operation::{Embedded, Escalation, Home, Operation, Payload, RECYCLE_SPINS, Spare};
use crate::status::NtStatus;

/// Socket blocks.
const TAG: PoolTag = PoolTag::new(*b"WskS");

/// The shared block.
///
/// # Invariants
/// `refs` counts the [`SocketRef`]s, the own operation while it is alive
/// (from its creation or revival until its last release), and any sweep
/// that retained the block. `raw` is null until the provider created the
/// socket, then a live socket until the run-down's winner closes it. `own`
/// is handed out as `closer` says. `node` is the first field; it is linked
/// from the socket's creation until its close.
#[repr(C)]
struct SocketBlock {
    node: Node,
    refs: AtomicUsize,
    rundown: RunDown,
    raw: AtomicPtr<WSK_SOCKET>,
    kind: Table,
    closer: Closer,
    /// The own operation served a provider that returned without
    /// completing its IRP: the block is freed, never set aside.
    spoiled: AtomicBool,
    /// Creates the socket, then closes it.
    own: Embedded<OwnCall>,
    /// A send and a receive operation set aside for the next ones.
    spares: [Spare<Data>; 2],
    registration: RegistrationRef,
    /// A connection socket's receive and disconnect events (its context).
    events: Indications,
}

/// Which call a socket's own operation makes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// `WskSocket` or `WskSocketConnect`.
    Create,
    /// A call on the open socket that borrowed it (bind, connect, an
    /// address query).
    Call,
    /// `WskCloseSocket`.
    Close,
}

/// The payload of a socket's own operation (and of a stand-in close, when
/// the own one is held by a creator that has not let go): the creating
/// call's addresses, and the block the created socket goes to.
///
/// # Invariants
/// `home` is the block that holds this payload's operation (`None` for a
/// stand-in), alive while the operation is; the pointer keeps the
/// provenance of the block's allocation, so references counted through it
/// may free the block.
pub struct OwnCall {
    home: Option<NonNull<SocketBlock>>,
    /// A stand-in close's reference to the connection socket's block it
    /// closes: the block is the event callbacks' context, so it stays
    /// until the close completes (the provider's last callback returned).
    pin: Option<NonNull<SocketBlock>>,
    phase: Phase,
    /// `WskSocketConnect`'s local address.
    pub local: RawAddress,
    /// `WskSocketConnect`'s remote address.
    pub remote: RawAddress,
}

// SAFETY: `home` is only used to reach the block, which is shared between
// threads already (`SocketRef` is `Send + Sync`).
unsafe impl Send for OwnCall {}

impl OwnCall {
    /// The payload of a stand-in close operation (no block of its own).
    pub(crate) const fn stand_in() -> Self {
        Self {
            phase: Phase::Close,
            ..Self::creating(RawAddress::empty(), RawAddress::empty())
        }
    }

    const fn creating(local: RawAddress, remote: RawAddress) -> Self {
        Self {
            home: None,
            pin: None,
            phase: Phase::Create,
            local,
            remote,
        }
    }

    /// The context and client table a socket is created with: a connection
    /// socket's block's [`Indications`] and the library's callbacks; none
    /// for other kinds (their events are not offered).
    pub fn events(&self) -> (*mut c_void, *const WSK_CLIENT_CONNECTION_DISPATCH) {
        match self.home {
            // SAFETY: the operation is alive (its owner calls this), so its
            // block is (invariant).
            Some(block) if unsafe { block.as_ref() }.kind == Table::Connection => (
                // SAFETY: as above.
                unsafe { block.as_ref() }.events.context(),
                &raw const DISPATCH,
            ),
            _ => (ptr::null_mut(), ptr::null()),
        }
    }

    /// The address a bind or connect passes, or an address query receives.
    pub const fn address_mut(&mut self) -> &mut RawAddress {
        &mut self.local
    }

    /// The socket the completed call created.
    ///
    /// # Errors
    /// [`Error::Other`] if the provider reported success without a socket.
    pub fn take(&self) -> Result<SocketRef> {
        let block = self.home.ok_or(Error::Other(NtStatus::UNSUCCESSFUL))?;
        // SAFETY: the operation is alive (its owner calls this), so its
        // block is (invariant).
        let shared = unsafe { block.as_ref() };
        if !shared.is_attached() {
            return Err(Error::Other(NtStatus::UNSUCCESSFUL));
        }
        shared.refs.fetch_add(1, Ordering::Relaxed);
        // INVARIANT: the reference just taken, through the allocation's
        // own pointer.
        Ok(SocketRef { block })
    }
}

impl Payload for OwnCall {
    fn completed(&mut self, status: NtStatus, information: usize) {
        if let Some(block) = self.pin.take() {
            // The close completed: no callback can reach the block now.
            release(block);
        }
        if let Some(block) = self.home
            && self.phase == Phase::Create
            && status.is_success()
            && let Some(raw) = NonNull::new(information as *mut WSK_SOCKET)
        {
            // INVARIANT: the provider created it, of the kind asked for.
            attach(block, raw);
        }
    }
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

// SAFETY: the block's shared state is atomic, or the own operation, which
// `Closer` hands to one party at a time; WSK sockets may be used from any
// thread.
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
/// No reference to it is left: no [`SocketRef`], and its own operation is
/// dead; its node is unlinked; its socket was closed or never created.
pub struct IdleSocket {
    block: PoolBox<SocketBlock>,
}

// SAFETY: nothing refers to an idle block but its holder (invariant), so
// moving it to another thread shares nothing; its operations and its
// registration reference are `Send`.
#[allow(clippy::non_send_fields_in_send_ty, reason = "see the SAFETY comment")]
unsafe impl Send for IdleSocket {}

impl SocketRef {
    /// A block for a socket of `kind` about to be created (the registration's
    /// idle one, or a new one: one pool block and one IRP), and its own
    /// operation, idle, ready to submit the creating call with `local` and
    /// `remote` in its payload.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// [`Error::InsufficientResources`] when the block or its IRP cannot be
    /// allocated.
    pub fn create(
        kind: Table,
        registration: &RegistrationRef,
        local: RawAddress,
        remote: RawAddress,
    ) -> Result<Operation<OwnCall>> {
        if let Some(idle) = registration.reusable() {
            return Ok(Self::reuse(idle, kind, local, remote));
        }
        let block = SocketBlock {
            node: Node::new(KIND),
            // The own operation's.
            refs: AtomicUsize::new(1),
            rundown: RunDown::new(),
            raw: AtomicPtr::new(ptr::null_mut()),
            kind,
            closer: Closer::busy(),
            spoiled: AtomicBool::new(false),
            own: Embedded::new(OwnCall::creating(local, remote))?,
            spares: [Spare::new(), Spare::new()],
            registration: registration.clone(),
            events: Indications::new(),
        };
        let block = PoolBox::new(block, TAG)?.into_raw();
        // SAFETY: only the field's address is computed, in the live block.
        let events = unsafe { &raw mut (*block.as_ptr()).events };
        // SAFETY: the block's final address in non-paged pool; no socket
        // exists yet to call back.
        unsafe { Indications::init(events) };
        // Memory was there: if the reserve close was used, replace it.
        registration.refill_reserve();
        // SAFETY: a fresh block at its final address, ours alone.
        Ok(unsafe { settle(block) })
    }

    /// An idle block made new for a socket of `kind`: its spares stay, and
    /// its own operation is revived for the creating call.
    fn reuse(
        idle: IdleSocket,
        kind: Table,
        local: RawAddress,
        remote: RawAddress,
    ) -> Operation<OwnCall> {
        let mut block = idle.block;
        let shared = &mut *block;
        shared.node = Node::new(KIND);
        // The own operation's.
        *shared.refs.get_mut() = 1;
        shared.rundown = RunDown::new();
        *shared.raw.get_mut() = ptr::null_mut();
        shared.kind = kind;
        shared.closer.reset();
        // SAFETY: the block stays where it is; its last socket is closed,
        // so nothing calls back.
        unsafe { Indications::init(&raw mut shared.events) };
        let block = block.into_raw();
        // SAFETY: from `into_raw`: live, and ours alone.
        let shared = unsafe { block.as_ref() };
        // SAFETY: idle: the own operation is dead and nobody else can reach
        // the block (invariant).
        let mut op = unsafe { shared.own.revive() };
        let call = op.payload_mut();
        call.phase = Phase::Create;
        call.local = local;
        call.remote = remote;
        op
    }

    const fn shared(&self) -> &SocketBlock {
        // SAFETY: live while this reference is held (invariant).
        unsafe { self.block.as_ref() }
    }

    /// The registration the socket belongs to.
    pub const fn registration(&self) -> &RegistrationRef {
        &self.shared().registration
    }

    /// A connection socket's indications (none for other kinds).
    pub fn events(&self) -> Option<&Indications> {
        let shared = self.shared();
        (shared.kind == Table::Connection).then_some(&shared.events)
    }

    /// An operation for a bind, connect or address query on the socket:
    /// its own operation when that is free (nothing allocated), or a new
    /// one.
    ///
    /// # Errors
    /// [`Error::InsufficientResources`] when a new one cannot be allocated.
    pub fn call_operation(&self) -> Result<Operation<OwnCall>> {
        let shared = self.shared();
        if !shared.spoiled.load(Ordering::Relaxed) && shared.closer.lend() {
            // The own operation holds the block while it is lent.
            shared.refs.fetch_add(1, Ordering::Relaxed);
            // SAFETY: free (dead), and `Closer` lent it to us alone.
            let mut op = unsafe { shared.own.revive() };
            op.payload_mut().phase = Phase::Call;
            return Ok(op);
        }
        Operation::new(OwnCall {
            phase: Phase::Call,
            ..OwnCall::stand_in()
        })
    }

    /// The operation set aside for the next transfer going `direction`.
    pub const fn spare(&self, direction: Direction) -> &Spare<Data> {
        &self.shared().spares[direction as usize]
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
            block: self.block,
            // INVARIANT: a live socket of `kind`: created, and not closed
            // while the protection is held.
            handle: SocketHandle::new(raw, shared.kind),
        })
    }

    /// Begins the close: if this caller wins the run-down and no call is
    /// inside, submits `WskCloseSocket` and returns the operation to await.
    /// `None` when someone else closes it (or the last call to leave will,
    /// or the creation's last release will, see [`Closer`]).
    pub fn close(&self) -> Option<Operation<OwnCall>> {
        close(self.block)
    }

    /// [`close`](Self::close) without waiting: the completion frees what
    /// the close used. Safe at `DISPATCH_LEVEL`.
    pub fn close_detached(&self) {
        close_detached(self.block);
    }
}

impl SocketBlock {
    fn is_attached(&self) -> bool {
        !self.raw.load(Ordering::Acquire).is_null()
    }
}

/// Readies a new block's own operation and hands it out.
///
/// # Safety
/// `block` is a new block at its final address, not yet shared.
unsafe fn settle(block: NonNull<SocketBlock>) -> Operation<OwnCall> {
    let home = Home {
        parent: block.cast::<c_void>(),
        released: own_released,
    };
    // SAFETY: a live block (contract); only the field's address is taken.
    let own = unsafe { &raw mut (*block.as_ptr()).own };
    // SAFETY: the block's final address; the own operation is placed in
    // it for good; `own_released` takes the block it is given.
    let mut op = unsafe { Embedded::settle(own, home) };
    // INVARIANT: the block that holds the operation.
    op.payload_mut().home = Some(block);
    op
}

/// The provider created the socket: records it and lists it for
/// deregistration, or closes it at once if deregistration has swept
/// already. Called once, by the creating operation's completion.
///
/// The node is linked through the allocation's own pointer (`block`), so
/// that the sweep, which reaches the block from it, may free the block.
fn attach(block: NonNull<SocketBlock>, raw: NonNull<WSK_SOCKET>) {
    // SAFETY: alive while its creating operation is (the caller's).
    let shared = unsafe { block.as_ref() };
    shared.raw.store(raw.as_ptr(), Ordering::Release);
    // SAFETY: only the field's address is computed, from the allocation's
    // pointer.
    let node = unsafe { &raw mut (*block.as_ptr()).node };
    // SAFETY: a field of a non-null block.
    let node = unsafe { NonNull::new_unchecked(node) };
    // SAFETY: the node lives in the block, unlinked when the socket is
    // closed, before the block can be freed.
    if !unsafe { shared.registration.track(node) } {
        // Deregistration swept already: close now. The creation (this
        // completion) holds the own operation, so the close takes a
        // stand-in at once.
        if shared.rundown.begin() == Begin::EndNow
            && let Some(op) = close_now(block, Holder::Creation)
        {
            op.detach();
        }
    }
}

/// See [`SocketRef::close`].
fn close(block: NonNull<SocketBlock>) -> Option<Operation<OwnCall>> {
    // SAFETY: the caller holds a reference.
    let shared = unsafe { block.as_ref() };
    if !shared.is_attached() {
        return None;
    }
    match shared.rundown.begin() {
        Begin::EndNow => close_now(block, Holder::Unknown),
        Begin::EndedByLastCall | Begin::Lost => None,
    }
}

/// See [`SocketRef::close_detached`].
fn close_detached(block: NonNull<SocketBlock>) {
    if let Some(op) = close(block) {
        op.detach();
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

/// Who may hold a socket's own operation when its close begins.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Holder {
    /// The caller is the creation's own completion: it will not let go
    /// while the caller runs.
    Creation,
    /// Anyone: the creation may be about to let go.
    Unknown,
}

/// Closes the socket: the run-down chose the caller and no call is inside.
/// With the own operation once the creation has let go of it (looking
/// again a bounded number of times: its routine may be a few instructions
/// from letting go); else with a stand-in operation, so that a creator
/// that never lets go (a forgotten future) cannot keep the socket open;
/// else, without memory for one, the creation's last release closes. The
/// operation returned, if any, is submitted.
fn close_now(block: NonNull<SocketBlock>, holder: Holder) -> Option<Operation<OwnCall>> {
    // SAFETY: the caller holds a reference (or the sweep retained it).
    let shared = unsafe { block.as_ref() };
    // SAFETY: the block's own node, only ever linked in its registration.
    unsafe { shared.registration.untrack(NonNull::from(&shared.node)) };
    // The creation cannot let go while its own routine closes.
    let mut looks = if holder == Holder::Creation {
        RECYCLE_SPINS
    } else {
        0
    };
    loop {
        match shared.closer.take() {
            Take::Own if shared.spoiled.load(Ordering::Relaxed) => {
                // The own operation served a provider that broke the WDM
                // rule: a stand-in closes (without memory for one, the
                // socket stays open: nothing trusted is left to close it).
                return stand_in(shared).map(|op| submit_close(block, op));
            }
            Take::Own => {
                // The own operation holds the block while it closes.
                shared.refs.fetch_add(1, Ordering::Relaxed);
                return Some(close_with_own(block));
            }
            Take::Busy if looks < RECYCLE_SPINS => {
                looks += 1;
                crate::sys::yield_processor();
            }
            Take::Busy => match stand_in(shared) {
                Some(stand_in) => {
                    if shared.closer.take_over() {
                        return Some(submit_close(block, stand_in));
                    }
                    // The creation let go meanwhile: its operation closes
                    // (the stand-in goes back where it came from, or is
                    // freed).
                    shared.registration.give_back_reserve(stand_in);
                }
                None => {
                    if shared.closer.defer() {
                        return None;
                    }
                }
            },
        }
    }
}

/// A close operation other than the own one: a new one, or the
/// registration's reserve when none can be allocated.
fn stand_in(shared: &SocketBlock) -> Option<Operation<OwnCall>> {
    Operation::new(OwnCall::stand_in())
        .ok()
        .or_else(|| shared.registration.take_reserve())
}

/// Closes with the own operation, which `Closer` handed to the caller; the
/// block reference it holds is counted already.
fn close_with_own(block: NonNull<SocketBlock>) -> Operation<OwnCall> {
    // SAFETY: the own operation's reference keeps the block alive.
    let shared = unsafe { block.as_ref() };
    // SAFETY: the creation let go (dead) and `Closer` handed it to us
    // alone.
    let mut op = unsafe { shared.own.revive() };
    op.payload_mut().phase = Phase::Close;
    submit_close(block, op)
}

/// Submits `WskCloseSocket` with `op`.
fn submit_close(block: NonNull<SocketBlock>, mut op: Operation<OwnCall>) -> Operation<OwnCall> {
    // SAFETY: the caller holds a reference.
    let shared = unsafe { block.as_ref() };
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
    if shared.kind == Table::Connection {
        // Every list kept from the provider goes back before the close.
        shared.events.shut(&handle);
        if op.payload_mut().home.is_none() {
            // A stand-in holds the block, the callbacks' context, until
            // the close completes (the own operation holds it already).
            shared.refs.fetch_add(1, Ordering::Relaxed);
            op.payload_mut().pin = Some(block);
        }
    }
    let raw = handle.raw();
    // SAFETY: a live socket's entry; no other call on it is inside the
    // provider (run-down), and none may follow.
    let call = |irp: *mut IRP, _: *mut OwnCall| unsafe { entry(raw, irp) };
    // SAFETY: one WSK call with the operation's IRP; a close counts in
    // flight even while deregistration drains.
    unsafe { op.submit_cleanup(&shared.registration, call) };
    op
}

/// [`Home::released`] of a socket's own operation: its last reference is
/// gone. After the creation: closes a socket nobody took, or one whose
/// close was deferred to here, with the own operation; after the close:
/// nothing more. Then lets go of the block, unless the close keeps it.
///
/// # Safety
/// `parent` is the socket block that holds the operation, which holds one
/// of the block's references; called once per life of the operation.
unsafe fn own_released(parent: NonNull<c_void>, result_untaken: bool) {
    let block = parent.cast::<SocketBlock>();
    // SAFETY: the operation's reference keeps the block alive.
    let shared = unsafe { block.as_ref() };
    // SAFETY: dead: its payload is ours until it is revived or the block
    // released below.
    let phase = unsafe { shared.own.payload_of_dead() }.phase;
    let reclaimed = shared.own.was_reclaimed();
    if reclaimed {
        // Its IRP is not trusted again: no close with it, and the block is
        // freed rather than reused.
        shared.spoiled.store(true, Ordering::Relaxed);
    }
    if phase != Phase::Close {
        if phase == Phase::Create
            && result_untaken
            && shared.is_attached()
            && shared.rundown.begin() == Begin::EndNow
        {
            // Nobody took the socket: close it, here (unless someone else
            // is, or the last call inside will).
            // SAFETY: the block's own node, only ever linked in its
            // registration.
            unsafe { shared.registration.untrack(NonNull::from(&shared.node)) };
            let deferred = shared.closer.defer();
            debug_assert!(deferred, "the creation holds the own operation");
        }
        if shared.closer.released() == Released::CloseNow {
            if !reclaimed {
                // The operation's reference passes to the close.
                close_with_own(block).detach();
                return;
            }
            if let Some(stand_in) = stand_in(shared) {
                submit_close(block, stand_in).detach();
            }
        }
    }
    release(block);
}
/// One call inside the provider on a socket.
pub struct Entered<'a> {
    shared: &'a SocketBlock,
    /// The allocation's own pointer to the same block.
    block: NonNull<SocketBlock>,
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
            if let Some(op) = close_now(self.block, Holder::Unknown) {
                op.detach();
            }
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
        // SAFETY: the last reference to a block from `PoolBox::into_raw`
        // (so the own operation is dead). A created socket was closed
        // (whoever holds a handle closes it on drop), which unlinked the
        // node.
        let block = unsafe { PoolBox::from_raw(block, TAG) };
        if block.spoiled.load(Ordering::Relaxed) {
            return;
        }
        let registration = block.registration.clone();
        // INVARIANT: no reference left, the own operation dead, unlinked,
        // closed or never created.
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
            if let Some(op) = close_now(block, Holder::Unknown) {
                op.detach();
            }
            true
        }
        Begin::EndedByLastCall => true,
        Begin::Lost => false,
    };
    // A handle the driver forgot keeps its block, but not the operations
    // set aside in it (a handle still in use sets them aside again).
    for spare in &shared.spares {
        spare.clear();
    }
    release(block);
    forced
}
