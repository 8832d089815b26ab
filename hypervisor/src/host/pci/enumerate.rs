//! The bus walk: from a root bus, every device and function, through PCI-PCI bridges
//! by their secondary bus number. Config space is device-controlled input: absent
//! functions read as all-ones, capability lists are followed with loop bounds, and no
//! value can make the walk panic or run forever.
//!
//! BARs and capability lists are handled here rather than with `pci_types`'
//! `EndpointHeader::bar` / `capabilities`: those panic on a reserved BAR memory type,
//! size BARs with decode still enabled, and follow a cyclic capability list forever.
#![forbid(unsafe_code)]

use crate::hw::pci::{BAR0, CAP_PTR, CARDBUS_CAP_PTR, COMMAND, EXT_CAP_START, INTERRUPT_LINE, ROM_BAR};
use alloc::vec::Vec;

use pci_types::{ConfigRegionAccess, HeaderType, PciAddress, PciHeader, PciPciBridgeHeader};

use crate::host::pci::access::HostConfigSpace;
use crate::host::pci::model::{Bar, BarKind, BridgeBuses, Capability, CapabilityDetail, ExtCapability, PciDevice, Rom};
use crate::hw::Bdf;
use crate::hw::pci::cap_id;

const STATUS_CAP_LIST: u32 = 1 << (16 + 4);

/// Command register bits: I/O space, memory space (PCI 3.0 §6.2.2).
const CMD_DECODE: u32 = 0b11;

/// More links than a 256-byte space can hold distinct capabilities: a cycle.
const MAX_CAPS: usize = 48;
/// Likewise for the 4 KiB extended space.
const MAX_EXT_CAPS: usize = (4096 - 256) / 4;

/// Enumerates everything reachable from `root_bus` on `cs`'s segment.
pub fn enumerate<A: ConfigRegionAccess>(cs: &HostConfigSpace<A>, root_bus: u8) -> Vec<PciDevice> {
    let mut walk = Walk { cs, visited: [false; 256], devices: Vec::new() };
    walk.bus(root_bus);
    walk.devices
}

struct Walk<'a, A> {
    cs: &'a HostConfigSpace<A>,
    visited: [bool; 256],
    devices: Vec<PciDevice>,
}

