//! The notification text for a VM that stopped.

use core::fmt::Write as _;

use ui::notification::Severity;

/// Why a VM stopped, in the switcher's terms (the VM side maps its stop reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// The guest shut down, or was asked to stop.
    ShutDown,
    /// The guest rebooted.
    Rebooted,
    /// A crash; the text says what went wrong ("triple fault").
    Crashed(&'static str),
    /// Held back until the laptop checks in with IT's management server.
    NeedsCheckIn,
    /// Its disk stayed locked (`locked`) or could not be opened: it waits for the next
    /// boot.
    DiskUnavailable { locked: bool },
}

pub type NoticeText = heapless::String<96>;

/// The notification for VM `name` that stopped for `cause` (`restarted` when policy
/// started it again).
pub fn stop_message(name: &str, cause: StopCause, restarted: bool) -> (NoticeText, Severity) {
    let mut text = NoticeText::new();
    let severity = match cause {
        StopCause::ShutDown => {
            let _ = write!(text, "{name} was shut down");
            Severity::Info
        }
        StopCause::NeedsCheckIn => {
            let _ = write!(text, "{name} waits for a check-in with IT's server: connect to the network");
            Severity::Warning
        }
        StopCause::DiskUnavailable { locked: true } => {
            let _ = write!(text, "{name} does not start: its disk is locked; restart and type the passphrase");
            Severity::Warning
        }
        StopCause::DiskUnavailable { locked: false } => {
            let _ = write!(text, "{name} does not start: its disk cannot be opened (see the log)");
            Severity::Error
        }
        StopCause::Rebooted => {
            let _ = write!(text, "{name} restarted");
            Severity::Info
        }
        StopCause::Crashed(why) => {
            let then = if restarted { "; restarted" } else { "" };
            let _ = write!(text, "{name} crashed: {why}{then}");
            Severity::Error
        }
    };
    (text, severity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_happened() {
        let (t, s) = stop_message("PERSONAL", StopCause::ShutDown, false);
        assert_eq!((t.as_str(), s), ("PERSONAL was shut down", Severity::Info));
        let (t, s) = stop_message("PERSONAL", StopCause::Rebooted, true);
        assert_eq!((t.as_str(), s), ("PERSONAL restarted", Severity::Info));
        let (t, s) = stop_message("PERSONAL", StopCause::Crashed("triple fault"), true);
        assert_eq!((t.as_str(), s), ("PERSONAL crashed: triple fault; restarted", Severity::Error));
        let (t, _) = stop_message("PERSONAL", StopCause::Crashed("triple fault"), false);
        assert_eq!(t.as_str(), "PERSONAL crashed: triple fault");
    }
}
