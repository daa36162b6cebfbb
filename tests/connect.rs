//! The three ways to connect, and a usable connection, through the library
//! and the emulated provider over real loopback sockets: IPv4 and IPv6,
//! both socket kinds, futures and blocking calls, errors, fallbacks,
//! cancel-safety and timeouts. Every test ends with nothing outstanding.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use wsk::emulator::{Kernel, ProviderConfig};
use wsk::{
    ConnectPath, Connection, Error, Family, NtStatus, PassiveLevel, PoolBuffer, PoolTag,
    Registration, SocketKind, block_on,
};

const TIMEOUT: Duration = Duration::from_secs(10);

fn passive() -> PassiveLevel {
    PassiveLevel::check().expect("test threads start at PASSIVE_LEVEL")
}

fn buffer(data: &[u8]) -> PoolBuffer {
    PoolBuffer::from_slice(data, PoolTag::BUFFER).unwrap()
}

fn empty(capacity: usize) -> PoolBuffer {
    PoolBuffer::zeroed(capacity, PoolTag::BUFFER).unwrap()
}

/// An echo server on `address` (port 0) serving every connection; each
/// connection's received bytes are reported on the channel when it ends.
fn echo_server(address: &str) -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind(address).unwrap();
    let local = listener.local_addr().unwrap();
    let (report, received) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let report = report.clone();
            thread::spawn(move || {
                let mut seen = Vec::new();
                let mut chunk = [0_u8; 4096];
                while let Ok(n @ 1..) = stream.read(&mut chunk) {
                    seen.extend_from_slice(&chunk[..n]);
                    if stream.write_all(&chunk[..n]).is_err() {
                        break;
                    }
                }
                let _ = report.send(seen);
            });
        }
    });
    (local, received)
}

/// Sends `data`, reads the echo, disconnects and closes, blocking.
fn echo_blocking(connection: Connection, passive: &PassiveLevel, data: &[u8]) {
    let (sent, _) = connection.send_blocking(passive, TIMEOUT, buffer(data));
    assert_eq!(sent, Ok(data.len()));
    let mut echoed = Vec::new();
    while echoed.len() < data.len() {
        let (received, reply) = connection.receive_blocking(passive, TIMEOUT, empty(4096));
        assert!(received.unwrap() > 0, "the echo server closed early");
        echoed.extend_from_slice(&reply);
    }
    assert_eq!(echoed, data);
    assert_eq!(
        connection.close_gracefully_blocking(passive, TIMEOUT),
        Ok(0),
        "nothing left to read after the echo"
    );
}

/// Waits (at most `TIMEOUT`) until `done` holds; `what` names it on failure.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// A socket of `kind` bound to the wildcard address of `family`.
fn bound_socket(
    provider: &wsk::Provider,
    passive: &PassiveLevel,
    family: Family,
    kind: SocketKind,
) -> wsk::BoundSocket {
    let socket = provider
        .socket_blocking(passive, TIMEOUT, family, kind)
        .unwrap();
    assert_eq!(socket.kind(), kind);
    socket
        .bind_blocking(passive, TIMEOUT, family.unspecified())
        .unwrap()
}

fn with_provider(
    config: ProviderConfig,
    test: impl FnOnce(&Kernel, &wsk::Provider, &PassiveLevel),
) {
    let kernel = Kernel::with_provider(config);
    let _enter = kernel.enter();
    let passive = passive();
    let registration = Registration::register(&passive).unwrap();
    {
        let provider = registration.capture(&passive, TIMEOUT).unwrap();
        test(&kernel, &provider, &passive);
    }
    let report = registration.deregister(&passive);
    assert!(report.is_clean(), "deregistration had to force: {report}");
    assert_only_quarantined(&kernel, &report);
}

