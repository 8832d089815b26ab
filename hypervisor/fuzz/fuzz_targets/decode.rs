//! Feeds arbitrary bytes to the instruction decoder in every CPU mode. The decoder must
//! never panic, and a decoded instruction is 1..=15 bytes long and no longer than the
//! input. Decoded ALU operations are also run through the flag model.
#![no_main]

use hypervisor::arch::regs::CpuMode;
use hypervisor::hw::AccessSize;
use hypervisor::vcpu::insn::{alu::alu, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for mode in [CpuMode::Long64, CpuMode::Protected32, CpuMode::Protected16, CpuMode::Real] {
        if let Ok(insn) = decode(data, mode) {
            assert!((1..=15).contains(&insn.len));
            assert!(usize::from(insn.len) <= data.len());
            assert!(matches!(insn.address_size, AccessSize::Word | AccessSize::Dword | AccessSize::Qword));
            let _ = alu(insn.op, u64::MAX, 0x8000_0000_0000_0001, insn.operand_size, 0x202);
        }
    }
});
