//! The WSK entry points: `WskSocket` and `WskSocketConnect` from the
//! provider's client-level table, and the socket dispatch tables.
//!
//! Each entry point checks the IRQL, then that the socket is live (before
//! touching it), takes the IRP, and validates its arguments the way the real
//! provider does; a rejected call completes its IRP with the status and
//! returns it.

use core::ffi::c_void;
use core::mem::{offset_of, size_of};
use core::ops::Deref;
use core::ptr;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use super::errno::status_of;
use super::events::Events;
use super::sockaddr::{self, Family};
use super::transfer::{Accept, Buffer, Connect, Op, Sender, Stage};
use super::{Kind, Lane, Phase, Socket, State, finish, live, retire};
use crate::abi::{
    ADDRESS_FAMILY, IPPROTO_TCP, IPPROTO_UDP, IRP, NTSTATUS, SIZE_T, SO_EXCLUSIVEADDRUSE,
    SO_KEEPALIVE, SO_RCVBUF, SO_REUSEADDR, SO_SNDBUF, SOCK_DGRAM, SOCK_STREAM, SOCKADDR,
    SOL_SOCKET, STATUS_ADDRESS_ALREADY_ASSOCIATED, STATUS_BUFFER_OVERFLOW,
    STATUS_CONNECTION_ACTIVE, STATUS_FILE_FORCED_CLOSED, STATUS_INVALID_CONNECTION,
    STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_PARAMETER, STATUS_NOT_SUPPORTED, STATUS_SUCCESS,
    TCP_FASTOPEN, TCP_NODELAY, ULONG, USHORT, WSK_BUF, WSK_CLIENT, WSK_CLIENT_CONNECTION_DISPATCH,
    WSK_CONTROL_SOCKET_TYPE, WSK_FLAG_ABORTIVE, WSK_FLAG_BASIC_SOCKET, WSK_FLAG_CONNECTION_SOCKET,
    WSK_FLAG_DATAGRAM_SOCKET, WSK_FLAG_LISTEN_SOCKET, WSK_FLAG_NODELAY, WSK_FLAG_STREAM_SOCKET,
    WSK_FLAG_WAITALL, WSK_PROVIDER_BASIC_DISPATCH, WSK_PROVIDER_CONNECTION_DISPATCH,
    WSK_PROVIDER_DATAGRAM_DISPATCH, WSK_PROVIDER_LISTEN_DISPATCH, WSK_PROVIDER_STREAM_DISPATCH,
    WSK_SOCKET, WskGetOption as GET_OPTION, WskSetOption as SET_OPTION,
};
use crate::abi::{PFN_WSK_CONNECT_EX, STATUS_NOT_IMPLEMENTED};
use crate::abi::{SO_WSK_EVENT_CALLBACK, WSK_DATA_INDICATION};
use crate::emulator::io::{self, IrpHandle};
use crate::emulator::verifier::bugcheck;
use crate::emulator::{irql, provider};

/// The backlog of a listening socket's host socket.
const LISTEN_BACKLOG: i32 = 128;

/// `WskConnectEx` sends at most this much with the connect.
const CONNECT_EX_MAX: usize = 65_535;

/// What a socket's `WskConnectEx` entry is.
#[derive(Clone, Copy)]
pub(super) enum ConnectEx {
    /// The real thing.
    Real,
    /// NULL, as before Windows 10 1703.
    Missing,
    /// A stub answering `STATUS_NOT_IMPLEMENTED` without completing its
    /// IRP, as Wine 8's.
    Stub,
}

impl ConnectEx {
    const fn entry(self) -> PFN_WSK_CONNECT_EX {
        match self {
            Self::Real => Some(wsk_connect_ex),
            Self::Missing => None,
            Self::Stub => Some(wsk_connect_ex_stub),
        }
    }
}

/// The dispatch table a socket of `kind` gets.
pub(super) fn table(kind: Kind, connect_ex: ConnectEx) -> *const c_void {
    match (kind, connect_ex) {
        (Kind::Connection, ConnectEx::Real) => ptr::from_ref(&CONNECTION).cast(),
        (Kind::Connection, ConnectEx::Missing) => ptr::from_ref(&CONNECTION_WITHOUT_EX).cast(),
        (Kind::Connection, ConnectEx::Stub) => ptr::from_ref(&CONNECTION_STUB_EX).cast(),
        (Kind::Stream, ConnectEx::Real) => ptr::from_ref(&STREAM).cast(),
        (Kind::Stream, ConnectEx::Missing) => ptr::from_ref(&STREAM_WITHOUT_EX).cast(),
        (Kind::Stream, ConnectEx::Stub) => ptr::from_ref(&STREAM_STUB_EX).cast(),
        (Kind::Listen, _) => ptr::from_ref(&LISTEN).cast(),
        (Kind::Datagram, _) => ptr::from_ref(&DATAGRAM).cast(),
    }
}

/// The first build whose socket tables hold `WskConnectEx` (Windows 10
/// 1703).
pub(super) const CONNECT_EX_FIRST_BUILD: u32 = 15_063;

/// The dispatch table a socket of `kind` gets from a provider before
/// Windows 10 1703: it ends after `WskRelease`, and the page after it is
/// unmapped, so a client that reads `WskConnectEx` anyway faults at once
/// instead of reading whatever follows the real provider's table.
pub(super) fn table_before_connect_ex(kind: Kind) -> *const c_void {
    static TABLES: OnceLock<(usize, usize)> = OnceLock::new();
    let &(connection, stream) = TABLES.get_or_init(|| {
        (
            end_of_page(
                &CONNECTION_WITHOUT_EX,
                offset_of!(WSK_PROVIDER_CONNECTION_DISPATCH, WskConnectEx),
            ),
            end_of_page(
                &STREAM_WITHOUT_EX,
                offset_of!(WSK_PROVIDER_STREAM_DISPATCH, WskConnectEx),
            ),
        )
    });
    match kind {
        Kind::Connection => connection as *const c_void,
        Kind::Stream => stream as *const c_void,
        // The listening and datagram tables have no `WskConnectEx` to leave
        // out.
        Kind::Listen => ptr::from_ref(&LISTEN).cast(),
        Kind::Datagram => ptr::from_ref(&DATAGRAM).cast(),
    }
}

