//! One Bochs machine under test: the Intel VMX platform (`images::bochs` has the
//! configuration). QEMU's TCG has no VMX, so the VT-x backend runs under Bochs with
//! OVMF.fd booting the same USB image.
//!
//! Bochs has no isa-debug-exit and its exit status means nothing (a power-off is a
//! "panic" with status 1), so the verdict is judged from serial markers only. Serial
//! goes to a file that [`Bochs::expect`] follows; Bochs is killed when dropped; logs
//! stay under `target/test-logs/<scenario>/` unless the test passed.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use images::bochs;

/// Lines that mean the run is broken, whatever comes later.
const FATAL_PATTERNS: &[&str] = &["BULKHEAD PANIC", "EXCEPTION", "BULKHEAD LOADER ERROR"];

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

impl Bochs {
    /// Boots `image` (written in its scenario directory, which keeps the logs) with
    /// `megs` MiB of RAM. The image is padded to whole cylinders in place.
    pub fn boot(name: &str, image: &Path, megs: u32) -> Bochs {
        let guard = crate::machine::one_at_a_time();
        let dir = image.parent().expect("image lives in its scenario directory").to_path_buf();
        let serial_path = dir.join("serial.log");
        let mut command = bochs::prepare(&dir, image, megs, &bochs::BochsSerial::File(serial_path.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
        let child = command
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("bochs-stdout.log")).expect("creating the Bochs log"))
            .stderr(std::fs::File::create(dir.join("bochs-stderr.log")).expect("creating the Bochs log"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting bochs: {e}"));
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
        crate::serial_wait::expect_line(self, marker, timeout, Duration::from_millis(200))
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

impl crate::serial_wait::SerialLog for Bochs {
    const EMULATOR: &'static str = "Bochs";

    fn text(&self) -> String {
        self.serial()
    }

    fn cursor(&mut self) -> &mut usize {
        &mut self.cursor
    }

    fn check_fatal(&self, text: &str) {
        for pattern in FATAL_PATTERNS {
            if text.contains(pattern) {
                self.fail(&format!("serial shows {pattern:?}"));
            }
        }
    }

    fn exited(&mut self) -> Option<String> {
        self.child.try_wait().ok().flatten().map(|status| status.to_string())
    }

    fn fail(&self, why: &str) -> ! {
        Bochs::fail(self, why)
    }
}
