//! Receive and disconnect events on a connection (`SO_WSK_EVENT_CALLBACK`
//! with `WskReceiveEvent` and `WskDisconnectEvent`): data the provider
//! indicates is kept (`STATUS_PENDING`) in a bounded ring of lists, copied
//! out by [`Connection::receive_indicated`] and given back with
//! `WskRelease`, without a receive IRP per read.
//!
//! Every connection socket is created with the library's callbacks and its
//! block's [`Indications`] as context; nothing is indicated until
//! [`Connection::enable_receive_events`] turns the events on. The callbacks
//! run at `DISPATCH_LEVEL` or below; they take the ring's spin lock, set
//! its event and wake the reader's waker (which, as any waker called from
//! a completion, must not run the task inline):
//!
//! - `WskReceiveEvent`: the list joins the ring (`STATUS_PENDING`); with the
//!   ring full, or the socket closing, `STATUS_DATA_NOT_ACCEPTED`, and the
//!   provider keeps the data until a `WskReceive` is posted: the next read
//!   that finds the ring empty posts one (an ordinary receive into the
//!   caller's buffer), after which events resume.
//! - A NULL list (the socket no longer works) or `WskDisconnectEvent`: the
//!   end is recorded; reads give what is left, then the end.
//!
//! Before `WskCloseSocket` (the single place the library closes a socket)
//! the ring is shut and every list in it released, as Microsoft's
//! `WskRelease` page requires; a read copies out of a list while it holds
//! the socket's run-down protection, so the close never overlaps one.

use core::ffi::c_void;
use core::future::poll_fn;
use core::ptr;
use core::task::{Poll, Waker};
use core::time::Duration;

use super::Connection;
use crate::abi::{
    NTSTATUS, SIZE_T, STATUS_DATA_NOT_ACCEPTED, STATUS_PENDING, STATUS_SUCCESS, ULONG,
    WSK_CLIENT_CONNECTION_DISPATCH, WSK_DATA_INDICATION, WSK_FLAG_ABORTIVE,
};
use crate::error::{Error, Result};
use crate::kernel::event::{EventKind, RawEvent, WaitError};
use crate::kernel::irql::PassiveLevel;
use crate::kernel::mdl;
use crate::kernel::pool::PoolBuffer;
use crate::kernel::spinlock::SpinLock;
use crate::kernel::time::Deadline;
use crate::operation::calls::{self, SocketHandle};
use crate::status::NtStatus;

/// How many indicated lists a connection keeps before it answers
/// `STATUS_DATA_NOT_ACCEPTED`.
pub const INDICATION_RING: usize = 16;

/// The client table every connection socket is created with.
pub static DISPATCH: WSK_CLIENT_CONNECTION_DISPATCH = WSK_CLIENT_CONNECTION_DISPATCH {
    WskReceiveEvent: Some(on_receive),
    WskDisconnectEvent: Some(on_disconnect),
    WskSendBacklogEvent: None,
};

/// How the connection ended, as the events told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// `WskDisconnectEvent` without `WSK_FLAG_ABORTIVE`: the peer's FIN.
    Graceful,
    /// `WskDisconnectEvent` with `WSK_FLAG_ABORTIVE`.
    Reset,
    /// `WskReceiveEvent` with a NULL list: the socket no longer works.
    Broken,
}

/// A list kept from the provider, and how far into it reads have come.
#[derive(Clone, Copy)]
struct Held {
    /// The list as indicated: what `WskRelease` takes.
    head: *mut WSK_DATA_INDICATION,
    /// The entry reads have reached, and the bytes of it already read.
    entry: *mut WSK_DATA_INDICATION,
    read: usize,
}

/// The ring and what the callbacks told, under the spin lock.
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent facts about one socket's events"
)]
struct Ring {
    /// `enable_receive_events` succeeded.
    on: bool,
    /// The close began: nothing more is kept.
    closing: bool,
    /// A list was refused: the provider waits for a `WskReceive`.
    refused: bool,
    end: Option<End>,
    /// The list the reader has begun, outside the ring so that the
    /// callbacks can never take its slot.
    current: Option<Held>,
    lists: heapless::Deque<Held, INDICATION_RING>,
    /// A read is under way (one at a time: a second gets an error).
    reading: bool,
    waker: Option<Waker>,
}

