//! Running futures in a driver: [`block_on`] for a `PASSIVE_LEVEL` thread,
//! and [`Executor`], which runs spawned tasks on the work items of a device
//! object.
//!
//! # The executor
//! Tasks are `'static + Send` futures kept in tagged non-paged pool (no
//! global allocator needed). They are polled at `PASSIVE_LEVEL` on system
//! worker threads, through work items of the device object the driver
//! passes (`IoAllocateWorkItem`, `IoQueueWorkItem`: the I/O manager holds
//! the device, and so the driver image, while a work item runs), and woken
//! from completion routines and timer DPCs at `DISPATCH_LEVEL`. There is no
//! thread per task: at most [`WORKERS`] work items run at once, each
//! polling whatever tasks are ready.
//!
//! A task whose operations keep completing inline would never return
//! `Pending`; each poll has a budget of [`BUDGET`] completed operations,
//! after which the task yields (wakes itself and returns `Pending`) so the
//! tasks queued behind it run, and a work item that has run
//! [`TASKS_PER_RUN`] tasks queues itself again rather than holding a system
//! worker thread.
//!
//! ```no_run
//! # fn demo(device: wsk::DeviceObject, provider: wsk::Provider) -> Result<(), wsk::Error> {
//! use wsk::{Executor, Family, PassiveLevel};
//! let passive = PassiveLevel::check().unwrap();
//! let executor = Executor::new(device)?;
//! let remote = "192.0.2.1:80".parse().unwrap();
//! let task = executor.spawn(async move {
//!     let connection = provider.socket_connect(Family::V4.unspecified(), remote).await?;
//!     connection.close_gracefully().await
//! })?;
//! let outcome = wsk::block_on(&passive, task)?; // or `.await` it in another task
//! let report = executor.shutdown(&passive, core::time::Duration::from_secs(5));
//! # let _ = (outcome, report); Ok(()) }
//! ```
//!
//! Tasks may move between worker threads, so a task cannot carry an IRQL
//! token from the thread that spawned it (a token proves something about
//! one thread only); a task that needs one checks for its own
//! (`PassiveLevel::check()`: work items run at `PASSIVE_LEVEL`):
//!
//! ```compile_fail
//! # fn demo(executor: &wsk::Executor) {
//! let passive = wsk::PassiveLevel::check().unwrap();
//! let _ = executor.spawn(async move {
//!     let _token = passive; // error: `PassiveLevel` is not `Send`
//! });
//! # }
//! ```
//!
//! # Shutting down
//! [`Executor::shutdown`] (or dropping the executor at `PASSIVE_LEVEL`)
//! aborts every task, waits within a bound for the workers to drop their
//! futures (which cancels their IRPs and closes their sockets), and waits
//! for the work items to return. It is the executor's own: deregistering a
//! registration does not shut an executor down. Shut the executor down
//! first, then deregister.

mod block_on;
mod state;
mod task;

use core::future::Future;
use core::marker::PhantomData;
use core::pin::Pin;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use core::task::{Context, Poll};
use core::time::Duration;

pub use self::block_on::block_on;
pub use self::task::BUDGET;
pub(crate) use self::task::consume_budget;
use self::task::{Header, TaskRef};
use crate::abi::{DEVICE_OBJECT, DelayedWorkQueue, IO_WORKITEM};
use crate::error::{Error, Result};
use crate::kernel::device::DeviceObject;
use crate::kernel::event::{EventKind, RawEvent};
use crate::kernel::irql::PassiveLevel;
use crate::kernel::pool::{PoolBox, PoolTag};
use crate::kernel::spinlock::SpinLock;
use crate::kernel::time::Deadline;
use crate::objects::tracking::List;
use crate::status::NtStatus;
use crate::sys;

/// How many work items of one executor may run at once.
///
/// # IRQL
/// Any (a constant).
pub const WORKERS: usize = 2;

/// How many tasks one work item runs before it queues itself again.
///
/// # IRQL
/// Any (a constant).
pub const TASKS_PER_RUN: usize = 32;

/// Executor blocks.
const EXECUTOR_TAG: PoolTag = PoolTag::new(*b"WskY");

/// How often shutdown looks again for work items still running.
const SHUTDOWN_POLL: Duration = Duration::from_millis(5);

