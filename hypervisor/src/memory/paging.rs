//! The hypervisor's own page tables, replacing the firmware's: an identity map of all
//! physical memory that is writable but never executable, with the hypervisor image
//! mapped by section: text read+execute, rodata read-only, data read+write. Page 0 is
//! unmapped to catch null pointers. No page of the hypervisor's is both writable and
//! executable; the one exception is the firmware's runtime-services memory, which stays
//! as the firmware left it (its drivers' code and data share those regions) so that the
//! variable store can be written (`host::uefi_runtime`).

use x86_64::registers::control::{Cr0, Cr0Flags, Cr3, Cr3Flags};
use x86_64::registers::model_specific::{Efer, EferFlags};
use x86_64::structures::paging::mapper::{MapToError, Mapper};
use x86_64::structures::paging::{
    OffsetPageTable, Page, PageTable, PageTableFlags as F, PhysFrame, Size2MiB, Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

use super::addr::{LARGE_PAGE_SIZE, PAGE_SIZE};
use super::phys::{self, GlobalFrames};

unsafe extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __data_end: u8;
}

/// The hypervisor image's sections, from the linker script.
#[derive(Debug, Clone, Copy)]
pub struct ImageLayout {
    pub text: (u64, u64),
    pub rodata: (u64, u64),
    pub data: (u64, u64),
}

pub fn image_layout() -> ImageLayout {
    let a = |s: &u8| s as *const u8 as u64;
    // SAFETY: the linker script defines these symbols; only their addresses are used.
    unsafe {
        ImageLayout {
            text: (a(&__text_start), a(&__text_end)),
            rodata: (a(&__rodata_start), a(&__rodata_end)),
            data: (a(&__data_start), a(&__data_end)),
        }
    }
}

#[derive(Debug)]
pub enum PagingError {
    OutOfMemory,
    AlreadyMapped(u64),
}

impl<S: x86_64::structures::paging::PageSize> From<MapToError<S>> for PagingError {
    fn from(e: MapToError<S>) -> Self {
        match e {
            MapToError::FrameAllocationFailed => PagingError::OutOfMemory,
            MapToError::ParentEntryHugePage | MapToError::PageAlreadyMapped(_) => PagingError::AlreadyMapped(0),
        }
    }
}

