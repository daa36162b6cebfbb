//! Kernel timers and their DPCs: `KeInitializeTimer`, `KeSetTimer`,
//! `KeCancelTimer`, `KeInitializeDpc`. One timer thread for the process
//! runs each expired timer's DPC at `DISPATCH_LEVEL`, in the kernel that
//! armed it.
//!
//! The verifier stops, as Driver Verifier does (`TIMER_OR_DPC_INVALID`),
//! when pool holding an armed timer is freed.

use core::ffi::c_void;
use core::ptr;
use std::collections::BTreeMap;
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard, Once, PoisonError};
use std::time::{Duration, Instant};

use super::verifier::bugcheck;
use super::{Kernel, irql};
use crate::abi::{
    BOOLEAN, DISPATCH_LEVEL, FALSE, KDPC, KTIMER, LIST_ENTRY, PKDEFERRED_ROUTINE, TRUE,
};

/// `TimerNotificationObject`, the dispatcher type of a `KeInitializeTimer`
/// timer.
const TIMER_NOTIFICATION_OBJECT: u8 = 8;
/// `DpcObject`.
const DPC_OBJECT: u8 = 0x13;

struct Armed {
    due: Instant,
    dpc: usize,
    kernel: Kernel,
}

#[derive(Default)]
struct Timers {
    /// By the timer's address, so a freed range is one lookup.
    armed: BTreeMap<usize, Armed>,
    /// Expired timers whose DPC routine has not returned yet.
    running: usize,
}

static TIMERS: LazyLock<(Mutex<Timers>, Condvar)> = LazyLock::new(Default::default);
static THREAD: Once = Once::new();

fn lock() -> MutexGuard<'static, Timers> {
    TIMERS.0.lock().unwrap_or_else(PoisonError::into_inner)
}

pub unsafe fn initialize_dpc(dpc: *mut KDPC, routine: PKDEFERRED_ROUTINE, context: *mut c_void) {
    irql::require(const { irql::rule_of("KeInitializeDpc") });
    let null: *mut c_void = ptr::null_mut();
    // SAFETY: the caller's KDPC storage.
    unsafe {
        dpc.write(KDPC {
            Type: DPC_OBJECT,
            Importance: 1,
            Number: 0,
            Padding: 0,
            DpcListEntry: LIST_ENTRY {
                Flink: null.cast(),
                Blink: null.cast(),
            },
            DeferredRoutine: routine,
            DeferredContext: context,
            SystemArgument1: null,
            SystemArgument2: null,
            DpcData: null,
        });
    }
}

pub unsafe fn initialize_timer(timer: *mut KTIMER) {
    irql::require(const { irql::rule_of("KeInitializeTimer") });
    if lock().armed.contains_key(&(timer as usize)) {
        bugcheck(
            "TIMER_OR_DPC_INVALID",
            format_args!("KeInitializeTimer({timer:p}) on an armed timer"),
        );
    }
    // SAFETY: the caller's KTIMER storage; only the type and the DPC
    // pointer are read back, the rest is opaque to the emulator.
    unsafe {
        timer
            .cast::<u8>()
            .write_bytes(0, core::mem::size_of::<KTIMER>());
    };
    // SAFETY: as above.
    unsafe { (*timer).Header.Type = TIMER_NOTIFICATION_OBJECT };
}

pub unsafe fn set_timer(timer: *mut KTIMER, due_time: i64, dpc: *mut KDPC) -> BOOLEAN {
    irql::require(const { irql::rule_of("KeSetTimer") });
    // SAFETY: the caller's initialised timer.
    if unsafe { (*timer).Header.Type } != TIMER_NOTIFICATION_OBJECT {
        bugcheck(
            "TIMER_OR_DPC_INVALID",
            format_args!("KeSetTimer({timer:p}): not an initialised timer"),
        );
    }
    // SAFETY: as above.
    unsafe { (*timer).Dpc = dpc };
    let due = Instant::now() + relative(due_time);
    let kernel = Kernel::current();
    THREAD.call_once(|| {
        std::thread::Builder::new()
            .name("wsk-emu-timers".into())
            .spawn(|| super::verifier::machine_thread(run))
            .expect("spawn the emulator's timer thread");
    });
    let was_armed = lock()
        .armed
        .insert(
            timer as usize,
            Armed {
                due,
                dpc: dpc as usize,
                kernel,
            },
        )
        .is_some();
    TIMERS.1.notify_all();
    if was_armed { TRUE } else { FALSE }
}

