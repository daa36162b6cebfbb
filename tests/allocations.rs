//! Steady traffic allocates nothing: a connection keeps a send and a
//! receive operation (block and IRP) and reuses them, and a buffer keeps
//! the MDL its first transfer built. Allocation counts are exact
//! (`Kernel::allocations`), so they are asserted.

mod support;

use std::time::Duration;

use support::echo_server;
use wsk::emulator::{Allocations, Kernel};
use wsk::{
    Connection, Family, PassiveLevel, PoolBuffer, PoolTag, Provider, Registration, SocketKind,
};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `step` `warm_up` times to build what later runs reuse, then
/// `times` more, and asserts that those allocated nothing at all.
fn assert_steady(kernel: &Kernel, warm_up: u32, times: u32, what: &str, mut step: impl FnMut()) {
    for _ in 0..warm_up {
        step();
    }
    let before = kernel.allocations();
    for _ in 0..times {
        step();
    }
    assert_eq!(
        kernel.allocations() - before,
        Allocations::default(),
        "{times} {what} in steady state"
    );
}

/// A registration, its provider and a connection to an echo server.
fn connected(passive: &PassiveLevel) -> (Registration, Provider, Connection) {
    let registration = Registration::register(passive).unwrap();
    let provider = registration.capture(passive, TIMEOUT).unwrap();
    let connection = provider
        .socket_connect_blocking(passive, TIMEOUT, Family::V4.unspecified(), echo_server())
        .unwrap();
    (registration, provider, connection)
}

/// Hands the buffers to `f` (a round trip) and keeps what it gives back
/// for the next step: for [`assert_steady`]'s closures.
fn pass_on(
    buffers: &mut Option<(PoolBuffer, PoolBuffer)>,
    f: impl FnOnce(PoolBuffer, PoolBuffer) -> (PoolBuffer, PoolBuffer),
) {
    let (request, reply) = buffers.take().expect("the buffers came back");
    *buffers = Some(f(request, reply));
}

#[test]
fn steady_sends_and_receives_allocate_no_pool_irp_or_mdl() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = PassiveLevel::check().unwrap();
    let (registration, provider, connection) = connected(&passive);
    let mut buffers = Some((
        PoolBuffer::from_slice(b"ping", PoolTag::BUFFER).unwrap(),
        PoolBuffer::zeroed(4, PoolTag::BUFFER).unwrap(),
    ));
    let round_trip = |request: PoolBuffer, reply: PoolBuffer| {
        let (sent, request) = connection.send_blocking(&passive, TIMEOUT, request);
        assert_eq!(sent, Ok(4));
        // Let the echo arrive, so that the receive completes inline (its
        // routine has returned before the call does); a pending one is
        // recycled as well, once its routine has let go.
        std::thread::sleep(Duration::from_millis(2));
        let (received, reply) = connection.receive_blocking(&passive, TIMEOUT, reply);
        assert_eq!(received, Ok(4));
        assert_eq!(&*reply, b"ping");
        (request, reply)
    };
    // The first round trip builds what the later ones reuse.
    assert_steady(&kernel, 1, 50, "round trips", || {
        pass_on(&mut buffers, round_trip);
    });
    connection.close_blocking(&passive, TIMEOUT).unwrap();
    drop((buffers, provider));
    assert!(registration.deregister(&passive).is_clean());
    kernel.assert_no_leaks();
}

#[test]
fn concurrent_receives_fall_back_to_a_fresh_operation_and_free_it() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = PassiveLevel::check().unwrap();
    let (registration, provider, connection) = connected(&passive);
    // Warm the spare up.
    let (sent, _) = connection.send_blocking(
        &passive,
        TIMEOUT,
        PoolBuffer::from_slice(b"a", PoolTag::BUFFER).unwrap(),
    );
    assert_eq!(sent, Ok(1));
    let (received, _) = connection.receive_blocking(
        &passive,
        TIMEOUT,
        PoolBuffer::zeroed(1, PoolTag::BUFFER).unwrap(),
    );
    assert_eq!(received, Ok(1));
    let first = PoolBuffer::zeroed(1, PoolTag::BUFFER).unwrap();
    let second = PoolBuffer::zeroed(1, PoolTag::BUFFER).unwrap();
    let before = kernel.allocations();
    let both = futures::executor::block_on(async {
        let pending = futures::future::join(connection.receive(first), connection.receive(second));
        let echo = async {
            let (sent, _) = connection
                .send(PoolBuffer::from_slice(b"xy", PoolTag::BUFFER).unwrap())
                .await;
            sent
        };
        futures::future::join(pending, echo).await
    });
    let ((first, second), sent) = both;
    assert_eq!(sent, Ok(2));
    assert_eq!((first.0, second.0), (Ok(1), Ok(1)));
    let during = kernel.allocations() - before;
    assert_eq!(
        during.irps, 1,
        "one receive used the spare, the other a fresh operation: {during:?}"
    );
    connection.close_blocking(&passive, TIMEOUT).unwrap();
    drop((first, second, provider));
    assert!(registration.deregister(&passive).is_clean());
    kernel.assert_no_leaks();
}

