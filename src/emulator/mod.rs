//! A user-mode stand-in for the parts of the Windows kernel and of the WSK
//! provider that the library uses, so driver networking code runs under
//! `cargo test`.
//!
//! The library calls the same functions here that it imports from
//! `ntoskrnl.exe` and `netio.sys` in the kernel ([`exports`]), with the same
//! signatures and the same rules:
//!
//! - IRPs with stack locations and completion routines run as the I/O manager
//!   runs them (`STATUS_MORE_PROCESSING_REQUIRED` stops completion),
//!   `IoCancelIrp` with cancel routines, `IoReuseIrp`;
//! - `KEVENT` with timed waits; a per-thread IRQL, with provider completions
//!   delivered at `DISPATCH_LEVEL` from another thread;
//! - `RtlGetVersion`, reporting the build [`ProviderConfig::os_build`] sets;
//! - tagged pool with per-tag accounting of what is still outstanding;
//! - `WskRegister`, `WskCaptureProviderNPI`, `WskReleaseProviderNPI` and
//!   `WskDeregister` with their blocking semantics;
//! - a WSK socket provider over real host sockets (IPv4 and IPv6):
//!   `WskSocket`, `WskSocketConnect`, bind, connect, `WskConnectEx` (with the
//!   host's TCP Fast Open), send, receive, disconnect, close, addresses and
//!   `TCP_FASTOPEN` through `WskControlSocket`. Calls complete inline when
//!   they can, otherwise from one poller thread per kernel at
//!   `DISPATCH_LEVEL` ([`ProviderConfig::always_pend`] forces the latter).
//!
//! Breaking a kernel rule (waiting above `APC_LEVEL`, freeing an IRP the
//! provider still owns, completing an IRP twice, a wrong pool tag, ...) fails
//! loudly like a bugcheck: a panic whose message starts with `BUGCHECK` and
//! names the rule. Inside a routine called through a function pointer (a
//! completion routine, a provider dispatch entry) that panic cannot unwind
//! and aborts the process, as a bugcheck stops the machine.
//!
//! # Kernels
//! Each [`Kernel`] is an independent machine: its own accounting, provider
//! state and fault injection, so tests can run in parallel. A thread uses the
//! kernel it [entered](Kernel::enter), or a process-wide default one.
//!
//! IRQL: `PASSIVE_LEVEL`, `APC_LEVEL`, `DISPATCH_LEVEL` are tracked per thread;
//! the functions here check them as the kernel's documentation states.

#![allow(
    clippy::significant_drop_tightening,
    clippy::option_if_let_else,
    reason = "emulator code favours plain lock scopes and matches"
)]

mod delay;
mod device;
mod event;
pub mod exports;
mod faults;
pub mod io;
mod irp;
pub mod irql;
mod mdl;
pub mod names;
mod poller;
mod pool;
mod provider;
mod sockets;
mod spinlock;
mod timer;
mod verifier;
mod version;

use std::boxed::Box;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::string::String;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread_local;
use std::time::Duration;
use std::vec::Vec;

pub use device::Device;
pub use faults::{FaultCounts, FaultPlan};
pub use irql::{IRQL_RULES, IrqlRule};
pub use provider::ProviderConfig;
pub use sockets::FastOpenStats;

/// One emulated machine: kernel accounting, the WSK provider, fault injection.
///
/// Cloning gives another handle to the same machine.
///
/// # IRQL
/// Any: this is host-side test scaffolding.
#[derive(Clone)]
pub struct Kernel {
    inner: Arc<KernelInner>,
}

pub(crate) struct KernelInner {
    id: u64,
    pub(crate) provider: provider::Provider,
    pub(crate) faults: faults::Faults,
    dpc: Mutex<Option<mpsc::Sender<Job>>>,
    /// Started by the first socket that waits for the host.
    poller: OnceLock<poller::Poller>,
    pub(crate) fast_open: sockets::FastOpenCounters,
    /// The driver image loaded on this machine: its armed timers and cached
    /// OS build, as each machine loads its own copy of the driver. Leaked on
    /// purpose (a few dozen bytes per machine): a timer block keeps a
    /// `'static` pointer to the list it is in, as in the kernel.
    pub(crate) image: &'static crate::kernel::image::Image,
    /// What may still be outstanding when the machine is dropped.
    leaks_allowed: Mutex<LeaksAllowed>,
    /// Allocations made so far, by kind.
    pub(crate) allocated: [AtomicU64; 3],
    /// Completion routines and DPCs of this machine running now.
    pub(crate) callbacks: AtomicUsize,
    /// Data indication lists clients kept (`STATUS_PENDING`) and have not
    /// released.
    pub(crate) indications_kept: AtomicUsize,
    /// Whether the library may set blocks aside for reuse.
    reuse: AtomicBool,
    this: Weak<Self>,
}

