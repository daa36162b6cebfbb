//! The device `\Device\WskSample` (`\\.\WskSample` in user mode) and the
//! requests it serves (the contract is `wsk_demo::request`).
//!
//! Each `IOCTL_WSK_SAMPLE_RUN` is parsed at once (a malformed line completes
//! with `STATUS_INVALID_PARAMETER` and its reason), then pended and run as
//! a task on the library's executor, which polls it on the device's work
//! items; the task completes the request with the result line. A cancel
//! routine aborts the task (user mode's `CancelIoEx`, or its thread ending):
//! dropping the task's future cancels its IRPs, closes its connection and
//! completes the request with `STATUS_CANCELLED`. Unloading shuts the
//! executor down, which does the same for every request still in flight,
//! then deregisters.

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicUsize, Ordering};
use core::time::Duration;

use wsk::{
    DeviceObject, Executor, JoinHandle, PassiveLevel, PoolBox, PoolTag, Provider, Registration,
};
use wsk_demo::request::{
    DEVICE_NAME, IOCTL_WSK_SAMPLE_RUN, LINK_NAME, Request, serve, write_rejection,
};

use crate::clock;
use crate::ffi::{self, DEVICE_OBJECT, DRIVER_OBJECT, IRP, NTSTATUS, UNICODE_STRING};
use crate::log::log;

/// The pool tag of the service and request blocks.
const TAG: PoolTag = PoolTag::new(*b"WskD");

/// How long unload waits for the requests' tasks to end.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(10);

/// How long `DriverEntry` waits for the WSK subsystem.
const CAPTURE_WAIT: Duration = Duration::from_secs(5);

/// What the device serves with, set up by `DriverEntry` and torn down by
/// `DriverUnload`.
struct Service {
    device: NonNull<DEVICE_OBJECT>,
    registration: Registration,
    /// `None` when the provider could not be captured: requests then
    /// answer `STATUS_DEVICE_NOT_READY`.
    provider: Option<Provider>,
    executor: Executor,
}

/// The service, or null before `start` and after `stop`.
static SERVICE: AtomicPtr<Service> = AtomicPtr::new(ptr::null_mut());
/// Dispatch routines running now (unload waits for them).
static DISPATCHING: AtomicUsize = AtomicUsize::new(0);

/// `\Device\WskSample` and `\DosDevices\WskSample` as UTF-16.
const DEVICE_NAME_W: [u16; DEVICE_NAME.len()] = wide(DEVICE_NAME);
const LINK_NAME_W: [u16; LINK_NAME.len()] = wide(LINK_NAME);

const fn wide<const N: usize>(text: &str) -> [u16; N] {
    let bytes = text.as_bytes();
    let mut out = [0; N];
    let mut i = 0;
    while i < N {
        out[i] = bytes[i] as u16;
        i += 1;
    }
    out
}

fn unicode(units: &[u16]) -> UNICODE_STRING {
    let bytes = u16::try_from(units.len() * 2).unwrap_or(u16::MAX);
    UNICODE_STRING {
        Length: bytes,
        MaximumLength: bytes,
        Buffer: units.as_ptr().cast_mut(),
    }
}

/// Whether the driver runs under Wine, whose `IoSetCompletionRoutineEx` is
/// a stub that must not be called: Wine's `ntoskrnl.exe` exports its main
/// loop for `winedevice.exe`; Windows has no such export.
fn under_wine() -> bool {
    const NAME: [u16; 23] = wide("wine_ntoskrnl_main_loop");
    let mut name = unicode(&NAME);
    // SAFETY: a valid UNICODE_STRING; PASSIVE_LEVEL (DriverEntry).
    !unsafe { ffi::MmGetSystemRoutineAddress(&raw mut name) }.is_null()
}

