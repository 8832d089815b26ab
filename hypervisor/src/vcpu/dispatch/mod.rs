//! The exit decision function: given a decoded exit, the guest's registers and the
//! VM's devices and policies, decide what happens next. Pure: no hardware access, so
//! every path is unit-tested with a fake register file and synthetic exits.
//!
//! Guest input never panics here: unknown things end in an injected fault, a stopped
//! VM with a logged reason and register dump, or all-ones reads from empty buses.
#![forbid(unsafe_code)]

use crate::arch::exit::{
    Event, Exit, ExitAction, ExitReason, InsnBytes, IoDirection, IoExit, NextRip, StopReason, vector,
};
use crate::arch::regs::VendorMsr;
use crate::arch::regs::{Gpr, RegisterFile};
use crate::arch::x86::cpuid::CpuidSource;
use crate::arch::x86::exit_stages::{self, Stage};
use crate::devices::bus::{MmioBus, PortBus};
use crate::memory::guest::GuestMemoryAccess;
use crate::vcpu::cpuid::CpuidPolicy;
use crate::vcpu::insn::{self, Op, RegOperand, walk};
use crate::vcpu::msr::MsrState;

mod emulate;
mod hypercall;
#[cfg(test)]
mod tests;

/// Who the VM is, for hypercalls that report it.
#[derive(Debug, Clone, Copy)]
pub struct VmIdentity<'a> {
    pub id: u32,
    pub name: &'a str,
    pub memory_bytes: u64,
}

/// Where the guest's console hypercall output goes.
pub trait GuestConsole {
    fn write(&mut self, vm: u32, bytes: &[u8]);
}

/// MSRs that belong to device models (the local APIC's x2APIC range, TSC deadline,
/// kvmclock). Consulted before the MSR policy; `None` means "not mine".
pub trait MsrDevices {
    /// `Some(Err(()))` injects #GP.
    fn read(&mut self, msr: u32, guest_tsc: u64) -> Option<Result<u64, ()>>;
    fn write(
        &mut self,
        msr: u32,
        value: u64,
        guest_tsc: u64,
        memory: &mut dyn GuestMemoryAccess,
    ) -> Option<Result<(), ()>>;
}

/// A VM without MSR-backed devices.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoMsrDevices;

impl MsrDevices for NoMsrDevices {
    fn read(&mut self, _msr: u32, _guest_tsc: u64) -> Option<Result<u64, ()>> {
        None
    }
    fn write(&mut self, _: u32, _: u64, _: u64, _: &mut dyn GuestMemoryAccess) -> Option<Result<(), ()>> {
        None
    }
}

/// Where virtual interrupts for this VM are queued (the VM's interrupt controller).
pub trait InterruptSink {
    /// Queues external interrupt `vector` for delivery to the vCPU.
    fn raise(&mut self, vector: u8);
    /// The `SLEEP` hypercall: `Some(true)` to halt until an interrupt or host TSC
    /// `deadline`; `Some(false)` to return at once because interrupts arrived since the
    /// last sleep (they are taken: a kernel that polls with interrupts off has seen
    /// their work when it polls next); `None` where the machine has its own timers
    /// instead (a desktop).
    fn sleep_until(&mut self, _deadline: Option<u64>) -> Option<bool> {
        None
    }
}

/// The hypervisor's side of the networking service VM's hypercalls (`NET_CONFIG`,
/// `NET_STATUS`): only a VM of kind `service` has one.
pub trait NetworkService {
    /// The network configuration text for the service VM.
    fn config_text(&self) -> &[u8];
    /// The service VM reports the network's state.
    fn report(&mut self, status: &bulkhead_abi::hypercall::NetStatus);
    /// The configuration text's generation, which `NET_STATUS` returns: it moves when
    /// an accepted policy update changed the text.
    fn generation(&self) -> u64 {
        0
    }
    /// `POLICY_CHECKIN`: what the check-in request carries, with a fresh nonce; `None`
    /// when the laptop has no management server.
    fn policy_checkin(&mut self) -> Option<bulkhead_abi::hypercall::PolicyCheckin> {
        None
    }
    /// `POLICY_ANSWER` with the server's answer (at most `POLICY_ANSWER_MAX` bytes);
    /// `None` as for [`NetworkService::policy_checkin`].
    fn policy_answer(&mut self, _answer: &[u8]) -> Option<bulkhead_abi::hypercall::PolicyAnswer> {
        None
    }
}

