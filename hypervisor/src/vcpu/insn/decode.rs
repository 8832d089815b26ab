//! x86 instruction decoding for the instructions that cause exits: enough to compute
//! their length (no NRIP save under QEMU TCG) and to emulate the MMIO forms that Linux
//! and firmware use. References: AMD APM Vol. 3 chapter 1 (instruction encoding),
//! Intel SDM Vol. 2 chapter 2 and appendix A (opcode maps).
//!
//! The decoder works on a byte slice of at most 15 bytes; a truncated slice is an
//! error, never a panic.
#![forbid(unsafe_code)]

use super::{DecodeError, Instruction, MemOperand, Op, Operand, RegOperand, Rep};
use crate::arch::regs::{CpuMode, Gpr, SegReg};
use crate::hw::AccessSize;

/// The architectural limit on instruction length.
pub const MAX_INSN_LEN: usize = 15;

#[derive(Debug, Default, Clone, Copy)]
struct Prefixes {
    lock: bool,
    rep: Option<Rep>,
    segment: Option<SegReg>,
    opsize: bool,
    addrsize: bool,
    /// The REX byte, only if it immediately precedes the opcode (64-bit mode only).
    rex: Option<u8>,
}

impl Prefixes {
    fn rex_bit(&self, bit: u8) -> u8 {
        match self.rex {
            Some(r) if r & bit != 0 => 8,
            _ => 0,
        }
    }
    fn w(&self) -> bool {
        self.rex.is_some_and(|r| r & 0x08 != 0)
    }
    fn r(&self) -> u8 {
        self.rex_bit(0x04)
    }
    fn x(&self) -> u8 {
        self.rex_bit(0x02)
    }
    fn b(&self) -> u8 {
        self.rex_bit(0x01)
    }
}

struct InsnCursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl InsnCursor<'_> {
    fn peek(&self) -> Result<u8, DecodeError> {
        if self.pos >= MAX_INSN_LEN {
            return Err(DecodeError::TooLong);
        }
        self.bytes.get(self.pos).copied().ok_or(DecodeError::Truncated)
    }
    fn next(&mut self) -> Result<u8, DecodeError> {
        let b = self.peek()?;
        self.pos = self.pos.wrapping_add(1);
        Ok(b)
    }
    /// Little-endian unsigned immediate of `n` bytes (n <= 8).
    fn uimm(&mut self, n: u8) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for i in 0..n {
            v |= u64::from(self.next()?) << (8 * u32::from(i));
        }
        Ok(v)
    }
    /// Sign-extended immediate of `n` bytes (1, 2 or 4).
    fn simm(&mut self, n: u8) -> Result<i64, DecodeError> {
        let v = self.uimm(n)?;
        Ok(match n {
            1 => i64::from(v as u8 as i8),
            2 => i64::from(v as u16 as i16),
            4 => i64::from(v as u32 as i32),
            _ => v as i64,
        })
    }
}

/// Decoding context: mode plus prefixes.
struct Ctx {
    mode: CpuMode,
    p: Prefixes,
}

impl Ctx {
    fn operand_size(&self) -> AccessSize {
        match self.mode {
            CpuMode::Long64 if self.p.w() => AccessSize::Qword,
            CpuMode::Long64 | CpuMode::Protected32 => {
                if self.p.opsize {
                    AccessSize::Word
                } else {
                    AccessSize::Dword
                }
            }
            CpuMode::Real | CpuMode::Protected16 => {
                if self.p.opsize {
                    AccessSize::Dword
                } else {
                    AccessSize::Word
                }
            }
        }
    }

    fn address_size(&self) -> AccessSize {
        match (self.mode, self.p.addrsize) {
            (CpuMode::Long64, false) => AccessSize::Qword,
            (CpuMode::Long64, true) | (CpuMode::Protected32, false) => AccessSize::Dword,
            (CpuMode::Protected32, true) => AccessSize::Word,
            (CpuMode::Real | CpuMode::Protected16, false) => AccessSize::Word,
            (CpuMode::Real | CpuMode::Protected16, true) => AccessSize::Dword,
        }
    }

