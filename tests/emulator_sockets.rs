//! The emulator's WSK socket provider, driven through the raw ABI against
//! real loopback servers: the connect paths, send, receive, disconnect,
//! close, the real provider's argument and state rules, cancellation,
//! `always_pend`, the verifier's use-after-close check, and a thousand
//! pending receives served without a thread each.

mod support;

use core::ffi::c_void;
use core::ptr;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::{
    Client, Data, PENDING, SUCCESS, Sock, WinAddr, call, expect_bugcheck_in_child, in_fatal_child,
    thread_count,
};
use wsk::abi::{
    AF_INET, DISPATCH_LEVEL, IPPROTO_TCP, IRP, NTSTATUS, SOCK_STREAM, TCP_FASTOPEN, ULONG,
    WSK_FLAG_ABORTIVE, WSK_FLAG_CONNECTION_SOCKET, WSK_FLAG_DATAGRAM_SOCKET,
    WSK_FLAG_LISTEN_SOCKET, WSK_FLAG_NODELAY, WSK_FLAG_STREAM_SOCKET, WSK_FLAG_WAITALL,
    WSK_PROVIDER_LISTEN_DISPATCH, WSK_SOCKET, WskSetOption,
};
use wsk::emulator::{Kernel, ProviderConfig, irql};
use wsk::{Irp, NtStatus};

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

const fn any_port(ip: IpAddr) -> SocketAddr {
    SocketAddr::new(ip, 0)
}

/// A loopback port with nothing listening on it.
fn closed_port(ip: IpAddr) -> SocketAddr {
    let listener = TcpListener::bind(any_port(ip)).unwrap();
    listener.local_addr().unwrap()
}

/// Accepts one connection and hands it to `serve` on a thread.
fn serve_one<T: Send + 'static>(
    ip: IpAddr,
    serve: impl FnOnce(TcpStream) -> T + Send + 'static,
) -> (SocketAddr, thread::JoinHandle<T>) {
    let listener = TcpListener::bind(any_port(ip)).unwrap();
    let address = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(support::PATIENCE)).unwrap();
        serve(stream)
    });
    (address, server)
}

/// Reads until the peer's FIN (a reset fails the test).
fn read_to_end(mut stream: &TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    stream.read_to_end(&mut all).unwrap();
    all
}

/// Reads until the peer's FIN or reset (`WskCloseSocket` without a
/// graceful disconnect resets the connection).
fn drain(mut stream: &TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut chunk = [0_u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return all,
            Ok(read) => all.extend_from_slice(&chunk[..read]),
            Err(error) if error.kind() == ErrorKind::ConnectionReset => return all,
            Err(error) => panic!("server read: {error}"),
        }
    }
}

/// A socket of `kind`, bound and connected to `remote`.
fn connected(client: &Client, remote: SocketAddr, kind: u32) -> Sock {
    let socket = client.open(remote.ip(), kind);
    assert_eq!(socket.bind(any_port(remote.ip()), 0).status, SUCCESS);
    assert_eq!(socket.connect(remote, 0).status, SUCCESS);
    socket
}

fn lifecycle(ip: IpAddr, kind: u32) {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let (server_address, server) = serve_one(ip, |mut stream| {
        let mut hello = [0_u8; 5];
        stream.read_exact(&mut hello).unwrap();
        assert_eq!(&hello, b"hello");
        stream.write_all(b"HELLO world").unwrap();
        let rest = read_to_end(&stream);
        let peer = stream.peer_addr().unwrap();
        drop(stream);
        (peer, rest)
    });
    let client = Client::register();
    let socket = client.open(ip, kind);
    assert_eq!(kernel.usage().sockets, 1, "WskSocket counts the socket");

    let bound = socket.bind(any_port(ip), 0);
    assert_eq!(
        (bound.returned, bound.status),
        (SUCCESS, SUCCESS),
        "bind completes inline"
    );
    assert_eq!(bound.thread, thread::current().id());
    let (outcome, local) = socket.local_address();
    assert_eq!(outcome.status, SUCCESS);
    let local = local.expect("a Windows SOCKADDR");
    assert_eq!(local.ip(), ip);
    assert_ne!(local.port(), 0, "the host chose a port");

    assert_eq!(socket.connect(server_address, 0).status, SUCCESS);
    let (outcome, remote) = socket.remote_address();
    assert_eq!(outcome.status, SUCCESS);
    assert_eq!(remote, Some(server_address));

    let mut hello = Data::from(b"hello");
    let sent = socket.send(&mut hello, 0);
    assert_eq!((sent.status, sent.information), (SUCCESS, 5));

    let mut reply = Data::zeroed(11);
    let received = socket.receive(&mut reply, WSK_FLAG_WAITALL);
    assert_eq!((received.status, received.information), (SUCCESS, 11));
    assert_eq!(reply.bytes(11), b"HELLO world");

    let mut bye = Data::from(b"bye");
    let disconnected = socket.disconnect(Some(&mut bye), 0);
    assert_eq!(disconnected.status, SUCCESS);
    let (peer, rest) = server.join().unwrap();
    assert_eq!(peer, local, "the server saw our bound address");
    assert_eq!(rest, b"bye", "the disconnect's data, then the FIN");

    let mut more = Data::zeroed(16);
    let end = socket.receive(&mut more, 0);
    assert_eq!(
        (end.status, end.information),
        (SUCCESS, 0),
        "the peer's graceful close reads as 0 bytes"
    );

    let closed = socket.close();
    assert_eq!((closed.returned, closed.status), (SUCCESS, SUCCESS));
    assert_eq!(kernel.usage().sockets, 0, "WskCloseSocket uncounts it");
    client.finish();
    drop((hello, reply, bye, more));
    kernel.assert_no_leaks();
}

#[test]
fn a_connection_socket_connects_sends_receives_disconnects_and_closes_over_ipv4() {
    lifecycle(V4, WSK_FLAG_CONNECTION_SOCKET);
}

#[test]
fn a_connection_socket_connects_sends_receives_disconnects_and_closes_over_ipv6() {
    lifecycle(V6, WSK_FLAG_CONNECTION_SOCKET);
}

