//! The vendor seam. One binary carries every backend; boot code picks one from CPUID and
//! calls generic code monomorphised over it (`fn run_vcpu<A: Arch>(..)`). No Cargo
//! features, no trait objects on the exit path.
//!
//! Division of labour on every exit:
//! 1. [`Arch::run`] enters the guest and decodes the raw vendor exit into an [`Exit`];
//! 2. common code (`vcpu::dispatch::decide`) reads and writes guest registers through
//!    [`Arch::regs`] and returns an [`ExitAction`];
//! 3. [`Arch::apply`] performs the action in vendor terms (advance RIP and clear the
//!    interrupt shadow, write the event-injection field, ...).
#![forbid(unsafe_code)]

use core::fmt;

use crate::arch::exit::{Exit, ExitAction, Flow};
use crate::arch::regs::RegisterFile;
use crate::memory::addr::HostPhysAddr;
use crate::memory::frames::FrameSource;
use crate::memory::page_table::{DirtyTracking, Geometry};

/// The architectural state a vCPU starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialState {
    /// The x86 reset state (real mode, CS:IP = F000:FFF0 with CS base FFFF_0000).
    Reset,
    /// An application processor after INIT and a STARTUP IPI with `vector` (SDM Vol. 3
    /// 9.4.4, AMD APM Vol. 2 15.27.8): the reset state, but in real mode at
    /// `vector << 12` (CS selector `vector << 8`, base `vector << 12`, IP 0).
    Startup { vector: u8 },
    /// 64-bit mode with flat segments and the given page tables, as used by the Linux
    /// 64-bit boot protocol and by test payloads. The caller provides guest page tables
    /// at `cr3` that map `rip` and `rsp`.
    Long64 {
        rip: u64,
        rsp: u64,
        cr3: u64,
        /// Passed in RSI (Linux: the boot_params address).
        rsi: u64,
    },
    /// 32-bit protected mode without paging, as the Multiboot specification (3.2)
    /// wants it: flat 4 GiB code and data segments, CR0.PE=1 PG=0, interrupts off.
    Protected32 { eip: u32, eax: u32, ebx: u32 },
}

/// What a vendor backend needs to create a vCPU.
#[derive(Debug, Clone, Copy)]
pub struct VcpuConfig {
    /// Address-space tag for the guest's TLB entries (ASID / VPID); never 0.
    pub tag: u32,
    /// Root of the stage-2 (NPT/EPT) tables.
    pub stage2_root: HostPhysAddr,
    /// Physical address of the I/O permission bitmap (SVM: 12 KiB, 4 KiB-aligned).
    pub io_bitmap: HostPhysAddr,
    /// Physical address of the MSR permission bitmap (SVM: 8 KiB, 4 KiB-aligned).
    pub msr_bitmap: HostPhysAddr,
    pub initial: InitialState,
}

/// A hardware virtualisation backend (AMD SVM today, Intel VMX later).
pub trait Arch {
    /// Short name for logs ("svm").
    const NAME: &'static str;
    /// Whether a vCPU may be entered on a CPU other than the one that created it
    /// (SVM: a VMCB is plain memory; VMX: a VMCS is current on one CPU at a time and
    /// would need VMCLEAR and VMPTRLD to move, not done yet).
    const RUNS_ON_ANY_CPU: bool;
    /// Optional features found at probe time. Code must work with all of them absent.
    type Features: Copy + fmt::Debug;
    /// Per-vCPU hardware state (control block, guest GPRs, extended-state area).
    type Vcpu;
    /// Register access for decision code, borrowing the vCPU.
    type Regs<'a>: RegisterFile
    where
        Self: 'a;
    type Error: fmt::Debug + Into<VendorError>;
    /// The entry format of this backend's second-stage tables (AMD nested paging
    /// today; Intel EPT is one more format), which must track dirty pages for the
    /// framebuffer.
    type Stage2: DirtyTracking;
    /// Their shape (depth, large pages, address limit).
    const STAGE2: Geometry;

    /// Whether this CPU supports the backend, and with which optional features.
    fn probe() -> Option<Self::Features>;

    /// Turns virtualisation on for the executing CPU. `frames` provides the per-CPU
    /// pages the processor needs (e.g. the SVM host save area), which stay allocated
    /// for as long as virtualisation is on.
    fn enable_cpu<F: FrameSource>(features: &Self::Features, frames: &mut F) -> Result<(), Self::Error>;

    /// Creates a vCPU in the given initial state.
    fn create_vcpu<F: FrameSource>(
        features: &Self::Features,
        config: &VcpuConfig,
        frames: &mut F,
    ) -> Result<Self::Vcpu, Self::Error>;

    /// Frees a vCPU's frames.
    fn destroy_vcpu<F: FrameSource>(vcpu: Self::Vcpu, frames: &mut F);

    /// Runs the guest until the next exit and decodes it.
    fn run(vcpu: &mut Self::Vcpu) -> Exit;

    /// The guest's registers.
    fn regs(vcpu: &mut Self::Vcpu) -> Self::Regs<'_>;

    /// Carries out a decided action in vendor state and says how the loop continues.
    fn apply(vcpu: &mut Self::Vcpu, action: &ExitAction) -> Flow;

