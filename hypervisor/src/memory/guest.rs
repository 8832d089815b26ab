//! A guest's physical memory: the map from guest-physical ranges to host frames, and
//! the one checked accessor through which the hypervisor reads and writes guest memory.
//!
//! Every access is bounds-checked against the map and must stay inside one region; a
//! guest-supplied address can make an access fail, never reach host memory outside the
//! guest. Raw host access (a direct map on bare metal, a `Vec` in tests) sits behind
//! [`HostMemory`], which only ever sees host-physical ranges the map vouched for.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use super::addr::{GuestPhysAddr, HostPhysAddr, PAGE_SIZE};

/// Guest access rights of a region (what stage-2 tables grant the guest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perms {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

impl Perms {
    pub const RWX: Perms = Perms { read: true, write: true, exec: true };
    pub const RW: Perms = Perms { read: true, write: true, exec: false };
    pub const RX: Perms = Perms { read: true, write: false, exec: true };
    pub const R: Perms = Perms { read: true, write: false, exec: false };
    pub const NONE: Perms = Perms { read: false, write: false, exec: false };

    /// The rights both grant.
    pub fn and(self, other: Perms) -> Perms {
        Perms { read: self.read && other.read, write: self.write && other.write, exec: self.exec && other.exec }
    }

    /// Whether any access is granted.
    pub fn any(self) -> bool {
        self.read || self.write || self.exec
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestMemoryError {
    /// A region is empty, unaligned, or its end overflows.
    BadRegion { gpa: GuestPhysAddr },
    /// Two regions overlap in guest-physical space.
    Overlap { gpa: GuestPhysAddr },
    /// The address is not backed by guest RAM/ROM.
    NotMapped { gpa: GuestPhysAddr },
    /// The access starts in one region and runs past its end.
    CrossesRegion { gpa: GuestPhysAddr, len: usize },
    /// The host backend refused the access (a hypervisor bug, reported instead of
    /// touching memory).
    HostAccess { hpa: HostPhysAddr },
}

/// One contiguous guest-physical range backed by contiguous host frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestRegion {
    gpa: GuestPhysAddr,
    hpa: HostPhysAddr,
    len_bytes: u64,
    perms: Perms,
}

impl GuestRegion {
    /// A region of `len_bytes` (a non-zero multiple of 4 KiB) at page-aligned addresses.
    pub fn new(
        gpa: GuestPhysAddr,
        hpa: HostPhysAddr,
        len_bytes: u64,
        perms: Perms,
    ) -> Result<GuestRegion, GuestMemoryError> {
        let aligned = gpa.is_aligned(PAGE_SIZE)
            && hpa.is_aligned(PAGE_SIZE)
            && len_bytes != 0
            && len_bytes.is_multiple_of(PAGE_SIZE);
        if !aligned || gpa.checked_add(len_bytes).is_none() || hpa.checked_add(len_bytes).is_none() {
            return Err(GuestMemoryError::BadRegion { gpa });
        }
        Ok(GuestRegion { gpa, hpa, len_bytes, perms })
    }
    pub fn gpa(&self) -> GuestPhysAddr {
        self.gpa
    }
    pub fn hpa(&self) -> HostPhysAddr {
        self.hpa
    }
    pub fn len_bytes(&self) -> u64 {
        self.len_bytes
    }
    pub fn perms(&self) -> Perms {
        self.perms
    }
    /// One past the last guest-physical byte (cannot overflow: checked in `new`).
    pub fn end(&self) -> u64 {
        self.gpa.raw().wrapping_add(self.len_bytes)
    }
    pub fn contains(&self, gpa: GuestPhysAddr) -> bool {
        gpa.raw() >= self.gpa.raw() && gpa.raw() < self.end()
    }
}

/// A guest's RAM and ROM regions: sorted by GPA, non-overlapping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestMemoryMap {
    regions: Vec<GuestRegion>,
}