/// Nothing outstanding but the blocks of calls a rule-breaking provider
/// returned from without completing (each with its IRP and MDL).
fn assert_only_quarantined(kernel: &Kernel, report: &wsk::DeregisterReport) {
    let quarantined = report.quarantined_operations;
    // A completion routine that signalled the last completion may still be
    // returning, and frees what it holds on its way out.
    let mut usage = kernel.settled_usage();
    assert_eq!(usage.irps, quarantined, "leaks at unload: {usage}");
    assert!(usage.mdls <= quarantined, "leaks at unload: {usage}");
    if quarantined > 0 {
        let blocks = usage.pool.remove(&wsk::emulator::PoolTagName(*b"WskO"));
        assert_eq!(blocks.map(|tag| tag.allocations), Some(quarantined));
    }
    usage.irps = 0;
    usage.mdls = 0;
    assert!(usage.is_empty(), "leaks at unload: {usage}");
}

#[test]
fn socket_connect_echoes_over_ipv4_and_ipv6() {
    with_provider(ProviderConfig::default(), |_, provider, passive| {
        for (listen, local) in [("127.0.0.1:0", "0.0.0.0:0"), ("[::1]:0", "[::]:0")] {
            let (remote, received) = echo_server(listen);
            let connection = provider
                .socket_connect_blocking(passive, TIMEOUT, local.parse().unwrap(), remote)
                .unwrap();
            echo_blocking(connection, passive, b"socket-connect");
            assert_eq!(received.recv_timeout(TIMEOUT).unwrap(), b"socket-connect");
        }
    });
}

#[test]
fn socket_bind_connect_echoes_for_both_kinds_and_families() {
    with_provider(ProviderConfig::default(), |_, provider, passive| {
        for kind in [SocketKind::Connection, SocketKind::Stream] {
            for (listen, family) in [("127.0.0.1:0", Family::V4), ("[::1]:0", Family::V6)] {
                let (remote, received) = echo_server(listen);
                let bound = bound_socket(provider, passive, family, kind);
                let connection = bound.connect_blocking(passive, TIMEOUT, remote).unwrap();
                let addresses = block_on(passive, async {
                    (
                        connection.local_address().await,
                        connection.remote_address().await,
                    )
                })
                .unwrap();
                assert_eq!(addresses.1, Ok(remote));
                assert_eq!(Family::of(&addresses.0.unwrap()), family);
                echo_blocking(connection, passive, b"bind+connect");
                assert_eq!(received.recv_timeout(TIMEOUT).unwrap(), b"bind+connect");
            }
        }
    });
}

#[test]
fn connect_ex_sends_its_data_with_the_connect() {
    with_provider(ProviderConfig::default(), |_, provider, passive| {
        let (remote, received) = echo_server("127.0.0.1:0");
        let bound = bound_socket(provider, passive, Family::V4, SocketKind::Connection);
        let (connected, data) =
            bound.connect_ex_blocking(passive, TIMEOUT, remote, Some(buffer(b"early data")));
        let (connection, outcome) = connected.unwrap();
        assert_eq!(outcome.path, ConnectPath::ConnectEx);
        assert_eq!(outcome.sent, 10);
        assert_eq!(&*data.unwrap(), b"early data", "the buffer comes back");
        let (got, reply) = connection.receive_blocking(passive, TIMEOUT, empty(64));
        assert_eq!(got, Ok(10));
        assert_eq!(&*reply, b"early data");
        connection.close_blocking(passive, TIMEOUT).unwrap();
        assert_eq!(received.recv_timeout(TIMEOUT).unwrap(), b"early data");
    });
}

