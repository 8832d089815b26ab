//! Instruction emulation for exits that need it: string port I/O (INS/OUTS, one exit
//! for up to [`MAX_ITERATIONS`] elements) and MMIO on nested page faults.
#![forbid(unsafe_code)]
// The error side is the exit's final action, produced at most once per exit.
#![allow(clippy::result_large_err)]

use super::{VmEnv, decode_at_rip};
use crate::arch::exit::{Event, Exit, ExitAction, IoDirection, IoExit, NextRip, NpfInfo, StopReason};
use crate::arch::regs::{Gpr, RegisterFile, rflags};
use crate::hw::AccessSize;
use crate::memory::addr::GuestPhysAddr;
use crate::vcpu::insn::walk::{self, Access, WalkError};
use crate::vcpu::insn::{self, Instruction, MemOperand, Op, Operand, RegOperand, alu};

/// Elements a REP string instruction may move per exit; the rest continues after the
/// guest re-executes the (restartable) instruction, so interrupts are not held off.
pub const MAX_ITERATIONS: u64 = 1024;

type Emulated<T> = Result<T, ExitAction>;

fn after(exit: &Exit, i: &Instruction) -> NextRip {
    exit.next_rip.map_or(NextRip::By(i.len), NextRip::To)
}

fn emulation_failed(exit: &Exit, regs: &impl RegisterFile, env: &VmEnv<'_>) -> ExitAction {
    let bytes = if exit.insn.is_empty() { walk::fetch(regs, &*env.memory).unwrap_or_default() } else { exit.insn };
    log::error!(target: "vcpu", "vm{} cannot emulate {:02x?} for {:?}; registers: {:?}",
        env.vm.id, bytes.as_slice(), exit.reason, regs.snapshot());
    ExitAction::Stop(StopReason::EmulationFailed { rip: regs.rip(), insn: bytes })
}

fn translate(regs: &mut impl RegisterFile, env: &VmEnv<'_>, la: u64, write: bool) -> Emulated<GuestPhysAddr> {
    let access = Access { write, user: regs.cpl() == 3, fetch: false };
    walk::translate(regs, &*env.memory, la, access).map_err(|e| match e {
        WalkError::PageFault(pf) => {
            regs.set_cr2(pf.address);
            ExitAction::Inject(Event::page_fault(pf.error_code))
        }
        WalkError::NonCanonical => ExitAction::inject_gp(),
        WalkError::TableNotInMemory(gpa) => ExitAction::Stop(StopReason::NestedPageFault {
            gpa,
            info: NpfInfo { in_guest_walk: true, ..NpfInfo::default() },
        }),
        WalkError::UnsupportedMode => ExitAction::Stop(StopReason::UnsupportedPagingMode),
    })
}

/// Reads guest-physical memory: RAM through the accessor, anything else through the
/// MMIO bus (which answers all-ones for holes).
fn read_phys(env: &mut VmEnv<'_>, gpa: GuestPhysAddr, size: AccessSize) -> u64 {
    let mut buf = [0u8; 8];
    if let Some(bytes) = buf.get_mut(..usize::from(size.bytes()))
        && env.memory.is_ram(gpa)
        && env.memory.read_bytes(gpa, bytes).is_ok()
    {
        return u64::from_le_bytes(buf);
    }
    env.mmio.read(gpa, size)
}

fn write_phys(env: &mut VmEnv<'_>, gpa: GuestPhysAddr, size: AccessSize, value: u64) {
    let bytes = value.to_le_bytes();
    if let Some(bytes) = bytes.get(..usize::from(size.bytes()))
        && env.memory.is_ram(gpa)
    {
        if env.memory.write_bytes(gpa, bytes).is_err() {
            let vm = env.vm.id;
            crate::limited!(
                crate::log_limit::Source::Emulation,
                vm,
                log::warn!(target: "vcpu", "vm{vm} dropped write crossing a region at {gpa}")
            );
        }
        return;
    }
    env.mmio.write(gpa, size, value);
}

/// Whether `[la, la + size)` stays in one 4 KiB page.
fn in_one_page(la: u64, size: AccessSize) -> bool {
    (la & 0xfff).wrapping_add(u64::from(size.bytes())) <= 0x1000
}

fn read_linear(regs: &mut impl RegisterFile, env: &mut VmEnv<'_>, la: u64, size: AccessSize) -> Emulated<u64> {
    if in_one_page(la, size) {
        let gpa = translate(regs, env, la, false)?;
        return Ok(read_phys(env, gpa, size));
    }
    let mut v = 0u64;
    for i in 0..size.bytes() {
        let gpa = translate(regs, env, la.wrapping_add(u64::from(i)), false)?;
        v |= read_phys(env, gpa, AccessSize::Byte) << (8 * u32::from(i));
    }
    Ok(v)
}

