//! Ping-reply: 5 bytes sent and echoed back on one connection, round trip
//! after round trip, four ways against the same loopback echo server in
//! one run: `std::net`; the library's blocking calls; and hand-written WSK
//! calls through the same emulator, as C drivers make them: a fresh IRP
//! and MDL per call, with an event set by the completion routine
//! (`raw-fresh`), and one IRP reused with `IoReuseIrp` and one MDL for the
//! whole run (`raw-reuse`, the floor a library can approach).
//!
//! ```sh
//! cargo run --release --example pingpong
//! cargo run --release --example pingpong -- --round-trips 20000 --rounds 5
//! cargo run --release --example pingpong -- --only wsk --round-trips 4000   # for callgrind
//! ```
//!
//! Prints one figure per line, `name: value unit`, and the ratios of the
//! library to the others as `ratio NAME: X.XX` (medians over the rounds;
//! the ways alternate within each round, so all see the same load).
//!
//! With `--inline`, every way waits after its send until the echo server
//! has written the reply, so that every receive finds its data and
//! completes inline: the path each round trip takes no longer depends on
//! how the threads interleave, which makes instruction counts
//! (`scripts/instructions.sh`) repeatable.

use core::ffi::c_void;
use core::ptr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use wsk::abi::{
    AF_INET, IPPROTO_TCP, IRP, KEVENT, MAKE_WSK_VERSION, NTSTATUS, SOCK_STREAM, SOCKADDR,
    SOCKADDR_IN, STATUS_MORE_PROCESSING_REQUIRED, STATUS_PENDING, SynchronizationEvent, WSK_BUF,
    WSK_CLIENT_DISPATCH, WSK_CLIENT_NPI, WSK_NO_WAIT, WSK_PROVIDER_CONNECTION_DISPATCH,
    WSK_PROVIDER_NPI, WSK_REGISTRATION, WSK_SOCKET,
};
use wsk::emulator::{Allocations, Kernel, exports};
use wsk::{Family, Irp, Mdl, PassiveLevel, PoolBuffer, PoolTag, Registration};

const PAYLOAD: &[u8] = b"hello";
const TIMEOUT: Duration = Duration::from_secs(10);
const WAYS: [&str; 4] = ["std", "wsk", "raw-fresh", "raw-reuse"];

fn main() {
    let mut round_trips = 10_000_u32;
    let mut rounds = 3_u32;
    let mut only = None;
    let mut inline = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--inline" {
            inline = true;
            continue;
        }
        let value = args.next();
        let ok = match flag.as_str() {
            "--round-trips" => value.and_then(|v| v.parse().ok()).map(|v| round_trips = v),
            "--rounds" => value.and_then(|v| v.parse().ok()).map(|v| rounds = v),
            "--only" => value
                .filter(|v| WAYS.contains(&v.as_str()))
                .map(|v| only = Some(v)),
            _ => None,
        };
        if ok.is_none() || round_trips == 0 || rounds == 0 {
            eprintln!(
                "usage: pingpong [--round-trips N] [--rounds N] [--only std|wsk|raw-fresh|raw-reuse] [--inline]"
            );
            std::process::exit(2);
        }
    }
    let echoed = Echoed::new(inline);
    let server = echo_server(&echoed);
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = PassiveLevel::check().expect("main runs at PASSIVE_LEVEL");
    let ways: Vec<&str> = WAYS
        .into_iter()
        .filter(|way| only.as_deref().is_none_or(|only| only == *way))
        .collect();
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); ways.len()];
    let mut allocations = vec![Allocations::default(); ways.len()];
    for _ in 0..rounds {
        for ((way, rates), allocated) in ways.iter().zip(&mut rates).zip(&mut allocations) {
            let (elapsed, during) = run(way, &kernel, &passive, server, round_trips, &echoed);
            rates.push(f64::from(round_trips) / elapsed.as_secs_f64());
            *allocated = during;
        }
    }
    kernel.assert_no_leaks();
    println!("round trips per way and round: {round_trips}, rounds: {rounds}");
    let medians: Vec<f64> = rates.iter_mut().map(|rates| median(rates)).collect();
    for (way, median) in ways.iter().zip(&medians) {
        println!("pingpong {way}: {median:.0} round-trips/s");
    }
    // Counts are exact: per round trip (a send and a receive), the last round.
    for (way, allocated) in ways.iter().zip(&allocations) {
        println!(
            "allocations per round trip {way}: {}",
            allocated.per(round_trips)
        );
    }
    if let Some(wsk) = ways.iter().position(|way| *way == "wsk") {
        for (way, median) in ways.iter().zip(&medians) {
            if *way != "wsk" {
                println!("ratio wsk/{way}: {:.2}", medians[wsk] / median);
            }
        }
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// How many replies the echo server has written, for `--inline`.
#[derive(Clone)]
struct Echoed(Option<Arc<(Mutex<u64>, Condvar)>>);

impl Echoed {
    fn new(inline: bool) -> Self {
        Self(inline.then(|| Arc::new((Mutex::new(0), Condvar::new()))))
    }

    /// The server wrote one more reply.
    fn add(&self) {
        if let Some(shared) = &self.0 {
            *shared.0.lock().expect("echo count") += 1;
            shared.1.notify_all();
        }
    }

    /// The count now.
    fn count(&self) -> u64 {
        self.0
            .as_ref()
            .map_or(0, |shared| *shared.0.lock().expect("echo count"))
    }

    /// With `--inline`, waits until the server has written `count` replies
    /// (at most `TIMEOUT`: a server that stopped fails the run).
    fn wait_for(&self, count: u64) {
        if let Some(shared) = &self.0 {
            let (guard, waited) = shared
                .1
                .wait_timeout_while(shared.0.lock().expect("echo count"), TIMEOUT, |echoed| {
                    *echoed < count
                })
                .expect("echo count");
            drop(guard);
            assert!(!waited.timed_out(), "the echo server stopped replying");
        }
    }
}

fn echo_server(echoed: &Echoed) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the echo server");
    let address = listener.local_addr().expect("its address");
    let echoed = echoed.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let echoed = echoed.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let _ = stream.set_nodelay(true);
                let mut buffer = [0_u8; 512];
                while let Ok(n @ 1..) = stream.read(&mut buffer) {
                    if stream.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                    echoed.add();
                }
            });
        }
    });
    address
}

