//! The image under test: built once per test binary, then copied per scenario so a
//! scenario can change its manifest or corrupt a file without affecting the others.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bulkhead_policy::Policy;
use images::disk::{self, BootModule, FileSource, ImageSpec};
use images::policy::fleet;
use images::{build, layout};

/// The bare-metal binaries, built once per test binary.
fn artifacts() -> &'static build::Artifacts {
    static ARTIFACTS: OnceLock<build::Artifacts> = OnceLock::new();
    ARTIFACTS.get_or_init(|| build::build_bare_metal().unwrap_or_else(|e| panic!("{e}")))
}

/// The self-test payload ELFs, built once per test binary.
fn payload_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build::build_payloads().unwrap_or_else(|e| panic!("{e}")))
}

/// Writes a fresh image for one scenario and returns its path.
pub fn build_scenario_image(scenario: &str, cmdline: &str) -> PathBuf {
    build_image_with_modules(scenario, cmdline, Vec::new())
}

/// An image whose VMs are the self-test payloads, run by `policy` (signed with the
/// demo key).
pub fn build_payload_image(scenario: &str, cmdline: &str, policy: &Policy) -> PathBuf {
    build_payload_image_with_bundle(scenario, cmdline, images::policy::tools::sign_demo(policy))
}

/// An image whose VMs are the self-test payloads, run by the signed policy `bundle`.
pub fn build_payload_image_with_bundle(scenario: &str, cmdline: &str, bundle: Vec<u8>) -> PathBuf {
    let mut modules = vec![fleet::bundle_module(bundle)];
    for name in build::PAYLOADS {
        modules.push(BootModule { name: (*name).into(), source: FileSource::Host(payload_dir().join(name)) });
    }
    build_image_with_modules(scenario, cmdline, modules)
}

/// The guest kernel and initramfs, fetched (or taken from the cache) once per binary.
pub fn linux_guest() -> &'static images::guest::GuestImage {
    static GUEST: OnceLock<images::guest::GuestImage> = OnceLock::new();
    GUEST.get_or_init(|| {
        images::desktops::build_guest(&images::guest::default_cache_dir()).unwrap_or_else(|e| panic!("{e}"))
    })
}

/// The generic-kernel guest with the drivers for assigned devices (bochs DRM, e1000e),
/// fetched (or taken from the cache) once per binary.
pub fn generic_guest() -> &'static images::guest::GuestImage {
    static GUEST: OnceLock<images::guest::GuestImage> = OnceLock::new();
    GUEST.get_or_init(|| {
        images::desktops::build_passthrough_guest(&images::guest::default_cache_dir()).unwrap_or_else(|e| panic!("{e}"))
    })
}

/// An image whose VMs are Linux VMs booting `guest`, run by `policy` (build the VMs
/// with `images::desktops::desktop_vm`, e.g. with `devices`).
pub fn build_linux_image(scenario: &str, cmdline: &str, guest: &images::guest::GuestImage, policy: &Policy) -> PathBuf {
    build_image_with_modules(scenario, cmdline, images::desktops::modules_with_policy(guest, policy))
}

/// An image whose VMs are Linux desktops.
pub fn build_desktop_image(scenario: &str, cmdline: &str, desktops: &[images::desktops::Desktop]) -> PathBuf {
    build_image_with_modules(scenario, cmdline, images::desktops::modules(linux_guest(), desktops))
}

/// An image whose Linux desktops are run by `policy` instead of the default policy
/// for its desktops.
pub fn build_desktop_image_with_policy(scenario: &str, cmdline: &str, policy: &Policy) -> PathBuf {
    build_image_with_modules(scenario, cmdline, images::desktops::modules_with_policy(linux_guest(), policy))
}

