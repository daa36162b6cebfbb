//! The provider's side of an IRP: take it, pend it cancelably, complete it.
//!
//! The emulated WSK provider is written with these, and so can a test that
//! stands in for a lower driver.

use core::ffi::c_void;
use rustc_hash::FxHashMap;
use std::any::Any;
use std::boxed::Box;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::vec::Vec;

use super::{Kernel, irp};
use crate::abi::{IRP, NTSTATUS, STATUS_CANCELLED};

/// An IRP address that may cross threads (the provider's bookkeeping).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IrpHandle(usize);

impl IrpHandle {
    /// The IRP.
    #[must_use]
    pub const fn as_ptr(self) -> *mut IRP {
        self.0 as *mut IRP
    }
}

/// Takes an IRP passed to a provider function (`IoSetNextIrpStackLocation`):
/// the provider owns it until it completes it.
///
/// # Safety
/// `irp` is a live IRP whose submitter handed it over; `function` names the
/// call for verifier messages.
pub unsafe fn start(irp: *mut IRP, function: &str) -> IrpHandle {
    // SAFETY: forwarded contract.
    unsafe { irp::take(irp, function) };
    IrpHandle(irp as usize)
}

/// `IoMarkIrpPending`: the provider will return `STATUS_PENDING`.
///
/// # Safety
/// The caller owns `irp` (after [`start`]).
pub unsafe fn mark_pending(irp: IrpHandle) {
    // SAFETY: forwarded contract.
    unsafe { irp::mark_pending(irp.as_ptr()) };
}

/// Sets the IRP's `IoStatus` and completes it at the current IRQL.
///
/// # Safety
/// The caller owns `irp` (after [`start`]) and gives it up.
pub unsafe fn complete(irp: IrpHandle, status: NTSTATUS, information: usize) {
    let raw = irp.as_ptr();
    // SAFETY: owned by the caller until completion.
    unsafe {
        (*raw).IoStatus.Status = status;
    }
    // SAFETY: as above.
    unsafe {
        (*raw).IoStatus.Information = information;
    }
    irp::complete(raw);
}

/// Completes the IRP later, from the kernel's DPC thread at `DISPATCH_LEVEL`.
///
/// # Safety
/// As for [`complete`].
pub unsafe fn complete_from_dpc(
    kernel: &Kernel,
    irp: IrpHandle,
    status: NTSTATUS,
    information: usize,
) {
    kernel.queue_dpc(move || {
        // SAFETY: the caller gave the IRP up to this completion.
        unsafe { complete(irp, status, information) };
    });
}

/// IRPs a provider holds pending, each with a cancel routine.
///
/// Cancelling one completes it with `STATUS_CANCELLED`, and
/// [`take`](Self::take) never returns an IRP that a cancel is completing.
pub struct PendingQueue<T> {
    core: Arc<QueueCore>,
    _payload: PhantomData<fn(T) -> T>,
}

/// Called after a cancel routine has completed an IRP of the queue.
type CancelHook = Arc<dyn Fn() + Send + Sync>;

struct QueueCore {
    entries: Mutex<FxHashMap<usize, Box<dyn Any + Send>>>,
    on_cancel: Option<CancelHook>,
    /// Whether pended IRPs get a cancel routine (Wine 8's provider sets
    /// none: `IoCancelIrp` then changes nothing).
    cancelable: bool,
}

impl QueueCore {
    fn lock(&self) -> MutexGuard<'_, FxHashMap<usize, Box<dyn Any + Send>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: Send + 'static> Default for PendingQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Send + 'static> PendingQueue<T> {
    /// An empty queue.
    #[must_use]
    pub fn new() -> Self {
        Self::with_core(None)
    }

