//! The emulated provider's receive events at the ABI, with a client of
//! its own: how `SO_WSK_EVENT_CALLBACK` is turned on (no IRP, after the
//! connect, the WSK NPI identifier), what a `STATUS_PENDING` answer keeps,
//! and the rules it enforces: a list released twice, or still kept when the
//! socket is closed, bugchecks (Microsoft's `WskRelease` page).

mod support;

use std::ffi::c_void;
use std::io::Write;
use std::net::TcpListener;
use std::ptr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::{Client, Sock, call, expect_bugcheck_in_child, in_fatal_child};
use wsk::NtStatus;
use wsk::abi::{
    IPPROTO_TCP, NPI_WSK_INTERFACE_ID, NPIID, NTSTATUS, SIZE_T, SO_WSK_EVENT_CALLBACK, SOCK_STREAM,
    SOL_SOCKET, STATUS_PENDING, ULONG, WSK_CLIENT_CONNECTION_DISPATCH, WSK_DATA_INDICATION,
    WSK_EVENT_CALLBACK_CONTROL, WSK_EVENT_RECEIVE, WSK_FLAG_CONNECTION_SOCKET,
    WSK_PROVIDER_CONNECTION_DISPATCH, WSK_SOCKET, WskSetOption,
};
use wsk::emulator::Kernel;

/// Lists the test client kept, by address.
static KEPT: Mutex<Vec<usize>> = Mutex::new(Vec::new());

unsafe extern "system" fn keep(
    _context: *mut c_void,
    _flags: ULONG,
    list: *mut WSK_DATA_INDICATION,
    _indicated: SIZE_T,
    _accepted: *mut SIZE_T,
) -> NTSTATUS {
    KEPT.lock().unwrap().push(list as usize);
    STATUS_PENDING
}

static KEEPING: WSK_CLIENT_CONNECTION_DISPATCH = WSK_CLIENT_CONNECTION_DISPATCH {
    WskReceiveEvent: Some(keep),
    WskDisconnectEvent: None,
    WskSendBacklogEvent: None,
};

/// A connection socket made with the keeping callbacks, connected to a
/// host listener that sends `data`.
fn connected(client: &Client, data: &'static [u8]) -> (Sock, std::net::TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let remote = listener.local_addr().unwrap();
    let create = client.provider().WskSocket.unwrap();
    let created = call(|irp| {
        // SAFETY: the provider's own function with a valid client and IRP;
        // the table is static.
        unsafe {
            create(
                client.npi.Client,
                wsk::abi::AF_INET,
                SOCK_STREAM,
                IPPROTO_TCP,
                WSK_FLAG_CONNECTION_SOCKET,
                ptr::null_mut(),
                (&raw const KEEPING).cast(),
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
                irp,
            )
        }
    });
    assert_eq!(created.status, NtStatus::SUCCESS);
    let sock = Sock::from_raw(
        created.information as *mut WSK_SOCKET,
        WSK_FLAG_CONNECTION_SOCKET,
    );
    assert_eq!(
        sock.bind("0.0.0.0:0".parse().unwrap(), 0).status,
        NtStatus::SUCCESS
    );
    assert_eq!(sock.connect(remote, 0).status, NtStatus::SUCCESS);
    let (mut peer, _) = listener.accept().unwrap();
    peer.write_all(data).unwrap();
    (sock, peer)
}

/// `SO_WSK_EVENT_CALLBACK` with `npi` and `mask`, with or without an IRP.
fn turn_on(sock: &Sock, npi: &NPIID, mask: ULONG, with_irp: bool) -> NtStatus {
    let control = sock.functions.control.unwrap();
    let mut block = WSK_EVENT_CALLBACK_CONTROL {
        NpiId: npi,
        EventMask: mask,
    };
    let mut run = |irp: *mut wsk::abi::IRP| {
        // SAFETY: the provider's function on a live socket; the block
        // outlives the call.
        unsafe {
            control(
                sock.raw,
                WskSetOption,
                SO_WSK_EVENT_CALLBACK,
                SOL_SOCKET,
                size_of::<WSK_EVENT_CALLBACK_CONTROL>(),
                (&raw mut block).cast(),
                0,
                ptr::null_mut(),
                ptr::null_mut(),
                irp,
            )
        }
    };
    if with_irp {
        call(run).status
    } else {
        NtStatus(run(ptr::null_mut()))
    }
}

