//! The WSK provider's registration half: `WskRegister`, provider NPI capture
//! and release, `WskDeregister`, and the client-level dispatch table.

use core::ffi::c_void;
use core::ptr;
use std::boxed::Box;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::verifier::bugcheck;
use super::{Kernel, KernelInner, irql, sockets};
use crate::abi::{
    MAKE_WSK_VERSION, NTSTATUS, STATUS_DEVICE_NOT_READY, STATUS_INVALID_PARAMETER,
    STATUS_NOINTERFACE, STATUS_SUCCESS, ULONG, USHORT, WSK_CLIENT, WSK_CLIENT_NPI,
    WSK_INFINITE_WAIT, WSK_MAJOR_VERSION, WSK_NO_WAIT, WSK_PROVIDER_DISPATCH, WSK_PROVIDER_NPI,
    WSK_REGISTRATION,
};

/// What the emulated provider offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent switches of an emulated provider"
)]
pub struct ProviderConfig {
    /// The dispatch table's `Version` (`MAKE_WSK_VERSION(1, 0)` by default).
    pub version: USHORT,
    /// Whether `WskSocketConnect` is in the dispatch table.
    pub socket_connect: bool,
    /// Whether `WskConnectEx` is in the socket dispatch tables: `false`
    /// leaves the entry NULL. Below build 15063 (see
    /// [`os_build`](Self::os_build)) there is no entry at all.
    pub connect_ex: bool,
    /// Whether every call returns `STATUS_PENDING` and completes later from
    /// the kernel's poller thread at `DISPATCH_LEVEL`, even one that could
    /// finish at once (default: complete inline when possible). Exercises
    /// a client's pending paths for every call.
    pub always_pend: bool,
    /// Whether `WskConnectEx` is a stub that answers
    /// `STATUS_NOT_IMPLEMENTED` without completing its IRP, as Wine 8's
    /// does (only meaningful with `connect_ex`).
    pub connect_ex_stub: bool,
    /// The Windows build the machine runs: what `RtlGetVersion` reports
    /// (default 19045, Windows 10 22H2). Below 15063 (Windows 10 1703) the
    /// connection and stream dispatch tables end before `WskConnectEx`, as
    /// they did then, and the page after them is unmapped: a client that
    /// reads the entry anyway crashes at once.
    pub os_build: u32,
    /// Whether pending socket IRPs get a cancel routine (default). Without
    /// one, as in Wine 8's provider, `IoCancelIrp` changes nothing: a
    /// pending IRP completes when its operation does, or when the socket
    /// is closed.
    pub cancel_routines: bool,
    /// Whether `WskDisconnect` is a stub that answers
    /// `STATUS_NOT_IMPLEMENTED` without completing its IRP, as Wine 8's
    /// does.
    pub disconnect_stub: bool,
    /// Whether `WskGetNameInfo` is a stub that answers
    /// `STATUS_NOT_IMPLEMENTED` without completing its IRP, as Wine 8's
    /// does.
    pub name_info_stub: bool,
    /// Whether `WskSocket` creates datagram sockets (default). Without,
    /// it answers `STATUS_NOT_IMPLEMENTED` for them, as Wine 8's does for
    /// any socket but listening and connection sockets.
    pub datagram_sockets: bool,
}

impl ProviderConfig {
    /// A provider that behaves as Wine 8's `netio.sys` where it differs
    /// from Windows in ways a client must survive: `WskConnectEx`,
    /// `WskDisconnect` and `WskGetNameInfo` are stubs that return
    /// `STATUS_NOT_IMPLEMENTED` without completing their IRP; no datagram
    /// sockets; pending IRPs have no cancel routine;
    /// and no `WskSocketConnect` (Wine's is such a stub too; the library
    /// answers `Error::NotSupported` either way).
    #[must_use]
    pub fn like_wine() -> Self {
        Self {
            socket_connect: false,
            connect_ex_stub: true,
            cancel_routines: false,
            disconnect_stub: true,
            name_info_stub: true,
            datagram_sockets: false,
            ..Self::default()
        }
    }
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            version: MAKE_WSK_VERSION(1, 0),
            socket_connect: true,
            connect_ex: true,
            always_pend: false,
            connect_ex_stub: false,
            os_build: 19_045,
            cancel_routines: true,
            disconnect_stub: false,
            name_info_stub: false,
            datagram_sockets: true,
        }
    }
}

