//! The hypervisor's own USB stack, just enough for the boot stick: an xHCI host
//! controller driver and USB mass storage (SCSI over Bulk-Only Transport), so that a
//! machine that boots only from the stick can keep the desktops' disks in a data
//! partition on the stick itself (docs/usb-storage.md).
//!
//! Bounded and simple on purpose, like the NVMe driver: one controller, one device
//! (the first mass-storage device found on a root-hub port; no hubs), polled (no
//! interrupts), one transfer in flight, data through a 64 KiB bounce buffer that the
//! controller's DMA domain maps with its rings and contexts and nothing else. The
//! protocol pieces (`regs`, `ring`, `descriptors`, `bot`, `scsi`) are plain logic
//! tested on the host; `hw.rs` is the one piece that touches the real controller, and
//! it does so without `unsafe` (through `BarMmio` and the direct map).
#![deny(unsafe_code)]

pub mod bot;
pub mod controller;
pub mod descriptors;
pub mod device;
mod hw;
pub mod regs;
pub mod ring;
pub mod scsi;
pub mod stick;

use alloc::vec::Vec;

pub use controller::{UsbError, Xhci, XhciHw, XhciTiming};
pub use hw::HostXhciHw;
pub use stick::UsbStick;

use crate::host::iommu::Iommu;
use crate::host::pci::{ConfigAccess, PciDevice, PciInventory};
use crate::hw::Bdf;
use crate::hw::pci::{CMD_BUS_MASTER, CMD_INTX_DISABLE, CMD_MEMORY, COMMAND, STS_ERRORS};
use crate::memory::addr::HostPhysAddr;
use descriptors::{CONFIG_HEADER_BYTES, DEVICE_BYTES, MAX_CONFIG_BYTES};
use device::{ControlData, UsbDevice};

/// PCI class 0Ch (serial bus), subclass 03h (USB), interface 30h (xHCI).
pub const XHCI_CLASS: (u8, u8, u8) = (0x0c, 0x03, 0x30);
/// At most this many root-hub ports with a device are tried per controller.
const MAX_PORTS_TRIED: usize = 8;

/// The xHCI controllers the hypervisor may drive: every one `assigned` does not name.
pub fn candidates<'a>(inventory: &'a PciInventory, assigned: &[Bdf]) -> Vec<&'a PciDevice> {
    inventory
        .devices()
        .iter()
        .filter(|d| (d.class, d.subclass, d.prog_if) == XHCI_CLASS)
        .filter(|d| !assigned.contains(&d.bdf))
        .collect()
}

/// Why no stick could be used on a controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsbProbeError {
    Bar,
    OutOfMemory,
    Iommu(crate::host::iommu::IommuError),
    Usb(UsbError),
    /// No mass-storage device answered on any connected port.
    NoStick,
}

impl core::fmt::Display for UsbProbeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            UsbProbeError::Bar => write!(f, "BAR0 is not a reachable memory BAR"),
            UsbProbeError::OutOfMemory => write!(f, "no memory for the rings and bounce buffer"),
            UsbProbeError::Iommu(e) => write!(f, "no DMA domain: {e}"),
            UsbProbeError::Usb(e) => write!(f, "{e}"),
            UsbProbeError::NoStick => write!(f, "no USB mass-storage device"),
        }
    }
}

/// Brings up the xHCI controller `dev` and opens the first Bulk-Only mass-storage
/// device on its root-hub ports: a DMA region, a DMA domain mapping only that region
/// when `iommu` covers the controller, memory decoding and bus mastering on (INTx off).
///
/// On failure bus mastering is turned off again; the region and the domain stay
/// allocated (a controller in an unknown state may still write to them).
pub fn bring_up(
    dev: &PciDevice,
    config: &dyn ConfigAccess,
    iommu: Option<&mut dyn Iommu>,
    timing: XhciTiming,
) -> Result<UsbStick<HostXhciHw>, UsbProbeError> {
    let bar = dev.bars.iter().find(|b| b.index == 0).ok_or(UsbProbeError::Bar)?;
    let bar_bytes = bar.size;
    let bar = crate::host::pci::access::BarMmio::for_own_device(bar).ok_or(UsbProbeError::Bar)?;
    let command = config.read16(dev.bdf, COMMAND);
    config.write16(dev.bdf, COMMAND, (command | CMD_MEMORY | CMD_INTX_DISABLE) & !CMD_BUS_MASTER, STS_ERRORS);
    let mut hw = HostXhciHw::new(bar, bar_bytes, HostPhysAddr::new(0), 0);
    let cap = Xhci::capabilities(&mut hw).map_err(UsbProbeError::Usb)?;
    let bytes = controller::dma_bytes(cap.scratchpads);
    let dma = crate::memory::phys::alloc_contiguous(bytes, controller::DMA_ALIGN).ok_or(UsbProbeError::OutOfMemory)?;
    hw.set_dma(dma, bytes);
    if let Some(iommu) = iommu {
        let domain = crate::host::nvme::attach_domain(iommu, dev.bdf, dma, bytes).map_err(|e| {
            crate::memory::phys::free_contiguous(dma, bytes);
            UsbProbeError::Iommu(e)
        })?;
        if let Some(d) = domain {
            log::info!(target: "usb", "{}: DMA domain {} maps only its {} KiB of rings, contexts and bounce buffer", dev.bdf, d.0, bytes >> 10);
        }
    }
    config.write16(dev.bdf, COMMAND, command | CMD_MEMORY | CMD_BUS_MASTER | CMD_INTX_DISABLE, STS_ERRORS);
    let result = Xhci::start(hw, cap, dma.raw(), timing).map_err(UsbProbeError::Usb).and_then(|x| {
        log::info!(
            target: "usb",
            "{}: xHCI {}.{:02x}, {} ports, {} slots, {}-byte contexts, {} scratchpad buffers",
            dev.bdf,
            cap.version >> 8,
            cap.version & 0xff,
            cap.max_ports,
            cap.max_slots,
            cap.context_bytes(),
            cap.scratchpads
        );
        find_stick(x, dev.bdf)
    });
    result.inspect_err(|_| {
        config.write16(dev.bdf, COMMAND, command & !CMD_BUS_MASTER, STS_ERRORS);
    })
}

