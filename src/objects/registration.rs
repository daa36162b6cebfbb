//! The WSK client registration and the captured provider NPI, as owned
//! handles a driver can store anywhere: in a device context, a WDF object
//! context, a `static`, a spawned task.
//!
//! ```no_run
//! # fn demo() -> Result<(), wsk::Error> {
//! use core::time::Duration;
//! let passive = wsk::PassiveLevel::check().expect("a system thread runs at PASSIVE_LEVEL");
//! let registration = wsk::Registration::register(&passive)?;
//! let provider = registration.capture(&passive, Duration::from_secs(5))?;
//! let _ = provider.version();
//! drop(provider); // released here
//! let report = registration.deregister(&passive);
//! assert!(report.is_clean());
//! # Ok(()) }
//! ```
//!
//! A lifetime used to tie every handle to its registration. Handles are
//! owned now (`'static`), kept alive by the registration block's reference
//! count, and what the lifetime proved is enforced at run time by
//! deregistration: it refuses new operations, cancels what is in flight,
//! closes the sockets the driver still holds and releases its captures
//! (each under run-down protection, so that no call on them is inside the
//! provider when that happens), waits for all of it within a bound, and
//! reports by kind and count what it had to force. A handle used afterwards
//! answers a typed error:
//!
//! ```no_run
//! # fn demo() -> Result<(), wsk::Error> {
//! # use core::time::Duration;
//! let passive = wsk::PassiveLevel::check().unwrap();
//! let registration = wsk::Registration::register(&passive)?;
//! let provider = registration.capture(&passive, Duration::from_secs(1))?;
//! let report = registration.deregister(&passive); // no borrow holds it up
//! assert_eq!(report.released_captures, 1);
//! assert!(provider.socket_blocking(&passive, Duration::from_secs(1), wsk::Family::V4, wsk::SocketKind::Connection).is_err());
//! # Ok(()) }
//! ```
//!
//! The handles are `Send + Sync + 'static`:
//!
//! ```
//! fn storable<T: Send + Sync + 'static>() {}
//! storable::<wsk::Registration>();
//! storable::<wsk::Provider>();
//! storable::<wsk::Connection>();
//! ```

use core::cell::UnsafeCell;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use core::time::Duration;

use crate::abi::{
    MAKE_WSK_VERSION, USHORT, WSK_CLIENT, WSK_CLIENT_DISPATCH, WSK_CLIENT_NPI, WSK_NO_WAIT,
    WSK_PROVIDER_DISPATCH, WSK_PROVIDER_NPI, WSK_REGISTRATION,
};
use crate::error::{Error, Result};
use crate::kernel::device::DeviceObject;
use crate::kernel::event::{EventKind, RawEvent};
use crate::kernel::idle::Idle;
use crate::kernel::image::{self, Image};
use crate::kernel::irql::{AtMostDispatch, PassiveLevel};
use crate::kernel::pool::{PoolBox, PoolTag};
use crate::kernel::spinlock::SpinLock;
use crate::kernel::time::Deadline;
use crate::objects::rundown::{Begin, RunDown};
use crate::objects::socket::shared::{IdleSocket, OwnCall};
use crate::objects::tracking::{DeregisterReport, Kind, List, Node, What, try_retain};
use crate::operation::{Operation, Spare};
use crate::status::NtStatus;
use crate::sys;

/// How many closed sockets' blocks a registration keeps for new sockets.
const IDLE_SOCKETS: usize = 16;

/// What a registration sets aside for its next sockets (see
/// [`crate::kernel::idle`]), under one lock.
struct Reusable {
    sockets: Idle<IdleSocket, IDLE_SOCKETS>,
}

/// The WSK version this library asks for.
const CLIENT_VERSION: USHORT = MAKE_WSK_VERSION(1, 0);

/// How long [`Registration::deregister`] waits for operations to finish
/// once it has cancelled them and closed their sockets.
///
/// # IRQL
/// Any (a constant).
pub const DEREGISTER_BOUND: Duration = Duration::from_secs(10);

/// How often deregistration looks again at the operations in flight.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// Provider capture blocks.
const CAPTURE_TAG: PoolTag = PoolTag::new(*b"WskN");

