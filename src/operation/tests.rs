//! The operation lifecycle against a stand-in provider built from the
//! emulator's I/O helpers: inline and pending completion, abandonment with
//! drop sentinels, unconsumed results, non-conforming providers, timeouts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{Await, Blocking, Operation, Payload, Waiter, run_blocking};
use crate::abi::{IRP, STATUS_NOT_IMPLEMENTED, STATUS_PENDING, STATUS_SUCCESS};
use crate::emulator::Kernel;
use crate::emulator::io::{self, IrpHandle, PendingQueue};
use crate::objects::registration::RegistrationRef;
use crate::{Error, NtStatus, PassiveLevel, PoolBuffer, PoolTag, Registration, block_on};

/// A payload whose buffer is the drop sentinel (it shows in the pool
/// accounting until freed) and which counts unconsumed results.
struct Sentinel {
    _buffer: PoolBuffer,
    unconsumed: Arc<AtomicUsize>,
}

impl Payload for Sentinel {
    fn unconsumed(&mut self, _status: NtStatus, _information: usize) {
        self.unconsumed.fetch_add(1, Ordering::SeqCst);
    }
}

const SENTINEL: [u8; 4] = *b"Sent";

fn sentinel(counter: &Arc<AtomicUsize>) -> Sentinel {
    Sentinel {
        _buffer: PoolBuffer::zeroed(16, PoolTag::new(SENTINEL)).unwrap(),
        unconsumed: counter.clone(),
    }
}

fn setup() -> (Kernel, crate::emulator::EnterGuard, Registration) {
    let kernel = Kernel::new();
    let enter = kernel.enter();
    let registration = Registration::register(&PassiveLevel::check().unwrap()).unwrap();
    (kernel, enter, registration)
}

fn registration_ref(registration: &Registration) -> RegistrationRef {
    let passive = PassiveLevel::check().unwrap();
    let provider = registration
        .capture(&passive, Duration::from_secs(1))
        .unwrap();
    provider.registration().clone()
}

/// Submits `op` to a stand-in provider that pends the IRP without a cancel
/// routine (it ignores cancellation) and hands it back for the test to
/// complete.
fn submit_uncancelable(op: &mut Operation<Sentinel>, reg: &RegistrationRef) -> IrpHandle {
    let mut parked = None;
    let call = |irp: *mut IRP, _: *mut Sentinel| {
        // SAFETY: the stand-in provider takes the IRP and keeps it.
        let handle = unsafe { io::start(irp, "uncancelable") };
        // SAFETY: owned by the stand-in provider.
        unsafe { io::mark_pending(handle) };
        parked = Some(handle);
        STATUS_PENDING
    };
    // SAFETY: one "WSK call" with the operation's IRP.
    unsafe { op.submit(reg, call).unwrap() };
    parked.expect("the call ran")
}

/// Submits `op` to a stand-in provider that pends the IRP in `queue`, with
/// a cancel routine, until a cancel completes it.
fn submit_cancelable(
    op: &mut Operation<Sentinel>,
    reg: &RegistrationRef,
    queue: &PendingQueue<()>,
) {
    let call = |irp: *mut IRP, _: *mut Sentinel| {
        // SAFETY: the stand-in provider pends the IRP cancelably.
        let handle = unsafe { io::start(irp, "cancelable") };
        // SAFETY: owned; the queue outlives it (the tests hold it).
        unsafe { queue.pend(handle, ()) };
        STATUS_PENDING
    };
    // SAFETY: one "WSK call" with the operation's IRP.
    unsafe { op.submit(reg, call).unwrap() };
}

/// Drops the test's registration reference, deregisters, and checks that
/// nothing was forced or left.
fn teardown(kernel: &Kernel, registration: Registration, reg: RegistrationRef) {
    drop(reg);
    let report = registration.deregister(&PassiveLevel::check().unwrap());
    assert!(report.is_clean(), "deregistration had to force: {report}");
    kernel.assert_no_leaks();
}

#[test]
fn an_inline_completion_is_the_result() {
    let (kernel, _enter, registration) = setup();
    let reg = registration_ref(&registration);
    let counter = Arc::new(AtomicUsize::new(0));
    let mut op = Operation::new(sentinel(&counter)).unwrap();
    let call = |irp: *mut IRP, _: *mut Sentinel| {
        // SAFETY: the stand-in provider takes the IRP and completes it inline.
        let handle = unsafe { io::start(irp, "inline") };
        // SAFETY: owned by the stand-in provider.
        unsafe { io::complete(handle, STATUS_SUCCESS, 42) };
        STATUS_SUCCESS
    };
    // SAFETY: one "WSK call" with the operation's IRP.
    unsafe { op.submit(&reg, call).unwrap() };
    assert!(op.is_complete());
    assert_eq!(op.result(), Ok(42));
    op.consume();
    drop(op);
    assert_eq!(
        counter.load(Ordering::SeqCst),
        0,
        "consumed results are not released"
    );
    teardown(&kernel, registration, reg);
}