#[test]
fn repeated_timeouts_reuse_their_timer() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = PassiveLevel::check().unwrap();
    let registration = Registration::register(&passive).unwrap();
    // A future that is pending once, so that the timeout arms its timer,
    // then wins (the timer is cancelled). `futures`' executor allocates
    // host memory only, which the machine does not count.
    let bounded = || {
        let mut polled = false;
        let once = std::future::poll_fn(move |cx| {
            if std::mem::replace(&mut polled, true) {
                std::task::Poll::Ready(7)
            } else {
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }
        });
        futures::executor::block_on(wsk::timeout(Duration::from_mins(1), once))
    };
    // The first timeout allocates the timer block the later ones reuse.
    assert_steady(&kernel, 1, 50, "timeouts", || assert_eq!(bounded(), Ok(7)));
    // The image keeps the block only while a registration is open.
    assert_eq!(kernel.usage().pool_tag(*b"WskT").allocations, 1);
    assert!(registration.deregister(&passive).is_clean());
    assert_eq!(kernel.settled_usage().pool_tag(*b"WskT").allocations, 0);
    kernel.assert_no_leaks();
}

#[test]
fn connecting_again_and_again_allocates_nothing_in_steady_state() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = PassiveLevel::check().unwrap();
    let registration = Registration::register(&passive).unwrap();
    let provider = registration.capture(&passive, TIMEOUT).unwrap();
    let server = echo_server();
    let mut buffers = Some((
        PoolBuffer::from_slice(b"ping", PoolTag::BUFFER).unwrap(),
        PoolBuffer::zeroed(4, PoolTag::BUFFER).unwrap(),
    ));
    // Alternately through WskSocketConnect and through WskSocket, WskBind
    // and WskConnect on a stream socket.
    let mut turn = 0_u32;
    let mut cycle = |request: PoolBuffer, reply: PoolBuffer| {
        turn += 1;
        let connection = if turn.is_multiple_of(2) {
            provider
                .socket_connect_blocking(&passive, TIMEOUT, Family::V4.unspecified(), server)
                .unwrap()
        } else {
            provider
                .socket_blocking(&passive, TIMEOUT, Family::V4, SocketKind::Stream)
                .unwrap()
                .bind_blocking(&passive, TIMEOUT, Family::V4.unspecified())
                .unwrap()
                .connect_blocking(&passive, TIMEOUT, server)
                .unwrap()
        };
        let (sent, request) = connection.send_blocking(&passive, TIMEOUT, request);
        assert_eq!(sent, Ok(4));
        let (received, reply) = connection.receive_blocking(&passive, TIMEOUT, reply);
        assert_eq!(received, Ok(4));
        connection.close_blocking(&passive, TIMEOUT).unwrap();
        (request, reply)
    };
    // A cold connect allocates the socket's block (with its own operation,
    // which connects and later closes) and that operation's IRP.
    let before = kernel.allocations();
    let connection = provider
        .socket_connect_blocking(&passive, TIMEOUT, Family::V4.unspecified(), server)
        .unwrap();
    let cold = kernel.allocations() - before;
    assert_eq!(
        (cold.pool, cold.irps, cold.mdls),
        (1, 1, 0),
        "a cold connect"
    );
    // So does one through WskSocket, WskBind and WskConnect, while that
    // one is open (nothing is set aside yet): the block's own operation
    // creates, binds, connects and later closes.
    let before = kernel.allocations();
    let other = provider
        .socket_blocking(&passive, TIMEOUT, Family::V4, SocketKind::Stream)
        .unwrap()
        .bind_blocking(&passive, TIMEOUT, Family::V4.unspecified())
        .unwrap()
        .connect_blocking(&passive, TIMEOUT, server)
        .unwrap();
    let cold = kernel.allocations() - before;
    assert_eq!(
        (cold.pool, cold.irps, cold.mdls),
        (1, 1, 0),
        "a cold WskSocket + WskBind + WskConnect"
    );
    other.close_blocking(&passive, TIMEOUT).unwrap();
    connection.close_blocking(&passive, TIMEOUT).unwrap();
    // The first cycles give the registration closed sockets' blocks (with
    // their own, send and receive operations) to reuse.
    assert_steady(&kernel, 4, 20, "connect + echo + close cycles", || {
        pass_on(&mut buffers, &mut cycle);
    });
    drop((buffers, provider));
    assert!(registration.deregister(&passive).is_clean());
    kernel.assert_no_leaks();
}

#[test]
fn with_reuse_off_every_transfer_allocates_and_frees_its_operation() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    kernel.set_reuse(false);
    let passive = PassiveLevel::check().unwrap();
    let (registration, provider, connection) = connected(&passive);
    let mut request = PoolBuffer::from_slice(b"ping", PoolTag::BUFFER).unwrap();
    let before = kernel.allocations();
    for _ in 0..10 {
        let sent;
        (sent, request) = connection.send_blocking(&passive, TIMEOUT, request);
        assert_eq!(sent, Ok(4));
    }
    // Nothing is set aside, so each send allocates its operation and IRP
    // (and frees them through the quarantine of freed pool).
    let during = kernel.allocations() - before;
    assert_eq!((during.pool, during.irps), (10, 10), "{during:?}");
    connection.close_blocking(&passive, TIMEOUT).unwrap();
    drop((request, provider));
    assert!(registration.deregister(&passive).is_clean());
    kernel.assert_no_leaks();
}