/// Socket functions a provider may lack although its table has an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Missing {
    /// `WskConnectEx`.
    ConnectEx = 1,
    /// `WskDisconnect`.
    Disconnect = 2,
    /// `WskGetNameInfo` (a stub in Wine 8).
    NameInfo = 4,
    /// Datagram sockets (`WskSocket` with `WSK_FLAG_DATAGRAM_SOCKET`).
    Datagram = 8,
}

/// A WSK version number (`MAKE_WSK_VERSION`).
///
/// # IRQL
/// Any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WskVersion {
    /// Major version.
    pub major: u8,
    /// Minor version.
    pub minor: u8,
}

impl From<USHORT> for WskVersion {
    fn from(raw: USHORT) -> Self {
        let [minor, major] = raw.to_le_bytes();
        Self { major, minor }
    }
}

/// Everything the WSK subsystem may touch from `WskRegister` until
/// `WskDeregister` returns, in one non-paged block that never moves.
///
/// # Invariants
/// `refs` counts the [`Registration`] and every [`RegistrationRef`]; the
/// block is freed by whoever drops the count to zero. `in_flight` counts
/// operations whose completion routine has not yet run. `tracked` lists
/// the socket-creating operations in flight, open sockets and captures.
struct RegistrationBlock {
    registration: UnsafeCell<WSK_REGISTRATION>,
    dispatch: WSK_CLIENT_DISPATCH,
    npi: WSK_CLIENT_NPI,
    refs: AtomicUsize,
    in_flight: AtomicUsize,
    draining: AtomicBool,
    drained: RawEvent,
    tracked: SpinLock<List>,
    quarantined: AtomicUsize,
    /// Socket functions the provider answered with "not implemented" (a
    /// [`Missing`] bit each): not called again, since a stub such as Wine
    /// 8's never completes its IRP and each call would leave a block
    /// quarantined.
    missing: AtomicU8,
    /// The device object whose reference holds the driver image while a
    /// completion routine runs (`IoSetCompletionRoutineEx`), if the driver
    /// gave one. Read under `device_rundown`; taken (and dropped) by the
    /// party that ends the run-down: deregistration, or the last reader
    /// inside when it began.
    device: UnsafeCell<Option<DeviceObject>>,
    device_rundown: RunDown,
    /// Whether the driver gave a device: fixed at registration.
    has_device: bool,
    /// Closed sockets' blocks (with their operations), for the next
    /// sockets; closed (and emptied) by deregistration.
    reusable: SpinLock<Reusable>,
    /// A close operation held in reserve: a socket whose own operation a
    /// forgotten creator still holds is closed with a stand-in, and this
    /// one serves when no stand-in can be allocated (refilled whenever a
    /// new socket block is allocated), so that an unload does not wait for
    /// a socket nobody can close.
    reserve: Spare<OwnCall>,
    image: &'static Image,
}

/// A registered WSK client (`WskRegister`).
///
/// Deregister it with [`deregister`](Self::deregister) at `PASSIVE_LEVEL`
/// (dropping it at `PASSIVE_LEVEL` does the same and discards the report).
/// It may be stored anywhere a driver keeps state; the handles it gives out
/// ([`Provider`], sockets, connections) are owned too and need not be
/// dropped first: deregistration ends whatever is left.
///
/// # IRQL
/// Registering and deregistering at `PASSIVE_LEVEL`; capturing as each
/// method says.
pub struct Registration {
    block: RegistrationRef,
    deregistered: bool,
}

impl Registration {
    /// Registers with the WSK subsystem (`WskRegister`, version 1.0).
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL` (the token proves it).
    ///
    /// # Errors
    /// [`Error::IrqlTooHigh`] when the thread is above `PASSIVE_LEVEL` after
    /// all (a stale token); [`Error::InsufficientResources`] when the
    /// registration block cannot be allocated; otherwise what `WskRegister`
    /// returned.
    pub fn register(irql: &PassiveLevel) -> Result<Self> {
        Self::register_inner(irql, None)
    }

    /// Registers as [`register`](Self::register) does, and installs every
    /// completion routine with `IoSetCompletionRoutineEx` against `device`
    /// (but a close's, when `IoSetCompletionRoutineEx` cannot allocate: a
    /// close must not fail, so it then takes the plain routine):
    /// the I/O manager then holds the device object, and so the driver
    /// image, until each routine has returned, so that no routine can
    /// return into an unloaded driver. This is how a driver should
    /// register; a KMDF driver passes `WdfDeviceWdmGetDeviceObject` of its
    /// WDFDEVICE.
    ///
    /// Not under Wine 8, whose `IoSetCompletionRoutineEx` is a stub that
    /// must not be called: drivers run there register without a device.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL` (the token proves it).
    ///
    /// # Errors
    /// As [`register`](Self::register).
    pub fn register_with_device(irql: &PassiveLevel, device: DeviceObject) -> Result<Self> {
        Self::register_inner(irql, Some(device))
    }

