//! Intel VT-d driver (VT-d spec rev 3.x/4.x) in legacy (non-scalable) mode: root and
//! context tables, second-level page tables per domain, queued invalidation, and
//! interrupt remapping with source-id verification.
//!
//! Blocking default: the root table starts with no present entry, so once
//! translation is on, every device's DMA faults ("root entry not present") until it
//! is attached; detaching clears its context entry again.
#![forbid(unsafe_code)]

pub mod fault;
pub mod irte;
pub mod qi;
pub mod regs;
pub mod tables;

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;

use crate::hw::Bdf;
use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use self::irte::VtdIrte;
use self::qi::{InvDesc, InvQueue, QUEUE_ENTRIES};
use self::regs::{Cap, Ecap, fsts, gcmd};
use self::tables::{ContextEntry, RootEntry, SecondLevel};
use super::domains::{Domains, WindowEntries};
use super::hw::{POLL_LIMIT, read_entry, write_entry};
use super::scope::{UnitScope, dmar_scopes, dmar_unit_for};
use super::{DomainId, IdAllocator, IoapicPin, Iommu, IommuError, IommuFault, IommuHw, MsiTarget};
use crate::host::acpi::dmar::Dmar;
use crate::host::pci::PciInventory;
use crate::hw::MsiMessage;
use crate::memory::addr::{HostPhysAddr, PAGE_SIZE};
use crate::memory::guest::GuestMemoryMap;
use crate::memory::page_table::{Geometry, PageTable};

/// Interrupt remapping table entries per unit (2^(S+1) with S = 9: four pages).
pub const IRT_ENTRIES: usize = 1024;
const IRT_PAGES: usize = IRT_ENTRIES * 16 / 4096;

/// Choices the boot code makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VtdConfig {
    /// Leave compatibility-format (un-remapped) MSIs enabled (GCMD.CFI). Only needed
    /// for interrupt sources programmed with un-remapped messages (the hypervisor
    /// itself uses none); it lets a device bypass remapping, so it is off unless
    /// asked for.
    pub allow_compat_interrupts: bool,
    /// The host's local APICs run in x2APIC mode: on units with ECAP.EIM, IRTEs carry
    /// 32-bit destinations and IRTA.EIME is set, which also blocks
    /// compatibility-format interrupts whatever CFI says (§5.1.2.1, §9.10).
    pub x2apic: bool,
}

#[derive(Debug)]
struct Irt {
    base: HostPhysAddr,
    used: Vec<bool>,
    /// Extended Interrupt Mode (IRTA.EIME): x2APIC destinations, no compatibility
    /// format.
    eime: bool,
}

#[derive(Debug)]
struct VtdUnit {
    register_base: u64,
    segment: u16,
    cap: Cap,
    ecap: Ecap,
    root: HostPhysAddr,
    contexts: Vec<Option<HostPhysAddr>>,
    queue: Option<InvQueue>,
    irt: Option<Irt>,
}

/// The VT-d driver over all DRHD units.
#[derive(Debug)]
pub struct VtdIommu<H: IommuHw> {
    hw: H,
    units: Vec<VtdUnit>,
    scopes: Vec<UnitScope>,
    levels: u8,
    large_pages: bool,
    hpa_limit: u64,
    coherent: bool,
    config: VtdConfig,
    domains: Domains<SecondLevel>,
    attached: BTreeMap<Bdf, u16>,
    /// (device, vector index) → IRTE handle.
    vectors: BTreeMap<(Bdf, u16), u16>,
    enabled: bool,
}

