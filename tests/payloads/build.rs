//! Payloads are linked as plain ET_EXEC images at 2 MiB guest-physical.
fn main() {
    if std::env::var("TARGET").unwrap_or_default() == "x86_64-unknown-none" {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        println!("cargo:rustc-link-arg-bins=-T{dir}/payload.ld");
        println!("cargo:rustc-link-arg-bins=--no-pie");
    }
    println!("cargo:rerun-if-changed=payload.ld");
}
