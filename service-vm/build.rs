//! The service VM kernel is linked as a plain ET_EXEC image at 2 MiB guest-physical,
//! the payload boot protocol's layout (`bulkhead_abi::payload`).
fn main() {
    if std::env::var("TARGET").unwrap_or_default() == "x86_64-unknown-none" {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        println!("cargo:rustc-link-arg-bins=-T{dir}/kernel.ld");
        println!("cargo:rustc-link-arg-bins=--no-pie");
    }
    println!("cargo:rerun-if-changed=kernel.ld");
}
