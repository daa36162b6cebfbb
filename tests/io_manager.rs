//! The emulator's I/O manager, driven through the library's kernel objects:
//! completion-routine order, `STATUS_MORE_PROCESSING_REQUIRED`, cancel before
//! and after completion, reuse, DPC-level completion, and the verifier's
//! bugchecks.
#![allow(
    clippy::items_after_statements,
    clippy::unnecessary_box_returns,
    reason = "test scaffolding"
)]

use core::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use wsk::abi::{
    DISPATCH_LEVEL, IRP, NTSTATUS, STATUS_CANCELLED, STATUS_MORE_PROCESSING_REQUIRED,
    STATUS_SUCCESS, STATUS_UNSUCCESSFUL,
};
use wsk::emulator::io::{self, InvokeOn, PendingQueue};
use wsk::emulator::{Kernel, irql};
use wsk::{Irp, NtStatus};

/// What one completion routine saw.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    who: &'static str,
    status: NTSTATUS,
    irql: u8,
    device_null: bool,
    thread: thread::ThreadId,
}

/// A routine's context: its name, what it returns, and the shared log.
struct Probe {
    who: &'static str,
    returns: NTSTATUS,
    log: Arc<Mutex<Vec<Seen>>>,
}

unsafe extern "system" fn probe_routine(
    device: *mut c_void,
    irp: *mut IRP,
    context: *mut c_void,
) -> NTSTATUS {
    // SAFETY: every test passes a `Probe` that outlives the IRP's completion.
    let probe = unsafe { &*context.cast::<Probe>() };
    // SAFETY: the I/O manager passes the live IRP being completed.
    let status = unsafe { (*irp).IoStatus.Status };
    probe.log.lock().unwrap().push(Seen {
        who: probe.who,
        status,
        irql: irql::current(),
        device_null: device.is_null(),
        thread: thread::current().id(),
    });
    probe.returns
}

fn probe(who: &'static str, returns: NTSTATUS, log: &Arc<Mutex<Vec<Seen>>>) -> Box<Probe> {
    Box::new(Probe {
        who,
        returns,
        log: log.clone(),
    })
}

const fn context(probe: &Probe) -> *mut c_void {
    core::ptr::from_ref(probe).cast_mut().cast()
}

fn who(log: &Arc<Mutex<Vec<Seen>>>) -> Vec<&'static str> {
    log.lock().unwrap().iter().map(|seen| seen.who).collect()
}

#[test]
fn completion_routines_run_bottom_up_until_more_processing_required() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let log = Arc::new(Mutex::new(Vec::new()));
    let top = probe("client", STATUS_MORE_PROCESSING_REQUIRED, &log);
    let middle = probe("filter", STATUS_SUCCESS, &log);

    let irp = Irp::allocate(2).unwrap();
    // SAFETY: the probe outlives the completion; the IRP is not in flight.
    unsafe { irp.set_completion_routine(probe_routine, context(&top)) };
    // SAFETY: the test plays the lower drivers: a filter passes the IRP down
    // with its own routine, the bottom driver completes it.
    let handle = unsafe { io::start(irp.as_ptr(), "filter") };
    // SAFETY: the filter owns the IRP and has a location below it.
    unsafe {
        io::set_next_completion_routine(handle, probe_routine, context(&middle), InvokeOn::ALL);
    };
    // SAFETY: passed down again.
    let handle = unsafe { io::start(irp.as_ptr(), "bottom") };
    // SAFETY: the bottom driver owns it and gives it up.
    unsafe { io::complete(handle, STATUS_SUCCESS, 7) };

    assert_eq!(who(&log), ["filter", "client"]);
    let seen = log.lock().unwrap().clone();
    assert!(
        seen[1].device_null,
        "the top routine of a driver-allocated IRP gets a NULL device"
    );
    assert_eq!(irp.status(), NtStatus::SUCCESS);
    assert_eq!(irp.information(), 7);
    drop(irp);
    kernel.assert_no_leaks();
}

