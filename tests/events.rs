//! Receive and disconnect events (`SO_WSK_EVENT_CALLBACK`) through the
//! library and the emulated provider over real loopback sockets: data read
//! out of kept indications in order (across lists, entries and MDL chains,
//! mapped and unmapped MDLs), without a receive IRP per read; a full ring
//! that refuses data and a posted receive that resumes the events; the
//! peer's end and reset; kept lists released before the close; misuse
//! refused with a typed error. Every test ends with nothing outstanding.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use wsk::emulator::Kernel;
use wsk::{
    Connection, Error, Family, NtStatus, PassiveLevel, PoolBuffer, PoolTag, Provider, Registration,
    SocketKind,
};

const TIMEOUT: Duration = Duration::from_secs(10);

fn passive() -> PassiveLevel {
    PassiveLevel::check().expect("test threads start at PASSIVE_LEVEL")
}

/// Bytes that show any reordering, loss or repetition.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from((i * 7 + i / 251) % 256).unwrap())
        .collect()
}

/// A connection from the library to a host listener, and the host's end.
fn connected(provider: &Provider, passive: &PassiveLevel) -> (Connection, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let remote = listener.local_addr().unwrap();
    let connection = provider
        .socket_connect_blocking(passive, TIMEOUT, Family::V4.unspecified(), remote)
        .unwrap();
    let (peer, _) = listener.accept().unwrap();
    (connection, peer)
}

/// Reads with `receive_indicated_blocking` in `chunk`-byte buffers until
/// the peer's end; gives everything read.
fn read_to_end(connection: &Connection, passive: &PassiveLevel, chunk: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buffer = PoolBuffer::zeroed(chunk, PoolTag::BUFFER).unwrap();
    loop {
        let (read, back) = connection.receive_indicated_blocking(passive, TIMEOUT, buffer);
        let read = read.unwrap();
        assert_eq!(back.len(), read, "the buffer's length says what came");
        if read == 0 {
            return got;
        }
        got.extend_from_slice(&back);
        buffer = back;
    }
}

fn machine() -> (
    Kernel,
    wsk::emulator::EnterGuard,
    PassiveLevel,
    Registration,
    Provider,
) {
    let kernel = Kernel::new();
    let enter = kernel.enter();
    let passive = passive();
    let registration = Registration::register(&passive).unwrap();
    let provider = registration.capture(&passive, TIMEOUT).unwrap();
    (kernel, enter, passive, registration, provider)
}

fn finish(kernel: &Kernel, passive: &PassiveLevel, registration: Registration, provider: Provider) {
    drop(provider);
    let report = registration.deregister(passive);
    assert!(report.is_clean(), "{report}");
    kernel.assert_no_leaks();
}

#[test]
fn indicated_data_comes_in_order_then_the_peers_end() {
    let (kernel, _enter, passive, registration, provider) = machine();
    let (connection, peer) = connected(&provider, &passive);
    // Both ends' addresses, blocking.
    assert_eq!(
        connection.remote_address_blocking(&passive, TIMEOUT),
        Ok(peer.local_addr().unwrap())
    );
    assert_eq!(
        connection.local_address_blocking(&passive, TIMEOUT),
        Ok(peer.peer_addr().unwrap())
    );
    connection.enable_receive_events().unwrap();
    // Sizes that end inside a segment, inside an MDL, and across lists;
    // buffers smaller and larger than a segment.
    for (len, chunk) in [
        (1, 7),
        (1_000, 100),
        (5_000, 1_460),
        (40_000, 4_096),
        (9_999, 65_536),
    ] {
        let data = pattern(len);
        let writer = {
            let mut peer = peer.try_clone().unwrap();
            let data = data.clone();
            thread::spawn(move || peer.write_all(&data).unwrap())
        };
        let mut got = Vec::new();
        let mut buffer = PoolBuffer::zeroed(chunk, PoolTag::BUFFER).unwrap();
        while got.len() < len {
            let (read, back) = connection.receive_indicated_blocking(&passive, TIMEOUT, buffer);
            let read = read.unwrap();
            assert!(read > 0, "the peer has not ended");
            got.extend_from_slice(&back);
            buffer = back;
        }
        writer.join().unwrap();
        assert!(
            got == data,
            "{len} bytes in {chunk}-byte reads came back in order"
        );
    }
    peer.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(read_to_end(&connection, &passive, 64).is_empty());
    // The end stays told.
    let (again, _) = connection.receive_indicated_blocking(
        &passive,
        TIMEOUT,
        PoolBuffer::zeroed(8, PoolTag::BUFFER).unwrap(),
    );
    assert_eq!(again, Ok(0));
    connection.close_blocking(&passive, TIMEOUT).unwrap();
    drop(peer);
    finish(&kernel, &passive, registration, provider);
}

