//! Fault injection beyond allocations: each kind of the plan, driven
//! through the raw WSK ABI (stalls, late and inline completions, forced
//! closes, resets) or the library (captures, the low-resources warm-up,
//! delay fuzzing), with the counts the kernel reports.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use support::{Client, Data, PENDING, SUCCESS, Sock, echo_server};
use wsk::abi::{DISPATCH_LEVEL, STATUS_FILE_FORCED_CLOSED, WSK_FLAG_CONNECTION_SOCKET};
use wsk::emulator::{EnterGuard, FaultPlan, Kernel, ProviderConfig};
use wsk::{Error, NtStatus, PassiveLevel, PoolBuffer, PoolTag, Registration};

const FORCED_CLOSED: NtStatus = NtStatus(STATUS_FILE_FORCED_CLOSED);

/// A socket bound and connected to `remote`.
fn connected(client: &Client, remote: SocketAddr) -> Sock {
    let socket = client.open(remote.ip(), WSK_FLAG_CONNECTION_SOCKET);
    let any = SocketAddr::new(remote.ip(), 0);
    assert_eq!(socket.bind(any, 0).status, SUCCESS);
    assert_eq!(socket.connect(remote, 0).status, SUCCESS);
    socket
}

/// `kernel`, entered, with a registered client and a socket connected to
/// an echo server.
fn echoing(kernel: Kernel) -> (Kernel, EnterGuard, Client, Sock) {
    let enter = kernel.enter();
    let client = Client::register();
    let socket = connected(&client, echo_server());
    (kernel, enter, client, socket)
}

/// A server that accepts one connection and hands it over.
fn accept_one() -> (SocketAddr, mpsc::Receiver<TcpStream>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let address = listener.local_addr().unwrap();
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        sender.send(stream).unwrap();
    });
    (address, receiver)
}

#[test]
fn a_stalled_call_pends_until_cancelled_and_the_next_one_works() {
    let (kernel, _enter, client, socket) = echoing(Kernel::new());
    kernel.inject_faults(FaultPlan {
        stall_one_in: 1,
        ..FaultPlan::default()
    });
    let mut ping = Data::from(b"ping");
    let send = socket.submit_send(&mut ping, 0);
    assert_eq!(send.returned, PENDING);
    thread::sleep(Duration::from_millis(100));
    assert!(!send.is_done(), "a stalled send never progresses by itself");
    assert!(send.cancel());
    assert_eq!(send.wait().status, NtStatus::CANCELLED);

    // A stalled receive is ended by closing its socket.
    let mut reply = Data::zeroed(4);
    let receive = socket.submit_receive(&mut reply, 0);
    assert_eq!(receive.returned, PENDING);
    kernel.inject_faults(FaultPlan::default());
    assert_eq!(socket.send(&mut ping, 0).status, SUCCESS);
    thread::sleep(Duration::from_millis(100));
    assert!(
        !receive.is_done(),
        "the echo arrived, but the stalled receive does not take it"
    );
    assert_eq!(socket.close().status, SUCCESS);
    assert_eq!(receive.wait().status, NtStatus::CANCELLED);
    assert_eq!(kernel.faults_injected().stalled, 2);
    client.finish();
    drop((ping, reply));
    kernel.assert_no_leaks();
}

#[test]
fn a_late_completion_pends_and_arrives_from_the_dpc_thread() {
    let (kernel, _enter, client, socket) = echoing(Kernel::new());
    kernel.inject_faults(FaultPlan {
        late_one_in: 1,
        late_by: Duration::from_millis(20),
        ..FaultPlan::default()
    });
    let mut ping = Data::from(b"ping");
    // A send to a loopback peer completes inline without the fault.
    let outcome = socket.submit_send(&mut ping, 0).wait();
    assert_eq!(outcome.returned, PENDING);
    assert_eq!((outcome.status, outcome.information), (SUCCESS, 4));
    assert_eq!(outcome.irql, DISPATCH_LEVEL);
    assert_ne!(outcome.thread, thread::current().id());
    let mut reply = Data::zeroed(4);
    let outcome = socket.receive(&mut reply, 0);
    assert_eq!((outcome.returned, outcome.status), (PENDING, SUCCESS));
    assert_eq!(
        reply.bytes(outcome.information),
        &b"ping"[..outcome.information]
    );
    assert_eq!(kernel.faults_injected().late, 2);
    kernel.inject_faults(FaultPlan::default());
    assert_eq!(socket.close().status, SUCCESS);
    client.finish();
    drop((ping, reply));
    kernel.assert_no_leaks();
}

