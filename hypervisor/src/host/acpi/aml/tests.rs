use super::*;
use crate::host::acpi::test_util::sdt;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/acpi");

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{path}")).unwrap()
}

const fn level_low(gsi: u32) -> Option<IntxRoute> {
    Some(IntxRoute { gsi, level_triggered: true, active_low: true })
}

const fn level_high(gsi: u32) -> Option<IntxRoute> {
    Some(IntxRoute { gsi, level_triggered: true, active_low: false })
}

/// QEMU 7.2 q35 `PRTA` (what `_PRT` returns after `\_PIC(1)`): slots 0..=0x18 rotate
/// over GSIE..GSIH (20..23) by slot number, slot 0x1e is fixed at GSIE..GSIH, the other
/// ICH9 slots 0x19..=0x1f at GSIA..GSID (16..19).
fn qemu_expected(slot: u8, pin: u8) -> u32 {
    let pin0 = u32::from(pin - 1);
    match slot {
        0x1e => 20 + pin0,
        0x19..=0x1f => 16 + pin0,
        _ => 20 + (u32::from(slot) + pin0) % 4,
    }
}

#[test]
fn qemu_q35_routes_in_apic_mode() {
    for dir in ["qemu-q35", "qemu-q35-intel-iommu", "qemu-q35-amd-iommu"] {
        let dsdt = fixture(&format!("{dir}/DSDT.bin"));
        let (routing, problems) = PciInterruptRouting::from_aml(&[&dsdt]);
        assert!(problems.is_empty(), "{dir}: {problems:#?}");
        // Only \_SB.PCI0 has a _PRT; the root port S18 (00:03.0) has none.
        assert_eq!(routing.table_count(), 1, "{dir}");
        for slot in 0..32u8 {
            for pin in 1..=4u8 {
                let want = level_high(qemu_expected(slot, pin));
                assert_eq!(routing.route(0, 0, &[(slot, 0)], pin), want, "{dir} slot {slot:#x} pin {pin}");
            }
        }
    }
}

#[test]
fn qemu_q35_concrete_routes() {
    let dsdt = fixture("qemu-q35/DSDT.bin");
    let (r, _) = PciInterruptRouting::from_aml(&[&dsdt]);
    // GSIA..GSIH are Interrupt (ResourceConsumer, Level, ActiveHigh, Shared) {16..23}.
    let table = [
        (1, [21, 22, 23, 20]),
        (2, [22, 23, 20, 21]),
        (3, [23, 20, 21, 22]),
        (4, [20, 21, 22, 23]),
        (5, [21, 22, 23, 20]),
        (6, [22, 23, 20, 21]),
        (0x18, [20, 21, 22, 23]),
        (0x19, [16, 17, 18, 19]),
        (0x1a, [16, 17, 18, 19]),
        (0x1b, [16, 17, 18, 19]),
        (0x1c, [16, 17, 18, 19]),
        (0x1d, [16, 17, 18, 19]),
        (0x1e, [20, 21, 22, 23]),
        (0x1f, [16, 17, 18, 19]),
    ];
    for (slot, gsis) in table {
        for (pin, gsi) in (1..=4).zip(gsis) {
            assert_eq!(r.route(0, 0, &[(slot, 0)], pin), level_high(gsi), "slot {slot:#x} pin {pin}");
            // Any function of the slot: the entries say 0xFFFF.
            assert_eq!(r.route(0, 0, &[(slot, 3)], pin), level_high(gsi), "slot {slot:#x}.3 pin {pin}");
        }
    }
    // The e1000e behind the root port at 00:03.0 (no _PRT there): device 0 swizzles
    // to the root port's own slot and pin, INTA -> slot 3 INTA.
    assert_eq!(r.route(0, 0, &[(3, 0), (0, 0)], 1), level_high(23));
    assert_eq!(r.route(0, 0, &[(2, 0), (0, 0)], 1), level_high(22));
    assert_eq!(r.route(0, 0, &[(2, 0), (0, 0)], 2), level_high(23));
    // Device 1 behind the port at slot 2: pin A becomes B at the port.
    assert_eq!(r.route(0, 0, &[(2, 0), (1, 0)], 1), level_high(23));
    // Two bridges deep: (2,0) -> (0,0) -> (3,0) INTB: A at the switch ((1 + 3) % 4),
    // A at slot 2.
    assert_eq!(r.route(0, 0, &[(2, 0), (0, 0), (3, 0)], 2), level_high(22));
    // Nothing else describes other segments, buses or pins.
    assert_eq!(r.route(1, 0, &[(2, 0)], 1), None);
    assert_eq!(r.route(0, 1, &[(2, 0)], 1), None);
    assert_eq!(r.route(0, 0, &[(2, 0)], 0), None);
    assert_eq!(r.route(0, 0, &[(2, 0)], 5), None);
    assert_eq!(r.route(0, 0, &[], 1), None);
}

