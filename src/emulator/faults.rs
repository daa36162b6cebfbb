//! Seeded fault injection: allocations fail, and the socket provider
//! misbehaves, reproducibly for a given seed (each draw comes from one
//! generator; with several threads the order of draws follows the
//! schedule, so a replay injects the same kinds at the same rates but not
//! always into the same calls).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Which faults to inject, and how often. Deterministic for a given seed.
///
/// Every `*_one_in` field is the odds of one event: `1 / n`, and 0 for
/// never.
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
    /// Low-resources simulation, as Driver Verifier's starts some minutes
    /// after boot: the allocation odds above apply only after this many
    /// allocations (pool, IRPs and MDLs together) have succeeded.
    pub warm_up_allocations: u32,
    /// A socket call (connect, send, receive, disconnect) pends and never
    /// progresses: it completes only when cancelled (`STATUS_CANCELLED`)
    /// or when its socket is closed. Later calls in the same direction
    /// queue behind it, as behind any pending call.
    pub stall_one_in: u32,
    /// A socket call's completion is held back for a random time up to
    /// [`late_by`](Self::late_by) and delivered from the DPC thread at
    /// `DISPATCH_LEVEL`, even one that could complete inline.
    pub late_one_in: u32,
    /// The longest delay of a late completion (0: 10 ms).
    pub late_by: Duration,
    /// Under [`ProviderConfig::always_pend`](super::ProviderConfig::always_pend),
    /// a call that can finish at once completes inline after all.
    pub inline_one_in: u32,
    /// The provider force-closes the socket during a call on a connection
    /// (send, receive, disconnect): that call, everything pending on the
    /// socket and every later send, receive and graceful disconnect answer
    /// `STATUS_FILE_FORCED_CLOSED` (as when the transport goes away);
    /// closing it, or an abortive disconnect, still succeeds.
    pub forced_close_one_in: u32,
    /// The peer resets the connection during a call on it: the host
    /// connection is reset, and that call, everything pending and every
    /// later transfer answer `STATUS_CONNECTION_RESET`.
    pub reset_one_in: u32,
    /// `WskCaptureProviderNPI` fails with `STATUS_DEVICE_NOT_READY`, as
    /// while the WSK subsystem is not ready.
    pub capture_one_in: u32,
    /// Delay fuzzing, as Driver Verifier's concurrency stress: each DPC,
    /// and each batch of completions the provider delivers from its poller
    /// thread once the host is ready, first waits a random time up to this
    /// (0: no waiting).
    pub jitter: Duration,
}

/// What a socket call suffers, drawn once per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFault {
    /// Pends until cancelled or closed.
    Stall,
    /// Completes after this delay, from the DPC thread.
    Late(Duration),
    /// Completes inline even under `always_pend`.
    Inline,
    /// The socket is force-closed under the call.
    ForcedClose,
    /// The connection is reset under the call.
    Reset,
}

#[derive(Clone, Copy)]
pub enum Resource {
    Pool,
    Irp,
    Mdl,
}

/// How many faults of each kind a kernel injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FaultCounts {
    /// Pool allocations failed.
    pub pool: u64,
    /// IRP allocations failed.
    pub irps: u64,
    /// MDL allocations failed.
    pub mdls: u64,
    /// Socket calls stalled until cancelled or closed.
    pub stalled: u64,
    /// Completions delivered late.
    pub late: u64,
    /// Completions made inline under `always_pend`.
    pub inline: u64,
    /// Sockets force-closed under a call.
    pub forced_close: u64,
    /// Connections reset under a call.
    pub reset: u64,
    /// Captures refused.
    pub capture: u64,
    /// DPCs and completions delayed by jitter.
    pub jitter: u64,
}

impl FaultCounts {
    /// All faults injected.
    #[must_use]
    pub const fn total(&self) -> u64 {
        self.pool
            + self.irps
            + self.mdls
            + self.stalled
            + self.late
            + self.inline
            + self.forced_close
            + self.reset
            + self.capture
            + self.jitter
    }
}

struct State {
    plan: FaultPlan,
    /// xorshift64* state; never zero.
    rng: u64,
    /// Allocations that succeeded so far (for the warm-up).
    allocations: u64,
    counts: FaultCounts,
}

impl State {
    const fn draw(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// One event with odds `1 / one_in`.
    fn one_in(&mut self, one_in: u32) -> bool {
        one_in != 0 && self.draw().is_multiple_of(u64::from(one_in))
    }

    /// A random duration in `[0, max]`.
    fn up_to(&mut self, max: Duration) -> Duration {
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.draw() % nanos.saturating_add(1))
    }
}