impl<A: ConfigRegionAccess> Walk<'_, A> {
    fn bus(&mut self, bus: u8) {
        // `visited` has one slot per u8 bus number, so `get_mut` always finds it.
        let Some(seen) = self.visited.get_mut(usize::from(bus)) else { return };
        if core::mem::replace(seen, true) {
            log::warn!(target: "pci", "bus {bus:02x} reached twice; bridge numbering is inconsistent");
            return;
        }
        for device in 0..32 {
            let f0 = self.bdf(bus, device, 0);
            if !self.present(f0) {
                continue;
            }
            let multifunction = PciHeader::new(f0.address()).has_multiple_functions(self.cs);
            let functions = if multifunction { 8 } else { 1 };
            for function in 0..functions {
                let bdf = self.bdf(bus, device, function);
                if self.present(bdf) {
                    self.function(bdf);
                }
            }
        }
    }

    fn bdf(&self, bus: u8, device: u8, function: u8) -> Bdf {
        Bdf::new(self.cs.segment(), bus, device, function)
    }

    fn present(&self, bdf: Bdf) -> bool {
        let vendor = self.cs.read(bdf.address(), 0) & 0xffff;
        vendor != 0xffff && vendor != 0
    }

    fn function(&mut self, bdf: Bdf) {
        let addr = bdf.address();
        let header = PciHeader::new(addr);
        let (vendor_id, device_id) = header.id(self.cs);
        let (revision, class, subclass, prog_if) = header.revision_and_class(self.cs);
        let raw_type = ((self.cs.read(addr, 0x0c) >> 16) & 0x7f) as u8;
        let interrupt = self.cs.read(addr, INTERRUPT_LINE);
        let (bar_slots, cap_ptr_offset) = match header.header_type(self.cs) {
            HeaderType::Endpoint => (6, CAP_PTR),
            HeaderType::PciPciBridge => (2, CAP_PTR),
            HeaderType::CardBusBridge => (0, CARDBUS_CAP_PTR),
            _ => (0, 0),
        };
        let capabilities = if cap_ptr_offset != 0 { self.capabilities(addr, cap_ptr_offset) } else { Vec::new() };
        let is_pcie = capabilities.iter().any(|c| c.id == cap_id::PCI_EXPRESS);
        let ext_capabilities = if is_pcie && self.cs.has_extended() { self.ext_capabilities(addr) } else { Vec::new() };
        let bridge = (raw_type == 1).then(|| {
            let b = PciPciBridgeHeader::from_header(header, self.cs);
            let (primary, secondary, subordinate) = b.map_or((0, 0, 0), |b| {
                (b.primary_bus_number(self.cs), b.secondary_bus_number(self.cs), b.subordinate_bus_number(self.cs))
            });
            BridgeBuses { primary, secondary, subordinate }
        });
        self.devices.push(PciDevice {
            bdf,
            vendor_id,
            device_id,
            revision,
            class,
            subclass,
            prog_if,
            header_type: raw_type,
            multifunction: PciHeader::new(addr).has_multiple_functions(self.cs),
            interrupt_pin: (interrupt >> 8) as u8,
            interrupt_line: interrupt as u8,
            bars: size_bars(self.cs, addr, bar_slots),
            rom: if raw_type == 0 { size_rom(self.cs, addr) } else { None },
            capabilities,
            ext_capabilities,
            bridge,
        });
        if let Some(b) = bridge {
            if b.secondary > bdf.bus {
                self.bus(b.secondary);
            } else {
                log::warn!(target: "pci", "{bdf}: bridge secondary bus {:02x} not below bus {:02x}; not followed", b.secondary, bdf.bus);
            }
        }
    }

    fn capabilities(&self, addr: PciAddress, ptr_offset: u16) -> Vec<Capability> {
        let mut caps = Vec::new();
        if self.cs.read(addr, COMMAND) & STATUS_CAP_LIST == 0 {
            return caps;
        }
        let mut ptr = (self.cs.read(addr, ptr_offset) & 0xfc) as u8;
        while ptr >= 0x40 && caps.len() < MAX_CAPS {
            let offset = u16::from(ptr);
            let head = self.cs.read(addr, offset);
            let id = head as u8;
            let control = (head >> 16) as u16;
            let detail = match id {
                cap_id::MSI => CapabilityDetail::Msi {
                    is_64bit: control & (1 << 7) != 0,
                    per_vector_mask: control & (1 << 8) != 0,
                    max_vectors: 1 << ((control >> 1) & 0x7).min(5),
                },
                cap_id::MSIX => {
                    // `offset` is at most 0xfc and the table size field 11 bits wide:
                    // the adds cannot overflow.
                    let table = self.cs.read(addr, offset.wrapping_add(4));
                    let pba = self.cs.read(addr, offset.wrapping_add(8));
                    CapabilityDetail::MsiX {
                        table_size: (control & 0x7ff).wrapping_add(1),
                        table_bar: (table & 7) as u8,
                        table_offset: table & !7,
                        pba_bar: (pba & 7) as u8,
                        pba_offset: pba & !7,
                    }
                }
                cap_id::PCI_EXPRESS => CapabilityDetail::PciExpress { port_type: ((control >> 4) & 0xf) as u8 },
                _ => CapabilityDetail::None,
            };
            caps.push(Capability { id, offset: ptr, detail });
            ptr = ((head >> 8) & 0xfc) as u8;
        }
        if ptr >= 0x40 {
            log::warn!(target: "pci", "{}: capability list does not end; cut at {MAX_CAPS}", addr);
        }
        caps
    }

    fn ext_capabilities(&self, addr: PciAddress) -> Vec<ExtCapability> {
        let mut caps = Vec::new();
        let mut offset = EXT_CAP_START;
        while caps.len() < MAX_EXT_CAPS {
            let head = self.cs.read(addr, offset);
            if head == 0 || head == u32::MAX {
                break;
            }
            caps.push(ExtCapability { id: head as u16, version: ((head >> 16) & 0xf) as u8, offset });
            let next = ((head >> 20) & 0xffc) as u16;
            if next < EXT_CAP_START {
                break;
            }
            offset = next;
        }
        caps
    }
}