fn laptop() -> (PciInterruptRouting, Vec<String>) {
    let dsdt = fixture("laptop-prt/DSDT.aml");
    let ssdt = fixture("laptop-prt/SSDT.aml");
    PciInterruptRouting::from_aml(&[&dsdt, &ssdt])
}

#[test]
fn laptop_routes_in_apic_mode() {
    let (r, problems) = laptop();
    // PCI0, PEG0, RP01 and the SSDT's RP05; RP09's _PRT fails.
    assert_eq!(r.table_count(), 4, "{problems:#?}");
    // `If ((OSYS >= 0x07D9))` at the top level is not evaluated.
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert_eq!(problems[0], "DSDT: 1 top-level If block(s) with a non-constant predicate not loaded");
    assert!(
        problems[1].starts_with("\\_SB.PCI0.RP09._PRT: unsupported opcode 0x5B 0x23 at SSDT1 offset 0x"),
        "{problems:#?}"
    );
    // Root bus, from AR00 (Source 0: level, active low), not the LNKx of PR00.
    assert_eq!(r.route(0, 0, &[(2, 0)], 1), level_low(16));
    assert_eq!(r.route(0, 0, &[(0x14, 0)], 1), level_low(16));
    assert_eq!(r.route(0, 0, &[(0x14, 0)], 2), level_low(17));
    assert_eq!(r.route(0, 0, &[(0x14, 0)], 3), None);
    assert_eq!(r.route(0, 0, &[(0x17, 0)], 1), level_low(16));
    for (pin, gsi) in (1..=4).zip([21, 23, 22, 20]) {
        assert_eq!(r.route(0, 0, &[(0x1f, 3)], pin), level_low(gsi));
    }
    for (pin, gsi) in (1..=4).zip([20, 21, 22, 23]) {
        assert_eq!(r.route(0, 0, &[(0x1c, 2)], pin), level_low(gsi));
    }
    // RP01 (1C.0) has its own table, which wins over swizzling onto PCI0's 1C entries.
    for (pin, gsi) in (1..=4).zip([16, 17, 18, 19]) {
        assert_eq!(r.route(0, 0, &[(0x1c, 0), (0, 0)], pin), level_low(gsi));
    }
    // RP03 (1C.2) has none: device 0 behind it swizzles to 1C's pins (20..23).
    for (pin, gsi) in (1..=4).zip([20, 21, 22, 23]) {
        assert_eq!(r.route(0, 0, &[(0x1c, 2), (0, 0)], pin), level_low(gsi));
    }
    // Below RP01, a switch at (0,0) without _PRT: device 3 INTB -> switch pin A
    // ((1 + 3) % 4 + 1 = 1) -> RP01 table pin A.
    assert_eq!(r.route(0, 0, &[(0x1c, 0), (0, 0), (3, 0)], 2), level_low(16));
    // SSDT root port RP05 (1C.4), table built inside its _PRT method.
    for (pin, gsi) in (1..=4).zip([16, 17, 18, 19]) {
        assert_eq!(r.route(0, 0, &[(0x1c, 4), (0, 0)], pin), level_low(gsi));
    }
    // RP09's table is left out: devices below it swizzle onto PCI0, which has no 1D.
    assert_eq!(r.route(0, 0, &[(0x1d, 0), (0, 0)], 1), None);
    // PEG0 (01.0) routes through link devices in APIC mode: Extended Interrupt
    // (level, active high) with Source Index 0/1, IRQ descriptor (level, active low),
    // once by reference and once by a String Source.
    assert_eq!(r.route(0, 0, &[(1, 0), (0, 0)], 1), level_high(40));
    assert_eq!(r.route(0, 0, &[(1, 0), (0, 0)], 2), level_high(41));
    assert_eq!(r.route(0, 0, &[(1, 0), (0, 0)], 3), level_low(7));
    assert_eq!(r.route(0, 0, &[(1, 0), (0, 0)], 4), level_low(5));
}