#[test]
fn a_pending_completion_wakes_the_future() {
    let (kernel, _enter, registration) = setup();
    let reg = registration_ref(&registration);
    let counter = Arc::new(AtomicUsize::new(0));
    let mut op = Operation::new(sentinel(&counter)).unwrap();
    let dpc_kernel = kernel.clone();
    let call = |irp: *mut IRP, _: *mut Sentinel| {
        // SAFETY: the stand-in provider takes the IRP and completes it
        // later from its DPC.
        let handle = unsafe { io::start(irp, "pending") };
        // SAFETY: owned by the stand-in provider.
        unsafe { io::mark_pending(handle) };
        // SAFETY: owned by the stand-in provider, given up to the DPC.
        unsafe { io::complete_from_dpc(&dpc_kernel, handle, STATUS_SUCCESS, 7) };
        STATUS_PENDING
    };
    // SAFETY: one "WSK call" with the operation's IRP.
    unsafe { op.submit(&reg, call).unwrap() };
    let passive = PassiveLevel::check().unwrap();
    let result = block_on(&passive, async {
        Await.complete(&op).await.and_then(|()| op.result())
    })
    .unwrap();
    assert_eq!(result, Ok(7));
    drop(op);
    // The completion routine wakes the future before it gives back its
    // references: let it finish (DPCs run in order on one thread).
    let (done, finished) = std::sync::mpsc::channel();
    kernel.queue_dpc(move || done.send(()).unwrap());
    finished.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        counter.load(Ordering::SeqCst),
        1,
        "an unconsumed success is released"
    );
    teardown(&kernel, registration, reg);
}

#[test]
fn dropping_the_owner_frees_nothing_until_the_completion_runs() {
    let (kernel, _enter, registration) = setup();
    let reg = registration_ref(&registration);
    let counter = Arc::new(AtomicUsize::new(0));
    let mut op = Operation::new(sentinel(&counter)).unwrap();
    let parked = submit_uncancelable(&mut op, &reg);
    assert_eq!(registration.in_flight(), 1);
    drop(op);
    let usage = kernel.usage();
    assert_eq!(
        usage.pool_tag(SENTINEL).allocations,
        1,
        "the buffer must outlive the IRP"
    );
    assert_eq!(usage.irps_in_flight, 1);
    // The provider completes (successfully) after all.
    let handle: IrpHandle = parked;
    // SAFETY: still owned by the stand-in provider.
    unsafe { io::complete(handle, STATUS_SUCCESS, 0) };
    assert_eq!(kernel.usage().pool_tag(SENTINEL).allocations, 0);
    assert_eq!(
        counter.load(Ordering::SeqCst),
        1,
        "the abandoned result is released"
    );
    assert_eq!(registration.in_flight(), 0);
    teardown(&kernel, registration, reg);
}

#[test]
fn dropping_the_owner_cancels_the_irp() {
    let (kernel, _enter, registration) = setup();
    let reg = registration_ref(&registration);
    let counter = Arc::new(AtomicUsize::new(0));
    let queue = PendingQueue::<()>::new();
    let mut op = Operation::new(sentinel(&counter)).unwrap();
    submit_cancelable(&mut op, &reg, &queue);
    drop(op);
    assert!(queue.is_empty(), "the cancel routine completed it");
    assert_eq!(
        counter.load(Ordering::SeqCst),
        0,
        "a cancelled result has nothing to release"
    );
    teardown(&kernel, registration, reg);
}

#[test]
fn a_call_that_returns_without_completing_is_reclaimed() {
    let (kernel, _enter, registration) = setup();
    let reg = registration_ref(&registration);
    let counter = Arc::new(AtomicUsize::new(0));
    let mut op = Operation::new(sentinel(&counter)).unwrap();
    // Wine 8's stubs: STATUS_NOT_IMPLEMENTED, IRP never touched.
    // SAFETY: the stub does not take the IRP.
    unsafe { op.submit(&reg, |_, _| STATUS_NOT_IMPLEMENTED).unwrap() };
    assert!(op.is_complete());
    assert_eq!(
        op.result(),
        Err(Error::NotSupported(NtStatus::NOT_IMPLEMENTED))
    );
    assert_eq!(
        registration.in_flight(),
        0,
        "the routine's part was reclaimed"
    );
    drop(op);
    drop(reg);
    let report = registration.deregister(&PassiveLevel::check().unwrap());
    assert!(report.is_clean(), "deregistration had to force: {report}");
    assert_eq!(report.quarantined_operations, 1, "{report}");
    // A provider that broke the rule once may still complete the IRP: the
    // block and its IRP stay, counted, instead of being freed under it.
    let usage = kernel.usage();
    assert_eq!(usage.pool_tag(*b"WskO").allocations, 1, "{usage}");
    assert_eq!(usage.irps, 1, "{usage}");
    assert_eq!(
        (usage.registrations, usage.captures, usage.sockets),
        (0, 0, 0)
    );
    kernel.expect_leaks();
}