/// Everything exit decisions may consult or act on, besides the registers.
pub struct VmEnv<'a> {
    pub vm: VmIdentity<'a>,
    /// The vCPU's APIC id (reported in CPUID.1:EBX[31:24]).
    pub apic_id: u8,
    pub cpuid_policy: &'a CpuidPolicy,
    pub cpuid: &'a dyn CpuidSource,
    pub msrs: &'a mut MsrState,
    pub ports: &'a mut dyn PortBus,
    pub mmio: &'a mut dyn MmioBus,
    pub memory: &'a mut dyn GuestMemoryAccess,
    pub console: &'a mut dyn GuestConsole,
    pub interrupts: &'a mut dyn InterruptSink,
    pub msr_devices: &'a mut dyn MsrDevices,
    /// The service VM's network hypercalls; `None` for every other VM.
    pub network: Option<&'a mut dyn NetworkService>,
    /// Host TSC ticks per microsecond (for `SLEEP`), at least 1.
    pub tsc_per_us: u64,
    /// The host TSC at the exit.
    pub host_tsc: u64,
}

impl core::fmt::Debug for VmEnv<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VmEnv").field("vm", &self.vm).field("apic_id", &self.apic_id).finish_non_exhaustive()
    }
}

/// Decides what to do about `exit`. Register results (CPUID, RDMSR, IN, MMIO loads,
/// hypercall returns) are written to `regs`; moving RIP and injecting events are left
/// to the returned action.
pub fn decide(exit: &Exit, regs: &mut impl RegisterFile, env: &mut VmEnv<'_>) -> ExitAction {
    match exit.reason {
        ExitReason::Cpuid => handle_cpuid(exit, regs, env),
        ExitReason::MsrRead { msr } => handle_rdmsr(exit, msr, regs, env),
        ExitReason::MsrWrite { msr, value } => handle_wrmsr(exit, msr, value, regs, env),
        ExitReason::Io(io) if io.string => emulate::handle_string_io(exit, &io, regs, env),
        ExitReason::Io(io) => handle_io(exit, &io, regs, env),
        ExitReason::NestedPageFault { gpa, info } => emulate::handle_npf(exit, gpa, info, regs, env),
        ExitReason::Hlt => ExitAction::Halt(next_rip(exit, regs, env, &[Op::Hlt], 1)),
        ExitReason::Hypercall => hypercall::handle_hypercall(exit, regs, env),
        ExitReason::ExternalInterrupt | ExitReason::Nmi | ExitReason::InterruptWindow => ExitAction::Resume,
        ExitReason::Shutdown => {
            log::error!(target: "vcpu", "vm{} triple fault; registers: {:?}", env.vm.id, regs.snapshot());
            ExitAction::Stop(StopReason::TripleFault)
        }
        ExitReason::Exception { vector, error_code, fault_address } => {
            handle_exception(vector, error_code, fault_address, regs, env)
        }
        ExitReason::Xsetbv => handle_xsetbv(exit, regs, env),
        ExitReason::Rdtsc | ExitReason::Rdtscp => handle_rdtsc(exit, regs, env),
        ExitReason::Pause => ExitAction::Yield(next_rip(exit, regs, env, &[Op::Pause], 2)),
        // Guest RAM is write-back and coherent; with non-coherent DMA from an assigned
        // device a real WBINVD would be needed here.
        ExitReason::Wbinvd => ExitAction::Advance(next_rip(exit, regs, env, &[Op::Wbinvd], 2)),
        ExitReason::UnsupportedInstruction => ExitAction::inject_ud(),
        ExitReason::InvalidGuestState { raw } => {
            log::error!(target: "vcpu", "vm{} entry failed (exit code {raw:#x}); registers: {:?}", env.vm.id, regs.snapshot());
            ExitAction::Stop(StopReason::InvalidGuestState { raw })
        }
        ExitReason::Unknown(raw) => {
            let dump = regs.snapshot();
            log::error!(target: "vcpu", "vm{} unhandled exit {raw:#x}; registers: {dump:?}", env.vm.id);
            ExitAction::Stop(StopReason::UnhandledExit { raw, regs: dump })
        }
    }
}

