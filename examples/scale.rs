//! Scale: many connections at once through the emulator, each with a
//! receive pending, as a driver serving many peers holds them.
//!
//! ```sh
//! cargo run --release --example scale                          # 10,000 connections
//! cargo run --release --example scale -- --connections 2000    # what CI runs
//! ```
//!
//! Opens as many `std::net` connections first, held at once too, for the
//! host's own cost (each round has its own server, in a child process).
//! Then opens the connections one after the other to a loopback server
//! that
//! accepts and never sends, starts a receive on each (a future polled
//! once: its IRP goes to the provider and pends), then tears everything
//! down: the receives are cancelled by dropping their futures, and the
//! connections closed. Prints, one per line: the time to open them all,
//! the non-paged memory per pending receive (pool blocks, the IRP and the
//! MDL, from the emulator's exact accounting), the threads of the process
//! before and with every receive pending, and the time to tear down.

#![allow(clippy::cast_precision_loss, reason = "figures to print")]

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::task::Context;
use std::time::{Duration, Instant};

use wsk::emulator::{Kernel, Usage};
use wsk::{Connection, Family, PassiveLevel, PoolBuffer, PoolTag, Registration};

const TIMEOUT: Duration = Duration::from_secs(30);

fn main() {
    let mut connections = 10_000_usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--serve" {
            serve();
        }
        match (flag.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--connections", Some(value)) if value > 0 => connections = value,
            _ => {
                eprintln!("usage: scale [--connections N]");
                std::process::exit(2);
            }
        }
    }
    raise_file_limit(connections as u64 + 256);
    // The servers run in child processes, with their own descriptors: one
    // process cannot hold both ends of 10,000 connections under a 20,000
    // descriptor limit.
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = PassiveLevel::check().expect("main runs at PASSIVE_LEVEL");
    let registration = Registration::register(&passive).expect("WskRegister");
    let provider = registration.capture(&passive, TIMEOUT).expect("capture");

    let opened_std = open_std(connections);
    let (server, child) = silent_server();

    let start = Instant::now();
    let open: Vec<Connection> = (0..connections)
        .map(|index| {
            provider
                .socket_connect_blocking(&passive, TIMEOUT, Family::V4.unspecified(), server)
                .unwrap_or_else(|error| panic!("connect #{index}: {error}"))
        })
        .collect();
    let opened = start.elapsed();
    let buffers: Vec<PoolBuffer> = (0..connections)
        .map(|_| PoolBuffer::zeroed(64, PoolTag::BUFFER).expect("buffer"))
        .collect();
    let threads_before = thread_count();
    let before = kernel.usage();

    // One receive per connection, submitted by a first poll and left
    // pending.
    let mut context = Context::from_waker(std::task::Waker::noop());
    let mut receives: Vec<_> = open
        .iter()
        .zip(buffers)
        .map(|(connection, buffer)| Box::pin(connection.receive(buffer)))
        .collect();
    for receive in &mut receives {
        assert!(
            receive.as_mut().poll(&mut context).is_pending(),
            "nothing is sent: the receive pends"
        );
    }
    let pending = kernel.usage();
    let threads_pending = thread_count();
    let per_receive =
        |total: fn(&Usage) -> usize| (total(&pending) - total(&before)) as f64 / connections as f64;

    let start = Instant::now();
    drop(receives);
    for connection in open {
        connection.close_blocking(&passive, TIMEOUT).expect("close");
    }
    let torn_down = start.elapsed();
    drop(provider);
    let report = registration.deregister(&passive);
    assert!(report.is_clean(), "deregistration had to force: {report}");
    kernel.assert_no_leaks();
    stop(child);

    println!("connections: {connections}");
    println!(
        "open all std::net: {:.0} ms",
        opened_std.as_secs_f64() * 1e3
    );
    println!("open all: {:.0} ms", opened.as_secs_f64() * 1e3);
    println!(
        "open per connection: {:.0} us",
        opened.as_secs_f64() * 1e6 / connections as f64
    );
    println!(
        "pool per pending receive: {:.0} bytes",
        per_receive(pool_bytes)
    );
    println!(
        "IRP per pending receive: {:.0} bytes",
        per_receive(|u| u.irp_bytes)
    );
    println!(
        "MDL per pending receive: {:.0} bytes",
        per_receive(|u| u.mdl_bytes)
    );
    println!(
        "non-paged memory per pending receive: {:.0} bytes",
        per_receive(|u| pool_bytes(u) + u.irp_bytes + u.mdl_bytes)
    );
    println!("threads before the receives: {threads_before}");
    println!("threads with every receive pending: {threads_pending}");
    println!("tear down all: {:.0} ms", torn_down.as_secs_f64() * 1e3);
}

fn pool_bytes(usage: &Usage) -> usize {
    usage.pool.values().map(|tag| tag.bytes).sum()
}

/// Starts this program as the silent server in a child process; gives its
/// address.
fn silent_server() -> (SocketAddr, Child) {
    let mut child = Command::new(std::env::current_exe().expect("this program"))
        .arg("--serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the server process");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("its output"))
        .read_line(&mut line)
        .expect("its address");
    (line.trim().parse().expect("an address"), child)
}

/// The host's own cost of holding that many loopback connections, for
/// comparison: `std::net`, in the same run, against a server of its own.
fn open_std(connections: usize) -> Duration {
    let (server, child) = silent_server();
    let start = Instant::now();
    let held: Vec<TcpStream> = (0..connections)
        .map(|index| {
            TcpStream::connect(server)
                .unwrap_or_else(|error| panic!("std connect #{index}: {error}"))
        })
        .collect();
    let opened = start.elapsed();
    drop(held);
    stop(child);
    opened
}

/// Ends a server process.
fn stop(mut child: Child) {
    drop(child.stdin.take());
    let _ = child.wait();
}

/// The server process: accepts every connection and holds it without
/// sending, until its standard input closes.
fn serve() -> ! {
    raise_file_limit(65_536);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    println!("{}", listener.local_addr().expect("address"));
    std::thread::spawn(move || {
        #[allow(clippy::collection_is_never_read, reason = "held open, never read")]
        let mut held = Vec::new();
        for stream in listener.incoming() {
            match stream {
                Ok(stream) => held.push(stream),
                Err(error) => eprintln!("scale server: accept failed: {error}"),
            }
        }
    });
    let _ = std::io::stdin().read_line(&mut String::new());
    std::process::exit(0);
}

fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Threads:"))
                .and_then(|count| count.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn raise_file_limit(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur < needed {
        // Root may raise the hard limit too; otherwise stay within it.
        let raised = libc::rlimit {
            rlim_cur: needed,
            rlim_max: limit.rlim_max.max(needed),
        };
        // SAFETY: a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) } != 0 {
            limit.rlim_cur = limit.rlim_max.min(needed);
            // SAFETY: a valid rlimit within the hard limit.
            let _ = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) };
        }
    }
}
