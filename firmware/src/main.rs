//! BOOTX64.EFI: reads the Bulkhead manifest, the hypervisor and its modules from the
//! ESP, sets a GOP mode, exits boot services and jumps to the hypervisor. Started from a
//! stick that carries an answer file, it installs Bulkhead on an internal disk instead.
#![cfg_attr(target_os = "uefi", no_std, no_main)]

#[cfg(target_os = "uefi")]
extern crate alloc;

/// Like `uefi::print!`, but a console that refuses the text (a serial port that timed
/// out, a glyph the console lacks) loses the text instead of panicking the loader.
#[cfg(target_os = "uefi")]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::console_write(format_args!($($arg)*))
    };
}

/// Like `uefi::println!`, without the panic (see [`print!`]).
#[cfg(target_os = "uefi")]
macro_rules! println {
    () => {
        $crate::console_write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::console_write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

#[cfg(target_os = "uefi")]
fn console_write(args: core::fmt::Arguments<'_>) {
    use core::fmt::Write;
    // Only called before ExitBootServices: nothing prints after the jump.
    uefi::system::with_stdout(|stdout| {
        let _ = stdout.write_fmt(args);
    });
}

#[cfg(target_os = "uefi")]
mod installer;
#[cfg(target_os = "uefi")]
mod loader;
#[cfg(target_os = "uefi")]
mod policy_state;

#[cfg(not(target_os = "uefi"))]
fn main() {
    eprintln!("BOOTX64.EFI runs under UEFI firmware; build the image with `cargo xtask image`.");
    std::process::exit(2);
}
