//! Devices given to an unmodified Linux VM behind the IOMMU: QEMU's `bochs-display`
//! (behind a PCIe root port, so a secondary bus reset can reset it), an NVMe
//! controller with a 64-bit BAR and an `e1000e` NIC on QEMU's user network go to one VM
//! with `devices=`. Debian's generic kernel binds its `bochs` DRM driver, fbcon takes
//! the adapter over (the command line maps every console to it) and sets a mode; the
//! VM then writes text and colour blocks, and a screendump *of that adapter* must show
//! exactly them. The hypervisor keeps the primary display (its framebuffer's adapter,
//! the `-vga std` device with the same vendor:device, is refused) and draws the trust
//! strip there. Then the `e1000e` driver brings the NIC up, gets a DHCP lease and
//! downloads a file from an HTTP server this test runs on the host's loopback; the
//! guest's SHA-256 must match. A second `e1000e`, whose driver the VM's command line
//! keeps on its legacy INTx line (`IntMode=0`), does the same on a second user
//! network: its interrupts come through the host I/O APIC pin the firmware's `_PRT`
//! names and the VM's own I/O APIC. The VM's exits per MiB are printed (not
//! asserted). One boot per IOMMU kind.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use bulkhead_policy::model::Vm;
use images::desktops::{Desktop, desktop_vm};
use images::policy::fleet;
use images::qemu::Iommu;
use tests::screen::Screenshot;
use tests::{Machine, image};

/// The display adapter and the NVMe controller each alone below its own root port:
/// reset by a secondary bus reset (bochs) or FLR (NVMe). `gpu` is the QMP id the
/// screendump names. The NIC sits on the root bus: QEMU 7.2's AMD-Vi translates DMA of
/// devices behind a bridge with the wrong bus number (docs/iommu.md), and there its
/// PM capability (D3hot -> D0, No_Soft_Reset clear) is its reset method. No option
/// ROM: the host firmware has no business driving it. The second NIC, for INTx, has
/// a user network of its own (10.0.3.0/24). The NVMe controller (added by `run`) gets
/// the test's expansion ROM.
const DEVICES: [&str; 14] = [
    "-device",
    "pcie-root-port,id=rp1,chassis=1,slot=1",
    "-device",
    "bochs-display,id=gpu,bus=rp1",
    "-device",
    "pcie-root-port,id=rp2,chassis=2,slot=2",
    "-netdev",
    "user,id=n0",
    "-device",
    "e1000e,id=nic,netdev=n0,bus=pcie.0,addr=0x6,romfile=",
    "-netdev",
    "user,id=n1,net=10.0.3.0/24",
    "-device",
    "e1000e,id=legacy,netdev=n1,bus=pcie.0,addr=0x7,romfile=",
];

/// The file the VM downloads: pseudo-random bytes, served by the test over HTTP.
const FILE_BYTES: usize = 8 << 20;
/// How long the VM idles for the exit-rate baseline.
const IDLE_SECS: u64 = 3;

const VM: Desktop = Desktop { name: "media", label: "MEDIA", colour: "#2980b9", memory_mib: 256 };
const VM_RGB: (u8, u8, u8) = (0x29, 0x80, 0xb9);

/// Every console on framebuffer 1 (the DRM driver's fbdev; 0 is the VM's EFI
/// framebuffer): fbcon takes the adapter over when the driver loads and sets its mode.
/// The first NIC the driver probes (00:05.0) uses MSI-X, the second (00:06.0) its
/// INTx line.
const CMDLINE: &str = "console=tty0 console=ttyS0 panic=-1 quiet loglevel=4 fbcon=map:1 e1000e.IntMode=2,0";

const BOOT: Duration = Duration::from_secs(300);
const STEP: Duration = Duration::from_secs(90);

/// Cells of console row 0: `#` must come out lit, blanks dark.
const TEXT: &str = "# ## ### #### #";

const RED: (u8, u8, u8) = (255, 0, 0);
const GREEN: (u8, u8, u8) = (0, 255, 0);
const BLUE: (u8, u8, u8) = (0, 0, 255);
const BLACK: (u8, u8, u8) = (0, 0, 0);
/// Band A: 64 rows from `BAND_A`, red at x 256..512 and green at 512..768. Band B: 64
/// rows from `BAND_B`, blue at x 768..1024. Black everywhere else.
const BAND_A: u32 = 256;
const BAND_B: u32 = 448;
const BAND_ROWS: u32 = 64;

