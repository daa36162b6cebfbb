//! Listening sockets and `WskAccept` through the library and the emulated
//! provider over real loopback sockets: futures and blocking calls, IPv4
//! and IPv6, the peer's address, cancel-safety (a dropped accept, an
//! accepted connection nobody took, a listener closed under a pending
//! accept), deregistration with a listener left open, and what an accept
//! allocates. Every test ends with nothing outstanding.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::pin::pin;
use std::task::{Context, Waker};
use std::thread;
use std::time::{Duration, Instant};

use wsk::emulator::{Kernel, ProviderConfig};
use wsk::{Error, Family, NtStatus, PassiveLevel, PoolBuffer, PoolTag, Provider, Registration};

const TIMEOUT: Duration = Duration::from_secs(10);

fn passive() -> PassiveLevel {
    PassiveLevel::check().expect("test threads start at PASSIVE_LEVEL")
}

fn loopback(family: Family) -> SocketAddr {
    match family {
        Family::V4 => "127.0.0.1:0".parse().unwrap(),
        Family::V6 => "[::1]:0".parse().unwrap(),
    }
}

/// A peer that connects, sends `data`, reads as much back, and reports it.
fn peer(address: SocketAddr, data: &'static [u8]) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut stream = TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.write_all(data).unwrap();
        let mut echoed = vec![0_u8; data.len()];
        stream.read_exact(&mut echoed).unwrap();
        echoed
    })
}

/// Receives what the peer sent and sends it back, blocking.
fn echo_once(connection: &wsk::Connection, passive: &PassiveLevel, len: usize) {
    let mut got = Vec::new();
    let mut buffer = PoolBuffer::zeroed(64, PoolTag::BUFFER).unwrap();
    while got.len() < len {
        let (received, back) = connection.receive_blocking(passive, TIMEOUT, buffer);
        let received = received.unwrap();
        assert!(received > 0, "the peer ended early");
        got.extend_from_slice(&back[..received]);
        buffer = back;
    }
    let (sent, _) = connection.send_blocking(
        passive,
        TIMEOUT,
        PoolBuffer::from_slice(&got, PoolTag::BUFFER).unwrap(),
    );
    assert_eq!(sent, Ok(len));
}

fn registered(passive: &PassiveLevel) -> (Registration, Provider) {
    let registration = Registration::register(passive).unwrap();
    let provider = registration.capture(passive, TIMEOUT).unwrap();
    (registration, provider)
}

#[test]
fn a_listener_accepts_and_echoes_blocking_over_ipv4_and_ipv6() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = passive();
    let (registration, provider) = registered(&passive);
    for family in [Family::V4, Family::V6] {
        let listener = provider
            .listen_blocking(&passive, TIMEOUT, loopback(family))
            .unwrap();
        let local = listener.local_address_blocking(&passive, TIMEOUT).unwrap();
        assert_ne!(local.port(), 0, "the provider chose a port");
        assert_eq!(Family::of(&local), family);
        let client = peer(local, b"hello, listener");
        let (connection, remote) = listener.accept_blocking(&passive, TIMEOUT).unwrap();
        assert_eq!(remote.ip(), local.ip());
        assert_ne!(remote.port(), local.port());
        echo_once(&connection, &passive, 15);
        assert_eq!(client.join().unwrap(), b"hello, listener");
        // The accepted socket is a connection like any other.
        let (accepted_local, accepted_remote) = futures::executor::block_on(async {
            (
                connection.local_address().await.unwrap(),
                connection.remote_address().await.unwrap(),
            )
        });
        assert_eq!(accepted_local.port(), local.port());
        assert_eq!(accepted_remote, remote);
        connection.close_blocking(&passive, TIMEOUT).unwrap();
        listener.close_blocking(&passive, TIMEOUT).unwrap();
    }
    drop(provider);
    assert!(registration.deregister(&passive).is_clean());
    kernel.assert_no_leaks();
}

