//! Paravirtual end-of-interrupt (`KVM_FEATURE_PV_EOI`), as Linux's KVM guest code uses
//! it (Documentation/virt/kvm/x86/msr.rst, `MSR_KVM_PV_EOI_EN`).
//!
//! The guest writes `GPA | 1` of a 4-byte flag in its RAM to MSR 0x4b56_4d04. Before
//! entering the guest, the hypervisor sets bit 0 of the flag when the guest's next EOI
//! can be taken without an exit; the guest's EOI routine then clears the bit instead of
//! writing the EOI register (`kvm_guest_apic_eoi_write`). After the next exit the
//! hypervisor reads the flag back: cleared means the guest has signalled EOI, and the
//! hypervisor retires the interrupt; still set means it has not, and the hypervisor
//! clears it so the guest's eventual EOI goes through the register as usual.
//!
//! An EOI always retires the highest in-service vector, so the flag is offered only
//! while that is true of the next EOI and skipping its exit loses nothing: a vector is
//! in service, none is waiting in IRR (a real EOI exit lets it be delivered at once)
//! and the in-service vector is edge-triggered (a level EOI must reach the IOAPIC).
//! This is the rule of Linux's own hypervisor (`apic_sync_pv_eoi_to_guest`).
//!
//! Saves one exit per interrupt: with a tickless idle guest, one of the three exits
//! each timer wake-up costs (EOI, the next deadline, HLT).
#![forbid(unsafe_code)]

use crate::devices::vlapic::EoiOutlook;
use crate::memory::addr::GuestPhysAddr;
use crate::memory::guest::{GuestMemoryAccess, GuestMemoryError};

/// `MSR_KVM_PV_EOI_EN`.
pub const MSR_KVM_PV_EOI_EN: u32 = crate::hw::msr::KVM_PV_EOI_EN;
const ENABLE: u64 = 1 << 0;
/// Bit 1 is reserved; bits 63:2 hold a 4-byte aligned address.
const RESERVED: u64 = 1 << 1;
/// Bit 0 of the flag: "you may skip the EOI write".
const SKIP_EOI: u8 = 1;

/// Why a write of `MSR_KVM_PV_EOI_EN` was refused (the guest gets #GP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PvEoiError {
    /// Reserved bit set.
    Reserved(u64),
    /// The flag is not in the VM's RAM.
    NotInRam(GuestMemoryError),
}

/// One vCPU's paravirtual EOI state.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PvEoi {
    msr: u64,
    flag: Option<GuestPhysAddr>,
    /// The hypervisor set the flag before the last entry.
    offered: bool,
    /// EOIs taken through the flag (for the exit statistics).
    skipped_exits: u64,
}

impl PvEoi {
    pub fn read_msr(&self) -> u64 {
        self.msr
    }

    /// WRMSR `MSR_KVM_PV_EOI_EN`. On error nothing changes and the guest gets #GP.
    pub fn write_msr(&mut self, value: u64, mem: &mut (impl GuestMemoryAccess + ?Sized)) -> Result<(), PvEoiError> {
        if value & RESERVED != 0 {
            return Err(PvEoiError::Reserved(value));
        }
        if value & ENABLE == 0 {
            self.flag = None;
            self.offered = false;
        } else {
            let gpa = GuestPhysAddr::new(value & !3);
            // The guest promises a zeroed flag; make sure it is RAM and starts clear.
            mem.write_bytes(gpa, &[0u8; 4]).map_err(PvEoiError::NotInRam)?;
            self.flag = Some(gpa);
            self.offered = false;
        }
        self.msr = value;
        Ok(())
    }

    /// After an exit: whether the guest signalled EOI through the flag since the last
    /// entry (the caller then retires the in-service vector). Withdraws the offer.
    pub fn take_guest_eoi(&mut self, mem: &mut (impl GuestMemoryAccess + ?Sized)) -> bool {
        if !self.offered {
            return false;
        }
        self.offered = false;
        let Some(gpa) = self.flag else { return false };
        let mut byte = [0u8];
        if mem.read_bytes(gpa, &mut byte).is_err() {
            self.flag = None;
            return false;
        }
        if byte[0] & SKIP_EOI != 0 {
            // Not used: the guest's EOI will come through the register.
            if mem.write_bytes(gpa, &[byte[0] & !SKIP_EOI]).is_err() {
                self.flag = None;
            }
            return false;
        }
        self.skipped_exits = self.skipped_exits.saturating_add(1);
        true
    }

    /// Before an entry: offers the flag if the next EOI may skip its exit.
    pub fn offer(&mut self, outlook: EoiOutlook, mem: &mut (impl GuestMemoryAccess + ?Sized)) {
        let Some(gpa) = self.flag else { return };
        if self.offered || !outlook.allows_skipping() {
            return;
        }
        let mut byte = [0u8];
        if mem.read_bytes(gpa, &mut byte).is_err() || mem.write_bytes(gpa, &[byte[0] | SKIP_EOI]).is_err() {
            self.flag = None;
            return;
        }
        self.offered = true;
    }

