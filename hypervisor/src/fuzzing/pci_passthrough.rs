//! An assigned function's filtered configuration space and its trapped MSI-X table,
//! over a fake host configuration space (an e1000e-like function with PM, MSI,
//! PCIe, MSI-X and a vendor capability).

use alloc::vec;
use alloc::vec::Vec;

use super::{Input, MAX_ACCESSES, assert_fits};
use crate::devices::vpci::host_bridge::VirtualPciFunction;
use crate::devices::vpci::msi::{InterruptRouter, MsiRoute};
use crate::devices::vpci::passthrough::PassthroughFunction;
use crate::host::pci::fake_cfg::{FakeCfg, bdf};
use crate::host::pci::{Bar, BarKind, Capability, CapabilityDetail, PciDevice};
use crate::hw::pci::{CMD_INTX_DISABLE, cap_id};
use crate::hw::{AccessSize, Bdf, MsiMessage};

/// Device Control of the PCIe capability at 0xe0, and the bits the guest may change
/// (as `passthrough::pcie::DEVCTL_GUEST`); the rest stay as the host set them.
const DEVCTL_REG: u16 = 0xe8;
const DEVCTL_GUEST: u32 = 0x081f;
const DEVCTL_HOST: u32 = 0x2810;

/// Counts the calls the function makes to set up interrupt routes.
#[derive(Debug, Default)]
struct Router {
    calls: usize,
}

impl InterruptRouter for Router {
    fn route(&mut self, _bdf: Bdf, index: u16, route: Option<MsiRoute>) -> Option<MsiMessage> {
        self.calls += 1;
        route.map(|_| MsiMessage { address: 0xfee0_0000 | u64::from(index) << 5, data: 0 })
    }
    fn write_msix_entry(&mut self, _bdf: Bdf, _bar: u8, _offset: u64, _index: u16, _message: Option<MsiMessage>) {
        self.calls += 1;
    }
}

fn nic(cfg: &FakeCfg, b: Bdf) -> PciDevice {
    cfg.add(b, 0x8086, 0x10d3, 0x02_00_00);
    cfg.set(b, 0x0c, 0x0080_0000);
    cfg.bar(b, 0, 0xfebc_0000, 0xfffe_0000);
    cfg.bar(b, 2, 0xc001, 0xffff_ffe0);
    cfg.bar(b, 3, 0xfebe_0000, 0xffff_c000);
    cfg.cap(b, 0x40, cap_id::VENDOR, 0x0010, &[0xdead_beef]);
    cfg.cap(b, 0xa0, cap_id::MSIX, 0x0004, &[0x0000_0003, 0x0000_2003]);
    cfg.cap(b, 0xe0, cap_id::PCI_EXPRESS, 0x0002, &[0x1000_8000, 0x000f_0000 | DEVCTL_HOST]);
    cfg.cap(b, 0xd0, cap_id::MSI, 0x0080, &[0, 0, 0]);
    cfg.cap(b, 0xc8, cap_id::POWER_MANAGEMENT, 0x0003, &[0x0000_0008]);
    let cap = |id, offset| Capability { id, offset, detail: CapabilityDetail::None };
    let bar = |index, kind, address, size| Bar { index, kind, prefetchable: false, address, size };
    PciDevice {
        bdf: b,
        vendor_id: 0x8086,
        device_id: 0x10d3,
        revision: 0,
        class: 0x02,
        subclass: 0,
        prog_if: 0,
        header_type: 0,
        multifunction: true,
        interrupt_pin: 1,
        interrupt_line: 11,
        bars: vec![
            bar(0, BarKind::Mem32, 0xfebc_0000, 128 << 10),
            bar(2, BarKind::Io, 0xc000, 32),
            bar(3, BarKind::Mem32, 0xfebe_0000, 16 << 10),
        ],
        rom: None,
        capabilities: vec![
            cap(cap_id::POWER_MANAGEMENT, 0xc8),
            cap(cap_id::MSI, 0xd0),
            cap(cap_id::PCI_EXPRESS, 0xe0),
            cap(cap_id::MSIX, 0xa0),
            cap(cap_id::VENDOR, 0x40),
        ],
        ext_capabilities: Vec::new(),
        bridge: None,
    }
}

/// Host configuration writes one guest access (and its settle) may cause: the
/// register itself, the command register, MSI/MSI-X control and address/data words.
const MAX_HOST_WRITES_PER_ACCESS: usize = 16;
/// Router calls one access may cause: every MSI vector (32) and MSI-X entry (4 here)
/// torn down and set up again.
const MAX_ROUTER_CALLS_PER_ACCESS: usize = 2 * (32 + 4);

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let cfg = FakeCfg::default();
    let b = bdf(1, 0, 0);
    let device = nic(&cfg, b);
    let intx = input.u8().unwrap_or(0);
    let Ok(f) = PassthroughFunction::new(&device, &cfg, Router::default()) else { return };
    let mut f = if intx & 1 != 0 { f.with_intx(intx >> 1) } else { f };
    let routed = intx & 1 != 0;
    for _ in 0..MAX_ACCESSES {
        let Some(op) = input.u8() else { break };
        cfg.writes.borrow_mut().clear();
        f.router_mut().calls = 0;
        match op % 5 {
            0 => {
                let offset = input.u16() & 0x1ff;
                let size = input.size(false);
                assert_fits(u64::from(f.config_read(offset, size)), size);
            }
            1 | 2 => {
                // Mostly the standard header and the capabilities.
                let offset = if op & 0x80 != 0 { input.u16() & 0x1ff } else { u16::from(input.u8().unwrap_or(0)) };
                let size = input.size(false);
                let value = input.value(size) as u32;
                f.config_write(offset, size, value);
            }
            3 => {
                let offset = u64::from(input.u16()) & 0x3f;
                let size = input.size(true);
                if op & 0x80 != 0 {
                    assert_fits(u64::from(f.msix_table_read(offset, size)), size.min(AccessSize::Dword));
                } else {
                    let value = input.value(size) as u32;
                    f.msix_table_write(offset, size, value);
                }
            }
            _ => {
                let index = input.u8().unwrap_or(0) % 8;
                let _ = f.place_bar(index, input.u64());
                let _ = f.bar_mappings();
            }
        }
        f.settle();
        let writes = cfg.writes.borrow();
        assert!(writes.len() <= MAX_HOST_WRITES_PER_ACCESS, "{} host config writes in one access", writes.len());
        for &(_, offset, value) in writes.iter() {
            assert!(!matches!(offset, 0x00 | 0x08), "host ID register {offset:#x} written with {value:#x}");
        }
        drop(writes);
        assert!(f.router_mut().calls <= MAX_ROUTER_CALLS_PER_ACCESS, "{} router calls", f.router_mut().calls);
        if !routed {
            assert_ne!(
                cfg.get(b, 0x04) & u32::from(CMD_INTX_DISABLE),
                0,
                "INTx enabled on the device while not routed"
            );
        }
        assert_eq!(
            cfg.get(b, DEVCTL_REG) & 0x7fff & !DEVCTL_GUEST,
            DEVCTL_HOST & !DEVCTL_GUEST,
            "host-owned DEVCTL bits changed"
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_accesses() {
        super::super::Prng::new(0x1_0000).drive(3000, 256, super::run);
    }
}
