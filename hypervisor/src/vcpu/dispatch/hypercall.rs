//! Hypercalls (VMMCALL/VMCALL): the ABI in `bulkhead_abi::hypercall`. Call number in
//! RAX, arguments in RBX, RCX, RDX, RSI, result in RAX. Only CPL 0 may call; user
//! mode gets #UD, as on a machine without a hypervisor.
#![forbid(unsafe_code)]

use alloc::vec;

use bulkhead_abi::hypercall::{self as abi, Error};

use super::{VmEnv, next_rip};
use crate::arch::exit::{Exit, ExitAction, StopReason};
use crate::arch::regs::{Gpr, RegisterFile};
use crate::memory::addr::GuestPhysAddr;
use crate::vcpu::insn::Op;

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
        abi::RAISE_INTERRUPT => match u8::try_from(arg0) {
            Ok(vector) if vector >= 32 => {
                env.interrupts.raise(vector);
                Ok(0)
            }
            _ => Err(Error::BadArgument),
        },
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
        abi::SLEEP => {
            // RBX microseconds from now (0: until an interrupt), on machines without timers.
            let deadline = (arg0 != 0).then(|| env.host_tsc.saturating_add(arg0.saturating_mul(env.tsc_per_us)));
            match env.interrupts.sleep_until(deadline) {
                Some(true) => {
                    regs.set_gpr(Gpr::Rax, 0);
                    return ExitAction::Halt(next);
                }
                Some(false) => Ok(0),
                None => Err(Error::UnknownCall),
            }
        }
        abi::NET_CONFIG => net_config(env, arg0, arg1),
        abi::NET_STATUS => net_status(env, arg0),
        abi::POLICY_CHECKIN => policy_checkin(env, arg0),
        abi::POLICY_ANSWER => policy_answer(env, arg0, arg1),
        abi::REBOOT => {
            log::info!(target: "vcpu", "vm{} asks for a restart", env.vm.id);
            return ExitAction::Stop(StopReason::GuestReboot);
        }
        _ => {
            log::debug!(target: "vcpu", "vm{} unknown hypercall {nr:#x}", env.vm.id);
            Err(Error::UnknownCall)
        }
    };
    match result {
        Ok(value) => {
            regs.set_gpr(Gpr::Rax, value);
            ExitAction::Advance(next)
        }
        Err(Error::UnknownCall) => {
            // Unknown numbers are how the ABI grows: report, don't punish.
            regs.set_gpr(Gpr::Rax, Error::UnknownCall.to_rax());
            ExitAction::Advance(next)
        }
        Err(e) => {
            // A guest that hands the hypervisor a bad pointer or length is broken or
            // hostile: stop it rather than guess.
            log::warn!(target: "vcpu", "vm{} hypercall {nr:#x}: {e:?} (argument {arg0:#x}); stopping it", env.vm.id);
            ExitAction::Stop(StopReason::BadHypercall { nr, arg: arg0 })
        }
    }
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

/// Copies the network configuration text to the service VM (RBX = buffer, RCX = size).
fn net_config(env: &mut VmEnv<'_>, gpa: u64, len: u64) -> Result<u64, Error> {
    let Some(network) = env.network.as_deref() else { return Err(Error::UnknownCall) };
    let text = network.config_text();
    if len > abi::NET_CONFIG_MAX {
        return Err(Error::TooLong);
    }
    if (text.len() as u64) > len {
        // Too small a buffer is the caller's to fix; it is told the size, not stopped.
        return Ok(Error::TooLong.to_rax());
    }
    env.memory.write_bytes(GuestPhysAddr::new(gpa), text).map_err(|_| Error::BadAddress)?;
    Ok(text.len() as u64)
}

/// Takes the service VM's [`abi::NetStatus`] at RBX.
fn net_status(env: &mut VmEnv<'_>, gpa: u64) -> Result<u64, Error> {
    if env.network.is_none() {
        return Err(Error::UnknownCall);
    }
    let mut raw = [0u8; core::mem::size_of::<abi::NetStatus>()];
    env.memory.read_bytes(GuestPhysAddr::new(gpa), &mut raw).map_err(|_| Error::BadAddress)?;
    let status = decode_net_status(&raw);
    match env.network.as_deref_mut() {
        Some(network) => {
            network.report(&status);
            Ok(network.generation())
        }
        None => Ok(0),
    }
}

/// Fills the service VM's [`abi::PolicyCheckin`] at RBX.
fn policy_checkin(env: &mut VmEnv<'_>, gpa: u64) -> Result<u64, Error> {
    let Some(network) = env.network.as_deref_mut() else { return Err(Error::UnknownCall) };
    let Some(checkin) = network.policy_checkin() else { return Err(Error::UnknownCall) };
    env.memory.write_bytes(GuestPhysAddr::new(gpa), &checkin.to_bytes()).map_err(|_| Error::BadAddress)?;
    Ok(0)
}

/// Takes the management server's answer at RBX (RCX bytes).
fn policy_answer(env: &mut VmEnv<'_>, gpa: u64, len: u64) -> Result<u64, Error> {
    if env.network.is_none() {
        return Err(Error::UnknownCall);
    }
    if len > abi::POLICY_ANSWER_MAX {
        return Err(Error::TooLong);
    }
    let mut answer = vec![0u8; len as usize];
    env.memory.read_bytes(GuestPhysAddr::new(gpa), &mut answer).map_err(|_| Error::BadAddress)?;
    let Some(network) = env.network.as_deref_mut() else { return Err(Error::UnknownCall) };
    let status = network.policy_answer(&answer).ok_or(Error::UnknownCall)?;
    Ok(abi::encode_answer_status(status))
}

/// The wire form of [`abi::NetStatus`] (little-endian, `repr(C)` layout), decoded field
/// by field; a count beyond the array is clamped.
pub fn decode_net_status(raw: &[u8; core::mem::size_of::<abi::NetStatus>()]) -> abi::NetStatus {
    let u32_at =
        |at: usize| raw.get(at..at.saturating_add(4)).and_then(|b| b.try_into().ok()).map_or(0, u32::from_le_bytes);
    let u64_at =
        |at: usize| raw.get(at..at.saturating_add(8)).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes);
    let mut status = abi::NetStatus {
        uplink_flags: u32_at(0),
        uplink_address: u32_at(4),
        link_count: u32_at(8).min(abi::NET_STATUS_LINKS as u32),
        ..abi::NetStatus::default()
    };
    for (i, link) in status.links.iter_mut().enumerate() {
        let at = 16usize.saturating_add(i.saturating_mul(32));
        *link = abi::NetLinkStatus {
            flags: u32_at(at),
            address: u32_at(at.saturating_add(4)),
            frames_in: u64_at(at.saturating_add(8)),
            frames_out: u64_at(at.saturating_add(16)),
            dropped: u64_at(at.saturating_add(24)),
        };
    }
    status
}
