//! The WSK client registration and the captured provider NPI, as RAII types.
//!
//! ```no_run
//! # fn demo() -> Result<(), wsk::Error> {
//! use core::time::Duration;
//! let passive = wsk::PassiveLevel::check().expect("a system thread runs at PASSIVE_LEVEL");
//! let registration = wsk::Registration::register(&passive)?;
//! {
//!     let provider = registration.capture(&passive, Duration::from_secs(5))?;
//!     let _ = provider.version();
//! } // released here
//! registration.deregister(&passive);
//! # Ok(()) }
//! ```
//!
//! A provider NPI cannot outlive the registration it was captured from:
//!
//! ```compile_fail
//! # use core::time::Duration;
//! let passive = wsk::PassiveLevel::check().unwrap();
//! let registration = wsk::Registration::register(&passive).unwrap();
//! let provider = registration.capture(&passive, Duration::from_secs(1)).unwrap();
//! registration.deregister(&passive); // error: `registration` is still borrowed
//! drop(provider);
//! ```

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use core::time::Duration;

use crate::abi::{
    MAKE_WSK_VERSION, USHORT, WSK_CLIENT, WSK_CLIENT_DISPATCH, WSK_CLIENT_NPI, WSK_NO_WAIT,
    WSK_PROVIDER_DISPATCH, WSK_PROVIDER_NPI, WSK_REGISTRATION,
};
use crate::kernel::event::{EventKind, RawEvent};
use crate::kernel::irql::{AtMostDispatch, Irql, PassiveLevel};
use crate::kernel::pool::{PoolBox, PoolTag};
use crate::{Error, NtStatus, Result, sys};

/// How often deregistration looks again for timers still alive.
const TIMER_POLL: Duration = Duration::from_millis(10);

/// The WSK version this library asks for.
const CLIENT_VERSION: USHORT = MAKE_WSK_VERSION(1, 0);

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
/// operations whose completion routine has not yet run.
struct RegistrationBlock {
    registration: UnsafeCell<WSK_REGISTRATION>,
    dispatch: WSK_CLIENT_DISPATCH,
    npi: WSK_CLIENT_NPI,
    refs: AtomicUsize,
    in_flight: AtomicUsize,
    draining: AtomicBool,
    drained: RawEvent,
}

/// A registered WSK client (`WskRegister`). Deregister it with
/// [`deregister`](Self::deregister) at `PASSIVE_LEVEL`; dropping it does the
/// same when the thread runs at `PASSIVE_LEVEL`.
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
    /// [`Error::InsufficientResources`] when the registration block cannot
    /// be allocated; otherwise what `WskRegister` returned.
    pub fn register(_irql: &PassiveLevel) -> Result<Self> {
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
        // SAFETY: `init` initialises every field.
        let block = unsafe { PoolBox::new_with(PoolTag::REGISTRATION, init)? };
        let npi = &raw const block.npi;
        // INVARIANT: the one reference counted at creation is this one.
        let block = RegistrationRef {
            block: block.into_raw(),
        };
        // SAFETY: the client NPI and registration live in the block, which
        // outlives the registration; PASSIVE_LEVEL proved by the token.
        let status = NtStatus(unsafe { sys::WskRegister(npi, block.registration()) });
        if status.is_success() {
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
    /// not support WSK 1.0.
    pub fn capture(&self, _irql: &PassiveLevel, timeout: Duration) -> Result<Provider<'_>> {
        // 0 means WSK_NO_WAIT and 0xFFFFFFFF WSK_INFINITE_WAIT: keep clear of both.
        let millis = u32::try_from(timeout.as_millis())
            .unwrap_or(u32::MAX)
            .clamp(1, u32::MAX - 1);
        self.capture_raw(millis)
    }

    /// Captures the provider NPI only if it is available now (`WSK_NO_WAIT`).
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below (the token proves it).
    ///
    /// # Errors
    /// As [`capture`](Self::capture), without waiting.
    pub fn try_capture(&self, _irql: &AtMostDispatch) -> Result<Provider<'_>> {
        self.capture_raw(WSK_NO_WAIT)
    }

    fn capture_raw(&self, wait: u32) -> Result<Provider<'_>> {
        let mut npi = WSK_PROVIDER_NPI {
            Client: ptr::null_mut(),
            Dispatch: ptr::null(),
        };
        // SAFETY: a registered block; the caller's token proves the IRQL the
        // wait mode needs.
        let status = NtStatus(unsafe {
            sys::WskCaptureProviderNPI(self.block.registration(), wait, &raw mut npi)
        });
        status.ok()?;
        // SAFETY: a successful capture fills in a dispatch table that stays
        // valid until the matching release.
        let version = unsafe { (*npi.Dispatch).Version };
        Ok(Provider {
            block: self.block.clone(),
            npi,
            version: WskVersion::from(version),
            _registration: PhantomData,
        })
    }

    /// How many operations have an IRP in flight.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.block.get().in_flight.load(Ordering::Acquire)
    }

    /// Drains and deregisters: waits for every operation still in flight to
    /// complete (new ones are refused) and for every timer of
    /// [`sleep`](crate::sleep) and [`timeout`](crate::timeout) to be gone
    /// (drop them first), then `WskDeregister`, which itself waits until
    /// every captured NPI is released and every socket closed.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL` (the token proves it).
    pub fn deregister(mut self, irql: &PassiveLevel) {
        self.deregister_in_place(irql);
    }

    fn deregister_in_place(&mut self, irql: &PassiveLevel) {
        if core::mem::replace(&mut self.deregistered, true) {
            return;
        }
        let block = self.block.get();
        block.draining.store(true, Ordering::SeqCst);
        if block.in_flight.load(Ordering::SeqCst) != 0 {
            // The last completion sets the event (see `InFlight::drop`).
            let _ = block.drained.wait(&irql.at_most_apc(), None);
        }
        // Timers (`sleep`, `timeout`) belong to no registration: wait until
        // none is armed or still running its DPC, checking every 10 ms.
        while crate::kernel::timer::live() != 0 {
            block.drained.clear();
            let _ = block.drained.wait(&irql.at_most_apc(), Some(TIMER_POLL));
        }
        // Let every DPC queued so far return (a timer DPC, a provider's
        // completion from a DPC) before the driver's last WSK call.
        // SAFETY: PASSIVE_LEVEL, proved by the token.
        unsafe { sys::KeFlushQueuedDpcs() };
        // SAFETY: registered; PASSIVE_LEVEL proved by the token; nothing of
        // ours is in flight any more.
        unsafe { sys::WskDeregister(self.block.registration()) };
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.deregistered {
            return;
        }
        match PassiveLevel::check() {
            Ok(passive) => self.deregister_in_place(&passive),
            Err(error) => panic!(
                "wsk::Registration dropped at {}: deregistering needs PASSIVE_LEVEL ({error})",
                Irql::current()
            ),
        }
    }
}

