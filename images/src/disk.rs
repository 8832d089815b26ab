//! Writing the bootable disk image: a GPT disk with one FAT32 EFI System Partition that
//! holds the loader, the hypervisor, the boot manifest and the modules. The result can
//! be written to a USB stick with `dd`.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use fscommon::StreamSlice;

use crate::layout;

const SECTOR: u64 = 512;
/// Space in front of the ESP (GPT header and entries) and behind it (backup GPT).
const GPT_OVERHEAD: u64 = 2 * 1024 * 1024;
/// FAT32 needs at least 65525 clusters; with 512-byte clusters that is ~32 MiB.
const MIN_ESP_BYTES: u64 = 64 * 1024 * 1024;
/// Headroom in the ESP beyond the files, so IT can add files with ordinary tools.
const ESP_SLACK_BYTES: u64 = 16 * 1024 * 1024;

/// One file to place on the ESP.
#[derive(Debug, Clone)]
pub struct EspFile {
    /// Absolute path on the ESP, `/`-separated (e.g. `/bulkhead/hypervisor.elf`).
    pub esp_path: String,
    pub source: FileSource,
}

#[derive(Debug, Clone)]
pub enum FileSource {
    Host(PathBuf),
    Bytes(Vec<u8>),
}

/// A boot module listed in the manifest.
#[derive(Debug, Clone)]
pub struct BootModule {
    pub name: String,
    pub source: FileSource,
}

/// What goes into an image.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub loader_efi: PathBuf,
    pub hypervisor_elf: PathBuf,
    pub modules: Vec<BootModule>,
    /// Force a GOP mode instead of the largest up to 1920x1080.
    pub gop_mode: Option<(u32, u32)>,
    /// Options passed to the hypervisor.
    pub cmdline: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot read {path}: {source}")]
    ReadInput { path: PathBuf, source: io::Error },
    #[error("cannot write the image {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("partitioning failed: {0}")]
    Gpt(String),
    #[error("module name {0:?} is empty, longer than 32 bytes, or has characters other than a-z, 0-9, '-' and '_'")]
    BadModuleName(String),
}

impl ImageSpec {
    /// The boot manifest text the loader reads; every file carries its SHA-256.
    pub fn manifest(&self) -> Result<String, DiskError> {
        let mut text = String::from("# Bulkhead boot manifest, written by `cargo xtask image`.\n");
        let hv = FileSource::Host(self.hypervisor_elf.clone()).read()?;
        text += &format!("hypervisor = {} sha256:{}\n", to_uefi_path(layout::ESP_HYPERVISOR), sha256_hex(&hv));
        if let Some((w, h)) = self.gop_mode {
            text += &format!("gop = {w}x{h}\n");
        }
        if !self.cmdline.is_empty() {
            text += &format!("cmdline = {}\n", self.cmdline);
        }
        for module in &self.modules {
            let digest = sha256_hex(&module.source.read()?);
            text +=
                &format!("module {} = {} sha256:{digest}\n", module.name, to_uefi_path(&module_esp_path(&module.name)));
        }
        Ok(text)
    }

