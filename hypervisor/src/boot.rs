//! The boot sequence of the bootstrap CPU, from the loader's handoff to the ready marker.

use bulkhead_abi::{BootInfo, MemoryKind, MemoryRegion};
use log::{error, info, warn};

use crate::arch::x86::debug_exit;
use crate::arch::x86::{cpu, gdt, idt, instr, lapic, tsc};
use crate::cmdline::{self, ThenAction};
use crate::host::acpi::{IommuKind, PlatformTables};
use crate::host::{cmos, handoff, pci, power, screen};
use crate::memory::{paging, phys};
use crate::vm;

/// Printed when the hypervisor has brought the machine up; test harnesses wait for it.
pub const READY_MARKER: &str = "BULKHEAD READY";

/// Called from `_start` with the physical address of the loader's `BootInfo`.
pub extern "sysv64" fn main(boot_info_addr: u64) -> ! {
    crate::logging::init(log::LevelFilter::Info);
    info!(target: "boot", "{} {} starting", crate::PRODUCT, crate::VERSION);
    let Some(boot_info) = handoff::boot_info(boot_info_addr) else {
        fatal(format_args!("bad BootInfo at {boot_info_addr:#x}: the loader and hypervisor versions differ"));
    };
    let (options, unknown) = cmdline::parse(boot_info.cmdline());
    log::set_max_level(options.log_level);
    if options.exit_stages {
        crate::arch::x86::exit_stages::enable();
    }
    for word in unknown {
        warn!(target: "boot", "ignoring unknown option {word:?}");
    }

    gdt::init();
    idt::init();
    x86_64::instructions::interrupts::int3();
    info!(target: "boot", "cpu tables loaded (GDT, TSS with IST stacks, IDT)");

    let map = handoff::memory_map(boot_info);
    let ram = installed_ram(map);
    let reserved = reserved_ranges(boot_info);
    phys::init(map, &reserved);
    let top = map.iter().map(MemoryRegion::end).max().unwrap_or(0).max(1 << 32);
    let fb_range = reserved[0];
    // Runtime-services ranges (merged by the loader; a few on real firmware).
    let firmware_runtime: heapless::Vec<(u64, u64), 64> =
        map.iter().filter(|r| r.kind == MemoryKind::RuntimeServices).map(|r| (r.start, r.end())).take(64).collect();
    if let Err(e) = paging::switch_to_own_tables(top, &[fb_range], &firmware_runtime) {
        fatal(format_args!("cannot build the hypervisor's page tables: {e:?}"));
    }
    crate::host::uefi_runtime::init(boot_info.uefi_system_table);
    let reclaimed = phys::reclaim_boot_services(map, &reserved);
    info!(
        target: "memory",
        "{} MiB RAM, {} MiB free after reclaiming {} MiB of boot-services memory; own page tables active (W^X)",
        ram >> 20,
        phys::free_bytes() >> 20,
        reclaimed >> 20
    );

    let cpu = cpu::identify();
    info!(target: "boot", "cpu: {} {:?}, virtualisation: {}", cpu.vendor, cpu.brand, cpu.virt.label());
    if let cpu::VirtSupport::Svm { nrip_save, decode_assists, vmcb_clean, flush_by_asid, asids, .. } = cpu.virt {
        info!(
            target: "svm",
            "features: nrip_save={nrip_save} decode_assists={decode_assists} vmcb_clean={vmcb_clean} flush_by_asid={flush_by_asid} asids={asids}"
        );
    }

    let tsc_per_ms = tsc::ticks_per_ms();
    let x2apic = lapic::init(tsc_per_ms);
    let timer_ok = timer_self_test();
    info!(
        target: "lapic",
        "{} mode, TSC {} MHz, timer {} ticks/ms, timer interrupt {}",
        if x2apic { "x2APIC" } else { "xAPIC" },
        tsc_per_ms / 1000,
        lapic::ticks_per_ms(),
        if timer_ok { "works" } else { "did NOT arrive" }
    );

    let tables = read_acpi(boot_info.rsdp);
    let cpus_running = start_cpus(tables.as_ref());
    let pci = tables.as_ref().map(pci::scan);
    if let Some(inventory) = &pci {
        inventory.log_all();
        info!(target: "pci", "{} PCI functions", inventory.devices().len());
    }
    if let (Some(tables), Some(inventory)) = (&tables, &pci) {
        let screen = (boot_info.framebuffer_present != 0).then_some(boot_info.framebuffer.base);
        protect_dma(tables, inventory, screen);
    }
    let iommu = match tables.as_ref().map(PlatformTables::iommu) {
        Some(IommuKind::VtD { units }) => heapless_format::<48>(format_args!("Intel VT-d, {units} unit(s)")),
        Some(IommuKind::AmdVi { units }) => heapless_format::<48>(format_args!("AMD-Vi, {units} unit(s)")),
        _ => heapless_format::<48>(format_args!("none (device passthrough disabled)")),
    };
    if cpu.virt == (cpu::VirtSupport::Vmx { locked_off: true }) {
        warn!(target: "boot", "the firmware locked VMX off (IA32_FEATURE_CONTROL): enable Intel Virtualization Technology (VT-x) in the firmware setup; no VM can start");
    }
    if cpu.virt == cpu::VirtSupport::None {
        warn!(target: "boot", "this CPU has no SVM or VMX (or firmware disabled it): no VM can start");
    }
    let status = match cpu.virt {
        cpu::VirtSupport::None => "No hardware virtualization: VMs cannot start",
        cpu::VirtSupport::Svm { npt: false, .. } => "SVM without nested paging: VMs cannot start",
        cpu::VirtSupport::Vmx { locked_off: true } => {
            "VMX is disabled by the firmware: enable Intel Virtualization Technology (VT-x) in the firmware setup"
        }
        _ => "Starting virtual machines",
    };

    // The policy is decided before the boot screen, which says which one runs.
    let has_modules = !handoff::modules(boot_info).is_empty();
    let host_time = has_modules.then(|| {
        let host_time = vm::desktop::HostTime {
            unix_secs: host_unix_time(),
            tsc: instr::rdtsc(),
            tsc_hz: tsc_per_ms.saturating_mul(1000),
        };
        vm::desktop::HOST_TIME.call_once(|| host_time);
        host_time
    });
    let policy = host_time.map(|t| crate::policy::at_boot::start(boot_info, t.unix_secs));
    let (policy_line, policy_warning) = match &policy {
        Some(Ok(chosen)) => crate::policy::at_boot::boot_screen_line(chosen),
        _ => (alloc::string::String::new(), false),
    };

    let disk = start_storage(policy.as_ref().and_then(|p| p.as_ref().ok()).map(|c| &c.policy));
    info!(target: "storage", "Disk: {disk}");
    if options.storage_selftest {
        crate::storage::run_selftest();
    }

    let medium = boot_medium(boot_info.boot_medium);
    let screen = screen::init(boot_info);
    let virt_label = cpu.virt.label();
    let cpu_line = heapless_format::<64>(format_args!(
        "{}, {cpus_running} {} running",
        cpu.vendor.as_str(),
        if cpus_running == 1 { "CPU" } else { "CPUs" }
    ));
    let drawn = screen::with_target(|fb| {
        ui::boot_screen::draw(
            fb,
            &ui::boot_screen::BootScreen {
                product: crate::PRODUCT,
                version: crate::VERSION,
                cpu_vendor: cpu_line.as_str(),
                virtualization: virt_label,
                memory_bytes: ram,
                pci_devices: pci.as_ref().map_or(0, |p| p.devices().len()),
                iommu: iommu.as_str(),
                disk: &disk,
                status,
                medium: ui::boot_screen::medium_line(medium),
                policy: &policy_line,
                policy_warning,
            },
        )
    });
    if drawn.is_some() {
        info!(target: "screen", "boot screen drawn");
    }
    if !screen {
        info!(target: "screen", "no GOP framebuffer: running without a screen");
    }

    let boot_ms = boot_info.tsc_handoff.saturating_sub(boot_info.tsc_loader_start);
    info!(target: "boot", "loader took {} M TSC ticks; {READY_MARKER}", boot_ms / 1_000_000);
    if let Some(passphrase) = options.unlock_demo {
        unlock_demo(passphrase);
    }
    if let (Some(host_time), Some(policy)) = (host_time, policy) {
        let why = match policy {
            Err(refusal) => NothingStarted::Policy(refusal),
            Ok(chosen) => {
                // The runtime keeps the running policy for check-ins and the lease.
                let policy = chosen.policy.clone();
                crate::policy::runtime::install(chosen.policy, chosen.state);
                open_disks(&policy, &options, policy_warning);
                let display = guest_display(boot_info);
                vm::run_queues::set_boot_cpu_only(options.guests_on_boot_cpu);
                NothingStarted::Launch(vm::launch::launch(boot_info, &policy, options.selftest, host_time, display))
            }
        };
        let reason = why.reason();
        // The screen first: the log line then says it is there.
        screen::with_target(|fb| {
            ui::safe_mode::draw(fb, &ui::safe_mode::SafeMode { title: why.title(), reason: &reason, hint: why.hint() })
        });
        error!(target: "vm", "no VM started: {why}");
        if options.selftest {
            debug_exit::exit(debug_exit::ExitCode::Failure);
        }
    }
    match options.then {
        ThenAction::Run => {}
        ThenAction::Exit => debug_exit::exit(debug_exit::ExitCode::Success),
        ThenAction::Shutdown | ThenAction::Reset => match &tables {
            Some(tables) if options.then == ThenAction::Shutdown => power::shutdown(tables),
            Some(tables) => power::reset(tables),
            None => error!(target: "power", "no ACPI tables: cannot power off or reset; halting"),
        },
    }
    instr::halt_forever()
}