/// The value after `key` in a guest output line, up to the next blank.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split(key).nth(1).and_then(|v| v.split_whitespace().next()).unwrap_or("")
}

/// An expansion ROM of two images (PCI Firmware 3.3 §5.1: 55AAh, the PCI Data
/// Structure with the image length and the last-image indicator), 8 KiB and 4 KiB,
/// of pseudo-random bytes otherwise. Legacy x86 code type, so the host firmware
/// (UEFI) leaves it alone.
fn option_rom() -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    let mut rom = Vec::new();
    for (blocks, last) in [(16u16, false), (8u16, true)] {
        let mut image: Vec<u8> = (0..usize::from(blocks) * 512)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        image[0..2].copy_from_slice(&[0x55, 0xaa]);
        image[0x18..0x1a].copy_from_slice(&0x40u16.to_le_bytes());
        let pcir = &mut image[0x40..0x58];
        pcir[0..4].copy_from_slice(b"PCIR");
        pcir[4..8].copy_from_slice(&[0x36, 0x1b, 0x10, 0x00]); // 1b36:0010
        pcir[0x0a..0x0c].copy_from_slice(&0x18u16.to_le_bytes());
        pcir[0x10..0x12].copy_from_slice(&blocks.to_le_bytes());
        pcir[0x14] = 0; // code type: x86
        pcir[0x15] = if last { 0x80 } else { 0 };
        rom.extend(image);
    }
    rom
}

