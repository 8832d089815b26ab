//! Following an emulator's serial log marker by marker, shared by the QEMU and Bochs
//! runners.

use std::time::{Duration, Instant};

/// An emulator whose serial log a test follows.
pub(crate) trait SerialLog {
    /// The emulator's name in failure messages.
    const EMULATOR: &'static str;
    /// Everything it printed so far.
    fn text(&self) -> String;
    /// How far the test has read.
    fn cursor(&mut self) -> &mut usize;
    /// Fails the test when `text` holds a fatal pattern the test did not allow.
    fn check_fatal(&self, text: &str);
    /// `Some(status)` once the emulator has exited.
    fn exited(&mut self) -> Option<String>;
    /// Fails the test.
    fn fail(&self, why: &str) -> !;
}

/// Waits until `marker` appears after everything matched so far and returns the line
/// that holds it. Fails at once on a fatal pattern or when the emulator exits.
pub(crate) fn expect_line<L: SerialLog>(log: &mut L, marker: &str, timeout: Duration, poll: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = log.text();
        let start = (*log.cursor()).min(text.len());
        let fresh = &text[start..];
        // Only whole lines count: the serial copier may have written half a line.
        if let Some(pos) = fresh.find(marker)
            && let Some(eol) = fresh[pos..].find('\n')
        {
            let line_start = fresh[..pos].rfind('\n').map_or(0, |i| i + 1);
            let line_end = pos + eol;
            let line = fresh[line_start..line_end].trim_end().to_string();
            log.check_fatal(&fresh[..line_end]);
            *log.cursor() = start + line_end;
            return line;
        }
        log.check_fatal(fresh);
        if let Some(status) = log.exited() {
            // The marker may have been written just before exit, maybe without a line end.
            std::thread::sleep(Duration::from_millis(200));
            let text = log.text();
            let rest = &text[(*log.cursor()).min(text.len())..];
            if let Some(pos) = rest.find(marker) {
                let line = rest[pos..].lines().next().unwrap_or("").to_string();
                *log.cursor() = text.len();
                return line;
            }
            log.fail(&format!("{} exited ({status}) before {marker:?} appeared", L::EMULATOR));
        }
        if Instant::now() > deadline {
            log.fail(&format!("timed out after {timeout:?} waiting for {marker:?}"));
        }
        std::thread::sleep(poll);
    }
}
