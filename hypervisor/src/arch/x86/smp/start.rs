//! Starting the application processors (Intel SDM Vol. 3 9.4.4 "MP Initialization
//! Example", AMD APM Vol. 2 15.27.8): one at a time, INIT, 10 ms, a startup IPI,
//! 200 µs, and a second startup IPI only if the AP has not run the trampoline's first
//! instructions yet. An AP that has not reached the hypervisor's code within
//! [`CHECK_IN_MS`] is parked with INIT again and left out; the others go on.

use core::sync::atomic::{AtomicU64, Ordering, fence};

use alloc::vec::Vec;
use x86_64::PhysAddr;
use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::structures::paging::{PhysFrame, Size4KiB};

use super::percpu::{self, CpuState, MAX_CPUS};
use super::plan::plan;
use super::trampoline::{self, ApLaunch, DATA_OFFSET, ROOT_OFFSET, TrampolineError};
use crate::arch::x86::lapic::{self, IpiError, icr};
use crate::arch::x86::{gdt, idt, instr, tsc};
use crate::memory::addr::{HostPhysAddr, PAGE_SIZE};
use crate::memory::{direct_map, paging, phys};

/// Each AP's stack.
const AP_STACK_BYTES: u64 = 64 * 1024;
/// How long an AP has, from its first startup IPI, to reach the hypervisor's code.
pub const CHECK_IN_MS: u64 = 200;
/// How long the APs that checked in have, together, to finish their setup.
const ONLINE_MS: u64 = 1000;

/// The hypervisor's page-table root, which each AP loads first thing in Rust.
static ROOT: AtomicU64 = AtomicU64::new(0);

/// Why an AP is not running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFailure {
    /// It did not reach the hypervisor's code within [`CHECK_IN_MS`].
    NoCheckIn {
        ran_trampoline: bool,
    },
    /// It checked in but did not finish its setup within the bound.
    NotOnline,
    Ipi(IpiError),
    /// No memory for its stacks.
    OutOfMemory,
    /// The low pages for the trampoline are missing or unusable.
    Trampoline(TrampolineError),
    NoLowMemory,
}

/// What [`start_application_processors`] did.
#[derive(Debug, Default)]
pub struct StartReport {
    /// CPUs running, the boot CPU included.
    pub running: usize,
    /// Application processors started.
    pub started: usize,
    pub failed: Vec<(u32, StartFailure)>,
    /// APIC ids left out before any IPI (unreachable in xAPIC mode, over the table).
    pub left_out: Vec<u32>,
    /// From the first INIT to the last AP online.
    pub elapsed_ms: u64,
}

/// Registers the boot CPU and starts every other processor in `apic_ids` (the MADT's
/// startable ones). Called once, on the boot CPU, after its own LAPIC is set up.
pub fn start_application_processors(apic_ids: &[u32]) -> StartReport {
    let bsp = lapic::id();
    if percpu::get(0).is_none()
        && let Some(cpu) = percpu::register(bsp, CpuState::Online, (0, 0))
    {
        cpu.timer_ticks_per_ms.store(lapic::ticks_per_ms(), Ordering::Relaxed);
    }
    let plan = plan(apic_ids, bsp, lapic::is_x2apic(), MAX_CPUS);
    let mut report = StartReport { left_out: plan.unreachable.clone(), ..StartReport::default() };
    report.left_out.extend_from_slice(&plan.over_limit);
    if !plan.start.is_empty() {
        match prepare_trampoline() {
            Ok(code) => {
                start_all(&plan.start, code, &mut report);
                if let Err(e) = paging::set_low_page_executable(code.raw(), false) {
                    log::error!(target: "smp", "cannot make the trampoline page non-executable again: {e:?}");
                }
            }
            Err(why) => report.failed.extend(plan.start.iter().map(|&id| (id, why))),
        }
    }
    report.running = percpu::online_count();
    report
}

