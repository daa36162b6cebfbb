//! The device: `\Device\WskSample`, linked as `\DosDevices\WskSample`
//! (names from `wsk_demo::request`), created by the add-device callback
//! with what it serves with in its context, and torn down by its cleanup
//! callback.
//!
//! The context holds the [`Service`]: the WSK registration (made with the
//! device's WDM object, so that every completion routine holds the device
//! and with it the driver image), the captured provider, and the executor
//! that runs the requests' tasks on the device's work items. The cleanup
//! callback shuts the executor down (aborting every task, which completes
//! its request with `STATUS_CANCELLED`), then deregisters, which ends
//! whatever is still open; only then does the framework delete the device.

use core::cell::UnsafeCell;
use core::mem::{MaybeUninit, size_of};
use core::ops::Deref;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use core::time::Duration;

use wdk::nt_success;
use wdk_sys::{
    FILE_DEVICE_UNKNOWN, NTSTATUS, PWDFDEVICE_INIT, STATUS_INVALID_DEVICE_STATE, STATUS_SUCCESS,
    WDFDEVICE, WDFDRIVER, WDFOBJECT, call_unsafe_wdf_function_binding,
};
use wsk::{DeviceObject, Executor, NtStatus, PassiveLevel, Provider, Registration};
use wsk_demo::request::{DEVICE_NAME, LINK_NAME, USER_NAME};

use crate::log;
use crate::queue;
use crate::wdf::{self, ContextType};

/// How long the add-device callback waits for the WSK subsystem.
const CAPTURE_WAIT: Duration = Duration::from_secs(5);

/// How long the cleanup callback waits for the requests' tasks to end.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(10);

/// `\Device\WskSample` as UTF-16.
static DEVICE_NAME_W: [u16; DEVICE_NAME.len()] = wdf::wide(DEVICE_NAME);

/// `\DosDevices\WskSample` as UTF-16.
static LINK_NAME_W: [u16; LINK_NAME.len()] = wdf::wide(LINK_NAME);

/// Who may open the device: SYSTEM and Administrators, all access
/// (wdmsec.h's `SDDL_DEVOBJ_SYS_ALL_ADM_ALL`). The probe runs elevated.
const SDDL: &str = "D:P(A;;GA;;;SY)(A;;GA;;;BA)";

/// [`SDDL`] as UTF-16.
static SDDL_W: [u16; SDDL.len()] = wdf::wide(SDDL);

/// What the device serves with.
pub struct Service {
    /// Deregistered by the cleanup callback, after the executor's shutdown.
    registration: Registration,
    /// `None` when the provider could not be captured: requests then answer
    /// `STATUS_DEVICE_NOT_READY`.
    pub provider: Option<Provider>,
    /// Runs the requests' tasks on the device's work items.
    pub executor: Executor,
}

/// The device context. The framework allocates it zeroed, which reads as
/// "not serving": `ready` false, `service` uninitialised.
pub struct DeviceContext {
    /// Whether `service` is initialised and may be used.
    ready: AtomicBool,
    /// Dispatch routines using `service` now; the cleanup callback waits
    /// for them.
    dispatching: AtomicUsize,
    service: UnsafeCell<MaybeUninit<Service>>,
}

/// The device context's type (`WDF_DECLARE_CONTEXT_TYPE`). In `.data`, as
/// the C macro places it.
// SAFETY: `.data` is the image's ordinary writable data section; nothing
// else is placed by this name.
#[unsafe(link_section = ".data")]
pub static DEVICE_CONTEXT_TYPE: ContextType = ContextType::new(
    c"WskSampleDeviceContext",
    size_of::<DeviceContext>(),
    &DEVICE_CONTEXT_TYPE,
);

impl DeviceContext {
    /// The context of `device`.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    ///
    /// # Safety
    /// `device` is a live framework device created with
    /// [`DEVICE_CONTEXT_TYPE`]; the reference is used only while it lives.
    pub unsafe fn of<'a>(device: WDFOBJECT) -> Option<&'a Self> {
        // SAFETY: a live framework object (the caller's contract).
        let raw = unsafe { wdf::context(device, &DEVICE_CONTEXT_TYPE) };
        // SAFETY: the framework's zeroed allocation of this type's size,
        // aligned for it (MEMORY_ALLOCATION_ALIGNMENT), live with the
        // device; all-zero is a valid `DeviceContext`; shared access only.
        unsafe { raw.cast::<Self>().as_ref() }
    }

