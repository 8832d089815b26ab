//! Bochs as the Intel VMX machine (QEMU's TCG has no VMX): the bochsrc for a USB image,
//! the firmware it needs, and the command line. Used by the VMX integration test
//! (`tests/src/bochs.rs`) and `cargo xtask bench exits --bochs`.
//!
//! Bochs 2.7 `corei7_skylake_x` has EPT (4-level, 2 MiB pages, A/D), VPID, unrestricted
//! guest and the preemption timer; OVMF.fd (the 2 MiB build: the 4 MiB ones are too
//! large for Bochs's ROM) boots `\EFI\BOOT\BOOTX64.EFI` from an IDE disk in about 20 s.
//! Debian's bochs is built with its debugger, which stops at a prompt: `-rc` with a file
//! holding `c` runs on. Bochs's exit status means nothing (a power-off is a "panic");
//! results are read from serial.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Bochs auto-detects a clean CHS geometry only for whole cylinders (16 heads of 63
/// sectors of 512 bytes).
pub const CYLINDER_BYTES: u64 = 16 * 63 * 512;

/// The combined OVMF image.
const OVMF_CANDIDATES: &[&str] = &["/usr/share/ovmf/OVMF.fd", "/usr/share/OVMF/OVMF.fd", "/usr/share/qemu/OVMF.fd"];
const VGABIOS: &str = "/usr/share/vgabios/vgabios.bin";

/// The CPU model: an Intel CPU with VMX, EPT, VPID and unrestricted guest; no monitor
/// trap flag (`tigerlake` has it).
pub const CPU_MODEL: &str = "corei7_skylake_x";

/// What to install when Bochs is missing (Debian/Ubuntu).
pub const INSTALL_HINT: &str = "apt-get install -y bochs bochsbios vgabios bochs-term ovmf";

/// Where COM1 goes.
#[derive(Debug, Clone)]
pub enum BochsSerial {
    /// Output only, into a file.
    File(PathBuf),
    /// Output only, to Bochs's own stdout (a pipe the caller reads).
    Stdout,
    /// Both ways over TCP: Bochs connects to a listener the caller holds at this port
    /// on 127.0.0.1 (`socket-client` mode; the caller picks a free port by binding
    /// port 0, so nothing is fixed and nothing collides).
    Connect(u16),
}

/// The machine's display and keyboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BochsDisplay {
    /// No VNC client: Bochs starts at once.
    Headless,
    /// Bochs serves its display (VGA text) and PS/2 keyboard over VNC (its `rfb`
    /// library: RFB 3.3 on the first free port from 5900, named in `bochs.log`) and
    /// waits up to `wait_s` seconds for a client before it starts.
    ///
    /// Neither has a PCI VGA, so OVMF offers no GOP and the hypervisor runs without a
    /// screen: OVMF's QemuVideoDxe does not bind Bochs's `pcivga` (measured: the loader
    /// finds no GOP), and Bochs 2.7's `rfb` shows only 8-bit modes (its
    /// `dimension_update` panics on any other depth), so a 32-bit framebuffer could
    /// not be shown over VNC anyway.
    Vnc { wait_s: u32 },
}

/// The bochsrc for `image` (`image_bytes` long, whole cylinders) with `megs` MiB of RAM.
pub fn config(
    ovmf: &Path,
    image: &Path,
    image_bytes: u64,
    megs: u32,
    serial: &BochsSerial,
    display: BochsDisplay,
    log: &Path,
) -> String {
    let cylinders = image_bytes / CYLINDER_BYTES;
    let com1 = match serial {
        BochsSerial::File(path) => format!("mode=file, dev={}", path.display()),
        BochsSerial::Stdout => "mode=file, dev=/dev/stdout".into(),
        BochsSerial::Connect(port) => format!("mode=socket-client, dev=127.0.0.1:{port}"),
    };
    let wait_s = match display {
        BochsDisplay::Headless => 0,
        BochsDisplay::Vnc { wait_s } => wait_s,
    };
    format!(
        "megs: {megs}\n\
         romimage: file={ovmf}, address=0xffe00000\n\
         vgaromimage: file={VGABIOS}\n\
         pci: enabled=1, chipset=i440fx\n\
         cpu: model={CPU_MODEL}, ips=100000000\n\
         display_library: rfb, options=\"timeout={wait_s}\"\n\
         com1: enabled=1, {com1}\n\
         ata0-master: type=disk, path={image}, mode=flat, cylinders={cylinders}, heads=16, spt=63\n\
         boot: disk\n\
         panic: action=fatal\n\
         error: action=report\n\
         log: {log}\n",
        ovmf = ovmf.display(),
        image = image.display(),
        log = log.display(),
    )
}

/// The VNC port Bochs's `rfb` library listens on, from its `bochs.log` text.
pub fn vnc_port(log: &str) -> Option<u16> {
    log.lines().find_map(|l| l.split("listening for connections on port ").nth(1)?.trim().parse().ok())
}

