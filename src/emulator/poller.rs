//! One readiness thread per kernel: every host socket with I/O in progress
//! is registered with a single `mio::Poll`, and the provider's pending work
//! runs there at `DISPATCH_LEVEL`, as a real provider completes I/O from
//! DPCs. Thousands of pending operations cost no thread each.

use rustc_hash::FxHashMap;
use std::boxed::Box;
use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::{self, JoinHandle, ThreadId};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use super::{Kernel, KernelInner, irql};
use crate::abi::DISPATCH_LEVEL;

/// Something registered with the poller, told when its host socket may
/// have progressed. It runs on the poller thread at `DISPATCH_LEVEL`.
pub trait Ready: Send + Sync {
    fn ready(self: Arc<Self>);
}

/// Work for the poller thread (runs at `DISPATCH_LEVEL`).
pub type Job = Box<dyn FnOnce() + Send>;

const WAKER: Token = Token(0);

/// The poller of one kernel; stopped when the kernel is dropped.
pub struct Poller {
    registry: Registry,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: ThreadId,
}

struct Shared {
    waker: Waker,
    jobs: Mutex<VecDeque<Job>>,
    sources: Mutex<FxHashMap<Token, Arc<dyn Ready>>>,
    next_token: AtomicUsize,
    stop: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Poller {
    /// Starts the poller thread of `kernel`.
    pub fn start(kernel: Weak<KernelInner>, id: u64) -> io::Result<Self> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let shared = Arc::new(Shared {
            waker: Waker::new(poll.registry(), WAKER)?,
            jobs: Mutex::new(VecDeque::new()),
            sources: Mutex::new(FxHashMap::default()),
            next_token: AtomicUsize::new(1),
            stop: AtomicBool::new(false),
        });
        let thread = {
            let shared = shared.clone();
            thread::Builder::new()
                .name(std::format!("wsk-poll-{id}"))
                .spawn(move || super::verifier::machine_thread(|| run(poll, &shared, &kernel)))?
        };
        Ok(Self {
            registry,
            shared,
            thread_id: thread.thread().id(),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Watches `fd` (read and write readiness, edge-triggered) and calls
    /// `source.ready()` when it changes. The poller keeps `source` alive
    /// until [`deregister`](Self::deregister).
    pub fn register(&self, fd: RawFd, source: Arc<dyn Ready>) -> io::Result<Token> {
        let token = Token(self.shared.next_token.fetch_add(1, Ordering::Relaxed));
        lock(&self.shared.sources).insert(token, source);
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(error) = self.registry.register(&mut SourceFd(&fd), token, interest) {
            lock(&self.shared.sources).remove(&token);
            return Err(error);
        }
        Ok(token)
    }

    /// Stops watching `fd`; events already collected for `token` are dropped.
    pub fn deregister(&self, fd: RawFd, token: Token) {
        // Failing means the descriptor was never registered or is closed:
        // either way it is no longer watched.
        let _ = self.registry.deregister(&mut SourceFd(&fd));
        lock(&self.shared.sources).remove(&token);
    }

    /// Runs `job` on the poller thread at `DISPATCH_LEVEL`.
    pub fn schedule(&self, job: Job) {
        lock(&self.shared.jobs).push_back(job);
        self.shared.wake();
    }

    /// Whether the calling thread is this poller's thread.
    pub fn is_current(&self) -> bool {
        thread::current().id() == self.thread_id
    }

    /// Stops the thread and, unless called from it, waits for it.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake();
        let thread = lock(&self.thread).take();
        if let Some(thread) = thread
            && !self.is_current()
        {
            // A panic on the poller thread was already reported there.
            let _ = thread.join();
        }
    }
}

impl Shared {
    fn wake(&self) {
        // Waking only fails if the poll is gone, i.e. the thread stopped.
        let _ = self.waker.wake();
    }
}

fn run(mut poll: Poll, shared: &Shared, kernel: &Weak<KernelInner>) {
    let mut events = Events::with_capacity(1024);
    loop {
        if let Err(error) = poll.poll(&mut events, None) {
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            panic!("the emulator's poller failed: {error}");
        }
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let Some(inner) = kernel.upgrade() else {
            return;
        };
        let _enter = Kernel { inner }.enter();
        irql::run_at(DISPATCH_LEVEL, || {
            for event in &events {
                if event.token() == WAKER {
                    continue;
                }
                // Cloned out so that `ready` runs without the map locked
                // (it may deregister itself).
                let source = lock(&shared.sources).get(&event.token()).cloned();
                if let Some(source) = source {
                    source.ready();
                }
            }
            loop {
                let job = lock(&shared.jobs).pop_front();
                let Some(job) = job else { break };
                job();
            }
        });
    }
}
