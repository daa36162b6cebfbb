//! Handles a driver can store; a deregistration that ends whatever the
//! driver forgot, within its bound, and never waits for it; and timeouts
//! that bound the call even when the provider ignores the cancel.

use std::future::Future;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use wsk::emulator::{Kernel, ProviderConfig};
use wsk::{
    CANCEL_GRACE, Connection, Error, Family, NtStatus, PassiveLevel, PoolBuffer, PoolTag, Provider,
    Registration, SocketKind, block_on, sleep, timeout,
};

const TIMEOUT: Duration = Duration::from_secs(10);

fn passive() -> PassiveLevel {
    PassiveLevel::check().expect("test threads start at PASSIVE_LEVEL")
}

/// Polls `future` once (it must be pending), then forgets it, as a driver
/// that leaks a future would.
fn poll_once_and_forget<F: Future>(future: F) {
    let mut future = Box::pin(future);
    assert!(
        future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending(),
        "the future is in flight"
    );
    std::mem::forget(future);
}

/// A server that accepts and holds every connection (never writes).
fn silent_server() -> (SocketAddr, thread::JoinHandle<Vec<TcpStream>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let mut held = Vec::new();
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => held.push(stream),
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        }
        held
    });
    (address, server)
}

/// A listener whose accept queue is full: a further connect stays pending.
fn full_backlog() -> (socket2::Socket, SocketAddr, TcpStream) {
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    listener.listen(0).unwrap();
    let address = listener.local_addr().unwrap().as_socket().unwrap();
    let queued = TcpStream::connect(address).unwrap();
    (listener, address, queued)
}

/// What a driver keeps in its device context.
struct DeviceContext {
    registration: Option<Registration>,
    provider: Provider,
    connections: Vec<Connection>,
}

const fn is_send_sync_static<T: Send + Sync + 'static>(_: &T) {}

/// The peer's side of a connection saw it end: end of stream or a reset,
/// not a read that timed out.
fn assert_ended(mut stream: TcpStream) {
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut byte = [0_u8; 1];
    let ended = stream.read(&mut byte);
    assert!(
        matches!(&ended, Ok(0))
            || ended.as_ref().is_err_and(|error| matches!(
                error.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            )),
        "the peer must see the connection end (not a timeout): {ended:?}"
    );
}

