//! Guest instructions: the decoder ([`decode`]), the guest page-table walker and
//! instruction fetch ([`walk`]), and ALU semantics for emulated memory operands
//! ([`alu`]). Used for next-RIP computation when the CPU does not report it and for
//! MMIO emulation when it does not report the faulting instruction.
#![forbid(unsafe_code)]

pub mod alu;
pub mod decode;
pub mod walk;

pub use decode::{MAX_INSN_LEN, decode};

/// The length of the instruction at the start of `bytes` if it is one of `expected`
/// in its plain encoding (no prefixes): what [`decode`] would say, without decoding
/// (these bytes mean the same instruction and length in every mode; the tests check
/// every byte sequence this answers for against the decoder). `None` means "decode it".
pub fn plain_length(bytes: &[u8], expected: &[Op]) -> Option<u8> {
    let (op, len) = match bytes {
        [0x0f, 0xa2, ..] => (Op::Cpuid, 2),
        [0x0f, 0x32, ..] => (Op::Rdmsr, 2),
        [0x0f, 0x30, ..] => (Op::Wrmsr, 2),
        [0x0f, 0x31, ..] => (Op::Rdtsc, 2),
        [0x0f, 0x09, ..] => (Op::Wbinvd, 2),
        [0x0f, 0x01, 0xf9, ..] => (Op::Rdtscp, 3),
        [0x0f, 0x01, 0xd9, ..] => (Op::Vmmcall, 3),
        [0x0f, 0x01, 0xc1, ..] => (Op::Vmcall, 3),
        [0x0f, 0x01, 0xd1, ..] => (Op::Xsetbv, 3),
        [0xf4, ..] => (Op::Hlt, 1),
        [0xf3, 0x90, ..] => (Op::Pause, 2),
        _ => return None,
    };
    expected.contains(&op).then_some(len)
}

use crate::arch::regs::{CpuMode, Gpr, RegisterFile, SegReg};
use crate::hw::AccessSize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end before the instruction does.
    Truncated,
    /// The instruction would exceed 15 bytes.
    TooLong,
    /// A valid opcode the decoder does not model.
    Unsupported { opcode: u16 },
}

/// What an instruction does (only the operations exit handling cares about).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Mov,
    Movzx,
    Movsx,
    Movs,
    Stos,
    Lods,
    Add,
    Or,
    Adc,
    Sbb,
    And,
    Sub,
    Xor,
    Cmp,
    Test,
    Xchg,
    Cpuid,
    Rdmsr,
    Wrmsr,
    Rdtsc,
    Rdtscp,
    Vmmcall,
    Vmcall,
    /// VMRUN, VMLOAD, VMSAVE, STGI, CLGI, SKINIT or INVLPGA.
    Svm,
    Hlt,
    In,
    Out,
    Ins,
    Outs,
    Xsetbv,
    Pause,
    Nop,
    Wbinvd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rep {
    None,
    /// F3: REP / REPE.
    Rep,
    /// F2: REPNE.
    Repne,
}

/// A register operand. `high_byte` selects AH/CH/DH/BH (bits 15:8 of `gpr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegOperand {
    pub gpr: Gpr,
    pub size: AccessSize,
    pub high_byte: bool,
}

/// A memory operand: `segment:[base + index * scale + disp]` (or `[next_rip + disp]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemOperand {
    pub segment: SegReg,
    pub base: Option<Gpr>,
    pub index: Option<Gpr>,
    pub scale: u8,
    pub disp: i64,
    pub rip_relative: bool,
    pub size: AccessSize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operand {
    None,
    Reg(RegOperand),
    /// Already sign- or zero-extended as the instruction defines and masked to the
    /// operand size.
    Imm(u64),
    Mem(MemOperand),
}

/// A decoded instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instruction {
    /// 1..=15 bytes.
    pub len: u8,
    pub op: Op,
    /// Size of the destination (for MOVZX/MOVSX the source size is in the memory
    /// or register operand).
    pub operand_size: AccessSize,
    pub address_size: AccessSize,
    pub rep: Rep,
    pub lock: bool,
    pub dst: Operand,
    pub src: Operand,
}

impl Instruction {
    /// The (first) memory operand, if any.
    pub fn mem_operand(&self) -> Option<&MemOperand> {
        match (&self.dst, &self.src) {
            (Operand::Mem(m), _) | (_, Operand::Mem(m)) => Some(m),
            _ => None,
        }
    }
}

/// The offset part of a memory operand's address (before the segment base).
pub fn effective_address(m: &MemOperand, address_size: AccessSize, regs: &impl RegisterFile, next_rip: u64) -> u64 {
    let mut ea = m.disp as u64;
    if m.rip_relative {
        ea = ea.wrapping_add(next_rip);
    }
    if let Some(b) = m.base {
        ea = ea.wrapping_add(regs.gpr(b));
    }
    if let Some(i) = m.index {
        ea = ea.wrapping_add(regs.gpr(i).wrapping_mul(u64::from(m.scale)));
    }
    ea & address_size.mask()
}

/// The linear address of a memory operand. In 64-bit mode only FS and GS have a base.
/// Segment limits and types are not checked.
pub fn linear_address(m: &MemOperand, address_size: AccessSize, regs: &impl RegisterFile, next_rip: u64) -> u64 {
    let ea = effective_address(m, address_size, regs, next_rip);
    let mode = regs.mode();
    let base = match (mode, m.segment) {
        (CpuMode::Long64, SegReg::Fs | SegReg::Gs) | (CpuMode::Real, _) => regs.segment(m.segment).base,
        (CpuMode::Long64, _) => 0,
        _ => regs.segment(m.segment).base,
    };
    let la = base.wrapping_add(ea);
    if mode == CpuMode::Long64 { la } else { la & 0xffff_ffff }
}

/// Reads a register operand (zero-extended).
pub fn read_reg(regs: &impl RegisterFile, r: &RegOperand) -> u64 {
    let v = regs.gpr(r.gpr);
    if r.high_byte { (v >> 8) & 0xff } else { v & r.size.mask() }
}

/// Writes a register operand with x86 semantics: 32-bit writes zero the upper half,
/// 8- and 16-bit writes preserve the other bits.
pub fn write_reg(regs: &mut impl RegisterFile, r: &RegOperand, value: u64) {
    let old = regs.gpr(r.gpr);
    let new = match (r.size, r.high_byte) {
        (_, true) => (old & !0xff00) | ((value & 0xff) << 8),
        (AccessSize::Byte, false) => (old & !0xff) | (value & 0xff),
        (AccessSize::Word, false) => (old & !0xffff) | (value & 0xffff),
        (AccessSize::Dword, false) => value & 0xffff_ffff,
        (AccessSize::Qword, false) => value,
    };
    regs.set_gpr(r.gpr, new);
}

/// Sign-extends the low `size` bits of `value` to 64 bits.
pub fn sign_extend(value: u64, size: AccessSize) -> u64 {
    let shift = 64u32.wrapping_sub(size.bits());
    (((value << shift) as i64) >> shift) as u64
}

#[cfg(test)]
mod tests;
