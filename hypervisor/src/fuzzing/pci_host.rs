//! The guest's PCI configuration space: the 0xCF8/0xCFC mechanism (with the 0xCF9
//! reset control) and the ECAM window, reaching the host bridge at 00.0 and absent
//! functions everywhere else.

use super::{Input, MAX_ACCESSES, assert_fits};
use crate::devices::bus::{MmioDevice, PortDevice};
use crate::devices::power::PowerSignal;
use crate::devices::vpci::host_bridge::{HOST_BRIDGE_DEVICE, HOST_BRIDGE_VENDOR, VpciHost};
use crate::hw::{AccessSize, Bdf};

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let signal = PowerSignal::new();
    let mut host = VpciHost::new(u16::from(input.u8().unwrap_or(0)) + 1).with_reset_control(signal.clone());
    let ids = u32::from(HOST_BRIDGE_DEVICE) << 16 | u32::from(HOST_BRIDGE_VENDOR);
    for _ in 0..MAX_ACCESSES {
        let Some(op) = input.u8() else { break };
        let writes_before = host.config_writes();
        match op % 4 {
            0 => {
                let offset = u16::from(op >> 5);
                let size = input.size(false);
                assert_fits(u64::from(PortDevice::read(&mut host, offset, size)), size);
            }
            1 => {
                let offset = u16::from(op >> 5);
                let size = input.size(false);
                // Mostly enabled addresses for function 00.0 or its neighbours.
                let value = match (offset, op & 0x10) {
                    (0, 0) => 0x8000_0000 | (input.u32() & 0x0f00_18fc),
                    _ => input.value(size) as u32,
                };
                PortDevice::write(&mut host, offset, size, value);
            }
            2 => {
                let offset = input.u32() as u64 | u64::from(input.u8().unwrap_or(0) & 0x1f) << 32;
                let size = input.size(true);
                assert_fits(MmioDevice::read(&mut host, offset, size), size);
            }
            _ => {
                let offset = input.u32() as u64 | u64::from(input.u8().unwrap_or(0) & 0x1f) << 32;
                let size = input.size(true);
                let value = input.value(size);
                MmioDevice::write(&mut host, offset, size, value);
            }
        }
        host.settle();
        let _ = signal.take();
        // A quadword ECAM write is two configuration writes; nothing else is more.
        assert!(host.config_writes().wrapping_sub(writes_before) <= 2);
        assert_eq!(host.config_read(Bdf::new(0, 0, 0, 0), 0, AccessSize::Dword), ids, "host bridge IDs changed");
        assert_eq!(host.config_read(Bdf::new(0, 0, 31, 7), 0, AccessSize::Dword), u32::MAX, "absent function answered");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_accesses() {
        super::super::Prng::new(0xcf8).drive(3000, 256, super::run);
    }
}
