//! Guest images for unmodified Linux desktop VMs: a Debian kernel (fetched from the
//! archive and verified by checksum) plus a small busybox initramfs.
//!
//! Cache layout below `cache_dir` (normally `target/guest-cache/`):
//! - `dists/<mirror>/<suite>/InRelease`: the last good Release file of each suite;
//! - `indices/<suite>-<sha256>-Packages.xz`, `downloads/<sha256>_<file>.deb`: verified
//!   downloads, keyed by checksum, so a file is never silently replaced;
//! - `extracted/<package>_<version>/`: kernel image and modules, busybox;
//! - `out/initramfs-<release>-<sha256>.cpio.gz`: built initramfs images.
//!
//! Every file is written through a temporary name and renamed into place.

mod control;
pub mod cpio;
mod deb;
mod debian;
mod disk_setup;
mod error;
mod fetch;
mod initramfs;
mod modules;
mod resolve;
mod userland;
mod version;

#[cfg(test)]
mod archive_tests;
#[cfg(test)]
mod live_tests;

use std::fs;
use std::path::{Path, PathBuf};

pub use debian::{Freshness, Sources, Suite};
pub use disk_setup::{DISK_MARKER, DISK_MOUNT};
pub use error::GuestError;
pub use initramfs::READY_MARKER;

/// Which Debian kernel flavour the guest runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// `linux-image-cloud-amd64`: small; virtio drivers as modules, efifb/fbcon/i8042
    /// built in.
    Cloud,
    /// `linux-image-amd64`: every driver (e1000e, bochs, iwlwifi) for passthrough tests.
    Generic,
}

impl Flavour {
    pub fn metapackage(self) -> &'static str {
        match self {
            Flavour::Cloud => "linux-image-cloud-amd64",
            Flavour::Generic => "linux-image-amd64",
        }
    }
}

/// A bootable guest: files inside the cache directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    /// The bzImage (`/boot/vmlinuz-<release>` from the package).
    pub kernel_path: PathBuf,
    pub initramfs_path: PathBuf,
    /// `uname -r`, e.g. `6.1.0-56-cloud-amd64`.
    pub kernel_version: String,
    /// The concrete package and its Debian version, e.g. `linux-image-6.1.0-56-cloud-amd64`
    /// and `6.1.192-2`.
    pub kernel_package: String,
    pub package_version: String,
    pub busybox_version: String,
}

#[derive(Debug, Clone, Default)]
pub struct GuestOptions {
    pub sources: Sources,
    pub freshness: Freshness,
}

/// `target/guest-cache` of this workspace (or of `CARGO_TARGET_DIR`).
pub fn default_cache_dir() -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"));
    target.join("guest-cache")
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_owned()
}

/// Builds a guest from the default sources (bookworm, -updates, -security on
/// deb.debian.org), preferring the cache.
pub fn build_linux_guest(cache_dir: &Path, flavour: Flavour, extra_modules: &[&str]) -> Result<GuestImage, GuestError> {
    build_linux_guest_with(cache_dir, flavour, extra_modules, &GuestOptions::default())
}

pub fn build_linux_guest_with(
    cache_dir: &Path,
    flavour: Flavour,
    extra_modules: &[&str],
    options: &GuestOptions,
) -> Result<GuestImage, GuestError> {
    fs::create_dir_all(cache_dir).map_err(GuestError::io(cache_dir))?;
    match attempt(cache_dir, flavour, extra_modules, options, options.freshness) {
        // The cached index names a file the mirror has since dropped (old security
        // kernels go away): look at the current index once.
        Err(e) if e.is_stale() && options.freshness == Freshness::PreferCache => {
            log::warn!(target: "guest", "{e}; refreshing the package indices");
            attempt(cache_dir, flavour, extra_modules, options, Freshness::Refresh)
        }
        other => other,
    }
}

