//! Every misuse a caller can express but the compiler cannot reject gets a
//! typed error before anything is sent, and leaves nothing behind. (Misuse
//! the compiler rejects, such as connecting an unbound socket or using a
//! closed connection, is shown by `compile_fail` doctests.)

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use wsk::emulator::Kernel;
use wsk::{
    CONNECT_EX_MAX_DATA, Error, Family, NtStatus, PassiveLevel, PoolBuffer, PoolTag, Registration,
    SocketKind,
};

const TIMEOUT: Duration = Duration::from_secs(10);

fn passive() -> PassiveLevel {
    PassiveLevel::check().expect("test threads start at PASSIVE_LEVEL")
}

/// A listener that must see nothing: no connection at all.
struct Untouched(TcpListener);

impl Untouched {
    fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Self(listener)
    }

    fn address(&self) -> SocketAddr {
        self.0.local_addr().unwrap()
    }

    #[track_caller]
    fn assert_untouched(&self, case: &str) {
        let accepted = self.0.accept().map(drop).map_err(|error| error.kind());
        assert_eq!(
            accepted,
            Err(ErrorKind::WouldBlock),
            "{case}: something connected"
        );
    }
}

#[test]
fn misuse_is_a_typed_error_before_any_call() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = passive();
    let registration = Registration::register(&passive).unwrap();
    let provider = registration.capture(&passive, TIMEOUT).unwrap();
    let server = Untouched::new();
    let remote = server.address();
    let v6_local: SocketAddr = "[::]:0".parse().unwrap();
    let invalid = Error::InvalidArgument(NtStatus::INVALID_PARAMETER);

    // Mismatched families: refused before WskSocketConnect.
    let connected = provider.socket_connect_blocking(&passive, TIMEOUT, v6_local, remote);
    assert_eq!(
        connected.err(),
        Some(invalid),
        "socket_connect with v6 local, v4 remote"
    );
    server.assert_untouched("socket_connect with mismatched families");

    // Binding to the other family: refused before WskBind (the socket is
    // closed, since bind consumes it).
    let socket = provider
        .socket_blocking(&passive, TIMEOUT, Family::V4, SocketKind::Connection)
        .unwrap();
    assert_eq!(
        socket.bind_blocking(&passive, TIMEOUT, v6_local).err(),
        Some(invalid),
        "bind to the other family"
    );

    // connect-ex data over 65,535 bytes: refused before WskConnectEx, the
    // data handed back.
    let bound = provider
        .socket_blocking(&passive, TIMEOUT, Family::V4, SocketKind::Connection)
        .unwrap()
        .bind_blocking(&passive, TIMEOUT, Family::V4.unspecified())
        .unwrap();
    let data = PoolBuffer::zeroed(CONNECT_EX_MAX_DATA + 1, PoolTag::BUFFER).unwrap();
    let (connected, data) = bound.connect_ex_blocking(&passive, TIMEOUT, remote, Some(data));
    assert_eq!(
        connected.err(),
        Some(Error::InvalidArgument(NtStatus::BUFFER_OVERFLOW)),
        "oversized connect-ex data"
    );
    assert_eq!(
        data.map(|data| data.len()),
        Some(CONNECT_EX_MAX_DATA + 1),
        "the data came back"
    );
    server.assert_untouched("oversized connect-ex data");

    // Pool: a zero tag and an absurd size.
    assert_eq!(
        PoolBuffer::zeroed(16, PoolTag::new([0; 4])).err(),
        Some(invalid),
        "a zero pool tag"
    );
    assert_eq!(
        PoolBuffer::zeroed(usize::MAX / 2, PoolTag::BUFFER).err(),
        Some(Error::InsufficientResources(
            NtStatus::INSUFFICIENT_RESOURCES
        )),
        "an absurd size"
    );

    drop(provider);
    assert!(registration.deregister(&passive).is_clean());
    server.assert_untouched("everything");
    kernel.assert_no_leaks();
}

#[test]
fn misuse_of_a_connection_and_after_deregistration_is_a_typed_error() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = passive();
    let registration = Registration::register(&passive).unwrap();
    let provider = registration.capture(&passive, TIMEOUT).unwrap();
    let invalid = Error::InvalidArgument(NtStatus::INVALID_PARAMETER);

    // On a real connection: a receive into no room is refused, an empty
    // send makes no call at all.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let connection = provider
        .socket_connect_blocking(
            &passive,
            TIMEOUT,
            Family::V4.unspecified(),
            listener.local_addr().unwrap(),
        )
        .unwrap();
    let (mut peer, _) = listener.accept().unwrap();
    let empty = PoolBuffer::zeroed(0, PoolTag::BUFFER).unwrap();
    let (received, empty) = connection.receive_blocking(&passive, TIMEOUT, empty);
    assert_eq!(received, Err(invalid), "a zero-capacity receive");
    let (sent, _) = connection.send_blocking(&passive, TIMEOUT, empty);
    assert_eq!(sent, Ok(0), "an empty send sends nothing and makes no call");
    connection.close_blocking(&passive, TIMEOUT).unwrap();
    peer.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut byte = [0_u8; 1];
    assert!(
        matches!(std::io::Read::read(&mut peer, &mut byte), Ok(0) | Err(_)),
        "the peer received nothing"
    );

    // After deregistration: every handle answers a typed error.
    let held = provider
        .socket_connect_blocking(
            &passive,
            TIMEOUT,
            Family::V4.unspecified(),
            listener.local_addr().unwrap(),
        )
        .unwrap();
    let _peer = listener.accept().unwrap();
    let report = registration.deregister(&passive);
    assert_eq!(
        (report.closed_sockets, report.released_captures),
        (1, 1),
        "{report}"
    );
    assert_eq!(
        provider
            .socket_blocking(&passive, TIMEOUT, Family::V4, SocketKind::Connection)
            .err(),
        Some(Error::ProviderUnavailable(NtStatus::DEVICE_NOT_READY)),
        "a capture used after deregistration"
    );
    let (sent, _) = held.send_blocking(
        &passive,
        TIMEOUT,
        PoolBuffer::from_slice(b"late", PoolTag::BUFFER).unwrap(),
    );
    assert_eq!(
        sent,
        Err(Error::ForcedClosed(NtStatus::FILE_FORCED_CLOSED)),
        "a connection used after deregistration"
    );
    drop((held, provider));
    kernel.assert_no_leaks();
}
