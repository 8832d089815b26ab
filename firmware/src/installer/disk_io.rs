//! The disks the firmware offers, and block reads and writes at byte offsets.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use firmware::install::disks::{self, Bus, Disk};
use firmware::install::gpt::{self, Layout};
use uefi::boot::{self, OpenProtocolAttributes, OpenProtocolParams, ScopedProtocol, SearchType};
use uefi::proto::device_path::DevicePath;
use uefi::proto::device_path::text::{AllowShortcuts, DisplayOnly};
use uefi::proto::loaded_image::LoadedImage;
use uefi::proto::media::block::BlockIO;
use uefi::{Handle, Identify};

/// Transfers go through one aligned buffer of this size.
const CHUNK: usize = 1024 * 1024;
/// Enough alignment for any BlockIO IoAlign we expect (OVMF's NVMe wants 4 KiB at most).
const ALIGN: usize = 4096;

/// One disk as found, with what is needed to write it.
pub struct Found {
    pub handle: Handle,
    pub path: String,
    pub disk: Disk,
    pub media_id: u32,
    /// The partitions, when this installer wrote them (an update keeps them).
    pub layout: Option<Layout>,
}

/// Every whole disk with media, with its bus, size and contents.
pub fn find_disks() -> Result<Vec<Found>, String> {
    let boot_path = boot_device_path().map(|p| path_bytes(&p).to_vec());
    let handles = boot::locate_handle_buffer(SearchType::ByProtocol(&BlockIO::GUID))
        .map_err(|e| format!("cannot list the disks: {e:?}"))?;
    let mut found = Vec::new();
    for &handle in handles.iter() {
        let Ok(block) = open::<BlockIO>(handle) else { continue };
        let media = block.media();
        if media.is_logical_partition() || !media.is_media_present() {
            continue;
        }
        let Ok(path) = open::<DevicePath>(handle) else { continue };
        let bytes = path_bytes(&path);
        let boot_disk = boot_path.as_deref().is_some_and(|b| b.starts_with(bytes));
        let block_size = u64::from(media.block_size());
        let total = (media.last_block() + 1) * block_size;
        let media_id = media.media_id();
        drop(block);
        let found_disk = Found {
            handle,
            path: path_text(&path),
            media_id,
            disk: Disk {
                bus: Bus::from_nodes(node_types(&path)),
                bytes: total,
                block_size,
                boot_disk,
                contents: disks::Contents::Empty,
                installed: false,
            },
            layout: None,
        };
        let head = Writer::open(&found_disk).and_then(|mut w| w.read(0, disks::head_bytes(block_size as usize)));
        let (contents, layout) = match head {
            Ok(head) => {
                (disks::contents(&head, block_size as usize), gpt::read_layout(&head, block_size, total / block_size))
            }
            Err(e) => {
                println!("install: cannot read {}: {e}", found_disk.path);
                continue;
            }
        };
        let installed = layout.is_some();
        found.push(Found { disk: Disk { contents, installed, ..found_disk.disk }, layout, ..found_disk });
    }
    Ok(found)
}

/// Block reads and writes at byte offsets through one aligned bounce buffer.
pub struct Writer {
    block: ScopedProtocol<BlockIO>,
    media_id: u32,
    block_size: usize,
    buffer: Vec<u8>,
}

impl Writer {
    pub fn open(disk: &Found) -> Result<Writer, String> {
        let block = open::<BlockIO>(disk.handle).map_err(|e| format!("cannot open {}: {e:?}", disk.path))?;
        let block_size = block.media().block_size() as usize;
        Ok(Writer { block, media_id: disk.media_id, block_size, buffer: vec![0u8; CHUNK + ALIGN] })
    }

    fn aligned(&mut self) -> &mut [u8] {
        let off = self.buffer.as_ptr().align_offset(ALIGN);
        &mut self.buffer[off..off + CHUNK]
    }

    /// Writes `data` at `offset` (a block multiple), padding the last block with zeros.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), String> {
        let bs = self.block_size;
        for (i, piece) in data.chunks(CHUNK).enumerate() {
            let len = piece.len().next_multiple_of(bs);
            let buf = self.aligned();
            buf[..piece.len()].copy_from_slice(piece);
            buf[piece.len()..len].fill(0);
            let at = offset + (i * CHUNK) as u64;
            let lba = at / bs as u64;
            let media_id = self.media_id;
            let off = self.buffer.as_ptr().align_offset(ALIGN);
            self.block
                .write_blocks(media_id, lba, &self.buffer[off..off + len])
                .map_err(|e| format!("write at LBA {lba} failed: {:?}", e.status()))?;
        }
        Ok(())
    }

    pub fn read(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, String> {
        let bs = self.block_size;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let piece = (len - out.len()).min(CHUNK);
            let padded = piece.next_multiple_of(bs);
            let lba = (offset + out.len() as u64) / bs as u64;
            let media_id = self.media_id;
            let off = self.buffer.as_ptr().align_offset(ALIGN);
            self.block
                .read_blocks(media_id, lba, &mut self.buffer[off..off + padded])
                .map_err(|e| format!("read at LBA {lba} failed: {:?}", e.status()))?;
            out.extend_from_slice(&self.buffer[off..off + piece]);
        }
        Ok(out)
    }

    pub fn flush(&mut self) -> Result<(), String> {
        self.block.flush_blocks().map_err(|e| format!("flushing the disk failed: {:?}", e.status()))
    }
}

pub fn open<P: uefi::proto::ProtocolPointer + ?Sized>(handle: Handle) -> uefi::Result<ScopedProtocol<P>> {
    // SAFETY: GetProtocol does not take the protocol from its drivers; we only use it
    // while the handle exists (nothing here disconnects or uninstalls it).
    unsafe {
        boot::open_protocol::<P>(
            OpenProtocolParams { handle, agent: boot::image_handle(), controller: None },
            OpenProtocolAttributes::GetProtocol,
        )
    }
}

pub fn boot_device_path() -> Option<ScopedProtocol<DevicePath>> {
    let image = boot::open_protocol_exclusive::<LoadedImage>(boot::image_handle()).ok()?;
    let device = image.device()?;
    open::<DevicePath>(device).ok()
}

/// The device path's bytes without the end node, for prefix comparisons.
pub fn path_bytes(path: &DevicePath) -> &[u8] {
    let bytes = path.as_bytes();
    &bytes[..bytes.len().saturating_sub(4)]
}

pub fn node_types(path: &DevicePath) -> Vec<(u8, u8)> {
    path.node_iter().map(|n| (n.device_type().0, n.sub_type().0)).collect()
}

pub fn path_text(path: &DevicePath) -> String {
    path.to_string16(DisplayOnly(false), AllowShortcuts(false)).map(|s| s.to_string()).unwrap_or_else(|_| "?".into())
}
