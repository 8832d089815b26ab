//! The typed confirmation of an interactive install: the disk's number and the word
//! "erase", so that neither a stray Enter nor a wrong digit wipes a disk.

use alloc::format;
use alloc::string::String;

/// Parses `"<number> erase"`; the number must be one of the `offered` disks.
pub fn parse(line: &str, offered: &[usize]) -> Result<usize, String> {
    let mut words = line.split_whitespace();
    let (Some(number), Some(word), None) = (words.next(), words.next(), words.next()) else {
        return Err(format!("expected a disk number and the word erase, got {line:?}"));
    };
    if word != "erase" {
        return Err(format!("the second word must be erase, not {word:?}"));
    }
    let index: usize = number.parse().map_err(|_| format!("{number:?} is not a disk number"))?;
    if !offered.contains(&index) {
        return Err(format!("disk {index} is not one of the disks offered"));
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn the_number_and_erase_confirm() {
        assert_eq!(parse("1 erase", &[1, 3]), Ok(1));
        assert_eq!(parse("  3   erase ", &[1, 3]), Ok(3));
    }

    #[test]
    fn anything_else_is_not_a_confirmation() {
        for line in ["", "1", "erase", "1 erasx", "1 ERASE", "1 erase now", "x erase", "2 erase", "0 erase"] {
            assert!(parse(line, &[1, 3]).is_err(), "{line:?} was taken as a confirmation");
        }
    }
}
