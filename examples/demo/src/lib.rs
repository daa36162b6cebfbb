//! What the `connect` example and the sample drivers share, so that all of
//! them print exactly the same result line: the modes, the payload escapes
//! (`\r`, `\n`, `\\`, `\xHH`), the line itself, and the request contract
//! the drivers serve ([`request`]).
//!
//! `#![no_std]` and allocation-free: the sample driver runs in the kernel.
#![no_std]

pub mod request;

use core::fmt;
use core::net::SocketAddr;
use core::time::Duration;

use wsk::{Connection, Error, Family, PassiveLevel, PoolBuffer, PoolTag, Provider, SocketKind};

/// One way to connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `WskSocketConnect`: create, bind and connect in one call.
    SocketConnect,
    /// `WskSocket`, `WskBind`, `WskConnect`, then send.
    Connect,
    /// `WskSocket`, `WskBind`, `WskConnectEx` with the payload.
    ConnectEx,
    /// A listening socket on the local address (`WskSocket`, `WskBind`),
    /// then `WskAccept`: the peer's first chunk is the reply, and the
    /// payload (or, without one, that chunk) goes back.
    Accept,
}

impl Mode {
    /// Every connecting mode, in the order `all` runs them (`accept` waits
    /// for a peer, so `all` leaves it out).
    pub const ALL: [Self; 3] = [Self::SocketConnect, Self::Connect, Self::ConnectEx];

    /// The accepting mode alone.
    pub const ACCEPT: [Self; 1] = [Self::Accept];

    /// The mode's name on the command line and in the result line.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::SocketConnect => "socket-connect",
            Self::Connect => "connect",
            Self::ConnectEx => "connect-ex",
            Self::Accept => "accept",
        }
    }
}

/// Parses `socket-connect|connect|connect-ex|all|accept` into the modes to
/// run.
#[must_use]
pub fn parse_modes(text: &str) -> Option<&'static [Mode]> {
    match text {
        "all" => Some(&Mode::ALL),
        "socket-connect" => Some(&Mode::ALL[0..1]),
        "connect" => Some(&Mode::ALL[1..2]),
        "connect-ex" => Some(&Mode::ALL[2..3]),
        "accept" => Some(&Mode::ACCEPT),
        _ => None,
    }
}

/// A malformed escape in a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscapeError {
    /// A backslash followed by something other than `r`, `n`, `\` or `x`.
    Unknown(char),
    /// `\x` not followed by two hex digits.
    BadHex,
    /// A trailing lone backslash.
    Trailing,
    /// The output buffer is too small.
    TooLong,
}

impl fmt::Display for EscapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(c) => write!(f, "unknown escape \\{c} (use \\r, \\n, \\\\ or \\xHH)"),
            Self::BadHex => f.write_str("\\x needs two hex digits"),
            Self::Trailing => f.write_str("trailing backslash"),
            Self::TooLong => f.write_str("payload too long"),
        }
    }
}

/// Decodes `text` with its escapes into `out`, returning the length.
///
/// # Errors
/// [`EscapeError`] for a malformed escape or a too-small `out`.
pub fn unescape(text: &str, out: &mut [u8]) -> Result<usize, EscapeError> {
    let mut bytes = text.bytes();
    let mut len = 0;
    while let Some(byte) = bytes.next() {
        let decoded = if byte == b'\\' {
            match bytes.next() {
                Some(b'r') => b'\r',
                Some(b'n') => b'\n',
                Some(b'\\') => b'\\',
                Some(b'x') => {
                    let digit = |b: Option<u8>| b.and_then(|b| char::from(b).to_digit(16));
                    let (Some(high), Some(low)) = (digit(bytes.next()), digit(bytes.next())) else {
                        return Err(EscapeError::BadHex);
                    };
                    u8::try_from(high * 16 + low).map_err(|_| EscapeError::BadHex)?
                }
                Some(other) => return Err(EscapeError::Unknown(char::from(other))),
                None => return Err(EscapeError::Trailing),
            }
        } else {
            byte
        };
        *out.get_mut(len).ok_or(EscapeError::TooLong)? = decoded;
        len += 1;
    }
    Ok(len)
}

/// Bytes shown with the same escapes: printable ASCII as is, `\r`, `\n`,
/// `\\`, and `\xHH` for everything else.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &byte in self.0 {
            match byte {
                b'\r' => f.write_str("\\r")?,
                b'\n' => f.write_str("\\n")?,
                b'\\' => f.write_str("\\\\")?,
                0x20..=0x7E => fmt::Write::write_char(f, char::from(byte))?,
                _ => write!(f, "\\x{byte:02X}")?,
            }
        }
        Ok(())
    }
}

/// How much of the reply the result line shows.
pub const REPLY_SHOWN: usize = 80;