fn run(scenario: &str, iommu: Iommu) {
    let rom = option_rom();
    let rom_sha: String = Sha256::digest(&rom).iter().map(|b| format!("{b:02x}")).collect();
    let rom_path = std::env::temp_dir().join(format!("bulkhead-{scenario}-nvme.rom"));
    std::fs::write(&rom_path, &rom).expect("writing the test's option ROM");
    let nvme = format!("nvme,id=nvme,bus=rp2,serial=bulkhead,romfile={}", rom_path.display());
    let guest = image::generic_guest();
    let devices = ["1234:1111", "1b36:0010", "8086:10d3", "8086:10d3"];
    let media = Vm { devices: devices.iter().map(|d| d.to_string()).collect(), ..desktop_vm(&VM, CMDLINE) };
    let img = image::build_linux_image(scenario, "", guest, &fleet::demo_policy(vec![media]));
    let started = Instant::now();
    let mut m = Machine::boot(scenario, &img, |c| {
        c.memory_mib = 1024;
        c.cpus = 1;
        // AMD-Vi with interrupt remapping (the NIC's MSI-X goes through it); it must
        // come before the devices on the command line.
        let (iommu, first): (Iommu, &[&str]) = match iommu {
            Iommu::Amd => (Iommu::None, &["-device", "amd-iommu,intremap=on"]),
            other => (other, &[]),
        };
        c.iommu = iommu;
        c.extra_args = first.iter().chain(DEVICES.iter()).map(|s| s.to_string()).collect();
        c.extra_args.extend(["-device".to_string(), nvme.clone()]);
    });
    // -vga std (00:01.0) has the same vendor:device as bochs-display; it holds the
    // boot framebuffer, so it is refused and `devices=1234:1111` picks the other one.
    let vga = m.expect("1234:1111 VGA compatible controller:", BOOT);
    assert!(vga.ends_with("-> shows the hypervisor's screen"), "{vga}");
    // The NIC on the root bus (00:06.0, reported next) has a reset method of its own.
    let nic = m.expect("8086:10d3", STEP);
    assert!(nic.ends_with("-> assignable"), "{nic}");
    m.expect("DMA remapping on", STEP);
    // The NVMe controller is the VM's: the hypervisor's own NVMe driver leaves it alone.
    m.expect("nvme] 02:00.0: given to a VM by the policy; the hypervisor does not touch it", STEP);
    m.expect("no NVMe drive for the hypervisor", STEP);
    m.expect("BULKHEAD READY", STEP);
    let bar = m.expect("01:00.0: BAR0 32-bit host", STEP);
    assert!(bar.contains("-> guest 0xc0000000 (16384 KiB)"), "framebuffer BAR: {bar}");
    let bar = m.expect("02:00.0: BAR0 64-bit host", STEP);
    assert!(bar.contains("-> guest 0x800000000"), "NVMe BAR above 4 GiB: {bar}");
    m.expect("vm 0 (media) created", STEP);
    m.expect("[media] BULKHEAD-GUEST-READY", BOOT);
    eprintln!("{scenario}: guest ready {:.0} s after QEMU started", started.elapsed().as_secs_f64());

    // The unmodified driver bound the adapter where the hypervisor placed it; the VM
    // sees its expansion ROM (QEMU gives bochs-display a VGA BIOS).
    let dev = "/sys/bus/pci/devices/0000:00:03.0";
    m.run_in_vm(
        "media",
        &format!(
            "echo DRV=$(basename $(readlink {dev}/driver)) ROM=$(ls {dev} | grep -c '^rom$') RES=$(head -c 18 {dev}/resource) N=$((1+1))"
        ),
    );
    let line = m.expect("[media] DRV=", STEP);
    assert_eq!(field(&line, "DRV="), "bochs-drm", "{line}");
    assert_eq!(field(&line, "ROM="), "1", "the guest sees no expansion ROM: {line}");
    assert_eq!(field(&line, "RES="), "0x00000000c0000000", "Linux moved the BAR: {line}");

    // The 64-bit BAR above 4 GiB reaches the NVMe controller's registers: its version
    // register (offset 8) reads NVMe 1.x through the nested page table.
    let nvme = "/sys/bus/pci/devices/0000:00:04.0";
    m.run_in_vm("media", &format!("a=$(head -c 18 {nvme}/resource); echo NVME=$a VS=$(devmem $((a+8)) 32) N=$((2+1))"));
    let line = m.expect("[media] NVME=", STEP);
    assert_eq!(field(&line, "NVME="), "0x0000000800000000", "{line}");
    assert!(field(&line, "VS=").starts_with("0x0001"), "NVMe version register: {line}");
    check_rom(&mut m, &rom_sha, rom.len());

    // The DRM driver's framebuffer device and the mode fbcon set.
    m.run_in_vm(
        "media",
        "for f in /sys/class/graphics/fb*; do [ \"$(cat $f/name 2>/dev/null)\" = bochs-drmdrmfb ] && \
         echo FBDEV=${f##*/} SIZE=$(cat $f/virtual_size) STRIDE=$(cat $f/stride) BPP=$(cat $f/bits_per_pixel); \
         done; echo TTY=$(stty -F /dev/tty1 size | tr ' ' x)",
    );
    let fb = m.expect("[media] FBDEV=", STEP);
    let tty = m.expect("[media] TTY=", STEP);
    let fbdev = field(&fb, "FBDEV=").to_string();
    let (w, h) = field(&fb, "SIZE=").split_once(',').expect("virtual_size is W,H");
    let (w, h): (u32, u32) = (w.parse().unwrap(), h.parse().unwrap());
    let stride: u32 = field(&fb, "STRIDE=").parse().unwrap();
    assert_eq!(field(&fb, "BPP="), "32", "{fb}");
    assert!(w >= 1024 && h >= BAND_B + BAND_ROWS && stride >= w * 4, "{fb}");
    let (rows, cols) = field(&tty, "TTY=").split_once('x').expect("stty size");
    let (cell_w, cell_h) = (w / cols.parse::<u32>().unwrap(), h / rows.parse::<u32>().unwrap());

    // fbcon draws text on the adapter: clear, hide the cursor, print on row 0.
    m.run_in_vm(
        "media",
        &format!(
            "echo 0 > /sys/class/graphics/fbcon/cursor_blink; printf '\\033[2J\\033[H\\033[?25l{TEXT}' > /dev/tty1; echo SHOWN=$((3+1))"
        ),
    );
    m.expect("[media] SHOWN=4", STEP);
    // Colour blocks written straight to the framebuffer device (pixels are B, G, R, X),
    // one write() per band: Linux 6.1's fbdev emulation computes an empty damage
    // rectangle for a write of exactly one scanline, which would never reach the
    // adapter.
    m.run_in_vm(
        "media",
        "px() { printf \"$1\" > /tmp/p; for i in $(seq 8); do cat /tmp/p /tmp/p > /tmp/q; mv /tmp/q /tmp/p; done; cat /tmp/p; }; \
         z() { head -c $1 /dev/zero; }; echo DEFINED=$((4+1))",
    );
    m.expect("[media] DEFINED=5", STEP);
    let rest = stride - 3 * 1024;
    m.run_in_vm(
        "media",
        &format!(
            "{{ z 1024; px '\\000\\000\\377\\000'; px '\\000\\377\\000\\000'; z {rest}; }} > /tmp/a; \
             {{ z 3072; px '\\377\\000\\000\\000'; z {}; }} > /tmp/b; echo ROWS=$(($(wc -c < /tmp/a)+$(wc -c < /tmp/b)))",
            stride - 4 * 1024
        ),
    );
    let rows_line = m.expect("[media] ROWS=", STEP);
    assert_eq!(field(&rows_line, "ROWS="), (2 * stride).to_string(), "{rows_line}");
    m.run_in_vm(
        "media",
        &format!(
            "band() {{ for i in $(seq 6); do cat $1 $1 > /tmp/q; mv /tmp/q $1; done; \
             dd if=$1 of=/dev/{fbdev} bs={} seek=$(($2*{stride})) oflag=seek_bytes conv=notrunc 2>/dev/null; }}; \
             band /tmp/a {BAND_A}; band /tmp/b {BAND_B}; echo DRAWN=$((5+1))",
            BAND_ROWS * stride
        ),
    );
    m.expect("[media] DRAWN=6", STEP);
    // Let the fbdev emulation flush its shadow buffer into the adapter's VRAM.
    std::thread::sleep(Duration::from_secs(3));

    let shot = m.screendump_of("adapter", Some("gpu"));
    check_adapter(&m, &shot, (w, h), (cell_w, cell_h));

    // The primary display is still the hypervisor's: its trust strip in the VM's colour
    // on top, and none of what the VM drew on its own adapter.
    let primary = m.screendump("primary");
    assert_eq!((primary.width, primary.height), (1280, 800), "the primary display changed mode");
    for (x, y) in [(1, 1), (640, 2), (1278, 3)] {
        assert_eq!(primary.pixel(x, y), VM_RGB, "trust strip pixel ({x},{y}) on the primary display");
    }
    for colour in [RED, GREEN, BLUE] {
        let n = primary.count(0, 0, primary.width, primary.height, colour);
        assert_eq!(n, 0, "{n} pixels of {colour:?} on the primary display");
    }

    let body = file_bytes();
    let sha: String = Sha256::digest(&body).iter().map(|b| format!("{b:02x}")).collect();
    let port = serve(body);
    check_msix_nic(&mut m);
    download(&mut m, scenario, &MSIX_NIC, port, &sha);
    check_intx_nic(&mut m);
    download(&mut m, scenario, &INTX_NIC, port, &sha);
    // eth1's interrupts came through the VM's I/O APIC, level-triggered (fasteoi), on
    // an input of its own: "IRQ: count IO-APIC <pin>-fasteoi eth1".
    m.run_in_vm("media", "echo INTX=$(grep eth1 /proc/interrupts)");
    let line = m.expect("[media] INTX=", STEP);
    let words: Vec<&str> = line.split("INTX=").nth(1).unwrap_or("").split_whitespace().collect();
    let count: u64 = words.get(1).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(count > 100, "the INTx NIC's interrupts did not reach the guest: {line}");
    assert_eq!(words.get(2), Some(&"IO-APIC"), "eth1 is not an I/O APIC line: {line}");
    let guest_gsi = words.get(3).and_then(|p| p.strip_suffix("-fasteoi")).unwrap_or_else(|| {
        m.fail(&format!("eth1 is not a level-triggered (fasteoi) line: {line}"));
    });

    let serial = m.serial();
    // The host side of the INTx line: the `_PRT` route and the VM's guest GSI.
    let routed = serial.lines().find(|l| l.contains("00:07.0: INTx -> GSI")).unwrap_or_else(|| {
        m.fail("the boot log has no _PRT route for the INTx NIC (00:07.0)");
    });
    assert!(routed.contains("level true"), "PCI INTx is level-triggered: {routed}");
    let to_guest = serial.lines().find(|l| l.contains("00:07.0: INTx GSI")).unwrap_or_else(|| {
        m.fail("the INTx NIC's line was not routed into its VM");
    });
    assert!(to_guest.ends_with(&format!("-> guest GSI {guest_gsi}")), "the guest's line is not the host's: {to_guest}");
    assert!(!serial.contains("(media) stopped"), "the VM stopped");
    assert!(!serial.contains("stays unmapped"), "a BAR could not be mapped");
    m.pass();
}