/// Creates the device and its symbolic link, registers with WSK (with the
/// device holding every completion routine, except under Wine), captures
/// the provider, starts the executor, and installs the dispatch routines.
///
/// # Errors
/// The status of the first step that failed; nothing is left then.
///
/// # Safety
/// `driver` is the driver object `DriverEntry` was given; `DriverEntry`
/// runs at `PASSIVE_LEVEL`.
pub unsafe fn start(driver: *mut DRIVER_OBJECT, passive: &PassiveLevel) -> Result<(), NTSTATUS> {
    let mut device_name = unicode(&DEVICE_NAME_W);
    let mut link_name = unicode(&LINK_NAME_W);
    let mut device: *mut DEVICE_OBJECT = ptr::null_mut();
    // SAFETY: the driver's object; a named, non-exclusive device of an
    // unknown type without an extension; PASSIVE_LEVEL.
    let status = unsafe {
        ffi::IoCreateDevice(
            driver,
            0,
            &raw mut device_name,
            ffi::FILE_DEVICE_UNKNOWN,
            ffi::FILE_DEVICE_SECURE_OPEN,
            0,
            &raw mut device,
        )
    };
    if status != ffi::STATUS_SUCCESS {
        return Err(status);
    }
    let device = NonNull::new(device).ok_or(ffi::STATUS_INSUFFICIENT_RESOURCES)?;
    // SAFETY: both names are valid; PASSIVE_LEVEL.
    let status = unsafe { ffi::IoCreateSymbolicLink(&raw mut link_name, &raw mut device_name) };
    if status != ffi::STATUS_SUCCESS {
        // SAFETY: the device just created, unused.
        unsafe { ffi::IoDeleteDevice(device.as_ptr()) };
        return Err(status);
    }
    let service = match build(device, passive) {
        Ok(service) => service,
        Err(status) => {
            // SAFETY: the link and the device just created, unused.
            unsafe { ffi::IoDeleteSymbolicLink(&raw mut link_name) };
            // SAFETY: as above.
            unsafe { ffi::IoDeleteDevice(device.as_ptr()) };
            return Err(status);
        }
    };
    SERVICE.store(service.into_raw().as_ptr(), Ordering::SeqCst);
    // SAFETY: the driver's object, filled in during DriverEntry.
    let major = unsafe { &mut (*driver).MajorFunction };
    let dispatch: ffi::DriverDispatch = dispatch;
    for function in [
        ffi::IRP_MJ_CREATE,
        ffi::IRP_MJ_CLOSE,
        ffi::IRP_MJ_CLEANUP,
        ffi::IRP_MJ_DEVICE_CONTROL,
    ] {
        major[function] = dispatch as *mut c_void;
    }
    Ok(())
}

fn build(
    device: NonNull<DEVICE_OBJECT>,
    passive: &PassiveLevel,
) -> Result<PoolBox<Service>, NTSTATUS> {
    // SAFETY: the device IoCreateDevice just made, live until unload.
    let object = || unsafe { DeviceObject::from_raw(device.as_ptr()) };
    let wine = under_wine();
    let registration = if wine {
        Registration::register(passive)
    } else {
        Registration::register_with_device(passive, object().map_err(|e| e.status().0)?)
    }
    .map_err(|error| error.status().0)?;
    let provider = match registration.capture(passive, CAPTURE_WAIT) {
        Ok(provider) => Some(provider),
        Err(error) => {
            log!("serving: cannot capture the WSK provider: {error}");
            None
        }
    };
    let executor = Executor::new(object().map_err(|e| e.status().0)?).map_err(|e| e.status().0)?;
    log!(
        "serving: {} completions={}",
        wsk_demo::request::USER_NAME,
        if wine {
            "plain (Wine: IoSetCompletionRoutineEx is a stub)"
        } else {
            "held-by-device"
        }
    );
    PoolBox::new(
        Service {
            device,
            registration,
            provider,
            executor,
        },
        TAG,
    )
    .map_err(|error| error.status().0)
}

