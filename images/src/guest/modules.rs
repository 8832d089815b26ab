//! Kernel modules of an extracted kernel package: finding them by name, reading their
//! dependencies from `.modinfo` (the .deb ships no modules.dep; depmod makes it on
//! install) and ordering them so each loads after what it needs.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::GuestError;

/// Modules of one kernel release: `/lib/modules/<release>` in the extracted package.
#[derive(Debug)]
pub struct ModuleTree {
    root: PathBuf,
    release: String,
    /// Normalised name (`virtio_pci`) → path relative to `root`.
    files: HashMap<String, String>,
    builtin: HashSet<String>,
}

/// A module ready for the initramfs: uncompressed, with its path below `/lib/modules`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadableModule {
    pub name: String,
    /// Path inside the initramfs, e.g. `lib/modules/6.1.0-56-cloud-amd64/kernel/.../virtio.ko`.
    pub path: String,
    pub data: Vec<u8>,
}

/// Module names treat `-` and `_` alike.
pub fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

fn name_of(file: &str) -> Option<String> {
    let base = file.rsplit('/').next()?;
    [".ko", ".ko.xz", ".ko.zst", ".ko.gz"].iter().find_map(|ext| base.strip_suffix(ext)).map(normalise)
}

impl ModuleTree {
    pub fn open(root: &Path, release: &str) -> Result<ModuleTree, GuestError> {
        let mut files = HashMap::new();
        let mut stack = vec![String::new()];
        while let Some(rel) = stack.pop() {
            let dir = root.join(&rel);
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && rel.is_empty() => break,
                Err(e) => {
                    return Err(GuestError::Io { path: dir, source: e });
                }
            };
            for entry in entries {
                let entry = entry.map_err(GuestError::io(&dir))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let child = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
                let kind = entry.file_type().map_err(GuestError::io(entry.path()))?;
                if kind.is_dir() {
                    stack.push(child);
                } else if let Some(module) = name_of(&name) {
                    files.insert(module, child);
                }
            }
        }
        let builtin =
            fs::read_to_string(root.join("modules.builtin")).unwrap_or_default().lines().filter_map(name_of).collect();
        Ok(ModuleTree { root: root.to_owned(), release: release.to_owned(), files, builtin })
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalise(name))
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// The requested modules and their dependencies, dependencies first. Built-in
    /// modules need no loading and are skipped.
    pub fn resolve(&self, requested: &[&str]) -> Result<Vec<LoadableModule>, GuestError> {
        let mut order = Vec::new();
        let mut state: HashMap<String, bool> = HashMap::new(); // false: visiting, true: done
        for name in requested {
            self.visit(&normalise(name), &mut state, &mut order)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        state: &mut HashMap<String, bool>,
        order: &mut Vec<LoadableModule>,
    ) -> Result<(), GuestError> {
        match state.get(name) {
            Some(true) => return Ok(()),
            Some(false) => {
                // A cycle: the kernel would refuse these too.
                return Err(GuestError::BadModule {
                    path: self.root.join(name),
                    reason: "circular module dependency".into(),
                });
            }
            None => {}
        }
        if self.is_builtin(name) && !self.files.contains_key(name) {
            log::debug!(target: "guest", "module {name} is built into {}", self.release);
            state.insert(name.to_owned(), true);
            return Ok(());
        }
        let rel = self.files.get(name).ok_or_else(|| GuestError::ModuleNotFound {
            name: name.to_owned(),
            kernel_version: self.release.clone(),
        })?;
        state.insert(name.to_owned(), false);
        let path = self.root.join(rel);
        let data = read_module(&path)?;
        for dep in modinfo(&data, "depends").map_err(|reason| GuestError::BadModule { path: path.clone(), reason })? {
            for dep in dep.split(',').filter(|d| !d.is_empty()) {
                self.visit(&normalise(dep), state, order)?;
            }
        }
        state.insert(name.to_owned(), true);
        let rel = rel.trim_end_matches(".xz").trim_end_matches(".zst").trim_end_matches(".gz");
        order.push(LoadableModule { name: name.to_owned(), path: format!("lib/modules/{}/{rel}", self.release), data });
        Ok(())
    }
}

/// Reads a module, decompressing `.ko.xz`/`.ko.zst`/`.ko.gz` so that busybox `insmod`
/// (which may lack the decompressors) can load it.
fn read_module(path: &Path) -> Result<Vec<u8>, GuestError> {
    let raw = fs::read(path).map_err(GuestError::io(path))?;
    let name = path.to_string_lossy();
    let mut out = Vec::new();
    let result = if name.ends_with(".xz") {
        lzma_rust2::XzReader::new(raw.as_slice(), true).read_to_end(&mut out)
    } else if name.ends_with(".zst") {
        ruzstd::decoding::StreamingDecoder::new(raw.as_slice())
            .map_err(std::io::Error::other)
            .and_then(|mut d| d.read_to_end(&mut out))
    } else if name.ends_with(".gz") {
        flate2::read::GzDecoder::new(raw.as_slice()).read_to_end(&mut out)
    } else {
        out = raw;
        Ok(0)
    };
    result.map_err(|e| GuestError::BadModule { path: path.to_owned(), reason: format!("cannot decompress: {e}") })?;
    if !out.starts_with(b"\x7fELF") {
        return Err(GuestError::BadModule { path: path.to_owned(), reason: "not an ELF object".into() });
    }
    Ok(out)
}

