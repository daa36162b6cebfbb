//! Stress: every path of the library at once, through the emulator, under
//! seeded faults, with the emulated Driver Verifier watching.
//!
//! ```sh
//! cargo run --release --example stress -- --ops 100000 --seed 7
//! ```
//!
//! Workers mix the three connect paths over IPv4 and IPv6, sends and
//! receives checked against an echo server (some read through receive
//! events), graceful, abortive and
//! forgotten connections, executor tasks (joined, aborted, or sharing one
//! connection between a sender and a receiver), timers, timeouts against a
//! silent server, refused connections and cancelled receives, in three
//! phases: a provider that completes inline when it can, one that pends
//! every call, and one that behaves as Wine's. Each phase is a fresh
//! machine with its own fault plan drawn from the seed: allocations fail
//! (after a warm-up), captures fail, calls stall until cancelled, complete
//! late, inline, or have their connection reset or force-closed under
//! them, and DPCs and completions are delayed at random. At the end of each
//! phase the executor is shut down, the registration deregistered, and the
//! machine's pool, IRPs, MDLs, captures and sockets must all be gone.
//!
//! Prints one `name: value` per line, and exits non-zero on any leak,
//! verifier violation (a bugcheck inside a completion routine or DPC
//! aborts the process), hang (a worker that made no progress within
//! `HANG_BOUND`), corrupted echo or panic.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use wsk::emulator::{Device, FaultPlan, Kernel, ProviderConfig};
use wsk::{
    BoundSocket, Connection, DeviceObject, Error, Executor, Family, PassiveLevel, PoolBuffer,
    PoolTag, Provider, Registration, SocketKind, block_on, sleep, timeout,
};

/// Each blocking call's bound, and each task's.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// A worker that makes no progress for this long is hung. A blocking call
/// ends within `CALL_TIMEOUT` plus three `CANCEL_GRACE` periods.
const HANG_BOUND: Duration = Duration::from_secs(20);
/// How long a phase's tear-down may take.
const TEARDOWN: Duration = Duration::from_secs(10);

struct Options {
    ops: u64,
    seed: u64,
    workers: usize,
    faults: bool,
    /// Only this scenario (to replay one).
    only: Option<String>,
    /// Leak one pool block in the first phase: shows that the run fails
    /// when something leaks.
    leak_on_purpose: bool,
    /// The library sets nothing aside for reuse: every block goes through
    /// the emulator's poisoned quarantine of freed pool.
    reuse: bool,
}

fn options() -> Options {
    let mut options = Options {
        ops: 10_000,
        seed: 1,
        workers: 8,
        faults: true,
        only: None,
        leak_on_purpose: false,
        reuse: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let ok = match flag.as_str() {
            "--no-faults" => {
                options.faults = false;
                true
            }
            "--leak-on-purpose" => {
                options.leak_on_purpose = true;
                true
            }
            "--no-reuse" => {
                options.reuse = false;
                true
            }
            "--ops" => args
                .next()
                .and_then(|v| v.parse().ok())
                .map(|v| options.ops = v)
                .is_some(),
            "--seed" => args
                .next()
                .and_then(|v| v.parse().ok())
                .map(|v| options.seed = v)
                .is_some(),
            "--scenario" => args.next().map(|v| options.only = Some(v)).is_some(),
            "--workers" => args
                .next()
                .and_then(|v| v.parse().ok())
                .filter(|&v| v > 0)
                .map(|v| options.workers = v)
                .is_some(),
            _ => false,
        };
        if !ok {
            eprintln!(
                "usage: stress [--ops N] [--seed S] [--workers W] [--scenario NAME] [--no-faults] [--no-reuse] [--leak-on-purpose]"
            );
            std::process::exit(2);
        }
    }
    options
}

/// The servers the workers talk to.
#[derive(Clone, Copy)]
struct Servers {
    echo_v4: SocketAddr,
    /// Absent when the host has no IPv6 loopback.
    echo_v6: Option<SocketAddr>,
    /// Accepts and never answers.
    silent: SocketAddr,
    /// Nothing listens there.
    refused: SocketAddr,
}