pub struct Faults {
    state: Mutex<State>,
    /// Whether the plan injects anything into socket calls, or delays
    /// DPCs: every call and DPC asks, so a plan without them costs one
    /// atomic load there, not a lock.
    on_calls: AtomicBool,
    on_dpcs: AtomicBool,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                plan: FaultPlan::default(),
                rng: seed_state(0),
                allocations: 0,
                counts: FaultCounts::default(),
            }),
            on_calls: AtomicBool::new(false),
            on_dpcs: AtomicBool::new(false),
        }
    }
}

/// A zero state would stay zero under xorshift.
const fn seed_state(seed: u64) -> u64 {
    match seed ^ 0x9E37_79B9_7F4A_7C15 {
        0 => 1,
        state => state,
    }
}

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a new plan (the counts carry on).
    pub(crate) fn set(&self, plan: FaultPlan) {
        let mut state = self.lock();
        state.plan = plan;
        state.rng = seed_state(plan.seed);
        state.allocations = 0;
        let on_calls = [
            plan.stall_one_in,
            plan.late_one_in,
            plan.inline_one_in,
            plan.forced_close_one_in,
            plan.reset_one_in,
        ]
        .iter()
        .any(|&one_in| one_in != 0);
        self.on_calls.store(on_calls, Ordering::Relaxed);
        self.on_dpcs
            .store(!plan.jitter.is_zero(), Ordering::Relaxed);
    }

    pub(crate) fn counts(&self) -> FaultCounts {
        self.lock().counts
    }

    /// Whether this allocation is to fail.
    pub(crate) fn should_fail(&self, resource: Resource) -> bool {
        let mut state = self.lock();
        let plan = &mut state.plan;
        let (first, one_in) = match resource {
            Resource::Pool => (&mut plan.fail_first_pool, plan.pool_one_in),
            Resource::Irp => (&mut plan.fail_first_irps, plan.irp_one_in),
            Resource::Mdl => (&mut 0, plan.mdl_one_in),
        };
        let fail = if *first > 0 {
            *first -= 1;
            true
        } else if state.allocations < u64::from(state.plan.warm_up_allocations) {
            false
        } else {
            state.one_in(one_in)
        };
        if fail {
            let counts = &mut state.counts;
            *match resource {
                Resource::Pool => &mut counts.pool,
                Resource::Irp => &mut counts.irps,
                Resource::Mdl => &mut counts.mdls,
            } += 1;
        } else {
            state.allocations += 1;
        }
        fail
    }

    /// What this socket call suffers, if anything. `on_connection`: the
    /// call is a transfer or disconnect on a connection (the only calls a
    /// reset or forced close can interrupt); `always_pend`: whether the
    /// provider pends every call (the only case an inline completion is a
    /// fault).
    pub(crate) fn socket_call(&self, on_connection: bool, always_pend: bool) -> Option<CallFault> {
        if !self.on_calls.load(Ordering::Relaxed) {
            return None;
        }
        let mut state = self.lock();
        let plan = state.plan;
        let fault = if state.one_in(plan.stall_one_in) {
            state.counts.stalled += 1;
            CallFault::Stall
        } else if on_connection && state.one_in(plan.forced_close_one_in) {
            state.counts.forced_close += 1;
            CallFault::ForcedClose
        } else if on_connection && state.one_in(plan.reset_one_in) {
            state.counts.reset += 1;
            CallFault::Reset
        } else if state.one_in(plan.late_one_in) {
            state.counts.late += 1;
            let late_by = if plan.late_by.is_zero() {
                Duration::from_millis(10)
            } else {
                plan.late_by
            };
            CallFault::Late(state.up_to(late_by))
        } else if always_pend && state.one_in(plan.inline_one_in) {
            state.counts.inline += 1;
            CallFault::Inline
        } else {
            return None;
        };
        Some(fault)
    }

    /// Whether this capture is refused.
    pub(crate) fn capture_fails(&self) -> bool {
        let mut state = self.lock();
        let one_in = state.plan.capture_one_in;
        let fail = state.one_in(one_in);
        state.counts.capture += u64::from(fail);
        fail
    }

    /// Waits a random time up to the plan's jitter (delay fuzzing).
    pub(crate) fn jitter(&self) {
        if !self.on_dpcs.load(Ordering::Relaxed) {
            return;
        }
        let delay = {
            let mut state = self.lock();
            let jitter = state.plan.jitter;
            if jitter.is_zero() {
                return;
            }
            state.counts.jitter += 1;
            state.up_to(jitter)
        };
        std::thread::sleep(delay);
    }
}
