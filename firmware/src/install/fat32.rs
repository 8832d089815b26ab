//! A FAT32 formatter that lays out a fixed set of files (Microsoft FAT specification,
//! "FAT: General Overview of On-Disk Format" 1.03): boot sector, FSInfo, two FATs,
//! directories with long names, and each file in one contiguous run of clusters. It
//! returns what to write where; the caller moves the bytes, so this runs under tests.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

/// 4 KiB clusters: one block on 4Kn disks, and ≥ 65,525 clusters in a 288 MiB ESP.
pub const CLUSTER_BYTES: u64 = 4096;
const DIR_ENTRY: usize = 32;
const MIN_CLUSTERS: u64 = 65_525;
const MAX_CLUSTERS: u64 = 0x0FFF_FFF5 - 2;
const END_OF_CHAIN: u32 = 0x0FFF_FFFF;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_LONG_NAME: u8 = 0x0F;
/// 2026-01-01 00:00, the timestamp every entry carries (the files' own dates are not
/// known to the loader).
const DATE: u16 = ((2026 - 1980) << 9) | (1 << 5) | 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FatError {
    /// The volume holds fewer clusters than FAT32 allows.
    VolumeTooSmall {
        clusters: u64,
    },
    /// The files do not fit.
    Full {
        needed_clusters: u64,
        free_clusters: u64,
    },
    /// A path is empty, has an empty component or a name FAT cannot store.
    BadPath(String),
    /// A name appears twice in one directory, or as both a file and a directory.
    Duplicate(String),
    SectorSize(u64),
}

impl core::fmt::Display for FatError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FatError::VolumeTooSmall { clusters } => write!(f, "only {clusters} clusters, FAT32 needs {MIN_CLUSTERS}"),
            FatError::Full { needed_clusters, free_clusters } => {
                write!(f, "the files need {needed_clusters} clusters, the ESP has {free_clusters}")
            }
            FatError::BadPath(p) => write!(f, "cannot store {p:?} on FAT"),
            FatError::Duplicate(p) => write!(f, "{p:?} appears twice"),
            FatError::SectorSize(s) => write!(f, "{s}-byte sectors are not supported"),
        }
    }
}

/// A file to place: its path with `/` or `\` separators, and its length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec<'a> {
    pub path: &'a str,
    pub len: u64,
}

/// What to write, with offsets in bytes from the start of the volume. Every offset and
/// every metadata length is a multiple of the sector size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Boot sectors, FSInfo, both FATs and all directories.
    pub metadata: Vec<(u64, Vec<u8>)>,
    /// Where each input file's bytes go, in input order (empty files: `None`).
    pub file_offsets: Vec<Option<u64>>,
    pub clusters: u64,
    pub free_clusters: u64,
}

struct Geometry {
    sector: u64,
    reserved_sectors: u64,
    fat_sectors: u64,
    clusters: u64,
}

impl Geometry {
    fn new(volume_bytes: u64, sector: u64) -> Result<Geometry, FatError> {
        if sector != 512 && sector != 4096 {
            return Err(FatError::SectorSize(sector));
        }
        let total = volume_bytes / sector;
        let per_cluster = CLUSTER_BYTES / sector;
        // Boot sector, FSInfo and their backups at 6 and 7, rounded up to 16 KiB.
        let reserved_sectors = (16 * 1024 / sector).max(8);
        let mut fat_sectors = 1;
        loop {
            let data = total.saturating_sub(reserved_sectors + 2 * fat_sectors);
            let clusters = (data / per_cluster).min(MAX_CLUSTERS);
            let needed = ((clusters + 2) * 4).div_ceil(sector);
            if needed <= fat_sectors {
                if clusters < MIN_CLUSTERS {
                    return Err(FatError::VolumeTooSmall { clusters });
                }
                return Ok(Geometry { sector, reserved_sectors, fat_sectors, clusters });
            }
            fat_sectors = needed;
        }
    }