/// A connection's indications: in its socket block, which outlives every
/// callback (the provider returns from them before the close completes,
/// and the block lives until then).
///
/// # Invariants
/// `signal` is initialised once the block is at its final address
/// ([`init`](Self::init)); the lists in the ring are the provider's, kept
/// (`STATUS_PENDING`) and not yet released.
pub struct Indications {
    ring: SpinLock<Ring>,
    /// Set whenever the ring changes, for blocking reads.
    signal: RawEvent,
}

// SAFETY: the lists are only touched under the lock, or by the one reader
// that took them out of it; WSK lists may be used from any thread.
#[allow(clippy::non_send_fields_in_send_ty, reason = "see the SAFETY comment")]
unsafe impl Send for Ring {}

impl Indications {
    /// Nothing indicated; the event not yet initialised.
    pub const fn new() -> Self {
        Self {
            ring: SpinLock::new(Ring {
                on: false,
                closing: false,
                refused: false,
                end: None,
                current: None,
                lists: heapless::Deque::new(),
                reading: false,
                waker: None,
            }),
            signal: RawEvent::zeroed(),
        }
    }

    /// Readies the indications for a new socket, at their final address.
    ///
    /// # Safety
    /// `this` is at its final address in non-paged memory; no callback or
    /// reader can reach it (the socket is not created yet); IRQL <=
    /// `DISPATCH_LEVEL`.
    pub unsafe fn init(this: *mut Self) {
        // SAFETY: ours alone (the contract).
        let this = unsafe { &mut *this };
        let ring = this.ring.get_mut();
        debug_assert!(
            ring.lists.is_empty() && ring.current.is_none(),
            "released before the close"
        );
        ring.on = false;
        ring.reading = false;
        ring.closing = false;
        ring.refused = false;
        ring.end = None;
        ring.waker = None;
        // SAFETY: at its final address in non-paged memory (the contract).
        unsafe { RawEvent::init(&raw mut this.signal, EventKind::Notification, false) };
    }

    /// The context a connection socket is created with.
    pub const fn context(&self) -> *mut c_void {
        ptr::from_ref(self).cast_mut().cast()
    }

    /// Shuts the ring before `WskCloseSocket` and releases every list in
    /// it; a callback still running keeps nothing more.
    pub fn shut(&self, socket: &SocketHandle) {
        loop {
            let held = {
                let mut ring = self.ring.lock();
                ring.closing = true;
                ring.current.take().or_else(|| ring.lists.pop_front())
            };
            let Some(held) = held else { break };
            // SAFETY: a list the provider indicated on this live socket and
            // the ring kept; released once, here.
            unsafe { calls::release_indications(socket, held.head) };
        }
        // A reader waiting sees the close.
        self.change(|_| ());
    }

    /// Changes the ring under its lock, then tells the reader (its event
    /// and its waker, outside the lock).
    fn change<R>(&self, change: impl FnOnce(&mut Ring) -> R) -> R {
        let (result, waker) = {
            let mut ring = self.ring.lock();
            (change(&mut ring), ring.waker.take())
        };
        self.signal.set();
        if let Some(waker) = waker {
            waker.wake();
        }
        result
    }