#[test]
fn an_inline_completion_under_always_pend_returns_the_status_at_once() {
    let (kernel, _enter, client, socket) = echoing(Kernel::with_provider(ProviderConfig {
        always_pend: true,
        ..ProviderConfig::default()
    }));
    let mut ping = Data::from(b"ping");
    assert_eq!(socket.send(&mut ping, 0).returned, PENDING);
    kernel.inject_faults(FaultPlan {
        inline_one_in: 1,
        ..FaultPlan::default()
    });
    let outcome = socket.send(&mut ping, 0);
    assert_eq!((outcome.returned, outcome.status), (SUCCESS, SUCCESS));
    assert_eq!(outcome.thread, thread::current().id());
    assert_eq!(kernel.faults_injected().inline, 1);
    kernel.inject_faults(FaultPlan::default());
    assert_eq!(socket.close().status, SUCCESS);
    client.finish();
    drop(ping);
    kernel.assert_no_leaks();
}

#[test]
fn a_forced_close_fails_the_call_what_is_pending_and_every_later_call() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();
    let (address, accepted) = accept_one();
    let socket = connected(&client, address);
    let peer = accepted.recv().unwrap();
    let mut reply = Data::zeroed(8);
    let receive = socket.submit_receive(&mut reply, 0);
    assert_eq!(receive.returned, PENDING);
    kernel.inject_faults(FaultPlan {
        forced_close_one_in: 1,
        ..FaultPlan::default()
    });
    let mut ping = Data::from(b"ping");
    let send = socket.send(&mut ping, 0);
    assert_eq!((send.returned, send.status), (PENDING, FORCED_CLOSED));
    assert_eq!(receive.wait().status, FORCED_CLOSED);
    kernel.inject_faults(FaultPlan::default());
    assert_eq!(socket.receive(&mut reply, 0).status, FORCED_CLOSED);
    assert_eq!(socket.send(&mut ping, 0).status, FORCED_CLOSED);
    assert_eq!(socket.close().status, SUCCESS);
    assert_eq!(kernel.faults_injected().forced_close, 1);
    drop(peer);
    client.finish();
    drop((ping, reply));
    kernel.assert_no_leaks();
}

#[test]
fn a_reset_resets_the_peer_and_fails_every_later_transfer() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();
    let (address, accepted) = accept_one();
    let socket = connected(&client, address);
    let mut peer = accepted.recv().unwrap();
    kernel.inject_faults(FaultPlan {
        reset_one_in: 1,
        ..FaultPlan::default()
    });
    let mut reply = Data::zeroed(8);
    let receive = socket.receive(&mut reply, 0);
    assert_eq!(
        (receive.returned, receive.status),
        (PENDING, NtStatus::CONNECTION_RESET)
    );
    let mut byte = [0_u8; 1];
    assert_eq!(
        peer.read(&mut byte).map_err(|error| error.kind()),
        Err(ErrorKind::ConnectionReset),
        "the peer sees the reset"
    );
    kernel.inject_faults(FaultPlan::default());
    let mut ping = Data::from(b"ping");
    assert_eq!(socket.send(&mut ping, 0).status, NtStatus::CONNECTION_RESET);
    assert_eq!(
        socket.receive(&mut reply, 0).status,
        NtStatus::CONNECTION_RESET
    );
    assert_eq!(socket.close().status, SUCCESS);
    assert_eq!(kernel.faults_injected().reset, 1);
    client.finish();
    drop((ping, reply));
    kernel.assert_no_leaks();
}