#[test]
fn laptop_dsdt_alone_and_ssdt_alone() {
    let dsdt = fixture("laptop-prt/DSDT.aml");
    let (r, problems) = PciInterruptRouting::from_aml(&[&dsdt]);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(r.table_count(), 3);
    // The SSDT alone: no host bridge, and its methods refer to names it lacks.
    let ssdt = fixture("laptop-prt/SSDT.aml");
    let (r, problems) = PciInterruptRouting::from_aml(&[&ssdt]);
    assert_eq!(r.table_count(), 0);
    assert!(problems.iter().any(|p| p.contains("no PCI host bridge")), "{problems:#?}");
}

/// Wraps `content` with `op` and a PkgLength (§20.2.4) in front.
fn pkg(op: &[u8], content: &[u8]) -> Vec<u8> {
    let mut v = op.to_vec();
    let extra = match content.len() {
        0..0x3f => 0,
        0x3f..0xffe => 1,
        _ => 2,
    };
    let len = content.len() + 1 + extra;
    if extra == 0 {
        v.push(len as u8);
    } else {
        v.push(((extra as u8) << 6) | (len & 0x0f) as u8);
        v.extend_from_slice(&(len >> 4).to_le_bytes()[..extra]);
    }
    v.extend_from_slice(content);
    v
}

/// `Device (PCI0) { Name (_HID, EisaId ("PNP0A08")) Method (_PRT, 0) { body } }`.
fn host_bridge_with_prt(body: &[u8]) -> Vec<u8> {
    let mut method = b"_PRT\x00".to_vec();
    method.extend_from_slice(body);
    let mut device = b"PCI0\x08_HID\x0c\x41\xd0\x0a\x08".to_vec();
    device.extend(pkg(&[0x14], &method));
    sdt(b"DSDT", 2, &pkg(&[0x5b, 0x82], &device))
}

#[test]
fn endless_loop_hits_the_step_budget() {
    // While (One) {}
    let table = host_bridge_with_prt(&pkg(&[0xa2], &[0x01]));
    let (r, problems) = PciInterruptRouting::from_aml(&[&table]);
    assert_eq!(r.table_count(), 0);
    assert_eq!(problems, ["\\PCI0._PRT: step budget exhausted (endless loop?)"].map(String::from));
    // Return (Package () { Package () { 0x0003FFFF, One, Zero, 0x2A } }), after a
    // bounded loop: Local0 = 10; While (Local0) { Local0-- }.
    let mut body = vec![0x70, 0x0a, 10, 0x60];
    body.extend(pkg(&[0xa2], &[0x60, 0x76, 0x60]));
    let entry = pkg(&[0x12], &[4, 0x0c, 0xff, 0xff, 0x03, 0x00, 0x01, 0x00, 0x0a, 0x2a]);
    let mut list = vec![1];
    list.extend(entry);
    body.push(0xa4);
    body.extend(pkg(&[0x12], &list));
    let (r, problems) = PciInterruptRouting::from_aml(&[&host_bridge_with_prt(&body)]);
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(r.route(0, 0, &[(3, 5)], 2), level_low(42));
}

