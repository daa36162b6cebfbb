//! The WSK entry points, one function each: builds the payload, submits
//! the operation, and hands it back in flight. Part of the operation layer:
//! the only place socket dispatch tables are read and WSK functions called.

use core::ffi::c_void;
use core::ptr::{self, NonNull};

use crate::abi::{
    IPPROTO_TCP, IPPROTO_UDP, IRP, SOCK_DGRAM, SOCK_STREAM, STATUS_NOT_SUPPORTED, WSK_BUF,
    WSK_FLAG_ABORTIVE, WSK_FLAG_CONNECTION_SOCKET, WSK_FLAG_DATAGRAM_SOCKET,
    WSK_FLAG_LISTEN_SOCKET, WSK_FLAG_NODELAY, WSK_FLAG_STREAM_SOCKET, WSK_FLAG_WAITALL,
    WSK_PROVIDER_BASIC_DISPATCH, WSK_PROVIDER_CONNECTION_DISPATCH, WSK_PROVIDER_DATAGRAM_DISPATCH,
    WSK_PROVIDER_LISTEN_DISPATCH, WSK_PROVIDER_STREAM_DISPATCH, WSK_SOCKET, WskGetOption,
    WskSetOption,
};
use crate::error::{Error, Result};
use crate::kernel::mdl::Mdl;
use crate::kernel::pool::PoolBuffer;
use crate::objects::addr::{Family, RawAddress};
use crate::objects::registration::{Captured, Provider, RegistrationRef};
use crate::objects::socket::shared::{OwnCall, SocketRef};
use crate::operation::{Operation, Payload, Spare};
use crate::status::NtStatus;

/// The two socket kinds that can connect.
///
/// # IRQL
/// Any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocketKind {
    /// `WSK_FLAG_CONNECTION_SOCKET`.
    Connection,
    /// `WSK_FLAG_STREAM_SOCKET`: committed to the connection role by a
    /// successful connect.
    Stream,
}

/// Which dispatch table a socket has: the kind it was created with
/// (`WSK_FLAG_*_SOCKET`), a listening socket included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// `WSK_FLAG_CONNECTION_SOCKET` (and every accepted socket).
    Connection,
    /// `WSK_FLAG_STREAM_SOCKET`.
    Stream,
    /// `WSK_FLAG_LISTEN_SOCKET`.
    Listen,
    /// `WSK_FLAG_DATAGRAM_SOCKET` (UDP).
    Datagram,
}

impl Table {
    const fn flags(self) -> u32 {
        match self {
            Self::Connection => WSK_FLAG_CONNECTION_SOCKET,
            Self::Stream => WSK_FLAG_STREAM_SOCKET,
            Self::Listen => WSK_FLAG_LISTEN_SOCKET,
            Self::Datagram => WSK_FLAG_DATAGRAM_SOCKET,
        }
    }

    /// `(SocketType, Protocol)` for `WskSocket`.
    const fn protocol(self) -> (u16, u32) {
        match self {
            Self::Datagram => (SOCK_DGRAM, IPPROTO_UDP),
            Self::Connection | Self::Stream | Self::Listen => (SOCK_STREAM, IPPROTO_TCP),
        }
    }
}

impl From<SocketKind> for Table {
    fn from(kind: SocketKind) -> Self {
        match kind {
            SocketKind::Connection => Self::Connection,
            SocketKind::Stream => Self::Stream,
        }
    }
}

/// A WSK socket the provider created, as seen by one call: valid while the
/// caller holds the socket's run-down protection.
///
/// # Invariants
/// `raw` is a live `WSK_SOCKET`; its dispatch table is the one `kind`
/// says.
#[derive(Debug, Clone, Copy)]
pub struct SocketHandle {
    raw: NonNull<WSK_SOCKET>,
    kind: Table,
}

// SAFETY: WSK sockets may be used from any thread.
unsafe impl Send for SocketHandle {}
// SAFETY: WSK functions on one socket may be called concurrently (except
// close, which takes the handle by value).
unsafe impl Sync for SocketHandle {}

/// The socket-level functions, read from whichever table the kind uses
/// (`WskConnectEx` apart: see [`SocketHandle::connect_ex_entry`]).
struct Entries {
    basic: *const WSK_PROVIDER_BASIC_DISPATCH,
    bind: crate::abi::PFN_WSK_BIND,
    connect: crate::abi::PFN_WSK_CONNECT,
    send: crate::abi::PFN_WSK_SEND,
    receive: crate::abi::PFN_WSK_RECEIVE,
    disconnect: crate::abi::PFN_WSK_DISCONNECT,
    local: crate::abi::PFN_WSK_GET_ADDRESS,
    remote: crate::abi::PFN_WSK_GET_ADDRESS,
    accept: crate::abi::PFN_WSK_ACCEPT,
    send_to: crate::abi::PFN_WSK_SEND_TO,
    receive_from: crate::abi::PFN_WSK_RECEIVE_FROM,
}

impl SocketHandle {
    /// A view of a live socket of `kind`.
    pub const fn new(raw: NonNull<WSK_SOCKET>, kind: Table) -> Self {
        // INVARIANT: the caller holds run-down protection on a created socket.
        Self { raw, kind }
    }

    fn dispatch(&self) -> *const c_void {
        // SAFETY: a live socket (invariant) whose first field is its
        // dispatch table pointer.
        unsafe { (*self.raw.as_ptr()).Dispatch }
    }

