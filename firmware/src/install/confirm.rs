//! The typed confirmation of an interactive install: the disk's number and the word
//! "erase" (a fresh install) or "update" (rewrite the ESP of an installed disk), so that
//! neither a stray Enter nor a wrong digit wipes a disk.

use alloc::format;
use alloc::string::String;

use super::answer::Mode;

/// Parses `"<number> erase"` or `"<number> update"`; the number must be one of the
/// `offered` disks, and an update needs one of the `installed` ones.
pub fn parse(line: &str, offered: &[usize], installed: &[usize]) -> Result<(usize, Mode), String> {
    let mut words = line.split_whitespace();
    let (Some(number), Some(word), None) = (words.next(), words.next(), words.next()) else {
        return Err(format!("expected a disk number and the word erase or update, got {line:?}"));
    };
    let mode = match word {
        "erase" => Mode::Install,
        "update" => Mode::Update,
        _ => return Err(format!("the second word must be erase or update, not {word:?}")),
    };
    let index: usize = number.parse().map_err(|_| format!("{number:?} is not a disk number"))?;
    if !offered.contains(&index) {
        return Err(format!("disk {index} is not one of the disks offered"));
    }
    if mode == Mode::Update && !installed.contains(&index) {
        return Err(format!("disk {index} holds no Bulkhead installation to update"));
    }
    Ok((index, mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_number_and_erase_or_update_confirm() {
        assert_eq!(parse("1 erase", &[1, 3], &[]), Ok((1, Mode::Install)));
        assert_eq!(parse("  3   erase ", &[1, 3], &[3]), Ok((3, Mode::Install)));
        assert_eq!(parse("3 update", &[1, 3], &[3]), Ok((3, Mode::Update)));
    }

    #[test]
    fn anything_else_is_not_a_confirmation() {
        for line in ["", "1", "erase", "1 erasx", "1 ERASE", "1 erase now", "x erase", "2 erase", "0 erase", "1 update"]
        {
            assert!(parse(line, &[1, 3], &[3]).is_err(), "{line:?} was taken as a confirmation");
        }
    }
}