#[test]
fn deregistration_ends_what_the_driver_forgot_and_holds_within_its_bound() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = passive();
    let registration = Registration::register(&passive).unwrap();
    let provider = registration.capture(&passive, TIMEOUT).unwrap();
    let (remote, server) = silent_server();
    let local = Family::V4.unspecified();

    // A connection the device context holds, with a receive in flight whose
    // future was forgotten.
    let held = provider
        .socket_connect_blocking(&passive, TIMEOUT, local, remote)
        .unwrap();
    poll_once_and_forget(held.receive(PoolBuffer::zeroed(64, PoolTag::BUFFER).unwrap()));
    // A connection forgotten outright.
    std::mem::forget(
        provider
            .socket_connect_blocking(&passive, TIMEOUT, local, remote)
            .unwrap(),
    );
    // A connect that cannot finish (full accept queue), its future forgotten.
    let (_listener, stuck, _queued) = full_backlog();
    poll_once_and_forget(provider.socket_connect(local, stuck));
    // Timers: a long sleep and a timeout around a pending future, forgotten.
    poll_once_and_forget(sleep(Duration::from_hours(1)));
    poll_once_and_forget(timeout(
        Duration::from_hours(1),
        std::future::pending::<()>(),
    ));
    // A forgotten clone of the capture.
    std::mem::forget(provider.clone());

    let mut context = DeviceContext {
        registration: Some(registration),
        provider,
        connections: vec![held],
    };
    is_send_sync_static(&context.provider);
    is_send_sync_static(&context.connections);

    let start = Instant::now();
    let bound = Duration::from_secs(3);
    let report = context
        .registration
        .take()
        .unwrap()
        .deregister_within(&passive, bound);
    let took = start.elapsed();
    assert!(took < bound + Duration::from_secs(2), "took {took:?}");
    // The connect is cancelled; the receive ends with its socket's close
    // (WskCloseSocket cancels and completes the socket's pending IRPs).
    assert_eq!(report.cancelled_operations, 1, "the connect: {report}");
    assert_eq!(report.closed_sockets, 2, "held and forgotten: {report}");
    assert_eq!(report.released_captures, 1, "{report}");
    assert_eq!(report.cancelled_timers, 2, "{report}");
    assert_eq!(report.unfinished_operations, 0, "{report}");

    // Every handle still held answers a typed error, and dropping them
    // closes and releases nothing twice (the emulator would bugcheck).
    let (sent, _) = context.connections[0].send_blocking(
        &passive,
        TIMEOUT,
        PoolBuffer::from_slice(b"late", PoolTag::BUFFER).unwrap(),
    );
    assert_eq!(sent, Err(Error::ForcedClosed(NtStatus::FILE_FORCED_CLOSED)));
    assert_eq!(
        context
            .provider
            .socket_blocking(&passive, TIMEOUT, Family::V4, SocketKind::Connection)
            .err(),
        Some(Error::ProviderUnavailable(NtStatus::DEVICE_NOT_READY))
    );
    drop(context);

    // The peer saw both connections end.
    for stream in server.join().unwrap() {
        assert_ended(stream);
    }

    // Nothing the provider holds is left; what stays is exactly the blocks
    // of the forgotten handles and futures, whose owners never come back.
    let usage = kernel.settled_usage();
    assert_eq!(
        (usage.registrations, usage.captures, usage.sockets),
        (0, 0, 0),
        "{usage}"
    );
    // The forgotten receive's IRP, and those of the two socket blocks'
    // own operations (the forgotten connection's, and the forgotten
    // connect's, which its future still holds).
    assert_eq!(usage.irps, 3, "{usage}");
    assert_eq!(
        usage.pool_tag(*b"WskO").allocations,
        1,
        "the forgotten receive: {usage}"
    );
    assert_eq!(usage.mdls, 1, "the forgotten receive's: {usage}");
    assert_eq!(
        usage.pool_tag(*b"WskB").allocations,
        1,
        "its buffer: {usage}"
    );
    assert_eq!(
        usage.pool_tag(*b"WskR").allocations,
        1,
        "the registration block, which forgotten handles still count: {usage}"
    );
    assert_eq!(usage.pool_tag(*b"WskT").allocations, 2, "{usage}");
    assert_eq!(usage.pool_tag(*b"WskN").allocations, 1, "{usage}");
    assert_eq!(
        usage.pool_tag(*b"WskS").allocations,
        2,
        "the forgotten connection and connect: {usage}"
    );
    kernel.expect_leaks();
}

#[test]
fn one_machines_deregistration_neither_waits_for_nor_cancels_anothers_timers() {
    let sleeper = Kernel::new();
    let sleeping = thread::spawn(move || {
        let _enter = sleeper.enter();
        block_on(&passive(), sleep(Duration::from_millis(500))).unwrap()
    });
    // Give the other machine's timer time to be armed.
    thread::sleep(Duration::from_millis(100));
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = passive();
    let start = Instant::now();
    let report = Registration::register(&passive)
        .unwrap()
        .deregister(&passive);
    assert!(report.is_clean(), "{report}");
    assert!(
        start.elapsed() < Duration::from_millis(350),
        "waited {:?} for another machine's timer",
        start.elapsed()
    );
    assert_eq!(sleeping.join().unwrap(), Ok(()), "not cancelled");
    kernel.assert_no_leaks();
}

#[test]
fn only_the_last_registration_of_the_image_cancels_its_timers() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = passive();
    let first = Registration::register(&passive).unwrap();
    let second = Registration::register(&passive).unwrap();
    let mut sleeping = Box::pin(sleep(Duration::from_hours(1)));
    let mut context = Context::from_waker(Waker::noop());
    assert!(sleeping.as_mut().poll(&mut context).is_pending());
    let report = first.deregister(&passive);
    assert_eq!(report.cancelled_timers, 0, "{report}");
    assert!(sleeping.as_mut().poll(&mut context).is_pending());
    let report = second.deregister(&passive);
    assert_eq!(report.cancelled_timers, 1, "{report}");
    assert_eq!(
        sleeping.as_mut().poll(&mut context),
        Poll::Ready(Err(Error::Cancelled(NtStatus::CANCELLED)))
    );
    drop(sleeping);
    kernel.assert_no_leaks();
}