#[test]
fn a_refused_capture_is_provider_unavailable_and_the_next_one_succeeds() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = PassiveLevel::check().unwrap();
    let registration = Registration::register(&passive).unwrap();
    kernel.inject_faults(FaultPlan {
        capture_one_in: 1,
        ..FaultPlan::default()
    });
    let refused = registration.capture(&passive, Duration::from_secs(1));
    assert!(
        matches!(refused, Err(Error::ProviderUnavailable(_))),
        "{refused:?}"
    );
    kernel.inject_faults(FaultPlan::default());
    let provider = registration
        .capture(&passive, Duration::from_secs(1))
        .unwrap();
    assert_eq!(kernel.faults_injected().capture, 1);
    drop(provider);
    assert!(registration.deregister(&passive).is_clean());
    kernel.assert_no_leaks();
}

#[test]
fn allocations_fail_only_after_the_warm_up() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    kernel.inject_faults(FaultPlan {
        pool_one_in: 1,
        warm_up_allocations: 3,
        ..FaultPlan::default()
    });
    let tag = PoolTag::new(*b"Warm");
    let warm: Vec<_> = (0..3)
        .map(|_| PoolBuffer::zeroed(16, tag).expect("within the warm-up"))
        .collect();
    assert!(matches!(
        PoolBuffer::zeroed(16, tag),
        Err(Error::InsufficientResources(_))
    ));
    assert_eq!(kernel.faults_injected().pool, 1);
    drop(warm);
    kernel.assert_no_leaks();
}

#[test]
fn jitter_delays_each_dpc_and_is_counted() {
    let kernel = Kernel::new();
    kernel.inject_faults(FaultPlan {
        jitter: Duration::from_millis(2),
        ..FaultPlan::default()
    });
    let (sender, receiver) = mpsc::channel();
    for index in 0..5 {
        let sender = sender.clone();
        kernel.queue_dpc(move || sender.send(index).unwrap());
    }
    let order: Vec<i32> = (0..5)
        .map(|_| receiver.recv_timeout(Duration::from_secs(5)).unwrap())
        .collect();
    assert_eq!(order, [0, 1, 2, 3, 4], "DPCs keep their order");
    assert_eq!(kernel.faults_injected().jitter, 5);
}

#[test]
fn the_same_seed_injects_the_same_socket_faults() {
    let pattern = |seed| {
        let kernel = Kernel::new();
        let _enter = kernel.enter();
        let client = Client::register();
        let mut server = TcpListener::bind((IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).unwrap();
        let address = server.local_addr().unwrap();
        let socket = connected(&client, address);
        let (mut peer, _) = server.accept().unwrap();
        kernel.inject_faults(FaultPlan {
            seed,
            late_one_in: 3,
            late_by: Duration::from_millis(1),
            ..FaultPlan::default()
        });
        let mut ping = Data::from(b"p");
        let returned: Vec<bool> = (0..40)
            .map(|_| socket.send(&mut ping, 0).returned == PENDING)
            .collect();
        kernel.inject_faults(FaultPlan::default());
        assert_eq!(socket.close().status, SUCCESS);
        client.finish();
        let _ = peer.write_all(b"");
        drop((ping, peer, &mut server));
        kernel.assert_no_leaks();
        returned
    };
    let first = pattern(7);
    assert_eq!(first, pattern(7));
    assert_ne!(first, pattern(8));
    assert!(first.contains(&true) && first.contains(&false));
}

#[test]
fn a_close_completes_after_a_late_completion_still_on_its_way() {
    let (kernel, _enter, client, socket) = echoing(Kernel::new());
    kernel.inject_faults(FaultPlan {
        late_one_in: 1,
        late_by: Duration::from_millis(50),
        ..FaultPlan::default()
    });
    let mut ping = Data::from(b"ping");
    let send = socket.submit_send(&mut ping, 0);
    assert_eq!(send.returned, PENDING);
    kernel.inject_faults(FaultPlan::default());
    let close = socket.close();
    let send = send.wait();
    assert_eq!(send.status, SUCCESS);
    assert_eq!(close.status, SUCCESS);
    assert!(
        send.sequence < close.sequence,
        "the send must complete before the close: send #{}, close #{}",
        send.sequence,
        close.sequence
    );
    client.finish();
    drop(ping);
    kernel.assert_no_leaks();
}
