//! The arch-neutral middle of exit handling: vendor code decodes a raw exit into an
//! [`ExitReason`], common code decides an [`ExitAction`], vendor code applies it.
#![forbid(unsafe_code)]

use crate::arch::regs::GuestRegisters;
use crate::hw::AccessSize;
use crate::memory::addr::GuestPhysAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoDirection {
    In,
    Out,
}

/// A port I/O exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoExit {
    pub port: u16,
    pub size: AccessSize,
    pub direction: IoDirection,
    /// INS/OUTS.
    pub string: bool,
    /// REP prefix present.
    pub rep: bool,
}

/// Why a nested (stage-2) page fault happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NpfInfo {
    /// The stage-2 entry was present (a permission fault rather than a missing page).
    pub present: bool,
    pub write: bool,
    pub user: bool,
    /// A reserved bit was set in a stage-2 entry.
    pub reserved: bool,
    pub fetch: bool,
    /// The fault hit the final guest-physical address of the access.
    pub final_address: bool,
    /// The fault hit while the CPU walked the guest's own page tables.
    pub in_guest_walk: bool,
}

/// The kind of an event delivered to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    ExternalInterrupt,
    Nmi,
    Exception,
    SoftwareInterrupt,
}

/// An event to inject, or one whose delivery was interrupted by an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub vector: u8,
    pub error_code: Option<u32>,
}

/// Exception vectors the hypervisor injects.
pub mod vector {
    pub const DE: u8 = 0;
    pub const DB: u8 = 1;
    pub const NMI: u8 = 2;
    pub const BP: u8 = 3;
    pub const UD: u8 = 6;
    pub const NM: u8 = 7;
    pub const DF: u8 = 8;
    pub const TS: u8 = 10;
    pub const NP: u8 = 11;
    pub const SS: u8 = 12;
    pub const GP: u8 = 13;
    pub const PF: u8 = 14;
    pub const MF: u8 = 16;
    pub const AC: u8 = 17;
    pub const MC: u8 = 18;
    pub const XM: u8 = 19;
}

impl Event {
    pub const fn exception(vector: u8, error_code: Option<u32>) -> Event {
        Event { kind: EventKind::Exception, vector, error_code }
    }
    pub const fn gp(error_code: u32) -> Event {
        Event::exception(vector::GP, Some(error_code))
    }
    pub const fn ud() -> Event {
        Event::exception(vector::UD, None)
    }
    pub const fn page_fault(error_code: u32) -> Event {
        Event::exception(vector::PF, Some(error_code))
    }
    pub const fn interrupt(vector: u8) -> Event {
        Event { kind: EventKind::ExternalInterrupt, vector, error_code: None }
    }

    /// Whether exception `vector` pushes an error code (APM Vol. 2 8.2, Table 8-1).
    pub const fn exception_has_error_code(vector: u8) -> bool {
        matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21 | 29 | 30)
    }
}

/// What made the guest stop running, in arch-neutral terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExitReason {
    /// CPUID; leaf and subleaf are in EAX/ECX.
    Cpuid,
    MsrRead {
        msr: u32,
    },
    MsrWrite {
        msr: u32,
        value: u64,
    },
    Io(IoExit),
    NestedPageFault {
        gpa: GuestPhysAddr,
        info: NpfInfo,
    },
    Hlt,
    /// VMMCALL/VMCALL; the call number and arguments are in registers.
    Hypercall,
    /// A physical interrupt arrived while the guest ran.
    ExternalInterrupt,
    Nmi,
    /// The guest triple-faulted.
    Shutdown,
    /// The interrupt window requested by the hypervisor opened.
    InterruptWindow,
    /// An intercepted exception. `fault_address` is CR2 for #PF.
    Exception {
        vector: u8,
        error_code: Option<u32>,
        fault_address: u64,
    },
    Xsetbv,
    Rdtsc,
    Rdtscp,
    Pause,
    Wbinvd,
    /// The guest executed an instruction it is not offered: the virtualisation
    /// instructions (VMRUN, VMLOAD, CLGI, ...), MONITOR/MWAIT, RDPRU. It gets #UD.
    UnsupportedInstruction,
    /// The processor refused to enter the guest (inconsistent VMCB/VMCS).
    InvalidGuestState {
        raw: u64,
    },
    /// A vendor exit code the hypervisor does not handle.
    Unknown(u64),
}

/// A guest instruction as the CPU fetched it (decode assists), at most 15 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsnBytes {
    len: u8,
    bytes: [u8; 15],
}