    /// Bytes of an `Iz` immediate (16 or 32 bits; 64-bit operands take 32, sign-extended).
    fn iz_len(&self, size: AccessSize) -> u8 {
        if size == AccessSize::Word { 2 } else { 4 }
    }

    fn reg(&self, index: u8, size: AccessSize) -> RegOperand {
        let index = index & 0xf;
        if size == AccessSize::Byte && self.p.rex.is_none() && (4..8).contains(&index) {
            RegOperand { gpr: Gpr::from_index(index.wrapping_sub(4)), size, high_byte: true }
        } else {
            RegOperand { gpr: Gpr::from_index(index), size, high_byte: false }
        }
    }

    fn seg_or(&self, default: SegReg) -> SegReg {
        self.p.segment.unwrap_or(default)
    }

    /// Decodes ModRM (+SIB, displacement); returns the reg field (REX.R applied) and
    /// the r/m operand with `size`.
    fn modrm(&self, c: &mut InsnCursor<'_>, size: AccessSize) -> Result<(u8, Operand), DecodeError> {
        let m = c.next()?;
        let md = m >> 6;
        let reg = ((m >> 3) & 7) | self.p.r();
        let rm = m & 7;
        if md == 3 {
            return Ok((reg, Operand::Reg(self.reg(rm | self.p.b(), size))));
        }
        if self.address_size() == AccessSize::Word {
            return Ok((reg, Operand::Mem(self.modrm16(c, md, rm, size)?)));
        }
        let mut mem =
            MemOperand { segment: SegReg::Ds, base: None, index: None, scale: 1, disp: 0, rip_relative: false, size };
        let mut disp_len = match md {
            1 => 1,
            2 => 4,
            _ => 0,
        };
        if rm == 4 {
            let sib = c.next()?;
            let idx = ((sib >> 3) & 7) | self.p.x();
            mem.scale = 1 << (sib >> 6);
            mem.index = (idx != 4).then(|| Gpr::from_index(idx));
            let base = sib & 7;
            if base == 5 && md == 0 {
                disp_len = 4;
            } else {
                mem.base = Some(Gpr::from_index(base | self.p.b()));
            }
        } else if rm == 5 && md == 0 {
            disp_len = 4;
            mem.rip_relative = self.mode == CpuMode::Long64;
        } else {
            mem.base = Some(Gpr::from_index(rm | self.p.b()));
        }
        if disp_len != 0 {
            mem.disp = c.simm(disp_len)?;
        }
        let stack = matches!(mem.base, Some(Gpr::Rsp | Gpr::Rbp));
        mem.segment = self.seg_or(if stack { SegReg::Ss } else { SegReg::Ds });
        Ok((reg, Operand::Mem(mem)))
    }

    /// 16-bit addressing forms (APM Vol. 3 Table A-?; SDM Vol. 2 Table 2-1).
    fn modrm16(&self, c: &mut InsnCursor<'_>, md: u8, rm: u8, size: AccessSize) -> Result<MemOperand, DecodeError> {
        let (base, index) = match rm {
            0 => (Some(Gpr::Rbx), Some(Gpr::Rsi)),
            1 => (Some(Gpr::Rbx), Some(Gpr::Rdi)),
            2 => (Some(Gpr::Rbp), Some(Gpr::Rsi)),
            3 => (Some(Gpr::Rbp), Some(Gpr::Rdi)),
            4 => (Some(Gpr::Rsi), None),
            5 => (Some(Gpr::Rdi), None),
            6 if md == 0 => (None, None),
            6 => (Some(Gpr::Rbp), None),
            _ => (Some(Gpr::Rbx), None),
        };
        let disp = match (md, base) {
            (0, None) => c.simm(2)?,
            (1, _) => c.simm(1)?,
            (2, _) => c.simm(2)?,
            _ => 0,
        };
        let stack = base == Some(Gpr::Rbp);
        Ok(MemOperand {
            segment: self.seg_or(if stack { SegReg::Ss } else { SegReg::Ds }),
            base,
            index,
            scale: 1,
            disp,
            rip_relative: false,
            size,
        })
    }