    /// Begins the one read allowed at a time.
    fn begin_read(&self) -> Option<Reading<'_>> {
        let mut ring = self.ring.lock();
        if ring.reading {
            return None;
        }
        ring.reading = true;
        Some(Reading(self))
    }

    /// A posted `WskReceive` did not take the refused data (it failed or
    /// was given up on): the next read must post another.
    fn refuse_again(&self) {
        self.change(|ring| ring.refused = true);
    }

    /// Records that the events are on.
    fn turn_on(&self) {
        self.ring.lock().on = true;
    }

    /// Clears the signal, before a blocking read looks at the ring.
    fn clear_signal(&self) {
        self.signal.clear();
    }

    /// Ready once the ring holds something, ended, was refused or closes.
    fn poll_changed(&self, waker: &Waker) -> Poll<()> {
        let old = {
            let mut ring = self.ring.lock();
            if ring.current.is_some()
                || !ring.lists.is_empty()
                || ring.end.is_some()
                || ring.refused
                || ring.closing
            {
                return Poll::Ready(());
            }
            ring.waker.replace(waker.clone())
        };
        // Dropped outside the lock: a waker's drop may do anything.
        drop(old);
        Poll::Pending
    }

    /// One step of a read into `out`, under the socket's run-down
    /// protection (`socket`).
    fn step(&self, socket: &SocketHandle, out: &mut [u8]) -> Step {
        let mut copied = 0;
        loop {
            let held = {
                let mut ring = self.ring.lock();
                if !ring.on {
                    return Step::End(Err(Error::InvalidArgument(NtStatus::INVALID_DEVICE_STATE)));
                }
                match ring.current.take().or_else(|| ring.lists.pop_front()) {
                    Some(held) => held,
                    None if copied > 0 => return Step::Copied(copied),
                    None if ring.refused => {
                        ring.refused = false;
                        return Step::Receive;
                    }
                    None => {
                        return match ring.end {
                            Some(End::Graceful) => Step::End(Ok(0)),
                            Some(End::Reset) => {
                                Step::End(Err(Error::Reset(NtStatus::CONNECTION_RESET)))
                            }
                            Some(End::Broken) => {
                                Step::End(Err(Error::Reset(NtStatus::CONNECTION_ABORTED)))
                            }
                            None if ring.closing => {
                                Step::End(Err(Error::ForcedClosed(NtStatus::FILE_FORCED_CLOSED)))
                            }
                            None => Step::Wait,
                        };
                    }
                }
            };
            // SAFETY: a kept list of the live socket, taken out of the ring
            // by this reader alone; the run-down keeps the close (which
            // releases lists) away meanwhile.
            let (moved, rest) = match unsafe { copy_out(held, &mut out[copied..]) } {
                Ok(done) => done,
                Err(error) => {
                    // Unchanged, it stays the list being read.
                    self.ring.lock().current = Some(held);
                    return if copied > 0 {
                        Step::Copied(copied)
                    } else {
                        Step::End(Err(error))
                    };
                }
            };
            copied += moved;
            match rest {
                Some(rest) => {
                    // The buffer is full: the rest of the list is read next.
                    self.ring.lock().current = Some(rest);
                    return Step::Copied(copied);
                }
                None => {
                    // SAFETY: read to its end; a list the provider indicated
                    // on this live socket, released once.
                    unsafe { calls::release_indications(socket, held.head) };
                }
            }
            if copied == out.len() {
                return Step::Copied(copied);
            }
        }
    }
}

/// The read under way; ends it when dropped.
struct Reading<'a>(&'a Indications);

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.0.ring.lock().reading = false;
    }
}

/// A posted `WskReceive` for refused data: if it does not come back with
/// bytes (it failed, or its future was dropped), the next read posts
/// another, since the provider still waits for one.
struct Resume<'a> {
    events: &'a Indications,
    armed: bool,
}

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.events.refuse_again();
        }
    }
}

/// What a read does next.
enum Step {
    Copied(usize),
    End(Result<usize>),
    /// The provider holds refused data: post a `WskReceive`.
    Receive,
    Wait,
}

/// Copies from `held` into `out`: the bytes moved, and what is left of the
/// list (`None`: all of it was read).
///
/// # Safety
/// `held` is a kept list whose entries and MDLs stay valid and unchanged.
unsafe fn copy_out(mut held: Held, out: &mut [u8]) -> Result<(usize, Option<Held>)> {
    let mut moved = 0;
    while !held.entry.is_null() {
        // SAFETY: an entry of the kept list (the contract).
        let entry = unsafe { &*held.entry };
        let length = entry.Buffer.Length;
        if held.read < length {
            if moved == out.len() {
                return Ok((moved, Some(held)));
            }
            // SAFETY: the entry's buffer (the contract).
            let count = unsafe { copy_buffer(entry, held.read, &mut out[moved..]) }?;
            held.read += count;
            moved += count;
            continue;
        }
        held.entry = entry.Next;
        held.read = 0;
    }
    Ok((moved, None))
}