/// A read-only copy of the first `length` bytes of `table` that ends where
/// an inaccessible page begins; its address. Mapped for the life of the
/// process, as a provider's tables live as long as the system.
fn end_of_page<T>(table: &T, length: usize) -> usize {
    // SAFETY: sysconf only reads a configuration value.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .expect("the host has a page size");
    assert!(length <= page && length <= size_of::<T>());
    // SAFETY: a fresh anonymous private mapping of two pages.
    let base = unsafe {
        libc::mmap(
            ptr::null_mut(),
            2 * page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(base, libc::MAP_FAILED, "map pages for a dispatch table");
    let base = base.cast::<u8>();
    // Pointer-aligned: the page size and `length` (an entry's offset) are
    // multiples of 8.
    let start = base.wrapping_add(page - length);
    // SAFETY: `length` bytes of `table` (checked above) into the mapping,
    // which cannot overlap a static.
    unsafe { ptr::copy_nonoverlapping(ptr::from_ref(table).cast::<u8>(), start, length) };
    // SAFETY: the first page of our own mapping.
    let readable = unsafe { libc::mprotect(base.cast(), page, libc::PROT_READ) };
    // SAFETY: the second page of our own mapping.
    let guard = unsafe { libc::mprotect(base.wrapping_add(page).cast(), page, libc::PROT_NONE) };
    assert_eq!(
        (readable, guard),
        (0, 0),
        "protect a dispatch table's pages"
    );
    start as usize
}

static CONNECTION: WSK_PROVIDER_CONNECTION_DISPATCH = connection_table(ConnectEx::Real);
static CONNECTION_WITHOUT_EX: WSK_PROVIDER_CONNECTION_DISPATCH =
    connection_table(ConnectEx::Missing);
static CONNECTION_STUB_EX: WSK_PROVIDER_CONNECTION_DISPATCH = connection_table(ConnectEx::Stub);
static STREAM: WSK_PROVIDER_STREAM_DISPATCH = stream_table(ConnectEx::Real);
static STREAM_WITHOUT_EX: WSK_PROVIDER_STREAM_DISPATCH = stream_table(ConnectEx::Missing);
static STREAM_STUB_EX: WSK_PROVIDER_STREAM_DISPATCH = stream_table(ConnectEx::Stub);
static DATAGRAM: WSK_PROVIDER_DATAGRAM_DISPATCH = WSK_PROVIDER_DATAGRAM_DISPATCH {
    Basic: basic_table(),
    WskBind: Some(wsk_bind),
    WskSendTo: Some(wsk_send_to),
    WskReceiveFrom: Some(wsk_receive_from),
    // Datagram indications (events) and WskSendMessages are not emulated.
    WskRelease: ptr::null(),
    WskGetLocalAddress: Some(wsk_get_local_address),
    WskSendMessages: ptr::null(),
};
static LISTEN: WSK_PROVIDER_LISTEN_DISPATCH = WSK_PROVIDER_LISTEN_DISPATCH {
    Basic: basic_table(),
    WskBind: Some(wsk_bind),
    WskAccept: Some(wsk_accept),
    // Conditional accept (`SO_CONDITIONAL_ACCEPT`) is not emulated.
    WskInspectComplete: ptr::null(),
    WskGetLocalAddress: Some(wsk_get_local_address),
};

/// A `WskConnectEx` that is not implemented: it returns at once and never
/// touches (or completes) the IRP, as Wine 8's stub does.
unsafe extern "system" fn wsk_connect_ex_stub(
    _socket: *mut WSK_SOCKET,
    _remote: *mut SOCKADDR,
    _buffer: *mut WSK_BUF,
    _flags: u32,
    _irp: *mut IRP,
) -> NTSTATUS {
    require_irql("WskConnectEx");
    STATUS_NOT_IMPLEMENTED
}

const fn basic_table() -> WSK_PROVIDER_BASIC_DISPATCH {
    WSK_PROVIDER_BASIC_DISPATCH {
        WskControlSocket: Some(wsk_control_socket),
        WskCloseSocket: Some(wsk_close_socket),
    }
}

/// `WskConnectEx` is NULL before Windows 10 1703.
const fn connection_table(connect_ex: ConnectEx) -> WSK_PROVIDER_CONNECTION_DISPATCH {
    WSK_PROVIDER_CONNECTION_DISPATCH {
        Basic: basic_table(),
        WskBind: Some(wsk_bind),
        WskConnect: Some(wsk_connect),
        WskGetLocalAddress: Some(wsk_get_local_address),
        WskGetRemoteAddress: Some(wsk_get_remote_address),
        WskSend: Some(wsk_send),
        WskReceive: Some(wsk_receive),
        WskDisconnect: Some(wsk_disconnect),
        WskRelease: Some(wsk_release),
        WskConnectEx: connect_ex.entry(),
        WskSendEx: ptr::null(),
        WskReceiveEx: ptr::null(),
    }
}

/// `WskRelease`: gives back a list of data indications the client kept
/// (see `events`).
unsafe extern "system" fn wsk_release(
    socket: *mut WSK_SOCKET,
    indication: *mut WSK_DATA_INDICATION,
) -> NTSTATUS {
    require_irql("WskRelease");
    let socket = InProgress::new(live(socket, "WskRelease"));
    socket.lock().events.release(indication, socket.handle);
    socket
        .kernel()
        .inner()
        .indications_kept
        .fetch_sub(1, Ordering::SeqCst);
    STATUS_SUCCESS
}

const fn stream_table(connect_ex: ConnectEx) -> WSK_PROVIDER_STREAM_DISPATCH {
    WSK_PROVIDER_STREAM_DISPATCH {
        Basic: basic_table(),
        WskBind: Some(wsk_bind),
        WskAccept: ptr::null(),
        WskConnect: Some(wsk_connect),
        WskListen: ptr::null(),
        WskSend: Some(wsk_send),
        WskReceive: Some(wsk_receive),
        WskDisconnect: Some(wsk_disconnect),
        WskRelease: None,
        WskGetLocalAddress: Some(wsk_get_local_address),
        WskGetRemoteAddress: Some(wsk_get_remote_address),
        WskConnectEx: connect_ex.entry(),
        WskSendEx: ptr::null(),
        WskReceiveEx: ptr::null(),
    }
}

/// The socket functions look their rule up when called (a scan of a few
/// dozen names, beside the host system call most of them make).
fn require_irql(function: &str) {
    irql::require(irql::rule_of(function));
}

/// Takes the IRP of a call that must have one.
///
/// # Safety
/// `irp` is NULL or an IRP the caller hands over (`start` checks it is live).
unsafe fn take_irp(irp: *mut IRP, function: &str) -> IrpHandle {
    if irp.is_null() {
        bugcheck(
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format_args!("{function}: called without an IRP"),
        );
    }
    // SAFETY: a non-NULL IRP handed over (the contract).
    unsafe { io::start(irp, function) }
}

/// A `Flags` parameter that is reserved must be 0.
const fn reserved(flags: ULONG) -> Result<(), NTSTATUS> {
    allowed(flags, 0)
}

/// `flags` may hold only bits of `mask`.
const fn allowed(flags: ULONG, mask: ULONG) -> Result<(), NTSTATUS> {
    if flags & !mask == 0 {
        Ok(())
    } else {
        Err(STATUS_INVALID_PARAMETER)
    }
}

/// Send and receive need a connection.
const fn require_connected(state: &State) -> Result<(), NTSTATUS> {
    match state.phase {
        Phase::Connected => Ok(()),
        Phase::Broken => Err(STATUS_FILE_FORCED_CLOSED),
        Phase::Idle | Phase::Listening | Phase::Connecting | Phase::Aborted | Phase::Closed => {
            Err(STATUS_INVALID_CONNECTION)
        }
    }
}

/// A call on a live socket that has not returned yet: while one is in
/// progress, `WskCloseSocket` on the socket bugchecks (Microsoft's page for
/// it: no other call may be in progress when it is called).
struct InProgress(Arc<Socket>);

impl InProgress {
    fn new(socket: Arc<Socket>) -> Self {
        socket.calls.fetch_add(1, Ordering::AcqRel);
        Self(socket)
    }
}

impl Deref for InProgress {
    type Target = Arc<Socket>;

    fn deref(&self) -> &Arc<Socket> {
        &self.0
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.calls.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A socket-level call in progress: the live socket and its IRP.
struct Call {
    socket: InProgress,
    irp: IrpHandle,
}

impl Call {
    /// The checks every socket-level entry point starts with, in the order
    /// that keeps them sound: IRQL, then liveness (the pointer is never
    /// dereferenced), then the IRP.
    ///
    /// # Safety
    /// `irp` is as for [`take_irp`].
    unsafe fn begin(socket: *mut WSK_SOCKET, irp: *mut IRP, function: &str) -> Self {
        require_irql(function);
        let socket = InProgress::new(live(socket, function));
        // SAFETY: forwarded contract.
        let irp = unsafe { take_irp(irp, function) };
        Self { socket, irp }
    }

    /// Runs the call's body: `Ok` is the status it returned (its IRP is
    /// completed or pending), `Err` a rejection that completes the IRP.
    fn run(
        self,
        body: impl FnOnce(&Arc<Socket>, IrpHandle) -> Result<NTSTATUS, NTSTATUS>,
    ) -> NTSTATUS {
        body(&self.socket, self.irp)
            .unwrap_or_else(|status| finish(&self.socket.kernel(), self.irp, status, 0))
    }
}

/// `WskSocket`: connection, stream and listening sockets over TCP, and
/// datagram sockets over UDP.
pub unsafe extern "system" fn wsk_socket(
    client: *mut WSK_CLIENT,
    address_family: ADDRESS_FAMILY,
    socket_type: USHORT,
    protocol: ULONG,
    flags: ULONG,
    socket_context: *mut c_void,
    dispatch: *const c_void,
    _owning_process: *mut c_void,
    _owning_thread: *mut c_void,
    _security_descriptor: *mut c_void,
    irp: *mut IRP,
) -> NTSTATUS {
    require_irql("WskSocket");
    // SAFETY: the client handle of a captured provider NPI (WSK contract).
    let kernel = unsafe { provider::kernel_of_client(client, "WskSocket") };
    // SAFETY: the caller's IRP (WSK contract).
    let irp = unsafe { take_irp(irp, "WskSocket") };
    let created = (|| {
        let kind = match flags {
            WSK_FLAG_CONNECTION_SOCKET => Kind::Connection,
            WSK_FLAG_STREAM_SOCKET => Kind::Stream,
            WSK_FLAG_LISTEN_SOCKET => Kind::Listen,
            WSK_FLAG_DATAGRAM_SOCKET if !kernel.inner().provider.config.datagram_sockets => {
                return Err(STATUS_NOT_IMPLEMENTED);
            }
            WSK_FLAG_DATAGRAM_SOCKET => Kind::Datagram,
            WSK_FLAG_BASIC_SOCKET => return Err(STATUS_NOT_SUPPORTED),
            _ => return Err(STATUS_INVALID_PARAMETER),
        };
        let family = Family::from_windows(address_family).ok_or(STATUS_INVALID_PARAMETER)?;
        let expected = if kind == Kind::Datagram {
            (SOCK_DGRAM, IPPROTO_UDP)
        } else {
            (SOCK_STREAM, IPPROTO_TCP)
        };
        if (socket_type, protocol) != expected {
            return Err(STATUS_NOT_SUPPORTED);
        }
        let socket = Socket::create(&kernel, client as usize, family, kind)?;
        let mut state = socket.lock();
        if kind == Kind::Connection {
            // A connection socket's client table is a
            // WSK_CLIENT_CONNECTION_DISPATCH (WSK contract).
            state.events = Events::given(socket_context, dispatch.cast());
        }
        socket.publish(&mut state, &kernel);
        drop(state);
        Ok(socket.handle)
    })();
    match created {
        Ok(handle) => finish(&kernel, irp, STATUS_SUCCESS, handle),
        Err(status) => finish(&kernel, irp, status, 0),
    }
}

/// `WskSocketConnect`: a connection socket, bound to `local_address` and
/// connected to `remote_address`; the socket exists for the client (and is
/// counted) only once connected.
pub unsafe extern "system" fn wsk_socket_connect(
    client: *mut WSK_CLIENT,
    socket_type: USHORT,
    protocol: ULONG,
    local_address: *mut SOCKADDR,
    remote_address: *mut SOCKADDR,
    flags: ULONG,
    socket_context: *mut c_void,
    dispatch: *const WSK_CLIENT_CONNECTION_DISPATCH,
    _owning_process: *mut c_void,
    _owning_thread: *mut c_void,
    _security_descriptor: *mut c_void,
    irp: *mut IRP,
) -> NTSTATUS {
    require_irql("WskSocketConnect");
    // SAFETY: the client handle of a captured provider NPI (WSK contract).
    let kernel = unsafe { provider::kernel_of_client(client, "WskSocketConnect") };
    // SAFETY: the caller's IRP (WSK contract).
    let irp = unsafe { take_irp(irp, "WskSocketConnect") };
    let started = (|| {
        reserved(flags)?;
        if socket_type != SOCK_STREAM || protocol != IPPROTO_TCP {
            return Err(STATUS_NOT_SUPPORTED);
        }
        // SAFETY: the client's addresses (WSK contract).
        let local = unsafe { sockaddr::read(local_address) }?;
        // SAFETY: as above.
        let remote = unsafe { sockaddr::read(remote_address) }?;
        // The family comes from the local address; the remote must match.
        let family = Family::of(&local);
        if Family::of(&remote) != family {
            return Err(STATUS_INVALID_PARAMETER);
        }
        // Until connected the socket is only the poller's: a failure drops
        // it, uncounted, and closes the host socket.
        let socket = Socket::create(&kernel, client as usize, family, Kind::Connection)?;
        let mut state = socket.lock();
        state.events = Events::given(socket_context, dispatch);
        bind(&mut state, local, Kind::Connection)?;
        state.phase = Phase::Connecting;
        Ok(socket.submit(
            state,
            irp,
            Lane::Connect,
            connect_op(remote, Buffer::EMPTY, false),
        ))
    })();
    started.unwrap_or_else(|status| finish(&kernel, irp, status, 0))
}

const fn connect_op(remote: SocketAddr, buffer: Buffer, fast_open: bool) -> Op {
    Op::Connect(Connect {
        remote,
        buffer,
        done: 0,
        fast_open,
        stage: Stage::Start,
    })
}

/// `WskBind`. Windows assigns the port of a bind to port 0 at once, but
/// the host's search for a free port at `bind(2)` is slow under load: it
/// cannot share a port between connections to different peers, and skips
/// every port a `TIME_WAIT` still holds, where the search at `connect(2)`
/// can. So a bind to the wildcard address and port 0 leaves the port to
/// the connect (`IP_BIND_ADDRESS_NO_PORT`), and [`assign_port`] assigns it
/// at once if the client asks for the local address before connecting.
fn bind(state: &mut State, local: SocketAddr, kind: Kind) -> Result<(), NTSTATUS> {
    let listen = kind == Kind::Listen;
    if state.bound {
        return Err(STATUS_ADDRESS_ALREADY_ASSOCIATED);
    }
    let host = state.host.as_ref().ok_or(STATUS_INVALID_DEVICE_STATE)?;
    if listen {
        // A listening socket listens once bound (Microsoft's "Listening for
        // and Accepting Incoming Connections"); the provider picks the
        // backlog. Windows lets it bind a port that connections closed
        // earlier still hold in TIME_WAIT; Linux does with SO_REUSEADDR
        // (which still refuses a port another socket listens on), unless
        // SO_EXCLUSIVEADDRUSE was asked for.
        host.set_reuse_address(!state.exclusive)
            .and_then(|()| host.bind(&local.into()))
            .and_then(|()| host.listen(LISTEN_BACKLOG))
            .map_err(|error| status_of(&error))?;
        state.bound = true;
        state.phase = Phase::Listening;
        return Ok(());
    }
    // A datagram socket's port is its address for every send: assigned now.
    let defer = kind != Kind::Datagram
        && local.port() == 0
        && local.ip().is_unspecified()
        && set_bind_address_no_port(host, true).is_ok();
    host.bind(&local.into())
        .map_err(|error| status_of(&error))?;
    state.bound = true;
    state.port_deferred = defer;
    Ok(())
}

/// Gives a socket whose bind left the port to the connect its port now,
/// as Windows did at `WskBind`: binds it again to port 0, which the host
/// allows while no port is assigned.
fn assign_port(state: &mut State) -> Result<(), NTSTATUS> {
    if !state.port_deferred || state.phase != Phase::Idle {
        return Ok(());
    }
    let host = state.host.as_ref().ok_or(STATUS_INVALID_DEVICE_STATE)?;
    let local = host.local_addr().map_err(|error| status_of(&error))?;
    set_bind_address_no_port(host, false).map_err(|error| status_of(&error))?;
    host.bind(&local).map_err(|error| status_of(&error))?;
    state.port_deferred = false;
    Ok(())
}

/// Sets or clears `IP_BIND_ADDRESS_NO_PORT` (honoured for IPv6 too).
fn set_bind_address_no_port(host: &socket2::Socket, on: bool) -> std::io::Result<()> {
    let value = libc::c_int::from(on);
    // SAFETY: a valid option value of the size given, for an open socket.
    let result = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(host),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const value).cast(),
            libc::socklen_t::try_from(size_of::<libc::c_int>()).expect("an int's size fits"),
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

unsafe extern "system" fn wsk_bind(
    socket: *mut WSK_SOCKET,
    local_address: *mut SOCKADDR,
    flags: ULONG,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the caller's IRP (WSK contract).
    let call = unsafe { Call::begin(socket, irp, "WskBind") };
    call.run(|socket, irp| {
        reserved(flags)?;
        // SAFETY: the client's address (WSK contract).
        let local = unsafe { sockaddr::read(local_address) }?;
        if Family::of(&local) != socket.family {
            return Err(STATUS_INVALID_PARAMETER);
        }
        bind(&mut socket.current_state(), local, socket.kind)?;
        Ok(finish(&socket.kernel(), irp, STATUS_SUCCESS, 0))
    })
}

/// `WskAccept`: the listening socket must be bound (listening). The
/// accepted connection's socket context and event dispatch are not
/// emulated (events are not), so they must be NULL.
unsafe extern "system" fn wsk_accept(
    socket: *mut WSK_SOCKET,
    flags: ULONG,
    context: *mut c_void,
    dispatch: *const WSK_CLIENT_CONNECTION_DISPATCH,
    local_address: *mut SOCKADDR,
    remote_address: *mut SOCKADDR,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the caller's IRP (WSK contract).
    let call = unsafe { Call::begin(socket, irp, "WskAccept") };
    call.run(|socket, irp| {
        reserved(flags)?;
        let state = socket.current_state();
        if state.phase != Phase::Listening {
            return Err(STATUS_INVALID_DEVICE_STATE);
        }
        let op = Op::Accept(Accept {
            local: local_address,
            remote: remote_address,
            context,
            dispatch,
        });
        Ok(socket.submit(state, irp, Lane::Receive, op))
    })
}

/// `WskSendTo`: one datagram of the buffer to the remote address, from a
/// bound datagram socket; no control data.
unsafe extern "system" fn wsk_send_to(
    socket: *mut WSK_SOCKET,
    buffer: *mut WSK_BUF,
    flags: ULONG,
    remote_address: *mut SOCKADDR,
    control_length: ULONG,
    control: *mut c_void,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the caller's IRP (WSK contract).
    let call = unsafe { Call::begin(socket, irp, "WskSendTo") };
    call.run(|socket, irp| {
        reserved(flags)?;
        if control_length != 0 || !control.is_null() {
            return Err(STATUS_NOT_SUPPORTED);
        }
        // SAFETY: NULL or the client's WSK_BUF (WSK contract).
        let buffer = unsafe { required_buffer(buffer, "WskSendTo") }?;
        // SAFETY: the client's address (WSK contract).
        let remote = unsafe { sockaddr::read(remote_address) }?;
        if Family::of(&remote) != socket.family {
            return Err(STATUS_INVALID_PARAMETER);
        }
        let state = socket.current_state();
        if !state.bound {
            return Err(STATUS_INVALID_DEVICE_STATE);
        }
        Ok(socket.submit(state, irp, Lane::Send, Op::SendTo { buffer, remote }))
    })
}

/// `WskReceiveFrom`: one datagram into the buffer, and its sender, on a
/// bound datagram socket; no control data.
unsafe extern "system" fn wsk_receive_from(
    socket: *mut WSK_SOCKET,
    buffer: *mut WSK_BUF,
    flags: ULONG,
    remote_address: *mut SOCKADDR,
    control_length: *mut ULONG,
    control: *mut c_void,
    control_flags: *mut ULONG,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the caller's IRP (WSK contract).
    let call = unsafe { Call::begin(socket, irp, "WskReceiveFrom") };
    call.run(|socket, irp| {
        reserved(flags)?;
        if !control_length.is_null() || !control.is_null() || !control_flags.is_null() {
            return Err(STATUS_NOT_SUPPORTED);
        }
        // SAFETY: NULL or the client's WSK_BUF (WSK contract).
        let buffer = unsafe { required_buffer(buffer, "WskReceiveFrom") }?;
        if buffer.len() == 0 {
            return Err(STATUS_INVALID_PARAMETER);
        }
        let state = socket.current_state();
        if !state.bound {
            return Err(STATUS_INVALID_DEVICE_STATE);
        }
        let op = Op::ReceiveFrom {
            buffer,
            sender: Sender(remote_address),
        };
        Ok(socket.submit(state, irp, Lane::Receive, op))
    })
}

/// `WskConnect` and `WskConnectEx`: the socket must be bound and never
/// connected.
fn start_connect(
    socket: &Socket,
    irp: IrpHandle,
    remote: SocketAddr,
    buffer: Buffer,
) -> Result<NTSTATUS, NTSTATUS> {
    if Family::of(&remote) != socket.family {
        return Err(STATUS_INVALID_PARAMETER);
    }
    let mut state = socket.current_state();
    match state.phase {
        Phase::Idle => {}
        Phase::Connected => return Err(STATUS_CONNECTION_ACTIVE),
        // A listening socket has no WskConnect; a stream socket listening
        // is not emulated.
        Phase::Connecting | Phase::Listening => return Err(STATUS_INVALID_DEVICE_STATE),
        Phase::Aborted | Phase::Broken | Phase::Closed => return Err(STATUS_FILE_FORCED_CLOSED),
    }
    if !state.bound {
        return Err(STATUS_INVALID_DEVICE_STATE);
    }
    state.phase = Phase::Connecting;
    let op = connect_op(remote, buffer, state.fast_open);
    Ok(socket.submit(state, irp, Lane::Connect, op))
}

unsafe extern "system" fn wsk_connect(
    socket: *mut WSK_SOCKET,
    remote_address: *mut SOCKADDR,
    flags: ULONG,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the caller's IRP (WSK contract).
    let call = unsafe { Call::begin(socket, irp, "WskConnect") };
    call.run(|socket, irp| {
        reserved(flags)?;
        // SAFETY: the client's address (WSK contract).
        let remote = unsafe { sockaddr::read(remote_address) }?;
        start_connect(socket, irp, remote, Buffer::EMPTY)
    })
}

unsafe extern "system" fn wsk_connect_ex(
    socket: *mut WSK_SOCKET,
    remote_address: *mut SOCKADDR,
    buffer: *mut WSK_BUF,
    flags: ULONG,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the caller's IRP (WSK contract).
    let call = unsafe { Call::begin(socket, irp, "WskConnectEx") };
    call.run(|socket, irp| {
        reserved(flags)?;
        if !buffer.is_null() {
            // SAFETY: a non-NULL WSK_BUF from the client (WSK contract).
            let length = unsafe { (*buffer).Length };
            if length > CONNECT_EX_MAX {
                return Err(STATUS_BUFFER_OVERFLOW);
            }
        }
        // SAFETY: NULL or the client's WSK_BUF (WSK contract).
        let data = unsafe { Buffer::from_wsk(buffer, "WskConnectEx") };
        // SAFETY: the client's address (WSK contract).
        let remote = unsafe { sockaddr::read(remote_address) }?;
        start_connect(socket, irp, remote, data)
    })
}

/// The buffer of a send or receive, which must be given.
///
/// # Safety
/// `buffer` is NULL or points to the client's `WSK_BUF`.
unsafe fn required_buffer(buffer: *const WSK_BUF, function: &str) -> Result<Buffer, NTSTATUS> {
    if buffer.is_null() {
        return Err(STATUS_INVALID_PARAMETER);
    }
    // SAFETY: the client's WSK_BUF (the contract).
    Ok(unsafe { Buffer::from_wsk(buffer, function) })
}

unsafe extern "system" fn wsk_send(
    socket: *mut WSK_SOCKET,
    buffer: *mut WSK_BUF,
    flags: ULONG,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the caller's IRP (WSK contract).
    let call = unsafe { Call::begin(socket, irp, "WskSend") };
    call.run(|socket, irp| {
        allowed(flags, WSK_FLAG_NODELAY)?;
        // SAFETY: NULL or the client's WSK_BUF (WSK contract).
        let buffer = unsafe { required_buffer(buffer, "WskSend") }?;
        let state = socket.current_state();
        require_connected(&state)?;
        if flags & WSK_FLAG_NODELAY != 0
            && let Some(host) = &state.host
        {
            // Nagle off for good: at least this send goes out at once.
            host.set_tcp_nodelay(true)
                .map_err(|error| status_of(&error))?;
        }
        Ok(socket.submit(state, irp, Lane::Send, Op::Send { buffer, done: 0 }))
    })
}

unsafe extern "system" fn wsk_receive(
    socket: *mut WSK_SOCKET,
    buffer: *mut WSK_BUF,
    flags: ULONG,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the caller's IRP (WSK contract).
    let call = unsafe { Call::begin(socket, irp, "WskReceive") };
    call.run(|socket, irp| {
        allowed(flags, WSK_FLAG_WAITALL)?;
        // SAFETY: NULL or the client's WSK_BUF (WSK contract).
        let buffer = unsafe { required_buffer(buffer, "WskReceive") }?;
        // An empty receive could not tell data from a disconnect.
        if buffer.len() == 0 {
            return Err(STATUS_INVALID_PARAMETER);
        }
        let mut state = socket.current_state();
        require_connected(&state)?;
        let op = Op::Receive {
            buffer,
            done: 0,
            wait_all: flags & WSK_FLAG_WAITALL != 0,
        };
        // A posted receive lets receive events resume once it is done.
        state.events.throttled = false;
        state.events.posted_during = state.events.indicating;
        let events = state.events.receives();
        let status = socket.submit(state, irp, Lane::Receive, op);
        if events {
            socket.schedule_drive();
        }
        Ok(status)
    })
}

unsafe extern "system" fn wsk_disconnect(
    socket: *mut WSK_SOCKET,
    buffer: *mut WSK_BUF,
    flags: ULONG,
    irp: *mut IRP,
) -> NTSTATUS {
    if crate::emulator::Kernel::current()
        .inner()
        .provider
        .config
        .disconnect_stub
    {
        // Wine 8's stub: returns at once, never touches the IRP (the
        // verifier still stops a call on a closed socket).
        require_irql("WskDisconnect");
        live(socket, "WskDisconnect");
        return STATUS_NOT_IMPLEMENTED;
    }
    // SAFETY: the caller's IRP (WSK contract).
    let call = unsafe { Call::begin(socket, irp, "WskDisconnect") };
    call.run(|socket, irp| {
        allowed(flags, WSK_FLAG_ABORTIVE)?;
        // SAFETY: NULL or the client's WSK_BUF (WSK contract).
        let buffer = unsafe { Buffer::from_wsk(buffer, "WskDisconnect") };
        let state = socket.current_state();
        require_connected(&state)?;
        if flags & WSK_FLAG_ABORTIVE != 0 {
            return Ok(socket.abort(state, irp));
        }
        Ok(socket.submit(state, irp, Lane::Send, Op::Disconnect { buffer, done: 0 }))
    })
}

unsafe extern "system" fn wsk_get_local_address(
    socket: *mut WSK_SOCKET,
    local_address: *mut SOCKADDR,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the caller's IRP (WSK contract).
    let call = unsafe { Call::begin(socket, irp, "WskGetLocalAddress") };
    call.run(|socket, irp| {
        if local_address.is_null() {
            return Err(STATUS_INVALID_PARAMETER);
        }
        let address = {
            let mut state = socket.current_state();
            assign_port(&mut state)?;
            let host = state
                .host
                .as_ref()
                .filter(|_| state.bound)
                .ok_or(STATUS_INVALID_DEVICE_STATE)?;
            host.local_addr().map_err(|error| status_of(&error))?
        };
        let address = address.as_socket().ok_or(STATUS_INVALID_DEVICE_STATE)?;
        // SAFETY: the client's output address, large enough (WSK contract).
        unsafe { sockaddr::write(&address, local_address) };
        Ok(finish(&socket.kernel(), irp, STATUS_SUCCESS, 0))
    })
}

unsafe extern "system" fn wsk_get_remote_address(
    socket: *mut WSK_SOCKET,
    remote_address: *mut SOCKADDR,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the caller's IRP (WSK contract).
    let call = unsafe { Call::begin(socket, irp, "WskGetRemoteAddress") };
    call.run(|socket, irp| {
        if remote_address.is_null() {
            return Err(STATUS_INVALID_PARAMETER);
        }
        let address = {
            let state = socket.current_state();
            require_connected(&state)?;
            let host = state.host.as_ref().ok_or(STATUS_INVALID_CONNECTION)?;
            host.peer_addr().map_err(|error| status_of(&error))?
        };
        let address = address.as_socket().ok_or(STATUS_INVALID_CONNECTION)?;
        // SAFETY: the client's output address, large enough (WSK contract).
        unsafe { sockaddr::write(&address, remote_address) };
        Ok(finish(&socket.kernel(), irp, STATUS_SUCCESS, 0))
    })
}

/// `WskControlSocket`: `TCP_FASTOPEN` (`IPPROTO_TCP`, set before the
/// connect or read back), `TCP_NODELAY`, and the `SOL_SOCKET` options
/// `SO_KEEPALIVE`, `SO_RCVBUF`, `SO_SNDBUF`, `SO_REUSEADDR` and
/// `SO_EXCLUSIVEADDRUSE`. The IRP is optional: without one the status is
/// returned directly.
unsafe extern "system" fn wsk_control_socket(
    socket: *mut WSK_SOCKET,
    request_type: WSK_CONTROL_SOCKET_TYPE,
    control_code: ULONG,
    level: ULONG,
    input_size: SIZE_T,
    input_buffer: *mut c_void,
    output_size: SIZE_T,
    output_buffer: *mut c_void,
    output_size_returned: *mut SIZE_T,
    irp: *mut IRP,
) -> NTSTATUS {
    require_irql("WskControlSocket");
    let socket = InProgress::new(live(socket, "WskControlSocket"));
    let irp = (!irp.is_null()).then(|| {
        // SAFETY: a non-NULL IRP handed over (WSK contract).
        unsafe { io::start(irp, "WskControlSocket") }
    });
    let result = match (request_type, level, control_code) {
        (SET_OPTION, SOL_SOCKET, SO_WSK_EVENT_CALLBACK) if irp.is_some() => {
            // Microsoft: turning events on takes no IRP.
            Err(STATUS_INVALID_PARAMETER)
        }
        (SET_OPTION, SOL_SOCKET, SO_WSK_EVENT_CALLBACK) => {
            // SAFETY: the client's input buffer of `input_size` bytes.
            unsafe { set_events(&socket, input_size, input_buffer) }.map(|()| 0)
        }
        (SET_OPTION, IPPROTO_TCP, TCP_FASTOPEN) => {
            // SAFETY: the client's input buffer of `input_size` bytes.
            unsafe { set_fast_open(&socket, input_size, input_buffer) }
        }
        (GET_OPTION, IPPROTO_TCP, TCP_FASTOPEN) => {
            // SAFETY: the client's output buffer of `output_size` bytes.
            unsafe { get_fast_open(&socket, output_size, output_buffer) }
        }
        (SET_OPTION, _, _) => option_of(level, control_code).and_then(|option| {
            // SAFETY: the client's input buffer of `input_size` bytes.
            let value = unsafe { read_ulong(input_size, input_buffer) }?;
            set_option(&socket, option, value).map(|()| 0)
        }),
        (GET_OPTION, _, _) => option_of(level, control_code).and_then(|option| {
            let value = get_option(&socket, option)?;
            // SAFETY: the client's output buffer of `output_size` bytes.
            unsafe { write_ulong(output_size, output_buffer, value) }
        }),
        _ => Err(STATUS_NOT_SUPPORTED),
    };
    let (status, returned) = match result {
        Ok(returned) => (STATUS_SUCCESS, returned),
        Err(status) => (status, 0),
    };
    if let Some(irp) = irp {
        return finish(&socket.kernel(), irp, status, returned);
    }
    if request_type == GET_OPTION && !output_size_returned.is_null() {
        // SAFETY: the client's output location (WSK contract).
        unsafe { output_size_returned.write(returned) };
    }
    status
}

/// `SO_WSK_EVENT_CALLBACK` (see `events`): then the poller looks at the
/// socket at once, for data that came before.
///
/// # Safety
/// `input` is NULL or readable for `size` bytes.
unsafe fn set_events(socket: &Socket, size: SIZE_T, input: *mut c_void) -> Result<(), NTSTATUS> {
    let kernel = socket.kernel();
    let mut state = socket.current_state();
    let connected = state.phase == Phase::Connected && socket.kind != Kind::Stream;
    // SAFETY: as the contract says.
    unsafe { state.events.control(size, input, connected) }?;
    socket.watch(&mut state, &kernel)?;
    drop(state);
    socket.schedule_drive();
    Ok(())
}

/// The socket options the emulated provider offers besides `TCP_FASTOPEN`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SockOpt {
    NoDelay,
    KeepAlive,
    ReceiveBuffer,
    SendBuffer,
    ReuseAddress,
    ExclusiveAddressUse,
}

const fn option_of(level: ULONG, code: ULONG) -> Result<SockOpt, NTSTATUS> {
    match (level, code) {
        (IPPROTO_TCP, TCP_NODELAY) => Ok(SockOpt::NoDelay),
        (SOL_SOCKET, SO_KEEPALIVE) => Ok(SockOpt::KeepAlive),
        (SOL_SOCKET, SO_RCVBUF) => Ok(SockOpt::ReceiveBuffer),
        (SOL_SOCKET, SO_SNDBUF) => Ok(SockOpt::SendBuffer),
        (SOL_SOCKET, SO_REUSEADDR) => Ok(SockOpt::ReuseAddress),
        (SOL_SOCKET, SO_EXCLUSIVEADDRUSE) => Ok(SockOpt::ExclusiveAddressUse),
        _ => Err(STATUS_NOT_SUPPORTED),
    }
}

/// # Safety
/// `input` is NULL or readable for `size` bytes.
const unsafe fn read_ulong(size: SIZE_T, input: *mut c_void) -> Result<ULONG, NTSTATUS> {
    if input.is_null() || size < size_of::<ULONG>() {
        return Err(STATUS_INVALID_PARAMETER);
    }
    // SAFETY: readable for at least a ULONG (checked; the contract).
    Ok(unsafe { input.cast::<ULONG>().read_unaligned() })
}

/// # Safety
/// `output` is NULL or writable for `size` bytes.
const unsafe fn write_ulong(
    size: SIZE_T,
    output: *mut c_void,
    value: ULONG,
) -> Result<usize, NTSTATUS> {
    if output.is_null() || size < size_of::<ULONG>() {
        return Err(STATUS_INVALID_PARAMETER);
    }
    // SAFETY: writable for at least a ULONG (checked; the contract).
    unsafe { output.cast::<ULONG>().write_unaligned(value) };
    Ok(size_of::<ULONG>())
}

/// Sets an option on the host socket, with Windows' rules: the address
/// options only before the bind (and not both), `TCP_NODELAY` and
/// keep-alive on listening and connection sockets alike. The buffer sizes
/// are remembered as given (Linux reports twice what was set).
fn set_option(socket: &Socket, option: SockOpt, value: ULONG) -> Result<(), NTSTATUS> {
    let mut state = socket.current_state();
    let on = value != 0;
    if matches!(option, SockOpt::ReuseAddress | SockOpt::ExclusiveAddressUse) {
        if state.bound {
            return Err(STATUS_INVALID_DEVICE_STATE);
        }
        let other = if option == SockOpt::ReuseAddress {
            state.exclusive
        } else {
            state.reuse_address
        };
        // Windows refuses the two together (WSAEINVAL).
        if on && other {
            return Err(STATUS_INVALID_PARAMETER);
        }
    }
    let host = state.host.as_ref().ok_or(STATUS_INVALID_DEVICE_STATE)?;
    let set = match option {
        SockOpt::NoDelay => host.set_tcp_nodelay(on),
        SockOpt::KeepAlive => host.set_keepalive(on),
        SockOpt::ReceiveBuffer => host.set_recv_buffer_size(value as usize),
        SockOpt::SendBuffer => host.set_send_buffer_size(value as usize),
        SockOpt::ReuseAddress => host.set_reuse_address(on),
        // Linux binds exclusively unless SO_REUSEADDR is set: remembered.
        SockOpt::ExclusiveAddressUse => Ok(()),
    };
    set.map_err(|error| status_of(&error))?;
    match option {
        SockOpt::ReceiveBuffer => state.receive_buffer = Some(value),
        SockOpt::SendBuffer => state.send_buffer = Some(value),
        SockOpt::ReuseAddress => state.reuse_address = on,
        SockOpt::ExclusiveAddressUse => state.exclusive = on,
        SockOpt::NoDelay | SockOpt::KeepAlive => {}
    }
    Ok(())
}

fn get_option(socket: &Socket, option: SockOpt) -> Result<ULONG, NTSTATUS> {
    let state = socket.current_state();
    let host = state.host.as_ref().ok_or(STATUS_INVALID_DEVICE_STATE)?;
    let bytes = |size: std::io::Result<usize>| {
        size.map(|size| ULONG::try_from(size / 2).unwrap_or(ULONG::MAX))
    };
    let value = match option {
        SockOpt::NoDelay => host.tcp_nodelay().map(ULONG::from),
        SockOpt::KeepAlive => host.keepalive().map(ULONG::from),
        SockOpt::ReceiveBuffer => state
            .receive_buffer
            .map_or_else(|| bytes(host.recv_buffer_size()), Ok),
        SockOpt::SendBuffer => state
            .send_buffer
            .map_or_else(|| bytes(host.send_buffer_size()), Ok),
        SockOpt::ReuseAddress => Ok(ULONG::from(state.reuse_address)),
        SockOpt::ExclusiveAddressUse => Ok(ULONG::from(state.exclusive)),
    };
    value.map_err(|error| status_of(&error))
}

/// # Safety
/// `input` is NULL or readable for `size` bytes.
unsafe fn set_fast_open(
    socket: &Socket,
    size: SIZE_T,
    input: *mut c_void,
) -> Result<usize, NTSTATUS> {
    // SAFETY: forwarded contract.
    let value = unsafe { read_ulong(size, input) }?;
    let mut state = socket.current_state();
    // The SYN is built at connect time: afterwards the option means nothing.
    if state.phase != Phase::Idle {
        return Err(STATUS_INVALID_DEVICE_STATE);
    }
    state.fast_open = value != 0;
    Ok(0)
}

/// # Safety
/// `output` is NULL or writable for `size` bytes.
unsafe fn get_fast_open(
    socket: &Socket,
    size: SIZE_T,
    output: *mut c_void,
) -> Result<usize, NTSTATUS> {
    let value = ULONG::from(socket.current_state().fast_open);
    // SAFETY: forwarded contract.
    unsafe { write_ulong(size, output, value) }
}

unsafe extern "system" fn wsk_close_socket(socket: *mut WSK_SOCKET, irp: *mut IRP) -> NTSTATUS {
    require_irql("WskCloseSocket");
    let handle = socket;
    let socket = retire(handle, "WskCloseSocket");
    let calls = socket.calls.load(Ordering::Acquire);
    if calls != 0 {
        bugcheck(
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format_args!(
                "WskCloseSocket({handle:p}) while {calls} other call(s) on the socket have not returned"
            ),
        );
    }
    // SAFETY: the caller's IRP (WSK contract).
    let irp = unsafe { take_irp(irp, "WskCloseSocket") };
    socket.close(irp)
}