    /// An immediate of `len` bytes, sign-extended to `size` and masked to it.
    fn imm(&self, c: &mut InsnCursor<'_>, len: u8, size: AccessSize) -> Result<Operand, DecodeError> {
        Ok(Operand::Imm((c.simm(len)? as u64) & size.mask()))
    }

    fn string_src(&self) -> Operand {
        Operand::Mem(MemOperand {
            segment: self.seg_or(SegReg::Ds),
            base: Some(Gpr::Rsi),
            index: None,
            scale: 1,
            disp: 0,
            rip_relative: false,
            size: AccessSize::Byte,
        })
    }

    fn string_dst(&self) -> Operand {
        Operand::Mem(MemOperand {
            segment: SegReg::Es,
            base: Some(Gpr::Rdi),
            index: None,
            scale: 1,
            disp: 0,
            rip_relative: false,
            size: AccessSize::Byte,
        })
    }
}

/// Sets the size of a memory operand (string operands are created before it is known).
fn sized(op: Operand, size: AccessSize) -> Operand {
    match op {
        Operand::Mem(m) => Operand::Mem(MemOperand { size, ..m }),
        other => other,
    }
}

const ALU_OPS: [Op; 8] = [Op::Add, Op::Or, Op::Adc, Op::Sbb, Op::And, Op::Sub, Op::Xor, Op::Cmp];

fn alu_op(index: u8) -> Op {
    ALU_OPS.get(usize::from(index & 7)).copied().unwrap_or(Op::Add)
}

