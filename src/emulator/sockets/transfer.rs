//! Operations that wait for the host socket, and the non-blocking host calls
//! that move each one on. Nothing here blocks: a call that would block
//! reports [`Progress::Blocked`] and is retried on the next readiness event.

use core::mem::{offset_of, size_of};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use socket2::{SockAddr, Socket as HostSocket};

use super::FastOpenCounters;
use super::errno::status_of;
use crate::abi::{NTSTATUS, STATUS_SUCCESS, WSK_BUF};
use crate::emulator::mdl;

/// `TCPI_OPT_SYN_DATA` in `tcp_info.tcpi_options`: the peer acknowledged
/// data sent in the SYN.
const TCPI_OPT_SYN_DATA: u8 = 0x20;

/// A client buffer described by a `WSK_BUF`.
#[derive(Clone, Copy)]
pub struct Buffer {
    data: *mut u8,
    len: usize,
}

// SAFETY: the buffer is non-paged memory the client keeps valid until the
// IRP it came with completes, whichever thread completes it; the provider
// touches it only while it owns that IRP.
unsafe impl Send for Buffer {}

impl Buffer {
    pub const EMPTY: Self = Self {
        data: core::ptr::null_mut(),
        len: 0,
    };

    /// The buffer a client's `WSK_BUF` describes (NULL: empty).
    ///
    /// # Safety
    /// `buffer` is NULL or points to a readable `WSK_BUF`.
    pub unsafe fn from_wsk(buffer: *const WSK_BUF, function: &str) -> Self {
        if buffer.is_null() {
            return Self::EMPTY;
        }
        // SAFETY: a readable WSK_BUF (the contract).
        let WSK_BUF {
            Mdl: mdl,
            Offset: offset,
            Length: len,
        } = unsafe { buffer.read() };
        if len == 0 {
            return Self::EMPTY;
        }
        // SAFETY: the client's MDL; checked for liveness and range there.
        let data = unsafe { mdl::wsk_buf_range(mdl, offset as usize, len, function) };
        Self { data, len }
    }

    pub const fn len(&self) -> usize {
        self.len
    }

    /// What is left after the first `done` bytes.
    const fn rest(&self, done: usize) -> (*mut u8, usize) {
        (self.data.wrapping_add(done), self.len - done)
    }
}

/// Where an operation stands after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Finished: complete the IRP with this status and information.
    Done(NTSTATUS, usize),
    /// Waiting for the host socket.
    Blocked,
}

/// An operation parked with its IRP.
pub enum Op {
    Connect(Connect),
    /// `WskAccept` on a listening socket (its socket moves it on: the
    /// accepted connection becomes a socket of its own).
    Accept(Accept),
    /// `WskSendTo`: one datagram.
    SendTo {
        buffer: Buffer,
        remote: SocketAddr,
    },
    /// `WskReceiveFrom`: one datagram, and its sender written to `sender`
    /// (NULL: not asked for).
    ReceiveFrom {
        buffer: Buffer,
        sender: Sender,
    },
    Send {
        buffer: Buffer,
        done: usize,
    },
    Receive {
        buffer: Buffer,
        done: usize,
        wait_all: bool,
    },
    /// Graceful: the optional buffer, then the write side is shut down.
    Disconnect {
        buffer: Buffer,
        done: usize,
    },
}

/// Where `WskReceiveFrom` writes the sender's address (may be NULL).
pub struct Sender(pub *mut crate::abi::SOCKADDR);

// SAFETY: as for `Accept`: the client keeps it valid until the IRP
// completes; the provider writes it only while it owns that IRP.
unsafe impl Send for Sender {}

/// Where `WskAccept` writes the accepted connection's addresses (either may
/// be NULL).
pub struct Accept {
    pub local: *mut crate::abi::SOCKADDR,
    pub remote: *mut crate::abi::SOCKADDR,
    /// The accepted socket's `SocketContext` and client table (may be NULL).
    pub context: *mut core::ffi::c_void,
    pub dispatch: *const crate::abi::WSK_CLIENT_CONNECTION_DISPATCH,
}

