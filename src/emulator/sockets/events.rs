//! Receive and disconnect events on connection sockets
//! (`SO_WSK_EVENT_CALLBACK`), as Microsoft documents them.
//!
//! The client gives its `SocketContext` and `WSK_CLIENT_CONNECTION_DISPATCH`
//! when the socket is created (`WskSocket`, `WskSocketConnect`, `WskAccept`)
//! and turns the events on once connected, with `WskControlSocket` and no
//! IRP. From then on, whenever no `WskReceive` is parked, the poller thread
//! peeks at what the host socket holds and indicates it at `DISPATCH_LEVEL`
//! as a list of `WSK_DATA_INDICATION`s (segments of at most 1,460 bytes,
//! each described by a chain of two MDLs from an offset into the first, the
//! second MDL locked but not mapped, as the stack's buffers may be). What the
//! client's `WskReceiveEvent` answers decides what happens to the bytes:
//!
//! - `STATUS_SUCCESS`: `*BytesAccepted` bytes are taken from the host
//!   socket; if not all, no event comes until a `WskReceive` is posted.
//! - `STATUS_PENDING`: all are taken; the client holds the list until it
//!   gives it back with `WskRelease` (the emulator records it: a list
//!   released twice, one never indicated, or any still held when the socket
//!   is closed bugchecks, as Microsoft's `WskRelease` page requires).
//! - `STATUS_DATA_NOT_ACCEPTED`: nothing is taken (the host keeps the
//!   bytes) and no event comes until a `WskReceive` is posted, which reads
//!   them.
//!
//! The peer's end (`WskDisconnectEvent`, flags 0) and a reset
//! (`WSK_FLAG_ABORTIVE`) are told once. A receive posted while an event is
//! being delivered waits behind it, so bytes keep their order.

use core::ffi::c_void;
use core::ptr;
use std::boxed::Box;
use std::vec;
use std::vec::Vec;

use rustc_hash::FxHashMap;

use crate::abi::{
    GUID, MDL, MDL_PAGES_LOCKED, MDL_SOURCE_IS_NONPAGED_POOL, NPI_WSK_INTERFACE_ID, NPIID,
    NTSTATUS, SIZE_T, STATUS_DATA_NOT_ACCEPTED, STATUS_INVALID_PARAMETER, STATUS_PENDING,
    STATUS_SUCCESS, ULONG, WSK_BUF, WSK_CLIENT_CONNECTION_DISPATCH, WSK_DATA_INDICATION,
    WSK_EVENT_CALLBACK_CONTROL, WSK_EVENT_DISABLE, WSK_EVENT_DISCONNECT, WSK_EVENT_RECEIVE,
};
use crate::emulator::verifier::bugcheck;

/// The most bytes one receive event indicates.
pub const INDICATION_MAX: usize = 16 * 1024;
/// Bytes per `WSK_DATA_INDICATION` (a TCP segment's payload).
const SEGMENT: usize = 1460;
/// Bytes before each segment's data in its first MDL (`WSK_BUF.Offset`).
const OFFSET: usize = 7;

/// One segment: its list entry, its two MDLs and the memory they describe.
struct Segment {
    entry: WSK_DATA_INDICATION,
    mdls: [MDL; 2],
    memory: Box<[u8]>,
}

/// A list of segments indicated together; its head's address names it.
pub struct Indication {
    segments: Vec<Segment>,
}

// SAFETY: the list points only into its own vector's buffer, which does
// not move; the emulator touches it under the socket's lock, the client
// between the event and `WskRelease`.
#[allow(clippy::non_send_fields_in_send_ty, reason = "see the SAFETY comment")]
unsafe impl Send for Indication {}

const fn empty_mdl() -> MDL {
    MDL {
        Next: ptr::null_mut(),
        Size: 0,
        MdlFlags: 0,
        AllocationProcessorNumber: 0,
        Reserved: 0,
        Process: ptr::null_mut(),
        MappedSystemVa: ptr::null_mut(),
        StartVa: ptr::null_mut(),
        ByteCount: 0,
        ByteOffset: 0,
    }
}

