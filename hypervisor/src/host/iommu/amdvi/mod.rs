//! AMD-Vi driver (AMD IOMMU spec rev 3.x): device table, I/O page tables per domain,
//! command buffer with completion-wait stores, event log, and legacy 32-bit
//! interrupt remapping tables per device.
//!
//! Blocking default: every device table entry starts valid with translation
//! disabled and no read/write permission (DMA rejected) and interrupts aborted;
//! IOAPIC/HPET entries forward interrupts unmapped.
#![forbid(unsafe_code)]

pub mod cmd;
pub mod dte;
pub mod event;
pub mod irte;
pub mod regs;

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use self::cmd::AmdViCommand;
use self::dte::{Dte, IoPte};
use self::regs::{Efr, RING_ENTRIES, RING_LEN_256, control, status};
use super::domains::Domains;
use super::hw::{POLL_LIMIT, read_entry, write_entry};
use super::scope::{ivhd_alias, ivhd_covers, ivhd_data, ivhd_max_devid};
use super::{DomainId, IdAllocator, IoapicPin, Iommu, IommuError, IommuFault, IommuHw, MsiTarget};
use crate::host::acpi::ivrs::{Ivhd, IvhdEntry, Ivrs};
use crate::hw::Bdf;
use crate::hw::MsiMessage;
use crate::memory::addr::HostPhysAddr;
use crate::memory::guest::GuestMemoryMap;
use crate::memory::page_table::{Geometry, PageTable};

/// Page-table depth Bulkhead uses: 4 levels, a 48-bit DMA address space (every
/// AMD-Vi implementation supports it; EFR.HATS only allows more).
pub const LEVELS: u8 = 4;

#[derive(Debug)]
struct AmdViUnit {
    ivhd: Ivhd,
    efr: Efr,
    device_table: HostPhysAddr,
    device_table_pages: usize,
    command_ring: HostPhysAddr,
    command_tail: usize,
    event_log: HostPhysAddr,
    /// Completion-wait store target and its counter.
    status: HostPhysAddr,
    sequence: u64,
}

#[derive(Debug)]
struct AmdViAttached {
    domain: u16,
    unit: usize,
    /// Requester ids programmed: the device's own and its IVRS alias.
    devids: Vec<u16>,
    /// This device's interrupt remapping table (one frame).
    irt: HostPhysAddr,
}

/// The AMD-Vi driver over all IVHD units.
#[derive(Debug)]
pub struct AmdViIommu<H: IommuHw> {
    hw: H,
    units: Vec<AmdViUnit>,
    hpa_limit: u64,
    domains: Domains<IoPte>,
    attached: BTreeMap<Bdf, AmdViAttached>,
    enabled: bool,
}

fn ring_offset(slot: usize) -> u64 {
    (slot as u64).wrapping_mul(16)
}

impl<H: IommuHw> AmdViIommu<H> {
    /// Reads each unit's features and builds its device table (every entry blocked),
    /// command buffer and event log. Nothing is enabled yet.
    pub fn new(mut hw: H, ivrs: &Ivrs) -> Result<Self, IommuError> {
        let ivhds = ivrs.units();
        if ivhds.is_empty() {
            return Err(IommuError::NoIommu);
        }
        let mut units = Vec::new();
        for (i, ivhd) in ivhds.into_iter().enumerate() {
            let raw = hw.read64(i, regs::EXTENDED_FEATURES);
            let efr = Efr(if raw == u64::MAX { ivhd.efr_image.unwrap_or(0) } else { raw });
            let max_devid = usize::from(ivhd_max_devid(ivhd));
            let entries = max_devid.wrapping_add(1);
            let device_table_pages = entries.div_ceil(128).clamp(1, 512);
            let device_table = hw.alloc_contiguous(device_table_pages).ok_or(IommuError::OutOfMemory)?;
            let command_ring = hw.alloc_zeroed().ok_or(IommuError::OutOfMemory)?;
            let event_log = hw.alloc_zeroed().ok_or(IommuError::OutOfMemory)?;
            let status = hw.alloc_zeroed().ok_or(IommuError::OutOfMemory)?;
            for devid in 0..device_table_pages.wrapping_mul(128) {
                let devid16 = u16::try_from(devid).unwrap_or(u16::MAX);
                write_entry(&mut hw, device_table, devid, &default_dte(ivhd, devid16).0);
            }
            log::info!(
                target: "iommu",
                "AMD-Vi unit {i} at {:#x} (IOMMU {:02x}:{:02x}.{}): EFR {:#x}, device table {} KiB for ids up to \
                 {max_devid:#06x}, IA {}, GA {}, XT {}",
                ivhd.base_address, ivhd.iommu_devid >> 8, (ivhd.iommu_devid >> 3) & 0x1f, ivhd.iommu_devid & 7,
                efr.0, device_table_pages.wrapping_mul(4), efr.invalidate_all(), efr.ga(), efr.xt()
            );
            units.push(AmdViUnit {
                ivhd: ivhd.clone(),
                efr,
                device_table,
                device_table_pages,
                command_ring,
                command_tail: 0,
                event_log,
                status,
                sequence: 0,
            });
        }
        let pa_bits = match ivrs.info.pa_size {
            0 => 48,
            n => n.clamp(32, 52),
        };
        Ok(Self {
            hw,
            units,
            hpa_limit: 1u64 << pa_bits,
            // QEMU 7.2 rejects a DTE with bit 72 (domain id bit 8) set as reserved.
            domains: Domains::new(IdAllocator::new(1, u16::MAX, |id| id & 0x100 != 0)),
            attached: BTreeMap::new(),
            enabled: false,
        })
    }

