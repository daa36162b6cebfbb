//! One spawned task: its future (then its output) and its state in one
//! tagged non-paged pool block, shared by the executor, the run queue, the
//! join handle and every waker through a reference count.
//!
//! The block's header is type-erased (a hand-made vtable) so that the run
//! queue and the wakers handle tasks of every future type alike.

use core::cell::UnsafeCell;
use core::future::Future;
use core::mem::ManuallyDrop;
use core::pin::Pin;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use core::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use super::ExecutorRef;
use super::state::{Schedule, Start, State};
use crate::error::{Error, Result};
use crate::kernel::pool::{PoolBox, PoolTag};
use crate::kernel::spinlock::SpinLock;
use crate::objects::tracking::{Kind, Node, What, try_retain};
use crate::status::NtStatus;

/// Task blocks.
pub const TAG: PoolTag = PoolTag::new(*b"WskX");

/// How many times one poll of a task may find an operation already
/// complete before the task yields.
///
/// # IRQL
/// Any (a constant).
pub const BUDGET: u32 = 128;

/// The lock-protected part of a task.
pub struct Locked {
    pub state: State,
    /// The join handle's waker.
    pub join_waker: Option<Waker>,
    /// Whether the output was taken.
    pub taken: bool,
}

/// The type-erased header, first in every task block.
///
/// # Invariants
/// `refs` counts the join handle, the executor's list (until the task is
/// done), the run queue (while queued), a worker polling it, every waker,
/// and a shutdown sweep that retained it.
#[repr(C)]
pub struct Header {
    /// In the executor's list of live tasks (for shutdown).
    pub node: Node,
    /// The run queue's link, touched under the queue's lock.
    pub next: UnsafeCell<*mut Self>,
    pub refs: AtomicUsize,
    pub locked: SpinLock<Locked>,
    /// What is left of the current poll's budget (only the polling worker
    /// touches it).
    pub budget: AtomicU32,
    pub executor: ExecutorRef,
    vtable: &'static TaskVTable,
}

// SAFETY: shared state is atomic or under the task's lock; the future and
// output are touched by one party at a time, as the state says; the list
// node and the queue link are touched only under their lists' locks.
#[allow(clippy::non_send_fields_in_send_ty, reason = "see the SAFETY comment")]
unsafe impl Send for Header {}
// SAFETY: as above.
unsafe impl Sync for Header {}

struct TaskVTable {
    /// Polls the future; `Ready` once the output is stored.
    poll: unsafe fn(NonNull<Header>, &mut Context<'_>) -> Poll<()>,
    /// Drops the future and stores the cancelled output.
    cancel: unsafe fn(NonNull<Header>),
    /// Moves the output to `*mut Result<T>`.
    take_output: unsafe fn(NonNull<Header>, *mut ()),
    /// Frees the block (dropping whatever it still holds).
    dealloc: unsafe fn(NonNull<Header>),
}

enum Stage<F: Future> {
    Running(F),
    Finished(Result<F::Output>),
    Taken,
}

#[repr(C)]
struct Task<F: Future> {
    header: Header,
    stage: UnsafeCell<Stage<F>>,
}

impl<F: Future + Send + 'static> Task<F>
where
    F::Output: Send,
{
    const VTABLE: &'static TaskVTable = &TaskVTable {
        poll: poll::<F>,
        cancel: cancel::<F>,
        take_output: take_output::<F>,
        dealloc: dealloc::<F>,
    };
}

/// The tracking kind of tasks: a shutdown sweep aborts them.
pub const KIND: &Kind = &Kind {
    what: What::Task,
    retain,
    force,
};

/// A counted reference to a task.
///
/// # Invariants
/// The block is live and this value owns one reference.
pub struct TaskRef {
    header: NonNull<Header>,
}

// SAFETY: see `Header`.
unsafe impl Send for TaskRef {}
// SAFETY: see `Header`.
unsafe impl Sync for TaskRef {}

