//! A hostile payload that owns two PCI devices: QEMU's `edu` test device, whose DMA
//! engine copies between guest-programmed bus addresses and a 4 KiB buffer on the
//! device, and an `e1000e` NIC (see `nic`). It finds them through the VM's PCI
//! configuration space (0xCF8/0xCFC), proves DMA works inside its own memory and that
//! the edu device's MSI reaches it (on the vector it programs into its virtual MSI
//! capability, not on any other), then points the NIC's receive and transmit
//! descriptors, and the edu engine, at the hypervisor image and at addresses above its
//! RAM. The IOMMU must block every such transfer; the hypervisor stops this VM on the
//! fault (VT-d), or the transfer silently goes nowhere (QEMU's AMD-Vi aborts walks of
//! empty entries without an event).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod nic;

#[cfg(target_os = "none")]
mod payload {
    use core::arch::asm;
    use core::ptr::{read_volatile, write_volatile};

    use payloads::traps::{self, DEVICE_VECTORS};
    use payloads::{check, hypercall, println};

    /// Physical address the hypervisor is linked at (see hypervisor/linker.ld).
    const HYPERVISOR_IMAGE: u64 = 0x400_0000;
    const EDU_IDS: u32 = 0x11e8_1234;
    const NIC_IDS: u32 = 0x10d3_8086;
    /// Registers in BAR0 (QEMU docs/specs/edu.txt).
    const IDENT: u64 = 0x00;
    const LIVENESS: u64 = 0x04;
    const DMA_SRC: u64 = 0x80;
    const DMA_DST: u64 = 0x88;
    const DMA_COUNT: u64 = 0x90;
    const DMA_CMD: u64 = 0x98;
    const IRQ_STATUS: u64 = 0x24;
    const IRQ_RAISE: u64 = 0x60;
    const IRQ_ACK: u64 = 0x64;
    /// PCI capability id of MSI.
    const CAP_MSI: u8 = 0x05;
    /// Interrupts raised back to back for the delivery and exit-count check.
    const MSI_ROUNDS: u32 = 8;
    const CMD_RUN: u64 = 1;
    const CMD_TO_RAM: u64 = 2;
    /// The device's DMA buffer, as a bus address seen by the device itself.
    const EDU_BUFFER: u64 = 0x40000;
    const LEN: usize = 4096;
    /// Bytes per transfer: QEMU 7.2's range check rejects a transfer that ends exactly
    /// at the end of the device buffer (and aborts QEMU), so stay below 4 KiB.
    const DMA_LEN: usize = 2048;

    #[repr(C, align(4096))]
    struct Page([u8; LEN]);

    static mut SOURCE: Page = Page([0; LEN]);
    static mut BACK: Page = Page([0; LEN]);

    fn config_read(dev: u8, reg: u8) -> u32 {
        let address = 0x8000_0000u32 | u32::from(dev) << 11 | u32::from(reg & 0xfc);
        let value: u32;
        // SAFETY: port I/O to the VM's virtual PCI host; no memory is touched.
        unsafe {
            asm!("out dx, eax", in("dx") 0xcf8u16, in("eax") address);
            asm!("in eax, dx", in("dx") 0xcfcu16, out("eax") value);
        }
        value
    }

    fn config_write(dev: u8, reg: u8, value: u32) {
        let address = 0x8000_0000u32 | u32::from(dev) << 11 | u32::from(reg & 0xfc);
        // SAFETY: as above.
        unsafe {
            asm!("out dx, eax", in("dx") 0xcf8u16, in("eax") address);
            asm!("out dx, eax", in("dx") 0xcfcu16, in("eax") value);
        }
    }

    struct Edu(u64);

    impl Edu {
        fn read32(&self, reg: u64) -> u32 {
            // SAFETY: BAR0 of the VM's own device, mapped by the hypervisor (uncached MMIO).
            unsafe { read_volatile((self.0 + reg) as *const u32) }
        }
        fn write32(&self, reg: u64, value: u32) {
            // SAFETY: as above.
            unsafe { write_volatile((self.0 + reg) as *mut u32, value) }
        }
        fn read64(&self, reg: u64) -> u64 {
            // SAFETY: as above.
            unsafe { read_volatile((self.0 + reg) as *const u64) }
        }
        fn write64(&self, reg: u64, value: u64) {
            // SAFETY: as above.
            unsafe { write_volatile((self.0 + reg) as *mut u64, value) }
        }

