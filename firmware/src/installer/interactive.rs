//! The interactive install: a stick without an answer file offers it for a few seconds
//! at boot, lists the internal disks with what they hold, and installs only after the
//! disk's number and the word "erase" are typed ("update" rewrites the ESP of a disk
//! Bulkhead is installed on and keeps its data partition).

use alloc::string::String;
use core::time::Duration;

use firmware::install::confirm;
use firmware::install::disks::{self, Disk};
use uefi::fs::FileSystem;
use uefi::proto::console::text::Key;
use uefi::runtime::{self, ResetType};
use uefi::{Status, boot};

use super::{Screen, describe, disable_watchdog, find_disks, install};

/// How long the boot waits for the install key.
const OFFER: Duration = Duration::from_secs(3);
/// How long the prompts wait for typing before giving up.
const PROMPT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(20);
const ATTEMPTS: usize = 3;
const MAX_LINE: usize = 32;

/// Offers the install for a few seconds; returns when the stick should just run
/// Bulkhead (no key, another key, or a cancelled install).
pub fn offer(stick: &mut FileSystem) {
    println!(
        "Press I within {} s to install Bulkhead on this laptop; otherwise Bulkhead runs from this stick.",
        OFFER.as_secs()
    );
    match wait_key(OFFER) {
        Some('i' | 'I') => {}
        _ => return,
    }
    if let Err(why) = interactive(stick) {
        println!("BULKHEAD INSTALL CANCELLED: {why}; nothing was written. Running Bulkhead from this stick.");
    }
}

fn interactive(stick: &mut FileSystem) -> Result<(), String> {
    disable_watchdog();
    let found = find_disks()?;
    let list: alloc::vec::Vec<Disk> = found.iter().map(|f| f.disk.clone()).collect();
    let offered = disks::offered(&list);
    let installed: alloc::vec::Vec<usize> = offered.iter().copied().filter(|&i| list[i].installed).collect();
    if offered.is_empty() {
        return Err(
            "no internal NVMe or SATA disk found (a disk in Intel RST/VMD RAID mode is hidden; see README)".into()
        );
    }
    println!("install: internal disks (the stick this runs from is not offered):");
    for &i in &offered {
        let note = if list[i].installed { " (Bulkhead is installed here)" } else { "" };
        println!("install: [{i}] {}{note}", describe(i, &found[i]));
    }
    for _ in 0..ATTEMPTS {
        println!(
            "install: to erase a disk and install Bulkhead on it, type its number and the word erase (e.g. \"{} erase\") and Enter; an empty line cancels",
            offered[0]
        );
        if let Some(first) = installed.first() {
            println!(
                "install: to update Bulkhead on a disk and keep its data partition, type its number and the word update (e.g. \"{first} update\")"
            );
        }
        let line = read_line(PROMPT).ok_or("no answer")?;
        if line.trim().is_empty() {
            return Err("cancelled".into());
        }
        let (index, mode) = match confirm::parse(&line, &offered, &installed) {
            Ok(choice) => choice,
            Err(why) => {
                println!("install: not confirmed ({why}); nothing was written");
                continue;
            }
        };
        if let Err(why) = disks::check_size(index, &found[index].disk) {
            println!("install: {why}");
            continue;
        }
        let mut screen = Screen::new();
        let result = install(stick, &found[index], index, mode, 0, &mut screen);
        match &result {
            Ok(summary) => println!("BULKHEAD INSTALL DONE: {summary}. Remove the stick."),
            Err(why) => println!("BULKHEAD INSTALL FAILED: {why}"),
        }
        println!("install: press any key to power off");
        screen.finish(result.is_ok());
        let _ = wait_key(PROMPT);
        runtime::reset(ResetType::SHUTDOWN, Status::SUCCESS, None);
    }
    Err(alloc::format!("not confirmed after {ATTEMPTS} attempts"))
}

/// The next printable key typed within `timeout` (Enter is `'\r'`, Backspace `'\x08'`).
fn wait_key(timeout: Duration) -> Option<char> {
    let mut waited = Duration::ZERO;
    while waited < timeout {
        let key = uefi::system::with_stdin(|stdin| stdin.read_key()).ok().flatten();
        match key {
            Some(Key::Printable(c)) => return Some(char::from(c)),
            Some(Key::Special(_)) => {}
            None => {
                boot::stall(POLL);
                waited += POLL;
            }
        }
    }
    None
}

/// A line typed on the keyboard, echoed; `None` when nothing is typed for `timeout`.
fn read_line(timeout: Duration) -> Option<String> {
    let mut line = String::new();
    loop {
        let c = wait_key(timeout)?;
        match c {
            '\r' | '\n' => {
                println!();
                return Some(line);
            }
            '\u{8}' if line.pop().is_some() => print!("\u{8} \u{8}"),
            c if !c.is_control() && line.len() < MAX_LINE => {
                line.push(c);
                print!("{c}");
            }
            _ => {}
        }
    }
}
