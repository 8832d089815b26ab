//! A software walk of the guest's own page tables (4-level long-mode paging, with
//! 2 MiB and 1 GiB pages; APM Vol. 2 5.3), and instruction fetch on top of it.
//!
//! The walker reports the #PF error code the CPU would produce (APM Vol. 2 8.4.2). It
//! does not set accessed/dirty bits: it runs for instructions the CPU itself has just
//! fetched or faulted on, whose walk already set them.
#![forbid(unsafe_code)]

use crate::arch::exit::InsnBytes;
use crate::arch::regs::{CpuMode, RegisterFile, SegReg, cr};
use crate::memory::addr::GuestPhysAddr;
use crate::memory::guest::GuestMemoryAccess;

use super::MAX_INSN_LEN;

/// The kind of access being translated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Access {
    pub write: bool,
    /// CPL 3 access.
    pub user: bool,
    pub fetch: bool,
}

/// Paging controls that affect permission checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PagingControls {
    /// CR0.WP: supervisor writes honour read-only pages.
    pub write_protect: bool,
    /// EFER.NXE: bit 63 is the no-execute bit (otherwise reserved).
    pub nx_enabled: bool,
    /// CR4.SMEP: supervisor fetches from user pages fault.
    pub smep: bool,
}

/// #PF error-code bits (APM Vol. 2 Figure 8-8).
pub mod pf {
    pub const PRESENT: u32 = 1 << 0;
    pub const WRITE: u32 = 1 << 1;
    pub const USER: u32 = 1 << 2;
    pub const RESERVED: u32 = 1 << 3;
    pub const FETCH: u32 = 1 << 4;
}

/// A page fault the guest should see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageFault {
    /// The faulting linear address (CR2).
    pub address: u64,
    pub error_code: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkError {
    /// The access faults in the guest's page tables.
    PageFault(PageFault),
    /// A 64-bit address that is not canonical (#GP in the guest).
    NonCanonical,
    /// A paging-structure entry is not in guest memory.
    TableNotInMemory(GuestPhysAddr),
    /// 32-bit, PAE-without-long-mode or 5-level paging: not supported by this walker.
    UnsupportedMode,
}

const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const PS: u64 = 1 << 7;
const NX: u64 = 1 << 63;

fn is_canonical(la: u64) -> bool {
    let top = (la as i64) >> 47;
    top == 0 || top == -1
}

/// Translates `gva` through 4-level tables rooted at `cr3`. `read_u64` reads an
/// 8-byte guest-physical word (a paging-structure entry).
pub fn walk(
    cr3: u64,
    gva: u64,
    access: Access,
    ctl: PagingControls,
    read_u64: impl Fn(GuestPhysAddr) -> Option<u64>,
) -> Result<GuestPhysAddr, WalkError> {
    if !is_canonical(gva) {
        return Err(WalkError::NonCanonical);
    }
    let mut code = 0u32;
    if access.write {
        code |= pf::WRITE;
    }
    if access.user {
        code |= pf::USER;
    }
    if access.fetch && (ctl.nx_enabled || ctl.smep) {
        code |= pf::FETCH;
    }
    let fault = |extra: u32| WalkError::PageFault(PageFault { address: gva, error_code: code | extra });
    let mut table = cr3 & ADDR_MASK;
    let (mut writable, mut user, mut executable) = (true, true, true);
    for level in (1..=4u32).rev() {
        let shift = 12u32.wrapping_add(9u32.wrapping_mul(level.wrapping_sub(1)));
        let index = (gva >> shift) & 0x1ff;
        let entry_gpa = GuestPhysAddr::new(table | (index << 3));
        let e = read_u64(entry_gpa).ok_or(WalkError::TableNotInMemory(entry_gpa))?;
        if e & P == 0 {
            return Err(fault(0));
        }
        let reserved = (e & NX != 0 && !ctl.nx_enabled) || (level == 4 && e & PS != 0);
        if reserved {
            return Err(fault(pf::PRESENT | pf::RESERVED));
        }
        writable &= e & RW != 0;
        user &= e & US != 0;
        executable &= e & NX == 0;
        let leaf = level == 1 || (e & PS != 0 && level <= 3);
        if leaf {
            let denied = (access.user && !user)
                || (access.write && !writable && (access.user || ctl.write_protect))
                || (access.fetch && ctl.nx_enabled && !executable)
                || (access.fetch && !access.user && user && ctl.smep);
            if denied {
                return Err(fault(pf::PRESENT));
            }
            let page_mask = (1u64 << shift).wrapping_sub(1);
            let base = e & ADDR_MASK & !page_mask;
            return Ok(GuestPhysAddr::new(base | (gva & page_mask)));
        }
        table = e & ADDR_MASK;
    }
    Err(WalkError::UnsupportedMode)
}

/// Translates a linear address in the guest's current paging mode.
pub fn translate(
    regs: &impl RegisterFile,
    mem: &(impl GuestMemoryAccess + ?Sized),
    linear: u64,
    access: Access,
) -> Result<GuestPhysAddr, WalkError> {
    let c = regs.control();
    if c.cr0 & cr::CR0_PG == 0 {
        return Ok(GuestPhysAddr::new(linear & 0xffff_ffff));
    }
    if c.efer & cr::EFER_LMA == 0 || c.cr4 & cr::CR4_LA57 != 0 {
        return Err(WalkError::UnsupportedMode);
    }
    let ctl = PagingControls {
        write_protect: c.cr0 & cr::CR0_WP != 0,
        nx_enabled: c.efer & cr::EFER_NXE != 0,
        smep: c.cr4 & cr::CR4_SMEP != 0,
    };
    walk(c.cr3, linear, access, ctl, |gpa| mem.read_u64(gpa).ok())
}

/// Fetches up to 15 instruction bytes at CS:RIP. Stops early at a page that does not
/// translate or is not RAM (the decoder then reports a truncated instruction if the
/// bytes are needed); fails only if not even the first byte can be fetched.
pub fn fetch(regs: &impl RegisterFile, mem: &(impl GuestMemoryAccess + ?Sized)) -> Result<InsnBytes, WalkError> {
    let mode = regs.mode();
    let cs_base = if mode == CpuMode::Long64 { 0 } else { regs.segment(SegReg::Cs).base };
    let start = cs_base.wrapping_add(regs.rip() & mode.ip_mask());
    let access = Access { fetch: true, user: regs.cpl() == 3, write: false };
    let mut buf = [0u8; MAX_INSN_LEN];
    let mut got = 0usize;
    while got < MAX_INSN_LEN {
        let la = start.wrapping_add(got as u64);
        let gpa = match translate(regs, mem, la, access) {
            Ok(gpa) => gpa,
            Err(e) if got == 0 => return Err(e),
            Err(_) => break,
        };
        let in_page = 0x1000usize.wrapping_sub((la & 0xfff) as usize);
        let take = in_page.min(MAX_INSN_LEN.wrapping_sub(got));
        let Some(dst) = buf.get_mut(got..got.wrapping_add(take)) else {
            break;
        };
        if mem.read_bytes(gpa, dst).is_err() {
            if got == 0 {
                return Err(WalkError::TableNotInMemory(gpa));
            }
            break;
        }
        got = got.wrapping_add(take);
    }
    Ok(InsnBytes::new(buf.get(..got).unwrap_or(&[])))
}