#[test]
fn a_stream_socket_connects_sends_receives_disconnects_and_closes_over_ipv4() {
    lifecycle(V4, WSK_FLAG_STREAM_SOCKET);
}

#[test]
fn a_stream_socket_connects_sends_receives_disconnects_and_closes_over_ipv6() {
    lifecycle(V6, WSK_FLAG_STREAM_SOCKET);
}

/// A bind to the wildcard address and port 0 leaves the port to the
/// connect on the host (whose search at connect time is the cheap one),
/// but a client that asks for the local address first sees the port
/// Windows would have assigned at `WskBind`, and keeps it.
#[test]
fn a_wildcard_bind_to_port_zero_has_its_port_when_asked_and_keeps_it() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();
    for ip in [V4, V6] {
        let wildcard = match ip {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        for ask_first in [true, false] {
            let (server_address, server) =
                serve_one(ip, |stream| stream.peer_addr().unwrap().port());
            let socket = client.open(ip, WSK_FLAG_CONNECTION_SOCKET);
            assert_eq!(socket.bind(SocketAddr::new(wildcard, 0), 0).status, SUCCESS);
            let before = ask_first.then(|| {
                let (outcome, local) = socket.local_address();
                assert_eq!(outcome.status, SUCCESS);
                let local = local.unwrap();
                assert_eq!(local.ip(), wildcard);
                assert_ne!(local.port(), 0, "the port is assigned once asked for");
                local.port()
            });
            assert_eq!(socket.connect(server_address, 0).status, SUCCESS);
            let after = socket.local_address().1.unwrap().port();
            let seen_by_peer = server.join().unwrap();
            assert_eq!(after, seen_by_peer);
            if let Some(before) = before {
                assert_eq!(before, after, "the connect kept the port bound");
            }
            assert_eq!(socket.close().status, SUCCESS);
        }
    }
    client.finish();
    kernel.assert_no_leaks();
}

#[test]
fn socket_connect_hands_out_a_connected_counted_socket() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();
    for ip in [V4, V6] {
        let (server_address, server) = serve_one(ip, |mut stream| {
            let mut ping = [0_u8; 4];
            stream.read_exact(&mut ping).unwrap();
            stream.write_all(&ping).unwrap();
            read_to_end(&stream)
        });
        let outcome = client.socket_connect_call(any_port(ip), server_address, 0);
        assert_eq!(outcome.status, SUCCESS, "{ip}");
        assert_eq!(kernel.usage().sockets, 1, "counted once connected");
        let socket = Sock::from_raw(outcome.information as *mut _, WSK_FLAG_CONNECTION_SOCKET);
        assert_eq!(socket.remote_address().1, Some(server_address));
        let mut ping = Data::from(b"ping");
        assert_eq!(socket.send(&mut ping, 0).information, 4);
        let mut answer = Data::zeroed(4);
        assert_eq!(socket.receive(&mut answer, WSK_FLAG_WAITALL).information, 4);
        assert_eq!(answer.bytes(4), b"ping");
        assert_eq!(socket.disconnect(None, 0).status, SUCCESS);
        assert_eq!(server.join().unwrap(), b"");
        assert_eq!(socket.close().status, SUCCESS);
        assert_eq!(kernel.usage().sockets, 0);
    }
    client.finish();
    kernel.assert_no_leaks();
}

#[test]
fn a_refused_socket_connect_leaks_nothing_and_counts_no_socket() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();
    for ip in [V4, V6] {
        let outcome = client.socket_connect_call(any_port(ip), closed_port(ip), 0);
        assert_eq!(outcome.status, NtStatus::CONNECTION_REFUSED, "{ip}");
        assert_eq!(outcome.information, 0, "no socket is handed out");
        assert_eq!(kernel.usage().sockets, 0);
    }
    client.finish();
    kernel.assert_no_leaks();
}

#[test]
fn connecting_to_a_closed_port_is_refused_and_leaves_the_socket_only_closable() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();
    for ip in [V4, V6] {
        let socket = client.open(ip, WSK_FLAG_CONNECTION_SOCKET);
        assert_eq!(socket.bind(any_port(ip), 0).status, SUCCESS);
        let refused_port = closed_port(ip);
        let refused = socket.connect(refused_port, 0);
        assert_eq!(refused.status, NtStatus::CONNECTION_REFUSED, "{ip}");
        assert_eq!(
            socket.connect(refused_port, 0).status,
            NtStatus::FILE_FORCED_CLOSED,
            "the socket is no longer functional"
        );
        assert_eq!(socket.close().status, SUCCESS);
    }
    client.finish();
    kernel.assert_no_leaks();
}