/// Values of `key=` in the module's `.modinfo` section (NUL-separated `key=value`).
pub fn modinfo(elf: &[u8], key: &str) -> Result<Vec<String>, String> {
    let section = section(elf, ".modinfo")?.ok_or("no .modinfo section")?;
    let prefix = format!("{key}=");
    Ok(section
        .split(|&b| b == 0)
        .filter_map(|s| s.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect())
}

/// Finds a section of an ELF64 little-endian object by name. Bounds are checked
/// everywhere: a truncated file gives an error, not a panic.
pub(super) fn section<'a>(elf: &'a [u8], wanted: &str) -> Result<Option<&'a [u8]>, String> {
    let u16_at = |o: usize| -> Result<u16, String> {
        let b = elf.get(o..o + 2).ok_or("truncated ELF")?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| -> Result<u32, String> {
        let b = elf.get(o..o + 4).ok_or("truncated ELF")?;
        Ok(u32::from_le_bytes(b.try_into().map_err(|_| "truncated ELF")?))
    };
    let u64_at = |o: usize| -> Result<usize, String> {
        let b = elf.get(o..o + 8).ok_or("truncated ELF")?;
        usize::try_from(u64::from_le_bytes(b.try_into().map_err(|_| "truncated ELF")?))
            .map_err(|_| "offset too large".to_owned())
    };
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return Err("not a little-endian ELF64 object".into());
    }
    let shoff = u64_at(0x28)?;
    let shentsize = usize::from(u16_at(0x3a)?);
    let shnum = usize::from(u16_at(0x3c)?);
    let shstrndx = usize::from(u16_at(0x3e)?);
    if shentsize < 0x40 {
        return Err("bad section header size".into());
    }
    let header = |i: usize| -> Result<(usize, &'a [u8]), String> {
        let h = shoff.checked_add(i.checked_mul(shentsize).ok_or("overflow")?).ok_or("overflow")?;
        let name = u32_at(h)? as usize;
        let (off, size) = (u64_at(h + 0x18)?, u64_at(h + 0x20)?);
        let end = off.checked_add(size).ok_or("overflow")?;
        let data = elf.get(off..end).ok_or("section outside the file")?;
        Ok((name, data))
    };
    let (_, names) = header(shstrndx)?;
    for i in 0..shnum {
        let (name_off, data) = header(i)?;
        let name = names.get(name_off..).ok_or("bad section name")?;
        let name = name.split(|&b| b == 0).next().unwrap_or_default();
        if name == wanted.as_bytes() {
            return Ok(Some(data));
        }
    }
    Ok(None)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ELF64 with a section-name table and a `.modinfo` section.
    pub(crate) fn fake_module(modinfo: &str) -> Vec<u8> {
        let shstrtab = b"\0.shstrtab\0.modinfo\0";
        let mut elf = vec![0u8; 0x40];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let modinfo_off = elf.len();
        elf.extend_from_slice(modinfo.as_bytes());
        let names_off = elf.len();
        elf.extend_from_slice(shstrtab);
        let shoff = elf.len();
        let mut sh = |name: u32, off: usize, size: usize| {
            let mut h = [0u8; 0x40];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&h);
        };
        sh(0, 0, 0);
        sh(1, names_off, shstrtab.len());
        sh(11, modinfo_off, modinfo.len());
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&0x40u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        elf
    }

    #[test]
    fn reads_modinfo_and_survives_truncation() {
        let m = fake_module("license=GPL\0depends=virtio,virtio_ring\0name=virtio_net\0");
        assert_eq!(modinfo(&m, "depends").unwrap(), ["virtio,virtio_ring"]);
        assert_eq!(modinfo(&m, "name").unwrap(), ["virtio_net"]);
        for len in [0, 5, 0x30, m.len() - 0x20] {
            assert!(modinfo(&m[..len], "depends").is_err(), "len {len}");
        }
    }

    #[test]
    fn orders_dependencies_first_and_skips_builtins() {
        let root = std::env::temp_dir().join(format!("bulkhead-mods-{}", std::process::id()));
        let k = root.join("kernel/drivers");
        fs::create_dir_all(&k).unwrap();
        let write =
            |name: &str, deps: &str| fs::write(k.join(name), fake_module(&format!("depends={deps}\0"))).unwrap();
        write("virtio-net.ko", "net_failover,virtio_ring");
        write("net_failover.ko", "failover");
        write("failover.ko", "");
        write("virtio_ring.ko", "");
        fs::write(root.join("modules.builtin"), "kernel/drivers/i8042.ko\n").unwrap();
        let tree = ModuleTree::open(&root, "6.1.0-test").unwrap();
        assert_eq!(tree.len(), 4);
        let order = tree.resolve(&["virtio_net", "i8042", "failover"]).unwrap();
        let names: Vec<_> = order.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["failover", "net_failover", "virtio_ring", "virtio_net"]);
        assert_eq!(order[3].path, "lib/modules/6.1.0-test/kernel/drivers/virtio-net.ko");
        let err = tree.resolve(&["nope"]).unwrap_err();
        assert!(matches!(err, GuestError::ModuleNotFound { .. }), "{err}");
        write("a.ko", "b");
        write("b.ko", "a");
        let tree = ModuleTree::open(&root, "6.1.0-test").unwrap();
        assert!(tree.resolve(&["a"]).is_err());
        fs::remove_dir_all(&root).unwrap();
    }
}