/// An image with Linux desktops and self-test payload VMs side by side, run by
/// `policy` (desktops from `images::desktops::desktop_vm`, payloads naming a payload
/// from `build::PAYLOADS` as their image).
pub fn build_desktop_and_payload_image(scenario: &str, cmdline: &str, policy: &Policy) -> PathBuf {
    let mut modules = images::desktops::modules_with_policy(linux_guest(), policy);
    for name in build::PAYLOADS {
        modules.push(BootModule { name: (*name).into(), source: FileSource::Host(payload_dir().join(name)) });
    }
    build_image_with_modules(scenario, cmdline, modules)
}

/// An image with Linux desktops, the networking service VM's kernel (module
/// `service-vm`) and the self-test payloads, run by `policy`.
pub fn build_network_image(scenario: &str, cmdline: &str, policy: &Policy) -> PathBuf {
    build_network_image_with_bundle(scenario, cmdline, images::policy::tools::sign_demo(policy))
}

/// [`build_network_image`] with the policy as an already signed `bundle`.
pub fn build_network_image_with_bundle(scenario: &str, cmdline: &str, bundle: Vec<u8>) -> PathBuf {
    let mut modules = images::desktops::modules_with_bundle(linux_guest(), bundle);
    modules.push(BootModule {
        name: build::SERVICE_VM_MODULE.into(),
        source: FileSource::Host(artifacts().service_vm_elf.clone()),
    });
    for name in build::PAYLOADS {
        modules.push(BootModule { name: (*name).into(), source: FileSource::Host(payload_dir().join(name)) });
    }
    build_image_with_modules(scenario, cmdline, modules)
}

pub fn build_image_with_modules(scenario: &str, cmdline: &str, modules: Vec<BootModule>) -> PathBuf {
    build_stick_with_data(scenario, cmdline, modules, None)
}

/// As [`build_image_with_modules`], with a "Bulkhead data" partition of `data_bytes`
/// after the ESP when given (the stick's own data partition).
pub fn build_stick_with_data(
    scenario: &str,
    cmdline: &str,
    modules: Vec<BootModule>,
    data_bytes: Option<u64>,
) -> PathBuf {
    let artifacts = artifacts();
    let spec = ImageSpec {
        loader_efi: artifacts.loader_efi.clone(),
        hypervisor_elf: artifacts.hypervisor_elf.clone(),
        modules,
        gop_mode: Some((1280, 800)),
        cmdline: cmdline.into(),
    };
    let out = scenario_dir(scenario).join("usb.img");
    disk::write_image_with_data(&spec, &out, data_bytes).unwrap_or_else(|e| panic!("building the test image: {e}"));
    out
}

/// A clean per-scenario directory under `target/test-logs/`.
pub fn scenario_dir(scenario: &str) -> PathBuf {
    let dir = layout::target_dir().join("test-logs").join(scenario);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the test log directory");
    dir
}

/// Replaces a file on the image's ESP.
pub fn overwrite(image: &Path, esp_path: &str, data: &[u8]) {
    disk::overwrite_esp_file(image, esp_path, data).expect("rewriting a file on the test image");
}

pub fn read(image: &Path, esp_path: &str) -> Vec<u8> {
    disk::read_esp_file(image, esp_path).expect("reading a file from the test image")
}

/// An image at `out` (in an existing scenario directory, which is left as it is, so a
/// laptop's OVMF variables there survive) whose VMs are the self-test payloads and
/// whose policy is `bundle` (boot module `policy`, signed by the caller).
pub fn build_payload_image_at(out: &Path, cmdline: &str, bundle: Vec<u8>) -> PathBuf {
    let mut modules = vec![BootModule { name: "policy".into(), source: FileSource::Bytes(bundle) }];
    for name in build::PAYLOADS {
        modules.push(BootModule { name: (*name).into(), source: FileSource::Host(payload_dir().join(name)) });
    }
    let artifacts = artifacts();
    let spec = ImageSpec {
        loader_efi: artifacts.loader_efi.clone(),
        hypervisor_elf: artifacts.hypervisor_elf.clone(),
        modules,
        gop_mode: Some((1280, 800)),
        cmdline: cmdline.into(),
    };
    disk::write_image(&spec, out).unwrap_or_else(|e| panic!("building the test image: {e}"));
    out.to_path_buf()
}
