//! VMX exit reasons (Intel SDM Vol. 3 Appendix C) and their exit qualifications
//! (SDM Vol. 3 28.2.1), decoded into arch-neutral [`ExitReason`]s. Pure: takes the raw
//! VMCS fields, never panics; reasons it does not know become [`ExitReason::Unknown`].
#![forbid(unsafe_code)]

use super::fields::{intr_info, reason};
use crate::arch::exit::{Exit, ExitReason, IoDirection, IoExit, NpfInfo};
use crate::hw::AccessSize;
use crate::memory::addr::GuestPhysAddr;

/// Exit qualification of an I/O instruction (SDM Vol. 3 Table 28-5).
pub mod io_qual {
    pub const SIZE_MASK: u64 = 7;
    pub const IN: u64 = 1 << 3;
    pub const STRING: u64 = 1 << 4;
    pub const REP: u64 = 1 << 5;
    pub const PORT_SHIFT: u32 = 16;
}

/// Exit qualification of an EPT violation (SDM Vol. 3 Table 28-7).
pub mod ept_qual {
    pub const READ: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    pub const FETCH: u64 = 1 << 2;
    /// Bits 5:3: the R/W/X rights of the entry that faulted (any set = present).
    pub const RIGHTS_MASK: u64 = 7 << 3;
    pub const LINEAR_VALID: u64 = 1 << 7;
    /// With LINEAR_VALID: the access was to the final translation (else to a guest
    /// paging structure during the walk).
    pub const FINAL_TRANSLATION: u64 = 1 << 8;
    pub const USER_LINEAR: u64 = 1 << 9;
}

/// The VMCS exit fields decoding looks at, read after a VM exit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VmcsExit {
    /// The exit reason field (basic reason in bits 15:0, bit 31 = entry failure).
    pub reason: u32,
    pub qualification: u64,
    pub intr_info: u32,
    pub intr_error: u32,
    pub guest_phys: u64,
    pub insn_len: u32,
    pub rip: u64,
    /// Guest RAX, RCX, RDX (for MSR exits).
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
}

fn decode_io(q: u64) -> Option<IoExit> {
    let size = AccessSize::from_bytes((q & io_qual::SIZE_MASK).wrapping_add(1) as u8)?;
    Some(IoExit {
        port: (q >> io_qual::PORT_SHIFT) as u16,
        size,
        direction: if q & io_qual::IN != 0 { IoDirection::In } else { IoDirection::Out },
        string: q & io_qual::STRING != 0,
        rep: q & io_qual::REP != 0,
    })
}

/// EPT violation qualification in the nested-paging terms common code uses.
pub fn decode_ept_violation(q: u64) -> NpfInfo {
    let linear = q & ept_qual::LINEAR_VALID != 0;
    NpfInfo {
        present: q & ept_qual::RIGHTS_MASK != 0,
        write: q & ept_qual::WRITE != 0,
        user: q & ept_qual::USER_LINEAR != 0,
        reserved: false,
        fetch: q & ept_qual::FETCH != 0,
        final_address: linear && q & ept_qual::FINAL_TRANSLATION != 0,
        in_guest_walk: linear && q & ept_qual::FINAL_TRANSLATION == 0,
    }
}

