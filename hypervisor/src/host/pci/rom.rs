//! Expansion ROMs of assigned functions: copied once from the device, offered to the
//! VM read-only.
//!
//! A ROM holds one or more images (PCI Firmware 3.3 §5.1): each starts with the
//! signature 55h AAh and points (at 18h) to its PCI Data Structure ("PCIR"), whose
//! Image Length (at 10h, in 512-byte units) leads to the next image and whose
//! Indicator (at 15h, bit 7) marks the last. The copy holds exactly those images.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use crate::host::pci::ConfigAccess;
use crate::host::pci::Rom;
use crate::hw::Bdf;
use crate::hw::pci::{CMD_MEMORY, COMMAND, STS_ERRORS};
use crate::memory::addr::PAGE_SIZE;

pub use crate::hw::pci::ROM_BAR;
/// The ROM BAR's decode enable bit.
pub const ROM_ENABLE: u32 = 1;
/// The ROM BAR's address bits (31:11).
pub const ROM_ADDRESS: u32 = 0xffff_f800;
/// Largest ROM copied (GPU ROMs are up to about 1 MiB).
pub const MAX_ROM_BYTES: u64 = 4 << 20;
/// Images followed at most.
const MAX_IMAGES: usize = 16;

/// The size of the ROM BAR a VM sees for a device ROM BAR of `size` bytes: a power
/// of two of at least a page, so a copy of the ROM maps page-aligned; 0 if none fits.
pub fn rom_bar_size(size: u64) -> u64 {
    size.max(PAGE_SIZE).checked_next_power_of_two().unwrap_or(0)
}

/// Why a function's ROM is not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RomError {
    /// Firmware gave the ROM BAR no address.
    NotPlaced,
    /// The hypervisor cannot reach the ROM's address (outside the 32-bit PCI hole).
    Unreachable,
    TooLarge,
    /// No 55AAh signature at the start of the first image.
    NoImage,
    /// An image's PCI Data Structure is missing or its length runs past the BAR.
    BadImage {
        offset: u64,
    },
}

impl core::fmt::Display for RomError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RomError::NotPlaced => write!(f, "firmware left the ROM BAR unplaced"),
            RomError::Unreachable => write!(f, "the ROM lies outside the 32-bit PCI hole"),
            RomError::TooLarge => write!(f, "the ROM BAR is larger than {} MiB", MAX_ROM_BYTES >> 20),
            RomError::NoImage => write!(f, "the ROM holds no image (no 55AA signature)"),
            RomError::BadImage { offset } => write!(f, "the ROM image at {offset:#x} is malformed"),
        }
    }
}

/// The length of the image chain in a ROM of `size` bytes, read through `byte`.
pub fn images_len(size: u64, byte: &mut dyn FnMut(u64) -> u8) -> Result<(u64, usize), RomError> {
    fn word(byte: &mut dyn FnMut(u64) -> u8, at: u64) -> u16 {
        u16::from(byte(at)) | u16::from(byte(at.saturating_add(1))) << 8
    }
    let mut offset = 0u64;
    for images in 1..=MAX_IMAGES {
        if word(byte, offset) != 0xaa55 {
            return Err(if offset == 0 { RomError::NoImage } else { RomError::BadImage { offset } });
        }
        let pcir = offset.saturating_add(u64::from(word(byte, offset.saturating_add(0x18))));
        let signature = [0u64, 1, 2, 3].map(|i| byte(pcir.saturating_add(i)));
        if pcir.saturating_add(0x18) > size || signature != *b"PCIR" {
            return Err(RomError::BadImage { offset });
        }
        let len = u64::from(word(byte, pcir.saturating_add(0x10))).saturating_mul(512);
        let end = offset.saturating_add(len);
        if len == 0 || end > size {
            return Err(RomError::BadImage { offset });
        }
        let last = byte(pcir.saturating_add(0x15)) & 0x80 != 0;
        offset = end;
        if last || offset == size {
            return Ok((offset, images));
        }
    }
    Ok((offset, MAX_IMAGES))
}

