//! The modern virtio PCI transport (VIRTIO 1.2 §4.1): a PCI function with vendor
//! capabilities pointing into one memory BAR that holds the common configuration
//! (§4.1.4.3), the ISR status byte (§4.1.4.5), the device-specific configuration
//! (§4.1.4.6), the notification area (§4.1.4.4) and the MSI-X table and PBA.
//!
//! Feature negotiation follows §3.1.1: the driver's features must be a subset of the
//! device's and include VIRTIO_F_VERSION_1, or FEATURES_OK does not stick. Writing 0
//! to device_status resets the device (§4.1.4.3.1): features, queues, ISR and pending
//! vectors; the MSI-X table is PCI state and survives. NEEDS_RESET (§2.1.2) stays set
//! until that reset. Interrupts are MSI-X when enabled, else INTx with the ISR.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use super::msix_vectors::MsixVectors;
use super::virtqueue::{QueueError, SplitQueue};
use super::{NO_VECTOR, feature, status};
use crate::devices::vpci::config_space::{
    BAR0, BarDef, BarRegion, CMD_BUS_MASTER, CMD_INTX_DISABLE, CMD_MEMORY, ConfigSize, VBarKind, VConfigSpace,
    VpciError,
};
use crate::hw::pci::{MSIX_CTRL_ENABLE, MSIX_CTRL_FUNCTION_MASK, cap_id};
use crate::hw::{AccessSize, MsiMessage};

/// Red Hat's virtio vendor ID; modern device IDs are 0x1040 + the device type (§4.1.2).
pub const VIRTIO_VENDOR: u16 = 0x1AF4;
pub const MODERN_DEVICE_BASE: u16 = 0x1040;

/// The BAR every structure lives in, and where (offsets inside it).
pub const BAR_INDEX: u8 = 0;
pub const BAR_SIZE: u64 = 0x4000;
const COMMON_OFFSET: u64 = 0x0;
/// The common configuration up to and including queue_reset (§4.1.4.3).
const COMMON_LEN: u64 = 0x3C;
const ISR_OFFSET: u64 = 0x800;
const ISR_LEN: u64 = 4;
const DEVICE_OFFSET: u64 = 0x1000;
const NOTIFY_OFFSET: u64 = 0x1800;
/// notify_off_multiplier: queue i's doorbell is at NOTIFY_OFFSET + 4 * i.
const NOTIFY_MULTIPLIER: u32 = 4;
const MSIX_TABLE_OFFSET: u64 = 0x2000;
const MSIX_PBA_OFFSET: u64 = 0x3000;

/// virtio_pci_cap cfg_type values (§4.1.4).
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_ISR: u8 = 3;
const CFG_DEVICE: u8 = 4;

/// Common configuration fields (§4.1.4.3, struct virtio_pci_common_cfg).
mod common {
    pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
    pub const DEVICE_FEATURE: u64 = 0x04;
    pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
    pub const DRIVER_FEATURE: u64 = 0x0C;
    pub const CONFIG_MSIX_VECTOR: u64 = 0x10;
    pub const NUM_QUEUES: u64 = 0x12;
    pub const DEVICE_STATUS: u64 = 0x14;
    pub const CONFIG_GENERATION: u64 = 0x15;
    pub const QUEUE_SELECT: u64 = 0x16;
    pub const QUEUE_SIZE: u64 = 0x18;
    pub const QUEUE_MSIX_VECTOR: u64 = 0x1A;
    pub const QUEUE_ENABLE: u64 = 0x1C;
    pub const QUEUE_NOTIFY_OFF: u64 = 0x1E;
    pub const QUEUE_DESC: u64 = 0x20;
    pub const QUEUE_DRIVER: u64 = 0x28;
    pub const QUEUE_DEVICE: u64 = 0x30;
}

/// ISR bits (§4.1.4.5): a queue was used, the configuration changed.
const ISR_QUEUE: u8 = 1;
const ISR_CONFIG: u8 = 2;

/// How a device model describes itself to the transport.
#[derive(Debug, Clone, Copy)]
pub struct TransportSpec {
    /// Virtio device type (1 = network), §5.
    pub device_type: u16,
    /// PCI class code (base, sub, interface).
    pub class: u32,
    pub device_features: u64,
    pub num_queues: u16,
    /// Entries each queue offers at most (a power of two, up to
    /// `virtqueue::LARGEST_QUEUE_SIZE`).
    pub queue_size: u16,
    /// Length of the device-specific configuration.
    pub device_config_len: u16,
}

