//! The request contract the sample drivers serve: parsing a request line,
//! serving it as an executor task, the result line, cancellation.

mod support;

use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use support::echo_server;
use wsk::emulator::{Device, Kernel};
use wsk::{DeviceObject, Error, Executor, NtStatus, PassiveLevel, Registration, block_on};
use wsk_demo::Mode;
use wsk_demo::request::{
    IOCTL_WSK_SAMPLE_RUN, OUTPUT_CAPACITY, Remote, Request, RequestError, serve, write_rejection,
};

const TIMEOUT: Duration = Duration::from_secs(10);

fn passive() -> PassiveLevel {
    PassiveLevel::check().expect("test threads start at PASSIVE_LEVEL")
}

/// Parses in the machine the test entered (the request's payload is pool
/// of that machine, freed when the request drops).
fn parse(line: &str) -> Result<Request, RequestError> {
    Request::parse(line.as_bytes())
}

#[test]
fn the_ioctl_is_a_buffered_unknown_device_code() {
    // CTL_CODE(FILE_DEVICE_UNKNOWN, 0x800, METHOD_BUFFERED, FILE_ANY_ACCESS)
    assert_eq!(IOCTL_WSK_SAMPLE_RUN, 0x0022_2000);
}

#[test]
fn a_request_line_parses_like_the_connect_example_options() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let request = parse(
        r#"--remote 127.0.0.1:7 --mode connect-ex --send "GET / HTTP/1.0\r\n\r\n" --timeout-ms 250 --tfo"#,
    )
    .unwrap();
    assert_eq!(request.mode, Mode::ConnectEx);
    assert!(
        matches!(request.remote, Remote::Address(remote) if remote == "127.0.0.1:7".parse().unwrap())
    );
    assert_eq!(request.local, None);
    assert_eq!(&*request.payload, b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(request.timeout, Duration::from_millis(250));
    assert!(request.fast_open);
    drop(request);
    let request = parse("--mode socket-connect --remote [::1]:9 --local [::]:0\r\n").unwrap();
    assert_eq!(request.local, Some("[::]:0".parse().unwrap()));
    assert!(request.payload.is_empty());
    drop(request);
    // A host name, resolved when the request is served.
    let request = parse("--mode connect --remote localhost:6379").unwrap();
    assert!(
        matches!(&request.remote, Remote::Name { name, port: 6379 } if &name[..] == b"localhost")
    );
    drop(request);
    kernel.assert_no_leaks();
}

#[test]
fn malformed_request_lines_are_rejected_with_one_line_reasons() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let cases: &[(&str, RequestError)] = &[
        ("--mode connect", RequestError::NoRemote),
        ("--remote 127.0.0.1:7", RequestError::NoMode),
        (
            "--remote 127.0.0.1:0 --mode connect",
            RequestError::BadAddress("--remote"),
        ),
        (
            "--remote localhost:0 --mode connect",
            RequestError::BadAddress("--remote"),
        ),
        (
            "--remote bad/name:7 --mode connect",
            RequestError::BadAddress("--remote"),
        ),
        (
            "--remote :7 --mode connect",
            RequestError::BadAddress("--remote"),
        ),
        ("--remote 127.0.0.1:7 --mode all", RequestError::BadMode),
        (
            "--remote 127.0.0.1:7 --mode connect --timeout-ms 0",
            RequestError::BadTimeout,
        ),
        (
            "--remote 127.0.0.1:7 --mode connect --timeout-ms x",
            RequestError::BadTimeout,
        ),
        (
            "--remote 127.0.0.1:7 --mode connect --send \\q",
            RequestError::BadPayload(wsk_demo::EscapeError::Unknown('q')),
        ),
        (
            "--remote 127.0.0.1:7 --mode connect --send \"open",
            RequestError::OpenQuote,
        ),
        (
            "--remote 127.0.0.1:7 --mode connect --bogus",
            RequestError::UnknownOption,
        ),
        (
            "--remote 127.0.0.1:7 --mode connect --send",
            RequestError::MissingValue("--send"),
        ),
        (
            "--remote [::1]:7 --local 0.0.0.0:0 --mode connect",
            RequestError::MixedFamilies,
        ),
        (
            "--remote 127.0.0.1:7\n--mode connect",
            RequestError::BadLine,
        ),
        ("--mode accept", RequestError::BadAccept),
        ("--mode accept --local 127.0.0.1:0", RequestError::BadAccept),
        (
            "--mode accept --local 127.0.0.1:7 --remote 127.0.0.1:8",
            RequestError::BadAccept,
        ),
        (
            "--mode accept --local 127.0.0.1:7 --tfo",
            RequestError::BadAccept,
        ),
    ];
    for (line, expected) in cases {
        assert_eq!(parse(line).err(), Some(*expected), "{line}");
        let mut out = [0_u8; OUTPUT_CAPACITY];
        let len = write_rejection(expected, &mut out);
        let text = std::str::from_utf8(&out[..len]).unwrap();
        assert!(
            text.starts_with("invalid request: ") && !text.contains('\n'),
            "{text}"
        );
    }
    assert_eq!(
        Request::parse(&[0xFF, 0xFE]).err(),
        Some(RequestError::BadLine)
    );
}

