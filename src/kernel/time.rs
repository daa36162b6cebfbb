//! A monotonic clock for deadlines that span several waits.
//!
//! The clock is the interrupt time (`KeQueryInterruptTime`, the wdm.h
//! inline that reads `KUSER_SHARED_DATA` on x64), in 100 ns units. It
//! advances with the clock tick (about 15.6 ms), which is fine for I/O
//! timeouts.

use core::time::Duration;

use crate::sys;

/// A point in time after which a blocking flow gives up.
///
/// # IRQL
/// Any.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    /// Interrupt time, in 100 ns units.
    end: u64,
}

impl Deadline {
    /// `timeout` from now.
    #[must_use]
    pub fn after(timeout: Duration) -> Self {
        let span = timeout.as_nanos() / 100;
        let span = u64::try_from(span).unwrap_or(u64::MAX);
        Self {
            end: sys::interrupt_time().saturating_add(span),
        }
    }

    /// The time left (zero once passed).
    #[must_use]
    pub fn remaining(&self) -> Duration {
        let left = self.end.saturating_sub(sys::interrupt_time());
        Duration::from_nanos(left.saturating_mul(100))
    }
}
