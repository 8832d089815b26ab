//! kvmclock: the paravirtual clock that Linux's KVM guest code uses when CPUID offers a
//! "KVMKVMKVM" leaf with `KVM_FEATURE_CLOCKSOURCE2`. The guest hands the hypervisor two
//! guest-physical addresses through MSRs, and the hypervisor keeps time records there:
//!
//! - `MSR_KVM_WALL_CLOCK_NEW` (0x4b56_4d00): the guest writes the GPA of a
//!   `struct pvclock_wall_clock { u32 version; u32 sec; u32 nsec; }`; the hypervisor
//!   stores the wall-clock time at which the guest's system time was zero.
//! - `MSR_KVM_SYSTEM_TIME_NEW` (0x4b56_4d01): the guest writes `GPA | 1` (bit 0 enables)
//!   of a per-vCPU `struct pvclock_vcpu_time_info` (32 bytes, layout below); the
//!   hypervisor publishes `(tsc_timestamp, system_time, tsc_to_system_mul, tsc_shift)`
//!   and the guest computes nanoseconds as
//!   `system_time + pvclock_scale_delta(rdtsc() - tsc_timestamp, mul, shift)`.
//!
//! Both records use the version protocol: the writer makes `version` odd, writes the
//! body, then makes it even again; readers retry while it is odd or changed
//! (arch/x86/include/asm/pvclock.h, `pvclock_read_begin`/`pvclock_read_retry`).
//!
//! What Linux 6.1 does with it (arch/x86/kernel/kvm.c, kvmclock.c, pvclock.c):
//! - `kvm_para_available()` finds the signature at the first 0x100 step from
//!   0x4000_0000 that carries it, and the feature word one leaf above.
//! - With `CLOCKSOURCE2` it uses the `_NEW` MSRs, writes `MSR_KVM_SYSTEM_TIME_NEW` with
//!   a plain `wrmsrl` (a #GP is only reported, then the zeroed record is read) and reads
//!   the record back at once: `pvclock_tsc_khz()` divides by `tsc_to_system_mul`, so
//!   the record must be valid when the WRMSR returns. This module writes it during the
//!   MSR write for that reason.
//! - The TSC frequency comes from the record (`x86_platform.calibrate_tsc =
//!   kvm_get_tsc_khz`, which also sets `X86_FEATURE_TSC_KNOWN_FREQ`): no PIT
//!   calibration.
//! - With `CLOCKSOURCE_STABLE_BIT` the guest honours `PVCLOCK_TSC_STABLE_BIT` in
//!   `flags`: it skips its cross-CPU monotonicity fix-up and lets the vDSO read the
//!   clock without a system call.
//! - Disabling writes 0 to the system-time MSR (CPU offline, kexec, shutdown, suspend).
//!
//! This module is pure: guest memory goes through [`GuestMemoryAccess`] and the
//! current time comes from the caller. Nothing a guest writes can make it panic.
#![forbid(unsafe_code)]

use core::fmt;
use core::sync::atomic::{Ordering, fence};

use crate::memory::addr::{GuestPhysAddr, PAGE_SIZE};
use crate::memory::guest::{GuestMemoryAccess, GuestMemoryError, read_obj, write_obj};

/// `MSR_KVM_WALL_CLOCK_NEW` (Documentation/virt/kvm/x86/msr.rst).
pub const MSR_KVM_WALL_CLOCK_NEW: u32 = crate::hw::msr::KVM_WALL_CLOCK_NEW;
/// `MSR_KVM_SYSTEM_TIME_NEW` (Documentation/virt/kvm/x86/msr.rst).
pub const MSR_KVM_SYSTEM_TIME_NEW: u32 = crate::hw::msr::KVM_SYSTEM_TIME_NEW;

/// KVM paravirtual feature bits, CPUID 0x4000_0001 EAX relative to the KVM base
/// (Documentation/virt/kvm/x86/cpuid.rst).
pub mod feature {
    /// Port 0x80 delays are not needed: the guest's `io_delay` becomes a no-op.
    pub const NOP_IO_DELAY: u32 = 1 << 1;
    /// kvmclock through MSRs 0x4b56_4d00/0x4b56_4d01.
    pub const CLOCKSOURCE2: u32 = 1 << 3;
    /// Paravirtual EOI through MSR 0x4b56_4d04 ([`crate::vcpu::pv_eoi`]).
    pub const PV_EOI: u32 = 1 << 6;
    /// The guest may trust `PVCLOCK_TSC_STABLE_BIT` in the time info.
    pub const CLOCKSOURCE_STABLE_BIT: u32 = 1 << 24;
}