/// Where RIP goes after the intercepted instruction: the CPU's report if it made one,
/// else the decoded length of the instruction at RIP (prefixes included), else
/// `fallback` (the length without prefixes).
fn next_rip(exit: &Exit, regs: &impl RegisterFile, env: &VmEnv<'_>, expected: &[Op], fallback: u8) -> NextRip {
    if let Some(rip) = exit.next_rip {
        return NextRip::To(rip);
    }
    exit_stages::checkpoint(Stage::Handler);
    let bytes = bytes_at_rip(exit, regs, env);
    // The usual case, the expected instruction without prefixes, needs no decoder.
    let plain = bytes.as_ref().and_then(|b| insn::plain_length(b.as_slice(), expected));
    let decoded = match plain {
        Some(_) => None,
        None => bytes.and_then(|b| decode_bytes(b.as_slice(), regs, env)),
    };
    exit_stages::checkpoint(Stage::InsnDecode);
    if let Some(len) = plain {
        return NextRip::By(len);
    }
    match decoded {
        Some(i) if expected.contains(&i.op) => NextRip::By(i.len),
        other => {
            crate::limited!(
                crate::log_limit::Source::Emulation,
                env.vm.id,
                log::warn!(target: "vcpu", "vm{} rip {:#x}: expected {expected:?}, decoded {:?}; assuming {fallback} bytes",
                    env.vm.id, regs.rip(), other.map(|i| i.op))
            );
            NextRip::By(fallback)
        }
    }
}

/// The other vendor's hypercall instruction raises #UD (VMMCALL on Intel, VMCALL on
/// AMD). A backend that intercepts #UD reports it as an exception; when the instruction
/// at RIP is VMMCALL or VMCALL this is the exit as a hypercall (with the fetched bytes,
/// so its length needs no second fetch), and a guest built for either vendor makes its
/// hypercalls unchanged. The exit loop asks before counting and deciding.
pub fn hypercall_behind_ud(
    exit: &Exit,
    regs: &impl RegisterFile,
    memory: &(impl GuestMemoryAccess + ?Sized),
) -> Option<Exit> {
    if !matches!(exit.reason, ExitReason::Exception { vector: vector::UD, .. }) {
        return None;
    }
    let bytes = if exit.insn.is_empty() { walk::fetch(regs, memory).ok()? } else { exit.insn };
    insn::plain_length(bytes.as_slice(), &[Op::Vmmcall, Op::Vmcall])?;
    Some(Exit { reason: ExitReason::Hypercall, next_rip: None, insn: bytes })
}

/// Decodes the instruction at RIP from the CPU-provided bytes or by fetching it.
fn decode_at_rip(exit: &Exit, regs: &impl RegisterFile, env: &VmEnv<'_>) -> Option<insn::Instruction> {
    bytes_at_rip(exit, regs, env).and_then(|b| decode_bytes(b.as_slice(), regs, env))
}

/// The instruction bytes at RIP: the CPU-provided ones, or fetched.
fn bytes_at_rip(exit: &Exit, regs: &impl RegisterFile, env: &VmEnv<'_>) -> Option<InsnBytes> {
    if !exit.insn.is_empty() {
        return Some(exit.insn);
    }
    match walk::fetch(regs, &*env.memory) {
        Ok(f) => Some(f),
        Err(e) => {
            log::debug!(target: "vcpu", "vm{} cannot fetch the instruction at {:#x}: {e:?} ({:x?})", env.vm.id, regs.rip(), regs.control());
            None
        }
    }
}