    fn register_inner(irql: &PassiveLevel, device: Option<DeviceObject>) -> Result<Self> {
        // A token proves the IRQL only when it was made: look again.
        PassiveLevel::check()?;
        let image = image::current();
        // Read once, at PASSIVE_LEVEL, before any socket exists: whether the
        // socket dispatch tables hold `WskConnectEx`.
        let _ = crate::kernel::version::os_build(irql);
        let init = |slot: *mut RegistrationBlock| {
            let block = RegistrationBlock {
                registration: UnsafeCell::new(WSK_REGISTRATION {
                    ReservedRegistrationState: 0,
                    ReservedRegistrationContext: ptr::null_mut(),
                    ReservedRegistrationLock: 0,
                }),
                dispatch: WSK_CLIENT_DISPATCH {
                    Version: CLIENT_VERSION,
                    Reserved: 0,
                    WskClientEvent: None,
                },
                npi: WSK_CLIENT_NPI {
                    ClientContext: ptr::null_mut(),
                    Dispatch: ptr::null(),
                },
                refs: AtomicUsize::new(1),
                in_flight: AtomicUsize::new(0),
                draining: AtomicBool::new(false),
                drained: RawEvent::zeroed(),
                tracked: SpinLock::new(List::new()),
                quarantined: AtomicUsize::new(0),
                missing: AtomicU8::new(0),
                has_device: device.is_some(),
                device: UnsafeCell::new(device),
                device_rundown: RunDown::new(),
                reusable: SpinLock::new(Reusable {
                    sockets: Idle::new(),
                }),
                reserve: Spare::new(),
                image,
            };
            // SAFETY: `slot` is a fresh block of the right size and alignment.
            unsafe { slot.write(block) };
            // SAFETY: initialised just now; nothing else refers to it yet.
            let block = unsafe { &mut *slot };
            // SAFETY: the event is in its final, non-paged place;
            // PASSIVE_LEVEL (the token).
            unsafe { RawEvent::init(&raw mut block.drained, EventKind::Notification, false) };
            // The client NPI points at the dispatch table in the same block.
            block.npi.Dispatch = &raw const block.dispatch;
        };
        let reserve = Operation::new(OwnCall::stand_in())?;
        // SAFETY: `init` initialises every field.
        let block = unsafe { PoolBox::new_with(PoolTag::REGISTRATION, init)? };
        let refused = block.reserve.keep(reserve);
        debug_assert!(refused.is_none(), "a new reserve slot is empty");
        let npi = (&raw const block.npi).cast_mut();
        // INVARIANT: the one reference counted at creation is this one.
        let block = RegistrationRef {
            block: block.into_raw(),
        };
        // SAFETY: the client NPI and registration live in the block, which
        // outlives the registration; PASSIVE_LEVEL proved by the token.
        let status = NtStatus(unsafe { sys::WskRegister(npi, block.registration()) });
        if status.is_success() {
            image.registration_opened();
            Ok(Self {
                block,
                deregistered: false,
            })
        } else {
            // Dropping the only reference frees the block.
            drop(block);
            Err(Error::from_status(status))
        }
    }