impl<H: IommuHw> VtdIommu<H> {
    /// Reads every unit's capabilities and allocates its root table, invalidation
    /// queue and interrupt remapping table. Nothing is enabled yet.
    pub fn new(mut hw: H, dmar: &Dmar, inventory: &PciInventory, config: VtdConfig) -> Result<Self, IommuError> {
        if dmar.units.is_empty() {
            return Err(IommuError::NoIommu);
        }
        let mut units = Vec::new();
        for (i, drhd) in dmar.units.iter().enumerate() {
            let cap = Cap(hw.read64(i, regs::CAP));
            let ecap = Ecap(hw.read64(i, regs::ECAP));
            if cap.0 == u64::MAX || ecap.0 == u64::MAX {
                return Err(IommuError::Unsupported("readable VT-d registers"));
            }
            let root = hw.alloc_zeroed().ok_or(IommuError::OutOfMemory)?;
            let queue = if ecap.queued_invalidation() {
                let base = hw.alloc_zeroed().ok_or(IommuError::OutOfMemory)?;
                let status = hw.alloc_zeroed().ok_or(IommuError::OutOfMemory)?;
                Some(InvQueue { base, tail: 0, status, sequence: 0 })
            } else {
                None
            };
            let irt = if ecap.interrupt_remapping() && queue.is_some() {
                let base = hw.alloc_contiguous(IRT_PAGES).ok_or(IommuError::OutOfMemory)?;
                Some(Irt { base, used: vec![false; IRT_ENTRIES], eime: config.x2apic && ecap.eim() })
            } else {
                None
            };
            let ver = hw.read32(i, regs::VER);
            log::info!(
                target: "iommu",
                "VT-d unit {i} at {:#x}: version {}.{}, SAGAW {:#07b}, MGAW {}, {} domain ids, {} fault records, \
                 QI {}, IR {}, EIM {}, coherent {}, caching mode {}",
                drhd.register_base, (ver >> 4) & 0xf, ver & 0xf, cap.sagaw(), cap.mgaw(), cap.domain_ids(),
                cap.fault_records(), ecap.queued_invalidation(), ecap.interrupt_remapping(), ecap.eim(),
                ecap.coherent(), cap.caching_mode()
            );
            units.push(VtdUnit {
                register_base: drhd.register_base,
                segment: drhd.segment,
                cap,
                ecap,
                root,
                contexts: vec![None; 256],
                queue,
                irt,
            });
        }
        let levels = if units.iter().all(|u| u.cap.sagaw() & 0b0100 != 0) {
            4
        } else if units.iter().all(|u| u.cap.sagaw() & 0b0010 != 0) {
            3
        } else {
            return Err(IommuError::Unsupported("a common 39- or 48-bit page-table depth (SAGAW)"));
        };
        let large_pages = units.iter().all(|u| u.cap.sllps() & 1 != 0);
        let coherent = units.iter().all(|u| u.ecap.coherent());
        let max_ids = units.iter().map(|u| u.cap.domain_ids()).min().unwrap_or(16);
        let last_id = u16::try_from(max_ids.saturating_sub(1)).unwrap_or(u16::MAX);
        let haw = dmar.host_address_width.clamp(32, 52);
        log::info!(
            target: "iommu",
            "VT-d: {} unit(s), {levels}-level tables ({}-bit DMA space), 2M pages {large_pages}, host width {haw}",
            // `levels` is 3 or 4: cannot overflow.
            units.len(), 12u32.wrapping_add(9u32.wrapping_mul(u32::from(levels)))
        );
        Ok(Self {
            hw,
            units,
            scopes: dmar_scopes(dmar, inventory),
            levels,
            large_pages,
            hpa_limit: 1u64 << haw,
            coherent,
            config,
            // Domain id 0 is reserved when CAP.CM = 1 (§6.2.2); never use it.
            domains: Domains::new(IdAllocator::new(1, last_id.max(1), |_| false)),
            attached: BTreeMap::new(),
            vectors: BTreeMap::new(),
            enabled: false,
        })
    }

    /// The table depth domains use (3 or 4).
    pub fn levels(&self) -> u8 {
        self.levels
    }

    /// The hardware, for tests and for the MMIO handle's owner.
    pub fn hw_mut(&mut self) -> &mut H {
        &mut self.hw
    }

    /// Writes `entry` into unit `u`'s remapping table at the index kept for `key`
    /// (allocated on first use) and invalidates the unit's cached copy.
    fn program_irte(&mut self, u: usize, key: (Bdf, u16), entry: VtdIrte) -> Result<u16, IommuError> {
        let handle = match self.vectors.get(&key) {
            Some(h) => *h,
            None => {
                let irt = self.unit_mut(u)?.irt.as_mut().ok_or(IommuError::NoInterruptRemapping)?;
                let free = irt.used.iter().position(|used| !used).ok_or(IommuError::NoInterruptEntries)?;
                if let Some(slot) = irt.used.get_mut(free) {
                    *slot = true;
                }
                u16::try_from(free).map_err(|_| IommuError::NoInterruptEntries)?
            }
        };
        let base = self.unit(u)?.irt.as_ref().map(|t| t.base).ok_or(IommuError::NoInterruptRemapping)?;
        write_entry(&mut self.hw, base, usize::from(handle), &entry.words());
        self.flush_irte(base, handle);
        self.vectors.insert(key, handle);
        self.invalidate(u, &[InvDesc::iec_index(handle)])?;
        Ok(handle)
    }