// SAFETY: the client keeps both buffers valid until the IRP completes,
// whichever thread completes it; the provider writes them only while it
// owns that IRP.
unsafe impl Send for Accept {}

/// `WskConnect`, `WskConnectEx` or `WskSocketConnect` in progress.
pub struct Connect {
    pub remote: SocketAddr,
    /// `WskConnectEx`'s data (empty otherwise).
    pub buffer: Buffer,
    pub done: usize,
    /// `TCP_FASTOPEN` was set: the data may ride in the SYN.
    pub fast_open: bool,
    pub stage: Stage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The host connect has not been issued yet.
    Start,
    /// The SYN is out; `fast_open` says whether data was offered with it.
    Handshake { fast_open: bool },
    /// Connected; sending what of the buffer is left.
    Sending,
}

impl Connect {
    /// As far as the host allows: issue the connect, wait for the
    /// handshake, send the data.
    pub fn attempt(&mut self, host: &HostSocket, counters: &FastOpenCounters) -> Progress {
        loop {
            match self.stage {
                Stage::Start => match self.start(host, counters) {
                    Ok(fast_open) => self.stage = Stage::Handshake { fast_open },
                    Err(status) => return Progress::Done(status, 0),
                },
                Stage::Handshake { fast_open } => match established(host) {
                    Ok(true) => {
                        if fast_open && syn_data_acked(host) {
                            counters.record_syn_data_acked();
                        }
                        self.stage = Stage::Sending;
                    }
                    Ok(false) => return Progress::Blocked,
                    Err(status) => return Progress::Done(status, self.done),
                },
                Stage::Sending => return send(host, self.buffer, &mut self.done),
            }
        }
    }

    /// Issues the host connect; `Ok(true)` if data was offered in the SYN.
    fn start(&mut self, host: &HostSocket, counters: &FastOpenCounters) -> Result<bool, NTSTATUS> {
        let remote = SockAddr::from(self.remote);
        if self.fast_open && self.buffer.len() > 0 {
            counters.record_attempt();
            // Linux TCP Fast Open: with a cookie cached for the server the
            // data goes in the SYN and the count queued is returned; without
            // one, the SYN asks for a cookie and EINPROGRESS says nothing was
            // queued. Either way the connection is now under way.
            let (data, len) = self.buffer.rest(0);
            // SAFETY: the client's buffer, valid while the provider owns
            // the IRP (as now); `remote` is a valid address of its length.
            match unsafe { fast_open_send(host, data, len, &remote) } {
                Ok(sent) => {
                    self.done = sent;
                    return Ok(true);
                }
                Err(error) if error.raw_os_error() == Some(libc::EINPROGRESS) => return Ok(true),
                // Client fast open disabled on the host: connect normally.
                Err(error) if error.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
                Err(error) => return Err(status_of(&error)),
            }
        }
        match host.connect(&remote) {
            Ok(()) => Ok(false),
            Err(error) if error.raw_os_error() == Some(libc::EINPROGRESS) => Ok(false),
            Err(error) => Err(status_of(&error)),
        }
    }
}

impl Op {
    /// One attempt at a send, receive or graceful disconnect.
    pub fn attempt(&mut self, host: &HostSocket, counters: &FastOpenCounters) -> Progress {
        match self {
            Self::Connect(connect) => connect.attempt(host, counters),
            Self::Accept(_) => unreachable!("a listening socket accepts (Socket::attempt)"),
            Self::SendTo { buffer, remote } => send_to(host, *buffer, remote),
            Self::ReceiveFrom { buffer, sender } => receive_from(host, *buffer, sender),
            Self::Send { buffer, done } => send(host, *buffer, done),
            Self::Receive {
                buffer,
                done,
                wait_all,
            } => receive(host, *buffer, done, *wait_all),
            Self::Disconnect { buffer, done } => match send(host, *buffer, done) {
                Progress::Done(STATUS_SUCCESS, sent) => {
                    match host.shutdown(std::net::Shutdown::Write) {
                        Ok(()) => Progress::Done(STATUS_SUCCESS, sent),
                        Err(error) => Progress::Done(status_of(&error), sent),
                    }
                }
                other => other,
            },
        }
    }