pub fn cancel_timer(timer: *mut KTIMER) -> BOOLEAN {
    irql::require(const { irql::rule_of("KeCancelTimer") });
    if lock().armed.remove(&(timer as usize)).is_some() {
        TRUE
    } else {
        FALSE
    }
}

/// `KeFlushQueuedDpcs`: returns once every DPC queued before the call has
/// run: expired timers' DPCs and the kernel's DPC queue.
pub fn flush_queued_dpcs() {
    irql::require(const { irql::rule_of("KeFlushQueuedDpcs") });
    let now = Instant::now();
    let mut timers = lock();
    while timers.running > 0 || timers.armed.values().any(|armed| armed.due <= now) {
        timers = TIMERS
            .1
            .wait_timeout(timers, Duration::from_millis(1))
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    drop(timers);
    let (done, flushed) = std::sync::mpsc::channel();
    Kernel::current().queue_dpc(move || {
        let _ = done.send(());
    });
    let _ = flushed.recv();
}

/// Bugchecks if `[start, start + len)` holds an armed timer (pool about to
/// be freed).
pub fn check_freed(start: usize, len: usize) {
    let timers = lock();
    if let Some(&timer) = timers
        .armed
        .range(start..start.saturating_add(len))
        .next()
        .map(|(timer, _)| timer)
    {
        drop(timers);
        bugcheck(
            "TIMER_OR_DPC_INVALID",
            format_args!(
                "pool at {start:#x} freed while the timer at {timer:#x} in it is still armed"
            ),
        );
    }
}

/// A due time in 100 ns units: negative is relative, positive absolute
/// system time (taken here as "already due or relative to now").
const fn relative(due_time: i64) -> Duration {
    if due_time < 0 {
        Duration::from_nanos(due_time.unsigned_abs().saturating_mul(100))
    } else {
        Duration::ZERO
    }
}

fn run() {
    let mut timers = lock();
    loop {
        let now = Instant::now();
        let next = timers
            .armed
            .iter()
            .min_by_key(|(_, armed)| armed.due)
            .map(|(&timer, armed)| (timer, armed.due));
        match next {
            None => {
                timers = TIMERS
                    .1
                    .wait(timers)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            Some((_, due)) if due > now => {
                timers = TIMERS
                    .1
                    .wait_timeout(timers, due - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            Some((timer, _)) => {
                let armed = timers.armed.remove(&timer).expect("found above");
                timers.running += 1;
                drop(timers);
                fire(&armed);
                timers = lock();
                timers.running -= 1;
                TIMERS.1.notify_all();
            }
        }
    }
}

/// Runs an expired timer's DPC in its kernel at `DISPATCH_LEVEL`.
fn fire(armed: &Armed) {
    let dpc = armed.dpc as *mut KDPC;
    if dpc.is_null() {
        return;
    }
    let _enter = armed.kernel.enter();
    // SAFETY: the timer was armed until just now, so the pool holding its
    // DPC was not freed (freeing it would have bugchecked).
    let dpc_fields = unsafe { &*dpc };
    let (routine, context) = (dpc_fields.DeferredRoutine, dpc_fields.DeferredContext);
    if let Some(routine) = routine {
        irql::run_at(DISPATCH_LEVEL, || {
            irql::run_as_callback("a DPC", || {
                // SAFETY: the routine and context its owner installed with
                // KeInitializeDpc; called as the kernel calls a DPC.
                unsafe { routine(dpc, context, ptr::null_mut(), ptr::null_mut()) };
            });
        });
    }
}
