//! Dynamically linked Debian programs for the initramfs (today e2fsprogs' `mke2fs` and
//! `e2fsck`, which busybox lacks): the packages are fetched like the kernel, and the
//! shared libraries that go in are exactly those the programs need, found by following
//! `DT_NEEDED` from the programs through the libraries the packages ship.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;

use super::GuestError;
use super::control;
use super::deb;
use super::debian::Archive;
use super::modules::section;
use super::resolve::PackageEntry;

/// The package the programs come from.
pub const ROOT_PACKAGE: &str = "e2fsprogs";

/// Programs taken from [`ROOT_PACKAGE`]: the name they get in `/sbin`, and the names
/// the package may ship them under (Debian ships each under several hard-linked names,
/// and a tarball holds only one of them as a regular file).
const PROGRAMS: &[(&str, &[&str])] = &[
    ("mke2fs", &["mke2fs", "mkfs.ext2", "mkfs.ext3", "mkfs.ext4"]),
    ("e2fsck", &["e2fsck", "fsck.ext2", "fsck.ext3", "fsck.ext4"]),
];

/// Extra names for the programs in `/sbin`.
const ALIASES: &[(&str, &str)] = &[("mkfs.ext4", "mke2fs"), ("fsck.ext4", "e2fsck")];

/// Where glibc's dynamic loader looks without an `ld.so.cache` on Debian (its `slibdir`).
const LIBRARY_DIR: &str = "lib/x86_64-linux-gnu";

/// Which packages the index must keep for [`fetch`]: the root package and libraries.
pub fn wanted_in_index(name: &str) -> bool {
    name == ROOT_PACKAGE || name.starts_with("lib")
}

/// Files to add to the initramfs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Userland {
    /// (path inside the archive, mode, contents), in a stable order.
    pub files: Vec<(String, u32, Vec<u8>)>,
    /// (link path, target).
    pub symlinks: Vec<(String, String)>,
    /// e.g. `e2fsprogs 1.47.0-2+b2`.
    pub versions: Vec<String>,
}

/// Fetches e2fsprogs and the libraries its `Pre-Depends`/`Depends` name (following
/// those of the libraries in turn; non-library dependencies such as `logsave` are not
/// needed by the two programs), then picks the programs and their library closure.
pub fn fetch(archive: &Archive, cache: &Path) -> Result<Userland, GuestError> {
    let universe = &archive.universe;
    let root = universe.newest_named(ROOT_PACKAGE)?;
    let mut packages: Vec<&PackageEntry> = vec![root];
    let mut queue = vec![root];
    while let Some(p) = queue.pop() {
        let field = format!("{}, {}", p.pre_depends, p.depends);
        let groups = control::parse_relations(&field)
            .map_err(|reason| GuestError::BadIndex { what: format!("{} {}", p.name, p.version), reason })?;
        for group in groups {
            let Some(rel) = group.iter().find(|r| r.name.starts_with("lib")) else { continue };
            if packages.iter().any(|q| q.name == rel.name) {
                continue;
            }
            let entry = universe.newest(rel).ok_or_else(|| GuestError::PackageNotFound {
                name: rel.name.clone(),
                suites: universe.suites.clone(),
            })?;
            packages.push(entry);
            queue.push(entry);
        }
    }

    let mut programs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut libraries: Vec<Vec<u8>> = Vec::new();
    let mut config = None;
    for p in &packages {
        let dir = deb::extract_dir(cache, &p.name, &p.version);
        if !dir.is_dir() {
            let path = archive.fetch_deb(p)?;
            let is_root = p.name == ROOT_PACKAGE;
            deb::extract_once(&path, &dir, |file| select(file, is_root))?;
        }
        for (rel, data) in read_tree(&dir)? {
            if let Some(name) = rel.strip_prefix("sbin/") {
                programs.insert(name.to_owned(), data);
            } else if rel == "etc/mke2fs.conf" {
                config = Some(data);
            } else {
                libraries.push(data);
            }
        }
    }
    let mut out = Userland {
        versions: packages.iter().map(|p| format!("{} {}", p.name, p.version)).collect(),
        ..Userland::default()
    };
    for (name, _) in PROGRAMS {
        let data = programs
            .remove(*name)
            .ok_or_else(|| GuestError::MissingFile { package: ROOT_PACKAGE.into(), what: format!("/sbin/{name}") })?;
        out.files.push((format!("sbin/{name}"), 0o755, data));
    }
    let closure = library_closure(&out.files, &libraries)
        .map_err(|what| GuestError::MissingFile { package: packages_named(&packages), what })?;
    out.files.extend(closure);
    if let Some(conf) = config {
        out.files.push(("etc/mke2fs.conf".into(), 0o644, conf));
    }
    out.symlinks = ALIASES.iter().map(|(link, target)| (format!("sbin/{link}"), (*target).to_owned())).collect();
    Ok(out)
}

