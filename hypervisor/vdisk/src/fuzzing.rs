//! The harness of the `vdisk_table` fuzz target (hypervisor/fuzz): arbitrary bytes
//! as a table slot, as a slot with a correct checksum, as a decrypted entry list, and
//! as the start of a partition given to `Store::open`. Nothing may panic, and what is
//! accepted must encode back to the same bytes.

use crate::device::{BlockDevice, RamDevice};
use crate::store::{Opened, Store};
use crate::table::{self, ENTRY_LEN, HEADER_LEN, MAGIC, SLOT_SIZE, TRAILER_LEN};
use alloc::vec::Vec;

/// Runs one input; the first byte picks the form. Returns whether it was accepted.
pub fn run(data: &[u8]) -> bool {
    let Some((&form, rest)) = data.split_first() else { return false };
    match form % 4 {
        0 => slot(rest),
        1 => slot(&sealed(rest)),
        2 => entries(rest),
        _ => partition(rest),
    }
}

/// Opens a slot; an accepted header encodes back to its bytes.
fn slot(bytes: &[u8]) -> bool {
    let Ok(rec) = table::open_slot(bytes) else { return false };
    assert_eq!(&table::encode_header(&rec.header)[..], &bytes[..HEADER_LEN]);
    assert_eq!(rec.sealed_entries.len(), rec.header.count * ENTRY_LEN);
    true
}

/// The input with magic, version and a length matching its entry count, and the
/// checksum appended: reaches the field checks behind the checksum.
fn sealed(rest: &[u8]) -> Vec<u8> {
    let mut r = rest.to_vec();
    r.resize(r.len().max(HEADER_LEN), 0);
    r[..16].copy_from_slice(&MAGIC);
    r[16..20].copy_from_slice(&table::FORMAT_VERSION.to_le_bytes());
    let count = usize::from(r[44] % 70);
    r[44..48].copy_from_slice(&(count as u32).to_le_bytes());
    let len = HEADER_LEN + count * ENTRY_LEN + TRAILER_LEN;
    r[20..24].copy_from_slice(&(len as u32).to_le_bytes());
    r.resize(len - 32, 0);
    table::seal_record(&mut r);
    r
}

/// Decodes an entry list for a partition size taken from the input; accepted
/// entries encode back to their bytes and pass the cross-entry checks.
fn entries(rest: &[u8]) -> bool {
    let (size, list) = rest.split_at(rest.len().min(8));
    let mut b = [0u8; 8];
    b[..size.len()].copy_from_slice(size);
    let partition_mib = u64::from_le_bytes(b);
    let Ok(entries) = table::decode_entries(list, partition_mib) else { return false };
    for (e, chunk) in entries.iter().zip(list.chunks_exact(ENTRY_LEN)) {
        assert_eq!(&table::encode_entry(e)[..], chunk);
    }
    assert_eq!(table::check_entries(&entries, partition_mib), Ok(()));
    true
}

/// The input as both slots of a 4 MiB partition (4096-byte blocks).
fn partition(rest: &[u8]) -> bool {
    let mut dev = RamDevice::new(4096, 1024);
    let mut area = rest.to_vec();
    area.truncate(2 * SLOT_SIZE);
    area.resize(area.len().div_ceil(4096) * 4096, 0);
    if !area.is_empty() && dev.write(0, &area).is_err() {
        return false;
    }
    let Ok(Opened::Locked(l)) = Store::open(&mut dev) else { return false };
    assert_eq!(table::check_kdf(&l.kdf_params()), Ok(()));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A quick run of the harness over generated inputs (the fuzzer runs it longer).
    #[test]
    fn harness_runs_over_generated_inputs() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..3000usize {
            let len = 1 + i % (2 * SLOT_SIZE / 7);
            let input: Vec<u8> = (0..len)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    s as u8
                })
                .collect();
            run(&input);
        }
    }

    /// The forms reach past their checks with real tables (the seeds of a fuzz run
    /// are made the same way), and a damaged copy is refused.
    #[test]
    fn real_tables_are_accepted_in_every_form() {
        use crate::store::VolumeSpec;
        use crate::table::{Cipher, Entry, Name};
        use crate::volume::Mode;
        let mut dev = RamDevice::new(4096, 1024);
        let mut n = 0u8;
        let mut rng = |b: &mut [u8]| {
            b.iter_mut().for_each(|x| {
                n = n.wrapping_add(13);
                *x = n
            })
        };
        let mut store = Store::format(&mut dev, b"pw", bulkhead_diskcrypt::KdfParams::INSECURE_TEST, &mut rng).unwrap();
        let spec = VolumeSpec { name: "corp", size_bytes: 1 << 20, mode: Mode::ResetOnBoot, cipher: Cipher::Aes256Xts };
        store.volume(&mut dev, &spec, &mut rng).unwrap();
        let mut area = alloc::vec![0u8; 2 * SLOT_SIZE];
        dev.read(0, &mut area).unwrap();
        let slot_a = &area[..SLOT_SIZE];
        let slot_b = &area[SLOT_SIZE..];
        let input = |form: u8, bytes: &[u8]| [&[form][..], bytes].concat();
        assert!(run(&input(0, slot_a)) && run(&input(0, slot_b)));
        assert!(run(&input(3, &area)));
        let len = HEADER_LEN + ENTRY_LEN + TRAILER_LEN;
        assert!(run(&input(1, &slot_b[..len - 32])));
        let e = Entry {
            name: Name::new("corp").unwrap(),
            cipher: Cipher::None,
            size_mib: 2,
            base_mib: 1,
            overlay_mib: Some(3),
            wrapped_key: None,
        };
        let list = [&10u64.to_le_bytes()[..], &table::encode_entry(&e)].concat();
        assert!(run(&input(2, &list)));
        let mut bad = input(0, slot_b);
        bad[100] ^= 1;
        assert!(!run(&bad));
        assert!(!run(&input(2, &[&4u64.to_le_bytes()[..], &table::encode_entry(&e)].concat())), "past the end");
    }
}