#[test]
fn a_spawned_style_future_owns_its_provider() {
    // The futures of `Provider` hold a clone of the capture: `'static`, so a
    // task can own one without borrowing a handle that outlives it.
    fn is_static_send<F: Future + Send + 'static>(future: F) -> F {
        future
    }
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = passive();
    let registration = Registration::register(&passive).unwrap();
    let (remote, server) = silent_server();
    let future = {
        let provider = registration.capture(&passive, TIMEOUT).unwrap();
        is_static_send(provider.socket_connect(Family::V4.unspecified(), remote))
        // `provider` is dropped here; the future keeps the capture.
    };
    let connection = block_on(&passive, future).unwrap().unwrap();
    connection.close_blocking(&passive, TIMEOUT).unwrap();
    drop(server);
    let report = registration.deregister(&passive);
    assert!(report.is_clean(), "{report}");
    kernel.assert_no_leaks();
}

/// A machine with `config`'s provider, entered.
fn machine(config: ProviderConfig) -> (Kernel, wsk::emulator::EnterGuard, PassiveLevel) {
    let kernel = Kernel::with_provider(config);
    let enter = kernel.enter();
    (kernel, enter, passive())
}

/// A registration (without a device) and a capture.
fn register(passive: &PassiveLevel) -> (Registration, Provider) {
    let registration = Registration::register(passive).unwrap();
    let provider = registration.capture(passive, TIMEOUT).unwrap();
    (registration, provider)
}

/// Deregisters, and checks that nothing was forced or left.
fn deregister_cleanly(kernel: &Kernel, passive: &PassiveLevel, registration: Registration) {
    let report = registration.deregister(passive);
    assert!(report.is_clean(), "{report}");
    kernel.assert_no_leaks();
}

/// A connection through `WskSocket`, `WskBind` and `WskConnect`.
fn connect(provider: &Provider, passive: &PassiveLevel, remote: SocketAddr) -> Connection {
    provider
        .socket_blocking(passive, TIMEOUT, Family::V4, SocketKind::Connection)
        .unwrap()
        .bind_blocking(passive, TIMEOUT, Family::V4.unspecified())
        .unwrap()
        .connect_blocking(passive, TIMEOUT, remote)
        .unwrap()
}

#[test]
fn a_receive_that_completes_within_the_cancel_grace_gives_its_bytes() {
    // No cancel routine: the timed-out receive stays pending, and the data
    // arrives within the grace the library gives the cancel. The transfer
    // happened: its count and bytes come back, not a timeout.
    let (kernel, _enter, passive) = machine(ProviderConfig {
        cancel_routines: false,
        ..ProviderConfig::default()
    });
    let (registration, provider) = register(&passive);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let remote = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        thread::sleep(Duration::from_millis(300));
        std::io::Write::write_all(&mut stream, b"late").unwrap();
        stream
    });
    let connection = connect(&provider, &passive, remote);
    let (received, buffer) = connection.receive_blocking(
        &passive,
        Duration::from_millis(100),
        PoolBuffer::zeroed(64, PoolTag::BUFFER).unwrap(),
    );
    assert_eq!(received, Ok(4));
    assert_eq!(&*buffer, b"late");
    drop(buffer);
    connection.close_blocking(&passive, TIMEOUT).unwrap();
    drop(server.join().unwrap());
    drop(provider);
    assert!(registration.deregister(&passive).is_clean());
    kernel.assert_no_leaks();
}

