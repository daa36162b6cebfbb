//! A monotonic clock (`KeQueryPerformanceCounter`, exported on every
//! Windows and by Wine) for deadlines that span several waits.

use core::time::Duration;

use crate::sys;

/// A point in time after which a blocking flow gives up.
///
/// # IRQL
/// Any.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    end: u128,
    frequency: u128,
}

fn now() -> (u128, u128) {
    let mut frequency = 0_i64;
    // SAFETY: writes the frequency to a valid local; callable at any IRQL.
    let ticks = unsafe { sys::KeQueryPerformanceCounter(&raw mut frequency) };
    (
        u128::try_from(ticks).unwrap_or(0),
        u128::try_from(frequency).unwrap_or(1).max(1),
    )
}

impl Deadline {
    /// `timeout` from now.
    #[must_use]
    pub fn after(timeout: Duration) -> Self {
        let (ticks, frequency) = now();
        let span = timeout.as_nanos().saturating_mul(frequency) / 1_000_000_000;
        Self {
            end: ticks.saturating_add(span),
            frequency,
        }
    }

    /// The time left (zero once passed).
    #[must_use]
    pub fn remaining(&self) -> Duration {
        let (ticks, _) = now();
        let left = self.end.saturating_sub(ticks);
        let nanos = left.saturating_mul(1_000_000_000) / self.frequency;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}