/// Describes `length` bytes at `start` (page-split as `IoAllocateMdl` does);
/// mapped when `mapped`, otherwise only locked.
fn describe(mdl: &mut MDL, start: *mut u8, length: usize, mapped: bool) {
    let address = start as usize;
    mdl.Size = i16::try_from(core::mem::size_of::<MDL>()).expect("an MDL header fits i16");
    mdl.StartVa = (address & !0xfff) as *mut c_void;
    mdl.ByteOffset = ULONG::try_from(address & 0xfff).expect("below a page");
    mdl.ByteCount = ULONG::try_from(length).expect("a segment fits u32");
    if mapped {
        mdl.MdlFlags = MDL_SOURCE_IS_NONPAGED_POOL;
        mdl.MappedSystemVa = start.cast();
    } else {
        mdl.MdlFlags = MDL_PAGES_LOCKED;
    }
}

impl Indication {
    /// A list describing `data`, in segments.
    pub fn new(data: &[u8]) -> Self {
        // Never resized once built: the entries' and MDLs' addresses stay.
        let mut segments: Vec<Segment> = data
            .chunks(SEGMENT)
            .map(|chunk| {
                let mut memory = vec![0_u8; OFFSET + chunk.len()].into_boxed_slice();
                memory[OFFSET..].copy_from_slice(chunk);
                Segment {
                    entry: WSK_DATA_INDICATION {
                        Next: ptr::null_mut(),
                        Buffer: WSK_BUF {
                            Mdl: ptr::null_mut(),
                            Offset: ULONG::try_from(OFFSET).expect("small"),
                            Length: chunk.len(),
                        },
                    },
                    mdls: [empty_mdl(), empty_mdl()],
                    memory,
                }
            })
            .collect();
        for segment in &mut segments {
            let Segment {
                entry,
                mdls,
                memory,
            } = segment;
            let base = memory.as_mut_ptr();
            // The first MDL: the offset and the first half; the second: the
            // rest, locked but unmapped.
            let first = OFFSET + (memory.len() - OFFSET).div_ceil(2);
            let [head, tail] = mdls;
            describe(head, base, first, true);
            if first < memory.len() {
                describe(tail, base.wrapping_add(first), memory.len() - first, false);
                head.Next = ptr::from_mut(tail);
            }
            entry.Buffer.Mdl = ptr::from_mut(head);
        }
        for index in 1..segments.len() {
            let next = ptr::from_mut(&mut segments[index].entry);
            segments[index - 1].entry.Next = next;
        }
        Self { segments }
    }

    /// The list's head, as indicated.
    pub fn head(&mut self) -> *mut WSK_DATA_INDICATION {
        self.segments
            .first_mut()
            .map_or(ptr::null_mut(), |segment| ptr::from_mut(&mut segment.entry))
    }
}

/// A socket's event callbacks: what the client gave and turned on, and
/// what it holds.
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent facts about one socket's events"
)]
#[derive(Default)]
pub struct Events {
    /// `SocketContext` and `Dispatch` given at creation (0: none).
    context: usize,
    dispatch: usize,
    /// The events turned on.
    mask: ULONG,
    /// No receive event until a `WskReceive` is posted.
    pub throttled: bool,
    /// An event is being delivered (outside the socket's lock).
    pub indicating: bool,
    /// A `WskReceive` was posted while a receive event was delivered: the
    /// event's answer does not throttle what that receive resumed.
    pub posted_during: bool,
    /// The disconnect event was delivered.
    told_end: bool,
    /// Lists the client holds (`STATUS_PENDING`), by head address.
    retained: FxHashMap<usize, Indication>,
    /// Where the host's bytes are peeked into, kept from one event to the
    /// next (the poller looks whenever the socket is ready).
    scratch: Vec<u8>,
}

/// What the poller should deliver next.
pub enum Next {
    Receive,
    Disconnect { abortive: bool },
}

impl Events {
    /// The callbacks a client gave when it created the socket.
    pub fn given(context: *mut c_void, dispatch: *const WSK_CLIENT_CONNECTION_DISPATCH) -> Self {
        Self {
            context: context as usize,
            dispatch: dispatch as usize,
            ..Self::default()
        }
    }