    fn cluster_offset(&self, cluster: u32) -> u64 {
        (self.reserved_sectors + 2 * self.fat_sectors) * self.sector + u64::from(cluster - 2) * CLUSTER_BYTES
    }
}

/// A directory being laid out: its children by index into `Tree::nodes`.
struct Node {
    name: String,
    /// `None` for directories.
    file: Option<usize>,
    children: Vec<usize>,
    parent: usize,
    first_cluster: u32,
    clusters: u64,
    /// The file's length in bytes.
    len: u64,
}

/// Lays out `files` on a volume of `volume_bytes` with `sector`-byte sectors.
/// `volume_id` is the serial number; `hidden_sectors` the partition's first LBA.
pub fn format(
    volume_bytes: u64,
    sector: u64,
    hidden_sectors: u64,
    volume_id: u32,
    files: &[FileSpec<'_>],
) -> Result<Volume, FatError> {
    let geo = Geometry::new(volume_bytes, sector)?;
    let root = Node {
        name: String::new(),
        file: None,
        children: Vec::new(),
        parent: 0,
        first_cluster: 0,
        clusters: 0,
        len: 0,
    };
    let mut nodes = vec![root];
    for (index, spec) in files.iter().enumerate() {
        if spec.len > u64::from(u32::MAX) {
            return Err(FatError::BadPath(spec.path.into()));
        }
        let leaf = insert(&mut nodes, index, spec.path)?;
        nodes[leaf].len = spec.len;
    }

    // Directories first (root is cluster 2), then files, each in one run.
    let mut next = 2u32;
    let order = breadth_first(&nodes);
    for &n in &order {
        let bytes = match nodes[n].file {
            None => (dir_entry_count(&nodes, n) * DIR_ENTRY) as u64,
            Some(i) => files[i].len,
        };
        let clusters = bytes.div_ceil(CLUSTER_BYTES).max(u64::from(nodes[n].file.is_none()));
        if clusters > 0 {
            nodes[n].first_cluster = next;
            nodes[n].clusters = clusters;
            next = u32::try_from(u64::from(next) + clusters).unwrap_or(u32::MAX);
        }
    }
    let used = u64::from(next) - 2;
    if used > geo.clusters {
        return Err(FatError::Full { needed_clusters: used, free_clusters: geo.clusters });
    }

    let fat = fat_table(&geo, &nodes);
    let mut metadata = Vec::new();
    let mut reserved = vec![0u8; (geo.reserved_sectors * sector) as usize];
    let boot = boot_sector(&geo, hidden_sectors, volume_id);
    let info = fs_info(geo.clusters - used, next);
    for (at, bytes) in [(0, &boot), (1, &info), (6, &boot), (7, &info)] {
        let off = at * sector as usize;
        reserved[off..off + bytes.len()].copy_from_slice(bytes);
    }
    metadata.push((0, reserved));
    let fat_bytes = geo.fat_sectors * sector;
    metadata.push((geo.reserved_sectors * sector, fat.clone()));
    metadata.push((geo.reserved_sectors * sector + fat_bytes, fat));
    for &n in &order {
        if nodes[n].file.is_none() {
            let bytes = directory(&nodes, n);
            metadata.push((geo.cluster_offset(nodes[n].first_cluster), bytes));
        }
    }
    let mut file_offsets = vec![None; files.len()];
    for node in &nodes {
        if let Some(i) = node.file
            && node.clusters > 0
        {
            file_offsets[i] = Some(geo.cluster_offset(node.first_cluster));
        }
    }
    Ok(Volume { metadata, file_offsets, clusters: geo.clusters, free_clusters: geo.clusters - used })
}

fn insert(nodes: &mut Vec<Node>, file: usize, path: &str) -> Result<usize, FatError> {
    let parts: Vec<&str> = path.split(['/', '\\']).filter(|p| !p.is_empty()).collect();
    let bad = || FatError::BadPath(path.into());
    let (leaf, dirs) = parts.split_last().ok_or_else(bad)?;
    let mut at = 0;
    for part in dirs.iter().chain(core::iter::once(leaf)) {
        if !valid_long_name(part) {
            return Err(bad());
        }
    }
    for dir in dirs {
        let existing = nodes[at].children.iter().copied().find(|&c| nodes[c].name.eq_ignore_ascii_case(dir));
        at = match existing {
            Some(c) if nodes[c].file.is_none() => c,
            Some(_) => return Err(FatError::Duplicate(path.into())),
            None => push(nodes, at, dir, None),
        };
    }
    if nodes[at].children.iter().any(|&c| nodes[c].name.eq_ignore_ascii_case(leaf)) {
        return Err(FatError::Duplicate(path.into()));
    }
    Ok(push(nodes, at, leaf, Some(file)))
}

fn push(nodes: &mut Vec<Node>, parent: usize, name: &str, file: Option<usize>) -> usize {
    nodes.push(Node { name: name.into(), file, children: Vec::new(), parent, first_cluster: 0, clusters: 0, len: 0 });
    let id = nodes.len() - 1;
    nodes[parent].children.push(id);
    id
}

fn valid_long_name(name: &str) -> bool {
    name.len() <= 255
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii() && !c.is_ascii_control() && !"\"*/:<>?\\|".contains(c))
}

