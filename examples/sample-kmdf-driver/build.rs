//! Configures the driver's link with wdk-build: the WDK's library paths,
//! the KMDF libraries and entry point (`FxDriverEntry`, which calls
//! `DriverEntry`), and the kernel-image linker arguments. Fails on a host
//! that is not Windows, or without the WDK.

fn main() -> Result<(), wdk_build::ConfigError> {
    wdk_build::configure_wdk_binary_build()
}
