//! Kernel objects, one module each, each owning its raw handle privately.
//!
//! Together with [`crate::abi`] and the operation layer, this is where all of
//! the library's `unsafe` code lives.

pub mod device;
pub mod event;
pub(crate) mod idle;
pub(crate) mod image;
pub mod irp;
pub mod irql;
pub mod mdl;
pub mod pool;
pub(crate) mod spinlock;
pub mod time;
pub mod timer;
pub mod version;
