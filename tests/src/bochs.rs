//! One Bochs machine under test: the Intel VMX platform (`images::bochs` has the
//! configuration). QEMU's TCG has no VMX, so the VT-x backend runs under Bochs with
//! OVMF.fd booting the same USB image.
//!
//! Bochs has no isa-debug-exit and its exit status means nothing (a power-off is a
//! "panic" with status 1), so the verdict is judged from serial markers only. COM1 is a
//! TCP connection Bochs opens to a listener here (on a free port): what the machine
//! prints is copied into `serial.log`, which [`Bochs::expect`] follows, and
//! [`Bochs::type_serial`] types on it. A machine booted with a keyboard is also driven
//! over Bochs's VNC server ([`crate::rfb`]), which feeds its PS/2 keyboard. Bochs is killed when dropped; logs stay under
//! `target/test-logs/<scenario>/` unless the test passed.

use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use images::bochs::{self, BochsDisplay, BochsSerial};

use crate::rfb::Vnc;

/// Lines that mean the run is broken, whatever comes later.
const FATAL_PATTERNS: &[&str] = &["BULKHEAD PANIC", "EXCEPTION", "BULKHEAD LOADER ERROR"];

/// How long Bochs waits for the VNC client before it starts anyway.
const VNC_WAIT_S: u32 = 60;
/// How long each key of a combination stays down (and up before the next): Bochs's
/// keyboard buffer holds 16 bytes, and the hypervisor must read them as they come.
const KEY_PACE: Duration = Duration::from_millis(40);

pub struct Bochs {
    name: String,
    dir: PathBuf,
    child: Child,
    serial_path: PathBuf,
    serial_in: TcpStream,
    vnc: Option<Vnc>,
    cursor: usize,
    started: Instant,
    passed: bool,
    _one_at_a_time: MutexGuard<'static, ()>,
}

impl Bochs {
    /// Boots `image` (written in its scenario directory, which keeps the logs) with
    /// `megs` MiB of RAM. The image is padded to whole cylinders in place.
    pub fn boot(name: &str, image: &Path, megs: u32) -> Bochs {
        Bochs::start(name, image, megs, BochsDisplay::Headless)
    }

    /// Boots `image` with a VNC client connected before Bochs starts, so
    /// [`Bochs::send_keys`] types on the machine's PS/2 keyboard. There is still no
    /// screen (`images::bochs::BochsDisplay::Vnc` says why).
    pub fn boot_with_keyboard(name: &str, image: &Path, megs: u32) -> Bochs {
        Bochs::start(name, image, megs, BochsDisplay::Vnc { wait_s: VNC_WAIT_S })
    }

    fn start(name: &str, image: &Path, megs: u32, display: BochsDisplay) -> Bochs {
        let guard = crate::machine::one_at_a_time();
        let dir = image.parent().expect("image lives in its scenario directory").to_path_buf();
        let serial_path = dir.join("serial.log");
        let listener = TcpListener::bind("127.0.0.1:0").expect("listening for Bochs's COM1");
        let port = listener.local_addr().expect("the COM1 listener's port").port();
        let mut command =
            bochs::prepare(&dir, image, megs, &BochsSerial::Connect(port), display).unwrap_or_else(|e| panic!("{e}"));
        let mut child = command
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("bochs-stdout.log")).expect("creating the Bochs log"))
            .stderr(std::fs::File::create(dir.join("bochs-stderr.log")).expect("creating the Bochs log"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting bochs: {e}"));
        let started = Instant::now();
        let vnc = match display {
            BochsDisplay::Headless => None,
            BochsDisplay::Vnc { .. } => Some(connect_vnc(&dir, &mut child).unwrap_or_else(|e| {
                let _ = child.kill();
                panic!("[{name}] {e}; logs in {}", dir.display())
            })),
        };
        let serial_in = accept_serial(&listener, &serial_path, &mut child).unwrap_or_else(|e| {
            let _ = child.kill();
            panic!("[{name}] {e}; logs in {}", dir.display())
        });
        Bochs {
            name: name.into(),
            dir,
            child,
            serial_path,
            serial_in,
            vnc,
            cursor: 0,
            started,
            passed: false,
            _one_at_a_time: guard,
        }
    }

    /// Types `text` on the hypervisor's serial console.
    pub fn type_serial(&mut self, text: &str) {
        if let Err(e) = self.serial_in.write_all(text.as_bytes()) {
            self.fail(&format!("cannot write to the serial console: {e}"));
        }
    }

    /// Runs `command` in VM `vm`'s shell through the hypervisor's serial command channel.
    pub fn run_in_vm(&mut self, vm: &str, command: &str) {
        let line = crate::machine::vm_command_line(vm, command).unwrap_or_else(|e| self.fail(&e));
        self.type_serial(&line);
    }

    /// Presses a key combination on the machine's PS/2 keyboard, QEMU style:
    /// `"ctrl-alt-spc"`, `"ret"`, `"shift-4"`.
    pub fn send_keys(&mut self, combo: &str) {
        let Some(vnc) = self.vnc.as_mut() else { self.fail("this machine was booted without a keyboard") };
        if let Err(e) = vnc.send_keys(combo, KEY_PACE) {
            self.fail(&format!("keys {combo}: {e}"));
        }
    }

    /// Types `text` on the machine's keyboard (US layout; `\n` is Enter).
    pub fn type_keys(&mut self, text: &str) {
        for c in text.chars() {
            let combo = crate::machine::key_for(c).unwrap_or_else(|| self.fail(&format!("no key for {c:?}")));
            self.send_keys(&combo);
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

/// Waits for Bochs's VNC server to name its port in `bochs.log` and connects to it.
fn connect_vnc(dir: &Path, child: &mut Child) -> Result<Vnc, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(dir.join("bochs.log")).unwrap_or_default();
        if let Some(port) = bochs::vnc_port(&log) {
            return Vnc::connect(port);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("Bochs exited ({status}) before its VNC server listened"));
        }
        if Instant::now() > deadline {
            return Err("Bochs's VNC server named no port in bochs.log within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Takes Bochs's COM1 connection and copies everything the machine prints into `log`.
fn accept_serial(listener: &TcpListener, log: &Path, child: &mut Child) -> Result<TcpStream, String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("accepting Bochs's COM1: {e}")),
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("Bochs exited ({status}) before connecting COM1"));
        }
        if Instant::now() > deadline {
            return Err("Bochs did not connect COM1 within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    let mut reader = stream.try_clone().map_err(|e| e.to_string())?;
    let mut file = std::fs::File::create(log).map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut reader, &mut file);
    });
    Ok(stream)
}