#[test]
fn more_processing_required_below_the_top_stops_completion_until_completed_again() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let log = Arc::new(Mutex::new(Vec::new()));
    let top = probe("client", STATUS_MORE_PROCESSING_REQUIRED, &log);
    let middle = probe("filter", STATUS_MORE_PROCESSING_REQUIRED, &log);

    let irp = Irp::allocate(2).unwrap();
    // SAFETY: as in the test above.
    unsafe { irp.set_completion_routine(probe_routine, context(&top)) };
    // SAFETY: the filter takes the IRP.
    let filter = unsafe { io::start(irp.as_ptr(), "filter") };
    // SAFETY: the filter owns it.
    unsafe {
        io::set_next_completion_routine(filter, probe_routine, context(&middle), InvokeOn::ALL);
    };
    // SAFETY: the bottom driver takes it and completes it.
    let bottom = unsafe { io::start(irp.as_ptr(), "bottom") };
    // SAFETY: owned by the bottom driver.
    unsafe { io::complete(bottom, STATUS_SUCCESS, 0) };
    assert_eq!(
        who(&log),
        ["filter"],
        "the client's routine must not run yet"
    );

    // The filter reclaimed the IRP; it completes it again, upwards.
    // SAFETY: the filter owns the IRP again after returning MORE_PROCESSING.
    unsafe { io::complete(filter, STATUS_UNSUCCESSFUL, 0) };
    assert_eq!(who(&log), ["filter", "client"]);
    assert_eq!(log.lock().unwrap()[1].status, STATUS_UNSUCCESSFUL);
    drop(irp);
    kernel.assert_no_leaks();
}

#[test]
fn invoke_flags_choose_which_outcomes_call_the_routine() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let log = Arc::new(Mutex::new(Vec::new()));
    let top = probe("client", STATUS_MORE_PROCESSING_REQUIRED, &log);
    let on_error_only = probe("error-only", STATUS_SUCCESS, &log);
    for (status, expected) in [
        (STATUS_SUCCESS, vec!["client"]),
        (STATUS_UNSUCCESSFUL, vec!["error-only", "client"]),
    ] {
        log.lock().unwrap().clear();
        let irp = Irp::allocate(2).unwrap();
        // SAFETY: as above.
        unsafe { irp.set_completion_routine(probe_routine, context(&top)) };
        // SAFETY: the filter takes it.
        let filter = unsafe { io::start(irp.as_ptr(), "filter") };
        let invoke = InvokeOn {
            success: false,
            error: true,
            cancel: false,
        };
        // SAFETY: owned by the filter.
        unsafe {
            io::set_next_completion_routine(filter, probe_routine, context(&on_error_only), invoke);
        };
        // SAFETY: the bottom takes and completes it.
        let bottom = unsafe { io::start(irp.as_ptr(), "bottom") };
        // SAFETY: owned by the bottom driver.
        unsafe { io::complete(bottom, status, 0) };
        assert_eq!(who(&log), expected, "status {}", NtStatus(status));
    }
    kernel.assert_no_leaks();
}

#[test]
fn cancel_before_completion_runs_the_cancel_routine_and_completes_cancelled() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let log = Arc::new(Mutex::new(Vec::new()));
    let top = probe("client", STATUS_MORE_PROCESSING_REQUIRED, &log);
    let queue = PendingQueue::<u32>::new();

    let irp = Irp::allocate(1).unwrap();
    // SAFETY: as above.
    unsafe { irp.set_completion_routine(probe_routine, context(&top)) };
    // SAFETY: the provider takes the IRP and pends it.
    let handle = unsafe { io::start(irp.as_ptr(), "provider") };
    // SAFETY: owned by the provider; the queue outlives it.
    assert_eq!(unsafe { queue.pend(handle, 42) }, None);
    assert_eq!(queue.len(), 1);
    assert!(log.lock().unwrap().is_empty());

    assert!(irp.cancel(), "a pending IRP has a cancel routine");
    assert_eq!(who(&log), ["client"]);
    assert_eq!(log.lock().unwrap()[0].status, STATUS_CANCELLED);
    assert!(queue.is_empty());
    // The provider can no longer take it.
    // SAFETY: it was pended in this queue.
    assert_eq!(unsafe { queue.take(handle) }, None);
    drop(irp);
    kernel.assert_no_leaks();
}