    /// An empty queue that calls `hook` after a cancel routine has completed
    /// one of its IRPs, so the provider can react (e.g. give up a half-done
    /// connect) without waiting for its next event. The hook runs in the
    /// cancelling thread, at its IRQL, with no lock held.
    #[must_use]
    pub fn with_cancel_hook(hook: impl Fn() + Send + Sync + 'static) -> Self {
        Self::with_core(Some(Arc::new(hook)))
    }

    fn with_core(on_cancel: Option<CancelHook>) -> Self {
        Self {
            core: Arc::new(QueueCore {
                entries: Mutex::new(FxHashMap::default()),
                on_cancel,
                cancelable: true,
            }),
            _payload: PhantomData,
        }
    }

    /// The same queue, but pending IRPs get no cancel routine when
    /// `cancelable` is false, as with a provider that does not support
    /// cancellation: they complete only when the provider completes them.
    ///
    /// # Panics
    /// If the queue is already shared.
    #[must_use]
    pub fn cancelable(mut self, cancelable: bool) -> Self {
        Arc::get_mut(&mut self.core)
            .expect("configured before use")
            .cancelable = cancelable;
        self
    }

    /// Pends `irp` with `payload` and marks it pending. If the IRP was
    /// already cancelled, it is completed with `STATUS_CANCELLED` now and
    /// the payload is returned.
    ///
    /// # Safety
    /// The caller owns `irp` (after [`start`]) and keeps this queue alive
    /// while the IRP is in it.
    pub unsafe fn pend(&self, irp: IrpHandle, payload: T) -> Option<T> {
        let raw = irp.as_ptr();
        // SAFETY: owned IRP.
        unsafe { mark_pending(irp) };
        // DriverContext belongs to the IRP's current owner: it tells the
        // cancel routine which queue the IRP is in.
        // SAFETY: owned IRP.
        unsafe {
            (*raw).Tail.DriverContext[0] = Arc::as_ptr(&self.core).cast_mut().cast::<c_void>();
        }
        let mut entries = self.core.lock();
        entries.insert(irp.0, Box::new(payload));
        if !self.core.cancelable {
            return None;
        }
        // SAFETY: owned IRP.
        unsafe { irp::set_cancel_routine(raw, Some(cancel_routine)) };
        // SAFETY: owned IRP; `Cancel` is read after publishing the routine,
        // so a concurrent IoCancelIrp either sees the routine or set the flag.
        let cancelled = unsafe { irp::cancel_flag(raw) }.load(Ordering::SeqCst) != 0;
        // SAFETY: owned IRP.
        if cancelled && unsafe { irp::set_cancel_routine(raw, None) }.is_some() {
            let payload = entries.remove(&irp.0).expect("inserted above");
            drop(entries);
            // SAFETY: we own the IRP again: no cancel routine will run.
            unsafe { complete(irp, STATUS_CANCELLED, 0) };
            return Some(*payload.downcast::<T>().expect("queue payload type"));
        }
        None
    }

    /// Takes `irp` back to complete it, unless a cancel got there first (then
    /// the cancel routine completes it).
    ///
    /// # Safety
    /// `irp` was pended in this queue.
    #[must_use]
    pub unsafe fn take(&self, irp: IrpHandle) -> Option<T> {
        let mut entries = self.core.lock();
        let payload = entries.remove(&irp.0)?;
        // SAFETY: pended in this queue, so live.
        if self.core.cancelable && unsafe { irp::set_cancel_routine(irp.as_ptr(), None) }.is_none()
        {
            // IoCancelIrp already claimed it; its routine will look for it.
            entries.insert(irp.0, payload);
            return None;
        }
        Some(*payload.downcast::<T>().expect("queue payload type"))
    }

