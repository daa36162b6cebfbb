//! Work run later: one thread for the process holds each job until it is
//! due, then queues it as a DPC of the kernel it belongs to (late
//! completions of the fault injection).

use std::collections::BTreeMap;
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard, Once, PoisonError};
use std::time::{Duration, Instant};

use super::{Job, Kernel};

#[derive(Default)]
struct Queue {
    /// By due time, then by arrival (the sequence number).
    jobs: BTreeMap<(Instant, u64), (Kernel, Job)>,
    next: u64,
}

static QUEUE: LazyLock<(Mutex<Queue>, Condvar)> = LazyLock::new(Default::default);
static THREAD: Once = Once::new();

fn lock() -> MutexGuard<'static, Queue> {
    QUEUE.0.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `job` as a DPC of `kernel` once `delay` has passed.
pub fn after(kernel: &Kernel, delay: Duration, job: Job) {
    THREAD.call_once(|| {
        std::thread::Builder::new()
            .name("wsk-emu-delay".into())
            .spawn(|| super::verifier::machine_thread(run))
            .expect("spawn the emulator's delay thread");
    });
    let mut queue = lock();
    let sequence = queue.next;
    queue.next += 1;
    queue
        .jobs
        .insert((Instant::now() + delay, sequence), (kernel.clone(), job));
    drop(queue);
    QUEUE.1.notify_one();
}

fn run() {
    let mut queue = lock();
    loop {
        let now = Instant::now();
        let wait = match queue.jobs.first_key_value() {
            Some((&(due, _), _)) if due <= now => {
                let (_, (kernel, job)) = queue.jobs.pop_first().expect("just seen");
                drop(queue);
                kernel.inner().queue_dpc(job);
                // Dropped before the queue is locked again: it may be the
                // machine's last handle.
                drop(kernel);
                queue = lock();
                continue;
            }
            Some((&(due, _), _)) => due - now,
            None => Duration::from_hours(1),
        };
        queue = QUEUE
            .1
            .wait_timeout(queue, wait)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}