/// What the hypervisor implements: kvmclock, the stable bit, paravirtual EOI and the
/// I/O-delay hint (which asks nothing of the host; it only saves the guest a trapped
/// port 0x80 write per delayed legacy I/O access). No steal time, async page faults,
/// PV TLB flush or PV IPIs.
pub const KVM_FEATURES: u32 =
    feature::NOP_IO_DELAY | feature::CLOCKSOURCE2 | feature::PV_EOI | feature::CLOCKSOURCE_STABLE_BIT;

/// `pvclock_vcpu_time_info.flags`: the TSC is synchronised across vCPUs, so the
/// guest need not keep a global monotonic maximum.
pub const PVCLOCK_TSC_STABLE_BIT: u8 = 1 << 0;
/// `pvclock_vcpu_time_info.flags`: the VM was paused; the guest touches its soft
/// lockup watchdogs and clears the bit.
pub const PVCLOCK_GUEST_STOPPED: u8 = 1 << 1;

/// Bit 0 of `MSR_KVM_SYSTEM_TIME_NEW` enables the time info.
const SYSTEM_TIME_ENABLE: u64 = 1;
/// Size of `struct pvclock_vcpu_time_info`.
pub const TIME_INFO_SIZE: usize = 32;
/// Size of `struct pvclock_wall_clock`.
pub const WALL_CLOCK_SIZE: usize = 12;
/// Offsets in `struct pvclock_vcpu_time_info` (arch/x86/include/asm/pvclock-abi.h):
/// `u32 version; u32 pad0; u64 tsc_timestamp; u64 system_time; u32 tsc_to_system_mul;
/// s8 tsc_shift; u8 flags; u8 pad[2];`
mod time_info {
    pub const TSC_TIMESTAMP: usize = 8;
    pub const SYSTEM_TIME: usize = 16;
    pub const MUL: usize = 24;
    pub const SHIFT: usize = 28;
    pub const FLAGS: usize = 29;
}
/// Offsets in `struct pvclock_wall_clock`: `u32 version; u32 sec; u32 nsec;`
mod wall_clock {
    pub const SEC: usize = 4;
    pub const NSEC: usize = 8;
}
/// Both records start with the `u32 version`.
const VERSION_BYTES: usize = 4;
const NSEC_PER_SEC: u64 = 1_000_000_000;
/// Frequencies below this are rejected: the left shift a slow clock needs would
/// overflow the guest's 64-bit delta after a few centuries of uptime at 1 MHz.
pub const MIN_TSC_HZ: u64 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PvClockError {
    /// The TSC frequency (Hz) is zero or below [`MIN_TSC_HZ`].
    BadFrequency(u64),
    /// The MSR is not one of the two kvmclock MSRs.
    UnknownMsr(u32),
    /// The GPA has bits set above the physical address width, or the time info would
    /// straddle a page boundary.
    BadAddress(u64),
    /// Guest memory refused the access (not RAM, or the record crosses regions).
    Memory(GuestMemoryError),
}

impl fmt::Display for PvClockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PvClockError::BadFrequency(hz) => write!(f, "TSC frequency {hz} Hz cannot drive kvmclock"),
            PvClockError::UnknownMsr(msr) => write!(f, "MSR {msr:#x} is not a kvmclock MSR"),
            PvClockError::BadAddress(gpa) => write!(f, "kvmclock record address {gpa:#x} is invalid"),
            PvClockError::Memory(e) => write!(f, "kvmclock record not in guest RAM: {e:?}"),
        }
    }
}

impl From<GuestMemoryError> for PvClockError {
    fn from(e: GuestMemoryError) -> Self {
        PvClockError::Memory(e)
    }
}

/// A TSC-to-nanoseconds conversion in the guest's fixed-point form:
/// `ns = ((delta << shift) * mul) >> 32`, with a right shift when `shift` is negative
/// (`pvclock_scale_delta`, arch/x86/include/asm/pvclock.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TscScale {
    pub mul: u32,
    pub shift: i8,
}