#[test]
fn reserved_and_unknown_flags_are_invalid_parameters() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();

    // WskSocket: unknown kinds are invalid, kinds the provider lacks are not supported.
    assert_eq!(
        client.socket_raw(AF_INET, SOCK_STREAM, 0x10).status,
        NtStatus::INVALID_PARAMETER
    );
    assert_eq!(
        client
            .socket_raw(AF_INET, SOCK_STREAM, WSK_FLAG_DATAGRAM_SOCKET)
            .status,
        NtStatus::NOT_SUPPORTED
    );
    assert_eq!(
        client
            .socket_raw(10, SOCK_STREAM, WSK_FLAG_CONNECTION_SOCKET)
            .status,
        NtStatus::INVALID_PARAMETER,
        "Linux's AF_INET6 (10) is no Windows family"
    );
    assert_eq!(kernel.usage().sockets, 0, "no socket from failed calls");

    // WskSocketConnect: Flags is reserved.
    let (server_address, server) = serve_one(V4, |stream| read_to_end(&stream));
    let outcome = client.socket_connect_call(any_port(V4), server_address, 1);
    assert_eq!(outcome.status, NtStatus::INVALID_PARAMETER);
    assert_eq!(kernel.usage().sockets, 0);

    // WskBind, WskConnect, WskConnectEx: Flags is reserved.
    let socket = client.open(V4, WSK_FLAG_CONNECTION_SOCKET);
    assert_eq!(
        socket.bind(any_port(V4), 1).status,
        NtStatus::INVALID_PARAMETER
    );
    assert_eq!(
        socket.bind(any_port(V4), 0).status,
        SUCCESS,
        "the rejected bind bound nothing"
    );
    assert_eq!(
        socket.connect(server_address, 1).status,
        NtStatus::INVALID_PARAMETER
    );
    let mut data = Data::from(b"x");
    assert_eq!(
        socket
            .connect_ex(server_address, Some(&mut data), 0x8)
            .status,
        NtStatus::INVALID_PARAMETER
    );
    assert_eq!(
        socket.connect(server_address, 0).status,
        SUCCESS,
        "the rejected connects started nothing"
    );

    // WskSend: 0 or WSK_FLAG_NODELAY; WskReceive: 0 or WSK_FLAG_WAITALL;
    // WskDisconnect: 0 or WSK_FLAG_ABORTIVE.
    for flags in [0x1, 0x4, 0x100] {
        assert_eq!(
            socket.send(&mut data, flags).status,
            NtStatus::INVALID_PARAMETER,
            "send {flags:#x}"
        );
    }
    assert_eq!(socket.send(&mut data, WSK_FLAG_NODELAY).information, 1);
    let mut buffer = Data::zeroed(4);
    for flags in [0x1, 0x4, 0x40] {
        assert_eq!(
            socket.receive(&mut buffer, flags).status,
            NtStatus::INVALID_PARAMETER,
            "receive {flags:#x}"
        );
    }
    for flags in [0x2, 0x4] {
        assert_eq!(
            socket.disconnect(None, flags).status,
            NtStatus::INVALID_PARAMETER,
            "disconnect {flags:#x}"
        );
    }
    assert_eq!(socket.disconnect(None, 0).status, SUCCESS);
    assert_eq!(
        socket.disconnect(None, 0).status,
        NtStatus::INVALID_CONNECTION,
        "a second disconnect"
    );
    assert_eq!(server.join().unwrap(), b"x", "only the valid send went out");
    assert_eq!(socket.close().status, SUCCESS);
    client.finish();
    drop((data, buffer));
    kernel.assert_no_leaks();
}

#[test]
fn calls_in_the_wrong_state_fail_as_the_real_provider_fails_them() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();
    let (server_address, server) = serve_one(V4, |stream| drain(&stream));
    let socket = client.open(V4, WSK_FLAG_CONNECTION_SOCKET);
    let mut data = Data::from(b"data");

    assert_eq!(
        socket.connect(server_address, 0).status,
        NtStatus::INVALID_DEVICE_STATE,
        "connect needs a bound socket"
    );
    assert_eq!(
        socket.send(&mut data, 0).status,
        NtStatus::INVALID_CONNECTION
    );
    assert_eq!(
        socket.receive(&mut data, 0).status,
        NtStatus::INVALID_CONNECTION
    );
    assert_eq!(
        socket.disconnect(None, 0).status,
        NtStatus::INVALID_CONNECTION
    );
    assert_eq!(
        socket.remote_address().0.status,
        NtStatus::INVALID_CONNECTION
    );
    assert_eq!(
        socket.local_address().0.status,
        NtStatus::INVALID_DEVICE_STATE
    );
    assert_eq!(
        socket.bind(any_port(V6), 0).status,
        NtStatus::INVALID_PARAMETER,
        "an IPv6 address on an IPv4 socket"
    );
    let taken = TcpListener::bind(any_port(V4)).unwrap();
    assert_eq!(
        socket.bind(taken.local_addr().unwrap(), 0).status,
        NtStatus::ADDRESS_ALREADY_EXISTS,
        "EADDRINUSE"
    );
    drop(taken);
    assert_eq!(
        socket
            .bind(SocketAddr::new(Ipv4Addr::new(192, 0, 2, 1).into(), 0), 0)
            .status,
        NtStatus::INVALID_ADDRESS_COMPONENT,
        "EADDRNOTAVAIL: not an address of this host"
    );
    assert_eq!(socket.bind(any_port(V4), 0).status, SUCCESS);
    assert_eq!(
        socket.bind(any_port(V4), 0).status,
        NtStatus::ADDRESS_ALREADY_ASSOCIATED
    );
    assert_eq!(
        socket.connect(SocketAddr::new(V6, 1), 0).status,
        NtStatus::INVALID_PARAMETER,
        "an IPv6 remote on an IPv4 socket"
    );
    assert_eq!(
        client
            .socket_connect_call(any_port(V4), SocketAddr::new(V6, 1), 0)
            .status,
        NtStatus::INVALID_PARAMETER,
        "WskSocketConnect's families must match"
    );

    // TCP_FASTOPEN: set (no IRP: the status comes back directly), read
    // back, and refused once connecting has begun.
    assert_eq!(socket.get_fast_open(), (SUCCESS, 0, 4));
    assert_eq!(socket.set_fast_open(true), SUCCESS);
    assert_eq!(socket.get_fast_open(), (SUCCESS, 1, 4));

    assert_eq!(
        socket
            .control_with_irp(WskSetOption, TCP_FASTOPEN, 0xFFFF, 1)
            .status,
        NtStatus::NOT_SUPPORTED,
        "SOL_SOCKET level"
    );
    assert_eq!(socket.set_fast_open(false), SUCCESS);
    assert_eq!(socket.connect(server_address, 0).status, SUCCESS);
    assert_eq!(
        socket.set_fast_open(true),
        NtStatus::INVALID_DEVICE_STATE,
        "the SYN has gone"
    );
    assert_eq!(
        socket.connect(server_address, 0).status,
        NtStatus::CONNECTION_ACTIVE
    );
    assert_eq!(socket.close().status, SUCCESS);
    assert_eq!(server.join().unwrap(), b"");
    client.finish();
    drop(data);
    kernel.assert_no_leaks();
}