#[test]
fn reads_from_kept_indications_post_no_receive() {
    let (kernel, _enter, passive, registration, provider) = machine();
    let (connection, mut peer) = connected(&provider, &passive);
    connection.enable_receive_events().unwrap();
    // Fresh buffers, made before counting: a receive IRP would need an MDL
    // for each (it describes its buffer once); a copy out of a kept list
    // needs none.
    let buffers: Vec<PoolBuffer> = (0..20)
        .map(|_| PoolBuffer::zeroed(64, PoolTag::BUFFER).unwrap())
        .collect();
    let before = kernel.allocations();
    for (round, buffer) in buffers.into_iter().enumerate() {
        let message = [u8::try_from(round).unwrap(); 64];
        peer.write_all(&message).unwrap();
        let (read, back) = connection.receive_indicated_blocking(&passive, TIMEOUT, buffer);
        assert_eq!(read, Ok(64));
        assert_eq!(&*back, &message[..]);
    }
    let during = kernel.allocations() - before;
    assert_eq!(
        (during.irps, during.mdls, during.pool),
        (0, 0, 0),
        "no receive IRP, MDL or pool per read"
    );
    connection.close_blocking(&passive, TIMEOUT).unwrap();
    drop(peer);
    finish(&kernel, &passive, registration, provider);
}

#[test]
fn a_full_ring_refuses_and_a_posted_receive_resumes_the_events_in_order() {
    let (kernel, _enter, passive, registration, provider) = machine();
    let (connection, peer) = connected(&provider, &passive);
    connection.enable_receive_events().unwrap();
    // Far more than the ring keeps, written before anything is read: the
    // ring fills in small lists, then refuses; the provider holds the
    // rest until a read posts a WskReceive.
    let data = pattern(2 * 1024 * 1024);
    let writer = {
        let data = data.clone();
        let mut peer = peer.try_clone().unwrap();
        thread::spawn(move || {
            for piece in data.chunks(500) {
                peer.write_all(piece).unwrap();
            }
        })
    };
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(300) {
        thread::sleep(Duration::from_millis(10));
    }
    // Small reads and large ones: a list part read stays the one read
    // next while the callbacks keep filling the ring behind it.
    let mut got = Vec::new();
    let mut small = PoolBuffer::zeroed(100, PoolTag::BUFFER).unwrap();
    let mut buffer = PoolBuffer::zeroed(3_000, PoolTag::BUFFER).unwrap();
    let mut round = 0_usize;
    while got.len() < data.len() {
        round += 1;
        if round.is_multiple_of(3) {
            let (read, back) = connection.receive_indicated_blocking(&passive, TIMEOUT, small);
            assert!(read.unwrap() > 0);
            got.extend_from_slice(&back);
            small = back;
        } else {
            let (read, back) = connection.receive_indicated_blocking(&passive, TIMEOUT, buffer);
            assert!(read.unwrap() > 0);
            got.extend_from_slice(&back);
            buffer = back;
        }
    }
    // A read that found the ring empty after a refusal posted a
    // WskReceive into its buffer, which described itself with an MDL.
    assert!(
        kernel.usage().mdls >= 1,
        "the refused data came by WskReceive"
    );
    drop((small, buffer));
    writer.join().unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "every byte once, in order");
    connection.close_blocking(&passive, TIMEOUT).unwrap();
    drop(peer);
    finish(&kernel, &passive, registration, provider);
}

#[test]
fn the_peers_end_comes_after_the_data_kept_before_it() {
    let (kernel, _enter, passive, registration, provider) = machine();
    let (connection, mut peer) = connected(&provider, &passive);
    connection.enable_receive_events().unwrap();
    let data = pattern(30_000);
    peer.write_all(&data).unwrap();
    peer.shutdown(std::net::Shutdown::Write).unwrap();
    // Indicated and ended before anything is read.
    thread::sleep(Duration::from_millis(100));
    assert!(read_to_end(&connection, &passive, 1_000) == data);
    connection.close_blocking(&passive, TIMEOUT).unwrap();
    drop(peer);
    finish(&kernel, &passive, registration, provider);
}