#[test]
fn a_blocking_call_returns_within_its_bound_when_the_provider_ignores_the_cancel() {
    let (kernel, _enter, passive) = machine(ProviderConfig::like_wine());
    let (registration, provider) = register(&passive);
    let (remote, server) = silent_server();
    let connection = connect(&provider, &passive, remote);

    // The peer never sends; the provider has no cancel routine and its
    // WskDisconnect is a stub: only closing the socket gives the IRP back.
    let timeout = Duration::from_millis(200);
    let start = Instant::now();
    let (received, buffer) = connection.receive_blocking(
        &passive,
        timeout,
        PoolBuffer::zeroed(64, PoolTag::BUFFER).unwrap(),
    );
    let took = start.elapsed();
    assert_eq!(received, Err(Error::TimedOut(NtStatus::IO_TIMEOUT)));
    assert!(
        took < timeout + 3 * CANCEL_GRACE + Duration::from_secs(2),
        "took {took:?}"
    );
    assert!(
        took >= timeout + CANCEL_GRACE,
        "escalated too early: {took:?}"
    );
    assert_eq!(buffer.capacity(), 64, "the buffer came back");
    // The escalation closed the socket: the handle answers a typed error.
    let (sent, _) = connection.send_blocking(
        &passive,
        TIMEOUT,
        PoolBuffer::from_slice(b"late", PoolTag::BUFFER).unwrap(),
    );
    assert_eq!(sent, Err(Error::ForcedClosed(NtStatus::FILE_FORCED_CLOSED)));
    drop(connection);
    drop(provider);
    drop(server);
    let report = registration.deregister(&passive);
    assert!(report.is_clean(), "{report}");
    // The stub WskDisconnect never completed its IRP: quarantined, once.
    assert_eq!(report.quarantined_operations, 1, "{report}");
    let usage = kernel.settled_usage();
    assert_eq!(
        (usage.irps, usage.sockets, usage.captures),
        (1, 0, 0),
        "{usage}"
    );
    kernel.expect_leaks();
}

#[test]
fn a_future_bounded_by_timeout_returns_at_its_expiry_under_a_provider_that_ignores_cancels() {
    let (kernel, _enter, passive) = machine(ProviderConfig::like_wine());
    let (registration, provider) = register(&passive);
    let (remote, server) = silent_server();
    let connection = connect(&provider, &passive, remote);
    let start = Instant::now();
    let bounded = timeout(
        Duration::from_millis(200),
        connection.receive(PoolBuffer::zeroed(64, PoolTag::BUFFER).unwrap()),
    );
    let output = block_on(&passive, bounded).unwrap();
    assert!(matches!(output, Err(Error::TimedOut(_))));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    // The abandoned receive is still pending; the close gives it back.
    connection.close_blocking(&passive, TIMEOUT).unwrap();
    drop((provider, server));
    deregister_cleanly(&kernel, &passive, registration);
}

#[test]
fn a_blocking_call_with_a_stale_token_refuses_to_wait_above_apc_level() {
    let (kernel, _enter, passive) = machine(ProviderConfig::default());
    let (registration, provider) = register(&passive);
    let (remote, server) = silent_server();
    let connection = connect(&provider, &passive, remote);
    // The token was made at PASSIVE_LEVEL; a spin lock was taken since.
    let (received, buffer) = wsk::emulator::irql::run_at(wsk::abi::DISPATCH_LEVEL, || {
        connection.receive_blocking(
            &passive,
            TIMEOUT,
            PoolBuffer::zeroed(64, PoolTag::BUFFER).unwrap(),
        )
    });
    assert!(
        matches!(received, Err(Error::IrqlTooHigh(_))),
        "{received:?}"
    );
    // The receive was cancelled, not waited for (this provider's cancel
    // routine completed it at once, so the buffer came back).
    assert_eq!(buffer.capacity(), 64);
    drop(buffer);
    connection.close_blocking(&passive, TIMEOUT).unwrap();
    drop((provider, server));
    deregister_cleanly(&kernel, &passive, registration);
}

/// An emulated device object and a registration that holds it.
fn registered_with_a_device(passive: &PassiveLevel) -> (wsk::emulator::Device, Registration) {
    let device = wsk::emulator::Device::new();
    // SAFETY: every test keeps the emulated device until the registration
    // has let go of it.
    let object = unsafe { wsk::DeviceObject::from_raw(device.as_ptr()) }.unwrap();
    let registration = Registration::register_with_device(passive, object).unwrap();
    (device, registration)
}

#[test]
fn a_completion_routine_holds_the_device_object_until_it_has_returned() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = passive();
    let (device, registration) = registered_with_a_device(&passive);
    assert_eq!(device.references(), 1, "the registration's own");
    let provider = registration.capture(&passive, TIMEOUT).unwrap();
    let (remote, server) = silent_server();
    let connection = connect(&provider, &passive, remote);
    {
        let mut receiving =
            Box::pin(connection.receive(PoolBuffer::zeroed(16, PoolTag::BUFFER).unwrap()));
        assert!(
            receiving
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_pending()
        );
        assert_eq!(
            device.references(),
            2,
            "the pending receive's completion routine holds the device"
        );
    }
    // Dropped: cancelled; the routine ran and returned, then let go.
    assert_eq!(device.references(), 1);
    connection.close_blocking(&passive, TIMEOUT).unwrap();
    drop(provider);
    drop(server);
    let report = registration.deregister(&passive);
    assert!(report.is_clean(), "{report}");
    assert_eq!(device.references(), 0);
    kernel.assert_no_leaks();
}