/// What a machine may leave outstanding when it is dropped.
#[derive(Clone, Default)]
enum LeaksAllowed {
    /// Nothing: any leak bugchecks.
    #[default]
    Nothing,
    /// Pool of these tags (see [`Kernel::assert_no_leaks_except`]).
    Tags(Vec<[u8; 4]>),
    /// Anything (see [`Kernel::expect_leaks`]).
    Anything,
}

type Job = Box<dyn FnOnce() + Send>;

impl Kernel {
    /// A fresh machine with a ready WSK provider (`WSK` version 1.0).
    #[must_use]
    pub fn new() -> Self {
        Self::with_provider(ProviderConfig::default())
    }

    /// A fresh machine whose provider is configured by `config`.
    #[must_use]
    pub fn with_provider(config: ProviderConfig) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let inner = Arc::new_cyclic(|this| KernelInner {
            id,
            provider: provider::Provider::new(config),
            faults: faults::Faults::default(),
            dpc: Mutex::new(None),
            poller: OnceLock::new(),
            fast_open: sockets::FastOpenCounters::default(),
            image: Box::leak(Box::new(crate::kernel::image::Image::new())),
            leaks_allowed: Mutex::new(LeaksAllowed::Nothing),
            allocated: Default::default(),
            callbacks: AtomicUsize::new(0),
            indications_kept: AtomicUsize::new(0),
            reuse: AtomicBool::new(true),
            this: this.clone(),
        });
        Self { inner }
    }

    /// Makes this the kernel of the current thread until the guard drops.
    #[must_use = "the kernel is current only while the guard lives"]
    pub fn enter(&self) -> EnterGuard {
        let previous = CURRENT.with(|current| current.replace(Some(self.clone())));
        EnterGuard { previous }
    }

    /// The kernel of the current thread: the one entered last, or the
    /// process-wide default.
    #[must_use]
    pub fn current() -> Self {
        CURRENT
            .with(|current| current.borrow().clone())
            .unwrap_or_else(|| DEFAULT.get_or_init(Self::new).clone())
    }

    /// Whether the provider is attached, as `netio.sys` is once loaded. While
    /// it is not, `WskCaptureProviderNPI` waits (or fails with
    /// `STATUS_NOINTERFACE` under `WSK_NO_WAIT`).
    pub fn set_provider_ready(&self, ready: bool) {
        self.inner.provider.set_ready(ready);
    }

    /// How long `WskDeregister` may block before the verifier reports the
    /// captures and sockets that were never released (default 20 s).
    pub fn set_deregister_deadline(&self, deadline: Duration) {
        self.inner.provider.set_deregister_deadline(deadline);
    }

    /// Seeded fault injection: allocations of pool, IRPs and MDLs fail, and
    /// the socket provider stalls, delays, resets and force-closes, as the
    /// plan says, reproducibly for a given seed.
    pub fn inject_faults(&self, plan: FaultPlan) {
        self.inner.faults.set(plan);
    }

    /// How many pool blocks, IRPs and MDLs this machine has handed out so
    /// far (freed or not): the difference across a piece of work is what
    /// it allocated, exactly.
    #[must_use]
    pub fn allocations(&self) -> Allocations {
        let [pool, irps, mdls] = self
            .inner
            .allocated
            .each_ref()
            .map(|count| count.load(Ordering::Relaxed));
        Allocations { pool, irps, mdls }
    }

    /// How many faults of each kind this machine has injected so far.
    #[must_use]
    pub fn faults_injected(&self) -> FaultCounts {
        self.inner.faults.counts()
    }

    /// What this machine still has outstanding.
    ///
    /// Right after the last operation's completion was signalled, its
    /// completion routine may still be returning and freeing what it holds:
    /// to count leaks, use [`settled_usage`](Self::settled_usage).
    #[must_use]
    pub fn usage(&self) -> Usage {
        self.inner.usage()
    }

    /// Whether the library may set blocks aside for reuse on this machine
    /// (closed sockets' blocks, socket-creating and transfer operations,
    /// timers): on by default, as in the kernel. Off, every block goes back
    /// to the pool and through its poisoned quarantine of freed blocks, so
    /// that a use after free on a reuse path is caught. Set it before
    /// registering: what was set aside already stays in use.
    pub fn set_reuse(&self, reuse: bool) {
        if !reuse {
            REUSE_OFF_SOMEWHERE.store(true, Ordering::Relaxed);
        }
        self.inner.reuse.store(reuse, Ordering::Relaxed);
    }

    /// Waits until no completion routine or DPC of this machine is running
    /// (at most 2 s), as a driver image cannot unload before its routines
    /// have returned. A routine that signalled the end of the last
    /// operation has then also freed what it held.
    pub fn settle(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while self.inner.callbacks.load(Ordering::SeqCst) != 0
            && std::time::Instant::now() < deadline
        {
            std::thread::yield_now();
        }
    }

    /// [`settle`](Self::settle), then [`usage`](Self::usage): what is
    /// outstanding once every routine running has returned, which is
    /// what a leak check should read.
    #[must_use]
    pub fn settled_usage(&self) -> Usage {
        self.settle();
        self.usage()
    }

    /// Checks every pool block this machine freed and still holds in the
    /// quarantine for writes after free, then gives the blocks back to the
    /// host. Also done by [`assert_no_leaks`](Self::assert_no_leaks) and
    /// when the machine is dropped.
    ///
    /// # Panics
    /// Stops like Driver Verifier (`DRIVER_VERIFIER_DETECTED_VIOLATION`),
    /// naming the block, its tag and the offset written, if one was
    /// written after it was freed.
    pub fn check_freed_pool(&self) {
        pool::check_freed_pool(self.inner.id);
    }

    /// Lets this machine be dropped with resources outstanding, for a test
    /// that leaks on purpose. Otherwise dropping the last handle to a
    /// machine that still holds pool, IRPs, MDLs, captures or sockets
    /// stops like Driver Verifier at an unload that leaks.
    pub fn expect_leaks(&self) {
        *self.inner.leaks_allowed() = LeaksAllowed::Anything;
    }

    /// Panics with the list of what is still outstanding, as Driver
    /// Verifier reports leaks when a driver unloads.
    ///
    /// A completion routine that has just signalled the end of the last
    /// operation may still be returning, and frees what it holds on its way
    /// out (as the image of a driver cannot unload before its routines have
    /// returned): the check allows such routines a moment (up to 2 s)
    /// before it reports.
    #[track_caller]
    pub fn assert_no_leaks(&self) {
        self.assert_no_leaks_except(&[]);
    }

    /// [`assert_no_leaks`](Self::assert_no_leaks), but pool of the given
    /// tags (such as the blocks of handles a test forgot on purpose, and
    /// the registration block they count) is allowed to stay. IRPs, MDLs,
    /// registrations, captures and sockets must all be gone.
    #[track_caller]
    pub fn assert_no_leaks_except(&self, tags: &[[u8; 4]]) {
        {
            let mut allowed = self.inner.leaks_allowed();
            if !matches!(*allowed, LeaksAllowed::Anything) {
                *allowed = LeaksAllowed::Tags(tags.to_vec());
            }
        }
        self.settle();
        self.check_freed_pool();
        let outstanding = |usage: &mut Usage| {
            usage.pool.retain(|tag, _| !tags.contains(&tag.0));
            !usage.is_empty()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let mut usage = self.usage();
        while outstanding(&mut usage) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
            usage = self.usage();
        }
        assert!(usage.is_empty(), "leaks at unload: {usage}");
    }

    /// What the host's TCP Fast Open did for this machine's `WskConnectEx`
    /// calls made after setting `TCP_FASTOPEN`.
    #[must_use]
    pub fn fast_open_stats(&self) -> FastOpenStats {
        self.inner.fast_open.snapshot()
    }

    /// Runs `job` on this kernel's DPC thread at `DISPATCH_LEVEL`, as a
    /// provider completes I/O from a DPC.
    pub fn queue_dpc(&self, job: impl FnOnce() + Send + 'static) {
        self.inner.queue_dpc(Box::new(job));
    }

    pub(crate) fn inner(&self) -> &KernelInner {
        &self.inner
    }

    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }
}