impl TaskRef {
    /// Allocates a task for `future`, queued for its first poll, with two
    /// references: the one returned and the executor list's.
    pub fn new<F>(future: F, executor: ExecutorRef) -> Result<Self>
    where
        F: Future + Send + 'static,
        F::Output: Send,
    {
        // Built in place in pool: a future may be large, and a kernel stack
        // is small.
        let init = |slot: *mut Task<F>| {
            let task = Task {
                header: Header {
                    node: Node::new(KIND),
                    next: UnsafeCell::new(ptr::null_mut()),
                    refs: AtomicUsize::new(2),
                    locked: SpinLock::new(Locked {
                        state: State::queued(),
                        join_waker: None,
                        taken: false,
                    }),
                    budget: AtomicU32::new(BUDGET),
                    executor,
                    vtable: Task::<F>::VTABLE,
                },
                stage: UnsafeCell::new(Stage::Running(future)),
            };
            // SAFETY: a fresh block of the right size and alignment.
            unsafe { slot.write(task) };
        };
        // SAFETY: `init` initialises the whole block.
        let block = unsafe { PoolBox::new_with(TAG, init)? };
        // INVARIANT: one of the two references counted at creation.
        Ok(Self {
            header: block.into_raw().cast(),
        })
    }

    /// Takes back a reference given away with [`into_raw`](Self::into_raw).
    ///
    /// # Safety
    /// `header` carries one reference its holder gives up.
    pub const unsafe fn from_raw(header: NonNull<Header>) -> Self {
        // INVARIANT: per the contract.
        Self { header }
    }

    /// Gives up this reference without dropping it.
    pub const fn into_raw(self) -> NonNull<Header> {
        let header = self.header;
        core::mem::forget(self);
        header
    }

    /// One more reference.
    pub fn clone_ref(&self) -> Self {
        self.header().refs.fetch_add(1, Ordering::Relaxed);
        // INVARIANT: the reference just taken.
        Self {
            header: self.header,
        }
    }

    pub const fn header(&self) -> &Header {
        // SAFETY: live while this reference is held (invariant).
        unsafe { self.header.as_ref() }
    }

    pub const fn as_node(&self) -> NonNull<Node> {
        self.header.cast()
    }

    /// Runs the task once on a worker at `PASSIVE_LEVEL`: polls it (or
    /// drops its future if it was aborted), then puts it back on the run
    /// queue if it was woken meanwhile. Consumes the run queue's reference.
    pub fn run(self) {
        let header = self.header();
        let start = header.locked.lock().state.start();
        let done = match start {
            Start::Poll => {
                header.budget.store(BUDGET, Ordering::Relaxed);
                // The waker borrows this reference: no count changes for
                // a poll that does not keep it.
                let waker = ManuallyDrop::new(
                    // SAFETY: the vtable's contract: the data is a live
                    // header, kept alive by `self` during the poll.
                    unsafe { Waker::from_raw(RawWaker::new(self.header.as_ptr().cast(), &WAKER)) },
                );
                let mut cx = Context::from_waker(&waker);
                // SAFETY: this worker alone polls (the task is Running).
                unsafe { (header.vtable.poll)(self.header, &mut cx) }.is_ready()
            }
            Start::Cancel => {
                // SAFETY: as above: the future is this worker's to drop.
                unsafe { (header.vtable.cancel)(self.header) };
                true
            }
        };
        if done {
            self.finish();
        } else if header.locked.lock().state.pending() {
            let executor = header.executor.clone();
            executor.push(self);
        }
    }

    /// The future finished or was dropped: wakes the join handle and leaves
    /// the executor's list.
    fn finish(self) {
        let header = self.header();
        // Off the executor's books first, so that a join handle that sees
        // the output also sees the task no longer live.
        header.executor.task_done(&self);
        let join_waker = {
            let mut locked = header.locked.lock();
            locked.state.finish();
            locked.join_waker.take()
        };
        if let Some(waker) = join_waker {
            waker.wake();
        }
        // The list's reference: the task is no longer live.
        release(self.header);
    }

