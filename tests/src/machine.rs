//! One QEMU machine under test. Serial goes to a file that [`Machine::expect`] follows;
//! QEMU is killed when the `Machine` is dropped; logs stay in the scenario directory
//! (under `target/test-logs/`) and are removed only when the test passed (set
//! `BULKHEAD_KEEP_LOGS=1` to keep them anyway).

use std::io::Read as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use images::host_tools;
use images::qemu::{MachineConfig, Serial};
use qapi::qmp;

/// Lines that mean the run is broken, whatever comes later.
const FATAL_PATTERNS: &[&str] = &["BULKHEAD PANIC", "EXCEPTION", "BULKHEAD LOADER ERROR"];

/// One QEMU at a time: TCG is CPU-hungry and the machines have two cores.
static ONE_QEMU: Mutex<()> = Mutex::new(());

/// Holds the one-machine lock (QEMU or Bochs) of this test binary.
pub(crate) fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_QEMU.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How a machine ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// QEMU exited with this status (33 = hypervisor reported success, 35 = failure,
    /// 0 = the machine powered off or reset under -no-reboot).
    Exited(i32),
    TimedOut,
}

pub struct Machine {
    name: String,
    dir: PathBuf,
    child: Child,
    serial_path: PathBuf,
    /// The write side of the serial console (QEMU waits for it before starting).
    serial_in: Option<UnixStream>,
    /// How much of the serial log `expect` has consumed.
    cursor: usize,
    qmp: Option<qapi::Qmp<qapi::Stream<std::io::BufReader<UnixStream>, UnixStream>>>,
    qmp_path: PathBuf,
    fatal_allowed: Vec<&'static str>,
    passed: bool,
    _one_at_a_time: MutexGuard<'static, ()>,
}

impl Machine {
    /// Boots `image` with the configuration `tune` makes. `name` names the log directory.
    pub fn boot(name: &str, image: &Path, tune: impl FnOnce(&mut MachineConfig)) -> Machine {
        Machine::start(name, image, true, tune)
    }

    /// Boots again with the OVMF variables the previous machine of this scenario left
    /// (boot entries survive, as on a real laptop's flash). Its serial log is
    /// `serial-<name>.log`, so the earlier machine's log stays.
    pub fn boot_again(name: &str, image: &Path, tune: impl FnOnce(&mut MachineConfig)) -> Machine {
        Machine::start(name, image, false, tune)
    }

