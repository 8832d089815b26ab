//! The boot log's description of the platform tables. Lines are built by a pure
//! function so tests can read them; `log_summary` only forwards them to `log`.
#![forbid(unsafe_code)]

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use log::Level;

use super::{IommuKind, PlatformTables};
use crate::host::acpi::dmar::ScopeKind;
use crate::host::acpi::ivrs::IvhdEntry;

/// One summary line: level, log target and text.
pub type SummaryLine = (Level, &'static str, String);

impl PlatformTables {
    /// Logs CPUs, interrupt controllers, ECAM, power registers and the IOMMU.
    pub fn log_summary(&self) {
        for (level, target, line) in self.summary_lines() {
            log::log!(target: target, level, "{line}");
        }
    }

    /// The lines `log_summary` writes.
    pub fn summary_lines(&self) -> Vec<SummaryLine> {
        let mut out: Vec<SummaryLine> = Vec::new();
        let mut info = |target, s: String| out.push((Level::Info, target, s));
        let cpus = self.cpus();
        let enabled = cpus.iter().filter(|c| c.enabled).count();
        let hotplug = cpus.iter().filter(|c| !c.enabled && c.online_capable).count();
        let x2 = cpus.iter().filter(|c| c.x2apic).count();
        info(
            "acpi",
            format!(
                "CPUs: {} ({enabled} enabled, {hotplug} online-capable, {x2} x2APIC entries), LAPIC at {:#x}{}",
                cpus.len(),
                self.madt().local_apic_address,
                if self.madt().pcat_compat { ", 8259 PICs present" } else { "" }
            ),
        );
        for io in self.io_apics() {
            info("acpi", format!("IOAPIC id {} at {:#x}, GSI base {}", io.id, io.address, io.gsi_base));
        }
        for iso in self.interrupt_overrides() {
            info(
                "acpi",
                format!(
                    "IRQ override: ISA IRQ {} -> GSI {}{}{}",
                    iso.source_irq,
                    iso.gsi,
                    if iso.level_triggered() { ", level" } else { "" },
                    if iso.active_low() { ", active-low" } else { "" }
                ),
            );
        }
        if self.ecam_regions().is_empty() {
            info("acpi", "no MCFG: PCI config space through ports 0xcf8/0xcfc (no extended capabilities)".into());
        }
        for r in self.ecam_regions() {
            info(
                "acpi",
                format!("ECAM: segment {} buses {:02x}-{:02x} at {:#x}", r.segment, r.bus_start, r.bus_end, r.base),
            );
        }
        match self.fadt() {
            None => info("acpi", "no FADT: ACPI shutdown and reset registers unavailable".into()),
            Some(f) => {
                let opt = |g: Option<crate::host::acpi::Gas>| g.map_or_else(|| "none".into(), |g| format!("{g}"));
                let reset = match (f.reset, f.reset_supported) {
                    (Some(r), true) => format!("{} <- {:#04x}", r.register, r.value),
                    (Some(r), false) => format!("{} <- {:#04x} (not flagged as supported)", r.register, r.value),
                    (None, _) => "none".into(),
                };
                info(
                    "acpi",
                    format!(
                        "FADT rev {}: SCI {}, PM1a_CNT {}, PM1b_CNT {}, reset {reset}{}",
                        f.revision,
                        f.sci_irq,
                        opt(f.pm1a_control),
                        opt(f.pm1b_control),
                        if f.hardware_reduced { ", hardware-reduced" } else { "" }
                    ),
                );
            }
        }
        match self.s5() {
            Some(s) => info("acpi", format!("S5: SLP_TYPa {:#x}, SLP_TYPb {:#x}", s.slp_typ_a, s.slp_typ_b)),
            None => info("acpi", "no \\_S5_ package found: ACPI soft-off unavailable".into()),
        }
        match self.hpet() {
            Some(g) => info("acpi", format!("HPET at {g}")),
            None => info("acpi", "no HPET table".into()),
        }
        match self.iommu() {
            IommuKind::VtD { units } => info("acpi", format!("IOMMU: DMAR (VT-d) with {units} units")),
            IommuKind::AmdVi { units } => info("acpi", format!("IOMMU: IVRS (AMD-Vi) with {units} IVHDs")),
            IommuKind::None => info("acpi", "IOMMU: no IOMMU table (passthrough disabled)".into()),
        }
        self.iommu_details(&mut out);
        for p in self.problems() {
            let sig = String::from_utf8_lossy(&p.signature).into_owned();
            out.push((Level::Warn, "acpi", format!("{sig} table malformed ({}); ignored", p.error)));
        }
        out
    }

    fn iommu_details(&self, out: &mut Vec<SummaryLine>) {
        if let Some(d) = self.dmar() {
            out.push((
                Level::Info,
                "iommu",
                format!(
                    "DMAR: host address width {}, interrupt remapping {}",
                    d.host_address_width, d.flags.intr_remap
                ),
            ));
            for u in &d.units {
                let ioapics = u.scopes.iter().filter(|s| s.kind == ScopeKind::IoApic).count();
                out.push((
                    Level::Info,
                    "iommu",
                    format!(
                        "DRHD at {:#x} segment {}{}: {} device scopes ({ioapics} IOAPIC)",
                        u.register_base,
                        u.segment,
                        if u.include_pci_all { " INCLUDE_PCI_ALL" } else { "" },
                        u.scopes.len()
                    ),
                ));
            }
            for r in &d.rmrrs {
                out.push((
                    Level::Info,
                    "iommu",
                    format!("RMRR {:#x}-{:#x} for {} devices", r.base, r.limit, r.scopes.len()),
                ));
            }
        }
        if let Some(i) = self.ivrs() {
            for h in i.units() {
                let specials = h.entries.iter().filter(|e| matches!(e, IvhdEntry::Special { .. })).count();
                out.push((
                    Level::Info,
                    "iommu",
                    format!(
                        "IVHD type {:#x}: IOMMU {:02x}:{:02x}.{} segment {} at {:#x}, {} device entries ({specials} special)",
                        h.block_type,
                        h.iommu_devid >> 8,
                        (h.iommu_devid >> 3) & 0x1f,
                        h.iommu_devid & 7,
                        h.segment,
                        h.base_address,
                        h.entries.len()
                    ),
                ));
            }
            for m in &i.ivmds {
                out.push((
                    Level::Info,
                    "iommu",
                    format!("IVMD type {:#x}: {:#x} + {:#x} bytes", m.block_type, m.start, m.len_bytes),
                ));
            }
        }
    }
}
