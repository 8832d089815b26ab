//! The whole fetch path against a fixture archive served on the loopback interface:
//! Release → Packages.gz → .deb, checksums, caching, offline rebuilds.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use super::*;
use crate::guest::deb::tests::synthetic_deb;
use crate::guest::modules::tests::fake_module;
use crate::guest::userland::tests::fake_object;

const RELEASE: &str = "6.1.0-9-cloud-amd64";

type Files = Arc<Mutex<HashMap<String, Vec<u8>>>>;

/// A minimal HTTP/1.1 server on 127.0.0.1 that serves `files` until dropped.
struct Server {
    base: String,
    files: Files,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}/debian", listener.local_addr().unwrap());
        let files: Files = Arc::default();
        let served = files.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let mut line = String::new();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                // Drain the request headers.
                let mut h = String::new();
                while reader.read_line(&mut h).is_ok_and(|n| n > 2) {
                    h.clear();
                }
                let path = line.split_whitespace().nth(1).unwrap_or_default().to_owned();
                let body = served.lock().unwrap().get(&path).cloned();
                let (status, body) = match body {
                    Some(b) => ("200 OK", b),
                    None => ("404 Not Found", Vec::new()),
                };
                let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body));
            }
        });
        Server { base, files }
    }

    fn put(&self, path: &str, data: Vec<u8>) {
        self.files.lock().unwrap().insert(format!("/debian/{path}"), data);
    }
}

fn stanza(name: &str, version: &str, depends: &str, filename: &str, deb: &[u8]) -> String {
    format!(
        "Package: {name}\nVersion: {version}\nDepends: {depends}\nFilename: {filename}\n\
         Size: {}\nSHA256: {}\n\n",
        deb.len(),
        fetch::sha256_hex(deb)
    )
}

/// e2fsprogs and the libraries it needs (and one it does not), as .deb files with their
/// index stanzas. The real e2fsprogs lists its libraries in `Pre-Depends`.
fn e2fsprogs_debs() -> Vec<(String, String, Vec<u8>)> {
    const LOADER: &str = "/lib64/ld-linux-x86-64.so.2";
    let program = fake_object(Some(LOADER), None, &["libext2fs.so.2", "libc.so.6"]);
    let e2fsprogs = synthetic_deb(&[
        ("./sbin/e2fsck", &program),
        ("./sbin/mke2fs", &program),
        ("./sbin/debugfs", &program),
        ("./etc/mke2fs.conf", b"[defaults]\n"),
    ]);
    let ext2fs = synthetic_deb(&[(
        "./lib/x86_64-linux-gnu/libext2fs.so.2.4",
        &fake_object(None, Some("libext2fs.so.2"), &["libc.so.6"]),
    )]);
    let libc = synthetic_deb(&[
        ("./lib/x86_64-linux-gnu/libc.so.6", &fake_object(None, Some("libc.so.6"), &["ld-linux-x86-64.so.2"])),
        ("./lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", &fake_object(None, Some("ld-linux-x86-64.so.2"), &[])),
        ("./lib/x86_64-linux-gnu/libm.so.6", &fake_object(None, Some("libm.so.6"), &["libc.so.6"])),
    ]);
    [
        ("e2fsprogs", "1.47.0-2", "Pre-Depends: libext2fs2 (= 1.47.0-2), libc6 (>= 2.34)\nDepends: logsave", e2fsprogs),
        ("libext2fs2", "1.47.0-2", "Depends: libc6 (>= 2.34)", ext2fs),
        ("libc6", "2.36-9", "Depends: libgcc-s1", libc),
        (
            "libgcc-s1",
            "12.2.0-14",
            "Depends: gcc-12-base, libc6",
            synthetic_deb(&[("./usr/share/doc/libgcc-s1/x", b"")]),
        ),
    ]
    .into_iter()
    .map(|(name, version, relations, deb)| {
        let file = format!("pool/main/e/{name}_{version}_amd64.deb");
        let stanza = format!(
            "Package: {name}\nVersion: {version}\n{relations}\nFilename: {file}\nSize: {}\nSHA256: {}\n\n",
            deb.len(),
            fetch::sha256_hex(&deb)
        );
        (file, stanza, deb)
    })
    .collect()
}