impl Servers {
    fn start() -> Self {
        let v4 = TcpListener::bind("127.0.0.1:0").expect("bind the IPv4 echo server");
        let v6 = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).ok();
        let silent = TcpListener::bind("127.0.0.1:0").expect("bind the silent server");
        let refused = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("find a free port");
        let servers = Self {
            echo_v4: v4.local_addr().expect("address"),
            echo_v6: v6.as_ref().map(|l| l.local_addr().expect("address")),
            silent: silent.local_addr().expect("address"),
            refused,
        };
        thread::spawn(move || echo(&v4));
        if let Some(v6) = v6 {
            thread::spawn(move || echo(&v6));
        }
        thread::spawn(move || hold(&silent));
        servers
    }

    fn echo(&self, family: Family) -> SocketAddr {
        match family {
            Family::V6 => self.echo_v6.unwrap_or(self.echo_v4),
            Family::V4 => self.echo_v4,
        }
    }
}

fn echo(listener: &TcpListener) {
    for stream in listener.incoming().flatten() {
        thread::spawn(move || {
            let mut stream = stream;
            let mut buffer = [0_u8; 4096];
            while let Ok(n @ 1..) = stream.read(&mut buffer) {
                if stream.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
        });
    }
}

/// Accepts, holds each connection for two seconds without a byte, closes.
fn hold(listener: &TcpListener) {
    let mut held = VecDeque::new();
    for stream in listener.incoming().flatten() {
        let now = Instant::now();
        while held
            .front()
            .is_some_and(|(since, _)| now.duration_since(*since) > Duration::from_secs(2))
        {
            held.pop_front();
        }
        held.push_back((now, stream));
    }
}

/// What the run counts.
#[derive(Default)]
struct Stats {
    ops: AtomicU64,
    scenarios: AtomicU64,
    /// Typed errors by kind.
    errors: Mutex<BTreeMap<String, u64>>,
    wrong_data: AtomicU64,
    violations: AtomicU64,
    panics: AtomicU64,
    leaks: AtomicU64,
    forced_at_deregistration: AtomicU64,
    /// Operations the provider returned from without completing their IRP.
    quarantined: AtomicU64,
    faults: Mutex<BTreeMap<&'static str, u64>>,
}

impl Stats {
    /// Counts a typed error by its kind.
    fn error(&self, error: &Error) {
        let debug = format!("{error:?}");
        let kind = debug.split('(').next().unwrap_or("?").to_owned();
        *lock(&self.errors).entry(kind).or_default() += 1;
    }
}

/// When each worker last made progress, and in which scenario.
type Progress = Mutex<(Instant, &'static str)>;

/// What a worker uses.
struct Context<'a> {
    provider: &'a Provider,
    executor: &'a Executor,
    passive: &'a PassiveLevel,
    servers: Servers,
    stats: &'a Stats,
    progress: &'a Progress,
    rng: fastrand::Rng,
    /// Whether the provider has `WskSocketConnect` and a working `WskConnectEx`.
    full_provider: bool,
}

impl Context<'_> {
    /// Counts one call's outcome (and the worker's progress); gives its
    /// value.
    fn outcome<T>(&self, result: wsk::Result<T>) -> Option<T> {
        self.stats.ops.fetch_add(1, Ordering::Relaxed);
        lock(self.progress).0 = Instant::now();
        result.map_err(|error| self.stats.error(&error)).ok()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn main() {
    let options = options();
    let servers = Servers::start();
    let stats = Stats::default();
    let started = Instant::now();
    let phases: [(&str, ProviderConfig); 3] = [
        ("inline", ProviderConfig::default()),
        (
            "pending",
            ProviderConfig {
                always_pend: true,
                ..ProviderConfig::default()
            },
        ),
        ("wine", ProviderConfig::like_wine()),
    ];
    let per_phase = options.ops.div_ceil(3);
    for (phase, (name, config)) in (0_u64..).zip(phases) {
        let run = Run {
            options: &options,
            stats: &stats,
            started,
            phase,
            name,
        };
        run_phase(&run, config, servers, per_phase * (phase + 1));
    }
    report(&options, &stats, started.elapsed(), None);
}

/// One run's settings and counters, and the phase under way.
struct Run<'a> {
    options: &'a Options,
    stats: &'a Stats,
    started: Instant,
    phase: u64,
    name: &'static str,
}

/// The fault plan of one phase.
fn plan(options: &Options, phase: u64, cancellable: bool) -> FaultPlan {
    if !options.faults {
        return FaultPlan::default();
    }
    FaultPlan {
        seed: options.seed.wrapping_mul(31).wrapping_add(phase),
        pool_one_in: 400,
        irp_one_in: 400,
        mdl_one_in: 400,
        warm_up_allocations: 200,
        // Without cancel routines (as in Wine) a stalled call ends only
        // when its socket is closed: the library's escalation does that,
        // but each costs a cancel grace period.
        stall_one_in: if cancellable { 300 } else { 0 },
        late_one_in: 50,
        late_by: Duration::from_millis(5),
        inline_one_in: 20,
        forced_close_one_in: 500,
        reset_one_in: 500,
        capture_one_in: 4,
        jitter: Duration::from_micros(50),
        ..FaultPlan::default()
    }
}

/// Runs workers on a fresh machine until `target` operations in all,
/// then tears it down and checks for leaks. A hang ends the process.
fn run_phase(run: &Run<'_>, config: ProviderConfig, servers: Servers, target: u64) {
    let (options, stats) = (run.options, run.stats);
    let kernel = Kernel::with_provider(config);
    kernel.inject_faults(plan(options, run.phase, config.cancel_routines));
    kernel.set_reuse(options.reuse);
    let _enter = kernel.enter();
    let passive = PassiveLevel::check().expect("main runs at PASSIVE_LEVEL");
    let device = Device::new();
    // With a provider that returns without completing some IRPs (Wine's
    // stubs), their operations stay quarantined and would keep a device
    // held: such a driver does not have its routines hold the device (as
    // the WDM sample under Wine).
    let registration = retry(stats, || {
        if config.connect_ex_stub || config.disconnect_stub {
            Registration::register(&passive)
        } else {
            Registration::register_with_device(&passive, device_object(&device))
        }
    });
    let provider = retry(stats, || registration.capture(&passive, CALL_TIMEOUT));
    let executor = retry(stats, || Executor::new(device_object(&device)));
    let full_provider = config.socket_connect && !config.connect_ex_stub;
    if options.leak_on_purpose && run.phase == 0 {
        std::mem::forget(retry(stats, || {
            PoolBuffer::zeroed(1, PoolTag::new(*b"Leak"))
        }));
    }
    let progress: Vec<Progress> = (0..options.workers)
        .map(|_| Mutex::new((Instant::now(), "starting")))
        .collect();
    thread::scope(|scope| {
        let workers: Vec<_> = (0_u64..)
            .zip(&progress)
            .map(|(worker, progress)| {
                let (kernel, provider, executor) = (&kernel, &provider, &executor);
                scope.spawn(move || {
                    let _enter = kernel.enter();
                    let passive = PassiveLevel::check().expect("a worker starts at PASSIVE_LEVEL");
                    let mut context = Context {
                        provider,
                        executor,
                        passive: &passive,
                        servers,
                        stats,
                        progress,
                        rng: fastrand::Rng::with_seed(options.seed ^ (run.phase << 32) ^ worker),
                        full_provider,
                    };
                    work(&mut context, options.only.as_deref(), target);
                })
            })
            .collect();
        while !workers.iter().all(thread::ScopedJoinHandle::is_finished) {
            thread::sleep(Duration::from_millis(100));
            for (worker, progress) in progress.iter().enumerate() {
                let (since, scenario) = *lock(progress);
                if since.elapsed() > HANG_BOUND {
                    // The hung thread cannot be joined: report and stop.
                    let hung =
                        format!("worker {worker} in phase {}, scenario {scenario}", run.name);
                    report(options, stats, run.started.elapsed(), Some(&hung));
                    std::process::exit(1);
                }
            }
        }
    });
    teardown(run, &kernel, &passive, executor, provider, registration);
    record_faults(&kernel, stats);
}

/// Runs `attempt` until it succeeds (setup under allocation and capture
/// faults), counting the failures.
fn retry<T>(stats: &Stats, mut attempt: impl FnMut() -> wsk::Result<T>) -> T {
    for _ in 0..1000 {
        match attempt() {
            Ok(value) => return value,
            Err(error) => stats.error(&error),
        }
    }
    panic!("setup failed 1000 times in a row");
}

fn device_object(device: &Device) -> DeviceObject {
    // SAFETY: the emulated device outlives the phase's registration and
    // executor, which are torn down before it drops.
    unsafe { DeviceObject::from_raw(device.as_ptr()) }.expect("a device object")
}

/// A scenario: a sequence of calls, with the outcomes counted.
type Scenario = fn(&mut Context<'_>);

/// One worker: scenarios picked at random until the phase's target.
fn work(context: &mut Context<'_>, only: Option<&str>, target: u64) {
    const SCENARIOS: [(&str, Scenario); 7] = [
        ("echo", connect_and_echo),
        ("echo", connect_and_echo),
        ("tasks", tasks),
        ("shared", shared_connection),
        ("timeouts", timeouts),
        ("timers", timers),
        ("cancel", cancelled_receive),
    ];
    let scenarios: Vec<_> = SCENARIOS
        .iter()
        .filter(|(name, _)| only.is_none_or(|only| only == *name))
        .collect();
    if scenarios.is_empty() {
        eprintln!("stress: no scenario named {only:?}");
        std::process::exit(2);
    }
    while context.stats.ops.load(Ordering::Relaxed) < target {
        let &&(name, scenario) = context.rng.choice(&scenarios).expect("not empty");
        *lock(context.progress) = (Instant::now(), name);
        context.stats.scenarios.fetch_add(1, Ordering::Relaxed);
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| scenario(context))) {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("");
            let counter = if message.starts_with("BUGCHECK") {
                &context.stats.violations
            } else {
                &context.stats.panics
            };
            counter.fetch_add(1, Ordering::Relaxed);
            break;
        }
    }
    // Done: no longer watched.
    *lock(context.progress) = (Instant::now() + HANG_BOUND * 1000, "done");
}

