//! What a registration keeps track of, so that deregistration can end it
//! whatever the driver forgot: socket-creating operations in flight, open
//! sockets and provider captures, each an intrusive [`Node`] in a list
//! under the registration's spin lock. Calls on a socket are not listed:
//! closing the socket ends them (`WskCloseSocket` cancels and completes
//! the socket's pending IRPs).
//!
//! Deregistration *sweeps* the list: it pops one node at a time under the
//! lock, takes a reference that keeps the node's block alive ([`Kind`]'s
//! `retain`), lets the lock go, and *forces* the node's end outside it
//! (cancel the IRP, close the socket, release the capture), because those
//! calls may run a completion routine inline that takes the lock again.
//! The driver image's timers are a list of the same kind, swept at the
//! driver's last deregistration.

use core::cell::UnsafeCell;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicUsize, Ordering};

/// What kind of thing a node is, and how to end it: a hand-made vtable, so
/// that blocks of different payload types share one list.
pub struct Kind {
    /// Which counter of [`DeregisterReport`] the node's end adds to.
    pub what: What,
    /// Under the list's lock: takes a reference on the node's block unless
    /// its count already reached zero (its last holder is on the way to
    /// unlinking and freeing it, and ends it itself): returns whether it
    /// did. A linked node's block is allocated, though not always counted.
    pub retain: unsafe fn(NonNull<Node>) -> bool,
    /// Outside the lock: ends the node's object if it is not ending
    /// already, then drops the reference `retain` took. Returns whether it
    /// had to force anything. Never waits.
    pub force: unsafe fn(NonNull<Node>) -> bool,
}

/// The kinds of tracked objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    /// An operation with its IRP in flight: cancelled.
    Operation,
    /// An open socket: closed, abortively.
    Socket,
    /// A provider NPI capture: released.
    Capture,
    /// A timer of `sleep` or `timeout`: cancelled.
    Timer,
    /// An executor's task: aborted (counted by the executor's shutdown).
    Task,
}

/// A list entry, embedded first in a `#[repr(C)]` block.
///
/// # Invariants
/// `prev` and `next` are touched only under the list's lock.
pub struct Node {
    links: UnsafeCell<Links>,
    kind: &'static Kind,
}

struct Links {
    prev: *mut Node,
    next: *mut Node,
    linked: bool,
}

impl Node {
    /// An unlinked node of `kind`.
    pub const fn new(kind: &'static Kind) -> Self {
        Self {
            links: UnsafeCell::new(Links {
                prev: ptr::null_mut(),
                next: ptr::null_mut(),
                linked: false,
            }),
            kind,
        }
    }
}

/// The list of one registration, behind its spin lock.
///
/// # Invariants
/// Every linked node is allocated: whoever frees a block unlinks it first,
/// under the lock (its count may already be zero: see [`Kind`]'s
/// `retain`).
pub struct List {
    head: *mut Node,
    /// Deregistration has swept (or is sweeping): nothing new is linked;
    /// whoever would link something ends it instead.
    swept: bool,
}

// SAFETY: the raw pointers are only followed under the registration's lock.
unsafe impl Send for List {}

impl List {
    /// An empty list.
    pub const fn new() -> Self {
        Self {
            head: ptr::null_mut(),
            swept: false,
        }
    }

    /// Links `node` at the front, unless the list was swept: then returns
    /// `false` and the caller ends the object itself.
    ///
    /// # Safety
    /// `node` is alive and stays alive until unlinked; it is not linked.
    pub unsafe fn push(&mut self, node: NonNull<Node>) -> bool {
        if self.swept {
            return false;
        }
        // SAFETY: the caller's live node; under the lock (we are `&mut List`).
        let own = unsafe { links(node.as_ptr()) };
        debug_assert!(!own.linked, "a node is linked once");
        own.prev = ptr::null_mut();
        own.next = self.head;
        own.linked = true;
        if !self.head.is_null() {
            // SAFETY: a linked node is alive (invariant); under the lock.
            unsafe { links(self.head) }.prev = node.as_ptr();
        }
        self.head = node.as_ptr();
        true
    }

    /// Unlinks `node` if it is linked (a swept node is not).
    ///
    /// # Safety
    /// `node` is alive, and if linked, linked in this list.
    pub unsafe fn remove(&mut self, node: NonNull<Node>) {
        // SAFETY: the caller's live node; under the lock.
        let own = unsafe { links(node.as_ptr()) };
        if !own.linked {
            return;
        }
        let (prev, next) = (own.prev, own.next);
        own.linked = false;
        own.prev = ptr::null_mut();
        own.next = ptr::null_mut();
        if prev.is_null() {
            self.head = next;
        } else {
            // SAFETY: linked neighbours are alive; under the lock.
            unsafe { links(prev) }.next = next;
        }
        if !next.is_null() {
            // SAFETY: as above.
            unsafe { links(next) }.prev = prev;
        }
    }