impl TscScale {
    /// The scale for a TSC of `tsc_hz`. `mul / 2^32` is kept in [0.5, 1) for the most
    /// precision, and the shift is the smallest that allows it; TSCs above 1 GHz get a
    /// right shift, so the guest's delta never overflows on the left.
    pub fn for_frequency(tsc_hz: u64) -> Result<TscScale, PvClockError> {
        if tsc_hz < MIN_TSC_HZ {
            return Err(PvClockError::BadFrequency(tsc_hz));
        }
        let ns = u128::from(NSEC_PER_SEC);
        let hz = u128::from(tsc_hz);
        // ratio(shift) = 1e9 / (hz * 2^shift), compared as a fraction in u128: both
        // sides stay below 2^128 because |shift| < 64 and hz < 2^64. With
        // hz >= 1e6 the shift ends up within -35..=10.
        let scaled_hz = |shift: i32| -> (u128, u128) {
            let by = shift.unsigned_abs();
            if shift >= 0 {
                (ns, hz.checked_shl(by).unwrap_or(u128::MAX))
            } else {
                (ns.checked_shl(by).unwrap_or(u128::MAX), hz)
            }
        };
        let mut shift: i32 = 0;
        // Raise the shift until the ratio is below 1 ...
        while shift < 64 {
            let (n, d) = scaled_hz(shift);
            if n < d {
                break;
            }
            shift = shift.saturating_add(1);
        }
        // ... and lower it while the ratio is below 1/2.
        while shift > -64 {
            let (n, d) = scaled_hz(shift);
            if n.saturating_mul(2) >= d {
                break;
            }
            shift = shift.saturating_sub(1);
        }
        let (n, d) = scaled_hz(shift);
        let mul = n.checked_shl(32).and_then(|n| n.checked_div(d)).ok_or(PvClockError::BadFrequency(tsc_hz))?;
        let mul = u32::try_from(mul).map_err(|_| PvClockError::BadFrequency(tsc_hz))?;
        let shift = i8::try_from(shift).map_err(|_| PvClockError::BadFrequency(tsc_hz))?;
        Ok(TscScale { mul, shift })
    }

    /// `pvclock_scale_delta()` exactly as the guest computes it: the shift drops bits
    /// (left shifts wrap like C's `u64 <<`), then a 64x32-bit multiply keeps bits 95:32.
    pub fn scale_delta(self, delta: u64) -> u64 {
        let shifted = if self.shift < 0 {
            delta.checked_shr(u32::from(self.shift.unsigned_abs())).unwrap_or(0)
        } else {
            delta.checked_shl(u32::from(self.shift.unsigned_abs())).unwrap_or(0)
        };
        let product = u128::from(shifted).saturating_mul(u128::from(self.mul)) >> 32;
        u64::try_from(product).unwrap_or(u64::MAX)
    }

    /// The TSC frequency the guest derives from this scale (`pvclock_tsc_khz()`).
    pub fn guest_tsc_khz(self) -> u64 {
        let khz = (1_000_000u64 << 32).checked_div(u64::from(self.mul)).unwrap_or(0);
        let by = u32::from(self.shift.unsigned_abs());
        if self.shift < 0 { khz.checked_shl(by).unwrap_or(0) } else { khz.checked_shr(by).unwrap_or(0) }
    }
}

/// Wall-clock time: seconds and nanoseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WallClock {
    pub sec: u64,
    pub nsec: u32,
}

impl WallClock {
    fn as_ns(self) -> u128 {
        u128::from(self.sec).saturating_mul(u128::from(NSEC_PER_SEC)).saturating_add(u128::from(self.nsec))
    }
}

/// How a VM's kvmclock relates to its TSC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PvClockConfig {
    /// The guest TSC frequency in Hz.
    pub tsc_hz: u64,
    /// Whether every vCPU's TSC runs from the same invariant clock with the same offset
    /// (sets `PVCLOCK_TSC_STABLE_BIT`). Give every vCPU of a VM the same value.
    pub tsc_stable: bool,
    /// The guest TSC value at which the VM's system time is zero (typically the guest
    /// TSC at VM start). Give every vCPU of a VM the same value so their clocks agree.
    pub epoch_tsc: u64,
}

/// One vCPU's kvmclock state. All `guest_tsc` arguments are the guest's TSC (host TSC
/// plus the vCPU's offset) at the moment of the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvClock {
    scale: TscScale,
    tsc_stable: bool,
    epoch_tsc: u64,
    /// The last values written to the two MSRs (RDMSR returns them).
    wall_clock_msr: u64,
    system_time_msr: u64,
    /// Where the time info lives while the guest has it enabled.
    time_info: Option<GuestPhysAddr>,
    /// The last `(tsc, ns)` pair published. Later records extend it with the guest's
    /// own formula, so the clock the guest sees never steps backwards at a refresh.
    anchor: Option<(u64, u64)>,
    /// Version of the last time info written (even).
    version: u32,
    /// Report `PVCLOCK_GUEST_STOPPED` with the next record.
    stopped: bool,
}