/// Stops serving: no new request; every request in flight is aborted (and
/// completed with `STATUS_CANCELLED`) by the executor's shutdown; then
/// deregisters and deletes the link and the device.
///
/// # IRQL
/// `PASSIVE_LEVEL` (`DriverUnload`).
pub fn stop(passive: &PassiveLevel) {
    let Some(service) = NonNull::new(SERVICE.swap(ptr::null_mut(), Ordering::SeqCst)) else {
        return;
    };
    // A dispatch routine that loaded the service before the swap finishes
    // first (it only spawns; it never waits).
    while DISPATCHING.load(Ordering::SeqCst) != 0 {
        let _ = wsk::block_on(passive, wsk::sleep(Duration::from_millis(1)));
    }
    // SAFETY: from `start`'s `into_raw`, taken back once (swapped out).
    let service = unsafe { PoolBox::from_raw(service, TAG) };
    let Service {
        device,
        registration,
        provider,
        executor,
    } = service.into_inner();
    let shutdown = executor.shutdown(passive, SHUTDOWN_BOUND);
    drop(provider);
    let report = registration.deregister(passive);
    log!(
        "stopped serving: requests aborted={} unfinished={}; deregistration: {report}",
        shutdown.aborted_tasks,
        shutdown.unfinished_tasks
    );
    let mut link_name = unicode(&LINK_NAME_W);
    // SAFETY: the link `start` made; PASSIVE_LEVEL.
    unsafe { ffi::IoDeleteSymbolicLink(&raw mut link_name) };
    // SAFETY: the device `start` made; nothing uses it any more (the
    // executor and the registration let go of it).
    unsafe { ffi::IoDeleteDevice(device.as_ptr()) };
}

/// Every IRP of the device: create, close and cleanup succeed; a device
/// control runs a request.
///
/// # Safety
/// Called by the I/O manager with the device's IRP, at `PASSIVE_LEVEL`.
unsafe extern "system" fn dispatch(_device: *mut DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    DISPATCHING.fetch_add(1, Ordering::SeqCst);
    // SAFETY: the I/O manager's IRP, ours until completed.
    let status = unsafe { dispatch_irp(irp) };
    DISPATCHING.fetch_sub(1, Ordering::SeqCst);
    status
}

/// # Safety
/// As for [`dispatch`].
unsafe fn dispatch_irp(irp: *mut IRP) -> NTSTATUS {
    // SAFETY: the I/O manager's live IRP, the dispatch routine's alone.
    let irp_ref = unsafe { &mut *irp };
    // SAFETY: its current stack location is the driver's.
    let location = unsafe { &mut *irp_ref.Tail.CurrentStackLocation };
    if usize::from(location.MajorFunction) == ffi::IRP_MJ_CLEANUP {
        // The handle is closing: its requests still pending are cancelled.
        cancel_requests_of(location.FileObject);
    }
    if usize::from(location.MajorFunction) != ffi::IRP_MJ_DEVICE_CONTROL {
        // SAFETY: ours to complete.
        return unsafe { complete_now(irp, ffi::STATUS_SUCCESS, 0) };
    }
    // SAFETY: the union is DeviceIoControl's for this major function.
    let parameters = unsafe {
        &*location
            .Parameters
            .as_ptr()
            .cast::<ffi::DeviceIoControlParameters>()
    };
    if parameters.IoControlCode != IOCTL_WSK_SAMPLE_RUN {
        // SAFETY: ours to complete.
        return unsafe { complete_now(irp, ffi::STATUS_INVALID_DEVICE_REQUEST, 0) };
    }
    // METHOD_BUFFERED: one system buffer, holding the input, then the output.
    let buffer = irp_ref.AssociatedIrp.cast::<u8>();
    let input_len = parameters.InputBufferLength as usize;
    let output_len = parameters.OutputBufferLength as usize;
    let input: &[u8] = if buffer.is_null() {
        &[]
    } else {
        // SAFETY: the I/O manager's system buffer holds the input.
        unsafe { core::slice::from_raw_parts(buffer, input_len) }
    };
    let service = SERVICE.load(Ordering::SeqCst);
    // SAFETY: live while DISPATCHING counts this call (see `stop`).
    let Some(service) = (unsafe { service.as_ref() }) else {
        // SAFETY: ours to complete.
        return unsafe { complete_now(irp, ffi::STATUS_DEVICE_NOT_READY, 0) };
    };
    let request = match Request::parse(input) {
        Ok(request) => request,
        Err(error) => {
            log!("rejected a request: {error}");
            let written = output(buffer, output_len, |out| write_rejection(&error, out));
            // SAFETY: ours to complete.
            return unsafe { complete_now(irp, ffi::STATUS_INVALID_PARAMETER, written) };
        }
    };
    let Some(provider) = service.provider.clone() else {
        // SAFETY: ours to complete.
        return unsafe { complete_now(irp, ffi::STATUS_DEVICE_NOT_READY, 0) };
    };
    // SAFETY: ours; `pend` takes it over.
    unsafe {
        pend(
            irp,
            buffer,
            output_len,
            &service.executor,
            provider,
            request,
        )
    }
}

