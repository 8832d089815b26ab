//! AMD SVM (AMD-V) backend: VMCB layout, exit decoding, permission maps, enabling,
//! the world switch, and the [`Svm`] implementation of the arch-neutral `Arch` trait.
//!
//! Works with every optional SVM feature absent (the QEMU TCG case: no NRIP save, no
//! decode assists, no clean bits, no flush-by-ASID); nested paging is required.

pub mod bitmaps;
pub mod enable;
pub mod entry;
pub mod exit;
pub mod instr;
pub use crate::arch::x86::switched;
pub mod vcpu;
pub mod vmcb;

pub use enable::{SvmError, SvmFeatures};
pub use vcpu::{SvmRegs, SvmVcpu};

use crate::arch::backend::{Arch, PermissionMaps, VcpuConfig};
use crate::arch::exit::{Exit, ExitAction, Flow};
use crate::arch::x86::cpuid::HostCpuid;
use crate::memory::frames::FrameSource;

/// The SVM backend.
#[derive(Debug, Clone, Copy)]
pub struct Svm;

impl Arch for Svm {
    const NAME: &'static str = "svm";
    const RUNS_ON_ANY_CPU: bool = true;
    type Features = SvmFeatures;
    type Vcpu = SvmVcpu;
    type Regs<'a> = SvmRegs<'a>;
    type Error = SvmError;
    type Stage2 = crate::memory::page_table::npt::Npt;
    const STAGE2: crate::memory::page_table::Geometry = crate::memory::page_table::npt::GEOMETRY;

    fn probe() -> Option<SvmFeatures> {
        SvmFeatures::from_cpuid(&HostCpuid)
    }

    fn enable_cpu<F: FrameSource>(features: &SvmFeatures, frames: &mut F) -> Result<(), SvmError> {
        enable::enable(features, frames).map(|_| ())
    }

    fn create_vcpu<F: FrameSource>(
        features: &SvmFeatures,
        config: &VcpuConfig,
        frames: &mut F,
    ) -> Result<SvmVcpu, SvmError> {
        SvmVcpu::new(features, config, frames)
    }

    fn destroy_vcpu<F: FrameSource>(vcpu: SvmVcpu, frames: &mut F) {
        vcpu.destroy(frames)
    }

    fn run(vcpu: &mut SvmVcpu) -> Exit {
        vcpu.run()
    }

    fn regs(vcpu: &mut SvmVcpu) -> SvmRegs<'_> {
        vcpu.regs_view()
    }

    fn apply(vcpu: &mut SvmVcpu, action: &ExitAction) -> Flow {
        vcpu.apply(action)
    }

    fn interrupt_window_open(vcpu: &mut SvmVcpu) -> bool {
        vcpu.interrupt_window_open()
    }

    fn inject_interrupt(vcpu: &mut SvmVcpu, vector: u8) {
        vcpu.inject_interrupt(vector)
    }

    fn nmi_window_open(vcpu: &mut SvmVcpu) -> bool {
        vcpu.nmi_window_open()
    }

    fn inject_nmi(vcpu: &mut SvmVcpu) {
        vcpu.inject_nmi()
    }

    fn request_interrupt_window(vcpu: &mut SvmVcpu) {
        vcpu.request_interrupt_window()
    }

    fn request_tlb_flush(vcpu: &mut SvmVcpu) {
        vcpu.request_tlb_flush()
    }

    fn permission_maps() -> PermissionMaps {
        let io = bitmaps::IoPermissionMap::intercept_all();
        let msr = bitmaps::MsrPermissionMap::standard();
        PermissionMaps { io: io.as_bytes().to_vec(), msr: msr.as_bytes().to_vec() }
    }
}