/// The transport state of one virtio PCI function.
#[derive(Debug)]
pub struct VirtioPciTransport {
    config: VConfigSpace,
    /// Entries each queue offers at most (kept for resets).
    queue_size: u16,
    msix_cap: u16,
    device_features: u64,
    driver_features: u64,
    device_feature_select: u32,
    driver_feature_select: u32,
    status: u8,
    config_generation: u8,
    queue_select: u16,
    queues: Vec<SplitQueue>,
    config_msix_vector: u16,
    isr: u8,
    msix: MsixVectors,
    device_config: Vec<u8>,
    /// Queues the driver notified since the last [`Self::take_notified`] (bit per queue).
    notified: u32,
}

/// A vendor capability's body after its ID and next bytes (§4.1.4, virtio_pci_cap).
fn vendor_cap(cfg_type: u8, offset: u64, len: u64, extra: Option<u32>) -> Vec<u8> {
    let cap_len: u8 = if extra.is_some() { 20 } else { 16 };
    let mut body = alloc::vec![cap_len, cfg_type, BAR_INDEX, 0, 0, 0];
    body.extend_from_slice(&(offset as u32).to_le_bytes());
    body.extend_from_slice(&(len as u32).to_le_bytes());
    if let Some(x) = extra {
        body.extend_from_slice(&x.to_le_bytes());
    }
    body
}

impl VirtioPciTransport {
    pub fn new(spec: TransportSpec) -> Result<Self, VpciError> {
        let num_queues = spec.num_queues.clamp(1, 32);
        let device_id = MODERN_DEVICE_BASE.wrapping_add(spec.device_type);
        // Revision 1: a modern-only device (§4.1.2.1).
        let mut config = VConfigSpace::new(ConfigSize::Legacy, VIRTIO_VENDOR, device_id, spec.class, 1);
        config.set_subsystem(VIRTIO_VENDOR, 0x1100);
        config.set_interrupt_pin(1);
        config.add_bar(BAR_INDEX, BarDef { kind: VBarKind::Memory32 { prefetchable: false }, size: BAR_SIZE })?;
        let device_len = u64::from(spec.device_config_len);
        let notify_len = u64::from(num_queues).wrapping_mul(u64::from(NOTIFY_MULTIPLIER));
        config.add_capability(cap_id::VENDOR, &vendor_cap(CFG_COMMON, COMMON_OFFSET, COMMON_LEN, None), &[])?;
        config.add_capability(
            cap_id::VENDOR,
            &vendor_cap(CFG_NOTIFY, NOTIFY_OFFSET, notify_len, Some(NOTIFY_MULTIPLIER)),
            &[],
        )?;
        config.add_capability(cap_id::VENDOR, &vendor_cap(CFG_ISR, ISR_OFFSET, ISR_LEN, None), &[])?;
        config.add_capability(cap_id::VENDOR, &vendor_cap(CFG_DEVICE, DEVICE_OFFSET, device_len, None), &[])?;
        // One vector for configuration changes and one per queue.
        let msix = MsixVectors::new(num_queues.saturating_add(1));
        let table_size = msix.count().saturating_sub(1);
        let mut body = Vec::from(table_size.to_le_bytes());
        body.extend_from_slice(&((MSIX_TABLE_OFFSET as u32) | u32::from(BAR_INDEX)).to_le_bytes());
        body.extend_from_slice(&((MSIX_PBA_OFFSET as u32) | u32::from(BAR_INDEX)).to_le_bytes());
        let msix_cap = u16::from(config.add_capability(cap_id::MSIX, &body, &[0x00, 0xC0])?);
        Ok(VirtioPciTransport {
            config,
            msix_cap,
            device_features: spec.device_features,
            driver_features: 0,
            device_feature_select: 0,
            driver_feature_select: 0,
            status: 0,
            config_generation: 0,
            queue_select: 0,
            queues: alloc::vec![SplitQueue::offering(spec.queue_size); usize::from(num_queues)],
            queue_size: spec.queue_size,
            config_msix_vector: NO_VECTOR,
            isr: 0,
            msix,
            device_config: alloc::vec![0; usize::from(spec.device_config_len)],
            notified: 0,
        })
    }

    /// Features both sides agreed on (valid once FEATURES_OK is set).
    pub fn negotiated(&self) -> u64 {
        self.driver_features
    }

    pub fn status(&self) -> u8 {
        self.status
    }

