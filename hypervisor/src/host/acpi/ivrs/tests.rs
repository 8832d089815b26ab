use super::*;
use crate::host::acpi::test_util::sdt;
use alloc::vec;

const QEMU: &[u8] = include_bytes!("../../../../tests/fixtures/acpi/qemu-q35-amd-iommu/IVRS.bin");

#[test]
fn qemu_q35_amd_iommu() {
    let ivrs = parse_ivrs(QEMU).unwrap();
    assert_eq!(ivrs.info.pa_size, 40);
    assert_eq!(ivrs.info.va_size, 0);
    assert_eq!(ivrs.ivhds.len(), 1);
    let ivhd = &ivrs.ivhds[0];
    assert_eq!(ivhd.block_type, 0x10);
    assert_eq!(ivhd.iommu_devid, 0x0008); // 00:01.0
    assert_eq!(ivhd.capability_offset, 0x40);
    assert_eq!(ivhd.base_address, 0xfed8_0000);
    assert_eq!(ivhd.segment, 0);
    assert_eq!(ivhd.efr_image, None);
    assert_eq!(
        ivhd.entries,
        [
            IvhdEntry::Select { devid: 0x0000, data: 0 },
            IvhdEntry::Select { devid: 0x0008, data: 0 },
            IvhdEntry::Select { devid: 0x0018, data: 0 },
            IvhdEntry::Range { first: 0x0100, last: 0x01ff, data: 0 },
            IvhdEntry::Select { devid: 0x0020, data: 0 },
            IvhdEntry::Select { devid: 0x00f8, data: 0 },
            IvhdEntry::Select { devid: 0x00fa, data: 0 },
            IvhdEntry::Select { devid: 0x00fb, data: 0 },
            // QEMU puts the IOAPIC at 00:14.0, where Linux expects it on AMD.
            IvhdEntry::Special { variety: SpecialVariety::IoApic, handle: 0, devid: 0x00a0, data: 0 },
        ]
    );
    assert!(ivrs.ivmds.is_empty());
    assert_eq!(ivrs.units().len(), 1);
}