/// The NVMe controller's expansion ROM: the guest reads exactly the images through its
/// ROM BAR (a read-only copy), a write there is dropped, and the VM keeps running.
fn check_rom(m: &mut Machine, sha: &str, len: usize) {
    let copied = m.serial().lines().any(|l| l.contains("02:00.0: expansion ROM (2 image(s), 12 KiB) copied"));
    assert!(copied, "the hypervisor did not copy the NVMe controller's ROM");
    m.run_in_vm(
        "media",
        "cd /sys/bus/pci/devices/0000:00:04.0; echo 1 > rom; echo ROMSUM=$(sha256sum < rom) ROMLEN=$(wc -c < rom); \
         echo 0 > rom; cd /",
    );
    let line = m.expect("[media] ROMSUM=", STEP);
    assert_eq!(field(&line, "ROMLEN="), len.to_string(), "{line}");
    assert_eq!(field(&line, "ROMSUM="), sha, "the guest read another ROM: {line}");
    // Decode off again: the ROM's addresses read all-ones, and a write is dropped.
    m.run_in_vm(
        "media",
        "a=$(sed -n 7p /sys/bus/pci/devices/0000:00:04.0/resource | cut -d' ' -f1); devmem $a 32 0x12345678; \
         echo ROMADDR=$a ROMWORD=$(devmem $a 32)",
    );
    let line = m.expect("[media] ROMADDR=", STEP);
    assert_ne!(field(&line, "ROMADDR="), "0x0000000000000000", "the ROM BAR is not placed: {line}");
    assert_eq!(field(&line, "ROMWORD="), "0xFFFFFFFF", "{line}");
}