/// Copies the trampoline and the root to the low pages and makes the code page
/// executable; returns the code page.
fn prepare_trampoline() -> Result<HostPhysAddr, StartFailure> {
    let code = phys::ap_start_pages().ok_or(StartFailure::NoLowMemory)?;
    // SAFETY: the low pages were set aside for this at `phys::init` and nothing else
    // uses them; no AP runs yet, so no one reads them while they are written.
    let page = unsafe { direct_map::bytes_mut(code, PAGE_SIZE as usize) };
    trampoline::write_code_page(page).map_err(StartFailure::Trampoline)?;
    let root = code.checked_add(ROOT_OFFSET).ok_or(StartFailure::NoLowMemory)?;
    // SAFETY: the third low page is ours and is not the active root.
    unsafe { paging::copy_active_root(root) };
    ROOT.store(paging::active_root().raw(), Ordering::Release);
    paging::set_low_page_executable(code.raw(), true).map_err(|_| StartFailure::NoLowMemory)?;
    Ok(code)
}

fn start_all(ids: &[u32], code: HostPhysAddr, report: &mut StartReport) {
    let start = instr::rdtsc();
    for &id in ids {
        match start_one(id, code) {
            Ok(()) => {}
            Err(why) => report.failed.push((id, why)),
        }
    }
    // Those that checked in finish their setup in parallel.
    let ticks_per_ms = tsc::cached_ticks_per_ms().max(1);
    let wait_start = instr::rdtsc();
    let pending = || percpu::all().any(|cpu| cpu.state() == CpuState::CheckedIn);
    while pending() && instr::rdtsc().wrapping_sub(wait_start) < ONLINE_MS.saturating_mul(ticks_per_ms) {
        core::hint::spin_loop();
    }
    for cpu in percpu::all() {
        match cpu.state() {
            CpuState::Online if cpu.index != 0 => report.started = report.started.saturating_add(1),
            CpuState::CheckedIn => report.failed.push((cpu.apic_id, StartFailure::NotOnline)),
            _ => {}
        }
    }
    report.elapsed_ms = instr::rdtsc().wrapping_sub(start).checked_div(ticks_per_ms).unwrap_or(0);
}

/// INIT, 10 ms, SIPI, 200 µs, a second SIPI if the trampoline has not run, then up to
/// [`CHECK_IN_MS`] for the AP to reach Rust.
fn start_one(apic_id: u32, code: HostPhysAddr) -> Result<(), StartFailure> {
    let stack_bytes = AP_STACK_BYTES.saturating_add(gdt::AP_IST_BYTES);
    let stacks = phys::alloc_contiguous(stack_bytes, PAGE_SIZE).ok_or(StartFailure::OutOfMemory)?;
    let Some(cpu) = percpu::register(apic_id, CpuState::Starting, (stacks.raw(), stack_bytes)) else {
        phys::free_contiguous(stacks, stack_bytes);
        return Err(StartFailure::OutOfMemory);
    };
    let entry: extern "sysv64" fn(u64) -> ! = ap_entry;
    let launch = ApLaunch {
        code_base: code.raw(),
        root_32: code.raw().saturating_add(ROOT_OFFSET),
        stack_top: stacks.raw().saturating_add(AP_STACK_BYTES),
        entry: entry as usize as u64,
        argument: cpu.index as u64,
    };
    let data = code.checked_add(DATA_OFFSET).ok_or(StartFailure::NoLowMemory)?;
    {
        // SAFETY: the data page is ours; the previous AP has left the trampoline
        // (checked in) or was parked with INIT, so no one else reads it now.
        let page = unsafe { direct_map::bytes_mut(data, PAGE_SIZE as usize) };
        trampoline::write_data_page(page, &launch).map_err(StartFailure::Trampoline)?;
    }
    let vector = trampoline::sipi_vector(code.raw()).map_err(StartFailure::Trampoline)?;
    // SAFETY: the flag is the first aligned word of our data page, written by the AP
    // in real mode and read here only as an atomic.
    let alive = unsafe { direct_map::atomic_u32(data) };
    // The data page must be visible before the IPIs (an x2APIC ICR write is not
    // serialising, SDM Vol. 3 11.12.3).
    fence(Ordering::SeqCst);
    lapic::send_ipi(apic_id, icr::INIT).map_err(StartFailure::Ipi)?;
    delay_us(10_000);
    lapic::send_ipi(apic_id, icr::STARTUP | u32::from(vector)).map_err(StartFailure::Ipi)?;
    delay_us(200);
    if alive.load(Ordering::Acquire) == 0 {
        lapic::send_ipi(apic_id, icr::STARTUP | u32::from(vector)).map_err(StartFailure::Ipi)?;
    }
    let ticks = tsc::cached_ticks_per_ms().max(1).saturating_mul(CHECK_IN_MS);
    let start = instr::rdtsc();
    while cpu.state() == CpuState::Starting {
        // Given up only if it has not checked in meanwhile: once this succeeds the AP
        // halts at its check-in, holding nothing, so INIT can park it safely (an AP
        // that turns up late must not run on the next AP's stack).
        if instr::rdtsc().wrapping_sub(start) > ticks && cpu.transition(CpuState::Starting, CpuState::Failed) {
            let _ = lapic::send_ipi(apic_id, icr::INIT);
            return Err(StartFailure::NoCheckIn { ran_trampoline: alive.load(Ordering::Acquire) != 0 });
        }
        core::hint::spin_loop();
    }
    Ok(())
}

