//! The AML interpreter: arbitrary bytes as the bodies of a DSDT and up to two SSDTs
//! (split at each `SSDT` marker in the input), loaded into one namespace, `_PIC(1)`
//! and every `_PRT` evaluated, then routing questions asked.

use alloc::vec::Vec;

use crate::host::acpi::aml::PciInterruptRouting;

/// Tables taken from one input (the DSDT and this many SSDTs at most).
const MAX_SSDTS: usize = 2;

/// An ACPI table header (ACPI 6.5 §5.2.6) with a valid length and checksum.
fn table(signature: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(36 + body.len()).unwrap_or(u32::MAX);
    let mut t = Vec::with_capacity(36 + body.len());
    t.extend_from_slice(signature);
    t.extend_from_slice(&len.to_le_bytes());
    t.extend_from_slice(&[2, 0]);
    t.extend_from_slice(b"BLKHD FUZZ    \x01\0\0\0FUZZ\x01\0\0\0");
    t.extend_from_slice(body);
    let sum = t.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    if let Some(c) = t.get_mut(9) {
        *c = 0u8.wrapping_sub(sum);
    }
    t
}

/// Splits `data` at up to `MAX_SSDTS` occurrences of `SSDT`.
fn bodies(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() < MAX_SSDTS {
        let Some(at) = rest.windows(4).position(|w| w == b"SSDT") else { break };
        let (body, tail) = rest.split_at(at);
        out.push(body);
        rest = tail.get(4..).unwrap_or(&[]);
    }
    out.push(rest);
    out
}

pub fn run(data: &[u8]) {
    let tables: Vec<Vec<u8>> = bodies(data)
        .into_iter()
        .enumerate()
        .map(|(i, body)| table(if i == 0 { b"DSDT" } else { b"SSDT" }, body))
        .collect();
    let slices: Vec<&[u8]> = tables.iter().map(Vec::as_slice).collect();
    let (routing, problems) = PciInterruptRouting::from_aml(&slices);
    // Every routing table comes from a device object, which takes at least a few
    // bytes of AML; every problem from some part of the input or a device.
    assert!(
        routing.table_count() <= data.len() / 4 + 1,
        "{} routing tables from {} bytes",
        routing.table_count(),
        data.len()
    );
    assert!(problems.len() <= data.len() + 8, "{} problems from {} bytes", problems.len(), data.len());
    for device in 0..32u8 {
        for pin in 0..=5u8 {
            if let Some(route) = routing.route(0, 0, &[(device, 0)], pin) {
                assert!((1..=4).contains(&pin), "pin {pin} routed to {route:?}");
            }
            let _ = routing.route(0, 0, &[(device, 0), (0, 0), (pin, 1)], pin % 4 + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    #[test]
    fn random_tables() {
        super::super::Prng::new(0xac91).drive(1000, 512, super::run);
    }

    /// The QEMU q35 DSDT bodies, whole and cut short, mutated byte by byte.
    #[test]
    fn mutated_qemu_dsdt() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/acpi/qemu-q35/DSDT.bin");
        let dsdt = std::fs::read(path).unwrap();
        let body = &dsdt[36..];
        super::run(body);
        let mut prng = super::super::Prng::new(0x35);
        let mut copy = body.to_vec();
        for _ in 0..40 {
            copy.copy_from_slice(body);
            for _ in 0..8 {
                let at = (prng.next() % copy.len() as u64) as usize;
                copy[at] = prng.next() as u8;
            }
            let cut = (prng.next() % copy.len() as u64) as usize;
            super::run(&copy[..cut]);
            super::run(&copy);
        }
    }
}