    /// Whether the guest turned paravirtual EOI on.
    pub fn enabled(&self) -> bool {
        self.flag.is_some()
    }

    /// EOIs the guest signalled through the flag so far.
    pub fn skipped_exits(&self) -> u64 {
        self.skipped_exits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    /// Guest RAM at GPA 0.
    struct VecMemory(Vec<u8>);

    impl VecMemory {
        fn new(len: usize) -> VecMemory {
            VecMemory(vec![0; len])
        }
        fn range(&self, gpa: GuestPhysAddr, len: usize) -> Result<core::ops::Range<usize>, GuestMemoryError> {
            let start = usize::try_from(gpa.raw()).unwrap();
            match start.checked_add(len) {
                Some(end) if end <= self.0.len() => Ok(start..end),
                _ => Err(GuestMemoryError::NotMapped { gpa }),
            }
        }
    }

    impl GuestMemoryAccess for VecMemory {
        fn read_bytes(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> Result<(), GuestMemoryError> {
            let r = self.range(gpa, buf.len())?;
            buf.copy_from_slice(&self.0[r]);
            Ok(())
        }
        fn write_bytes(&mut self, gpa: GuestPhysAddr, data: &[u8]) -> Result<(), GuestMemoryError> {
            let r = self.range(gpa, data.len())?;
            self.0[r].copy_from_slice(data);
            Ok(())
        }
        fn is_ram(&self, gpa: GuestPhysAddr) -> bool {
            self.range(gpa, 1).is_ok()
        }
    }

    const FLAG: u64 = 0x2000;
    const ONE_EDGE: EoiOutlook = EoiOutlook { in_service: true, requested: false, level: false };

    fn enabled(mem: &mut VecMemory) -> PvEoi {
        let mut p = PvEoi::default();
        p.write_msr(FLAG | 1, mem).unwrap();
        p
    }

    fn flag(mem: &VecMemory) -> u8 {
        let mut b = [0u8];
        mem.read_bytes(GuestPhysAddr::new(FLAG), &mut b).unwrap();
        b[0]
    }

    #[test]
    fn guest_clearing_the_flag_is_an_eoi() {
        let mut mem = VecMemory::new(0x4000);
        let mut p = enabled(&mut mem);
        p.offer(ONE_EDGE, &mut mem);
        assert_eq!(flag(&mem), 1, "offered");
        // The guest's EOI routine: test-and-clear.
        mem.write_bytes(GuestPhysAddr::new(FLAG), &[0]).unwrap();
        assert!(p.take_guest_eoi(&mut mem));
        assert!(!p.take_guest_eoi(&mut mem), "one EOI per offer");
        assert_eq!(p.skipped_exits(), 1);
    }

    #[test]
    fn an_unused_offer_is_withdrawn() {
        let mut mem = VecMemory::new(0x4000);
        let mut p = enabled(&mut mem);
        p.offer(ONE_EDGE, &mut mem);
        assert!(!p.take_guest_eoi(&mut mem), "the guest has not EOI'd yet");
        assert_eq!(flag(&mem), 0, "its EOI must now go through the register");
    }

    #[test]
    fn offered_only_when_skipping_is_safe() {
        let mut mem = VecMemory::new(0x4000);
        let mut p = enabled(&mut mem);
        for outlook in [
            EoiOutlook { in_service: false, ..ONE_EDGE },
            EoiOutlook { requested: true, ..ONE_EDGE },
            EoiOutlook { level: true, ..ONE_EDGE },
        ] {
            p.offer(outlook, &mut mem);
            assert_eq!(flag(&mem), 0, "{outlook:?}");
            assert!(!p.take_guest_eoi(&mut mem));
        }
    }

    #[test]
    fn disabled_or_bad_addresses_do_nothing() {
        let mut mem = VecMemory::new(0x4000);
        let mut p = PvEoi::default();
        p.offer(ONE_EDGE, &mut mem);
        assert_eq!(flag(&mem), 0);
        assert_eq!(p.write_msr(FLAG | 2 | 1, &mut mem), Err(PvEoiError::Reserved(FLAG | 3)));
        assert!(matches!(p.write_msr(0x10_0000 | 1, &mut mem), Err(PvEoiError::NotInRam(_))));
        assert_eq!(p.read_msr(), 0, "refused writes change nothing");
        let mut p = enabled(&mut mem);
        p.write_msr(0, &mut mem).unwrap();
        p.offer(ONE_EDGE, &mut mem);
        assert_eq!(flag(&mem), 0, "disabled again");
    }
}