#[test]
fn a_peer_reset_is_told_after_what_came_before() {
    let (kernel, _enter, passive, registration, provider) = machine();
    let (connection, mut peer) = connected(&provider, &passive);
    connection.enable_receive_events().unwrap();
    peer.write_all(b"last words").unwrap();
    let (read, back) = connection.receive_indicated_blocking(
        &passive,
        TIMEOUT,
        PoolBuffer::zeroed(64, PoolTag::BUFFER).unwrap(),
    );
    assert_eq!(read, Ok(10));
    assert_eq!(&*back, b"last words");
    socket2::SockRef::from(&peer)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(peer);
    let (read, _) = connection.receive_indicated_blocking(&passive, TIMEOUT, back);
    assert!(matches!(read, Err(Error::Reset(_))), "{read:?}");
    drop(connection);
    finish(&kernel, &passive, registration, provider);
}

#[test]
fn closing_releases_the_lists_still_kept() {
    let (kernel, _enter, passive, registration, provider) = machine();
    for close in [true, false] {
        let (connection, mut peer) = connected(&provider, &passive);
        connection.enable_receive_events().unwrap();
        peer.write_all(&pattern(50_000)).unwrap();
        // Read a little, so that lists are kept and one is part read.
        let (read, _) = connection.receive_indicated_blocking(
            &passive,
            TIMEOUT,
            PoolBuffer::zeroed(100, PoolTag::BUFFER).unwrap(),
        );
        assert_eq!(read, Ok(100));
        thread::sleep(Duration::from_millis(50));
        assert!(kernel.usage().indications_kept > 0, "lists are kept");
        // The emulated provider bugchecks a close with a list not released.
        if close {
            connection.close_blocking(&passive, TIMEOUT).unwrap();
        } else {
            drop(connection);
        }
        drop(peer);
    }
    finish(&kernel, &passive, registration, provider);
}

