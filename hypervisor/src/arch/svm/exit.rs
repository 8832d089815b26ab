//! SVM exit codes (AMD APM Vol. 2, Appendix C "SVM Intercept Exit Codes") and their
//! decoding into arch-neutral [`ExitReason`]s. Pure: takes the raw VMCB fields, never
//! panics; codes it does not know become [`ExitReason::Unknown`].
#![forbid(unsafe_code)]

use super::vmcb::Vmcb;
use crate::arch::exit::{Event, Exit, ExitReason, InsnBytes, IoDirection, IoExit, NpfInfo};
use crate::hw::AccessSize;
use crate::memory::addr::GuestPhysAddr;

/// EXITCODE values (APM Vol. 2 Table C-1).
pub mod code {
    pub const CR0_READ: u64 = 0x00;
    pub const CR0_WRITE: u64 = 0x10;
    pub const DR0_READ: u64 = 0x20;
    pub const DR0_WRITE: u64 = 0x30;
    /// 0x40 + vector.
    pub const EXCEPTION_BASE: u64 = 0x40;
    pub const INTR: u64 = 0x60;
    pub const NMI: u64 = 0x61;
    pub const SMI: u64 = 0x62;
    pub const INIT: u64 = 0x63;
    pub const VINTR: u64 = 0x64;
    pub const CR0_SEL_WRITE: u64 = 0x65;
    pub const RDTSC: u64 = 0x6e;
    pub const RDPMC: u64 = 0x6f;
    pub const CPUID: u64 = 0x72;
    pub const RSM: u64 = 0x73;
    pub const IRET: u64 = 0x74;
    pub const SWINT: u64 = 0x75;
    pub const INVD: u64 = 0x76;
    pub const PAUSE: u64 = 0x77;
    pub const HLT: u64 = 0x78;
    pub const INVLPG: u64 = 0x79;
    pub const INVLPGA: u64 = 0x7a;
    pub const IOIO: u64 = 0x7b;
    pub const MSR: u64 = 0x7c;
    pub const TASK_SWITCH: u64 = 0x7d;
    pub const FERR_FREEZE: u64 = 0x7e;
    pub const SHUTDOWN: u64 = 0x7f;
    pub const VMRUN: u64 = 0x80;
    pub const VMMCALL: u64 = 0x81;
    pub const VMLOAD: u64 = 0x82;
    pub const VMSAVE: u64 = 0x83;
    pub const STGI: u64 = 0x84;
    pub const CLGI: u64 = 0x85;
    pub const SKINIT: u64 = 0x86;
    pub const RDTSCP: u64 = 0x87;
    pub const ICEBP: u64 = 0x88;
    pub const WBINVD: u64 = 0x89;
    pub const MONITOR: u64 = 0x8a;
    pub const MWAIT: u64 = 0x8b;
    pub const MWAIT_CONDITIONAL: u64 = 0x8c;
    pub const XSETBV: u64 = 0x8d;
    pub const RDPRU: u64 = 0x8e;
    pub const EFER_WRITE_TRAP: u64 = 0x8f;
    pub const CR0_WRITE_TRAP: u64 = 0x90;
    pub const INVLPGB: u64 = 0xa0;
    pub const INVLPGB_ILLEGAL: u64 = 0xa1;
    pub const INVPCID: u64 = 0xa2;
    pub const MCOMMIT: u64 = 0xa3;
    pub const TLBSYNC: u64 = 0xa4;
    pub const NPF: u64 = 0x400;
    pub const AVIC_INCOMPLETE_IPI: u64 = 0x401;
    pub const AVIC_NOACCEL: u64 = 0x402;
    pub const VMGEXIT: u64 = 0x403;
    /// VMEXIT_INVALID (-1). QEMU stores it zero-extended from 32 bits, so compare the
    /// low 32 bits only.
    pub const INVALID: u64 = u64::MAX;
    /// VMEXIT_BUSY (-2).
    pub const BUSY: u64 = u64::MAX - 1;
}

