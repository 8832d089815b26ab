//! Hypercalls (VMMCALL/VMCALL): the ABI in `bulkhead_abi::hypercall`. Call number in
//! RAX, arguments in RBX, RCX, RDX, RSI, result in RAX. Only CPL 0 may call; user
//! mode gets #UD, as on a machine without a hypervisor.
#![forbid(unsafe_code)]

use alloc::vec;

use bulkhead_abi::hypercall::{self as abi, Error};

use super::{VmEnv, next_rip};
use crate::memory::addr::GuestPhysAddr;
use crate::vcpu::exit::{Exit, ExitAction, StopReason};
use crate::vcpu::insn::Op;
use crate::vcpu::regs::{Gpr, RegisterFile};

/// Longest CONSOLE_WRITE.
pub const CONSOLE_MAX: u64 = 4096;

/// The wire form of [`abi::VmInfo`] (little-endian, 48 bytes).
fn vm_info_bytes(env: &VmEnv<'_>) -> [u8; 48] {
    let mut out = [0u8; 48];
    let fields = abi::ABI_VERSION
        .to_le_bytes()
        .into_iter()
        .chain(env.vm.id.to_le_bytes())
        .chain(env.vm.memory_bytes.to_le_bytes())
        .chain(env.vm.name.bytes().chain(core::iter::repeat(0)).take(32));
    for (dst, src) in out.iter_mut().zip(fields) {
        *dst = src;
    }
    out
}

pub(super) fn handle_hypercall(exit: &Exit, regs: &mut impl RegisterFile, env: &mut VmEnv<'_>) -> ExitAction {
    if regs.cpl() != 0 {
        return ExitAction::inject_ud();
    }
    let next = next_rip(exit, regs, env, &[Op::Vmmcall, Op::Vmcall], 3);
    let nr = regs.gpr(Gpr::Rax);
    let arg0 = regs.gpr(Gpr::Rbx);
    let arg1 = regs.gpr(Gpr::Rcx);
    let result: Result<u64, Error> = match nr {
        abi::CONSOLE_WRITE => console_write(env, arg0, arg1),
        abi::YIELD => {
            regs.set_gpr(Gpr::Rax, 0);
            return ExitAction::Yield(next);
        }
        abi::VM_INFO => {
            let info = vm_info_bytes(env);
            env.memory.write_bytes(GuestPhysAddr::new(arg0), &info).map(|()| 0).map_err(|_| Error::BadAddress)
        }
        abi::SHUTDOWN => {
            log::info!(target: "vcpu", "vm{} shuts down with status {arg0:#x}", env.vm.id);
            return ExitAction::Stop(StopReason::GuestShutdown { status: arg0 });
        }
        abi::REBOOT => {
            log::info!(target: "vcpu", "vm{} asks for a restart", env.vm.id);
            return ExitAction::Stop(StopReason::GuestReboot);
        }
        _ => {
            log::debug!(target: "vcpu", "vm{} unknown hypercall {nr:#x}", env.vm.id);
            Err(Error::UnknownCall)
        }
    };
    regs.set_gpr(Gpr::Rax, result.unwrap_or_else(Error::to_rax));
    ExitAction::Advance(next)
}

fn console_write(env: &mut VmEnv<'_>, gpa: u64, len: u64) -> Result<u64, Error> {
    if len > CONSOLE_MAX {
        return Err(Error::TooLong);
    }
    let mut buf = vec![0u8; len as usize];
    env.memory.read_bytes(GuestPhysAddr::new(gpa), &mut buf).map_err(|_| Error::BadAddress)?;
    env.console.write(env.vm.id, &buf);
    Ok(len)
}