#[test]
fn connect_ex_sends_its_buffer_with_the_connect() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();
    for ip in [V4, V6] {
        let (server_address, server) = serve_one(ip, |stream| read_to_end(&stream));
        let socket = client.open(ip, WSK_FLAG_STREAM_SOCKET);
        assert_eq!(socket.bind(any_port(ip), 0).status, SUCCESS);
        let mut payload = Data::from(b"payload in the connect");
        let outcome = socket.connect_ex(server_address, Some(&mut payload), 0);
        // No byte count: Microsoft documents none for WskConnectEx.
        assert_eq!((outcome.status, outcome.information), (SUCCESS, 0));
        assert_eq!(socket.disconnect(None, 0).status, SUCCESS);
        assert_eq!(server.join().unwrap(), b"payload in the connect");
        assert_eq!(socket.close().status, SUCCESS);

        // Without a buffer it is a plain connect.
        let (server_address, server) = serve_one(ip, |stream| drain(&stream));
        let socket = client.open(ip, WSK_FLAG_CONNECTION_SOCKET);
        assert_eq!(socket.bind(any_port(ip), 0).status, SUCCESS);
        let outcome = socket.connect_ex(server_address, None, 0);
        assert_eq!((outcome.status, outcome.information), (SUCCESS, 0));
        assert_eq!(socket.close().status, SUCCESS);
        server.join().unwrap();
    }
    client.finish();
    kernel.assert_no_leaks();
}

#[test]
fn connect_ex_refuses_more_than_65535_bytes_and_sends_nothing() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();
    let listener = TcpListener::bind(any_port(V4)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let socket = client.open(V4, WSK_FLAG_CONNECTION_SOCKET);
    assert_eq!(socket.bind(any_port(V4), 0).status, SUCCESS);
    let mut too_much = Data::zeroed(65_536);
    assert_eq!(
        socket
            .connect_ex(listener.local_addr().unwrap(), Some(&mut too_much), 0)
            .status,
        NtStatus::BUFFER_OVERFLOW
    );
    thread::sleep(Duration::from_millis(100));
    assert_eq!(
        listener.accept().unwrap_err().kind(),
        ErrorKind::WouldBlock,
        "no connection was attempted"
    );

    let mut most = Data::from(&vec![7_u8; 65_535]);
    let outcome = socket.connect_ex(listener.local_addr().unwrap(), Some(&mut most), 0);
    assert_eq!((outcome.status, outcome.information), (SUCCESS, 0));
    let (stream, _) = listener.accept().unwrap();
    stream.set_nonblocking(false).unwrap();
    assert_eq!(socket.disconnect(None, 0).status, SUCCESS);
    let received = read_to_end(&stream);
    assert_eq!(received.len(), 65_535);
    assert!(received.iter().all(|&byte| byte == 7));
    assert_eq!(socket.close().status, SUCCESS);
    client.finish();
    drop((too_much, most));
    kernel.assert_no_leaks();
}

#[test]
fn optional_entries_follow_the_provider_configuration() {
    let kernel = Kernel::with_provider(ProviderConfig {
        socket_connect: false,
        connect_ex: false,
        ..ProviderConfig::default()
    });
    let _enter = kernel.enter();
    let client = Client::register();
    assert!(client.provider().WskSocketConnect.is_none());
    for kind in [WSK_FLAG_CONNECTION_SOCKET, WSK_FLAG_STREAM_SOCKET] {
        let socket = client.open(V4, kind);
        assert!(
            socket.functions.connect_ex.is_none(),
            "WskConnectEx is NULL"
        );
        assert_eq!(socket.close().status, SUCCESS);
    }
    client.finish();
    kernel.assert_no_leaks();

    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();
    assert!(client.provider().WskSocketConnect.is_some());
    let socket = client.open(V6, WSK_FLAG_STREAM_SOCKET);
    assert!(socket.functions.connect_ex.is_some());
    assert_eq!(socket.close().status, SUCCESS);
    client.finish();
    kernel.assert_no_leaks();
}

#[test]
fn a_wsk_buf_offset_and_length_select_the_bytes_sent() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();
    let (server_address, server) = serve_one(V4, |stream| read_to_end(&stream));
    let socket = connected(&client, server_address, WSK_FLAG_CONNECTION_SOCKET);
    let mut digits = Data::from(b"0123456789");
    digits.window(3, 4);
    assert_eq!(socket.send(&mut digits, 0).information, 4);
    assert_eq!(socket.disconnect(None, 0).status, SUCCESS);
    assert_eq!(server.join().unwrap(), b"3456");
    assert_eq!(socket.close().status, SUCCESS);
    client.finish();
    drop(digits);
    kernel.assert_no_leaks();
}

#[test]
fn a_receive_completes_with_the_first_bytes_and_waitall_with_a_full_buffer() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();
    let (server_address, server) = serve_one(V4, |mut stream| {
        for chunk in [&b"abc"[..], b"defgh", b"ij"] {
            stream.write_all(chunk).unwrap();
            thread::sleep(Duration::from_millis(50));
        }
        read_to_end(&stream)
    });
    let socket = connected(&client, server_address, WSK_FLAG_CONNECTION_SOCKET);
    let mut first = Data::zeroed(64);
    let outcome = socket.receive(&mut first, 0);
    assert_eq!((outcome.status, outcome.information), (SUCCESS, 3));
    assert_eq!(first.bytes(3), b"abc");
    let mut rest = Data::zeroed(7);
    let outcome = socket.receive(&mut rest, WSK_FLAG_WAITALL);
    assert_eq!(
        (outcome.status, outcome.information),
        (SUCCESS, 7),
        "WAITALL spans the server's two writes"
    );
    assert_eq!(rest.bytes(7), b"defghij");
    assert_eq!(socket.disconnect(None, 0).status, SUCCESS);
    server.join().unwrap();
    assert_eq!(socket.close().status, SUCCESS);
    client.finish();
    drop((first, rest));
    kernel.assert_no_leaks();
}