    pub fn hw_mut(&mut self) -> &mut H {
        &mut self.hw
    }

    fn unit(&self, u: usize) -> Result<&AmdViUnit, IommuError> {
        self.units.get(u).ok_or(IommuError::Unsupported("unit index"))
    }

    fn unit_mut(&mut self, u: usize) -> Result<&mut AmdViUnit, IommuError> {
        self.units.get_mut(u).ok_or(IommuError::Unsupported("unit index"))
    }

    fn unit_for(&self, bdf: Bdf) -> Result<usize, IommuError> {
        self.units
            .iter()
            .position(|u| {
                u.ivhd.segment == bdf.segment
                    && ivhd_covers(&u.ivhd, bdf.requester_id())
                    && usize::from(bdf.requester_id()) < u.device_table_pages.wrapping_mul(128)
            })
            .ok_or(IommuError::NotCovered(bdf))
    }

    /// The device table entry for `devid` on unit `u` (diagnostics and tests).
    pub fn dte(&mut self, u: usize, devid: u16) -> Option<Dte> {
        let table = self.units.get(u)?.device_table;
        read_entry::<H, 4>(&mut self.hw, table, usize::from(devid)).map(Dte)
    }

    /// Queues `commands` plus a COMPLETION_WAIT and waits for its store (§2.4.1).
    fn submit(&mut self, u: usize, commands: &[AmdViCommand]) -> Result<(), IommuError> {
        if commands.len() >= RING_ENTRIES - 1 {
            return Err(IommuError::Unsupported("command batch size"));
        }
        let unit = self.unit_mut(u)?;
        unit.sequence = unit.sequence.wrapping_add(1);
        let (ring, mut tail, store, seq) = (unit.command_ring, unit.command_tail, unit.status, unit.sequence);
        let wait = AmdViCommand::completion_wait(store, seq);
        for c in commands.iter().chain(core::iter::once(&wait)) {
            if !write_entry(&mut self.hw, ring, tail, &c.0) {
                return Err(IommuError::Unsupported("command ring slot"));
            }
            // `tail` stays below RING_ENTRIES, so the add cannot overflow.
            tail = tail.wrapping_add(1) % RING_ENTRIES;
        }
        self.unit_mut(u)?.command_tail = tail;
        self.hw.write64(u, regs::COMMAND_TAIL, ring_offset(tail));
        for _ in 0..POLL_LIMIT {
            if self.hw.table_mut(store).first().copied() == Some(seq) {
                return Ok(());
            }
            self.hw.relax();
        }
        log::error!(target: "iommu", "AMD-Vi unit {u}: completion wait {seq} never stored");
        Err(IommuError::Timeout("COMPLETION_WAIT store"))
    }