impl GuestMemoryMap {
    pub fn new(mut regions: Vec<GuestRegion>) -> Result<GuestMemoryMap, GuestMemoryError> {
        regions.sort_by_key(|r| r.gpa);
        for pair in regions.windows(2) {
            if let [a, b] = pair
                && a.end() > b.gpa.raw()
            {
                return Err(GuestMemoryError::Overlap { gpa: b.gpa });
            }
        }
        Ok(GuestMemoryMap { regions })
    }

    pub fn regions(&self) -> &[GuestRegion] {
        &self.regions
    }

    pub fn region(&self, gpa: GuestPhysAddr) -> Option<&GuestRegion> {
        let idx = self.regions.partition_point(|r| r.end() <= gpa.raw());
        self.regions.get(idx).filter(|r| r.contains(gpa))
    }

    pub fn translate(&self, gpa: GuestPhysAddr) -> Option<HostPhysAddr> {
        let r = self.region(gpa)?;
        r.hpa.checked_add(gpa.raw().wrapping_sub(r.gpa.raw()))
    }

    pub fn total_bytes(&self) -> u64 {
        self.regions.iter().fold(0u64, |acc, r| acc.saturating_add(r.len_bytes))
    }

    /// The host range for `[gpa, gpa + len)` if it lies inside one region.
    fn host_range(&self, gpa: GuestPhysAddr, len: usize) -> Result<HostPhysAddr, GuestMemoryError> {
        let region = self.region(gpa).ok_or(GuestMemoryError::NotMapped { gpa })?;
        let offset = gpa.raw().wrapping_sub(region.gpa.raw());
        let end = offset.checked_add(len as u64).ok_or(GuestMemoryError::CrossesRegion { gpa, len })?;
        if end > region.len_bytes {
            return Err(GuestMemoryError::CrossesRegion { gpa, len });
        }
        region.hpa.checked_add(offset).ok_or(GuestMemoryError::NotMapped { gpa })
    }
}

/// Raw access to host-physical memory that belongs to guests. Implementations may
/// assume every range they are given lies inside a region of a [`GuestMemoryMap`].
pub trait HostMemory {
    /// Fills `buf` from `hpa`; `false` if the backend cannot reach that memory.
    fn read(&self, hpa: HostPhysAddr, buf: &mut [u8]) -> bool;
    /// Copies `data` to `hpa`; `false` if the backend cannot reach that memory.
    fn write(&mut self, hpa: HostPhysAddr, data: &[u8]) -> bool;
    /// Reads a little-endian u64 at `hpa` (a backend may do it in one load).
    fn read_u64(&self, hpa: HostPhysAddr) -> Option<u64> {
        let mut bytes = [0u8; 8];
        self.read(hpa, &mut bytes).then_some(u64::from_le_bytes(bytes))
    }
    /// `len` bytes at `hpa` as memory the caller reads and writes in place, for a
    /// backend that reaches host memory directly (a device model then moves each byte
    /// once, with no copy through a buffer); `None` when it cannot.
    fn bytes_mut(&mut self, _hpa: HostPhysAddr, _len: usize) -> Option<&mut [u8]> {
        None
    }
    /// Copies `len` bytes from `src_hpa` in `src` to `dst_hpa` in this memory. A backend
    /// that reaches both directly copies each byte once; this fallback goes through a
    /// small buffer on the stack.
    fn copy_from(&mut self, dst_hpa: HostPhysAddr, src: &Self, src_hpa: HostPhysAddr, len: usize) -> bool
    where
        Self: Sized,
    {
        let mut chunk = [0u8; 256];
        let mut done = 0usize;
        while done < len {
            let n = len.saturating_sub(done).min(chunk.len());
            let (Some(buf), Some(from), Some(to)) =
                (chunk.get_mut(..n), src_hpa.checked_add(done as u64), dst_hpa.checked_add(done as u64))
            else {
                return false;
            };
            if !src.read(from, buf) || !self.write(to, buf) {
                return false;
            }
            done = done.saturating_add(n);
        }
        true
    }
}