/// Runs spawned tasks on the work items of a device object.
///
/// # IRQL
/// Create, spawn and abort at `DISPATCH_LEVEL` or below; shut down at
/// `PASSIVE_LEVEL`.
pub struct Executor {
    block: ExecutorRef,
}

/// A handle to spawn tasks on an [`Executor`] from anywhere (a task, a
/// dispatch routine), cheap to clone.
///
/// # IRQL
/// `DISPATCH_LEVEL` or below.
#[derive(Clone)]
pub struct Spawner {
    block: ExecutorRef,
}

/// The output of a spawned task: awaiting it gives the future's output, or
/// [`Error::Cancelled`] if the task was aborted. Dropping it lets the task
/// run on, detached.
///
/// # IRQL
/// Poll, abort and drop at `DISPATCH_LEVEL` or below.
#[must_use = "dropping a join handle detaches the task"]
pub struct JoinHandle<T> {
    task: Option<TaskRef>,
    _output: PhantomData<fn() -> T>,
}

/// What [`Executor::shutdown`] found.
///
/// # IRQL
/// Any.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Tasks still live at shutdown: aborted (their futures dropped).
    pub aborted_tasks: usize,
    /// Tasks whose future had not been dropped when the bound passed (a
    /// poll that would not return): left running, their blocks kept.
    pub unfinished_tasks: usize,
    /// Work items still running when the bound passed: not freed.
    pub busy_workers: usize,
}

impl ShutdownReport {
    /// Whether nothing was left running.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub const fn is_clean(&self) -> bool {
        self.unfinished_tasks == 0 && self.busy_workers == 0
    }
}

impl Executor {
    /// An executor whose tasks run on work items of `device`.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// [`Error::InsufficientResources`] when the executor block or its work
    /// items cannot be allocated.
    pub fn new(device: DeviceObject) -> Result<Self> {
        let init = |raw: *mut ExecutorBlock| {
            // SAFETY: a fresh block of the right size and alignment.
            unsafe {
                raw.write(ExecutorBlock {
                    refs: AtomicUsize::new(1),
                    queue: SpinLock::new(RunQueue::new()),
                    tasks: SpinLock::new(List::new()),
                    live: AtomicUsize::new(0),
                    active_workers: AtomicUsize::new(0),
                    shut_down: AtomicBool::new(false),
                    idle: RawEvent::zeroed(),
                    device: SpinLock::new(None),
                    slots: [const { Slot::empty() }; WORKERS],
                });
            };
            // SAFETY: initialised just now; nothing else refers to it yet.
            let written = unsafe { &mut *raw };
            for slot in &mut written.slots {
                slot.block = raw;
            }
            // SAFETY: initialised just now; only the address is taken.
            let idle = unsafe { &raw mut (*raw).idle };
            // SAFETY: the event is at its final, non-paged address.
            unsafe { RawEvent::init(idle, EventKind::Notification, false) };
        };
        // SAFETY: `init` initialises every field.
        let block = unsafe { PoolBox::new_with(EXECUTOR_TAG, init)? }.into_raw();
        // INVARIANT: the one reference counted at creation.
        let executor = Self {
            block: ExecutorRef { block },
        };
        let shared = executor.block.get();
        for slot in &shared.slots {
            // SAFETY: a live device (the reference `device` holds).
            let item = unsafe { sys::IoAllocateWorkItem(device.as_ptr()) };
            if item.is_null() {
                // Dropping the executor frees the work items allocated so far.
                return Err(Error::InsufficientResources(
                    NtStatus::INSUFFICIENT_RESOURCES,
                ));
            }
            slot.item.store(item, Ordering::Release);
        }
        *shared.device.lock() = Some(device);
        Ok(executor)
    }