/// One way's round trips on a fresh connection (the connect and close are
/// outside the timing): how long they took, and what the machine
/// allocated meanwhile.
fn run(
    way: &str,
    kernel: &Kernel,
    passive: &PassiveLevel,
    server: SocketAddr,
    round_trips: u32,
    echoed: &Echoed,
) -> (Duration, Allocations) {
    match way {
        "std" => {
            let mut stream = TcpStream::connect(server).expect("std connect");
            stream.set_nodelay(true).expect("TCP_NODELAY");
            let mut reply = [0_u8; 5];
            let mut expected = echoed.count();
            let start = Instant::now();
            for _ in 0..round_trips {
                stream.write_all(PAYLOAD).expect("std send");
                expected += 1;
                echoed.wait_for(expected);
                stream.read_exact(&mut reply).expect("std receive");
            }
            (start.elapsed(), Allocations::default())
        }
        "wsk" => run_wsk(kernel, passive, server, round_trips, echoed),
        _ => {
            let raw = RawClient::connect(server);
            let before = kernel.allocations();
            let elapsed = raw.run(round_trips, way == "raw-reuse", echoed);
            let during = kernel.allocations() - before;
            raw.close();
            (elapsed, during)
        }
    }
}

fn run_wsk(
    kernel: &Kernel,
    passive: &PassiveLevel,
    server: SocketAddr,
    round_trips: u32,
    echoed: &Echoed,
) -> (Duration, Allocations) {
    let registration = Registration::register(passive).expect("WskRegister");
    let provider = registration.capture(passive, TIMEOUT).expect("capture");
    let connection = provider
        .socket_connect_blocking(passive, TIMEOUT, Family::V4.unspecified(), server)
        .expect("wsk connect");
    let mut request = PoolBuffer::from_slice(PAYLOAD, PoolTag::BUFFER).expect("request");
    let mut reply = PoolBuffer::zeroed(PAYLOAD.len(), PoolTag::BUFFER).expect("reply");
    let before = kernel.allocations();
    let mut expected = echoed.count();
    let start = Instant::now();
    for _ in 0..round_trips {
        let (sent, buffer) = connection.send_blocking(passive, TIMEOUT, request);
        assert_eq!(sent, Ok(PAYLOAD.len()));
        request = buffer;
        expected += 1;
        echoed.wait_for(expected);
        let mut received = 0;
        while received < PAYLOAD.len() {
            let (result, buffer) = connection.receive_blocking(passive, TIMEOUT, reply);
            received += result.expect("wsk receive");
            reply = buffer;
        }
    }
    let elapsed = start.elapsed();
    let during = kernel.allocations() - before;
    connection.close_blocking(passive, TIMEOUT).expect("close");
    drop(provider);
    assert!(registration.deregister(passive).is_clean());
    (elapsed, during)
}