impl Default for Kernel {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kernel")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

impl KernelInner {
    pub(crate) fn queue_dpc(&self, job: Job) {
        let mut dpc = self
            .dpc
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let sender = dpc.get_or_insert_with(|| {
            let (sender, receiver) = mpsc::channel::<Job>();
            let kernel = self.this.clone();
            std::thread::Builder::new()
                .name(std::format!("wsk-emu-dpc-{}", self.id))
                .spawn(move || verifier::machine_thread(|| dpc_thread(&kernel, &receiver)))
                .expect("spawn the emulator's DPC thread");
            sender
        });
        sender
            .send(job)
            .expect("the DPC thread lives as long as its kernel");
    }
}

impl KernelInner {
    /// The socket provider's poller (its thread starts on first use).
    pub(crate) fn poller(&self) -> &poller::Poller {
        self.poller.get_or_init(|| {
            poller::Poller::start(self.this.clone(), self.id)
                .expect("start the emulator's poller thread")
        })
    }
}

impl KernelInner {
    fn usage(&self) -> Usage {
        let mut usage = verifier::usage_of(self.id);
        let provider = self.provider.usage();
        usage.registrations = provider.registrations;
        usage.captures = provider.captures;
        usage.sockets = provider.sockets;
        usage.address_lists = names::outstanding(self.id);
        usage.indications_kept = self.indications_kept.load(Ordering::SeqCst);
        usage
    }

