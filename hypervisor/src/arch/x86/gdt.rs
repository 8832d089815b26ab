//! The hypervisor's GDT and TSS. The TSS carries IST stacks so that a double fault, an
//! NMI or a machine check always runs on a known-good stack, even when the fault came
//! from a stack overflow.

use spin::Once;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

/// IST slots (1-based in the IDT, 0-based in the TSS array).
pub const IST_DOUBLE_FAULT: u16 = 0;
pub const IST_NMI: u16 = 1;
pub const IST_MACHINE_CHECK: u16 = 2;

const IST_STACK_BYTES: usize = 16 * 1024;

#[repr(C, align(16))]
struct IstStack([u8; IST_STACK_BYTES]);

static mut IST_STACKS: [IstStack; 3] = [const { IstStack([0; IST_STACK_BYTES]) }; 3];

/// Entries in the TSS's interrupt stack table (AMD APM Vol. 2 12.2.5, Intel SDM Vol. 3
/// 8.7). The TSS is packed, so its array is copied out rather than borrowed.
const IST_ENTRIES: usize = {
    let ist = TaskStateSegment::new().interrupt_stack_table;
    ist.len()
};
const _: () = assert!(
    (IST_DOUBLE_FAULT as usize) < IST_ENTRIES
        && (IST_NMI as usize) < IST_ENTRIES
        && (IST_MACHINE_CHECK as usize) < IST_ENTRIES
);

struct Tables {
    gdt: GlobalDescriptorTable,
    code: SegmentSelector,
    data: SegmentSelector,
    tss: SegmentSelector,
}

static TSS: Once<TaskStateSegment> = Once::new();
static TABLES: Once<Tables> = Once::new();

/// Loads the GDT and TSS on the boot CPU and reloads every segment register.
pub fn init() {
    let tss = TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        // Only the address is taken; the stacks are used solely by the CPU on IST
        // switches. Each stack grows down from the end of its slot; the last top is
        // the end of the static, so the sums cannot wrap.
        let mut top = (&raw const IST_STACKS) as u64;
        let mut ist = tss.interrupt_stack_table;
        for index in [IST_DOUBLE_FAULT, IST_NMI, IST_MACHINE_CHECK] {
            top = top.wrapping_add(IST_STACK_BYTES as u64);
            if let Some(entry) = ist.get_mut(usize::from(index)) {
                *entry = VirtAddr::new(top);
            }
        }
        tss.interrupt_stack_table = ist;
        tss
    });
    let tables = TABLES.call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let tss = gdt.append(Descriptor::tss_segment(tss));
        Tables { gdt, code, data, tss }
    });
    tables.gdt.load();
    // SAFETY: the selectors index descriptors of the GDT just loaded, which lives in a
    // static for the rest of the hypervisor's life.
    unsafe {
        CS::set_reg(tables.code);
        SS::set_reg(tables.data);
        DS::set_reg(tables.data);
        ES::set_reg(tables.data);
        load_tss(tables.tss);
    }
}

/// Builds and loads a GDT and TSS of its own on an application processor, with IST
/// stacks in `ist_stacks` (three stacks of [`IST_STACK_BYTES`] from its start, memory
/// this CPU owns for good). The descriptors sit in the boot CPU's order, so the
/// selectors (and the VMRUN host state built from [`selectors`]) are the same on
/// every CPU. The tables are leaked: a CPU keeps them as long as it runs.
pub fn init_ap(ist_stacks: u64) {
    let mut tss = TaskStateSegment::new();
    let mut ist = tss.interrupt_stack_table;
    let mut top = ist_stacks;
    for index in [IST_DOUBLE_FAULT, IST_NMI, IST_MACHINE_CHECK] {
        top = top.saturating_add(IST_STACK_BYTES as u64);
        if let Some(entry) = ist.get_mut(usize::from(index)) {
            *entry = VirtAddr::new(top);
        }
    }
    tss.interrupt_stack_table = ist;
    let tss: &'static TaskStateSegment = alloc::boxed::Box::leak(alloc::boxed::Box::new(tss));
    let mut gdt = GlobalDescriptorTable::new();
    let code = gdt.append(Descriptor::kernel_code_segment());
    let data = gdt.append(Descriptor::kernel_data_segment());
    let tss_selector = gdt.append(Descriptor::tss_segment(tss));
    let gdt: &'static GlobalDescriptorTable = alloc::boxed::Box::leak(alloc::boxed::Box::new(gdt));
    gdt.load();
    // SAFETY: the selectors index descriptors of the GDT just loaded, which is leaked
    // and so lives as long as this CPU; the TSS descriptor is fresh (not busy).
    unsafe {
        CS::set_reg(code);
        SS::set_reg(data);
        DS::set_reg(data);
        ES::set_reg(data);
        load_tss(tss_selector);
    }
}

/// Bytes an application processor provides for its IST stacks ([`init_ap`]).
pub const AP_IST_BYTES: u64 = 3 * IST_STACK_BYTES as u64;

/// The hypervisor's code and data selectors (the host state for VMRUN); `None` before
/// [`init`].
pub fn selectors() -> Option<(SegmentSelector, SegmentSelector)> {
    TABLES.get().map(|tables| (tables.code, tables.data))
}

/// The hypervisor's TSS selector and the TSS's address (the host state VM exit loads
/// on VMX); `None` before [`init`].
pub fn tss() -> Option<(SegmentSelector, u64)> {
    let tables = TABLES.get()?;
    let tss = TSS.get()?;
    Some((tables.tss, core::ptr::from_ref(tss) as u64))
}