    /// The driver finished setting up, nothing failed, and the function may reach
    /// memory: the device may use its queues.
    pub fn is_running(&self) -> bool {
        let ready = status::FEATURES_OK | status::DRIVER_OK;
        self.status & ready == ready
            && self.status & (status::NEEDS_RESET | status::FAILED) == 0
            && self.config.command() & CMD_BUS_MASTER != 0
    }

    pub fn queue(&self, index: u16) -> Option<&SplitQueue> {
        self.queues.get(usize::from(index))
    }

    pub fn queue_mut(&mut self, index: u16) -> Option<&mut SplitQueue> {
        self.queues.get_mut(usize::from(index))
    }

    /// Device-side update of the device-specific configuration (§2.5.1: the generation
    /// changes so the driver rereads a consistent copy).
    pub fn set_device_config(&mut self, offset: usize, bytes: &[u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            if let Some(slot) = self.device_config.get_mut(offset.saturating_add(i)) {
                *slot = b;
            }
        }
        self.config_generation = self.config_generation.wrapping_add(1);
    }

    /// The device found the driver broke the rules: NEEDS_RESET and a configuration
    /// interrupt (§2.1.2). `true` the first time (until the next reset), for one log line.
    pub fn fail(&mut self) -> bool {
        if self.status & status::NEEDS_RESET != 0 {
            return false;
        }
        self.status |= status::NEEDS_RESET;
        if self.status & status::DRIVER_OK != 0 {
            self.signal_config();
        }
        true
    }

    /// Queues the driver notified since the last call, one bit per queue.
    pub fn take_notified(&mut self) -> u32 {
        core::mem::take(&mut self.notified)
    }

    fn msix_control(&self) -> u16 {
        self.config.u16_at(self.msix_cap.wrapping_add(2))
    }

    fn msix_enabled(&self) -> bool {
        self.msix_control() & MSIX_CTRL_ENABLE != 0
    }

    fn signal(&mut self, vector: u16, isr_bit: u8) {
        if self.msix_enabled() {
            // NO_VECTOR (or any vector beyond the table) means no interrupt (§4.1.5.1.2).
            self.msix.raise(vector);
        } else {
            self.isr |= isr_bit;
        }
    }

    /// The device used buffers of queue `index` and wants the driver told.
    pub fn signal_queue(&mut self, index: u16) {
        if let Some(vector) = self.queue(index).map(|q| q.msix_vector) {
            self.signal(vector, ISR_QUEUE);
        }
    }

    /// The device-specific configuration changed (or the device needs a reset).
    pub fn signal_config(&mut self) {
        self.signal(self.config_msix_vector, ISR_CONFIG);
    }

    /// MSI-X messages ready to deliver (raised and not masked) go to `out`.
    pub fn take_messages(&mut self, out: &mut Vec<MsiMessage>) {
        if self.msix_enabled() {
            let function_masked = self.msix_control() & MSIX_CTRL_FUNCTION_MASK != 0;
            self.msix.take_ready(function_masked, out);
        }
    }

    /// The level of INTA#: ISR bits set while MSI-X is off and INTx is not disabled.
    pub fn intx_asserted(&self) -> bool {
        self.isr != 0 && !self.msix_enabled() && self.config.command() & CMD_INTX_DISABLE == 0
    }

    /// A reset the host does (its VM stopped): as if the driver wrote 0 to the status.
    pub fn reset_by_host(&mut self) {
        self.reset();
    }

    fn reset(&mut self) {
        self.driver_features = 0;
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.status = 0;
        self.queue_select = 0;
        for q in &mut self.queues {
            *q = SplitQueue::offering(self.queue_size);
        }
        self.config_msix_vector = NO_VECTOR;
        self.isr = 0;
        self.msix.clear_pending();
        self.notified = 0;
    }

    fn write_status(&mut self, value: u8) {
        if value == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        let mut new = old | value;
        if new & status::FEATURES_OK != 0 && old & status::FEATURES_OK == 0 {
            let subset = self.driver_features & !self.device_features == 0;
            if !subset || self.driver_features & feature::VERSION_1 == 0 {
                new &= !status::FEATURES_OK;
            }
        }
        self.status = new;
    }

    fn selected_queue(&self) -> Option<&SplitQueue> {
        self.queue(self.queue_select)
    }

    /// The selected queue while the driver may still configure it.
    fn configurable_queue(&mut self) -> Option<&mut SplitQueue> {
        let q = self.queues.get_mut(usize::from(self.queue_select))?;
        (!q.enabled).then_some(q)
    }

    fn vector_or_none(&self, vector: u16) -> u16 {
        if vector < self.msix.count() { vector } else { NO_VECTOR }
    }

