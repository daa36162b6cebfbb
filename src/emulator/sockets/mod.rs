//! The WSK socket provider over real host sockets.
//!
//! A `PWSK_SOCKET` handed to a client is the address of a small header whose
//! `Dispatch` points at one of four static tables (connection or stream
//! socket, with or without `WskConnectEx`). Every call looks that address up
//! in the registry of live sockets before anything else, so a call on a
//! closed socket stops like a bugcheck instead of touching freed memory.
//! Closed headers stay allocated for a while (a quarantine, as Driver
//! Verifier's special pool delays reuse) so that such a call still reaches
//! the check rather than a recycled socket.
//!
//! Each socket owns a non-blocking host socket. A call that can finish at
//! once completes its IRP in the caller's thread and returns its status; one
//! that has to wait is parked cancelably in the socket's [`PendingQueue`],
//! behind the earlier calls of its lane (connect, send, receive: each keeps
//! its order), and the kernel's poller thread moves it on when the host
//! socket becomes ready, completing it at `DISPATCH_LEVEL`.
//!
//! Locks: a socket's state lock may be held while taking the live-socket
//! registry, the provider's accounting or the poller's maps, never the other
//! way round; no other lock is held while a socket's state lock is taken.
//! Completion routines run with no lock held, so they may call the provider
//! again.

mod dispatch;
mod errno;
mod events;
mod sockaddr;
mod transfer;

use rustc_hash::FxHashMap;
use std::boxed::Box;
use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;
use std::vec::Vec;

use mio::Token;
use socket2::{Protocol, Socket as HostSocket, Type};

pub use dispatch::{wsk_socket, wsk_socket_connect};
use errno::status_of;
use events::{Events, Next};
use sockaddr::Family;
pub use sockaddr::read as read_sockaddr;
pub use sockaddr::write as write_sockaddr;
use transfer::{Op, Progress};

use super::faults::CallFault;
use super::io::{self, IrpHandle, PendingQueue};
use super::poller::Ready;
use super::provider::EmulatedClient;
use super::verifier::bugcheck;
use super::{Kernel, KernelInner};
use crate::abi::{
    NTSTATUS, STATUS_CANCELLED, STATUS_CONNECTION_ABORTED, STATUS_CONNECTION_RESET,
    STATUS_FILE_FORCED_CLOSED, STATUS_INVALID_CONNECTION, STATUS_PENDING, STATUS_SUCCESS,
    WSK_SOCKET,
};

/// What the host's TCP Fast Open did for `WskConnectEx` on one kernel
/// ([`Kernel::fast_open_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FastOpenStats {
    /// Connects that offered their data in the SYN (`TCP_FASTOPEN` was set
    /// and there was data to send).
    pub attempts: u64,
    /// Connections whose peer acknowledged data carried in the SYN
    /// (`TCP_INFO`'s `TCPI_OPT_SYN_DATA`).
    pub syn_data_acked: u64,
}

/// The kernel's running [`FastOpenStats`].
#[derive(Default)]
pub struct FastOpenCounters {
    attempts: AtomicU64,
    syn_data_acked: AtomicU64,
}

impl FastOpenCounters {
    fn record_attempt(&self) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
    }

    fn record_syn_data_acked(&self) {
        self.syn_data_acked.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> FastOpenStats {
        FastOpenStats {
            attempts: self.attempts.load(Ordering::Relaxed),
            syn_data_acked: self.syn_data_acked.load(Ordering::Relaxed),
        }
    }
}

/// The socket kinds the provider creates (`WSK_FLAG_*_SOCKET`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Connection,
    /// Becomes a connection socket for good once connected (listening on
    /// a stream socket, `WskListen`, is not emulated).
    Stream,
    /// Listens once bound; accepts connection sockets.
    Listen,
    /// UDP: sends and receives datagrams once bound.
    Datagram,
}

/// Where a socket's connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Never connected (bound or not).
    Idle,
    /// A listening socket, bound: accepting.
    Listening,
    Connecting,
    /// Connected: committed to the connection role.
    Connected,
    /// Reset by an abortive `WskDisconnect`.
    Aborted,
    /// A connect failed or was cancelled: only closing is left.
    Broken,
    /// Closed, or discarded after a failed `WskSocketConnect`.
    Closed,
}

/// A lane of parked operations, each kept in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Connect,
    /// Sends and graceful disconnects (the FIN follows the data before it).
    Send,
    Receive,
}