/// Writes into the system buffer's output part; returns the bytes written.
fn output(buffer: *mut u8, capacity: usize, write: impl FnOnce(&mut [u8]) -> usize) -> usize {
    if buffer.is_null() || capacity == 0 {
        return 0;
    }
    // SAFETY: the system buffer holds `capacity` bytes of output.
    let out = unsafe { core::slice::from_raw_parts_mut(buffer, capacity) };
    write(out)
}

/// Completes an IRP the dispatch routine did not pend.
///
/// # Safety
/// `irp` is the dispatch routine's, not pended, completed once.
unsafe fn complete_now(irp: *mut IRP, status: NTSTATUS, information: usize) -> NTSTATUS {
    // SAFETY: ours until completed.
    let irp_ref = unsafe { &mut *irp };
    irp_ref.IoStatus.Status = status;
    irp_ref.IoStatus.Information = information;
    // SAFETY: completed once, here.
    unsafe { ffi::IofCompleteRequest(irp, 0) };
    status
}

/// One pended request, shared by its task, its cancel routine and the
/// dispatch routine that set it up.
///
/// # Invariants
/// `refs` counts those holders; `irp` is pended until `completed` is set,
/// and completed exactly once, by `complete`.
struct Pending {
    refs: AtomicUsize,
    irp: *mut IRP,
    /// The handle's file object: a cleanup of that handle cancels it.
    file: *mut c_void,
    /// Links in the list of pending requests, under the cancel spin lock.
    links: UnsafeCell<Links>,
    buffer: *mut u8,
    output_len: usize,
    start_us: u128,
    /// The task, set once before `published`.
    task: UnsafeCell<Option<JoinHandle<()>>>,
    published: AtomicBool,
    cancelled: AtomicBool,
    completed: AtomicBool,
    /// The status a task dropped before it finished completes with.
    dropped_status: AtomicI32,
}

/// A pending request's place in [`PENDING`], guarded by the cancel spin lock.
struct Links {
    prev: *mut Pending,
    next: *mut Pending,
    linked: bool,
}

/// Requests pended and not yet completed (the head of a list through
/// `Pending::links`), touched only under the cancel spin lock.
static PENDING: AtomicPtr<Pending> = AtomicPtr::new(ptr::null_mut());

/// Holds the I/O manager's cancel spin lock; releases it on drop.
struct CancelLock(u8);

impl CancelLock {
    fn acquire() -> Self {
        let mut irql = 0;
        // SAFETY: at or below DISPATCH_LEVEL; released by the drop.
        unsafe { ffi::IoAcquireCancelSpinLock(&raw mut irql) };
        Self(irql)
    }
}

