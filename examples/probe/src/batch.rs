//! The requests of one mode, issued at once and waited for together
//! (Windows only).

use std::time::{Duration, Instant};

use crate::device::Request;
use crate::options::Options;
use crate::report::Outcome;

/// How long a request may take to complete once `CancelIoEx` was called
/// on it for exceeding its bound; then it is abandoned.
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// Runs the requests of one mode; returns their outcomes in issue order.
///
/// Issues `options.concurrency` requests with `line` at once, cancels each
/// `--cancel-after-ms` after issuing it when asked, and waits for all, each
/// within [`Options::wait_bound`].
#[must_use]
pub fn run(options: &Options, line: &[u8]) -> Vec<Outcome> {
    let bound = options.wait_bound();
    let mut slots: Vec<Slot> = (0..options.concurrency)
        .map(|_| {
            let issued = Instant::now();
            match Request::issue(&options.device, line) {
                Ok(request) => Slot {
                    request: Some(request),
                    outcome: None,
                    cancel_at: options.cancel_after.map(|after| issued + after),
                    deadline: issued + bound,
                    expired: false,
                },
                Err(outcome) => Slot::done(outcome, issued),
            }
        })
        .collect();
    loop {
        let now = Instant::now();
        let next = slots
            .iter_mut()
            .filter_map(|slot| slot.step(now, bound))
            .min();
        let Some(next) = next else { break };
        // Wait for the first request still in flight, at most until the
        // next cancel or deadline of any; the others are polled then.
        if let Some(request) = slots.iter().find_map(|slot| slot.request.as_ref()) {
            request.wait(next.saturating_duration_since(Instant::now()));
        }
    }
    slots
        .into_iter()
        .map(|slot| slot.outcome.expect("every slot ends with an outcome"))
        .collect()
}

struct Slot {
    /// `None` once the request is over (or abandoned).
    request: Option<Request>,
    outcome: Option<Outcome>,
    /// When to cancel it, until done.
    cancel_at: Option<Instant>,
    /// The bound; after expiry, the end of the grace period.
    deadline: Instant,
    /// The bound expired and the request was cancelled for it.
    expired: bool,
}

impl Slot {
    const fn done(outcome: Outcome, now: Instant) -> Self {
        Self {
            request: None,
            outcome: Some(outcome),
            cancel_at: None,
            deadline: now,
            expired: false,
        }
    }

    /// Collects the outcome if the request completed, cancels it when
    /// due; returns when to look again (`None`: over).
    fn step(&mut self, now: Instant, bound: Duration) -> Option<Instant> {
        let request = self.request.as_mut()?;
        if let Some(outcome) = request.poll() {
            self.request = None;
            self.outcome = Some(if self.expired {
                Outcome::Expired(bound)
            } else {
                outcome
            });
            return None;
        }
        if self.cancel_at.is_some_and(|at| now >= at) {
            self.cancel_at = None;
            cancel(request);
        }
        if now >= self.deadline {
            if self.expired {
                // Dropped in flight: its buffers are leaked, not freed.
                self.request = None;
                self.outcome = Some(Outcome::Abandoned(bound));
                return None;
            }
            self.expired = true;
            self.cancel_at = None;
            cancel(request);
            self.deadline = now + CANCEL_GRACE;
        }
        Some(
            self.cancel_at
                .map_or(self.deadline, |at| at.min(self.deadline)),
        )
    }
}

fn cancel(request: &Request) {
    if let Err(failure) = request.cancel() {
        eprintln!(
            "wsk-probe: CancelIoEx failed: {} (Win32 error {})",
            failure.message.trim_end(),
            failure.code
        );
    }
}
