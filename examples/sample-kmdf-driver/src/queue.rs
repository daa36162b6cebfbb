//! The device's default queue (parallel) and the requests it serves (the
//! contract is `wsk_demo::request`).
//!
//! `EvtIoDeviceControl` parses the request line at once: a malformed line
//! completes with `STATUS_INVALID_PARAMETER` and its reason as output.
//! Otherwise the request is marked cancelable (`WdfRequestMarkCancelableEx`)
//! and `serve` runs as a task on the device's executor; the task completes
//! the request with the result line (`Served::write_line`) once
//! `WdfRequestUnmarkCancelable` has taken it back.
//!
//! The cancel routine aborts the task: dropping its future cancels its
//! IRPs and closes its connection, and the task's [`Completion`] then
//! completes the request with `STATUS_CANCELLED`. Because
//! `WdfRequestUnmarkCancelable` answers `STATUS_CANCELLED` once the
//! framework has called, or is about to call, the cancel routine, and the
//! request must not be completed before that routine has run, a request
//! whose cancellation raced its completion is completed by whichever of
//! the two (the task's completion, the cancel routine) comes second.

use core::cell::UnsafeCell;
use core::mem::size_of;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicUsize, Ordering};

use wdk::nt_success;
use wdk_sys::{
    _WDF_IO_QUEUE_DISPATCH_TYPE, _WDF_TRI_STATE, LARGE_INTEGER, NTSTATUS, PVOID, STATUS_CANCELLED,
    STATUS_DEVICE_NOT_READY, STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_DEVICE_REQUEST,
    STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_PARAMETER, STATUS_SUCCESS, ULONG, ULONG_PTR,
    WDF_IO_QUEUE_CONFIG, WDF_NO_OBJECT_ATTRIBUTES, WDFDEVICE, WDFQUEUE, WDFREQUEST,
    call_unsafe_wdf_function_binding, ntddk::KeQueryPerformanceCounter,
};
use wsk::{Executor, JoinHandle, PoolBox, Provider};
use wsk_demo::request::{IOCTL_WSK_SAMPLE_RUN, Request, serve, write_rejection};

use crate::device::DeviceContext;
use crate::wdf::{self, ContextType};
use crate::{POOL_TAG, log};

/// Per request, for the cancel routine: the pended request's block, and
/// with it one reference to it (null: none).
pub struct RequestContext {
    pending: AtomicPtr<Pending>,
}

/// The request context's type, given to every request of the device
/// (`WdfDeviceInitSetRequestAttributes`).
// SAFETY: `.data` is the image's ordinary writable data section; nothing
// else is placed by this name.
#[unsafe(link_section = ".data")]
pub static REQUEST_CONTEXT_TYPE: ContextType = ContextType::new(
    c"WskSampleRequestContext",
    size_of::<RequestContext>(),
    &REQUEST_CONTEXT_TYPE,
);

impl RequestContext {
    /// The context of `request`.
    ///
    /// # Safety
    /// `request` is a live request of the device, not completed; the
    /// reference is used only until it is completed.
    unsafe fn of<'a>(request: WDFREQUEST) -> Option<&'a Self> {
        // SAFETY: a live request (the caller's contract).
        let raw = unsafe { wdf::context(request.cast(), &REQUEST_CONTEXT_TYPE) };
        // SAFETY: the framework's zeroed allocation of this type's size,
        // live until the request is completed; all-zero is a valid
        // `RequestContext`; shared access only.
        unsafe { raw.cast::<Self>().as_ref() }
    }
}

/// Creates the device's default queue: parallel (every request is
/// presented at once; each runs as its own task), not power-managed (a
/// root-enumerated software device), with `EvtIoDeviceControl` only.
///
/// # Errors
/// What `WdfIoQueueCreate` failed with.
pub fn create(device: WDFDEVICE) -> Result<(), NTSTATUS> {
    let mut config = WDF_IO_QUEUE_CONFIG {
        Size: wdf::struct_size::<WDF_IO_QUEUE_CONFIG>(),
        DispatchType: _WDF_IO_QUEUE_DISPATCH_TYPE::WdfIoQueueDispatchParallel,
        PowerManaged: _WDF_TRI_STATE::WdfFalse,
        DefaultQueue: 1,
        EvtIoDeviceControl: Some(evt_io_device_control),
        ..WDF_IO_QUEUE_CONFIG::default()
    };
    // As WDF_IO_QUEUE_CONFIG_INIT_DEFAULT_QUEUE sets it for a parallel
    // queue: no limit (0 would present nothing).
    config.Settings.Parallel.NumberOfPresentedRequests = ULONG::MAX;
    let mut queue: WDFQUEUE = ptr::null_mut();
    // SAFETY: the device being added; a queue configuration of the right
    // size; no attributes (the device is the parent); PASSIVE_LEVEL.
    let status = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfIoQueueCreate,
            device,
            &raw mut config,
            WDF_NO_OBJECT_ATTRIBUTES,
            &raw mut queue
        )
    };
    if nt_success(status) {
        Ok(())
    } else {
        Err(status)
    }
}