/// `block_on`'s result of a task's (or a timeout's) result, as one.
fn flatten<T>(result: wsk::Result<wsk::Result<T>>) -> wsk::Result<T> {
    result.and_then(|inner| inner)
}

fn family(context: &mut Context<'_>) -> Family {
    if context.servers.echo_v6.is_some() && context.rng.bool() {
        Family::V6
    } else {
        Family::V4
    }
}

/// Random bytes in pool.
fn payload(context: &mut Context<'_>, len: usize) -> Option<(PoolBuffer, Vec<u8>)> {
    let bytes: Vec<u8> = (0..len).map(|_| context.rng.u8(..)).collect();
    let buffer = context.outcome(PoolBuffer::from_slice(&bytes, PoolTag::BUFFER))?;
    Some((buffer, bytes))
}

/// A connection to the echo server by one of the three paths.
fn connect(context: &mut Context<'_>, family: Family) -> Option<(Connection, Vec<u8>)> {
    let passive = context.passive;
    let remote = context.servers.echo(family);
    let path = if context.full_provider {
        context.rng.u8(..3)
    } else {
        1
    };
    match path {
        0 => context
            .outcome(context.provider.socket_connect_blocking(
                passive,
                CALL_TIMEOUT,
                family.unspecified(),
                remote,
            ))
            .map(|connection| (connection, Vec::new())),
        1 => {
            let bound = bound_socket(context, family)?;
            context
                .outcome(bound.connect_blocking(passive, CALL_TIMEOUT, remote))
                .map(|connection| (connection, Vec::new()))
        }
        _ => {
            let bound = bound_socket(context, family)?;
            let len = context.rng.usize(1..512);
            let (data, bytes) = payload(context, len)?;
            let (result, _) = bound.connect_ex_blocking(passive, CALL_TIMEOUT, remote, Some(data));
            context
                .outcome(result)
                .map(|(connection, _)| (connection, bytes))
        }
    }
}