/// Copies from one entry's `WSK_BUF`, `skip` bytes into its data, as much
/// as `out` takes: the data starts `Offset` bytes into the first MDL and
/// runs for `Length` bytes along the chain.
///
/// # Safety
/// `entry` is an entry of a kept list (its MDLs valid and locked).
unsafe fn copy_buffer(entry: &WSK_DATA_INDICATION, skip: usize, out: &mut [u8]) -> Result<usize> {
    let mut offset = entry.Buffer.Offset as usize + skip;
    let mut left = (entry.Buffer.Length - skip).min(out.len());
    let mut mdl = entry.Buffer.Mdl;
    let mut moved = 0;
    while left > 0 {
        if mdl.is_null() {
            // The chain is shorter than the entry says.
            return Err(Error::Other(NtStatus::UNSUCCESSFUL));
        }
        // SAFETY: an MDL of the kept list (the contract).
        let count = unsafe { (*mdl).ByteCount } as usize;
        if offset < count {
            // SAFETY: a locked or non-paged MDL of the kept list, valid and
            // unchanged until the list is released (the contract).
            let bytes = unsafe { mdl::system_bytes(mdl) }.ok_or(Error::InsufficientResources(
                NtStatus::INSUFFICIENT_RESOURCES,
            ))?;
            let take = (count - offset).min(left);
            out[moved..moved + take].copy_from_slice(&bytes[offset..offset + take]);
            moved += take;
            left -= take;
            offset = 0;
        } else {
            offset -= count;
        }
        // SAFETY: as above.
        mdl = unsafe { (*mdl).Next };
    }
    Ok(moved)
}

/// `WskReceiveEvent`: keeps the list, or refuses it when the ring is full
/// or the socket closing.
///
/// # Safety
/// Called by the provider with the context the socket was created with.
unsafe extern "system" fn on_receive(
    context: *mut c_void,
    _flags: ULONG,
    list: *mut WSK_DATA_INDICATION,
    _indicated: SIZE_T,
    _accepted: *mut SIZE_T,
) -> NTSTATUS {
    // SAFETY: the socket block's indications, alive until the close
    // completes, which waits for this callback to return.
    let this = unsafe { &*context.cast::<Indications>() };
    this.change(|ring| {
        if list.is_null() {
            ring.end.get_or_insert(End::Broken);
            STATUS_SUCCESS
        } else if ring.closing {
            STATUS_DATA_NOT_ACCEPTED
        } else {
            let held = Held {
                head: list,
                entry: list,
                read: 0,
            };
            if ring.lists.push_back(held).is_ok() {
                STATUS_PENDING
            } else {
                ring.refused = true;
                STATUS_DATA_NOT_ACCEPTED
            }
        }
    })
}

/// `WskDisconnectEvent`: records the end.
///
/// # Safety
/// As for [`on_receive`].
unsafe extern "system" fn on_disconnect(context: *mut c_void, flags: ULONG) -> NTSTATUS {
    // SAFETY: as in `on_receive`.
    let this = unsafe { &*context.cast::<Indications>() };
    let end = if flags & WSK_FLAG_ABORTIVE == 0 {
        End::Graceful
    } else {
        End::Reset
    };
    this.change(|ring| {
        ring.end.get_or_insert(end);
    });
    STATUS_SUCCESS
}

impl Connection {
    /// Turns on receive and disconnect events (`SO_WSK_EVENT_CALLBACK`,
    /// `WSK_EVENT_RECEIVE | WSK_EVENT_DISCONNECT`): from now on the
    /// provider hands over data as it arrives, kept until
    /// [`receive_indicated`](Self::receive_indicated) copies it out, without
    /// a receive IRP per read. Read with `receive_indicated` only from then
    /// on: a [`receive`](Self::receive) would take bytes ahead of those
    /// already kept.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// [`Error::NotSupported`] for a socket made as a stream socket
    /// ([`SocketKind::Stream`](crate::SocketKind::Stream)), without calling
    /// the provider, or when the provider has no event callbacks (Wine 8);
    /// [`Error::ForcedClosed`] once the socket is closed; what the provider
    /// returns otherwise.
    pub fn enable_receive_events(&self) -> Result<()> {
        let socket = &self.raw.socket;
        let entered = socket.enter()?;
        let events = socket
            .events()
            .ok_or(Error::NotSupported(NtStatus::NOT_SUPPORTED))?;
        calls::enable_events(entered.handle())?;
        events.turn_on();
        Ok(())
    }