/// `EvtIoDeviceControl`: runs an `IOCTL_WSK_SAMPLE_RUN` request.
///
/// # Safety
/// Called by the framework at `DISPATCH_LEVEL` or below with a request the
/// driver now owns.
unsafe extern "C" fn evt_io_device_control(
    queue: WDFQUEUE,
    request: WDFREQUEST,
    output_length: usize,
    input_length: usize,
    io_control_code: ULONG,
) {
    if io_control_code != IOCTL_WSK_SAMPLE_RUN {
        // SAFETY: the driver's request, completed once, here.
        unsafe { complete(request, STATUS_INVALID_DEVICE_REQUEST, 0) };
        return;
    }
    // SAFETY: the queue the framework called this callback for.
    let device = unsafe { call_unsafe_wdf_function_binding!(WdfIoQueueGetDevice, queue) };
    // SAFETY: the queue's device, live while its queue presents requests.
    let context = unsafe { DeviceContext::of(device.cast()) };
    let Some(service) = context.and_then(DeviceContext::serving) else {
        // SAFETY: the driver's request, completed once, here.
        unsafe { complete(request, STATUS_DEVICE_NOT_READY, 0) };
        return;
    };
    // METHOD_BUFFERED: the input and the output share the system buffer,
    // so the input is parsed (copied into pool) before anything is written.
    // SAFETY: the driver's request, not completed.
    let input = unsafe { Buffer::input(request, input_length) };
    // SAFETY: as above.
    let output = unsafe { Buffer::output(request, output_length) };
    let parsed = {
        // SAFETY: the input part of the system buffer, unchanged until the
        // request completes; nothing writes the output while this lives.
        let line = input.map_or(&[][..], |input| unsafe { input.bytes() });
        Request::parse(line)
    };
    let request_line = match parsed {
        Ok(request_line) => request_line,
        Err(error) => {
            log!("rejected a request: {error}");
            // SAFETY: the request's output, nothing else refers to it.
            let written = unsafe { Buffer::write(output, |out| write_rejection(&error, out)) };
            // SAFETY: the driver's request, completed once, here.
            unsafe { complete(request, STATUS_INVALID_PARAMETER, written) };
            return;
        }
    };
    let Some(provider) = service.provider.clone() else {
        // SAFETY: the driver's request, completed once, here.
        unsafe { complete(request, STATUS_DEVICE_NOT_READY, 0) };
        return;
    };
    // SAFETY: the driver's request, not completed: `pend` takes it over.
    unsafe { pend(request, output, &service.executor, provider, request_line) };
}

/// Part of a request's system buffer.
#[derive(Clone, Copy)]
struct Buffer {
    start: NonNull<u8>,
    len: usize,
}

impl Buffer {
    /// The request's input, if it has any.
    ///
    /// # Safety
    /// `request` is the driver's, not completed.
    unsafe fn input(request: WDFREQUEST, length: usize) -> Option<Self> {
        if length == 0 {
            return None;
        }
        let mut start: PVOID = ptr::null_mut();
        let mut len = 0_usize;
        // SAFETY: the driver's request (the caller's contract); at least
        // one byte (zero-length buffers are refused, checked above).
        let status = unsafe {
            call_unsafe_wdf_function_binding!(
                WdfRequestRetrieveInputBuffer,
                request,
                1,
                &raw mut start,
                &raw mut len
            )
        };
        Self::from_parts(status, start, len)
    }

    /// The request's output, if it has any.
    ///
    /// # Safety
    /// As for [`input`](Self::input).
    unsafe fn output(request: WDFREQUEST, length: usize) -> Option<Self> {
        if length == 0 {
            return None;
        }
        let mut start: PVOID = ptr::null_mut();
        let mut len = 0_usize;
        // SAFETY: as in `input`.
        let status = unsafe {
            call_unsafe_wdf_function_binding!(
                WdfRequestRetrieveOutputBuffer,
                request,
                1,
                &raw mut start,
                &raw mut len
            )
        };
        Self::from_parts(status, start, len)
    }