/// An IVRS shaped like a Ryzen laptop's, built from the spec: the same IOMMU as a 10h
/// and a 40h block, every entry kind, and an IVMD.
fn spec_shaped() -> alloc::vec::Vec<u8> {
    let mut body = vec![0x41, 0x30, 0x20, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
    let entries: &[&[u8]] = &[
        &[0x01, 0, 0, 0xd7],                         // All, data 0xd7
        &[0x00, 0, 0, 0],                            // pad
        &[0x02, 0x10, 0x00, 0x00],                   // Select 00:02.0
        &[0x43, 0x00, 0x05, 0, 0, 0xa4, 0x00, 0],    // Alias start 05:00.0 alias 00:14.4
        &[0x04, 0xff, 0x05, 0],                      // End 05:1f.7
        &[0x42, 0x00, 0x06, 0, 0, 0x08, 0x00, 0],    // Alias select 06:00.0 -> 00:01.0
        &[0x46, 0x00, 0x07, 0, 0x01, 0, 0, 0x80],    // Ext select (ATS disabled bit)
        &[0x47, 0x00, 0x08, 0, 0x01, 0, 0, 0x80],    // Ext start
        &[0x04, 0x00, 0x09, 0],                      // End
        &[0x48, 0, 0, 0xd7, 0x21, 0xa0, 0x00, 0x01], // IOAPIC 0x21 at 00:14.0
        &[0x48, 0, 0, 0xd7, 0x00, 0xa0, 0x00, 0x02], // HPET 0 at 00:14.0
    ];
    let mut hid = vec![0xf0, 0xa5, 0x00, 0x40];
    hid.extend_from_slice(b"AMDI0020");
    hid.extend_from_slice(&[0; 8]);
    hid.extend_from_slice(&[0x02, 0x04]);
    hid.extend_from_slice(b"ID00");
    let mut entry_bytes: alloc::vec::Vec<u8> = entries.concat();
    entry_bytes.extend_from_slice(&hid);
    for (t, hdr_len) in [(0x10u8, 24usize), (0x40, 40)] {
        let len = (hdr_len + entry_bytes.len()) as u16;
        body.extend_from_slice(&[t, 0xb0]);
        body.extend_from_slice(&len.to_le_bytes());
        body.extend_from_slice(&[0x02, 0x00, 0x40, 0x00]); // 00:00.2, cap 0x40
        body.extend_from_slice(&0xfd20_0000u64.to_le_bytes());
        body.extend_from_slice(&[0, 0, 0, 0, 0x10, 0x20, 0x22, 0x80]);
        if hdr_len == 40 {
            body.extend_from_slice(&0x0000_0200_2a2f_7b2fu64.to_le_bytes());
            body.extend_from_slice(&[0; 8]);
        }
        body.extend_from_slice(&entry_bytes);
    }
    // IVMD 21h: one device, 0x9ac00000 + 4 MiB, unity-mapped read/write.
    body.extend_from_slice(&[0x21, 0x07, 32, 0, 0x10, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    body.extend_from_slice(&0x9ac0_0000u64.to_le_bytes());
    body.extend_from_slice(&0x40_0000u64.to_le_bytes());
    sdt(b"IVRS", 2, &body)
}

#[test]
fn spec_shaped_ivrs() {
    let ivrs = parse_ivrs(&spec_shaped()).unwrap();
    assert_eq!(ivrs.revision, 2);
    assert!(ivrs.info.efr_sup);
    assert_eq!(ivrs.info.pa_size, 0x30);
    assert_eq!(ivrs.info.va_size, 0x40);
    assert_eq!(ivrs.info.gva_size, 2);
    assert_eq!(ivrs.ivhds.len(), 2);
    let units = ivrs.units();
    assert_eq!(units.len(), 1);
    assert_eq!(units[0].block_type, 0x40);
    assert_eq!(units[0].efr_image, Some(0x0000_0200_2a2f_7b2f));
    assert_eq!(ivrs.ivhds[0].entries, ivrs.ivhds[1].entries);
    assert_eq!(
        ivrs.ivhds[0].entries,
        [
            IvhdEntry::All { data: 0xd7 },
            IvhdEntry::Select { devid: 0x0010, data: 0 },
            IvhdEntry::AliasRange { first: 0x0500, last: 0x05ff, alias: 0x00a4, data: 0 },
            IvhdEntry::AliasSelect { devid: 0x0600, alias: 0x0008, data: 0 },
            IvhdEntry::ExtSelect { devid: 0x0700, data: 0, ext: 0x8000_0001 },
            IvhdEntry::ExtRange { first: 0x0800, last: 0x0900, data: 0, ext: 0x8000_0001 },
            IvhdEntry::Special { variety: SpecialVariety::IoApic, handle: 0x21, devid: 0x00a0, data: 0xd7 },
            IvhdEntry::Special { variety: SpecialVariety::Hpet, handle: 0, devid: 0x00a0, data: 0xd7 },
            IvhdEntry::AcpiHid { devid: 0x00a5, data: 0x40, hid: *b"AMDI0020", cid: [0; 8], uid: b"ID00".to_vec() },
        ]
    );
    assert_eq!(
        ivrs.ivmds,
        [Ivmd { block_type: 0x21, flags: 0x07, devid: 0x0010, aux: 0, start: 0x9ac0_0000, len_bytes: 0x40_0000 }]
    );
}

#[test]
fn malformed_ivrs_is_an_error() {
    // Range start not followed by an end.
    let mut t = QEMU.to_vec();
    t[0x54 + 4] = 0x02; // the end-of-range becomes a select
    assert!(matches!(parse_ivrs(&t), Err(TableError::UnterminatedRange { .. })));
    // Unknown variable-length entry type.
    let mut t = QEMU.to_vec();
    t[0x48] = 0x81;
    assert!(matches!(parse_ivrs(&t), Err(TableError::UnknownEntry { kind: 0x81, .. })));
    // IVHD length 0.
    let mut t = QEMU.to_vec();
    t[0x32] = 0;
    t[0x33] = 0;
    assert!(matches!(parse_ivrs(&t), Err(TableError::BadEntryLength { .. })));
    // Every truncation of the table and of a spec-shaped one decodes or fails cleanly.
    for base in [QEMU.to_vec(), spec_shaped()] {
        for len in 0..base.len() {
            let mut t = base[..len].to_vec();
            if len >= 8 {
                t[4..8].copy_from_slice(&(len as u32).to_le_bytes());
            }
            let _ = parse_ivrs(&t);
        }
        // And single-byte corruption anywhere.
        for i in 36..base.len() {
            for v in [0u8, 0x01, 0x7f, 0xff] {
                let mut t = base.clone();
                t[i] = v;
                let _ = parse_ivrs(&t);
            }
        }
    }
}