const LANES: [Lane; 3] = [Lane::Connect, Lane::Send, Lane::Receive];

/// The `WSK_SOCKET` a client holds.
struct Header(Box<WSK_SOCKET>);

#[allow(
    clippy::non_send_fields_in_send_ty,
    reason = "WSK_SOCKET holds only that pointer"
)]
// SAFETY: its only field points at a static, immutable dispatch table.
unsafe impl Send for Header {}

/// Closed sockets' headers kept allocated, so a late call still finds a
/// dispatch table and reaches the liveness check.
const QUARANTINE_LEN: usize = 4096;

static LIVE: LazyLock<Mutex<FxHashMap<usize, Arc<Socket>>>> = LazyLock::new(Mutex::default);
static QUARANTINE: LazyLock<Mutex<VecDeque<Header>>> = LazyLock::new(Mutex::default);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The live socket at `handle`. Bugchecks if there is none; the handle is
/// never dereferenced.
fn live(handle: *mut WSK_SOCKET, function: &str) -> Arc<Socket> {
    let found = lock(&LIVE).get(&(handle as usize)).cloned();
    found.unwrap_or_else(|| not_a_live_socket(handle, function))
}

/// Like [`live`], and the socket stops being callable.
fn retire(handle: *mut WSK_SOCKET, function: &str) -> Arc<Socket> {
    let found = lock(&LIVE).remove(&(handle as usize));
    found.unwrap_or_else(|| not_a_live_socket(handle, function))
}

fn not_a_live_socket(handle: *mut WSK_SOCKET, function: &str) -> ! {
    bugcheck(
        "DRIVER_VERIFIER_DETECTED_VIOLATION",
        format_args!(
            "{function}({handle:p}): not a live socket: use after WskCloseSocket (or a socket no WskSocket/WskSocketConnect returned)"
        ),
    )
}

fn quarantine(header: Header) {
    let mut kept = lock(&QUARANTINE);
    if kept.len() == QUARANTINE_LEN {
        kept.pop_front();
    }
    kept.push_back(header);
}

/// Completes a call's IRP with its result: in the caller's thread (the
/// status is returned), or under `always_pend` from the poller thread at
/// `DISPATCH_LEVEL` (`STATUS_PENDING` is returned).
fn finish(kernel: &Kernel, irp: IrpHandle, status: NTSTATUS, information: usize) -> NTSTATUS {
    let completion = Completion::new(irp, status, information);
    if kernel.inner().provider.config.always_pend {
        // SAFETY: the provider owns the IRP and returns STATUS_PENDING.
        unsafe { io::mark_pending(irp) };
        kernel
            .inner()
            .poller()
            .schedule(Box::new(move || completion.run()));
        STATUS_PENDING
    } else {
        completion.run();
        status
    }
}

/// An IRP to complete once no lock is held.
struct Completion {
    irp: IrpHandle,
    status: NTSTATUS,
    information: usize,
    /// A late completion (a fault): delivered after this delay, from the
    /// DPC thread of the socket's machine. The IRP is pending by then.
    late: Option<(Duration, Kernel)>,
    /// A completion delivered outside the socket's queue (late, or after
    /// an injected reset): counted by its socket, whose close completes
    /// only after it.
    tracked: Option<Arc<Socket>>,
}

impl Completion {
    const fn new(irp: IrpHandle, status: NTSTATUS, information: usize) -> Self {
        Self {
            irp,
            status,
            information,
            late: None,
            tracked: None,
        }
    }

    fn run(mut self) {
        if let Some((delay, kernel)) = self.late.take() {
            super::delay::after(&kernel, delay, Box::new(move || self.run()));
            return;
        }
        // SAFETY: the provider owns the IRP (never parked, or taken back
        // from its queue) and gives it up here, once.
        unsafe { io::complete(self.irp, self.status, self.information) };
        if let Some(socket) = self.tracked.take() {
            socket.untrack();
        }
    }
}

/// One WSK socket.
pub struct Socket {
    /// The address handed out as `PWSK_SOCKET`.
    handle: usize,
    kernel: Weak<KernelInner>,
    /// The `EmulatedClient` it is counted against.
    client: usize,
    family: Family,
    kind: Kind,
    pending: PendingQueue<Op>,
    state: Mutex<State>,
    /// Calls on the socket that have not returned yet (`WskCloseSocket`
    /// with one in progress bugchecks).
    calls: AtomicUsize,
    this: Weak<Self>,
}