    fn unit_for(&self, bdf: Bdf) -> Result<usize, IommuError> {
        dmar_unit_for(&self.scopes, bdf).filter(|u| *u < self.units.len()).ok_or(IommuError::NotCovered(bdf))
    }

    fn unit(&self, u: usize) -> Result<&VtdUnit, IommuError> {
        self.units.get(u).ok_or(IommuError::Unsupported("unit index"))
    }

    fn unit_mut(&mut self, u: usize) -> Result<&mut VtdUnit, IommuError> {
        self.units.get_mut(u).ok_or(IommuError::Unsupported("unit index"))
    }

    fn poll(&mut self, u: usize, what: &'static str, mut done: impl FnMut(&mut H) -> bool) -> Result<(), IommuError> {
        for _ in 0..POLL_LIMIT {
            if done(&mut self.hw) {
                return Ok(());
            }
            self.hw.relax();
        }
        log::error!(target: "iommu", "VT-d unit {u}: timeout waiting for {what}");
        Err(IommuError::Timeout(what))
    }

    /// Issues a Global Command and waits for its status (§10.4.4): one-shot commands
    /// (SRTP, SIRTP) complete when their status bit sets; enables when it matches.
    fn apply_gcmd(&mut self, u: usize, bit: u32, on: bool, what: &'static str) -> Result<(), IommuError> {
        let gsts = self.hw.read32(u, regs::GSTS);
        let mut value = gsts & gcmd::PERSISTENT;
        if on {
            value |= bit;
        } else {
            value &= !bit;
        }
        self.hw.write32(u, regs::GCMD, value);
        self.poll(u, what, |hw| (hw.read32(u, regs::GSTS) & bit != 0) == on)
    }

    /// Writes a window's entries back for a unit that does not snoop.
    fn write_back(&mut self, written: WindowEntries) {
        if !self.coherent && written.count > 0 {
            self.hw.flush_cache(written.table, (written.count as u64).saturating_mul(8));
        }
    }

    fn flush(&mut self, frame: HostPhysAddr) {
        if !self.coherent {
            self.hw.flush_cache(frame, PAGE_SIZE);
        }
    }

    /// Runs `descs` and waits for them (§6.5.2.8 wait descriptor with status write),
    /// or uses the register interface when the unit has no invalidation queue.
    fn invalidate(&mut self, u: usize, descs: &[InvDesc]) -> Result<(), IommuError> {
        let Some(mut q) = self.unit(u)?.queue else {
            return self.invalidate_registers(u, descs);
        };
        if descs.len() >= QUEUE_ENTRIES - 1 {
            return Err(IommuError::Unsupported("invalidation batch size"));
        }
        q.sequence = q.sequence.wrapping_add(1);
        let wait = InvDesc::wait(q.status, q.sequence);
        for d in descs.iter().chain(core::iter::once(&wait)) {
            if !write_entry(&mut self.hw, q.base, q.tail, &[d.lo, d.hi]) {
                return Err(IommuError::Unsupported("invalidation queue slot"));
            }
            // `tail` stays below QUEUE_ENTRIES, so the add cannot overflow.
            q.tail = q.tail.wrapping_add(1) % QUEUE_ENTRIES;
        }
        self.flush(q.base);
        self.unit_mut(u)?.queue = Some(q);
        self.hw.write64(u, regs::IQT, InvQueue::register(q.tail));
        let (status, seq) = (q.status, q.sequence);
        let mut error = 0u32;
        self.poll(u, "invalidation wait", |hw| {
            let word = hw.table_mut(status).first().copied().unwrap_or(0) as u32;
            let f = hw.read32(u, regs::FSTS);
            if f & (fsts::IQE | fsts::ITE | fsts::ICE) != 0 {
                error = f;
                return true;
            }
            word == seq
        })?;
        if error != 0 {
            let record = self.hw.read64(u, regs::IQERCD);
            log::error!(target: "iommu", "VT-d unit {u}: invalidation error, FSTS {error:#x}, IQERCD {record:#x}");
            // Skip the bad descriptor: the unit stopped at IQH.
            let head = self.hw.read64(u, regs::IQH);
            self.hw.write64(u, regs::IQT, head);
            self.hw.write32(u, regs::FSTS, fsts::IQE | fsts::ITE | fsts::ICE);
            return Err(IommuError::InvalidationError(error));
        }
        Ok(())
    }