    fn start(name: &str, image: &Path, fresh_vars: bool, tune: impl FnOnce(&mut MachineConfig)) -> Machine {
        let guard = one_at_a_time();
        let (qemu, ovmf) = host_tools::ensure_qemu_and_ovmf().unwrap_or_else(|e| panic!("{e}"));
        let dir = image.parent().expect("image lives in its scenario directory").to_path_buf();
        let vars = dir.join("ovmf-vars.fd");
        if fresh_vars || !vars.is_file() {
            std::fs::copy(&ovmf.vars_template, &vars).expect("copying the OVMF variable store");
        }
        let serial_path = if fresh_vars { dir.join("serial.log") } else { dir.join(format!("serial-{name}.log")) };
        let serial_sock = dir.join("serial.sock");
        let qmp_path = dir.join("qmp.sock");
        let _ = std::fs::remove_file(&qmp_path);
        let _ = std::fs::remove_file(&serial_sock);
        let mut config = MachineConfig::new(image, &ovmf, vars);
        config.serial = Serial::Socket(serial_sock.clone());
        config.qmp_socket = Some(qmp_path.clone());
        tune(&mut config);
        let mut command = config.command(&qemu);
        std::fs::write(dir.join("qemu-command.txt"), format!("{command:?}\n")).ok();
        let child = command
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("qemu-stdout.log")).expect("creating the QEMU log"))
            .stderr(std::fs::File::create(dir.join("qemu-stderr.log")).expect("creating the QEMU log"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", qemu.display()));
        let serial_in = connect_serial(&serial_sock, &serial_path);
        Machine {
            name: name.into(),
            dir,
            child,
            serial_path,
            serial_in,
            cursor: 0,
            qmp: None,
            qmp_path,
            fatal_allowed: Vec::new(),
            passed: false,
            _one_at_a_time: guard,
        }
    }

    /// Types `text` on the hypervisor's serial console.
    pub fn type_serial(&mut self, text: &str) {
        use std::io::Write as _;
        let ok = self.serial_in.as_mut().is_some_and(|s| s.write_all(text.as_bytes()).is_ok());
        if !ok {
            self.fail("cannot write to the serial console");
        }
    }

    /// Runs `command` in VM `vm`'s shell through the hypervisor's serial command channel.
    pub fn run_in_vm(&mut self, vm: &str, command: &str) {
        let line = vm_command_line(vm, command).unwrap_or_else(|e| self.fail(&e));
        self.type_serial(&line);
    }

    /// Lets a normally fatal pattern through (for tests that provoke it).
    pub fn allow(&mut self, pattern: &'static str) {
        self.fatal_allowed.push(pattern);
    }

    /// Everything the machine printed on serial so far.
    pub fn serial(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.serial_path) {
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    }

    /// Waits until `marker` appears after everything matched so far and returns the
    /// line that holds it. Fails at once on a fatal pattern or when QEMU exits.
    pub fn expect(&mut self, marker: &str, timeout: Duration) -> String {
        crate::serial_wait::expect_line(self, marker, timeout, Duration::from_millis(100))
    }

    /// Waits until `needle` appears `count` times in this boot's serial log; returns the
    /// last line holding it. (Several VMs boot at once: their lines interleave in any
    /// order, so the cursor-based [`Machine::expect`] cannot wait for all of them.)
    pub fn wait_count(&mut self, needle: &str, count: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let serial = self.serial();
            if serial.matches(needle).count() >= count {
                return serial.lines().rev().find(|l| l.contains(needle)).unwrap_or_default().to_string();
            }
            if Instant::now() > deadline {
                self.fail(&format!("timed out waiting for {count} x {needle:?}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `command` in `vm`, which prints `KEY=value` with `echo KEY=`; returns the
    /// value. The key is typed quoted (`"KEY""="`, which the shell prints as `KEY=`),
    /// so the shell's echo of a long, wrapped command line is never taken for the answer.
    pub fn ask(&mut self, vm: &str, command: &str, key: &str, timeout: Duration) -> String {
        let plain = format!("echo {key}=");
        assert!(command.contains(&plain), "{command} does not print {key}=");
        self.run_in_vm(vm, &command.replace(&plain, &format!("echo \"{key}\"\"=\"")));
        let line = self.expect(&format!("[{vm}] {key}="), timeout);
        line.split(&format!("{key}=")).nth(1).unwrap_or("").trim().to_string()
    }

    /// Waits for QEMU to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Outcome {
        let deadline = Instant::now() + timeout;
        loop {
            // Keep QMP drained so shutdown events are recorded.
            if let Some(qmp) = self.qmp.as_mut() {
                let _ = qmp.nop();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Events QEMU sent just before exiting are still in the socket.
                if let Some(qmp) = self.qmp.as_mut() {
                    let _ = qmp.read_response::<qmp::query_version>();
                }
                return status.code().map_or(Outcome::TimedOut, Outcome::Exited);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Outcome::TimedOut;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn qmp(&mut self) -> &mut qapi::Qmp<qapi::Stream<std::io::BufReader<UnixStream>, UnixStream>> {
        if self.qmp.is_none() {
            let deadline = Instant::now() + Duration::from_secs(10);
            let stream = loop {
                match UnixStream::connect(&self.qmp_path) {
                    Ok(stream) => break stream,
                    Err(e) if Instant::now() > deadline => self.fail(&format!("QMP socket: {e}")),
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            };
            let reader = stream.try_clone().expect("cloning the QMP socket");
            let mut qmp = qapi::Qmp::new(qapi::Stream::new(std::io::BufReader::new(reader), stream));
            if let Err(e) = qmp.handshake() {
                self.fail(&format!("QMP handshake: {e}"));
            }
            self.qmp = Some(qmp);
        }
        self.qmp.as_mut().expect("just connected")
    }

    /// Connects QMP early so that later events (shutdown, reset) are seen.
    pub fn connect_qmp(&mut self) {
        self.qmp();
    }

    /// Takes a screendump of the primary display and decodes it.
    pub fn screendump(&mut self, name: &str) -> crate::screen::Screenshot {
        self.screendump_of(name, None)
    }

    /// Takes a screendump of the display device with QEMU id `device` (the primary
    /// display for `None`) and decodes it; saved as `<name>.png` with the logs.
    pub fn screendump_of(&mut self, name: &str, device: Option<&str>) -> crate::screen::Screenshot {
        let path = self.dir.join(format!("{name}.png"));
        let command = qmp::screendump {
            filename: path.display().to_string(),
            device: device.map(str::to_owned),
            head: None,
            format: Some(qmp::ImageFormat::png),
        };
        if let Err(e) = self.qmp().execute(&command) {
            self.fail(&format!("QMP screendump of {}: {e}", device.unwrap_or("the primary display")));
        }
        crate::screen::Screenshot::load(&path).unwrap_or_else(|e| self.fail(&format!("reading {name}.png: {e}")))
    }

    /// Presses a key combination on the machine's keyboard, QEMU style: `"ctrl-alt-2"`,
    /// `"ret"`, `"shift-4"` (keys go down in order and come up in reverse order).
    pub fn send_keys(&mut self, combo: &str) {
        self.queue_keys(combo, KEY_HOLD_MS);
        // send-key returns before the keys come up: pace the next one after the release.
        std::thread::sleep(Duration::from_millis(u64::from(KEY_HOLD_MS) + 20));
    }

    /// Queues a key combination in QEMU's input queue and returns at once: each key
    /// event follows the previous one by `hold_ms` (so a combination of n keys takes
    /// 2n * `hold_ms`). QEMU's queue holds about 1,000 events; the caller paces.
    pub fn queue_keys(&mut self, combo: &str, hold_ms: u32) {
        let keys = combo
            .split('-')
            .map(|name| {
                let code =
                    name.parse::<qmp::QKeyCode>().unwrap_or_else(|_| self.fail(&format!("unknown key {name:?}")));
                qmp::KeyValue::qcode(qmp::QKeyCodeWrapper { data: code })
            })
            .collect();
        let command = qmp::send_key { keys, hold_time: Some(i64::from(hold_ms)) };
        if let Err(e) = self.qmp().execute(&command) {
            self.fail(&format!("QMP send-key {combo}: {e}"));
        }
    }

    /// Types `text` on the machine's keyboard (US layout; `\n` is Enter).
    pub fn type_keys(&mut self, text: &str) {
        for c in text.chars() {
            let combo = key_for(c).unwrap_or_else(|| self.fail(&format!("no key for {c:?}")));
            self.send_keys(&combo);
        }
    }

    /// The reason QEMU gave for each SHUTDOWN event seen on QMP (e.g. "guest-shutdown",
    /// "guest-reset").
    pub fn shutdown_reasons(&mut self) -> Vec<String> {
        let Some(qmp) = self.qmp.as_mut() else {
            return Vec::new();
        };
        qmp.events()
            .filter_map(|event| match event {
                qmp::Event::SHUTDOWN { data, .. } => Some(format!("{:?}", data.reason)),
                _ => None,
            })
            .collect()
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
            "[{}] {why}\n--- last serial lines ---\n{}\n--- logs kept in {} ---",
            self.name,
            tail.join("\n"),
            self.dir.display()
        );
    }
}

/// The serial console line that runs `command` in VM `vm`'s shell (`@vm command`).
pub(crate) fn vm_command_line(vm: &str, command: &str) -> Result<String, String> {
    let line = format!("@{vm} {command}");
    // The hypervisor's command line holds 256 bytes and drops the rest.
    if line.len() > 255 {
        return Err(format!("serial command of {} bytes is too long for the hypervisor: {line}", line.len()));
    }
    Ok(format!("{line}\n"))
}

/// How long `send_keys` holds keys down.
const KEY_HOLD_MS: u32 = 30;

/// The QEMU key combination that types `c` on a US keyboard.
pub fn key_for(c: char) -> Option<String> {
    const SHIFTED: &[(char, &str)] = &[
        ('!', "1"),
        ('@', "2"),
        ('#', "3"),
        ('$', "4"),
        ('%', "5"),
        ('^', "6"),
        ('&', "7"),
        ('*', "8"),
        ('(', "9"),
        (')', "0"),
        ('_', "minus"),
        ('+', "equal"),
        ('>', "dot"),
        ('<', "comma"),
        ('?', "slash"),
        (':', "semicolon"),
        ('"', "apostrophe"),
        ('|', "backslash"),
    ];
    const PLAIN: &[(char, &str)] = &[
        (' ', "spc"),
        ('\n', "ret"),
        ('-', "minus"),
        ('=', "equal"),
        ('.', "dot"),
        (',', "comma"),
        ('/', "slash"),
        (';', "semicolon"),
        ('\'', "apostrophe"),
        ('\\', "backslash"),
    ];
    if c.is_ascii_lowercase() || c.is_ascii_digit() {
        return Some(c.to_string());
    }
    if c.is_ascii_uppercase() {
        return Some(format!("shift-{}", c.to_ascii_lowercase()));
    }
    if let Some((_, k)) = SHIFTED.iter().find(|(ch, _)| *ch == c) {
        return Some(format!("shift-{k}"));
    }
    PLAIN.iter().find(|(ch, _)| *ch == c).map(|(_, k)| k.to_string())
}

/// Set-1 bytes a guest receives when `c` is typed with [`Machine::type_keys`] (a press
/// and a release per key, shift included).
pub fn scancode_bytes_for(c: char) -> usize {
    key_for(c).map_or(0, |combo| combo.split('-').count() * 2)
}

/// Connects to QEMU's serial socket (QEMU waits for this before it starts the guest)
/// and copies everything the machine prints into `log`.
fn connect_serial(sock: &Path, log: &Path) -> Option<UnixStream> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let stream = loop {
        match UnixStream::connect(sock) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(_) => return None,
        }
    };
    let mut reader = stream.try_clone().ok()?;
    let mut file = std::fs::File::create(log).ok()?;
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut reader, &mut file);
    });
    Some(stream)
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let keep = std::env::var_os("BULKHEAD_KEEP_LOGS").is_some();
        if self.passed && !keep && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl crate::serial_wait::SerialLog for Machine {
    const EMULATOR: &'static str = "QEMU";

    fn text(&self) -> String {
        self.serial()
    }

    fn cursor(&mut self) -> &mut usize {
        &mut self.cursor
    }

    fn check_fatal(&self, text: &str) {
        for pattern in FATAL_PATTERNS {
            if text.contains(pattern) && !self.fatal_allowed.contains(pattern) {
                self.fail(&format!("serial shows {pattern:?}"));
            }
        }
    }

    fn exited(&mut self) -> Option<String> {
        self.child.try_wait().ok().flatten().map(|status| status.to_string())
    }

    fn fail(&self, why: &str) -> ! {
        Machine::fail(self, why)
    }
}
