//! A raw WSK client for the socket provider tests: what a C driver does,
//! through the real ABI (function pointers from the dispatch tables, IRPs
//! with a completion routine in the next stack location), with no help from
//! the library's socket layer.
#![allow(dead_code, reason = "each test binary uses part of the harness")]
#![allow(
    clippy::unnecessary_box_returns,
    reason = "what the provider is given a pointer to must not move"
)]

use core::ffi::c_void;
use core::ptr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, ThreadId};
use std::time::Duration;

use wsk::abi::{
    ADDRESS_FAMILY, AF_INET, AF_INET6, IPPROTO_TCP, IRP, MAKE_WSK_VERSION, NTSTATUS, PFN_WSK_BIND,
    PFN_WSK_CLOSE_SOCKET, PFN_WSK_CONNECT, PFN_WSK_CONNECT_EX, PFN_WSK_CONTROL_SOCKET,
    PFN_WSK_DISCONNECT, PFN_WSK_GET_ADDRESS, PFN_WSK_RECEIVE, PFN_WSK_SEND, SOCK_STREAM, SOCKADDR,
    SOCKADDR_IN, SOCKADDR_IN6, SOCKADDR_STORAGE, STATUS_MORE_PROCESSING_REQUIRED, STATUS_PENDING,
    STATUS_SUCCESS, TCP_FASTOPEN, ULONG, WSK_BUF, WSK_CLIENT_DISPATCH, WSK_CLIENT_NPI,
    WSK_FLAG_STREAM_SOCKET, WSK_NO_WAIT, WSK_PROVIDER_CONNECTION_DISPATCH, WSK_PROVIDER_DISPATCH,
    WSK_PROVIDER_NPI, WSK_PROVIDER_STREAM_DISPATCH, WSK_REGISTRATION, WSK_SOCKET, WskGetOption,
    WskSetOption,
};
use wsk::emulator::{exports, irql};
use wsk::{Event, EventKind, Irp, Mdl, NtStatus, PassiveLevel, PoolBuffer, PoolTag};

/// How long any single operation may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Completion order across every call of the process.
static SEQUENCE: AtomicUsize = AtomicUsize::new(0);

/// What the completion routine saw.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub status: NtStatus,
    pub information: usize,
    pub irql: u8,
    pub thread: ThreadId,
    pub sequence: usize,
}

struct Context {
    done: Event,
    seen: Mutex<Option<Seen>>,
}

unsafe extern "system" fn on_complete(
    _device: *mut c_void,
    irp: *mut IRP,
    context: *mut c_void,
) -> NTSTATUS {
    // SAFETY: `submit` passes its boxed context, alive until `wait` saw it.
    let context = unsafe { &*context.cast::<Context>() };
    // SAFETY: the I/O manager passes the IRP being completed.
    let io_status = unsafe { (*irp).IoStatus };
    *context.seen.lock().unwrap() = Some(Seen {
        status: NtStatus(io_status.Status),
        information: io_status.Information,
        irql: irql::current(),
        thread: thread::current().id(),
        sequence: SEQUENCE.fetch_add(1, Ordering::SeqCst),
    });
    context.done.set();
    STATUS_MORE_PROCESSING_REQUIRED
}

/// A call's IRP, in flight or completed. Dropped while still in flight (a
/// test failing), it leaks the IRP and its context rather than free what a
/// late completion would touch.
pub struct InFlight {
    irp: Option<Irp>,
    context: Option<Box<Context>>,
    /// What the dispatch function returned.
    pub returned: NtStatus,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.is_done() {
            if let Some(irp) = self.irp.take() {
                let _ = irp.into_raw();
            }
            if let Some(context) = self.context.take() {
                Box::leak(context);
            }
        }
    }
}

/// A call and what its completion routine saw.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub returned: NtStatus,
    pub status: NtStatus,
    pub information: usize,
    pub irql: u8,
    pub thread: ThreadId,
    pub sequence: usize,
}