    /// Spawns `future` as a task.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// [`Error::InsufficientResources`] when the task cannot be allocated;
    /// [`Error::Cancelled`] once the executor is shutting down.
    pub fn spawn<F>(&self, future: F) -> Result<JoinHandle<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.block.spawn(future)
    }

    /// A handle that spawns on this executor.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn spawner(&self) -> Spawner {
        Spawner {
            block: self.block.clone(),
        }
    }

    /// How many tasks have not finished.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn live_tasks(&self) -> usize {
        self.block.get().live.load(Ordering::Acquire)
    }

    /// Aborts every task and waits at most `bound` for their futures to be
    /// dropped and for the work items to return; then frees the work items
    /// and lets go of the device object, so that join handles or spawners
    /// the driver forgot do not keep the driver image loaded. If something
    /// is still running when the bound passes, the report says so and
    /// everything it may touch stays allocated.
    ///
    /// The IRQL is checked again (a token may be stale): above
    /// `PASSIVE_LEVEL` it aborts the tasks without waiting.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL` (the token proves it).
    #[must_use = "the report says what was left running"]
    pub fn shutdown(self, _irql: &PassiveLevel, bound: Duration) -> ShutdownReport {
        self.shut_down(bound)
    }

    fn shut_down(&self, bound: Duration) -> ShutdownReport {
        let block = self.block.get();
        let mut report = ShutdownReport::default();
        if block.shut_down.swap(true, Ordering::SeqCst) {
            return report;
        }
        loop {
            let next = block.tasks.lock().pop_for_sweep();
            let Some(task) = next else { break };
            if task.force().1 {
                report.aborted_tasks += 1;
            }
        }
        // A token proves the IRQL only when it was made: look again.
        let Ok(passive) = PassiveLevel::check() else {
            // Above PASSIVE_LEVEL nothing may wait: the workers drop the
            // aborted futures; the block, its work items and its device
            // reference stay.
            report.unfinished_tasks = block.live.load(Ordering::Acquire);
            report.busy_workers = block.active_workers.load(Ordering::Acquire);
            core::mem::forget(self.block.clone());
            return report;
        };
        let deadline = Deadline::after(bound);
        let waits = passive.at_most_apc();
        let busy = || {
            block.live.load(Ordering::Acquire) != 0
                || block.active_workers.load(Ordering::Acquire) != 0
        };
        while busy() {
            let left = deadline.remaining();
            if left.is_zero() {
                break;
            }
            block.idle.clear();
            if busy() {
                let _ = block.idle.wait(&waits, Some(left.min(SHUTDOWN_POLL)));
            }
        }
        report.unfinished_tasks = block.live.load(Ordering::Acquire);
        report.busy_workers = block.active_workers.load(Ordering::Acquire);
        if report.is_clean() {
            // Nothing can queue a work item any more (no live task, no
            // spawn): free them, and let go of the device, so that handles
            // the driver forgot (a join handle, a spawner) do not hold it.
            for slot in &block.slots {
                slot.free();
            }
            let device = block.device.lock().take();
            drop(device);
        } else {
            // Something may still run: the block and its work items stay.
            core::mem::forget(self.block.clone());
        }
        report
    }
}

impl Drop for Executor {
    /// Shuts down as [`Executor::shutdown`] does (bounded by 10 s) at
    /// `PASSIVE_LEVEL`; above it, aborts every task without waiting, and
    /// keeps what may still run allocated.
    fn drop(&mut self) {
        let _ = self.shut_down(Duration::from_secs(10));
    }
}

impl core::fmt::Debug for Executor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Executor")
            .field("live_tasks", &self.live_tasks())
            .finish_non_exhaustive()
    }
}

impl Spawner {
    /// Spawns `future` as a task; see [`Executor::spawn`].
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    ///
    /// # Errors
    /// As [`Executor::spawn`].
    pub fn spawn<F>(&self, future: F) -> Result<JoinHandle<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.block.spawn(future)
    }
}

impl core::fmt::Debug for Spawner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Spawner").finish_non_exhaustive()
    }
}

impl<T> JoinHandle<T> {
    /// Aborts the task: its future is dropped (cancelling its IRPs) by a
    /// worker, and awaiting the handle gives [`Error::Cancelled`] unless the
    /// task had already finished.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL` or below.
    pub fn abort(&self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl<T: Send + 'static> Future for JoinHandle<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let Some(task) = &self.task else {
            panic!("a join handle polled after it completed");
        };
        let output = task.poll_output(cx.waker());
        if output.is_ready() {
            self.task = None;
        }
        output
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.detach();
        }
    }
}

impl<T> core::fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.task.is_none())
            .finish()
    }
}

// ------------------------------------------------------------ the block

/// One work item of the executor.
struct Slot {
    /// Null before allocation and once freed.
    item: AtomicPtr<IO_WORKITEM>,
    /// Queued or running: the work item may not be queued again.
    busy: AtomicBool,
    /// The block this slot is in (the work item's context is the slot).
    block: *const ExecutorBlock,
}