    /// Whether an external interrupt can be delivered on the next entry: the guest has
    /// interrupts enabled, is not in an interrupt shadow, and no other event is queued.
    fn interrupt_window_open(vcpu: &mut Self::Vcpu) -> bool;

    /// Delivers external interrupt `vector` on the next entry (call only when the window
    /// is open).
    fn inject_interrupt(vcpu: &mut Self::Vcpu, vector: u8);

    /// Whether an NMI can be delivered on the next entry: the guest is not still
    /// handling the last one (no IRET since), and no other event is queued.
    fn nmi_window_open(vcpu: &mut Self::Vcpu) -> bool;

    /// Delivers an NMI on the next entry (call only when the NMI window is open); NMIs
    /// stay blocked until the guest's next IRET.
    fn inject_nmi(vcpu: &mut Self::Vcpu);

    /// Asks for an [`crate::arch::exit::ExitReason::InterruptWindow`] exit as soon as the
    /// guest can take an interrupt.
    fn request_interrupt_window(vcpu: &mut Self::Vcpu);

    /// Flushes the guest's TLB entries on the next entry (after the hypervisor changed
    /// its stage-2 tables, e.g. cleared Dirty bits).
    fn request_tlb_flush(vcpu: &mut Self::Vcpu);

    /// The I/O and MSR permission maps in the vendor's layout: every port intercepted,
    /// every MSR intercepted except those held in vendor state that the guest may use
    /// freely. The caller places them in physically contiguous memory.
    fn permission_maps() -> PermissionMaps;
}

/// Permission-map images to copy into physically contiguous, 4 KiB-aligned memory.
#[derive(Debug, Clone)]
pub struct PermissionMaps {
    pub io: alloc::vec::Vec<u8>,
    pub msr: alloc::vec::Vec<u8>,
}

/// Generic code to run on whichever backend the CPU offers: the VM layer writes one
/// `impl OnBackend` and never names a vendor.
pub trait OnBackend {
    type Output;
    /// Runs with backend `A`, already enabled on this CPU with `features`.
    fn run<A: Arch>(self, features: A::Features) -> Self::Output;
}

/// A backend's own error, whichever backend runs: what generic code keeps once the
/// backend type is gone (a launch report, the safe-mode screen). Printed as the
/// backend's error itself.
pub enum VendorError {
    Svm(crate::arch::svm::SvmError),
    Vmx(crate::arch::vmx::VmxError),
    /// The scripted backend of unit tests.
    #[cfg(test)]
    Fake,
}

impl fmt::Debug for VendorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Svm(e) => fmt::Debug::fmt(e, f),
            Self::Vmx(e) => fmt::Debug::fmt(e, f),
            #[cfg(test)]
            Self::Fake => f.write_str("Fake"),
        }
    }
}

impl From<crate::arch::svm::SvmError> for VendorError {
    fn from(e: crate::arch::svm::SvmError) -> Self {
        Self::Svm(e)
    }
}

impl From<crate::arch::vmx::VmxError> for VendorError {
    fn from(e: crate::arch::vmx::VmxError) -> Self {
        Self::Vmx(e)
    }
}

#[cfg(test)]
impl From<()> for VendorError {
    fn from((): ()) -> Self {
        Self::Fake
    }
}

/// Why no backend could be used.
#[derive(Debug)]
pub enum NoUsableBackend {
    /// Neither AMD SVM with nested paging nor Intel VMX.
    Unsupported,
    /// SVM is there but could not be turned on.
    SvmEnable(crate::arch::svm::SvmError),
    /// VMX is there but could not be turned on (disabled in the firmware setup, or a
    /// control the backend needs is missing).
    VmxEnable(crate::arch::vmx::VmxError),
}

impl fmt::Display for NoUsableBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unsupported => {
                f.write_str("this CPU has neither AMD SVM with nested paging nor Intel VMX")
            }
            Self::SvmEnable(e) => write!(f, "cannot enable SVM: {e:?}"),
            Self::VmxEnable(crate::arch::vmx::VmxError::DisabledByFirmware) => f.write_str(
                "cannot enable VMX: the firmware locked it off; enable Intel Virtualization Technology (VT-x) in the firmware setup",
            ),
            Self::VmxEnable(e) => write!(f, "cannot enable VMX: {e:?}"),
        }
    }
}

/// Picks the backend once, from CPUID (SVM on AMD, VMX on Intel), enables it on
/// this CPU and hands it to `job`.
pub fn on_backend<J: OnBackend, F: FrameSource>(job: J, frames: &mut F) -> Result<J::Output, NoUsableBackend> {
    use crate::arch::svm::Svm;
    use crate::arch::vmx::Vmx;
    if let Some(features) = Svm::probe() {
        Svm::enable_cpu(&features, frames).map_err(NoUsableBackend::SvmEnable)?;
        log::info!(target: "vm", "SVM enabled: {features:?}");
        return Ok(job.run::<Svm>(features));
    }
    if let Some(features) = Vmx::probe() {
        Vmx::enable_cpu(&features, frames).map_err(NoUsableBackend::VmxEnable)?;
        log::info!(target: "vm", "VMX enabled: {features:?}");
        return Ok(job.run::<Vmx>(features));
    }
    Err(NoUsableBackend::Unsupported)
}
