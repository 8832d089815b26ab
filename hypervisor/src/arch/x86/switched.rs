//! Guest-owned CPU state that neither VMRUN (APM Vol. 2 15.5.1 lists what it does) nor
//! VM entry/exit (SDM Vol. 3 28.3, 29.5) switches: the breakpoint addresses DR0-DR3 and
//! TSC_AUX. Both backends use it. Without this, one VM's
//! breakpoint addresses and the host's (or another VM's) TSC_AUX are visible to the next
//! guest: MOV from DR0-3 and RDPID run without an exit.
//!
//! DR0-3 are saved and restored around each run rather than intercepted: QEMU's
//! emulated SVM has no decode assists, so a MOV DR intercept would leave the register
//! operand to be decoded from guest memory on every access, while four reads after an
//! exit cost little and cannot be got wrong by a guest. DR6 and DR7 live in the VMCB
//! and are switched by VMRUN itself.
//!
//! Invariant: outside a guest run, DR0-3 hold zero on this CPU (set by `enable`, kept by
//! [`GuestSwitched::save`]); so a vCPU whose DR0-3 are all zero needs no loads. The host
//! never enables breakpoints (VMRUN's #VMEXIT leaves DR7 with every breakpoint
//! disabled), so guest addresses left in DR0-3 for a moment cannot fire in the host.
//!
//! There is no RDPID intercept in SVM (APM Vol. 2 Table C-1 has RDTSCP, not RDPID), so
//! TSC_AUX itself carries the guest's value while the guest runs, and the host's value
//! is put back after the exit.
#![forbid(unsafe_code)]

/// The CPU registers this module switches.
pub trait SwitchedCpu {
    fn dr(&self, n: usize) -> u64;
    fn set_dr(&mut self, n: usize, value: u64);
    fn tsc_aux(&self) -> u64;
    fn set_tsc_aux(&mut self, value: u64);
}

/// A vCPU's copy of the switched registers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GuestSwitched {
    /// The guest's DR0-3.
    pub dr: [u64; 4],
    /// The guest's TSC_AUX (what WRMSR wrote, RDTSCP's ECX, RDPID's result).
    pub tsc_aux: u64,
    /// Whether the CPU has TSC_AUX (RDTSCP or RDPID).
    pub has_tsc_aux: bool,
    /// The host's TSC_AUX while the guest runs.
    host_tsc_aux: u64,
}

impl GuestSwitched {
    pub fn new(has_tsc_aux: bool) -> GuestSwitched {
        GuestSwitched { has_tsc_aux, ..GuestSwitched::default() }
    }

    /// Right before VMRUN: the guest's values into the CPU.
    pub fn load(&mut self, cpu: &mut impl SwitchedCpu) {
        if self.dr != [0; 4] {
            for (n, &value) in self.dr.iter().enumerate() {
                cpu.set_dr(n, value);
            }
        }
        if self.has_tsc_aux {
            self.host_tsc_aux = cpu.tsc_aux();
            if self.host_tsc_aux != self.tsc_aux {
                cpu.set_tsc_aux(self.tsc_aux);
            }
        }
    }

    /// Right after #VMEXIT: the guest's DR0-3 (it may have changed them without an
    /// exit) into this copy, zeroes and the host's TSC_AUX back into the CPU.
    pub fn save(&mut self, cpu: &mut impl SwitchedCpu) {
        for (n, slot) in self.dr.iter_mut().enumerate() {
            *slot = cpu.dr(n);
        }
        if self.dr != [0; 4] {
            for n in 0..4 {
                cpu.set_dr(n, 0);
            }
        }
        if self.has_tsc_aux && self.host_tsc_aux != self.tsc_aux {
            cpu.set_tsc_aux(self.host_tsc_aux);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One physical CPU's registers; `run` is what a guest does while it runs.
    #[derive(Debug, Default)]
    struct FakeCpu {
        dr: [u64; 4],
        tsc_aux: u64,
        writes: usize,
    }

    impl SwitchedCpu for FakeCpu {
        fn dr(&self, n: usize) -> u64 {
            self.dr[n]
        }
        fn set_dr(&mut self, n: usize, value: u64) {
            self.writes += 1;
            self.dr[n] = value;
        }
        fn tsc_aux(&self) -> u64 {
            self.tsc_aux
        }
        fn set_tsc_aux(&mut self, value: u64) {
            self.writes += 1;
            self.tsc_aux = value;
        }
    }

    fn run(vcpu: &mut GuestSwitched, cpu: &mut FakeCpu, guest: impl FnOnce(&mut FakeCpu)) {
        vcpu.load(cpu);
        guest(cpu);
        vcpu.save(cpu);
    }

    #[test]
    fn breakpoints_do_not_cross_vms() {
        let mut cpu = FakeCpu::default();
        let (mut a, mut b) = (GuestSwitched::new(true), GuestSwitched::new(true));
        // A sets breakpoint addresses without an exit (MOV DR is not intercepted).
        run(&mut a, &mut cpu, |c| {
            c.dr = [0x1000, 0x2000, 0x3000, 0x4000];
        });
        assert_eq!(a.dr, [0x1000, 0x2000, 0x3000, 0x4000]);
        assert_eq!(cpu.dr, [0; 4], "left in the CPU between runs");
        // B reads them: it must see its own zeroes, then sets DR2 only.
        let mut seen = [1; 4];
        run(&mut b, &mut cpu, |c| {
            seen = c.dr;
            c.dr[2] = 0xb000;
        });
        assert_eq!(seen, [0; 4]);
        // A runs again and finds its own values, not B's DR2.
        run(&mut a, &mut cpu, |c| seen = c.dr);
        assert_eq!(seen, [0x1000, 0x2000, 0x3000, 0x4000]);
        run(&mut b, &mut cpu, |c| seen = c.dr);
        assert_eq!(seen, [0, 0, 0xb000, 0]);
    }

    #[test]
    fn a_guest_without_breakpoints_costs_no_writes() {
        let mut cpu = FakeCpu { tsc_aux: 0, ..FakeCpu::default() };
        let mut a = GuestSwitched::new(true);
        run(&mut a, &mut cpu, |_| {});
        assert_eq!(cpu.writes, 0);
    }

    #[test]
    fn tsc_aux_is_the_guests_while_it_runs_and_the_hosts_after() {
        let mut cpu = FakeCpu { tsc_aux: 0x77, ..FakeCpu::default() };
        let mut a = GuestSwitched::new(true);
        let mut b = GuestSwitched::new(true);
        a.tsc_aux = 5;
        let mut seen = 0;
        run(&mut a, &mut cpu, |c| seen = c.tsc_aux);
        assert_eq!((seen, cpu.tsc_aux), (5, 0x77));
        // B never wrote TSC_AUX: RDPID gives its reset value 0, not the host's 0x77.
        run(&mut b, &mut cpu, |c| seen = c.tsc_aux);
        assert_eq!((seen, cpu.tsc_aux), (0, 0x77));
        // Without the MSR nothing is touched.
        let mut none = GuestSwitched::new(false);
        none.tsc_aux = 9;
        let writes = cpu.writes;
        run(&mut none, &mut cpu, |_| {});
        assert_eq!((cpu.writes, cpu.tsc_aux), (writes, 0x77));
    }
}
