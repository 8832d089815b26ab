//! Volumes read into and written from the caller's buffers (`read_to`, `write_from`)
//! give exactly what `read` and `write` give, on both block sizes, encrypted or not,
//! with buffers cut anywhere, and through the overlay of a reset-on-boot volume.

use super::tests::{formatted, pattern, rng, spec};
use super::*;
use crate::buffers::{Buffers, Slices};
use crate::device::{DmaSegment, RamDevice};

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

/// A device that reaches "memory" by address (an offset into `mem`), as a DMA-capable
/// drive reaches host RAM; it counts the transfers it made that way.
struct DirectRam {
    dev: RamDevice,
    mem: Vec<u8>,
    directs: u32,
}

impl DirectRam {
    fn span(&self, s: &DmaSegment) -> core::ops::Range<usize> {
        s.addr as usize..s.addr as usize + s.len
    }
}

impl BlockDevice for DirectRam {
    fn block_size(&self) -> u32 {
        self.dev.block_size()
    }
    fn blocks(&self) -> u64 {
        self.dev.blocks()
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        self.dev.read(lba, buf)
    }
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceError> {
        self.dev.write(lba, buf)
    }
    fn flush(&mut self) -> Result<(), DeviceError> {
        self.dev.flush()
    }
    fn read_direct(&mut self, lba: u64, segments: &[DmaSegment]) -> Option<Result<(), DeviceError>> {
        let mut data = vec![0u8; crate::device::segments_len(segments)];
        if let Err(e) = self.dev.read(lba, &mut data) {
            return Some(Err(e));
        }
        let mut at = 0;
        for s in segments {
            let r = self.span(s);
            self.mem[r].copy_from_slice(&data[at..at + s.len]);
            at += s.len;
        }
        self.directs += 1;
        Some(Ok(()))
    }
    fn write_direct(&mut self, lba: u64, segments: &[DmaSegment]) -> Option<Result<(), DeviceError>> {
        let data: Vec<u8> = segments.iter().flat_map(|s| self.mem[self.span(s)].to_vec()).collect();
        self.directs += 1;
        Some(self.dev.write(lba, &data))
    }
}

/// Buffers the CPU cannot reach (no pieces), only a device: a volume that moves a
/// byte through the CPU fails on them.
struct DeviceOnly(Vec<DmaSegment>);

impl Buffers for DeviceOnly {
    fn total(&self) -> usize {
        crate::device::segments_len(&self.0)
    }
    fn piece(&mut self, _at: usize, _max: usize) -> Option<&mut [u8]> {
        None
    }
    fn dma_segments(&mut self, _device_writes: bool, out: &mut Vec<DmaSegment>) -> bool {
        out.clear();
        out.extend_from_slice(&self.0);
        true
    }
}

#[test]
fn only_clear_volumes_without_overlay_let_the_device_reach_the_buffers() {
    let (ram, mut store) = formatted(512, 8);
    let mut dev = DirectRam { dev: ram, mem: vec![0u8; 64 * 1024], directs: 0 };
    let segs = vec![DmaSegment { addr: 0x2000, len: 0x1000 }, DmaSegment { addr: 0x8000, len: 0x3000 }];
    let data = pattern(9, 0x4000);
    let clear = VolumeSpec { cipher: Cipher::None, ..spec("bench", 1, Mode::Persistent) };
    let mut v = store.volume(&mut dev, &clear, &mut rng(2)).unwrap();
    dev.mem[0x2000..0x3000].copy_from_slice(&data[..0x1000]);
    dev.mem[0x8000..0xb000].copy_from_slice(&data[0x1000..]);
    v.write_from(&mut dev, 16, &mut DeviceOnly(segs.clone())).unwrap();
    let mut back = vec![0u8; 0x4000];
    v.read(&mut dev, 16, &mut back).unwrap();
    assert!(back == data, "written straight from the device's view of the buffers");
    dev.mem.fill(0);
    v.read_to(&mut dev, 16, &mut DeviceOnly(segs.clone())).unwrap();
    assert!(dev.mem[0x2000..0x3000] == data[..0x1000] && dev.mem[0x8000..0xb000] == data[0x1000..]);
    assert_eq!(dev.directs, 2);
    drop(v);
    // Encrypted, or with an overlay: the bytes on the device are not the guest's, so
    // the device is never pointed at the buffers (and these have no other way in).
    let enc = spec("desk", 1, Mode::Persistent);
    drop(store.volume(&mut dev, &enc, &mut rng(3)).unwrap());
    let mut e = store.volume(&mut dev, &enc, &mut rng(3)).unwrap();
    let refused = Err(VolumeError::Device(DeviceError::Buffers));
    assert_eq!(e.read_to(&mut dev, 0, &mut DeviceOnly(segs.clone())), refused);
    assert_eq!(e.write_from(&mut dev, 0, &mut DeviceOnly(segs.clone())), refused);
    drop(e);
    let mut r = store.volume(&mut dev, &VolumeSpec { mode: Mode::ResetOnBoot, ..clear }, &mut rng(4)).unwrap();
    assert_eq!(r.read_to(&mut dev, 0, &mut DeviceOnly(segs.clone())), refused);
    assert_eq!(dev.directs, 2, "no direct transfer for them");
}
