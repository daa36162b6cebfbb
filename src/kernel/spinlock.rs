//! `KSPIN_LOCK` with a guard: [`SpinLock`] protects a value, and holding the
//! lock means running at `DISPATCH_LEVEL`.
//!
//! Unlike a plain atomic spin flag, acquiring raises the IRQL first
//! (`KeAcquireSpinLockRaiseToDpc`), so a thread holding the lock cannot be
//! pre-empted by one that spins on it on the same processor.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};

use crate::abi::{KIRQL, KSPIN_LOCK};
use crate::sys;

/// A value behind a kernel spin lock.
///
/// # IRQL
/// [`lock`](Self::lock) at `DISPATCH_LEVEL` or below; the guard holds the
/// thread at `DISPATCH_LEVEL` until it drops. Code under the lock must not
/// wait, touch paged memory, or call anything that may take the same lock
/// (a completion routine that runs inline, for one).
///
/// # Invariants
/// `value` is only touched through a guard, which exists while `lock` is
/// held.
pub struct SpinLock<T> {
    lock: UnsafeCell<KSPIN_LOCK>,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands the value to one thread at a time.
unsafe impl<T: Send> Send for SpinLock<T> {}
// SAFETY: as above: `&SpinLock` only gives access through the lock.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// An unlocked lock (`KeInitializeSpinLock` stores zero).
    ///
    /// # IRQL
    /// Any.
    pub const fn new(value: T) -> Self {
        Self {
            lock: UnsafeCell::new(0),
            value: UnsafeCell::new(value),
        }
    }

    /// The value, without taking the lock: `&mut self` proves nobody else
    /// can reach it.
    ///
    /// # IRQL
    /// Any.
    pub const fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }

    /// Raises to `DISPATCH_LEVEL` and takes the lock.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below, which every caller of the library's
    /// non-blocking paths runs at.
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        // SAFETY: a live lock word; the guard releases it exactly once;
        // IRQL <= DISPATCH_LEVEL (the library's rule for every non-blocking
        // path).
        let old_irql = unsafe { sys::KeAcquireSpinLockRaiseToDpc(self.lock.get()) };
        SpinLockGuard {
            lock: self,
            old_irql,
            _not_send: PhantomData,
        }
    }
}

/// Holds a [`SpinLock`]; releases it (and restores the IRQL) on drop.
///
/// Not `Send`: the lock must be released on the processor (thread) that took
/// it, which returns to its own previous IRQL.
#[must_use = "the lock is released when the guard drops"]
pub struct SpinLockGuard<'a, T> {
    lock: &'a SpinLock<T>,
    old_irql: KIRQL,
    _not_send: PhantomData<*const ()>,
}

impl<T> Deref for SpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the lock is held (invariant of the lock).
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the lock is held, and `&mut self` makes this access unique.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinLockGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this guard acquired the lock at `old_irql`; released once.
        unsafe { sys::KeReleaseSpinLock(self.lock.lock.get(), self.old_irql) };
    }
}