impl PvClock {
    pub fn new(config: PvClockConfig) -> Result<PvClock, PvClockError> {
        Ok(PvClock {
            scale: TscScale::for_frequency(config.tsc_hz)?,
            tsc_stable: config.tsc_stable,
            epoch_tsc: config.epoch_tsc,
            wall_clock_msr: 0,
            system_time_msr: 0,
            time_info: None,
            anchor: None,
            version: 0,
            stopped: false,
        })
    }

    pub fn scale(&self) -> TscScale {
        self.scale
    }

    /// The time info GPA while the guest has kvmclock enabled on this vCPU.
    pub fn time_info_gpa(&self) -> Option<GuestPhysAddr> {
        self.time_info
    }

    /// Whether `msr` is one of the kvmclock MSRs.
    pub fn handles(msr: u32) -> bool {
        matches!(msr, MSR_KVM_WALL_CLOCK_NEW | MSR_KVM_SYSTEM_TIME_NEW)
    }

    /// The guest's system time (ns since [`PvClockConfig::epoch_tsc`]) at `guest_tsc`,
    /// as the guest itself would compute it from the last record.
    pub fn system_time_ns(&self, guest_tsc: u64) -> u64 {
        match self.anchor {
            Some((tsc, ns)) => ns.saturating_add(self.scale.scale_delta(guest_tsc.saturating_sub(tsc))),
            None => self.scale.scale_delta(guest_tsc.saturating_sub(self.epoch_tsc)),
        }
    }

    /// RDMSR: the value last written.
    pub fn read_msr(&self, msr: u32) -> Result<u64, PvClockError> {
        match msr {
            MSR_KVM_WALL_CLOCK_NEW => Ok(self.wall_clock_msr),
            MSR_KVM_SYSTEM_TIME_NEW => Ok(self.system_time_msr),
            _ => Err(PvClockError::UnknownMsr(msr)),
        }
    }

    /// WRMSR. On error nothing was stored and the caller injects #GP(0).
    ///
    /// - Wall clock: writes the wall-clock time at system time zero (`wall_clock` is
    ///   the current time of day) to the GPA in `value`.
    /// - System time: bit 0 set enables the record at `value & !1` and writes it now;
    ///   bit 0 clear disables it (the hypervisor stops writing there).
    pub fn write_msr(
        &mut self,
        msr: u32,
        value: u64,
        mem: &mut (impl GuestMemoryAccess + ?Sized),
        guest_tsc: u64,
        wall_clock: WallClock,
    ) -> Result<(), PvClockError> {
        match msr {
            MSR_KVM_WALL_CLOCK_NEW => {
                let gpa = checked_gpa(value)?;
                self.write_wall_clock(mem, gpa, guest_tsc, wall_clock)?;
                self.wall_clock_msr = value;
            }
            MSR_KVM_SYSTEM_TIME_NEW => {
                if value & SYSTEM_TIME_ENABLE == 0 {
                    self.time_info = None;
                } else {
                    let gpa = checked_gpa(value & !SYSTEM_TIME_ENABLE)?;
                    if gpa.page_offset().saturating_add(TIME_INFO_SIZE as u64) > PAGE_SIZE {
                        return Err(PvClockError::BadAddress(gpa.raw()));
                    }
                    // Fail before changing anything if the record is not all in RAM.
                    mem.read_bytes(gpa, &mut [0u8; TIME_INFO_SIZE])?;
                    self.time_info = Some(gpa);
                    self.refresh(mem, guest_tsc)?;
                }
                self.system_time_msr = value;
            }
            _ => return Err(PvClockError::UnknownMsr(msr)),
        }
        Ok(())
    }

    /// Marks the VM as having been paused: the next record carries
    /// `PVCLOCK_GUEST_STOPPED` so the guest does not report soft lockups.
    pub fn note_guest_stopped(&mut self) {
        self.stopped = true;
    }