/// Decodes an exit into an arch-neutral reason.
pub fn decode_exit(raw: &VmcsExit) -> ExitReason {
    if raw.reason & reason::ENTRY_FAILURE != 0 {
        return ExitReason::InvalidGuestState {
            raw: (u64::from(raw.reason) << 32) | (raw.qualification & 0xffff_ffff),
        };
    }
    let basic = raw.reason & 0xffff;
    match basic {
        reason::EXCEPTION_OR_NMI => {
            let kind = (raw.intr_info & intr_info::TYPE_MASK) >> intr_info::TYPE_SHIFT;
            let vector = (raw.intr_info & intr_info::VECTOR_MASK) as u8;
            if kind == intr_info::TYPE_NMI {
                return ExitReason::Nmi;
            }
            ExitReason::Exception {
                vector,
                error_code: (raw.intr_info & intr_info::ERROR_CODE_VALID != 0).then_some(raw.intr_error),
                fault_address: raw.qualification,
            }
        }
        reason::EXTERNAL_INTERRUPT => ExitReason::ExternalInterrupt,
        reason::TRIPLE_FAULT => ExitReason::Shutdown,
        reason::INTERRUPT_WINDOW => ExitReason::InterruptWindow,
        reason::CPUID => ExitReason::Cpuid,
        reason::HLT => ExitReason::Hlt,
        reason::INVD | reason::WBINVD => ExitReason::Wbinvd,
        reason::RDTSC => ExitReason::Rdtsc,
        reason::RDTSCP => ExitReason::Rdtscp,
        reason::PAUSE => ExitReason::Pause,
        reason::VMCALL => ExitReason::Hypercall,
        reason::VMCLEAR..=reason::VMXON
        | reason::INVEPT
        | reason::INVVPID
        | reason::VMFUNC
        | reason::GETSEC
        | reason::MONITOR
        | reason::MWAIT
        | reason::RDPMC
        | reason::ENCLS => ExitReason::UnsupportedInstruction,
        reason::IO => decode_io(raw.qualification).map_or(ExitReason::Unknown(u64::from(basic)), ExitReason::Io),
        reason::RDMSR => ExitReason::MsrRead { msr: raw.rcx as u32 },
        reason::WRMSR => ExitReason::MsrWrite { msr: raw.rcx as u32, value: (raw.rdx << 32) | (raw.rax & 0xffff_ffff) },
        reason::XSETBV => ExitReason::Xsetbv,
        reason::EPT_VIOLATION => ExitReason::NestedPageFault {
            gpa: GuestPhysAddr::new(raw.guest_phys),
            info: decode_ept_violation(raw.qualification),
        },
        // A misconfiguration is the hypervisor's own table being wrong: never MMIO.
        _ => ExitReason::Unknown(u64::from(basic)),
    }
}

/// Whether `basic` is an instruction exit whose length field is valid (SDM Vol. 3
/// 28.2.5): the next RIP is RIP plus that length.
const fn has_instruction_length(basic: u32) -> bool {
    matches!(
        basic,
        reason::CPUID
            | reason::HLT
            | reason::INVD
            | reason::WBINVD
            | reason::RDTSC
            | reason::RDTSCP
            | reason::PAUSE
            | reason::VMCALL
            | reason::IO
            | reason::RDMSR
            | reason::WRMSR
            | reason::XSETBV
    )
}