/// Where function's ROM of `rom.size` bytes can decode: firmware's address when it
/// is usable, else the first free, naturally aligned range of the memory window of
/// the bridge above the function (`window`, `[start, end)`). Usable means inside
/// that window (for a function on a root bus, which has none: nonzero) and clear of
/// every `busy` range (other BARs and bridge windows, `[start, end)`). Firmware often
/// leaves a ROM BAR unplaced, or as its sizing left it (all ones: over the flash).
/// `None`: nowhere safe (a root-bus function with an unplaced ROM).
pub fn rom_address(rom: Rom, window: Option<(u64, u64)>, busy: &[(u64, u64)]) -> Option<u64> {
    let size = rom.size.max(1);
    let free = |start: u64| {
        let end = start.saturating_add(size);
        !busy.iter().any(|&(s, e)| start < e && s < end)
    };
    let inside = |start: u64, (ws, we): (u64, u64)| start >= ws && start.saturating_add(size) <= we;
    let firmware = rom.address;
    let usable = firmware != 0 && free(firmware) && window.is_none_or(|w| inside(firmware, w));
    if usable && window.is_some() {
        return Some(firmware);
    }
    let Some(window) = window else {
        // On a root bus only firmware knows the host bridge's windows: keep its
        // address when it is clear of everything and below the top-of-4-GiB flash.
        return (usable && firmware.saturating_add(size) <= FLASH_START).then_some(firmware);
    };
    let mut at = window.0.checked_next_multiple_of(size)?;
    while inside(at, window) {
        if free(at) {
            return Some(at);
        }
        at = at.checked_add(size)?;
    }
    None
}

/// Where PC firmware flash usually starts (the top 16 MiB below 4 GiB).
const FLASH_START: u64 = 0xff00_0000;

