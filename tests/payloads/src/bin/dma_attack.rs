//! A hostile payload that owns a PCI device: QEMU's `edu` test device, whose DMA
//! engine copies between guest-programmed bus addresses and a 4 KiB buffer on the
//! device. It finds the device through the VM's PCI configuration space (0xCF8/0xCFC),
//! proves DMA works inside its own memory, then points DMA at the hypervisor image and
//! at addresses above its RAM. The IOMMU must block every such transfer; the
//! hypervisor stops this VM on the fault (VT-d), or the transfer silently goes nowhere
//! (QEMU's AMD-Vi aborts walks of empty entries without an event).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod payload {
    use core::arch::asm;
    use core::ptr::{read_volatile, write_volatile};

    use payloads::{check, hypercall, println};

    /// Physical address the hypervisor is linked at (see hypervisor/linker.ld).
    const HYPERVISOR_IMAGE: u64 = 0x400_0000;
    const EDU_IDS: u32 = 0x11e8_1234;
    /// Registers in BAR0 (QEMU docs/specs/edu.txt).
    const IDENT: u64 = 0x00;
    const LIVENESS: u64 = 0x04;
    const DMA_SRC: u64 = 0x80;
    const DMA_DST: u64 = 0x88;
    const DMA_COUNT: u64 = 0x90;
    const DMA_CMD: u64 = 0x98;
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

    fn find_edu() -> Option<u8> {
        (0..32u8).find(|&dev| config_read(dev, 0) == EDU_IDS)
    }

    #[unsafe(no_mangle)]
    extern "Rust" fn payload_main(ram_bytes: u64) -> ! {
        println!("dma-attack payload: RAM is {:#x} bytes", ram_bytes);
        let Some(dev) = find_edu() else {
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
        payloads::summary();

        // The attack: device DMA outside this VM's memory.
        let targets = [HYPERVISOR_IMAGE, ram_bytes + 0x20_0000, 0x0ff0_0000, 0x1_0000_0000, 0x7f_ffff_f000];
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