#[test]
fn connect_ex_falls_back_to_connect_then_send_without_a_working_entry() {
    // A NULL entry (before Windows 10 1703), and a stub that answers
    // STATUS_NOT_IMPLEMENTED without ever completing its IRP (Wine 8): the
    // library reclaims that IRP and falls back.
    let missing = ProviderConfig {
        connect_ex: false,
        ..ProviderConfig::default()
    };
    let stub = ProviderConfig {
        connect_ex_stub: true,
        ..ProviderConfig::default()
    };
    for (config, listen, family) in [
        (missing, "[::1]:0", Family::V6),
        (stub, "127.0.0.1:0", Family::V4),
    ] {
        with_provider(config, |kernel, provider, passive| {
            let (remote, received) = echo_server(listen);
            let bound = bound_socket(provider, passive, family, SocketKind::Stream);
            let (connected, data) =
                bound.connect_ex_blocking(passive, TIMEOUT, remote, Some(buffer(b"fallback")));
            let (connection, outcome) = connected.unwrap();
            assert_eq!(outcome.path, ConnectPath::ConnectThenSend);
            assert_eq!(outcome.sent, 8);
            assert_eq!(&*data.unwrap(), b"fallback", "the buffer comes back");
            connection.close_blocking(passive, TIMEOUT).unwrap();
            assert_eq!(received.recv_timeout(TIMEOUT).unwrap(), b"fallback");
            // A stub that never completes its IRP leaves that one call's
            // block quarantined (it might still complete); the provider is
            // not asked again, so a second connect leaves nothing more.
            let quarantined = kernel.usage().irps_in_flight;
            assert!(quarantined <= 1, "{}", kernel.usage());
            let bound = bound_socket(provider, passive, family, SocketKind::Stream);
            let (connected, _) =
                bound.connect_ex_blocking(passive, TIMEOUT, remote, Some(buffer(b"again")));
            let (connection, outcome) = connected.unwrap();
            assert_eq!(outcome.path, ConnectPath::ConnectThenSend);
            connection.close_blocking(passive, TIMEOUT).unwrap();
            assert_eq!(received.recv_timeout(TIMEOUT).unwrap(), b"again");
            assert_eq!(
                kernel.usage().irps_in_flight,
                quarantined,
                "no IRP left behind"
            );
            // The quarantined call, if any, stays with the machine.
            kernel.expect_leaks();
        });
    }
}

#[test]
fn before_windows_10_1703_connect_ex_connects_then_sends_without_reading_the_entry() {
    // Build 14393 (1607): the emulated provider's socket tables end before
    // `WskConnectEx`, with an unmapped page right after them, so a library
    // that read the entry would crash the test binary (SIGSEGV).
    let old = ProviderConfig {
        os_build: 14_393,
        ..ProviderConfig::default()
    };
    with_provider(old, |_, provider, passive| {
        // What registration is to call: it reads and caches the build.
        assert_eq!(wsk::kernel::version::os_build(passive), 14_393);
        assert_eq!(wsk::kernel::version::cached_os_build(), Some(14_393));
        for kind in [SocketKind::Connection, SocketKind::Stream] {
            let (remote, received) = echo_server("127.0.0.1:0");
            let bound = bound_socket(provider, passive, Family::V4, kind);
            let (connected, data) =
                bound.connect_ex_blocking(passive, TIMEOUT, remote, Some(buffer(b"old windows")));
            let (connection, outcome) = connected.unwrap();
            assert_eq!(outcome.path, ConnectPath::ConnectThenSend, "{kind:?}");
            assert_eq!(outcome.sent, 11);
            assert_eq!(&*data.unwrap(), b"old windows", "the buffer comes back");
            connection.close_blocking(passive, TIMEOUT).unwrap();
            assert_eq!(received.recv_timeout(TIMEOUT).unwrap(), b"old windows");
        }
    });
    // The build is per emulated machine: a new one reads its own.
    with_provider(ProviderConfig::default(), |_, _, passive| {
        assert_eq!(wsk::kernel::version::os_build(passive), 19_045);
    });
}

