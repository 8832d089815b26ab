//! Intel VMX (VT-x) backend: capabilities and control adjustment, enabling (VMXON),
//! VMCS setup, exit decoding, the I/O and MSR bitmaps, the world switch, and the
//! [`Vmx`] implementation of the arch-neutral `Arch` trait. Requires EPT and
//! unrestricted guest; see `docs/vmx.md` for where it differs from SVM.

pub mod bitmaps;
pub mod caps;
pub mod cr_access;
pub mod enable;
pub mod entry;
pub mod exit;
pub mod fields;
pub mod guest_state;
pub mod instr;
pub mod regs;
pub mod vcpu;

pub use caps::{VmxError, VmxFeatures};
pub use regs::VmxRegs;
pub use vcpu::VmxVcpu;

use crate::arch::backend::{Arch, PermissionMaps, VcpuConfig};
use crate::arch::exit::{Exit, ExitAction, Flow};
use crate::arch::x86::cpuid::HostCpuid;
use crate::memory::frames::FrameSource;

/// The VMX backend.
#[derive(Debug, Clone, Copy)]
pub struct Vmx;

impl Arch for Vmx {
    const NAME: &'static str = "vmx";
    const RUNS_ON_ANY_CPU: bool = false;
    type Features = VmxFeatures;
    type Vcpu = VmxVcpu;
    type Regs<'a> = VmxRegs<'a>;
    type Error = VmxError;
    type Stage2 = crate::memory::page_table::ept::Ept;
    const STAGE2: crate::memory::page_table::Geometry = crate::memory::page_table::ept::GEOMETRY;

    fn probe() -> Option<VmxFeatures> {
        VmxFeatures::probe(&HostCpuid, &enable::HostMsrs)
    }

    fn enable_cpu<F: FrameSource>(features: &VmxFeatures, frames: &mut F) -> Result<(), VmxError> {
        enable::enable(features, frames)
    }

    fn create_vcpu<F: FrameSource>(
        features: &VmxFeatures,
        config: &VcpuConfig,
        frames: &mut F,
    ) -> Result<VmxVcpu, VmxError> {
        VmxVcpu::new(features, config, frames)
    }

    fn destroy_vcpu<F: FrameSource>(vcpu: VmxVcpu, frames: &mut F) {
        vcpu.destroy(frames)
    }

    fn run(vcpu: &mut VmxVcpu) -> Exit {
        vcpu.run()
    }

    fn regs(vcpu: &mut VmxVcpu) -> VmxRegs<'_> {
        vcpu.regs_view()
    }

    fn apply(vcpu: &mut VmxVcpu, action: &ExitAction) -> Flow {
        vcpu.apply(action)
    }

    fn interrupt_window_open(vcpu: &mut VmxVcpu) -> bool {
        vcpu.interrupt_window_open()
    }

    fn inject_interrupt(vcpu: &mut VmxVcpu, vector: u8) {
        vcpu.inject_interrupt(vector)
    }

    fn nmi_window_open(vcpu: &mut VmxVcpu) -> bool {
        vcpu.nmi_window_open()
    }

    fn inject_nmi(vcpu: &mut VmxVcpu) {
        vcpu.inject_nmi()
    }

    fn request_interrupt_window(vcpu: &mut VmxVcpu) {
        vcpu.request_interrupt_window()
    }

    fn request_tlb_flush(vcpu: &mut VmxVcpu) {
        vcpu.request_tlb_flush()
    }

    fn permission_maps() -> PermissionMaps {
        PermissionMaps { io: bitmaps::io_intercept_all(), msr: bitmaps::msr_standard() }
    }
}
