//! A hand-built EFI_LOAD_OPTION (UEFI 2.10 §3.1.3) for a `Boot####` variable: a
//! short-form device path, `HD(partition, GPT, GUID)` followed by the loader's file
//! path, so the firmware finds the ESP by its GUID wherever the disk sits.

use alloc::vec::Vec;

use super::guid::Guid;

/// LOAD_OPTION_ACTIVE.
const ACTIVE: u32 = 0x0000_0001;
const MEDIA: u8 = 4;
const MEDIA_HARD_DRIVE: u8 = 1;
const MEDIA_FILE_PATH: u8 = 4;
const END: u8 = 0x7F;
const END_ENTIRE: u8 = 0xFF;
/// Hard drive node: 4-byte header + 38 bytes (UEFI 2.10 §10.3.5.1).
const HD_NODE_LEN: u16 = 42;

/// The ESP as the hard-drive media node names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HardDrive {
    pub partition_number: u32,
    pub first_lba: u64,
    pub blocks: u64,
    pub partition_guid: Guid,
}

/// The device path `HD(...)/File(path)/End`.
pub fn device_path(hd: &HardDrive, file_path: &str) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend([MEDIA, MEDIA_HARD_DRIVE]);
    p.extend(HD_NODE_LEN.to_le_bytes());
    p.extend(hd.partition_number.to_le_bytes());
    p.extend(hd.first_lba.to_le_bytes());
    p.extend(hd.blocks.to_le_bytes());
    p.extend(hd.partition_guid);
    p.push(0x02); // partition format: GPT
    p.push(0x02); // signature type: GUID
    let name: Vec<u16> = file_path.encode_utf16().chain([0]).collect();
    let len = 4 + 2 * name.len() as u16;
    p.extend([MEDIA, MEDIA_FILE_PATH]);
    p.extend(len.to_le_bytes());
    for unit in name {
        p.extend(unit.to_le_bytes());
    }
    p.extend([END, END_ENTIRE, 4, 0]);
    p
}

/// The whole `Boot####` value: attributes, the device path's length, the description
/// and the device path; no optional data.
pub fn load_option(description: &str, hd: &HardDrive, file_path: &str) -> Vec<u8> {
    let path = device_path(hd, file_path);
    let mut v = Vec::new();
    v.extend(ACTIVE.to_le_bytes());
    v.extend((path.len() as u16).to_le_bytes());
    for unit in description.encode_utf16().chain([0]) {
        v.extend(unit.to_le_bytes());
    }
    v.extend(path);
    v
}

/// `BootOrder` with `number` first and nowhere else.
pub fn boot_order_with_first(order: &[u8], number: u16) -> Vec<u8> {
    let mut v = Vec::with_capacity(order.len() + 2);
    v.extend(number.to_le_bytes());
    for pair in order.chunks_exact(2) {
        if u16::from_le_bytes([pair[0], pair[1]]) != number {
            v.extend(pair);
        }
    }
    v
}

/// The name of a boot option variable, `Boot` and four upper-case hex digits.
pub fn variable_name(number: u16) -> alloc::string::String {
    alloc::format!("Boot{number:04X}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hd() -> HardDrive {
        HardDrive { partition_number: 1, first_lba: 2048, blocks: 589_824, partition_guid: [0xAB; 16] }
    }

    #[test]
    fn the_load_option_has_the_layout_firmware_parses() {
        let path = "\\EFI\\BULKHEAD\\BOOTX64.EFI";
        let v = load_option("Bulkhead", &hd(), path);
        assert_eq!(u32::from_le_bytes(v[0..4].try_into().unwrap()), ACTIVE);
        let path_len = u16::from_le_bytes(v[4..6].try_into().unwrap()) as usize;
        // "Bulkhead" + NUL in UCS-2.
        let desc_end = 6 + 9 * 2;
        assert_eq!(&v[6..8], &[b'B', 0]);
        assert_eq!(&v[desc_end - 2..desc_end], &[0, 0]);
        assert_eq!(v.len(), desc_end + path_len);
        let p = &v[desc_end..];
        // HD node: type 4/1, 42 bytes, partition 1 from LBA 2048, GPT with a GUID.
        assert_eq!(&p[0..4], &[4, 1, 42, 0]);
        assert_eq!(u32::from_le_bytes(p[4..8].try_into().unwrap()), 1);
        assert_eq!(u64::from_le_bytes(p[8..16].try_into().unwrap()), 2048);
        assert_eq!(u64::from_le_bytes(p[16..24].try_into().unwrap()), 589_824);
        assert_eq!(&p[24..40], &[0xAB; 16]);
        assert_eq!(&p[40..42], &[2, 2]);
        // File node: type 4/4, header + UCS-2 path + NUL.
        let file_len = 4 + 2 * (path.len() + 1);
        assert_eq!(&p[42..44], &[4, 4]);
        assert_eq!(u16::from_le_bytes(p[44..46].try_into().unwrap()) as usize, file_len);
        let units: Vec<u16> = p[46..42 + file_len - 2].chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        assert_eq!(String::from_utf16(&units).unwrap(), path);
        assert_eq!(&p[42 + file_len..], &[0x7F, 0xFF, 4, 0]);
    }

    #[test]
    fn boot_order_puts_the_entry_first_once() {
        let order = [0x01, 0x00, 0x00, 0x10, 0x03, 0x00];
        assert_eq!(boot_order_with_first(&order, 0x1000), [0x00, 0x10, 0x01, 0x00, 0x03, 0x00]);
        assert_eq!(boot_order_with_first(&[], 7), [7, 0]);
        assert_eq!(variable_name(0x1a), "Boot001A");
    }
}