/// EXITINFO1 bits of an IOIO exit (APM Vol. 2 15.10.2, Figure 15-2).
pub mod ioio {
    /// 1 = IN, 0 = OUT.
    pub const TYPE_IN: u64 = 1 << 0;
    pub const STRING: u64 = 1 << 2;
    pub const REP: u64 = 1 << 3;
    pub const SZ8: u64 = 1 << 4;
    pub const SZ16: u64 = 1 << 5;
    pub const SZ32: u64 = 1 << 6;
    pub const PORT_SHIFT: u32 = 16;
}

/// EXITINFO1 bits of a nested page fault (APM Vol. 2 15.25.6).
pub mod npf {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const RESERVED: u64 = 1 << 3;
    pub const FETCH: u64 = 1 << 4;
    pub const FINAL_ADDRESS: u64 = 1 << 32;
    pub const GUEST_WALK: u64 = 1 << 33;
}

/// The VMCB fields exit decoding looks at, copied out after #VMEXIT.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawExit {
    pub code: u64,
    pub info1: u64,
    pub info2: u64,
    pub int_info: u64,
    /// nRIP, if the CPU has NRIP save.
    pub next_rip: Option<u64>,
    /// Guest instruction bytes, if the CPU has decode assists.
    pub insn: InsnBytes,
    /// Guest RAX, RCX, RDX (for MSR exits).
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
}

impl RawExit {
    /// Copies the exit fields out of a VMCB. `nrip` and `decode_assists` say whether
    /// the CPU fills in nRIP and the instruction bytes.
    pub fn from_vmcb(vmcb: &Vmcb, rcx: u64, rdx: u64, nrip: bool, decode_assists: bool) -> Self {
        let c = &vmcb.control;
        let insn = if decode_assists {
            let n = usize::from(c.insn_len.min(15));
            InsnBytes::new(c.insn_bytes.get(..n).unwrap_or(&[]))
        } else {
            InsnBytes::default()
        };
        RawExit {
            code: c.exit_code,
            info1: c.exit_info1,
            info2: c.exit_info2,
            int_info: c.exit_int_info,
            next_rip: nrip.then_some(c.next_rip),
            insn,
            rax: vmcb.save.rax,
            rcx,
            rdx,
        }
    }
}

fn decode_ioio(info1: u64) -> Option<IoExit> {
    let size = if info1 & ioio::SZ32 != 0 {
        AccessSize::Dword
    } else if info1 & ioio::SZ16 != 0 {
        AccessSize::Word
    } else if info1 & ioio::SZ8 != 0 {
        AccessSize::Byte
    } else {
        return None;
    };
    Some(IoExit {
        port: (info1 >> ioio::PORT_SHIFT) as u16,
        size,
        direction: if info1 & ioio::TYPE_IN != 0 { IoDirection::In } else { IoDirection::Out },
        string: info1 & ioio::STRING != 0,
        rep: info1 & ioio::REP != 0,
    })
}

fn decode_npf(info1: u64) -> NpfInfo {
    NpfInfo {
        present: info1 & npf::PRESENT != 0,
        write: info1 & npf::WRITE != 0,
        user: info1 & npf::USER != 0,
        reserved: info1 & npf::RESERVED != 0,
        fetch: info1 & npf::FETCH != 0,
        final_address: info1 & npf::FINAL_ADDRESS != 0,
        in_guest_walk: info1 & npf::GUEST_WALK != 0,
    }
}