    /// The common configuration as bytes, for reads of any width.
    fn common_image(&self) -> [u8; COMMON_LEN as usize] {
        let mut img = [0u8; COMMON_LEN as usize];
        let mut put = |offset: u64, bytes: &[u8]| {
            for (i, &b) in bytes.iter().enumerate() {
                if let Some(slot) = usize::try_from(offset).ok().and_then(|o| img.get_mut(o.saturating_add(i))) {
                    *slot = b;
                }
            }
        };
        let word = |features: u64, select: u32| match select {
            0 => features as u32,
            1 => (features >> 32) as u32,
            _ => 0,
        };
        put(common::DEVICE_FEATURE_SELECT, &self.device_feature_select.to_le_bytes());
        put(common::DEVICE_FEATURE, &word(self.device_features, self.device_feature_select).to_le_bytes());
        put(common::DRIVER_FEATURE_SELECT, &self.driver_feature_select.to_le_bytes());
        put(common::DRIVER_FEATURE, &word(self.driver_features, self.driver_feature_select).to_le_bytes());
        put(common::CONFIG_MSIX_VECTOR, &self.config_msix_vector.to_le_bytes());
        put(common::NUM_QUEUES, &(self.queues.len() as u16).to_le_bytes());
        put(common::DEVICE_STATUS, &[self.status]);
        put(common::CONFIG_GENERATION, &[self.config_generation]);
        put(common::QUEUE_SELECT, &self.queue_select.to_le_bytes());
        if let Some(q) = self.selected_queue() {
            put(common::QUEUE_SIZE, &q.size.to_le_bytes());
            put(common::QUEUE_MSIX_VECTOR, &q.msix_vector.to_le_bytes());
            put(common::QUEUE_ENABLE, &u16::from(q.enabled).to_le_bytes());
            put(common::QUEUE_NOTIFY_OFF, &self.queue_select.to_le_bytes());
            put(common::QUEUE_DESC, &q.desc.to_le_bytes());
            put(common::QUEUE_DRIVER, &q.driver.to_le_bytes());
            put(common::QUEUE_DEVICE, &q.device.to_le_bytes());
        }
        img
    }

    fn common_read(&self, offset: u64, size: AccessSize) -> u64 {
        let img = self.common_image();
        let mut value = 0u64;
        for i in 0..u64::from(size.bytes()) {
            let byte = usize::try_from(offset.saturating_add(i)).ok().and_then(|o| img.get(o)).copied().unwrap_or(0);
            value |= u64::from(byte) << i.wrapping_mul(8);
        }
        value
    }

