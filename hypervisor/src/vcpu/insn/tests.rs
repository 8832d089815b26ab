//! Decoder, walker and fetch tests. Encodings were cross-checked with an assembler
//! (GNU as, Intel syntax) and Linux's MMIO accessors (`readl`/`writel` compile to
//! `8b`/`89` with a plain base register).

use super::walk::{Access, PageFault, PagingControls, WalkError, fetch, pf, translate, walk};
use super::*;
use crate::arch::regs::FakeRegs;
use crate::memory::addr::{GuestPhysAddr, HostPhysAddr};
use crate::memory::guest::{
    GuestMemory, GuestMemoryAccess, GuestMemoryMap, GuestRegion, Perms, VecHostMemory, write_obj,
};
use alloc::vec;
use std::collections::HashMap;

fn d64(bytes: &[u8]) -> Instruction {
    decode(bytes, CpuMode::Long64).unwrap()
}

fn reg(gpr: Gpr, size: AccessSize) -> Operand {
    Operand::Reg(RegOperand { gpr, size, high_byte: false })
}

fn mem(base: Option<Gpr>, disp: i64, size: AccessSize) -> Operand {
    Operand::Mem(MemOperand { segment: SegReg::Ds, base, index: None, scale: 1, disp, rip_relative: false, size })
}

#[test]
fn lengths_of_exiting_instructions() {
    let cases: &[(&[u8], Op, u8)] = &[
        (&[0x0f, 0xa2], Op::Cpuid, 2),
        (&[0x48, 0x0f, 0xa2], Op::Cpuid, 3),
        (&[0x0f, 0x32], Op::Rdmsr, 2),
        (&[0x0f, 0x30], Op::Wrmsr, 2),
        (&[0x0f, 0x31], Op::Rdtsc, 2),
        (&[0x0f, 0x01, 0xf9], Op::Rdtscp, 3),
        (&[0x0f, 0x01, 0xd9], Op::Vmmcall, 3),
        (&[0x0f, 0x01, 0xc1], Op::Vmcall, 3),
        (&[0x0f, 0x01, 0xd8], Op::Svm, 3),
        (&[0x0f, 0x01, 0xd1], Op::Xsetbv, 3),
        (&[0xf4], Op::Hlt, 1),
        (&[0xf3, 0x90], Op::Pause, 2),
        (&[0xe6, 0x80], Op::Out, 2),
        (&[0xec], Op::In, 1),
        (&[0x66, 0xef], Op::Out, 2),
        (&[0xf3, 0x6e], Op::Outs, 2),
        (&[0xf3, 0x48, 0xa5], Op::Movs, 3),
        (&[0x0f, 0x09], Op::Wbinvd, 2),
    ];
    for (bytes, op, len) in cases {
        let i = d64(bytes);
        assert_eq!((i.op, i.len), (*op, *len), "{bytes:02x?}");
    }
}

#[test]
fn mov_forms_linux_uses_for_mmio() {
    // mov [rdi], esi   (writel)
    let i = d64(&[0x89, 0x37]);
    assert_eq!((i.op, i.len), (Op::Mov, 2));
    assert_eq!(i.dst, mem(Some(Gpr::Rdi), 0, AccessSize::Dword));
    assert_eq!(i.src, reg(Gpr::Rsi, AccessSize::Dword));
    // mov eax, [rdi+0x30]   (readl)
    let i = d64(&[0x8b, 0x47, 0x30]);
    assert_eq!(i.dst, reg(Gpr::Rax, AccessSize::Dword));
    assert_eq!(i.src, mem(Some(Gpr::Rdi), 0x30, AccessSize::Dword));
    // mov r9, [r12+rcx*8-8]
    let i = d64(&[0x4d, 0x8b, 0x4c, 0xcc, 0xf8]);
    assert_eq!(i.dst, reg(Gpr::R9, AccessSize::Qword));
    let Operand::Mem(m) = i.src else { panic!() };
    assert_eq!((m.base, m.index, m.scale, m.disp), (Some(Gpr::R12), Some(Gpr::Rcx), 8, -8));
    // mov byte [rax], dl ; mov dh, [rax] (high byte without REX)
    assert_eq!(d64(&[0x88, 0x10]).src, reg(Gpr::Rdx, AccessSize::Byte));
    let hi = d64(&[0x8a, 0x30]).dst;
    assert_eq!(hi, Operand::Reg(RegOperand { gpr: Gpr::Rdx, size: AccessSize::Byte, high_byte: true }));
    // With REX, reg 6 is SIL.
    assert_eq!(d64(&[0x40, 0x8a, 0x30]).dst, reg(Gpr::Rsi, AccessSize::Byte));
    // mov word [rbx], ax (66 prefix)
    let i = d64(&[0x66, 0x89, 0x03]);
    assert_eq!((i.operand_size, i.len), (AccessSize::Word, 3));
}

