//! Opt-in tests against the real Debian mirror and QEMU. They fill
//! `target/guest-cache`, which later runs (and the hypervisor's bzImage tests) reuse:
//!
//! ```text
//! cargo test -p images --lib guest::live_tests -- --ignored --nocapture
//! ```

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;

const CLOUD_MODULES: &[&str] = &["virtio_pci", "virtio_net", "virtio_blk", "virtio_console"];

fn report(image: &GuestImage) {
    let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "{} {} ({}): kernel {} bytes, initramfs {} bytes",
        image.kernel_package,
        image.package_version,
        image.kernel_version,
        size(&image.kernel_path),
        size(&image.initramfs_path)
    );
}

#[test]
#[ignore = "downloads ~27 MB from the Debian mirror"]
fn live_cloud_guest() {
    let image = build_linux_guest(&default_cache_dir(), Flavour::Cloud, CLOUD_MODULES).unwrap();
    report(&image);
    assert!(image.kernel_version.ends_with("-cloud-amd64"));
}

/// Fetches current Release files (checking their signatures with gpgv) and resolves
/// both flavours without downloading kernels.
#[test]
#[ignore = "talks to the Debian mirror"]
fn live_refresh_and_resolve() {
    let keep = |n: &str| n.starts_with("linux-image-") || n == "busybox-static";
    let archive = debian::Archive::open(&default_cache_dir(), &Sources::bookworm(), Freshness::Refresh, keep).unwrap();
    for flavour in [Flavour::Cloud, Flavour::Generic] {
        let chain = archive.universe.resolve_kernel(flavour.metapackage()).unwrap();
        let k = chain.last().unwrap();
        eprintln!(
            "{} -> {} {} ({} bytes, {})",
            flavour.metapackage(),
            k.name,
            k.version,
            k.size,
            archive.universe.suites[k.suite]
        );
    }
}

#[test]
#[ignore = "downloads ~70 MB from the Debian mirror"]
fn live_generic_guest() {
    let image = build_linux_guest(&default_cache_dir(), Flavour::Generic, &["e1000e", "virtio_net"]).unwrap();
    report(&image);
    assert!(image.kernel_version.ends_with("-amd64"));
}

/// Boots the cloud guest in QEMU (TCG, no hypervisor), waits for the ready marker, and
/// checks that the serial shell answers `uname -r`.
#[test]
#[ignore = "needs the mirror (or a filled cache) and qemu-system-x86_64; takes about a minute"]
fn live_cloud_guest_boots_in_qemu() {
    let image = build_linux_guest(&default_cache_dir(), Flavour::Cloud, CLOUD_MODULES).unwrap();
    let started = Instant::now();
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-machine", "q35", "-m", "256M", "-nographic", "-no-reboot", "-monitor", "none"])
        .arg("-kernel")
        .arg(&image.kernel_path)
        .arg("-initrd")
        .arg(&image.initramfs_path)
        .args(["-append", "console=ttyS0 panic=-1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("qemu-system-x86_64 must be installed (apt-get install qemu-system-x86)");
    let (tx, rx) = mpsc::channel();
    let stdout = qemu.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stdin = qemu.stdin.take().unwrap();
    let wait_for = |needle: &str, limit: Duration| -> Option<Duration> {
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Some(started.elapsed()),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    };
    let ready = wait_for(READY_MARKER, Duration::from_secs(240));
    let mut answered = None;
    if ready.is_some() {
        // The shell starts right after the marker; give it a moment, then ask.
        std::thread::sleep(Duration::from_secs(2));
        stdin.write_all(b"echo \"UNAME=$(uname -r)\"\n").unwrap();
        answered = wait_for(&format!("UNAME={}", image.kernel_version), Duration::from_secs(60));
        let _ = stdin.write_all(b"poweroff\n");
    }
    let exited = (0..30).any(|_| {
        std::thread::sleep(Duration::from_secs(1));
        matches!(qemu.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = qemu.kill();
    }
    let _ = qemu.wait();
    let ready = ready.expect("no ready marker on the serial console");
    let answered = answered.expect("the serial shell did not answer uname -r");
    eprintln!(
        "ready marker after {:.1} s, shell answered after {:.1} s, poweroff {}",
        ready.as_secs_f64(),
        answered.as_secs_f64(),
        if exited { "worked" } else { "did not stop QEMU" }
    );
    assert!(exited, "poweroff did not stop the VM");
}