    /// Captures the provider NPI, waiting at most `timeout` for the WSK
    /// subsystem to become ready (never forever: an infinite wait from
    /// `DriverEntry` can hang boot).
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL` (the token proves it).
    ///
    /// # Errors
    /// [`Error::ProviderUnavailable`] (`STATUS_DEVICE_NOT_READY`) when the
    /// provider did not become ready in time or deregistration has begun;
    /// [`Error::NotSupported`] (`STATUS_NOINTERFACE`) when the subsystem does
    /// not support WSK 1.0; [`Error::InsufficientResources`] when the
    /// capture's block cannot be allocated; [`Error::IrqlTooHigh`] when the
    /// thread is above `PASSIVE_LEVEL` after all (a stale token).
    pub fn capture(&self, _irql: &PassiveLevel, timeout: Duration) -> Result<Provider> {
        // A waiting capture needs PASSIVE_LEVEL; a token may be stale.
        PassiveLevel::check()?;
        // 0 means WSK_NO_WAIT and 0xFFFFFFFF WSK_INFINITE_WAIT: keep clear of both.
        let millis = u32::try_from(timeout.as_millis())
            .unwrap_or(u32::MAX)
            .clamp(1, u32::MAX - 1);
        self.block.capture(millis)
    }

    /// Captures the provider NPI only if it is available now (`WSK_NO_WAIT`).
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below (the token proves it).
    ///
    /// # Errors
    /// As [`capture`](Self::capture), without waiting.
    pub fn try_capture(&self, _irql: &AtMostDispatch) -> Result<Provider> {
        self.block.capture(WSK_NO_WAIT)
    }

    /// How many operations have an IRP in flight.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.block.get().in_flight.load(Ordering::Acquire)
    }

    /// Ends everything the registration still has and deregisters, waiting
    /// at most [`DEREGISTER_BOUND`] for operations to finish.
    ///
    /// See [`deregister_within`](Self::deregister_within).
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL` (the token proves it).
    #[must_use = "the report says what the driver had left behind"]
    pub fn deregister(self, irql: &PassiveLevel) -> DeregisterReport {
        self.deregister_within(irql, DEREGISTER_BOUND)
    }

