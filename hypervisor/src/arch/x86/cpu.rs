//! CPU identification and virtualisation support, from CPUID.

use heapless::String;
use raw_cpuid::CpuId;

/// What the boot CPU offers for virtualisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtSupport {
    /// AMD-V with the nested-paging flag.
    Svm {
        npt: bool,
        nrip_save: bool,
        decode_assists: bool,
        vmcb_clean: bool,
        flush_by_asid: bool,
        asids: u32,
    },
    /// Intel VT-x; `locked_off` when the firmware locked IA32_FEATURE_CONTROL with
    /// VMXON disallowed (only the firmware setup can turn it on).
    Vmx {
        locked_off: bool,
    },
    None,
}

#[derive(Debug, Clone)]
pub struct CpuInfo {
    pub vendor: String<16>,
    pub brand: String<48>,
    pub virt: VirtSupport,
}

impl VirtSupport {
    pub fn label(&self) -> &'static str {
        match self {
            VirtSupport::Svm { npt: true, .. } => "AMD SVM with nested paging",
            VirtSupport::Svm { npt: false, .. } => "AMD SVM without nested paging (unsupported)",
            VirtSupport::Vmx { locked_off: false } => "Intel VMX",
            VirtSupport::Vmx { locked_off: true } => {
                "Intel VMX, disabled by the firmware (enable Intel Virtualization Technology in the firmware setup)"
            }
            VirtSupport::None => "none (no SVM or VMX)",
        }
    }
}

pub fn identify() -> CpuInfo {
    let cpuid = CpuId::new();
    let vendor = cpuid.get_vendor_info().map(|v| truncated(v.as_str())).unwrap_or_default();
    let brand = cpuid.get_processor_brand_string().map(|b| truncated(b.as_str().trim())).unwrap_or_default();
    let svm = cpuid.get_extended_processor_and_feature_identifiers().is_some_and(|f| f.has_svm());
    let vmx = cpuid.get_feature_info().is_some_and(|f| f.has_vmx());
    let virt = if svm {
        let info = cpuid.get_svm_info();
        VirtSupport::Svm {
            npt: info.as_ref().is_some_and(|i| i.has_nested_paging()),
            nrip_save: info.as_ref().is_some_and(|i| i.has_nrip()),
            decode_assists: info.as_ref().is_some_and(|i| i.has_decode_assists()),
            vmcb_clean: info.as_ref().is_some_and(|i| i.has_vmcb_clean_bits()),
            flush_by_asid: info.as_ref().is_some_and(|i| i.has_flush_by_asid()),
            asids: info.as_ref().map_or(0, |i| i.supported_asids()),
        }
    } else if vmx {
        use crate::arch::vmx::caps::{FeatureControl, MsrSource, msr};
        let control = FeatureControl::from_msr(crate::arch::vmx::enable::HostMsrs.read(msr::FEATURE_CONTROL));
        VirtSupport::Vmx { locked_off: control == FeatureControl::DisabledByFirmware }
    } else {
        VirtSupport::None
    };
    CpuInfo { vendor, brand, virt }
}

/// Copies as much of `s` as fits, on a character boundary.
fn truncated<const N: usize>(s: &str) -> String<N> {
    let mut out = String::new();
    for c in s.chars() {
        if out.push(c).is_err() {
            break;
        }
    }
    out
}