impl Drop for CancelLock {
    fn drop(&mut self) {
        // SAFETY: acquired by `acquire`, released once.
        unsafe { ffi::IoReleaseCancelSpinLock(self.0) };
    }
}

/// The links of `pending`.
///
/// # Safety
/// The cancel spin lock is held; `pending` is live; no other reference to
/// its links is in use.
unsafe fn links_of<'a>(pending: *mut Pending) -> &'a mut Links {
    // SAFETY: live per the contract.
    let pending = unsafe { &*pending };
    // SAFETY: under the lock, nobody else touches the links.
    unsafe { &mut *pending.links.get() }
}

/// Links `pending` into the list.
///
/// # Safety
/// The cancel spin lock is held; `pending` is live and unlinked, and stays
/// live until unlinked.
unsafe fn link(pending: *mut Pending) {
    let head = PENDING.load(Ordering::Relaxed);
    // SAFETY: per the contract.
    let links = unsafe { links_of(pending) };
    links.prev = ptr::null_mut();
    links.next = head;
    links.linked = true;
    if !head.is_null() {
        // SAFETY: a linked block is live; under the lock.
        unsafe { links_of(head) }.prev = pending;
    }
    PENDING.store(pending, Ordering::Relaxed);
}

/// Unlinks `pending` if linked.
///
/// # Safety
/// The cancel spin lock is held; `pending` is live.
unsafe fn unlink(pending: *mut Pending) {
    // SAFETY: per the contract.
    let links = unsafe { links_of(pending) };
    if !links.linked {
        return;
    }
    let (prev, next) = (links.prev, links.next);
    links.linked = false;
    if prev.is_null() {
        PENDING.store(next, Ordering::Relaxed);
    } else {
        // SAFETY: a linked neighbour is live; under the lock.
        unsafe { links_of(prev) }.next = next;
    }
    if !next.is_null() {
        // SAFETY: as above.
        unsafe { links_of(next) }.prev = prev;
    }
}

/// `IRP_MJ_CLEANUP`: the handle is closing; cancels its requests still
/// pending (their tasks complete them with `STATUS_CANCELLED`).
fn cancel_requests_of(file: *mut c_void) {
    let _lock = CancelLock::acquire();
    let mut current = PENDING.load(Ordering::Relaxed);
    while !current.is_null() {
        // SAFETY: a linked block is live; under the lock.
        let pending = unsafe { &*current };
        if pending.file == file {
            cancel_task(pending);
        }
        // SAFETY: as above.
        current = unsafe { links_of(current) }.next;
    }
}

// SAFETY: the IRP and buffer are handed between threads on purpose (the
// I/O manager allows any thread to complete a pended IRP); the task handle
// is written once before `published` and only read after; the links are
// touched only under the cancel spin lock.
#[allow(clippy::non_send_fields_in_send_ty, reason = "see the SAFETY comment")]
unsafe impl Send for Pending {}
// SAFETY: as above.
unsafe impl Sync for Pending {}

/// A counted reference to a [`Pending`] in pool.
struct PendingRef(NonNull<Pending>);

// SAFETY: see `Pending`.
unsafe impl Send for PendingRef {}

impl PendingRef {
    const fn get(&self) -> &Pending {
        // SAFETY: live while a reference is held.
        unsafe { self.0.as_ref() }
    }

    fn clone_ref(&self) -> Self {
        self.get().refs.fetch_add(1, Ordering::Relaxed);
        Self(self.0)
    }