/// A machine with a registration, a capture and an executor on a device.
fn with_executor(test: impl FnOnce(&wsk::Provider, &Executor, &PassiveLevel)) {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = passive();
    let device = Device::new();
    // SAFETY: the emulated device outlives its uses here.
    let object = || unsafe { DeviceObject::from_raw(device.as_ptr()) }.unwrap();
    let registration = Registration::register_with_device(&passive, object()).unwrap();
    let provider = registration.capture(&passive, TIMEOUT).unwrap();
    let executor = Executor::new(object()).unwrap();
    test(&provider, &executor, &passive);
    assert!(executor.shutdown(&passive, TIMEOUT).is_clean());
    drop(provider);
    let report = registration.deregister(&passive);
    assert!(report.is_clean(), "{report}");
    kernel.assert_no_leaks();
    assert_eq!(device.references(), 0);
}

#[test]
fn requests_run_as_concurrent_tasks_and_answer_the_example_line() {
    with_executor(|provider, executor, passive| {
        let remote = echo_server();
        let handles: Vec<_> = ["socket-connect", "connect", "connect-ex"]
            .iter()
            .flat_map(|mode| {
                (0..4).map(move |i| {
                    format!("--remote {remote} --mode {mode} --send \"hello {i}\\r\\n\"")
                })
            })
            .map(|line| {
                let request = Request::parse(line.as_bytes()).unwrap();
                let start = Instant::now();
                let task = executor.spawn(serve(provider.clone(), request)).unwrap();
                (line, start, task)
            })
            .collect();
        for (line, start, task) in handles {
            let served = block_on(passive, task).unwrap().unwrap();
            let mut out = [0_u8; OUTPUT_CAPACITY];
            let len = served.write_line(start.elapsed().as_micros(), &mut out);
            let text = std::str::from_utf8(&out[..len]).unwrap();
            let mode = served.mode.name();
            let n = line.split("hello ").nth(1).unwrap().chars().next().unwrap();
            let expected = format!("{mode}: ok path=");
            assert!(text.starts_with(&expected), "{text}");
            assert!(
                text.contains(&format!(
                    " sent=9 received=9 reply=hello {n}\\r\\n elapsed_us="
                )),
                "{text}"
            );
        }
    });
}