    const fn table(&self) -> Option<&WSK_CLIENT_CONNECTION_DISPATCH> {
        // SAFETY: the client's table, which it keeps valid while the socket
        // is open (WSK contract); NULL when none was given.
        unsafe { (self.dispatch as *const WSK_CLIENT_CONNECTION_DISPATCH).as_ref() }
    }

    pub const fn receives(&self) -> bool {
        self.mask & WSK_EVENT_RECEIVE != 0
    }

    /// Which event is due: a receive when data may be there, the end once.
    pub const fn next(&self, ended: bool, reset: bool) -> Option<Next> {
        if self.indicating {
            return None;
        }
        if ended || reset {
            if self.mask & WSK_EVENT_DISCONNECT != 0 && !self.told_end {
                return Some(Next::Disconnect { abortive: reset });
            }
            return None;
        }
        if self.receives() && !self.throttled {
            return Some(Next::Receive);
        }
        None
    }

    /// `SO_WSK_EVENT_CALLBACK`: turns events on (or off with
    /// `WSK_EVENT_DISABLE`). Only the receive and disconnect events of a
    /// connection socket, after its connect, with callbacks given.
    ///
    /// # Safety
    /// `input` is NULL or readable for `size` bytes.
    pub unsafe fn control(
        &mut self,
        size: SIZE_T,
        input: *const c_void,
        connected: bool,
    ) -> Result<(), NTSTATUS> {
        if input.is_null() || size < core::mem::size_of::<WSK_EVENT_CALLBACK_CONTROL>() {
            return Err(STATUS_INVALID_PARAMETER);
        }
        // SAFETY: readable for a control block (checked; the contract).
        let control = unsafe { input.cast::<WSK_EVENT_CALLBACK_CONTROL>().read_unaligned() };
        // SAFETY: the client's NPI identifier, NULL or readable.
        let npi: Option<NPIID> = unsafe { control.NpiId.as_ref() }.copied();
        if npi != Some::<GUID>(NPI_WSK_INTERFACE_ID) {
            return Err(STATUS_INVALID_PARAMETER);
        }
        let events = control.EventMask & !WSK_EVENT_DISABLE;
        if events == 0 || events & !(WSK_EVENT_RECEIVE | WSK_EVENT_DISCONNECT) != 0 {
            return Err(STATUS_INVALID_PARAMETER);
        }
        if control.EventMask & WSK_EVENT_DISABLE != 0 {
            self.mask &= !events;
            return Ok(());
        }
        // Microsoft: on a connection socket, only once it is connected.
        if !connected {
            return Err(STATUS_INVALID_PARAMETER);
        }
        let table = self.table().ok_or(STATUS_INVALID_PARAMETER)?;
        if (events & WSK_EVENT_RECEIVE != 0 && table.WskReceiveEvent.is_none())
            || (events & WSK_EVENT_DISCONNECT != 0 && table.WskDisconnectEvent.is_none())
        {
            return Err(STATUS_INVALID_PARAMETER);
        }
        self.mask |= events;
        Ok(())
    }

    /// Delivers `indication` (outside the socket's lock, at
    /// `DISPATCH_LEVEL` on the poller thread): the client's answer and how
    /// many bytes it took. A list it keeps is recorded before the call, so
    /// a `WskRelease` from inside the callback finds it.
    pub fn deliver_receive(
        context: usize,
        dispatch: usize,
        head: *mut WSK_DATA_INDICATION,
        length: usize,
    ) -> (NTSTATUS, usize) {
        // SAFETY: the client's table (see `table`).
        let table = unsafe { &*(dispatch as *const WSK_CLIENT_CONNECTION_DISPATCH) };
        let callback = table.WskReceiveEvent.expect("checked when turned on");
        let mut accepted: SIZE_T = length;
        let status = crate::emulator::irql::run_as_callback("WskReceiveEvent", || {
            // SAFETY: the client's callback with its context, a live list
            // of `length` bytes and a writable count.
            unsafe {
                callback(
                    context as *mut c_void,
                    crate::abi::WSK_FLAG_AT_DISPATCH_LEVEL,
                    head,
                    length,
                    &raw mut accepted,
                )
            }
        });
        match status {
            STATUS_SUCCESS if accepted <= length => (status, accepted),
            STATUS_PENDING => (status, length),
            STATUS_DATA_NOT_ACCEPTED => (status, 0),
            _ => bugcheck(
                "DRIVER_VERIFIER_DETECTED_VIOLATION",
                format_args!(
                    "WskReceiveEvent returned {status:#x} with {accepted} of {length} byte(s) accepted (allowed: STATUS_SUCCESS, STATUS_PENDING, STATUS_DATA_NOT_ACCEPTED)"
                ),
            ),
        }
    }