#[test]
fn accepts_as_futures_serve_several_peers_in_turn() {
    let kernel = Kernel::with_provider(ProviderConfig {
        always_pend: true,
        ..ProviderConfig::default()
    });
    let _enter = kernel.enter();
    let passive = passive();
    let (registration, provider) = registered(&passive);
    let served = futures::executor::block_on(async {
        let listener = provider.listen(loopback(Family::V4)).await.unwrap();
        let local = listener.local_address().await.unwrap();
        let mut served = 0;
        for _ in 0..5 {
            let client = peer(local, b"ping");
            let (connection, _) = listener.accept().await.unwrap();
            let (received, buffer) = connection
                .receive(PoolBuffer::zeroed(4, PoolTag::BUFFER).unwrap())
                .await;
            assert_eq!(received, Ok(4));
            let (sent, _) = connection.send(buffer).await;
            assert_eq!(sent, Ok(4));
            assert_eq!(client.join().unwrap(), b"ping");
            connection.close().await.unwrap();
            served += 1;
        }
        listener.close().await.unwrap();
        served
    });
    assert_eq!(served, 5);
    drop(provider);
    assert!(registration.deregister(&passive).is_clean());
    kernel.assert_no_leaks();
}

#[test]
fn an_accept_times_out_when_nobody_connects_and_the_listener_stays_usable() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = passive();
    let (registration, provider) = registered(&passive);
    let listener = provider
        .listen_blocking(&passive, TIMEOUT, loopback(Family::V4))
        .unwrap();
    let start = Instant::now();
    let timed_out = listener.accept_blocking(&passive, Duration::from_millis(100));
    assert!(
        matches!(timed_out, Err(Error::TimedOut(_))),
        "{timed_out:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    // The cancel ended that accept only: the next one still works.
    let local = listener.local_address_blocking(&passive, TIMEOUT).unwrap();
    let client = peer(local, b"again");
    let (connection, _) = listener.accept_blocking(&passive, TIMEOUT).unwrap();
    echo_once(&connection, &passive, 5);
    assert_eq!(client.join().unwrap(), b"again");
    drop((connection, listener, provider));
    assert!(registration.deregister(&passive).is_clean());
    kernel.assert_no_leaks();
}

#[test]
fn a_dropped_accept_cancels_and_an_accepted_connection_nobody_took_is_closed() {
    let kernel = Kernel::with_provider(ProviderConfig {
        always_pend: true,
        ..ProviderConfig::default()
    });
    let _enter = kernel.enter();
    let passive = passive();
    let (registration, provider) = registered(&passive);
    let listener = provider
        .listen_blocking(&passive, TIMEOUT, loopback(Family::V4))
        .unwrap();
    let local = listener.local_address_blocking(&passive, TIMEOUT).unwrap();

    // Dropped while pending: cancelled, nothing left.
    {
        let mut accept = pin!(listener.accept());
        let polled = accept
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
        assert!(polled.is_pending());
    }
    // Dropped after the provider accepted, before the result was taken:
    // the accepted socket is closed, and the peer sees the connection end.
    let stream = {
        let mut accept = pin!(listener.accept());
        // Pending: nobody has connected yet.
        assert!(
            accept
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_pending()
        );
        let stream = TcpStream::connect(local).unwrap();
        let deadline = Instant::now() + TIMEOUT;
        // The listener's socket and the accepted one.
        while kernel.usage().sockets < 2 {
            assert!(Instant::now() < deadline, "the provider accepts");
            thread::sleep(Duration::from_millis(1));
        }
        stream
    };
    let mut stream = stream;
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut byte = [0_u8; 1];
    let ended = stream.read(&mut byte);
    assert!(
        matches!(ended, Ok(0))
            || ended.is_err_and(|error| error.kind() != std::io::ErrorKind::WouldBlock),
        "the peer sees the accepted connection closed"
    );
    let deadline = Instant::now() + TIMEOUT;
    while kernel.usage().sockets != 1 {
        assert!(Instant::now() < deadline, "only the listener is left");
        thread::sleep(Duration::from_millis(1));
    }
    drop((listener, provider));
    assert!(registration.deregister(&passive).is_clean());
    kernel.assert_no_leaks();
}

#[test]
fn closing_the_listener_ends_a_pending_accept_and_later_accepts_are_refused() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = passive();
    let (registration, provider) = registered(&passive);
    let listener = provider
        .listen_blocking(&passive, TIMEOUT, loopback(Family::V4))
        .unwrap();
    let ended = futures::executor::block_on(async {
        let mut accept = pin!(listener.accept());
        assert!(
            accept
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_pending()
        );
        // Deregistration's sweep closes the listener under the accept.
        let report = registration.deregister(&passive);
        assert_eq!(report.closed_sockets, 1, "{report}");
        accept.await
    });
    assert_eq!(ended.err(), Some(Error::Cancelled(NtStatus::CANCELLED)));
    assert_eq!(
        listener.accept_blocking(&passive, TIMEOUT).err(),
        Some(Error::ForcedClosed(NtStatus::FILE_FORCED_CLOSED))
    );
    drop((listener, provider));
    kernel.assert_no_leaks();
}

