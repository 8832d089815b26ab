//! The CPUID instruction behind a small trait, so that CPUID policy and feature
//! probing run on the host against a table.

/// The four result registers of CPUID.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuidResult {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// Where raw CPUID values come from (the host CPU, or a table in tests).
pub trait CpuidSource {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult;
}

/// The executing CPU.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostCpuid;

impl CpuidSource for HostCpuid {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
        CpuidResult { eax: r.eax, ebx: r.ebx, ecx: r.ecx, edx: r.edx }
    }
}

/// XCR0 components offered to guests: x87, SSE, AVX, AVX-512 opmask/ZMM_Hi256/Hi16_ZMM.
pub const GUEST_XCR0_ALLOWED: u64 = 0b1110_0111;

/// The standard-format XSAVE area size needed for the user components in `mask`:
/// the legacy region and header (576 bytes) or the end of the highest component
/// (CPUID 0xD sub-leaf n: EAX = size, EBX = offset).
pub fn xsave_area_bytes(src: &impl CpuidSource, mask: u64) -> u32 {
    (2..63u32)
        .filter(|n| mask & (1u64 << n) != 0)
        .map(|n| {
            let c = src.cpuid(0xd, n);
            c.ebx.saturating_add(c.eax)
        })
        .fold(576, u32::max)
}

/// A table-driven CPUID source for tests.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct FakeCpuid(pub std::collections::HashMap<(u32, u32), CpuidResult>);

#[cfg(test)]
impl CpuidSource for FakeCpuid {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        self.0.get(&(leaf, subleaf)).copied().unwrap_or_default()
    }
}

#[cfg(test)]
impl FakeCpuid {
    /// Every feature bit set, with host XCR0 support for x87|SSE|AVX|AMX.
    pub fn all_ones() -> FakeCpuid {
        let ones = CpuidResult { eax: u32::MAX, ebx: u32::MAX, ecx: u32::MAX, edx: u32::MAX };
        let mut m = std::collections::HashMap::new();
        for leaf in [1, 5, 6, 7, 0xa, 0x8000_0001, 0x8000_0007, 0x8000_0008, 0x8000_000a] {
            m.insert((leaf, 0), ones);
        }
        m.insert((7, 1), ones);
        m.insert((0xd, 0), CpuidResult { eax: 0x6_0007, ebx: 0x340, ecx: 0x2b00, edx: 0 });
        m.insert((0xd, 1), ones);
        m.insert((0xd, 2), CpuidResult { eax: 0x100, ebx: 0x240, ..CpuidResult::default() });
        m.insert((0xd, 17), CpuidResult { eax: 0x40, ebx: 0xac0, ..CpuidResult::default() });
        FakeCpuid(m)
    }
}
