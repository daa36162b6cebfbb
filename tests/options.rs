//! Socket options through the library and the emulated provider, on real
//! host sockets: set and read back on a connection, a listener and an
//! unbound socket, futures and blocking; the address options only before
//! the bind and not together; an option the provider lacks. Every test
//! ends with nothing outstanding.

mod support;

use std::time::Duration;

use support::echo_server;
use wsk::emulator::Kernel;
use wsk::{
    Error, Family, NtStatus, PassiveLevel, Registration, SocketKind, SocketOption, SocketOptions,
};

const TIMEOUT: Duration = Duration::from_secs(10);

fn passive() -> PassiveLevel {
    PassiveLevel::check().expect("test threads start at PASSIVE_LEVEL")
}

#[test]
fn a_connection_sets_and_reads_back_its_options() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = passive();
    let registration = Registration::register(&passive).unwrap();
    let provider = registration.capture(&passive, TIMEOUT).unwrap();
    let connection = provider
        .socket_connect_blocking(&passive, TIMEOUT, Family::V4.unspecified(), echo_server())
        .unwrap();
    for (set, cleared) in [
        (SocketOption::NoDelay(true), SocketOption::NoDelay(false)),
        (
            SocketOption::KeepAlive(true),
            SocketOption::KeepAlive(false),
        ),
        (
            SocketOption::ReceiveBuffer(128 * 1024),
            SocketOption::ReceiveBuffer(0),
        ),
        (
            SocketOption::SendBuffer(96 * 1024),
            SocketOption::SendBuffer(0),
        ),
    ] {
        connection
            .set_option_blocking(&passive, TIMEOUT, set)
            .unwrap();
        // The value given to `option` only names the option.
        assert_eq!(
            connection.option_blocking(&passive, TIMEOUT, cleared),
            Ok(set)
        );
    }
    // The same through futures.
    futures::executor::block_on(async {
        connection
            .set_option(SocketOption::NoDelay(false))
            .await
            .unwrap();
        assert_eq!(
            connection.option(SocketOption::NoDelay(true)).await,
            Ok(SocketOption::NoDelay(false))
        );
    });
    connection.close_blocking(&passive, TIMEOUT).unwrap();
    drop(provider);
    assert!(registration.deregister(&passive).is_clean());
    kernel.assert_no_leaks();
}

#[test]
fn the_address_options_come_before_the_bind_and_not_together() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = passive();
    let registration = Registration::register(&passive).unwrap();
    let provider = registration.capture(&passive, TIMEOUT).unwrap();
    let socket = provider
        .socket_blocking(&passive, TIMEOUT, Family::V4, SocketKind::Connection)
        .unwrap();
    socket
        .set_option_blocking(&passive, TIMEOUT, SocketOption::ReuseAddress(true))
        .unwrap();
    assert_eq!(
        socket.option_blocking(&passive, TIMEOUT, SocketOption::ReuseAddress(false)),
        Ok(SocketOption::ReuseAddress(true))
    );
    // Windows refuses SO_EXCLUSIVEADDRUSE over SO_REUSEADDR.
    assert_eq!(
        socket.set_option_blocking(&passive, TIMEOUT, SocketOption::ExclusiveAddressUse(true)),
        Err(Error::InvalidArgument(NtStatus::INVALID_PARAMETER))
    );
    let bound = socket
        .bind_blocking(&passive, TIMEOUT, Family::V4.unspecified())
        .unwrap();
    // The local address before connecting: the port the provider chose.
    let local = bound.local_address_blocking(&passive, TIMEOUT).unwrap();
    assert_ne!(local.port(), 0, "{local}");
    // After the bind they mean nothing: refused.
    assert_eq!(
        bound
            .set_option_blocking(&passive, TIMEOUT, SocketOption::ReuseAddress(false))
            .err()
            .map(|error| error.status()),
        Some(NtStatus::INVALID_DEVICE_STATE)
    );
    drop(bound);

    // A listener takes its options too.
    let listener = provider
        .listen_blocking(&passive, TIMEOUT, "127.0.0.1:0".parse().unwrap())
        .unwrap();
    listener
        .set_option_blocking(&passive, TIMEOUT, SocketOption::KeepAlive(true))
        .unwrap();
    assert_eq!(
        listener.option_blocking(&passive, TIMEOUT, SocketOption::KeepAlive(false)),
        Ok(SocketOption::KeepAlive(true))
    );
    drop((listener, provider));
    assert!(registration.deregister(&passive).is_clean());
    kernel.assert_no_leaks();
}

#[test]
fn a_full_receive_waits_for_the_whole_buffer_and_a_send_now_goes_out() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = passive();
    let registration = Registration::register(&passive).unwrap();
    let provider = registration.capture(&passive, TIMEOUT).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let remote = listener.local_addr().unwrap();
    let peer = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut stream, _) = listener.accept().unwrap();
        // Two chunks, apart: a plain receive would end after the first.
        stream.write_all(b"hello").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        stream.write_all(b"world").unwrap();
        let mut got = [0_u8; 4];
        stream.read_exact(&mut got).unwrap();
        got
    });
    let connection = provider
        .socket_connect_blocking(&passive, TIMEOUT, Family::V4.unspecified(), remote)
        .unwrap();
    let buffer = wsk::PoolBuffer::zeroed(10, wsk::PoolTag::BUFFER).unwrap();
    let (received, buffer) = connection.receive_full_blocking(&passive, TIMEOUT, buffer);
    assert_eq!(received, Ok(10));
    assert_eq!(&buffer[..], b"helloworld");
    drop(buffer);
    let (sent, _) = futures::executor::block_on(
        connection.send_now(wsk::PoolBuffer::from_slice(b"ping", wsk::PoolTag::BUFFER).unwrap()),
    );
    assert_eq!(sent, Ok(4));
    assert_eq!(&peer.join().unwrap(), b"ping");
    connection.close_blocking(&passive, TIMEOUT).unwrap();
    drop(provider);
    assert!(registration.deregister(&passive).is_clean());
    kernel.assert_no_leaks();
}
