//! Steady traffic allocates nothing: a connection keeps a send and a
//! receive operation (block and IRP) and reuses them, and a buffer keeps
//! the MDL its first transfer built. Allocation counts are exact
//! (`Kernel::allocations`), so they are asserted.

mod support;

use std::time::Duration;

use support::echo_server;
use wsk::emulator::{Allocations, Kernel};
use wsk::{Family, PassiveLevel, PoolBuffer, PoolTag, Registration};

const TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn steady_sends_and_receives_allocate_no_pool_irp_or_mdl() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = PassiveLevel::check().unwrap();
    let registration = Registration::register(&passive).unwrap();
    let provider = registration.capture(&passive, TIMEOUT).unwrap();
    let connection = provider
        .socket_connect_blocking(&passive, TIMEOUT, Family::V4.unspecified(), echo_server())
        .unwrap();
    let mut request = PoolBuffer::from_slice(b"ping", PoolTag::BUFFER).unwrap();
    let mut reply = PoolBuffer::zeroed(4, PoolTag::BUFFER).unwrap();
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
    (request, reply) = round_trip(request, reply);
    let before = kernel.allocations();
    for _ in 0..50 {
        (request, reply) = round_trip(request, reply);
    }
    assert_eq!(
        kernel.allocations() - before,
        Allocations::default(),
        "50 round trips in steady state"
    );
    connection.close_blocking(&passive, TIMEOUT).unwrap();
    drop((request, reply, provider));
    assert!(registration.deregister(&passive).is_clean());
    kernel.assert_no_leaks();
}

#[test]
fn concurrent_receives_fall_back_to_a_fresh_operation_and_free_it() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = PassiveLevel::check().unwrap();
    let registration = Registration::register(&passive).unwrap();
    let provider = registration.capture(&passive, TIMEOUT).unwrap();
    let connection = provider
        .socket_connect_blocking(&passive, TIMEOUT, Family::V4.unspecified(), echo_server())
        .unwrap();
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