#[allow(
    clippy::struct_excessive_bools,
    reason = "independent facts about one socket"
)]
struct State {
    /// Until closed; then in quarantine.
    header: Option<Header>,
    /// Until closed or reset.
    host: Option<HostSocket>,
    /// Set while the poller watches the host socket.
    token: Option<Token>,
    bound: bool,
    phase: Phase,
    /// Handed to the client (a `WskSocketConnect` socket is only on success).
    published: bool,
    /// `TCP_FASTOPEN` set with `WskControlSocket`.
    fast_open: bool,
    /// `SO_REUSEADDR` and `SO_EXCLUSIVEADDRUSE` as set.
    reuse_address: bool,
    exclusive: bool,
    /// `SO_RCVBUF` and `SO_SNDBUF` as set (Linux reports twice the value).
    receive_buffer: Option<u32>,
    send_buffer: Option<u32>,
    /// Parked IRPs per lane, oldest first; a cancel may have completed some
    /// since (they are skipped).
    lanes: [VecDeque<IrpHandle>; 3],
    /// A graceful disconnect sent the FIN.
    graceful: bool,
    /// The connection was reset (or aborted): every later transfer answers
    /// this status, as Windows keeps answering `STATUS_CONNECTION_RESET`
    /// (the host socket would report end-of-stream after the first error).
    reset: Option<NTSTATUS>,
    /// A receive saw the peer's end (0 bytes): with `graceful`, the
    /// connection is disconnected in both directions and closing it is
    /// graceful; otherwise `WskCloseSocket` aborts it, as on Windows.
    peer_ended: bool,
    /// Bound to the wildcard address and port 0 with the port left to the
    /// connect (see `dispatch::bind`).
    port_deferred: bool,
    /// Parked IRPs that an injected fault stalls: they never progress.
    stalled: Vec<IrpHandle>,
    /// Parked IRPs whose completion an injected fault delays.
    late: Vec<(IrpHandle, Duration)>,
    /// Completions on their way outside the queue (see
    /// `Completion::tracked`).
    outstanding: usize,
    /// The close's completion, held until `outstanding` is 0.
    close_waiting: Option<Completion>,
    /// Receive and disconnect events (connection sockets).
    events: Events,
}

impl State {
    const fn lane(&mut self, lane: Lane) -> &mut VecDeque<IrpHandle> {
        &mut self.lanes[lane as usize]
    }

    /// Pops the head of `lane`, forgetting the faults it carried.
    fn pop(&mut self, lane: Lane) -> Option<IrpHandle> {
        let irp = self.lane(lane).pop_front()?;
        self.stalled.retain(|&stalled| stalled != irp);
        self.late.retain(|&(late, _)| late != irp);
        Some(irp)
    }
}

impl Socket {
    fn create(
        kernel: &Kernel,
        client: usize,
        family: Family,
        kind: Kind,
    ) -> Result<Arc<Self>, NTSTATUS> {
        let (socket_type, protocol) = if kind == Kind::Datagram {
            (Type::DGRAM, Protocol::UDP)
        } else {
            (Type::STREAM, Protocol::TCP)
        };
        let host = HostSocket::new(family.domain(), socket_type.nonblocking(), Some(protocol))
            .map_err(|error| status_of(&error))?;
        if family == Family::V6 {
            // Windows' default (Linux' is dual-stack).
            host.set_only_v6(true).map_err(|error| status_of(&error))?;
        }
        Ok(Self::over(kernel, client, family, kind, host))
    }