impl Slot {
    const fn empty() -> Self {
        Self {
            item: AtomicPtr::new(ptr::null_mut()),
            busy: AtomicBool::new(false),
            block: ptr::null(),
        }
    }

    /// Frees the work item, if allocated; the caller knows it is not
    /// queued.
    fn free(&self) {
        let item = self.item.swap(ptr::null_mut(), Ordering::AcqRel);
        if !item.is_null() {
            // SAFETY: allocated by IoAllocateWorkItem, not queued (the
            // caller's knowledge), freed once (swapped out).
            unsafe { sys::IoFreeWorkItem(item) };
        }
    }
}

/// The tasks ready to run, oldest first: an intrusive list through
/// `Header::next`.
struct RunQueue {
    head: *mut Header,
    tail: *mut Header,
}

// SAFETY: the pointers are followed only under the queue's lock.
unsafe impl Send for RunQueue {}

impl RunQueue {
    const fn new() -> Self {
        Self {
            head: ptr::null_mut(),
            tail: ptr::null_mut(),
        }
    }

    /// Appends a task, taking over its reference.
    fn push(&mut self, task: TaskRef) {
        let header = task.into_raw();
        // SAFETY: the reference just given keeps it alive; under the lock.
        unsafe { set_next(header.as_ptr(), ptr::null_mut()) };
        if self.tail.is_null() {
            self.head = header.as_ptr();
        } else {
            // SAFETY: a queued task is alive (the queue holds a reference).
            unsafe { set_next(self.tail, header.as_ptr()) };
        }
        self.tail = header.as_ptr();
    }

    const fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    /// Takes the oldest task and the queue's reference to it.
    fn pop(&mut self) -> Option<TaskRef> {
        let head = NonNull::new(self.head)?;
        // SAFETY: queued, so alive.
        let link = unsafe { &head.as_ref().next };
        // SAFETY: under the queue's lock, nobody else touches the link.
        self.head = unsafe { *link.get() };
        if self.head.is_null() {
            self.tail = ptr::null_mut();
        }
        // SAFETY: the queue's reference, handed over.
        Some(unsafe { TaskRef::from_raw(head) })
    }
}

/// Sets a queued task's run-queue link.
///
/// # Safety
/// `header` is a live task; the queue's lock is held.
unsafe fn set_next(header: *mut Header, next: *mut Header) {
    // SAFETY: live per the contract.
    let link = unsafe { &(*header).next };
    // SAFETY: under the queue's lock, nobody else touches the link.
    unsafe { *link.get() = next };
}

/// The executor's shared block.
///
/// # Invariants
/// `refs` counts the [`Executor`], every [`Spawner`], every task, and every
/// queued work item.
struct ExecutorBlock {
    refs: AtomicUsize,
    queue: SpinLock<RunQueue>,
    /// Live tasks, for shutdown.
    tasks: SpinLock<List>,
    live: AtomicUsize,
    /// Work items queued or running.
    active_workers: AtomicUsize,
    shut_down: AtomicBool,
    /// Set when the last task finishes or the last work item ends.
    idle: RawEvent,
    /// The device object the work items run against, until shutdown.
    device: SpinLock<Option<DeviceObject>>,
    slots: [Slot; WORKERS],
}

/// A counted reference to an executor block.
///
/// # Invariants
/// The block is live and this value owns one reference.
pub(crate) struct ExecutorRef {
    block: NonNull<ExecutorBlock>,
}

// SAFETY: the block's shared state is atomic or behind its locks; work
// items may be queued from any thread.
unsafe impl Send for ExecutorRef {}
// SAFETY: as above.
unsafe impl Sync for ExecutorRef {}

impl ExecutorRef {
    const fn get(&self) -> &ExecutorBlock {
        // SAFETY: live while this reference is held (invariant).
        unsafe { self.block.as_ref() }
    }

