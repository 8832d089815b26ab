use super::*;
use crate::arch::exit::{InsnBytes, NpfInfo};
use crate::arch::regs::{FakeRegs, rflags};
use crate::arch::x86::cpuid::FakeCpuid;
use crate::devices::bus::{BusRange, MemBus, MmioDevice, PioBus, PortDevice};
use crate::hw::AccessSize;
use crate::memory::addr::{GuestPhysAddr, HostPhysAddr};
use crate::memory::guest::{GuestMemory, GuestMemoryMap, GuestRegion, Perms, VecHostMemory, write_obj};
use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

type Log = Rc<RefCell<Vec<(u64, u8, u64)>>>;

/// Records writes; reads return 0x11223344_55667788 >> (offset * 8), masked.
struct Recorder(Log);

impl PortDevice for Recorder {
    fn read(&mut self, offset: u16, _: AccessSize) -> u32 {
        0x5566_7788 >> (8 * u32::from(offset))
    }
    fn write(&mut self, offset: u16, size: AccessSize, value: u32) {
        self.0.borrow_mut().push((u64::from(offset), size.bytes(), u64::from(value)));
    }
}

impl MmioDevice for Recorder {
    fn read(&mut self, offset: u64, _: AccessSize) -> u64 {
        0x1122_3344_5566_7788u64.rotate_right(8 * offset as u32)
    }
    fn write(&mut self, offset: u64, size: AccessSize, value: u64) {
        self.0.borrow_mut().push((offset, size.bytes(), value));
    }
}

#[derive(Default)]
struct Console(Vec<u8>);
impl GuestConsole for Console {
    fn write(&mut self, _vm: u32, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
}

#[derive(Default)]
struct Irqs(Vec<u8>);
impl InterruptSink for Irqs {
    fn raise(&mut self, vector: u8) {
        self.0.push(vector);
    }
}

const CODE: u64 = 0x8000;
const MMIO_BASE: u64 = 0xfee0_0000;

struct Harness {
    regs: FakeRegs,
    map: GuestMemoryMap,
    host: VecHostMemory,
    cpuid: FakeCpuid,
    policy: CpuidPolicy,
    msrs: MsrState,
    ports: PioBus,
    mmio: MemBus,
    console: Console,
    irqs: Irqs,
    port_log: Log,
    mmio_log: Log,
    network: Option<FakeNetwork>,
}

/// A service VM's network whose policy answers are recorded.
#[derive(Debug, Default)]
struct FakeNetwork {
    managed: bool,
    answers: Vec<Vec<u8>>,
}

impl NetworkService for FakeNetwork {
    fn config_text(&self) -> &[u8] {
        b""
    }
    fn report(&mut self, _: &bulkhead_abi::hypercall::NetStatus) {}
    fn generation(&self) -> u64 {
        5
    }
    fn policy_checkin(&mut self) -> Option<bulkhead_abi::hypercall::PolicyCheckin> {
        self.managed.then(|| bulkhead_abi::hypercall::PolicyCheckin {
            running_version: 9,
            ..bulkhead_abi::hypercall::PolicyCheckin::default()
        })
    }
    fn policy_answer(&mut self, answer: &[u8]) -> Option<bulkhead_abi::hypercall::PolicyAnswer> {
        self.answers.push(answer.to_vec());
        self.managed.then_some(bulkhead_abi::hypercall::PolicyAnswer::Accepted { version: 10 })
    }
}

impl Harness {
    /// 64 KiB of RAM at GPA 0, identity-mapped with 4K pages by tables at 0x1000;
    /// a serial-like port device at 0x3f8 and an MMIO device at 0xfee00000.
    fn new() -> Harness {
        let map = GuestMemoryMap::new(vec![
            GuestRegion::new(GuestPhysAddr::new(0), HostPhysAddr::new(0), 0x1_0000, Perms::RWX).unwrap(),
        ])
        .unwrap();
        let mut host = VecHostMemory::new(HostPhysAddr::new(0), 0x1_0000);
        {
            let mut mem = GuestMemory::new(&map, &mut host);
            let g = GuestPhysAddr::new;
            write_obj(&mut mem, g(0x1000), 0x2000u64 | 7).unwrap();
            write_obj(&mut mem, g(0x2000), 0x3000u64 | 7).unwrap();
            write_obj(&mut mem, g(0x3000), 0x4000u64 | 7).unwrap();
            for page in 0..16u64 {
                write_obj(&mut mem, g(0x4000 + page * 8), (page << 12) | 7).unwrap();
            }
            // Linear 0x10000 (PT entry 16) maps the MMIO page.
            write_obj(&mut mem, g(0x4000 + 16 * 8), MMIO_BASE | 7).unwrap();
        }
        let cpuid = FakeCpuid::all_ones();
        let policy = CpuidPolicy::new(&cpuid);
        let port_log = Log::default();
        let mmio_log = Log::default();
        let mut ports = PioBus::new("pio");
        ports.insert_ports(0x3f8, 8, Box::new(Recorder(port_log.clone()))).unwrap();
        let mut mmio = MemBus::new("mmio");
        mmio.insert(BusRange::new(MMIO_BASE, 0x1000).unwrap(), Box::new(Recorder(mmio_log.clone()))).unwrap();
        let mut regs = FakeRegs::long_mode(0x1000);
        regs.regs.rip = CODE;
        Harness {
            regs,
            map,
            host,
            cpuid,
            policy,
            msrs: MsrState::new(true),
            ports,
            mmio,
            console: Console::default(),
            irqs: Irqs::default(),
            port_log,
            mmio_log,
            network: None,
        }
    }

