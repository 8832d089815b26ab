//! Control-register exits (Intel SDM Vol. 3 Table 28-3): a guest write to a CR0 or CR4
//! bit the hypervisor owns (CR0.NE and CR4.VMXE, which VMX operation fixes to 1, and
//! CR4 bits the CPU cannot set in VMX operation). The backend finishes these itself:
//! the guest's value goes to the read shadow, the value with the fixed bits to the
//! real register, and entering or leaving long mode updates EFER.LMA and the
//! "IA-32e mode guest" entry control, as the processor would.

use super::fields::*;
use super::vcpu::{VmxVcpu, read, set};
use crate::arch::exit::vector;
use crate::arch::regs::{Gpr, cr};

/// Exit qualification of a control-register access.
mod qual {
    pub const CR_MASK: u64 = 0xf;
    pub const ACCESS_SHIFT: u32 = 4;
    pub const GPR_SHIFT: u32 = 8;
    pub const LMSW_SHIFT: u32 = 16;
    pub const MOV_TO: u64 = 0;
    pub const MOV_FROM: u64 = 1;
    pub const CLTS: u64 = 2;
    pub const LMSW: u64 = 3;
}

const CR0_TS: u64 = 1 << 3;
const CR0_NW: u64 = 1 << 29;
const CR0_CD: u64 = 1 << 30;

/// The guest's view of a masked control register: shadow bits where the host owns
/// them, the real register elsewhere.
pub fn guest_view(real: u64, shadow: u64, mask: u64) -> u64 {
    (real & !mask) | (shadow & mask)
}

/// What a MOV to CR0 does; `None` means #GP (SDM Vol. 3 MOV—Move to/from Control
/// Registers: PG without PE, NW without CD, long mode without PAE, bits 63:32).
pub fn cr0_write(value: u64, cr4: u64, efer: u64) -> Option<(u64, u64)> {
    if value >> 32 != 0
        || (value & cr::CR0_PG != 0 && value & cr::CR0_PE == 0)
        || (value & CR0_NW != 0 && value & CR0_CD == 0)
    {
        return None;
    }
    let mut efer = efer;
    if value & cr::CR0_PG != 0 && efer & cr::EFER_LME != 0 {
        if cr4 & cr::CR4_PAE == 0 {
            return None;
        }
        efer |= cr::EFER_LMA;
    } else {
        efer &= !cr::EFER_LMA;
    }
    Some((value, efer))
}

impl VmxVcpu {
    /// Finishes a control-register exit; false when the exit is not one this handles.
    pub(super) fn handle_cr_access(&mut self) -> bool {
        let q = read(EXIT_QUALIFICATION);
        let crn = q & qual::CR_MASK;
        let access = (q >> qual::ACCESS_SHIFT) & 3;
        let gpr = Gpr::from_index(((q >> qual::GPR_SHIFT) & 0xf) as u8);
        let cr0_mask = read(CR0_GUEST_HOST_MASK);
        let cr0 = guest_view(read(GUEST_CR0), read(CR0_READ_SHADOW), cr0_mask);
        let ok = match (access, crn) {
            (qual::MOV_TO, 0) => self.write_cr0(self.gpr_value(gpr)),
            (qual::MOV_TO, 4) => self.write_cr4(self.gpr_value(gpr)),
            (qual::MOV_TO, 3) => {
                set(GUEST_CR3, self.gpr_value(gpr));
                true
            }
            (qual::MOV_FROM, 3) => {
                let value = read(GUEST_CR3);
                self.set_gpr_value(gpr, value);
                true
            }
            // CR8 without a TPR shadow: the virtual TPR is not modelled (reads 0).
            (qual::MOV_FROM, 8) => {
                self.set_gpr_value(gpr, 0);
                true
            }
            (qual::MOV_TO, 8) => true,
            (qual::CLTS, _) => self.write_cr0(cr0 & !CR0_TS),
            // LMSW loads CR0 bits 3:0 but cannot clear PE.
            (qual::LMSW, _) => {
                let source = (q >> qual::LMSW_SHIFT) & 0xf;
                self.write_cr0((cr0 & !0xe) | (source & 0xf) | (cr0 & 1))
            }
            _ => return false,
        };
        if ok {
            let len = read(EXIT_INSTRUCTION_LENGTH);
            self.regs.rip = read(GUEST_RIP).wrapping_add(len) & self.mode().ip_mask();
            set(GUEST_RIP, self.regs.rip);
            let state = read(GUEST_INTERRUPTIBILITY) & !u64::from(interruptibility::STI | interruptibility::MOV_SS);
            set(GUEST_INTERRUPTIBILITY, state);
        } else {
            let info = u32::from(vector::GP)
                | (intr_info::TYPE_HW_EXCEPTION << intr_info::TYPE_SHIFT)
                | intr_info::ERROR_CODE_VALID
                | intr_info::VALID;
            set(ENTRY_EXCEPTION_ERROR_CODE, 0);
            set(ENTRY_INTERRUPTION_INFO, u64::from(info));
        }
        true
    }