    fn entries(&self) -> Entries {
        // The two tables hold the same entries at different offsets. Each
        // is read on its own through the raw pointer, never through a
        // reference to the whole table: before Windows 10 1703 the tables
        // end before `WskConnectEx`.
        macro_rules! entries {
            ($table:expr) => {
                entries!(@read $table; bind: WskBind, connect: WskConnect, send: WskSend,
                    receive: WskReceive, disconnect: WskDisconnect, local: WskGetLocalAddress,
                    remote: WskGetRemoteAddress)
            };
            (@read $table:expr; $($name:ident: $entry:ident),*) => {{
                let table = $table;
                Entries {
                    // `Basic` heads both tables.
                    basic: table.cast::<WSK_PROVIDER_BASIC_DISPATCH>(),
                    accept: None,
                    send_to: None,
                    receive_from: None,
                    $(
                        // SAFETY: the live socket's table of its kind
                        // (invariant), valid while the socket lives; this
                        // entry precedes `WskConnectEx`, so every provider's
                        // table holds it.
                        $name: unsafe { (*table).$entry },
                    )*
                }
            }};
        }
        let dispatch = self.dispatch();
        match self.kind {
            Table::Connection => entries!(dispatch.cast::<WSK_PROVIDER_CONNECTION_DISPATCH>()),
            Table::Stream => entries!(dispatch.cast::<WSK_PROVIDER_STREAM_DISPATCH>()),
            Table::Listen => {
                let table = dispatch.cast::<WSK_PROVIDER_LISTEN_DISPATCH>();
                // SAFETY: the live socket's listening table (invariant),
                // valid while the socket lives; each entry is read on its
                // own.
                let bind = unsafe { (*table).WskBind };
                // SAFETY: as above.
                let accept = unsafe { (*table).WskAccept };
                // SAFETY: as above.
                let local = unsafe { (*table).WskGetLocalAddress };
                Entries {
                    basic: table.cast::<WSK_PROVIDER_BASIC_DISPATCH>(),
                    bind,
                    connect: None,
                    send: None,
                    receive: None,
                    disconnect: None,
                    local,
                    remote: None,
                    accept,
                    send_to: None,
                    receive_from: None,
                }
            }
            Table::Datagram => {
                let table = dispatch.cast::<WSK_PROVIDER_DATAGRAM_DISPATCH>();
                // SAFETY: the live socket's datagram table (invariant),
                // valid while the socket lives; each entry is read on its
                // own, none past `WskGetLocalAddress`.
                let bind = unsafe { (*table).WskBind };
                // SAFETY: as above.
                let send_to = unsafe { (*table).WskSendTo };
                // SAFETY: as above.
                let receive_from = unsafe { (*table).WskReceiveFrom };
                // SAFETY: as above.
                let local = unsafe { (*table).WskGetLocalAddress };
                Entries {
                    basic: table.cast::<WSK_PROVIDER_BASIC_DISPATCH>(),
                    bind,
                    connect: None,
                    send: None,
                    receive: None,
                    disconnect: None,
                    local,
                    remote: None,
                    accept: None,
                    send_to,
                    receive_from,
                }
            }
        }
    }

    /// `WskConnectEx`, read only where the tables hold it: NULL when the
    /// OS build is known to predate Windows 10 1703 (see
    /// [`crate::kernel::version`]).
    fn connect_ex_entry(&self) -> crate::abi::PFN_WSK_CONNECT_EX {
        if !crate::kernel::version::connect_ex_table_present() {
            return None;
        }
        let dispatch = self.dispatch();
        match self.kind {
            Table::Listen | Table::Datagram => None,
            Table::Connection => {
                let table = dispatch.cast::<WSK_PROVIDER_CONNECTION_DISPATCH>();
                // SAFETY: the live socket's connection table, which holds
                // the entry from Windows 10 1703 on.
                unsafe { (*table).WskConnectEx }
            }
            Table::Stream => {
                let table = dispatch.cast::<WSK_PROVIDER_STREAM_DISPATCH>();
                // SAFETY: as above, for the stream table.
                unsafe { (*table).WskConnectEx }
            }
        }
    }

    pub(crate) fn basic(&self) -> &WSK_PROVIDER_BASIC_DISPATCH {
        // SAFETY: the basic table heads the socket's dispatch table, valid
        // while the socket lives.
        unsafe { &*self.entries().basic }
    }

    /// Whether the provider offers `WskConnectEx` for this socket: not
    /// before Windows 10 1703 (decided from the OS build once registration
    /// has read it), nor where the entry is NULL.
    pub fn has_connect_ex(&self) -> bool {
        self.connect_ex_entry().is_some()
    }

    pub(crate) const fn raw(&self) -> *mut WSK_SOCKET {
        self.raw.as_ptr()
    }
}

const fn missing() -> Error {
    Error::NotSupported(NtStatus(STATUS_NOT_SUPPORTED))
}

/// The longest host name [`get_address_info`] takes, in UTF-16 units (a
/// DNS name is at most 253 characters).
pub const MAX_NAME: usize = 255;