fn write_linear(
    regs: &mut impl RegisterFile,
    env: &mut VmEnv<'_>,
    la: u64,
    size: AccessSize,
    value: u64,
) -> Emulated<()> {
    if in_one_page(la, size) {
        let gpa = translate(regs, env, la, true)?;
        write_phys(env, gpa, size, value);
        return Ok(());
    }
    // Translate every byte before writing any, so a fault leaves memory untouched.
    let mut gpas = [GuestPhysAddr::new(0); 8];
    for (i, slot) in gpas.iter_mut().take(usize::from(size.bytes())).enumerate() {
        *slot = translate(regs, env, la.wrapping_add(i as u64), true)?;
    }
    for (i, gpa) in gpas.iter().take(usize::from(size.bytes())).enumerate() {
        write_phys(env, *gpa, AccessSize::Byte, value >> i.wrapping_mul(8));
    }
    Ok(())
}

/// Adds `±size` to an index register at the instruction's address size (16-bit
/// updates keep the upper bits, 32-bit updates clear them).
fn step_index(regs: &mut impl RegisterFile, gpr: Gpr, size: AccessSize, asize: AccessSize) {
    let old = regs.gpr(gpr);
    let delta = u64::from(size.bytes());
    let moved = if regs.rflags() & rflags::DF != 0 { old.wrapping_sub(delta) } else { old.wrapping_add(delta) };
    set_at_address_size(regs, gpr, moved, asize);
}

fn set_at_address_size(regs: &mut impl RegisterFile, gpr: Gpr, value: u64, asize: AccessSize) {
    let r = RegOperand { gpr, size: asize, high_byte: false };
    insn::write_reg(regs, &r, value);
}

fn string_operand(op: &Operand) -> Option<MemOperand> {
    match op {
        Operand::Mem(m) => Some(*m),
        _ => None,
    }
}

/// Elements left for a REP instruction (1 without REP).
fn rep_count(regs: &impl RegisterFile, rep: bool, asize: AccessSize) -> u64 {
    if rep { regs.gpr(Gpr::Rcx) & asize.mask() } else { 1 }
}

/// Finishes a string instruction: decrement RCX per element, and either continue the
/// guest after it or re-execute it when elements remain.
fn string_done(exit: &Exit, i: &Instruction, regs: &impl RegisterFile, rep: bool) -> ExitAction {
    if rep && regs.gpr(Gpr::Rcx) & i.address_size.mask() != 0 {
        ExitAction::Resume
    } else {
        ExitAction::Advance(after(exit, i))
    }
}

/// INS/OUTS, with or without REP. The address size and segment come from decoding the
/// instruction, not from EXITINFO1 (QEMU leaves those bits zero).
pub(super) fn handle_string_io(
    exit: &Exit,
    io: &IoExit,
    regs: &mut impl RegisterFile,
    env: &mut VmEnv<'_>,
) -> ExitAction {
    let Some(i) = decode_at_rip(exit, regs, env).filter(|i| matches!(i.op, Op::Ins | Op::Outs)) else {
        return emulation_failed(exit, regs, env);
    };
    let (mem, index) = match io.direction {
        IoDirection::In => (string_operand(&i.dst), Gpr::Rdi),
        IoDirection::Out => (string_operand(&i.src), Gpr::Rsi),
    };
    let Some(mem) = mem else {
        return emulation_failed(exit, regs, env);
    };
    let asize = i.address_size;
    let count = rep_count(regs, io.rep, asize).min(MAX_ITERATIONS);
    for _ in 0..count {
        let la = insn::linear_address(&mem, asize, regs, 0);
        let result = match io.direction {
            IoDirection::Out => {
                read_linear(regs, env, la, io.size).map(|v| env.ports.write(io.port, io.size, v as u32))
            }
            IoDirection::In => translate(regs, env, la, true).and_then(|_| {
                let v = env.ports.read(io.port, io.size);
                write_linear(regs, env, la, io.size, u64::from(v))
            }),
        };
        if let Err(action) = result {
            return action;
        }
        step_index(regs, index, io.size, asize);
        if io.rep {
            let rcx = regs.gpr(Gpr::Rcx).wrapping_sub(1);
            set_at_address_size(regs, Gpr::Rcx, rcx, asize);
        }
    }
    string_done(exit, &i, regs, io.rep)
}

/// A nested page fault: MMIO (a device range, or a hole in the guest's memory map, which
/// reads all-ones) is emulated; faults on RAM or inside guest page-table walks stop the
/// VM.
pub(super) fn handle_npf(
    exit: &Exit,
    gpa: GuestPhysAddr,
    info: NpfInfo,
    regs: &mut impl RegisterFile,
    env: &mut VmEnv<'_>,
) -> ExitAction {
    let stop = ExitAction::Stop(StopReason::NestedPageFault { gpa, info });
    // Only addresses a device claims are emulated. Anything else outside the VM's RAM
    // is memory that is not the VM's: the access stops the VM.
    if info.in_guest_walk || info.fetch || !env.mmio.claims(gpa) {
        log::error!(target: "vcpu", "vm{} nested page fault at {gpa} ({info:?}); registers: {:?}",
            env.vm.id, regs.snapshot());
        return stop;
    }
    let Some(i) = decode_at_rip(exit, regs, env) else {
        return emulation_failed(exit, regs, env);
    };
    match emulate_mmio(exit, &i, gpa, regs, env) {
        Some(action) => action,
        None => emulation_failed(exit, regs, env),
    }
}

