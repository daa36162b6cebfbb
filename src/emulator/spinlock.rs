//! `KSPIN_LOCK`: raise to `DISPATCH_LEVEL`, then spin on the lock word.
//!
//! The emulated lock word is the caller's `KSPIN_LOCK` itself, used as an
//! atomic. Acquiring a lock this thread already holds spins forever on
//! Windows; here it bugchecks, as Driver Verifier's deadlock detection does.

use core::sync::atomic::{AtomicUsize, Ordering};

use super::irql;
use super::verifier::bugcheck;
use crate::abi::{DISPATCH_LEVEL, KIRQL, KSPIN_LOCK};

/// The lock word of a held lock: the holder's thread tag (never 0).
fn holder() -> usize {
    std::thread_local! {
        static TAG: u8 = const { 0 };
    }
    TAG.with(|tag| core::ptr::from_ref(tag) as usize)
}

fn word<'a>(lock: *mut KSPIN_LOCK) -> &'a AtomicUsize {
    if lock.is_null() || !lock.cast::<AtomicUsize>().is_aligned() {
        bugcheck(
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format_args!("spin lock at {lock:p} is NULL or misaligned"),
        );
    }
    // SAFETY: a live, aligned KSPIN_LOCK (a usize) of the caller's, which
    // every thread accesses only through these atomics.
    unsafe { AtomicUsize::from_ptr(lock) }
}

/// `KeAcquireSpinLockRaiseToDpc`: raises to `DISPATCH_LEVEL` and returns the
/// IRQL to restore.
pub fn acquire(lock: *mut KSPIN_LOCK) -> KIRQL {
    irql::require(const { irql::rule_of("KeAcquireSpinLockRaiseToDpc") });
    let word = word(lock);
    let me = holder();
    if word.load(Ordering::Relaxed) == me {
        bugcheck(
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format_args!("spin lock at {lock:p} acquired recursively: a deadlock on Windows"),
        );
    }
    let old = irql::raise_raw(DISPATCH_LEVEL);
    let mut spins = 0u32;
    while word
        .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        spins += 1;
        if spins.is_multiple_of(64) {
            // The holder may be a host thread that was preempted.
            std::thread::yield_now();
        } else {
            core::hint::spin_loop();
        }
    }
    old
}

/// `KeReleaseSpinLock`: releases the lock and lowers to `new_irql`.
pub fn release(lock: *mut KSPIN_LOCK, new_irql: KIRQL) {
    let word = word(lock);
    if word
        .compare_exchange(holder(), 0, Ordering::Release, Ordering::Relaxed)
        .is_err()
    {
        bugcheck(
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format_args!("KeReleaseSpinLock({lock:p}) by a thread that does not hold it"),
        );
    }
    if irql::current() != DISPATCH_LEVEL {
        bugcheck(
            "IRQL_NOT_GREATER_OR_EQUAL",
            format_args!("KeReleaseSpinLock({lock:p}) below DISPATCH_LEVEL"),
        );
    }
    irql::lower_raw(new_irql);
}