    /// A write to the common configuration. Fields are written at their own width;
    /// the 64-bit queue addresses also as two dwords (§4.1.3.1). Anything else drops.
    /// Returns a queue error when enabling a queue the driver laid out wrongly.
    fn common_write(&mut self, offset: u64, size: AccessSize, value: u64) -> Result<(), QueueError> {
        use AccessSize::{Byte, Dword, Qword, Word};
        let v32 = value as u32;
        let v16 = value as u16;
        match (offset, size) {
            (common::DEVICE_FEATURE_SELECT, Dword) => self.device_feature_select = v32,
            (common::DRIVER_FEATURE_SELECT, Dword) => self.driver_feature_select = v32,
            (common::DRIVER_FEATURE, Dword) if self.status & status::FEATURES_OK == 0 => {
                match self.driver_feature_select {
                    0 => self.driver_features = (self.driver_features & !0xFFFF_FFFF) | u64::from(v32),
                    1 => self.driver_features = (self.driver_features & 0xFFFF_FFFF) | (u64::from(v32) << 32),
                    _ => {}
                }
            }
            (common::CONFIG_MSIX_VECTOR, Word) => self.config_msix_vector = self.vector_or_none(v16),
            (common::DEVICE_STATUS, Byte) => self.write_status(value as u8),
            (common::QUEUE_SELECT, Word) => self.queue_select = v16,
            (common::QUEUE_SIZE, Word) => {
                if let Some(q) = self.configurable_queue() {
                    q.size = v16;
                }
            }
            (common::QUEUE_MSIX_VECTOR, Word) => {
                let vector = self.vector_or_none(v16);
                if let Some(q) = self.queues.get_mut(usize::from(self.queue_select)) {
                    q.msix_vector = vector;
                }
            }
            (common::QUEUE_ENABLE, Word) if v16 == 1 => {
                let event_idx = self.driver_features & feature::RING_EVENT_IDX != 0;
                if let Some(q) = self.configurable_queue() {
                    q.check_layout()?;
                    q.event_idx = event_idx;
                    q.enabled = true;
                }
            }
            (common::QUEUE_DESC..0x38, Dword | Qword) if offset.is_multiple_of(4) => {
                let field = offset & !7;
                let high = offset & 4 != 0;
                if let Some(q) = self.configurable_queue() {
                    let slot = match field {
                        common::QUEUE_DESC => &mut q.desc,
                        common::QUEUE_DRIVER => &mut q.driver,
                        _ => &mut q.device,
                    };
                    *slot = match (size, high) {
                        (Qword, _) => value,
                        (_, false) => (*slot & !0xFFFF_FFFF) | u64::from(v32),
                        (_, true) => (*slot & 0xFFFF_FFFF) | (u64::from(v32) << 32),
                    };
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A read of the BAR at `offset`.
    pub fn bar_read(&mut self, offset: u64, size: AccessSize) -> u64 {
        let in_range = |start: u64, len: u64| offset.checked_sub(start).filter(|o| *o < len);
        if let Some(o) = in_range(COMMON_OFFSET, COMMON_LEN) {
            self.common_read(o, size)
        } else if in_range(ISR_OFFSET, ISR_LEN).is_some() {
            // Reading the ISR clears it and deasserts INTA# (§4.1.4.5).
            u64::from(core::mem::take(&mut self.isr))
        } else if let Some(o) = in_range(DEVICE_OFFSET, self.device_config.len() as u64) {
            let mut value = 0u64;
            for i in 0..u64::from(size.bytes()) {
                let at = usize::try_from(o.saturating_add(i)).unwrap_or(usize::MAX);
                value |= u64::from(self.device_config.get(at).copied().unwrap_or(0)) << i.wrapping_mul(8);
            }
            value
        } else if let Some(o) = in_range(MSIX_TABLE_OFFSET, self.msix.table_len()) {
            if size == AccessSize::Qword {
                let lo = self.msix.table_read(o, AccessSize::Dword);
                let hi = self.msix.table_read(o.saturating_add(4), AccessSize::Dword);
                u64::from(hi) << 32 | u64::from(lo)
            } else {
                u64::from(self.msix.table_read(o, size))
            }
        } else if let Some(o) = in_range(MSIX_PBA_OFFSET, 8) {
            self.msix.pba_read(o, size)
        } else {
            0
        }
    }

    /// A write of the BAR at `offset`. A queue error means the driver enabled a queue
    /// it laid out wrongly; the caller fails the device with it.
    pub fn bar_write(&mut self, offset: u64, size: AccessSize, value: u64) -> Result<(), QueueError> {
        let in_range = |start: u64, len: u64| offset.checked_sub(start).filter(|o| *o < len);
        let notify_len = (self.queues.len() as u64).wrapping_mul(u64::from(NOTIFY_MULTIPLIER));
        if let Some(o) = in_range(COMMON_OFFSET, COMMON_LEN) {
            return self.common_write(o, size, value);
        }
        if let Some(o) = in_range(NOTIFY_OFFSET, notify_len) {
            let queue = o.checked_div(u64::from(NOTIFY_MULTIPLIER)).unwrap_or(u64::MAX);
            self.notified |= 1u32.checked_shl(queue as u32).unwrap_or(0);
        } else if let Some(o) = in_range(MSIX_TABLE_OFFSET, self.msix.table_len()) {
            if size == AccessSize::Qword {
                self.msix.table_write(o, AccessSize::Dword, value as u32);
                self.msix.table_write(o.saturating_add(4), AccessSize::Dword, (value >> 32) as u32);
            } else {
                self.msix.table_write(o, size, value as u32);
            }
        }
        Ok(())
    }

    pub fn config_read(&self, offset: u16, size: AccessSize) -> u32 {
        self.config.read(offset, size)
    }

    pub fn config_write(&mut self, offset: u16, size: AccessSize, value: u32) {
        self.config.write(offset, size, value);
    }

    pub fn bars(&self) -> Vec<BarRegion> {
        self.config.bar_regions()
    }

    /// Where the guest programmed the BAR, if memory decoding is on (the MMIO path's
    /// check, without building the BAR list).
    pub fn bar_decoded_at(&self) -> Option<u64> {
        let offset = BAR0.wrapping_add(u16::from(BAR_INDEX).wrapping_mul(4));
        (self.config.command() & CMD_MEMORY != 0).then(|| u64::from(self.config.u32_at(offset) & !0xF))
    }
}

#[cfg(test)]
mod tests;