fn breadth_first(nodes: &[Node]) -> Vec<usize> {
    let mut order = vec![0];
    let mut i = 0;
    while i < order.len() {
        order.extend(nodes[order[i]].children.iter().copied());
        i += 1;
    }
    order
}

/// Entries a directory needs: `.` and `..` (not in the root), and for each child its
/// long-name entries plus the short entry.
fn dir_entry_count(nodes: &[Node], dir: usize) -> usize {
    let dots = if dir == 0 { 0 } else { 2 };
    dots + nodes[dir].children.iter().map(|&c| 1 + long_entries(&nodes[c].name)).sum::<usize>()
}

fn long_entries(name: &str) -> usize {
    if plain_short_name(name).is_some() { 0 } else { name.len().div_ceil(13) }
}

fn fat_table(geo: &Geometry, nodes: &[Node]) -> Vec<u8> {
    let mut fat = vec![0u8; (geo.fat_sectors * geo.sector) as usize];
    let mut set = |cluster: u32, value: u32| {
        let at = cluster as usize * 4;
        fat[at..at + 4].copy_from_slice(&value.to_le_bytes());
    };
    set(0, 0x0FFF_FFF8);
    set(1, END_OF_CHAIN);
    for node in nodes.iter().filter(|n| n.clusters > 0) {
        let last = node.first_cluster + node.clusters as u32 - 1;
        for c in node.first_cluster..last {
            set(c, c + 1);
        }
        set(last, END_OF_CHAIN);
    }
    fat
}

fn boot_sector(geo: &Geometry, hidden_sectors: u64, volume_id: u32) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[0..3].copy_from_slice(&[0xEB, 0x58, 0x90]);
    b[3..11].copy_from_slice(b"BULKHEAD");
    b[11..13].copy_from_slice(&(geo.sector as u16).to_le_bytes());
    b[13] = (CLUSTER_BYTES / geo.sector) as u8;
    b[14..16].copy_from_slice(&(geo.reserved_sectors as u16).to_le_bytes());
    b[16] = 2; // FATs
    b[21] = 0xF8; // fixed disk
    b[24..26].copy_from_slice(&63u16.to_le_bytes());
    b[26..28].copy_from_slice(&255u16.to_le_bytes());
    b[28..32].copy_from_slice(&u32::try_from(hidden_sectors).unwrap_or(u32::MAX).to_le_bytes());
    let total = geo.reserved_sectors + 2 * geo.fat_sectors + geo.clusters * (CLUSTER_BYTES / geo.sector);
    b[32..36].copy_from_slice(&(total as u32).to_le_bytes());
    b[36..40].copy_from_slice(&(geo.fat_sectors as u32).to_le_bytes());
    b[44..48].copy_from_slice(&2u32.to_le_bytes()); // root directory cluster
    b[48..50].copy_from_slice(&1u16.to_le_bytes()); // FSInfo sector
    b[50..52].copy_from_slice(&6u16.to_le_bytes()); // backup boot sector
    b[64] = 0x80;
    b[66] = 0x29;
    b[67..71].copy_from_slice(&volume_id.to_le_bytes());
    b[71..82].copy_from_slice(b"BULKHEAD   ");
    b[82..90].copy_from_slice(b"FAT32   ");
    b[510] = 0x55;
    b[511] = 0xAA;
    b
}