/// Copies `rom`'s images from function `bdf`: turns on memory decode and the ROM BAR
/// for the copy and restores both after. `read32` reads the host address space
/// (`None`: unreachable).
pub fn copy_rom(
    access: &impl ConfigAccess,
    bdf: Bdf,
    rom: Rom,
    read32: &mut dyn FnMut(u64) -> Option<u32>,
) -> Result<(Vec<u8>, usize), RomError> {
    if rom.address == 0 {
        return Err(RomError::NotPlaced);
    }
    if rom.size > MAX_ROM_BYTES {
        return Err(RomError::TooLarge);
    }
    read32(rom.address).ok_or(RomError::Unreachable)?;
    let command = access.read16(bdf, COMMAND);
    let saved = access.read32(bdf, ROM_BAR);
    access.write16(bdf, COMMAND, command | CMD_MEMORY, STS_ERRORS);
    access.write32(bdf, ROM_BAR, (saved & !ROM_ENABLE) | ROM_ENABLE);
    let mut byte = |at: u64| {
        let word = read32(rom.address.saturating_add(at & !3)).unwrap_or(u32::MAX);
        (word >> ((at & 3).saturating_mul(8))) as u8
    };
    let result = images_len(rom.size, &mut byte).map(|(len, images)| {
        let mut copy = Vec::new();
        let mut at = 0;
        while at < len {
            copy.extend_from_slice(&read32(rom.address.saturating_add(at)).unwrap_or(u32::MAX).to_le_bytes());
            at = at.saturating_add(4);
        }
        copy.truncate(usize::try_from(len).unwrap_or(0));
        (copy, images)
    });
    access.write32(bdf, ROM_BAR, saved);
    access.write16(bdf, COMMAND, command, STS_ERRORS);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::pci::fake_cfg::{FakeCfg, bdf};
    use alloc::vec;

    /// A ROM image of `blocks` 512-byte blocks, `last` or not, filled with `fill`.
    pub fn image(blocks: u16, last: bool, fill: u8) -> Vec<u8> {
        let mut v = vec![fill; usize::from(blocks) * 512];
        v[0] = 0x55;
        v[1] = 0xaa;
        v[0x18] = 0x40;
        v[0x19] = 0;
        v[0x40..0x44].copy_from_slice(b"PCIR");
        v[0x50..0x52].copy_from_slice(&blocks.to_le_bytes());
        v[0x55] = if last { 0x80 } else { 0 };
        v
    }

    fn chain_len(rom: &[u8], size: u64) -> Result<(u64, usize), RomError> {
        images_len(size, &mut |at| rom.get(at as usize).copied().unwrap_or(0xff))
    }

    #[test]
    fn image_chains_end_at_the_last_indicator() {
        let mut rom = image(4, false, 1);
        rom.extend(image(2, true, 2));
        rom.extend(vec![0xff; 2048]);
        assert_eq!(chain_len(&rom, 8192), Ok((3072, 2)));
        // One image filling the BAR needs no indicator.
        assert_eq!(chain_len(&image(4, false, 1), 2048), Ok((2048, 1)));
    }

    #[test]
    fn malformed_roms_are_refused() {
        assert_eq!(chain_len(&[0xff; 4096], 4096), Err(RomError::NoImage));
        let mut rom = image(4, false, 1);
        rom[0x40] = b'X';
        assert_eq!(chain_len(&rom, 4096), Err(RomError::BadImage { offset: 0 }));
        // Length past the BAR.
        assert_eq!(chain_len(&image(16, true, 1), 4096), Err(RomError::BadImage { offset: 0 }));
        // Zero length.
        let mut rom = image(4, true, 1);
        rom[0x50] = 0;
        assert_eq!(chain_len(&rom, 4096), Err(RomError::BadImage { offset: 0 }));
        // A second image without a signature.
        let mut rom = image(2, false, 1);
        rom.extend(vec![0u8; 1024]);
        assert_eq!(chain_len(&rom, 4096), Err(RomError::BadImage { offset: 1024 }));
        // PCIR pointer past the end.
        let mut rom = image(2, true, 1);
        rom[0x18] = 0xff;
        rom[0x19] = 0xff;
        assert_eq!(chain_len(&rom, 1024), Err(RomError::BadImage { offset: 0 }));
    }

    #[test]
    fn roms_go_where_they_decode_and_nothing_else_does() {
        let rom = |address| Rom { address, size: 0x4000 };
        let window = Some((0xc220_0000, 0xc240_0000));
        let busy = [(0xc220_0000, 0xc220_4000), (0xc220_8000, 0xc220_9000)];
        // Firmware's address is kept when it is inside the bridge's window and free.
        assert_eq!(rom_address(rom(0xc230_0000), window, &busy), Some(0xc230_0000));
        // Unplaced, left as sized (over the flash), or on another BAR: the first free
        // aligned range of the window.
        for firmware in [0, 0xffff_c000, 0xc220_0000] {
            assert_eq!(rom_address(rom(firmware), window, &busy), Some(0xc220_4000), "{firmware:#x}");
        }
        // A full window.
        assert_eq!(rom_address(rom(0), Some((0xc220_0000, 0xc220_4000)), &busy), None);
        // Root bus: firmware's address if plausible, never a guess.
        assert_eq!(rom_address(rom(0xfe00_0000), None, &busy), Some(0xfe00_0000));
        assert_eq!(rom_address(rom(0xffff_c000), None, &busy), None);
        assert_eq!(rom_address(rom(0), None, &busy), None);
        assert_eq!(rom_address(rom(0xc220_8000), None, &busy), None);
    }

    #[test]
    fn the_copy_enables_decode_only_while_it_reads() {
        let cfg = FakeCfg::default();
        let b = bdf(0, 4, 0);
        cfg.add(b, 0x1b36, 0x0010, 0x010802);
        cfg.set(b, 0x04, 0x0010_0000); // capabilities list bit, decode off
        cfg.set(b, ROM_BAR, 0xfe80_0000);
        let mut data = image(2, true, 7);
        data.extend(vec![0xee; 1024]);
        let rom = Rom { address: 0xfe80_0000, size: 4096 };
        let mut decoding = Vec::new();
        let mut read = |pa: u64| {
            decoding.push((cfg.get(b, 0x04) & 2 != 0, cfg.get(b, ROM_BAR) & 1 != 0));
            let at = (pa - 0xfe80_0000) as usize;
            Some(u32::from_le_bytes(data[at..at + 4].try_into().unwrap()))
        };
        let (copy, images) = copy_rom(&cfg, b, rom, &mut read).unwrap();
        assert_eq!((copy.len(), images), (1024, 1));
        assert_eq!(copy, image(2, true, 7));
        // The reachability probe comes first, before decode is on; every read after
        // it sees memory decode and the ROM enabled.
        assert!(decoding[1..].iter().all(|&d| d == (true, true)), "{decoding:?}");
        assert_eq!(cfg.get(b, 0x04), 0x0010_0000, "command restored, status untouched");
        assert_eq!(cfg.get(b, ROM_BAR), 0xfe80_0000, "ROM decode off again");
        assert_eq!(copy_rom(&cfg, b, Rom { address: 0, size: 4096 }, &mut |_| Some(0)), Err(RomError::NotPlaced));
        assert_eq!(copy_rom(&cfg, b, rom, &mut |_| None), Err(RomError::Unreachable));
    }
}