/// The VMs' disks on the data partition, unlocked on the passphrase screen when the
/// policy gives any VM a disk (before any VM starts, so no guest sees the keyboard).
/// The test and benchmark options that weaken the disks (`disk-kdf=test`,
/// `disk-cipher=none`, `disk-passphrase=`) are honoured only under a policy signed
/// with the public demo key (`demo`): the image's command line is not signed, and a
/// real laptop's policy is signed with IT's key.
fn open_disks(policy: &bulkhead_policy::Policy, options: &cmdline::Options<'_>, demo: bool) {
    use bulkhead_policy::model::DiskMode;
    use bulkhead_vdisk::{Cipher, KdfParams, Mode};
    let requests: alloc::vec::Vec<_> = policy
        .vms
        .iter()
        .filter(|vm| vm.kind.takes_disk())
        .filter_map(|vm| {
            let disk = vm.disk?;
            let mode = match disk.mode {
                DiskMode::Persistent => Mode::Persistent,
                DiskMode::ResetOnBoot => Mode::ResetOnBoot,
                DiskMode::ReadOnly => Mode::ReadOnly,
            };
            Some(crate::storage::disks::DiskRequest {
                vm: &vm.name,
                label: &vm.label,
                size_bytes: u64::from(disk.size_mib) << 20,
                mode,
            })
        })
        .collect();
    let weakening = options.disk_kdf_test || options.disk_cipher_none || options.disk_passphrase.is_some();
    if weakening && !demo {
        warn!(target: "storage", "disk-kdf, disk-cipher and disk-passphrase are ignored: they need the demo policy key");
    }
    let kdf = if options.disk_kdf_test && demo {
        warn!(target: "storage", "disk-kdf=test: a disk store made now has a passphrase key that is cheap to guess");
        KdfParams::INSECURE_TEST
    } else {
        KdfParams::LAPTOP
    };
    let cipher = if options.disk_cipher_none && demo {
        warn!(target: "storage", "disk-cipher=none: disks created now are NOT encrypted (benchmarks only)");
        Cipher::None
    } else {
        Cipher::Aes256Xts
    };
    let preset = options.disk_passphrase.filter(|_| demo);
    if preset.is_some() {
        warn!(target: "storage", "disk-passphrase=: the disks are unlocked without asking (benchmarks only)");
    }
    crate::storage::disks::prepare(&requests, kdf, cipher, preset.map(str::as_bytes));
}