#[test]
fn oversized_connect_ex_data_is_rejected_before_anything_is_sent() {
    with_provider(ProviderConfig::default(), |_, provider, passive| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let bound = bound_socket(provider, passive, Family::V4, SocketKind::Connection);
        let data = empty(wsk::CONNECT_EX_MAX_DATA + 1);
        let (connected, data) =
            bound.connect_ex_blocking(passive, TIMEOUT, listener.local_addr().unwrap(), Some(data));
        assert_eq!(
            connected.unwrap_err(),
            Error::InvalidArgument(NtStatus::BUFFER_OVERFLOW)
        );
        assert_eq!(
            data.unwrap().len(),
            wsk::CONNECT_EX_MAX_DATA + 1,
            "the data comes back"
        );
        thread::sleep(Duration::from_millis(50));
        assert!(
            listener.accept().is_err(),
            "no connection was even attempted"
        );
    });
}

#[test]
fn a_refused_connect_is_a_typed_error() {
    with_provider(ProviderConfig::default(), |_, provider, passive| {
        // A port with nothing listening: bind a listener, note it, close it.
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let error = provider
            .socket_connect_blocking(passive, TIMEOUT, Family::V4.unspecified(), closed)
            .unwrap_err();
        assert_eq!(error, Error::Refused(NtStatus::CONNECTION_REFUSED));
        let bound = bound_socket(provider, passive, Family::V4, SocketKind::Connection);
        assert_eq!(
            bound
                .connect_blocking(passive, TIMEOUT, closed)
                .unwrap_err(),
            error
        );
    });
}

#[test]
fn mismatched_families_are_rejected_before_any_call() {
    with_provider(ProviderConfig::default(), |kernel, provider, passive| {
        let remote: SocketAddr = "[::1]:9".parse().unwrap();
        let error = provider
            .socket_connect_blocking(passive, TIMEOUT, Family::V4.unspecified(), remote)
            .unwrap_err();
        assert_eq!(error, Error::InvalidArgument(NtStatus::INVALID_PARAMETER));
        // None but the registration's reserve close operation.
        assert_eq!(kernel.usage().irps, 1);
        let socket = provider
            .socket_blocking(passive, TIMEOUT, Family::V4, SocketKind::Connection)
            .unwrap();
        let error = socket
            .bind_blocking(passive, TIMEOUT, Family::V6.unspecified())
            .unwrap_err();
        assert_eq!(error, Error::InvalidArgument(NtStatus::INVALID_PARAMETER));
    });
}

#[test]
fn a_provider_without_socket_connect_says_so() {
    let config = ProviderConfig {
        socket_connect: false,
        ..ProviderConfig::default()
    };
    with_provider(config, |_, provider, passive| {
        assert!(!provider.supports_socket_connect());
        let remote: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let error = provider
            .socket_connect_blocking(passive, TIMEOUT, Family::V4.unspecified(), remote)
            .unwrap_err();
        assert!(matches!(error, Error::NotSupported(_)), "{error:?}");
    });
}

#[test]
fn futures_run_the_same_flows() {
    with_provider(ProviderConfig::default(), |_, provider, passive| {
        let (remote, received) = echo_server("127.0.0.1:0");
        let reply = block_on(passive, async {
            let socket = provider.socket(Family::V4, SocketKind::Connection).await?;
            let bound = socket.bind(Family::V4.unspecified()).await?;
            let (connected, _data) = bound.connect_ex(remote, Some(buffer(b"async"))).await;
            let (connection, outcome) = connected?;
            assert_eq!(outcome.sent, 5);
            let (got, reply) = connection.receive(empty(16)).await;
            got?;
            connection.disconnect().await?;
            connection.close().await?;
            Ok::<_, Error>(reply)
        })
        .unwrap()
        .unwrap();
        assert_eq!(&*reply, b"async");
        assert_eq!(received.recv_timeout(TIMEOUT).unwrap(), b"async");
    });
}

#[test]
fn futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    with_provider(ProviderConfig::default(), |_, provider, _| {
        let remote: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let future = provider.socket_connect(Family::V4.unspecified(), remote);
        assert_send(&future);
        let future = provider.socket(Family::V4, SocketKind::Connection);
        assert_send(&future);
    });
}