    /// Asks the task to stop: the next worker to take it drops its future.
    pub fn abort(&self) {
        let queue = self.header().locked.lock().state.cancel();
        if queue {
            let executor = self.header().executor.clone();
            executor.push(self.clone_ref());
        }
    }

    /// Polls for the output, registering `waker` meanwhile.
    pub fn poll_output<T>(&self, waker: &Waker) -> Poll<Result<T>> {
        let header = self.header();
        let mut locked = header.locked.lock();
        if locked.state.schedule() != Schedule::Done {
            if !locked
                .join_waker
                .as_ref()
                .is_some_and(|old| old.will_wake(waker))
            {
                let old = locked.join_waker.replace(waker.clone());
                drop(locked);
                drop(old);
            }
            return Poll::Pending;
        }
        assert!(!locked.taken, "a join handle's output is taken once");
        locked.taken = true;
        drop(locked);
        let mut output = core::mem::MaybeUninit::<Result<T>>::uninit();
        // SAFETY: done: nobody else touches the stage; `T` is the future's
        // output type (the join handle is typed by it).
        unsafe { (header.vtable.take_output)(self.header, output.as_mut_ptr().cast()) };
        // SAFETY: written just now.
        Poll::Ready(unsafe { output.assume_init() })
    }

    /// The join handle goes away: the output, if any, is dropped with the
    /// block.
    pub fn detach(self) {
        let waker = self.header().locked.lock().join_waker.take();
        drop(waker);
    }
}

impl Drop for TaskRef {
    fn drop(&mut self) {
        release(self.header);
    }
}

/// Drops one reference; the last frees the block.
fn release(header: NonNull<Header>) {
    // SAFETY: the caller held a reference.
    let shared = unsafe { header.as_ref() };
    if shared.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
        // SAFETY: the last reference.
        unsafe { (shared.vtable.dealloc)(header) };
    }
}