#[test]
fn a_large_send_pends_until_the_peer_reads_it_all() {
    const LEN: usize = 32 << 20;
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();
    let (server_address, server) = serve_one(V4, |stream| {
        thread::sleep(Duration::from_millis(300));
        read_to_end(&stream)
    });
    let socket = connected(&client, server_address, WSK_FLAG_STREAM_SOCKET);
    let pattern: Vec<u8> = (0..=250_u8).cycle().take(LEN).collect();
    let mut data = Data::from(&pattern);
    let in_flight = socket.submit_send(&mut data, 0);
    assert_eq!(
        in_flight.returned, PENDING,
        "32 MiB cannot fit the socket buffers"
    );
    let outcome = in_flight.wait();
    assert_eq!((outcome.status, outcome.information), (SUCCESS, LEN));
    assert_eq!(outcome.irql, DISPATCH_LEVEL, "completed by the poller");
    assert_eq!(socket.disconnect(None, 0).status, SUCCESS);
    assert!(server.join().unwrap() == pattern, "the bytes arrive intact");
    assert_eq!(socket.close().status, SUCCESS);
    client.finish();
    drop(data);
    kernel.assert_no_leaks();
}

#[test]
fn cancelling_a_pending_receive_or_send_completes_it_cancelled() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let (server_address, server) = serve_one(V4, move |mut stream| {
        wait.recv().unwrap();
        stream.write_all(b"x").unwrap();
        // The client closes without a graceful disconnect: only drain.
        wait.recv().unwrap();
        drain(&stream);
    });
    let socket = connected(&client, server_address, WSK_FLAG_CONNECTION_SOCKET);
    let mut buffer = Data::zeroed(8);
    let receive = socket.submit_receive(&mut buffer, 0);
    assert_eq!(receive.returned, PENDING);
    thread::sleep(Duration::from_millis(50));
    assert!(!receive.is_done());
    assert!(receive.cancel(), "a pending receive has a cancel routine");
    let outcome = receive.wait();
    assert_eq!(
        (outcome.status, outcome.information),
        (NtStatus::CANCELLED, 0)
    );

    // The socket still works: the next receive gets the data.
    go.send(()).unwrap();
    let outcome = socket.receive(&mut buffer, 0);
    assert_eq!((outcome.status, outcome.information), (SUCCESS, 1));
    assert_eq!(buffer.bytes(1), b"x");

    // A send the peer does not read pends, and cancels the same way.
    let mut big = Data::zeroed(64 << 20);
    let send = socket.submit_send(&mut big, 0);
    assert_eq!(send.returned, PENDING);
    assert!(send.cancel());
    assert_eq!(send.wait().status, NtStatus::CANCELLED);
    assert_eq!(socket.close().status, SUCCESS);
    go.send(()).unwrap();
    server.join().unwrap();
    client.finish();
    drop((buffer, big));
    kernel.assert_no_leaks();
}

/// A listener whose accept queue is full: Linux drops further SYNs, so a
/// connect to it stays pending (retransmitting) while the queue stays full.
fn saturated_listener(ip: IpAddr) -> (SocketAddr, socket2::Socket, TcpStream) {
    let domain = socket2::Domain::for_address(any_port(ip));
    let listener = socket2::Socket::new(domain, socket2::Type::STREAM, None).unwrap();
    listener.bind(&any_port(ip).into()).unwrap();
    listener.listen(0).unwrap();
    let address = listener.local_addr().unwrap().as_socket().unwrap();
    // A backlog of 0 queues one connection; this one fills the queue.
    let filler = TcpStream::connect(address).unwrap();
    (address, listener, filler)
}

#[test]
fn cancelling_a_pending_connect_completes_it_cancelled() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();
    let (address, _listener, _filler) = saturated_listener(V4);

    let socket = client.open(V4, WSK_FLAG_STREAM_SOCKET);
    assert_eq!(socket.bind(any_port(V4), 0).status, SUCCESS);
    let connect = socket.submit_connect(address, 0);
    assert_eq!(connect.returned, PENDING, "the SYN goes unanswered");
    thread::sleep(Duration::from_millis(50));
    assert!(!connect.is_done());
    assert!(connect.cancel());
    assert_eq!(connect.wait().status, NtStatus::CANCELLED);
    assert_eq!(
        socket.connect(address, 0).status,
        NtStatus::FILE_FORCED_CLOSED,
        "a cancelled connect leaves the socket only closable"
    );
    assert_eq!(socket.close().status, SUCCESS);

    // A cancelled WskSocketConnect hands out nothing and counts nothing.
    let connect = client.submit_socket_connect(any_port(V4), address, 0);
    assert_eq!(connect.returned, PENDING);
    assert!(connect.cancel());
    let outcome = connect.wait();
    assert_eq!(
        (outcome.status, outcome.information),
        (NtStatus::CANCELLED, 0)
    );
    assert_eq!(kernel.usage().sockets, 0);
    client.finish();
    kernel.assert_no_leaks();
}

#[test]
fn closing_a_socket_cancels_its_pending_receive_first() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();
    let (server_address, server) = serve_one(V6, |stream| drain(&stream));
    let socket = connected(&client, server_address, WSK_FLAG_STREAM_SOCKET);
    let mut buffer = Data::zeroed(8);
    let receive = socket.submit_receive(&mut buffer, 0);
    assert_eq!(receive.returned, PENDING);
    let closed = socket.close();
    assert_eq!((closed.returned, closed.status), (SUCCESS, SUCCESS));
    let received = receive.wait();
    assert_eq!(received.status, NtStatus::CANCELLED);
    assert!(
        received.sequence < closed.sequence,
        "the pending receive completes before the close does"
    );
    assert_eq!(kernel.usage().sockets, 0);
    server.join().unwrap();
    client.finish();
    drop(buffer);
    kernel.assert_no_leaks();
}

#[test]
fn closing_without_a_graceful_disconnect_resets_the_peer() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();
    let (server_address, server) = serve_one(V4, |mut stream| {
        let mut buffer = [0_u8; 8];
        stream.read(&mut buffer).map_err(|error| error.kind())
    });
    let socket = connected(&client, server_address, WSK_FLAG_CONNECTION_SOCKET);
    thread::sleep(Duration::from_millis(50));
    assert_eq!(socket.close().status, SUCCESS);
    assert_eq!(server.join().unwrap(), Err(ErrorKind::ConnectionReset));
    client.finish();
    kernel.assert_no_leaks();
}

