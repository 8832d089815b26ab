//! The `newc` cpio format the kernel unpacks into its initial rootfs
//! (Documentation/driver-api/early-userspace/buffer-format.rst): a 110-byte ASCII
//! header of 8-digit hex fields, the NUL-terminated name, padding to 4 bytes, the data,
//! padding to 4 bytes; the archive ends with an entry named `TRAILER!!!`.

use std::collections::HashSet;

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
pub const TRAILER: &str = "TRAILER!!!";

pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFCHR: u32 = 0o020000;

/// One archive member. Timestamps and owners are fixed (0, root) so builds reproduce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub mode: u32,
    /// (major, minor) for device nodes.
    pub rdev: (u32, u32),
    pub data: Vec<u8>,
}

/// Writes a newc archive. Parent directories are added automatically, before their
/// contents, because the kernel does not create them.
#[derive(Debug, Default)]
pub struct Writer {
    out: Vec<u8>,
    next_ino: u32,
    dirs: HashSet<String>,
}

impl Writer {
    pub fn new() -> Self {
        Writer { out: Vec::new(), next_ino: 1, dirs: HashSet::new() }
    }

    pub fn dir(&mut self, path: &str) {
        let path = path.trim_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return;
        }
        self.parents(path);
        self.dirs.insert(path.to_owned());
        self.raw(path, S_IFDIR | 0o755, (0, 0), &[]);
    }

    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) {
        let path = path.trim_matches('/');
        self.parents(path);
        self.raw(path, S_IFREG | (perm & 0o7777), (0, 0), data);
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        let path = path.trim_matches('/');
        self.parents(path);
        self.raw(path, S_IFLNK | 0o777, (0, 0), target.as_bytes());
    }

    pub fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) {
        let path = path.trim_matches('/');
        self.parents(path);
        self.raw(path, S_IFCHR | (perm & 0o7777), (major, minor), &[]);
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.raw(TRAILER, 0, (0, 0), &[]);
        self.out
    }

    fn parents(&mut self, path: &str) {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
    }

    fn raw(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        let ino = if name == TRAILER { 0 } else { self.next_ino };
        self.next_ino += 1;
        let nlink = if mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            u32::try_from(data.len()).expect("initramfs member over 4 GiB"),
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            u32::try_from(name.len() + 1).expect("path too long"),
            0, // check: only used by the "070702" CRC format
        ];
        self.out.extend_from_slice(MAGIC);
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        pad4(&mut self.out);
        self.out.extend_from_slice(data);
        pad4(&mut self.out);
    }
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn align4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// Parses a newc archive back into entries (without the trailer), checking magic,
/// hex fields and that padding bytes are zero.
pub fn parse(mut bytes: &[u8]) -> Result<Vec<Entry>, String> {
    let total = bytes.len();
    let mut entries = Vec::new();
    loop {
        let at = total - bytes.len();
        if !at.is_multiple_of(4) {
            return Err(format!("entry at {at} is not 4-byte aligned"));
        }
        let header = bytes.get(..HEADER_LEN).ok_or_else(|| format!("truncated header at {at}"))?;
        if &header[..6] != MAGIC {
            return Err(format!("bad magic at {at}"));
        }
        let mut fields = [0u32; 13];
        for (i, f) in fields.iter_mut().enumerate() {
            let hex = &header[6 + i * 8..14 + i * 8];
            let hex = std::str::from_utf8(hex).map_err(|_| format!("non-ASCII field at {at}"))?;
            *f = u32::from_str_radix(hex, 16).map_err(|_| format!("bad hex field {hex:?} at {at}"))?;
        }
        let (mode, filesize, namesize) = (fields[1], fields[6] as usize, fields[11] as usize);
        let name_end = HEADER_LEN + namesize;
        let data_start = align4(name_end);
        let data_end = data_start + filesize;
        let next = align4(data_end);
        if namesize == 0 || bytes.len() < next {
            return Err(format!("truncated entry at {at}"));
        }
        let name = &bytes[HEADER_LEN..name_end];
        let (name, nul) = name.split_at(namesize - 1);
        if nul != [0] {
            return Err(format!("name at {at} is not NUL-terminated"));
        }
        let pad_ok = bytes[name_end..data_start].iter().chain(&bytes[data_end..next]).all(|&b| b == 0);
        if !pad_ok {
            return Err(format!("non-zero padding in entry at {at}"));
        }
        let name = String::from_utf8(name.to_vec()).map_err(|_| format!("non-UTF-8 name at {at}"))?;
        if name == TRAILER {
            return Ok(entries);
        }
        entries.push(Entry { name, mode, rdev: (fields[9], fields[10]), data: bytes[data_start..data_end].to_vec() });
        bytes = &bytes[next..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_parents_first() {
        let mut w = Writer::new();
        w.file("/bin/busybox", 0o755, b"\x7fELF12345");
        w.symlink("bin/sh", "busybox");
        w.char_dev("dev/console", 0o600, 5, 1);
        w.file("init", 0o755, b"#!/bin/sh\n");
        w.dir("bin");
        let bytes = w.finish();
        assert_eq!(bytes.len() % 4, 0);
        let e = parse(&bytes).unwrap();
        let names: Vec<_> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["bin", "bin/busybox", "bin/sh", "dev", "dev/console", "init"]);
        assert_eq!(e[0].mode, S_IFDIR | 0o755);
        assert_eq!((e[1].mode, e[1].data.as_slice()), (S_IFREG | 0o755, &b"\x7fELF12345"[..]));
        assert_eq!((e[2].mode, e[2].data.as_slice()), (S_IFLNK | 0o777, &b"busybox"[..]));
        assert_eq!((e[4].mode, e[4].rdev), (S_IFCHR | 0o600, (5, 1)));
    }

    #[test]
    fn header_layout_matches_newc() {
        let mut w = Writer::new();
        w.file("ab", 0o644, b"xyz");
        let b = w.finish();
        assert_eq!(&b[..6], b"070701");
        assert_eq!(&b[6..14], b"00000001"); // ino
        assert_eq!(&b[14..22], b"000081a4"); // mode 0100644
        assert_eq!(&b[54..62], b"00000003"); // filesize
        assert_eq!(&b[94..102], b"00000003"); // namesize includes the NUL
        // 110 + 3 = 113 → name padded to 116, data 3 → padded to 120.
        assert_eq!(&b[110..116], b"ab\0\0\0\0");
        assert_eq!(&b[116..120], b"xyz\0");
        assert_eq!(&b[120..126], b"070701");
        assert!(b.windows(10).any(|w| w == TRAILER.as_bytes()));
    }

    #[test]
    fn rejects_corruption() {
        let mut w = Writer::new();
        w.file("a", 0o644, b"1");
        let good = w.finish();
        let mut bad = good.clone();
        bad[0] = b'1';
        assert!(parse(&bad).unwrap_err().contains("magic"));
        let mut bad = good.clone();
        bad[115] = 7; // padding after the file data
        assert!(parse(&bad).unwrap_err().contains("padding"));
        assert!(parse(&good[..good.len() - 8]).is_err());
        let mut bad = good;
        bad[20] = b'g';
        assert!(parse(&bad).unwrap_err().contains("hex"));
    }
}
