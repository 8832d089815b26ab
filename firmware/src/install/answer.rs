//! The answer file that makes an install unattended: `\bulkhead\install.cfg` on the
//! stick, one `key = value` per line, `#` starts a comment. Unknown keys are errors, so a
//! typo never turns into a default that erases a disk.
//!
//! ```text
//! mode = install           # install (erases the disk) | update (rewrites only the ESP)
//! target = first-nvme     # first-nvme | first-sata | first-internal
//! overwrite = false       # erase a disk that already holds partitions
//! wait_seconds = 30       # how long the result stays on screen before power-off
//! verify_delay_seconds = 0  # a pause before the read-back (tests corrupt the disk in it)
//! ```

use alloc::format;
use alloc::string::String;

use super::disks::Bus;

/// Which disks an answer accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    FirstNvme,
    FirstSata,
    /// Any NVMe or SATA disk.
    FirstInternal,
}

impl Target {
    pub fn accepts(self, bus: Bus) -> bool {
        match self {
            Target::FirstNvme => bus == Bus::Nvme,
            Target::FirstSata => bus == Bus::Sata,
            Target::FirstInternal => matches!(bus, Bus::Nvme | Bus::Sata),
        }
    }
}

/// A fresh install, or an update of an installed disk's ESP that keeps its partitions
/// and the data partition's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Install,
    Update,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub mode: Mode,
    pub target: Target,
    pub overwrite: bool,
    pub wait_seconds: u32,
    pub verify_delay_seconds: u32,
}

pub fn parse(text: &str) -> Result<Answer, String> {
    let mut target = None;
    let mut mode = Mode::Install;
    let mut overwrite = false;
    let mut wait_seconds = 30;
    let mut verify_delay_seconds = 0;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = || format!("line {}", n + 1);
        let (key, value) = line.split_once('=').ok_or_else(|| format!("{}: expected `key = value`", at()))?;
        let (key, value) = (key.trim(), value.trim());
        match key {
            "target" => {
                target = Some(match value {
                    "first-nvme" => Target::FirstNvme,
                    "first-sata" => Target::FirstSata,
                    "first-internal" => Target::FirstInternal,
                    _ => {
                        return Err(format!(
                            "{}: target {value:?} is not first-nvme, first-sata or first-internal",
                            at()
                        ));
                    }
                })
            }
            "mode" => {
                mode = match value {
                    "install" => Mode::Install,
                    "update" => Mode::Update,
                    _ => return Err(format!("{}: mode must be install or update", at())),
                }
            }
            "overwrite" => {
                overwrite = match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(format!("{}: overwrite must be true or false", at())),
                }
            }
            "wait_seconds" => {
                wait_seconds = value
                    .parse()
                    .ok()
                    .filter(|s| *s <= 3600)
                    .ok_or_else(|| format!("{}: wait_seconds must be 0..=3600", at()))?
            }
            "verify_delay_seconds" => {
                verify_delay_seconds = value
                    .parse()
                    .ok()
                    .filter(|s| *s <= 600)
                    .ok_or_else(|| format!("{}: verify_delay_seconds must be 0..=600", at()))?
            }
            _ => return Err(format!("{}: unknown key {key:?}", at())),
        }
    }
    let target = target.ok_or("no `target = ...` line")?;
    Ok(Answer { mode, target, overwrite, wait_seconds, verify_delay_seconds })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_answer_parses() {
        let a =
            parse("# install\ntarget = first-nvme\noverwrite=true  # yes\nwait_seconds = 0\nverify_delay_seconds = 9")
                .unwrap();
        assert_eq!(
            a,
            Answer {
                mode: Mode::Install,
                target: Target::FirstNvme,
                overwrite: true,
                wait_seconds: 0,
                verify_delay_seconds: 9
            }
        );
    }

    #[test]
    fn overwrite_defaults_to_false() {
        let a = parse("target = first-internal").unwrap();
        assert!(!a.overwrite);
        assert_eq!(a.wait_seconds, 30);
        assert_eq!(a.verify_delay_seconds, 0);
        assert_eq!(a.mode, Mode::Install);
        assert_eq!(parse("mode = update\ntarget = first-nvme").unwrap().mode, Mode::Update);
        assert!(parse("mode = upgrade\ntarget = first-nvme").is_err());
    }

    #[test]
    fn typos_and_missing_targets_are_errors() {
        assert!(parse("overwrite = false").unwrap_err().contains("target"));
        assert!(parse("target = first-nvme\noverwite = true").unwrap_err().contains("line 2"));
        assert!(parse("target = nvme0").is_err());
        assert!(parse("target = first-nvme\noverwrite = yes").is_err());
        assert!(parse("target first-nvme").is_err());
    }

    #[test]
    fn targets_accept_their_buses_only() {
        assert!(Target::FirstNvme.accepts(Bus::Nvme));
        assert!(!Target::FirstNvme.accepts(Bus::Sata));
        assert!(!Target::FirstInternal.accepts(Bus::Usb));
        assert!(Target::FirstInternal.accepts(Bus::Sata));
    }
}