/// What the completion routine signals.
unsafe extern "system" fn signal(_: *mut c_void, _: *mut IRP, event: *mut c_void) -> NTSTATUS {
    // SAFETY: the caller passes its KEVENT, alive until it has waited.
    unsafe { exports::KeSetEvent(event.cast(), 0, 0) };
    STATUS_MORE_PROCESSING_REQUIRED
}

/// A WSK client written by hand, as a C driver would write one.
struct RawClient {
    registration: Box<WSK_REGISTRATION>,
    _dispatch: Box<WSK_CLIENT_DISPATCH>,
    socket: *mut WSK_SOCKET,
    table: &'static WSK_PROVIDER_CONNECTION_DISPATCH,
    event: Box<KEVENT>,
}

impl RawClient {
    fn connect(server: SocketAddr) -> Self {
        let dispatch = Box::new(WSK_CLIENT_DISPATCH {
            Version: MAKE_WSK_VERSION(1, 0),
            Reserved: 0,
            WskClientEvent: None,
        });
        let mut registration = Box::new(WSK_REGISTRATION {
            ReservedRegistrationState: 0,
            ReservedRegistrationContext: ptr::null_mut(),
            ReservedRegistrationLock: 0,
        });
        let client = WSK_CLIENT_NPI {
            ClientContext: ptr::null_mut(),
            Dispatch: &raw const *dispatch,
        };
        // SAFETY: the boxed registration and dispatch outlive the
        // registration (`close` deregisters).
        let registered =
            unsafe { exports::WskRegister((&raw const client).cast_mut(), &raw mut *registration) };
        assert_eq!(registered, 0);
        let mut npi = WSK_PROVIDER_NPI {
            Client: ptr::null_mut(),
            Dispatch: ptr::null(),
        };
        // SAFETY: a registered block and an output structure.
        let captured = unsafe {
            exports::WskCaptureProviderNPI(&raw mut *registration, WSK_NO_WAIT, &raw mut npi)
        };
        assert_eq!(captured, 0);
        // SAFETY: zeroed storage for KeInitializeEvent.
        let mut event: Box<KEVENT> = Box::new(unsafe { core::mem::zeroed() });
        let mut local = sockaddr_in(None);
        let mut remote = sockaddr_in(Some(server));
        let mut irp = Irp::allocate(1).expect("IRP");
        // SAFETY: a captured NPI's table lives until it is released.
        let connect = unsafe { (*npi.Dispatch).WskSocketConnect }.expect("WskSocketConnect");
        let (status, information) = call(&mut irp, &mut event, |irp| {
            // SAFETY: the provider's function with valid arguments; the
            // addresses outlive the call (it is waited for).
            unsafe {
                connect(
                    npi.Client,
                    SOCK_STREAM,
                    IPPROTO_TCP,
                    (&raw mut local).cast::<SOCKADDR>(),
                    (&raw mut remote).cast::<SOCKADDR>(),
                    0,
                    ptr::null_mut(),
                    ptr::null(),
                    ptr::null_mut(),
                    ptr::null_mut(),
                    ptr::null_mut(),
                    irp,
                )
            }
        });
        assert_eq!(status, 0, "WskSocketConnect");
        let socket = information as *mut WSK_SOCKET;
        // SAFETY: the socket the provider just handed out.
        let dispatch_table = unsafe { (*socket).Dispatch };
        // SAFETY: a connection socket's table, live until it is closed.
        let table = unsafe { &*dispatch_table.cast::<WSK_PROVIDER_CONNECTION_DISPATCH>() };
        Self {
            registration,
            _dispatch: dispatch,
            socket,
            table,
            event,
        }
    }

