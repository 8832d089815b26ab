use super::*;
use crate::memory::addr::HostPhysAddr;
use crate::memory::guest::{GuestMemory, GuestMemoryMap, GuestRegion, Perms, VecHostMemory};
use alloc::vec;

const GHZ: u64 = 1_000_000_000;
const EPOCH: u64 = 1_000_000;

/// The exact conversion the scale approximates.
fn exact_ns(delta: u64, hz: u64) -> u128 {
    u128::from(delta) * u128::from(NSEC_PER_SEC) / u128::from(hz)
}

/// A transliteration of KVM's `kvm_get_time_scale(NSEC_PER_SEC, hz)` (arch/x86/kvm/x86.c),
/// used as an independent cross-check of the shift choice.
fn kvm_reference(hz: u64) -> (u32, i8) {
    let mut scaled: u64 = NSEC_PER_SEC;
    let mut tps64 = hz;
    let mut shift: i32 = 0;
    while tps64 > scaled * 2 || tps64 & 0xffff_ffff_0000_0000 != 0 {
        tps64 >>= 1;
        shift -= 1;
    }
    let mut tps32 = tps64 as u32;
    while u64::from(tps32) <= scaled || scaled & 0xffff_ffff_0000_0000 != 0 {
        if scaled & 0xffff_ffff_0000_0000 != 0 || tps32 & 0x8000_0000 != 0 {
            scaled >>= 1;
        } else {
            tps32 <<= 1;
        }
        shift += 1;
    }
    (((scaled << 32) / u64::from(tps32)) as u32, shift as i8)
}

/// Frequencies from a slow embedded TSC to far beyond any real one, plus awkward values.
fn frequencies() -> Vec<u64> {
    let mut f = vec![
        MIN_TSC_HZ,
        14_318_180,
        100_000_000,
        GHZ - 1,
        GHZ,
        GHZ + 1,
        1_600_000_000,
        2_112_000_000,
        2_419_199_000,
        2_899_999_999,
        3_000_000_000,
        3_500_000_123,
        4_294_967_295,
        4_294_967_296,
        5_000_000_000,
        10 * GHZ,
        u64::MAX,
    ];
    // A deterministic spread over 1 MHz .. 20 GHz.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        f.push(MIN_TSC_HZ + x % (20 * GHZ));
    }
    f
}

#[test]
fn scale_keeps_mul_normalised_and_matches_kvm_shift() {
    for hz in frequencies() {
        let s = TscScale::for_frequency(hz).unwrap();
        assert!(s.mul >= 1 << 31, "{hz}: mul {:#x} not normalised", s.mul);
        let (kvm_mul, kvm_shift) = kvm_reference(hz);
        assert_eq!(s.shift, kvm_shift, "{hz}");
        // KVM truncates the frequency while shifting it, so its mul can be a little off.
        let diff = i64::from(s.mul) - i64::from(kvm_mul);
        assert!(diff.unsigned_abs() <= u64::from(s.mul) >> 28, "{hz}: {} vs {kvm_mul}", s.mul);
    }
    assert_eq!(TscScale::for_frequency(GHZ).unwrap(), TscScale { mul: 1 << 31, shift: 1 });
    assert_eq!(TscScale::for_frequency(3 * GHZ).unwrap(), TscScale { mul: 0xaaaa_aaaa, shift: -1 });
}

#[test]
fn guest_formula_reproduces_nanoseconds_within_one_ppm() {
    for hz in frequencies() {
        let s = TscScale::for_frequency(hz).unwrap();
        // From one tick to a year of ticks (or as far as 64 bits go).
        let year = u128::from(hz) * 365 * 86_400;
        let mut delta: u128 = 1;
        while delta <= year && delta <= u128::from(u64::MAX >> 1) {
            let d = delta as u64;
            let got = u128::from(s.scale_delta(d));
            let want = exact_ns(d, hz);
            let err = got.abs_diff(want);
            // 1 ppm, plus the ticks a right shift drops (under 1 ns each at > 1 GHz).
            assert!(err * 1_000_000 <= want + 2_000_000, "{hz} Hz, delta {d}: {got} vs {want}");
            delta = delta * 7 + 3;
        }
    }
}

#[test]
fn guest_derives_the_tsc_frequency() {
    for hz in frequencies() {
        let khz = TscScale::for_frequency(hz).unwrap().guest_tsc_khz();
        let want = hz / 1000;
        assert!(khz.abs_diff(want) <= want / 1_000_000 + 1, "{hz}: {khz} kHz");
    }
}