#[test]
fn a_blocking_connect_times_out_cancels_and_leaks_nothing() {
    with_provider(ProviderConfig::default(), |kernel, provider, passive| {
        // A listener that never accepts, with its backlog filled: further
        // SYNs are dropped, so a connect stays pending.
        let listener =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        listener
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        listener.listen(0).unwrap();
        let remote = listener.local_addr().unwrap().as_socket().unwrap();
        let mut fillers = Vec::new();
        for _ in 0..8 {
            if let Ok(stream) = TcpStream::connect_timeout(&remote, Duration::from_millis(100)) {
                fillers.push(stream);
            }
        }
        let start = Instant::now();
        let error = provider
            .socket_connect_blocking(
                passive,
                Duration::from_millis(300),
                Family::V4.unspecified(),
                remote,
            )
            .unwrap_err();
        assert_eq!(error, Error::TimedOut(NtStatus::IO_TIMEOUT));
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert_eq!(kernel.usage().irps_in_flight, 0, "no IRP left in flight");
        drop(fillers);
    });
}

#[test]
fn dropping_a_pending_receive_cancels_it_and_returns_everything() {
    with_provider(ProviderConfig::default(), |kernel, provider, passive| {
        let (remote, _received) = echo_server("127.0.0.1:0");
        let connection = provider
            .socket_connect_blocking(passive, TIMEOUT, Family::V4.unspecified(), remote)
            .unwrap();
        let tag = *b"Rcv!";
        {
            let mut receive =
                Box::pin(connection.receive(PoolBuffer::zeroed(64, PoolTag::new(tag)).unwrap()));
            let waker = std::task::Waker::noop();
            let poll = receive
                .as_mut()
                .poll(&mut std::task::Context::from_waker(waker));
            assert!(poll.is_pending(), "nothing to receive yet");
            assert_eq!(kernel.usage().pool_tag(tag).allocations, 1);
        }
        // Dropped: the IRP was cancelled and its completion freed the buffer.
        eventually("the buffer was released", || {
            kernel.usage().pool_tag(tag).allocations == 0
        });
        // The connection is still usable.
        echo_blocking(connection, passive, b"still works");
    });
}

#[test]
fn a_socket_connect_that_completes_after_its_caller_left_is_closed() {
    with_provider(ProviderConfig::default(), |kernel, provider, passive| {
        // A listener whose accept queue is full: the connect stays pending
        // (its SYNs are dropped) until a slot frees.
        let listener =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        listener
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        listener.listen(0).unwrap();
        let remote = listener.local_addr().unwrap().as_socket().unwrap();
        let queued = TcpStream::connect(remote).unwrap();
        {
            let mut connecting =
                Box::pin(provider.socket_connect(Family::V4.unspecified(), remote));
            let waker = std::task::Waker::noop();
            let first = connecting
                .as_mut()
                .poll(&mut std::task::Context::from_waker(waker));
            assert!(first.is_pending());
            // Free the slot: the connect completes (at the SYN's retry)
            // with nobody polling the future.
            let (first_accepted, _) = listener.accept().unwrap();
            drop((first_accepted, queued));
            let (server_side, _) = listener.accept().unwrap();
            let mut server_side: TcpStream = server_side.into();
            eventually("the provider created the socket", || {
                kernel.usage().sockets != 0
            });
            drop(connecting);
            // The abandoned socket is closed: the server sees the end.
            server_side.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut byte = [0_u8; 1];
            assert!(matches!(server_side.read(&mut byte), Ok(0) | Err(_)));
        }
        eventually("every socket was closed", || kernel.usage().sockets == 0);
        let _ = passive;
    });
}

