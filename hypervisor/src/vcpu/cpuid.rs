//! What a guest sees through CPUID. The host's values pass through, minus what the
//! hypervisor does not virtualise, plus the hypervisor leaves at 0x4000_0000.
//!
//! Choices (each one keeps an unmodified Linux on a path the hypervisor handles):
//! - **Virtualisation** is hidden: VMX (1:ECX[5]), SMX (1:ECX[6]), SVM (8000_0001:ECX[2])
//!   and leaf 8000_000A. No nested virtualisation.
//! - **Hypervisor present** (1:ECX[31]) is set and 0x4000_0000 carries the signature
//!   "Bulkhead\0\0\0\0" in EBX:ECX:EDX; 0x4000_0001 EAX is the hypercall ABI version.
//! - **KVM-compatible leaves** at 0x4000_0100 ("KVMKVMKVM\0\0\0", max 0x4000_0101)
//!   and 0x4000_0101 (feature bits in EAX, hints in EDX = 0), only when the VM sets
//!   [`CpuidPolicy::kvm_features`], which it does only if its exit glue routes the
//!   kvmclock MSRs to [`crate::vcpu::pvclock::PvClock`]. Linux scans 0x4000_0000..
//!   0x4001_0000 in 0x100 steps for the signature (`hypervisor_cpuid_base`).
//! - **MONITOR/MWAIT** (1:ECX[3], leaf 5, 8000_0001:ECX[29] MONITORX) and **WAITPKG**
//!   (7:ECX[5]) are hidden: idle goes through HLT, which exits.
//! - **Performance monitoring** is hidden: PDCM (1:ECX[15]), DS/DTES64, leaf 0xA, AMD
//!   core/NB/LLC counter extensions and IBS, LWP. No PMU virtualisation.
//! - **Thermal and power management** (1:EDX TM/ACPI/PBE, 1:ECX EST/TM2, leaf 6,
//!   8000_0007 except invariant TSC) are hidden.
//! - **TSC_ADJUST** (7:EBX[1]) is always offered: the MSR is emulated. With invariant
//!   TSC it lets Linux trust the TSC without a clocksource watchdog waking it twice a
//!   second.
//! - **Machine check** (1:EDX MCE/MCA) is hidden: the MCG MSRs are not modelled.
//! - **x2APIC and TSC-deadline** (1:ECX[21], [24]) are hidden until the local APIC model
//!   handles the x2APIC MSR range.
//! - **Speculation-control MSRs** (7:EDX[26,27,29,30,31], 8000_0008:EBX[12,14,15,24,25])
//!   are hidden until SPEC_CTRL is context-switched; ARCH_CAPABILITIES likewise.
//! - **LA57** (7:ECX[16]) is hidden: guests use 4-level paging, which the software page
//!   walker (instruction fetch for emulation) understands.
//! - **RDPID** (7:ECX[22]) is hidden because it reads TSC_AUX without an exit; RDTSCP
//!   is intercepted and emulated. A guest may execute RDPID anyway: TSC_AUX holds the
//!   guest's own value while it runs (`arch::svm::switched`).
//! - **PKU and OSPKE** (7:ECX[3], [4]) are hidden: protection keys are not offered. A
//!   guest that sets CR4.PKE anyway (CR4 writes do not exit) gets a PKRU of its own:
//!   PKRU is switched with the rest of the extended state.
//! - **SGX, TSX (HLE/RTM), Intel PT, PQM/PQE, PKS, AMX** are hidden.
//! - **XSAVE**: only user state components x87|SSE|AVX|AVX-512 (XCR0 bits 0-2, 5-7) are
//!   offered; XSAVES/IA32_XSS supervisor states and AMX tiles are hidden (leaf 0xD).
#![forbid(unsafe_code)]

use crate::arch::x86::cpuid::{CpuidResult, CpuidSource, GUEST_XCR0_ALLOWED};

pub const HYPERVISOR_LEAF: u32 = 0x4000_0000;
pub const HYPERVISOR_MAX_LEAF: u32 = 0x4000_0001;
/// "Bulkhead" padded to 12 bytes, as EBX, ECX, EDX.
pub const SIGNATURE: [u32; 3] = [u32::from_le_bytes(*b"Bulk"), u32::from_le_bytes(*b"head"), 0];
/// The KVM-compatible range: signature leaf and feature leaf.
pub const KVM_LEAF: u32 = 0x4000_0100;
pub const KVM_FEATURES_LEAF: u32 = 0x4000_0101;
/// "KVMKVMKVM\0\0\0" as EBX, ECX, EDX.
pub const KVM_SIGNATURE: [u32; 3] =
    [u32::from_le_bytes(*b"KVMK"), u32::from_le_bytes(*b"VMKV"), u32::from_le_bytes(*b"M\0\0\0")];