#[test]
fn unusable_frequencies_are_rejected() {
    assert_eq!(TscScale::for_frequency(0), Err(PvClockError::BadFrequency(0)));
    assert_eq!(TscScale::for_frequency(MIN_TSC_HZ - 1), Err(PvClockError::BadFrequency(MIN_TSC_HZ - 1)));
    let cfg = PvClockConfig { tsc_hz: 0, tsc_stable: true, epoch_tsc: 0 };
    assert_eq!(PvClock::new(cfg), Err(PvClockError::BadFrequency(0)));
}

/// Guest RAM: GPA 0..16 KiB.
struct ClockVm {
    map: GuestMemoryMap,
}

impl ClockVm {
    fn new() -> ClockVm {
        let region = GuestRegion::new(GuestPhysAddr::new(0), HostPhysAddr::new(0x10000), 0x4000, Perms::RW).unwrap();
        ClockVm { map: GuestMemoryMap::new(vec![region]).unwrap() }
    }
    fn memory(&self) -> GuestMemory<'_, VecHostMemory> {
        GuestMemory::new(&self.map, VecHostMemory::new(HostPhysAddr::new(0x10000), 0x4000))
    }
}

fn clock(hz: u64, stable: bool) -> PvClock {
    PvClock::new(PvClockConfig { tsc_hz: hz, tsc_stable: stable, epoch_tsc: EPOCH }).unwrap()
}

/// The guest's view of a time info record, decoded as Linux does.
#[derive(Debug)]
struct Record {
    version: u32,
    tsc_timestamp: u64,
    system_time: u64,
    scale: TscScale,
    flags: u8,
}

fn record(mem: &impl GuestMemoryAccess, gpa: u64) -> Record {
    let mut b = [0u8; TIME_INFO_SIZE];
    mem.read_bytes(GuestPhysAddr::new(gpa), &mut b).unwrap();
    Record {
        version: u32::from_le_bytes(b[0..4].try_into().unwrap()),
        tsc_timestamp: u64::from_le_bytes(b[8..16].try_into().unwrap()),
        system_time: u64::from_le_bytes(b[16..24].try_into().unwrap()),
        scale: TscScale { mul: u32::from_le_bytes(b[24..28].try_into().unwrap()), shift: b[28] as i8 },
        flags: b[29],
    }
}

impl Record {
    /// `__pvclock_read_cycles()`.
    fn read(&self, tsc: u64) -> u64 {
        self.system_time + self.scale.scale_delta(tsc - self.tsc_timestamp)
    }
}

const WALL: WallClock = WallClock { sec: 1_767_225_600, nsec: 250_000_000 };

#[test]
fn enabling_system_time_publishes_a_valid_record_at_once() {
    let vm = ClockVm::new();
    let mut mem = vm.memory();
    let hz = 2_419_199_000;
    let mut pv = clock(hz, true);
    let now = EPOCH + 5 * hz;
    pv.write_msr(MSR_KVM_SYSTEM_TIME_NEW, 0x1040 | 1, &mut mem, now, WALL).unwrap();
    assert_eq!(pv.read_msr(MSR_KVM_SYSTEM_TIME_NEW), Ok(0x1041));
    assert_eq!(pv.time_info_gpa(), Some(GuestPhysAddr::new(0x1040)));
    let r = record(&mem, 0x1040);
    assert_eq!(r.version % 2, 0);
    assert_ne!(r.version, 0);
    assert_eq!(r.tsc_timestamp, now);
    assert_eq!(r.scale, pv.scale());
    assert_eq!(r.flags, PVCLOCK_TSC_STABLE_BIT);
    assert!(r.system_time.abs_diff(5 * NSEC_PER_SEC) <= 5, "{}", r.system_time);
    // A minute later the guest's own arithmetic still agrees with the exact time.
    let later = now + 60 * hz;
    let want = exact_ns(later - EPOCH, hz);
    assert!(u128::from(r.read(later)).abs_diff(want) * 1_000_000 <= want);
    // The guest gets its TSC frequency from the record (the division truncates).
    assert!(r.scale.guest_tsc_khz().abs_diff(hz / 1000) <= 1);
}

#[test]
fn unstable_tsc_leaves_the_flag_clear() {
    let vm = ClockVm::new();
    let mut mem = vm.memory();
    let mut pv = clock(3 * GHZ, false);
    pv.write_msr(MSR_KVM_SYSTEM_TIME_NEW, 0x2001, &mut mem, EPOCH, WALL).unwrap();
    assert_eq!(record(&mem, 0x2000).flags, 0);
}

