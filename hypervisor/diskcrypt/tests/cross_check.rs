//! Both backends against RustCrypto's `xts-mode` + `aes` (an independent
//! implementation; on the host it runs on AES-NI through `aes`'s own code) on random
//! keys, data and sector numbers, including numbers above 2^64 and odd sector sizes
//! that exercise the eight-block loop, the one-block tail and the four-block batches.

use aes::Aes256;
use bulkhead_diskcrypt::{Backend, Xts};
use cipher::KeyInit;
use rand::{Rng, RngCore, SeedableRng, rngs::StdRng};
use xts_mode::{Xts128, get_tweak_default};

fn reference(key: &[u8; 64]) -> Xts128<Aes256> {
    let c1 = Aes256::new_from_slice(&key[..32]).unwrap();
    let c2 = Aes256::new_from_slice(&key[32..]).unwrap();
    Xts128::new(c1, c2)
}

fn backends() -> Vec<Backend> {
    let mut list = vec![Backend::Software];
    if Backend::detect() == Backend::AesNi {
        list.push(Backend::AesNi);
    } else {
        eprintln!("this CPU has no AES-NI: only the software backend is tested");
    }
    list
}

#[test]
fn random_sectors_match_the_reference() {
    let mut rng = StdRng::seed_from_u64(0x5eed_d15c);
    // 16 .. 4096 bytes: 1, 3, 7, 8, 9, 15, 16, 17, 32 (512 B) and 256 (4 KiB) blocks.
    let sizes = [16usize, 48, 112, 128, 144, 240, 256, 272, 512, 4096];
    for backend in backends() {
        for round in 0..40 {
            let mut key = [0u8; 64];
            rng.fill_bytes(&mut key);
            let ours = Xts::with_backend(&key, backend).unwrap();
            let theirs = reference(&key);
            let size = sizes[round % sizes.len()];
            let count = rng.random_range(1..=8usize);
            let first: u128 = match round % 3 {
                0 => rng.random_range(0..1 << 40),
                1 => rng.random(),
                _ => u64::MAX as u128 - 2, // crosses into the high 64 bits
            };
            let mut plain = vec![0u8; size * count];
            rng.fill_bytes(&mut plain);

            let mut expected = plain.clone();
            for (i, sector) in expected.chunks_mut(size).enumerate() {
                theirs.encrypt_sector(sector, get_tweak_default(first.wrapping_add(i as u128)));
            }
            let mut data = plain.clone();
            ours.encrypt_sectors(first, size, &mut data).unwrap();
            assert!(data == expected, "{backend:?}: encrypt, {count} x {size} B from sector {first:#x}");
            // Sector by sector gives the same as one call.
            let mut one_by_one = plain.clone();
            for (i, sector) in one_by_one.chunks_mut(size).enumerate() {
                ours.encrypt_sector(first.wrapping_add(i as u128), sector).unwrap();
            }
            assert!(one_by_one == expected, "{backend:?}: per-sector encrypt");
            // One pass from one buffer into another gives the same, and leaves the
            // source alone.
            let mut out = vec![0xeeu8; plain.len()];
            ours.encrypt_sectors_to(first, size, &plain, &mut out).unwrap();
            assert!(out == expected, "{backend:?}: encrypt from one buffer into another");
            let mut back = vec![0x11u8; plain.len()];
            ours.decrypt_sectors_to(first, size, &out, &mut back).unwrap();
            assert!(back == plain, "{backend:?}: decrypt from one buffer into another");
            assert!(out == expected, "{backend:?}: the source of a one-pass decrypt is unchanged");
            ours.decrypt_sectors(first, size, &mut data).unwrap();
            assert!(data == plain, "{backend:?}: decrypt, {count} x {size} B from sector {first:#x}");
        }
    }
}

#[test]
fn backends_agree_on_many_sectors() {
    if Backend::detect() != Backend::AesNi {
        eprintln!("this CPU has no AES-NI: nothing to compare");
        return;
    }
    let mut rng = StdRng::seed_from_u64(42);
    let mut key = [0u8; 64];
    rng.fill_bytes(&mut key);
    let ni = Xts::with_backend(&key, Backend::AesNi).unwrap();
    let soft = Xts::with_backend(&key, Backend::Software).unwrap();
    let mut a = vec![0u8; 512 * 2048]; // 1 MiB, 2048 sectors
    rng.fill_bytes(&mut a);
    let mut b = a.clone();
    ni.encrypt_sectors(1 << 100, 512, &mut a).unwrap();
    soft.encrypt_sectors(1 << 100, 512, &mut b).unwrap();
    assert!(a == b);
    ni.decrypt_sectors(1 << 100, 512, &mut a).unwrap();
    soft.decrypt_sectors(1 << 100, 512, &mut b).unwrap();
    assert!(a == b);
}

#[test]
fn sector_number_wraps_at_2_pow_128() {
    let key: [u8; 64] = core::array::from_fn(|i| i as u8);
    let theirs = reference(&key);
    for backend in backends() {
        let xts = Xts::with_backend(&key, backend).unwrap();
        let mut data = vec![0x5au8; 1024];
        xts.encrypt_sectors(u128::MAX, 512, &mut data).unwrap();
        let mut expected = vec![0x5au8; 1024];
        theirs.encrypt_sector(&mut expected[..512], get_tweak_default(u128::MAX));
        theirs.encrypt_sector(&mut expected[512..], get_tweak_default(0));
        assert!(data == expected, "{backend:?}");
    }
}