/// Calls `call` with a fresh IRP whose completion routine records what it
/// sees. A call that does not return `STATUS_PENDING` must already have
/// completed its IRP with the status it returned (the WDM rule).
pub fn submit(call: impl FnOnce(*mut IRP) -> NTSTATUS) -> InFlight {
    let irp = Irp::allocate(1).unwrap();
    let context = Box::new(Context {
        done: Event::new(EventKind::Notification, false).unwrap(),
        seen: Mutex::new(None),
    });
    let raw_context = ptr::from_ref::<Context>(&context).cast_mut().cast();
    // SAFETY: the context is boxed and outlives the completion (`wait`).
    unsafe { irp.set_completion_routine(on_complete, raw_context) };
    let returned = NtStatus(call(irp.as_ptr()));
    if returned != NtStatus::PENDING {
        let seen = context.seen.lock().unwrap().expect(
            "a dispatch function that does not return STATUS_PENDING has completed its IRP",
        );
        assert_eq!(seen.status, returned, "returned status vs IoStatus.Status");
    }
    InFlight {
        irp: Some(irp),
        context: Some(context),
        returned,
    }
}

impl InFlight {
    fn context(&self) -> &Context {
        self.context.as_ref().expect("present until dropped")
    }

    pub fn is_done(&self) -> bool {
        self.context
            .as_ref()
            .is_some_and(|context| context.seen.lock().unwrap().is_some())
    }

    /// `IoCancelIrp`.
    pub fn cancel(&self) -> bool {
        self.irp.as_ref().expect("present until dropped").cancel()
    }

    /// Waits for the completion (at most [`PATIENCE`]).
    pub fn wait(self) -> Outcome {
        let passive = PassiveLevel::check().unwrap();
        let waited = self
            .context()
            .done
            .wait(&passive.at_most_apc(), Some(PATIENCE));
        assert!(
            waited.is_ok(),
            "the IRP did not complete within {PATIENCE:?}"
        );
        let seen = self.context().seen.lock().unwrap().unwrap();
        Outcome {
            returned: self.returned,
            status: seen.status,
            information: seen.information,
            irql: seen.irql,
            thread: seen.thread,
            sequence: seen.sequence,
        }
    }
}

/// [`submit`], then [`InFlight::wait`].
pub fn call(call: impl FnOnce(*mut IRP) -> NTSTATUS) -> Outcome {
    submit(call).wait()
}

/// A socket address in the Windows layout (`AF_INET6` is 23).
#[repr(C)]
pub struct WinAddr(SOCKADDR_STORAGE);

impl WinAddr {
    pub fn new(address: SocketAddr) -> Box<Self> {
        let mut storage = Box::new(Self(SOCKADDR_STORAGE {
            ss_family: 0,
            ss_data: [0; 126],
        }));
        let raw = &raw mut storage.0;
        match address {
            SocketAddr::V4(v4) => {
                let sin = SOCKADDR_IN {
                    sin_family: AF_INET,
                    sin_port: v4.port().to_be(),
                    sin_addr: v4.ip().octets(),
                    sin_zero: [0; 8],
                };
                // SAFETY: a SOCKADDR_STORAGE has room and alignment for it.
                unsafe { raw.cast::<SOCKADDR_IN>().write(sin) };
            }
            SocketAddr::V6(v6) => {
                let sin6 = SOCKADDR_IN6 {
                    sin6_family: AF_INET6,
                    sin6_port: v6.port().to_be(),
                    sin6_flowinfo: 0,
                    sin6_addr: v6.ip().octets(),
                    sin6_scope_id: v6.scope_id(),
                };
                // SAFETY: as above.
                unsafe { raw.cast::<SOCKADDR_IN6>().write(sin6) };
            }
        }
        storage
    }

    pub fn zeroed() -> Box<Self> {
        Box::new(Self(SOCKADDR_STORAGE {
            ss_family: 0,
            ss_data: [0; 126],
        }))
    }

    pub const fn as_ptr(&mut self) -> *mut SOCKADDR {
        (&raw mut self.0).cast()
    }

