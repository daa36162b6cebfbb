//! # wsk
//!
//! A safe Winsock Kernel (WSK) client library for Windows kernel drivers.
//!
//! The crate wraps the WSK client calls a driver needs to open and use TCP
//! connections. Each wrapper builds an IRP, installs a completion routine and
//! gives the `NTSTATUS` result back as a typed [`Result`]. IRQL rules are
//! checked by types ([`PassiveLevel`], [`AtMostApc`], [`AtMostDispatch`]).
//!
//! ## Layers (one folder each)
//! 1. [`abi`]: `#[repr(C)]` declarations from `wdm.h`, `wsk.h` and `ws2def.h`,
//!    with every size and offset the library relies on asserted at compile
//!    time (and checked against the real headers by a test).
//! 2. [`kernel`]: kernel objects, one module each: IRQL tokens, events, spin
//!    locks, IRPs, tagged non-paged pool, MDLs, device objects, timers.
//! 3. `operation`: one in-flight IRP and everything the provider may touch,
//!    in one reference-counted block with a model-checked lifecycle; the WSK
//!    entry points (`calls`).
//! 4. `objects`: the WSK objects as owned handles: [`Registration`] and
//!    [`Provider`], sockets as typestates ([`Socket`], [`BoundSocket`],
//!    [`Connection`]) with their futures and blocking calls, and what
//!    deregistration uses to end whatever is left (the tracking list,
//!    run-down protection).
//! 5. [`executor`]: [`block_on`] and the [`Executor`] for tasks.
//!
//! ## Where it runs
//! - In the Windows kernel (`x86_64-pc-windows-msvc`), importing from
//!   `ntoskrnl.exe` and `netio.sys` with `raw-dylib`: plain cargo builds it,
//!   no WDK needed.
//! - On any other host, against the [`emulator`]: a user-mode stand-in for
//!   the kernel and the WSK provider, so `cargo test` exercises the same code.
//! - With the optional `wdk` feature (Windows hosts with the WDK only),
//!   alongside windows-drivers-rs.
//!
//! The library has no global allocator and no panic handler: the driver
//! owns both. Its own memory comes from tagged non-paged pool.
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(wsk_emulator)]
extern crate std;

pub mod abi;
#[cfg(wsk_emulator)]
pub mod emulator;
mod error;
pub mod executor;
pub mod kernel;
mod objects;
mod operation;
mod status;
mod sys;
#[cfg(all(windows, feature = "wdk"))]
pub mod wdk;

pub use error::{Error, Result};
pub use executor::{Executor, JoinHandle, ShutdownReport, Spawner, block_on};
pub use kernel::device::DeviceObject;
pub use kernel::event::{Event, EventKind, WaitError};
pub use kernel::irp::Irp;
pub use kernel::irql::{AtMostApc, AtMostDispatch, Irql, IrqlTooHigh, PassiveLevel};
pub use kernel::mdl::Mdl;
pub use kernel::pool::{PoolBox, PoolBuffer, PoolTag};
pub use kernel::timer::{Sleep, Timeout, sleep, timeout};
pub use objects::addr::Family;
pub use objects::names::{Addresses, HostName, MAX_ADDRESSES, MAX_HOST_NAME};
pub use objects::registration::{DEREGISTER_BOUND, Provider, Registration, WskVersion};
pub use objects::socket::datagram::DatagramSocket;
pub use objects::socket::listener::{Listener, MAX_LISTEN_OPTIONS};
pub use objects::socket::options::{SocketOption, SocketOptions};
pub use objects::socket::{
    BoundSocket, CONNECT_EX_MAX_DATA, ConnectEx, ConnectPath, Connection, Socket,
};
pub use objects::tracking::DeregisterReport;
pub use operation::CANCEL_GRACE;
pub use operation::calls::SocketKind;
pub use status::NtStatus;

/// The README's code compiles: its examples are doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}