#[test]
fn a_second_disconnect_is_a_typed_not_connected_error() {
    with_provider(ProviderConfig::default(), |_, provider, passive| {
        let (remote, received) = echo_server("127.0.0.1:0");
        let connection = provider
            .socket_connect_blocking(passive, TIMEOUT, Family::V4.unspecified(), remote)
            .unwrap();
        connection.disconnect_blocking(passive, TIMEOUT).unwrap();
        let again = connection
            .disconnect_blocking(passive, TIMEOUT)
            .unwrap_err();
        assert_eq!(again, Error::NotConnected(NtStatus::INVALID_CONNECTION));
        assert_eq!(again.status().code(), 0xC000_0140);
        connection.close_blocking(passive, TIMEOUT).unwrap();
        assert_eq!(received.recv_timeout(TIMEOUT).unwrap(), b"");
    });
}

#[test]
fn a_dropped_connection_is_closed_without_blocking() {
    with_provider(ProviderConfig::default(), |kernel, provider, passive| {
        let (remote, received) = echo_server("127.0.0.1:0");
        let connection = provider
            .socket_connect_blocking(passive, TIMEOUT, Family::V4.unspecified(), remote)
            .unwrap();
        let (sent, _) = connection.send_blocking(passive, TIMEOUT, buffer(b"bye"));
        assert_eq!(sent, Ok(3));
        drop(connection);
        assert_eq!(received.recv_timeout(TIMEOUT).unwrap(), b"bye");
        eventually("every socket was closed", || kernel.usage().sockets == 0);
    });
}

#[test]
fn buffers_come_back_even_when_nothing_is_submitted() {
    with_provider(ProviderConfig::default(), |kernel, provider, passive| {
        let (remote, _received) = echo_server("127.0.0.1:0");
        let connection = provider
            .socket_connect_blocking(passive, TIMEOUT, Family::V4.unspecified(), remote)
            .unwrap();
        let irps = kernel.usage().irps;
        let (sent, back) = connection.send_blocking(passive, TIMEOUT, empty(0));
        assert_eq!(
            (sent, back.capacity()),
            (Ok(0), 0),
            "an empty send makes no call"
        );
        let (received, back) = connection.receive_blocking(passive, TIMEOUT, empty(0));
        assert_eq!(
            received,
            Err(Error::InvalidArgument(NtStatus::INVALID_PARAMETER))
        );
        assert_eq!(back.capacity(), 0);
        assert_eq!(kernel.usage().irps, irps);
        // An IRP allocation failure: the buffer, with its data, comes back.
        kernel.inject_faults(wsk::emulator::FaultPlan {
            fail_first_irps: 1,
            ..Default::default()
        });
        let (sent, back) = connection.send_blocking(passive, TIMEOUT, buffer(b"kept"));
        assert_eq!(
            sent,
            Err(Error::InsufficientResources(
                NtStatus::INSUFFICIENT_RESOURCES
            ))
        );
        assert_eq!(&*back, b"kept");
        echo_blocking(connection, passive, b"after the failure");
    });
}

#[test]
fn connect_ex_hands_its_data_back_when_the_connect_fails() {
    // WskConnectEx itself fails, or (without the entry) the fallback's
    // WskConnect does.
    let fallback = ProviderConfig {
        connect_ex: false,
        ..ProviderConfig::default()
    };
    for config in [ProviderConfig::default(), fallback] {
        with_provider(config, |_, provider, passive| {
            let closed = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            let bound = bound_socket(provider, passive, Family::V4, SocketKind::Connection);
            let (connected, data) =
                bound.connect_ex_blocking(passive, TIMEOUT, closed, Some(buffer(b"kept")));
            assert_eq!(
                connected.unwrap_err(),
                Error::Refused(NtStatus::CONNECTION_REFUSED)
            );
            assert_eq!(&*data.unwrap(), b"kept");
        });
    }
}

/// How a server saw its peer's end: an orderly FIN after `bytes`, or a
/// reset.
#[derive(Debug, PartialEq, Eq)]
enum PeerEnd {
    Fin { bytes: usize },
    Reset,
}