/// Builds the tables and switches CR3 to them. `top` is the end of physical memory to
/// map (everything below is identity mapped); `extra` are MMIO ranges above it;
/// `firmware_runtime` are the UEFI runtime-services ranges, mapped writable and
/// executable in 4 KiB pages.
pub fn switch_to_own_tables(
    top: u64,
    extra: &[(u64, u64)],
    firmware_runtime: &[(u64, u64)],
) -> Result<(), PagingError> {
    let mut frames = GlobalFrames;
    let l4_pa = phys::alloc_contiguous(PAGE_SIZE, PAGE_SIZE).ok_or(PagingError::OutOfMemory)?;
    // SAFETY: the frame was just allocated and zeroed; the offset-0 view is valid because
    // both the firmware's tables and ours identity-map RAM.
    let l4 = unsafe { &mut *(l4_pa.raw() as *mut PageTable) };
    // SAFETY: physical memory is identity mapped (offset 0) by the active tables.
    let mut mapper = unsafe { OffsetPageTable::new(l4, VirtAddr::new(0)) };
    let image = image_layout();
    let image_2m = (image.text.0 & !(LARGE_PAGE_SIZE - 1), image.data.1.next_multiple_of(LARGE_PAGE_SIZE));
    let rw = F::PRESENT | F::WRITABLE | F::NO_EXECUTE;

    let runtime_page = |pa: u64| firmware_runtime.iter().any(|r| (r.0..r.1).contains(&pa));
    let runtime_2m = |pa: u64| firmware_runtime.iter().any(|r| r.0 < pa.saturating_add(LARGE_PAGE_SIZE) && pa < r.1);
    // First 2 MiB in 4 KiB pages, leaving page 0 out.
    for pa in (PAGE_SIZE..LARGE_PAGE_SIZE).step_by(PAGE_SIZE as usize) {
        map_4k(&mut mapper, &mut frames, pa, if runtime_page(pa) { F::PRESENT | F::WRITABLE } else { rw })?;
    }
    let mut ranges = heapless::Vec::<(u64, u64), 16>::new();
    let _ = ranges.push((LARGE_PAGE_SIZE, top));
    for &r in extra {
        let _ = ranges.push((r.0 & !(LARGE_PAGE_SIZE - 1), r.1.next_multiple_of(LARGE_PAGE_SIZE)));
    }
    for (start, end) in ranges {
        let mut pa = start;
        while pa < end {
            let page = Page::<Size2MiB>::containing_address(VirtAddr::new(pa));
            if pa >= LARGE_PAGE_SIZE && !(image_2m.0..image_2m.1).contains(&pa) && runtime_2m(pa) {
                if mapper.translate_page(page).is_err() {
                    for small in (pa..pa.saturating_add(LARGE_PAGE_SIZE)).step_by(PAGE_SIZE as usize) {
                        let flags = if runtime_page(small) { F::PRESENT | F::WRITABLE } else { rw };
                        if mapper.translate_page(Page::<Size4KiB>::containing_address(VirtAddr::new(small))).is_err() {
                            map_4k(&mut mapper, &mut frames, small, flags)?;
                        }
                    }
                }
            } else if !(image_2m.0..image_2m.1).contains(&pa) && mapper.translate_page(page).is_err() {
                let frame = PhysFrame::<Size2MiB>::containing_address(PhysAddr::new(pa));
                // SAFETY: identity mapping of physical memory into tables not yet active.
                unsafe { mapper.map_to_with_table_flags(page, frame, rw, F::PRESENT | F::WRITABLE, &mut frames) }?
                    .ignore();
            }
            // A range reaching the top of the address space stops there, not wrapping to 0.
            let Some(next) = pa.checked_add(LARGE_PAGE_SIZE) else {
                break;
            };
            pa = next;
        }
    }
    // The image's 2 MiB window, in 4 KiB pages with per-section permissions.
    for pa in (image_2m.0..image_2m.1).step_by(PAGE_SIZE as usize) {
        let in_range = |r: (u64, u64)| (r.0..r.1).contains(&pa);
        let flags = if in_range(image.text) {
            F::PRESENT
        } else if in_range(image.rodata) {
            F::PRESENT | F::NO_EXECUTE
        } else {
            rw
        };
        map_4k(&mut mapper, &mut frames, pa, flags)?;
    }

    // SAFETY: NXE must be on before tables with NX bits are live; WP makes ring 0 honour
    // read-only pages. The new tables map everything currently in use (this code, the
    // stack in .bss, the BootInfo and the framebuffer) at the same addresses.
    unsafe {
        Efer::update(|f| f.insert(EferFlags::NO_EXECUTE_ENABLE));
        Cr0::update(|f| f.insert(Cr0Flags::WRITE_PROTECT));
        let frame = PhysFrame::<Size4KiB>::containing_address(PhysAddr::new(l4_pa.raw()));
        Cr3::write(frame, Cr3Flags::empty());
    }
    Ok(())
}

fn map_4k(mapper: &mut OffsetPageTable<'_>, frames: &mut GlobalFrames, pa: u64, flags: F) -> Result<(), PagingError> {
    let page = Page::<Size4KiB>::containing_address(VirtAddr::new(pa));
    let frame = PhysFrame::<Size4KiB>::containing_address(PhysAddr::new(pa));
    // SAFETY: identity mapping into tables that are not active yet.
    unsafe { mapper.map_to_with_table_flags(page, frame, flags, F::PRESENT | F::WRITABLE, frames) }?.ignore();
    Ok(())
}

/// The root (PML4) of the page tables the executing CPU uses.
pub fn active_root() -> super::addr::HostPhysAddr {
    super::addr::HostPhysAddr::new(Cr3::read().0.start_address().as_u64())
}

/// Copies the active root table into `dst`, a page the caller owns: a second root
/// that maps exactly what the active one maps (it shares every lower table), for a CPU
/// that must load CR3 while it can only hold a 32-bit value.
///
/// # Safety
/// `dst` must be a 4 KiB page of RAM the caller owns, mapped writable, and not the
/// active root.
pub unsafe fn copy_active_root(dst: super::addr::HostPhysAddr) {
    let src = active_root();
    // SAFETY: `src` is the active root table, read only; `dst` is the caller's page
    // (per the contract), a different frame, so the two references do not alias.
    unsafe {
        let from: [u64; 512] = *super::direct_map::table_mut(src);
        *super::direct_map::table_mut(dst) = from;
    }
}