/// Decodes an exit into an arch-neutral reason.
pub fn decode_exit(raw: &RawExit) -> ExitReason {
    let c = raw.code;
    // VMEXIT_INVALID / BUSY: check the low 32 bits (QEMU zero-extends).
    if matches!(c as u32, 0xffff_ffff | 0xffff_fffe) {
        return ExitReason::InvalidGuestState { raw: c };
    }
    match c {
        code::EXCEPTION_BASE..=0x5f => {
            // The arm's range makes this 0..=31: no wrap.
            let vector = c.wrapping_sub(code::EXCEPTION_BASE) as u8;
            ExitReason::Exception {
                vector,
                error_code: Event::exception_has_error_code(vector).then_some(raw.info1 as u32),
                fault_address: raw.info2,
            }
        }
        code::INTR | code::SMI => ExitReason::ExternalInterrupt,
        code::NMI => ExitReason::Nmi,
        // The IRET intercept only watches for the end of an NMI handler: resume.
        code::VINTR | code::IRET => ExitReason::InterruptWindow,
        code::RDTSC => ExitReason::Rdtsc,
        code::RDTSCP => ExitReason::Rdtscp,
        code::CPUID => ExitReason::Cpuid,
        code::PAUSE => ExitReason::Pause,
        code::HLT => ExitReason::Hlt,
        code::INVD | code::WBINVD => ExitReason::Wbinvd,
        code::IOIO => decode_ioio(raw.info1).map_or(ExitReason::Unknown(c), ExitReason::Io),
        code::MSR => {
            let msr = raw.rcx as u32;
            match raw.info1 {
                0 => ExitReason::MsrRead { msr },
                1 => ExitReason::MsrWrite { msr, value: (raw.rdx << 32) | (raw.rax & 0xffff_ffff) },
                _ => ExitReason::Unknown(c),
            }
        }
        code::SHUTDOWN => ExitReason::Shutdown,
        code::VMMCALL => ExitReason::Hypercall,
        code::VMRUN
        | code::VMLOAD
        | code::VMSAVE
        | code::STGI
        | code::CLGI
        | code::SKINIT
        | code::INVLPGA
        | code::MONITOR
        | code::MWAIT
        | code::MWAIT_CONDITIONAL
        | code::RDPRU => ExitReason::UnsupportedInstruction,
        code::XSETBV => ExitReason::Xsetbv,
        code::NPF => ExitReason::NestedPageFault { gpa: GuestPhysAddr::new(raw.info2), info: decode_npf(raw.info1) },
        _ => ExitReason::Unknown(c),
    }
}