/// One VM's exit counters as `!exits` prints them: (reason, count), "total" first.
fn exits(m: &mut Machine) -> Vec<(String, u64)> {
    m.type_serial("!exits media\n");
    let line = m.expect("EXITS media ", STEP);
    let rest = line.split("EXITS media ").nth(1).unwrap_or("");
    let mut out = Vec::new();
    for word in rest.split_whitespace() {
        if let Ok(n) = word.parse() {
            out.push(("total".to_string(), n));
        } else if let Some((k, v)) = word.split_once('=')
            && let Ok(n) = v.parse()
        {
            out.push((k.to_string(), n));
        }
    }
    assert!(out.first().is_some_and(|(k, _)| k == "total"), "{line}");
    out
}

/// `after - before`, by reason, zero counts left out.
fn delta(before: &[(String, u64)], after: &[(String, u64)]) -> Vec<(String, u64)> {
    let get = |v: &[(String, u64)], k: &str| v.iter().find(|(n, _)| n == k).map_or(0, |(_, c)| *c);
    after.iter().map(|(k, n)| (k.clone(), n - get(before, k))).filter(|(_, n)| *n > 0).collect()
}

fn show(counts: &[(String, u64)], per: f64) -> String {
    counts.iter().map(|(k, n)| format!("{k}={:.1}", *n as f64 / per)).collect::<Vec<_>>().join(" ")
}

/// Pseudo-random bytes (xorshift64*), the same every run.
fn file_bytes() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(FILE_BYTES);
    while out.len() < FILE_BYTES {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(FILE_BYTES);
    out
}

/// Serves `body` for any GET on 127.0.0.1 (the guest reaches it as 10.0.2.2 through
/// QEMU's user network), at most four requests within ten minutes; returns the port.
fn serve(body: Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("local address").port();
    listener.set_nonblocking(true).expect("non-blocking listener");
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut served = 0;
        while served < 4 && Instant::now() < deadline {
            let Ok((stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            served += 1;
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
            let _ = stream.set_write_timeout(Some(Duration::from_secs(300)));
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            // The request line and headers, up to the blank line.
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" && line != "\n" {
                line.clear();
            }
            let mut stream = reader.into_inner();
            let head = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body));
        }
    });
    port
}