fn packages_named(packages: &[&PackageEntry]) -> String {
    packages.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// Which files of a package to keep, and under which name: the programs (from the root
/// package), its `mke2fs.conf`, and every shared library, flattened to `lib/<file>`.
fn select(path: &str, is_root: bool) -> Option<String> {
    let rest = path.strip_prefix("usr/").unwrap_or(path);
    if is_root {
        if let Some(file) = rest.strip_prefix("sbin/") {
            let (name, _) = PROGRAMS.iter().find(|(_, names)| names.contains(&file))?;
            return Some(format!("sbin/{name}"));
        }
        if path == "etc/mke2fs.conf" {
            return Some(path.to_owned());
        }
    }
    let file = rest.strip_prefix("lib/x86_64-linux-gnu/").or_else(|| rest.strip_prefix("lib64/"))?;
    (!file.contains('/') && file.contains(".so")).then(|| format!("lib/{file}"))
}

/// Every regular file below `dir`, as (path relative to `dir`, contents), sorted.
fn read_tree(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, GuestError> {
    let mut out = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let here = dir.join(&rel);
        for entry in fs::read_dir(&here).map_err(GuestError::io(&here))? {
            let entry = entry.map_err(GuestError::io(&here))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let child = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            if entry.file_type().map_err(GuestError::io(entry.path()))?.is_dir() {
                stack.push(child);
            } else {
                let data = fs::read(entry.path()).map_err(GuestError::io(entry.path()))?;
                out.push((child, data));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The libraries `programs` need, directly or through each other, placed where the
/// loader finds them: each under its `DT_SONAME` in [`LIBRARY_DIR`], and the loader
/// itself at the path the programs' `PT_INTERP` names. An error names what is missing.
pub fn library_closure(
    programs: &[(String, u32, Vec<u8>)],
    libraries: &[Vec<u8>],
) -> Result<Vec<(String, u32, Vec<u8>)>, String> {
    let mut by_soname: HashMap<String, &[u8]> = HashMap::new();
    for lib in libraries {
        // Non-ELF files and objects without a soname (linker scripts, plugins) are
        // never loaded by name.
        if let Ok(DynamicInfo { soname: Some(soname), .. }) = dynamic_info(lib) {
            by_soname.entry(soname).or_insert(lib);
        }
    }
    let mut out: BTreeMap<String, (u32, Vec<u8>)> = BTreeMap::new();
    let mut queue: Vec<String> = Vec::new();
    // libc names the loader as a library too; the loader is already in memory by then,
    // so its one copy at the PT_INTERP path serves both.
    let mut loaders: Vec<String> = Vec::new();
    for (path, _, data) in programs {
        let info = dynamic_info(data).map_err(|e| format!("{path}: {e}"))?;
        if let Some(interp) = interp(data).map_err(|e| format!("{path}: {e}"))? {
            let soname = interp.rsplit('/').next().unwrap_or(&interp).to_owned();
            let loader = by_soname.get(soname.as_str()).ok_or_else(|| format!("the dynamic loader {interp}"))?;
            out.insert(interp.trim_start_matches('/').to_owned(), (0o755, loader.to_vec()));
            loaders.push(soname);
        }
        queue.extend(info.needed);
    }
    while let Some(soname) = queue.pop() {
        let path = format!("{LIBRARY_DIR}/{soname}");
        if out.contains_key(&path) || loaders.contains(&soname) {
            continue;
        }
        let lib = by_soname.get(soname.as_str()).ok_or_else(|| format!("the shared library {soname}"))?;
        let info = dynamic_info(lib).map_err(|e| format!("{soname}: {e}"))?;
        queue.extend(info.needed);
        out.insert(path, (0o755, lib.to_vec()));
    }
    Ok(out.into_iter().map(|(path, (mode, data))| (path, mode, data)).collect())
}

/// What the dynamic section says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DynamicInfo {
    pub soname: Option<String>,
    pub needed: Vec<String>,
}

const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_SONAME: u64 = 14;

/// `DT_NEEDED` and `DT_SONAME` of an ELF64 object, from its `.dynamic` and `.dynstr`
/// sections (Debian's binaries keep their section headers).
pub fn dynamic_info(elf: &[u8]) -> Result<DynamicInfo, String> {
    let dynamic = section(elf, ".dynamic")?.ok_or("no .dynamic section: not dynamically linked")?;
    let strings = section(elf, ".dynstr")?.ok_or("no .dynstr section")?;
    let string = |off: u64| -> Result<String, String> {
        let start = usize::try_from(off).map_err(|_| "bad string offset")?;
        let s = strings.get(start..).ok_or("string offset outside .dynstr")?;
        let end = s.iter().position(|&b| b == 0).ok_or("unterminated string in .dynstr")?;
        Ok(String::from_utf8_lossy(&s[..end]).into_owned())
    };
    let mut info = DynamicInfo::default();
    for entry in dynamic.chunks_exact(16) {
        let tag = u64::from_le_bytes(entry[..8].try_into().map_err(|_| "short entry")?);
        let value = u64::from_le_bytes(entry[8..].try_into().map_err(|_| "short entry")?);
        match tag {
            DT_NULL => break,
            DT_NEEDED => info.needed.push(string(value)?),
            DT_SONAME => info.soname = Some(string(value)?),
            _ => {}
        }
    }
    Ok(info)
}

/// The program interpreter (`.interp`), if any.
fn interp(elf: &[u8]) -> Result<Option<String>, String> {
    Ok(section(elf, ".interp")?.map(|s| String::from_utf8_lossy(s.split(|&b| b == 0).next().unwrap_or(s)).into_owned()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An ELF64 with `.interp` (when given), `.dynstr` and `.dynamic` sections.
    pub(crate) fn fake_object(interp_path: Option<&str>, soname: Option<&str>, needed: &[&str]) -> Vec<u8> {
        let mut dynstr = vec![0u8];
        let mut dynamic = Vec::new();
        let mut add = |tag: u64, s: &str| {
            dynamic.extend_from_slice(&tag.to_le_bytes());
            dynamic.extend_from_slice(&(dynstr.len() as u64).to_le_bytes());
            dynstr.extend_from_slice(s.as_bytes());
            dynstr.push(0);
        };
        for n in needed {
            add(DT_NEEDED, n);
        }
        if let Some(s) = soname {
            add(DT_SONAME, s);
        }
        dynamic.extend_from_slice(&[0u8; 16]);
        let interp_bytes = interp_path.map(|p| format!("{p}\0").into_bytes()).unwrap_or_default();
        let shstrtab = b"\0.shstrtab\0.dynamic\0.dynstr\0.interp\0";
        let mut elf = vec![0u8; 0x40];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let place = |elf: &mut Vec<u8>, data: &[u8]| {
            let off = elf.len();
            elf.extend_from_slice(data);
            (off, data.len())
        };
        let names = place(&mut elf, shstrtab);
        let dynamic_at = place(&mut elf, &dynamic);
        let dynstr_at = place(&mut elf, &dynstr);
        let interp_at = place(&mut elf, &interp_bytes);
        let shoff = elf.len();
        let mut headers = vec![(0u32, (0, 0)), (1, names), (11, dynamic_at), (20, dynstr_at)];
        if interp_path.is_some() {
            headers.push((28, interp_at));
        }
        for (name, (off, size)) in &headers {
            let mut h = [0u8; 0x40];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(*off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(*size as u64).to_le_bytes());
            elf.extend_from_slice(&h);
        }
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&0x40u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&(headers.len() as u16).to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        elf
    }

    #[test]
    fn reads_needed_and_soname_and_survives_truncation() {
        let lib = fake_object(None, Some("libext2fs.so.2"), &["libcom_err.so.2", "libc.so.6"]);
        let info = dynamic_info(&lib).unwrap();
        assert_eq!(info.soname.as_deref(), Some("libext2fs.so.2"));
        assert_eq!(info.needed, ["libcom_err.so.2", "libc.so.6"]);
        for len in [0, 0x30, lib.len() - 0x28] {
            assert!(dynamic_info(&lib[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn closure_takes_exactly_the_needed_libraries_and_the_loader() {
        let loader = "/lib64/ld-linux-x86-64.so.2";
        let program = fake_object(Some(loader), None, &["libext2fs.so.2", "libc.so.6"]);
        let libraries = vec![
            fake_object(None, Some("libext2fs.so.2"), &["libcom_err.so.2", "libc.so.6"]),
            fake_object(None, Some("libcom_err.so.2"), &["libc.so.6"]),
            fake_object(None, Some("libc.so.6"), &["ld-linux-x86-64.so.2"]),
            fake_object(None, Some("ld-linux-x86-64.so.2"), &[]),
            fake_object(None, Some("libm.so.6"), &["libc.so.6"]),
            b"/* GNU ld script */".to_vec(),
        ];
        let programs = vec![("sbin/mke2fs".to_owned(), 0o755, program)];
        let closure = library_closure(&programs, &libraries).unwrap();
        let paths: Vec<&str> = closure.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "lib/x86_64-linux-gnu/libc.so.6",
                "lib/x86_64-linux-gnu/libcom_err.so.2",
                "lib/x86_64-linux-gnu/libext2fs.so.2",
                "lib64/ld-linux-x86-64.so.2",
            ]
        );
        assert_eq!(closure[2].2, libraries[0]);
        assert_eq!(closure[3].2, libraries[3]);

        let missing = library_closure(&programs, &libraries[..1]).unwrap_err();
        assert!(missing.contains("ld-linux-x86-64.so.2") || missing.contains("libc.so.6"), "{missing}");
    }

    #[test]
    fn file_selection() {
        assert_eq!(select("sbin/mkfs.ext4", true).as_deref(), Some("sbin/mke2fs"));
        assert_eq!(select("usr/sbin/fsck.ext2", true).as_deref(), Some("sbin/e2fsck"));
        assert_eq!(select("sbin/debugfs", true), None);
        assert_eq!(select("sbin/mke2fs", false), None);
        assert_eq!(select("etc/mke2fs.conf", true).as_deref(), Some("etc/mke2fs.conf"));
        assert_eq!(select("lib/x86_64-linux-gnu/libc.so.6", false).as_deref(), Some("lib/libc.so.6"));
        assert_eq!(select("usr/lib/x86_64-linux-gnu/libext2fs.so.2.4", false).as_deref(), Some("lib/libext2fs.so.2.4"));
        assert_eq!(select("lib64/ld-linux-x86-64.so.2", false).as_deref(), Some("lib/ld-linux-x86-64.so.2"));
        assert_eq!(select("usr/lib/x86_64-linux-gnu/gconv/UTF-16.so", false), None);
        assert_eq!(select("usr/share/doc/libc6/copyright", false), None);
        assert!(wanted_in_index("libc6") && wanted_in_index("e2fsprogs") && !wanted_in_index("logsave"));
    }
}