/// The passphrase screen against a vault in memory (the `unlock-demo=` test option).
fn unlock_demo(passphrase: &str) {
    let mut vault = crate::unlock::memory_vault::MemoryVault::holding(passphrase.as_bytes());
    let outcome = crate::unlock::ask(&mut vault, &["Corporate", "Personal"]);
    info!(target: "boot", "unlock demo ended: {outcome:?}");
}

/// Where the loader ran from, logged once in words tests and support can grep for.
fn boot_medium(raw: u32) -> ui::boot_screen::Medium {
    use ui::boot_screen::Medium;
    let (medium, words) = match raw {
        bulkhead_abi::BOOT_MEDIUM_STICK => (Medium::Stick, "usb stick"),
        bulkhead_abi::BOOT_MEDIUM_NVME => (Medium::Nvme, "internal nvme disk"),
        bulkhead_abi::BOOT_MEDIUM_SATA => (Medium::Sata, "internal sata disk"),
        _ => (Medium::Unknown, "unknown"),
    };
    info!(target: "boot", "boot medium: {words}");
    medium
}

/// The wall-clock time from the host's CMOS clock (0, logged, if it cannot be read).
fn host_unix_time() -> u64 {
    match cmos::unix_time() {
        Ok(secs) => {
            info!(target: "boot", "wall clock from the CMOS RTC: {secs} (Unix time)");
            secs
        }
        Err(e) => {
            warn!(target: "boot", "cannot read the CMOS clock ({e:?}); guests start at 1970");
            0
        }
    }
}