        /// Runs one transfer and waits for the engine to finish; false on timeout.
        fn dma(&self, src: u64, dst: u64, cmd: u64) -> bool {
            self.write64(DMA_SRC, src);
            self.write64(DMA_DST, dst);
            self.write64(DMA_COUNT, DMA_LEN as u64);
            self.write64(DMA_CMD, cmd | CMD_RUN);
            for _ in 0..200_000_000u64 {
                if self.read64(DMA_CMD) & CMD_RUN == 0 {
                    return true;
                }
                core::hint::spin_loop();
            }
            false
        }
    }

    fn find_capability(dev: u8, id: u8) -> Option<u8> {
        if config_read(dev, 0x04) & (1 << 20) == 0 {
            return None;
        }
        let mut ptr = config_read(dev, 0x34) as u8;
        for _ in 0..48 {
            if ptr < 0x40 {
                return None;
            }
            let header = config_read(dev, ptr);
            if header as u8 == id {
                return Some(ptr);
            }
            ptr = (header >> 8) as u8;
        }
        None
    }

    /// Waits until the handler counts on `DEVICE_VECTORS` move from `before`.
    fn wait_irqs(before: [u32; 2], spins: u64) -> [u32; 2] {
        for _ in 0..spins {
            let now = traps::device_irqs();
            if now != before {
                return now;
            }
            core::hint::spin_loop();
        }
        traps::device_irqs()
    }

    /// The device's MSI capability as the VM sees it: where its registers are.
    struct Msi {
        dev: u8,
        at: u8,
        data: u8,
    }

    impl Msi {
        fn program(&self, vector: u8, enable: bool) {
            let header = config_read(self.dev, self.at);
            config_write(self.dev, self.at + 4, 0xfee0_0000); // APIC id 0, physical, fixed
            if self.data == self.at + 12 {
                config_write(self.dev, self.at + 8, 0);
            }
            config_write(self.dev, self.data, u32::from(vector));
            let control = (header >> 16) & !1 | u32::from(enable);
            config_write(self.dev, self.at, control << 16 | (header & 0xffff));
        }
    }

    /// The device raises its interrupt (edu: a write to 0x60); returns the handler
    /// counts after waiting for it, and acknowledges it on the device.
    fn raise(edu: &Edu, spins: u64) -> [u32; 2] {
        let before = traps::device_irqs();
        edu.write32(IRQ_RAISE, 1);
        let after = wait_irqs(before, spins);
        edu.write32(IRQ_ACK, edu.read32(IRQ_STATUS));
        after
    }

    /// MSI through the VM's virtual capability: delivered on the guest's vector, once
    /// per interrupt, following a vector change, silent while disabled.
    fn msi_checks(dev: u8, edu: &Edu) {
        let Some(at) = find_capability(dev, CAP_MSI) else {
            check("msi_capability", false, format_args!("no MSI capability on the virtual device"));
            return;
        };
        let is_64bit = config_read(dev, at) & (1 << 23) != 0;
        check("msi_capability", true, format_args!(""));
        let msi = Msi { dev, at, data: if is_64bit { at + 12 } else { at + 8 } };
        let [v1, v2] = DEVICE_VECTORS;
        // SAFETY: the IDT handles both device vectors; interrupts on for the checks.
        unsafe { asm!("sti") };
        msi.program(v1, true);
        let first = raise(edu, 50_000_000);
        check("msi_delivered_on_guest_vector", first == [1, 0], format_args!("handler counts {first:?}"));
        // Back to back, bracketed by the exit counters (VM_INFO logs them).
        hypercall::vm_info();
        let mut delivered = 0;
        for _ in 0..MSI_ROUNDS {
            let before = traps::device_irqs()[0];
            delivered += u32::from(raise(edu, 50_000_000)[0] == before + 1);
        }
        hypercall::vm_info();
        check("msi_each_interrupt_once", delivered == MSI_ROUNDS, format_args!("{delivered} of {MSI_ROUNDS}"));
        msi.program(v2, true);
        let before = traps::device_irqs();
        let moved = raise(edu, 50_000_000);
        check("msi_vector_change", moved == [before[0], before[1] + 1], format_args!("{before:?} -> {moved:?}"));
        msi.program(v2, false);
        let before = traps::device_irqs();
        let silent = raise(edu, 2_000_000);
        check("msi_disabled_is_silent", silent == before, format_args!("{before:?} -> {silent:?}"));
        msi.program(v1, true);
        let before = traps::device_irqs();
        let back = raise(edu, 50_000_000);
        check("msi_reenabled", back == [before[0] + 1, before[1]], format_args!("{before:?} -> {back:?}"));
        // MSI stays enabled: tearing the VM down must remove its route. No interrupt
        // is taken for the rest of the run.
        // SAFETY: interrupts off; the device raises none from here on.
        unsafe { asm!("cli") };
        println!(
            "dma-attack payload: MSI checks done ({} interrupts handled)",
            traps::device_irqs()[0] + traps::device_irqs()[1]
        );
    }

