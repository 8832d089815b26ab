//! One Bochs machine under test: the Intel VMX platform. QEMU's TCG has no VMX, so the
//! VT-x backend runs under Bochs 2.7 (`cpu: model=corei7_skylake_x`: EPT, VPID,
//! unrestricted guest, preemption timer) with OVMF.fd booting the same USB image.
//!
//! Bochs has no isa-debug-exit and its exit status means nothing (a power-off is a
//! "panic" with status 1), so the verdict is judged from serial markers only. Serial
//! goes to a file that [`Bochs::expect`] follows; Bochs is killed when dropped; logs
//! stay under `target/test-logs/<scenario>/` unless the test passed.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

/// Lines that mean the run is broken, whatever comes later.
const FATAL_PATTERNS: &[&str] = &["BULKHEAD PANIC", "EXCEPTION", "BULKHEAD LOADER ERROR"];

/// Bochs auto-detects a clean CHS geometry only for multiples of one cylinder
/// (16 heads of 63 sectors of 512 bytes).
const CYLINDER_BYTES: u64 = 16 * 63 * 512;

/// The combined OVMF image (2 MiB); the 4 MiB builds are too large for Bochs's ROM.
const OVMF_CANDIDATES: &[&str] = &["/usr/share/ovmf/OVMF.fd", "/usr/share/OVMF/OVMF.fd", "/usr/share/qemu/OVMF.fd"];
const VGABIOS: &str = "/usr/share/vgabios/vgabios.bin";

/// The CPU model: Skylake-X has EPT (4-level, 2 MiB pages, A/D), VPID, unrestricted
/// guest and the preemption timer; no monitor trap flag.
pub const CPU_MODEL: &str = "corei7_skylake_x";

/// What to install when Bochs is missing (Debian/Ubuntu).
pub const INSTALL_HINT: &str = "apt-get install -y bochs bochsbios vgabios bochs-term ovmf";

pub struct Bochs {
    name: String,
    dir: PathBuf,
    child: Child,
    serial_path: PathBuf,
    cursor: usize,
    started: Instant,
    passed: bool,
    _one_at_a_time: MutexGuard<'static, ()>,
}

/// The bochsrc for `image` with `megs` MiB of RAM, serial to `serial`.
pub fn config(ovmf: &Path, image: &Path, image_bytes: u64, megs: u32, serial: &Path, log: &Path) -> String {
    let cylinders = image_bytes / CYLINDER_BYTES;
    format!(
        "megs: {megs}\n\
         romimage: file={ovmf}, address=0xffe00000\n\
         vgaromimage: file={VGABIOS}\n\
         pci: enabled=1, chipset=i440fx\n\
         cpu: model={CPU_MODEL}, ips=100000000\n\
         display_library: rfb, options=\"timeout=0\"\n\
         com1: enabled=1, mode=file, dev={serial}\n\
         ata0-master: type=disk, path={image}, mode=flat, cylinders={cylinders}, heads=16, spt=63\n\
         boot: disk\n\
         panic: action=fatal\n\
         error: action=report\n\
         log: {log}\n",
        ovmf = ovmf.display(),
        serial = serial.display(),
        image = image.display(),
        log = log.display(),
    )
}

fn find_ovmf() -> Option<PathBuf> {
    OVMF_CANDIDATES.iter().map(PathBuf::from).find(|p| p.is_file())
}