#[test]
fn an_abortive_disconnect_resets_the_peer_and_fails_pending_io() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();
    let (server_address, server) = serve_one(V4, |mut stream| {
        let mut buffer = [0_u8; 8];
        stream.read(&mut buffer).map_err(|error| error.kind())
    });
    let socket = connected(&client, server_address, WSK_FLAG_CONNECTION_SOCKET);
    let mut buffer = Data::zeroed(8);
    let receive = socket.submit_receive(&mut buffer, 0);
    assert_eq!(receive.returned, PENDING);
    assert_eq!(socket.disconnect(None, WSK_FLAG_ABORTIVE).status, SUCCESS);
    assert_eq!(receive.wait().status, NtStatus::CONNECTION_ABORTED);
    assert_eq!(server.join().unwrap(), Err(ErrorKind::ConnectionReset));
    assert_eq!(
        socket.send(&mut buffer, 0).status,
        NtStatus::INVALID_CONNECTION
    );
    assert_eq!(socket.close().status, SUCCESS);
    client.finish();
    drop(buffer);
    kernel.assert_no_leaks();
}

#[test]
fn a_peer_reset_fails_a_pending_receive_with_connection_reset() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let (server_address, server) = serve_one(V4, move |stream| {
        wait.recv().unwrap();
        socket2::SockRef::from(&stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(stream);
    });
    let socket = connected(&client, server_address, WSK_FLAG_CONNECTION_SOCKET);
    let mut buffer = Data::zeroed(8);
    let receive = socket.submit_receive(&mut buffer, 0);
    assert_eq!(receive.returned, PENDING);
    go.send(()).unwrap();
    server.join().unwrap();
    assert_eq!(receive.wait().status, NtStatus::CONNECTION_RESET);
    // As on Windows, the reset stays: later calls answer it too, where the
    // host socket would report end-of-stream.
    let again = socket.submit_receive(&mut buffer, 0);
    assert_eq!(again.wait().status, NtStatus::CONNECTION_RESET);
    let mut data = Data::from(b"late");
    let send = socket.submit_send(&mut data, 0);
    assert_eq!(send.wait().status, NtStatus::CONNECTION_RESET);
    assert_eq!(socket.close().status, SUCCESS);
    client.finish();
    drop((buffer, data));
    kernel.assert_no_leaks();
}

#[test]
fn always_pend_completes_every_call_from_the_poller_at_dispatch_level() {
    let kernel = Kernel::with_provider(ProviderConfig {
        always_pend: true,
        ..ProviderConfig::default()
    });
    let _enter = kernel.enter();
    let here = thread::current().id();
    let from_poller = |outcome: support::Outcome, what: &str| {
        assert_eq!(outcome.returned, PENDING, "{what} returns STATUS_PENDING");
        assert_eq!(
            outcome.irql, DISPATCH_LEVEL,
            "{what} completes at DISPATCH_LEVEL"
        );
        assert_ne!(
            outcome.thread, here,
            "{what} completes on the poller thread"
        );
        outcome
    };
    let client = Client::register();
    let (server_address, server) = serve_one(V4, |mut stream| {
        let mut ping = [0_u8; 4];
        stream.read_exact(&mut ping).unwrap();
        stream.write_all(b"pong").unwrap();
        read_to_end(&stream)
    });

    let created = from_poller(
        client.socket_raw(AF_INET, SOCK_STREAM, WSK_FLAG_CONNECTION_SOCKET),
        "WskSocket",
    );
    let socket = Sock::from_raw(created.information as *mut _, WSK_FLAG_CONNECTION_SOCKET);
    assert_eq!(
        from_poller(socket.bind(any_port(V4), 1), "a rejected bind").status,
        NtStatus::INVALID_PARAMETER
    );
    assert_eq!(
        from_poller(socket.bind(any_port(V4), 0), "WskBind").status,
        SUCCESS
    );
    let local = socket.local_address();
    assert_eq!(from_poller(local.0, "WskGetLocalAddress").status, SUCCESS);
    assert_eq!(
        from_poller(
            socket.control_with_irp(WskSetOption, TCP_FASTOPEN, IPPROTO_TCP, 0),
            "WskControlSocket"
        )
        .status,
        SUCCESS
    );
    assert_eq!(
        from_poller(socket.connect(server_address, 0), "WskConnect").status,
        SUCCESS
    );
    assert_eq!(
        from_poller(socket.remote_address().0, "WskGetRemoteAddress").status,
        SUCCESS
    );
    let mut ping = Data::from(b"ping");
    assert_eq!(
        from_poller(socket.send(&mut ping, 0), "WskSend").information,
        4
    );
    let mut answer = Data::zeroed(4);
    assert_eq!(
        from_poller(socket.receive(&mut answer, WSK_FLAG_WAITALL), "WskReceive").information,
        4
    );
    assert_eq!(answer.bytes(4), b"pong");
    assert_eq!(
        from_poller(socket.disconnect(None, 0), "WskDisconnect").status,
        SUCCESS
    );
    assert_eq!(server.join().unwrap(), b"");
    assert_eq!(
        from_poller(socket.close(), "WskCloseSocket").status,
        SUCCESS
    );

    let (server_address, server) = serve_one(V6, |stream| read_to_end(&stream));
    let connected = from_poller(
        client.socket_connect_call(any_port(V6), server_address, 0),
        "WskSocketConnect",
    );
    let socket = Sock::from_raw(connected.information as *mut _, WSK_FLAG_CONNECTION_SOCKET);
    let mut payload = Data::from(b"later");
    assert_eq!(socket.send(&mut payload, 0).information, 5);
    assert_eq!(socket.disconnect(None, 0).status, SUCCESS);
    assert_eq!(server.join().unwrap(), b"later");
    assert_eq!(
        from_poller(socket.close(), "WskCloseSocket").status,
        SUCCESS
    );
    client.finish();
    drop((ping, answer, payload));
    kernel.assert_no_leaks();
}

/// The names of this process's threads (as the kernel keeps them: at most
/// 15 bytes).
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .collect()
}