/// What one mode did.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// It connected, sent and received.
    Ok {
        /// The path taken (`socket-connect`, `connect`, `connect-ex`,
        /// `connect+send` when connect-ex fell back, or `accept`).
        path: &'a str,
        /// Bytes sent.
        sent: usize,
        /// Bytes of the one reply chunk received.
        received: usize,
        /// The reply chunk.
        reply: &'a [u8],
        /// Microseconds the whole mode took.
        elapsed_us: u128,
    },
    /// It failed.
    Error(Error),
}

impl<'a> Outcome<'a> {
    /// The outcome of a [`run_mode`] result that took `elapsed_us`.
    #[must_use]
    pub fn of(result: &'a Result<Run, Error>, elapsed_us: u128) -> Self {
        match result {
            Ok(run) => Self::Ok {
                path: run.path,
                sent: run.sent,
                received: run.reply.len(),
                reply: &run.reply,
                elapsed_us,
            },
            Err(error) => Self::Error(*error),
        }
    }
}

/// The result line of one mode, exactly as the `connect` example prints it
/// and the sample driver logs it.
#[derive(Debug, Clone, Copy)]
pub struct ResultLine<'a> {
    /// The mode.
    pub mode: Mode,
    /// What it did.
    pub outcome: Outcome<'a>,
}

impl fmt::Display for ResultLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = self.mode.name();
        match self.outcome {
            Outcome::Ok {
                path,
                sent,
                received,
                reply,
                elapsed_us,
            } => {
                let shown = &reply[..reply.len().min(REPLY_SHOWN)];
                write!(
                    f,
                    "{mode}: ok path={path} sent={sent} received={received} reply={} elapsed_us={elapsed_us}",
                    Escaped(shown)
                )
            }
            Outcome::Error(error) => {
                let status = error.status();
                let name = status.name().unwrap_or("NTSTATUS");
                write!(
                    f,
                    "{mode}: error {name} (0x{:08X}) {}",
                    status.code(),
                    message(&error)
                )
            }
        }
    }
}

/// What an error means, in a few words.
#[must_use]
pub const fn message(error: &Error) -> &'static str {
    match error {
        Error::Refused(_) => "connection refused",
        Error::Unreachable(_) => "unreachable",
        Error::Reset(_) => "connection reset",
        Error::TimedOut(_) => "timed out",
        Error::Cancelled(_) => "cancelled",
        Error::ForcedClosed(_) => "socket forcibly closed",
        Error::NotSupported(_) => "not supported by this provider",
        Error::InsufficientResources(_) => "insufficient resources",
        Error::InvalidArgument(_) => "invalid argument",
        Error::AddressInUse(_) => "address in use",
        Error::NotConnected(_) => "not connected",
        Error::ProviderUnavailable(_) => "WSK provider unavailable",
        _ => "failed",
    }
}

/// One receive reads at most this much.
pub const REPLY_CAPACITY: usize = 64 * 1024;

/// What a successful mode did.
#[derive(Debug)]
pub struct Run {
    /// The path taken (see [`Outcome::Ok`]).
    pub path: &'static str,
    /// Bytes of payload sent.
    pub sent: usize,
    /// The one reply chunk received.
    pub reply: PoolBuffer,
}

/// What every mode is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    /// The local address to bind (the wildcard of the remote's family, port 0,
    /// unless given).
    pub local: SocketAddr,
    /// The server.
    pub remote: SocketAddr,
    /// The bytes to send.
    pub payload: &'a [u8],
    /// Whether connect-ex enables TCP Fast Open first.
    pub fast_open: bool,
    /// The limit for every blocking call.
    pub timeout: Duration,
}