/// Receives exactly `expected.len()` bytes and compares them.
fn expect_echo(context: &Context<'_>, connection: &Connection, expected: &[u8]) -> bool {
    read_echo(context, connection, expected, false)
}

/// [`expect_echo`], reading with `receive_indicated` when `events` (the
/// connection's receive events are on).
fn read_echo(
    context: &Context<'_>,
    connection: &Connection,
    expected: &[u8],
    events: bool,
) -> bool {
    let mut got = Vec::with_capacity(expected.len());
    while got.len() < expected.len() {
        let Some(buffer) = context.outcome(PoolBuffer::zeroed(
            expected.len() - got.len(),
            PoolTag::BUFFER,
        )) else {
            return false;
        };
        let (received, buffer) = if events {
            connection.receive_indicated_blocking(context.passive, CALL_TIMEOUT, buffer)
        } else {
            connection.receive_blocking(context.passive, CALL_TIMEOUT, buffer)
        };
        match context.outcome(received) {
            Some(0) => break,
            Some(n) => got.extend_from_slice(&buffer[..n]),
            None => return false,
        }
    }
    if got != expected {
        context.stats.wrong_data.fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "stress: echo mismatch: sent {} byte(s), got {}",
            expected.len(),
            got.len()
        );
        return false;
    }
    true
}