/// Publishes a one-suite archive; returns the options to reach it.
fn publish(server: &Server, kernel_deb: &[u8], index_kernel_deb: &[u8]) -> GuestOptions {
    let busybox = synthetic_deb(&[("./bin/busybox", b"\x7fELF-busybox")]);
    let userland = e2fsprogs_debs();
    let kernel_file = format!("pool/main/l/linux/linux-image-{RELEASE}_6.1.99-1_amd64.deb");
    let packages = [
        stanza(
            "linux-image-cloud-amd64",
            "6.1.99-1",
            &format!("linux-image-{RELEASE} (= 6.1.99-1)"),
            "pool/main/l/linux/meta.deb",
            b"meta",
        ),
        stanza(&format!("linux-image-{RELEASE}"), "6.1.99-1", "kmod", &kernel_file, index_kernel_deb),
        stanza("busybox-static", "1:1.35.0-4", "", "pool/main/b/busybox/busybox-static_1.35.0-4_amd64.deb", &busybox),
    ]
    .concat()
        + &userland.iter().map(|(_, stanza, _)| stanza.as_str()).collect::<String>();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(packages.as_bytes()).unwrap();
    let packages_gz = gz.finish().unwrap();
    let release = format!(
        "Suite: oldstable\nCodename: bookworm\nDate: Sat, 11 Jul 2026 10:16:37 UTC\nSHA256:\n {} {} main/binary-amd64/Packages.gz\n",
        fetch::sha256_hex(&packages_gz),
        packages_gz.len()
    );
    server.put("dists/bookworm/InRelease", release.into_bytes());
    server.put("dists/bookworm/main/binary-amd64/Packages.gz", packages_gz);
    server.put(&kernel_file, kernel_deb.to_vec());
    server.put("pool/main/b/busybox/busybox-static_1.35.0-4_amd64.deb", busybox);
    for (file, _, deb) in userland {
        server.put(&file, deb);
    }
    GuestOptions {
        sources: Sources {
            suites: vec![Suite { base_url: server.base.clone(), name: "bookworm".into() }],
            component: "main".into(),
            arch: "amd64".into(),
            keyring: None,
        },
        freshness: Freshness::PreferCache,
    }
}

fn kernel_deb() -> Vec<u8> {
    let module = fake_module("depends=\0name=virtio_ring\0");
    let net = fake_module("depends=virtio_ring\0name=virtio_net\0");
    synthetic_deb(&[
        (&format!("./boot/vmlinuz-{RELEASE}"), b"bzImage"),
        (&format!("./lib/modules/{RELEASE}/kernel/drivers/virtio/virtio_ring.ko"), &module),
        (&format!("./lib/modules/{RELEASE}/kernel/drivers/net/virtio_net.ko"), &net),
        (&format!("./lib/modules/{RELEASE}/modules.builtin"), b"kernel/drivers/input/serio/i8042.ko\n"),
        ("./usr/share/doc/linux-image/changelog.gz", b"not extracted"),
    ])
}