impl core::fmt::Debug for Registration {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Registration")
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// A captured provider NPI (`WskCaptureProviderNPI`); released on drop
/// (`WskReleaseProviderNPI`, any IRQL <= `DISPATCH_LEVEL`).
///
/// # IRQL
/// Every method at `DISPATCH_LEVEL` or below.
pub struct Provider<'r> {
    block: RegistrationRef,
    npi: WSK_PROVIDER_NPI,
    version: WskVersion,
    _registration: PhantomData<&'r Registration>,
}

// SAFETY: the NPI's client handle and dispatch table may be used from any
// thread; the registration reference is atomically counted.
unsafe impl Send for Provider<'_> {}
// SAFETY: as above: WSK client-level functions are thread-safe.
unsafe impl Sync for Provider<'_> {}

impl Provider<'_> {
    /// The provider dispatch table's version.
    #[must_use]
    pub const fn version(&self) -> WskVersion {
        self.version
    }

    /// Whether the provider offers `WskSocketConnect` (decided from its
    /// dispatch table at run time).
    #[must_use]
    pub fn supports_socket_connect(&self) -> bool {
        self.dispatch().WskSocketConnect.is_some()
    }

    pub(crate) const fn dispatch(&self) -> &WSK_PROVIDER_DISPATCH {
        // SAFETY: valid from capture until release, which is our drop.
        unsafe { &*self.npi.Dispatch }
    }

    pub(crate) const fn client(&self) -> *mut WSK_CLIENT {
        self.npi.Client
    }

    pub(crate) const fn registration(&self) -> &RegistrationRef {
        &self.block
    }
}

impl Drop for Provider<'_> {
    fn drop(&mut self) {
        // SAFETY: one release for our one capture; allowed at
        // <= DISPATCH_LEVEL, where all library code runs.
        unsafe { sys::WskReleaseProviderNPI(self.block.registration()) };
    }
}

impl core::fmt::Debug for Provider<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Provider")
            .field("version", &self.version)
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

// SAFETY: the block's shared state is atomic or owned by the kernel.
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
}

impl RegistrationRef {
    /// Counts clean-up work (closing a socket nobody took) even while
    /// deregistration drains: draining then waits for it too.
    pub(crate) fn begin_cleanup(&self) -> InFlight {
        self.get().in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight {
            block: self.clone(),
        }
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
