//! Where things live: in the repository, under `target/`, and on the ESP.

use std::path::{Path, PathBuf};

/// Files on the EFI System Partition. The firmware boots the fallback path.
pub const ESP_LOADER: &str = "/EFI/BOOT/BOOTX64.EFI";
pub const ESP_HYPERVISOR: &str = "/bulkhead/hypervisor.elf";
pub const ESP_MANIFEST: &str = "/bulkhead/manifest.txt";
pub const ESP_MODULE_DIR: &str = "/bulkhead/modules";

/// The workspace root (the directory holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    // images/ sits directly under the root.
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("images/ has a parent directory").to_path_buf()
}

/// Cargo's target directory, honouring CARGO_TARGET_DIR.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() { dir } else { workspace_root().join(dir) }
        }
        None => workspace_root().join("target"),
    }
}

/// Where `cargo xtask image` writes the USB image.
pub fn default_image_path() -> PathBuf {
    target_dir().join("bulkhead-usb.img")
}