    /// Completes the request, once: takes the IRP back from its cancel
    /// routine and the list of pending requests, writes the output, and
    /// completes it. A second call touches nothing of the IRP, which may be
    /// gone.
    fn complete(&self, status: NTSTATUS, write: impl FnOnce(&mut [u8]) -> usize) {
        let pending = self.get();
        if pending.completed.swap(true, Ordering::AcqRel) {
            return;
        }
        {
            // Under the cancel lock: a cancel routine already called runs
            // to its end before the IRP can go (it releases the lock last).
            let _lock = CancelLock::acquire();
            // SAFETY: a pended IRP, not completed (the flag above).
            let field = unsafe { &raw mut (*pending.irp).CancelRoutine };
            // SAFETY: IoSetCancelRoutine(irp, NULL): an atomic store on the
            // pointer-sized field, as every access to it is.
            let field = unsafe { AtomicPtr::<c_void>::from_ptr(field.cast()) };
            field.store(ptr::null_mut(), Ordering::Release);
            // SAFETY: under the lock; our live block.
            unsafe { unlink(self.0.as_ptr()) };
        }
        let written = output(pending.buffer, pending.output_len, write);
        // SAFETY: pended, completed once (the flag above): ours until then.
        let irp = unsafe { &mut *pending.irp };
        irp.IoStatus.Status = status;
        irp.IoStatus.Information = written;
        // SAFETY: as above.
        unsafe { ffi::IofCompleteRequest(pending.irp, 0) };
    }
}

impl Drop for PendingRef {
    fn drop(&mut self) {
        if self.get().refs.fetch_sub(1, Ordering::AcqRel) == 1 {
            // SAFETY: the last reference to a block from `into_raw`.
            drop(unsafe { PoolBox::from_raw(self.0, TAG) });
        }
    }
}

/// Held by the task: completes the request with its result line, or, if the
/// task is dropped before it finished (aborted by a cancel, a cleanup or
/// unload), with `STATUS_CANCELLED`.
struct Completion(Option<PendingRef>);