/// Why the boot ended without VMs: the policy was refused, or launching failed.
enum NothingStarted {
    Policy(crate::policy::at_boot::BootRefusal),
    Launch(vm::launch::LaunchError),
}

impl NothingStarted {
    fn title(&self) -> &'static str {
        match self {
            NothingStarted::Policy(_) => "Bulkhead refused this laptop's policy",
            NothingStarted::Launch(_) => "Bulkhead cannot start the desktops",
        }
    }

    fn hint(&self) -> &'static str {
        use crate::policy::at_boot::BootRefusal;
        use bulkhead_policy::Refusal;
        match self {
            NothingStarted::Policy(BootRefusal::Refused(Refusal::Rollback { .. })) => {
                "Use the newest Bulkhead stick from IT: this laptop does not go back to an older policy. Nothing on \
                 this laptop was changed."
            }
            NothingStarted::Policy(BootRefusal::State(_)) => {
                "Call IT: the laptop must be enrolled again. Nothing on this laptop was changed."
            }
            NothingStarted::Policy(_) => {
                "Ask IT for a Bulkhead stick signed for this laptop. Nothing on this laptop was changed."
            }
            NothingStarted::Launch(_) => "Ask IT for a new USB image; nothing on this laptop was changed.",
        }
    }
}

impl NothingStarted {
    /// The reason as the safe-mode screen says it (the title already says "policy").
    fn reason(&self) -> alloc::string::String {
        match self {
            NothingStarted::Policy(refusal) => alloc::format!("{refusal}"),
            NothingStarted::Launch(e) => alloc::format!("{e}"),
        }
    }
}

impl core::fmt::Display for NothingStarted {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NothingStarted::Policy(refusal) => write!(f, "policy refused: {refusal}"),
            NothingStarted::Launch(e) => write!(f, "{e}"),
        }
    }
}

/// Desktop VMs get a framebuffer the size of the screen below the trust strip.
fn guest_display(boot_info: &BootInfo) -> (u32, u32) {
    if boot_info.framebuffer_present == 0 {
        return (1024, 768);
    }
    let fb = boot_info.framebuffer;
    let size = embedded_graphics::prelude::Size::new(fb.width, fb.height);
    let strip = ui::strip::height(ui::Scale::for_screen(size));
    (fb.width, fb.height.saturating_sub(strip).max(200))
}