    fn files(&self) -> Result<Vec<EspFile>, DiskError> {
        let mut files = vec![
            EspFile { esp_path: layout::ESP_LOADER.into(), source: FileSource::Host(self.loader_efi.clone()) },
            EspFile { esp_path: layout::ESP_HYPERVISOR.into(), source: FileSource::Host(self.hypervisor_elf.clone()) },
            EspFile { esp_path: layout::ESP_MANIFEST.into(), source: FileSource::Bytes(self.manifest()?.into_bytes()) },
        ];
        for module in &self.modules {
            let valid = !module.name.is_empty()
                && module.name.len() <= 32
                && module.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
            if !valid {
                return Err(DiskError::BadModuleName(module.name.clone()));
            }
            files.push(EspFile { esp_path: module_esp_path(&module.name), source: module.source.clone() });
        }
        Ok(files)
    }
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

fn module_esp_path(name: &str) -> String {
    format!("{}/{name}", layout::ESP_MODULE_DIR)
}

fn to_uefi_path(esp_path: &str) -> String {
    esp_path.replace('/', "\\")
}

impl FileSource {
    fn read(&self) -> Result<Vec<u8>, DiskError> {
        match self {
            FileSource::Bytes(bytes) => Ok(bytes.clone()),
            FileSource::Host(path) => {
                std::fs::read(path).map_err(|source| DiskError::ReadInput { path: path.clone(), source })
            }
        }
    }
}

/// Writes the image to `out`. The image is assembled in a temporary file next to `out`
/// and renamed into place, so a failed build never leaves a half-written image behind.
pub fn write_image(spec: &ImageSpec, out: &Path) -> Result<u64, DiskError> {
    write_image_with_data(spec, out, None)
}

/// The smallest data partition an image gets (the disk store's header area is 1 MiB).
pub const MIN_DATA_PARTITION_BYTES: u64 = 4 * 1024 * 1024;

/// As [`write_image`], with a "Bulkhead data" partition of `data_bytes` (a whole number
/// of MiB, at least 4 MiB) after the ESP, all zeros (sparse in the file): on a machine
/// that boots only from the stick the hypervisor keeps the desktops' encrypted disks
/// there (docs/usb-storage.md).
pub fn write_image_with_data(spec: &ImageSpec, out: &Path, data_bytes: Option<u64>) -> Result<u64, DiskError> {
    if let Some(d) = data_bytes
        && (d < MIN_DATA_PARTITION_BYTES || !d.is_multiple_of(1024 * 1024))
    {
        return Err(DiskError::Gpt(format!(
            "a data partition of {d} bytes: it must be a whole number of MiB, at least 4 MiB"
        )));
    }
    let files: Vec<(String, Vec<u8>)> =
        spec.files()?.into_iter().map(|f| Ok((f.esp_path, f.source.read()?))).collect::<Result<_, DiskError>>()?;
    let payload: u64 = files.iter().map(|(_, data)| data.len() as u64).sum();
    let esp_bytes = (payload + payload / 8 + ESP_SLACK_BYTES).max(MIN_ESP_BYTES).next_multiple_of(1024 * 1024);
    let disk_bytes = esp_bytes + data_bytes.unwrap_or(0) + 2 * GPT_OVERHEAD;

    let dir = out.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|source| DiskError::Write { path: dir.into(), source })?;
    let werr = |source| DiskError::Write { path: out.to_path_buf(), source };
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(werr)?;
    let mut file = tmp.reopen().map_err(werr)?;
    file.set_len(disk_bytes).map_err(werr)?;

    let (esp_start, esp_len) = partition(&mut file, disk_bytes, esp_bytes, data_bytes)?;
    let mut esp = StreamSlice::new(file, esp_start, esp_start + esp_len).map_err(werr)?;
    format_and_fill(&mut esp, &files).map_err(werr)?;
    tmp.persist(out).map_err(|e| werr(e.error))?;
    Ok(disk_bytes)
}

/// Writes a protective MBR and a GPT with the ESP (and the data partition after it when
/// `data_bytes` says so); returns the ESP's byte range.
fn partition(
    file: &mut File,
    disk_bytes: u64,
    esp_bytes: u64,
    data_bytes: Option<u64>,
) -> Result<(u64, u64), DiskError> {
    let gpt_err = |e: &dyn std::fmt::Display| DiskError::Gpt(e.to_string());
    let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(disk_bytes / SECTOR - 1).unwrap_or(u32::MAX));
    mbr.overwrite_lba0(file).map_err(|e| gpt_err(&e))?;
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .create_from_device(&mut *file, None)
        .map_err(|e| gpt_err(&e))?;
    let id = disk
        .add_partition("EFI System", esp_bytes, gpt::partition_types::EFI, 0, Some(2048))
        .map_err(|e| gpt_err(&e))?;
    let part = disk.partitions().get(&id).cloned().ok_or_else(|| DiskError::Gpt("ESP vanished".into()))?;
    let lb = gpt::disk::LogicalBlockSize::Lb512;
    let start = part.bytes_start(lb).map_err(|e| gpt_err(&e))?;
    let len = part.bytes_len(lb).map_err(|e| gpt_err(&e))?;
    if let Some(data) = data_bytes {
        let name = bulkhead_abi::disk::DATA_PARTITION_NAME;
        disk.add_partition(name, data, crate::data_disk::data_partition_type(), 0, Some(2048))
            .map_err(|e| gpt_err(&e))?;
    }
    disk.write().map_err(|e| gpt_err(&e))?;
    Ok((start, len))
}

