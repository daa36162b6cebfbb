//! `WskConnectEx` after `TCP_FASTOPEN` uses the host's real TCP Fast Open:
//! the first connect to a server fetches a cookie, the second carries its
//! data in the SYN.
//!
//! The test needs its own network namespace (so that the Fast Open sysctl
//! and the cookie cache are its own), hence root. Without root it says it
//! was skipped; with `CI` set it must run.

mod support;

use std::ffi::OsStr;
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::thread;

use support::{Client, Data, SUCCESS};
use wsk::abi::WSK_FLAG_CONNECTION_SOCKET;
use wsk::emulator::Kernel;

const PAYLOADS: [&[u8]; 2] = [
    b"first payload, after the handshake",
    b"second payload, in the SYN",
];

fn on_ci() -> bool {
    std::env::var_os("CI").is_some_and(|value| !value.is_empty())
}

/// Skips the test with a plain message, unless CI requires it to run.
fn skip(why: &str) {
    assert!(!on_ci(), "CI requires the TCP Fast Open test to run: {why}");
    eprintln!("SKIPPED tcp fast open test: {why}");
}

#[test]
fn the_second_connect_ex_carries_its_data_in_the_syn() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip("needs root for a network namespace and sysctl");
        return;
    }
    // The namespace is entered by this thread only: the test harness's
    // threads, and other tests, stay where they are.
    thread::spawn(in_own_network_namespace).join().unwrap();
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args.iter().map(OsStr::new))
        .output()
        .map_err(|error| format!("{program}: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn in_own_network_namespace() {
    // SAFETY: unshare has no memory preconditions; CLONE_NEWNET moves only
    // this thread (and the processes it starts) to a fresh namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        skip(&format!(
            "unshare(CLONE_NEWNET): {}",
            io::Error::last_os_error()
        ));
        return;
    }
    // Children inherit this thread's namespace.
    for (program, args) in [
        ("ip", &["link", "set", "lo", "up"][..]),
        ("sysctl", &["-w", "net.ipv4.tcp_fastopen=3"][..]),
    ] {
        if let Err(error) = run(program, args) {
            skip(&error);
            return;
        }
    }

    let listener = fast_open_listener();
    let server_address = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        PAYLOADS
            .iter()
            .map(|_| {
                let (mut stream, _) = listener.accept().unwrap();
                let mut received = Vec::new();
                stream.read_to_end(&mut received).unwrap();
                received
            })
            .collect::<Vec<_>>()
    });

    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let client = Client::register();
    for (round, payload) in PAYLOADS.iter().enumerate() {
        let socket = client.open(server_address.ip(), WSK_FLAG_CONNECTION_SOCKET);
        assert_eq!(socket.set_fast_open(true), SUCCESS);
        assert_eq!(
            socket
                .bind(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0), 0)
                .status,
            SUCCESS
        );
        let mut data = Data::from(payload);
        let outcome = socket.connect_ex(server_address, Some(&mut data), 0);
        // No byte count: Microsoft documents none for WskConnectEx.
        assert_eq!(
            (outcome.status, outcome.information),
            (SUCCESS, 0),
            "connect {round}"
        );
        assert_eq!(socket.disconnect(None, 0).status, SUCCESS);
        assert_eq!(socket.close().status, SUCCESS);
        let stats = kernel.fast_open_stats();
        eprintln!("after connect {round}: {stats:?}");
        assert_eq!(stats.attempts, round as u64 + 1);
        if round == 0 {
            assert_eq!(
                stats.syn_data_acked, 0,
                "a fresh namespace has no cookie: the first SYN only asks for one"
            );
        }
    }
    assert!(
        kernel.fast_open_stats().syn_data_acked >= 1,
        "the second connect's data rode in the SYN"
    );
    let received = server.join().unwrap();
    assert_eq!(received, PAYLOADS, "the server received both payloads");
    client.finish();
    kernel.assert_no_leaks();
}

/// A listener with `TCP_FASTOPEN` (set before `listen`, as Linux requires).
fn fast_open_listener() -> TcpListener {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let queue: libc::c_int = 16;
    // SAFETY: a valid socket and an int option value of the given size.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_FASTOPEN,
            (&raw const queue).cast(),
            libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap(),
        )
    };
    assert_eq!(result, 0, "TCP_FASTOPEN: {}", io::Error::last_os_error());
    socket
        .bind(&SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0).into())
        .unwrap();
    socket.listen(16).unwrap();
    socket.into()
}
