//! Starting a bare-metal payload VM (the self-test kernels, later the service VM): the
//! ELF's segments, identity page tables, and the 64-bit entry state described in
//! `bulkhead_abi::payload`.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use bulkhead_abi::payload::{CANARY_PAGES, LOAD_BASE, PAGE_TABLES};

use crate::arch::backend::InitialState;
use crate::memory::addr::{GuestPhysAddr, PAGE_SIZE};
use crate::vm::linux::identity_page_tables;

/// "Put these bytes at this guest-physical address", in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadPlan<'a> {
    pub writes: Vec<(GuestPhysAddr, &'static str, alloc::borrow::Cow<'a, [u8]>)>,
    pub entry: InitialState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadError {
    Elf(elfload::ElfError),
    TooSmall { ram_bytes: u64 },
}

impl core::fmt::Display for PayloadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PayloadError::Elf(e) => write!(f, "the payload ELF {e}"),
            PayloadError::TooSmall { ram_bytes } => write!(f, "{ram_bytes} bytes of RAM is too small for a payload"),
        }
    }
}

/// Plans the boot of `elf` in a VM with `ram_bytes` of RAM at GPA 0.
pub fn plan(elf: &[u8], ram_bytes: u64) -> Result<PayloadPlan<'_>, PayloadError> {
    let usable_end = ram_bytes.checked_sub(CANARY_PAGES * PAGE_SIZE).filter(|&end| end > LOAD_BASE + PAGE_SIZE);
    let usable_end = usable_end.ok_or(PayloadError::TooSmall { ram_bytes })?;
    let load = elfload::plan(elf, LOAD_BASE..usable_end).map_err(PayloadError::Elf)?;
    let mut writes = Vec::new();
    writes.push((
        GuestPhysAddr::new(PAGE_TABLES),
        "page tables",
        identity_page_tables(GuestPhysAddr::new(PAGE_TABLES)).into(),
    ));
    for seg in &load.segments {
        let from = seg.file_offset as usize;
        // elfload checked the segment lies inside the file.
        let data = elf.get(from..).and_then(|rest| rest.get(..seg.file_size as usize)).unwrap_or(&[]);
        writes.push((GuestPhysAddr::new(seg.phys), "segment", data.into()));
    }
    // Stack below the canary, 16-byte aligned minus the return-address slot the ABI expects.
    // `usable_end` is above LOAD_BASE + PAGE_SIZE (checked above): no wrap.
    let rsp = (usable_end & !0xf).wrapping_sub(8);
    Ok(PayloadPlan { writes, entry: InitialState::Long64 { rip: load.entry, rsp, cr3: PAGE_TABLES, rsi: ram_bytes } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_garbage_and_tiny_vms() {
        assert!(matches!(plan(b"not an elf", 16 << 20), Err(PayloadError::Elf(_))));
        assert_eq!(plan(b"x", 0x1000), Err(PayloadError::TooSmall { ram_bytes: 0x1000 }));
    }

    #[test]
    fn plans_the_real_checks_payload_when_built() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/x86_64-unknown-none/release/checks");
        let Ok(elf) = std::fs::read(path) else {
            eprintln!(
                "SKIPPED: build the payloads first (cargo build -p payloads --target x86_64-unknown-none --release)"
            );
            return;
        };
        let p = plan(&elf, 16 << 20).unwrap();
        let InitialState::Long64 { rip, rsp, cr3, rsi } = p.entry else { panic!("not a 64-bit entry") };
        assert_eq!((cr3, rsi), (PAGE_TABLES, 16 << 20));
        assert!(rip >= LOAD_BASE && rsp < (16 << 20) - 4096);
        assert!(p.writes.iter().any(|(gpa, what, _)| *what == "segment" && gpa.raw() == 0x20_0000));
    }
}