fn format_and_fill<T: Read + Write + Seek>(esp: &mut T, files: &[(String, Vec<u8>)]) -> io::Result<()> {
    let options = fatfs::FormatVolumeOptions::new().fat_type(fatfs::FatType::Fat32).volume_label(*b"BULKHEAD   ");
    fatfs::format_volume(&mut *esp, options)?;
    esp.seek(SeekFrom::Start(0))?;
    let fs = fatfs::FileSystem::new(&mut *esp, fatfs::FsOptions::new())?;
    let root = fs.root_dir();
    for (path, data) in files {
        let mut dir = root.clone();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (name, dirs) = parts.split_last().ok_or_else(|| io::Error::other("empty ESP path"))?;
        for d in dirs {
            dir = match dir.open_dir(d) {
                Ok(existing) => existing,
                Err(_) => dir.create_dir(d)?,
            };
        }
        let mut f = dir.create_file(name)?;
        f.truncate()?;
        f.write_all(data)?;
        f.flush()?;
    }
    Ok(())
}

/// Reads a file back from the ESP of an image (for tests and `cargo xtask image --list`).
pub fn read_esp_file(image: &Path, esp_path: &str) -> io::Result<Vec<u8>> {
    with_esp(image, |fs| {
        let mut f = fs.root_dir().open_file(esp_path.trim_start_matches('/'))?;
        let mut data = Vec::new();
        f.read_to_end(&mut data)?;
        Ok(data)
    })
}

/// Replaces a file on the ESP of an existing image (tests use it to corrupt files).
pub fn overwrite_esp_file(image: &Path, esp_path: &str, data: &[u8]) -> io::Result<()> {
    with_esp(image, |fs| {
        let mut f = fs.root_dir().create_file(esp_path.trim_start_matches('/'))?;
        f.truncate()?;
        f.write_all(data)?;
        f.flush()
    })
}