/// `WskGetAddressInfo`'s payload: the names it reads and the list it
/// writes.
///
/// The names end with a NUL after their `Length` (which does not count it):
/// Windows does not need it, but Wine passes the buffers on as C strings.
pub struct Lookup {
    node: [u16; MAX_NAME + 1],
    node_len: usize,
    service: [u16; 6],
    service_len: usize,
    node_string: crate::abi::UNICODE_STRING,
    service_string: crate::abi::UNICODE_STRING,
    hints: crate::abi::ADDRINFOEXW,
    result: *mut crate::abi::ADDRINFOEXW,
}

// SAFETY: the raw pointers point into the payload itself, or to the list the
// provider gave, which any thread may read and the owner frees.
#[allow(clippy::non_send_fields_in_send_ty, reason = "see the SAFETY comment")]
unsafe impl Send for Lookup {}

impl Lookup {
    /// The list the provider gave, taken (the taker frees it).
    pub const fn take_result(&mut self) -> Option<NonNull<crate::abi::ADDRINFOEXW>> {
        NonNull::new(core::mem::replace(&mut self.result, ptr::null_mut()))
    }
}

impl Payload for Lookup {}

/// `WskGetAddressInfo` for `host` (a name or an address literal) and
/// `port` (as the service), any family, stream sockets.
///
/// # Errors
/// [`Error::InvalidArgument`] for an empty name, one longer than
/// [`MAX_NAME`] UTF-16 units, or one with a NUL, before any call;
/// [`Error::NotSupported`] when the provider has no `WskGetAddressInfo`;
/// as for [`Operation::submit`].
pub fn get_address_info(
    provider: &Provider,
    captured: &Captured<'_>,
    host: &str,
    port: u16,
) -> Result<Operation<Lookup>> {
    let invalid = || Error::InvalidArgument(NtStatus::INVALID_PARAMETER);
    let mut node = [0_u16; MAX_NAME + 1];
    let mut node_len = 0;
    for unit in host.encode_utf16() {
        if unit == 0 || node_len == MAX_NAME {
            return Err(invalid());
        }
        node[node_len] = unit;
        node_len += 1;
    }
    if node_len == 0 {
        return Err(invalid());
    }
    let mut service = [0_u16; 6];
    let mut digits = [0_u8; 5];
    let mut service_len = 0;
    let mut rest = port;
    loop {
        digits[service_len] = b'0' + (rest % 10) as u8;
        service_len += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for (unit, digit) in service.iter_mut().zip(digits[..service_len].iter().rev()) {
        *unit = u16::from(*digit);
    }
    let entry = captured.dispatch().WskGetAddressInfo.ok_or_else(missing)?;
    let client = captured.client();
    let empty_string = || crate::abi::UNICODE_STRING {
        Length: 0,
        MaximumLength: 0,
        Buffer: ptr::null_mut(),
    };
    let mut op = Operation::new(Lookup {
        node,
        node_len,
        service,
        service_len,
        node_string: empty_string(),
        service_string: empty_string(),
        hints: crate::abi::ADDRINFOEXW {
            ai_flags: 0,
            ai_family: 0,
            ai_socktype: i32::from(SOCK_STREAM),
            ai_protocol: IPPROTO_TCP.cast_signed(),
            ai_addrlen: 0,
            ai_canonname: ptr::null_mut(),
            ai_addr: ptr::null_mut(),
            ai_blob: ptr::null_mut(),
            ai_bloblen: 0,
            ai_provider: ptr::null_mut(),
            ai_next: ptr::null_mut(),
        },
        result: ptr::null_mut(),
    })?;
    let call = |irp: *mut IRP, payload: *mut Lookup| {
        // SAFETY: the payload lives in the operation block, which does not
        // move, until completion: the strings may point into it.
        let payload = unsafe { &mut *payload };
        let bytes = |units: usize| u16::try_from(units * 2).expect("at most 512 bytes");
        payload.node_string = crate::abi::UNICODE_STRING {
            Length: bytes(payload.node_len),
            MaximumLength: bytes(payload.node_len + 1),
            Buffer: payload.node.as_mut_ptr(),
        };
        payload.service_string = crate::abi::UNICODE_STRING {
            Length: bytes(payload.service_len),
            MaximumLength: bytes(payload.service_len + 1),
            Buffer: payload.service.as_mut_ptr(),
        };
        // SAFETY: a captured provider's entry (held by `captured`); the
        // names, hints and result live in the payload until completion; no
        // owning process or thread; the caller checked PASSIVE_LEVEL.
        unsafe {
            entry(
                client,
                &raw mut payload.node_string,
                &raw mut payload.service_string,
                crate::abi::NS_ALL,
                ptr::null_mut(),
                &raw mut payload.hints,
                &raw mut payload.result,
                ptr::null_mut(),
                ptr::null_mut(),
                irp,
            )
        }
    };
    // SAFETY: one WSK call with the operation's IRP.
    unsafe { op.submit(provider.registration(), call)? };
    Ok(op)
}

/// `WskGetNameInfo`'s payload: the address it reads and the name it
/// writes.
pub struct NameLookup {
    address: RawAddress,
    node: [u16; MAX_NAME + 1],
    node_string: crate::abi::UNICODE_STRING,
}

// SAFETY: the raw pointer points into the payload itself.
#[allow(clippy::non_send_fields_in_send_ty, reason = "see the SAFETY comment")]
unsafe impl Send for NameLookup {}

impl Payload for NameLookup {}

impl NameLookup {
    /// The name the provider wrote (UTF-16), after a completed call.
    pub fn name(&self) -> &[u16] {
        let units = usize::from(self.node_string.Length / 2).min(MAX_NAME);
        &self.node[..units]
    }
}

/// `WskGetNameInfo` for `address`, the host's name required
/// (`NI_NAMEREQD`), no service name.
///
/// # Errors
/// [`Error::NotSupported`] when the provider has no `WskGetNameInfo`; as
/// for [`Operation::submit`].
pub fn get_name_info(
    provider: &Provider,
    captured: &Captured<'_>,
    address: core::net::SocketAddr,
) -> Result<Operation<NameLookup>> {
    let entry = captured.dispatch().WskGetNameInfo.ok_or_else(missing)?;
    let client = captured.client();
    let mut op = Operation::new(NameLookup {
        address: RawAddress::new(address),
        node: [0; MAX_NAME + 1],
        node_string: crate::abi::UNICODE_STRING {
            Length: 0,
            MaximumLength: 0,
            Buffer: ptr::null_mut(),
        },
    })?;
    let length =
        u32::try_from(core::mem::size_of::<crate::abi::SOCKADDR_STORAGE>()).expect("128 fits");
    let call = |irp: *mut IRP, payload: *mut NameLookup| {
        // SAFETY: the payload lives in the operation block, which does not
        // move, until completion: the string may point into it.
        let payload = unsafe { &mut *payload };
        payload.node_string = crate::abi::UNICODE_STRING {
            Length: 0,
            MaximumLength: u16::try_from(MAX_NAME * 2).expect("510 fits"),
            Buffer: payload.node.as_mut_ptr(),
        };
        // SAFETY: a captured provider's entry (held by `captured`); the
        // address and the name buffer live in the payload until completion;
        // no service name, owning process or thread; the caller checked
        // PASSIVE_LEVEL.
        unsafe {
            entry(
                client,
                payload.address.as_mut_ptr(),
                length,
                &raw mut payload.node_string,
                ptr::null_mut(),
                crate::abi::NI_NAMEREQD,
                ptr::null_mut(),
                ptr::null_mut(),
                irp,
            )
        }
    };
    // SAFETY: one WSK call with the operation's IRP.
    unsafe { op.submit(provider.registration(), call)? };
    Ok(op)
}

/// `WskFreeAddressInfo` of a list [`get_address_info`] gave.
///
/// # Safety
/// `list` came from a completed `WskGetAddressInfo` made under `captured`
/// (held since) and is freed once; the caller is at `PASSIVE_LEVEL`.
pub unsafe fn free_address_info(captured: &Captured<'_>, list: NonNull<crate::abi::ADDRINFOEXW>) {
    if let Some(free) = captured.dispatch().WskFreeAddressInfo {
        // SAFETY: per the contract; the capture is held.
        unsafe { free(captured.client(), list.as_ptr()) };
    }
}

/// `WskSocket`.
pub fn socket(provider: &Provider, family: Family, kind: Table) -> Result<Operation<OwnCall>> {
    let captured = provider.enter()?;
    let entry = captured.dispatch().WskSocket.ok_or_else(missing)?;
    let client = captured.client();
    let registration = provider.registration();
    let mut op = SocketRef::create(kind, registration, RawAddress::empty(), RawAddress::empty())?;
    let (socket_type, protocol) = kind.protocol();
    let (context, dispatch) = op.payload_mut().events();
    let call = |irp: *mut IRP, _: *mut OwnCall| {
        // SAFETY: a captured provider's entry (the capture cannot be released
        // while `captured` lives); the socket context and client table (a
        // connection socket's) outlive the socket; the IRP is the
        // operation's.
        unsafe {
            entry(
                client,
                family.raw(),
                socket_type,
                protocol,
                kind.flags(),
                context,
                dispatch.cast(),
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
                irp,
            )
        }
    };
    // SAFETY: one WSK call with the operation's IRP.
    unsafe { op.submit(registration, call)? };
    Ok(op)
}

/// `WskSocketConnect` (always a connection socket).
pub fn socket_connect(
    provider: &Provider,
    local: core::net::SocketAddr,
    remote: core::net::SocketAddr,
) -> Result<Operation<OwnCall>> {
    let captured = provider.enter()?;
    let entry = captured.dispatch().WskSocketConnect.ok_or_else(missing)?;
    let client = captured.client();
    let registration = provider.registration();
    let mut op = SocketRef::create(
        Table::Connection,
        registration,
        RawAddress::new(local),
        RawAddress::new(remote),
    )?;
    let (context, dispatch) = op.payload_mut().events();
    let call = |irp: *mut IRP, payload: *mut OwnCall| {
        // SAFETY: the payload lives in the operation block until completion.
        let payload = unsafe { &mut *payload };
        // SAFETY: a captured provider's entry (held by `captured`); the
        // addresses stay valid until completion; reserved flags are 0; the
        // socket context and client table outlive the socket.
        unsafe {
            entry(
                client,
                SOCK_STREAM,
                IPPROTO_TCP,
                payload.local.as_mut_ptr(),
                payload.remote.as_mut_ptr(),
                0,
                context,
                dispatch,
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
                irp,
            )
        }
    };
    // SAFETY: one WSK call with the operation's IRP.
    unsafe { op.submit(registration, call)? };
    Ok(op)
}

/// `WskAccept` on a listening socket, with `op`: the own operation of the
/// block prepared for the accepted socket, whose payload receives the
/// local and remote addresses (reserved flags 0; the block's events as
/// the accepted socket's context).
///
/// # Errors
/// [`Error::NotSupported`] when the listening table has no `WskAccept`;
/// as for [`Operation::submit_on_socket`].
pub fn accept(
    listener: &SocketHandle,
    registration: &RegistrationRef,
    op: &mut Operation<OwnCall>,
) -> Result<()> {
    let entry = listener.entries().accept.ok_or_else(missing)?;
    let raw = listener.raw();
    let (context, dispatch) = op.payload_mut().events();
    let call = |irp: *mut IRP, payload: *mut OwnCall| {
        // SAFETY: the payload lives in the operation block until completion.
        let payload = unsafe { &mut *payload };
        // SAFETY: a live listening socket's entry (the caller's run-down
        // protection); the address buffers stay valid until completion; the
        // accepted socket's context and client table outlive it.
        unsafe {
            entry(
                raw,
                0,
                context,
                dispatch,
                payload.local.as_mut_ptr(),
                payload.remote.as_mut_ptr(),
                irp,
            )
        }
    };
    // SAFETY: one WSK call with the operation's IRP, under the listening
    // socket's run-down protection.
    unsafe { op.submit_on_socket(registration, call) }
}

/// `WskBind` (reserved flags 0), with `op`
/// ([`SocketRef::call_operation`](crate::objects::socket::shared::SocketRef::call_operation)).
pub fn bind(
    socket: &SocketHandle,
    registration: &RegistrationRef,
    local: core::net::SocketAddr,
    op: Operation<OwnCall>,
) -> Result<Operation<OwnCall>> {
    with_address(socket, registration, socket.entries().bind, local, op)
}

/// `WskConnect` (reserved flags 0), with `op` as for [`bind`].
pub fn connect(
    socket: &SocketHandle,
    registration: &RegistrationRef,
    remote: core::net::SocketAddr,
    op: Operation<OwnCall>,
) -> Result<Operation<OwnCall>> {
    with_address(socket, registration, socket.entries().connect, remote, op)
}

/// A call taking one address and reserved flags (`WskBind`, `WskConnect`:
/// the same signature).
fn with_address(
    socket: &SocketHandle,
    registration: &RegistrationRef,
    entry: crate::abi::PFN_WSK_CONNECT,
    address: core::net::SocketAddr,
    mut op: Operation<OwnCall>,
) -> Result<Operation<OwnCall>> {
    let entry = entry.ok_or_else(missing)?;
    let raw = socket.raw();
    *op.payload_mut().address_mut() = RawAddress::new(address);
    let call = |irp: *mut IRP, payload: *mut OwnCall| {
        // SAFETY: the payload lives in the block until completion.
        let address = unsafe { (*payload).address_mut().as_mut_ptr() };
        // SAFETY: a live socket's entry; the address outlives the call;
        // reserved flags are 0.
        unsafe { entry(raw, address, 0, irp) }
    };
    // SAFETY: one WSK call with the operation's IRP, on a socket whose
    // run-down protection the caller holds (`SocketHandle`'s invariant).
    unsafe { op.submit_on_socket(registration, call)? };
    Ok(op)
}

/// `WskGetLocalAddress` or `WskGetRemoteAddress`.
pub fn address(
    socket: &SocketHandle,
    registration: &RegistrationRef,
    remote: bool,
    mut op: Operation<OwnCall>,
) -> Result<Operation<OwnCall>> {
    let entries = socket.entries();
    let entry = if remote {
        entries.remote
    } else {
        entries.local
    }
    .ok_or_else(missing)?;
    let raw = socket.raw();
    *op.payload_mut().address_mut() = RawAddress::empty();
    let call = |irp: *mut IRP, payload: *mut OwnCall| {
        // SAFETY: the payload lives in the block until completion.
        let address = unsafe { (*payload).address_mut().as_mut_ptr() };
        // SAFETY: a live socket's entry; the output outlives the call.
        unsafe { entry(raw, address, irp) }
    };
    // SAFETY: one WSK call with the operation's IRP, on a socket whose
    // run-down protection the caller holds (`SocketHandle`'s invariant).
    unsafe { op.submit_on_socket(registration, call)? };
    Ok(op)
}

/// Bytes handed to the provider through the buffer's own MDL, returned
/// with the result.
pub struct Data {
    buffer: Option<PoolBuffer>,
    /// `wsk` points at the buffer's MDL.
    described: bool,
    /// The buffer's MDL, kept with a quarantined operation after the
    /// buffer went back (see [`Data::keep_mdl`]).
    kept: Option<Mdl>,
    wsk: WSK_BUF,
    remote: RawAddress,
}

// SAFETY: the raw MDL pointer in `wsk` points at the MDL of `buffer`,
// owned alongside.
unsafe impl Send for Data {}

impl Payload for Data {}

impl Data {
    /// The datagram's sender, after a completed `WskReceiveFrom`.
    pub fn sender(&self) -> Option<core::net::SocketAddr> {
        self.remote.get()
    }

    /// No data yet.
    const fn empty(remote: RawAddress) -> Self {
        Self {
            buffer: None,
            described: false,
            kept: None,
            wsk: WSK_BUF {
                Mdl: ptr::null_mut(),
                Offset: 0,
                Length: 0,
            },
            remote,
        }
    }

    /// Hands `length` bytes of `buffer` to the payload, through the
    /// buffer's MDL (built by its first transfer); the buffer comes back if
    /// the MDL cannot be built.
    fn attach(&mut self, mut buffer: PoolBuffer, length: usize) -> Result<(), Refused> {
        debug_assert!(
            self.buffer.is_none() && self.kept.is_none(),
            "a payload in use"
        );
        self.described = false;
        self.wsk = WSK_BUF {
            Mdl: ptr::null_mut(),
            Offset: 0,
            Length: 0,
        };
        if buffer.capacity() > 0 {
            match buffer.describe() {
                Ok(mdl) => {
                    self.wsk = WSK_BUF {
                        Mdl: mdl,
                        Offset: 0,
                        Length: length,
                    };
                    self.described = true;
                }
                Err(error) => return Err((error, buffer)),
            }
        }
        self.buffer = Some(buffer);
        Ok(())
    }

    /// The buffer back.
    pub const fn take_buffer(&mut self) -> Option<PoolBuffer> {
        self.buffer.take()
    }

    /// Keeps `buffer`'s MDL with this (quarantined) operation, freed with
    /// its block: the provider that returned without completing may still
    /// use it after the buffer went back to the caller.
    pub fn keep_mdl(&mut self, buffer: &mut PoolBuffer) {
        self.kept = buffer.take_mdl();
    }

    const fn wsk_buf(&mut self) -> *mut WSK_BUF {
        if self.described {
            &raw mut self.wsk
        } else {
            ptr::null_mut()
        }
    }
}

/// A failed submission, with the caller's buffer back.
pub type Refused = (Error, PoolBuffer);

/// `WskSend` of the whole buffer (no flags).
pub fn send(
    socket: &SocketHandle,
    registration: &RegistrationRef,
    buffer: PoolBuffer,
    spare: &Spare<Data>,
) -> Result<Operation<Data>, Refused> {
    stream_transfer(socket, registration, buffer, spare, false, 0)
}

/// `WskSend` with `WSK_FLAG_NODELAY`: sent at once, without waiting to
/// coalesce with later data.
pub fn send_no_delay(
    socket: &SocketHandle,
    registration: &RegistrationRef,
    buffer: PoolBuffer,
    spare: &Spare<Data>,
) -> Result<Operation<Data>, Refused> {
    stream_transfer(socket, registration, buffer, spare, false, WSK_FLAG_NODELAY)
}

/// `WskReceive`: up to the buffer's capacity (not zero).
pub fn receive(
    socket: &SocketHandle,
    registration: &RegistrationRef,
    buffer: PoolBuffer,
    spare: &Spare<Data>,
) -> Result<Operation<Data>, Refused> {
    stream_transfer(socket, registration, buffer, spare, true, 0)
}

/// `WskReceive` with `WSK_FLAG_WAITALL`: completes once the buffer is
/// full, or the connection ends (or fails) first.
pub fn receive_full(
    socket: &SocketHandle,
    registration: &RegistrationRef,
    buffer: PoolBuffer,
    spare: &Spare<Data>,
) -> Result<Operation<Data>, Refused> {
    stream_transfer(socket, registration, buffer, spare, true, WSK_FLAG_WAITALL)
}

/// `WskSend` of the whole buffer, or `WskReceive` up to its capacity
/// (`receive`), with `flags`.
fn stream_transfer(
    socket: &SocketHandle,
    registration: &RegistrationRef,
    buffer: PoolBuffer,
    spare: &Spare<Data>,
    receive: bool,
    flags: u32,
) -> Result<Operation<Data>, Refused> {
    let entries = socket.entries();
    let (entry, length) = if receive {
        (entries.receive, buffer.capacity())
    } else {
        (entries.send, buffer.len())
    };
    let Some(entry) = entry else {
        return Err((missing(), buffer));
    };
    transfer(socket, registration, entry, buffer, length, spare, flags)
}

/// `WskSendTo`: one datagram of the whole buffer to `remote`.
pub fn send_to(
    socket: &SocketHandle,
    registration: &RegistrationRef,
    buffer: PoolBuffer,
    remote: core::net::SocketAddr,
    spare: &Spare<Data>,
) -> Result<Operation<Data>, Refused> {
    let Some(entry) = socket.entries().send_to else {
        return Err((missing(), buffer));
    };
    let length = buffer.len();
    let mut op = prepare(buffer, length, spare)?;
    op.payload_mut().remote = RawAddress::new(remote);
    let raw = socket.raw();
    let call = |irp: *mut IRP, payload: *mut Data| {
        // SAFETY: the payload lives in the block until completion.
        let payload = unsafe { &mut *payload };
        let wsk = payload.wsk_buf();
        // SAFETY: a live socket's entry; the buffer, its MDL, the WSK_BUF
        // and the address outlive the call; no flags, no control data.
        unsafe {
            entry(
                raw,
                wsk,
                0,
                payload.remote.as_mut_ptr(),
                0,
                ptr::null_mut(),
                irp,
            )
        }
    };
    submit_data(op, registration, call)
}

/// `WskReceiveFrom`: one datagram, up to the buffer's capacity, and the
/// sender's address (in the payload's remote address).
pub fn receive_from(
    socket: &SocketHandle,
    registration: &RegistrationRef,
    buffer: PoolBuffer,
    spare: &Spare<Data>,
) -> Result<Operation<Data>, Refused> {
    let Some(entry) = socket.entries().receive_from else {
        return Err((missing(), buffer));
    };
    let capacity = buffer.capacity();
    let mut op = prepare(buffer, capacity, spare)?;
    op.payload_mut().remote = RawAddress::empty();
    let raw = socket.raw();
    let call = |irp: *mut IRP, payload: *mut Data| {
        // SAFETY: the payload lives in the block until completion.
        let payload = unsafe { &mut *payload };
        let wsk = payload.wsk_buf();
        // SAFETY: a live socket's entry; the buffer, its MDL, the WSK_BUF
        // and the address outlive the call; no flags, no control data
        // (the optional lengths are NULL).
        unsafe {
            entry(
                raw,
                wsk,
                0,
                payload.remote.as_mut_ptr(),
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
                irp,
            )
        }
    };
    submit_data(op, registration, call)
}

/// Submits a send or receive of `length` bytes of `buffer`, in the
/// operation `spare` holds (set aside by the socket) when there is one,
/// else in a fresh operation; on any failure before the provider has the buffer,
/// the buffer comes back.
fn transfer(
    socket: &SocketHandle,
    registration: &RegistrationRef,
    entry: unsafe extern "system" fn(*mut WSK_SOCKET, *mut WSK_BUF, u32, *mut IRP) -> i32,
    buffer: PoolBuffer,
    length: usize,
    spare: &Spare<Data>,
    flags: u32,
) -> Result<Operation<Data>, Refused> {
    let op = prepare(buffer, length, spare)?;
    let raw = socket.raw();
    let call = |irp: *mut IRP, payload: *mut Data| {
        // SAFETY: the payload lives in the block until completion.
        let wsk = unsafe { (*payload).wsk_buf() };
        // SAFETY: a live socket's entry; the buffer, its MDL and the
        // WSK_BUF outlive the call; flags the call's own (none, or one
        // documented for it).
        unsafe { entry(raw, wsk, flags, irp) }
    };
    submit_data(op, registration, call)
}

/// An operation carrying `length` bytes of `buffer`: the one `spare` holds
/// (set aside by the socket), else a fresh one. The buffer comes back on
/// any failure.
fn prepare(
    buffer: PoolBuffer,
    length: usize,
    spare: &Spare<Data>,
) -> Result<Operation<Data>, Refused> {
    if length == 0 {
        return Err((Error::InvalidArgument(NtStatus::INVALID_PARAMETER), buffer));
    }
    // A reused operation keeps its payload: `attach` sets what a transfer
    // uses (the remote address is connect-ex's and the datagrams').
    let mut op = match Operation::reuse_or(spare.take(), || Data::empty(RawAddress::empty())) {
        Ok(op) => op,
        Err(error) => return Err((error, buffer)),
    };
    op.payload_mut().attach(buffer, length)?;
    Ok(op)
}

/// Submits a prepared transfer on a socket whose run-down protection the
/// caller holds; the buffer comes back if nothing was called.
fn submit_data(
    mut op: Operation<Data>,
    registration: &RegistrationRef,
    call: impl FnOnce(*mut IRP, *mut Data) -> crate::abi::NTSTATUS,
) -> Result<Operation<Data>, Refused> {
    // SAFETY: one WSK call with the operation's IRP, on a socket whose
    // run-down protection the caller holds (`SocketHandle`'s invariant).
    if let Err(error) = unsafe { op.submit_on_socket(registration, call) } {
        let buffer = op.payload_mut().take_buffer().expect("attached above");
        return Err((error, buffer));
    }
    Ok(op)
}

/// `WskConnectEx` with optional data (reserved flags 0). `Err` with
/// `NotSupported` when the provider has no such entry; every failure before
/// the provider has the data hands it back.
pub fn connect_ex(
    socket: &SocketHandle,
    registration: &RegistrationRef,
    remote: core::net::SocketAddr,
    data: Option<PoolBuffer>,
) -> Result<Operation<Data>, (Error, Option<PoolBuffer>)> {
    let Some(entry) = socket.connect_ex_entry() else {
        return Err((missing(), data));
    };
    let raw = socket.raw();
    let mut op = match Operation::new(Data::empty(RawAddress::new(remote))) {
        Ok(op) => op,
        Err(error) => return Err((error, data)),
    };
    if let Some(data) = data {
        let length = data.len();
        op.payload_mut()
            .attach(data, length)
            .map_err(|(error, data)| (error, Some(data)))?;
    }
    let call = |irp: *mut IRP, payload: *mut Data| {
        // SAFETY: the payload lives in the block until completion.
        let payload = unsafe { &mut *payload };
        let wsk = payload.wsk_buf();
        // SAFETY: a live socket's entry; address and data outlive the call.
        unsafe { entry(raw, payload.remote.as_mut_ptr(), wsk, 0, irp) }
    };
    // SAFETY: one WSK call with the operation's IRP, on a socket whose
    // run-down protection the caller holds (`SocketHandle`'s invariant).
    if let Err(error) = unsafe { op.submit_on_socket(registration, call) } {
        return Err((error, op.payload_mut().take_buffer()));
    }
    Ok(op)
}

/// `WskDisconnect`, graceful or abortive, without data.
pub fn disconnect(
    socket: &SocketHandle,
    registration: &RegistrationRef,
    abortive: bool,
) -> Result<Operation<()>> {
    let entry = socket.entries().disconnect.ok_or_else(missing)?;
    let raw = socket.raw();
    let flags = if abortive { WSK_FLAG_ABORTIVE } else { 0 };
    let mut op = Operation::new(())?;
    // SAFETY: a live socket's entry; no buffer.
    let call = |irp: *mut IRP, _: *mut ()| unsafe { entry(raw, ptr::null_mut(), flags, irp) };
    // SAFETY: one WSK call with the operation's IRP, on a socket whose
    // run-down protection the caller holds (`SocketHandle`'s invariant).
    unsafe { op.submit_on_socket(registration, call)? };
    Ok(op)
}

/// A one-`ULONG` socket option's payload: the value to set, or the value
/// read.
pub struct Control {
    value: u32,
}

impl Control {
    /// The value the provider wrote (after a completed `WskGetOption`).
    pub const fn value(&self) -> u32 {
        self.value
    }
}

impl Payload for Control {}

/// `WskControlSocket` with `WskSetOption` (`set`: the value) or
/// `WskGetOption` (`set` is `None`) for a `ULONG` option `code` at `level`.
pub fn option(
    socket: &SocketHandle,
    registration: &RegistrationRef,
    level: u32,
    code: u32,
    set: Option<u32>,
) -> Result<Operation<Control>> {
    let entry = socket.basic().WskControlSocket.ok_or_else(missing)?;
    let raw = socket.raw();
    // Starts at 0: a provider that answers a `WskGetOption` with fewer
    // bytes (a one-byte BOOLEAN) leaves the rest 0, and x64 is
    // little-endian, so the value reads right.
    let mut op = Operation::new(Control {
        value: set.unwrap_or(0),
    })?;
    let size = core::mem::size_of::<u32>();
    let call = |irp: *mut IRP, payload: *mut Control| {
        // SAFETY: the payload lives in the block until completion.
        let value = unsafe { &raw mut (*payload).value }.cast::<c_void>();
        let (request, input, output) = if set.is_some() {
            (WskSetOption, value, ptr::null_mut())
        } else {
            (WskGetOption, ptr::null_mut(), value)
        };
        let (input_size, output_size) = if set.is_some() { (size, 0) } else { (0, size) };
        // SAFETY: a live socket's entry; the value outlives the call.
        unsafe {
            entry(
                raw,
                request,
                code,
                level,
                input_size,
                input,
                output_size,
                output,
                ptr::null_mut(),
                irp,
            )
        }
    };
    // SAFETY: one WSK call with the operation's IRP, on a socket whose
    // run-down protection the caller holds (`SocketHandle`'s invariant).
    unsafe { op.submit_on_socket(registration, call)? };
    Ok(op)
}

/// The WSK interface, whose standard events `SO_WSK_EVENT_CALLBACK` names
/// (the control block points at it).
static NPI_WSK: crate::abi::NPIID = crate::abi::NPI_WSK_INTERFACE_ID;

/// `WskControlSocket` turning on receive and disconnect events
/// (`SO_WSK_EVENT_CALLBACK`): without an IRP, as Microsoft requires when
/// turning events on, so the status comes back directly.
///
/// # Errors
/// [`Error::NotSupported`] when the provider has no `WskControlSocket` or
/// answers so (Wine 8's is a stub); what the provider returns otherwise.
pub fn enable_events(socket: &SocketHandle) -> Result<()> {
    let entry = socket.basic().WskControlSocket.ok_or_else(missing)?;
    let mut control = crate::abi::WSK_EVENT_CALLBACK_CONTROL {
        NpiId: &raw const NPI_WSK,
        EventMask: crate::abi::WSK_EVENT_RECEIVE | crate::abi::WSK_EVENT_DISCONNECT,
    };
    // SAFETY: a live socket's entry (the caller's run-down protection);
    // the control block outlives the call, which takes no IRP and returns
    // its result; IRQL <= DISPATCH_LEVEL.
    let status = unsafe {
        entry(
            socket.raw(),
            WskSetOption,
            crate::abi::SO_WSK_EVENT_CALLBACK,
            crate::abi::SOL_SOCKET,
            core::mem::size_of::<crate::abi::WSK_EVENT_CALLBACK_CONTROL>(),
            (&raw mut control).cast(),
            0,
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    NtStatus(status).ok()
}

/// `WskRelease` of a list of data indications a connection socket's
/// `WskReceiveEvent` kept. A provider without the entry keeps nothing
/// retrievable: nothing to do.
///
/// # Safety
/// `head` is a list the provider indicated on `socket` and the client
/// kept (`STATUS_PENDING`), not released before; IRQL <= `DISPATCH_LEVEL`.
pub unsafe fn release_indications(
    socket: &SocketHandle,
    head: *mut crate::abi::WSK_DATA_INDICATION,
) {
    debug_assert!(
        socket.kind == Table::Connection,
        "events are a connection socket's"
    );
    let table = socket.dispatch().cast::<WSK_PROVIDER_CONNECTION_DISPATCH>();
    // SAFETY: a live connection socket's table (invariant); the entry
    // precedes `WskConnectEx`, so every provider's table holds it.
    let entry = unsafe { (*table).WskRelease };
    if let Some(entry) = entry {
        // SAFETY: the contract; the socket is live (run-down or closer).
        let _ = unsafe { entry(socket.raw(), head) };
    }
}