    /// A socket over `host`, an open non-blocking host socket.
    fn over(
        kernel: &Kernel,
        client: usize,
        family: Family,
        kind: Kind,
        host: HostSocket,
    ) -> Arc<Self> {
        let config = &kernel.inner().provider.config;
        let connect_ex = match (config.connect_ex, config.connect_ex_stub) {
            (false, _) => dispatch::ConnectEx::Missing,
            (true, false) => dispatch::ConnectEx::Real,
            (true, true) => dispatch::ConnectEx::Stub,
        };
        let table = if config.os_build < dispatch::CONNECT_EX_FIRST_BUILD {
            dispatch::table_before_connect_ex(kind)
        } else {
            dispatch::table(kind, connect_ex)
        };
        let header = Header(Box::new(WSK_SOCKET { Dispatch: table }));
        let handle = core::ptr::from_ref::<WSK_SOCKET>(&header.0) as usize;
        Arc::new_cyclic(|this: &Weak<Self>| {
            let cancelled = this.clone();
            Self {
                handle,
                kernel: Arc::downgrade(&kernel.inner),
                client,
                family,
                kind,
                // A cancel may free a lane or end a connect: look again.
                pending: PendingQueue::with_cancel_hook(move || {
                    if let Some(socket) = cancelled.upgrade() {
                        socket.schedule_drive();
                    }
                })
                .cancelable(kernel.inner().provider.config.cancel_routines),
                state: Mutex::new(State {
                    header: Some(header),
                    host: Some(host),
                    token: None,
                    bound: false,
                    phase: Phase::Idle,
                    published: false,
                    fast_open: false,
                    reuse_address: false,
                    exclusive: false,
                    receive_buffer: None,
                    send_buffer: None,
                    lanes: Default::default(),
                    graceful: false,
                    peer_ended: false,
                    reset: None,
                    port_deferred: false,
                    stalled: Vec::new(),
                    late: Vec::new(),
                    outstanding: 0,
                    close_waiting: None,
                    events: Events::default(),
                }),
                calls: AtomicUsize::new(0),
                this: this.clone(),
            }
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The state as a call must see it: a connect that a cancel has
    /// already completed counts as given up, even before the poller has
    /// looked at the socket again.
    fn current_state(&self) -> MutexGuard<'_, State> {
        let mut state = self.lock();
        self.drop_cancelled(&mut state, &self.kernel(), Lane::Connect);
        state
    }

    fn kernel(&self) -> Kernel {
        let inner = self.kernel.upgrade().unwrap_or_else(|| {
            bugcheck(
                "DRIVER_VERIFIER_DETECTED_VIOLATION",
                format_args!(
                    "socket {:#x} used after its kernel was dropped",
                    self.handle
                ),
            )
        });
        Kernel { inner }
    }

    /// Hands the socket to its client: callable, and counted until closed.
    fn publish(&self, state: &mut State, kernel: &Kernel) {
        let this = self.this.upgrade().expect("called on a live socket");
        state.published = true;
        lock(&LIVE).insert(self.handle, this);
        kernel
            .inner()
            .provider
            .socket_opened(self.client as *const EmulatedClient);
    }

    /// Runs a call's operation at once if its lane is free and it can
    /// finish; otherwise parks it behind its lane until the poller moves it
    /// on (under `always_pend`, always). The kernel's fault plan may stall
    /// it, delay its completion, complete it inline, or end the connection
    /// under it.
    fn submit(
        &self,
        mut state: MutexGuard<'_, State>,
        irp: IrpHandle,
        lane: Lane,
        mut op: Op,
    ) -> NTSTATUS {
        let kernel = self.kernel();
        let always_pend = kernel.inner().provider.config.always_pend;
        let on_connection =
            lane != Lane::Connect && state.phase == Phase::Connected && state.reset.is_none();
        let fault = kernel
            .inner()
            .faults
            .socket_call(on_connection, always_pend);
        let always_pend = always_pend && fault != Some(CallFault::Inline);
        let delay = match fault {
            Some(CallFault::Late(delay)) => Some(delay),
            Some(CallFault::ForcedClose) => {
                return self.sever(state, irp, STATUS_FILE_FORCED_CLOSED);
            }
            Some(CallFault::Reset) => return self.sever(state, irp, STATUS_CONNECTION_RESET),
            _ => None,
        };
        self.drop_cancelled(&mut state, &kernel, lane);
        // A `WskSocketConnect` socket not handed out yet lives only as long
        // as the poller watches it (until its connect ends): a stalled
        // connect, never attempted, must be watched from now on.
        let stall = fault == Some(CallFault::Stall)
            && (lane != Lane::Connect || self.watch(&mut state, &kernel).is_ok());
        // A receive waits behind a receive event being delivered, so that
        // bytes keep their order.
        let behind_event = lane == Lane::Receive && state.events.indicating;
        if !always_pend
            && !stall
            && !behind_event
            && state.lane(lane).is_empty()
            && let Progress::Done(status, information) = self.attempt(&mut state, &kernel, &mut op)
        {
            let (status, information) = self.settle(&mut state, &kernel, &op, status, information);
            let mut completion = Completion::new(irp, status, information);
            if delay.is_some() {
                self.track(&mut state, &mut completion);
            }
            drop(state);
            if let Some(delay) = delay {
                completion.late = Some((delay, kernel.clone()));
                // SAFETY: the provider owns the IRP and returns STATUS_PENDING.
                unsafe { io::mark_pending(irp) };
                completion.run();
                return STATUS_PENDING;
            }
            completion.run();
            return status;
        }
        // SAFETY: the provider owns the IRP; the queue lives as long as the
        // socket, and closing it takes every IRP out first.
        if unsafe { self.pending.pend(irp, op) }.is_some() {
            // Cancelled already: `pend` completed it.
            if lane == Lane::Connect {
                Self::abandon_connect(&mut state, &kernel);
            }
        } else {
            state.lane(lane).push_back(irp);
            if stall {
                state.stalled.push(irp);
            }
            if let Some(delay) = delay {
                state.late.push((irp, delay));
            }
        }
        drop(state);
        if always_pend {
            self.schedule_drive();
        }
        STATUS_PENDING
    }

    /// The connection ends under a call (an injected fault): the host
    /// connection is reset, and the call, everything parked on the socket
    /// and every later transfer answer `status`.
    fn sever(
        &self,
        mut state: MutexGuard<'_, State>,
        irp: IrpHandle,
        status: NTSTATUS,
    ) -> NTSTATUS {
        let kernel = self.kernel();
        let parked = self.take_all_parked(&mut state);
        Self::unwatch(&mut state, &kernel);
        state.reset = Some(status);
        let host = state.host.take();
        let mut completion = Completion::new(irp, status, 0);
        self.track(&mut state, &mut completion);
        drop(state);
        self.wait_for_cancels();
        for (parked_irp, op) in parked {
            Completion::new(parked_irp, status, op.done()).run();
        }
        if let Some(host) = host {
            reset(host);
        }
        // The call was under way when the connection ended: it pends, then
        // fails from the poller thread.
        // SAFETY: the provider owns the IRP and returns STATUS_PENDING.
        unsafe { io::mark_pending(irp) };
        kernel
            .inner()
            .poller()
            .schedule(Box::new(move || completion.run()));
        STATUS_PENDING
    }

    /// Counts a completion that will be delivered outside the queue.
    fn track(&self, state: &mut State, completion: &mut Completion) {
        state.outstanding += 1;
        completion.tracked = self.this.upgrade();
    }

    /// A tracked completion was delivered: the last one releases a close
    /// that waited for it.
    fn untrack(&self) {
        let waiting = {
            let mut state = self.lock();
            state.outstanding -= 1;
            if state.outstanding == 0 {
                state.close_waiting.take()
            } else {
                None
            }
        };
        if let Some(close) = waiting {
            close.run();
        }
    }

    /// One attempt at `op` on the host socket, which the poller watches
    /// from the first attempt on.
    fn attempt(&self, state: &mut State, kernel: &Kernel, op: &mut Op) -> Progress {
        // An earlier graceful disconnect sent the FIN: there is no
        // connection left to disconnect, as Windows answers a second one.
        if matches!(op, Op::Disconnect { .. }) && state.graceful {
            return Progress::Done(STATUS_INVALID_CONNECTION, 0);
        }
        if let (Some(status), Op::Send { .. } | Op::Receive { .. } | Op::Disconnect { .. }) =
            (state.reset, &*op)
        {
            return Progress::Done(status, 0);
        }
        if let Err(status) = self.watch(state, kernel) {
            return Progress::Done(status, 0);
        }
        if let Op::Accept(accept) = op {
            return self.accept_one(state, kernel, accept);
        }
        match state.host.as_ref() {
            Some(host) => op.attempt(host, &kernel.inner().fast_open),
            None => Progress::Done(STATUS_INVALID_CONNECTION, op.done()),
        }
    }

    /// One attempt at `WskAccept`: a connection the host accepted becomes a
    /// connection socket of the listener's client, counted and callable,
    /// and the IRP's information.
    fn accept_one(&self, state: &State, kernel: &Kernel, accept: &transfer::Accept) -> Progress {
        let Some(host) = state.host.as_ref() else {
            return Progress::Done(STATUS_INVALID_CONNECTION, 0);
        };
        let (stream, _) = match host.accept() {
            Ok(accepted) => accepted,
            // A peer that reset before it was accepted is gone, not an
            // error of the accept (Windows does not complete it either).
            Err(error)
                if error.kind() == std::io::ErrorKind::WouldBlock
                    || matches!(
                        error.raw_os_error(),
                        Some(libc::ECONNABORTED | libc::EPROTO)
                    ) =>
            {
                return Progress::Blocked;
            }
            Err(error) => return Progress::Done(status_of(&error), 0),
        };
        let addresses = stream
            .set_nonblocking(true)
            .and_then(|()| Ok((stream.local_addr()?, stream.peer_addr()?)));
        let (local, remote) = match addresses {
            Ok((local, remote)) => (local.as_socket(), remote.as_socket()),
            Err(error) => return Progress::Done(status_of(&error), 0),
        };
        let (Some(local), Some(remote)) = (local, remote) else {
            return Progress::Done(STATUS_INVALID_CONNECTION, 0);
        };
        let accepted = Self::over(kernel, self.client, self.family, Kind::Connection, stream);
        {
            let mut accepted_state = accepted.lock();
            accepted_state.bound = true;
            accepted_state.phase = Phase::Connected;
            accepted_state.events = Events::given(accept.context, accept.dispatch);
            accepted.publish(&mut accepted_state, kernel);
        }
        for (address, out) in [(local, accept.local), (remote, accept.remote)] {
            if !out.is_null() {
                // SAFETY: the client's output buffer, large enough for any
                // address (WSK contract), valid until the IRP completes.
                unsafe { sockaddr::write(&address, out) };
            }
        }
        Progress::Done(STATUS_SUCCESS, accepted.handle)
    }

    /// What a finished operation means for the socket; gives the IRP's
    /// final status and information.
    fn settle(
        &self,
        state: &mut State,
        kernel: &Kernel,
        op: &Op,
        status: NTSTATUS,
        information: usize,
    ) -> (NTSTATUS, usize) {
        match op {
            Op::Connect(_) if status == STATUS_SUCCESS => {
                state.phase = Phase::Connected;
                if !state.published {
                    // WskSocketConnect: the new socket is the result.
                    self.publish(state, kernel);
                    return (status, self.handle);
                }
                // Microsoft documents no byte count for WskConnect or
                // WskConnectEx: clients must not rely on one.
                return (status, 0);
            }
            Op::Connect(_) => Self::abandon_connect(state, kernel),
            Op::Disconnect { .. } if status == STATUS_SUCCESS => state.graceful = true,
            Op::Receive { buffer, .. }
                if status == STATUS_SUCCESS && information == 0 && buffer.len() > 0 =>
            {
                state.peer_ended = true;
            }
            Op::Send { .. } | Op::Receive { .. } | Op::Disconnect { .. }
                if status == STATUS_CONNECTION_RESET || status == STATUS_CONNECTION_ABORTED =>
            {
                state.reset.get_or_insert(status);
            }
            _ => {}
        }
        (status, information)
    }

    /// After a connect failed or was cancelled: a `WskSocketConnect`
    /// socket, never handed out, is discarded; any other is unusable until
    /// closed.
    fn abandon_connect(state: &mut State, kernel: &Kernel) {
        if state.published {
            state.phase = Phase::Broken;
        } else {
            state.phase = Phase::Closed;
            Self::unwatch(state, kernel);
            state.host = None;
            state.header = None;
        }
    }

    /// Forgets IRPs at the head of `lane` that a cancel has completed.
    fn drop_cancelled(&self, state: &mut State, kernel: &Kernel, lane: Lane) {
        while let Some(&irp) = state.lane(lane).front() {
            if self.pending.contains(irp) {
                break;
            }
            state.pop(lane);
            if lane == Lane::Connect {
                Self::abandon_connect(state, kernel);
            }
        }
    }

    /// Moves every parked operation on as far as the host allows; gives
    /// the IRPs that finished.
    fn advance(&self, state: &mut State, kernel: &Kernel) -> Vec<Completion> {
        let mut finished = Vec::new();
        for lane in LANES {
            // Sends and receives wait for the connect (lanes are flushed
            // when a connection ends); a listener's accepts use the
            // receive lane; a bound datagram socket moves both.
            if lane == Lane::Connect
                || state.phase == Phase::Connected
                || (state.phase == Phase::Listening && lane == Lane::Receive)
                || (self.kind == Kind::Datagram && state.bound)
            {
                self.advance_lane(state, kernel, lane, &mut finished);
            }
        }
        finished
    }

    fn advance_lane(
        &self,
        state: &mut State,
        kernel: &Kernel,
        lane: Lane,
        finished: &mut Vec<Completion>,
    ) {
        loop {
            self.drop_cancelled(state, kernel, lane);
            let Some(&irp) = state.lane(lane).front() else {
                return;
            };
            // Taken out while the host is called: a cancel cannot complete
            // the IRP while its buffer is in use.
            // SAFETY: parked in this socket's queue.
            let Some(mut op) = (unsafe { self.pending.take(irp) }) else {
                // A cancel is completing it right now.
                state.pop(lane);
                if lane == Lane::Connect {
                    Self::abandon_connect(state, kernel);
                }
                continue;
            };
            let progress = if state.stalled.contains(&irp) {
                Progress::Blocked
            } else {
                self.attempt(state, kernel, &mut op)
            };
            match progress {
                Progress::Done(status, information) => {
                    let delay = state
                        .late
                        .iter()
                        .find_map(|&(parked, delay)| (parked == irp).then_some(delay));
                    state.pop(lane);
                    let (status, information) =
                        self.settle(state, kernel, &op, status, information);
                    let mut completion = Completion::new(irp, status, information);
                    if let Some(delay) = delay {
                        completion.late = Some((delay, kernel.clone()));
                        self.track(state, &mut completion);
                    }
                    finished.push(completion);
                }
                Progress::Blocked => {
                    // SAFETY: taken back above, so owned by the provider;
                    // the queue lives as long as the socket.
                    if unsafe { self.pending.pend(irp, op) }.is_none() {
                        return;
                    }
                    // Cancelled meanwhile: `pend` completed it; the loop
                    // drops it from the lane.
                }
            }
        }
    }

    /// Moves parked operations on, completes those that finished, then
    /// delivers the events due, until nothing moves.
    fn drive(&self) {
        let kernel = self.kernel();
        loop {
            let finished = self.advance(&mut self.lock(), &kernel);
            if !finished.is_empty() {
                kernel.inner().faults.jitter();
            }
            for completion in finished {
                completion.run();
            }
            if !self.indicate() {
                return;
            }
        }
    }

    /// Delivers the next event due, if any (see `events`): whether one was
    /// delivered or the socket's state moved.
    fn indicate(&self) -> bool {
        let mut state = self.lock();
        if state.phase != Phase::Connected || !state.lane(Lane::Receive).is_empty() {
            return false;
        }
        let Some(next) = state.events.next(state.peer_ended, state.reset.is_some()) else {
            return false;
        };
        let (context, dispatch) = state.events.target();
        if let Next::Disconnect { abortive } = next {
            state.events.told_end();
            state.events.indicating = true;
            drop(state);
            Events::deliver_end(context, dispatch, abortive);
            self.lock().events.indicating = false;
            return true;
        }
        let State { host, events, .. } = &mut *state;
        let Some(host) = host.as_ref() else {
            return false;
        };
        let length = match events.peek(host) {
            Ok(0) => {
                state.peer_ended = true;
                return true;
            }
            Ok(length) => length,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(error) => {
                state.reset.get_or_insert_with(|| status_of(&error));
                return true;
            }
        };
        let head = state.events.hold(length);
        // Counted from now: the client may release it inside the callback.
        let kernel = self.kernel();
        let kept = &kernel.inner().indications_kept;
        kept.fetch_add(1, Ordering::SeqCst);
        state.events.indicating = true;
        state.events.posted_during = false;
        drop(state);
        let (status, taken) = Events::deliver_receive(context, dispatch, head, length);
        let mut state = self.lock();
        state.events.indicating = false;
        if state.events.settle(head, status) {
            kept.fetch_sub(1, Ordering::SeqCst);
        }
        if let Some(host) = state.host.as_ref()
            && let Err(error) = transfer::discard(host, taken)
        {
            state.reset.get_or_insert_with(|| status_of(&error));
        }
        if taken < length && !state.events.posted_during {
            // Not all taken: no event until a WskReceive is posted.
            state.events.throttled = true;
        }
        true
    }

    /// Has the poller thread [`drive`](Self::drive) this socket.
    fn schedule_drive(&self) {
        let (Some(this), Some(kernel)) = (self.this.upgrade(), self.kernel.upgrade()) else {
            return;
        };
        kernel.poller().schedule(Box::new(move || this.drive()));
    }

    /// Has the poller watch the host socket (once).
    fn watch(&self, state: &mut State, kernel: &Kernel) -> Result<(), NTSTATUS> {
        let (None, Some(host)) = (state.token, state.host.as_ref()) else {
            return Ok(());
        };
        let this: Arc<dyn Ready> = self.this.upgrade().expect("called on a live socket");
        let token = kernel
            .inner()
            .poller()
            .register(host.as_raw_fd(), this)
            .map_err(|error| status_of(&error))?;
        state.token = Some(token);
        Ok(())
    }

    fn unwatch(state: &mut State, kernel: &Kernel) {
        if let (Some(token), Some(host)) = (state.token.take(), state.host.as_ref()) {
            kernel.inner().poller().deregister(host.as_raw_fd(), token);
        }
    }

    /// Takes every parked IRP back (cancels in progress keep theirs, and
    /// are waited for: their routines touch the queue until done).
    fn take_all_parked(&self, state: &mut State) -> Vec<(IrpHandle, Op)> {
        for lane in LANES {
            state.lane(lane).clear();
        }
        state.stalled.clear();
        state.late.clear();
        self.pending.take_all()
    }

    fn wait_for_cancels(&self) {
        while !self.pending.is_empty() {
            std::thread::yield_now();
        }
    }

    /// `WskDisconnect` with `WSK_FLAG_ABORTIVE`: resets the connection
    /// (`SO_LINGER` 0) and fails everything parked on it.
    fn abort(&self, mut state: MutexGuard<'_, State>, irp: IrpHandle) -> NTSTATUS {
        let kernel = self.kernel();
        let parked = self.take_all_parked(&mut state);
        Self::unwatch(&mut state, &kernel);
        state.phase = Phase::Aborted;
        let host = state.host.take();
        drop(state);
        self.wait_for_cancels();
        for (parked_irp, op) in parked {
            Completion::new(parked_irp, STATUS_CONNECTION_ABORTED, op.done()).run();
        }
        if let Some(host) = host {
            reset(host);
        }
        finish(&kernel, irp, STATUS_SUCCESS, 0)
    }

    /// `WskCloseSocket`: cancels what is parked, closes the host socket
    /// (abortively unless the connection was disconnected in both
    /// directions: a graceful disconnect, and the peer's end received, as
    /// Microsoft's `WskCloseSocket` page says), uncounts the
    /// socket, then completes the close.
    fn close(&self, irp: IrpHandle) -> NTSTATUS {
        let kernel = self.kernel();
        // No event starts once closing; one being delivered is waited for
        // (Microsoft: in-progress callbacks return before the close
        // completes); then every list the client kept must be back.
        self.lock().phase = Phase::Closed;
        while self.lock().events.indicating {
            std::thread::yield_now();
        }
        self.lock().events.check_closing(self.handle);
        let (parked, host, graceful) = {
            let mut state = self.lock();
            let parked = self.take_all_parked(&mut state);
            Self::unwatch(&mut state, &kernel);
            state.phase = Phase::Closed;
            if let Some(header) = state.header.take() {
                quarantine(header);
            }
            (
                parked,
                state.host.take(),
                state.graceful && state.peer_ended,
            )
        };
        self.wait_for_cancels();
        for (parked_irp, _) in parked {
            Completion::new(parked_irp, STATUS_CANCELLED, 0).run();
        }
        if let Some(host) = host {
            if graceful {
                drop(host);
            } else {
                reset(host);
            }
        }
        kernel
            .inner()
            .provider
            .socket_closed(self.client as *const EmulatedClient);
        // A close completes after every call on the socket: one whose
        // completion is still on its way (late, or after a reset) holds it.
        {
            let mut state = self.lock();
            if state.outstanding > 0 {
                // SAFETY: the provider owns the IRP and returns STATUS_PENDING.
                unsafe { io::mark_pending(irp) };
                state.close_waiting = Some(Completion::new(irp, STATUS_SUCCESS, 0));
                return STATUS_PENDING;
            }
        }
        finish(&kernel, irp, STATUS_SUCCESS, 0)
    }
}

/// Closes a host socket with a reset rather than a FIN.
fn reset(host: HostSocket) {
    // If it fails the close is merely graceful; nothing else depends on it.
    let _ = host.set_linger(Some(Duration::ZERO));
    drop(host);
}

impl Ready for Socket {
    fn ready(self: Arc<Self>) {
        self.drive();
    }
}