#[test]
fn deep_nesting_and_recursion_are_refused() {
    // At the depth limit a release build needs 32-48 KiB of stack (the hypervisor's
    // boot stack is 256 KiB); `cargo test --release` checks 64 KiB. Debug frames are
    // several times larger.
    let run = || {
        // 5000 nested LNot: the depth limit, not the stack, stops it.
        let mut body = vec![0xa4];
        body.extend(core::iter::repeat_n(0x92, 5000));
        body.push(0x01);
        let (_, problems) = PciInterruptRouting::from_aml(&[&host_bridge_with_prt(&body)]);
        assert_eq!(problems, ["\\PCI0._PRT: nesting or call depth limit reached"].map(String::from));
        // _PRT calling itself.
        let (_, problems) = PciInterruptRouting::from_aml(&[&host_bridge_with_prt(b"\xa4_PRT")]);
        assert_eq!(problems, ["\\PCI0._PRT: nesting or call depth limit reached"].map(String::from));
        // 5000 nested packages in a Name.
        let mut name = b"\x08DEEP".to_vec();
        let mut package = vec![0x01];
        for _ in 0..5000 {
            package = pkg(&[0x12], &[&[1u8][..], &package].concat());
        }
        name.extend(package);
        let (_, problems) = PciInterruptRouting::from_aml(&[&sdt(b"DSDT", 2, &name)]);
        assert!(problems[0].starts_with("DSDT: nesting or call depth limit reached"), "{problems:?}");
    };
    let stack = if cfg!(debug_assertions) { 1024 * 1024 } else { 64 * 1024 };
    std::thread::Builder::new().stack_size(stack).spawn(run).unwrap().join().unwrap();
}

#[test]
fn interrupt_descriptors() {
    // IRQNoFlags () {3, 4}: edge, active high.
    let t = [0x22, 0x18, 0x00, 0x79, 0x00];
    assert_eq!(prt::interrupt(&t, 1), Some(IntxRoute { gsi: 4, level_triggered: false, active_low: false }));
    assert_eq!(prt::interrupt(&t, 2), None);
    // An IO descriptor first, then IRQ (Level, ActiveLow, Shared) {9}.
    let t = [0x47, 0x01, 0x60, 0, 0x60, 0, 1, 1, 0x23, 0x00, 0x02, 0x18, 0x79, 0];
    assert_eq!(prt::interrupt(&t, 0), level_low(9));
    // Interrupt (ResourceConsumer, Edge, ActiveLow, Exclusive) {0x30}.
    let t = [0x89, 0x06, 0x00, 0x07, 0x01, 0x30, 0, 0, 0, 0x79, 0];
    assert_eq!(prt::interrupt(&t, 0), Some(IntxRoute { gsi: 0x30, level_triggered: false, active_low: true }));
    // Truncated descriptors.
    for len in 0..t.len() - 2 {
        assert_eq!(prt::interrupt(&t[..len], 0), None);
    }
}

fn laptop_tables() -> [Vec<u8>; 2] {
    [fixture("laptop-prt/DSDT.aml"), fixture("laptop-prt/SSDT.aml")]
}

/// Routing queries on whatever was decoded must not panic either.
fn query_all(r: &PciInterruptRouting) {
    for path in [&[(0x1c, 0), (0, 0)][..], &[(2, 0)], &[(1, 0), (0, 0), (3, 1)], &[(0xff, 0xff)]] {
        for pin in 0..=5 {
            let _ = r.route(0, 0, path, pin);
        }
    }
}