    /// The round trips: with `reuse`, one IRP and one MDL per direction for
    /// the whole run; otherwise a fresh IRP and MDL per call.
    fn run(&self, round_trips: u32, reuse: bool, echoed: &Echoed) -> Duration {
        let request = PoolBuffer::from_slice(PAYLOAD, PoolTag::BUFFER).expect("request");
        let reply = PoolBuffer::zeroed(PAYLOAD.len(), PoolTag::BUFFER).expect("reply");
        let (send, receive) = (
            self.table.WskSend.expect("WskSend"),
            self.table.WskReceive.expect("WskReceive"),
        );
        let mut event = Box::new(
            // SAFETY: zeroed storage for KeInitializeEvent.
            unsafe { core::mem::zeroed::<KEVENT>() },
        );
        let kept = reuse.then(|| {
            (
                Irp::allocate(1).expect("IRP"),
                Mdl::describe(&request).expect("MDL"),
                Mdl::describe(&reply).expect("MDL"),
            )
        });
        let mut kept = kept;
        let mut expected = echoed.count();
        let start = Instant::now();
        for _ in 0..round_trips {
            for (buffer, sending) in [(&request, true), (&reply, false)] {
                if !sending {
                    expected += 1;
                    echoed.wait_for(expected);
                }
                let mut fresh = None;
                let (irp, mdl) = if let Some((irp, request_mdl, reply_mdl)) = &mut kept {
                    irp.reuse();
                    (irp, if sending { &*request_mdl } else { &*reply_mdl })
                } else {
                    let made = fresh.insert((
                        Irp::allocate(1).expect("IRP"),
                        Mdl::describe(buffer).expect("MDL"),
                    ));
                    (&mut made.0, &made.1)
                };
                let mut wsk = WSK_BUF {
                    Mdl: mdl.as_ptr(),
                    Offset: 0,
                    Length: PAYLOAD.len(),
                };
                let entry = if sending { send } else { receive };
                let (status, information) = call(irp, &mut event, |irp| {
                    // SAFETY: the provider's function on a live socket; the
                    // buffer, its MDL and the WSK_BUF outlive the call (it is
                    // waited for).
                    unsafe { entry(self.socket, &raw mut wsk, 0, irp) }
                });
                assert_eq!((status, information), (0, PAYLOAD.len()));
            }
        }
        start.elapsed()
    }

    fn close(mut self) {
        let close = self.table.Basic.WskCloseSocket.expect("WskCloseSocket");
        let mut irp = Irp::allocate(1).expect("IRP");
        // SAFETY: the provider's function on a live socket, closed once.
        let (status, _) = call(&mut irp, &mut self.event, |irp| unsafe {
            close(self.socket, irp)
        });
        assert_eq!(status, 0);
        // SAFETY: captured and registered in `connect`, released once.
        unsafe { exports::WskReleaseProviderNPI(&raw mut *self.registration) };
        // SAFETY: as above.
        unsafe { exports::WskDeregister(&raw mut *self.registration) };
    }
}

/// Makes one WSK call with `irp` the C way: the completion routine sets an
/// event, which is waited for if the call pended.
fn call(
    irp: &mut Irp,
    event: &mut KEVENT,
    make: impl FnOnce(*mut IRP) -> NTSTATUS,
) -> (NTSTATUS, usize) {
    let event: *mut KEVENT = event;
    // SAFETY: storage for a KEVENT, not in use (the last call completed).
    unsafe { exports::KeInitializeEvent(event, SynchronizationEvent, 0) };
    // SAFETY: the event outlives the call (it is waited for below).
    unsafe { irp.set_completion_routine(signal, event.cast()) };
    if make(irp.as_ptr()) == STATUS_PENDING {
        // SAFETY: a live event, waited for at PASSIVE_LEVEL.
        unsafe { exports::KeWaitForSingleObject(event.cast(), 0, 0, 0, ptr::null_mut()) };
    }
    // SAFETY: completed: the I/O status is final.
    let status = unsafe { (*irp.as_ptr()).IoStatus };
    (status.Status, status.Information)
}

fn sockaddr_in(address: Option<SocketAddr>) -> SOCKADDR_IN {
    let (ip, port) = match address {
        Some(SocketAddr::V4(v4)) => (v4.ip().octets(), v4.port()),
        Some(SocketAddr::V6(_)) => panic!("the raw client speaks IPv4"),
        None => ([0; 4], 0),
    };
    SOCKADDR_IN {
        sin_family: AF_INET,
        sin_port: port.to_be(),
        sin_addr: ip,
        sin_zero: [0; 8],
    }
}