    /// Every IRP still pending, for a provider that completes them all (a
    /// closing socket). Cancels in progress keep theirs.
    #[must_use]
    pub fn take_all(&self) -> Vec<(IrpHandle, T)> {
        // Collected first: `take` locks the queue again.
        #[allow(
            clippy::needless_collect,
            reason = "the lock must be released before take"
        )]
        let keys: Vec<usize> = self.core.lock().keys().copied().collect();
        keys.into_iter()
            .filter_map(|key| {
                // SAFETY: the key was pended in this queue.
                unsafe { self.take(IrpHandle(key)) }.map(|payload| (IrpHandle(key), payload))
            })
            .collect()
    }

    /// Whether `irp` is pending in this queue (an IRP whose cancel is under
    /// way still counts until its cancel routine has removed it).
    #[must_use]
    pub fn contains(&self, irp: IrpHandle) -> bool {
        self.core.lock().contains_key(&irp.0)
    }

    /// How many IRPs are pending.
    #[must_use]
    pub fn len(&self) -> usize {
        self.core.lock().len()
    }

    /// Whether no IRP is pending.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

unsafe extern "system" fn cancel_routine(_device: *mut c_void, irp: *mut IRP) {
    // SAFETY: IoCancelIrp calls this with the cancel lock held and the IRQL
    // to return to in `CancelIrql`.
    let old = unsafe { (*irp).CancelIrql };
    irp::release_cancel_lock(old);
    // SAFETY: the IRP is pending in a queue, whose core `pend` recorded here
    // and which its owner keeps alive while IRPs are pending.
    let core = unsafe { (*irp).Tail.DriverContext[0] }.cast::<QueueCore>();
    // SAFETY: as above: the queue outlives the IRPs pending in it.
    let core = unsafe { &*core };
    // The hook is cloned under the lock: once the entry is gone the queue's
    // owner may drop the queue, so nothing of it is touched afterwards.
    let (removed, hook) = {
        let mut entries = core.lock();
        (entries.remove(&(irp as usize)), core.on_cancel.clone())
    };
    if removed.is_some() {
        // SAFETY: the queue no longer has it and `take` cannot return it: the
        // cancel routine owns the completion.
        unsafe { complete(IrpHandle(irp as usize), STATUS_CANCELLED, 0) };
        if let Some(hook) = hook {
            hook();
        }
    }
}

/// Which outcomes a completion routine is called for (`IoSetCompletionRoutine`'s
/// three flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvokeOn {
    /// `SL_INVOKE_ON_SUCCESS`.
    pub success: bool,
    /// `SL_INVOKE_ON_ERROR`.
    pub error: bool,
    /// `SL_INVOKE_ON_CANCEL`.
    pub cancel: bool,
}

impl InvokeOn {
    /// All three, as WSK clients must set them.
    pub const ALL: Self = Self {
        success: true,
        error: true,
        cancel: true,
    };
}

/// Installs `routine` in the next stack location with the chosen flags, as
/// a driver does before passing an IRP further down.
///
/// # Safety
/// The caller owns `irp`, which has a stack location below the current one;
/// `routine` and `context` stay valid until the routine runs.
pub unsafe fn set_next_completion_routine(
    irp: IrpHandle,
    routine: crate::kernel::irp::CompletionRoutine,
    context: *mut c_void,
    invoke: InvokeOn,
) {
    use crate::abi::{SL_INVOKE_ON_CANCEL, SL_INVOKE_ON_ERROR, SL_INVOKE_ON_SUCCESS};
    // SAFETY: owned, live IRP.
    let header = unsafe { &mut *irp.as_ptr() };
    assert!(
        header.CurrentLocation > 1,
        "no stack location below the current one"
    );
    // SAFETY: CurrentLocation > 1, so the next location is inside the stack.
    let next = unsafe { header.Tail.CurrentStackLocation.sub(1) };
    // SAFETY: as above; the owner alone writes it.
    let next = unsafe { &mut *next };
    next.CompletionRoutine = Some(routine);
    next.Context = context;
    next.Control = [
        (invoke.success, SL_INVOKE_ON_SUCCESS),
        (invoke.error, SL_INVOKE_ON_ERROR),
        (invoke.cancel, SL_INVOKE_ON_CANCEL),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(0, |control, (_, bit)| control | bit);
}