    /// The address the provider wrote, if its family is one WSK uses.
    pub fn get(&self) -> Option<SocketAddr> {
        let raw = &raw const self.0;
        match self.0.ss_family {
            AF_INET => {
                // SAFETY: an AF_INET address is a SOCKADDR_IN.
                let sin = unsafe { raw.cast::<SOCKADDR_IN>().read() };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(sin.sin_addr),
                    u16::from_be(sin.sin_port),
                )))
            }
            AF_INET6 => {
                // SAFETY: an AF_INET6 address is a SOCKADDR_IN6.
                let sin6 = unsafe { raw.cast::<SOCKADDR_IN6>().read() };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(sin6.sin6_addr),
                    u16::from_be(sin6.sin6_port),
                    0,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

/// The Windows address family of `ip`.
pub const fn family_of(ip: IpAddr) -> ADDRESS_FAMILY {
    match ip {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

/// Bytes in non-paged pool with an MDL and a `WSK_BUF` over them.
pub struct Data {
    buffer: PoolBuffer,
    _mdl: Mdl,
    wsk: WSK_BUF,
}

impl Data {
    pub fn from(bytes: &[u8]) -> Box<Self> {
        Self::with(PoolBuffer::from_slice(bytes, PoolTag::BUFFER).unwrap())
    }

    pub fn zeroed(len: usize) -> Box<Self> {
        Self::with(PoolBuffer::zeroed(len, PoolTag::BUFFER).unwrap())
    }

    fn with(buffer: PoolBuffer) -> Box<Self> {
        let mdl = Mdl::describe(&buffer).unwrap();
        let wsk = WSK_BUF {
            Mdl: mdl.as_ptr(),
            Offset: 0,
            Length: buffer.capacity(),
        };
        Box::new(Self {
            buffer,
            _mdl: mdl,
            wsk,
        })
    }

    /// Describes only `length` bytes from `offset`.
    pub const fn window(&mut self, offset: u32, length: usize) {
        self.wsk.Offset = offset;
        self.wsk.Length = length;
    }

    pub const fn wsk(&mut self) -> *mut WSK_BUF {
        &raw mut self.wsk
    }

    pub fn bytes(&self, len: usize) -> &[u8] {
        &self.buffer[..len]
    }
}

/// A client registered with `WskRegister` holding a captured provider NPI.
pub struct Client {
    block: Box<ClientBlock>,
    pub npi: WSK_PROVIDER_NPI,
}

struct ClientBlock {
    dispatch: WSK_CLIENT_DISPATCH,
    registration: WSK_REGISTRATION,
}

impl Client {
    pub fn register() -> Self {
        let mut block = Box::new(ClientBlock {
            dispatch: WSK_CLIENT_DISPATCH {
                Version: MAKE_WSK_VERSION(1, 0),
                Reserved: 0,
                WskClientEvent: None,
            },
            registration: WSK_REGISTRATION {
                ReservedRegistrationState: 0,
                ReservedRegistrationContext: ptr::null_mut(),
                ReservedRegistrationLock: 0,
            },
        });
        let client_npi = WSK_CLIENT_NPI {
            ClientContext: ptr::null_mut(),
            Dispatch: &raw const block.dispatch,
        };
        // SAFETY: the boxed block outlives the registration (`finish`).
        let status = unsafe {
            exports::WskRegister(
                (&raw const client_npi).cast_mut(),
                &raw mut block.registration,
            )
        };
        assert_eq!(NtStatus(status), NtStatus::SUCCESS);
        let mut npi = WSK_PROVIDER_NPI {
            Client: ptr::null_mut(),
            Dispatch: ptr::null(),
        };
        // SAFETY: a registered block.
        let status = unsafe {
            exports::WskCaptureProviderNPI(&raw mut block.registration, WSK_NO_WAIT, &raw mut npi)
        };
        assert_eq!(NtStatus(status), NtStatus::SUCCESS);
        Self { block, npi }
    }

    pub const fn provider(&self) -> &WSK_PROVIDER_DISPATCH {
        // SAFETY: a captured NPI's table lives until the NPI is released.
        unsafe { &*self.npi.Dispatch }
    }

    /// `WskSocket` with the given arguments.
    pub fn socket_raw(&self, family: ADDRESS_FAMILY, socket_type: u16, flags: ULONG) -> Outcome {
        let create = self
            .provider()
            .WskSocket
            .expect("WskSocket is always present");
        call(|irp| {
            // SAFETY: the provider's own function with a valid client and IRP.
            unsafe {
                create(
                    self.npi.Client,
                    family,
                    socket_type,
                    IPPROTO_TCP,
                    flags,
                    ptr::null_mut(),
                    ptr::null(),
                    ptr::null_mut(),
                    ptr::null_mut(),
                    ptr::null_mut(),
                    irp,
                )
            }
        })
    }

    /// A new socket of `kind` (`WSK_FLAG_CONNECTION_SOCKET` or
    /// `WSK_FLAG_STREAM_SOCKET`) for `ip`'s family.
    pub fn open(&self, ip: IpAddr, kind: ULONG) -> Sock {
        let outcome = self.socket_raw(family_of(ip), SOCK_STREAM, kind);
        assert_eq!(outcome.status, NtStatus::SUCCESS, "WskSocket");
        Sock::from_raw(outcome.information as *mut WSK_SOCKET, kind)
    }

    /// `WskSocketConnect`, waited for.
    pub fn socket_connect_call(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        flags: ULONG,
    ) -> Outcome {
        self.submit_socket_connect(local, remote, flags).wait()
    }

    /// `WskSocketConnect`.
    pub fn submit_socket_connect(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        flags: ULONG,
    ) -> InFlight {
        let connect = self
            .provider()
            .WskSocketConnect
            .expect("the provider offers WskSocketConnect");
        let mut local = WinAddr::new(local);
        let mut remote = WinAddr::new(remote);
        submit(|irp| {
            // SAFETY: the provider's own function with valid arguments.
            unsafe {
                connect(
                    self.npi.Client,
                    SOCK_STREAM,
                    IPPROTO_TCP,
                    local.as_ptr(),
                    remote.as_ptr(),
                    flags,
                    ptr::null_mut(),
                    ptr::null(),
                    ptr::null_mut(),
                    ptr::null_mut(),
                    ptr::null_mut(),
                    irp,
                )
            }
        })
    }

    /// Releases the NPI and deregisters.
    pub fn finish(mut self) {
        // SAFETY: the capture made in `register`.
        unsafe { exports::WskReleaseProviderNPI(&raw mut self.block.registration) };
        // SAFETY: registered in `register`; deregistered once.
        unsafe { exports::WskDeregister(&raw mut self.block.registration) };
    }
}

/// The socket functions the tests call, read from the socket's own table.
#[derive(Clone, Copy)]
pub struct Functions {
    pub control: PFN_WSK_CONTROL_SOCKET,
    pub close: PFN_WSK_CLOSE_SOCKET,
    pub bind: PFN_WSK_BIND,
    pub connect: PFN_WSK_CONNECT,
    pub connect_ex: PFN_WSK_CONNECT_EX,
    pub local_address: PFN_WSK_GET_ADDRESS,
    pub remote_address: PFN_WSK_GET_ADDRESS,
    pub send: PFN_WSK_SEND,
    pub receive: PFN_WSK_RECEIVE,
    pub disconnect: PFN_WSK_DISCONNECT,
}

/// A `PWSK_SOCKET` and its functions.
pub struct Sock {
    pub raw: *mut WSK_SOCKET,
    pub functions: Functions,
}

// SAFETY: a WSK socket may be used from any thread.
unsafe impl Send for Sock {}
// SAFETY: as above; WSK calls are thread-safe.
unsafe impl Sync for Sock {}

impl Sock {
    /// Reads the table `raw`'s `Dispatch` points at, as its kind says.
    pub fn from_raw(raw: *mut WSK_SOCKET, kind: ULONG) -> Self {
        assert!(!raw.is_null());
        // SAFETY: a socket the provider just returned.
        let dispatch = unsafe { (*raw).Dispatch };
        let functions = if kind == WSK_FLAG_STREAM_SOCKET {
            // SAFETY: stream sockets point at a stream table.
            let table = unsafe { &*dispatch.cast::<WSK_PROVIDER_STREAM_DISPATCH>() };
            Functions {
                control: table.Basic.WskControlSocket,
                close: table.Basic.WskCloseSocket,
                bind: table.WskBind,
                connect: table.WskConnect,
                connect_ex: table.WskConnectEx,
                local_address: table.WskGetLocalAddress,
                remote_address: table.WskGetRemoteAddress,
                send: table.WskSend,
                receive: table.WskReceive,
                disconnect: table.WskDisconnect,
            }
        } else {
            // SAFETY: connection sockets point at a connection table.
            let table = unsafe { &*dispatch.cast::<WSK_PROVIDER_CONNECTION_DISPATCH>() };
            Functions {
                control: table.Basic.WskControlSocket,
                close: table.Basic.WskCloseSocket,
                bind: table.WskBind,
                connect: table.WskConnect,
                connect_ex: table.WskConnectEx,
                local_address: table.WskGetLocalAddress,
                remote_address: table.WskGetRemoteAddress,
                send: table.WskSend,
                receive: table.WskReceive,
                disconnect: table.WskDisconnect,
            }
        };
        Self { raw, functions }
    }

    pub fn bind(&self, local: SocketAddr, flags: ULONG) -> Outcome {
        let bind = self.functions.bind.unwrap();
        let mut local = WinAddr::new(local);
        // SAFETY: the provider's function, a live socket, valid arguments.
        call(|irp| unsafe { bind(self.raw, local.as_ptr(), flags, irp) })
    }

    pub fn submit_connect(&self, remote: SocketAddr, flags: ULONG) -> InFlight {
        let connect = self.functions.connect.unwrap();
        let mut remote = WinAddr::new(remote);
        // SAFETY: as above; the provider reads the address during the call.
        submit(|irp| unsafe { connect(self.raw, remote.as_ptr(), flags, irp) })
    }

    pub fn connect(&self, remote: SocketAddr, flags: ULONG) -> Outcome {
        self.submit_connect(remote, flags).wait()
    }

    pub fn connect_ex(&self, remote: SocketAddr, data: Option<&mut Data>, flags: ULONG) -> Outcome {
        let connect_ex = self.functions.connect_ex.expect("WskConnectEx is offered");
        let mut remote = WinAddr::new(remote);
        let buffer = data.map_or(ptr::null_mut(), Data::wsk);
        // SAFETY: as above.
        call(|irp| unsafe { connect_ex(self.raw, remote.as_ptr(), buffer, flags, irp) })
    }

    pub fn submit_send(&self, data: &mut Data, flags: ULONG) -> InFlight {
        let send = self.functions.send.unwrap();
        let buffer = data.wsk();
        // SAFETY: as above; `data` outlives the IRP (the caller waits).
        submit(|irp| unsafe { send(self.raw, buffer, flags, irp) })
    }

    pub fn send(&self, data: &mut Data, flags: ULONG) -> Outcome {
        self.submit_send(data, flags).wait()
    }

    pub fn submit_receive(&self, data: &mut Data, flags: ULONG) -> InFlight {
        let receive = self.functions.receive.unwrap();
        let buffer = data.wsk();
        // SAFETY: as above.
        submit(|irp| unsafe { receive(self.raw, buffer, flags, irp) })
    }

    pub fn receive(&self, data: &mut Data, flags: ULONG) -> Outcome {
        self.submit_receive(data, flags).wait()
    }

    pub fn disconnect(&self, data: Option<&mut Data>, flags: ULONG) -> Outcome {
        let disconnect = self.functions.disconnect.unwrap();
        let buffer = data.map_or(ptr::null_mut(), Data::wsk);
        // SAFETY: as above.
        call(|irp| unsafe { disconnect(self.raw, buffer, flags, irp) })
    }

    pub fn local_address(&self) -> (Outcome, Option<SocketAddr>) {
        let get = self.functions.local_address.unwrap();
        let mut address = WinAddr::zeroed();
        // SAFETY: as above; a SOCKADDR_STORAGE-sized output.
        let outcome = call(|irp| unsafe { get(self.raw, address.as_ptr(), irp) });
        (outcome, address.get())
    }

    pub fn remote_address(&self) -> (Outcome, Option<SocketAddr>) {
        let get = self.functions.remote_address.unwrap();
        let mut address = WinAddr::zeroed();
        // SAFETY: as above.
        let outcome = call(|irp| unsafe { get(self.raw, address.as_ptr(), irp) });
        (outcome, address.get())
    }

    /// `WskControlSocket(WskSetOption, TCP_FASTOPEN)` without an IRP.
    pub fn set_fast_open(&self, on: bool) -> NtStatus {
        let control = self.functions.control.unwrap();
        let mut value = ULONG::from(on);
        // SAFETY: as above; a ULONG input.
        NtStatus(unsafe {
            control(
                self.raw,
                WskSetOption,
                TCP_FASTOPEN,
                IPPROTO_TCP,
                size_of::<ULONG>(),
                (&raw mut value).cast(),
                0,
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
            )
        })
    }

    /// `WskControlSocket(WskGetOption, TCP_FASTOPEN)` without an IRP:
    /// status, value and `OutputSizeReturned`.
    pub fn get_fast_open(&self) -> (NtStatus, ULONG, usize) {
        let control = self.functions.control.unwrap();
        let mut value: ULONG = 0xFFFF_FFFF;
        let mut returned = 0_usize;
        // SAFETY: as above; a ULONG output.
        let status = unsafe {
            control(
                self.raw,
                WskGetOption,
                TCP_FASTOPEN,
                IPPROTO_TCP,
                0,
                ptr::null_mut(),
                size_of::<ULONG>(),
                (&raw mut value).cast(),
                &raw mut returned,
                ptr::null_mut(),
            )
        };
        (NtStatus(status), value, returned)
    }

    /// `WskControlSocket` with an IRP, for any option.
    pub fn control_with_irp(
        &self,
        request: i32,
        code: ULONG,
        level: ULONG,
        input: ULONG,
    ) -> Outcome {
        let control = self.functions.control.unwrap();
        let mut value = input;
        // SAFETY: as above.
        call(|irp| unsafe {
            control(
                self.raw,
                request,
                code,
                level,
                size_of::<ULONG>(),
                (&raw mut value).cast(),
                0,
                ptr::null_mut(),
                ptr::null_mut(),
                irp,
            )
        })
    }

    pub fn submit_close(&self) -> InFlight {
        let close = self.functions.close.unwrap();
        // SAFETY: as above; the socket is not used after this.
        submit(|irp| unsafe { close(self.raw, irp) })
    }

    pub fn close(self) -> Outcome {
        self.submit_close().wait()
    }
}

/// `STATUS_SUCCESS` as an `NtStatus`, for comparisons.
pub const SUCCESS: NtStatus = NtStatus(STATUS_SUCCESS);
/// `STATUS_PENDING`.
pub const PENDING: NtStatus = NtStatus(STATUS_PENDING);

/// The number of threads of this process.
pub fn thread_count() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|count| count.trim().parse().ok())
        .expect("/proc/self/status has a Threads: line")
}

/// Set in a child process of this test binary that is to run a fatal case.
pub const FATAL_CASE: &str = "WSK_EMULATOR_FATAL_CASE";

/// Runs `test` alone in a child process with [`FATAL_CASE`] set and
/// expects it to stop like a bugcheck whose message holds every part of
/// `expected`: a panic inside a dispatch function cannot unwind through
/// `extern "system"`, so the process aborts.
pub fn expect_bugcheck_in_child(test: &str, expected: &[&str]) {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(FATAL_CASE, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&output.status),
        Some(libc::SIGABRT),
        "the child must abort; stderr:\n{stderr}"
    );
    for part in expected {
        assert!(
            stderr.contains(part),
            "expected {part:?} in the child's stderr:\n{stderr}"
        );
    }
}

/// Whether this process is such a child.
pub fn in_fatal_child() -> bool {
    std::env::var_os(FATAL_CASE).is_some()
}

/// A loopback TCP server that echoes every connection, a thread each.
pub fn echo_server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            thread::spawn(move || {
                let mut chunk = [0_u8; 4096];
                while let Ok(n @ 1..) = std::io::Read::read(&mut stream, &mut chunk) {
                    if std::io::Write::write_all(&mut stream, &chunk[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    address
}