fn decode_bytes(bytes: &[u8], regs: &impl RegisterFile, env: &VmEnv<'_>) -> Option<insn::Instruction> {
    match insn::decode(bytes, regs.mode()) {
        Ok(i) => Some(i),
        Err(e) => {
            log::debug!(target: "vcpu", "vm{} cannot decode {bytes:02x?} at {:#x}: {e:?}", env.vm.id, regs.rip());
            None
        }
    }
}

fn set_edx_eax(regs: &mut impl RegisterFile, value: u64) {
    regs.set_gpr(Gpr::Rax, value & 0xffff_ffff);
    regs.set_gpr(Gpr::Rdx, value >> 32);
}

fn handle_cpuid(exit: &Exit, regs: &mut impl RegisterFile, env: &mut VmEnv<'_>) -> ExitAction {
    let leaf = regs.gpr(Gpr::Rax) as u32;
    let subleaf = regs.gpr(Gpr::Rcx) as u32;
    let mut r = env.cpuid_policy.filter(env.cpuid, leaf, subleaf, env.apic_id);
    guest_state_bits(&mut r, leaf, subleaf, regs, env);
    regs.set_gpr(Gpr::Rax, u64::from(r.eax));
    regs.set_gpr(Gpr::Rbx, u64::from(r.ebx));
    regs.set_gpr(Gpr::Rcx, u64::from(r.ecx));
    regs.set_gpr(Gpr::Rdx, u64::from(r.edx));
    ExitAction::Advance(next_rip(exit, regs, env, &[Op::Cpuid], 2))
}

/// CPUID bits that describe the guest's own state rather than the CPU's: the OSXSAVE
/// flag follows the guest's CR4, and the XSAVE area size follows the guest's XCR0 (the
/// host's values would make the guest's FPU setup inconsistent). OSPKE stays clear with
/// PKU, which is not offered (`cpuid`), even if the guest sets CR4.PKE.
fn guest_state_bits(
    r: &mut crate::arch::x86::cpuid::CpuidResult,
    leaf: u32,
    subleaf: u32,
    regs: &impl RegisterFile,
    env: &VmEnv<'_>,
) {
    const CR4_OSXSAVE: u64 = 1 << 18;
    let cr4 = regs.control().cr4;
    match (leaf, subleaf) {
        (1, _) => {
            r.ecx = (r.ecx & !(1 << 27)) | if cr4 & CR4_OSXSAVE != 0 { 1 << 27 } else { 0 };
        }
        (0xd, 0) | (0xd, 1) => r.ebx = xsave_size(regs.xcr0(), env),
        _ => {}
    }
}

/// Bytes of an XSAVE area holding the components in `xcr0` (standard format: the
/// 512-byte legacy area, the 64-byte header, then each component at its offset).
fn xsave_size(xcr0: u64, env: &VmEnv<'_>) -> u32 {
    (2..64u32)
        .filter(|n| xcr0 & (1u64 << n) != 0)
        .map(|n| {
            let c = env.cpuid.cpuid(0xd, n);
            c.ebx.saturating_add(c.eax)
        })
        .fold(512 + 64, u32::max)
}

fn handle_rdmsr(exit: &Exit, msr: u32, regs: &mut impl RegisterFile, env: &mut VmEnv<'_>) -> ExitAction {
    let guest_tsc = env.host_tsc.wrapping_add(regs.tsc_offset());
    let result = match env.msr_devices.read(msr, guest_tsc) {
        Some(r) => r,
        None => env.msrs.read(msr, regs, env.host_tsc).map_err(|_| ()),
    };
    match result {
        Ok(v) => {
            set_edx_eax(regs, v);
            ExitAction::Advance(next_rip(exit, regs, env, &[Op::Rdmsr], 2))
        }
        Err(_) => {
            log::debug!(target: "vcpu", "vm{} rdmsr {msr:#x}: #GP", env.vm.id);
            ExitAction::inject_gp()
        }
    }
}