/// Runs one mode, blocking.
///
/// Connects the mode's way, sends the payload, reads one reply chunk, and
/// closes gracefully (disconnect, read to the peer's end, close). `accept`
/// listens on `job.local` instead, accepts one peer, reads its first chunk,
/// and sends back the payload or, without one, that chunk.
///
/// # Errors
/// The first failing step's error; the socket is closed either way.
pub fn run_mode(
    provider: &Provider,
    passive: &PassiveLevel,
    mode: Mode,
    job: &Job<'_>,
) -> Result<Run, Error> {
    let Job {
        local,
        remote,
        payload,
        fast_open,
        timeout,
    } = *job;
    let data = PoolBuffer::from_slice(payload, PoolTag::BUFFER)?;
    let (connection, path, sent) = match mode {
        Mode::Accept => {
            let listener = provider.listen_blocking(passive, timeout, local)?;
            let (connection, _peer) = listener.accept_blocking(passive, timeout)?;
            let buffer = PoolBuffer::zeroed(REPLY_CAPACITY, PoolTag::BUFFER)?;
            let (received, chunk) = connection.receive_blocking(passive, timeout, buffer);
            received?;
            let back = if data.is_empty() {
                PoolBuffer::from_slice(&chunk, PoolTag::BUFFER)?
            } else {
                data
            };
            let sent = send(&connection, passive, timeout, back)?;
            connection.close_gracefully_blocking(passive, timeout)?;
            // One peer: stop listening, once done with it (Wine 8 closes
            // the connection accepted last with its listener).
            listener.close_blocking(passive, timeout)?;
            return Ok(Run {
                path: "accept",
                sent,
                reply: chunk,
            });
        }
        Mode::SocketConnect => {
            let connection = provider.socket_connect_blocking(passive, timeout, local, remote)?;
            let sent = send(&connection, passive, timeout, data)?;
            (connection, "socket-connect", sent)
        }
        Mode::Connect => {
            let socket = provider.socket_blocking(
                passive,
                timeout,
                Family::of(&remote),
                SocketKind::Connection,
            )?;
            let connection = socket
                .bind_blocking(passive, timeout, local)?
                .connect_blocking(passive, timeout, remote)?;
            let sent = send(&connection, passive, timeout, data)?;
            (connection, "connect", sent)
        }
        Mode::ConnectEx => {
            let mut socket = provider.socket_blocking(
                passive,
                timeout,
                Family::of(&remote),
                SocketKind::Connection,
            )?;
            if fast_open {
                socket.enable_fast_open_blocking(passive, timeout)?;
            }
            let bound = socket.bind_blocking(passive, timeout, local)?;
            let data = (!data.is_empty()).then_some(data);
            let (connected, _data) = bound.connect_ex_blocking(passive, timeout, remote, data);
            let (connection, outcome) = connected?;
            (connection, outcome.path.name(), outcome.sent)
        }
    };
    // The reply is awaited as a future under a kernel timer (the async
    // path: completion routine -> waker -> event, and a timer DPC), where
    // the other steps block.
    let buffer = PoolBuffer::zeroed(REPLY_CAPACITY, PoolTag::BUFFER)?;
    let (received, reply) =
        wsk::block_on(passive, wsk::timeout(timeout, connection.receive(buffer)))??;
    received?;
    // Disconnect, read to the peer's end, close: the peer sees an orderly
    // end, not a reset (a provider without WskDisconnect, such as Wine 8's,
    // is simply closed).
    connection.close_gracefully_blocking(passive, timeout)?;
    Ok(Run { path, sent, reply })
}

fn send(
    connection: &Connection,
    passive: &PassiveLevel,
    timeout: Duration,
    data: PoolBuffer,
) -> Result<usize, Error> {
    if data.is_empty() {
        return Ok(0);
    }
    connection.send_blocking(passive, timeout, data).0
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;

    use super::*;
    use wsk::NtStatus;

    #[test]
    fn escapes_round_trip() {
        let mut out = [0_u8; 32];
        let len = unescape("GET /\\r\\n\\\\\\x00\\xfF", &mut out).unwrap();
        assert_eq!(&out[..len], b"GET /\r\n\\\x00\xff");
        assert_eq!(
            Escaped(&out[..len]).to_string(),
            "GET /\\r\\n\\\\\\x00\\xFF"
        );
        assert_eq!(unescape("\\q", &mut out), Err(EscapeError::Unknown('q')));
        assert_eq!(unescape("\\x4", &mut out), Err(EscapeError::BadHex));
        assert_eq!(unescape("\\", &mut out), Err(EscapeError::Trailing));
        assert_eq!(unescape("abc", &mut out[..2]), Err(EscapeError::TooLong));
    }

    #[test]
    fn result_lines_follow_the_contract() {
        let ok = ResultLine {
            mode: Mode::ConnectEx,
            outcome: Outcome::Ok {
                path: "connect+send",
                sent: 5,
                received: 5,
                reply: b"hi\r\n!",
                elapsed_us: 12,
            },
        };
        assert_eq!(
            ok.to_string(),
            "connect-ex: ok path=connect+send sent=5 received=5 reply=hi\\r\\n! elapsed_us=12"
        );
        let error = ResultLine {
            mode: Mode::SocketConnect,
            outcome: Outcome::Error(Error::NotSupported(NtStatus::NOT_IMPLEMENTED)),
        };
        assert_eq!(
            error.to_string(),
            "socket-connect: error STATUS_NOT_IMPLEMENTED (0xC0000002) not supported by this provider"
        );
        let long = [b'a'; 200];
        let line = ResultLine {
            mode: Mode::Connect,
            outcome: Outcome::Ok {
                path: "connect",
                sent: 1,
                received: 200,
                reply: &long,
                elapsed_us: 1,
            },
        };
        assert!(
            line.to_string()
                .contains(&["reply=", &"a".repeat(80), " elapsed"].concat())
        );
        assert_eq!(parse_modes("all"), Some(&Mode::ALL[..]));
        assert_eq!(parse_modes("connect-ex"), Some(&[Mode::ConnectEx][..]));
        assert_eq!(parse_modes("bogus"), None);
    }
}
