//! Building the bare-metal crates for their targets. A plain `cargo build` on the host
//! only builds stubs of these (per-package targets are unstable), so the image builder
//! invokes cargo once per target.

use std::path::PathBuf;
use std::process::Command;

use crate::layout;

pub const HYPERVISOR_TARGET: &str = "x86_64-unknown-none";
pub const LOADER_TARGET: &str = "x86_64-unknown-uefi";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("could not start cargo ({0}); is the Rust toolchain installed? See README.md")]
    Spawn(std::io::Error),
    #[error(
        "building {package} for {target} failed (see the compiler output above).\n\
         If the error says the target is not installed, run: rustup target add {target}"
    )]
    Failed { package: &'static str, target: &'static str },
}

/// Paths of the freshly built bare-metal binaries.
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub hypervisor_elf: PathBuf,
    pub loader_efi: PathBuf,
    /// The networking service VM's kernel (boot module `service-vm`).
    pub service_vm_elf: PathBuf,
}

/// The boot module name of the networking service VM's kernel.
pub const SERVICE_VM_MODULE: &str = "service-vm";

/// The self-test payloads (tiny guest kernels in `tests/payloads`).
pub const PAYLOADS: &[&str] = &[
    "checks",
    "triple-fault",
    "attack",
    "dma-attack",
    "hostile",
    "hostile-flood",
    "multiboot",
    "net-attack",
    "blk-attack",
];

/// Builds the self-test payloads and returns the directory holding their ELF files.
pub fn build_payloads() -> Result<PathBuf, BuildError> {
    build_package("payloads", HYPERVISOR_TARGET)?;
    Ok(layout::target_dir().join(HYPERVISOR_TARGET).join("release"))
}

/// Builds the hypervisor, the networking service VM's kernel and the UEFI loader
/// (release profile: debug builds are far too slow under emulation).
pub fn build_bare_metal() -> Result<Artifacts, BuildError> {
    build_package("hypervisor", HYPERVISOR_TARGET)?;
    build_package("service-vm", HYPERVISOR_TARGET)?;
    build_package("firmware", LOADER_TARGET)?;
    let target = layout::target_dir();
    Ok(Artifacts {
        hypervisor_elf: target.join(HYPERVISOR_TARGET).join("release").join("hypervisor"),
        loader_efi: target.join(LOADER_TARGET).join("release").join("firmware.efi"),
        service_vm_elf: target.join(HYPERVISOR_TARGET).join("release").join("service-vm"),
    })
}

fn build_package(package: &'static str, target: &'static str) -> Result<(), BuildError> {
    eprintln!("    Building {package} for {target}");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(layout::workspace_root())
        .args(["build", "--release", "--package", package, "--target", target])
        // RUSTFLAGS would replace the per-target flags in .cargo/config.toml.
        .env_remove("RUSTFLAGS")
        .status()
        .map_err(BuildError::Spawn)?;
    if status.success() { Ok(()) } else { Err(BuildError::Failed { package, target }) }
}
