//! Throughput of connect + small echo + close through the library and the
//! emulator, against `std::net` doing the same against the same server, in
//! one run. Prints both rates, their ratio, and what the library allocated
//! per operation (exact counts, from the emulator).
//!
//! ```sh
//! cargo run --release --example bench
//! cargo run --release --example bench -- --iterations 5000 --rounds 5
//! ```
//!
//! Each round runs the same number of operations the `std::net` way and
//! the `wsk` way, alternating, so both see the same machine load; the
//! figures printed are the medians over the rounds.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use wsk::emulator::Kernel;
use wsk::{Family, PassiveLevel, PoolBuffer, PoolTag, Provider, Registration};

const PAYLOAD: &[u8] = b"hello";
const TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    let mut iterations = 2000_u32;
    let mut rounds = 5_u32;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().and_then(|value| value.parse().ok());
        match (flag.as_str(), value) {
            ("--iterations", Some(value)) => iterations = value,
            ("--rounds", Some(value)) => rounds = value,
            _ => {
                eprintln!("usage: bench [--iterations N] [--rounds N]");
                std::process::exit(2);
            }
        }
    }

    let server = echo_server();
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = PassiveLevel::check().expect("main runs at PASSIVE_LEVEL");
    let registration = Registration::register(&passive).expect("WskRegister");
    let mut std_rates = Vec::new();
    let mut wsk_rates = Vec::new();
    let mut allocated = wsk::emulator::Allocations::default();
    {
        let provider = registration
            .capture(&passive, TIMEOUT)
            .expect("capture the provider NPI");
        // Warm up both paths (threads, caches, the poller).
        run_std(server, 100);
        run_wsk(&provider, &passive, server, 100);
        for _ in 0..rounds {
            std_rates.push(rate(iterations, run_std(server, iterations)));
            let before = kernel.allocations();
            wsk_rates.push(rate(
                iterations,
                run_wsk(&provider, &passive, server, iterations),
            ));
            // Exact counts: the last round's.
            allocated = kernel.allocations() - before;
        }
    }
    let report = registration.deregister(&passive);
    assert!(report.is_clean(), "deregistration had to force: {report}");
    kernel.assert_no_leaks();

    let std_rate = median(&mut std_rates);
    let wsk_rate = median(&mut wsk_rates);
    println!(
        "connect + {}-byte echo + close, {iterations} per round, median of {rounds} rounds",
        PAYLOAD.len()
    );
    println!("bench std: {std_rate:.0} ops/s");
    println!("bench wsk: {wsk_rate:.0} ops/s");
    println!("allocations per op wsk: {}", allocated.per(iterations));
    println!("ratio wsk/std: {:.2}", wsk_rate / std_rate);
}

fn rate(iterations: u32, elapsed: Duration) -> f64 {
    f64::from(iterations) / elapsed.as_secs_f64()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the echo server");
    let address = listener.local_addr().expect("its address");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buffer = [0_u8; 512];
                while let Ok(n @ 1..) = stream.read(&mut buffer) {
                    if stream.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    address
}

fn run_std(server: SocketAddr, iterations: u32) -> Duration {
    let start = Instant::now();
    for _ in 0..iterations {
        let mut stream = TcpStream::connect(server).expect("std connect");
        stream.write_all(PAYLOAD).expect("std send");
        let mut reply = [0_u8; 64];
        let n = stream.read(&mut reply).expect("std receive");
        assert_eq!(&reply[..n], PAYLOAD);
    }
    start.elapsed()
}

fn run_wsk(
    provider: &Provider,
    passive: &PassiveLevel,
    server: SocketAddr,
    iterations: u32,
) -> Duration {
    let local = Family::V4.unspecified();
    // The buffers last the run, as a driver keeps its own.
    let mut payload = PoolBuffer::from_slice(PAYLOAD, PoolTag::BUFFER).expect("payload");
    let mut reply = PoolBuffer::zeroed(64, PoolTag::BUFFER).expect("reply buffer");
    let start = Instant::now();
    for _ in 0..iterations {
        let connection = provider
            .socket_connect_blocking(passive, TIMEOUT, local, server)
            .expect("wsk connect");
        let sent;
        (sent, payload) = connection.send_blocking(passive, TIMEOUT, payload);
        assert_eq!(sent, Ok(PAYLOAD.len()));
        let received;
        (received, reply) = connection.receive_blocking(passive, TIMEOUT, reply);
        assert_eq!(received, Ok(PAYLOAD.len()));
        assert_eq!(&*reply, PAYLOAD);
        connection
            .close_blocking(passive, TIMEOUT)
            .expect("wsk close");
    }
    start.elapsed()
}