#[test]
fn immediates_and_moffs() {
    // mov dword [rax+0x10], 0x12345678
    let i = d64(&[0xc7, 0x40, 0x10, 0x78, 0x56, 0x34, 0x12]);
    assert_eq!((i.len, i.src), (7, Operand::Imm(0x1234_5678)));
    // mov qword [rax], -1 (imm32 sign-extended)
    let i = d64(&[0x48, 0xc7, 0x00, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!(i.src, Operand::Imm(u64::MAX));
    // mov byte [rip+0x100], 7
    let i = d64(&[0xc6, 0x05, 0x00, 0x01, 0x00, 0x00, 0x07]);
    let Operand::Mem(m) = i.dst else { panic!() };
    assert!(m.rip_relative);
    assert_eq!((m.disp, i.len, i.src), (0x100, 7, Operand::Imm(7)));
    // mov eax, [moffs64]
    let i = d64(&[0xa1, 0x00, 0x00, 0xe0, 0xfe, 0, 0, 0, 0]);
    assert_eq!(i.len, 9);
    assert_eq!(i.src, mem(None, 0xfee0_0000, AccessSize::Dword));
    // mov [moffs32], al with 67 in 64-bit mode
    let i = d64(&[0x67, 0xa2, 0x10, 0x00, 0x00, 0x00]);
    assert_eq!((i.len, i.dst), (6, mem(None, 0x10, AccessSize::Byte)));
    // mov rax, imm64
    assert_eq!(d64(&[0x48, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8]).len, 10);
    // or dword [rdx+4], 0x80 (83 /1 ib)
    let i = d64(&[0x83, 0x4a, 0x04, 0x80]);
    assert_eq!((i.op, i.src), (Op::Or, Operand::Imm(0xffff_ff80)));
    // and word [rdx], 0xfff0
    let i = d64(&[0x66, 0x81, 0x22, 0xf0, 0xff]);
    assert_eq!((i.op, i.len, i.src), (Op::And, 5, Operand::Imm(0xfff0)));
    // test byte [rsi], 1
    let i = d64(&[0xf6, 0x06, 0x01]);
    assert_eq!((i.op, i.len), (Op::Test, 3));
}

#[test]
fn alu_movzx_xchg_and_strings() {
    assert_eq!(d64(&[0x01, 0x07]).op, Op::Add);
    assert_eq!(d64(&[0x2b, 0x07]).op, Op::Sub);
    assert_eq!(d64(&[0x31, 0x07]).op, Op::Xor);
    assert_eq!(d64(&[0x39, 0x07]).op, Op::Cmp);
    assert_eq!(d64(&[0x85, 0x07]).op, Op::Test);
    assert_eq!(d64(&[0x87, 0x07]).op, Op::Xchg);
    // movzx eax, word [rdi] ; movsx rax, byte [rdi]
    let i = d64(&[0x0f, 0xb7, 0x07]);
    assert_eq!((i.op, i.operand_size), (Op::Movzx, AccessSize::Dword));
    assert_eq!(i.src, mem(Some(Gpr::Rdi), 0, AccessSize::Word));
    let i = d64(&[0x48, 0x0f, 0xbe, 0x07]);
    assert_eq!((i.op, i.operand_size), (Op::Movsx, AccessSize::Qword));
    // rep stosd, rep movsb
    let i = d64(&[0xf3, 0xab]);
    assert_eq!((i.op, i.rep, i.operand_size), (Op::Stos, Rep::Rep, AccessSize::Dword));
    let i = d64(&[0xf3, 0xa4]);
    let Operand::Mem(dst) = i.dst else { panic!() };
    let Operand::Mem(src) = i.src else { panic!() };
    assert_eq!((dst.segment, dst.base), (SegReg::Es, Some(Gpr::Rdi)));
    assert_eq!((src.segment, src.base), (SegReg::Ds, Some(Gpr::Rsi)));
    // fs: override on the source of movs.
    let i = d64(&[0x64, 0xa4]);
    assert_eq!(i.mem_operand().map(|m| m.segment), Some(SegReg::Es));
    let Operand::Mem(src) = i.src else { panic!() };
    assert_eq!(src.segment, SegReg::Fs);
}

#[test]
fn legacy_prefix_after_rex_cancels_it() {
    // 48 66 89 07: REX.W is not last, so this is a 16-bit store.
    let i = d64(&[0x48, 0x66, 0x89, 0x07]);
    assert_eq!((i.operand_size, i.len), (AccessSize::Word, 4));
}

#[test]
fn sixteen_and_thirty_two_bit_modes() {
    // Real mode: mov [bx+si+4], ax ; 66 prefix makes it 32-bit.
    let i = decode(&[0x89, 0x40, 0x04], CpuMode::Real).unwrap();
    assert_eq!(i.operand_size, AccessSize::Word);
    let Operand::Mem(m) = i.dst else { panic!() };
    assert_eq!((m.base, m.index, m.disp), (Some(Gpr::Rbx), Some(Gpr::Rsi), 4));
    let i = decode(&[0x66, 0x89, 0x06, 0x34, 0x12], CpuMode::Real).unwrap();
    assert_eq!((i.operand_size, i.len), (AccessSize::Dword, 5));
    assert_eq!(i.dst, mem(None, 0x1234, AccessSize::Dword));
    // 32-bit: mov eax, [0xfee00020] is absolute, not RIP-relative; 40 is INC, not REX.
    let i = decode(&[0x8b, 0x05, 0x20, 0x00, 0xe0, 0xfe], CpuMode::Protected32).unwrap();
    assert_eq!(i.src, mem(None, 0xfee0_0020u32 as i32 as i64, AccessSize::Dword));
    assert!(decode(&[0x40], CpuMode::Protected32).is_err());
    // [bp+2] defaults to SS.
    let i = decode(&[0x8b, 0x46, 0x02], CpuMode::Real).unwrap();
    assert_eq!(i.mem_operand().map(|m| m.segment), Some(SegReg::Ss));
}

#[test]
fn errors_not_panics() {
    assert_eq!(decode(&[], CpuMode::Long64), Err(DecodeError::Truncated));
    assert_eq!(decode(&[0x0f], CpuMode::Long64), Err(DecodeError::Truncated));
    assert_eq!(decode(&[0x89], CpuMode::Long64), Err(DecodeError::Truncated));
    assert_eq!(decode(&[0xc7, 0x00, 1, 2], CpuMode::Long64), Err(DecodeError::Truncated));
    assert_eq!(decode(&[0x66; 20], CpuMode::Long64), Err(DecodeError::TooLong));
    let mut long = [0x66u8; 16];
    long[13] = 0x0f;
    long[14] = 0xa2;
    assert_eq!(decode(&long[..15], CpuMode::Long64).unwrap().len, 15);
    long[12] = 0x66;
    long[13] = 0x66;
    long[14] = 0x0f;
    long[15] = 0xa2;
    assert_eq!(decode(&long, CpuMode::Long64), Err(DecodeError::TooLong));
    assert!(matches!(decode(&[0xcc], CpuMode::Long64), Err(DecodeError::Unsupported { opcode: 0xcc })));
}

#[test]
fn operand_helpers() {
    let mut r = FakeRegs::long_mode(0);
    r.regs.rdi = 0x1000;
    r.regs.rcx = 3;
    let i = d64(&[0x8b, 0x44, 0x8f, 0x10]); // mov eax, [rdi+rcx*4+0x10]
    let m = *i.mem_operand().unwrap();
    assert_eq!(effective_address(&m, i.address_size, &r, 0), 0x101c);
    r.segs[SegReg::Fs as usize].base = 0x7000_0000;
    let fs = MemOperand { segment: SegReg::Fs, ..m };
    assert_eq!(linear_address(&fs, i.address_size, &r, 0), 0x7000_101c);
    let ds = MemOperand { segment: SegReg::Ds, ..m };
    r.segs[SegReg::Ds as usize].base = 0x5000;
    assert_eq!(linear_address(&ds, i.address_size, &r, 0), 0x101c);
    // Register write semantics.
    r.regs.rax = u64::MAX;
    let ah = RegOperand { gpr: Gpr::Rax, size: AccessSize::Byte, high_byte: true };
    write_reg(&mut r, &ah, 0x12);
    assert_eq!(r.regs.rax, 0xffff_ffff_ffff_12ff);
    assert_eq!(read_reg(&r, &ah), 0x12);
    let eax = RegOperand { gpr: Gpr::Rax, size: AccessSize::Dword, high_byte: false };
    write_reg(&mut r, &eax, 0x1_2345_6789);
    assert_eq!(r.regs.rax, 0x2345_6789);
    assert_eq!(sign_extend(0x80, AccessSize::Byte), 0xffff_ffff_ffff_ff80);
    assert_eq!(sign_extend(0x7fff, AccessSize::Word), 0x7fff);
}

/// Fake guest physical memory as 8-byte words.
fn walker_memory() -> HashMap<u64, u64> {
    // PML4 at 0x1000, PDPT at 0x2000, PD at 0x3000, PT at 0x4000.
    let mut m = HashMap::new();
    m.insert(0x1000, 0x2000 | 0x7); // PML4[0] -> PDPT (P, RW, US)
    m.insert(0x2000, 0x3000 | 0x7); // PDPT[0] -> PD
    m.insert(0x2000 + 8, 0x4000_0000 | 0x83); // PDPT[1]: 1G page at 1G, supervisor
    m.insert(0x3000, 0x4000 | 0x7); // PD[0] -> PT
    m.insert(0x3000 + 8, 0x60_0000 | 0x85); // PD[1]: 2M page, read-only, user
    m.insert(0x4000 + 8 * 5, 0x9000 | 0x5); // PT[5]: 4K page at 0x9000, RO user
    m.insert(0x4000 + 8 * 6, 0xa000 | 0x7 | (1 << 63)); // PT[6]: NX
    m
}

fn w(m: &HashMap<u64, u64>, gva: u64, access: Access, ctl: PagingControls) -> Result<u64, WalkError> {
    // Addresses below 64 KiB are RAM (absent entries read as 0); above is a hole.
    let read = |gpa: GuestPhysAddr| match m.get(&gpa.raw()) {
        Some(v) => Some(*v),
        None => (gpa.raw() < 0x1_0000).then_some(0),
    };
    walk(0x1000, gva, access, ctl, read).map(|g| g.raw())
}

#[test]
fn walker_translates_4k_2m_1g() {
    let m = walker_memory();
    let ctl = PagingControls { nx_enabled: true, ..PagingControls::default() };
    let read = Access::default();
    assert_eq!(w(&m, 0x5123, read, ctl), Ok(0x9123));
    assert_eq!(w(&m, 0x20_1234, read, ctl), Ok(0x60_1234));
    assert_eq!(w(&m, 0x4123_4567, read, ctl), Ok(0x4123_4567));
}

#[test]
fn walker_reports_fault_codes() {
    let m = walker_memory();
    let ctl = PagingControls { nx_enabled: true, write_protect: true, smep: false };
    let pfault = |address, error_code| Err(WalkError::PageFault(PageFault { address, error_code }));
    // Not present.
    assert_eq!(w(&m, 0x7000, Access::default(), ctl), pfault(0x7000, 0));
    // Supervisor write to read-only page with CR0.WP.
    let write = Access { write: true, ..Access::default() };
    assert_eq!(w(&m, 0x5000, write, ctl), pfault(0x5000, pf::PRESENT | pf::WRITE));
    // ...allowed without WP.
    assert_eq!(w(&m, 0x5000, write, PagingControls { write_protect: false, ..ctl }), Ok(0x9000));
    // User access to the supervisor 1G page.
    let user = Access { user: true, ..Access::default() };
    assert_eq!(w(&m, 0x4000_0000, user, ctl), pfault(0x4000_0000, pf::PRESENT | pf::USER));
    // Fetch from NX page.
    let fetch = Access { fetch: true, ..Access::default() };
    assert_eq!(w(&m, 0x6000, fetch, ctl), pfault(0x6000, pf::PRESENT | pf::FETCH));
    // NX bit set while EFER.NXE = 0 is reserved.
    let no_nx = PagingControls { nx_enabled: false, ..ctl };
    assert_eq!(w(&m, 0x6000, Access::default(), no_nx), pfault(0x6000, pf::PRESENT | pf::RESERVED));
    // Non-canonical, and tables outside memory.
    assert_eq!(w(&m, 0x8000_0000_0000, Access::default(), ctl), Err(WalkError::NonCanonical));
    let mut broken = m.clone();
    broken.insert(0x1000 + 8, 0xdead_0000 | 0x7);
    assert_eq!(
        w(&broken, 0x80_0000_0000, Access::default(), ctl),
        Err(WalkError::TableNotInMemory(GuestPhysAddr::new(0xdead_0000)))
    );
}

/// 64 KiB of guest RAM at GPA 0 with identity-mapped 4K pages for 0..64K, where
/// page 0xf000 is left unmapped.
fn paged_guest() -> (GuestMemoryMap, VecHostMemory) {
    let map = GuestMemoryMap::new(vec![
        GuestRegion::new(GuestPhysAddr::new(0), HostPhysAddr::new(0), 0x1_0000, Perms::RWX).unwrap(),
    ])
    .unwrap();
    let host = VecHostMemory::new(HostPhysAddr::new(0), 0x1_0000);
    (map, host)
}

#[test]
fn fetch_across_pages_and_truncation() {
    let (map, host) = paged_guest();
    let mut mem = GuestMemory::new(&map, host);
    let g = GuestPhysAddr::new;
    write_obj(&mut mem, g(0x1000), 0x2000u64 | 7).unwrap();
    write_obj(&mut mem, g(0x2000), 0x3000u64 | 7).unwrap();
    write_obj(&mut mem, g(0x3000), 0x4000u64 | 7).unwrap();
    for page in 0..15u64 {
        write_obj(&mut mem, g(0x4000 + page * 8), (page << 12) | 7).unwrap();
    }
    // Instruction at 0xdffe: "0f a2" split across pages 0xd000 / 0xe000.
    mem.write_bytes(g(0xdffe), &[0x0f]).unwrap();
    mem.write_bytes(g(0xdfff), &[0xa2, 0x90]).unwrap();
    let mut regs = FakeRegs::long_mode(0x1000);
    regs.regs.rip = 0xdfff;
    let bytes = fetch(&regs, &mem).unwrap();
    assert_eq!(bytes.as_slice().len(), 15);
    assert_eq!(bytes.as_slice()[0], 0xa2);
    // Page 0xf000 is not mapped: fetch stops at the page end.
    regs.regs.rip = 0xeffd;
    assert_eq!(fetch(&regs, &mem).unwrap().as_slice().len(), 3);
    regs.regs.rip = 0xf000;
    assert!(matches!(fetch(&regs, &mem), Err(WalkError::PageFault(_))));
    // Paging off: linear = physical; 32-bit paging is unsupported.
    regs.control.cr0 = 1;
    regs.regs.rip = 0xdffe;
    assert_eq!(fetch(&regs, &mem).unwrap().as_slice()[..2], [0x0f, 0xa2]);
    regs.control.cr0 = 1 | (1 << 31);
    regs.control.efer = 0;
    assert_eq!(translate(&regs, &mem, 0, Access::default()), Err(WalkError::UnsupportedMode));
}

/// xorshift64*, deterministic.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn random_bytes_never_panic_and_lengths_are_sane() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let prefixes = [0x66u8, 0x67, 0xf3, 0xf2, 0x48, 0x4c, 0x41, 0x0f, 0x64, 0x26, 0x89, 0x8b];
    let modes = [CpuMode::Long64, CpuMode::Protected32, CpuMode::Protected16, CpuMode::Real];
    let mut ok = 0u32;
    for _ in 0..200_000 {
        let mut buf = [0u8; 16];
        let len = (rng.next() % 17) as usize;
        for b in buf.iter_mut().take(len) {
            let r = rng.next();
            // Bias towards prefixes and interesting opcodes.
            *b = if r & 3 == 0 { prefixes[(r >> 8) as usize % prefixes.len()] } else { (r >> 16) as u8 };
        }
        let mode = modes[(rng.next() % 4) as usize];
        if let Ok(i) = decode(&buf[..len], mode) {
            assert!((1..=15).contains(&i.len), "{:02x?} -> {}", &buf[..len], i.len);
            assert!(usize::from(i.len) <= len);
            ok += 1;
        }
    }
    assert!(ok > 10_000, "only {ok} decodable inputs");
}

const PLAIN_ENCODINGS: [(Op, &[u8]); 11] = [
    (Op::Cpuid, &[0x0f, 0xa2]),
    (Op::Rdmsr, &[0x0f, 0x32]),
    (Op::Wrmsr, &[0x0f, 0x30]),
    (Op::Rdtsc, &[0x0f, 0x31]),
    (Op::Rdtscp, &[0x0f, 0x01, 0xf9]),
    (Op::Vmmcall, &[0x0f, 0x01, 0xd9]),
    (Op::Vmcall, &[0x0f, 0x01, 0xc1]),
    (Op::Xsetbv, &[0x0f, 0x01, 0xd1]),
    (Op::Wbinvd, &[0x0f, 0x09]),
    (Op::Hlt, &[0xf4]),
    (Op::Pause, &[0xf3, 0x90]),
];

const ALL_OPS: [Op; 11] = [
    Op::Cpuid,
    Op::Rdmsr,
    Op::Wrmsr,
    Op::Rdtsc,
    Op::Rdtscp,
    Op::Vmmcall,
    Op::Vmcall,
    Op::Xsetbv,
    Op::Wbinvd,
    Op::Hlt,
    Op::Pause,
];

#[test]
fn plain_length_answers_only_where_the_decoder_agrees() {
    // Every 3-byte start (followed by NOPs): wherever the shortcut gives a length,
    // the decoder must give the same instruction and length, in every mode.
    let modes = [CpuMode::Long64, CpuMode::Protected32, CpuMode::Protected16, CpuMode::Real];
    let mut answered = 0;
    for start in 0..(1u32 << 24) {
        let [b0, b1, b2, _] = start.to_le_bytes();
        let bytes = [b0, b1, b2, 0x90, 0x90, 0x90, 0x90, 0x90];
        let Some(len) = plain_length(&bytes, &ALL_OPS) else { continue };
        answered += 1;
        for mode in modes {
            let i = decode(&bytes, mode).unwrap();
            assert_eq!(i.len, len, "{bytes:02x?} in {mode:?}");
            assert_eq!(plain_length(&bytes, &[i.op]), Some(len), "{bytes:02x?} is {:?}", i.op);
        }
    }
    assert!(answered > 0);
}

#[test]
fn plain_encodings_agree_with_the_decoder_in_every_mode() {
    for (op, encoding) in PLAIN_ENCODINGS {
        for mode in [CpuMode::Long64, CpuMode::Protected32, CpuMode::Protected16, CpuMode::Real] {
            let i = decode(encoding, mode).unwrap();
            assert_eq!((i.op, usize::from(i.len)), (op, encoding.len()), "{encoding:02x?} in {mode:?}");
        }
        let mut followed = encoding.to_vec();
        followed.extend_from_slice(&[0x90; 8]);
        assert_eq!(plain_length(&followed, &[op]), Some(encoding.len() as u8));
    }
}

#[test]
fn plain_length_leaves_prefixed_and_unexpected_instructions_to_the_decoder() {
    // REX.W CPUID is 3 bytes: only the decoder gets that right.
    assert_eq!(plain_length(&[0x48, 0x0f, 0xa2], &[Op::Cpuid]), None);
    assert_eq!(plain_length(&[0x66, 0x0f, 0xa2], &[Op::Cpuid]), None);
    assert_eq!(plain_length(&[0x0f, 0xa2], &[Op::Rdmsr]), None);
    assert_eq!(plain_length(&[0x0f], &[Op::Cpuid]), None, "truncated");
    assert_eq!(plain_length(&[0xf3, 0xf3, 0x90], &[Op::Pause]), None);
    assert_eq!(plain_length(&[0x0f, 0x01, 0xd9], &[Op::Vmmcall, Op::Vmcall]), Some(3));
}