/// The expansion ROM BAR at 30h: bits 31:11 the address, bit 0 the decode enable
/// (PCI 3.0 §6.2.5.2). Sized like a BAR, with decode off and the enable bit kept clear.
fn size_rom<A: ConfigRegionAccess>(cs: &HostConfigSpace<A>, addr: PciAddress) -> Option<Rom> {
    const ADDRESS: u32 = super::rom::ROM_ADDRESS;
    let command = cs.read(addr, COMMAND) & 0xffff;
    cs.write(addr, COMMAND, command & !CMD_DECODE);
    let original = cs.read(addr, ROM_BAR);
    cs.write(addr, ROM_BAR, ADDRESS);
    let mask = cs.read(addr, ROM_BAR) & ADDRESS;
    cs.write(addr, ROM_BAR, original);
    cs.write(addr, COMMAND, command);
    (mask != 0).then(|| Rom { address: u64::from(original & ADDRESS), size: u64::from(mask & mask.wrapping_neg()) })
}

/// Sizes the first `slots` BARs with memory and I/O decode disabled (PCI 3.0
/// §6.2.5.1), restoring BARs and the command register afterwards.
fn size_bars<A: ConfigRegionAccess>(cs: &HostConfigSpace<A>, addr: PciAddress, slots: u8) -> Vec<Bar> {
    let mut bars = Vec::new();
    if slots == 0 {
        return bars;
    }
    let command = cs.read(addr, COMMAND) & 0xffff;
    // The status half is write-1-to-clear: writing zeros there leaves it alone.
    cs.write(addr, COMMAND, command & !CMD_DECODE);
    let mut index = 0;
    while index < slots {
        // `index` is a u8 below `slots`, so these register offsets stay far below
        // u16::MAX and the index arithmetic below cannot overflow.
        let offset = BAR0.wrapping_add(u16::from(index).wrapping_mul(4));
        let offset_high = offset.wrapping_add(4);
        let original = cs.read(addr, offset);
        let probe = |off: u16, orig: u32| {
            cs.write(addr, off, u32::MAX);
            let readback = cs.read(addr, off);
            cs.write(addr, off, orig);
            readback
        };
        let mut slot_span = 1;
        let bar = if original & 1 == 1 {
            let mask = probe(offset, original) & !0x3;
            (mask != 0).then(|| Bar {
                index,
                kind: BarKind::Io,
                prefetchable: false,
                address: u64::from(original & !0x3),
                size: u64::from(mask & mask.wrapping_neg()),
            })
        } else {
            let prefetchable = original & (1 << 3) != 0;
            match (original >> 1) & 0b11 {
                kind @ (0b00 | 0b01) => {
                    let mask = probe(offset, original) & !0xf;
                    (mask != 0).then(|| Bar {
                        index,
                        kind: if kind == 0 { BarKind::Mem32 } else { BarKind::Mem1M },
                        prefetchable,
                        address: u64::from(original & !0xf),
                        size: u64::from(mask & mask.wrapping_neg()),
                    })
                }
                0b10 if index.wrapping_add(1) < slots => {
                    slot_span = 2;
                    let original_high = cs.read(addr, offset_high);
                    cs.write(addr, offset, u32::MAX);
                    cs.write(addr, offset_high, u32::MAX);
                    let mask = u64::from(cs.read(addr, offset_high)) << 32 | u64::from(cs.read(addr, offset) & !0xf);
                    cs.write(addr, offset, original);
                    cs.write(addr, offset_high, original_high);
                    (mask != 0).then(|| Bar {
                        index,
                        kind: BarKind::Mem64,
                        prefetchable,
                        address: u64::from(original_high) << 32 | u64::from(original & !0xf),
                        size: mask & mask.wrapping_neg(),
                    })
                }
                _ => {
                    log::warn!(target: "pci", "{addr}: BAR{index} has a reserved type ({original:#x}); skipped");
                    None
                }
            }
        };
        bars.extend(bar);
        index = index.wrapping_add(slot_span);
    }
    cs.write(addr, COMMAND, command);
    bars
}