    fn leaks_allowed(&self) -> std::sync::MutexGuard<'_, LeaksAllowed> {
        self.leaks_allowed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for KernelInner {
    /// The machine shuts down: its freed pool is checked for writes after
    /// free, and whatever is still outstanding is reported, as Driver
    /// Verifier reports a driver that unloads with pool or IRPs
    /// outstanding. (A registration never deregistered keeps its machine
    /// alive, so it is reported by `assert_no_leaks` instead.)
    fn drop(&mut self) {
        if let Some(poller) = self.poller.get() {
            poller.stop();
        }
        if verifier::unwinding() {
            return;
        }
        pool::check_freed_pool(self.id);
        let mut usage = self.usage();
        let allowed = self.leaks_allowed().clone();
        match allowed {
            LeaksAllowed::Nothing => {}
            LeaksAllowed::Tags(tags) => usage.pool.retain(|tag, _| !tags.contains(&tag.0)),
            LeaksAllowed::Anything => return,
        }
        if !usage.is_empty() {
            verifier::bugcheck(
                "DRIVER_VERIFIER_DETECTED_VIOLATION",
                format_args!("machine {} dropped with leaks: {usage}", self.id),
            );
        }
    }
}

fn dpc_thread(kernel: &Weak<KernelInner>, receiver: &mpsc::Receiver<Job>) {
    while let Ok(job) = receiver.recv() {
        let Some(inner) = kernel.upgrade() else {
            return;
        };
        inner.faults.jitter();
        let _enter = Kernel { inner }.enter();
        irql::run_at(crate::abi::DISPATCH_LEVEL, || {
            irql::run_as_callback("a DPC", job);
        });
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Kernel>> = const { RefCell::new(None) };
}

/// Whether any machine of the process ever turned reuse off: until one
/// does, [`reuse_allowed`] need not look up the current machine.
static REUSE_OFF_SOMEWHERE: AtomicBool = AtomicBool::new(false);

/// Whether the current machine lets the library set blocks aside for reuse
/// (see [`Kernel::set_reuse`]); read without cloning the machine.
pub(crate) fn reuse_allowed() -> bool {
    if !REUSE_OFF_SOMEWHERE.load(Ordering::Relaxed) {
        return true;
    }
    CURRENT.with(|current| {
        current
            .borrow()
            .as_ref()
            .or_else(|| DEFAULT.get())
            .is_none_or(|kernel| kernel.inner.reuse.load(Ordering::Relaxed))
    })
}
static DEFAULT: OnceLock<Kernel> = OnceLock::new();

/// Restores the previously current kernel when dropped.
#[must_use = "the kernel is current only while the guard lives"]
pub struct EnterGuard {
    previous: Option<Kernel>,
}

impl Drop for EnterGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|current| *current.borrow_mut() = previous);
    }
}

/// Outstanding resources of one kernel.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Usage {
    /// Pool still allocated, per tag.
    pub pool: BTreeMap<PoolTagName, TagUsage>,
    /// IRPs allocated and not freed.
    pub irps: usize,
    /// Of those, the ones passed to the provider and not yet completed
    /// (the others are idle: set aside by their driver for reuse).
    pub irps_in_flight: usize,
    /// Their bytes (header and stack locations).
    pub irp_bytes: usize,
    /// MDLs allocated and not freed.
    pub mdls: usize,
    /// Their bytes (header and page array).
    pub mdl_bytes: usize,
    /// WSK registrations not deregistered.
    pub registrations: usize,
    /// Provider NPI captures not released.
    pub captures: usize,
    /// WSK sockets not closed.
    pub sockets: usize,
    /// Address lists `WskGetAddressInfo` gave and `WskFreeAddressInfo` has
    /// not freed.
    pub address_lists: usize,
    /// Lists of data indications clients kept from a receive event and
    /// have not released with `WskRelease`.
    pub indications_kept: usize,
}