    fn from_parts(status: NTSTATUS, start: PVOID, len: usize) -> Option<Self> {
        let start = NonNull::new(start.cast::<u8>())?;
        (nt_success(status) && len != 0).then_some(Self { start, len })
    }

    /// The bytes.
    ///
    /// # Safety
    /// The request is not completed, and nothing writes this part of the
    /// buffer while the slice lives.
    const unsafe fn bytes<'a>(self) -> &'a [u8] {
        // SAFETY: the framework's buffer of `len` bytes (the caller's
        // contract for the rest).
        unsafe { core::slice::from_raw_parts(self.start.as_ptr(), self.len) }
    }

    /// Writes into `buffer` (nothing if `None`); returns the bytes written.
    ///
    /// # Safety
    /// The request is not completed, and nothing else refers to this part
    /// of the buffer while `write` runs.
    unsafe fn write(buffer: Option<Self>, write: impl FnOnce(&mut [u8]) -> usize) -> usize {
        let Some(buffer) = buffer else {
            return 0;
        };
        // SAFETY: the framework's buffer of `len` bytes, ours alone (the
        // caller's contract).
        let out = unsafe { core::slice::from_raw_parts_mut(buffer.start.as_ptr(), buffer.len) };
        write(out).min(buffer.len)
    }
}

/// Completes `request` with `status`, `information` bytes of output.
///
/// # Safety
/// `request` is the driver's, not completed, not cancelable (never marked,
/// or taken back, or its cancel routine has run), and completed once.
unsafe fn complete(request: WDFREQUEST, status: NTSTATUS, information: usize) {
    let information = ULONG_PTR::try_from(information).unwrap_or(0);
    // SAFETY: the caller's contract.
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfRequestCompleteWithInformation,
            request,
            status,
            information
        );
    }
}

/// A performance counter reading.
#[derive(Clone, Copy)]
struct Stamp(i64);

impl Stamp {
    /// Now.
    ///
    /// # IRQL
    /// Any.
    fn now() -> Self {
        Self(counter().0)
    }

    /// Microseconds since `self`.
    ///
    /// # IRQL
    /// Any.
    fn elapsed_us(self) -> u128 {
        let (now, frequency) = counter();
        let ticks = u128::try_from(now.saturating_sub(self.0)).unwrap_or(0);
        let frequency = u128::try_from(frequency).unwrap_or(1).max(1);
        ticks * 1_000_000 / frequency
    }
}

/// `KeQueryPerformanceCounter`: the counter and its frequency.
fn counter() -> (i64, i64) {
    let mut frequency = LARGE_INTEGER::default();
    // SAFETY: writes the frequency into a local; any IRQL.
    let now = unsafe { KeQueryPerformanceCounter(&raw mut frequency) };
    // SAFETY: a LARGE_INTEGER is a 64-bit integer; `QuadPart` is all of it.
    let now = unsafe { now.QuadPart };
    // SAFETY: as above.
    let frequency = unsafe { frequency.QuadPart };
    (now, frequency)
}

/// One pended request, shared by the dispatch routine that set it up, its
/// task's [`Completion`], and its cancel routine.
///
/// # Invariants
/// `refs` counts those holders. `request` is completed exactly once: by
/// the completion when `WdfRequestUnmarkCancelable` took it back, or else
/// by whichever of the completion and the cancel routine counts itself
/// second in `arrivals`.
struct Pending {
    refs: AtomicUsize,
    request: WDFREQUEST,
    output: Option<Buffer>,
    start: Stamp,
    /// The task, written once before `published`.
    task: UnsafeCell<Option<JoinHandle<()>>>,
    published: AtomicBool,
    cancelled: AtomicBool,
    /// The completion and the cancel routine, each counting itself once
    /// when the request's cancellation raced its completion.
    arrivals: AtomicUsize,
    /// What the request completes with then, stored by the completion
    /// before it counts itself.
    final_status: AtomicI32,
    final_information: AtomicUsize,
    /// What a task dropped before it finished completes with.
    dropped_status: AtomicI32,
}

// SAFETY: the framework lets any thread complete a request the driver
// owns; the task handle is written once before `published` and only read
// after it; everything else is atomic or never changes.
unsafe impl Send for Pending {}
// SAFETY: as above.
unsafe impl Sync for Pending {}