#[test]
fn the_poller_thread_ends_with_its_kernel() {
    let kernel = Kernel::new();
    let debug = format!("{kernel:?}");
    let id = debug
        .split("id: ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .expect("Kernel's Debug shows its id");
    let poller = format!("wsk-poll-{id}");
    {
        let _enter = kernel.enter();
        let client = Client::register();
        let (server_address, server) = serve_one(V4, |stream| drain(&stream));
        let socket = connected(&client, server_address, WSK_FLAG_CONNECTION_SOCKET);
        // A thread names itself once it runs: give it the time to.
        assert!(
            eventually(|| thread_names().contains(&poller)),
            "a connect starts {poller}"
        );
        assert_eq!(socket.close().status, SUCCESS);
        server.join().unwrap();
        client.finish();
        kernel.assert_no_leaks();
    }
    drop(kernel);
    assert!(
        eventually(|| !thread_names().contains(&poller)),
        "{poller} outlived its kernel"
    );
}

/// Whether `condition` holds within [`support::PATIENCE`].
fn eventually(condition: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + support::PATIENCE;
    while !condition() {
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
    true
}

/// A socket closed successfully, kept only to misuse its stale handle.
fn closed_socket(client: &Client) -> Sock {
    let socket = client.open(V4, WSK_FLAG_CONNECTION_SOCKET);
    let (raw, functions) = (socket.raw, socket.functions);
    assert_eq!(socket.close().status, SUCCESS);
    Sock { raw, functions }
}

#[test]
fn a_call_on_a_closed_socket_bugchecks() {
    if !in_fatal_child() {
        expect_bugcheck_in_child(
            "a_call_on_a_closed_socket_bugchecks",
            &[
                "BUGCHECK DRIVER_VERIFIER_DETECTED_VIOLATION: WskSend(0x",
                "use after WskCloseSocket",
            ],
        );
        return;
    }
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();
    let stale = closed_socket(&client);
    let mut data = Data::from(b"late");
    stale.send(&mut data, 0);
    unreachable!("the verifier stops a call on a closed socket");
}

#[test]
fn closing_a_socket_twice_bugchecks() {
    if !in_fatal_child() {
        expect_bugcheck_in_child(
            "closing_a_socket_twice_bugchecks",
            &[
                "BUGCHECK DRIVER_VERIFIER_DETECTED_VIOLATION: WskCloseSocket(0x",
                "use after WskCloseSocket",
            ],
        );
        return;
    }
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();
    let _ = closed_socket(&client).close();
    unreachable!("the verifier stops a second WskCloseSocket");
}

/// Set by [`spinning_routine`] once the call it completes is stuck in it.
static STUCK_IN_BIND: AtomicBool = AtomicBool::new(false);

/// A completion routine that never returns, so the call that completed its
/// IRP inline (a `WskBind`) stays in progress.
unsafe extern "system" fn spinning_routine(
    _device: *mut c_void,
    _irp: *mut IRP,
    _context: *mut c_void,
) -> NTSTATUS {
    STUCK_IN_BIND.store(true, Ordering::Release);
    loop {
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn closing_a_socket_while_another_call_on_it_is_in_progress_bugchecks() {
    if !in_fatal_child() {
        expect_bugcheck_in_child(
            "closing_a_socket_while_another_call_on_it_is_in_progress_bugchecks",
            &[
                "BUGCHECK DRIVER_VERIFIER_DETECTED_VIOLATION: WskCloseSocket(0x",
                "while 1 other call(s) on the socket have not returned",
            ],
        );
        return;
    }
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();
    let socket = client.open(V4, WSK_FLAG_CONNECTION_SOCKET);
    let (shared, kernel) = (&socket, &kernel);
    thread::scope(|scope| {
        scope.spawn(move || {
            let socket = shared;
            let _enter = kernel.enter();
            let irp = Irp::allocate(1).unwrap();
            // SAFETY: the routine takes no context; the IRP is not in flight.
            unsafe { irp.set_completion_routine(spinning_routine, ptr::null_mut()) };
            let mut local = support::WinAddr::new(any_port(V4));
            let bind = socket.functions.bind.unwrap();
            // SAFETY: the provider's function, a live socket, valid
            // arguments; the bind completes inline into a routine that never
            // returns, so this call stays in progress.
            unsafe { bind(socket.raw, local.as_ptr(), 0, irp.as_ptr()) };
        });
        while !STUCK_IN_BIND.load(Ordering::Acquire) {
            thread::sleep(Duration::from_millis(1));
        }
        // The misuse: WskBind has not returned on the other thread.
        let _ = socket.submit_close();
        // Not stopped: leave at once (the other thread never returns), so
        // the parent sees an exit instead of the abort it expects.
        eprintln!("WskCloseSocket was not stopped");
        std::process::exit(3);
    });
}

#[test]
fn a_socket_call_above_dispatch_level_bugchecks() {
    if !in_fatal_child() {
        expect_bugcheck_in_child(
            "a_socket_call_above_dispatch_level_bugchecks",
            &["BUGCHECK IRQL_NOT_LESS_OR_EQUAL: WskBind called at DIRQL"],
        );
        return;
    }
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();
    let socket = client.open(V4, WSK_FLAG_CONNECTION_SOCKET);
    let bind = socket.functions.bind.unwrap();
    let mut local = support::WinAddr::new(any_port(V4));
    // The IRP is allocated at PASSIVE_LEVEL; only the call is made above
    // DISPATCH_LEVEL.
    support::submit(|irp| {
        let _device_level = irql::raise(DISPATCH_LEVEL + 1);
        // SAFETY: the provider's function, a live socket, valid arguments
        // (the IRQL is the one thing wrong).
        unsafe { bind(socket.raw, local.as_ptr(), 0, irp) }
    });
    unreachable!("the verifier stops a call above DISPATCH_LEVEL");
}

/// Raises this process's open-file limit to its hard limit (the test needs
/// two descriptors per connection).
fn raise_file_limit(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit to fill.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) };
    assert_eq!(got, 0);
    if limit.rlim_cur < needed {
        limit.rlim_cur = limit.rlim_max.min(needed.max(limit.rlim_cur));
        // SAFETY: a valid rlimit within the hard limit.
        let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) };
        assert_eq!(set, 0);
    }
}