    fn apply_enable(&mut self, u: usize) -> Result<(), IommuError> {
        let unit = self.unit(u)?;
        let (dt, pages, ring, log, efr) =
            (unit.device_table, unit.device_table_pages, unit.command_ring, unit.event_log, unit.efr);
        // Base registers may only change while the unit is off (§3.4.1-3.4.3).
        self.hw.write64(u, regs::CONTROL, 0);
        self.hw.write64(u, regs::DEVICE_TABLE_BASE, dt.raw() | (pages.saturating_sub(1) as u64 & 0x1ff));
        self.hw.write64(u, regs::COMMAND_BUFFER_BASE, ring.raw() | RING_LEN_256);
        self.hw.write64(u, regs::EVENT_LOG_BASE, log.raw() | RING_LEN_256);
        self.hw.write64(u, regs::COMMAND_HEAD, 0);
        self.hw.write64(u, regs::COMMAND_TAIL, 0);
        self.hw.write64(u, regs::EVENT_HEAD, 0);
        self.hw.write64(u, regs::EVENT_TAIL, 0);
        self.hw.write64(u, regs::STATUS, status::W1C);
        self.unit_mut(u)?.command_tail = 0;
        let ctl = control::IOMMU_EN | control::EVENT_LOG_EN | control::CMD_BUF_EN | control::COHERENT;
        self.hw.write64(u, regs::CONTROL, ctl);
        if efr.invalidate_all() {
            self.submit(u, &[AmdViCommand::invalidate_all()])?;
        } else {
            let ids: Vec<u16> = (0..pages.wrapping_mul(128)).filter_map(|d| u16::try_from(d).ok()).collect();
            for chunk in ids.chunks(100) {
                let cmds: Vec<AmdViCommand> = chunk
                    .iter()
                    .flat_map(|d| {
                        [AmdViCommand::invalidate_devtab_entry(*d), AmdViCommand::invalidate_interrupt_table(*d)]
                    })
                    .collect();
                self.submit(u, &cmds)?;
            }
        }
        let st = self.hw.read64(u, regs::STATUS);
        log::info!(target: "iommu", "AMD-Vi unit {u} enabled: control {ctl:#x}, status {st:#x}");
        Ok(())
    }

    fn invalidate_domain(&mut self, domain: DomainId) -> Result<(), IommuError> {
        for u in 0..self.units.len() {
            self.submit(u, &[AmdViCommand::invalidate_domain(domain.0)])?;
        }
        Ok(())
    }

    fn write_dte(&mut self, u: usize, devid: u16, dte: &Dte) -> Result<(), IommuError> {
        let table = self.unit(u)?.device_table;
        if write_entry(&mut self.hw, table, usize::from(devid), &dte.0) {
            Ok(())
        } else {
            Err(IommuError::Unsupported("device id beyond the device table"))
        }
    }
}

/// The DTE a device has while no VM owns it.
fn default_dte(ivhd: &Ivhd, devid: u16) -> Dte {
    let settings = ivhd_data(ivhd, devid);
    let special = ivhd.entries.iter().any(|e| matches!(*e, IvhdEntry::Special { devid: d, .. } if d == devid));
    if special { Dte::interrupt_source(settings) } else { Dte::blocked(settings) }
}