    /// The service, for a dispatch routine: `None` before the add-device
    /// callback installed it or once the cleanup callback has begun.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    pub fn serving(&self) -> Option<Serving<'_>> {
        self.dispatching.fetch_add(1, Ordering::SeqCst);
        if self.ready.load(Ordering::SeqCst) {
            Some(Serving { context: self })
        } else {
            self.dispatching.fetch_sub(1, Ordering::SeqCst);
            None
        }
    }

    /// Installs the service, once.
    fn install(&self, service: Service) {
        // SAFETY: not ready: nobody reads `service` (see `serving`), and
        // only the add-device callback, before returning, writes it.
        unsafe { (*self.service.get()).write(service) };
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Takes the service back: no dispatch routine can use it any more
    /// when this returns. Waits for the ones using it now (they only
    /// spawn, never wait).
    fn stop(&self, passive: &PassiveLevel) -> Option<Service> {
        if !self.ready.swap(false, Ordering::SeqCst) {
            return None;
        }
        while self.dispatching.load(Ordering::SeqCst) != 0 {
            let _ = wsk::block_on(passive, wsk::sleep(Duration::from_millis(1)));
        }
        // SAFETY: initialised (it was ready); no dispatch routine uses it
        // (the count above, with `serving`'s SeqCst order); read once,
        // since `ready` is now false for good.
        Some(unsafe { self.service.get().cast::<Service>().read() })
    }

    /// [`stop`](Self::stop) without waiting, for a cleanup callback above
    /// `PASSIVE_LEVEL` (which the framework does not do for devices).
    fn stop_now(&self) -> Option<Service> {
        if !self.ready.swap(false, Ordering::SeqCst) || self.dispatching.load(Ordering::SeqCst) != 0
        {
            // Something may still use it: leave it (and the image) be.
            return None;
        }
        // SAFETY: as in `stop`, with no dispatch routine counted.
        Some(unsafe { self.service.get().cast::<Service>().read() })
    }
}

/// A dispatch routine's use of the [`Service`]; the cleanup callback waits
/// for it to end.
pub struct Serving<'a> {
    context: &'a DeviceContext,
}

impl Deref for Serving<'_> {
    type Target = Service;

    fn deref(&self) -> &Service {
        // SAFETY: ready when this was made, and `stop` does not take the
        // service while this is counted in `dispatching`.
        unsafe { &*self.context.service.get().cast::<Service>() }
    }
}

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        self.context.dispatching.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `EvtDriverDeviceAdd`: creates the device for `root\WskSampleKmdf`.
///
/// # Safety
/// Called by the framework at `PASSIVE_LEVEL` with a device init structure
/// that it owns until `WdfDeviceCreate` succeeds.
pub unsafe extern "C" fn evt_driver_device_add(
    _driver: WDFDRIVER,
    device_init: PWDFDEVICE_INIT,
) -> NTSTATUS {
    // SAFETY: as for this callback.
    match unsafe { add_device(device_init) } {
        Ok(()) => STATUS_SUCCESS,
        Err(status) => {
            log!("cannot add the device: {}", NtStatus(status));
            status
        }
    }
}

