//! The boot manifest (`\bulkhead\manifest.txt` on the ESP): a small line-based text file
//! that tells the loader what to load. Parsed by the loader without an allocator, and by
//! the `images` tool, which writes it.
//!
//! ```text
//! # comment
//! hypervisor = \bulkhead\hypervisor.elf sha256:<64 hex digits>
//! gop = 1280x800            # optional; default: the largest mode up to 1920x1080
//! cmdline = log=debug       # optional; passed to the hypervisor
//! module checks = \bulkhead\modules\checks.elf sha256:<64 hex digits>
//! ```
//!
//! The optional `sha256:` after a path lets the loader refuse a corrupt or truncated
//! copy before it runs anything from it.

/// One meaningful line of the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<'a> {
    Hypervisor(FileRef<'a>),
    Gop { width: u32, height: u32 },
    Cmdline(&'a str),
    Module { name: &'a str, file: FileRef<'a> },
}

/// A file on the ESP, with the digest it must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileRef<'a> {
    pub path: &'a str,
    pub sha256: Option<[u8; 32]>,
}

/// Why a manifest line was rejected; carries the 1-based line number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError<'a> {
    pub line: usize,
    pub text: &'a str,
    pub reason: &'static str,
}

impl core::fmt::Display for ParseError<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "manifest line {}: {} (\"{}\")", self.line, self.reason, self.text)
    }
}

/// Longest module name that fits [`crate::Module::name`].
pub const MAX_MODULE_NAME: usize = 32;

/// Iterates the entries of a manifest, skipping blank lines and comments.
pub fn entries(text: &str) -> impl Iterator<Item = Result<Entry<'_>, ParseError<'_>>> {
    text.lines().enumerate().filter_map(|(i, raw)| parse_line(i + 1, raw).transpose())
}

fn parse_line(line: usize, raw: &str) -> Result<Option<Entry<'_>>, ParseError<'_>> {
    let text = raw.split('#').next().unwrap_or("").trim();
    if text.is_empty() {
        return Ok(None);
    }
    let err = |reason| ParseError { line, text: raw.trim(), reason };
    let (key, value) = text.split_once('=').ok_or(err("expected `key = value`"))?;
    let (key, value) = (key.trim(), value.trim());
    let mut words = key.split_whitespace();
    let entry = match (words.next(), words.next(), words.next()) {
        (Some("hypervisor"), None, _) => Entry::Hypervisor(file_ref(value).map_err(err)?),
        (Some("cmdline"), None, _) => Entry::Cmdline(value),
        (Some("gop"), None, _) => {
            let (w, h) = value.split_once('x').ok_or(err("gop must be WIDTHxHEIGHT"))?;
            let width = w.trim().parse().map_err(|_| err("gop width is not a number"))?;
            let height = h.trim().parse().map_err(|_| err("gop height is not a number"))?;
            if width == 0 || height == 0 {
                return Err(err("gop size must be non-zero"));
            }
            Entry::Gop { width, height }
        }
        (Some("module"), Some(name), None) => {
            if name.len() > MAX_MODULE_NAME {
                return Err(err("module name longer than 32 bytes"));
            }
            Entry::Module { name, file: file_ref(value).map_err(err)? }
        }
        _ => return Err(err("unknown key")),
    };
    Ok(Some(entry))
}

fn file_ref(value: &str) -> Result<FileRef<'_>, &'static str> {
    let mut words = value.split_whitespace();
    let path = words.next().ok_or("empty path")?;
    let sha256 = match words.next() {
        None => None,
        Some(word) => {
            let hex = word.strip_prefix("sha256:").ok_or("expected `sha256:<hex>` after the path")?;
            Some(parse_digest(hex).ok_or("sha256 must be 64 hex digits")?)
        }
    };
    if words.next().is_some() {
        return Err("unexpected text after the digest");
    }
    Ok(FileRef { path, sha256 })
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_entry_kind_and_skips_comments() {
        let text = "# Bulkhead\nhypervisor = \\bulkhead\\hypervisor.elf\n\n gop = 1280x800 # small\ncmdline = log=debug\nmodule checks = \\m\\checks.elf sha256:{}\n";
        let text = text.replace("{}", &"ab".repeat(32));
        let text = text.as_str();
        let got: Vec<_> = entries(text).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            got,
            vec![
                Entry::Hypervisor(FileRef { path: "\\bulkhead\\hypervisor.elf", sha256: None }),
                Entry::Gop { width: 1280, height: 800 },
                Entry::Cmdline("log=debug"),
                Entry::Module { name: "checks", file: FileRef { path: "\\m\\checks.elf", sha256: Some([0xab; 32]) } },
            ]
        );
    }

    #[test]
    fn reports_the_line_of_a_bad_entry() {
        let text = "hypervisor = x\ngop = widexhigh\n";
        let err = entries(text).find_map(Result::err).unwrap();
        assert_eq!(err.line, 2);
        assert_eq!(err.reason, "gop width is not a number");
    }

    #[test]
    fn rejects_unknown_keys_empty_paths_and_long_names() {
        assert!(entries("kernel = x").next().unwrap().is_err());
        assert!(entries("hypervisor =").next().unwrap().is_err());
        let long = format!("module {} = x", "n".repeat(33));
        assert!(entries(&long).next().unwrap().is_err());
        assert!(entries("gop = 0x600").next().unwrap().is_err());
        assert!(entries("hypervisor = x sha256:1234").next().unwrap().is_err());
        assert!(entries("hypervisor = x md5:00").next().unwrap().is_err());
    }
}