    fn code(&mut self, bytes: &[u8]) {
        self.poke(CODE, bytes);
    }

    fn poke(&mut self, gpa: u64, bytes: &[u8]) {
        self.host.bytes[gpa as usize..gpa as usize + bytes.len()].copy_from_slice(bytes);
    }

    fn peek<T: crate::memory::guest::Pod>(&self, gpa: u64) -> T {
        T::from_le(&self.host.bytes[gpa as usize..gpa as usize + T::SIZE]).unwrap()
    }

    fn run_exit(&mut self, exit: Exit) -> ExitAction {
        let mut mem = GuestMemory::new(&self.map, &mut self.host);
        let mut env = VmEnv {
            vm: VmIdentity { id: 7, name: "corporate", memory_bytes: 0x1_0000 },
            apic_id: 2,
            cpuid_policy: &self.policy,
            cpuid: &self.cpuid,
            msrs: &mut self.msrs,
            ports: &mut self.ports,
            mmio: &mut self.mmio,
            memory: &mut mem,
            console: &mut self.console,
            interrupts: &mut self.irqs,
            msr_devices: &mut NoMsrDevices,
            network: self.network.as_mut().map(|n| n as &mut dyn NetworkService),
            tsc_per_us: 1000,
            host_tsc: 1_000_000,
        };
        decide(&exit, &mut self.regs, &mut env)
    }

    fn run(&mut self, reason: ExitReason) -> ExitAction {
        self.run_exit(Exit::new(reason))
    }