/// Allocations a machine has handed out so far (see
/// [`Kernel::allocations`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Allocations {
    /// Pool blocks (`ExAllocatePoolWithTag`).
    pub pool: u64,
    /// IRPs (`IoAllocateIrp`).
    pub irps: u64,
    /// MDLs (`IoAllocateMdl`).
    pub mdls: u64,
}

impl core::ops::Sub for Allocations {
    type Output = Self;

    /// What was allocated between two readings.
    fn sub(self, earlier: Self) -> Self {
        Self {
            pool: self.pool - earlier.pool,
            irps: self.irps - earlier.irps,
            mdls: self.mdls - earlier.mdls,
        }
    }
}

impl Allocations {
    /// These counts spread over `operations`, to print: `0.001 pool, 0.000
    /// IRP, 0.001 MDL (2 pool, 0 IRPs, 2 MDLs in 2000)`.
    #[must_use]
    pub const fn per(self, operations: u32) -> PerOperation {
        PerOperation {
            counts: self,
            operations,
        }
    }
}

/// [`Allocations`] per operation, for printing (see [`Allocations::per`]).
#[derive(Debug, Clone, Copy)]
pub struct PerOperation {
    counts: Allocations,
    operations: u32,
}

impl fmt::Display for PerOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { counts, operations } = *self;
        #[allow(clippy::cast_precision_loss, reason = "a figure to print")]
        let per = |count: u64| count as f64 / f64::from(operations.max(1));
        write!(
            f,
            "{:.3} pool, {:.3} IRP, {:.3} MDL ({} pool, {} IRPs, {} MDLs in {operations})",
            per(counts.pool),
            per(counts.irps),
            per(counts.mdls),
            counts.pool,
            counts.irps,
            counts.mdls
        )
    }
}

/// Which counter of [`KernelInner::allocated`] an allocation counts in.
#[derive(Clone, Copy)]
pub(crate) enum Counted {
    Pool = 0,
    Irp = 1,
    Mdl = 2,
}

impl KernelInner {
    pub(crate) fn count_allocation(&self, kind: Counted) {
        self.allocated[kind as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// A pool tag as its four characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolTagName(pub [u8; 4]);

impl fmt::Display for PoolTagName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &byte in &self.0 {
            let c = if byte.is_ascii_graphic() || byte == b' ' {
                char::from(byte)
            } else {
                '.'
            };
            fmt::Write::write_char(f, c)?;
        }
        Ok(())
    }
}

/// Outstanding pool of one tag.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TagUsage {
    /// Allocations not freed.
    pub allocations: usize,
    /// Their bytes.
    pub bytes: usize,
}

impl Usage {
    /// Whether nothing is outstanding.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.pool.is_empty()
            && self.irps == 0
            && self.mdls == 0
            && self.registrations == 0
            && self.captures == 0
            && self.sockets == 0
            && self.address_lists == 0
            && self.indications_kept == 0
    }

    /// Outstanding pool of one tag, given as its four characters.
    #[must_use]
    pub fn pool_tag(&self, tag: [u8; 4]) -> TagUsage {
        self.pool
            .get(&PoolTagName(tag))
            .copied()
            .unwrap_or_default()
    }
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("nothing outstanding");
        }
        let mut parts: Vec<String> = self
            .pool
            .iter()
            .map(|(tag, usage)| {
                std::format!(
                    "pool '{tag}': {} allocation(s), {} byte(s)",
                    usage.allocations,
                    usage.bytes
                )
            })
            .collect();
        for (count, what) in [
            (self.irps, "IRP(s)"),
            (self.irps_in_flight, "of them in flight"),
            (self.mdls, "MDL(s)"),
            (self.registrations, "WSK registration(s)"),
            (self.captures, "provider NPI capture(s)"),
            (self.sockets, "WSK socket(s)"),
            (self.address_lists, "address list(s) not freed"),
            (
                self.indications_kept,
                "data indication list(s) not released",
            ),
        ] {
            if count > 0 {
                parts.push(std::format!("{count} {what}"));
            }
        }
        f.write_str(&parts.join("; "))
    }
}