/// Written into `WSK_REGISTRATION.ReservedRegistrationState` by
/// `WskRegister`: lets the verifier recognise registrations.
const REGISTERED: u64 = 0x5753_4B52_4547_0001;
const DEREGISTERED: u64 = 0x5753_4B52_4547_DEAD;

/// The client handle the provider NPI hands out.
#[repr(C)]
pub struct EmulatedClient {
    _header: [u8; 0],
    pub registration: usize,
}

struct Registration {
    client: Box<EmulatedClient>,
    client_version: USHORT,
    captures: usize,
    sockets: usize,
    deregistering: bool,
}

struct State {
    ready: bool,
    deregister_deadline: Duration,
    registrations: HashMap<usize, Registration>,
}

pub struct Provider {
    pub config: ProviderConfig,
    dispatch: Box<WSK_PROVIDER_DISPATCH>,
    state: Mutex<State>,
    changed: Condvar,
}

/// Outstanding provider objects.
pub struct ProviderUsage {
    pub registrations: usize,
    pub captures: usize,
    pub sockets: usize,
}

impl Provider {
    pub(crate) fn new(config: ProviderConfig) -> Self {
        let dispatch = Box::new(WSK_PROVIDER_DISPATCH {
            Version: config.version,
            Reserved: 0,
            WskSocket: Some(sockets::wsk_socket),
            WskSocketConnect: if config.socket_connect {
                Some(sockets::wsk_socket_connect)
            } else {
                None
            },
            WskControlClient: ptr::null(),
            WskGetAddressInfo: Some(super::names::wsk_get_address_info),
            WskFreeAddressInfo: Some(super::names::wsk_free_address_info),
            WskGetNameInfo: Some(super::names::wsk_get_name_info),
        });
        Self {
            config,
            dispatch,
            state: Mutex::new(State {
                ready: true,
                deregister_deadline: Duration::from_secs(20),
                registrations: HashMap::new(),
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.lock().ready = ready;
        self.changed.notify_all();
    }

    pub(crate) fn set_deregister_deadline(&self, deadline: Duration) {
        self.lock().deregister_deadline = deadline;
    }

    pub(crate) fn usage(&self) -> ProviderUsage {
        let state = self.lock();
        ProviderUsage {
            registrations: state.registrations.len(),
            captures: state.registrations.values().map(|r| r.captures).sum(),
            sockets: state.registrations.values().map(|r| r.sockets).sum(),
        }
    }

    /// Counts a socket created for a client (it must be closed before the
    /// client may deregister).
    pub(crate) fn socket_opened(&self, client: *const EmulatedClient) {
        // SAFETY: client handles come from our own NPI and live until
        // deregistration, which waits for every socket.
        let key = unsafe { (*client).registration };
        if let Some(registration) = self.lock().registrations.get_mut(&key) {
            registration.sockets += 1;
        }
    }

    pub(crate) fn socket_closed(&self, client: *const EmulatedClient) {
        // SAFETY: as in `socket_opened`.
        let key = unsafe { (*client).registration };
        if let Some(registration) = self.lock().registrations.get_mut(&key) {
            registration.sockets -= 1;
        }
        self.changed.notify_all();
    }
}

/// The kernel of the registration a client handle (from a captured provider
/// NPI) belongs to.
///
/// # Safety
/// `client` is the `Client` of a provider NPI captured from this emulator,
/// whose registration is not yet deregistered.
pub unsafe fn kernel_of_client(client: *mut WSK_CLIENT, function: &str) -> Kernel {
    if client.is_null() {
        bugcheck(
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format_args!("{function}: NULL WSK_CLIENT"),
        );
    }
    // SAFETY: client handles are `EmulatedClient`s (the contract).
    let registration = unsafe { (*client.cast::<EmulatedClient>()).registration };
    // SAFETY: the client's registration block, still registered (the
    // contract; `kernel_of` checks its state).
    unsafe { kernel_of(registration as *mut WSK_REGISTRATION, function) }
}

/// The kernel a registration was made in (held in the registration block by
/// `WskRegister` as a strong reference until `WskDeregister`).
///
/// # Safety
/// `registration` points to a `WSK_REGISTRATION`.
unsafe fn kernel_of(registration: *mut WSK_REGISTRATION, function: &str) -> Kernel {
    // SAFETY: the caller passes a registration block.
    let block = unsafe { &*registration };
    if block.ReservedRegistrationState != REGISTERED {
        let why = if block.ReservedRegistrationState == DEREGISTERED {
            "already deregistered"
        } else {
            "never registered with WskRegister"
        };
        bugcheck(
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format_args!("{function}({registration:p}): {why}"),
        );
    }
    let inner = block
        .ReservedRegistrationContext
        .cast::<KernelInner>()
        .cast_const();
    // SAFETY: WskRegister stored `Arc::into_raw` of the kernel here; we take
    // another strong count without consuming that one.
    unsafe { Arc::increment_strong_count(inner) };
    // SAFETY: the count just taken is handed to this Arc.
    let inner = unsafe { Arc::from_raw(inner) };
    Kernel { inner }
}

pub unsafe fn register(
    npi: *const WSK_CLIENT_NPI,
    registration: *mut WSK_REGISTRATION,
) -> NTSTATUS {
    irql::require(const { irql::rule_of("WskRegister") });
    if npi.is_null() || registration.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: non-NULL client NPI from the caller.
    let dispatch = unsafe { (*npi).Dispatch };
    if dispatch.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: the client's dispatch table must outlive its registration.
    let client_version = unsafe { (*dispatch).Version };
    let kernel = Kernel::current();
    let key = registration as usize;
    let provider = &kernel.inner().provider;
    {
        let mut state = provider.lock();
        if state.registrations.contains_key(&key) {
            bugcheck(
                "DRIVER_VERIFIER_DETECTED_VIOLATION",
                format_args!("WskRegister({registration:p}): already registered"),
            );
        }
        state.registrations.insert(
            key,
            Registration {
                client: Box::new(EmulatedClient {
                    _header: [],
                    registration: key,
                }),
                client_version,
                captures: 0,
                sockets: 0,
                deregistering: false,
            },
        );
    }
    // SAFETY: the caller's registration block, which it keeps in place until
    // WskDeregister.
    let block = unsafe { &mut *registration };
    block.ReservedRegistrationState = REGISTERED;
    block.ReservedRegistrationContext = Arc::into_raw(kernel.inner.clone())
        .cast_mut()
        .cast::<c_void>();
    block.ReservedRegistrationLock = 0;
    STATUS_SUCCESS
}

pub unsafe fn capture(
    registration: *mut WSK_REGISTRATION,
    wait_timeout: ULONG,
    npi: *mut WSK_PROVIDER_NPI,
) -> NTSTATUS {
    if wait_timeout == WSK_NO_WAIT {
        irql::require(const { irql::rule_of("WskCaptureProviderNPI (WSK_NO_WAIT)") });
    } else {
        irql::require(const { irql::rule_of("WskCaptureProviderNPI") });
    }
    // SAFETY: the caller passes its registration block.
    let kernel = unsafe { kernel_of(registration, "WskCaptureProviderNPI") };
    if kernel.inner().faults.capture_fails() {
        return STATUS_DEVICE_NOT_READY;
    }
    let provider = &kernel.inner().provider;
    let key = registration as usize;
    let deadline = (wait_timeout != WSK_NO_WAIT && wait_timeout != WSK_INFINITE_WAIT)
        .then(|| Instant::now() + Duration::from_millis(u64::from(wait_timeout)));
    let mut state = provider.lock();
    loop {
        let ready = state.ready;
        let Some(entry) = state.registrations.get_mut(&key) else {
            return STATUS_DEVICE_NOT_READY;
        };
        if entry.deregistering {
            return STATUS_DEVICE_NOT_READY;
        }
        if WSK_MAJOR_VERSION(entry.client_version) != WSK_MAJOR_VERSION(provider.config.version) {
            return STATUS_NOINTERFACE;
        }
        if ready {
            entry.captures += 1;
            let client = ptr::from_ref::<EmulatedClient>(&entry.client)
                .cast_mut()
                .cast::<WSK_CLIENT>();
            // SAFETY: the caller's output structure.
            unsafe {
                npi.write(WSK_PROVIDER_NPI {
                    Client: client,
                    Dispatch: ptr::from_ref(&*provider.dispatch),
                });
            }
            return STATUS_SUCCESS;
        }
        if wait_timeout == WSK_NO_WAIT {
            return STATUS_DEVICE_NOT_READY;
        }
        let wait = match deadline {
            None => Duration::from_hours(1),
            Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => left,
                _ => return STATUS_DEVICE_NOT_READY,
            },
        };
        state = provider
            .changed
            .wait_timeout(state, wait)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

pub unsafe fn release(registration: *mut WSK_REGISTRATION) {
    if super::verifier::unwinding() {
        return;
    }
    irql::require(const { irql::rule_of("WskReleaseProviderNPI") });
    // SAFETY: the caller passes its registration block.
    let kernel = unsafe { kernel_of(registration, "WskReleaseProviderNPI") };
    let provider = &kernel.inner().provider;
    let mut state = provider.lock();
    match state.registrations.get_mut(&(registration as usize)) {
        Some(entry) if entry.captures > 0 => entry.captures -= 1,
        _ => {
            drop(state);
            bugcheck(
                "DRIVER_VERIFIER_DETECTED_VIOLATION",
                format_args!("WskReleaseProviderNPI({registration:p}) without a matching capture"),
            );
        }
    }
    drop(state);
    provider.changed.notify_all();
}

pub unsafe fn deregister(registration: *mut WSK_REGISTRATION) {
    if super::verifier::unwinding() {
        return;
    }
    irql::require(const { irql::rule_of("WskDeregister") });
    // SAFETY: the caller passes its registration block.
    let kernel = unsafe { kernel_of(registration, "WskDeregister") };
    let provider = &kernel.inner().provider;
    let key = registration as usize;
    let mut state = provider.lock();
    let deadline = Instant::now() + state.deregister_deadline;
    if let Some(entry) = state.registrations.get_mut(&key) {
        entry.deregistering = true;
    }
    provider.changed.notify_all();
    loop {
        let entry = state
            .registrations
            .get(&key)
            .expect("registered (checked by kernel_of)");
        if entry.captures == 0 && entry.sockets == 0 {
            break;
        }
        let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            let (captures, sockets) = (entry.captures, entry.sockets);
            drop(state);
            bugcheck(
                "DRIVER_VERIFIER_DETECTED_VIOLATION",
                format_args!(
                    "WskDeregister({registration:p}) blocked: {captures} provider NPI capture(s) and {sockets} socket(s) were never released"
                ),
            );
        };
        state = provider
            .changed
            .wait_timeout(state, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    state.registrations.remove(&key);
    drop(state);
    // SAFETY: the caller's registration block; WskRegister stored the strong
    // kernel reference released here, exactly once (the state changes).
    let block = unsafe { &mut *registration };
    block.ReservedRegistrationState = DEREGISTERED;
    let inner = core::mem::replace(&mut block.ReservedRegistrationContext, ptr::null_mut());
    // SAFETY: `Arc::into_raw` from WskRegister, consumed once.
    drop(unsafe { Arc::from_raw(inner.cast_const().cast::<KernelInner>()) });
}