#[test]
fn cancel_after_completion_changes_nothing() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let log = Arc::new(Mutex::new(Vec::new()));
    let top = probe("client", STATUS_MORE_PROCESSING_REQUIRED, &log);
    let queue = PendingQueue::<()>::new();

    let irp = Irp::allocate(1).unwrap();
    // SAFETY: as above.
    unsafe { irp.set_completion_routine(probe_routine, context(&top)) };
    // SAFETY: the provider takes the IRP, pends it, then completes it.
    let handle = unsafe { io::start(irp.as_ptr(), "provider") };
    // SAFETY: owned by the provider.
    unsafe { queue.pend(handle, ()) };
    // SAFETY: pended in this queue.
    let taken = unsafe { queue.take(handle) };
    assert_eq!(taken, Some(()));
    // SAFETY: taken back, so owned by the provider.
    unsafe { io::complete(handle, STATUS_SUCCESS, 5) };

    assert!(!irp.cancel(), "no cancel routine once completed");
    assert_eq!(irp.status(), NtStatus::SUCCESS);
    assert_eq!(who(&log), ["client"]);
    drop(irp);
    kernel.assert_no_leaks();
}

#[test]
fn an_irp_cancelled_before_it_is_pended_completes_cancelled_at_once() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let log = Arc::new(Mutex::new(Vec::new()));
    let top = probe("client", STATUS_MORE_PROCESSING_REQUIRED, &log);
    let queue = PendingQueue::<&str>::new();
    let irp = Irp::allocate(1).unwrap();
    // SAFETY: as above.
    unsafe { irp.set_completion_routine(probe_routine, context(&top)) };
    // SAFETY: the provider takes the IRP.
    let handle = unsafe { io::start(irp.as_ptr(), "provider") };
    assert!(!irp.cancel(), "no cancel routine yet: only the flag is set");
    // SAFETY: owned by the provider.
    assert_eq!(unsafe { queue.pend(handle, "payload") }, Some("payload"));
    assert_eq!(log.lock().unwrap()[0].status, STATUS_CANCELLED);
    assert!(queue.is_empty());
    drop(irp);
    kernel.assert_no_leaks();
}

/// Completion vs cancel from two threads, many times: every IRP completes
/// exactly once, with success or `STATUS_CANCELLED`.
#[test]
fn cancel_racing_completion_completes_each_irp_exactly_once() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let completions = Arc::new(AtomicUsize::new(0));
    let cancelled = Arc::new(AtomicUsize::new(0));

    unsafe extern "system" fn count(
        _: *mut c_void,
        irp: *mut IRP,
        context: *mut c_void,
    ) -> NTSTATUS {
        // SAFETY: the context is the test's counters, alive for the test.
        let (done, cancelled) = unsafe { &*context.cast::<(Arc<AtomicUsize>, Arc<AtomicUsize>)>() };
        done.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the live IRP being completed.
        if unsafe { (*irp).IoStatus.Status } == STATUS_CANCELLED {
            cancelled.fetch_add(1, Ordering::SeqCst);
        }
        STATUS_MORE_PROCESSING_REQUIRED
    }

    let counters = Box::new((completions.clone(), cancelled.clone()));
    let queue = Arc::new(PendingQueue::<usize>::new());
    // Miri explores each round's interleavings itself, slowly.
    const ROUNDS: usize = if cfg!(miri) { 100 } else { 2000 };
    for round in 0..ROUNDS {
        let irp = Irp::allocate(1).unwrap();
        // SAFETY: the counters outlive every completion.
        unsafe {
            irp.set_completion_routine(count, core::ptr::from_ref(&*counters).cast_mut().cast());
        };
        // SAFETY: the provider takes and pends it.
        let handle = unsafe { io::start(irp.as_ptr(), "provider") };
        // SAFETY: owned by the provider; the queue outlives it.
        unsafe { queue.pend(handle, round) };
        let completer = {
            let queue = queue.clone();
            let kernel = kernel.clone();
            thread::spawn(move || {
                let _enter = kernel.enter();
                // SAFETY: pended in this queue.
                if let Some(_round) = unsafe { queue.take(handle) } {
                    // SAFETY: taken back: the provider owns it.
                    irql::run_at(DISPATCH_LEVEL, || unsafe {
                        io::complete(handle, STATUS_SUCCESS, 0);
                    });
                }
            })
        };
        // Vary who wins: sometimes the completer, sometimes the cancel.
        for _ in 0..round % 16 {
            thread::yield_now();
        }
        let _ = irp.cancel();
        completer.join().unwrap();
        assert_eq!(
            completions.load(Ordering::SeqCst),
            round + 1,
            "round {round}"
        );
        drop(irp);
    }
    assert!(queue.is_empty());
    eprintln!(
        "cancel race: {} of {ROUNDS} IRPs were cancelled",
        cancelled.load(Ordering::SeqCst)
    );
    kernel.assert_no_leaks();
}