    fn find(ids: u32) -> Option<u8> {
        (0..32u8).find(|&dev| config_read(dev, 0) == ids)
    }

    /// The NIC, its BAR0 placed by the hypervisor, memory decode and bus mastering on.
    fn nic() -> Option<crate::nic::Nic> {
        let dev = find(NIC_IDS)?;
        let bar0 = u64::from(config_read(dev, 0x10) & !0xf);
        config_write(dev, 0x04, config_read(dev, 0x04) & 0xffff | 0x6);
        Some(crate::nic::Nic::init(bar0))
    }

    #[unsafe(no_mangle)]
    extern "Rust" fn payload_main(ram_bytes: u64) -> ! {
        println!("dma-attack payload: RAM is {:#x} bytes", ram_bytes);
        let Some(dev) = find(EDU_IDS) else {
            check("dma_device_on_virtual_bus", false, format_args!("no edu device on bus 0"));
            payloads::summary();
            hypercall::shutdown(1)
        };
        check("dma_device_on_virtual_bus", true, format_args!(""));
        let bar0 = u64::from(config_read(dev, 0x10) & !0xf);
        check("dma_bar_preassigned", bar0 >= 0xC000_0000, format_args!("BAR0={bar0:#x}"));
        // Bus mastering is the driver's to turn on.
        let command = config_read(dev, 0x04) & 0xffff;
        config_write(dev, 0x04, command | 0x6);
        let edu = Edu(bar0);
        let ident = edu.read32(IDENT);
        check("dma_device_ident", ident & 0xff == 0xed, format_args!("ident={ident:#x}"));
        edu.write32(LIVENESS, 0x1234_5678);
        let live = edu.read32(LIVENESS);
        check("dma_device_mmio", live == !0x1234_5678u32, format_args!("liveness={live:#x}"));

        // Inside its own memory: RAM -> device -> RAM must round-trip.
        let source = &raw mut SOURCE;
        let back = &raw mut BACK;
        // SAFETY: single-threaded payload; the statics are only used here.
        unsafe {
            for (i, b) in (*source).0.iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(7) ^ 0x3c;
            }
        }
        let (src_gpa, back_gpa) = (source as u64, back as u64);
        let done = edu.dma(src_gpa, EDU_BUFFER, 0) && edu.dma(EDU_BUFFER, back_gpa, CMD_TO_RAM);
        // SAFETY: the device finished writing (or timed out); read through volatile.
        let same = unsafe { read_volatile(back) }.0[..DMA_LEN] == unsafe { read_volatile(source) }.0[..DMA_LEN];
        // Reported, not checked: under QEMU 7.2's AMD-Vi even this transfer is blocked
        // (see tests/tests/dma.rs). The test harness knows which IOMMU it runs under.
        let verdict = if done && same { "works" } else { "is blocked" };
        println!("dma-attack payload: DMA inside own memory {verdict} (done={done})");
        msi_checks(dev, &edu);
        let nic = nic();
        check("nic_on_virtual_bus", nic.is_some(), format_args!("no e1000e on bus 0"));
        if let Some(nic) = &nic {
            crate::nic::legitimate_transfer(nic);
        }
        payloads::summary();

        // The attack: device DMA outside this VM's memory, through the NIC's
        // descriptors first, then the edu engine.
        let targets = [HYPERVISOR_IMAGE, ram_bytes + 0x20_0000, 0x0ff0_0000, 0x1_0000_0000, 0x7f_ffff_f000];
        if let Some(nic) = &nic {
            crate::nic::attack(nic, &targets);
        }
        for target in targets {
            println!("dma-attack payload: device DMA read from {target:#x}");
            let finished = edu.dma(target, EDU_BUFFER, 0) && edu.dma(EDU_BUFFER, back_gpa, CMD_TO_RAM);
            // SAFETY: as above.
            let got = unsafe { read_volatile(back) }.0;
            // SAFETY: as above.
            let pattern = unsafe { read_volatile(source) }.0;
            let got = &got[..DMA_LEN];
            let blocked = got == &pattern[..DMA_LEN] || got.iter().all(|b| *b == 0 || *b == 0xff);
            if finished && !blocked {
                println!("DMA ATTACK SUCCEEDED: read {target:#x}: {:02x?}", &got[..16]);
            }
            println!("dma-attack payload: device DMA write to {target:#x}");
            edu.dma(EDU_BUFFER, target, CMD_TO_RAM);
        }
        println!("dma-attack payload: every transfer outside this VM was blocked without a fault");
        hypercall::shutdown(0)
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("This is a guest payload; it runs inside a Bulkhead VM (see tests/).");
}
