//! The executor: tasks on a device object's work items, woken from
//! completion routines and timer DPCs, with join handles, abort, a
//! cooperative budget and a bounded shutdown.

mod support;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::thread;
use std::time::Duration;

use support::echo_server;
use wsk::emulator::{Device, Kernel};
use wsk::{
    DeviceObject, Error, Executor, Family, JoinHandle, NtStatus, PassiveLevel, PoolBuffer, PoolTag,
    Provider, Registration, block_on, sleep,
};

const TIMEOUT: Duration = Duration::from_secs(10);

fn passive() -> PassiveLevel {
    PassiveLevel::check().expect("test threads start at PASSIVE_LEVEL")
}

fn device_object(device: &Device) -> DeviceObject {
    // SAFETY: the emulated device lives until the end of the test.
    unsafe { DeviceObject::from_raw(device.as_ptr()) }.unwrap()
}

/// A machine, entered, with a device object.
fn machine() -> (Kernel, wsk::emulator::EnterGuard, PassiveLevel, Device) {
    let kernel = Kernel::new();
    let enter = kernel.enter();
    (kernel, enter, passive(), Device::new())
}

/// A registration (holding the device when `held`), a capture, and an
/// executor on the device's work items.
fn register(
    passive: &PassiveLevel,
    device: &Device,
    held: bool,
) -> (Registration, Provider, Executor) {
    let registration = if held {
        Registration::register_with_device(passive, device_object(device))
    } else {
        Registration::register(passive)
    }
    .unwrap();
    let provider = registration.capture(passive, TIMEOUT).unwrap();
    let executor = Executor::new(device_object(device)).unwrap();
    (registration, provider, executor)
}

/// Shuts down, deregisters, and checks that nothing was left.
fn finish(
    kernel: &Kernel,
    passive: &PassiveLevel,
    executor: Executor,
    provider: Provider,
    registration: Registration,
) {
    let report = executor.shutdown(passive, TIMEOUT);
    assert!(report.is_clean(), "{report:?}");
    drop(provider);
    let report = registration.deregister(passive);
    assert!(report.is_clean(), "{report}");
    kernel.assert_no_leaks();
}

/// A server that accepts and never answers.
fn silent_server() -> (SocketAddr, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(1).collect();
        thread::sleep(Duration::from_secs(2));
        drop(held);
    });
    (address, server)
}

/// Counts the polls of the future it wraps.
struct CountPolls<F> {
    future: Pin<Box<F>>,
    polls: Arc<AtomicUsize>,
}

impl<F: Future> Future for CountPolls<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.future.as_mut().poll(cx)
    }
}

/// A task waiting to receive on a connection to a server that never sends,
/// and the server's thread.
fn receive_from_a_silent_server(
    passive: &PassiveLevel,
    provider: &Provider,
    executor: &Executor,
) -> (JoinHandle<wsk::Result<usize>>, thread::JoinHandle<()>) {
    let (remote, server) = silent_server();
    let connection = provider
        .socket_connect_blocking(passive, TIMEOUT, Family::V4.unspecified(), remote)
        .unwrap();
    let task = executor
        .spawn(async move {
            let (received, _) = connection
                .receive(PoolBuffer::zeroed(16, PoolTag::BUFFER).unwrap())
                .await;
            received
        })
        .unwrap();
    (task, server)
}

#[test]
fn tasks_run_concurrently_on_work_items_and_give_their_output() {
    let (kernel, _enter, passive, device) = machine();
    let (registration, provider, executor) = register(&passive, &device, true);
    let remote = echo_server();
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..16_u8)
        .map(|i| {
            let provider = provider.clone();
            let (inside, most) = (inside.clone(), most.clone());
            executor
                .spawn(async move {
                    // A timer DPC and completion routines wake this task;
                    // while it sleeps, it holds no worker.
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    sleep(Duration::from_millis(200)).await?;
                    inside.fetch_sub(1, Ordering::SeqCst);
                    let connection = provider
                        .socket_connect(Family::V4.unspecified(), remote)
                        .await?;
                    let (sent, _) = connection
                        .send(PoolBuffer::from_slice(&[i; 3], PoolTag::BUFFER)?)
                        .await;
                    sent?;
                    let (received, reply) = connection
                        .receive(PoolBuffer::zeroed(16, PoolTag::BUFFER)?)
                        .await;
                    received?;
                    connection.close_gracefully().await?;
                    Ok::<_, Error>(reply.to_vec())
                })
                .unwrap()
        })
        .collect();
    for (i, handle) in (0..16_u8).zip(handles) {
        let reply = block_on(&passive, handle).unwrap().unwrap().unwrap();
        assert_eq!(reply, vec![i; 3]);
    }
    assert_eq!(executor.live_tasks(), 0);
    assert!(
        most.load(Ordering::SeqCst) > wsk::executor::WORKERS,
        "{} task(s) at once on {} work items: tasks waited for a worker each",
        most.load(Ordering::SeqCst),
        wsk::executor::WORKERS
    );
    let report = executor.shutdown(&passive, TIMEOUT);
    assert_eq!(report, wsk::ShutdownReport::default(), "nothing to abort");
    drop(provider);
    let report = registration.deregister(&passive);
    assert!(report.is_clean(), "{report}");
    kernel.assert_no_leaks();
    assert_eq!(
        device.references(),
        0,
        "every routine and work item returned"
    );
}

