//! Volumes read into and written from the caller's buffers (`read_to`, `write_from`)
//! give exactly what `read` and `write` give, on both block sizes, encrypted or not,
//! with buffers cut anywhere, and through the overlay of a reset-on-boot volume.

use super::tests::{formatted, pattern, rng, spec};
use super::*;
use crate::buffers::Slices;

/// Splits `data` into pieces of the sizes in `cut` (cycled), the rest in the last.
fn split<'a>(mut data: &'a mut [u8], cut: &[usize]) -> Vec<&'a mut [u8]> {
    let mut out = Vec::new();
    let mut i = 0;
    while !data.is_empty() {
        let n = cut[i % cut.len()].min(data.len());
        let (a, b) = data.split_at_mut(n);
        out.push(a);
        data = b;
        i += 1;
    }
    out
}

#[test]
fn buffers_paths_match_read_and_write() {
    let cuts: [&[usize]; 4] = [&[4096], &[512, 1024, 2560], &[700], &[4096, 100, 3996]];
    for bs in [512u32, 4096] {
        for cipher in [Cipher::Aes256Xts, Cipher::None] {
            for mode in [Mode::Persistent, Mode::ResetOnBoot] {
                let (mut dev, mut store) = formatted(bs, 8);
                let s = VolumeSpec { cipher, ..spec("desk", 1, Mode::Persistent) };
                drop(store.volume(&mut dev, &s, &mut rng(2)).unwrap());
                let mut v = store.volume(&mut dev, &VolumeSpec { mode, ..s }, &mut rng(3)).unwrap();
                for (round, cut) in cuts.iter().enumerate() {
                    // Odd sector counts and offsets: partial device blocks on 4Kn.
                    let sector = [0u64, 8, 3, 1000][round];
                    let len = [300 * 1024, 64 * 1024, 5 * 512, 32 * 1024][round];
                    let data = pattern(round as u8, len);
                    let mut src = data.clone();
                    v.write_from(&mut dev, sector, &mut Slices(&mut split(&mut src, cut))).unwrap();
                    assert_eq!(src, data, "the caller's data is left as it was");
                    let mut back = vec![0u8; len];
                    v.read(&mut dev, sector, &mut back).unwrap();
                    assert!(back == data, "bs {bs}, {cipher:?}, {mode:?}, round {round}: write_from then read");
                    let mut into = vec![0u8; len];
                    v.read_to(&mut dev, sector, &mut Slices(&mut split(&mut into, cut))).unwrap();
                    assert!(into == data, "bs {bs}, {cipher:?}, {mode:?}, round {round}: read_to");
                }
            }
        }
    }
}

#[test]
fn buffers_paths_check_like_read_and_write() {
    let (mut dev, mut store) = formatted(512, 8);
    let mut v = store.volume(&mut dev, &spec("desk", 1, Mode::Persistent), &mut rng(2)).unwrap();
    let end = v.capacity_sectors();
    let mut buf = vec![0u8; 1024];
    assert_eq!(v.read_to(&mut dev, end - 1, &mut Slices(&mut [&mut buf[..]])), Err(VolumeError::OutOfRange));
    assert_eq!(v.write_from(&mut dev, 0, &mut Slices(&mut [&mut buf[..100]])), Err(VolumeError::Misaligned));
    drop(v);
    let mut ro = store.volume(&mut dev, &spec("desk", 1, Mode::ReadOnly), &mut rng(2)).unwrap();
    assert_eq!(ro.write_from(&mut dev, 0, &mut Slices(&mut [&mut buf[..]])), Err(VolumeError::ReadOnly));
}