impl Pending {
    /// Aborts the task, if it was published.
    fn abort(&self) {
        if self.published.load(Ordering::SeqCst) {
            // SAFETY: published: the handle was written and is only read now.
            if let Some(task) = unsafe { &*self.task.get() } {
                task.abort();
            }
        }
    }
}

/// A counted reference to a [`Pending`] in pool.
struct PendingRef(NonNull<Pending>);

// SAFETY: see `Pending`.
unsafe impl Send for PendingRef {}

impl PendingRef {
    const fn get(&self) -> &Pending {
        // SAFETY: live while a reference is counted.
        unsafe { self.0.as_ref() }
    }

    fn clone_ref(&self) -> Self {
        self.get().refs.fetch_add(1, Ordering::Relaxed);
        Self(self.0)
    }

    /// Gives up the reference as a pointer (for the request context).
    const fn into_raw(self) -> *mut Pending {
        let raw = self.0.as_ptr();
        core::mem::forget(self);
        raw
    }

    /// The cancel routine's reference, taken out of the request context;
    /// `None` if it was taken already.
    ///
    /// # Safety
    /// `request` is the driver's, not completed.
    unsafe fn take_cancel_reference(request: WDFREQUEST) -> Option<Self> {
        // SAFETY: the caller's contract.
        let context = unsafe { RequestContext::of(request) }?;
        let raw = context.pending.swap(ptr::null_mut(), Ordering::AcqRel);
        // The pointer carries one counted reference (see `pend`).
        NonNull::new(raw).map(Self)
    }

    /// The task's end: takes the request back from its cancel routine,
    /// writes the output, and completes it (or leaves that to the cancel
    /// routine if it has yet to run).
    fn finish(self, status: NTSTATUS, write: impl FnOnce(&mut [u8], u128) -> usize) {
        let pending = self.get();
        let elapsed_us = pending.start.elapsed_us();
        // SAFETY: the request is not completed (only `finish` and the cancel
        // routine complete it, and the cancel routine only after this has
        // counted itself); it was marked cancelable.
        let unmarked = unsafe {
            call_unsafe_wdf_function_binding!(WdfRequestUnmarkCancelable, pending.request)
        };
        // SAFETY: not completed (as above); only this writes the output.
        let written = unsafe { Buffer::write(pending.output, |out| write(out, elapsed_us)) };
        if unmarked == STATUS_CANCELLED {
            // The cancel routine has run or will, and the request must not
            // be completed before it has: the second of the two completes.
            pending.final_status.store(status, Ordering::Relaxed);
            pending.final_information.store(written, Ordering::Relaxed);
            if pending.arrivals.fetch_add(1, Ordering::AcqRel) == 1 {
                // SAFETY: the cancel routine has run and left it to us.
                unsafe { complete(pending.request, status, written) };
            }
        } else {
            // The cancel routine will not run: its reference comes back
            // (before completing: the request context goes with the request).
            // SAFETY: not completed.
            drop(unsafe { Self::take_cancel_reference(pending.request) });
            // SAFETY: taken back from cancellation; completed once, here.
            unsafe { complete(pending.request, status, written) };
        }
    }
}

impl Drop for PendingRef {
    fn drop(&mut self) {
        if self.get().refs.fetch_sub(1, Ordering::AcqRel) == 1 {
            // SAFETY: the last reference to a block from `PoolBox::into_raw`.
            drop(unsafe { PoolBox::from_raw(self.0, POOL_TAG) });
        }
    }
}

/// Held by the task: completes the request with its result line, or, if
/// the task is dropped before it finished (aborted by the cancel routine or
/// by the executor's shutdown), with `STATUS_CANCELLED`.
struct Completion(Option<PendingRef>);