#[test]
#[should_panic(expected = "BUGCHECK DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS")]
fn unloading_while_a_completion_routine_may_still_run_bugchecks() {
    // A stub WskConnectEx never completes its IRP: its completion routine
    // may still run one day, so the device (and the image) must stay.
    let kernel = Kernel::with_provider(ProviderConfig::like_wine());
    let _enter = kernel.enter();
    let passive = passive();
    let (device, registration) = registered_with_a_device(&passive);
    let provider = registration.capture(&passive, TIMEOUT).unwrap();
    let (remote, server) = silent_server();
    let bound = provider
        .socket_blocking(&passive, TIMEOUT, Family::V4, SocketKind::Connection)
        .unwrap()
        .bind_blocking(&passive, TIMEOUT, Family::V4.unspecified())
        .unwrap();
    let (connected, _) = bound.connect_ex_blocking(&passive, TIMEOUT, remote, None);
    connected
        .unwrap()
        .0
        .close_blocking(&passive, TIMEOUT)
        .unwrap();
    drop(provider);
    drop(server);
    let report = registration.deregister(&passive);
    assert_eq!(report.quarantined_operations, 1, "{report}");
    // The registration let go of the device; the quarantined IRP's routine
    // has not.
    assert_eq!(device.references(), 1);
    drop(device);
}

#[test]
fn forgotten_handles_do_not_keep_the_device_object_after_deregistration() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = passive();
    let (device, registration) = registered_with_a_device(&passive);
    let provider = registration.capture(&passive, TIMEOUT).unwrap();
    let (remote, server) = silent_server();
    std::mem::forget(connect(&provider, &passive, remote));
    std::mem::forget(provider);
    let report = registration.deregister(&passive);
    assert_eq!(
        (report.closed_sockets, report.released_captures),
        (1, 1),
        "{report}"
    );
    // The forgotten handles keep their blocks (the socket's with its own
    // operation's IRP) and the registration block, not the device: the
    // driver can unload.
    let usage = kernel.settled_usage();
    let tags: Vec<[u8; 4]> = usage.pool.keys().map(|tag| tag.0).collect();
    assert_eq!(tags, [*b"WskN", *b"WskR", *b"WskS"], "{usage}");
    assert_eq!(
        (usage.irps, usage.irps_in_flight, usage.mdls, usage.sockets),
        (1, 0, 0, 0),
        "{usage}"
    );
    kernel.expect_leaks();
    assert_eq!(device.references(), 0);
    drop(device);
    drop(server);
}

/// A `WskSocketConnect` future polled once, its call left to complete on
/// its own (the provider always pends): the socket exists, and the
/// future, never polled again, still holds the operation that created it
/// (the socket block's own operation, which would close it). `sockets` is
/// how many the machine then has.
fn connected_behind_an_unpolled_future(
    kernel: &Kernel,
    provider: &Provider,
    remote: SocketAddr,
    sockets: usize,
) -> std::pin::Pin<Box<impl Future<Output = Result<Connection, Error>> + Send + 'static>> {
    let mut future = Box::pin(provider.socket_connect(Family::V4.unspecified(), remote));
    assert!(
        future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending()
    );
    let deadline = Instant::now() + TIMEOUT;
    while {
        let usage = kernel.usage();
        usage.sockets != sockets || usage.irps_in_flight != 0
    } {
        assert!(Instant::now() < deadline, "the connect completes");
        thread::sleep(Duration::from_millis(1));
    }
    future
}