    fn gpr_value(&self, gpr: Gpr) -> u64 {
        if gpr == Gpr::Rsp { read(GUEST_RSP) } else { self.regs.get(gpr) }
    }

    fn set_gpr_value(&mut self, gpr: Gpr, value: u64) {
        if gpr == Gpr::Rsp {
            set(GUEST_RSP, value);
        } else {
            self.regs.set(gpr, value);
        }
    }

    fn write_cr0(&mut self, value: u64) -> bool {
        let cr4 = guest_view(read(GUEST_CR4), read(CR4_READ_SHADOW), read(CR4_GUEST_HOST_MASK));
        let Some((value, efer)) = cr0_write(value, cr4, read(GUEST_IA32_EFER)) else { return false };
        set(GUEST_CR0, self.features.guest_cr0(value));
        set(CR0_READ_SHADOW, value);
        self.set_efer(efer);
        true
    }

    fn write_cr4(&mut self, value: u64) -> bool {
        if self.features.cr4_reserved(value) || value & (1 << 13) != 0 {
            return false;
        }
        set(GUEST_CR4, self.features.guest_cr4(value));
        set(CR4_READ_SHADOW, value);
        // Paging-mode changes flush the guest's TLB as the CPU would.
        self.request_tlb_flush();
        true
    }

    /// Sets the guest's EFER and keeps "IA-32e mode guest" equal to EFER.LMA.
    pub(super) fn set_efer(&mut self, efer: u64) {
        set(GUEST_IA32_EFER, efer);
        let mut entry = read(ENTRY_CONTROLS) as u32;
        if efer & cr::EFER_LMA != 0 {
            entry |= entry_ctl::IA32E_MODE_GUEST;
        } else {
            entry &= !entry_ctl::IA32E_MODE_GUEST;
        }
        set(ENTRY_CONTROLS, u64::from(entry));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_view_takes_owned_bits_from_the_shadow() {
        assert_eq!(guest_view(0x8005_0033, 0x8005_0013, 0x20), 0x8005_0013);
        assert_eq!(guest_view(0x2020, 0x20, 0x2000), 0x20);
    }

    #[test]
    fn cr0_writes_follow_the_architecture() {
        let lme = cr::EFER_LME;
        // Turning paging on with LME and PAE enters long mode.
        assert_eq!(cr0_write(0x8000_0011, cr::CR4_PAE, lme), Some((0x8000_0011, lme | cr::EFER_LMA)));
        // Without PAE: #GP.
        assert_eq!(cr0_write(0x8000_0011, 0, lme), None);
        // PG without PE, NW without CD, upper bits: #GP.
        assert_eq!(cr0_write(0x8000_0010, cr::CR4_PAE, 0), None);
        assert_eq!(cr0_write(0x2000_0011, 0, 0), None);
        assert_eq!(cr0_write(1 << 32, 0, 0), None);
        // Turning paging off leaves long mode.
        assert_eq!(cr0_write(0x11, cr::CR4_PAE, lme | cr::EFER_LMA), Some((0x11, lme)));
    }
}