fn handle_wrmsr(exit: &Exit, msr: u32, value: u64, regs: &mut impl RegisterFile, env: &mut VmEnv<'_>) -> ExitAction {
    let guest_tsc = env.host_tsc.wrapping_add(regs.tsc_offset());
    let result = match env.msr_devices.write(msr, value, guest_tsc, &mut *env.memory) {
        Some(r) => r,
        None => env.msrs.write(msr, value, regs, env.host_tsc).map_err(|_| ()),
    };
    match result {
        Ok(()) => ExitAction::Advance(next_rip(exit, regs, env, &[Op::Wrmsr], 2)),
        Err(_) => {
            log::debug!(target: "vcpu", "vm{} wrmsr {msr:#x} <- {value:#x}: #GP", env.vm.id);
            ExitAction::inject_gp()
        }
    }
}

fn handle_io(exit: &Exit, io: &IoExit, regs: &mut impl RegisterFile, env: &mut VmEnv<'_>) -> ExitAction {
    let acc = RegOperand { gpr: Gpr::Rax, size: io.size, high_byte: false };
    match io.direction {
        IoDirection::Out => {
            let value = insn::read_reg(regs, &acc) as u32;
            env.ports.write(io.port, io.size, value);
        }
        IoDirection::In => {
            let value = env.ports.read(io.port, io.size);
            insn::write_reg(regs, &acc, u64::from(value));
        }
    }
    ExitAction::Advance(next_rip(exit, regs, env, &[Op::In, Op::Out], 1))
}

fn handle_exception(
    vec: u8,
    error_code: Option<u32>,
    fault_address: u64,
    regs: &mut impl RegisterFile,
    env: &mut VmEnv<'_>,
) -> ExitAction {
    if vec == vector::MC {
        log::error!(target: "vcpu", "vm{} machine check; registers: {:?}", env.vm.id, regs.snapshot());
        return ExitAction::Stop(StopReason::UnhandledExit { raw: u64::from(vec), regs: regs.snapshot() });
    }
    if vec == vector::PF {
        regs.set_cr2(fault_address);
    }
    // Intercepted for observation only: reflect it back.
    ExitAction::Inject(Event::exception(vec, error_code))
}

/// XSETBV (APM Vol. 3): XCR0 only, CPL 0, bit 0 set, AVX needs SSE, AVX-512 needs all
/// three of its components and AVX, nothing outside the offered mask.
fn handle_xsetbv(exit: &Exit, regs: &mut impl RegisterFile, env: &mut VmEnv<'_>) -> ExitAction {
    if regs.control().cr4 & (1 << 18) == 0 {
        return ExitAction::inject_ud();
    }
    let index = regs.gpr(Gpr::Rcx) as u32;
    let value = (regs.gpr(Gpr::Rdx) << 32) | (regs.gpr(Gpr::Rax) & 0xffff_ffff);
    let avx512 = value & 0xe0;
    let valid = regs.cpl() == 0
        && index == 0
        && value & 1 != 0
        && value & !env.cpuid_policy.xcr0_mask == 0
        && (value & 4 == 0 || value & 2 != 0)
        && (avx512 == 0 || (avx512 == 0xe0 && value & 4 != 0));
    if !valid {
        return ExitAction::inject_gp();
    }
    regs.set_xcr0(value);
    ExitAction::Advance(next_rip(exit, regs, env, &[Op::Xsetbv], 3))
}

fn handle_rdtsc(exit: &Exit, regs: &mut impl RegisterFile, env: &mut VmEnv<'_>) -> ExitAction {
    let tsc = env.host_tsc.wrapping_add(regs.tsc_offset());
    set_edx_eax(regs, tsc);
    if exit.reason == ExitReason::Rdtscp {
        regs.set_gpr(Gpr::Rcx, regs.msr(VendorMsr::TscAux) & 0xffff_ffff);
        ExitAction::Advance(next_rip(exit, regs, env, &[Op::Rdtscp], 3))
    } else {
        ExitAction::Advance(next_rip(exit, regs, env, &[Op::Rdtsc], 2))
    }
}