/// Waits for the client to keep a list; gives its address.
fn first_kept() -> *mut WSK_DATA_INDICATION {
    let started = Instant::now();
    loop {
        if let Some(&list) = KEPT.lock().unwrap().first() {
            return list as *mut WSK_DATA_INDICATION;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nothing indicated"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn release(sock: &Sock, list: *mut WSK_DATA_INDICATION) -> NtStatus {
    // SAFETY: a live socket; its first field is its table.
    let dispatch = unsafe { (*sock.raw).Dispatch };
    // SAFETY: a connection socket points at its connection table.
    let table = unsafe { &*dispatch.cast::<WSK_PROVIDER_CONNECTION_DISPATCH>() };
    let release = table
        .WskRelease
        .expect("the emulated provider has WskRelease");
    // SAFETY: the provider's function on a live socket.
    NtStatus(unsafe { release(sock.raw, list) })
}

#[test]
fn events_turn_on_only_as_microsoft_says_and_a_kept_list_goes_back() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    KEPT.lock().unwrap().clear();
    let client = Client::register();
    let (sock, peer) = connected(&client, b"indicated");
    let other = NPIID {
        Data1: 1,
        ..NPI_WSK_INTERFACE_ID
    };
    assert_eq!(
        turn_on(&sock, &NPI_WSK_INTERFACE_ID, WSK_EVENT_RECEIVE, true),
        NtStatus::INVALID_PARAMETER,
        "no IRP when turning events on"
    );
    assert_eq!(
        turn_on(&sock, &other, WSK_EVENT_RECEIVE, false),
        NtStatus::INVALID_PARAMETER,
        "the WSK interface's events only"
    );
    assert_eq!(
        turn_on(
            &sock,
            &NPI_WSK_INTERFACE_ID,
            wsk::abi::WSK_EVENT_DISCONNECT,
            false
        ),
        NtStatus::INVALID_PARAMETER,
        "a disconnect event needs its callback"
    );
    assert_eq!(
        turn_on(&sock, &NPI_WSK_INTERFACE_ID, WSK_EVENT_RECEIVE, false),
        NtStatus::SUCCESS
    );
    let list = first_kept();
    // SAFETY: a list the provider indicated and the client keeps.
    let entry = unsafe { &*list };
    assert_eq!(entry.Buffer.Length, 9);
    assert!(entry.Next.is_null());
    assert_eq!(release(&sock, list), NtStatus::SUCCESS);
    drop(peer);
    let _ = sock.close();
    client.finish();
    kernel.assert_no_leaks();
}

#[test]
fn a_list_released_twice_bugchecks() {
    if !in_fatal_child() {
        expect_bugcheck_in_child(
            "a_list_released_twice_bugchecks",
            &["BUGCHECK DRIVER_VERIFIER_DETECTED_VIOLATION: WskRelease("],
        );
        return;
    }
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();
    let (sock, _peer) = connected(&client, b"twice");
    turn_on(&sock, &NPI_WSK_INTERFACE_ID, WSK_EVENT_RECEIVE, false);
    let list = first_kept();
    release(&sock, list);
    release(&sock, list);
}

#[test]
fn closing_with_a_list_kept_bugchecks() {
    if !in_fatal_child() {
        expect_bugcheck_in_child(
            "closing_with_a_list_kept_bugchecks",
            &["with 1 data indication list(s) not released"],
        );
        return;
    }
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();
    let (sock, _peer) = connected(&client, b"kept");
    turn_on(&sock, &NPI_WSK_INTERFACE_ID, WSK_EVENT_RECEIVE, false);
    first_kept();
    let _ = sock.close();
}