#[test]
fn a_listen_on_an_address_in_use_is_refused_and_nothing_leaks() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = passive();
    let (registration, provider) = registered(&passive);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused = provider.listen_blocking(&passive, TIMEOUT, taken.local_addr().unwrap());
    assert!(
        matches!(refused, Err(Error::AddressInUse(_))),
        "{refused:?}"
    );
    drop(provider);
    assert!(registration.deregister(&passive).is_clean());
    kernel.assert_no_leaks();
}

#[test]
fn accepting_again_and_again_allocates_nothing_in_steady_state() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = passive();
    let (registration, provider) = registered(&passive);
    let listener = provider
        .listen_blocking(&passive, TIMEOUT, loopback(Family::V4))
        .unwrap();
    let local = listener.local_address_blocking(&passive, TIMEOUT).unwrap();
    let cycle = || {
        let client = peer(local, b"x");
        let (connection, _) = listener.accept_blocking(&passive, TIMEOUT).unwrap();
        echo_once(&connection, &passive, 1);
        assert_eq!(client.join().unwrap(), b"x");
        connection.close_blocking(&passive, TIMEOUT).unwrap();
    };
    // The first accept allocates its socket's block and IRP (and the
    // transfers theirs); closed sockets' blocks are then reused.
    let before = kernel.allocations();
    cycle();
    let cold = kernel.allocations() - before;
    for _ in 0..3 {
        cycle();
    }
    let before = kernel.allocations();
    for _ in 0..10 {
        cycle();
    }
    let steady = kernel.allocations() - before;
    // The echo's buffers are the test's own: two pool blocks and an MDL
    // each per cycle.
    assert_eq!(
        (steady.pool, steady.irps, steady.mdls),
        (20, 0, 20),
        "cold: {cold:?}"
    );
    drop((listener, provider));
    assert!(registration.deregister(&passive).is_clean());
    kernel.assert_no_leaks();
}

#[test]
fn listen_with_sets_address_options_before_the_bind_and_shutdown_ends_a_pending_accept() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = passive();
    let (registration, provider) = registered(&passive);
    let listener = std::sync::Arc::new(
        provider
            .listen_with_blocking(
                &passive,
                TIMEOUT,
                loopback(Family::V4),
                &[
                    wsk::SocketOption::ExclusiveAddressUse(true),
                    wsk::SocketOption::KeepAlive(true),
                ],
            )
            .unwrap(),
    );
    assert_eq!(
        wsk::SocketOptions::option_blocking(
            &*listener,
            &passive,
            TIMEOUT,
            wsk::SocketOption::ExclusiveAddressUse(false),
        ),
        Ok(wsk::SocketOption::ExclusiveAddressUse(true))
    );
    assert_eq!(
        listener
            .local_address_blocking(&passive, TIMEOUT)
            .map(|local| local.port() != 0),
        Ok(true)
    );
    // Too many options: refused before any call.
    let many = [wsk::SocketOption::KeepAlive(true); wsk::MAX_LISTEN_OPTIONS + 1];
    assert_eq!(
        provider
            .listen_with_blocking(&passive, TIMEOUT, loopback(Family::V4), &many)
            .err(),
        Some(Error::InvalidArgument(NtStatus::INVALID_PARAMETER))
    );

    // A pending accept on one thread, ended by shutdown from another.
    let waiting = {
        let listener = listener.clone();
        let kernel = kernel.clone();
        std::thread::spawn(move || {
            let _enter = kernel.enter();
            let passive = PassiveLevel::check().unwrap();
            listener
                .accept_blocking(&passive, Duration::from_mins(1))
                .err()
        })
    };
    thread::sleep(Duration::from_millis(100));
    listener.shutdown();
    assert_eq!(
        waiting.join().unwrap(),
        Some(Error::Cancelled(NtStatus::CANCELLED))
    );
    assert_eq!(
        listener.accept_blocking(&passive, TIMEOUT).err(),
        Some(Error::ForcedClosed(NtStatus::FILE_FORCED_CLOSED))
    );
    drop((listener, provider));
    assert!(registration.deregister(&passive).is_clean());
    kernel.assert_no_leaks();
}
