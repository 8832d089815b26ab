//! Hypervisor options from the boot manifest's `cmdline`, e.g. `log=debug then=exit`.
#![forbid(unsafe_code)]

use log::LevelFilter;

/// What to do once the machine is up (test images use the non-default ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThenAction {
    /// Keep running (the product).
    Run,
    /// Report success to a test harness through isa-debug-exit.
    Exit,
    /// Power the machine off through ACPI.
    Shutdown,
    /// Reset the machine.
    Reset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options<'a> {
    pub log_level: LevelFilter,
    pub then: ThenAction,
    /// Self-test image: end with a verdict once every VM has stopped.
    pub selftest: bool,
    /// Benchmarks: sum the instructions of each stage of the exit path (see
    /// `arch::x86::exit_stages`) and log them with the exit counters.
    pub exit_stages: bool,
    /// Tests: write a pattern to the last 4 KiB of the data partition, flush, read it
    /// back and log the result (`storage::selftest`).
    pub storage_selftest: bool,
    /// Tests only (`unlock-demo=<passphrase>`): after boot, show the passphrase screen
    /// for a vault in memory that holds this passphrase (empty: a fresh machine) and
    /// log how it ended. The passphrase sits in the manifest in plain text.
    pub unlock_demo: Option<&'a str>,
    /// Tests under emulation only (`disk-kdf=test`): a disk store created on this boot
    /// derives its passphrase key with Argon2id parameters that protect nothing, so
    /// that emulated unlocks take moments. Logged as a warning when used.
    pub disk_kdf_test: bool,
    /// Benchmarks only (`disk-cipher=none`): volumes created on this boot are stored in
    /// clear, to measure what the encryption costs. Logged as a warning when used.
    pub disk_cipher_none: bool,
    /// Benchmarks only (`disk-passphrase=<passphrase>`): the disks are unlocked (or
    /// the store created) with this passphrase instead of the screen asking for it.
    pub disk_passphrase: Option<&'a str>,
    /// `guests=boot-cpu`: every vCPU runs on the boot CPU, time-sliced, even when
    /// application processors are online (benchmarks under QEMU's -icount, which runs
    /// the emulated CPUs one at a time; and a way back should the multi-core path fail).
    pub guests_on_boot_cpu: bool,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            log_level: LevelFilter::Info,
            then: ThenAction::Run,
            selftest: false,
            exit_stages: false,
            storage_selftest: false,
            unlock_demo: None,
            disk_kdf_test: false,
            disk_cipher_none: false,
            disk_passphrase: None,
            guests_on_boot_cpu: false,
        }
    }
}

/// Parses the options; unknown words are returned so they can be logged, never fatal.
pub fn parse(text: &str) -> (Options<'_>, heapless::Vec<&str, 8>) {
    let mut options = Options::default();
    let mut unknown = heapless::Vec::new();
    for word in text.split_whitespace() {
        let known = match word.split_once('=') {
            Some(("log", level)) => level.parse().map(|l| options.log_level = l).is_ok(),
            Some(("then", "run")) => set(&mut options.then, ThenAction::Run),
            Some(("then", "exit")) => set(&mut options.then, ThenAction::Exit),
            Some(("then", "shutdown")) => set(&mut options.then, ThenAction::Shutdown),
            Some(("then", "reset")) => set(&mut options.then, ThenAction::Reset),
            Some(("unlock-demo", passphrase)) => {
                options.unlock_demo = Some(passphrase);
                true
            }
            Some(("disk-passphrase", passphrase)) => {
                options.disk_passphrase = Some(passphrase);
                true
            }
            Some(("disk-cipher", "none")) => {
                options.disk_cipher_none = true;
                true
            }
            Some(("guests", "boot-cpu")) => {
                options.guests_on_boot_cpu = true;
                true
            }
            Some(("disk-kdf", "test")) => {
                options.disk_kdf_test = true;
                true
            }
            None if word == "selftest" => {
                options.selftest = true;
                true
            }
            None if word == "exit-stages" => {
                options.exit_stages = true;
                true
            }
            None if word == "storage-selftest" => {
                options.storage_selftest = true;
                true
            }
            _ => false,
        };
        if !known {
            let _ = unknown.push(word);
        }
    }
    (options, unknown)
}

fn set(slot: &mut ThenAction, value: ThenAction) -> bool {
    *slot = value;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_options_and_reports_the_rest() {
        let (o, unknown) = parse("log=debug then=shutdown selftest bogus log=loud exit-stages storage-selftest");
        assert!(!o.guests_on_boot_cpu);
        assert!(parse("guests=boot-cpu").0.guests_on_boot_cpu);
        assert!(o.selftest);
        assert!(o.storage_selftest);
        assert!(!parse("selftest").0.storage_selftest);
        assert!(o.exit_stages);
        assert_eq!(o.log_level, LevelFilter::Debug);
        assert_eq!(o.then, ThenAction::Shutdown);
        assert_eq!(unknown.as_slice(), &["bogus", "log=loud"]);
        assert_eq!(o.unlock_demo, None);
        assert!(!o.disk_kdf_test);
        assert!(parse("disk-kdf=test").0.disk_kdf_test);
        assert!(!parse("disk-kdf=weak").0.disk_kdf_test);
        assert!(parse("disk-cipher=none").0.disk_cipher_none);
        assert!(!o.disk_cipher_none);
        assert_eq!(o.disk_passphrase, None);
        assert_eq!(parse("disk-passphrase=x y").0.disk_passphrase, Some("x"));
    }

    #[test]
    fn unlock_demo_takes_its_passphrase_or_none_for_a_fresh_machine() {
        assert_eq!(parse("then=run unlock-demo=correct-horse").0.unlock_demo, Some("correct-horse"));
        assert_eq!(parse("unlock-demo=").0.unlock_demo, Some(""));
    }

    #[test]
    fn empty_cmdline_runs_the_product() {
        assert_eq!(parse("").0, Options::default());
    }
}