impl Completion {
    /// Completes with the task's result; the drop then does nothing.
    fn finish(mut self, status: NTSTATUS, write: impl FnOnce(&mut [u8], u128) -> usize) {
        if let Some(pending) = self.0.take() {
            let elapsed_us = clock::now_us().saturating_sub(pending.get().start_us);
            pending.complete(status, |out| write(out, elapsed_us));
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(pending) = self.0.take() {
            let status = pending.get().dropped_status.load(Ordering::Acquire);
            pending.complete(status, |_| 0);
        }
    }
}

/// Pends `irp` and spawns its task.
///
/// # Safety
/// `irp` is the dispatch routine's, not completed; `buffer` its system
/// buffer with `output_len` bytes of output.
unsafe fn pend(
    irp: *mut IRP,
    buffer: *mut u8,
    output_len: usize,
    executor: &Executor,
    provider: Provider,
    request: Request,
) -> NTSTATUS {
    // SAFETY: the dispatch routine's IRP, not visible to anyone else yet.
    let location = unsafe { (*irp).Tail.CurrentStackLocation };
    // SAFETY: its current location is the driver's.
    let file = unsafe { (*location).FileObject };
    let block = Pending {
        refs: AtomicUsize::new(1),
        irp,
        file,
        links: UnsafeCell::new(Links {
            prev: ptr::null_mut(),
            next: ptr::null_mut(),
            linked: false,
        }),
        buffer,
        output_len,
        start_us: clock::now_us(),
        task: UnsafeCell::new(None),
        published: AtomicBool::new(false),
        cancelled: AtomicBool::new(false),
        completed: AtomicBool::new(false),
        dropped_status: AtomicI32::new(ffi::STATUS_INSUFFICIENT_RESOURCES),
    };
    let Ok(block) = PoolBox::new(block, TAG) else {
        // SAFETY: not pended yet.
        return unsafe { complete_now(irp, ffi::STATUS_INSUFFICIENT_RESOURCES, 0) };
    };
    let pending = PendingRef(block.into_raw());
    {
        // SAFETY: the dispatch routine's IRP, not completed, not yet
        // visible to a cancel routine.
        let irp_ref = unsafe { &mut *irp };
        // SAFETY: its current stack location is the driver's:
        // IoMarkIrpPending.
        unsafe { (*irp_ref.Tail.CurrentStackLocation).Control |= ffi::SL_PENDING_RETURNED };
        irp_ref.Tail.DriverContext[0] = pending.0.as_ptr().cast();
    }
    {
        // Listed (for a cleanup of its handle) and given its cancel routine
        // under the cancel lock; from here on, only raw accesses: the I/O
        // manager may touch the IRP.
        let _lock = CancelLock::acquire();
        // SAFETY: under the lock; the block lives until `complete` unlinks
        // it (the completion's reference, taken below, outlives that).
        unsafe { link(pending.0.as_ptr()) };
        // SAFETY: a live IRP: only the field's address is taken.
        let field = unsafe { &raw mut (*irp).CancelRoutine };
        // SAFETY: a live pointer-sized field: IoSetCancelRoutine.
        let field = unsafe { AtomicPtr::<c_void>::from_ptr(field.cast()) };
        let routine: unsafe extern "system" fn(*mut c_void, *mut IRP) = cancel;
        field.store(routine as *mut c_void, Ordering::SeqCst);
        // SAFETY: a live IRP: only the flag's address is taken.
        let flag = unsafe { &raw const (*irp).Cancel };
        // SAFETY: the flag, which IoCancelIrp may write: read volatile.
        if unsafe { ptr::read_volatile(flag) } != 0 {
            // Cancelled before the routine was set: it may never be called.
            pending.get().cancelled.store(true, Ordering::SeqCst);
        }
    }
    let completion = Completion(Some(pending.clone_ref()));
    let task = executor.spawn(async move {
        let served = serve(provider, request).await;
        completion.finish(ffi::STATUS_SUCCESS, |out, elapsed_us| {
            served.write_line(elapsed_us, out)
        });
    });
    let Ok(task) = task else {
        // The future was dropped: its completion completed the request with
        // STATUS_INSUFFICIENT_RESOURCES.
        return ffi::STATUS_PENDING;
    };
    pending
        .get()
        .dropped_status
        .store(ffi::STATUS_CANCELLED, Ordering::Release);
    // SAFETY: written once, before `published`.
    unsafe { *pending.get().task.get() = Some(task) };
    pending.get().published.store(true, Ordering::SeqCst);
    if pending.get().cancelled.load(Ordering::SeqCst) {
        abort(pending.get());
    }
    ffi::STATUS_PENDING
}

/// Marks the request cancelled and aborts its task if it was published
/// (otherwise `pend` aborts it when it publishes). At or below
/// `DISPATCH_LEVEL`.
fn cancel_task(pending: &Pending) {
    pending.cancelled.store(true, Ordering::SeqCst);
    if pending.published.load(Ordering::SeqCst) {
        abort(pending);
    }
}

fn abort(pending: &Pending) {
    // SAFETY: published: the handle was written and is only read now.
    if let Some(task) = unsafe { &*pending.task.get() } {
        task.abort();
    }
}

/// The cancel routine (`CancelIoEx`, a thread ending): aborts the request's
/// task, whose completion then completes the request. Everything happens
/// under the cancel spin lock the routine is called with, released last:
/// `complete` takes that lock before the IRP (and the block) can go, and
/// no driver code runs after the release but the routine's return.
///
/// # Safety
/// Called by the I/O manager with the cancel spin lock held, for an IRP
/// `pend` set up.
unsafe extern "system" fn cancel(_device: *mut c_void, irp: *mut IRP) {
    // SAFETY: the IRP is live: it is not completed (completing takes the
    // cancel lock, held here).
    let context = unsafe { (*irp).Tail.DriverContext[0] };
    // SAFETY: set by `pend` to the request's block, which lives until the
    // IRP is completed.
    let pending = unsafe { &*context.cast::<Pending>() };
    cancel_task(pending);
    // SAFETY: the IRP is live (see above).
    let irql = unsafe { (*irp).CancelIrql };
    // SAFETY: the cancel routine releases the lock it was called with.
    unsafe { ffi::IoReleaseCancelSpinLock(irql) };
}
