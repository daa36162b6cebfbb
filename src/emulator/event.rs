//! `KEVENT`: the state lives in the caller's `KEVENT` (its `SignalState`),
//! waiters sleep on one condition variable shared by all events. Setting
//! an event nobody waits for (a completion routine signalling a call that
//! completed inline) takes neither the lock nor a wake-up system call.

use core::ffi::c_void;
use core::ptr::addr_of_mut;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::irql;
use super::verifier::bugcheck;
use crate::abi::{
    BOOLEAN, EVENT_TYPE, KEVENT, LIST_ENTRY, LONG, NTSTATUS, NotificationEvent, STATUS_SUCCESS,
    STATUS_TIMEOUT, SynchronizationEvent,
};

static LOCK: Mutex<()> = Mutex::new(());
static CHANGED: Condvar = Condvar::new();
/// Threads in [`wait`] that may sleep: a setter wakes them only when there
/// are any. Each side writes its own variable, then reads the other's, all
/// `SeqCst`, so at least one sees the other: a waiter that looked before
/// the state was set is counted by then, and the setter wakes it (under
/// the lock, so the waiter is either asleep already or still holds it).
static WAITERS: AtomicUsize = AtomicUsize::new(0);

/// # Safety
/// `event` points to a `KEVENT` initialised by [`initialize`] that stays
/// where it is while in use.
unsafe fn signal_state<'a>(event: *mut KEVENT) -> &'a AtomicI32 {
    // SAFETY: a live event per the contract; this only computes the address.
    let field = unsafe { addr_of_mut!((*event).Header.SignalState) };
    // SAFETY: an aligned `i32` field of a live event; all accesses after
    // initialisation are atomic.
    unsafe { AtomicI32::from_ptr(field) }
}

/// # Safety
/// `event` points to writable memory for a `KEVENT`.
pub unsafe fn initialize(event: *mut KEVENT, kind: EVENT_TYPE, state: BOOLEAN) {
    irql::require(const { irql::rule_of("KeInitializeEvent") });
    if kind != NotificationEvent && kind != SynchronizationEvent {
        bugcheck(
            "INVALID_PARAMETER",
            format_args!("KeInitializeEvent: event type {kind}"),
        );
    }
    // SAFETY: the caller guarantees the memory.
    let header = unsafe { &mut (*event).Header };
    header.Type = u8::try_from(kind).expect("checked above");
    header.Signalling = 0;
    header.Size = 6; // sizeof(KEVENT) / sizeof(LONG)
    header.Reserved1 = 0;
    header.SignalState = LONG::from(state != 0);
    let head = addr_of_mut!(header.WaitListHead);
    header.WaitListHead = LIST_ENTRY {
        Flink: head,
        Blink: head,
    };
}

fn check(event: *mut KEVENT, function: &str) {
    // SAFETY: reading the type byte of what the caller says is an event.
    let kind = unsafe { (*event).Header.Type };
    // SAFETY: as above.
    let head = unsafe { addr_of_mut!((*event).Header.WaitListHead) };
    // SAFETY: as above.
    let flink = unsafe { (*event).Header.WaitListHead.Flink };
    if !(kind == 0 || kind == 1) || flink != head {
        bugcheck(
            "INVALID_DATA_ACCESS_TRAP",
            format_args!(
                "{function}({event:p}): not an initialised KEVENT (or it moved after KeInitializeEvent)"
            ),
        );
    }
}

pub unsafe fn set(event: *mut KEVENT) -> LONG {
    irql::require(const { irql::rule_of("KeSetEvent") });
    check(event, "KeSetEvent");
    // SAFETY: checked to be an initialised event.
    let previous = unsafe { signal_state(event) }.swap(1, Ordering::SeqCst);
    if WAITERS.load(Ordering::SeqCst) != 0 {
        let _guard = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        CHANGED.notify_all();
    }
    previous
}

pub unsafe fn clear(event: *mut KEVENT) {
    irql::require(const { irql::rule_of("KeClearEvent") });
    check(event, "KeClearEvent");
    // SAFETY: checked to be an initialised event.
    unsafe { signal_state(event) }.store(0, Ordering::Release);
}