/// Plain-old-data values that can be read from and written to guest memory as
/// little-endian bytes (no padding, every bit pattern valid).
pub trait Pod: Copy {
    const SIZE: usize;
    /// Decodes from exactly `SIZE` bytes.
    fn from_le(bytes: &[u8]) -> Option<Self>;
    /// Encodes into exactly `SIZE` bytes.
    fn to_le(&self, out: &mut [u8]);
}

macro_rules! pod_int {
    ($($t:ty),*) => {$(
        impl Pod for $t {
            const SIZE: usize = core::mem::size_of::<$t>();
            fn from_le(bytes: &[u8]) -> Option<Self> {
                Some(<$t>::from_le_bytes(bytes.try_into().ok()?))
            }
            fn to_le(&self, out: &mut [u8]) {
                for (dst, src) in out.iter_mut().zip(self.to_le_bytes()) {
                    *dst = src;
                }
            }
        }
    )*};
}
pod_int!(u8, u16, u32, u64, i8, i16, i32, i64);

/// The dyn-compatible part of the accessor, as used by exit handling.
pub trait GuestMemoryAccess {
    fn read_bytes(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> Result<(), GuestMemoryError>;
    fn write_bytes(&mut self, gpa: GuestPhysAddr, data: &[u8]) -> Result<(), GuestMemoryError>;
    /// Whether `gpa` is guest RAM/ROM (as opposed to MMIO or a hole).
    fn is_ram(&self, gpa: GuestPhysAddr) -> bool;
    /// Reads one little-endian u64: what `read_obj::<u64>` does, on the guest page
    /// walk's path (three or four entries per instruction fetch) without the byte copy.
    fn read_u64(&self, gpa: GuestPhysAddr) -> Result<u64, GuestMemoryError> {
        let mut bytes = [0u8; 8];
        self.read_bytes(gpa, &mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }
}

/// Reads one little-endian value.
pub fn read_obj<T: Pod>(mem: &(impl GuestMemoryAccess + ?Sized), gpa: GuestPhysAddr) -> Result<T, GuestMemoryError> {
    let mut buf = [0u8; 16];
    let bytes = buf.get_mut(..T::SIZE).ok_or(GuestMemoryError::CrossesRegion { gpa, len: T::SIZE })?;
    mem.read_bytes(gpa, bytes)?;
    T::from_le(bytes).ok_or(GuestMemoryError::CrossesRegion { gpa, len: T::SIZE })
}

/// Writes one little-endian value.
pub fn write_obj<T: Pod>(
    mem: &mut (impl GuestMemoryAccess + ?Sized),
    gpa: GuestPhysAddr,
    value: T,
) -> Result<(), GuestMemoryError> {
    let mut buf = [0u8; 16];
    let bytes = buf.get_mut(..T::SIZE).ok_or(GuestMemoryError::CrossesRegion { gpa, len: T::SIZE })?;
    value.to_le(bytes);
    mem.write_bytes(gpa, bytes)
}

/// The guest-memory accessor: a map plus a host backend.
#[derive(Debug)]
pub struct GuestMemory<'a, H: HostMemory> {
    map: &'a GuestMemoryMap,
    host: H,
}

impl<'a, H: HostMemory> GuestMemory<'a, H> {
    pub fn new(map: &'a GuestMemoryMap, host: H) -> Self {
        GuestMemory { map, host }
    }
    pub fn map(&self) -> &GuestMemoryMap {
        self.map
    }
    pub fn host(&self) -> &H {
        &self.host
    }