/// One of the VM's NICs.
struct Nic {
    iface: &'static str,
    /// The host as the guest reaches it on this NIC's user network.
    host: &'static str,
    /// The address QEMU's DHCP server leases on it.
    lease: &'static str,
}

/// The `e1000e` at guest 00:05.0, interrupting with MSI-X.
const MSIX_NIC: Nic = Nic { iface: "eth0", host: "10.0.2.2", lease: "inet 10.0.2.15/24" };
/// The `e1000e` at guest 00:06.0, interrupting on its INTx line.
const INTX_NIC: Nic = Nic { iface: "eth1", host: "10.0.3.2", lease: "inet 10.0.3.15/24" };

/// The first NIC: the `e1000e` driver binds with MSI-X (three vectors: rx, tx, other).
fn check_msix_nic(m: &mut Machine) {
    let nic = "/sys/bus/pci/devices/0000:00:05.0";
    m.run_in_vm(
        "media",
        &format!(
            "echo NICDRV=$(basename $(readlink {nic}/driver)) IF=$(ls {nic}/net) MSIX=$(ls {nic}/msi_irqs | wc -l)"
        ),
    );
    let line = m.expect("[media] NICDRV=", STEP);
    assert_eq!(field(&line, "NICDRV="), "e1000e", "{line}");
    assert_eq!(field(&line, "IF="), "eth0", "{line}");
    assert_eq!(field(&line, "MSIX="), "3", "the driver does not use MSI-X: {line}");
}

/// The second NIC: the driver binds without MSI (its INTx line then goes through the
/// VM's I/O APIC once the interface is up).
fn check_intx_nic(m: &mut Machine) {
    m.run_in_vm(
        "media",
        "cd /sys/bus/pci/devices/0000:00:06.0; echo NICDRV=$(basename $(readlink driver)) IF=$(ls net) \
         MSI=$(ls msi_irqs 2>/dev/null | wc -l); cd /",
    );
    let line = m.expect("[media] NICDRV=", STEP);
    assert_eq!(field(&line, "NICDRV="), "e1000e", "{line}");
    assert_eq!(field(&line, "IF="), "eth1", "{line}");
    assert_eq!(field(&line, "MSI="), "0", "the second NIC uses MSI: {line}");
}