fn with_esp<R>(
    image: &Path,
    body: impl FnOnce(&fatfs::FileSystem<&mut StreamSlice<File>>) -> io::Result<R>,
) -> io::Result<R> {
    let mut file = std::fs::OpenOptions::new().read(true).write(true).open(image)?;
    let disk = gpt::GptConfig::new()
        .writable(false)
        .open_from_device(&mut file)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let lb = *disk.logical_block_size();
    let part = disk
        .partitions()
        .values()
        .find(|p| p.part_type_guid == gpt::partition_types::EFI)
        .cloned()
        .ok_or_else(|| io::Error::other("the image has no EFI System Partition"))?;
    drop(disk);
    let start = part.bytes_start(lb)?;
    let len = part.bytes_len(lb)?;
    let mut slice = StreamSlice::new(file, start, start + len)?;
    let fs = fatfs::FileSystem::new(&mut slice, fatfs::FsOptions::new())?;
    let result = body(&fs);
    fs.unmount()?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path) -> ImageSpec {
        let loader = dir.join("loader.efi");
        let hv = dir.join("hypervisor.elf");
        std::fs::write(&loader, b"MZ fake loader").unwrap();
        std::fs::write(&hv, vec![0x7f; 100_000]).unwrap();
        ImageSpec {
            loader_efi: loader,
            hypervisor_elf: hv,
            modules: vec![BootModule { name: "checks".into(), source: FileSource::Bytes(b"payload".to_vec()) }],
            gop_mode: Some((1280, 800)),
            cmdline: "log=debug".into(),
        }
    }

    #[test]
    fn image_holds_every_file_on_a_gpt_esp() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("usb.img");
        let spec = spec(dir.path());
        write_image(&spec, &out).unwrap();

        assert_eq!(read_esp_file(&out, layout::ESP_LOADER).unwrap(), b"MZ fake loader");
        assert_eq!(read_esp_file(&out, layout::ESP_HYPERVISOR).unwrap(), vec![0x7f; 100_000]);
        assert_eq!(read_esp_file(&out, "/bulkhead/modules/checks").unwrap(), b"payload");
        let manifest = String::from_utf8(read_esp_file(&out, layout::ESP_MANIFEST).unwrap()).unwrap();
        // The loader's own parser must accept what we wrote.
        let entries: Vec<_> = bulkhead_abi::manifest::entries(&manifest).collect::<Result<_, _>>().unwrap();
        use bulkhead_abi::manifest::Entry;
        use sha2::Digest;
        let hv_digest: [u8; 32] = sha2::Sha256::digest(vec![0x7f; 100_000]).into();
        let payload_digest: [u8; 32] = sha2::Sha256::digest(b"payload").into();
        use bulkhead_abi::manifest::FileRef;
        assert!(
            entries
                .contains(&Entry::Hypervisor(FileRef { path: "\\bulkhead\\hypervisor.elf", sha256: Some(hv_digest) }))
        );
        assert!(entries.contains(&Entry::Gop { width: 1280, height: 800 }));
        assert!(entries.contains(&Entry::Module {
            name: "checks",
            file: FileRef { path: "\\bulkhead\\modules\\checks", sha256: Some(payload_digest) }
        }));

        // Protective MBR signature and GPT header where firmware looks for them.
        let raw = std::fs::read(&out).unwrap();
        assert_eq!(&raw[510..512], &[0x55, 0xaa]);
        assert_eq!(&raw[512..520], b"EFI PART");
    }

    #[test]
    fn a_stick_image_can_carry_a_zeroed_data_partition_after_its_esp() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("usb.img");
        let spec = spec(dir.path());
        let bytes = write_image_with_data(&spec, &out, Some(8 << 20)).unwrap();
        let plain = write_image(&spec, &dir.path().join("plain.img")).unwrap();
        assert_eq!(bytes, plain + (8 << 20));
        let part = crate::data_disk::find(&out).unwrap();
        assert_eq!(part.bytes, 8 << 20);
        assert_eq!(part.offset % (1 << 20), 0);
        let raw = std::fs::read(&out).unwrap();
        assert!(raw[part.offset as usize..(part.offset + part.bytes) as usize].iter().all(|&b| b == 0));
        // The ESP still reads back, and lies before the data partition.
        assert_eq!(read_esp_file(&out, layout::ESP_LOADER).unwrap(), b"MZ fake loader");
        assert!(crate::data_disk::find(&dir.path().join("plain.img")).is_err());
        for bad in [1 << 20, (8 << 20) + 512] {
            assert!(write_image_with_data(&spec, &dir.path().join("bad.img"), Some(bad)).is_err());
        }
    }

    #[test]
    fn corrupting_a_file_in_place_works() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("usb.img");
        write_image(&spec(dir.path()), &out).unwrap();
        overwrite_esp_file(&out, layout::ESP_HYPERVISOR, b"garbage").unwrap();
        assert_eq!(read_esp_file(&out, layout::ESP_HYPERVISOR).unwrap(), b"garbage");
    }

    #[test]
    fn missing_input_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec(dir.path());
        spec.hypervisor_elf = dir.path().join("nope.elf");
        let err = write_image(&spec, &dir.path().join("usb.img")).unwrap_err();
        assert!(err.to_string().contains("nope.elf"), "{err}");
        assert!(!dir.path().join("usb.img").exists());
    }

    #[test]
    fn bad_module_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec(dir.path());
        spec.modules[0].name = "Bad Name".into();
        assert!(matches!(write_image(&spec, &dir.path().join("x.img")), Err(DiskError::BadModuleName(_))));
    }
}