/// A server that reads until the end, then closes its side (after writing
/// `farewell`, if any); reports how the end came.
fn ending_server(farewell: &'static [u8]) -> (SocketAddr, mpsc::Receiver<PeerEnd>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let (report, ends) = mpsc::channel();
    thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut bytes = 0;
        let mut chunk = [0_u8; 4096];
        let end = loop {
            match stream.read(&mut chunk) {
                Ok(0) => break PeerEnd::Fin { bytes },
                Ok(n) => bytes += n,
                Err(_) => break PeerEnd::Reset,
            }
        };
        if end != PeerEnd::Reset {
            let _ = stream.write_all(farewell);
        }
        let _ = report.send(end);
    });
    (address, ends)
}

#[test]
fn a_graceful_close_ends_with_a_fin_and_a_plain_or_aborted_close_with_a_reset() {
    with_provider(ProviderConfig::default(), |_, provider, passive| {
        let local = Family::V4.unspecified();
        let connect = |remote| {
            let connection = provider
                .socket_connect_blocking(passive, TIMEOUT, local, remote)
                .unwrap();
            let (sent, _) = connection.send_blocking(passive, TIMEOUT, buffer(b"data"));
            assert_eq!(sent, Ok(4));
            connection
        };
        // Disconnect, read the peer's farewell to its end, close.
        let (remote, ends) = ending_server(b"bye");
        assert_eq!(
            connect(remote).close_gracefully_blocking(passive, TIMEOUT),
            Ok(3),
            "the farewell was read (and discarded) before the close"
        );
        assert_eq!(
            ends.recv_timeout(TIMEOUT).unwrap(),
            PeerEnd::Fin { bytes: 4 }
        );

        // A plain close of a connected socket is abortive.
        let (remote, ends) = ending_server(b"");
        connect(remote).close_blocking(passive, TIMEOUT).unwrap();
        assert_eq!(ends.recv_timeout(TIMEOUT).unwrap(), PeerEnd::Reset);

        // So is an explicit abort.
        let (remote, ends) = ending_server(b"");
        let connection = connect(remote);
        connection.abort_blocking(passive, TIMEOUT).unwrap();
        connection.close_blocking(passive, TIMEOUT).unwrap();
        assert_eq!(ends.recv_timeout(TIMEOUT).unwrap(), PeerEnd::Reset);
    });
}

#[test]
fn a_close_after_a_one_way_disconnect_is_still_abortive() {
    with_provider(ProviderConfig::default(), |_, provider, passive| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let remote = listener.local_addr().unwrap();
        let local = Family::V4.unspecified();
        // Returns the error the server side holds once the client closed
        // after disconnecting; `both_ways` first reads the server's end.
        let close_after_disconnect = |both_ways: bool| {
            let connection = provider
                .socket_connect_blocking(passive, TIMEOUT, local, remote)
                .unwrap();
            let (mut server_side, _) = listener.accept().unwrap();
            server_side.set_read_timeout(Some(TIMEOUT)).unwrap();
            connection.disconnect_blocking(passive, TIMEOUT).unwrap();
            let mut byte = [0_u8; 1];
            assert_eq!(server_side.read(&mut byte).unwrap(), 0, "the FIN");
            if both_ways {
                server_side.shutdown(std::net::Shutdown::Write).unwrap();
                let (received, _) = connection.receive_blocking(passive, TIMEOUT, empty(16));
                assert_eq!(received, Ok(0), "the server's end");
            }
            connection.close_blocking(passive, TIMEOUT).unwrap();
            thread::sleep(Duration::from_millis(100));
            server_side.take_error().unwrap()
        };
        // Disconnected one way only: WskCloseSocket resets the connection.
        assert!(
            close_after_disconnect(false).is_some(),
            "a reset reached the peer"
        );
        // Disconnected both ways: the close is graceful.
        assert_eq!(close_after_disconnect(true).map(|e| e.kind()), None);
    });
}