fn operand_value(regs: &impl RegisterFile, op: &Operand) -> Option<u64> {
    match op {
        Operand::Reg(r) => Some(insn::read_reg(regs, r)),
        Operand::Imm(v) => Some(*v),
        _ => None,
    }
}

/// Emulates one instruction whose memory operand is the MMIO address `gpa`. `None`
/// for forms that are not supported.
fn emulate_mmio(
    exit: &Exit,
    i: &Instruction,
    gpa: GuestPhysAddr,
    regs: &mut impl RegisterFile,
    env: &mut VmEnv<'_>,
) -> Option<ExitAction> {
    match (i.op, &i.dst, &i.src) {
        (Op::Mov, Operand::Mem(m), src) => {
            let v = operand_value(regs, src)?;
            env.mmio.write(gpa, m.size, v);
        }
        (Op::Mov, Operand::Reg(r), Operand::Mem(m)) => {
            let v = env.mmio.read(gpa, m.size);
            insn::write_reg(regs, r, v);
        }
        (Op::Movzx | Op::Movsx, Operand::Reg(r), Operand::Mem(m)) => {
            let mut v = env.mmio.read(gpa, m.size);
            if i.op == Op::Movsx {
                v = insn::sign_extend(v, m.size) & r.size.mask();
            }
            insn::write_reg(regs, r, v);
        }
        (Op::Xchg, Operand::Mem(m), Operand::Reg(r)) => {
            let old = env.mmio.read(gpa, m.size);
            env.mmio.write(gpa, m.size, insn::read_reg(regs, r));
            insn::write_reg(regs, r, old);
        }
        (Op::Add | Op::Or | Op::Adc | Op::Sbb | Op::And | Op::Sub | Op::Xor | Op::Cmp | Op::Test, dst, src) => {
            let (mem_is_dst, m, other) = match (dst, src) {
                (Operand::Mem(m), o) => (true, m, o),
                (o, Operand::Mem(m)) => (false, m, o),
                _ => return None,
            };
            let mv = env.mmio.read(gpa, m.size);
            let ov = operand_value(regs, other)?;
            let (d, s) = if mem_is_dst { (mv, ov) } else { (ov, mv) };
            let r = alu::alu(i.op, d, s, i.operand_size, regs.rflags())?;
            regs.set_rflags(r.rflags);
            match (r.value, mem_is_dst, other) {
                (Some(v), true, _) => env.mmio.write(gpa, m.size, v),
                (Some(v), false, Operand::Reg(reg)) => insn::write_reg(regs, reg, v),
                _ => {}
            }
        }
        (Op::Movs | Op::Stos | Op::Lods, _, _) => return Some(string_memory(exit, i, regs, env)),
        _ => return None,
    }
    Some(ExitAction::Advance(after(exit, i)))
}

/// MOVS/STOS/LODS touching MMIO, element by element through the page walker.
fn string_memory(exit: &Exit, i: &Instruction, regs: &mut impl RegisterFile, env: &mut VmEnv<'_>) -> ExitAction {
    let rep = i.rep != insn::Rep::None;
    let asize = i.address_size;
    let size = i.operand_size;
    let acc = RegOperand { gpr: Gpr::Rax, size, high_byte: false };
    let count = rep_count(regs, rep, asize).min(MAX_ITERATIONS);
    for _ in 0..count {
        let src = string_operand(&i.src).map(|m| insn::linear_address(&m, asize, regs, 0));
        let dst = string_operand(&i.dst).map(|m| insn::linear_address(&m, asize, regs, 0));
        let value = match src {
            Some(la) => read_linear(regs, env, la, size),
            None => Ok(insn::read_reg(regs, &acc)),
        };
        let result = value.and_then(|v| match dst {
            Some(la) => write_linear(regs, env, la, size, v),
            None => {
                insn::write_reg(regs, &acc, v);
                Ok(())
            }
        });
        if let Err(action) = result {
            return action;
        }
        if src.is_some() {
            step_index(regs, Gpr::Rsi, size, asize);
        }
        if dst.is_some() {
            step_index(regs, Gpr::Rdi, size, asize);
        }
        if rep {
            let rcx = regs.gpr(Gpr::Rcx).wrapping_sub(1);
            set_at_address_size(regs, Gpr::Rcx, rcx, asize);
        }
    }
    string_done(exit, i, regs, rep)
}