fn fs_info(free: u64, next_free: u32) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[0..4].copy_from_slice(&0x4161_5252u32.to_le_bytes());
    b[484..488].copy_from_slice(&0x6141_7272u32.to_le_bytes());
    b[488..492].copy_from_slice(&(free as u32).to_le_bytes());
    b[492..496].copy_from_slice(&next_free.to_le_bytes());
    b[508..512].copy_from_slice(&0xAA55_0000u32.to_le_bytes());
    b
}

/// The 8.3 name when `name` already is a valid upper-case short name (no long entries).
fn plain_short_name(name: &str) -> Option<[u8; 11]> {
    let (base, ext) = name.rsplit_once('.').unwrap_or((name, ""));
    let ok = |s: &str, max| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    };
    if !ok(base, 8) || !(ext.is_empty() || ok(ext, 3)) {
        return None;
    }
    let mut short = [b' '; 11];
    short[..base.len()].copy_from_slice(base.as_bytes());
    short[8..8 + ext.len()].copy_from_slice(ext.as_bytes());
    Some(short)
}

/// A numbered short name (`BASIS~N.EXT`) for a long name; `n` makes it unique in its
/// directory.
fn numbered_short_name(name: &str, n: usize) -> [u8; 11] {
    let clean = |s: &str| -> Vec<u8> {
        s.bytes()
            .filter(|b| *b != b' ' && *b != b'.')
            .map(|b| if b.is_ascii_alphanumeric() { b.to_ascii_uppercase() } else { b'_' })
            .collect()
    };
    let (base, ext) = match name.rsplit_once('.') {
        Some((b, e)) if !b.is_empty() => (clean(b), clean(e)),
        _ => (clean(name), Vec::new()),
    };
    let mut tail = Vec::from(*b"~");
    tail.extend(alloc::format!("{n}").bytes());
    let keep = base.len().min(8 - tail.len());
    let mut short = [b' '; 11];
    short[..keep].copy_from_slice(&base[..keep]);
    short[keep..keep + tail.len()].copy_from_slice(&tail);
    let ext_len = ext.len().min(3);
    short[8..8 + ext_len].copy_from_slice(&ext[..ext_len]);
    short
}

fn short_name_checksum(short: &[u8; 11]) -> u8 {
    short.iter().fold(0u8, |sum, &b| ((sum & 1) << 7).wrapping_add(sum >> 1).wrapping_add(b))
}