fn delay_us(micros: u64) {
    let ticks = tsc::cached_ticks_per_ms().max(1).saturating_mul(micros) / 1000;
    let start = instr::rdtsc();
    while instr::rdtsc().wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
}

/// Where an AP enters Rust from the trampoline, on its own stack, with `index` its
/// slot in the per-CPU table.
extern "sysv64" fn ap_entry(index: u64) -> ! {
    let root = PhysFrame::<Size4KiB>::containing_address(PhysAddr::new(ROOT.load(Ordering::Acquire)));
    // SAFETY: the hypervisor's own root maps everything the copy below 4 GiB maps
    // (the copy shares its lower tables), this code and stack included. Loading it
    // also flushes the TLB, so no entry for the trampoline page outlives its start.
    unsafe { Cr3::write(root, Cr3Flags::empty()) };
    let Some(cpu) = usize::try_from(index).ok().and_then(percpu::get) else {
        instr::halt_forever();
    };
    if !cpu.transition(CpuState::Starting, CpuState::CheckedIn) {
        // Too late: the boot CPU left this CPU out and is parking it.
        instr::halt_forever();
    }
    gdt::init_ap(cpu.stacks.0.saturating_add(AP_STACK_BYTES));
    idt::init();
    let ticks = lapic::init_ap(tsc::cached_ticks_per_ms());
    cpu.timer_ticks_per_ms.store(ticks, Ordering::Relaxed);
    let timer = if timer_wakes_this_cpu() { "works" } else { "did NOT arrive" };
    let svm = match crate::arch::svm::SvmFeatures::from_cpuid(&crate::arch::x86::cpuid::HostCpuid) {
        None => alloc::string::String::from("no SVM"),
        Some(features) => {
            match crate::arch::svm::enable::enable_quietly(&features, &mut crate::memory::phys::GlobalFrames) {
                Ok(hsave) => {
                    cpu.host_save_area.store(hsave.raw(), Ordering::Release);
                    alloc::format!("SVM on, host save area {hsave}")
                }
                Err(e) => alloc::format!("SVM not enabled: {e:?}"),
            }
        }
    };
    log::info!(
        target: "smp",
        "cpu{} (APIC id {}) online: LAPIC timer measured {} ticks/ms (boot CPU {}, used here too), timer interrupt {timer}, {}",
        cpu.index,
        cpu.apic_id,
        ticks,
        lapic::ticks_per_ms(),
        svm
    );
    cpu.set_state(CpuState::Online);
    super::work::idle(cpu)
}

/// Arms a 1 ms one-shot on this AP (with the boot CPU's calibration, on the work
/// vector, whose handler only EOIs) and halts until it expires: proves this CPU's
/// timer, IDT and EOI path. An AP whose timer never fires stays halted here and is
/// reported as not online.
fn timer_wakes_this_cpu() -> bool {
    lapic::arm_oneshot_on(lapic::WORK_VECTOR, 1000);
    let limit = tsc::cached_ticks_per_ms().max(1).saturating_mul(100);
    let start = instr::rdtsc();
    while lapic::timer_current() != 0 && instr::rdtsc().wrapping_sub(start) < limit {
        x86_64::instructions::interrupts::enable_and_hlt();
        x86_64::instructions::interrupts::disable();
    }
    let expired = lapic::timer_current() == 0;
    lapic::disarm();
    expired
}