    fn hypercall_behind_ud(&mut self, reason: ExitReason) -> Option<Exit> {
        let mem = GuestMemory::new(&self.map, &mut self.host);
        super::hypercall_behind_ud(&Exit::new(reason), &self.regs, &mem)
    }
}

/// `GuestMemory` over a borrowed backend, for setting up page tables.
impl HostMemory for &mut VecHostMemory {
    fn read(&self, hpa: HostPhysAddr, buf: &mut [u8]) -> bool {
        (**self).read(hpa, buf)
    }
    fn write(&mut self, hpa: HostPhysAddr, data: &[u8]) -> bool {
        (**self).write(hpa, data)
    }
}
use crate::memory::guest::HostMemory;

#[test]
fn cpuid_is_filtered_and_rip_advances_by_decoded_length() {
    let mut h = Harness::new();
    h.code(&[0x0f, 0xa2]);
    h.regs.regs.rax = 1;
    assert_eq!(h.run(ExitReason::Cpuid), ExitAction::Advance(NextRip::By(2)));
    assert_eq!(h.regs.regs.rcx & (1 << 31), 1 << 31);
    assert_eq!(h.regs.regs.rcx & (1 << 5), 0);
    assert_eq!(h.regs.regs.rbx >> 24, 2);
    // A prefixed CPUID is 3 bytes.
    h.code(&[0x48, 0x0f, 0xa2]);
    h.regs.regs.rax = 0x4000_0000;
    assert_eq!(h.run(ExitReason::Cpuid), ExitAction::Advance(NextRip::By(3)));
    assert_eq!(h.regs.regs.rbx, u64::from(u32::from_le_bytes(*b"Bulk")));
    // With NRIP save the CPU's value wins.
    let exit = Exit { next_rip: Some(0x9000), ..Exit::new(ExitReason::Cpuid) };
    assert_eq!(h.run_exit(exit), ExitAction::Advance(NextRip::To(0x9000)));
    // Unreadable code: fall back to the plain length.
    h.regs.regs.rip = 0xdead_0000;
    assert_eq!(h.run(ExitReason::Cpuid), ExitAction::Advance(NextRip::By(2)));
}

#[test]
fn msrs() {
    let mut h = Harness::new();
    h.code(&[0x0f, 0x32]);
    assert_eq!(h.run(ExitReason::MsrRead { msr: 0x1234 }), ExitAction::inject_gp());
    assert_eq!(h.run(ExitReason::MsrRead { msr: 0x1b }), ExitAction::Advance(NextRip::By(2)));
    assert_eq!((h.regs.regs.rax, h.regs.regs.rdx), (0xfee0_0900, 0));
    h.code(&[0x0f, 0x30]);
    assert_eq!(h.run(ExitReason::MsrWrite { msr: 0x10, value: 3_000_000 }), ExitAction::Advance(NextRip::By(2)));
    assert_eq!(h.regs.tsc_offset, 2_000_000);
    assert_eq!(h.run(ExitReason::MsrWrite { msr: 0xc001_0117, value: 0 }), ExitAction::inject_gp());
}

#[test]
fn fatal_exits_stop_the_vm() {
    let mut h = Harness::new();
    h.regs.regs.r13 = 0xfeed;
    assert_eq!(h.run(ExitReason::Shutdown), ExitAction::Stop(StopReason::TripleFault));
    assert_eq!(
        h.run(ExitReason::InvalidGuestState { raw: 0xffff_ffff }),
        ExitAction::Stop(StopReason::InvalidGuestState { raw: 0xffff_ffff })
    );
    let ExitAction::Stop(StopReason::UnhandledExit { raw, regs }) = h.run(ExitReason::Unknown(0x8e)) else {
        panic!("unknown exit must stop the VM");
    };
    assert_eq!((raw, regs.r13, regs.rip), (0x8e, 0xfeed, CODE));
    assert_eq!(h.run(ExitReason::UnsupportedInstruction), ExitAction::inject_ud());
    assert_eq!(h.run(ExitReason::ExternalInterrupt), ExitAction::Resume);
}

#[test]
fn hlt_pause_and_exceptions() {
    let mut h = Harness::new();
    h.code(&[0xf4]);
    assert_eq!(h.run(ExitReason::Hlt), ExitAction::Halt(NextRip::By(1)));
    h.code(&[0xf3, 0x90]);
    assert_eq!(h.run(ExitReason::Pause), ExitAction::Yield(NextRip::By(2)));
    let pf = h.run(ExitReason::Exception { vector: 14, error_code: Some(2), fault_address: 0x1234 });
    assert_eq!(pf, ExitAction::Inject(Event::page_fault(2)));
    assert_eq!(h.regs.control.cr2, 0x1234);
    assert!(matches!(
        h.run(ExitReason::Exception { vector: 18, error_code: None, fault_address: 0 }),
        ExitAction::Stop(_)
    ));
    // #AC and #DB (intercepted so that delivering them cannot hang the CPU) go back to
    // the guest as they came: #AC with its error code, #DB without.
    assert_eq!(
        h.run(ExitReason::Exception { vector: 17, error_code: Some(0), fault_address: 0 }),
        ExitAction::Inject(Event::exception(17, Some(0)))
    );
    assert_eq!(
        h.run(ExitReason::Exception { vector: 1, error_code: None, fault_address: 0 }),
        ExitAction::Inject(Event::exception(1, None))
    );
}

#[test]
fn hypercalls() {
    let mut h = Harness::new();
    h.code(&[0x0f, 0x01, 0xd9]);
    h.poke(0x6000, b"hello");
    h.regs.regs.rax = bulkhead_abi::hypercall::CONSOLE_WRITE;
    h.regs.regs.rbx = 0x6000;
    h.regs.regs.rcx = 5;
    assert_eq!(h.run(ExitReason::Hypercall), ExitAction::Advance(NextRip::By(3)));
    assert_eq!((h.console.0.as_slice(), h.regs.regs.rax), (&b"hello"[..], 5));
    // Bad address and too long stop the VM; an unknown call only returns an error.
    h.regs.regs.rax = bulkhead_abi::hypercall::CONSOLE_WRITE;
    h.regs.regs.rbx = 0xffff_fff0;
    let stop = h.run(ExitReason::Hypercall);
    assert_eq!(stop, ExitAction::Stop(StopReason::BadHypercall { nr: 1, arg: 0xffff_fff0 }));
    h.regs.regs.rax = bulkhead_abi::hypercall::CONSOLE_WRITE;
    h.regs.regs.rbx = 0x6000;
    h.regs.regs.rcx = 1 << 40;
    assert!(matches!(h.run(ExitReason::Hypercall), ExitAction::Stop(StopReason::BadHypercall { .. })));
    h.regs.regs.rax = 999;
    h.run(ExitReason::Hypercall);
    assert_eq!(h.regs.regs.rax, Error::UnknownCall.to_rax());
    // RAISE_INTERRUPT queues a vector; exception vectors are refused.
    h.regs.regs.rax = bulkhead_abi::hypercall::RAISE_INTERRUPT;
    h.regs.regs.rbx = 0x40;
    assert_eq!(h.run(ExitReason::Hypercall), ExitAction::Advance(NextRip::By(3)));
    assert_eq!(h.irqs.0, vec![0x40]);
    h.regs.regs.rax = bulkhead_abi::hypercall::RAISE_INTERRUPT;
    h.regs.regs.rbx = 13;
    assert!(matches!(h.run(ExitReason::Hypercall), ExitAction::Stop(StopReason::BadHypercall { .. })));
    // VM_INFO writes the structure.
    h.regs.regs.rax = bulkhead_abi::hypercall::VM_INFO;
    h.regs.regs.rbx = 0x7000;
    h.run(ExitReason::Hypercall);
    assert_eq!(h.regs.regs.rax, 0);
    assert_eq!(h.peek::<u32>(0x7004), 7);
    assert_eq!(h.peek::<u64>(0x7008), 0x1_0000);
    assert_eq!(h.peek::<u64>(0x7010), u64::from_le_bytes(*b"corporat"));
    // Shutdown and user-mode callers.
    h.regs.regs.rax = bulkhead_abi::hypercall::SHUTDOWN;
    h.regs.regs.rbx = 3;
    assert_eq!(h.run(ExitReason::Hypercall), ExitAction::Stop(StopReason::GuestShutdown { status: 3 }));
    h.regs.cpl = 3;
    assert_eq!(h.run(ExitReason::Hypercall), ExitAction::inject_ud());
}

use bulkhead_abi::hypercall::Error;

#[test]
fn the_other_vendors_hypercall_instruction_is_a_hypercall() {
    // VMMCALL raises #UD on Intel: with #UD intercepted it arrives as an exception.
    let ud = ExitReason::Exception { vector: vector::UD, error_code: None, fault_address: 0 };
    for code in [[0x0f, 0x01, 0xd9], [0x0f, 0x01, 0xc1]] {
        let mut h = Harness::new();
        h.code(&code);
        h.poke(0x6000, b"hi");
        h.regs.regs.rax = bulkhead_abi::hypercall::CONSOLE_WRITE;
        h.regs.regs.rbx = 0x6000;
        h.regs.regs.rcx = 2;
        let exit = h.hypercall_behind_ud(ud).expect("a hypercall");
        assert_eq!(exit.reason, ExitReason::Hypercall);
        assert_eq!(exit.insn.as_slice().get(..3), Some(&code[..]));
        assert_eq!(h.run_exit(exit), ExitAction::Advance(NextRip::By(3)));
        assert_eq!((h.console.0.as_slice(), h.regs.regs.rax), (&b"hi"[..], 2));
    }
    // Any other #UD is reflected; other exits are left alone.
    let mut h = Harness::new();
    h.code(&[0x0f, 0x0b]);
    assert_eq!(h.hypercall_behind_ud(ud), None);
    assert_eq!(h.run(ud), ExitAction::Inject(Event::ud()));
    h.code(&[0x0f, 0x01, 0xd9]);
    assert_eq!(h.hypercall_behind_ud(ExitReason::Cpuid), None);
}

#[test]
fn policy_hypercalls_are_the_service_vms_and_bounded() {
    use bulkhead_abi::hypercall::{self as abi, PolicyAnswer};
    let mut h = Harness::new();
    h.code(&[0x0f, 0x01, 0xd9]);
    let call = |h: &mut Harness, nr: u64, rbx: u64, rcx: u64| {
        h.regs.regs.rax = nr;
        h.regs.regs.rbx = rbx;
        h.regs.regs.rcx = rcx;
        let action = h.run(ExitReason::Hypercall);
        (action, h.regs.regs.rax)
    };
    // Not the service VM: unknown calls.
    assert_eq!(call(&mut h, abi::POLICY_CHECKIN, 0x6000, 0).1, Error::UnknownCall.to_rax());
    assert_eq!(call(&mut h, abi::POLICY_ANSWER, 0x6000, 4).1, Error::UnknownCall.to_rax());
    // The service VM of an unmanaged laptop: unknown too.
    h.network = Some(FakeNetwork::default());
    assert_eq!(call(&mut h, abi::POLICY_CHECKIN, 0x6000, 0).1, Error::UnknownCall.to_rax());
    assert_eq!(call(&mut h, abi::NET_STATUS, 0x6000, 0).1, 5, "NET_STATUS returns the generation");
    h.network = Some(FakeNetwork { managed: true, ..FakeNetwork::default() });
    assert_eq!(call(&mut h, abi::POLICY_CHECKIN, 0x6000, 0), (ExitAction::Advance(NextRip::By(3)), 0));
    assert_eq!(h.peek::<u64>(0x6000 + 32), 9, "running_version at offset 32");
    h.poke(0x7000, b"answer");
    let (_, rax) = call(&mut h, abi::POLICY_ANSWER, 0x7000, 6);
    assert_eq!(abi::decode_answer_status(rax), Some(PolicyAnswer::Accepted { version: 10 }));
    assert_eq!(h.network.as_ref().unwrap().answers, vec![b"answer".to_vec()]);
    // Too long or outside the VM's memory: the VM stops, nothing is handed over.
    let (stop, _) = call(&mut h, abi::POLICY_ANSWER, 0x7000, abi::POLICY_ANSWER_MAX + 1);
    assert!(matches!(stop, ExitAction::Stop(StopReason::BadHypercall { .. })));
    let (stop, _) = call(&mut h, abi::POLICY_ANSWER, 0xffff_0000, 16);
    assert!(matches!(stop, ExitAction::Stop(StopReason::BadHypercall { .. })));
    let (stop, _) = call(&mut h, abi::POLICY_CHECKIN, 0xffff_ff00, 0);
    assert!(matches!(stop, ExitAction::Stop(StopReason::BadHypercall { .. })));
    assert_eq!(h.network.as_ref().unwrap().answers.len(), 1);
}

fn io(port: u16, size: AccessSize, direction: IoDirection, string: bool, rep: bool) -> ExitReason {
    ExitReason::Io(IoExit { port, size, direction, string, rep })
}

#[test]
fn port_io_routes_to_devices_and_unknown_reads_all_ones() {
    let mut h = Harness::new();
    h.regs.regs.rax = 0x1234_5641;
    let exit =
        Exit { next_rip: Some(CODE + 1), ..Exit::new(io(0x3f8, AccessSize::Byte, IoDirection::Out, false, false)) };
    assert_eq!(h.run_exit(exit), ExitAction::Advance(NextRip::To(CODE + 1)));
    assert_eq!(h.port_log.borrow()[0], (0, 1, 0x41));
    let exit =
        Exit { next_rip: Some(CODE + 2), ..Exit::new(io(0x80, AccessSize::Byte, IoDirection::In, false, false)) };
    h.run_exit(exit);
    assert_eq!(h.regs.regs.rax, 0x1234_56ff);
    let exit =
        Exit { next_rip: Some(CODE + 2), ..Exit::new(io(0x3f9, AccessSize::Word, IoDirection::In, false, false)) };
    h.run_exit(exit);
    assert_eq!(h.regs.regs.rax, 0x1234_6677);
}

#[test]
fn rep_outsb_is_emulated_in_one_exit() {
    let mut h = Harness::new();
    h.code(&[0xf3, 0x6e]); // rep outsb
    h.poke(0x6000, b"bulk!");
    h.regs.regs.rsi = 0x6000;
    h.regs.regs.rcx = 5;
    h.regs.regs.rdx = 0x3f8;
    let exit =
        Exit { next_rip: Some(CODE + 2), ..Exit::new(io(0x3f8, AccessSize::Byte, IoDirection::Out, true, true)) };
    assert_eq!(h.run_exit(exit), ExitAction::Advance(NextRip::To(CODE + 2)));
    let sent: Vec<u8> = h.port_log.borrow().iter().map(|e| e.2 as u8).collect();
    assert_eq!(sent, b"bulk!");
    assert_eq!((h.regs.regs.rsi, h.regs.regs.rcx), (0x6005, 0));
    // rep insw backwards (DF=1) into memory.
    h.code(&[0xf3, 0x66, 0x6d]);
    h.regs.regs.rdi = 0x6100;
    h.regs.regs.rcx = 2;
    h.regs.regs.rflags |= rflags::DF;
    let exit = Exit { next_rip: Some(CODE + 3), ..Exit::new(io(0x3f8, AccessSize::Word, IoDirection::In, true, true)) };
    assert_eq!(h.run_exit(exit), ExitAction::Advance(NextRip::To(CODE + 3)));
    assert_eq!(h.peek::<u16>(0x6100), 0x7788);
    assert_eq!(h.peek::<u16>(0x60fe), 0x7788);
    assert_eq!(h.regs.regs.rdi, 0x60fc);
    // A page fault on the buffer is injected with CR2.
    h.code(&[0x6e]);
    h.regs.regs.rsi = 0x20_0000;
    h.regs.regs.rflags &= !rflags::DF;
    let exit =
        Exit { next_rip: Some(CODE + 1), ..Exit::new(io(0x3f8, AccessSize::Byte, IoDirection::Out, true, false)) };
    assert_eq!(h.run_exit(exit), ExitAction::Inject(Event::page_fault(0)));
    assert_eq!(h.regs.control.cr2, 0x20_0000);
}

fn npf(gpa: u64, write: bool) -> ExitReason {
    ExitReason::NestedPageFault {
        gpa: GuestPhysAddr::new(gpa),
        info: NpfInfo { write, user: true, final_address: true, ..NpfInfo::default() },
    }
}

#[test]
fn mmio_loads_and_stores() {
    let mut h = Harness::new();
    // mov [rdi], esi
    h.code(&[0x89, 0x37]);
    h.regs.regs.rsi = 0xdead_beef_cafe_f00d;
    h.regs.regs.rdi = 0x1_0030;
    assert_eq!(h.run(npf(MMIO_BASE + 0x30, true)), ExitAction::Advance(NextRip::By(2)));
    assert_eq!(h.mmio_log.borrow()[0], (0x30, 4, 0xcafe_f00d));
    // mov eax, [rdi+0x30] zero-extends into RAX.
    h.code(&[0x8b, 0x47, 0x30]);
    h.regs.regs.rax = u64::MAX;
    h.run(npf(MMIO_BASE + 0x30, false));
    assert_eq!(h.regs.regs.rax, 0x5566_7788);
    // movsx rax, byte [rdi] ; movzx ecx, word [rdi]
    h.code(&[0x48, 0x0f, 0xbe, 0x07]);
    h.run(npf(MMIO_BASE, false));
    assert_eq!(h.regs.regs.rax, 0xffff_ffff_ffff_ff88);
    h.code(&[0x0f, 0xb7, 0x0f]);
    h.regs.regs.rcx = u64::MAX;
    h.run(npf(MMIO_BASE, false));
    assert_eq!(h.regs.regs.rcx, 0x7788);
    // mov dword [rdi], imm32
    h.code(&[0xc7, 0x07, 0x01, 0x00, 0x00, 0x80]);
    assert_eq!(h.run(npf(MMIO_BASE, true)), ExitAction::Advance(NextRip::By(6)));
    assert_eq!(h.mmio_log.borrow()[1], (0, 4, 0x8000_0001));
}

#[test]
fn mmio_read_modify_write_and_flags() {
    let mut h = Harness::new();
    // or dword [rdi+4], 0x80 : device reads 0x33445566 at offset 4.
    h.code(&[0x83, 0x4f, 0x04, 0x80]);
    h.regs.regs.rdi = 0x1_0000;
    h.run(npf(MMIO_BASE + 4, true));
    assert_eq!(h.mmio_log.borrow()[0], (4, 4, 0xffff_ffc4));
    // test byte [rdi], 0x88 sets flags only.
    h.code(&[0xf6, 0x07, 0x88]);
    h.run(npf(MMIO_BASE, false));
    assert_eq!(h.mmio_log.borrow().len(), 1);
    assert_eq!(h.regs.regs.rflags & (rflags::SF | rflags::ZF), rflags::SF);
    // xchg [rdi], eax
    h.code(&[0x87, 0x07]);
    h.regs.regs.rax = 0x42;
    h.run(npf(MMIO_BASE, true));
    assert_eq!(h.mmio_log.borrow()[1], (0, 4, 0x42));
    assert_eq!(h.regs.regs.rax, 0x5566_7788);
}

#[test]
fn mmio_holes_and_bad_faults() {
    let mut h = Harness::new();
    // A load from a hole no device claims is an access outside the VM: it stops.
    h.code(&[0x8b, 0x07]);
    h.regs.regs.rax = 0;
    let stop = h.run(npf(0xc000_0000, false));
    assert!(matches!(stop, ExitAction::Stop(StopReason::NestedPageFault { gpa, .. }) if gpa.raw() == 0xc000_0000));
    assert_eq!(h.regs.regs.rax, 0);
    // A fault on RAM is not MMIO.
    assert!(matches!(h.run(npf(0x5000, true)), ExitAction::Stop(StopReason::NestedPageFault { .. })));
    // A fault in the guest's own page-table walk stops the VM.
    let walk_fault = ExitReason::NestedPageFault {
        gpa: GuestPhysAddr::new(0xc000_0000),
        info: NpfInfo { in_guest_walk: true, ..NpfInfo::default() },
    };
    assert!(matches!(h.run(walk_fault), ExitAction::Stop(_)));
    // An instruction the emulator does not model stops the VM with its bytes.
    h.code(&[0x0f, 0xc3, 0x07]); // movnti [rdi], eax
    let ExitAction::Stop(StopReason::EmulationFailed { rip, insn }) = h.run(npf(MMIO_BASE, true)) else {
        panic!("expected EmulationFailed");
    };
    assert_eq!((rip, &insn.as_slice()[..3]), (CODE, &[0x0f, 0xc3, 0x07][..]));
    // Decode-assist bytes are used when present (no fetch needed).
    h.regs.regs.rip = 0xdead_0000;
    let exit = Exit { insn: InsnBytes::new(&[0x89, 0x07, 0x90]), ..Exit::new(npf(MMIO_BASE + 8, true)) };
    assert_eq!(h.run_exit(exit), ExitAction::Advance(NextRip::By(2)));
}

#[test]
fn rep_stos_to_mmio() {
    let mut h = Harness::new();
    h.code(&[0xf3, 0xab]); // rep stosd
    h.regs.regs.rdi = 0x1_0000;
    h.regs.regs.rcx = 3;
    h.regs.regs.rax = 0xabcd;
    assert_eq!(h.run(npf(MMIO_BASE, true)), ExitAction::Advance(NextRip::By(2)));
    let log = h.mmio_log.borrow();
    assert_eq!(log.len(), 3);
    assert_eq!(log[2], (8, 4, 0xabcd));
    assert_eq!((h.regs.regs.rdi, h.regs.regs.rcx), (0x1_000c, 0));
}

#[test]
fn xsetbv_validation() {
    let mut h = Harness::new();
    h.code(&[0x0f, 0x01, 0xd1]);
    assert_eq!(h.run(ExitReason::Xsetbv), ExitAction::inject_ud());
    h.regs.control.cr4 |= 1 << 18;
    h.regs.regs.rax = 0x7;
    assert_eq!(h.run(ExitReason::Xsetbv), ExitAction::Advance(NextRip::By(3)));
    assert_eq!(h.regs.xcr0, 7);
    for bad in [0x6, 0x5, 1 << 17, 0x3 | 0xe0] {
        h.regs.regs.rax = bad;
        assert_eq!(h.run(ExitReason::Xsetbv), ExitAction::inject_gp(), "{bad:#x}");
    }
}

#[test]
fn rdtscp_returns_the_vcpus_own_tsc_aux() {
    let mut h = Harness::new();
    h.regs.set_msr(VendorMsr::TscAux, 0x5a5a);
    h.code(&[0x0f, 0x01, 0xf9]);
    assert_eq!(h.run(ExitReason::Rdtscp), ExitAction::Advance(NextRip::By(3)));
    assert_eq!(h.regs.gpr(Gpr::Rcx), 0x5a5a);
    assert_eq!(h.regs.gpr(Gpr::Rax), 1_000_000);
}