pub fn find_ovmf() -> Option<PathBuf> {
    OVMF_CANDIDATES.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Whether the `bochs` command runs.
pub fn installed() -> bool {
    Command::new("bochs")
        .arg("--help")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// Pads `image` to whole cylinders in place and returns its length. Padding at the
/// end leaves a GPT intact: the backup header stays at the LBA the primary names.
pub fn pad_image(image: &Path) -> std::io::Result<u64> {
    let file = std::fs::OpenOptions::new().write(true).open(image)?;
    let len = file.metadata()?.len().next_multiple_of(CYLINDER_BYTES);
    file.set_len(len)?;
    Ok(len)
}

/// Writes `dir/bochsrc` and `dir/bochs-continue` for `image` and returns the command
/// that boots it (run it in `dir`).
pub fn prepare(
    dir: &Path,
    image: &Path,
    megs: u32,
    serial: &BochsSerial,
    display: BochsDisplay,
) -> Result<Command, String> {
    let ovmf = find_ovmf().ok_or_else(|| format!("no OVMF.fd found; install it: {INSTALL_HINT}"))?;
    if !installed() {
        return Err(format!("bochs is not installed; install it: {INSTALL_HINT}"));
    }
    let len = pad_image(image).map_err(|e| format!("padding {}: {e}", image.display()))?;
    // Bochs locks a disk image with `<image>.lock` and leaves it behind when it is
    // killed (as every run here ends); a stale one would make the next boot panic.
    let mut lock = image.as_os_str().to_owned();
    lock.push(".lock");
    let _ = std::fs::remove_file(PathBuf::from(lock));
    let rc = dir.join("bochsrc");
    let cont = dir.join("bochs-continue");
    std::fs::write(&rc, config(&ovmf, image, len, megs, serial, display, &dir.join("bochs.log")))
        .map_err(|e| format!("writing {}: {e}", rc.display()))?;
    std::fs::write(&cont, "c\n").map_err(|e| format!("writing {}: {e}", cont.display()))?;
    let mut command = Command::new("bochs");
    command.args(["-q", "-f"]).arg(&rc).arg("-rc").arg(&cont).current_dir(dir);
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_the_vmx_cpu_the_disk_geometry_and_the_serial_sink() {
        let rc = config(
            Path::new("/o/OVMF.fd"),
            Path::new("/d/usb.img"),
            40 * CYLINDER_BYTES,
            256,
            &BochsSerial::File("/d/serial.log".into()),
            BochsDisplay::Headless,
            Path::new("/d/bochs.log"),
        );
        assert!(rc.contains("cpu: model=corei7_skylake_x"));
        assert!(rc.contains("romimage: file=/o/OVMF.fd, address=0xffe00000"));
        assert!(rc.contains("path=/d/usb.img, mode=flat, cylinders=40, heads=16, spt=63"));
        assert!(rc.contains("com1: enabled=1, mode=file, dev=/d/serial.log"));
        assert!(rc.contains("panic: action=fatal"));
        assert!(rc.contains("megs: 256"));
        assert!(rc.contains("options=\"timeout=0\""), "headless: no wait");
        let piped = config(
            Path::new("/o"),
            Path::new("/i"),
            0,
            1,
            &BochsSerial::Stdout,
            BochsDisplay::Headless,
            Path::new("/l"),
        );
        assert!(piped.contains("dev=/dev/stdout"));
    }

    #[test]
    fn a_vnc_client_makes_bochs_wait_and_serial_can_connect_out() {
        let rc = config(
            Path::new("/o"),
            Path::new("/i"),
            0,
            1,
            &BochsSerial::Connect(40123),
            BochsDisplay::Vnc { wait_s: 30 },
            Path::new("/l"),
        );
        assert!(rc.contains("com1: enabled=1, mode=socket-client, dev=127.0.0.1:40123\n"), "{rc}");
        assert!(rc.contains("display_library: rfb, options=\"timeout=30\"\n"), "{rc}");
        assert!(rc.contains("pci: enabled=1, chipset=i440fx\n"), "no PCI VGA: {rc}");
    }

    #[test]
    fn the_vnc_port_is_read_from_the_log() {
        let log = "00000000000i[RFB   ] Trying port 5900\n00000000000i[RFB   ] Could not bind socket.\n\
                   00000000000i[RFB   ] Trying port 5901\n00000000000i[RFB   ] listening for connections on port 5901\n";
        assert_eq!(vnc_port(log), Some(5901));
        assert_eq!(vnc_port("00000000000i[RFB   ] Trying port 5900\n"), None);
    }

    #[test]
    fn padding_makes_whole_cylinders_and_keeps_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("usb.img");
        std::fs::write(&image, b"GPT data").unwrap();
        assert_eq!(pad_image(&image).unwrap(), CYLINDER_BYTES);
        let bytes = std::fs::read(&image).unwrap();
        assert_eq!((bytes.len() as u64, &bytes[..8]), (CYLINDER_BYTES, &b"GPT data"[..]));
        // Already whole: unchanged.
        assert_eq!(pad_image(&image).unwrap(), CYLINDER_BYTES);
    }
}