/// Brings `nic` up, gets a DHCP lease from QEMU's user network, and downloads the
/// test's file from its HTTP server; the SHA-256 must match. Prints the VM's exits per
/// MiB during the download, by reason, and the same VM idle for as long.
fn download(m: &mut Machine, scenario: &str, nic: &Nic, port: u16, sha: &str) {
    let iface = nic.iface;
    m.run_in_vm(
        "media",
        &format!(
            "ip link set {iface} up; for i in $(seq 30); do [ $(cat /sys/class/net/{iface}/carrier) = 1 ] && break; \
             sleep 1; done; echo CARRIER=$(cat /sys/class/net/{iface}/carrier)"
        ),
    );
    let line = m.expect("[media] CARRIER=", STEP);
    assert_eq!(field(&line, "CARRIER="), "1", "{iface}: the link did not come up: {line}");
    m.run_in_vm(
        "media",
        &format!(
            "udhcpc -i {iface} -n -q -t 10 -T 3; echo LEASE=$? ADDR=$(ip -4 -o addr show {iface} | grep -o 'inet [0-9./]*')"
        ),
    );
    let line = m.expect("[media] LEASE=", STEP);
    assert_eq!(field(&line, "LEASE="), "0", "{iface}: no DHCP lease: {line}");
    assert!(line.contains(nic.lease), "{iface}: QEMU's user network leases {}: {line}", nic.lease);

    // The download, bracketed by two exit-counter snapshots.
    let before = exits(m);
    let started = Instant::now();
    m.run_in_vm("media", &format!("wget -q -O /tmp/f http://{}:{port}/file; echo WGET=$?", nic.host));
    let line = m.expect("[media] WGET=", BOOT);
    let took = started.elapsed();
    let after = exits(m);
    assert_eq!(field(&line, "WGET="), "0", "{iface}: the download failed: {line}");
    m.run_in_vm("media", "echo SUM=$(sha256sum /tmp/f) SIZE=$(wc -c < /tmp/f); rm /tmp/f");
    let line = m.expect("[media] SUM=", STEP);
    assert_eq!(field(&line, "SIZE="), FILE_BYTES.to_string(), "{line}");
    assert_eq!(field(&line, "SUM="), sha, "{iface}: the file arrived corrupted: {line}");
    m.run_in_vm("media", &format!("echo IRQS=$(grep {iface} /proc/interrupts | tr -s ' ' | tr '\\n' ';')"));
    let irqs = m.expect("[media] IRQS=", STEP);

    // The same VM idle (a shell command that sleeps) as a baseline: timer, console.
    let idle0 = exits(m);
    let idle_started = Instant::now();
    m.run_in_vm("media", &format!("sleep {IDLE_SECS}; echo IDLE=1"));
    m.expect("[media] IDLE=1", STEP);
    let idle_secs = idle_started.elapsed().as_secs_f64();
    let idle = delta(&idle0, &exits(m));

    let mib = FILE_BYTES as f64 / f64::from(1 << 20);
    let secs = took.as_secs_f64();
    let download = delta(&before, &after);
    let total = |v: &[(String, u64)]| v.first().map_or(0, |(_, n)| *n) as f64;
    eprintln!("{scenario} {iface}: {mib:.0} MiB through the NIC in {secs:.1} s ({:.2} MiB/s)", mib / secs);
    eprintln!("{scenario} {iface}: exits per MiB during the download: {}", show(&download, mib));
    eprintln!("{scenario} {iface}: exits per second idle ({idle_secs:.1} s): {}", show(&idle, idle_secs));
    eprintln!(
        "{scenario} {iface}: exits per MiB beyond the idle rate: {:.1}",
        (total(&download) - total(&idle) / idle_secs * secs) / mib
    );
    eprintln!("{scenario} {iface}: guest interrupts: {}", irqs.split("IRQS=").nth(1).unwrap_or(""));
}

/// The adapter shows the mode the guest set, its text cells and exactly its blocks.
fn check_adapter(m: &Machine, shot: &Screenshot, (w, h): (u32, u32), (cw, ch): (u32, u32)) {
    if (shot.width, shot.height) != (w, h) {
        m.fail(&format!("the adapter shows {}x{}, the guest set {w}x{h}", shot.width, shot.height));
    }
    for (col, c) in TEXT.chars().chain("    ".chars()).enumerate() {
        let lit = shot.count(col as u32 * cw, 0, cw, ch, BLACK) < (cw * ch) as usize;
        if lit != (c == '#') {
            m.fail(&format!("text cell {col} ({c:?}) is {}", if lit { "lit" } else { "dark" }));
        }
    }
    let rows = BAND_ROWS;
    let expect = [
        // (x, y, width, height, colour)
        (0, ch, w, BAND_A - ch, BLACK),
        (0, BAND_A, 256, rows, BLACK),
        (256, BAND_A, 256, rows, RED),
        (512, BAND_A, 256, rows, GREEN),
        (768, BAND_A, w - 768, rows, BLACK),
        (0, BAND_A + rows, w, BAND_B - BAND_A - rows, BLACK),
        (0, BAND_B, 768, rows, BLACK),
        (768, BAND_B, 256, rows, BLUE),
        (1024, BAND_B, w - 1024, rows, BLACK),
        (0, BAND_B + rows, w, h - BAND_B - rows, BLACK),
    ];
    for (x, y, rw, rh, colour) in expect {
        let n = shot.count(x, y, rw, rh, colour);
        if n != (rw * rh) as usize {
            m.fail(&format!(
                "adapter region {rw}x{rh} at ({x},{y}): {n} of {} pixels are {colour:?} (e.g. {:?} at its corner)",
                rw * rh,
                shot.pixel(x, y)
            ));
        }
    }
}

#[test]
fn vt_d_display_adapter_drives_a_linux_vm() {
    run("passthrough-vtd", Iommu::Intel);
}

#[test]
fn amd_vi_display_adapter_drives_a_linux_vm() {
    run("passthrough-amdvi", Iommu::Amd);
}