/// Decodes one instruction from `bytes` as the CPU would in `mode`.
pub fn decode(bytes: &[u8], mode: CpuMode) -> Result<Instruction, DecodeError> {
    let mut c = InsnCursor { bytes, pos: 0 };
    let mut p = Prefixes::default();
    loop {
        let b = c.peek()?;
        match b {
            0xf0 => p.lock = true,
            0xf2 => p.rep = Some(Rep::Repne),
            0xf3 => p.rep = Some(Rep::Rep),
            0x26 => p.segment = Some(SegReg::Es),
            0x2e => p.segment = Some(SegReg::Cs),
            0x36 => p.segment = Some(SegReg::Ss),
            0x3e => p.segment = Some(SegReg::Ds),
            0x64 => p.segment = Some(SegReg::Fs),
            0x65 => p.segment = Some(SegReg::Gs),
            0x66 => p.opsize = true,
            0x67 => p.addrsize = true,
            0x40..=0x4f if mode == CpuMode::Long64 => {
                p.rex = Some(b);
                c.next()?;
                continue;
            }
            _ => break,
        }
        // A legacy prefix after REX makes the REX ineffective.
        p.rex = None;
        c.next()?;
    }
    let ctx = Ctx { mode, p };
    let os = ctx.operand_size();
    let mut insn = Instruction {
        len: 0,
        op: Op::Nop,
        operand_size: os,
        address_size: ctx.address_size(),
        rep: p.rep.unwrap_or(Rep::None),
        lock: p.lock,
        dst: Operand::None,
        src: Operand::None,
    };
    let opcode = c.next()?;
    match opcode {
        0x0f => decode_0f(&ctx, &mut c, &mut insn)?,
        // ALU r/m,r / r,r/m / acc,imm forms (00-3D).
        x if x < 0x40 && (x & 7) < 6 => {
            insn.op = alu_op(x >> 3);
            let size = if x & 1 == 0 { AccessSize::Byte } else { os };
            insn.operand_size = size;
            match x & 7 {
                0 | 1 => {
                    let (reg, rm) = ctx.modrm(&mut c, size)?;
                    insn.dst = rm;
                    insn.src = Operand::Reg(ctx.reg(reg, size));
                }
                2 | 3 => {
                    let (reg, rm) = ctx.modrm(&mut c, size)?;
                    insn.dst = Operand::Reg(ctx.reg(reg, size));
                    insn.src = rm;
                }
                _ => {
                    insn.dst = Operand::Reg(ctx.reg(0, size));
                    let len = if size == AccessSize::Byte { 1 } else { ctx.iz_len(size) };
                    insn.src = ctx.imm(&mut c, len, size)?;
                }
            }
        }
        0x80 | 0x81 | 0x83 => {
            let size = if opcode == 0x80 { AccessSize::Byte } else { os };
            insn.operand_size = size;
            let (reg, rm) = ctx.modrm(&mut c, size)?;
            insn.op = alu_op(reg);
            insn.dst = rm;
            let len = if opcode == 0x81 { ctx.iz_len(size) } else { 1 };
            insn.src = ctx.imm(&mut c, len, size)?;
        }
        0x84..=0x8b => {
            let size = if opcode & 1 == 0 { AccessSize::Byte } else { os };
            insn.operand_size = size;
            let (reg, rm) = ctx.modrm(&mut c, size)?;
            let r = Operand::Reg(ctx.reg(reg, size));
            (insn.op, insn.dst, insn.src) = match opcode {
                0x84 | 0x85 => (Op::Test, rm, r),
                0x86 | 0x87 => (Op::Xchg, rm, r),
                0x88 | 0x89 => (Op::Mov, rm, r),
                _ => (Op::Mov, r, rm),
            };
        }
        0x90 => insn.op = if p.rep == Some(Rep::Rep) { Op::Pause } else { Op::Nop },
        0xa0..=0xa3 => {
            let size = if opcode & 1 == 0 { AccessSize::Byte } else { os };
            insn.operand_size = size;
            let addr_len = insn.address_size.bytes();
            let moffs = Operand::Mem(MemOperand {
                segment: ctx.seg_or(SegReg::Ds),
                base: None,
                index: None,
                scale: 1,
                disp: c.uimm(addr_len)? as i64,
                rip_relative: false,
                size,
            });
            let acc = Operand::Reg(ctx.reg(0, size));
            insn.op = Op::Mov;
            (insn.dst, insn.src) = if opcode < 0xa2 { (acc, moffs) } else { (moffs, acc) };
        }
        0xa4..=0xa5 | 0xaa..=0xad | 0x6c..=0x6f => {
            let size = match opcode & 1 {
                0 => AccessSize::Byte,
                _ if opcode < 0x70 && os == AccessSize::Qword => AccessSize::Dword,
                _ => os,
            };
            insn.operand_size = size;
            let acc = Operand::Reg(ctx.reg(0, size));
            let dx = Operand::Reg(ctx.reg(Gpr::Rdx.index(), AccessSize::Word));
            (insn.op, insn.dst, insn.src) = match opcode {
                0xa4 | 0xa5 => (Op::Movs, ctx.string_dst(), ctx.string_src()),
                0xaa | 0xab => (Op::Stos, ctx.string_dst(), acc),
                0xac | 0xad => (Op::Lods, acc, ctx.string_src()),
                0x6c | 0x6d => (Op::Ins, ctx.string_dst(), dx),
                _ => (Op::Outs, dx, ctx.string_src()),
            };
            insn.dst = sized(insn.dst, size);
            insn.src = sized(insn.src, size);
        }
        0xa8 | 0xa9 => {
            let size = if opcode == 0xa8 { AccessSize::Byte } else { os };
            insn.operand_size = size;
            insn.op = Op::Test;
            insn.dst = Operand::Reg(ctx.reg(0, size));
            let len = if size == AccessSize::Byte { 1 } else { ctx.iz_len(size) };
            insn.src = ctx.imm(&mut c, len, size)?;
        }
        0xb0..=0xbf => {
            let size = if opcode < 0xb8 { AccessSize::Byte } else { os };
            insn.operand_size = size;
            insn.op = Op::Mov;
            insn.dst = Operand::Reg(ctx.reg((opcode & 7) | p.b(), size));
            insn.src = Operand::Imm(c.uimm(size.bytes())?);
        }
        0xc6 | 0xc7 => {
            let size = if opcode == 0xc6 { AccessSize::Byte } else { os };
            insn.operand_size = size;
            let (reg, rm) = ctx.modrm(&mut c, size)?;
            if reg & 7 != 0 {
                return Err(DecodeError::Unsupported { opcode: u16::from(opcode) });
            }
            insn.op = Op::Mov;
            insn.dst = rm;
            let len = if size == AccessSize::Byte { 1 } else { ctx.iz_len(size) };
            insn.src = ctx.imm(&mut c, len, size)?;
        }
        0xe4..=0xe7 | 0xec..=0xef => {
            let size = match opcode & 1 {
                0 => AccessSize::Byte,
                _ if os == AccessSize::Qword => AccessSize::Dword,
                _ => os,
            };
            insn.operand_size = size;
            let port = if opcode < 0xe8 {
                Operand::Imm(c.uimm(1)?)
            } else {
                Operand::Reg(ctx.reg(Gpr::Rdx.index(), AccessSize::Word))
            };
            let acc = Operand::Reg(ctx.reg(0, size));
            (insn.op, insn.dst, insn.src) = if opcode & 2 == 0 { (Op::In, acc, port) } else { (Op::Out, port, acc) };
        }
        0xf4 => insn.op = Op::Hlt,
        0xf6 | 0xf7 => {
            let size = if opcode == 0xf6 { AccessSize::Byte } else { os };
            insn.operand_size = size;
            let (reg, rm) = ctx.modrm(&mut c, size)?;
            if reg & 6 != 0 {
                return Err(DecodeError::Unsupported { opcode: u16::from(opcode) });
            }
            insn.op = Op::Test;
            insn.dst = rm;
            let len = if size == AccessSize::Byte { 1 } else { ctx.iz_len(size) };
            insn.src = ctx.imm(&mut c, len, size)?;
        }
        _ => {
            return Err(DecodeError::Unsupported { opcode: u16::from(opcode) });
        }
    }
    insn.len = u8::try_from(c.pos).map_err(|_| DecodeError::TooLong)?;
    if usize::from(insn.len) > MAX_INSN_LEN {
        return Err(DecodeError::TooLong);
    }
    Ok(insn)
}

