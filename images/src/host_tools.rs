//! Finding QEMU and OVMF on the host, and installing them where we can.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const QEMU: &str = "qemu-system-x86_64";

/// OVMF's code (read-only) and variable-store template.
#[derive(Debug, Clone)]
pub struct Ovmf {
    pub code: PathBuf,
    pub vars_template: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{what} is not installed. Install it with:\n    {fix}")]
    Missing { what: &'static str, fix: String },
    #[error("installing {what} failed. Run this yourself and retry:\n    {fix}")]
    InstallFailed { what: &'static str, fix: String },
}

/// Known OVMF locations: Debian/Ubuntu (4M and 2M variants), Fedora, Arch.
const OVMF_CANDIDATES: &[(&str, &str)] = &[
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
    ("/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"),
    ("/usr/share/edk2/x64/OVMF_CODE.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd"),
];

pub fn find_ovmf() -> Option<Ovmf> {
    if let (Some(code), Some(vars)) = (std::env::var_os("BULKHEAD_OVMF_CODE"), std::env::var_os("BULKHEAD_OVMF_VARS")) {
        return Some(Ovmf { code: code.into(), vars_template: vars.into() });
    }
    OVMF_CANDIDATES
        .iter()
        .find(|(code, vars)| Path::new(code).is_file() && Path::new(vars).is_file())
        .map(|(code, vars)| Ovmf { code: code.into(), vars_template: vars.into() })
}

pub fn find_qemu() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(QEMU)).find(|p| p.is_file())
}

const APT_FIX: &str = "sudo apt-get update && sudo apt-get install -y qemu-system-x86 ovmf";

/// Makes sure QEMU and OVMF exist. When they are missing and we are root on a Debian or
/// Ubuntu system, installs them with apt; otherwise says exactly what to run.
pub fn ensure_qemu_and_ovmf() -> Result<(PathBuf, Ovmf), ToolError> {
    if let (Some(qemu), Some(ovmf)) = (find_qemu(), find_ovmf()) {
        return Ok((qemu, ovmf));
    }
    let what = "QEMU or OVMF";
    if is_root() && Path::new("/usr/bin/apt-get").exists() {
        eprintln!("    Installing qemu-system-x86 and ovmf with apt-get (this takes a minute)...");
        let ok = |args: &[&str]| {
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success())
        };
        if !(ok(&["update", "-q"]) && ok(&["install", "-y", "-q", "qemu-system-x86", "ovmf"])) {
            return Err(ToolError::InstallFailed { what, fix: APT_FIX.into() });
        }
    }
    let qemu =
        find_qemu().ok_or_else(|| ToolError::Missing { what: "QEMU (qemu-system-x86_64)", fix: install_hint() })?;
    let ovmf =
        find_ovmf().ok_or_else(|| ToolError::Missing { what: "OVMF (UEFI firmware for QEMU)", fix: install_hint() })?;
    Ok((qemu, ovmf))
}

fn install_hint() -> String {
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    if os.contains("ID=fedora") {
        "sudo dnf install -y qemu-system-x86 edk2-ovmf".into()
    } else if os.contains("ID=arch") {
        "sudo pacman -S qemu-system-x86 edk2-ovmf".into()
    } else {
        format!("{APT_FIX}\n(or point BULKHEAD_OVMF_CODE and BULKHEAD_OVMF_VARS at your OVMF files)")
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}