/// Polls the task's future once.
///
/// # Safety
/// `header` heads a live `Task<F>`, and the caller is the worker that set
/// it running (the only party touching the stage).
unsafe fn poll<F>(header: NonNull<Header>, cx: &mut Context<'_>) -> Poll<()>
where
    F: Future + Send + 'static,
    F::Output: Send,
{
    // SAFETY: the header is the first field of a live `Task<F>`.
    let task = unsafe { header.cast::<Task<F>>().as_ref() };
    // SAFETY: only the running worker touches the stage.
    let stage = unsafe { &mut *task.stage.get() };
    let Stage::Running(future) = stage else {
        return Poll::Ready(());
    };
    // SAFETY: the future never moves: it lives in the pool block until it
    // is dropped in place.
    let future = unsafe { Pin::new_unchecked(future) };
    match future.poll(cx) {
        Poll::Ready(output) => {
            *stage = Stage::Finished(Ok(output));
            Poll::Ready(())
        }
        Poll::Pending => Poll::Pending,
    }
}

/// Drops the future in place and stores the cancelled output.
///
/// # Safety
/// As for [`poll`].
unsafe fn cancel<F>(header: NonNull<Header>)
where
    F: Future + Send + 'static,
    F::Output: Send,
{
    // SAFETY: as in `poll`.
    let task = unsafe { header.cast::<Task<F>>().as_ref() };
    // SAFETY: only the running worker touches the stage. Replacing the
    // stage drops the future in place (its IRPs are cancelled).
    unsafe { *task.stage.get() = Stage::Finished(Err(Error::Cancelled(NtStatus::CANCELLED))) };
}

/// Moves the output out.
///
/// # Safety
/// `header` heads a live, done `Task<F>` whose output was not taken; the
/// caller is its join handle; `out` points at a `Result<F::Output>` to
/// write.
unsafe fn take_output<F>(header: NonNull<Header>, out: *mut ())
where
    F: Future + Send + 'static,
    F::Output: Send,
{
    // SAFETY: as in `poll`.
    let task = unsafe { header.cast::<Task<F>>().as_ref() };
    // SAFETY: done; the join handle alone takes the output.
    let stage = unsafe { &mut *task.stage.get() };
    match core::mem::replace(stage, Stage::Taken) {
        // SAFETY: `out` points at a `Result<F::Output>` (the join handle's
        // type).
        Stage::Finished(output) => unsafe { out.cast::<Result<F::Output>>().write(output) },
        _ => unreachable!("a done task holds its output until taken"),
    }
}

/// Frees the block.
///
/// # Safety
/// `header` heads a `Task<F>` whose last reference the caller dropped.
unsafe fn dealloc<F>(header: NonNull<Header>)
where
    F: Future + Send + 'static,
    F::Output: Send,
{
    // SAFETY: the last reference to a block from `PoolBox::into_raw` of a
    // `Task<F>`; dropping it drops what the stage still holds.
    drop(unsafe { PoolBox::from_raw(header.cast::<Task<F>>(), TAG) });
}

// ------------------------------------------------------------ wakers

static WAKER: RawWakerVTable = RawWakerVTable::new(clone_waker, wake, wake_by_ref, drop_waker);

const fn header_of(data: *const ()) -> NonNull<Header> {
    NonNull::new(data.cast_mut().cast::<Header>()).expect("a task waker's data is its header")
}

fn clone_waker(data: *const ()) -> RawWaker {
    // SAFETY: every waker holds a reference (or borrows the poller's).
    unsafe { header_of(data).as_ref() }
        .refs
        .fetch_add(1, Ordering::Relaxed);
    RawWaker::new(data, &WAKER)
}

fn wake(data: *const ()) {
    wake_by_ref(data);
    drop_waker(data);
}

/// At any IRQL <= `DISPATCH_LEVEL` (a completion routine, a timer DPC).
fn wake_by_ref(data: *const ()) {
    let header = header_of(data);
    // SAFETY: the waker's reference keeps it alive.
    let shared = unsafe { header.as_ref() };
    if shared.locked.lock().state.wake() {
        shared.refs.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the reference just taken, handed to the run queue.
        shared.executor.push(unsafe { TaskRef::from_raw(header) });
    }
}

fn drop_waker(data: *const ()) {
    release(header_of(data));
}

/// Whether the task polling with `cx` may go on; `false` once it has used
/// up its budget in this poll, after waking itself so that it runs again
/// after the tasks queued behind it. Futures of other executors always go
/// on.
pub fn consume_budget(cx: &Context<'_>) -> bool {
    let waker = cx.waker();
    if !ptr::eq(waker.vtable(), &raw const WAKER) {
        return true;
    }
    // SAFETY: our waker: its data is a live header.
    let header = unsafe { header_of(waker.data()).as_ref() };
    let left = header.budget.load(Ordering::Relaxed);
    if left == 0 {
        waker.wake_by_ref();
        return false;
    }
    header.budget.store(left - 1, Ordering::Relaxed);
    true
}

// ------------------------------------------------------------ shutdown

/// The sweep's `retain` for a task.
///
/// # Safety
/// `node` is the node of an allocated task, under the lock.
unsafe fn retain(node: NonNull<Node>) -> bool {
    // SAFETY: per the contract; the node is the header's first field.
    try_retain(&unsafe { node.cast::<Header>().as_ref() }.refs)
}

/// The sweep's `force` for a task: aborts it.
///
/// # Safety
/// `node` is the node of a task retained by the sweep.
unsafe fn force(node: NonNull<Node>) -> bool {
    // SAFETY: the retained reference, taken over here.
    let task = unsafe { TaskRef::from_raw(node.cast()) };
    let live = task.header().locked.lock().state.schedule() != Schedule::Done;
    task.abort();
    live
}
