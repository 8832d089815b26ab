#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use super::*;
use alloc::vec::Vec;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/acpi");

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{path}")).unwrap()
}

#[test]
fn qemu_q35_smoke() {
    let dsdt = fixture("qemu-q35/DSDT.bin");
    let (routing, problems) = PciInterruptRouting::from_aml(&[&dsdt]);
    std::println!("{problems:#?}");
    std::println!("{routing:#?}");
}