    /// Ends everything the registration still has and deregisters:
    ///
    /// 1. refuses new operations and captures;
    /// 2. cancels every socket-creating operation in flight, closes
    ///    (abortively) every socket a handle or a forgotten future still
    ///    holds, which ends the calls pending on it, and releases
    ///    every capture, each under run-down protection (a call inside the
    ///    provider finishes first, and the last one out ends the object);
    ///    a handle used afterwards answers a typed error;
    /// 3. waits at most `bound` for the completions of all of it;
    /// 4. at the driver's last registration, cancels the timers of
    ///    [`sleep`](crate::sleep) and [`timeout`](crate::timeout) still
    ///    armed, and lets queued DPCs run out (`KeFlushQueuedDpcs`);
    /// 5. `WskDeregister`, which returns once the provider has finished the
    ///    closes and releases of step 2.
    ///
    /// It never waits for anything the driver forgot: a forgotten future,
    /// connection, provider or timer is ended, not waited for. The report
    /// counts what had to be ended, by kind. Afterwards the registration
    /// lets go of its device object, so handles the driver forgot do not
    /// keep the driver image loaded.
    ///
    /// The IRQL is checked again (a token may be a copy made before a spin
    /// lock was taken): above `PASSIVE_LEVEL` it does what dropping the
    /// registration there does, and the report says
    /// [`left_registered`](DeregisterReport::left_registered).
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL` (the token proves it).
    #[must_use = "the report says what the driver had left behind"]
    pub fn deregister_within(mut self, _irql: &PassiveLevel, bound: Duration) -> DeregisterReport {
        self.deregister_in_place(bound)
    }

    fn deregister_in_place(&mut self, bound: Duration) -> DeregisterReport {
        let mut report = DeregisterReport::default();
        if core::mem::replace(&mut self.deregistered, true) {
            return report;
        }
        // A token proves the IRQL only when it was made: look again.
        let passive = PassiveLevel::check().ok();
        let block = self.block.get();
        block.draining.store(true, Ordering::SeqCst);
        // What was set aside holds references to the registration: free it
        // (outside the lock), and whatever is set aside from now on.
        let set_aside = {
            let mut reusable = block.reusable.lock();
            reusable.sockets.close()
        };
        drop(set_aside);
        loop {
            let next = block.tracked.lock().pop_for_sweep();
            let Some(node) = next else { break };
            let (what, forced) = node.force();
            if forced {
                report.count(what);
            }
        }
        if let Some(passive) = &passive {
            let deadline = Deadline::after(bound);
            while block.in_flight.load(Ordering::SeqCst) != 0 {
                let left = deadline.remaining();
                if left.is_zero() {
                    break;
                }
                // The event may be stale (the count touched zero once, and
                // a close raised it again): clear, look, wait a slice.
                block.drained.clear();
                if block.in_flight.load(Ordering::SeqCst) == 0 {
                    break;
                }
                let _ = block
                    .drained
                    .wait(&passive.at_most_apc(), Some(left.min(DRAIN_POLL)));
            }
        }
        report.unfinished_operations = block.in_flight.load(Ordering::SeqCst);
        report.quarantined_operations = block.quarantined.load(Ordering::Relaxed);
        block.image.registration_closed(&mut report);
        if passive.is_none() {
            // Above PASSIVE_LEVEL nothing more may be done: WskDeregister
            // blocks. The WSK subsystem keeps pointing at the block, so it
            // must stay: leak this reference on purpose.
            report.left_registered = true;
            core::mem::forget(self.block.clone());
            return report;
        }
        // Let every DPC queued so far return (a timer DPC, a provider's
        // completion from a DPC) before the driver's last WSK call.
        // SAFETY: PASSIVE_LEVEL, checked above.
        unsafe { sys::KeFlushQueuedDpcs() };
        // SAFETY: registered; PASSIVE_LEVEL checked above; every socket and
        // capture was closed or released above.
        unsafe { sys::WskDeregister(self.block.registration()) };
        // No socket is left to close.
        block.reserve.clear();
        // No operation is submitted any more: let go of the device object,
        // so that handles the driver forgot do not hold its image. Routines
        // still to run hold their own reference (IoSetCompletionRoutineEx).
        if block.device_rundown.begin() == Begin::EndNow {
            // SAFETY: the run-down ended with no reader inside, and none can
            // enter any more: the slot is ours alone.
            drop(unsafe { (*block.device.get()).take() });
        }
        report
    }
}

impl Drop for Registration {
    /// Deregisters at `PASSIVE_LEVEL`. Above it (a driver that dropped its
    /// registration under a spin lock, say) everything that can end without
    /// waiting ends (operations cancelled, sockets closed, captures
    /// released, timers cancelled), but `WskDeregister` cannot be called:
    /// the registration stays, and the driver must not unload. Deregister
    /// at `PASSIVE_LEVEL`.
    fn drop(&mut self) {
        let _ = self.deregister_in_place(DEREGISTER_BOUND);
    }
}

impl core::fmt::Debug for Registration {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Registration")
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// A captured provider NPI (`WskCaptureProviderNPI`), released
/// (`WskReleaseProviderNPI`) when the last clone is dropped or when the
/// registration is deregistered, whichever comes first.
///
/// Cloning is cheap (a reference count) and gives another handle to the
/// same capture, so a task can own one.
///
/// # IRQL
/// Every method at `DISPATCH_LEVEL` or below; drop too.
pub struct Provider {
    block: NonNull<CaptureBlock>,
}

/// One capture, shared by the clones of a [`Provider`].
///
/// # Invariants
/// `refs` counts the handles and any sweep that retained the block; `npi`
/// is valid while the run-down has not ended the capture. `node` is the
/// first field, linked while the capture is held.
#[repr(C)]
struct CaptureBlock {
    node: Node,
    refs: AtomicUsize,
    rundown: RunDown,
    npi: WSK_PROVIDER_NPI,
    version: WskVersion,
    registration: RegistrationRef,
}

// SAFETY: the NPI's client handle and dispatch table may be used from any
// thread; the counts are atomic.
unsafe impl Send for Provider {}
// SAFETY: as above: WSK client-level functions are thread-safe.
unsafe impl Sync for Provider {}

impl Provider {
    const KIND: &'static Kind = &Kind {
        what: What::Capture,
        retain: retain_capture,
        force: force_capture,
    };

    const fn shared(&self) -> &CaptureBlock {
        // SAFETY: live while this handle holds a reference (invariant).
        unsafe { self.block.as_ref() }
    }

    /// The provider dispatch table's version.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub const fn version(&self) -> WskVersion {
        self.shared().version
    }

    /// Whether the provider offers `WskSocketConnect` (decided from its
    /// dispatch table at run time); `false` once the capture is released.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    #[must_use]
    pub fn supports_socket_connect(&self) -> bool {
        self.enter()
            .is_ok_and(|captured| captured.dispatch().WskSocketConnect.is_some())
    }

    /// Run-down protection for one call through the dispatch table.
    ///
    /// # Errors
    /// [`Error::ProviderUnavailable`] (`STATUS_DEVICE_NOT_READY`) once the
    /// capture has been released by deregistration.
    pub(crate) fn enter(&self) -> Result<Captured<'_>> {
        let shared = self.shared();
        if shared.rundown.acquire() {
            Ok(Captured { shared })
        } else {
            Err(Error::ProviderUnavailable(NtStatus::DEVICE_NOT_READY))
        }
    }

    pub(crate) const fn registration(&self) -> &RegistrationRef {
        &self.shared().registration
    }
}

/// A call inside the provider through a capture (run-down protection held).
pub struct Captured<'a> {
    shared: &'a CaptureBlock,
}

impl Captured<'_> {
    pub(crate) const fn dispatch(&self) -> &WSK_PROVIDER_DISPATCH {
        // SAFETY: valid until the capture is released, which the run-down
        // protection held by `self` prevents.
        unsafe { &*self.shared.npi.Dispatch }
    }

    pub(crate) const fn client(&self) -> *mut WSK_CLIENT {
        self.shared.npi.Client
    }
}

impl Drop for Captured<'_> {
    fn drop(&mut self) {
        if self.shared.rundown.release() {
            // Deregistration began while this call was inside: the last one
            // out releases the capture.
            end_capture(self.shared);
        }
    }
}

/// `WskReleaseProviderNPI`, by the one party the run-down chose.
fn end_capture(shared: &CaptureBlock) {
    // SAFETY: the block's own node, only ever linked in its registration.
    unsafe { shared.registration.untrack(NonNull::from(&shared.node)) };
    // SAFETY: one release for the one capture; no call is inside (run-down);
    // <= DISPATCH_LEVEL.
    unsafe { sys::WskReleaseProviderNPI(shared.registration.registration()) };
}

impl Clone for Provider {
    fn clone(&self) -> Self {
        self.shared().refs.fetch_add(1, Ordering::Relaxed);
        // INVARIANT: the reference just taken.
        Self { block: self.block }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        release_capture(self.block);
    }
}

/// Drops one reference to a capture; the last one releases the capture (if
/// deregistration has not) and frees the block.
fn release_capture(block: NonNull<CaptureBlock>) {
    // SAFETY: the caller holds a reference.
    let shared = unsafe { block.as_ref() };
    if shared.refs.fetch_sub(1, Ordering::AcqRel) != 1 {
        return;
    }
    if shared.rundown.begin() == Begin::EndNow {
        end_capture(shared);
    }
    // SAFETY: the last reference to a block from `PoolBox::into_raw`; it was
    // unlinked when the capture ended.
    drop(unsafe { PoolBox::from_raw(block, CAPTURE_TAG) });
}

/// The sweep's `retain` for a capture.
///
/// # Safety
/// `node` is the node of an allocated `CaptureBlock`, under the lock.
unsafe fn retain_capture(node: NonNull<Node>) -> bool {
    // SAFETY: per the contract; the node is the first field.
    let shared = unsafe { node.cast::<CaptureBlock>().as_ref() };
    try_retain(&shared.refs)
}

/// The sweep's `force` for a capture: begins its run-down, releasing it now
/// if no call is inside.
///
/// # Safety
/// `node` is the node of a `CaptureBlock` retained by the sweep.
unsafe fn force_capture(node: NonNull<Node>) -> bool {
    let block = node.cast::<CaptureBlock>();
    // SAFETY: retained, so alive.
    let shared = unsafe { block.as_ref() };
    let forced = match shared.rundown.begin() {
        Begin::EndNow => {
            end_capture(shared);
            true
        }
        Begin::EndedByLastCall => true,
        Begin::Lost => false,
    };
    release_capture(block);
    forced
}

impl core::fmt::Debug for Provider {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Provider")
            .field("version", &self.version())
            .finish_non_exhaustive()
    }
}

/// A counted reference to a registration block.
///
/// # Invariants
/// `block` is live and this value owns one count of `refs`.
pub struct RegistrationRef {
    block: NonNull<RegistrationBlock>,
}

// SAFETY: the block's shared state is atomic, behind its spin lock, or the
// kernel's.
unsafe impl Send for RegistrationRef {}
// SAFETY: as above.
unsafe impl Sync for RegistrationRef {}

impl RegistrationRef {
    const fn get(&self) -> &RegistrationBlock {
        // SAFETY: live while we hold a count (invariant).
        unsafe { self.block.as_ref() }
    }

    const fn registration(&self) -> *mut WSK_REGISTRATION {
        self.get().registration.get()
    }

    /// `WskCaptureProviderNPI` into a new capture block, tracked.
    fn capture(&self, wait: u32) -> Result<Provider> {
        if self.get().draining.load(Ordering::SeqCst) {
            return Err(Error::ProviderUnavailable(NtStatus::DEVICE_NOT_READY));
        }
        let registration = self.clone();
        let init = |slot: *mut CaptureBlock| {
            // SAFETY: a fresh block of the right size and alignment.
            unsafe {
                slot.write(CaptureBlock {
                    node: Node::new(Provider::KIND),
                    refs: AtomicUsize::new(1),
                    rundown: RunDown::new(),
                    npi: WSK_PROVIDER_NPI {
                        Client: ptr::null_mut(),
                        Dispatch: ptr::null(),
                    },
                    version: WskVersion { major: 0, minor: 0 },
                    registration,
                });
            };
        };
        // SAFETY: `init` initialises every field.
        let block = unsafe { PoolBox::new_with(CAPTURE_TAG, init)? }.into_raw();
        // SAFETY: ours alone until tracked below.
        let shared = unsafe { &mut *block.as_ptr() };
        // SAFETY: a registered block; the caller's token proves the IRQL the
        // wait mode needs; the output is the capture block's.
        let status = NtStatus(unsafe {
            sys::WskCaptureProviderNPI(self.registration(), wait, &raw mut shared.npi)
        });
        if let Err(error) = status.ok() {
            // Never captured: nothing to release.
            let _ = shared.rundown.begin();
            // SAFETY: the block from `into_raw` above, not shared.
            drop(unsafe { PoolBox::from_raw(block, CAPTURE_TAG) });
            return Err(error);
        }
        // SAFETY: a successful capture fills in a dispatch table that stays
        // valid until the matching release.
        shared.version = WskVersion::from(unsafe { (*shared.npi.Dispatch).Version });
        // INVARIANT: the one reference counted at creation.
        let provider = Provider { block };
        // SAFETY: the node lives in the block, unlinked before it is freed.
        if !unsafe { self.track(NonNull::from(&provider.shared().node)) } {
            // Deregistration swept meanwhile: release at once.
            drop(provider);
            return Err(Error::ProviderUnavailable(NtStatus::DEVICE_NOT_READY));
        }
        Ok(provider)
    }

    /// Counts an operation about to put an IRP in flight; refused once
    /// deregistration has begun.
    pub(crate) fn begin_operation(&self) -> Result<InFlight> {
        let block = self.get();
        block.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight {
            block: self.clone(),
        };
        if block.draining.load(Ordering::SeqCst) {
            drop(guard);
            return Err(Error::ProviderUnavailable(NtStatus::DEVICE_NOT_READY));
        }
        Ok(guard)
    }

    /// Counts clean-up work (closing a socket nobody took) even while
    /// deregistration drains: draining then waits for it too.
    pub(crate) fn begin_cleanup(&self) -> InFlight {
        self.get().in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight {
            block: self.clone(),
        }
    }

    /// Lists `node` for deregistration's sweep; `false` if the sweep has
    /// run already (the caller ends the object itself).
    ///
    /// # Safety
    /// `node` is alive and unlinked, and is unlinked (with
    /// [`untrack`](Self::untrack)) before it is freed.
    pub(crate) unsafe fn track(&self, node: NonNull<Node>) -> bool {
        // SAFETY: forwarded contract.
        unsafe { self.get().tracked.lock().push(node) }
    }

    /// Takes `node` off the list (if the sweep has not).
    ///
    /// # Safety
    /// `node` is alive, and linked in this registration's list or not at
    /// all.
    pub(crate) unsafe fn untrack(&self, node: NonNull<Node>) {
        // SAFETY: forwarded contract.
        unsafe { self.get().tracked.lock().remove(node) };
    }

    /// Runs `f` with the device object completion routines are held by, if
    /// the registration (still) has one, under run-down protection (a few
    /// atomic instructions; nothing when the registration never had a
    /// device).
    pub(crate) fn with_device<R>(&self, f: impl FnOnce(Option<&DeviceObject>) -> R) -> R {
        let block = self.get();
        if !block.has_device || !block.device_rundown.acquire() {
            return f(None);
        }
        // SAFETY: inside the run-down: nobody takes the device meanwhile.
        let result = f(unsafe { (*block.device.get()).as_ref() });
        if block.device_rundown.release() {
            // Deregistration began while we were inside: the last reader
            // out lets go of the device.
            // SAFETY: the run-down ended and we were the last inside: the
            // slot is ours alone.
            drop(unsafe { (*block.device.get()).take() });
        }
        result
    }

    /// Whether the provider said it has no working `entry`.
    pub(crate) fn is_missing(&self, entry: Missing) -> bool {
        self.get().missing.load(Ordering::Relaxed) & entry as u8 != 0
    }

    /// Remembers what `result` says of `entry`: a "not implemented" or "not
    /// supported" answer means the provider has no working one.
    pub(crate) fn note<T>(&self, entry: Missing, result: &Result<T>) {
        if matches!(result, Err(Error::NotSupported(_))) {
            self.get().missing.fetch_or(entry as u8, Ordering::Relaxed);
        }
    }

    /// A closed socket's block set aside for reuse, if there is one.
    pub(crate) fn reusable(&self) -> Option<IdleSocket> {
        self.get().reusable.lock().sockets.take()
    }

    /// Sets a closed socket's block aside for the next socket, or frees it
    /// (outside the lock) when the registration keeps no more or is
    /// deregistering.
    pub(crate) fn set_aside(&self, socket: IdleSocket) {
        let refused = self.get().reusable.lock().sockets.put(socket);
        drop(refused);
    }

    /// The close operation held in reserve, if it is there.
    pub(crate) fn take_reserve(&self) -> Option<Operation<OwnCall>> {
        self.get().reserve.take()
    }

    /// A stand-in close operation that was not needed after all: kept in
    /// reserve if the reserve is empty, freed otherwise.
    pub(crate) fn give_back_reserve(&self, op: Operation<OwnCall>) {
        drop(self.get().reserve.keep(op));
    }

    /// Puts a close operation in reserve again if the last one was used
    /// (an allocation; failing is fine: it is tried again next time).
    pub(crate) fn refill_reserve(&self) {
        let reserve = &self.get().reserve;
        if reserve.is_empty()
            && let Ok(op) = Operation::new(OwnCall::stand_in())
        {
            drop(reserve.keep(op));
        }
    }

    /// Counts an operation left quarantined (see `Protocol::reclaim`).
    pub(crate) fn quarantine(&self) {
        self.get().quarantined.fetch_add(1, Ordering::Relaxed);
    }
}

impl Clone for RegistrationRef {
    fn clone(&self) -> Self {
        self.get().refs.fetch_add(1, Ordering::Relaxed);
        // INVARIANT: the count just taken.
        Self { block: self.block }
    }
}

impl Drop for RegistrationRef {
    fn drop(&mut self) {
        if self.get().refs.fetch_sub(1, Ordering::AcqRel) == 1 {
            // SAFETY: the last count: nobody else refers to the block, and
            // WskRegister either failed or WskDeregister has returned, so the
            // WSK subsystem no longer does either.
            drop(unsafe { PoolBox::from_raw(self.block, PoolTag::REGISTRATION) });
        }
    }
}

/// One operation in flight against a registration: deregistration waits
/// for all of them. Dropped by the operation's completion, at any IRQL
/// <= `DISPATCH_LEVEL`.
pub struct InFlight {
    block: RegistrationRef,
}

impl InFlight {
    /// The registration it counts against.
    pub(crate) const fn registration(&self) -> &RegistrationRef {
        &self.block
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let block = self.block.get();
        if block.in_flight.fetch_sub(1, Ordering::SeqCst) == 1
            && block.draining.load(Ordering::SeqCst)
        {
            block.drained.set();
        }
    }
}

#[cfg(all(test, wsk_emulator))]
#[path = "registration_tests.rs"]
mod tests;