    /// Marks the list swept and pops its first node that can be retained:
    /// the caller forces it after letting the lock go. A node whose count
    /// reached zero is only unlinked: its last holder ends it.
    pub fn pop_for_sweep(&mut self) -> Option<Retained> {
        self.swept = true;
        loop {
            let node = NonNull::new(self.head)?;
            // SAFETY: the head is linked, so allocated and in this list.
            unsafe { self.remove(node) };
            // SAFETY: allocated (it was linked until now).
            let retain = unsafe { node.as_ref() }.kind.retain;
            // SAFETY: an allocated node of that kind; under the lock.
            if unsafe { retain(node) } {
                return Some(Retained { node });
            }
        }
    }

    /// Lets nodes be linked again after a sweep (the driver image's timer
    /// list, when a registration opens again).
    pub const fn reopen(&mut self) {
        self.swept = false;
    }
}

/// Takes one more count on `refs` unless it is zero (see [`Kind`]'s
/// `retain`).
pub fn try_retain(refs: &AtomicUsize) -> bool {
    refs.fetch_update(Ordering::Acquire, Ordering::Relaxed, |count| {
        (count != 0).then_some(count + 1)
    })
    .is_ok()
}

/// The links of `node`.
///
/// # Safety
/// `node` is alive, the list's lock is held, and no other reference to its
/// links is in use.
unsafe fn links<'a>(node: *mut Node) -> &'a mut Links {
    // SAFETY: alive per the contract.
    let node = unsafe { &*node };
    // SAFETY: under the lock, nobody else touches the links.
    unsafe { &mut *node.links.get() }
}

/// A node popped by the sweep, holding the reference `retain` took.
pub struct Retained {
    node: NonNull<Node>,
}

impl Retained {
    /// Ends the node's object (outside the lock) and drops the reference.
    /// Returns what kind it was and whether anything was forced.
    pub fn force(self) -> (What, bool) {
        // SAFETY: retained, so alive; `force` drops the reference once.
        let kind = unsafe { self.node.as_ref().kind };
        // SAFETY: as above.
        let forced = unsafe { (kind.force)(self.node) };
        (kind.what, forced)
    }
}

/// What deregistration had to end because the driver had not, by kind and
/// count.
///
/// # IRQL
/// Any.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeregisterReport {
    /// Operations that create a socket (`WskSocket`, `WskSocketConnect`)
    /// whose IRP was still in flight: cancelled. A call on a socket still
    /// in flight ends with its socket's close (`WskCloseSocket` cancels and
    /// completes the socket's pending IRPs), counted in
    /// [`closed_sockets`](Self::closed_sockets) if the socket was still
    /// open; a call the provider keeps after its socket was closed shows
    /// only in [`unfinished_operations`](Self::unfinished_operations).
    pub cancelled_operations: usize,
    /// Sockets still open: closed abortively.
    pub closed_sockets: usize,
    /// Provider captures still held: released.
    pub released_captures: usize,
    /// Timers of [`sleep`](crate::sleep) and [`timeout`](crate::timeout)
    /// still armed at the driver's last deregistration: cancelled (their
    /// futures end with [`Error::Cancelled`](crate::Error::Cancelled)).
    pub cancelled_timers: usize,
    /// Operations whose completion had still not come when the bound
    /// passed. Their blocks stay allocated (the provider may still complete
    /// them), counted here rather than freed.
    pub unfinished_operations: usize,
    /// Operations whose call returned without completing its IRP (a
    /// provider that breaks the WDM rule, such as Wine 8's stubs): their
    /// blocks stay allocated in case the provider completes them after all.
    pub quarantined_operations: usize,
    /// Deregistration ran above `PASSIVE_LEVEL` (a dropped registration, or
    /// a stale token): it ended what it could, but could not call
    /// `WskDeregister`; the registration stays and the driver must not
    /// unload.
    pub left_registered: bool,
}

impl DeregisterReport {
    /// Whether the driver had left nothing for deregistration to end (a
    /// quarantine is the provider's doing, not the driver's).
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub const fn is_clean(&self) -> bool {
        self.cancelled_operations == 0
            && self.closed_sockets == 0
            && self.released_captures == 0
            && self.cancelled_timers == 0
            && self.unfinished_operations == 0
            && !self.left_registered
    }

    pub(crate) const fn count(&mut self, what: What) {
        match what {
            What::Operation => self.cancelled_operations += 1,
            What::Socket => self.closed_sockets += 1,
            What::Capture => self.released_captures += 1,
            What::Timer => self.cancelled_timers += 1,
            What::Task => {}
        }
    }
}

impl core::fmt::Display for DeregisterReport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "cancelled_operations={} closed_sockets={} released_captures={} cancelled_timers={} unfinished_operations={} quarantined_operations={} left_registered={}",
            self.cancelled_operations,
            self.closed_sockets,
            self.released_captures,
            self.cancelled_timers,
            self.unfinished_operations,
            self.quarantined_operations,
            self.left_registered
        )
    }
}
