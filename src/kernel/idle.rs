//! A few finished objects set aside for the next user, as a kernel
//! lookaside list keeps freed blocks: the socket blocks of closed
//! connections, with their operations (per registration),
//! and the timers of ended timeouts (per driver image), so that a driver
//! connecting or timing out again and again allocates nothing in steady
//! state.
//!
//! The owner keeps an [`Idle`] behind its spin lock. Once the owner ends
//! (deregistration, the driver's last one for timers) it
//! [`close`](Idle::close)s the set, takes back what is in it, and
//! whatever is put afterwards is handed back to be freed, so nothing set
//! aside outlives its owner.

use heapless::Vec;

/// Whether blocks may be set aside for reuse: always in the kernel. The
/// emulator can turn reuse off ([`Kernel::set_reuse`]), so that every
/// block goes back to the pool, through its poisoned quarantine of freed
/// blocks, and a use after free on a reuse path shows.
///
/// [`Kernel::set_reuse`]: crate::emulator::Kernel::set_reuse
#[cfg(not(wsk_emulator))]
#[must_use]
pub const fn reuse_allowed() -> bool {
    true
}

/// Whether blocks may be set aside for reuse: as the current emulated
/// machine says ([`Kernel::set_reuse`](crate::emulator::Kernel::set_reuse)).
#[cfg(wsk_emulator)]
#[must_use]
pub fn reuse_allowed() -> bool {
    crate::emulator::reuse_allowed()
}

/// Up to `N` idle objects, and whether the set still takes any.
///
/// # IRQL
/// Any (the owner's spin lock guards it).
pub struct Idle<T, const N: usize> {
    items: Vec<T, N>,
    closed: bool,
}

impl<T, const N: usize> Idle<T, N> {
    /// An empty, open set.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            items: Vec::new(),
            closed: false,
        }
    }

    /// An empty set that takes nothing until [`reopen`](Self::reopen)ed.
    #[must_use]
    pub const fn closed() -> Self {
        Self {
            items: Vec::new(),
            closed: true,
        }
    }

    /// Sets `item` aside. When the set is full or closed it comes back
    /// (`Some`), and the caller frees it, outside the owner's lock.
    pub fn put(&mut self, item: T) -> Option<T> {
        if self.closed || !reuse_allowed() {
            return Some(item);
        }
        self.items.push(item).err()
    }

    /// The object set aside last, if any.
    pub fn take(&mut self) -> Option<T> {
        self.items.pop()
    }

    /// Takes no more, and hands back everything set aside (to be freed
    /// outside the owner's lock).
    pub fn close(&mut self) -> Vec<T, N> {
        self.closed = true;
        core::mem::take(&mut self.items)
    }

    /// Takes objects again (the driver image's timers, when a registration
    /// opens after the last one closed).
    pub const fn reopen(&mut self) {
        self.closed = false;
    }
}

impl<T, const N: usize> Default for Idle<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::Idle;

    #[test]
    fn full_or_closed_sets_hand_items_back() {
        let mut idle = Idle::<u32, 2>::new();
        assert_eq!(idle.put(1), None);
        assert_eq!(idle.put(2), None);
        assert_eq!(idle.put(3), Some(3), "full");
        assert_eq!(idle.take(), Some(2));
        let drained = idle.close();
        assert_eq!(drained.as_slice(), &[1]);
        assert_eq!(idle.put(4), Some(4), "closed");
        assert_eq!(idle.take(), None);
        idle.reopen();
        assert_eq!(idle.put(5), None);
        assert_eq!(idle.take(), Some(5));
    }
}