impl InsnBytes {
    /// Copies up to 15 bytes.
    pub fn new(src: &[u8]) -> InsnBytes {
        let mut out = InsnBytes::default();
        for (dst, b) in out.bytes.iter_mut().zip(src) {
            *dst = *b;
            out.len = out.len.wrapping_add(1);
        }
        out
    }
    pub fn as_slice(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A decoded exit plus the optional hints a CPU may provide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub reason: ExitReason,
    /// The address of the next instruction, when the CPU reports it (SVM NRIP save,
    /// IOIO EXITINFO2, VMX instruction length).
    pub next_rip: Option<u64>,
    /// The faulting instruction's bytes when the CPU reports them (decode assists).
    pub insn: InsnBytes,
}

impl Exit {
    pub const fn new(reason: ExitReason) -> Exit {
        Exit { reason, next_rip: None, insn: InsnBytes { len: 0, bytes: [0; 15] } }
    }
}

/// How RIP moves past an emulated instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextRip {
    /// Advance by this many bytes (wrapping at the current mode's IP width).
    By(u8),
    /// Continue at this address.
    To(u64),
}

/// Why a VM is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// The guest triple-faulted (shutdown).
    TripleFault,
    /// The processor rejected the guest state on entry.
    InvalidGuestState { raw: u64 },
    /// An exit no handler knows, with the registers at that point.
    UnhandledExit { raw: u64, regs: GuestRegisters },
    /// The guest asked to stop through the SHUTDOWN hypercall.
    GuestShutdown { status: u64 },
    /// The guest asked to be restarted.
    GuestReboot,
    /// The hypervisor stopped it (the user, or policy).
    Requested,
    /// Held back by policy: it needs the offline lease, and the laptop has not
    /// checked in with its management server within it. Starts again after a
    /// check-in, never by its restart rule.
    PolicyHold,
    /// Its disk could not be opened: `locked` when the passphrase screen was skipped,
    /// else the store or the volume failed (logged). Never restarted.
    DiskUnavailable { locked: bool },
    /// A hypercall argument was invalid (e.g. a buffer outside the VM's memory).
    BadHypercall { nr: u64, arg: u64 },
    /// An instruction that had to be emulated could not be decoded or is unsupported.
    EmulationFailed { rip: u64, insn: InsnBytes },
    /// A stage-2 fault the hypervisor cannot resolve (e.g. a write to read-only RAM, or
    /// guest page tables outside RAM).
    NestedPageFault { gpa: GuestPhysAddr, info: NpfInfo },
    /// The guest runs in a paging mode the software walker does not support.
    UnsupportedPagingMode,
    /// A device the VM owns did DMA (or sent an interrupt) the IOMMU blocked:
    /// requester id (bus << 8 | devfn) and the address it used.
    DmaFault { requester: u16, address: u64 },
}

/// What common code decided to do about an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitAction {
    /// Re-enter the guest unchanged (e.g. after a host interrupt, or a REP string
    /// instruction that will continue).
    Resume,
    /// The instruction was emulated: move RIP past it and re-enter.
    Advance(NextRip),
    /// Deliver an event to the guest (RIP unchanged: faults restart the instruction).
    Inject(Event),
    /// Stop this VM.
    Stop(StopReason),
    /// Advance past the instruction, then give up the time slice.
    Yield(NextRip),
    /// Advance past HLT, then do not run this vCPU until an interrupt is pending.
    Halt(NextRip),
}

impl ExitAction {
    pub const fn inject_gp() -> ExitAction {
        ExitAction::Inject(Event::gp(0))
    }
    pub const fn inject_ud() -> ExitAction {
        ExitAction::Inject(Event::ud())
    }
}

/// What the vCPU loop does after an action has been applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Yield,
    WaitForInterrupt,
    Stop(StopReason),
}

impl Flow {
    /// The loop consequence of an action (the register/VMCB side is the vendor's job).
    pub const fn of(action: &ExitAction) -> Flow {
        match action {
            ExitAction::Resume | ExitAction::Advance(_) | ExitAction::Inject(_) => Flow::Continue,
            ExitAction::Stop(reason) => Flow::Stop(*reason),
            ExitAction::Yield(_) => Flow::Yield,
            ExitAction::Halt(_) => Flow::WaitForInterrupt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_size_masks() {
        assert_eq!(AccessSize::Word.mask(), 0xffff);
        assert_eq!(AccessSize::from_bytes(4), Some(AccessSize::Dword));
        assert_eq!(AccessSize::from_bytes(3), None);
    }

    #[test]
    fn insn_bytes_truncate_to_15() {
        let b = InsnBytes::new(&[0x90; 20]);
        assert_eq!(b.as_slice().len(), 15);
        assert!(InsnBytes::new(&[]).is_empty());
    }

    #[test]
    fn error_code_vectors() {
        assert!(Event::exception_has_error_code(vector::GP));
        assert!(Event::exception_has_error_code(vector::PF));
        assert!(!Event::exception_has_error_code(vector::UD));
    }

    #[test]
    fn flow_of_actions() {
        assert_eq!(Flow::of(&ExitAction::Halt(NextRip::By(1))), Flow::WaitForInterrupt);
        assert_eq!(Flow::of(&ExitAction::Stop(StopReason::TripleFault)), Flow::Stop(StopReason::TripleFault));
    }
}