#[test]
fn a_thousand_pending_receives_complete_without_a_thread_each() {
    const CONNECTIONS: usize = 1000;
    raise_file_limit(4 * CONNECTIONS as u64 + 256);
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();

    // One server thread accepts every connection, then answers each with
    // its index once told to.
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener.bind(&any_port(V4).into()).unwrap();
    listener.listen(2048).unwrap();
    let listener: TcpListener = listener.into();
    let server_address = listener.local_addr().unwrap();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let server = thread::spawn(move || {
        let mut streams: Vec<TcpStream> = (0..CONNECTIONS)
            .map(|_| listener.accept().unwrap().0)
            .collect();
        wait.recv().unwrap();
        for stream in &mut streams {
            stream.write_all(b"!").unwrap();
        }
        wait.recv().unwrap();
    });

    let sockets: Vec<Sock> = (0..CONNECTIONS)
        .map(|_| {
            let outcome = client.socket_connect_call(any_port(V4), server_address, 0);
            assert_eq!(outcome.status, SUCCESS);
            Sock::from_raw(outcome.information as *mut _, WSK_FLAG_CONNECTION_SOCKET)
        })
        .collect();
    let before = thread_count();
    let mut buffers: Vec<Box<Data>> = (0..CONNECTIONS).map(|_| Data::zeroed(4)).collect();
    let receives: Vec<_> = sockets
        .iter()
        .zip(&mut buffers)
        .map(|(socket, buffer)| socket.submit_receive(buffer, 0))
        .collect();
    assert!(receives.iter().all(|receive| receive.returned == PENDING));
    let during = thread_count();
    let started = Instant::now();
    go.send(()).unwrap();
    let completed = Arc::new(AtomicUsize::new(0));
    let threads_seen = Mutex::new(std::collections::HashSet::new());
    for receive in receives {
        let outcome = receive.wait();
        assert_eq!((outcome.status, outcome.information), (SUCCESS, 1));
        assert_eq!(outcome.irql, DISPATCH_LEVEL);
        threads_seen.lock().unwrap().insert(outcome.thread);
        completed.fetch_add(1, Ordering::Relaxed);
    }
    let elapsed = started.elapsed();
    let after = thread_count();
    eprintln!(
        "{CONNECTIONS} pending receives: {before} threads before posting them, {during} while pending, {after} after; completed on {} thread(s) in {elapsed:?}",
        threads_seen.lock().unwrap().len()
    );
    assert_eq!(completed.load(Ordering::Relaxed), CONNECTIONS);
    assert_eq!(
        threads_seen.lock().unwrap().len(),
        1,
        "every completion comes from the one poller thread"
    );
    // Other tests run in parallel in this process: allow for their threads,
    // which are nowhere near one per pending receive.
    assert!(
        during <= before + 16,
        "pending receives must not cost a thread each: {before} -> {during}"
    );
    for socket in sockets {
        assert_eq!(socket.close().status, SUCCESS);
    }
    go.send(()).unwrap();
    server.join().unwrap();
    client.finish();
    drop(buffers);
    kernel.assert_no_leaks();
}

#[test]
fn the_listening_table_accepts_only_once_bound_and_checks_its_arguments() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();
    let created = client.socket_raw(AF_INET, SOCK_STREAM, WSK_FLAG_LISTEN_SOCKET);
    assert_eq!(created.status, SUCCESS);
    let raw = created.information as *mut WSK_SOCKET;
    // SAFETY: a socket the provider just created.
    let dispatch = unsafe { (*raw).Dispatch };
    // SAFETY: a listening socket points at its listening table.
    let table = unsafe { &*dispatch.cast::<WSK_PROVIDER_LISTEN_DISPATCH>() };
    let accept = table.WskAccept.unwrap();
    let accept_with = |flags: ULONG, context: *mut c_void| {
        // SAFETY: the provider's function on a live socket; NULL addresses
        // are allowed.
        call(|irp| unsafe {
            accept(
                raw,
                flags,
                context,
                ptr::null(),
                ptr::null_mut(),
                ptr::null_mut(),
                irp,
            )
        })
        .status
    };
    // Not bound: not listening yet.
    assert_eq!(
        accept_with(0, ptr::null_mut()),
        NtStatus::INVALID_DEVICE_STATE
    );
    let mut local = WinAddr::new("127.0.0.1:0".parse().unwrap());
    let bind = table.WskBind.unwrap();
    // SAFETY: as above.
    let bound = call(|irp| unsafe { bind(raw, local.as_ptr(), 0, irp) });
    assert_eq!(bound.status, SUCCESS);
    // Reserved flags.
    assert_eq!(accept_with(1, ptr::null_mut()), NtStatus::INVALID_PARAMETER);
    // A listening socket has no WskConnect, and a second bind is refused.
    let mut again = WinAddr::new("127.0.0.1:0".parse().unwrap());
    // SAFETY: as above.
    let rebound = call(|irp| unsafe { bind(raw, again.as_ptr(), 0, irp) });
    assert_eq!(rebound.status, NtStatus::ADDRESS_ALREADY_ASSOCIATED);
    let close = table.Basic.WskCloseSocket.unwrap();
    // SAFETY: as above; closed once.
    assert_eq!(call(|irp| unsafe { close(raw, irp) }).status, SUCCESS);
    client.finish();
    kernel.assert_no_leaks();
}

#[test]
fn tcp_nodelay_is_offered_and_an_unknown_option_is_not_supported() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();
    let socket = client.open(IpAddr::V4(Ipv4Addr::LOCALHOST), WSK_FLAG_CONNECTION_SOCKET);
    assert_eq!(
        socket
            .control_with_irp(WskSetOption, 1, IPPROTO_TCP, 1)
            .status,
        SUCCESS,
        "TCP_NODELAY"
    );
    assert_eq!(
        socket
            .control_with_irp(WskSetOption, 0x7777, IPPROTO_TCP, 1)
            .status,
        NtStatus::NOT_SUPPORTED,
        "an option the provider does not offer"
    );
    assert_eq!(socket.close().status, SUCCESS);
    client.finish();
    kernel.assert_no_leaks();
}