fn decode_0f(ctx: &Ctx, c: &mut InsnCursor<'_>, insn: &mut Instruction) -> Result<(), DecodeError> {
    let op2 = c.next()?;
    let unsupported = DecodeError::Unsupported { opcode: 0x0f00 | u16::from(op2) };
    insn.op = match op2 {
        0x01 => match c.next()? {
            0xc1 => Op::Vmcall,
            0xd1 => Op::Xsetbv,
            0xd9 => Op::Vmmcall,
            // VMRUN, VMLOAD, VMSAVE, STGI, CLGI, SKINIT, INVLPGA.
            0xd8 | 0xda..=0xdf => Op::Svm,
            0xf9 => Op::Rdtscp,
            _ => return Err(DecodeError::Unsupported { opcode: 0x0f01 }),
        },
        0x09 => Op::Wbinvd,
        0x30 => Op::Wrmsr,
        0x31 => Op::Rdtsc,
        0x32 => Op::Rdmsr,
        0xa2 => Op::Cpuid,
        0xb6 | 0xb7 | 0xbe | 0xbf => {
            let src_size = if op2 & 1 == 0 { AccessSize::Byte } else { AccessSize::Word };
            let (reg, rm) = ctx.modrm(c, src_size)?;
            insn.dst = Operand::Reg(ctx.reg(reg, insn.operand_size));
            insn.src = rm;
            if op2 < 0xbe { Op::Movzx } else { Op::Movsx }
        }
        _ => return Err(unsupported),
    };
    Ok(())
}