/// Connect by a random path, echo a few payloads (reading through receive
/// events one time in three), end in a random way.
fn connect_and_echo(context: &mut Context<'_>) {
    let family = family(context);
    let Some((connection, sent_with_connect)) = connect(context, family) else {
        return;
    };
    let events = context.rng.u8(..3) == 0
        && context
            .outcome(connection.enable_receive_events())
            .is_some();
    let mut healthy = read_echo(context, &connection, &sent_with_connect, events);
    for _ in 0..context.rng.usize(0..4) {
        if !healthy {
            break;
        }
        let len = context.rng.usize(1..4096);
        let Some((data, bytes)) = payload(context, len) else {
            break;
        };
        let (sent, _) = connection.send_blocking(context.passive, CALL_TIMEOUT, data);
        healthy =
            context.outcome(sent) == Some(len) && read_echo(context, &connection, &bytes, events);
    }
    finish(context, connection);
}

/// Ends a connection: gracefully, abortively, plainly, or by forgetting it.
fn finish(context: &mut Context<'_>, connection: Connection) {
    let passive = context.passive;
    match context.rng.u8(..4) {
        0 => {
            context.outcome(connection.close_gracefully_blocking(passive, CALL_TIMEOUT));
        }
        1 => {
            context.outcome(connection.abort_blocking(passive, CALL_TIMEOUT));
            context.outcome(connection.close_blocking(passive, CALL_TIMEOUT));
        }
        2 => {
            context.outcome(connection.close_blocking(passive, CALL_TIMEOUT));
        }
        _ => drop(connection),
    }
}