    fn spawn<F>(&self, future: F) -> Result<JoinHandle<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let block = self.get();
        if block.shut_down.load(Ordering::SeqCst) {
            return Err(Error::Cancelled(NtStatus::CANCELLED));
        }
        let task = TaskRef::new(future, self.clone())?;
        block.live.fetch_add(1, Ordering::AcqRel);
        // SAFETY: the task's node lives in its block, which the list's
        // reference keeps until the task finishes and unlinks it.
        if !unsafe { block.tasks.lock().push(task.as_node()) } {
            // Shutdown swept meanwhile: abort it before it runs.
            task.header().locked.lock().state.cancel();
        }
        // Its first poll.
        self.push(task.clone_ref());
        Ok(JoinHandle {
            task: Some(task),
            _output: PhantomData,
        })
    }

    /// Queues a ready task (taking over its reference) and makes sure a
    /// work item will run it.
    fn push(&self, task: TaskRef) {
        self.get().queue.lock().push(task);
        self.kick();
    }

    /// Queues an idle work item, unless enough are running already.
    fn kick(&self) {
        let block = self.get();
        for slot in &block.slots {
            let item = slot.item.load(Ordering::Acquire);
            if !item.is_null() && !slot.busy.swap(true, Ordering::AcqRel) {
                block.active_workers.fetch_add(1, Ordering::AcqRel);
                block.refs.fetch_add(1, Ordering::Relaxed);
                // SAFETY: an allocated work item that is not queued (`busy`
                // was clear; it is freed only once no task is live, so not
                // under a kick); the context is the slot, whose block the
                // reference just taken keeps alive; <= DISPATCH_LEVEL.
                unsafe {
                    sys::IoQueueWorkItem(
                        item,
                        Some(worker),
                        DelayedWorkQueue,
                        ptr::from_ref(slot).cast_mut().cast(),
                    );
                };
                return;
            }
        }
    }

    /// A task finished: leaves the list of live tasks.
    fn task_done(&self, task: &TaskRef) {
        let block = self.get();
        // SAFETY: the task's own node, linked in this list or swept.
        unsafe { block.tasks.lock().remove(task.as_node()) };
        if block.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            block.idle.set();
        }
    }
}

impl Clone for ExecutorRef {
    fn clone(&self) -> Self {
        self.get().refs.fetch_add(1, Ordering::Relaxed);
        // INVARIANT: the reference just taken.
        Self { block: self.block }
    }
}

impl Drop for ExecutorRef {
    fn drop(&mut self) {
        release_block(self.block);
    }
}

fn release_block(block: NonNull<ExecutorBlock>) {
    // SAFETY: the caller held a reference.
    if unsafe { block.as_ref() }
        .refs
        .fetch_sub(1, Ordering::AcqRel)
        == 1
    {
        // SAFETY: the last reference: no task, spawner or work item is left.
        let owned = unsafe { PoolBox::from_raw(block, EXECUTOR_TAG) };
        for slot in &owned.slots {
            slot.free();
        }
        drop(owned);
    }
}

/// A work item's routine, at `PASSIVE_LEVEL` on a system worker thread:
/// runs ready tasks, at most [`TASKS_PER_RUN`] before it queues itself
/// again.
///
/// # Safety
/// Called by the I/O manager with the context `kick` gave: a slot of a live
/// executor block, whose reference the queued work item holds.
unsafe extern "system" fn worker(_device: *mut DEVICE_OBJECT, context: *mut core::ffi::c_void) {
    let slot = context.cast::<Slot>();
    // SAFETY: per the contract.
    let slot = unsafe { &*slot };
    // SAFETY: the slot's block; the queued item's reference keeps it alive
    // until the end of this routine.
    let block = unsafe { &*slot.block };
    let mut ran = 0;
    loop {
        while ran < TASKS_PER_RUN {
            let next = block.queue.lock().pop();
            let Some(task) = next else { break };
            task.run();
            ran += 1;
        }
        if ran >= TASKS_PER_RUN && !block.queue.lock().is_empty() {
            // Give the system worker thread back; carry on in a new run.
            // SAFETY: this work item's routine is running, so it may be
            // queued again (and is not freed: tasks are queued); the
            // reference carries over.
            unsafe {
                sys::IoQueueWorkItem(
                    slot.item.load(Ordering::Acquire),
                    Some(worker),
                    DelayedWorkQueue,
                    context,
                );
            };
            return;
        }
        slot.busy.store(false, Ordering::Release);
        // A task queued after the last look, whose kick found this slot
        // busy, must not be stranded: look once more.
        if block.queue.lock().is_empty() || slot.busy.swap(true, Ordering::AcqRel) {
            break;
        }
        ran = 0;
    }
    let finished = block.active_workers.fetch_sub(1, Ordering::AcqRel) == 1;
    if finished {
        block.idle.set();
    }
    // SAFETY: the queued work item's reference, given back last.
    release_block(NonNull::from(block));
}