fn bits(list: &[u32]) -> u32 {
    list.iter().fold(0, |acc, b| acc | (1u32 << (b & 31)))
}

/// Per-VM CPUID settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuidPolicy {
    /// XCR0 bits the host supports (CPUID 0xD.0 EDX:EAX) intersected with
    /// [`GUEST_XCR0_ALLOWED`]; computed by [`CpuidPolicy::new`].
    pub xcr0_mask: u64,
    /// Hypercall ABI version reported in 0x4000_0001.EAX.
    pub abi_version: u32,
    /// KVM paravirtual features offered at 0x4000_0101.EAX (e.g.
    /// [`crate::vcpu::pvclock::KVM_FEATURES`]); `None` hides the KVM leaves.
    pub kvm_features: Option<u32>,
    /// The VM has the local APIC model with its x2APIC MSRs and TSC-deadline timer:
    /// advertise 1:ECX[21] (x2APIC) and 1:ECX[24] (TSC-deadline).
    pub lapic: bool,
}

impl CpuidPolicy {
    pub fn new(source: &(impl CpuidSource + ?Sized)) -> CpuidPolicy {
        let d = source.cpuid(0xd, 0);
        let host = u64::from(d.eax) | (u64::from(d.edx) << 32);
        CpuidPolicy {
            xcr0_mask: (host & GUEST_XCR0_ALLOWED) | 1,
            abi_version: bulkhead_abi::hypercall::ABI_VERSION,
            kvm_features: None,
            lapic: false,
        }
    }

    /// The guest's view of CPUID `leaf`/`subleaf`, given the vCPU's APIC id.
    pub fn filter(&self, source: &(impl CpuidSource + ?Sized), leaf: u32, subleaf: u32, apic_id: u8) -> CpuidResult {
        if (HYPERVISOR_LEAF..0x4001_0000).contains(&leaf) {
            return self.hypervisor_leaf(leaf);
        }
        let mut r = source.cpuid(leaf, subleaf);
        match leaf {
            1 => {
                r.ebx = (r.ebx & 0x00ff_ffff) | (u32::from(apic_id) << 24);
                r.ecx &= !bits(&[3, 5, 6, 7, 8, 15, 18, 21, 24]);
                r.ecx |= 1 << 31;
                if self.lapic {
                    r.ecx |= bits(&[21, 24]);
                }
                // DS, ACPI, TM, PBE; MCE, MCA.
                r.edx &= !bits(&[7, 14, 21, 22, 29, 31]);
            }
            // ARAT (6:EAX[2]): the virtual local APIC timer never stops in idle, so the
            // guest can run tickless without a broadcast timer.
            6 if self.lapic => r = CpuidResult { eax: 1 << 2, ..CpuidResult::default() },
            5 | 6 | 0xa => r = CpuidResult::default(),
            7 if subleaf == 0 => {
                // SGX, HLE, RTM, PQM, PQE, Intel PT.
                r.ebx &= !bits(&[2, 4, 11, 12, 15, 25]);
                // PKU, OSPKE, WAITPKG, LA57 (5-level paging: the instruction fetcher walks
                // 4 levels), RDPID, SGX_LC, PKS.
                r.ecx &= !bits(&[3, 4, 5, 16, 22, 30, 31]);
                // AMX (22, 24, 25), spec-ctrl (26, 27, 29, 30, 31).
                r.edx &= !bits(&[22, 24, 25, 26, 27, 29, 30, 31]);
                // TSC_ADJUST is emulated (`MsrState`) whatever the host has.
                r.ebx |= 1 << 1;
            }
            7 => r = CpuidResult::default(),
            0xd => match subleaf {
                0 => {
                    r.eax &= self.xcr0_mask as u32;
                    r.edx &= (self.xcr0_mask >> 32) as u32;
                }
                // XSAVEOPT, XSAVEC, XGETBV1 stay; XSAVES (bit 3) and XSS go.
                1 => {
                    r.eax &= !bits(&[3]);
                    r.ecx = 0;
                    r.edx = 0;
                }
                n if n < 64 && self.xcr0_mask & (1u64 << n) != 0 => {}
                _ => r = CpuidResult::default(),
            },
            0x1d | 0x1e => r = CpuidResult::default(),
            0x8000_0001 => {
                // SVM, IBS, SKINIT, WDT, LWP, perf counters (core, NB, TSC, LLC), MONITORX.
                r.ecx &= !bits(&[2, 10, 12, 13, 15, 23, 24, 27, 28, 29]);
            }
            0x8000_0007 => {
                r = CpuidResult { edx: r.edx & (1 << 8), ..CpuidResult::default() };
            }
            // RDPRU (4), IBPB, IBRS, STIBP, SSBD, VIRT_SSBD.
            0x8000_0008 => r.ebx &= !bits(&[4, 12, 14, 15, 24, 25]),
            // The x2APIC ID in the extended topology leaves and AMD's extended APIC ID
            // leaf is the vCPU's, not the host CPU's the exit happened on: a guest with
            // several vCPUs must see each one's own (Linux checks it against the MADT).
            0xb | 0x1f => r.edx = u32::from(apic_id),
            // Core id = APIC id, one thread per core: no two vCPUs look like SMT siblings.
            0x8000_001e => {
                r.eax = u32::from(apic_id);
                r.ebx = u32::from(apic_id);
            }
            0x8000_000a => r = CpuidResult::default(),
            _ => {}
        }
        r
    }