/// A waker that raises a flag.
struct Flag(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl std::task::Wake for Flag {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn deregistration_releases_the_lists_of_a_connection_still_held() {
    let (kernel, _enter, passive, registration, provider) = machine();
    let (connection, mut peer) = connected(&provider, &passive);
    connection.enable_receive_events().unwrap();
    peer.write_all(&pattern(20_000)).unwrap();
    let started = Instant::now();
    while kernel.usage().indications_kept == 0 {
        assert!(started.elapsed() < TIMEOUT, "nothing indicated");
        thread::sleep(Duration::from_millis(1));
    }
    // Deregistration's sweep closes the socket under the handle: the lists
    // go back first (the emulated provider bugchecks otherwise).
    drop(provider);
    let report = registration.deregister(&passive);
    assert_eq!(report.closed_sockets, 1, "{report}");
    assert_eq!(kernel.usage().indications_kept, 0);
    let (read, _) = connection.receive_indicated_blocking(
        &passive,
        TIMEOUT,
        PoolBuffer::zeroed(16, PoolTag::BUFFER).unwrap(),
    );
    assert_eq!(read, Err(Error::ForcedClosed(NtStatus::FILE_FORCED_CLOSED)));
    drop((connection, peer));
    kernel.assert_no_leaks();
}

#[test]
fn a_pending_read_wakes_when_data_is_indicated() {
    let (kernel, _enter, passive, registration, provider) = machine();
    let (connection, mut peer) = connected(&provider, &passive);
    connection.enable_receive_events().unwrap();
    let woken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let waker = Waker::from(std::sync::Arc::new(Flag(woken.clone())));
    {
        let mut read =
            pin!(connection.receive_indicated(PoolBuffer::zeroed(16, PoolTag::BUFFER).unwrap()));
        let mut context = Context::from_waker(&waker);
        assert!(
            read.as_mut().poll(&mut context).is_pending(),
            "nothing sent yet"
        );
        // One read at a time.
        let (second, _) = connection.receive_indicated_blocking(
            &passive,
            TIMEOUT,
            PoolBuffer::zeroed(16, PoolTag::BUFFER).unwrap(),
        );
        assert_eq!(
            second,
            Err(Error::InvalidArgument(NtStatus::INVALID_DEVICE_STATE))
        );
        peer.write_all(b"wake").unwrap();
        let started = Instant::now();
        while !woken.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(started.elapsed() < TIMEOUT, "never woken");
            thread::sleep(Duration::from_millis(1));
        }
        let Poll::Ready((result, buffer)) = read.as_mut().poll(&mut context) else {
            panic!("woken but not ready");
        };
        assert_eq!(result, Ok(4));
        assert_eq!(&*buffer, b"wake");
    }
    // A read dropped while it waits loses nothing.
    {
        let mut dropped =
            pin!(connection.receive_indicated(PoolBuffer::zeroed(16, PoolTag::BUFFER).unwrap()));
        assert!(
            dropped
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_pending()
        );
    }
    peer.write_all(b"kept").unwrap();
    let (read, back) = connection.receive_indicated_blocking(
        &passive,
        TIMEOUT,
        PoolBuffer::zeroed(16, PoolTag::BUFFER).unwrap(),
    );
    assert_eq!(read, Ok(4));
    assert_eq!(&*back, b"kept");
    drop(back);
    connection.close_blocking(&passive, TIMEOUT).unwrap();
    drop(peer);
    finish(&kernel, &passive, registration, provider);
}

#[test]
fn an_accepted_connection_takes_events_too() {
    let (kernel, _enter, passive, registration, provider) = machine();
    let listener = provider
        .listen_blocking(&passive, TIMEOUT, "127.0.0.1:0".parse().unwrap())
        .unwrap();
    let address: SocketAddr = listener.local_address_blocking(&passive, TIMEOUT).unwrap();
    let peer = thread::spawn(move || {
        let mut stream = TcpStream::connect(address).unwrap();
        stream.write_all(b"accepted").unwrap();
        stream
    });
    let (connection, _) = listener.accept_blocking(&passive, TIMEOUT).unwrap();
    connection.enable_receive_events().unwrap();
    let peer = peer.join().unwrap();
    let (read, back) = connection.receive_indicated_blocking(
        &passive,
        TIMEOUT,
        PoolBuffer::zeroed(64, PoolTag::BUFFER).unwrap(),
    );
    assert_eq!(read, Ok(8));
    assert_eq!(&*back, b"accepted");
    drop(back);
    connection.close_blocking(&passive, TIMEOUT).unwrap();
    listener.close_blocking(&passive, TIMEOUT).unwrap();
    drop(peer);
    finish(&kernel, &passive, registration, provider);
}

#[test]
fn misuse_gets_a_typed_error_before_any_call() {
    let (kernel, _enter, passive, registration, provider) = machine();
    let (connection, peer) = connected(&provider, &passive);
    // Not turned on yet.
    let (read, buffer) = connection.receive_indicated_blocking(
        &passive,
        TIMEOUT,
        PoolBuffer::zeroed(8, PoolTag::BUFFER).unwrap(),
    );
    assert_eq!(
        read,
        Err(Error::InvalidArgument(NtStatus::INVALID_DEVICE_STATE))
    );
    assert_eq!(buffer.capacity(), 8, "the buffer comes back");
    connection.enable_receive_events().unwrap();
    let (read, _) = connection.receive_indicated_blocking(
        &passive,
        TIMEOUT,
        PoolBuffer::zeroed(0, PoolTag::BUFFER).unwrap(),
    );
    assert_eq!(
        read,
        Err(Error::InvalidArgument(NtStatus::INVALID_PARAMETER))
    );
    // Nothing came: a timeout, and nothing lost.
    let (read, _) =
        connection.receive_indicated_blocking(&passive, Duration::from_millis(50), buffer);
    assert_eq!(read, Err(Error::TimedOut(NtStatus::IO_TIMEOUT)));
    connection.close_blocking(&passive, TIMEOUT).unwrap();
    drop(peer);
    // A stream socket's events are not offered.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = provider
        .socket_blocking(&passive, TIMEOUT, Family::V4, SocketKind::Stream)
        .unwrap()
        .bind_blocking(&passive, TIMEOUT, Family::V4.unspecified())
        .unwrap()
        .connect_blocking(&passive, TIMEOUT, listener.local_addr().unwrap())
        .unwrap();
    assert_eq!(
        stream.enable_receive_events(),
        Err(Error::NotSupported(NtStatus::NOT_SUPPORTED))
    );
    stream.close_blocking(&passive, TIMEOUT).unwrap();
    finish(&kernel, &passive, registration, provider);
}