    /// Register-based invalidation (§6.5.1): context cache through CCMD, IOTLB
    /// through the IOTLB register at ECAP.IRO. Always global here.
    fn invalidate_registers(&mut self, u: usize, descs: &[InvDesc]) -> Result<(), IommuError> {
        let iotlb = self.unit(u)?.ecap.iotlb_offset().wrapping_add(8);
        for d in descs {
            match d.kind() {
                qi::kind::CONTEXT_CACHE => {
                    self.hw.write64(u, regs::CCMD, regs::ccmd::ICC | regs::ccmd::GLOBAL);
                    self.poll(u, "CCMD.ICC", |hw| hw.read64(u, regs::CCMD) & regs::ccmd::ICC == 0)?;
                }
                qi::kind::IOTLB => {
                    let v =
                        regs::iotlb::IVT | regs::iotlb::GLOBAL | regs::iotlb::DRAIN_READS | regs::iotlb::DRAIN_WRITES;
                    self.hw.write64(u, iotlb, v);
                    self.poll(u, "IOTLB.IVT", |hw| hw.read64(u, iotlb) & regs::iotlb::IVT == 0)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Write-buffer flush for units that need it (CAP.RWBF, §6.8).
    /// Drains every unit's write buffer and invalidates `domain`'s IOTLB entries on
    /// it, waiting for completion (after a change to the domain's tables).
    fn flush_domain_everywhere(&mut self, domain: DomainId) -> Result<(), IommuError> {
        for u in 0..self.units.len() {
            self.write_buffer_flush(u)?;
            self.invalidate(u, &[InvDesc::iotlb_domain(domain.0)])?;
        }
        Ok(())
    }

    fn write_buffer_flush(&mut self, u: usize) -> Result<(), IommuError> {
        if !self.unit(u)?.cap.rwbf() {
            return Ok(());
        }
        let value = (self.hw.read32(u, regs::GSTS) & gcmd::PERSISTENT) | gcmd::WBF;
        self.hw.write32(u, regs::GCMD, value);
        self.poll(u, "GSTS.WBFS", |hw| hw.read32(u, regs::GSTS) & gcmd::WBF == 0)
    }

    fn apply_enable(&mut self, u: usize) -> Result<(), IommuError> {
        let unit = self.unit(u)?;
        let (root, queue, irt) = (unit.root, unit.queue, unit.irt.as_ref().map(|t| (t.base, t.eime)));
        self.hw.write64(u, regs::RTADDR, root.raw());
        self.apply_gcmd(u, gcmd::SRTP, true, "GSTS.RTPS")?;
        if let Some(q) = queue {
            if self.hw.read32(u, regs::GSTS) & gcmd::QIE != 0 {
                self.apply_gcmd(u, gcmd::QIE, false, "GSTS.QIES clear")?;
            }
            self.hw.write64(u, regs::IQT, 0);
            self.hw.write64(u, regs::IQA, q.iqa());
            self.apply_gcmd(u, gcmd::QIE, true, "GSTS.QIES")?;
            if let Some(q) = self.unit_mut(u)?.queue.as_mut() {
                q.tail = 0;
            }
        }
        self.invalidate(u, &[InvDesc::context_global(), InvDesc::iotlb_global()])?;
        if let Some((base, eime)) = irt {
            self.hw.write64(u, regs::IRTA, irte::irta(base.raw(), IRT_ENTRIES, eime));
            self.apply_gcmd(u, gcmd::SIRTP, true, "GSTS.IRTPS")?;
            self.invalidate(u, &[InvDesc::iec_global()])?;
            // Some implementations (QEMU's) do not model CFI: GSTS.CFIS never follows.
            // Compatibility-format interrupts then stay whatever the unit does; that is
            // reported, not fatal (see docs/iommu.md).
            if let Err(e) = self.apply_gcmd(u, gcmd::CFI, self.config.allow_compat_interrupts, "GSTS.CFIS") {
                log::warn!(target: "iommu", "VT-d unit {u}: CFI not acknowledged ({e:?}); continuing");
            }
            self.apply_gcmd(u, gcmd::IRE, true, "GSTS.IRES")?;
        }
        self.clear_faults(u);
        self.apply_gcmd(u, gcmd::TE, true, "GSTS.TES")?;
        let gsts = self.hw.read32(u, regs::GSTS);
        let compat = match irt {
            None => "no interrupt remapping",
            Some((_, true)) => "compatibility-format MSIs blocked (EIME)",
            Some(_) if gsts & gcmd::CFI == 0 => "compatibility-format MSIs blocked (CFI clear)",
            Some(_) => "compatibility-format MSIs allowed (CFI)",
        };
        log::info!(target: "iommu", "VT-d unit {u} enabled: GSTS {gsts:#010x}, {compat}");
        Ok(())
    }

    fn clear_faults(&mut self, u: usize) {
        let Ok(unit) = self.unit(u) else { return };
        let (fro, n) = (unit.cap.fault_record_offset(), unit.cap.fault_records());
        for i in 0..n {
            let off = fro.wrapping_add(i.wrapping_mul(16));
            self.hw.write32(u, off.wrapping_add(12), 1 << 31);
        }
        self.hw.write32(u, regs::FSTS, fsts::W1C);
    }

    /// The context table for `bus` on unit `u`, created (and hooked into the root
    /// table) on first use.
    fn context_table(&mut self, u: usize, bus: u8) -> Result<HostPhysAddr, IommuError> {
        if let Some(Some(t)) = self.unit(u)?.contexts.get(usize::from(bus)) {
            return Ok(*t);
        }
        let table = self.hw.alloc_zeroed().ok_or(IommuError::OutOfMemory)?;
        let root = self.unit(u)?.root;
        write_entry(&mut self.hw, root, usize::from(bus), &RootEntry::new(table).words());
        self.flush(root);
        if let Some(slot) = self.unit_mut(u)?.contexts.get_mut(usize::from(bus)) {
            *slot = Some(table);
        }
        Ok(table)
    }

    fn devfn(bdf: Bdf) -> usize {
        usize::from((bdf.device & 0x1f) << 3 | (bdf.function & 7))
    }

    fn release_vectors(&mut self, u: usize, bdf: Bdf) -> Result<(), IommuError> {
        let handles: Vec<(u16, u16)> =
            self.vectors.iter().filter(|((b, _), _)| *b == bdf).map(|((_, i), h)| (*i, *h)).collect();
        for (index, handle) in handles {
            self.clear_irte(u, handle)?;
            self.vectors.remove(&(bdf, index));
        }
        Ok(())
    }

    fn clear_irte(&mut self, u: usize, handle: u16) -> Result<(), IommuError> {
        let base = self.unit(u)?.irt.as_ref().map(|t| t.base).ok_or(IommuError::NoInterruptRemapping)?;
        write_entry(&mut self.hw, base, usize::from(handle), &[0, 0]);
        self.flush_irte(base, handle);
        if let Some(used) = self.unit_mut(u)?.irt.as_mut().and_then(|t| t.used.get_mut(usize::from(handle))) {
            *used = false;
        }
        self.invalidate(u, &[InvDesc::iec_index(handle)])
    }

    fn flush_irte(&mut self, base: HostPhysAddr, handle: u16) {
        // A 16-bit handle times 16 bytes stays below 2^20: cannot overflow.
        let page = (u64::from(handle).wrapping_mul(16) / PAGE_SIZE).wrapping_mul(PAGE_SIZE);
        self.flush(HostPhysAddr::new(base.raw().wrapping_add(page)));
    }
}

impl<H: IommuHw> Iommu for VtdIommu<H> {
    fn name(&self) -> &'static str {
        "VT-d"
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
        let geometry = Geometry { levels: self.levels, large_pages: self.large_pages, hpa_limit: self.hpa_limit };
        let table = PageTable::<SecondLevel>::new(&mut self.hw, geometry)?;
        let (id, table) = self.domains.create(&mut self.hw, table, map)?;
        let (root, frames) = (table.root(), if self.coherent { Vec::new() } else { table.frames(&mut self.hw) });
        for frame in frames {
            self.hw.flush_cache(frame, PAGE_SIZE);
        }
        log::info!(
            target: "iommu",
            "VT-d domain {id}: {} region(s), {} MiB, root {root}",
            map.regions().len(), map.total_bytes() >> 20
        );
        Ok(DomainId(id))
    }

    fn destroy_domain(&mut self, domain: DomainId) -> Result<(), IommuError> {
        self.domains.remove_idle(&mut self.hw, domain)?;
        for u in 0..self.units.len() {
            self.invalidate(u, &[InvDesc::iotlb_domain(domain.0)])?;
        }
        Ok(())
    }

    fn reserve_window(&mut self, domain: DomainId, iova: u64, pages: usize) -> Result<(), IommuError> {
        let new = self.domains.reserve_window(&mut self.hw, domain, iova, pages)?;
        // The new tables are written whole, and the entries pointing at them: the
        // simplest write-back is every frame of the table, once, at boot.
        if !self.coherent && !new.is_empty() {
            let geometry_frames = self.domains.frames(&mut self.hw, domain)?;
            for frame in geometry_frames {
                self.hw.flush_cache(frame, PAGE_SIZE);
            }
        }
        self.flush_domain_everywhere(domain)
    }

    fn map_window(
        &mut self,
        domain: DomainId,
        ranges: &[(HostPhysAddr, u64)],
        writable: bool,
    ) -> Result<u64, IommuError> {
        let (iova, written) = self.domains.map_window(&mut self.hw, domain, ranges, writable)?;
        self.write_back(written);
        for u in 0..self.units.len() {
            self.write_buffer_flush(u)?;
            // Not-present → present needs no IOTLB flush unless the unit caches
            // not-present entries (§6.1, CAP.CM).
            if self.unit(u)?.cap.caching_mode() {
                self.invalidate(u, &[InvDesc::iotlb_domain(domain.0)])?;
            }
        }
        Ok(iova)
    }

    fn unmap_window(&mut self, domain: DomainId) -> Result<(), IommuError> {
        let written = self.domains.unmap_window(&mut self.hw, domain)?;
        self.write_back(written);
        self.flush_domain_everywhere(domain)
    }

    fn attach(&mut self, bdf: Bdf, domain: DomainId) -> Result<(), IommuError> {
        let root = self.domains.root(domain)?;
        match self.attached.get(&bdf) {
            Some(d) if *d == domain.0 => return Ok(()),
            Some(d) => return Err(IommuError::AlreadyAttached { bdf, domain: DomainId(*d) }),
            None => {}
        }
        let u = self.unit_for(bdf)?;
        let table = self.context_table(u, bdf.bus)?;
        let entry = ContextEntry::translated(root, self.levels, domain.0);
        write_entry(&mut self.hw, table, Self::devfn(bdf), &entry.words());
        self.flush(table);
        self.write_buffer_flush(u)?;
        // Not-present → present needs no invalidation unless the unit caches
        // not-present entries (CAP.CM); a global context flush covers both cases.
        self.invalidate(u, &[InvDesc::context_global(), InvDesc::iotlb_domain(domain.0)])?;
        self.attached.insert(bdf, domain.0);
        self.domains.add_device(domain.0, bdf);
        log::info!(target: "iommu", "VT-d: {bdf} attached to domain {} (unit {u})", domain.0);
        Ok(())
    }

    fn detach(&mut self, bdf: Bdf) -> Result<(), IommuError> {
        let did = *self.attached.get(&bdf).ok_or(IommuError::NotAttached(bdf))?;
        let u = self.unit_for(bdf)?;
        let table = self.context_table(u, bdf.bus)?;
        write_entry(&mut self.hw, table, Self::devfn(bdf), &[0, 0]);
        self.flush(table);
        self.write_buffer_flush(u)?;
        self.invalidate(u, &[InvDesc::context_device(did, bdf.requester_id()), InvDesc::iotlb_domain(did)])?;
        if self.unit(u)?.irt.is_some() {
            self.release_vectors(u, bdf)?;
        }
        self.attached.remove(&bdf);
        self.domains.remove_device(did, bdf);
        log::info!(target: "iommu", "VT-d: {bdf} detached from domain {did}; blocked");
        Ok(())
    }

    fn domain_of(&self, bdf: Bdf) -> Option<DomainId> {
        self.attached.get(&bdf).map(|d| DomainId(*d))
    }

    fn covers(&self, bdf: Bdf) -> bool {
        self.unit_for(bdf).is_ok()
    }

    fn unit_of(&self, bdf: Bdf) -> Option<usize> {
        self.unit_for(bdf).ok()
    }

    fn firmware_alias(&self, _bdf: Bdf) -> Option<u16> {
        None
    }

    fn map_msi(&mut self, bdf: Bdf, index: u16, target: MsiTarget) -> Result<MsiMessage, IommuError> {
        if !self.attached.contains_key(&bdf) {
            return Err(IommuError::NotAttached(bdf));
        }
        let u = self.unit_for(bdf)?;
        let eime = self.unit(u)?.irt.as_ref().is_some_and(|t| t.eime);
        if target.dest_apic_id > 0xff && !eime {
            return Err(IommuError::Unsupported("x2APIC interrupt destinations"));
        }
        let handle = self.program_irte(u, (bdf, index), VtdIrte::remapped(target, bdf.requester_id(), eime))?;
        Ok(irte::remappable_msi(handle))
    }

    fn map_ioapic_pin(&mut self, pin: IoapicPin, target: MsiTarget) -> Result<Option<u16>, IommuError> {
        let IoapicPin { ioapic_id, pin, level } = pin;
        let found = self
            .scopes
            .iter()
            .enumerate()
            .find_map(|(u, s)| s.ioapics.iter().find(|(id, _)| *id == ioapic_id).map(|&(_, ioapic)| (u, ioapic)));
        let Some((u, ioapic)) = found else {
            return Err(IommuError::Unsupported("an I/O APIC the DMAR table does not list"));
        };
        let Some(irt) = self.unit(u)?.irt.as_ref() else { return Ok(None) };
        let eime = irt.eime;
        // Kept with the MSI entries, under the I/O APIC's address.
        let key = (ioapic, u16::from(pin));
        let entry = VtdIrte::remapped(target, ioapic.requester_id(), eime);
        Ok(Some(self.program_irte(u, key, if level { entry.level_triggered() } else { entry })?))
    }

    fn unmap_msi(&mut self, bdf: Bdf, index: u16) -> Result<(), IommuError> {
        let handle = *self.vectors.get(&(bdf, index)).ok_or(IommuError::NotAttached(bdf))?;
        let u = self.unit_for(bdf)?;
        self.clear_irte(u, handle)?;
        self.vectors.remove(&(bdf, index));
        Ok(())
    }

    fn invalidate_all(&mut self) -> Result<(), IommuError> {
        for u in 0..self.units.len() {
            let mut descs = vec![InvDesc::context_global(), InvDesc::iotlb_global()];
            if self.unit(u)?.irt.is_some() {
                descs.push(InvDesc::iec_global());
            }
            self.invalidate(u, &descs)?;
        }
        Ok(())
    }

    fn poll_faults(&mut self) -> Vec<IommuFault> {
        let mut faults = Vec::new();
        for u in 0..self.units.len() {
            let Ok(unit) = self.unit(u) else { continue };
            let (fro, n, segment) = (unit.cap.fault_record_offset(), unit.cap.fault_records(), unit.segment);
            let status = self.hw.read32(u, regs::FSTS);
            if status & (fsts::PPF | fsts::PFO) == 0 {
                continue;
            }
            for i in 0..n {
                let off = fro.wrapping_add(i.wrapping_mul(16));
                let hi = self.hw.read64(u, off.wrapping_add(8));
                let lo = self.hw.read64(u, off);
                if let Some(f) = fault::decode_frcd(u, segment, lo, hi) {
                    faults.push(f);
                    self.hw.write32(u, off.wrapping_add(12), 1 << 31);
                }
            }
            if status & fsts::PFO != 0 {
                log::warn!(target: "iommu", "VT-d unit {u}: fault records overflowed; some faults were lost");
            }
            self.hw.write32(u, regs::FSTS, fsts::PFO);
        }
        faults
    }
}

impl<H: IommuHw> VtdIommu<H> {
    /// The context entry currently programmed for `bdf` (diagnostics and tests).
    pub fn context_entry(&mut self, bdf: Bdf) -> Option<ContextEntry> {
        let u = self.unit_for(bdf).ok()?;
        let table = (*self.units.get(u)?.contexts.get(usize::from(bdf.bus))?)?;
        read_entry::<H, 2>(&mut self.hw, table, Self::devfn(bdf)).map(ContextEntry::from_words)
    }

    /// Register base of the unit translating `bdf`.
    pub fn unit_base(&self, bdf: Bdf) -> Option<u64> {
        self.units.get(self.unit_for(bdf).ok()?).map(|u| u.register_base)
    }
}