/// Reports which devices can be given to a VM, then turns on the IOMMU with every
/// device blocked: no device reaches memory until a VM is given it.
/// `screen`: the boot framebuffer's address; the display adapter behind it stays the
/// hypervisor's.
fn protect_dma(tables: &PlatformTables, inventory: &pci::PciInventory, screen: Option<u64>) {
    let mut host = vm::passthrough::HostPci {
        iommu: None,
        inventory: inventory.clone(),
        reports: alloc::vec::Vec::new(),
        config: None,
        intx: host_intx_routes(tables, inventory),
    };
    if let Some((config, _)) = pci::access::host_config_spaces(tables).into_iter().next() {
        host.reports = crate::host::pci::assign::assignability(inventory, tables, &config);
        if let Some(fb) = screen {
            crate::host::pci::assign::refuse_screen(&mut host.reports, inventory, fb);
        }
        crate::host::pci::assign::log_report(&host.reports);
        // Kept for the life of the hypervisor: launch resets and assigns devices through it.
        host.config = Some(alloc::boxed::Box::leak(alloc::boxed::Box::new(config)));
    }
    // The hypervisor takes no un-remapped interrupt (its keyboard's I/O APIC pin gets
    // a remapping entry of its own), so compatibility-format interrupts stay blocked:
    // a device can only raise the remapped messages its VM was given (docs/iommu.md).
    let config = crate::host::iommu::vtd::VtdConfig { allow_compat_interrupts: false, x2apic: lapic::is_x2apic() };
    match crate::host::iommu::from_platform(tables, inventory, config) {
        Ok(mut iommu) => match iommu.enable() {
            Ok(()) => {
                info!(target: "iommu", "DMA remapping on: devices not given to a VM reach no memory");
                host.iommu = Some(iommu);
            }
            Err(e) => error!(target: "iommu", "cannot enable the IOMMU: {e:?}; device passthrough disabled"),
        },
        Err(e) => warn!(target: "iommu", "{e:?}: device passthrough disabled"),
    }
    route_keyboard_irq(tables, host.iommu.as_mut());
    vm::passthrough::install(host);
}

/// Brings up the hypervisor's NVMe drive and finds the data partition (after the PCI
/// scan and the IOMMU, before any VM): a controller the running policy gives to a VM
/// is left alone. Returns the boot screen's "Disk:" line.
fn start_storage(policy: Option<&bulkhead_policy::Policy>) -> alloc::string::String {
    // A policy the hypervisor refuses starts no VM, so it assigns nothing.
    let assigned = policy
        .and_then(|p| vm::config::Config::from_policy(p).ok())
        .map(|c| vm::passthrough::claimed_by(&c.vms))
        .unwrap_or_default();
    let found = vm::passthrough::with_host(|host| {
        let config = host.config.map(|c| c as &dyn crate::host::pci::ConfigAccess);
        let iommu = host.iommu.as_deref_mut().map(|i| i as &mut dyn crate::host::iommu::Iommu);
        crate::storage::init(&host.inventory, config, iommu, &assigned)
    });
    match found {
        Some(found) => found.line,
        None => {
            info!(target: "storage", "no data partition: no PCI discovery");
            alloc::string::String::from("No data partition (no PCI discovery)")
        }
    }
}

/// Where each function's INTx pin reaches the I/O APICs, from the firmware's `_PRT`
/// (logged per function).
fn host_intx_routes(
    tables: &PlatformTables,
    inventory: &pci::PciInventory,
) -> alloc::vec::Vec<(crate::hw::Bdf, crate::host::acpi::aml::IntxRoute)> {
    let routing = tables.pci_routing();
    let lookup = |segment: u16, root: u8, path: &[(u8, u8)], pin: u8| routing.route(segment, root, path, pin);
    let routes = crate::host::pci::intx::host_routes(inventory, &lookup);
    info!(
        target: "intx",
        "{} _PRT table(s); {} function(s) with an INTx route",
        routing.table_count(),
        routes.len()
    );
    for (bdf, r) in &routes {
        info!(target: "intx", "{bdf}: INTx -> GSI {} (level {}, active low {})", r.gsi, r.level_triggered, r.active_low);
    }
    routes
}

/// Lets the keyboard interrupt the CPU that runs VMs, so a hotkey ends the running
/// VM's slice at once (through the IOMMU's interrupt remapping when it has one).
fn route_keyboard_irq(tables: &PlatformTables, mut iommu: Option<&mut crate::host::iommu::DynIommu>) {
    let mut remap = |pin, target| match iommu.as_mut() {
        Some(i) => i.map_ioapic_pin(pin, target),
        None => Ok(None),
    };
    let cpu = instr::apic_id();
    if let Err(why) = crate::host::ioapic::route_keyboard(tables, lapic::KEYBOARD_VECTOR, cpu, &mut remap) {
        crate::host::ioapic::keyboard_not_routed(&why);
    }
}