/// Resets each connected port in turn and opens the first mass-storage device.
fn find_stick<H: XhciHw>(mut xhci: Xhci<H>, bdf: Bdf) -> Result<UsbStick<H>, UsbProbeError> {
    let ports = xhci.connected_ports();
    if ports.is_empty() {
        log::info!(target: "usb", "{bdf}: no device on any port");
    }
    for &port in ports.iter().take(MAX_PORTS_TRIED) {
        let speed = match xhci.reset_port(port) {
            Ok(s) => s,
            Err(e) => {
                log::info!(target: "usb", "{bdf}: port {port}: {e}");
                continue;
            }
        };
        let dev = match UsbDevice::address(xhci, port, speed, device::default_max_packet0(speed)) {
            Ok(dev) => dev,
            Err((back, e)) => {
                log::info!(target: "usb", "{bdf}: port {port}: cannot address the device: {e}");
                if back.failed {
                    return Err(UsbProbeError::Usb(e));
                }
                // The slot stays enabled: only one is configured, so nothing else can
                // be tried on this controller.
                return Err(UsbProbeError::NoStick);
            }
        };
        return open_mass_storage(dev, bdf, port, speed);
    }
    Err(UsbProbeError::NoStick)
}

/// Reads the descriptors of the addressed device, configures its Bulk-Only interface
/// and starts it as a stick.
fn open_mass_storage<H: XhciHw>(
    mut dev: UsbDevice<H>,
    bdf: Bdf,
    port: u8,
    speed: u8,
) -> Result<UsbStick<H>, UsbProbeError> {
    const GET_DESCRIPTOR: u8 = 0x06;
    const SET_CONFIGURATION: u8 = 0x09;
    let usb = UsbProbeError::Usb;
    let n =
        dev.control(0x80, GET_DESCRIPTOR, u16::from(descriptors::DEVICE) << 8, 0, ControlData::In(18)).map_err(usb)?;
    let mut raw = [0u8; DEVICE_BYTES];
    dev.control_data(&mut raw).map_err(usb)?;
    let desc = descriptors::parse_device(raw.get(..n).unwrap_or(&[]), false)
        .ok_or(UsbProbeError::Usb(UsbError::Device("malformed device descriptor")))?;
    let header_len = CONFIG_HEADER_BYTES as u16;
    let config_value = u16::from(descriptors::CONFIGURATION) << 8;
    let n = dev.control(0x80, GET_DESCRIPTOR, config_value, 0, ControlData::In(header_len)).map_err(usb)?;
    let mut header = [0u8; CONFIG_HEADER_BYTES];
    dev.control_data(&mut header).map_err(usb)?;
    let (total, _) = descriptors::parse_config_header(header.get(..n).unwrap_or(&[]))
        .ok_or(UsbProbeError::Usb(UsbError::Device("malformed configuration descriptor")))?;
    let total = total.min(MAX_CONFIG_BYTES as u16);
    let n = dev.control(0x80, GET_DESCRIPTOR, config_value, 0, ControlData::In(total)).map_err(usb)?;
    let mut config = alloc::vec![0u8; usize::from(total)];
    dev.control_data(&mut config).map_err(usb)?;
    config.truncate(n);
    let ms = match descriptors::find_mass_storage(&config) {
        Ok(ms) => ms,
        Err(e) => {
            log::info!(target: "usb", "{bdf}: port {port}: {:04x}:{:04x}: {e}", desc.vendor, desc.product);
            return Err(UsbProbeError::NoStick);
        }
    };
    dev.control(0x00, SET_CONFIGURATION, u16::from(ms.configuration), 0, ControlData::None).map_err(usb)?;
    dev.configure_bulk(ms.bulk_in, ms.bulk_out).map_err(usb)?;
    log::info!(
        target: "usb",
        "{bdf}: port {port} ({}): mass storage {:04x}:{:04x}, USB {:x}.{:02x}, bulk IN {:#04x} / OUT {:#04x}, {}-byte packets",
        speed_name(speed),
        desc.vendor,
        desc.product,
        desc.usb_version >> 8,
        desc.usb_version & 0xff,
        ms.bulk_in.address,
        ms.bulk_out.address,
        ms.bulk_in.max_packet
    );
    UsbStick::open(dev, ms, (desc.vendor, desc.product)).map_err(|e| match e {
        stick::ScsiError::Usb(u) => UsbProbeError::Usb(u),
        _ => {
            log::info!(target: "usb", "{bdf}: port {port}: {e}");
            UsbProbeError::NoStick
        }
    })
}

/// The default Protocol Speed ID names (xHCI §7.2.2.1.1).
pub fn speed_name(speed: u8) -> &'static str {
    match speed {
        1 => "full speed",
        2 => "low speed",
        3 => "high speed",
        4 => "SuperSpeed",
        5 => "SuperSpeedPlus",
        _ => "unknown speed",
    }
}