#[test]
fn a_blocking_timeout_cancels_and_waits_for_the_completion() {
    let (kernel, _enter, registration) = setup();
    let reg = registration_ref(&registration);
    let counter = Arc::new(AtomicUsize::new(0));
    let queue = PendingQueue::<()>::new();
    let mut op = Operation::new(sentinel(&counter)).unwrap();
    submit_cancelable(&mut op, &reg, &queue);
    let passive = PassiveLevel::check().unwrap();
    let start = std::time::Instant::now();
    let mut waiter = Blocking::new(&passive, Duration::from_millis(50));
    let result = run_blocking(waiter.complete(&op));
    assert_eq!(result, Err(Error::TimedOut(NtStatus::IO_TIMEOUT)));
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert!(op.is_complete(), "nothing left in flight after a timeout");
    assert_eq!(op.status(), NtStatus::CANCELLED);
    drop(op);
    teardown(&kernel, registration, reg);
}

#[test]
fn a_success_that_races_the_timeout_keeps_its_result_for_the_caller() {
    let (kernel, _enter, registration) = setup();
    let reg = registration_ref(&registration);
    let counter = Arc::new(AtomicUsize::new(0));
    let mut op = Operation::new(sentinel(&counter)).unwrap();
    let handle = submit_uncancelable(&mut op, &reg);
    // The provider finishes 5 bytes after the caller's deadline.
    let late = {
        let kernel = kernel.clone();
        std::thread::spawn(move || {
            let _enter = kernel.enter();
            std::thread::sleep(Duration::from_millis(80));
            // SAFETY: still owned by the stand-in provider.
            unsafe { io::complete(handle, STATUS_SUCCESS, 5) };
        })
    };
    let passive = PassiveLevel::check().unwrap();
    let mut waiter = Blocking::new(&passive, Duration::from_millis(20));
    let result = run_blocking(waiter.complete(&op));
    late.join().unwrap();
    // Never reported as success, but nothing is hidden from the caller.
    assert_eq!(result, Err(Error::TimedOut(NtStatus::IO_TIMEOUT)));
    assert!(
        op.is_complete(),
        "the blocking timeout waited for the completion"
    );
    assert_eq!(op.outcome(), (NtStatus::SUCCESS, 5));
    op.consume();
    drop(op);
    teardown(&kernel, registration, reg);
}

#[test]
fn a_completed_operation_recycles_and_runs_again_on_the_same_irp() {
    let (kernel, _enter, registration) = setup();
    let reg = registration_ref(&registration);
    let counter = Arc::new(AtomicUsize::new(0));
    let mut op = Operation::new(sentinel(&counter)).unwrap();
    let inline = |information: usize| {
        move |irp: *mut IRP, _: *mut Sentinel| {
            // SAFETY: the stand-in provider takes the IRP and completes it.
            let handle = unsafe { io::start(irp, "inline") };
            // SAFETY: owned by the stand-in provider.
            unsafe { io::complete(handle, STATUS_SUCCESS, information) };
            STATUS_SUCCESS
        }
    };
    // SAFETY: one "WSK call" with the operation's IRP.
    unsafe { op.submit(&reg, inline(1)).unwrap() };
    assert_eq!(op.result(), Ok(1));
    op.consume();
    let before = kernel.allocations();
    assert!(op.recycle(), "completed, and the routine has let go");
    assert!(!op.is_complete(), "idle again");
    // SAFETY: as above.
    unsafe { op.submit(&reg, inline(2)).unwrap() };
    assert_eq!(op.result(), Ok(2), "the second use's result, not the first");
    assert_eq!(
        kernel.allocations() - before,
        crate::emulator::Allocations::default(),
        "the same block and IRP"
    );
    op.consume();
    drop(op);
    teardown(&kernel, registration, reg);
}

#[test]
fn a_quarantined_operation_is_not_recycled_even_after_a_late_completion() {
    let (kernel, _enter, registration) = setup();
    let reg = registration_ref(&registration);
    let counter = Arc::new(AtomicUsize::new(0));
    let mut op = Operation::new(sentinel(&counter)).unwrap();
    let mut taken = None;
    // A provider that takes the IRP, returns a failure without completing
    // it, and completes it later anyway.
    let call = |irp: *mut IRP, _: *mut Sentinel| {
        // SAFETY: the stand-in provider takes the IRP.
        taken = Some(unsafe { io::start(irp, "rule-breaker") });
        STATUS_NOT_IMPLEMENTED
    };
    // SAFETY: one "WSK call" with the operation's IRP.
    unsafe { op.submit(&reg, call).unwrap() };
    assert!(op.was_reclaimed());
    // SAFETY: still owned by the stand-in provider.
    unsafe { io::complete(taken.unwrap(), STATUS_SUCCESS, 0) };
    assert!(!op.recycle(), "its provider broke the rule once");
    op.consume();
    drop(op);
    teardown(&kernel, registration, reg);
}
