//! `RtlGetVersion`: the build the machine's [`ProviderConfig`] names.
//!
//! [`ProviderConfig`]: super::ProviderConfig

use super::{Kernel, irql};
use crate::abi::{NTSTATUS, RTL_OSVERSIONINFOW, STATUS_SUCCESS};

/// `VER_PLATFORM_WIN32_NT` (winnt.h): every Windows the library targets.
const PLATFORM_NT: u32 = 2;

/// `RtlGetVersion`: the emulated machine's OS build.
///
/// # Safety
/// `info` points to a writable `RTL_OSVERSIONINFOW`.
pub unsafe fn get(info: *mut RTL_OSVERSIONINFOW) -> NTSTATUS {
    irql::require(const { irql::rule_of("RtlGetVersion") });
    let build = Kernel::current().inner().provider.config.os_build;
    let (major, minor) = major_minor(build);
    // SAFETY: the caller's structure, per the contract.
    let size = unsafe { (*info).dwOSVersionInfoSize };
    let filled = RTL_OSVERSIONINFOW {
        dwOSVersionInfoSize: size,
        dwMajorVersion: major,
        dwMinorVersion: minor,
        dwBuildNumber: build,
        dwPlatformId: PLATFORM_NT,
        szCSDVersion: [0; 128],
    };
    // SAFETY: as above.
    unsafe { info.write(filled) };
    STATUS_SUCCESS
}

/// The version number that went with a build.
const fn major_minor(build: u32) -> (u32, u32) {
    match build {
        10_240.. => (10, 0),
        9_600.. => (6, 3),
        9_200.. => (6, 2),
        7_600.. => (6, 1),
        _ => (6, 0),
    }
}