    /// The callback's target for a delivery: context and table.
    pub const fn target(&self) -> (usize, usize) {
        (self.context, self.dispatch)
    }

    /// `WskDisconnectEvent`, once (outside the socket's lock).
    pub fn deliver_end(context: usize, dispatch: usize, abortive: bool) {
        // SAFETY: the client's table (see `table`).
        let table = unsafe { &*(dispatch as *const WSK_CLIENT_CONNECTION_DISPATCH) };
        let callback = table.WskDisconnectEvent.expect("checked when turned on");
        let flags = crate::abi::WSK_FLAG_AT_DISPATCH_LEVEL
            | if abortive {
                crate::abi::WSK_FLAG_ABORTIVE
            } else {
                0
            };
        let status = crate::emulator::irql::run_as_callback("WskDisconnectEvent", || {
            // SAFETY: the client's callback with its context.
            unsafe { callback(context as *mut c_void, flags) }
        });
        if status != STATUS_SUCCESS {
            bugcheck(
                "DRIVER_VERIFIER_DETECTED_VIOLATION",
                format_args!(
                    "WskDisconnectEvent returned {status:#x} (Microsoft: it must return STATUS_SUCCESS)"
                ),
            );
        }
    }

    pub const fn told_end(&mut self) {
        self.told_end = true;
    }

    /// Peeks at what `host` holds (up to [`INDICATION_MAX`] bytes) into
    /// the socket's scratch buffer: how many bytes.
    pub fn peek(&mut self, host: &socket2::Socket) -> std::io::Result<usize> {
        self.scratch.resize(INDICATION_MAX, 0);
        super::transfer::peek(host, &mut self.scratch)
    }

    /// Records a list of the first `length` bytes peeked, which the client
    /// may keep.
    pub fn hold(&mut self, length: usize) -> *mut WSK_DATA_INDICATION {
        let mut indication = Indication::new(&self.scratch[..length]);
        let head = indication.head();
        self.retained.insert(head as usize, indication);
        head
    }

    /// The client's answer came: a list it did not keep is freed (then
    /// `true`).
    pub fn settle(&mut self, head: *mut WSK_DATA_INDICATION, status: NTSTATUS) -> bool {
        status != STATUS_PENDING && self.retained.remove(&(head as usize)).is_some()
    }

    /// `WskRelease`.
    pub fn release(&mut self, head: *mut WSK_DATA_INDICATION, socket: usize) {
        if self.retained.remove(&(head as usize)).is_none() {
            bugcheck(
                "DRIVER_VERIFIER_DETECTED_VIOLATION",
                format_args!(
                    "WskRelease({socket:#x}, {head:p}): not a list this socket indicated and the client kept (released twice?)"
                ),
            );
        }
    }

    /// Checked by `WskCloseSocket`: Microsoft's `WskRelease` page requires
    /// every kept list to be released before the socket is closed.
    pub fn check_closing(&self, socket: usize) {
        if !self.retained.is_empty() {
            bugcheck(
                "DRIVER_VERIFIER_DETECTED_VIOLATION",
                format_args!(
                    "WskCloseSocket({socket:#x}) with {} data indication list(s) not released (WskRelease them first)",
                    self.retained.len()
                ),
            );
        }
    }
}
