//! Validation of a static x86-64 ELF before anything is copied: a corrupt or foreign
//! file must give a clear reason, never a jump into garbage. The UEFI loader uses it for
//! the hypervisor, the hypervisor for guest payloads.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

use xmas_elf::ElfFile;
use xmas_elf::header::{Class, Machine, Type as ElfType};
use xmas_elf::program::Type as PhType;

pub const PAGE: u64 = 4096;

/// Where the UEFI loader accepts the hypervisor: above the legacy first MiB and below
/// 4 GiB (the firmware's identity map covers it on every firmware we know).
pub const HYPERVISOR_WINDOW: core::ops::Range<u64> = 0x10_0000..0x1_0000_0000;

/// One PT_LOAD segment: copy `file_range` of the file to `phys`, zero the rest up to
/// `mem_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub phys: u64,
    pub file_offset: u64,
    pub file_size: u64,
    pub mem_size: u64,
}

/// Everything needed to load the image: the page span to allocate and the segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadPlan {
    pub entry: u64,
    /// Page-aligned [start, end) covering every segment.
    pub span_start: u64,
    pub span_end: u64,
    pub segments: heapless::Vec<Segment, 16>,
}

impl LoadPlan {
    pub fn pages(&self) -> usize {
        ((self.span_end - self.span_start) / PAGE) as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfError {
    NotElf(&'static str),
    Not64Bit,
    NotX86_64,
    NotExecutable,
    NoLoadSegments,
    TooManySegments,
    SegmentOutsideFile { index: usize },
    SegmentOutsideWindow { index: usize, window: (u64, u64) },
    SegmentsOverlap,
    EntryOutsideSegments(u64),
}

impl core::fmt::Display for ElfError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ElfError::NotElf(why) => write!(f, "not an ELF file ({why})"),
            ElfError::Not64Bit => f.write_str("not a 64-bit ELF"),
            ElfError::NotX86_64 => f.write_str("not built for x86-64"),
            ElfError::NotExecutable => f.write_str("not a static executable (ET_EXEC)"),
            ElfError::NoLoadSegments => f.write_str("has no loadable segments"),
            ElfError::TooManySegments => f.write_str("has more than 16 loadable segments"),
            ElfError::SegmentOutsideFile { index } => {
                write!(f, "segment {index} points past the end of the file (truncated?)")
            }
            ElfError::SegmentOutsideWindow { index, window } => {
                write!(f, "segment {index} lies outside {:#x}..{:#x}", window.0, window.1)
            }
            ElfError::SegmentsOverlap => f.write_str("has overlapping segments"),
            ElfError::EntryOutsideSegments(entry) => {
                write!(f, "entry point {entry:#x} is not inside a loaded segment")
            }
        }
    }
}