/// Decodes an exit with the CPU's hints: nRIP (NRIP save; always EXITINFO2 for IOIO)
/// and the instruction bytes (decode assists).
pub fn decode(raw: &RawExit) -> Exit {
    let reason = decode_exit(raw);
    let next_rip = match reason {
        ExitReason::Io(_) => Some(raw.info2),
        ExitReason::NestedPageFault { .. } | ExitReason::Exception { .. } => None,
        _ => raw.next_rip.filter(|&rip| rip != 0),
    };
    Exit { reason, next_rip, insn: raw.insn }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(code: u64, info1: u64, info2: u64) -> RawExit {
        RawExit { code, info1, info2, ..RawExit::default() }
    }

    #[test]
    fn invalid_checks_low_32_bits() {
        for c in [0xffff_ffff, u64::MAX, u64::MAX - 1] {
            assert_eq!(decode_exit(&raw(c, 0, 0)), ExitReason::InvalidGuestState { raw: c });
        }
    }

    #[test]
    fn ioio_as_qemu_reports_it() {
        // The spike: OUT to 0x3f8, byte; rep outsb = 0x03F8001C; no A64/segment bits.
        let e = decode(&raw(code::IOIO, 0x03f8_0010, 0x1234));
        assert_eq!(
            e.reason,
            ExitReason::Io(IoExit {
                port: 0x3f8,
                size: AccessSize::Byte,
                direction: IoDirection::Out,
                string: false,
                rep: false
            })
        );
        assert_eq!(e.next_rip, Some(0x1234));
        let ExitReason::Io(rep) = decode_exit(&raw(code::IOIO, 0x03f8_001c, 0)) else { unreachable!() };
        assert!(rep.string && rep.rep);
        let ExitReason::Io(inl) = decode_exit(&raw(code::IOIO, 0x0cfc_0041, 0)) else { unreachable!() };
        assert_eq!((inl.port, inl.size, inl.direction), (0xcfc, AccessSize::Dword, IoDirection::In));
        assert_eq!(decode_exit(&raw(code::IOIO, 0x80_0000, 0)), ExitReason::Unknown(code::IOIO));
    }

    #[test]
    fn msr_read_write() {
        let mut r = raw(code::MSR, 0, 0);
        r.rcx = 0xffff_ffff_c000_0080;
        assert_eq!(decode_exit(&r), ExitReason::MsrRead { msr: 0xc000_0080 });
        r.info1 = 1;
        r.rax = 0xdead_beef_0000_0d01;
        r.rdx = 0x1;
        assert_eq!(decode_exit(&r), ExitReason::MsrWrite { msr: 0xc000_0080, value: 0x1_0000_0d01 });
        r.info1 = 7;
        assert_eq!(decode_exit(&r), ExitReason::Unknown(code::MSR));
    }

    #[test]
    fn npf_bits() {
        // The spike's first fault: U=1, final GPA, not present.
        let e = decode_exit(&raw(code::NPF, 0x1_0000_0004, 0x80_0000));
        assert_eq!(
            e,
            ExitReason::NestedPageFault {
                gpa: GuestPhysAddr::new(0x80_0000),
                info: NpfInfo { user: true, final_address: true, ..NpfInfo::default() }
            }
        );
        let ExitReason::NestedPageFault { info, .. } = decode_exit(&raw(code::NPF, 0x2_0000_0007, 0)) else {
            unreachable!()
        };
        assert!(info.present && info.write && info.in_guest_walk && !info.final_address);
    }

    #[test]
    fn simple_exits_and_hints() {
        assert_eq!(decode_exit(&raw(code::CPUID, 0, 0)), ExitReason::Cpuid);
        assert_eq!(decode_exit(&raw(code::HLT, 0, 0)), ExitReason::Hlt);
        assert_eq!(decode_exit(&raw(code::VMMCALL, 0, 0)), ExitReason::Hypercall);
        assert_eq!(decode_exit(&raw(code::INTR, 0, 0)), ExitReason::ExternalInterrupt);
        assert_eq!(decode_exit(&raw(code::NMI, 0, 0)), ExitReason::Nmi);
        assert_eq!(decode_exit(&raw(code::SHUTDOWN, 0, 0)), ExitReason::Shutdown);
        assert_eq!(decode_exit(&raw(code::VINTR, 0, 0)), ExitReason::InterruptWindow);
        assert_eq!(decode_exit(&raw(code::VMRUN, 0, 0)), ExitReason::UnsupportedInstruction);
        assert_eq!(decode_exit(&raw(code::MWAIT, 0, 0)), ExitReason::UnsupportedInstruction);
        assert_eq!(decode_exit(&raw(0x3ff, 0, 0)), ExitReason::Unknown(0x3ff));
        assert_eq!(decode_exit(&raw(code::CR0_WRITE, 0, 0)), ExitReason::Unknown(0x10));
        // #GP with error code; #UD without; #PF with CR2.
        assert_eq!(
            decode_exit(&raw(code::EXCEPTION_BASE + 14, 2, 0xdead)),
            ExitReason::Exception { vector: 14, error_code: Some(2), fault_address: 0xdead }
        );
        assert_eq!(
            decode_exit(&raw(code::EXCEPTION_BASE + 6, 0, 0)),
            ExitReason::Exception { vector: 6, error_code: None, fault_address: 0 }
        );
        // NRIP: used when present and non-zero.
        let mut r = raw(code::CPUID, 0, 0);
        assert_eq!(decode(&r).next_rip, None);
        r.next_rip = Some(0x1002);
        assert_eq!(decode(&r).next_rip, Some(0x1002));
    }
}