/// Names the device, creates it with its context and cleanup callback,
/// links it, creates the queue, then registers with WSK, captures the
/// provider and starts the executor.
///
/// # Errors
/// The status of the first step that failed. A device already created is
/// then deleted by the framework (its cleanup callback finds nothing to
/// tear down: the service is installed last).
///
/// # Safety
/// As for [`evt_driver_device_add`].
unsafe fn add_device(mut device_init: PWDFDEVICE_INIT) -> Result<(), NTSTATUS> {
    let passive = PassiveLevel::check().map_err(|_| STATUS_INVALID_DEVICE_STATE)?;
    let name = wdf::unicode(&DEVICE_NAME_W);
    // SAFETY: the framework's device init, before WdfDeviceCreate; the
    // framework copies the name.
    check(unsafe {
        call_unsafe_wdf_function_binding!(WdfDeviceInitAssignName, device_init, &raw const name)
    })?;
    // SAFETY: as above.
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceInitSetDeviceType,
            device_init,
            FILE_DEVICE_UNKNOWN
        );
    }
    let sddl = wdf::unicode(&SDDL_W);
    // SAFETY: as above; the framework copies the string.
    check(unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceInitAssignSDDLString,
            device_init,
            &raw const sddl
        )
    })?;
    let mut request_attributes = wdf::attributes(&queue::REQUEST_CONTEXT_TYPE, None);
    // SAFETY: as above; the framework copies the attributes.
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceInitSetRequestAttributes,
            device_init,
            &raw mut request_attributes
        );
    }
    let mut attributes = wdf::attributes(&DEVICE_CONTEXT_TYPE, Some(evt_device_cleanup));
    let mut device: WDFDEVICE = ptr::null_mut();
    // SAFETY: the device init (consumed on success, freed by the framework
    // on failure), attributes with the device context and cleanup
    // callback, and where to put the handle; PASSIVE_LEVEL.
    check(unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceCreate,
            &raw mut device_init,
            &raw mut attributes,
            &raw mut device
        )
    })?;
    let link = wdf::unicode(&LINK_NAME_W);
    // SAFETY: the device just created; the framework copies the name and
    // deletes the link with the device.
    check(unsafe {
        call_unsafe_wdf_function_binding!(WdfDeviceCreateSymbolicLink, device, &raw const link)
    })?;
    queue::create(device)?;
    let service = start(device, &passive)?;
    // SAFETY: the device just created with that context type.
    let context = unsafe { DeviceContext::of(device.cast()) }.ok_or(STATUS_INVALID_DEVICE_STATE)?;
    let captured = service.provider.is_some();
    context.install(service);
    log!(
        "serving {USER_NAME}: provider {}; completions held by the device",
        if captured { "captured" } else { "not captured" }
    );
    Ok(())
}

/// Registers with WSK with the device's WDM object (every completion
/// routine then holds it), captures the provider, and starts the executor
/// on the same device.
///
/// # Errors
/// What registering or starting the executor failed with; a failed
/// capture is logged and leaves the provider out.
fn start(device: WDFDEVICE, passive: &PassiveLevel) -> Result<Service, NTSTATUS> {
    let status = |error: wsk::Error| error.status().0;
    // SAFETY: the device just created; the references taken are let go of
    // by the executor's shutdown and the deregistration, in its cleanup
    // callback.
    let object = unsafe { DeviceObject::from_wdf_device(device) }.map_err(status)?;
    let registration =
        Registration::register_with_device(passive, object.clone()).map_err(status)?;
    let provider = match registration.capture(passive, CAPTURE_WAIT) {
        Ok(provider) => Some(provider),
        Err(error) => {
            log!("cannot capture the WSK provider: {error}");
            None
        }
    };
    let executor = Executor::new(object).map_err(status)?;
    Ok(Service {
        registration,
        provider,
        executor,
    })
}

/// The device's `EvtCleanupCallback`: shuts the executor down (aborting
/// every task: each completes its request with `STATUS_CANCELLED`), lets go
/// of the provider, then deregisters (ending whatever is still open),
/// before the framework deletes the device.
///
/// # Safety
/// Called by the framework with the device being deleted.
unsafe extern "C" fn evt_device_cleanup(device: WDFOBJECT) {
    // SAFETY: the device being deleted: its context is still there.
    let Some(context) = (unsafe { DeviceContext::of(device) }) else {
        return;
    };
    let Ok(passive) = PassiveLevel::check() else {
        // The framework cleans devices up at PASSIVE_LEVEL; if not, nothing
        // may wait: abort the tasks, end what can end without waiting.
        log!("device cleanup above PASSIVE_LEVEL: tasks aborted without waiting");
        drop(context.stop_now());
        return;
    };
    let Some(Service {
        registration,
        provider,
        executor,
    }) = context.stop(&passive)
    else {
        return;
    };
    let shutdown = executor.shutdown(&passive, SHUTDOWN_BOUND);
    drop(provider);
    let report = registration.deregister(&passive);
    log!(
        "stopped serving: requests aborted={} unfinished={}; deregistration: {report}",
        shutdown.aborted_tasks,
        shutdown.unfinished_tasks
    );
}

/// A WDF call's status as a `Result`.
const fn check(status: NTSTATUS) -> Result<(), NTSTATUS> {
    if nt_success(status) {
        Ok(())
    } else {
        Err(status)
    }
}