fn temp_cache(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bulkhead-archive-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

#[test]
fn builds_from_fixture_archive_then_offline() {
    let server = Server::start();
    let deb = kernel_deb();
    let options = publish(&server, &deb, &deb);
    let cache = temp_cache("ok");
    let image = build_linux_guest_with(&cache, Flavour::Cloud, &["virtio_net", "i8042"], &options).unwrap();
    assert_eq!(image.kernel_version, RELEASE);
    assert_eq!(image.package_version, "6.1.99-1");
    assert_eq!(fs::read(&image.kernel_path).unwrap(), b"bzImage");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(fs::File::open(&image.initramfs_path).unwrap()).read_to_end(&mut raw).unwrap();
    let entries = cpio::parse(&raw).unwrap();
    let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
    assert!(names.contains(&"bin/busybox"));
    let init = &entries.iter().find(|e| e.name == "init").unwrap().data;
    let init = String::from_utf8_lossy(init);
    let ring = init.find("virtio_ring.ko").unwrap();
    let net = init.find("virtio_net.ko").unwrap();
    assert!(ring < net, "dependencies load first");
    // mke2fs and e2fsck with exactly the libraries they need, the loader where their
    // PT_INTERP says; debugfs and libm stay out.
    for name in [
        "sbin/mke2fs",
        "sbin/e2fsck",
        "sbin/mkfs.ext4",
        "sbin/fsck.ext4",
        "sbin/bulkhead-disk",
        "etc/mke2fs.conf",
        "lib/x86_64-linux-gnu/libext2fs.so.2",
        "lib/x86_64-linux-gnu/libc.so.6",
        "lib64/ld-linux-x86-64.so.2",
    ] {
        assert!(names.contains(&name), "{name} missing: {names:?}");
    }
    assert!(!names.iter().any(|n| n.contains("debugfs") || n.contains("libm")), "{names:?}");

    // The mirror goes away: the cache alone rebuilds the same image.
    server.files.lock().unwrap().clear();
    let again = build_linux_guest_with(&cache, Flavour::Cloud, &["virtio_net", "i8042"], &options).unwrap();
    assert_eq!(again, image);
    fs::remove_dir_all(&cache).unwrap();
}

#[test]
fn tampered_deb_is_rejected_and_not_cached() {
    let server = Server::start();
    let good = kernel_deb();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let options = publish(&server, &bad, &good);
    let cache = temp_cache("bad");
    let err = build_linux_guest_with(&cache, Flavour::Cloud, &[], &options).unwrap_err();
    assert!(matches!(err, GuestError::ChecksumMismatch { .. }), "{err}");
    let leftovers: Vec<_> = fs::read_dir(cache.join("downloads")).unwrap().collect();
    assert!(leftovers.is_empty(), "nothing may stay behind: {leftovers:?}");
    fs::remove_dir_all(&cache).unwrap();
}

#[test]
fn release_of_another_suite_is_refused() {
    let server = Server::start();
    let deb = kernel_deb();
    let options = publish(&server, &deb, &deb);
    server.put("dists/bookworm/InRelease", b"Suite: stable\nCodename: trixie\nSHA256:\n".to_vec());
    let cache = temp_cache("suite");
    let err = build_linux_guest_with(&cache, Flavour::Cloud, &[], &options).unwrap_err();
    assert!(err.to_string().contains("trixie"), "{err}");
    let _ = fs::remove_dir_all(&cache);
}

#[test]
fn unsigned_release_fails_signature_check_when_gpgv_is_there() {
    let keyring = PathBuf::from(debian::DEBIAN_KEYRING);
    let has_gpgv = std::process::Command::new("gpgv").arg("--version").output().is_ok();
    if !keyring.exists() || !has_gpgv {
        eprintln!("SKIPPED: needs gpgv and {}", keyring.display());
        return;
    }
    let server = Server::start();
    let deb = kernel_deb();
    let mut options = publish(&server, &deb, &deb);
    options.sources.keyring = Some(keyring);
    let cache = temp_cache("sig");
    let err = build_linux_guest_with(&cache, Flavour::Cloud, &[], &options).unwrap_err();
    assert!(err.to_string().contains("bad signature"), "{err}");
    assert_eq!(count_files(&cache), 0, "an unverified Release must not be cached");
    let _ = fs::remove_dir_all(&cache);
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries.filter_map(Result::ok).map(|e| if e.path().is_dir() { count_files(&e.path()) } else { 1 }).sum()
}