impl Bochs {
    /// Boots `image` (written in its scenario directory, which keeps the logs) with
    /// `megs` MiB of RAM. The image is padded to whole cylinders in place.
    pub fn boot(name: &str, image: &Path, megs: u32) -> Bochs {
        let guard = crate::machine::one_at_a_time();
        let ovmf = find_ovmf().unwrap_or_else(|| panic!("no OVMF.fd found; install it: {INSTALL_HINT}"));
        if Command::new("bochs").arg("--help").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            panic!("bochs is not installed; install it: {INSTALL_HINT}");
        }
        let dir = image.parent().expect("image lives in its scenario directory").to_path_buf();
        // Padding at the end leaves the GPT intact: the backup header stays at the LBA
        // the primary header names.
        let file = std::fs::OpenOptions::new().write(true).open(image).expect("opening the test image");
        let len = file.metadata().expect("image size").len().next_multiple_of(CYLINDER_BYTES);
        file.set_len(len).expect("padding the test image");
        drop(file);
        let serial_path = dir.join("serial.log");
        let rc = dir.join("bochsrc");
        std::fs::write(&rc, config(&ovmf, image, len, megs, &serial_path, &dir.join("bochs.log")))
            .expect("writing bochsrc");
        // Debian's bochs is built with the debugger and stops at its prompt: `c` runs.
        let mut child = Command::new("bochs")
            .args(["-q", "-f"])
            .arg(&rc)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(dir.join("bochs-stdout.log")).expect("creating the Bochs log"))
            .stderr(std::fs::File::create(dir.join("bochs-stderr.log")).expect("creating the Bochs log"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting bochs: {e}"));
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(b"c\n");
        }
        Bochs {
            name: name.into(),
            dir,
            child,
            serial_path,
            cursor: 0,
            started: Instant::now(),
            passed: false,
            _one_at_a_time: guard,
        }
    }

    /// Time since Bochs started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Everything the machine printed on serial so far.
    pub fn serial(&self) -> String {
        std::fs::read(&self.serial_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Waits until `marker` appears after everything matched so far and returns the
    /// line that holds it. Fails at once on a fatal pattern or when Bochs exits.
    pub fn expect(&mut self, marker: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.serial();
            let fresh = &text[self.cursor.min(text.len())..];
            if let Some(pos) = fresh.find(marker)
                && let Some(eol) = fresh[pos..].find('\n')
            {
                let line_start = fresh[..pos].rfind('\n').map_or(0, |i| i + 1);
                let line_end = pos + eol;
                let line = fresh[line_start..line_end].trim_end().to_string();
                self.check_fatal(&fresh[..line_end]);
                self.cursor += line_end;
                return line;
            }
            self.check_fatal(fresh);
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(200));
                let text = self.serial();
                let rest = &text[self.cursor.min(text.len())..];
                if let Some(pos) = rest.find(marker) {
                    let line = rest[pos..].lines().next().unwrap_or("").to_string();
                    self.cursor = text.len();
                    return line;
                }
                self.fail(&format!("Bochs exited ({status}) before {marker:?} appeared"));
            }
            if Instant::now() > deadline {
                self.fail(&format!("timed out after {timeout:?} waiting for {marker:?}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn check_fatal(&self, text: &str) {
        for pattern in FATAL_PATTERNS {
            if text.contains(pattern) {
                self.fail(&format!("serial shows {pattern:?}"));
            }
        }
    }

    /// Marks the scenario as passed: its logs are removed when the machine drops.
    pub fn pass(mut self) {
        self.passed = true;
    }

    /// Fails the test, pointing at the kept logs.
    pub fn fail(&self, why: &str) -> ! {
        let serial = self.serial();
        let tail: Vec<&str> = serial.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
        panic!(
            "[{}] {why}\n--- last serial lines ---\n{}\n--- logs (bochs.log has Bochs's own view of VM entry \
             failures) kept in {} ---",
            self.name,
            tail.join("\n"),
            self.dir.display()
        );
    }
}

impl Drop for Bochs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let keep = std::env::var_os("BULKHEAD_KEEP_LOGS").is_some();
        if self.passed && !keep && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_the_vmx_cpu_the_disk_geometry_and_a_file_serial() {
        let rc = config(
            Path::new("/o/OVMF.fd"),
            Path::new("/d/usb.img"),
            40 * CYLINDER_BYTES,
            256,
            Path::new("/d/serial.log"),
            Path::new("/d/bochs.log"),
        );
        assert!(rc.contains("cpu: model=corei7_skylake_x"));
        assert!(rc.contains("romimage: file=/o/OVMF.fd, address=0xffe00000"));
        assert!(rc.contains("path=/d/usb.img, mode=flat, cylinders=40, heads=16, spt=63"));
        assert!(rc.contains("com1: enabled=1, mode=file, dev=/d/serial.log"));
        assert!(rc.contains("panic: action=fatal"));
        assert!(rc.contains("megs: 256"));
    }
}