impl<H: IommuHw> Iommu for AmdViIommu<H> {
    fn name(&self) -> &'static str {
        "AMD-Vi"
    }

    fn enable(&mut self) -> Result<(), IommuError> {
        if self.enabled {
            return Ok(());
        }
        for u in 0..self.units.len() {
            self.apply_enable(u)?;
        }
        self.enabled = true;
        Ok(())
    }

    fn create_domain(&mut self, map: &GuestMemoryMap) -> Result<DomainId, IommuError> {
        let geometry = Geometry { levels: LEVELS, large_pages: true, hpa_limit: self.hpa_limit };
        let table = PageTable::<IoPte>::new(&mut self.hw, geometry)?;
        let (id, table) = self.domains.create(&mut self.hw, table, map)?;
        log::info!(
            target: "iommu",
            "AMD-Vi domain {id}: {} region(s), {} MiB, root {}",
            map.regions().len(), map.total_bytes() >> 20, table.root()
        );
        Ok(DomainId(id))
    }

    fn destroy_domain(&mut self, domain: DomainId) -> Result<(), IommuError> {
        self.domains.remove_idle(&mut self.hw, domain)?;
        for u in 0..self.units.len() {
            self.submit(u, &[AmdViCommand::invalidate_domain(domain.0)])?;
        }
        Ok(())
    }

    // AMD-Vi table walks snoop the caches: nothing to write back. A unit may cache
    // not-present entries (EFR NpCache), so the domain is invalidated after every
    // change, mapping included.
    fn reserve_window(&mut self, domain: DomainId, iova: u64, pages: usize) -> Result<(), IommuError> {
        self.domains.reserve_window(&mut self.hw, domain, iova, pages)?;
        self.invalidate_domain(domain)
    }

    fn map_window(
        &mut self,
        domain: DomainId,
        ranges: &[(HostPhysAddr, u64)],
        writable: bool,
    ) -> Result<u64, IommuError> {
        let (iova, _) = self.domains.map_window(&mut self.hw, domain, ranges, writable)?;
        self.invalidate_domain(domain)?;
        Ok(iova)
    }

    fn unmap_window(&mut self, domain: DomainId) -> Result<(), IommuError> {
        self.domains.unmap_window(&mut self.hw, domain)?;
        self.invalidate_domain(domain)
    }

    fn attach(&mut self, bdf: Bdf, domain: DomainId) -> Result<(), IommuError> {
        let root = self.domains.root(domain)?;
        if let Some(a) = self.attached.get(&bdf) {
            return if a.domain == domain.0 {
                Ok(())
            } else {
                Err(IommuError::AlreadyAttached { bdf, domain: DomainId(a.domain) })
            };
        }
        let u = self.unit_for(bdf)?;
        let devid = bdf.requester_id();
        let mut devids = alloc::vec![devid];
        if let Some(alias) = ivhd_alias(&self.unit(u)?.ivhd, devid).filter(|a| *a != devid) {
            devids.push(alias);
        }
        let irt = self.hw.alloc_zeroed().ok_or(IommuError::OutOfMemory)?;
        let mut commands = Vec::new();
        for d in &devids {
            let mut entry = Dte::translated(root, LEVELS, domain.0, irt, irte::TABLE_LEN_LOG2);
            entry.apply_settings(ivhd_data(&self.unit(u)?.ivhd, *d));
            if let Err(e) = self.write_dte(u, *d, &entry) {
                self.hw.free(irt);
                return Err(e);
            }
            commands.push(AmdViCommand::invalidate_devtab_entry(*d));
            commands.push(AmdViCommand::invalidate_interrupt_table(*d));
        }
        commands.push(AmdViCommand::invalidate_domain(domain.0));
        self.submit(u, &commands)?;
        log::info!(target: "iommu", "AMD-Vi: {bdf} attached to domain {} (ids {devids:04x?})", domain.0);
        self.attached.insert(bdf, AmdViAttached { domain: domain.0, unit: u, devids, irt });
        self.domains.add_device(domain.0, bdf);
        Ok(())
    }

    fn detach(&mut self, bdf: Bdf) -> Result<(), IommuError> {
        let a = self.attached.remove(&bdf).ok_or(IommuError::NotAttached(bdf))?;
        let mut commands = Vec::new();
        for d in &a.devids {
            let entry = default_dte(&self.unit(a.unit)?.ivhd, *d);
            self.write_dte(a.unit, *d, &entry)?;
            commands.push(AmdViCommand::invalidate_devtab_entry(*d));
            commands.push(AmdViCommand::invalidate_interrupt_table(*d));
        }
        commands.push(AmdViCommand::invalidate_domain(a.domain));
        let result = self.submit(a.unit, &commands);
        // The table is unreachable once the DTE is rewritten and invalidated.
        if result.is_ok() {
            self.hw.free(a.irt);
        }
        self.domains.remove_device(a.domain, bdf);
        log::info!(target: "iommu", "AMD-Vi: {bdf} detached from domain {}; blocked", a.domain);
        result
    }

    fn domain_of(&self, bdf: Bdf) -> Option<DomainId> {
        self.attached.get(&bdf).map(|a| DomainId(a.domain))
    }

    fn covers(&self, bdf: Bdf) -> bool {
        self.unit_for(bdf).is_ok()
    }

    fn unit_of(&self, bdf: Bdf) -> Option<usize> {
        self.unit_for(bdf).ok()
    }

    fn firmware_alias(&self, bdf: Bdf) -> Option<u16> {
        let u = self.unit_for(bdf).ok()?;
        let devid = bdf.requester_id();
        ivhd_alias(&self.unit(u).ok()?.ivhd, devid).filter(|a| *a != devid)
    }

    fn map_ioapic_pin(&mut self, _pin: IoapicPin, _target: MsiTarget) -> Result<Option<u16>, IommuError> {
        // I/O APIC device table entries have IV = 0 (`Dte::platform_interrupts`): their
        // interrupts pass unremapped.
        Ok(None)
    }

    fn map_msi(&mut self, bdf: Bdf, index: u16, target: MsiTarget) -> Result<MsiMessage, IommuError> {
        let a = self.attached.get(&bdf).ok_or(IommuError::NotAttached(bdf))?;
        if index >= irte::TABLE_ENTRIES {
            return Err(IommuError::NoInterruptEntries);
        }
        if target.dest_apic_id > 0xff {
            return Err(IommuError::Unsupported("x2APIC interrupt destinations (XT)"));
        }
        let (unit, irt, devids) = (a.unit, a.irt, a.devids.clone());
        set_irte(&mut self.hw, irt, index, irte::AmdViIrte::remapped(target).0);
        let commands: Vec<AmdViCommand> = devids.iter().map(|d| AmdViCommand::invalidate_interrupt_table(*d)).collect();
        self.submit(unit, &commands)?;
        Ok(irte::msi_for_index(index))
    }

    fn unmap_msi(&mut self, bdf: Bdf, index: u16) -> Result<(), IommuError> {
        let a = self.attached.get(&bdf).ok_or(IommuError::NotAttached(bdf))?;
        if index >= irte::TABLE_ENTRIES {
            return Err(IommuError::NoInterruptEntries);
        }
        let (unit, irt, devids) = (a.unit, a.irt, a.devids.clone());
        set_irte(&mut self.hw, irt, index, 0);
        let commands: Vec<AmdViCommand> = devids.iter().map(|d| AmdViCommand::invalidate_interrupt_table(*d)).collect();
        self.submit(unit, &commands)
    }

    fn invalidate_all(&mut self) -> Result<(), IommuError> {
        for u in 0..self.units.len() {
            if self.unit(u)?.efr.invalidate_all() {
                self.submit(u, &[AmdViCommand::invalidate_all()])?;
            } else {
                let domains: Vec<AmdViCommand> = self.domains.ids().map(AmdViCommand::invalidate_domain).collect();
                for chunk in domains.chunks(100) {
                    self.submit(u, chunk)?;
                }
            }
        }
        Ok(())
    }

    fn poll_faults(&mut self) -> Vec<IommuFault> {
        let mut faults = Vec::new();
        for u in 0..self.units.len() {
            let Ok(unit) = self.unit(u) else { continue };
            let (log, segment) = (unit.event_log, unit.ivhd.segment);
            let tail = (self.hw.read64(u, regs::EVENT_TAIL) / 16) as usize % RING_ENTRIES;
            let mut head = (self.hw.read64(u, regs::EVENT_HEAD) / 16) as usize % RING_ENTRIES;
            for _ in 0..RING_ENTRIES {
                if head == tail {
                    break;
                }
                if let Some([lo, hi]) = read_entry::<H, 2>(&mut self.hw, log, head) {
                    faults.push(event::decode_event(u, segment, lo, hi));
                }
                // `head` stays below RING_ENTRIES, so the add cannot overflow.
                head = head.wrapping_add(1) % RING_ENTRIES;
            }
            self.hw.write64(u, regs::EVENT_HEAD, ring_offset(head));
            let st = self.hw.read64(u, regs::STATUS);
            if st & status::EVENT_OVERFLOW != 0 {
                log::warn!(target: "iommu", "AMD-Vi unit {u}: event log overflowed; some faults were lost");
            }
            if st & status::W1C != 0 {
                self.hw.write64(u, regs::STATUS, st & status::W1C);
            }
        }
        faults
    }
}

/// Writes 32-bit IRTE `index` of the table at `irt` (four entries per quadword pair;
/// two per quadword).
fn set_irte<H: IommuHw>(hw: &mut H, irt: HostPhysAddr, index: u16, value: u32) {
    let word = usize::from(index / 2);
    let shift = u32::from(index % 2) * 32;
    if let Some(slot) = hw.table_mut(irt).get_mut(word) {
        *slot = (*slot & !(0xffff_ffffu64 << shift)) | u64::from(value) << shift;
    }
}