    /// The guest's `len` bytes at `gpa` as one slice, when they lie inside one region
    /// of its memory map (the same check as every other access) and the backend reaches
    /// host memory directly.
    pub fn bytes_mut(&mut self, gpa: GuestPhysAddr, len: usize) -> Result<&mut [u8], GuestMemoryError> {
        let hpa = self.map.host_range(gpa, len)?;
        self.host.bytes_mut(hpa, len).ok_or(GuestMemoryError::HostAccess { hpa })
    }
}

impl<H: HostMemory> GuestMemoryAccess for GuestMemory<'_, H> {
    fn read_bytes(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> Result<(), GuestMemoryError> {
        let hpa = self.map.host_range(gpa, buf.len())?;
        if self.host.read(hpa, buf) { Ok(()) } else { Err(GuestMemoryError::HostAccess { hpa }) }
    }

    fn write_bytes(&mut self, gpa: GuestPhysAddr, data: &[u8]) -> Result<(), GuestMemoryError> {
        let hpa = self.map.host_range(gpa, data.len())?;
        if self.host.write(hpa, data) { Ok(()) } else { Err(GuestMemoryError::HostAccess { hpa }) }
    }

    fn is_ram(&self, gpa: GuestPhysAddr) -> bool {
        self.map.region(gpa).is_some()
    }

    fn read_u64(&self, gpa: GuestPhysAddr) -> Result<u64, GuestMemoryError> {
        let hpa = self.map.host_range(gpa, 8)?;
        self.host.read_u64(hpa).ok_or(GuestMemoryError::HostAccess { hpa })
    }
}

/// Copies `len` bytes from `src_gpa` in one guest's memory to `dst_gpa` in another's
/// (or the same one's), each range checked against its own map and inside one region;
/// the backend copies the bytes once.
pub fn copy_between<H: HostMemory>(
    src: &GuestMemory<'_, H>,
    src_gpa: GuestPhysAddr,
    dst: &mut GuestMemory<'_, H>,
    dst_gpa: GuestPhysAddr,
    len: usize,
) -> Result<(), GuestMemoryError> {
    let from = src.map.host_range(src_gpa, len)?;
    let to = dst.map.host_range(dst_gpa, len)?;
    if dst.host.copy_from(to, &src.host, from, len) { Ok(()) } else { Err(GuestMemoryError::HostAccess { hpa: to }) }
}

/// Host memory simulated by a byte vector starting at `base` (tests and fuzzing).
#[derive(Debug, Clone)]
pub struct VecHostMemory {
    pub base: HostPhysAddr,
    pub bytes: Vec<u8>,
}

impl VecHostMemory {
    pub fn new(base: HostPhysAddr, len: usize) -> Self {
        VecHostMemory { base, bytes: alloc::vec![0; len] }
    }

    fn range(&self, hpa: HostPhysAddr, len: usize) -> Option<core::ops::Range<usize>> {
        let start = usize::try_from(hpa.raw().checked_sub(self.base.raw())?).ok()?;
        let end = start.checked_add(len)?;
        (end <= self.bytes.len()).then_some(start..end)
    }
}

impl HostMemory for VecHostMemory {
    fn bytes_mut(&mut self, hpa: HostPhysAddr, len: usize) -> Option<&mut [u8]> {
        let r = self.range(hpa, len)?;
        self.bytes.get_mut(r)
    }

    fn copy_from(&mut self, dst_hpa: HostPhysAddr, src: &Self, src_hpa: HostPhysAddr, len: usize) -> bool {
        let (Some(from), Some(to)) = (src.range(src_hpa, len), self.range(dst_hpa, len)) else {
            return false;
        };
        match (src.bytes.get(from), self.bytes.get_mut(to)) {
            (Some(from), Some(to)) => {
                to.copy_from_slice(from);
                true
            }
            _ => false,
        }
    }