    /// Bytes moved so far (for an operation that ends early).
    pub const fn done(&self) -> usize {
        match self {
            Self::Connect(connect) => connect.done,
            Self::Accept(_) | Self::SendTo { .. } | Self::ReceiveFrom { .. } => 0,
            Self::Send { done, .. }
            | Self::Receive { done, .. }
            | Self::Disconnect { done, .. } => *done,
        }
    }
}

/// Whether a connect in progress has finished: `Ok(false)` while the
/// handshake is still under way.
fn established(host: &HostSocket) -> Result<bool, NTSTATUS> {
    match host.take_error() {
        Ok(Some(error)) | Err(error) => return Err(status_of(&error)),
        Ok(None) => {}
    }
    match host.peer_addr() {
        Ok(_) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(error) => Err(status_of(&error)),
    }
}

/// Writes until the whole buffer is sent or the host would block.
fn send(host: &HostSocket, buffer: Buffer, done: &mut usize) -> Progress {
    while *done < buffer.len() {
        let (data, len) = buffer.rest(*done);
        // SAFETY: the client's buffer, valid while the provider owns the
        // IRP (as now).
        match unsafe { raw_send(host, data, len) } {
            Ok(sent) => *done += sent,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Progress::Blocked,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Progress::Done(status_of(&error), *done),
        }
    }
    Progress::Done(STATUS_SUCCESS, *done)
}

