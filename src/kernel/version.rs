//! The running Windows version, read once with `RtlGetVersion` at
//! `PASSIVE_LEVEL` and kept for code at any IRQL.
//!
//! The library decides one thing from it: whether the socket dispatch
//! tables hold `WskConnectEx`. Windows 10 1703 (build 15063) added that
//! entry; before it the connection and stream tables end just ahead of it,
//! so reading it reads past the provider's table.

use core::sync::atomic::{AtomicU32, Ordering};

use super::irql::PassiveLevel;
use crate::abi::{RTL_OSVERSIONINFOW, STATUS_SUCCESS, ULONG};
use crate::sys;

/// The first build whose socket dispatch tables hold `WskConnectEx`:
/// Windows 10 1703.
///
/// # IRQL
/// Any.
pub const CONNECT_EX_FIRST_BUILD: u32 = 15_063;

/// The Windows build number, e.g. 19045 for Windows 10 22H2.
///
/// The first call reads it (`RtlGetVersion`'s `dwBuildNumber`) and caches
/// it; later calls, and [`cached_os_build`] at any IRQL, return the cached
/// value. Registration calls it, so the library knows the version before the
/// first socket exists. Should `RtlGetVersion` ever fail (it is documented
/// to always succeed), the build is taken as 0, older than any Windows, so
/// nothing newer is assumed.
///
/// # IRQL
/// `PASSIVE_LEVEL` (the token proves it), as `RtlGetVersion` requires.
#[must_use]
pub fn os_build(_irql: &PassiveLevel) -> u32 {
    if let Some(build) = cached_os_build() {
        return build;
    }
    let build = read_build();
    with_cache(|cache| cache.0.store(build, Ordering::Relaxed));
    build
}

/// The build [`os_build`] read, or `None` before it first ran.
///
/// # IRQL
/// Any.
#[must_use]
pub fn cached_os_build() -> Option<u32> {
    let build = with_cache(|cache| cache.0.load(Ordering::Relaxed));
    (build != BuildCache::UNKNOWN).then_some(build)
}

/// Whether the socket dispatch tables hold `WskConnectEx`, so that the
/// entry may be read. Until [`os_build`] has run the answer is yes, as the
/// library assumed before it read the version.
pub(crate) fn connect_ex_table_present() -> bool {
    cached_os_build().is_none_or(|build| build >= CONNECT_EX_FIRST_BUILD)
}

fn read_build() -> u32 {
    const SIZE: ULONG = {
        let size = core::mem::size_of::<RTL_OSVERSIONINFOW>();
        assert!(size <= u32::MAX as usize);
        #[allow(clippy::cast_possible_truncation, reason = "checked just above")]
        let size = size as ULONG;
        size
    };
    let mut info = RTL_OSVERSIONINFOW {
        dwOSVersionInfoSize: SIZE,
        dwMajorVersion: 0,
        dwMinorVersion: 0,
        dwBuildNumber: 0,
        dwPlatformId: 0,
        szCSDVersion: [0; 128],
    };
    // SAFETY: a writable structure whose size field names its type;
    // PASSIVE_LEVEL, proved by the caller's token.
    let status = unsafe { sys::RtlGetVersion(&raw mut info) };
    if status == STATUS_SUCCESS {
        info.dwBuildNumber
    } else {
        0
    }
}

/// Where [`os_build`] keeps what it read: in the driver
/// [image](super::image).
pub(crate) struct BuildCache(AtomicU32);

impl BuildCache {
    /// Nothing read yet.
    const UNKNOWN: u32 = u32::MAX;

    /// An empty cache.
    pub(crate) const fn new() -> Self {
        Self(AtomicU32::new(Self::UNKNOWN))
    }
}

/// The cache is part of the driver image (one per emulated machine).
fn with_cache<R>(f: impl FnOnce(&BuildCache) -> R) -> R {
    f(&super::image::current().os_build)
}
