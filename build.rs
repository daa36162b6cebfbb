//! Chooses the backend: the Windows kernel (imports from `ntoskrnl.exe` and
//! `netio.sys`) or the host emulator, and wires up windows-drivers-rs when the
//! `wdk` feature is enabled on a Windows host.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(wsk_emulator)");
    println!("cargo::rerun-if-changed=build.rs");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let emulator = std::env::var_os("CARGO_FEATURE_EMULATOR").is_some();
    if target_os != "windows" || emulator {
        println!("cargo::rustc-cfg=wsk_emulator");
    }
    wdk_interop();
}

#[cfg(all(windows, feature = "wdk"))]
fn wdk_interop() {
    // The library links nothing itself; wdk-build records the WDK
    // configuration for crates (like wdk-sys) that read it.
    if let Err(error) = wdk_build::configure_wdk_library_build() {
        panic!("wdk-build could not configure the WDK: {error}");
    }
}

#[cfg(not(all(windows, feature = "wdk")))]
const fn wdk_interop() {}