/// Makes one page of the first 2 MiB executable and read-only (`executable`) or
/// writable and non-executable again, in the active tables, and flushes it from this
/// CPU's TLB. The AP trampoline's code page is executable only while APs start, so
/// the W^X rule holds at every moment: the page is never writable and executable.
pub fn set_low_page_executable(pa: u64, executable: bool) -> Result<(), PagingError> {
    if !(PAGE_SIZE..LARGE_PAGE_SIZE).contains(&pa) || !pa.is_multiple_of(PAGE_SIZE) {
        return Err(PagingError::AlreadyMapped(pa));
    }
    let root = active_root();
    // SAFETY: the active root table, reached through the identity map; only this
    // CPU edits the hypervisor's tables, and only at boot (APs wait in the trampoline
    // or idle while this runs, and never change a mapping).
    let l4 = unsafe { &mut *(root.raw() as *mut PageTable) };
    // SAFETY: physical memory is identity mapped (offset 0) by the active tables.
    let mut mapper = unsafe { OffsetPageTable::new(l4, VirtAddr::new(0)) };
    let page = Page::<Size4KiB>::containing_address(VirtAddr::new(pa));
    let flags = if executable { F::PRESENT } else { F::PRESENT | F::WRITABLE | F::NO_EXECUTE };
    // SAFETY: the page is low RAM the caller owns (the AP trampoline); changing its
    // permissions breaks no reference, since nothing holds one into it while it runs.
    unsafe { mapper.update_flags(page, flags) }.map_err(|_| PagingError::AlreadyMapped(pa))?.flush();
    Ok(())
}

/// Serialises changes to the live tables after boot.
static LIVE_EDITS: spin::Mutex<()> = spin::Mutex::new(());

/// Maps the device registers at `start..start + len` into the active tables, identity,
/// uncacheable (PCD and PWT: UC with the default PAT), writable and never executable:
/// for BARs placed above the identity map (a 64-bit BAR above the top of RAM). Pages
/// already mapped are left as they are (below the top of RAM the firmware's MTRRs
/// decide the memory type of MMIO holes, as for the 32-bit PCI hole).
pub fn map_device_registers(start: u64, len: u64) -> Result<(), PagingError> {
    use x86_64::structures::paging::mapper::Translate;
    let _edit = LIVE_EDITS.lock();
    let first = start & !(PAGE_SIZE - 1);
    let end = start.checked_add(len).ok_or(PagingError::OutOfMemory)?.next_multiple_of(PAGE_SIZE);
    let (l4_frame, _) = Cr3::read();
    // SAFETY: CR3 holds the hypervisor's own L4 table, identity mapped like every page
    // table frame; edits are serialised by `LIVE_EDITS`, and no other reference to the
    // tables is held while the hypervisor runs.
    let l4 = unsafe { &mut *(l4_frame.start_address().as_u64() as *mut PageTable) };
    // SAFETY: physical memory is identity mapped (offset 0) by the active tables.
    let mut mapper = unsafe { OffsetPageTable::new(l4, VirtAddr::new(0)) };
    let mut frames = GlobalFrames;
    let flags = F::PRESENT | F::WRITABLE | F::NO_EXECUTE | F::NO_CACHE | F::WRITE_THROUGH;
    for pa in (first..end).step_by(PAGE_SIZE as usize) {
        if mapper.translate_addr(VirtAddr::new(pa)).is_some() {
            continue;
        }
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(pa));
        let frame = PhysFrame::<Size4KiB>::containing_address(PhysAddr::new(pa));
        // SAFETY: an unmapped page becomes an identity mapping of device registers that
        // no Rust reference points into; the TLB entry for it is flushed.
        unsafe { mapper.map_to_with_table_flags(page, frame, flags, F::PRESENT | F::WRITABLE, &mut frames) }?.flush();
    }
    Ok(())
}