#[test]
fn wall_clock_is_the_time_of_day_at_system_time_zero() {
    let vm = ClockVm::new();
    let mut mem = vm.memory();
    let hz = 3 * GHZ;
    let mut pv = clock(hz, true);
    let now = EPOCH + 90 * hz + hz / 2; // 90.5 s of uptime
    pv.write_msr(MSR_KVM_SYSTEM_TIME_NEW, 0x1001, &mut mem, now, WALL).unwrap();
    pv.write_msr(MSR_KVM_WALL_CLOCK_NEW, 0x3000, &mut mem, now, WALL).unwrap();
    assert_eq!(pv.read_msr(MSR_KVM_WALL_CLOCK_NEW), Ok(0x3000));
    let version: u32 = read_obj(&mem, GuestPhysAddr::new(0x3000)).unwrap();
    let sec: u32 = read_obj(&mem, GuestPhysAddr::new(0x3004)).unwrap();
    let nsec: u32 = read_obj(&mem, GuestPhysAddr::new(0x3008)).unwrap();
    assert_eq!(version, 2);
    // 90.5 s before 00:00:00.25; the scale is good to about 2^-32, 20 ns over 90 s.
    assert_eq!(u64::from(sec), WALL.sec - 91);
    assert!(nsec.abs_diff(750_000_000) < 100, "{nsec}");
    // `pvclock_read_wallclock()`: boot time + system time = now, to the nanosecond.
    let guest_now = u128::from(sec) * 1_000_000_000 + u128::from(nsec) + u128::from(record(&mem, 0x1000).read(now));
    assert!(guest_now.abs_diff(WALL.as_ns()) <= 1);
}

#[test]
fn wall_clock_version_continues_from_guest_memory() {
    let vm = ClockVm::new();
    let mut mem = vm.memory();
    let mut pv = clock(GHZ, true);
    write_obj(&mut mem, GuestPhysAddr::new(0x3000), 7u32).unwrap();
    pv.write_msr(MSR_KVM_WALL_CLOCK_NEW, 0x3000, &mut mem, EPOCH, WALL).unwrap();
    assert_eq!(read_obj::<u32>(&mem, GuestPhysAddr::new(0x3000)).unwrap(), 10);
    write_obj(&mut mem, GuestPhysAddr::new(0x3000), u32::MAX - 1).unwrap();
    pv.write_msr(MSR_KVM_WALL_CLOCK_NEW, 0x3000, &mut mem, EPOCH, WALL).unwrap();
    assert_eq!(read_obj::<u32>(&mem, GuestPhysAddr::new(0x3000)).unwrap(), 0);
}

#[test]
fn refresh_continues_the_guest_clock_without_a_step() {
    let vm = ClockVm::new();
    let mut mem = vm.memory();
    let hz = 2_899_999_999;
    let mut pv = clock(hz, true);
    let t0 = EPOCH + 12_345_678;
    pv.write_msr(MSR_KVM_SYSTEM_TIME_NEW, 0x1001, &mut mem, t0, WALL).unwrap();
    let before = record(&mem, 0x1000);
    let t1 = t0 + 3600 * hz + 17;
    pv.note_guest_stopped();
    pv.refresh(&mut mem, t1).unwrap();
    let after = record(&mem, 0x1000);
    assert_eq!(after.version, before.version + 2);
    assert_eq!(after.tsc_timestamp, t1);
    assert_eq!(after.flags, PVCLOCK_TSC_STABLE_BIT | PVCLOCK_GUEST_STOPPED);
    // Same instant, same reading, either side of the refresh.
    assert_eq!(before.read(t1), after.read(t1));
    assert!(before.read(t1 - 1) <= after.read(t1));
    assert!(after.read(t1 + 1) >= after.read(t1));
    pv.refresh(&mut mem, t1 + hz).unwrap();
    assert_eq!(record(&mem, 0x1000).flags, PVCLOCK_TSC_STABLE_BIT, "stopped is reported once");
}