    fn read(&self, hpa: HostPhysAddr, buf: &mut [u8]) -> bool {
        match self.range(hpa, buf.len()).and_then(|r| self.bytes.get(r)) {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }

    fn write(&mut self, hpa: HostPhysAddr, data: &[u8]) -> bool {
        let Some(r) = self.range(hpa, data.len()) else {
            return false;
        };
        match self.bytes.get_mut(r) {
            Some(dst) => {
                dst.copy_from_slice(data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn gpa(x: u64) -> GuestPhysAddr {
        GuestPhysAddr::new(x)
    }
    fn hpa(x: u64) -> HostPhysAddr {
        HostPhysAddr::new(x)
    }

    /// Two regions: GPA 0..8K → HPA 0x10000, GPA 16K..20K → HPA 0x12000.
    fn two_regions() -> GuestMemoryMap {
        GuestMemoryMap::new(vec![
            GuestRegion::new(gpa(0x4000), hpa(0x12000), 0x1000, Perms::RW).unwrap(),
            GuestRegion::new(gpa(0), hpa(0x10000), 0x2000, Perms::RWX).unwrap(),
        ])
        .unwrap()
    }

    #[test]
    fn constructor_rejects_bad_regions() {
        assert!(GuestRegion::new(gpa(0x1001), hpa(0), 0x1000, Perms::RW).is_err());
        assert!(GuestRegion::new(gpa(0), hpa(0), 0, Perms::RW).is_err());
        assert!(GuestRegion::new(gpa(0), hpa(0), 0x1800, Perms::RW).is_err());
        assert!(GuestRegion::new(gpa(!0xfff), hpa(0), 0x2000, Perms::RW).is_err());
        let overlapping = GuestMemoryMap::new(vec![
            GuestRegion::new(gpa(0), hpa(0), 0x2000, Perms::RW).unwrap(),
            GuestRegion::new(gpa(0x1000), hpa(0x8000), 0x1000, Perms::RW).unwrap(),
        ]);
        assert_eq!(overlapping, Err(GuestMemoryError::Overlap { gpa: gpa(0x1000) }));
    }

    #[test]
    fn lookup_and_translate() {
        let map = two_regions();
        assert_eq!(map.regions()[0].gpa(), gpa(0));
        assert_eq!(map.translate(gpa(0x1234)), Some(hpa(0x11234)));
        assert_eq!(map.translate(gpa(0x4010)), Some(hpa(0x12010)));
        assert_eq!(map.translate(gpa(0x2000)), None);
        assert_eq!(map.translate(gpa(0x5000)), None);
        assert_eq!(map.total_bytes(), 0x3000);
    }

    #[test]
    fn accessor_reads_and_writes_inside_one_region() {
        let map = two_regions();
        let mut mem = GuestMemory::new(&map, VecHostMemory::new(hpa(0x10000), 0x3000));
        write_obj(&mut mem, gpa(0x1ff8), 0x1122_3344_5566_7788u64).unwrap();
        assert_eq!(read_obj::<u64>(&mem, gpa(0x1ff8)).unwrap(), 0x1122_3344_5566_7788);
        assert_eq!(read_obj::<u16>(&mem, gpa(0x1ffa)).unwrap(), 0x5566);
        write_obj(&mut mem, gpa(0x4000), 0xabu8).unwrap();
        assert_eq!(mem.host().bytes[0x2000], 0xab);
    }

    #[test]
    fn read_u64_is_read_obj_of_u64() {
        let map = two_regions();
        let mut mem = GuestMemory::new(&map, VecHostMemory::new(hpa(0x10000), 0x3000));
        let pattern: Vec<u8> = (0..0x2000usize).map(|i| (i * 7 + 3) as u8).collect();
        mem.write_bytes(gpa(0), &pattern).unwrap();
        mem.write_bytes(gpa(0x4000), &pattern[..0x1000]).unwrap();
        // Aligned, unaligned, the last word of a region, across regions, outside.
        for at in [0x0, 0x3, 0x1ff8, 0x1ffc, 0x4ff8, 0x4ff9, 0x2000, 0x9000] {
            assert_eq!(mem.read_u64(gpa(at)), read_obj::<u64>(&mem, gpa(at)), "at {at:#x}");
        }
        assert_eq!(mem.read_u64(gpa(0x3)).unwrap(), read_obj::<u64>(&mem, gpa(0x3)).unwrap());
        assert!(mem.read_u64(gpa(0x1ffc)).is_err());
    }

    #[test]
    fn accessor_fails_cleanly_outside_the_map() {
        let map = two_regions();
        let mut mem = GuestMemory::new(&map, VecHostMemory::new(hpa(0x10000), 0x3000));
        assert_eq!(
            read_obj::<u64>(&mem, gpa(0x1ffc)),
            Err(GuestMemoryError::CrossesRegion { gpa: gpa(0x1ffc), len: 8 })
        );
        assert_eq!(read_obj::<u32>(&mem, gpa(0x3000)), Err(GuestMemoryError::NotMapped { gpa: gpa(0x3000) }));
        assert!(mem.write_bytes(gpa(u64::MAX), &[1, 2]).is_err());
        assert!(mem.read_bytes(gpa(0x4fff), &mut [0; 2]).is_err());
        assert!(mem.is_ram(gpa(0x4fff)));
        assert!(!mem.is_ram(gpa(0x5000)));
    }

    #[test]
    fn copy_between_checks_both_maps() {
        let map_a = two_regions();
        let map_b =
            GuestMemoryMap::new(vec![GuestRegion::new(gpa(0x8000), hpa(0x40000), 0x1000, Perms::RW).unwrap()]).unwrap();
        let mut a = GuestMemory::new(&map_a, VecHostMemory::new(hpa(0x10000), 0x3000));
        let mut b = GuestMemory::new(&map_b, VecHostMemory::new(hpa(0x40000), 0x1000));
        a.write_bytes(gpa(0x1000), b"frame bytes").unwrap();
        copy_between(&a, gpa(0x1000), &mut b, gpa(0x8ff0), 11).unwrap();
        let mut out = [0u8; 11];
        b.read_bytes(gpa(0x8ff0), &mut out).unwrap();
        assert_eq!(&out, b"frame bytes");
        // The destination range runs past B's only region; the source past A's first.
        assert!(copy_between(&a, gpa(0x1000), &mut b, gpa(0x8ff8), 11).is_err());
        assert!(copy_between(&a, gpa(0x1ff8), &mut b, gpa(0x8000), 11).is_err());
        // The fallback through the stack buffer copies the same bytes.
        let mut fallback = VecHostMemory::new(hpa(0x40000), 0x1000);
        let src = VecHostMemory { base: hpa(0), bytes: (0..=255u8).cycle().take(700).collect() };
        assert!(HostMemory::write(&mut fallback, hpa(0x40000), &[0; 8]));
        let mut chunked = ChunkedCopy(fallback);
        assert!(chunked.copy_from(hpa(0x40010), &ChunkedCopy(src.clone()), hpa(3), 600));
        assert_eq!(chunked.0.bytes[0x10..0x10 + 600], src.bytes[3..603]);
        assert!(!chunked.copy_from(hpa(0x40f00), &ChunkedCopy(src), hpa(0), 600), "past the end");
    }

    /// A backend without its own `copy_from`, to exercise the default one.
    struct ChunkedCopy(VecHostMemory);

    impl HostMemory for ChunkedCopy {
        fn read(&self, hpa: HostPhysAddr, buf: &mut [u8]) -> bool {
            self.0.read(hpa, buf)
        }
        fn write(&mut self, hpa: HostPhysAddr, data: &[u8]) -> bool {
            self.0.write(hpa, data)
        }
    }

    #[test]
    fn backend_refusal_is_an_error() {
        let map = two_regions();
        // Backend too small for the second region.
        let mem = GuestMemory::new(&map, VecHostMemory::new(hpa(0x10000), 0x2000));
        assert_eq!(read_obj::<u8>(&mem, gpa(0x4000)), Err(GuestMemoryError::HostAccess { hpa: hpa(0x12000) }));
    }
}