#[test]
fn an_accept_request_listens_accepts_one_peer_and_answers() {
    with_executor(|provider, executor, passive| {
        // A free port for the listener (released before the request binds).
        let local = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        for (line, answer) in [
            (format!("--mode accept --local {local}"), &b"ping"[..]),
            (
                format!("--mode accept --local {local} --send pong\\r\\n"),
                &b"pong\r\n"[..],
            ),
        ] {
            let request = Request::parse(line.as_bytes()).unwrap();
            assert_eq!(request.mode, Mode::Accept);
            let start = Instant::now();
            let task = executor.spawn(serve(provider.clone(), request)).unwrap();
            let peer = thread::spawn(move || {
                // The task listens soon after it starts.
                let deadline = Instant::now() + TIMEOUT;
                let mut stream = loop {
                    match std::net::TcpStream::connect(local) {
                        Ok(stream) => break stream,
                        Err(_) if Instant::now() < deadline => {
                            thread::sleep(Duration::from_millis(5));
                        }
                        Err(error) => panic!("the request never listened: {error}"),
                    }
                };
                std::io::Write::write_all(&mut stream, b"ping").unwrap();
                let mut back = Vec::new();
                std::io::Read::read_to_end(&mut stream, &mut back).unwrap();
                back
            });
            let served = block_on(passive, task).unwrap().unwrap();
            assert_eq!(peer.join().unwrap(), answer);
            let mut out = [0_u8; OUTPUT_CAPACITY];
            let len = served.write_line(start.elapsed().as_micros(), &mut out);
            let text = std::str::from_utf8(&out[..len]).unwrap();
            assert!(
                text.starts_with(&format!(
                    "accept: ok path=accept sent={} received=4 reply=ping elapsed_us=",
                    answer.len()
                )),
                "{text}"
            );
        }
    });
}

#[test]
fn a_request_to_a_host_name_resolves_it_in_the_task() {
    with_executor(|provider, executor, passive| {
        let remote = echo_server();
        let line = format!(
            "--remote localhost:{} --local 127.0.0.1:0 --mode connect --send hi",
            remote.port()
        );
        let request = Request::parse(line.as_bytes()).unwrap();
        let task = executor.spawn(serve(provider.clone(), request)).unwrap();
        let served = block_on(passive, task).unwrap().unwrap();
        let mut out = [0_u8; OUTPUT_CAPACITY];
        let len = served.write_line(1, &mut out);
        let text = std::str::from_utf8(&out[..len]).unwrap();
        assert!(
            text.starts_with("connect: ok path=connect sent=2 received=2 reply=hi "),
            "{text}"
        );
    });
}

#[test]
fn an_aborted_request_is_cancelled_and_leaves_nothing() {
    with_executor(|provider, executor, passive| {
        // A server that accepts and never answers: the receive waits.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let remote = listener.local_addr().unwrap();
        let line = format!("--remote {remote} --mode connect --send x");
        let request = Request::parse(line.as_bytes()).unwrap();
        let task = executor.spawn(serve(provider.clone(), request)).unwrap();
        let (_held, _) = listener.accept().unwrap();
        thread::sleep(Duration::from_millis(50));
        task.abort();
        assert_eq!(
            block_on(passive, task).unwrap().err(),
            Some(Error::Cancelled(NtStatus::CANCELLED))
        );
    });
}

#[test]
fn a_request_task_is_small_enough_for_a_kernel_stack() {
    let kernel = Kernel::new();
    let _enter = kernel.enter();
    let passive = passive();
    let registration = Registration::register(&passive).unwrap();
    let provider = registration.capture(&passive, TIMEOUT).unwrap();
    let request = Request::parse(b"--remote 127.0.0.1:7 --mode connect").unwrap();
    let future = serve(provider, request);
    // A driver builds it on the requesting thread's kernel stack (12 to 24
    // KiB in all) before it moves to pool: keep it well under a page.
    let size = std::mem::size_of_val(&future);
    assert!(
        size <= 2048,
        "the request task's future grew to {size} bytes"
    );
    drop(future);
    let report = registration.deregister(&passive);
    assert!(report.is_clean(), "{report}");
}