#[test]
fn disabling_stops_updates_and_reenabling_keeps_time() {
    let vm = ClockVm::new();
    let mut mem = vm.memory();
    let hz = GHZ;
    let mut pv = clock(hz, true);
    pv.write_msr(MSR_KVM_SYSTEM_TIME_NEW, 0x1001, &mut mem, EPOCH + hz, WALL).unwrap();
    pv.write_msr(MSR_KVM_SYSTEM_TIME_NEW, 0, &mut mem, EPOCH + 2 * hz, WALL).unwrap();
    assert_eq!(pv.time_info_gpa(), None);
    assert_eq!(pv.read_msr(MSR_KVM_SYSTEM_TIME_NEW), Ok(0));
    let frozen = record(&mem, 0x1000);
    pv.refresh(&mut mem, EPOCH + 3 * hz).unwrap();
    assert_eq!(record(&mem, 0x1000).tsc_timestamp, frozen.tsc_timestamp);
    // A new CPU-online cycle registers another address; the clock carries on.
    pv.write_msr(MSR_KVM_SYSTEM_TIME_NEW, 0x2001, &mut mem, EPOCH + 4 * hz, WALL).unwrap();
    assert_eq!(record(&mem, 0x2000).system_time, 4 * NSEC_PER_SEC);
}

#[test]
fn bad_addresses_fail_without_side_effects() {
    let vm = ClockVm::new();
    let mut mem = vm.memory();
    let mut pv = clock(GHZ, true);
    pv.write_msr(MSR_KVM_SYSTEM_TIME_NEW, 0x1001, &mut mem, EPOCH, WALL).unwrap();
    let good = pv.clone();
    let cases: [(u32, u64); 8] = [
        // Outside guest RAM.
        (MSR_KVM_SYSTEM_TIME_NEW, 0x8001),
        (MSR_KVM_WALL_CLOCK_NEW, 0x8000),
        // Straddles the end of RAM.
        (MSR_KVM_WALL_CLOCK_NEW, 0x3ffc),
        // Straddles a page.
        (MSR_KVM_SYSTEM_TIME_NEW, 0x0ff1),
        // Beyond the physical address width.
        (MSR_KVM_SYSTEM_TIME_NEW, 1 << 52 | 1),
        (MSR_KVM_SYSTEM_TIME_NEW, u64::MAX),
        (MSR_KVM_WALL_CLOCK_NEW, u64::MAX),
        (MSR_KVM_WALL_CLOCK_NEW, u64::MAX - 5),
    ];
    for (msr, value) in cases {
        assert!(pv.write_msr(msr, value, &mut mem, EPOCH, WALL).is_err(), "{msr:#x} <- {value:#x}");
        assert_eq!(pv, good, "{msr:#x} <- {value:#x} changed state");
    }
    assert!(matches!(
        pv.write_msr(MSR_KVM_SYSTEM_TIME_NEW, 0x8001, &mut mem, EPOCH, WALL),
        Err(PvClockError::Memory(_))
    ));
    assert_eq!(
        pv.write_msr(MSR_KVM_SYSTEM_TIME_NEW, 0xff1, &mut mem, EPOCH, WALL),
        Err(PvClockError::BadAddress(0xff0))
    );
    assert_eq!(pv.write_msr(0x4b56_4d02, 1, &mut mem, EPOCH, WALL), Err(PvClockError::UnknownMsr(0x4b56_4d02)));
    assert_eq!(pv.read_msr(0x11), Err(PvClockError::UnknownMsr(0x11)));
    assert!(PvClock::handles(MSR_KVM_WALL_CLOCK_NEW) && PvClock::handles(MSR_KVM_SYSTEM_TIME_NEW));
    assert!(!PvClock::handles(0x11) && !PvClock::handles(0x12));
}

#[test]
fn extreme_tsc_values_do_not_panic() {
    let vm = ClockVm::new();
    let mut mem = vm.memory();
    let mut pv = clock(u64::MAX, true);
    for tsc in [0, 1, EPOCH - 1, u64::MAX] {
        pv.write_msr(MSR_KVM_SYSTEM_TIME_NEW, 0x1001, &mut mem, tsc, WALL).unwrap();
        pv.write_msr(MSR_KVM_WALL_CLOCK_NEW, 0x2000, &mut mem, tsc, WallClock { sec: u64::MAX, nsec: u32::MAX })
            .unwrap();
        pv.refresh(&mut mem, tsc).unwrap();
        pv.refresh(&mut mem, 0).unwrap();
    }
    let mut slow = clock(MIN_TSC_HZ, false);
    slow.write_msr(MSR_KVM_SYSTEM_TIME_NEW, 0x1001, &mut mem, u64::MAX, WALL).unwrap();
    let _ = slow.system_time_ns(u64::MAX);
}
