//! Seeded fault injection: allocations fail reproducibly.

use std::sync::Mutex;

/// Which allocations fail, and how often. Deterministic for a given seed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// Seed of the generator.
    pub seed: u64,
    /// Each pool allocation fails with probability `1 / pool_one_in` (0: never).
    pub pool_one_in: u32,
    /// Each `IoAllocateIrp` fails with probability `1 / irp_one_in` (0: never).
    pub irp_one_in: u32,
    /// Each `IoAllocateMdl` fails with probability `1 / mdl_one_in` (0: never).
    pub mdl_one_in: u32,
    /// The first `fail_first_pool` pool allocations fail, whatever the odds.
    pub fail_first_pool: u32,
    /// The first `fail_first_irps` IRP allocations fail, whatever the odds.
    pub fail_first_irps: u32,
}

#[derive(Clone, Copy)]
pub enum Resource {
    Pool,
    Irp,
    Mdl,
}

#[derive(Default)]
pub struct Faults {
    state: Mutex<(FaultPlan, u64)>,
}

impl Faults {
    pub(crate) fn set(&self, plan: FaultPlan) {
        // A zero state would stay zero under xorshift.
        let state = plan.seed ^ 0x9E37_79B9_7F4A_7C15;
        *self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (plan, state);
    }

    /// Whether this allocation is to fail.
    pub(crate) fn should_fail(&self, resource: Resource) -> bool {
        let mut guard = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (plan, state) = &mut *guard;
        let (first, one_in) = match resource {
            Resource::Pool => (&mut plan.fail_first_pool, plan.pool_one_in),
            Resource::Irp => (&mut plan.fail_first_irps, plan.irp_one_in),
            Resource::Mdl => (&mut 0, plan.mdl_one_in),
        };
        if *first > 0 {
            *first -= 1;
            return true;
        }
        if one_in == 0 {
            return false;
        }
        // xorshift64*
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        let draw = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        draw % u64::from(one_in) == 0
    }
}