/// Decodes an exit with the next RIP from the instruction-length field. `ip_mask`
/// wraps RIP in 16- and 32-bit code.
pub fn decode(raw: &VmcsExit, ip_mask: u64) -> Exit {
    let mut exit = Exit::new(decode_exit(raw));
    let basic = raw.reason & 0xffff;
    if raw.reason & reason::ENTRY_FAILURE == 0 && has_instruction_length(basic) && (1..=15).contains(&raw.insn_len) {
        exit.next_rip = Some(raw.rip.wrapping_add(u64::from(raw.insn_len)) & ip_mask);
    }
    exit
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::exit::vector;

    fn raw(reason: u32) -> VmcsExit {
        VmcsExit { reason, rip: 0x1000, insn_len: 2, ..VmcsExit::default() }
    }

    #[test]
    fn instruction_exits_carry_the_next_rip() {
        let e = decode(&raw(reason::CPUID), u64::MAX);
        assert_eq!((e.reason, e.next_rip), (ExitReason::Cpuid, Some(0x1002)));
        let e = decode(&VmcsExit { rip: 0xffff, ..raw(reason::HLT) }, 0xffff);
        assert_eq!((e.reason, e.next_rip), (ExitReason::Hlt, Some(1)));
        assert_eq!(decode(&raw(reason::VMCALL), u64::MAX).reason, ExitReason::Hypercall);
        // No length on interrupts, faults and windows.
        assert_eq!(decode(&raw(reason::EXTERNAL_INTERRUPT), u64::MAX).next_rip, None);
        assert_eq!(decode(&raw(reason::EPT_VIOLATION), u64::MAX).next_rip, None);
        // A length of 0 is not believed.
        assert_eq!(decode(&VmcsExit { insn_len: 0, ..raw(reason::CPUID) }, u64::MAX).next_rip, None);
    }

    #[test]
    fn io_qualification() {
        // `rep outsw` to port 0x3f8: size 1 (2 bytes), OUT, string, REP.
        let q = (0x3f8 << 16) | 1 | io_qual::STRING | io_qual::REP;
        let e = decode_exit(&VmcsExit { qualification: q, ..raw(reason::IO) });
        assert_eq!(
            e,
            ExitReason::Io(IoExit {
                port: 0x3f8,
                size: AccessSize::Word,
                direction: IoDirection::Out,
                string: true,
                rep: true
            })
        );
        let e = decode_exit(&VmcsExit { qualification: (0x71 << 16) | 3 | io_qual::IN, ..raw(reason::IO) });
        assert!(matches!(
            e,
            ExitReason::Io(IoExit { port: 0x71, size: AccessSize::Dword, direction: IoDirection::In, .. })
        ));
        // Size encoding 2 (3 bytes) does not exist.
        assert_eq!(decode_exit(&VmcsExit { qualification: 2, ..raw(reason::IO) }), ExitReason::Unknown(30));
    }

    #[test]
    fn msr_exits_take_ecx_edx_eax() {
        let r = VmcsExit { rcx: 0xc000_0082, rdx: 0x1234, rax: 0xffff_ffff_8000_0000, ..raw(reason::WRMSR) };
        assert_eq!(decode_exit(&r), ExitReason::MsrWrite { msr: 0xc000_0082, value: 0x1234_8000_0000 });
        assert_eq!(decode_exit(&VmcsExit { rcx: 0x10, ..raw(reason::RDMSR) }), ExitReason::MsrRead { msr: 0x10 });
    }

    #[test]
    fn ept_violations_become_nested_page_faults() {
        // A data write to an unmapped GPA at the final translation.
        let q = ept_qual::WRITE | ept_qual::LINEAR_VALID | ept_qual::FINAL_TRANSLATION;
        let e = decode_exit(&VmcsExit { qualification: q, guest_phys: 0x1_0000_0000, ..raw(reason::EPT_VIOLATION) });
        let ExitReason::NestedPageFault { gpa, info } = e else { panic!("{e:?}") };
        assert_eq!(gpa, GuestPhysAddr::new(0x1_0000_0000));
        assert!(info.write && !info.present && info.final_address && !info.in_guest_walk && !info.fetch);
        // A read of a guest page-table entry outside RAM, during the walk.
        let walk = decode_ept_violation(ept_qual::READ | ept_qual::LINEAR_VALID);
        assert!(walk.in_guest_walk && !walk.final_address);
        // A fetch from a present, non-executable page.
        let nx =
            decode_ept_violation(ept_qual::FETCH | (1 << 3) | ept_qual::LINEAR_VALID | ept_qual::FINAL_TRANSLATION);
        assert!(nx.fetch && nx.present);
        // Misconfigurations stop the VM as unknown exits rather than looking like MMIO.
        assert_eq!(decode_exit(&raw(reason::EPT_MISCONFIG)), ExitReason::Unknown(49));
    }

    #[test]
    fn exceptions_nmi_and_failed_entries() {
        let pf = VmcsExit {
            intr_info: intr_info::VALID | (3 << 8) | intr_info::ERROR_CODE_VALID | 14,
            intr_error: 6,
            qualification: 0xdead_b000,
            ..raw(reason::EXCEPTION_OR_NMI)
        };
        assert_eq!(
            decode_exit(&pf),
            ExitReason::Exception { vector: vector::PF, error_code: Some(6), fault_address: 0xdead_b000 }
        );
        let nmi = VmcsExit { intr_info: intr_info::VALID | (2 << 8) | 2, ..raw(reason::EXCEPTION_OR_NMI) };
        assert_eq!(decode_exit(&nmi), ExitReason::Nmi);
        let failed = VmcsExit { qualification: 3, ..raw(reason::ENTRY_FAILURE | reason::ENTRY_FAIL_GUEST_STATE) };
        let e = decode(&failed, u64::MAX);
        assert_eq!(e.reason, ExitReason::InvalidGuestState { raw: (0x8000_0021 << 32) | 3 });
        assert_eq!(e.next_rip, None);
        assert_eq!(decode_exit(&raw(reason::TRIPLE_FAULT)), ExitReason::Shutdown);
        assert_eq!(decode_exit(&raw(reason::VMXON)), ExitReason::UnsupportedInstruction);
        assert_eq!(decode_exit(&raw(reason::XSETBV)), ExitReason::Xsetbv);
    }
}