#[test]
fn reuse_resets_the_irp_for_another_request() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let log = Arc::new(Mutex::new(Vec::new()));
    let top = probe("client", STATUS_MORE_PROCESSING_REQUIRED, &log);
    let mut irp = Irp::allocate(1).unwrap();
    for round in 0..3_usize {
        // SAFETY: as above; reused IRPs need the routine set again.
        unsafe { irp.set_completion_routine(probe_routine, context(&top)) };
        // SAFETY: the provider takes and completes it.
        let handle = unsafe { io::start(irp.as_ptr(), "provider") };
        // SAFETY: owned by the provider.
        unsafe { io::complete(handle, STATUS_SUCCESS, round) };
        assert_eq!(irp.information(), round);
        irp.reuse();
        assert_eq!(
            irp.status(),
            NtStatus::UNSUCCESSFUL,
            "IoReuseIrp leaves the given status"
        );
        assert_eq!(irp.information(), 0);
    }
    assert_eq!(who(&log).len(), 3);
    drop(irp);
    kernel.assert_no_leaks();
}

#[test]
fn a_provider_completion_from_a_dpc_runs_at_dispatch_level_on_another_thread() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let log = Arc::new(Mutex::new(Vec::new()));
    let top = probe("client", STATUS_MORE_PROCESSING_REQUIRED, &log);
    let irp = Irp::allocate(1).unwrap();
    let done = wsk::Event::new(wsk::EventKind::Notification, false).unwrap();

    struct Both<'a> {
        probe: &'a Probe,
        done: &'a wsk::Event,
    }
    unsafe extern "system" fn routine(
        device: *mut c_void,
        irp: *mut IRP,
        context: *mut c_void,
    ) -> NTSTATUS {
        // SAFETY: the test's `Both`, alive until `done` is set and waited for.
        let both = unsafe { &*context.cast::<Both<'_>>() };
        // SAFETY: forwarded from the I/O manager.
        let status = unsafe {
            probe_routine(
                device,
                irp,
                core::ptr::from_ref(both.probe).cast_mut().cast(),
            )
        };
        both.done.set();
        status
    }
    let both = Both {
        probe: &top,
        done: &done,
    };
    // SAFETY: `both` outlives the completion (the test waits for `done`).
    unsafe { irp.set_completion_routine(routine, core::ptr::from_ref(&both).cast_mut().cast()) };
    // SAFETY: the provider takes it and completes it from its DPC.
    let handle = unsafe { io::start(irp.as_ptr(), "provider") };
    // SAFETY: owned by the provider.
    unsafe { io::complete_from_dpc(&kernel, handle, STATUS_SUCCESS, 0) };
    let passive = wsk::PassiveLevel::check().unwrap();
    done.wait(&passive.at_most_apc(), Some(Duration::from_secs(10)))
        .unwrap();
    let seen = log.lock().unwrap()[0].clone();
    assert_eq!(seen.irql, DISPATCH_LEVEL);
    assert_ne!(seen.thread, thread::current().id());
    drop(irp);
    drop(done);
    kernel.assert_no_leaks();
}