#[test]
fn every_truncation_terminates_without_panic() {
    let [dsdt, ssdt] = laptop_tables();
    for len in 0..=dsdt.len() {
        let (r, _) = PciInterruptRouting::from_aml(&[&dsdt[..len], &ssdt]);
        query_all(&r);
    }
    for len in 0..=ssdt.len() {
        let (r, _) = PciInterruptRouting::from_aml(&[&dsdt, &ssdt[..len]]);
        query_all(&r);
    }
    // Truncated with the header length patched to match: the cut is inside the AML.
    let qemu = fixture("qemu-q35/DSDT.bin");
    for len in (36..=qemu.len()).step_by(7) {
        let mut t = qemu[..len].to_vec();
        t[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        let (r, _) = PciInterruptRouting::from_aml(&[&t]);
        query_all(&r);
    }
}

/// xorshift64 (Marsaglia), deterministic.
struct ByteRng(u64);

impl ByteRng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_byte_flips_terminate_without_panic() {
    let [dsdt, ssdt] = laptop_tables();
    let qemu = fixture("qemu-q35/DSDT.bin");
    let mut rng = ByteRng(0x9e37_79b9_7f4a_7c15);
    for i in 0..3000u32 {
        let (mut a, mut b) =
            if i.is_multiple_of(3) { (qemu.clone(), Vec::new()) } else { (dsdt.clone(), ssdt.clone()) };
        for _ in 0..1 + rng.next() % 4 {
            let target = if b.is_empty() || !rng.next().is_multiple_of(4) { &mut a } else { &mut b };
            let at = 36 + (rng.next() as usize) % (target.len() - 36);
            target[at] = rng.next() as u8;
        }
        let tables: Vec<&[u8]> = [&a[..], &b[..]].into_iter().filter(|t| !t.is_empty()).collect();
        let (r, _) = PciInterruptRouting::from_aml(&tables);
        query_all(&r);
    }
}

#[test]
fn unusable_prt_entries_are_dropped_with_the_reason() {
    // Return (Package () { Package () { 0xFFFF, 0, 0, 16 }, Package () { 0xFFFF, 7, 0, 17 }, One,
    //                      Package () { 0xFFFF, 1, 0 } })
    let good = pkg(&[0x12], &[0x04, 0x0b, 0xff, 0xff, 0x00, 0x00, 0x0a, 0x10]);
    let bad_pin = pkg(&[0x12], &[0x04, 0x0b, 0xff, 0xff, 0x0a, 0x07, 0x00, 0x0a, 0x11]);
    let short = pkg(&[0x12], &[0x03, 0x0b, 0xff, 0xff, 0x01, 0x00]);
    let mut list = vec![0x04];
    list.extend(good);
    list.extend(bad_pin);
    list.push(0x01);
    list.extend(short);
    let mut body = vec![0xa4];
    body.extend(pkg(&[0x12], &list));
    let (r, problems) = PciInterruptRouting::from_aml(&[&host_bridge_with_prt(&body)]);
    assert_eq!(
        problems,
        [
            "\\PCI0._PRT entry 1: address 0xffff pin 7 out of range",
            "\\PCI0._PRT entry 2: an integer instead of a package",
            "\\PCI0._PRT entry 3: field 3 is missing",
        ]
        .map(String::from)
    );
    assert_eq!(r.route(0, 0, &[(0, 0)], 1), level_low(16), "the good entry stays");
}

#[test]
fn link_device_problems_name_the_link() {
    use alloc::string::ToString;
    let link = vec![*b"_SB_", *b"LNKA"];
    let e = prt::PrtError::NoInterrupt { link: link.clone(), index: 2 };
    assert_eq!(e.to_string(), "\\_SB.LNKA._CRS: no interrupt number 2");
    let e = prt::PrtError::CrsNotABuffer { link, found: Value::Integer(0).type_name() };
    assert_eq!(e.to_string(), "\\_SB.LNKA._CRS returned an integer");
}