#[test]
fn aborting_a_task_drops_its_future_and_cancels_its_irps() {
    let (kernel, _enter, passive, device) = machine();
    let (registration, provider, executor) = register(&passive, &device, true);
    let (receiving, server) = receive_from_a_silent_server(&passive, &provider, &executor);
    let deadline = std::time::Instant::now() + TIMEOUT;
    while registration.in_flight() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the receive never pended"
        );
        thread::sleep(Duration::from_millis(1));
    }
    receiving.abort();
    assert_eq!(
        block_on(&passive, receiving).unwrap(),
        Err(Error::Cancelled(NtStatus::CANCELLED))
    );
    // The dropped future cancelled its receive and closed its connection.
    finish(&kernel, &passive, executor, provider, registration);
    server.join().unwrap();
}

#[test]
fn a_task_whose_operations_complete_inline_yields_when_its_budget_is_spent() {
    let (kernel, _enter, passive, device) = machine();
    let (registration, provider, executor) = register(&passive, &device, false);
    let remote = echo_server();
    let connection = provider
        .socket_connect_blocking(&passive, TIMEOUT, Family::V4.unspecified(), remote)
        .unwrap();
    let sends = 3 * wsk::executor::BUDGET as usize;
    let polls = Arc::new(AtomicUsize::new(0));
    let counted = polls.clone();
    let task = executor
        .spawn(async move {
            // Only the send loop's polls are counted.
            CountPolls {
                polls: counted,
                future: Box::pin(async {
                    let mut buffer = PoolBuffer::from_slice(b"x", PoolTag::BUFFER)?;
                    for _ in 0..sends {
                        // Each send completes inline: without a budget the
                        // whole loop would run in one poll.
                        let (sent, back) = connection.send(buffer).await;
                        sent?;
                        buffer = back;
                    }
                    Ok::<_, Error>(())
                }),
            }
            .await?;
            connection.close_gracefully().await
        })
        .unwrap();
    block_on(&passive, task).unwrap().unwrap().unwrap();
    let polls = polls.load(Ordering::Relaxed);
    assert!(
        polls >= sends / wsk::executor::BUDGET as usize,
        "{polls} poll(s) for {sends} inline sends: the task never yielded"
    );
    finish(&kernel, &passive, executor, provider, registration);
}

#[test]
fn shutdown_aborts_live_and_forgotten_tasks_and_waits_for_the_workers() {
    let (kernel, _enter, passive, device) = machine();
    let (registration, provider, executor) = register(&passive, &device, true);
    let (waiting, server) = receive_from_a_silent_server(&passive, &provider, &executor);
    let sleeping = executor.spawn(sleep(Duration::from_hours(1))).unwrap();
    std::mem::forget(sleeping);
    thread::sleep(Duration::from_millis(50));
    let spawner = executor.spawner();
    let report = executor.shutdown(&passive, TIMEOUT);
    assert_eq!(report.aborted_tasks, 2, "{report:?}");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(
        block_on(&passive, waiting).unwrap(),
        Err(Error::Cancelled(NtStatus::CANCELLED))
    );
    assert_eq!(
        spawner.spawn(async {}).err(),
        Some(Error::Cancelled(NtStatus::CANCELLED)),
        "a shut-down executor spawns nothing"
    );
    drop(spawner);
    drop(provider);
    let report = registration.deregister(&passive);
    assert!(report.is_clean(), "{report}");
    // Only the forgotten join handle's task block is left.
    let usage = kernel.settled_usage();
    assert_eq!(usage.pool_tag(*b"WskX").allocations, 1, "{usage}");
    assert_eq!(
        usage.pool.len(),
        2,
        "the task and the executor it counts: {usage}"
    );
    assert_eq!(
        (usage.irps, usage.sockets, usage.captures),
        (0, 0, 0),
        "{usage}"
    );
    server.join().unwrap();
    // The forgotten task block keeps the executor's block, but shutdown let
    // go of the device: the driver can unload.
    assert_eq!(device.references(), 0);
    drop(device);
    kernel.expect_leaks();
}