fn short_entry(short: &[u8; 11], attr: u8, cluster: u32, size: u32) -> [u8; DIR_ENTRY] {
    let mut e = [0u8; DIR_ENTRY];
    e[0..11].copy_from_slice(short);
    e[11] = attr;
    for at in [16, 18, 24] {
        e[at..at + 2].copy_from_slice(&DATE.to_le_bytes());
    }
    e[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
    e[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
    e[28..32].copy_from_slice(&size.to_le_bytes());
    e
}

/// The long-name entries for `name`, in the order they are stored (last piece first).
fn long_name_entries(name: &str, checksum: u8) -> Vec<[u8; DIR_ENTRY]> {
    let units: Vec<u16> = name.encode_utf16().collect();
    let count = units.len().div_ceil(13);
    let mut entries = Vec::with_capacity(count);
    for seq in (1..=count).rev() {
        let mut e = [0u8; DIR_ENTRY];
        e[0] = seq as u8 | if seq == count { 0x40 } else { 0 };
        e[11] = ATTR_LONG_NAME;
        e[13] = checksum;
        let slots = (1..11).step_by(2).chain((14..26).step_by(2)).chain((28..32).step_by(2));
        for (i, at) in slots.enumerate() {
            let index = (seq - 1) * 13 + i;
            // The name ends with one NUL, and unused slots after it hold 0xFFFF.
            let unit = match index.cmp(&units.len()) {
                core::cmp::Ordering::Less => units[index],
                core::cmp::Ordering::Equal => 0,
                core::cmp::Ordering::Greater => 0xFFFF,
            };
            e[at..at + 2].copy_from_slice(&unit.to_le_bytes());
        }
        entries.push(e);
    }
    entries
}

fn directory(nodes: &[Node], dir: usize) -> Vec<u8> {
    let node = &nodes[dir];
    let mut bytes = Vec::with_capacity((node.clusters * CLUSTER_BYTES) as usize);
    if dir != 0 {
        bytes.extend(short_entry(b".          ", ATTR_DIRECTORY, node.first_cluster, 0));
        let parent = if node.parent == 0 { 0 } else { nodes[node.parent].first_cluster };
        bytes.extend(short_entry(b"..         ", ATTR_DIRECTORY, parent, 0));
    }
    let mut numbered = 0;
    for &c in &node.children {
        let child = &nodes[c];
        let short = match plain_short_name(&child.name) {
            Some(short) => short,
            None => {
                numbered += 1;
                let short = numbered_short_name(&child.name, numbered);
                for e in long_name_entries(&child.name, short_name_checksum(&short)) {
                    bytes.extend(e);
                }
                short
            }
        };
        let (attr, size) = match child.file {
            None => (ATTR_DIRECTORY, 0),
            Some(_) => (ATTR_ARCHIVE, child.len as u32),
        };
        bytes.extend(short_entry(&short, attr, child.first_cluster, size));
    }
    bytes.resize((node.clusters * CLUSTER_BYTES) as usize, 0);
    bytes
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, SeekFrom, Write};

    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn contents(i: usize, len: u64) -> Vec<u8> {
        (0..len).map(|b| (b as usize * 31 + i * 7) as u8).collect()
    }

    /// Writes the volume into a sparse file and opens it with the `fatfs` crate.
    fn materialise(volume_bytes: u64, sector: u64, files: &[FileSpec<'_>]) -> (Volume, std::fs::File) {
        let volume = format(volume_bytes, sector, 2048, 0x1234_5678, files).unwrap();
        let mut f = tempfile::tempfile().unwrap();
        f.set_len(volume_bytes).unwrap();
        for (at, bytes) in &volume.metadata {
            assert_eq!(at % sector, 0);
            assert_eq!(bytes.len() as u64 % sector, 0);
            f.seek(SeekFrom::Start(*at)).unwrap();
            f.write_all(bytes).unwrap();
        }
        for (i, (spec, at)) in files.iter().zip(&volume.file_offsets).enumerate() {
            if let Some(at) = at {
                assert_eq!(at % sector, 0);
                f.seek(SeekFrom::Start(*at)).unwrap();
                f.write_all(&contents(i, spec.len)).unwrap();
            } else {
                assert_eq!(spec.len, 0);
            }
        }
        f.seek(SeekFrom::Start(0)).unwrap();
        (volume, f)
    }

    fn read(fs: &fatfs::FileSystem<&mut std::fs::File>, path: &str) -> Vec<u8> {
        let mut data = Vec::new();
        fs.root_dir().open_file(path).unwrap().read_to_end(&mut data).unwrap();
        data
    }

    fn files() -> Vec<FileSpec<'static>> {
        vec![
            FileSpec { path: "\\EFI\\BOOT\\BOOTX64.EFI", len: 70_000 },
            FileSpec { path: "/EFI/BULKHEAD/BOOTX64.EFI", len: 70_000 },
            FileSpec { path: "/bulkhead/hypervisor.elf", len: 1_000_001 },
            FileSpec { path: "/bulkhead/manifest.txt", len: 300 },
            FileSpec { path: "/bulkhead/modules/a-rather-long-module-name_with-underscores", len: 4096 },
            FileSpec { path: "/bulkhead/modules/empty", len: 0 },
            FileSpec { path: "/bulkhead/modules/vms", len: 5 },
        ]
    }

    fn check(sector: u64) {
        let files = files();
        let (volume, mut f) = materialise(288 * MIB, sector, &files);
        let fs = fatfs::FileSystem::new(&mut f, fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.fat_type(), fatfs::FatType::Fat32);
        assert_eq!(fs.volume_label(), "BULKHEAD");
        assert_eq!(fs.volume_id(), 0x1234_5678);
        for (i, spec) in files.iter().enumerate() {
            let path = spec.path.replace('\\', "/");
            assert_eq!(read(&fs, path.trim_start_matches('/')), contents(i, spec.len), "{path}");
        }
        // Long names come back as written, and directories list exactly the files.
        let names: Vec<String> =
            fs.root_dir().open_dir("bulkhead/modules").unwrap().iter().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [".", "..", "a-rather-long-module-name_with-underscores", "empty", "vms"]);
        let stats = fs.stats().unwrap();
        assert_eq!(u64::from(stats.total_clusters()), volume.clusters);
        assert_eq!(u64::from(stats.free_clusters()), volume.free_clusters);
        assert_eq!(u64::from(stats.cluster_size()), CLUSTER_BYTES);
    }

    #[test]
    fn fatfs_reads_every_file_back_on_512_byte_sectors() {
        check(512);
    }

    #[test]
    fn fatfs_reads_every_file_back_on_4096_byte_sectors() {
        check(4096);
    }

    #[test]
    fn a_volume_with_too_few_clusters_for_fat32_is_refused() {
        let err = format(200 * MIB, 512, 0, 1, &files()).unwrap_err();
        assert!(matches!(err, FatError::VolumeTooSmall { clusters } if clusters < MIN_CLUSTERS), "{err:?}");
        assert!(format(288 * MIB, 4096, 0, 1, &files()).unwrap().clusters >= MIN_CLUSTERS);
    }

    #[test]
    fn files_that_do_not_fit_are_refused() {
        let big = [FileSpec { path: "/big", len: 300 * MIB }];
        assert!(matches!(format(288 * MIB, 512, 0, 1, &big), Err(FatError::Full { .. })));
    }

    #[test]
    fn bad_and_duplicate_paths_are_refused() {
        let dup = [FileSpec { path: "/a/B", len: 1 }, FileSpec { path: "/A/b", len: 1 }];
        assert!(matches!(format(288 * MIB, 512, 0, 1, &dup), Err(FatError::Duplicate(_))));
        let clash = [FileSpec { path: "/a", len: 1 }, FileSpec { path: "/a/b", len: 1 }];
        assert!(matches!(format(288 * MIB, 512, 0, 1, &clash), Err(FatError::Duplicate(_))));
        for bad in ["", "/", "/a/../b", "/x?y", "/a:b"] {
            let spec = [FileSpec { path: bad, len: 1 }];
            assert!(matches!(format(288 * MIB, 512, 0, 1, &spec), Err(FatError::BadPath(_))), "{bad:?}");
        }
    }

    #[test]
    fn short_names_follow_the_8_3_rules() {
        assert_eq!(&plain_short_name("BOOTX64.EFI").unwrap(), b"BOOTX64 EFI");
        assert_eq!(&plain_short_name("EFI").unwrap(), b"EFI        ");
        assert_eq!(plain_short_name("bulkhead"), None);
        assert_eq!(plain_short_name("TOOLONGNAME"), None);
        assert_eq!(&numbered_short_name("hypervisor.elf", 1), b"HYPERV~1ELF");
        assert_eq!(&numbered_short_name("a-b.c.toml", 12), b"A_BC~12 TOM");
        // The LFN checksum ties long entries to their short entry; fatfs drops long
        // names whose checksum does not match, which the listing tests above rely on.
        assert_ne!(short_name_checksum(b"HYPERV~1ELF"), short_name_checksum(b"HYPERV~2ELF"));
    }
}