/// Tasks that connect, echo and close as futures; some are joined, some
/// aborted mid-flight.
fn tasks(context: &mut Context<'_>) {
    let mut handles = Vec::new();
    for _ in 0..context.rng.usize(1..5) {
        let family = family(context);
        let remote = context.servers.echo(family);
        let provider = context.provider.clone();
        let len = context.rng.usize(1..2048);
        let Some((data, bytes)) = payload(context, len) else {
            continue;
        };
        let spawned = context.executor.spawn(timeout(CALL_TIMEOUT, async move {
            let connection = provider
                .socket_connect(family.unspecified(), remote)
                .await?;
            let (sent, _) = connection.send(data).await;
            sent?;
            let (received, reply) = connection
                .receive(PoolBuffer::zeroed(len, PoolTag::BUFFER)?)
                .await;
            let received = received?;
            // A short read is legal; what arrived must be a prefix.
            let intact = reply[..received] == bytes[..received];
            connection.close().await?;
            Ok::<bool, Error>(intact)
        }));
        if let Some(handle) = context.outcome(spawned) {
            handles.push(handle);
        }
    }
    for handle in handles {
        if context.rng.u8(..4) == 0 {
            thread::sleep(Duration::from_micros(context.rng.u64(0..2000)));
            handle.abort();
        }
        let joined = flatten(block_on(context.passive, handle));
        if context.outcome(joined.and_then(flatten)) == Some(false) {
            context.stats.wrong_data.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The byte at `offset` of the shared-connection stream (251 is prime,
/// so a chunk that arrives out of place does not match).
fn pattern(offset: usize) -> u8 {
    u8::try_from(offset % 251).expect("below 251")
}

/// One connection shared by a sending task and a receiving task.
fn shared_connection(context: &mut Context<'_>) {
    let family = family(context);
    let Some((connection, sent_with_connect)) = connect(context, family) else {
        return;
    };
    if !expect_echo(context, &connection, &sent_with_connect) {
        finish(context, connection);
        return;
    }
    let connection = Arc::new(connection);
    let chunks = context.rng.usize(1..8);
    let chunk = context.rng.usize(1..1024);
    let total = chunks * chunk;
    let sender = {
        let connection = connection.clone();
        context.executor.spawn(timeout(CALL_TIMEOUT, async move {
            for index in 0..chunks {
                let bytes: Vec<u8> = (index * chunk..(index + 1) * chunk).map(pattern).collect();
                let (sent, _) = connection
                    .send(PoolBuffer::from_slice(&bytes, PoolTag::BUFFER)?)
                    .await;
                sent?;
            }
            Ok::<usize, Error>(total)
        }))
    };
    let receiver = {
        let connection = connection.clone();
        context.executor.spawn(timeout(CALL_TIMEOUT, async move {
            let mut at = 0;
            while at < total {
                let (received, buffer) = connection
                    .receive(PoolBuffer::zeroed(total - at, PoolTag::BUFFER)?)
                    .await;
                let received = received?;
                let intact = (at..)
                    .zip(&buffer[..received])
                    .all(|(i, &b)| b == pattern(i));
                if received == 0 || !intact {
                    return Ok(false);
                }
                at += received;
            }
            Ok::<bool, Error>(true)
        }))
    };
    if let Some(sender) = context.outcome(sender) {
        let sent = flatten(block_on(context.passive, sender));
        context.outcome(sent.and_then(flatten));
    }
    if let Some(receiver) = context.outcome(receiver) {
        let joined = flatten(block_on(context.passive, receiver));
        if context.outcome(joined.and_then(flatten)) == Some(false) {
            context.stats.wrong_data.fetch_add(1, Ordering::Relaxed);
        }
    }
    if let Ok(connection) = Arc::try_unwrap(connection) {
        finish(context, connection);
    }
}

/// Receives that time out against a silent server (blocking, and as a
/// dropped future), and connections refused.
fn timeouts(context: &mut Context<'_>) {
    let passive = context.passive;
    context.outcome(context.provider.socket_connect_blocking(
        passive,
        CALL_TIMEOUT,
        Family::V4.unspecified(),
        context.servers.refused,
    ));
    let Some(connection) = connect_to(context, context.servers.silent) else {
        return;
    };
    let wait = Duration::from_millis(context.rng.u64(1..30));
    if let Some(buffer) = context.outcome(PoolBuffer::zeroed(64, PoolTag::BUFFER)) {
        if context.rng.bool() {
            let (received, _) = connection.receive_blocking(passive, wait, buffer);
            context.outcome(received);
        } else {
            let received = flatten(block_on(passive, timeout(wait, connection.receive(buffer))));
            context.outcome(received.and_then(|(received, _)| received));
        }
    }
    finish(context, connection);
}

/// A connection socket bound to the wildcard address of `family`.
fn bound_socket(context: &Context<'_>, family: Family) -> Option<BoundSocket> {
    let passive = context.passive;
    let socket = context.outcome(context.provider.socket_blocking(
        passive,
        CALL_TIMEOUT,
        family,
        SocketKind::Connection,
    ))?;
    context.outcome(socket.bind_blocking(passive, CALL_TIMEOUT, family.unspecified()))
}

/// A plain connection (any provider) to `remote`.
fn connect_to(context: &Context<'_>, remote: SocketAddr) -> Option<Connection> {
    let bound = bound_socket(context, Family::V4)?;
    context.outcome(bound.connect_blocking(context.passive, CALL_TIMEOUT, remote))
}

/// Sleeping tasks, some aborted.
fn timers(context: &mut Context<'_>) {
    let mut handles = Vec::new();
    for _ in 0..context.rng.usize(1..6) {
        let duration = Duration::from_micros(context.rng.u64(0..5000));
        if let Some(handle) = context.outcome(context.executor.spawn(sleep(duration))) {
            handles.push(handle);
        }
    }
    for handle in handles {
        if context.rng.bool() {
            handle.abort();
        }
        context.outcome(flatten(block_on(context.passive, handle)).and_then(|inner| inner));
    }
}

/// A receive with nothing to come, in a task aborted mid-flight; then the
/// connection is forgotten or closed.
fn cancelled_receive(context: &mut Context<'_>) {
    let family = family(context);
    let Some((connection, sent_with_connect)) = connect(context, family) else {
        return;
    };
    expect_echo(context, &connection, &sent_with_connect);
    let connection = Arc::new(connection);
    let task = {
        let connection = connection.clone();
        context.executor.spawn(async move {
            let (received, _) = connection
                .receive(PoolBuffer::zeroed(16, PoolTag::BUFFER)?)
                .await;
            received
        })
    };
    if let Some(task) = context.outcome(task) {
        thread::sleep(Duration::from_micros(context.rng.u64(0..3000)));
        task.abort();
        context.outcome(flatten(block_on(context.passive, task)).and_then(|inner| inner));
    }
    if let Ok(connection) = Arc::try_unwrap(connection) {
        finish(context, connection);
    }
}

/// Shuts the executor down, deregisters, and counts what the machine
/// still holds beyond the operations the provider never completed (each
/// keeps its IRP and block, on purpose).
fn teardown(
    run: &Run<'_>,
    kernel: &Kernel,
    passive: &PassiveLevel,
    executor: Executor,
    provider: Provider,
    registration: Registration,
) {
    let stats = run.stats;
    let shutdown = executor.shutdown(passive, TEARDOWN);
    if !shutdown.is_clean() {
        eprintln!(
            "stress: phase {}: executor shutdown left work: {shutdown:?}",
            run.name
        );
        stats.leaks.fetch_add(1, Ordering::Relaxed);
    }
    drop(provider);
    let report = registration.deregister_within(passive, TEARDOWN);
    if !report.is_clean() {
        eprintln!(
            "stress: phase {}: deregistration had to force: {report}",
            run.name
        );
        stats
            .forced_at_deregistration
            .fetch_add(1, Ordering::Relaxed);
    }
    let quarantined = report.quarantined_operations;
    stats
        .quarantined
        .fetch_add(quarantined as u64, Ordering::Relaxed);
    let leaked = |usage: &wsk::emulator::Usage| {
        let mut pool = usage.pool.clone();
        if let Some(blocks) = pool.get_mut(&wsk::emulator::PoolTagName(*b"WskO")) {
            blocks.allocations = blocks.allocations.saturating_sub(quarantined);
            if blocks.allocations == 0 {
                pool.remove(&wsk::emulator::PoolTagName(*b"WskO"));
            }
        }
        !pool.is_empty()
            || usage.irps != quarantined
            || usage.mdls != 0
            || usage.registrations != 0
            || usage.captures != 0
            || usage.sockets != 0
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut usage = kernel.settled_usage();
    while leaked(&usage) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
        usage = kernel.usage();
    }
    if leaked(&usage) {
        eprintln!(
            "stress: phase {}: leaks ({quarantined} quarantined operation(s) allowed): {usage}",
            run.name
        );
        stats.leaks.fetch_add(1, Ordering::Relaxed);
    }
    // Writes after free into any block freed during the phase bugcheck.
    kernel.check_freed_pool();
    // Counted above (a deregistration that had to force is a failure of
    // its own): the machine may go with what it still holds.
    kernel.expect_leaks();
}

fn record_faults(kernel: &Kernel, stats: &Stats) {
    let counts = kernel.faults_injected();
    let mut faults = lock(&stats.faults);
    for (name, count) in [
        ("pool", counts.pool),
        ("irp", counts.irps),
        ("mdl", counts.mdls),
        ("capture", counts.capture),
        ("stalled", counts.stalled),
        ("late", counts.late),
        ("inline", counts.inline),
        ("forced_close", counts.forced_close),
        ("reset", counts.reset),
        ("jitter", counts.jitter),
    ] {
        *faults.entry(name).or_default() += count;
    }
}

/// Prints the figures and exits non-zero on any failure.
fn report(options: &Options, stats: &Stats, elapsed: Duration, hung: Option<&str>) {
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let ops = load(&stats.ops);
    println!("seed: {}", options.seed);
    println!("ops: {ops}");
    println!("scenarios: {}", load(&stats.scenarios));
    let faults = lock(&stats.faults).clone();
    println!("faults injected: {}", faults.values().sum::<u64>());
    for (name, count) in &faults {
        println!("faults.{name}: {count}");
    }
    let errors = lock(&stats.errors).clone();
    println!("typed errors: {}", errors.values().sum::<u64>());
    for (kind, count) in &errors {
        println!("errors.{kind}: {count}");
    }
    let failures = [
        ("leaks", load(&stats.leaks)),
        (
            "forced at deregistration",
            load(&stats.forced_at_deregistration),
        ),
        ("violations", load(&stats.violations)),
        ("hangs", u64::from(hung.is_some())),
        ("wrong data", load(&stats.wrong_data)),
        ("panics", load(&stats.panics)),
    ];
    for (name, count) in failures {
        println!("{name}: {count}");
    }
    println!("quarantined operations: {}", load(&stats.quarantined));
    println!("elapsed: {:.1} s", elapsed.as_secs_f64());
    #[allow(clippy::cast_precision_loss, reason = "a rate to print")]
    let rate = ops as f64 / elapsed.as_secs_f64();
    println!("ops per second: {rate:.0}");
    if let Some(hung) = hung {
        println!("hung: {hung}");
    }
    println!(
        "replay: cargo run --release --example stress -- --ops {} --seed {} --workers {}{}{}{}{}",
        options.ops,
        options.seed,
        options.workers,
        options
            .only
            .as_deref()
            .map_or_else(String::new, |only| format!(" --scenario {only}")),
        if options.faults { "" } else { " --no-faults" },
        if options.reuse { "" } else { " --no-reuse" },
        if options.leak_on_purpose {
            " --leak-on-purpose"
        } else {
            ""
        }
    );
    if failures.iter().any(|&(_, count)| count > 0) {
        std::process::exit(1);
    }
}