#[test]
#[should_panic(expected = "BUGCHECK MULTIPLE_IRP_COMPLETE_REQUESTS")]
fn completing_twice_bugchecks() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let log = Arc::new(Mutex::new(Vec::new()));
    let top = probe("client", STATUS_MORE_PROCESSING_REQUIRED, &log);
    let irp = Irp::allocate(1).unwrap();
    // SAFETY: as above.
    unsafe { irp.set_completion_routine(probe_routine, context(&top)) };
    // SAFETY: the provider takes and completes it, then wrongly completes it again.
    let handle = unsafe { io::start(irp.as_ptr(), "provider") };
    // SAFETY: owned by the provider.
    unsafe { io::complete(handle, STATUS_SUCCESS, 0) };
    // SAFETY: deliberately broken: the verifier must stop it.
    unsafe { io::complete(handle, STATUS_SUCCESS, 0) };
}

#[test]
#[should_panic(expected = "must return STATUS_MORE_PROCESSING_REQUIRED")]
fn a_top_level_routine_that_lets_completion_continue_bugchecks() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let log = Arc::new(Mutex::new(Vec::new()));
    let top = probe("client", STATUS_SUCCESS, &log);
    let irp = Irp::allocate(1).unwrap();
    // SAFETY: as above (the routine's result is deliberately wrong).
    unsafe { irp.set_completion_routine(probe_routine, context(&top)) };
    // SAFETY: the provider takes and completes it.
    let handle = unsafe { io::start(irp.as_ptr(), "provider") };
    // SAFETY: owned by the provider.
    unsafe { io::complete(handle, STATUS_SUCCESS, 0) };
}

#[test]
#[should_panic(expected = "IoFreeIrp")]
fn freeing_an_irp_in_flight_bugchecks() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let irp = Irp::allocate(1).unwrap();
    // SAFETY: the provider takes the IRP; the client then wrongly frees it.
    let _handle = unsafe { io::start(irp.as_ptr(), "provider") };
    drop(irp);
}

#[test]
#[should_panic(expected = "IoReuseIrp")]
fn reusing_an_irp_in_flight_bugchecks() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let mut irp = Irp::allocate(1).unwrap();
    // SAFETY: the provider takes the IRP; the client then wrongly reuses it.
    let _handle = unsafe { io::start(irp.as_ptr(), "provider") };
    irp.reuse();
}

#[test]
#[should_panic(expected = "NO_MORE_IRP_STACK_LOCATIONS")]
fn passing_an_irp_down_without_a_stack_location_bugchecks() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let irp = Irp::allocate(1).unwrap();
    // SAFETY: one location: the second pass is out of stack.
    let _first = unsafe { io::start(irp.as_ptr(), "provider") };
    // SAFETY: deliberately broken.
    let _second = unsafe { io::start(irp.as_ptr(), "lower") };
}

#[test]
fn irp_allocation_failure_is_a_typed_error_and_zero_locations_are_rejected() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    kernel.inject_faults(wsk::emulator::FaultPlan {
        fail_first_irps: 1,
        ..Default::default()
    });
    assert_eq!(
        Irp::allocate(1).unwrap_err(),
        wsk::Error::InsufficientResources(NtStatus::INSUFFICIENT_RESOURCES)
    );
    assert!(Irp::allocate(1).is_ok(), "only the first allocation fails");
    assert_eq!(
        Irp::allocate(0).unwrap_err(),
        wsk::Error::InvalidArgument(NtStatus::INVALID_PARAMETER)
    );
    assert_eq!(
        Irp::allocate(200).unwrap_err(),
        wsk::Error::InvalidArgument(NtStatus::INVALID_PARAMETER)
    );
    kernel.assert_no_leaks();
}

#[test]
#[should_panic(expected = "IoCompleteRequest")]
fn completing_a_freed_irp_bugchecks() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let irp = Irp::allocate(1).unwrap();
    let raw = irp.as_ptr();
    drop(irp);
    // SAFETY: deliberately a completion after free: the verifier checks the
    // IRP against its registry before touching it, and stops.
    unsafe { wsk::emulator::exports::IofCompleteRequest(raw, 0) };
}
