//! The files on the stick's ESP that an install copies.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use bulkhead_abi::manifest::{self, Entry};
use sha2::{Digest, Sha256};
use uefi::CString16;
use uefi::fs::FileSystem;

use super::{ANSWER_PATH, INSTALLED_LOADER};

const STICK_LOADER: &str = "\\EFI\\BOOT\\BOOTX64.EFI";
const MANIFEST_PATH: &str = "\\bulkhead\\manifest.txt";
/// Directory depth and file count the stick walk accepts.
const MAX_DEPTH: usize = 8;
const MAX_FILES: usize = 256;

/// A file from the stick with its digest.
pub struct StickFile {
    pub path: String,
    pub data: Vec<u8>,
    pub sha256: [u8; 32],
}

/// Reads every file on the stick's ESP (except the answer file, so the installed copy
/// does not install itself again), checks the manifest's digests, and adds the loader at
/// the boot entry's path.
pub fn stick_files(stick: &mut FileSystem) -> Result<Vec<StickFile>, String> {
    let mut paths = Vec::new();
    walk(stick, String::new(), 0, &mut paths)?;
    let mut files = Vec::new();
    for path in paths {
        if path.eq_ignore_ascii_case(ANSWER_PATH) {
            continue;
        }
        let data = read(stick, &path)?;
        files.push(StickFile { sha256: Sha256::digest(&data).into(), path, data });
    }
    let find = |files: &[StickFile], path: &str| files.iter().position(|f| f.path.eq_ignore_ascii_case(path));
    let manifest = find(&files, MANIFEST_PATH).ok_or_else(|| format!("the stick has no {MANIFEST_PATH}"))?;
    let text = core::str::from_utf8(&files[manifest].data).map_err(|_| format!("{MANIFEST_PATH} is not UTF-8"))?;
    for entry in manifest::entries(text) {
        let file = match entry.map_err(|e| format!("{MANIFEST_PATH}: {e}"))? {
            Entry::Hypervisor(file) | Entry::Module { file, .. } => file,
            _ => continue,
        };
        let index = find(&files, file.path).ok_or_else(|| format!("the stick lacks {}", file.path))?;
        if file.sha256.is_some_and(|want| want != files[index].sha256) {
            return Err(format!(
                "{} on the stick does not match the manifest's SHA-256 (damaged or truncated copy, {} bytes read); nothing was written",
                file.path,
                files[index].data.len()
            ));
        }
    }
    let loader = find(&files, STICK_LOADER).ok_or_else(|| format!("the stick has no {STICK_LOADER}"))?;
    if find(&files, INSTALLED_LOADER).is_none() {
        let copy =
            StickFile { path: INSTALLED_LOADER.into(), data: files[loader].data.clone(), sha256: files[loader].sha256 };
        files.push(copy);
    }
    Ok(files)
}

fn walk(fs: &mut FileSystem, dir: String, depth: usize, out: &mut Vec<String>) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("{dir} is nested too deeply"));
    }
    let shown = if dir.is_empty() { "\\".to_string() } else { dir.clone() };
    let path16 = CString16::try_from(shown.as_str()).map_err(|_| format!("bad path {shown}"))?;
    let entries: Vec<Box<uefi::proto::media::file::FileInfo>> = fs
        .read_dir(path16.as_ref())
        .map_err(|e| format!("cannot list {shown} on the stick: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|_| format!("cannot list {shown} on the stick"))?;
    for info in entries {
        let name = info.file_name().to_string();
        if name == "." || name == ".." {
            continue;
        }
        let path = format!("{dir}\\{name}");
        if info.is_directory() {
            walk(fs, path, depth + 1, out)?;
        } else {
            if out.len() >= MAX_FILES {
                return Err(format!("more than {MAX_FILES} files on the stick"));
            }
            out.push(path);
        }
    }
    Ok(())
}

fn read(fs: &mut FileSystem, path: &str) -> Result<Vec<u8>, String> {
    let path16 = CString16::try_from(path).map_err(|_| format!("bad path {path}"))?;
    fs.read(path16.as_ref()).map_err(|e| format!("cannot read {path} from the stick: {e}"))
}
