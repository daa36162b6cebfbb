//! The driver image as a whole: what must end before it may unload.
//!
//! It also caches what the library reads once about the system it runs
//! on: the Windows build.
//!
//! A timer DPC of [`sleep`](crate::sleep) or [`timeout`](crate::timeout)
//! runs code of the driver image, so no timer may stay armed once the
//! driver's last registration is gone: the image keeps its armed timers in
//! one list, and the last deregistration cancels them.
//!
//! In the Windows kernel there is one image, a `static`. Under the emulator
//! each [`Kernel`](crate::emulator::Kernel) is a machine of its own with its
//! own image, so parallel tests do not share timers.

use core::sync::atomic::{AtomicUsize, Ordering};

use super::idle::Idle;
use super::spinlock::SpinLock;
use super::timer::IdleTimer;
use super::version::BuildCache;
use crate::objects::tracking::{DeregisterReport, List};

/// How many ended timers the image keeps for the next `sleep` or `timeout`.
const IDLE_TIMERS: usize = 8;

/// The image's timers, under one lock.
pub struct Timers {
    /// Armed timers (`sleep`, `timeout`).
    pub(crate) armed: List,
    /// Ended timers set aside for reuse while a registration is open.
    pub(crate) idle: Idle<IdleTimer, IDLE_TIMERS>,
}

/// What the driver image holds across registrations.
pub struct Image {
    /// Armed and idle timers.
    pub(crate) timers: SpinLock<Timers>,
    /// Registrations not yet deregistered.
    registrations: AtomicUsize,
    /// The Windows build, once read (see [`version`](super::version)).
    pub(crate) os_build: BuildCache,
}

impl Image {
    /// An image with nothing armed and no registration.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            timers: SpinLock::new(Timers {
                armed: List::new(),
                idle: Idle::closed(),
            }),
            registrations: AtomicUsize::new(0),
            os_build: BuildCache::new(),
        }
    }

    /// A registration begins: timers may be armed again, and ended ones
    /// are kept for reuse.
    pub(crate) fn registration_opened(&self) {
        if self.registrations.fetch_add(1, Ordering::AcqRel) == 0 {
            let mut timers = self.timers.lock();
            timers.armed.reopen();
            timers.idle.reopen();
        }
    }

    /// A registration ends. The last one cancels every armed timer (their
    /// futures end with [`Error::Cancelled`](crate::Error::Cancelled)) and
    /// counts them in `forced`.
    pub(crate) fn registration_closed(&self, forced: &mut DeregisterReport) {
        if self.registrations.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        loop {
            let next = self.timers.lock().armed.pop_for_sweep();
            let Some(timer) = next else { break };
            let (what, cancelled) = timer.force();
            if cancelled {
                forced.count(what);
            }
        }
        // The list stays swept: a timer armed now fails with
        // `Error::Cancelled` until a registration opens again. Idle timers
        // are freed (outside the lock), and ended ones from now on too.
        let idle = self.timers.lock().idle.close();
        drop(idle);
    }
}

impl Default for Image {
    fn default() -> Self {
        Self::new()
    }
}

/// The image this code runs in.
#[cfg(not(wsk_emulator))]
#[must_use]
pub fn current() -> &'static Image {
    static IMAGE: Image = Image::new();
    &IMAGE
}

/// The image of the current emulated machine.
#[cfg(wsk_emulator)]
#[must_use]
pub fn current() -> &'static Image {
    crate::emulator::Kernel::current().inner().image
}