impl Completion {
    /// Completes the request with `status` and the output `write` gives
    /// (it gets the microseconds since the request arrived).
    fn finish(mut self, status: NTSTATUS, write: impl FnOnce(&mut [u8], u128) -> usize) {
        if let Some(pending) = self.0.take() {
            pending.finish(status, write);
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(pending) = self.0.take() {
            let status = pending.get().dropped_status.load(Ordering::Acquire);
            pending.finish(status, |_, _| 0);
        }
    }
}

/// Marks `request` cancelable and spawns its task; completes it at once
/// if it was cancelled already or nothing could be allocated.
///
/// # Safety
/// `request` is the driver's, not completed; `output` its output buffer.
unsafe fn pend(
    request: WDFREQUEST,
    output: Option<Buffer>,
    executor: &Executor,
    provider: Provider,
    request_line: Request,
) {
    // SAFETY: the driver's request, not completed.
    let Some(context) = (unsafe { RequestContext::of(request) }) else {
        // SAFETY: the driver's request, completed once, here.
        unsafe { complete(request, STATUS_INVALID_DEVICE_STATE, 0) };
        return;
    };
    let block = Pending {
        refs: AtomicUsize::new(1),
        request,
        output,
        start: Stamp::now(),
        task: UnsafeCell::new(None),
        published: AtomicBool::new(false),
        cancelled: AtomicBool::new(false),
        arrivals: AtomicUsize::new(0),
        final_status: AtomicI32::new(STATUS_CANCELLED),
        final_information: AtomicUsize::new(0),
        dropped_status: AtomicI32::new(STATUS_INSUFFICIENT_RESOURCES),
    };
    let Ok(block) = PoolBox::new(block, POOL_TAG) else {
        // SAFETY: the driver's request, completed once, here.
        unsafe { complete(request, STATUS_INSUFFICIENT_RESOURCES, 0) };
        return;
    };
    // The dispatch routine's reference, then the cancel routine's, handed
    // over through the request context before the routine can run.
    let pending = PendingRef(block.into_raw());
    context
        .pending
        .store(pending.clone_ref().into_raw(), Ordering::Release);
    // SAFETY: the driver's request, not completed, not cancelable yet.
    let marked = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfRequestMarkCancelableEx,
            request,
            Some(evt_request_cancel)
        )
    };
    if !nt_success(marked) {
        // Already cancelled (STATUS_CANCELLED): the cancel routine will not
        // be called; its reference comes back.
        // SAFETY: not completed.
        drop(unsafe { PendingRef::take_cancel_reference(request) });
        // SAFETY: not cancelable; completed once, here.
        unsafe { complete(request, marked, 0) };
        return;
    }
    let completion = Completion(Some(pending.clone_ref()));
    let task = executor.spawn(async move {
        let served = serve(provider, request_line).await;
        completion.finish(STATUS_SUCCESS, |out, elapsed_us| {
            served.write_line(elapsed_us, out)
        });
    });
    let Ok(task) = task else {
        // The future was dropped unpolled: its completion completed the
        // request with STATUS_INSUFFICIENT_RESOURCES.
        log!("cannot spawn a request's task");
        return;
    };
    let block = pending.get();
    block
        .dropped_status
        .store(STATUS_CANCELLED, Ordering::Release);
    // SAFETY: written once, before `published`; the cancel routine reads
    // it only after.
    unsafe { *block.task.get() = Some(task) };
    block.published.store(true, Ordering::SeqCst);
    if block.cancelled.load(Ordering::SeqCst) {
        // Cancelled before the task was published: the cancel routine could
        // not abort it.
        block.abort();
    }
}

/// `EvtRequestCancel` (user mode's `CancelIoEx`, its thread or process
/// ending, the queue purged at removal): aborts the request's task, whose
/// completion then completes the request with `STATUS_CANCELLED`; completes
/// it itself if that completion already came and left it to this routine.
///
/// # Safety
/// Called by the framework at `DISPATCH_LEVEL` or below for a request
/// `pend` marked cancelable.
unsafe extern "C" fn evt_request_cancel(request: WDFREQUEST) {
    // SAFETY: not completed: the completion leaves it to this routine once
    // the framework has called it (WdfRequestUnmarkCancelable then answers
    // STATUS_CANCELLED).
    let Some(pending) = (unsafe { PendingRef::take_cancel_reference(request) }) else {
        return;
    };
    let block = pending.get();
    block.cancelled.store(true, Ordering::SeqCst);
    block.abort();
    // The completion came first and stored what to complete with?
    let last = (block.arrivals.fetch_add(1, Ordering::AcqRel) == 1).then(|| {
        (
            block.final_status.load(Ordering::Relaxed),
            block.final_information.load(Ordering::Relaxed),
        )
    });
    // Our reference goes before the request does: completing is the last
    // thing this routine does.
    drop(pending);
    if let Some((status, information)) = last {
        // SAFETY: this routine was called for it; the completion left it
        // to us; completed once, here.
        unsafe { complete(request, status, information) };
    }
}