/// Starts the application processors the MADT lists, logs how many CPUs run, and has
/// each AP run a work item that reports its APIC id. Returns the CPUs running.
fn start_cpus(tables: Option<&PlatformTables>) -> usize {
    use crate::arch::x86::smp;
    let ids = tables.map(|t| t.madt().startable_apic_ids()).unwrap_or_default();
    let report = smp::start::start_application_processors(&ids);
    for (id, why) in &report.failed {
        warn!(target: "smp", "APIC id {id} is not running ({why:?}): left out");
    }
    for id in &report.left_out {
        warn!(
            target: "smp",
            "APIC id {id} left out: beyond {} CPUs, or not addressable in xAPIC mode",
            smp::percpu::MAX_CPUS
        );
    }
    let aps = report.started;
    info!(
        target: "smp",
        "{} {} running ({aps} application {} started in {} ms)",
        report.running,
        if report.running == 1 { "CPU" } else { "CPUs" },
        if aps == 1 { "processor" } else { "processors" },
        report.elapsed_ms
    );
    let (good, asked) = smp::work::self_test();
    if asked > 0 {
        info!(target: "smp", "self-test: {good} of {asked} application processors ran a work item and gave their APIC id");
    }
    report.running
}

/// The firmware's ACPI tables, or `None` (logged) when they are missing or unusable.
fn read_acpi(rsdp: u64) -> Option<PlatformTables> {
    if rsdp == 0 {
        warn!(target: "acpi", "the firmware passed no ACPI RSDP: no CPU, PCI or IOMMU discovery, no ACPI power-off");
        return None;
    }
    match PlatformTables::from_rsdp(rsdp) {
        Ok(tables) => {
            tables.log_summary();
            Some(tables)
        }
        Err(e) => {
            error!(target: "acpi", "the ACPI tables at {rsdp:#x} are unusable: {e:?}");
            None
        }
    }
}

fn heapless_format<const N: usize>(args: core::fmt::Arguments<'_>) -> heapless::String<N> {
    let mut s = heapless::String::new();
    let _ = core::fmt::Write::write_fmt(&mut s, args);
    s
}

/// Arms a 1 ms one-shot and halts until it fires: proves the interrupt path (LAPIC,
/// IDT, EOI) before any VM depends on it for preemption.
fn timer_self_test() -> bool {
    use core::sync::atomic::Ordering;
    idt::TIMER_FIRED.store(false, Ordering::Release);
    lapic::arm_oneshot_us(1000);
    let start = instr::rdtsc();
    while !idt::TIMER_FIRED.load(Ordering::Acquire) && instr::rdtsc().wrapping_sub(start) < 10_000_000_000 {
        x86_64::instructions::interrupts::enable_and_hlt();
        x86_64::instructions::interrupts::disable();
    }
    idt::TIMER_FIRED.swap(false, Ordering::AcqRel)
}

/// RAM the machine has, whatever currently uses it.
fn installed_ram(map: &[MemoryRegion]) -> u64 {
    map.iter()
        .filter(|r| {
            matches!(
                r.kind,
                MemoryKind::Usable
                    | MemoryKind::BootServices
                    | MemoryKind::Loader
                    | MemoryKind::Hypervisor
                    | MemoryKind::AcpiReclaimable
                    | MemoryKind::AcpiNvs
                    | MemoryKind::RuntimeServices
            )
        })
        .map(|r| r.len)
        .sum()
}

/// Physical ranges the frame allocator must never hand out even if the map calls them
/// usable. Index 0 is the framebuffer.
fn reserved_ranges(boot_info: &BootInfo) -> [(u64, u64); 2] {
    let fb = &boot_info.framebuffer;
    // A range running past the top of memory is reserved up to the top (not wrapped
    // round to an empty range).
    let fb_range = if boot_info.framebuffer_present != 0 { (fb.base, fb.base.saturating_add(fb.size)) } else { (0, 0) };
    let image = boot_info.hypervisor_image;
    [fb_range, (image.addr, image.addr.saturating_add(image.len))]
}

fn fatal(message: core::fmt::Arguments<'_>) -> ! {
    error!(target: "boot", "{message}");
    debug_exit::exit(debug_exit::ExitCode::Failure);
    instr::halt_forever()
}