/// Reads what is there: done at the first bytes, or (`wait_all`) when the
/// buffer is full; a peer that closed ends it with what was read (0 bytes:
/// a graceful disconnect).
fn receive(host: &HostSocket, buffer: Buffer, done: &mut usize, wait_all: bool) -> Progress {
    loop {
        let (data, len) = buffer.rest(*done);
        // SAFETY: the client's buffer, valid and writable while the
        // provider owns the IRP (as now).
        match unsafe { raw_receive(host, data, len) } {
            Ok(0) => return Progress::Done(STATUS_SUCCESS, *done),
            Ok(read) => {
                *done += read;
                if !wait_all || *done == buffer.len() {
                    return Progress::Done(STATUS_SUCCESS, *done);
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Progress::Blocked,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Progress::Done(status_of(&error), *done),
        }
    }
}

/// `TCP_INFO`'s verdict on the SYN's data, once the connection is up.
fn syn_data_acked(host: &HostSocket) -> bool {
    let mut info = [0_u8; size_of::<libc::tcp_info>()];
    let mut len = libc::socklen_t::try_from(info.len()).expect("tcp_info fits socklen_t");
    // SAFETY: `info` is writable for `len` bytes, which getsockopt updates.
    let result = unsafe {
        libc::getsockopt(
            host.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &raw mut len,
        )
    };
    let options = offset_of!(libc::tcp_info, tcpi_options);
    result == 0 && (len as usize) > options && info[options] & TCPI_OPT_SYN_DATA != 0
}

fn result_of(returned: isize) -> io::Result<usize> {
    usize::try_from(returned).map_err(|_| io::Error::last_os_error())
}

/// `send` of `len` bytes at `data`, without `SIGPIPE`.
///
/// # Safety
/// `data` is readable for `len` bytes.
unsafe fn raw_send(host: &HostSocket, data: *const u8, len: usize) -> io::Result<usize> {
    // SAFETY: readable for `len` bytes (the contract).
    result_of(unsafe { libc::send(host.as_raw_fd(), data.cast(), len, libc::MSG_NOSIGNAL) })
}

/// One datagram of the whole buffer to `remote`.
fn send_to(host: &HostSocket, buffer: Buffer, remote: &SocketAddr) -> Progress {
    let (data, len) = buffer.rest(0);
    let remote = SockAddr::from(*remote);
    // SAFETY: the client's buffer, readable for `len` bytes while the
    // provider owns the IRP (as now); `remote` holds `remote.len()` bytes.
    let sent = result_of(unsafe {
        libc::sendto(
            host.as_raw_fd(),
            data.cast(),
            len,
            libc::MSG_NOSIGNAL,
            remote.as_ptr().cast(),
            remote.len(),
        )
    });
    match sent {
        Ok(sent) => Progress::Done(STATUS_SUCCESS, sent),
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => Progress::Blocked,
        Err(error) => Progress::Done(status_of(&error), 0),
    }
}

/// One datagram into the buffer (a longer one is cut, as Windows cuts it
/// for a receive without `MSG_PARTIAL`), and its sender.
fn receive_from(host: &HostSocket, buffer: Buffer, sender: &Sender) -> Progress {
    let (data, len) = buffer.rest(0);
    let receive = |from: *mut socket2::SockAddrStorage, from_len: *mut libc::socklen_t| {
        // SAFETY: the client's buffer, writable for `len` bytes while the
        // provider owns the IRP (as now); the address storage and its
        // length are socket2's, as `try_init` hands them over.
        result_of(unsafe {
            libc::recvfrom(host.as_raw_fd(), data.cast(), len, 0, from.cast(), from_len)
        })
    };
    // SAFETY: `receive` writes at most the storage's length and sets it.
    let received = unsafe { SockAddr::try_init(receive) };
    match received {
        Ok((received, from)) => {
            if let (Some(from), false) = (from.as_socket(), sender.0.is_null()) {
                // SAFETY: the client's output address, large enough for any
                // address (WSK contract), valid until the IRP completes.
                unsafe { super::sockaddr::write(&from, sender.0) };
            }
            Progress::Done(STATUS_SUCCESS, received)
        }
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => Progress::Blocked,
        Err(error) => Progress::Done(status_of(&error), 0),
    }
}

/// `recv` into `len` bytes at `data`.
///
/// # Safety
/// `data` is writable for `len` bytes.
unsafe fn raw_receive(host: &HostSocket, data: *mut u8, len: usize) -> io::Result<usize> {
    // SAFETY: writable for `len` bytes (the contract).
    result_of(unsafe { libc::recv(host.as_raw_fd(), data.cast(), len, 0) })
}

/// `sendto` with `MSG_FASTOPEN`: connects and offers the data in the SYN.
///
/// # Safety
/// `data` is readable for `len` bytes.
unsafe fn fast_open_send(
    host: &HostSocket,
    data: *const u8,
    len: usize,
    remote: &SockAddr,
) -> io::Result<usize> {
    // SAFETY: readable for `len` bytes (the contract); `remote` holds a
    // socket address of `remote.len()` bytes.
    result_of(unsafe {
        libc::sendto(
            host.as_raw_fd(),
            data.cast(),
            len,
            libc::MSG_FASTOPEN | libc::MSG_NOSIGNAL,
            remote.as_ptr().cast(),
            remote.len(),
        )
    })
}

/// What the host socket holds, without taking it (`MSG_PEEK`).
pub fn peek(host: &HostSocket, data: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `data` is writable for its length.
        let peeked = result_of(unsafe {
            libc::recv(
                host.as_raw_fd(),
                data.as_mut_ptr().cast(),
                data.len(),
                libc::MSG_PEEK,
            )
        });
        match peeked {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Takes `count` bytes that [`peek`] saw from the host socket.
pub fn discard(host: &HostSocket, mut count: usize) -> io::Result<()> {
    let mut scratch = [0_u8; 4096];
    while count > 0 {
        let chunk = count.min(scratch.len());
        // SAFETY: `scratch` is writable for `chunk` bytes.
        match unsafe { raw_receive(host, scratch.as_mut_ptr(), chunk) } {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Ok(read) => count -= read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
