use alloc::vec;

use super::*;
use crate::host::iommu::fake_mem::{pci_bridge, pci_dev};
use crate::host::pci::fake_cfg::{FakeCfg, bdf};
use crate::host::pci::{Capability, CapabilityDetail};

#[derive(Debug, Default)]
struct Clock {
    us: u64,
}

impl Delay for Clock {
    fn delay_us(&mut self, us: u64) {
        self.us += us;
    }
}

fn with_caps(b: Bdf, caps: &[(u8, u8)]) -> PciDevice {
    let mut d = pci_dev(b.bus, b.device, b.function, [0x02, 0x00]);
    d.capabilities =
        caps.iter().map(|&(id, offset)| Capability { id, offset, detail: CapabilityDetail::None }).collect();
    d
}

fn inventory(devs: Vec<PciDevice>) -> PciInventory {
    PciInventory::new(devs, true)
}

#[test]
fn detection_prefers_flr_then_af_then_pm_then_bus() {
    let cfg = FakeCfg::default();
    let b = bdf(1, 0, 0);
    cfg.add(b, 0x8086, 0x10d3, 0x02_00_00);
    cfg.cap(b, 0xe0, cap_id::PCI_EXPRESS, 0x0002, &[1 << 28]);
    cfg.cap(b, 0xc8, cap_id::POWER_MANAGEMENT, 0x0003, &[0]);
    let dev = with_caps(b, &[(cap_id::POWER_MANAGEMENT, 0xc8), (cap_id::PCI_EXPRESS, 0xe0)]);
    let inv = inventory(vec![pci_bridge(0, 3, 0, 1, 1), dev.clone()]);
    assert_eq!(detect_reset(&dev, &inv, &cfg), ResetMethod::Flr { pcie: 0xe0 });
    cfg.set(b, 0xe4, 0);
    assert_eq!(detect_reset(&dev, &inv, &cfg), ResetMethod::PmReset { pm: 0xc8 });
    cfg.set(b, 0xcc, 0x0008); // No_Soft_Reset
    assert_eq!(detect_reset(&dev, &inv, &cfg), ResetMethod::SecondaryBus { bridge: bdf(0, 3, 0) });
    // A second device on the bus: bus reset would hit it too.
    let other = pci_dev(1, 1, 0, [0x02, 0x00]);
    let inv2 = inventory(vec![pci_bridge(0, 3, 0, 1, 1), dev.clone(), other]);
    assert_eq!(detect_reset(&dev, &inv2, &cfg), ResetMethod::None);
    // Advanced Features with TP and FLR.
    cfg.cap(b, 0x50, CAP_AF, 0x0300, &[]);
    let dev_af = with_caps(b, &[(CAP_AF, 0x50)]);
    assert_eq!(detect_reset(&dev_af, &inv2, &cfg), ResetMethod::AfFlr { af: 0x50 });
    // Root-bus device with nothing: no reset.
    let lone = pci_dev(0, 5, 0, [0x02, 0x00]);
    cfg.add(lone.bdf, 1, 2, 0);
    assert_eq!(detect_reset(&lone, &inventory(vec![lone.clone()]), &cfg), ResetMethod::None);
}

#[test]
fn flr_plan_and_execution_restore_the_device() {
    let cfg = FakeCfg::default();
    let b = bdf(1, 0, 0);
    cfg.add(b, 0x8086, 0x10d3, 0x02_00_00);
    cfg.bar(b, 0, 0xfebc_0000, 0xfffe_0000);
    cfg.cap(b, 0xe0, cap_id::PCI_EXPRESS, 0x0002, &[1 << 28, 0x0001_2810]);
    let dev = with_caps(b, &[(cap_id::PCI_EXPRESS, 0xe0)]);
    let inv = inventory(vec![dev.clone()]);
    let plan = plan_reset(b, ResetMethod::Flr { pcie: 0xe0 }).unwrap();
    assert_eq!(plan.first(), Some(&ResetStep::Save { bdf: b }));
    assert_eq!(plan.last(), Some(&ResetStep::Restore { bdf: b }));
    let mut clock = Clock::default();
    assert_eq!(reset_function(&dev, &inv, &cfg, &mut clock), Ok(ResetMethod::Flr { pcie: 0xe0 }));
    assert_eq!(*cfg.flrs.borrow(), 1);
    assert!(clock.us >= 100_000, "waited 100 ms after FLR");
    assert_eq!(cfg.get(b, 0x10), 0xfebc_0000, "BAR restored");
    assert_eq!(cfg.get(b, 0x04) & 0xffff, 0x0007, "command restored");
    assert_eq!(cfg.get(b, 0xe8) & 0x7fff, 0x2810, "Device Control restored");
    assert_eq!(cfg.get(b, 0xe8) >> 16, 0x0001, "Device Status not cleared by the FLR write");
}

#[test]
fn pm_and_bus_reset_plans() {
    let b = bdf(1, 0, 0);
    let pm = plan_reset(b, ResetMethod::PmReset { pm: 0xc8 }).unwrap();
    assert!(pm.contains(&ResetStep::Modify { bdf: b, offset: 0xcc, clear: 0x8003, set: 3, other_w1c: 0 }));
    assert!(pm.contains(&ResetStep::Delay { ms: 10 }));
    let bridge = bdf(0, 3, 0);
    let sbr = plan_reset(b, ResetMethod::SecondaryBus { bridge }).unwrap();
    assert!(sbr.contains(&ResetStep::Modify { bdf: bridge, offset: 0x3e, clear: 0, set: 1 << 6, other_w1c: 0 }));
    assert!(sbr.contains(&ResetStep::Modify { bdf: bridge, offset: 0x3e, clear: 1 << 6, set: 0, other_w1c: 0 }));
    assert_eq!(plan_reset(b, ResetMethod::None), Err(PciError::NoReset(b)));
}

#[test]
fn pm_reset_runs_and_a_dead_device_times_out() {
    let cfg = FakeCfg::default();
    let b = bdf(0, 4, 0);
    cfg.add(b, 0x1af4, 0x1000, 0x02_00_00);
    cfg.cap(b, 0x40, cap_id::POWER_MANAGEMENT, 0x0003, &[0x8000]); // PME_Status set
    let plan = plan_reset(b, ResetMethod::PmReset { pm: 0x40 }).unwrap();
    let mut clock = Clock::default();
    execute_reset(&plan, &cfg, &mut clock, None).unwrap();
    let pmcsr: Vec<u32> = cfg.writes_to(b, 0x44).iter().map(|v| v & 0xffff).collect();
    assert_eq!(pmcsr, [3, 0], "D3hot then D0, PME_Status not written back");
    assert!(clock.us >= 20_000);
    let gone = bdf(5, 0, 0);
    let plan = plan_reset(gone, ResetMethod::PmReset { pm: 0x40 }).unwrap();
    assert_eq!(execute_reset(&plan, &cfg, &mut Clock::default(), None), Err(PciError::NotReady(gone)));
}
