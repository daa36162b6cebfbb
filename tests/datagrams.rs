//! Datagram (UDP) sockets through the library and the emulated provider
//! over real host sockets: send to and receive from a host peer, IPv4 and
//! IPv6, the sender's address, futures and blocking, a receive that times
//! out and one that is dropped, a remote of the other family refused
//! before any call, and nothing allocated in steady state. Every test ends
//! with nothing outstanding.

use std::net::{SocketAddr, UdpSocket};
use std::pin::pin;
use std::task::{Context, Waker};
use std::time::Duration;

use wsk::emulator::{Kernel, ProviderConfig};
use wsk::{Error, Family, NtStatus, PassiveLevel, PoolBuffer, PoolTag, Registration};

const TIMEOUT: Duration = Duration::from_secs(10);

fn loopback(family: Family) -> SocketAddr {
    match family {
        Family::V4 => "127.0.0.1:0".parse().unwrap(),
        Family::V6 => "[::1]:0".parse().unwrap(),
    }
}

#[test]
fn datagrams_go_both_ways_with_the_senders_address_over_ipv4_and_ipv6() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = PassiveLevel::check().unwrap();
    let registration = Registration::register(&passive).unwrap();
    let provider = registration.capture(&passive, TIMEOUT).unwrap();
    for family in [Family::V4, Family::V6] {
        let peer = UdpSocket::bind(loopback(family)).unwrap();
        peer.set_read_timeout(Some(TIMEOUT)).unwrap();
        let socket = provider
            .datagram_blocking(&passive, TIMEOUT, loopback(family))
            .unwrap();
        let local = socket.local_address_blocking(&passive, TIMEOUT).unwrap();
        assert_ne!(local.port(), 0);

        let (sent, _) = socket.send_to_blocking(
            &passive,
            TIMEOUT,
            PoolBuffer::from_slice(b"to the peer", PoolTag::BUFFER).unwrap(),
            peer.local_addr().unwrap(),
        );
        assert_eq!(sent, Ok(11));
        let mut got = [0_u8; 64];
        let (len, from) = peer.recv_from(&mut got).unwrap();
        assert_eq!((&got[..len], from), (&b"to the peer"[..], local));

        peer.send_to(b"back", local).unwrap();
        let (received, buffer) = socket.receive_from_blocking(
            &passive,
            TIMEOUT,
            PoolBuffer::zeroed(64, PoolTag::BUFFER).unwrap(),
        );
        assert_eq!(received, Ok((4, peer.local_addr().unwrap())));
        assert_eq!(&buffer[..], b"back");
        drop(buffer);

        // The same through futures.
        futures::executor::block_on(async {
            peer.send_to(b"again", local).unwrap();
            let (received, buffer) = socket
                .receive_from(PoolBuffer::zeroed(64, PoolTag::BUFFER).unwrap())
                .await;
            assert_eq!(received.map(|(len, _)| len), Ok(5));
            assert_eq!(&buffer[..], b"again");
        });
        socket.close_blocking(&passive, TIMEOUT).unwrap();
    }
    drop(provider);
    assert!(registration.deregister(&passive).is_clean());
    kernel.assert_no_leaks();
}

#[test]
fn a_receive_times_out_or_is_dropped_and_a_remote_of_the_other_family_is_refused() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = PassiveLevel::check().unwrap();
    let registration = Registration::register(&passive).unwrap();
    let provider = registration.capture(&passive, TIMEOUT).unwrap();
    let socket = provider
        .datagram_blocking(&passive, TIMEOUT, loopback(Family::V4))
        .unwrap();
    let (received, buffer) = socket.receive_from_blocking(
        &passive,
        Duration::from_millis(100),
        PoolBuffer::zeroed(16, PoolTag::BUFFER).unwrap(),
    );
    assert!(matches!(received, Err(Error::TimedOut(_))), "{received:?}");
    assert_eq!(buffer.capacity(), 16, "the buffer comes back");
    {
        let mut receive = pin!(socket.receive_from(buffer));
        assert!(
            receive
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_pending()
        );
    }
    let before = kernel.allocations();
    let (sent, _) = socket.send_to_blocking(
        &passive,
        TIMEOUT,
        PoolBuffer::from_slice(b"x", PoolTag::BUFFER).unwrap(),
        "[::1]:9".parse().unwrap(),
    );
    assert_eq!(
        sent,
        Err(Error::InvalidArgument(NtStatus::INVALID_PARAMETER))
    );
    let during = kernel.allocations() - before;
    assert_eq!((during.irps, during.mdls), (0, 0), "nothing was sent");
    drop((socket, provider));
    assert!(registration.deregister(&passive).is_clean());
    kernel.assert_no_leaks();
}

#[test]
fn steady_datagram_traffic_allocates_nothing() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = PassiveLevel::check().unwrap();
    let registration = Registration::register(&passive).unwrap();
    let provider = registration.capture(&passive, TIMEOUT).unwrap();
    let peer = UdpSocket::bind(loopback(Family::V4)).unwrap();
    let socket = provider
        .datagram_blocking(&passive, TIMEOUT, loopback(Family::V4))
        .unwrap();
    let local = socket.local_address_blocking(&passive, TIMEOUT).unwrap();
    let mut outgoing = PoolBuffer::from_slice(b"ping", PoolTag::BUFFER).unwrap();
    let mut incoming = PoolBuffer::zeroed(16, PoolTag::BUFFER).unwrap();
    let mut round = || {
        let sent;
        (sent, outgoing) = socket.send_to_blocking(
            &passive,
            TIMEOUT,
            core::mem::replace(&mut outgoing, PoolBuffer::empty()),
            peer.local_addr().unwrap(),
        );
        assert_eq!(sent, Ok(4));
        let mut got = [0_u8; 16];
        let (len, _) = peer.recv_from(&mut got).unwrap();
        peer.send_to(&got[..len], local).unwrap();
        let received;
        (received, incoming) = socket.receive_from_blocking(
            &passive,
            TIMEOUT,
            core::mem::replace(&mut incoming, PoolBuffer::empty()),
        );
        assert_eq!(received.map(|(len, _)| len), Ok(4));
    };
    round();
    let before = kernel.allocations();
    for _ in 0..20 {
        round();
    }
    let during = kernel.allocations() - before;
    assert_eq!((during.pool, during.irps, during.mdls), (0, 0, 0));
    drop((outgoing, incoming, socket, provider));
    assert!(registration.deregister(&passive).is_clean());
    kernel.assert_no_leaks();
}

#[test]
fn a_provider_without_datagram_sockets_is_asked_once() {
    // Wine 8's WskSocket creates listening and connection sockets only.
    let kernel = Kernel::with_provider(ProviderConfig::like_wine());
    let _enter = kernel.enter();
    let passive = PassiveLevel::check().unwrap();
    let registration = Registration::register(&passive).unwrap();
    let provider = registration.capture(&passive, TIMEOUT).unwrap();
    assert_eq!(
        provider
            .datagram_blocking(&passive, TIMEOUT, loopback(Family::V4))
            .err(),
        Some(Error::NotSupported(NtStatus::NOT_IMPLEMENTED)),
        "the provider's answer"
    );
    assert_eq!(
        provider
            .datagram_blocking(&passive, TIMEOUT, loopback(Family::V6))
            .err(),
        Some(Error::NotSupported(NtStatus::NOT_SUPPORTED)),
        "the library's own answer: not asked again"
    );
    drop(provider);
    assert!(registration.deregister(&passive).is_clean());
    kernel.assert_no_leaks();
}