fn attempt(
    cache: &Path,
    flavour: Flavour,
    extra_modules: &[&str],
    options: &GuestOptions,
    freshness: Freshness,
) -> Result<GuestImage, GuestError> {
    let keep =
        |name: &str| name.starts_with("linux-image-") || name == "busybox-static" || userland::wanted_in_index(name);
    let archive = debian::Archive::open(cache, &options.sources, freshness, keep)?;
    let universe = &archive.universe;

    let chain = universe.resolve_kernel(flavour.metapackage())?;
    let kernel = chain[chain.len() - 1];
    let release = resolve::kernel_release(&kernel.name)
        .ok_or_else(|| GuestError::BadMetapackage {
            name: flavour.metapackage().into(),
            reason: format!("{} is not a kernel image package name", kernel.name),
        })?
        .to_owned();
    let steps: Vec<_> = chain.iter().map(|p| format!("{} {}", p.name, p.version)).collect();
    eprintln!("guest: {} (from {})", steps.join(" -> "), universe.suites[kernel.suite]);
    let busybox = universe.newest_named("busybox-static")?;
    eprintln!("guest: busybox-static {}", busybox.version);

    let kernel_dir = deb::extract_dir(cache, &kernel.name, &kernel.version);
    if !kernel_dir.is_dir() {
        let kernel_deb = archive.fetch_deb(kernel)?;
        deb::extract_once(&kernel_deb, &kernel_dir, select_kernel_files)?;
    }
    let kernel_path = kernel_dir.join(format!("boot/vmlinuz-{release}"));
    if !kernel_path.is_file() {
        return Err(GuestError::MissingFile { package: kernel.name.clone(), what: format!("/boot/vmlinuz-{release}") });
    }
    let tree = modules::ModuleTree::open(&kernel_dir.join("lib/modules").join(&release), &release)?;
    log::debug!(target: "guest", "{release}: {} loadable modules", tree.len());
    let loadable = tree.resolve(extra_modules)?;

    let bb_dir = deb::extract_dir(cache, &busybox.name, &busybox.version);
    if !bb_dir.is_dir() {
        let bb_deb = archive.fetch_deb(busybox)?;
        deb::extract_once(&bb_deb, &bb_dir, |p| {
            matches!(p, "bin/busybox" | "usr/bin/busybox").then(|| "busybox".to_owned())
        })?;
    }
    let bb_path = bb_dir.join("busybox");
    let busybox_bin = fs::read(&bb_path)
        .map_err(|_| GuestError::MissingFile { package: busybox.name.clone(), what: "/bin/busybox".into() })?;
    if !busybox_bin.starts_with(b"\x7fELF") {
        return Err(GuestError::BadDeb { path: bb_path, reason: "busybox is not an ELF executable".into() });
    }

    let userland = userland::fetch(&archive, cache)?;
    eprintln!("guest: {}", userland.versions.join(", "));

    let image = initramfs::build(&initramfs::InitramfsSpec {
        busybox: &busybox_bin,
        kernel_release: &release,
        modules: &loadable,
        userland: &userland,
    });
    let digest = fetch::sha256_hex(&image);
    let initramfs_path = cache.join("out").join(format!("initramfs-{release}-{}.cpio.gz", &digest[..16]));
    if !initramfs_path.is_file() {
        fetch::write_atomic(&initramfs_path, &image)?;
    }
    let names: Vec<_> = loadable.iter().map(|m| m.name.as_str()).collect();
    eprintln!(
        "guest: initramfs {} ({} KiB, modules: {})",
        initramfs_path.display(),
        image.len() / 1024,
        if names.is_empty() { "none".into() } else { names.join(" ") }
    );
    Ok(GuestImage {
        kernel_path,
        initramfs_path,
        kernel_version: release,
        kernel_package: kernel.name.clone(),
        package_version: kernel.version.clone(),
        busybox_version: busybox.version.clone(),
    })
}

/// Kernel image, config and the module tree; `/usr/lib/modules` (merged-/usr packages)
/// lands in `lib/modules` too.
fn select_kernel_files(path: &str) -> Option<String> {
    if path.starts_with("boot/vmlinuz-") || path.starts_with("boot/config-") {
        return Some(path.to_owned());
    }
    let rest = path.strip_prefix("usr/").unwrap_or(path);
    rest.starts_with("lib/modules/").then(|| rest.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_file_selection() {
        assert_eq!(select_kernel_files("boot/vmlinuz-6.1.0-56-amd64").as_deref(), Some("boot/vmlinuz-6.1.0-56-amd64"));
        assert_eq!(
            select_kernel_files("usr/lib/modules/6.1/kernel/a.ko").as_deref(),
            Some("lib/modules/6.1/kernel/a.ko")
        );
        assert_eq!(select_kernel_files("usr/share/doc/linux/copyright"), None);
        assert_eq!(select_kernel_files("boot/System.map-6.1"), None);
    }

    #[test]
    fn unreachable_mirror_with_empty_cache_names_both() {
        let cache = std::env::temp_dir().join(format!("bulkhead-empty-cache-{}", std::process::id()));
        // A closed port on the loopback: refused at once, no traffic leaves the machine.
        let options = GuestOptions {
            sources: Sources::with_mirror("http://127.0.0.1:9/debian", "http://127.0.0.1:9/debian-security"),
            freshness: Freshness::PreferCache,
        };
        let err = build_linux_guest_with(&cache, Flavour::Cloud, &[], &options).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, GuestError::MirrorUnreachable { .. }), "{msg}");
        assert!(msg.contains("http://127.0.0.1:9/debian/dists/bookworm/InRelease"), "{msg}");
        assert!(msg.contains(&cache.display().to_string()), "{msg}");
        fs::remove_dir_all(&cache).unwrap();
    }
}
