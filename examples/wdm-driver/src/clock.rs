//! Microseconds for the result line's `elapsed_us`.
//!
//! `KeQueryPerformanceCounter` is a HAL export (`hal.dll`; `ntoskrnl.exe`
//! only from Windows 10 2004, and not in Wine's), so it is not imported: it
//! is looked up once with `MmGetSystemRoutineAddress`, which searches the
//! kernel and the HAL. Where it cannot be found (Wine's lookup only sees a
//! `hal.dll` that is already loaded), the interrupt time stands in: what
//! wdm.h's x64 `KeQueryInterruptTime` inline reads from `KUSER_SHARED_DATA`,
//! in 100 ns units that advance with the clock tick.

use core::ffi::c_void;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::ffi::{self, UNICODE_STRING};

/// `KeQueryPerformanceCounter`'s type.
type QueryPerformanceCounter = unsafe extern "system" fn(frequency: *mut i64) -> i64;

/// `KeQueryPerformanceCounter`, once found; null before or if absent.
static PERFORMANCE_COUNTER: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());

/// `KUSER_SHARED_DATA.InterruptTime` in the kernel's mapping (wdm.h's
/// `SharedInterruptTime` on x64).
const SHARED_INTERRUPT_TIME: u64 = 0xFFFF_F780_0000_0008;

/// Looks up `KeQueryPerformanceCounter`.
///
/// # IRQL
/// `PASSIVE_LEVEL` (`MmGetSystemRoutineAddress`).
pub fn init() {
    let mut name = [0_u16; 25];
    for (unit, byte) in name.iter_mut().zip(b"KeQueryPerformanceCounter") {
        *unit = u16::from(*byte);
    }
    let length = u16::try_from(name.len() * 2).unwrap_or(0);
    let mut name = UNICODE_STRING {
        Length: length,
        MaximumLength: length,
        Buffer: name.as_mut_ptr(),
    };
    // SAFETY: a valid name that outlives the call; PASSIVE_LEVEL.
    let routine = unsafe { ffi::MmGetSystemRoutineAddress(&raw mut name) };
    PERFORMANCE_COUNTER.store(routine, Ordering::Release);
}

/// Which clock [`now_us`] reads.
///
/// # IRQL
/// Any.
pub fn source() -> &'static str {
    if PERFORMANCE_COUNTER.load(Ordering::Acquire).is_null() {
        "interrupt-time"
    } else {
        "performance-counter"
    }
}

/// Microseconds on a monotonic clock.
///
/// # IRQL
/// Any.
pub fn now_us() -> u128 {
    let routine = PERFORMANCE_COUNTER.load(Ordering::Acquire);
    if routine.is_null() {
        return u128::from(interrupt_time()) / 10;
    }
    // SAFETY: the kernel's (or HAL's) KeQueryPerformanceCounter, found by
    // name: that is its signature.
    let query: QueryPerformanceCounter = unsafe { core::mem::transmute(routine) };
    let mut frequency = 0_i64;
    // SAFETY: writes the frequency to a valid local; any IRQL.
    let ticks = unsafe { query(&raw mut frequency) };
    let ticks = u128::try_from(ticks).unwrap_or(0);
    let frequency = u128::try_from(frequency).unwrap_or(1).max(1);
    ticks * 1_000_000 / frequency
}

/// The interrupt time, in 100 ns units since boot.
fn interrupt_time() -> u64 {
    let time: u64;
    // SAFETY: KUSER_SHARED_DATA is mapped read-only in every kernel address
    // space and readable at every IRQL; the 64-bit read is atomic on x64,
    // as wdm.h relies on. A plain `mov` from memory, which Wine's ntoskrnl
    // emulates for this page when drivers run in user mode.
    unsafe {
        core::arch::asm!(
            "mov {time}, qword ptr [{address}]",
            time = out(reg) time,
            address = in(reg) SHARED_INTERRUPT_TIME,
            options(nostack, readonly, preserves_flags),
        );
    }
    time
}