#[test]
fn deregistration_closes_a_socket_whose_forgotten_creator_holds_its_own_operation() {
    let kernel = Kernel::with_provider(ProviderConfig {
        always_pend: true,
        ..ProviderConfig::default()
    });
    let _enter = kernel.enter();
    let passive = passive();
    let registration = Registration::register(&passive).unwrap();
    let provider = registration.capture(&passive, TIMEOUT).unwrap();
    let (remote, server) = silent_server();
    std::mem::forget(connected_behind_an_unpolled_future(
        &kernel, &provider, remote, 1,
    ));
    drop(provider);

    // The own operation never comes back: the close takes a stand-in (one
    // operation block and one IRP), and deregistration does not hang.
    let before = kernel.allocations();
    let report = registration.deregister(&passive);
    let during = kernel.allocations() - before;
    assert_eq!(report.closed_sockets, 1, "{report}");
    assert_eq!((during.pool, during.irps), (1, 1), "the stand-in close");
    for stream in server.join().unwrap() {
        assert_ended(stream);
    }
    // What stays is what the forgotten future holds: the socket block
    // with its own operation's IRP, the capture and the registration.
    let usage = kernel.settled_usage();
    let tags: Vec<[u8; 4]> = usage.pool.keys().map(|tag| tag.0).collect();
    assert_eq!(tags, [*b"WskN", *b"WskR", *b"WskS"], "{usage}");
    assert_eq!(
        (usage.irps, usage.irps_in_flight, usage.sockets),
        (1, 0, 0),
        "{usage}"
    );
    kernel.expect_leaks();
}

#[test]
fn without_memory_for_a_stand_in_the_registrations_reserve_closes_the_socket() {
    let kernel = Kernel::with_provider(ProviderConfig {
        always_pend: true,
        ..ProviderConfig::default()
    });
    let _enter = kernel.enter();
    let passive = passive();
    let registration = Registration::register(&passive).unwrap();
    let provider = registration.capture(&passive, TIMEOUT).unwrap();
    let (remote, server) = silent_server();
    std::mem::forget(connected_behind_an_unpolled_future(
        &kernel, &provider, remote, 1,
    ));
    drop(provider);
    // No IRP can be allocated: the close takes the close operation the
    // registration holds in reserve, and deregistration does not hang (the
    // emulator's WskDeregister bugchecks if a socket is never closed).
    kernel.inject_faults(wsk::emulator::FaultPlan {
        irp_one_in: 1,
        ..wsk::emulator::FaultPlan::default()
    });
    let report = registration.deregister(&passive);
    assert!(
        kernel.faults_injected().irps >= 1,
        "the stand-in was refused"
    );
    assert_eq!(report.closed_sockets, 1, "{report}");
    for stream in server.join().unwrap() {
        assert_ended(stream);
    }
    kernel.inject_faults(wsk::emulator::FaultPlan::default());
    let usage = kernel.settled_usage();
    assert_eq!(
        (usage.irps, usage.irps_in_flight, usage.sockets),
        (1, 0, 0),
        "what the forgotten future holds: {usage}"
    );
    kernel.expect_leaks();
}

#[test]
fn without_memory_and_with_the_reserve_in_use_the_creation_closes_when_it_lets_go() {
    let kernel = Kernel::with_provider(ProviderConfig {
        always_pend: true,
        ..ProviderConfig::default()
    });
    let _enter = kernel.enter();
    let passive = passive();
    let registration = Registration::register(&passive).unwrap();
    let provider = registration.capture(&passive, TIMEOUT).unwrap();
    let (remote, server) = silent_server();
    let first = connected_behind_an_unpolled_future(&kernel, &provider, remote, 1);
    let second = connected_behind_an_unpolled_future(&kernel, &provider, remote, 2);
    drop(provider);

    // No IRP can be allocated: one close takes the reserve, the other is
    // deferred to its creation's last release, which comes when the
    // futures are dropped, on another thread, while `WskDeregister` waits
    // for the sockets (the emulator's bugchecks if one is never closed).
    kernel.inject_faults(wsk::emulator::FaultPlan {
        irp_one_in: 1,
        ..wsk::emulator::FaultPlan::default()
    });
    let dropper = {
        let kernel = kernel.clone();
        thread::spawn(move || {
            let _enter = kernel.enter();
            thread::sleep(Duration::from_millis(300));
            drop((first, second));
        })
    };
    let report = registration.deregister(&passive);
    dropper.join().unwrap();
    assert!(
        kernel.faults_injected().irps >= 2,
        "both stand-ins were refused"
    );
    assert_eq!(report.closed_sockets, 2, "{report}");
    assert_eq!(report.unfinished_operations, 0, "{report}");
    for stream in server.join().unwrap() {
        assert_ended(stream);
    }
    kernel.inject_faults(wsk::emulator::FaultPlan::default());
    kernel.assert_no_leaks();
}