    fn hypervisor_leaf(&self, leaf: u32) -> CpuidResult {
        match leaf {
            HYPERVISOR_LEAF => {
                CpuidResult { eax: HYPERVISOR_MAX_LEAF, ebx: SIGNATURE[0], ecx: SIGNATURE[1], edx: SIGNATURE[2] }
            }
            HYPERVISOR_MAX_LEAF => CpuidResult { eax: self.abi_version, ..CpuidResult::default() },
            KVM_LEAF if self.kvm_features.is_some() => CpuidResult {
                eax: KVM_FEATURES_LEAF,
                ebx: KVM_SIGNATURE[0],
                ecx: KVM_SIGNATURE[1],
                edx: KVM_SIGNATURE[2],
            },
            KVM_FEATURES_LEAF => CpuidResult { eax: self.kvm_features.unwrap_or(0), ..CpuidResult::default() },
            _ => CpuidResult::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86::cpuid::FakeCpuid;

    fn policy() -> (FakeCpuid, CpuidPolicy) {
        let src = FakeCpuid::all_ones();
        let p = CpuidPolicy::new(&src);
        (src, p)
    }

    #[test]
    fn virtualisation_is_hidden_and_hypervisor_bit_set() {
        let (src, p) = policy();
        let l1 = p.filter(&src, 1, 0, 3);
        assert_eq!(l1.ecx & (1 << 5), 0, "VMX");
        assert_ne!(l1.ecx & (1 << 31), 0, "hypervisor present");
        assert_eq!(l1.ecx & (1 << 3), 0, "MONITOR");
        assert_eq!(l1.ecx & (1 << 21), 0, "x2APIC");
        assert_eq!(l1.edx & (1 << 7), 0, "MCE");
        assert_eq!(l1.ebx >> 24, 3, "APIC id");
        assert_eq!(l1.ebx & 0xff_ffff, 0xff_ffff);
        let ext = p.filter(&src, 0x8000_0001, 0, 0);
        assert_eq!(ext.ecx & (1 << 2), 0, "SVM");
        assert_eq!(ext.ecx & (1 << 29), 0, "MONITORX");
        assert_eq!(p.filter(&src, 0x8000_000a, 0, 0), CpuidResult::default());
        assert_eq!(p.filter(&src, 5, 0, 0), CpuidResult::default());
        assert_eq!(p.filter(&src, 0xa, 0, 0), CpuidResult::default());
        assert_eq!(p.filter(&src, 0x8000_0007, 0, 0).edx, 1 << 8);
    }

    #[test]
    fn signature_leaf() {
        let (src, p) = policy();
        let r = p.filter(&src, HYPERVISOR_LEAF, 0, 0);
        assert_eq!(r.eax, HYPERVISOR_MAX_LEAF);
        let mut sig = [0u8; 12];
        sig[..4].copy_from_slice(&r.ebx.to_le_bytes());
        sig[4..8].copy_from_slice(&r.ecx.to_le_bytes());
        sig[8..].copy_from_slice(&r.edx.to_le_bytes());
        assert_eq!(&sig, b"Bulkhead\0\0\0\0");
        assert_eq!(p.filter(&src, HYPERVISOR_MAX_LEAF, 0, 0).eax, bulkhead_abi::hypercall::ABI_VERSION);
        assert_eq!(p.filter(&src, 0x4000_0100, 0, 0), CpuidResult::default());
        assert_eq!(p.filter(&src, 0x4000_0101, 0, 0), CpuidResult::default());
    }

    /// Linux's `hypervisor_cpuid_base("KVMKVMKVM\0\0\0", 0)`.
    fn kvm_base(p: &CpuidPolicy, src: &FakeCpuid) -> Option<u32> {
        (0x4000_0000..0x4001_0000u32).step_by(0x100).find(|&base| {
            let r = p.filter(src, base, 0, 0);
            [r.ebx, r.ecx, r.edx] == KVM_SIGNATURE
        })
    }

    #[test]
    fn kvm_leaves_appear_only_when_enabled() {
        let (src, mut p) = policy();
        assert_eq!(kvm_base(&p, &src), None);
        p.kvm_features = Some(crate::vcpu::pvclock::KVM_FEATURES);
        let base = kvm_base(&p, &src).unwrap();
        assert_eq!(base, KVM_LEAF);
        assert_eq!(p.filter(&src, base, 0, 0).eax, KVM_FEATURES_LEAF);
        let mut sig = [0u8; 12];
        let r = p.filter(&src, base, 0, 0);
        sig[..4].copy_from_slice(&r.ebx.to_le_bytes());
        sig[4..8].copy_from_slice(&r.ecx.to_le_bytes());
        sig[8..].copy_from_slice(&r.edx.to_le_bytes());
        assert_eq!(&sig, b"KVMKVMKVM\0\0\0");
        // `kvm_arch_para_features()` reads `cpuid_eax(base | 1)`; hints are EDX.
        let features = p.filter(&src, base | 1, 0, 0);
        assert_eq!(
            features.eax,
            (1 << 1) | (1 << 3) | (1 << 6) | (1 << 24),
            "NOP_IO_DELAY, CLOCKSOURCE2, PV_EOI, STABLE_BIT"
        );
        assert_eq!(features.edx, 0);
        // The Bulkhead leaf is unchanged.
        assert_eq!(p.filter(&src, HYPERVISOR_LEAF, 0, 0).ebx, SIGNATURE[0]);
    }

    #[test]
    fn topology_leaves_give_the_vcpus_own_apic_id() {
        let (src, p) = policy();
        for leaf in [0xb, 0x1f] {
            assert_eq!(p.filter(&src, leaf, 0, 3).edx, 3, "{leaf:#x}");
        }
        let ext = p.filter(&src, 0x8000_001e, 0, 2);
        assert_eq!((ext.eax, ext.ebx), (2, 2));
    }

    #[test]
    fn leaf7_and_xsave() {
        let (src, p) = policy();
        let l7 = p.filter(&src, 7, 0, 0);
        assert_eq!(l7.ecx & (1 << 22), 0, "RDPID");
        assert_eq!(l7.ecx & (1 << 3), 0, "PKU");
        assert_eq!(l7.ecx & (1 << 4), 0, "OSPKE");
        assert_eq!(l7.edx & (1 << 26), 0, "IBRS");
        assert_eq!(l7.edx & (1 << 24), 0, "AMX-TILE");
        assert_ne!(l7.ebx & (1 << 5), 0, "AVX2 passes through");
        // AMX (bits 17/18) is dropped from XCR0; x87|SSE|AVX stay.
        assert_eq!(p.xcr0_mask, 0x7);
        assert_eq!(p.filter(&src, 0xd, 0, 0).eax, 0x7);
        assert_eq!(p.filter(&src, 0xd, 1, 0).eax & (1 << 3), 0, "XSAVES");
        assert_eq!(p.filter(&src, 0xd, 2, 0).eax, 0x100);
        assert_eq!(p.filter(&src, 0xd, 17, 0), CpuidResult::default());
    }
}