pub unsafe fn read(event: *mut KEVENT) -> LONG {
    irql::require(const { irql::rule_of("KeReadStateEvent") });
    check(event, "KeReadStateEvent");
    // SAFETY: checked to be an initialised event.
    unsafe { signal_state(event) }.load(Ordering::Acquire)
}

/// `KeWaitForSingleObject` on an event. `timeout` is in 100 ns units:
/// negative is relative, positive an absolute system time, NULL forever.
pub unsafe fn wait(object: *mut c_void, timeout: *const i64) -> NTSTATUS {
    // SAFETY: the caller's timeout pointer is NULL or valid.
    let timeout = unsafe { timeout.as_ref() }.copied();
    if timeout == Some(0) {
        irql::require(const { irql::rule_of("KeWaitForSingleObject (zero timeout)") });
    } else {
        irql::forbid_wait("KeWaitForSingleObject");
        irql::require(const { irql::rule_of("KeWaitForSingleObject") });
    }
    let event = object.cast::<KEVENT>();
    check(event, "KeWaitForSingleObject");
    // SAFETY: checked to be an initialised event.
    let synchronization = unsafe { (*event).Header.Type } == 1;
    // SAFETY: as above.
    let state = unsafe { signal_state(event) };
    let deadline = timeout.map(deadline_of);
    if timeout != Some(0) && spin_until_set(state, synchronization, deadline) {
        return STATUS_SUCCESS;
    }
    let mut guard = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    WAITERS.fetch_add(1, Ordering::SeqCst);
    let status = loop {
        if consume(state, synchronization) {
            break STATUS_SUCCESS;
        }
        let wait = match deadline {
            None => Duration::from_hours(1),
            Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => left,
                _ => break STATUS_TIMEOUT,
            },
        };
        guard = CHANGED
            .wait_timeout(guard, wait)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    };
    WAITERS.fetch_sub(1, Ordering::SeqCst);
    drop(guard);
    status
}

/// How long a waiter looks at its event, yielding the processor, before it
/// sleeps. Completions in the emulator come from other threads (the poller,
/// DPCs) a few microseconds after the host delivered the data; a waiter
/// that sleeps at once adds a second wake-up to the one the host's own
/// blocking read has, which is most of what separates the emulator's data
/// path from the host's.
const SPIN: Duration = Duration::from_micros(50);

/// Whether the event is signalled, for this waiter: a synchronization
/// event is reset by the one waiter it releases (one set never releases
/// two), a notification event stays set.
fn consume(state: &AtomicI32, synchronization: bool) -> bool {
    if synchronization {
        state
            .compare_exchange(1, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    } else {
        state.load(Ordering::SeqCst) != 0
    }
}

/// Looks at `state` until this waiter sees it set ([`consume`]: `true`),
/// `SPIN` has passed or the deadline comes.
fn spin_until_set(state: &AtomicI32, synchronization: bool, deadline: Option<Instant>) -> bool {
    let start = Instant::now();
    let until = deadline.map_or(start + SPIN, |deadline| deadline.min(start + SPIN));
    loop {
        if consume(state, synchronization) {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::yield_now();
    }
}

/// 1970-01-01 in 100 ns units since 1601-01-01.
const UNIX_EPOCH_AS_FILETIME: u64 = 116_444_736_000_000_000;

fn deadline_of(timeout: i64) -> Instant {
    let now = Instant::now();
    if timeout < 0 {
        return now + Duration::from_nanos(timeout.unsigned_abs().saturating_mul(100));
    }
    // Absolute: 100 ns units since 1601-01-01.
    let since_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let now_filetime =
        UNIX_EPOCH_AS_FILETIME + u64::try_from(since_unix.as_nanos() / 100).unwrap_or(u64::MAX / 2);
    let target = timeout.unsigned_abs();
    now + Duration::from_nanos(target.saturating_sub(now_filetime).saturating_mul(100))
}
