//! Reading .deb packages: an `ar` archive whose `data.tar.{xz,zst,gz}` member holds the
//! files. Only regular files that a filter asks for are written, below one directory.

use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use super::GuestError;
use super::fetch::temp_path;

/// Calls `visit(path, entry)` for every regular file in the package's data tarball;
/// `path` is relative (`boot/vmlinuz-6.1.0-56-cloud-amd64`) and never escapes.
pub fn for_each_file<R: Read>(
    deb: R,
    origin: &Path,
    mut visit: impl FnMut(&str, &mut dyn Read) -> Result<(), GuestError>,
) -> Result<(), GuestError> {
    let bad = |reason: String| GuestError::BadDeb { path: origin.to_owned(), reason };
    let mut archive = ar::Archive::new(deb);
    let mut seen_binary = false;
    while let Some(member) = archive.next_entry() {
        let mut member = member.map_err(|e| bad(format!("ar archive: {e}")))?;
        let id = String::from_utf8_lossy(member.header().identifier()).into_owned();
        if id == "debian-binary" {
            let mut v = String::new();
            member.read_to_string(&mut v).map_err(|e| bad(format!("debian-binary: {e}")))?;
            if !v.starts_with("2.") {
                return Err(bad(format!("unsupported format version {:?}", v.trim())));
            }
            seen_binary = true;
            continue;
        }
        let Some(compression) = id.strip_prefix("data.tar") else {
            continue;
        };
        if !seen_binary {
            return Err(bad("data member before debian-binary".into()));
        }
        let reader: Box<dyn Read + '_> = match compression {
            ".xz" => Box::new(lzma_rust2::XzReader::new(io::BufReader::new(member), true)),
            ".zst" => Box::new(
                ruzstd::decoding::StreamingDecoder::new(io::BufReader::new(member))
                    .map_err(|e| bad(format!("{id}: {e}")))?,
            ),
            ".gz" => Box::new(flate2::read::GzDecoder::new(member)),
            "" => Box::new(member),
            other => return Err(bad(format!("unsupported data.tar{other}"))),
        };
        let mut tar = tar::Archive::new(reader);
        let entries = tar.entries().map_err(|e| bad(format!("{id}: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| bad(format!("{id}: {e}")))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let raw = entry.path().map_err(|e| bad(format!("{id}: {e}")))?;
            let path = safe_relative(&raw).ok_or_else(|| bad(format!("unsafe path {}", raw.display())))?;
            visit(&path, &mut entry)?;
        }
        return Ok(());
    }
    Err(bad("no data.tar member".into()))
}

/// `./lib/x` → `lib/x`; `None` for absolute paths or `..`.
fn safe_relative(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(p) => parts.push(p.to_str()?),
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Extracts the files for which `select` returns a destination (relative) into `dest`,
/// unless `dest` already exists. Work happens in a temporary directory that is renamed
/// into place at the end, so `dest` is either absent or complete.
pub fn extract_once(deb: &Path, dest: &Path, select: impl Fn(&str) -> Option<String>) -> Result<(), GuestError> {
    if dest.is_dir() {
        return Ok(());
    }
    let tmp = temp_path(dest);
    let _ = fs::remove_dir_all(&tmp);
    let result = (|| {
        let file = fs::File::open(deb).map_err(GuestError::io(deb))?;
        let mut count = 0usize;
        for_each_file(io::BufReader::new(file), deb, |path, reader| {
            let Some(rel) = select(path) else {
                return Ok(());
            };
            let out = tmp.join(rel);
            if let Some(dir) = out.parent() {
                fs::create_dir_all(dir).map_err(GuestError::io(dir))?;
            }
            let mut f = fs::File::create(&out).map_err(GuestError::io(&out))?;
            io::copy(reader, &mut f)
                .map_err(|e| GuestError::BadDeb { path: deb.to_owned(), reason: format!("{path}: {e}") })?;
            count += 1;
            Ok(())
        })?;
        if count == 0 {
            fs::create_dir_all(&tmp).map_err(GuestError::io(&tmp))?;
        }
        match fs::rename(&tmp, dest) {
            // Another build finished the same extraction first; its copy is as good.
            Err(_) if dest.is_dir() => {
                let _ = fs::remove_dir_all(&tmp);
                Ok(())
            }
            other => other.map_err(GuestError::io(dest)),
        }
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

/// A directory path inside the cache for an extracted package.
pub fn extract_dir(cache: &Path, package: &str, version: &str) -> PathBuf {
    let version = version.replace(':', "%3a");
    cache.join("extracted").join(format!("{package}_{version}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a tiny .deb in memory: debian-binary, control.tar.gz, data.tar.gz.
    pub(crate) fn synthetic_deb(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            tar.append_data(&mut h, path, *data).unwrap();
        }
        let data = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &data).unwrap();
        let data_gz = gz.finish().unwrap();

        let mut ar = ar::Builder::new(Vec::new());
        for (name, body) in
            [("debian-binary", b"2.0\n".to_vec()), ("control.tar.gz", Vec::new()), ("data.tar.gz", data_gz)]
        {
            let header = ar::Header::new(name.as_bytes().to_vec(), body.len() as u64);
            ar.append(&header, body.as_slice()).unwrap();
        }
        ar.into_inner().unwrap()
    }

    #[test]
    fn extracts_files_from_synthetic_deb() {
        let deb = synthetic_deb(&[("./bin/busybox", b"\x7fELF"), ("./usr/share/doc/x", b"doc")]);
        let mut seen = Vec::new();
        for_each_file(deb.as_slice(), Path::new("t.deb"), |p, r| {
            let mut s = Vec::new();
            r.read_to_end(&mut s).unwrap();
            seen.push((p.to_owned(), s));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen[0], ("bin/busybox".into(), b"\x7fELF".to_vec()));
        assert_eq!(seen[1].0, "usr/share/doc/x");
    }

    #[test]
    fn rejects_garbage_and_missing_data() {
        let err = for_each_file(&b"not an ar archive"[..], Path::new("g.deb"), |_, _| Ok(()));
        assert!(matches!(err, Err(GuestError::BadDeb { .. })));
        let mut ar = ar::Builder::new(Vec::new());
        ar.append(&ar::Header::new(b"debian-binary".to_vec(), 4), &b"2.0\n"[..]).unwrap();
        let only_header = ar.into_inner().unwrap();
        let err = for_each_file(only_header.as_slice(), Path::new("h.deb"), |_, _| Ok(()));
        assert!(err.unwrap_err().to_string().contains("no data.tar"));
    }

    #[test]
    fn safe_paths_only() {
        assert_eq!(safe_relative(Path::new("./lib/modules/x.ko")).as_deref(), Some("lib/modules/x.ko"));
        assert_eq!(safe_relative(Path::new("../etc/passwd")), None);
        assert_eq!(safe_relative(Path::new("/etc/passwd")), None);
        assert_eq!(safe_relative(Path::new(".")), None);
    }

    #[test]
    fn extract_once_writes_selected_files_atomically() {
        let dir = std::env::temp_dir().join(format!("bulkhead-deb-{}", std::process::id()));
        let deb_path = dir.join("t.deb");
        fs::create_dir_all(&dir).unwrap();
        fs::write(&deb_path, synthetic_deb(&[("./boot/vmlinuz-1", b"k"), ("./etc/x", b"e")])).unwrap();
        let dest = dir.join("out");
        extract_once(&deb_path, &dest, |p| p.starts_with("boot/").then(|| p.to_owned())).unwrap();
        assert_eq!(fs::read(dest.join("boot/vmlinuz-1")).unwrap(), b"k");
        assert!(!dest.join("etc/x").exists());
        // A second call finds the complete directory and leaves it alone.
        extract_once(&deb_path, &dest, |_| panic!("must not extract again")).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
}