    /// Rewrites the time info (no-op while disabled). Needed after the guest TSC
    /// changes (WRMSR to IA32_TSC, a new TSC offset), after a pause to report it, and
    /// periodically when the TSC is not stable. With a stable TSC one record lasts for
    /// the life of the VM.
    pub fn refresh(&mut self, mem: &mut (impl GuestMemoryAccess + ?Sized), guest_tsc: u64) -> Result<(), PvClockError> {
        let Some(gpa) = self.time_info else {
            return Ok(());
        };
        let system_time = self.system_time_ns(guest_tsc);
        let mut flags = if self.tsc_stable { PVCLOCK_TSC_STABLE_BIT } else { 0 };
        if self.stopped {
            flags |= PVCLOCK_GUEST_STOPPED;
        }
        let mut body = [0u8; TIME_INFO_SIZE];
        put(&mut body, time_info::TSC_TIMESTAMP, &guest_tsc.to_le_bytes());
        put(&mut body, time_info::SYSTEM_TIME, &system_time.to_le_bytes());
        put(&mut body, time_info::MUL, &self.scale.mul.to_le_bytes());
        put(&mut body, time_info::SHIFT, &self.scale.shift.to_le_bytes());
        put(&mut body, time_info::FLAGS, &[flags]);
        let odd = self.version.wrapping_add(1);
        let even = self.version.wrapping_add(2);
        write_versioned(mem, gpa, odd, body.get(VERSION_BYTES..).unwrap_or(&[]), even)?;
        self.version = even;
        self.anchor = Some((guest_tsc, system_time));
        self.stopped = false;
        Ok(())
    }

    fn write_wall_clock(
        &self,
        mem: &mut (impl GuestMemoryAccess + ?Sized),
        gpa: GuestPhysAddr,
        guest_tsc: u64,
        now: WallClock,
    ) -> Result<(), PvClockError> {
        // The guest adds its system time to this, so store "now - system time".
        let boot_ns = now.as_ns().saturating_sub(u128::from(self.system_time_ns(guest_tsc)));
        // `sec` is a u32 in the ABI: times after 2106 saturate.
        let sec = u32::try_from(boot_ns.checked_div(u128::from(NSEC_PER_SEC)).unwrap_or(0)).unwrap_or(u32::MAX);
        let nsec = u32::try_from(boot_ns.checked_rem(u128::from(NSEC_PER_SEC)).unwrap_or(0)).unwrap_or(0);
        let mut body = [0u8; WALL_CLOCK_SIZE];
        put(&mut body, wall_clock::SEC, &sec.to_le_bytes());
        put(&mut body, wall_clock::NSEC, &nsec.to_le_bytes());
        // Fail before writing anything if the record is not all in RAM.
        mem.read_bytes(gpa, &mut [0u8; WALL_CLOCK_SIZE])?;
        // The record is guest memory the guest may have touched: continue from the
        // version found there, as KVM does (`kvm_write_wall_clock`).
        let version: u32 = read_obj(mem, gpa)?;
        let odd = if version & 1 == 0 { version.wrapping_add(1) } else { version.wrapping_add(2) };
        write_versioned(mem, gpa, odd, body.get(VERSION_BYTES..).unwrap_or(&[]), odd.wrapping_add(1))?;
        Ok(())
    }
}

/// Rejects addresses above the 52-bit architectural physical address limit.
fn checked_gpa(value: u64) -> Result<GuestPhysAddr, PvClockError> {
    if value >> 52 != 0 {
        return Err(PvClockError::BadAddress(value));
    }
    Ok(GuestPhysAddr::new(value))
}

fn put(buf: &mut [u8], offset: usize, bytes: &[u8]) {
    let end = offset.saturating_add(bytes.len());
    if let Some(dst) = buf.get_mut(offset..end) {
        dst.copy_from_slice(bytes);
    }
}

/// The version protocol: odd version, the body (everything after the version),
/// even version, with the stores kept in that order. Another vCPU may be reading the
/// record (the vDSO reads vCPU 0's), so the fences keep the compiler from reordering
/// the stores; x86 keeps stores in program order.
fn write_versioned(
    mem: &mut (impl GuestMemoryAccess + ?Sized),
    gpa: GuestPhysAddr,
    odd: u32,
    body: &[u8],
    even: u32,
) -> Result<(), PvClockError> {
    let body_gpa = gpa.checked_add(VERSION_BYTES as u64).ok_or(PvClockError::BadAddress(gpa.raw()))?;
    write_obj(mem, gpa, odd)?;
    fence(Ordering::Release);
    mem.write_bytes(body_gpa, body)?;
    fence(Ordering::Release);
    write_obj(mem, gpa, even)?;
    Ok(())
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation
)]
mod tests;