    /// Copies data the provider indicated into `buffer` (up to its
    /// capacity, across as many kept lists as fill it), releasing each list
    /// read to its end; waits for an indication when none is kept. When the
    /// ring had to refuse data, a read that finds it empty posts an ordinary
    /// `WskReceive` into `buffer` instead, after which events resume. The
    /// buffer's length says how many bytes came; `Ok(0)` is the peer's
    /// graceful end. Dropping the future loses nothing unless it was in that
    /// `WskReceive` (see [`receive`](Self::receive)); the next read then
    /// posts another. One read at a time: the bytes of one stream cannot
    /// be split between readers in order.
    ///
    /// The lists kept are the provider's buffers: read them promptly (a
    /// full ring makes the provider hold further data until a read).
    ///
    /// # IRQL
    /// Poll at `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a buffer of zero capacity, when
    /// events were not turned on ([`enable_receive_events`](Self::enable_receive_events)),
    /// or while another read is under way, before any call; [`Error::Reset`] when the peer reset the connection
    /// or the provider said the socket no longer works;
    /// [`Error::ForcedClosed`] once the socket is closed; as `receive` for
    /// a posted `WskReceive`.
    pub fn receive_indicated(
        &self,
        buffer: PoolBuffer,
    ) -> impl Future<Output = (Result<usize>, PoolBuffer)> + Send + '_ {
        async move {
            let mut buffer = buffer;
            let (events, _reading) = match self.begin_indicated() {
                Ok(begun) => begun,
                Err(error) => return (Err(error), buffer),
            };
            loop {
                match self.indicated_step(events, &mut buffer) {
                    Step::Copied(count) => return (Ok(count), buffer),
                    Step::End(result) => return (result, buffer),
                    Step::Receive => {
                        let mut resume = Resume {
                            events,
                            armed: true,
                        };
                        let (result, buffer) = self.receive(buffer).await;
                        resume.armed = !matches!(result, Ok(count) if count > 0);
                        return (result, buffer);
                    }
                    Step::Wait => poll_fn(|cx| events.poll_changed(cx.waker())).await,
                }
            }
        }
    }

    /// [`receive_indicated`](Self::receive_indicated), blocking up to
    /// `timeout`.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL` (the token proves it).
    ///
    /// # Errors
    /// As `receive_indicated`, and [`Error::TimedOut`] when nothing came in
    /// time (nothing is lost).
    pub fn receive_indicated_blocking(
        &self,
        irql: &PassiveLevel,
        timeout: Duration,
        buffer: PoolBuffer,
    ) -> (Result<usize>, PoolBuffer) {
        let deadline = Deadline::after(timeout);
        let (events, _reading) = match self.begin_indicated() {
            Ok(begun) => begun,
            Err(error) => return (Err(error), buffer),
        };
        let mut buffer = buffer;
        loop {
            events.clear_signal();
            match self.indicated_step(events, &mut buffer) {
                Step::Copied(count) => return (Ok(count), buffer),
                Step::End(result) => return (result, buffer),
                Step::Receive => {
                    let mut resume = Resume {
                        events,
                        armed: true,
                    };
                    let (result, buffer) =
                        self.receive_blocking(irql, deadline.remaining(), buffer);
                    resume.armed = !matches!(result, Ok(count) if count > 0);
                    return (result, buffer);
                }
                Step::Wait => {
                    let waited = events
                        .signal
                        .wait(&irql.at_most_apc(), Some(deadline.remaining()));
                    let error = match waited {
                        Ok(()) => continue,
                        Err(WaitError::TimedOut) => Error::TimedOut(NtStatus::IO_TIMEOUT),
                        Err(WaitError::IrqlTooHigh(error)) => error.into(),
                    };
                    return (Err(error), buffer);
                }
            }
        }
    }

    /// A read's start: the connection's indications, and the one read
    /// allowed at a time, taken until the guard drops.
    fn begin_indicated(&self) -> Result<(&Indications, Reading<'_>)> {
        let busy = Error::InvalidArgument(NtStatus::INVALID_DEVICE_STATE);
        let events = self.raw.socket.events().ok_or(busy)?;
        let reading = events.begin_read().ok_or(busy)?;
        Ok((events, reading))
    }

    /// One step of a read: copies what is kept into `buffer` (its length
    /// set to the bytes copied, 0 unless `Copied`), or says what to do
    /// instead.
    fn indicated_step(&self, events: &Indications, buffer: &mut PoolBuffer) -> Step {
        buffer.set_len(0);
        if buffer.capacity() == 0 {
            return Step::End(Err(Error::InvalidArgument(NtStatus::INVALID_PARAMETER)));
        }
        let entered = match self.raw.socket.enter() {
            Ok(entered) => entered,
            Err(error) => return Step::End(Err(error)),
        };
        buffer.set_len(buffer.capacity());
        let step = events.step(entered.handle(), buffer);
        drop(entered);
        buffer.set_len(match step {
            Step::Copied(count) => count,
            _ => 0,
        });
        step
    }
}