/// Checks `bytes` and works out where its segments go; every segment must lie inside
/// `window`.
pub fn plan(bytes: &[u8], window: core::ops::Range<u64>) -> Result<LoadPlan, ElfError> {
    let elf = ElfFile::new(bytes).map_err(ElfError::NotElf)?;
    if elf.header.pt1.class() != Class::SixtyFour {
        return Err(ElfError::Not64Bit);
    }
    if elf.header.pt2.machine().as_machine() != Machine::X86_64 {
        return Err(ElfError::NotX86_64);
    }
    if elf.header.pt2.type_().as_type() != ElfType::Executable {
        return Err(ElfError::NotExecutable);
    }
    let mut segments = heapless::Vec::<Segment, 16>::new();
    for (index, ph) in elf.program_iter().enumerate() {
        if ph.get_type() != Ok(PhType::Load) || ph.mem_size() == 0 {
            continue;
        }
        let seg = Segment {
            phys: ph.physical_addr(),
            file_offset: ph.offset(),
            file_size: ph.file_size(),
            mem_size: ph.mem_size(),
        };
        let file_end = seg.file_offset.checked_add(seg.file_size);
        if seg.file_size > seg.mem_size || file_end.is_none_or(|end| end > bytes.len() as u64) {
            return Err(ElfError::SegmentOutsideFile { index });
        }
        let mem_end = seg.phys.checked_add(seg.mem_size);
        if seg.phys < window.start || mem_end.is_none_or(|end| end > window.end) {
            return Err(ElfError::SegmentOutsideWindow { index, window: (window.start, window.end) });
        }
        segments.push(seg).map_err(|_| ElfError::TooManySegments)?;
    }
    if segments.is_empty() {
        return Err(ElfError::NoLoadSegments);
    }
    segments.sort_unstable_by_key(|s| s.phys);
    if segments.windows(2).any(|w| w[0].phys + w[0].mem_size > w[1].phys) {
        return Err(ElfError::SegmentsOverlap);
    }
    let entry = elf.header.pt2.entry_point();
    if !segments.iter().any(|s| (s.phys..s.phys + s.mem_size).contains(&entry)) {
        return Err(ElfError::EntryOutsideSegments(entry));
    }
    let first = segments[0];
    let last = segments[segments.len() - 1];
    Ok(LoadPlan {
        entry,
        span_start: first.phys & !(PAGE - 1),
        span_end: (last.phys + last.mem_size).next_multiple_of(PAGE),
        segments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 executable with the given PT_LOAD (phys, offset, filesz, memsz).
    fn elf(machine: u16, kind: u16, entry: u64, loads: &[(u64, u64, u64, u64)], len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len.max(64 + 56 * loads.len())];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2; // 64-bit
        b[5] = 1; // little endian
        b[6] = 1; // version
        b[16..18].copy_from_slice(&kind.to_le_bytes());
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b[20..24].copy_from_slice(&1u32.to_le_bytes());
        b[24..32].copy_from_slice(&entry.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
        b[52..54].copy_from_slice(&64u16.to_le_bytes()); // ehsize
        b[54..56].copy_from_slice(&56u16.to_le_bytes()); // phentsize
        b[56..58].copy_from_slice(&(loads.len() as u16).to_le_bytes());
        for (i, &(phys, off, filesz, memsz)) in loads.iter().enumerate() {
            let p = 64 + 56 * i;
            b[p..p + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
            b[p + 8..p + 16].copy_from_slice(&off.to_le_bytes());
            b[p + 16..p + 24].copy_from_slice(&phys.to_le_bytes());
            b[p + 24..p + 32].copy_from_slice(&phys.to_le_bytes());
            b[p + 32..p + 40].copy_from_slice(&filesz.to_le_bytes());
            b[p + 40..p + 48].copy_from_slice(&memsz.to_le_bytes());
        }
        b
    }

    const X86_64: u16 = 62;

    fn plan_hv(bytes: &[u8]) -> Result<LoadPlan, ElfError> {
        plan(bytes, HYPERVISOR_WINDOW)
    }
    const EXEC: u16 = 2;

    #[test]
    fn plans_a_valid_image() {
        let bytes = elf(
            X86_64,
            EXEC,
            0x400_0000,
            &[(0x400_0000, 0x1000, 0x100, 0x100), (0x400_2000, 0x1100, 0x10, 0x3000)],
            0x2000,
        );
        let plan = plan_hv(&bytes).unwrap();
        assert_eq!(plan.entry, 0x400_0000);
        assert_eq!((plan.span_start, plan.span_end), (0x400_0000, 0x400_5000));
        assert_eq!(plan.pages(), 5);
        assert_eq!(plan.segments.len(), 2);
    }

    #[test]
    fn rejects_garbage_and_foreign_files() {
        assert!(matches!(plan_hv(b"MZ this is a PE file"), Err(ElfError::NotElf(_))));
        let arm = elf(183, EXEC, 0x400_0000, &[(0x400_0000, 0x1000, 0x10, 0x10)], 0x2000);
        assert_eq!(plan_hv(&arm), Err(ElfError::NotX86_64));
        let pie = elf(X86_64, 3, 0x400_0000, &[(0x400_0000, 0x1000, 0x10, 0x10)], 0x2000);
        assert_eq!(plan_hv(&pie), Err(ElfError::NotExecutable));
    }

    #[test]
    fn rejects_truncated_overlapping_and_misplaced_segments() {
        let truncated = elf(X86_64, EXEC, 0x400_0000, &[(0x400_0000, 0x1000, 0x2000, 0x2000)], 0x1800);
        assert_eq!(plan_hv(&truncated), Err(ElfError::SegmentOutsideFile { index: 0 }));
        let low = elf(X86_64, EXEC, 0x1000, &[(0x1000, 0x1000, 0x10, 0x10)], 0x2000);
        assert_eq!(plan_hv(&low), Err(ElfError::SegmentOutsideWindow { index: 0, window: (0x10_0000, 0x1_0000_0000) }));
        let overlap = elf(
            X86_64,
            EXEC,
            0x400_0000,
            &[(0x400_0000, 0x1000, 0x10, 0x2000), (0x400_1000, 0x1000, 0x10, 0x10)],
            0x2000,
        );
        assert_eq!(plan_hv(&overlap), Err(ElfError::SegmentsOverlap));
        let bad_entry = elf(X86_64, EXEC, 0x500_0000, &[(0x400_0000, 0x1000, 0x10, 0x10)], 0x2000);
        assert_eq!(plan_hv(&bad_entry), Err(ElfError::EntryOutsideSegments(0x500_0000)));
    }
}
