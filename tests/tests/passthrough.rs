//! A display adapter given to an unmodified Linux VM behind the IOMMU: QEMU's
//! `bochs-display` (behind a PCIe root port, so a secondary bus reset can reset it)
//! and an NVMe controller with a 64-bit BAR go to one VM with `devices=`. Debian's
//! generic kernel binds its `bochs` DRM driver, fbcon takes the adapter over (the
//! command line maps every console to it) and sets a mode; the VM then writes text and
//! colour blocks, and a screendump *of that adapter* must show exactly them. The
//! hypervisor keeps the primary display (its framebuffer's adapter, the `-vga std`
//! device with the same vendor:device, is refused) and draws the trust strip there.
//! One boot per IOMMU kind.

use std::time::{Duration, Instant};

use images::desktops::{Desktop, vm_line};
use images::qemu::Iommu;
use tests::screen::Screenshot;
use tests::{Machine, image};

/// Each device alone below its own root port: reset by a secondary bus reset (bochs)
/// or FLR (NVMe). `gpu` is the QMP id the screendump names.
const DEVICES: [&str; 8] = [
    "-device",
    "pcie-root-port,id=rp1,chassis=1,slot=1",
    "-device",
    "bochs-display,id=gpu,bus=rp1",
    "-device",
    "pcie-root-port,id=rp2,chassis=2,slot=2",
    "-device",
    "nvme,id=nvme,bus=rp2,serial=bulkhead",
];

const VM: Desktop = Desktop { name: "media", label: "MEDIA", colour: "#2980b9", memory_mib: 256 };
const VM_RGB: (u8, u8, u8) = (0x29, 0x80, 0xb9);

/// Every console on framebuffer 1 (the DRM driver's fbdev; 0 is the VM's EFI
/// framebuffer): fbcon takes the adapter over when the driver loads and sets its mode.
const CMDLINE: &str = "console=tty0 console=ttyS0 panic=-1 quiet loglevel=4 fbcon=map:1";

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

fn run(scenario: &str, iommu: Iommu) {
    let guest = image::generic_guest();
    let vms = vm_line(&VM, CMDLINE, "devices=1234:1111,1b36:0010");
    let img = image::build_linux_image(scenario, "", guest, &vms);
    let started = Instant::now();
    let mut m = Machine::boot(scenario, &img, |c| {
        c.memory_mib = 1024;
        c.cpus = 1;
        c.iommu = iommu;
        c.extra_args = DEVICES.iter().map(|s| s.to_string()).collect();
    });
    // -vga std (00:01.0) has the same vendor:device as bochs-display; it holds the
    // boot framebuffer, so it is refused and `devices=1234:1111` picks the other one.
    let vga = m.expect("1234:1111 VGA compatible controller:", BOOT);
    assert!(vga.ends_with("-> shows the hypervisor's screen"), "{vga}");
    m.expect("DMA remapping on", STEP);
    m.expect("BULKHEAD READY", STEP);
    let bar = m.expect("01:00.0: BAR0 32-bit host", STEP);
    assert!(bar.contains("-> guest 0xc0000000 (16384 KiB)"), "framebuffer BAR: {bar}");
    let bar = m.expect("02:00.0: BAR0 64-bit host", STEP);
    assert!(bar.contains("-> guest 0x800000000"), "NVMe BAR above 4 GiB: {bar}");
    m.expect("vm 0 (media) created", STEP);
    m.expect("[media] BULKHEAD-GUEST-READY", BOOT);
    eprintln!("{scenario}: guest ready {:.0} s after QEMU started", started.elapsed().as_secs_f64());

    // The unmodified driver bound the adapter where the hypervisor placed it; no ROM.
    let dev = "/sys/bus/pci/devices/0000:00:03.0";
    m.run_in_vm(
        "media",
        &format!(
            "echo DRV=$(basename $(readlink {dev}/driver)) ROM=$(ls {dev} | grep -c '^rom$') RES=$(head -c 18 {dev}/resource) N=$((1+1))"
        ),
    );
    let line = m.expect("[media] DRV=", STEP);
    assert_eq!(field(&line, "DRV="), "bochs-drm", "{line}");
    assert_eq!(field(&line, "ROM="), "0", "the guest sees an expansion ROM: {line}");
    assert_eq!(field(&line, "RES="), "0x00000000c0000000", "Linux moved the BAR: {line}");

    // The 64-bit BAR above 4 GiB reaches the NVMe controller's registers: its version
    // register (offset 8) reads NVMe 1.x through the nested page table.
    let nvme = "/sys/bus/pci/devices/0000:00:04.0";
    m.run_in_vm("media", &format!("a=$(head -c 18 {nvme}/resource); echo NVME=$a VS=$(devmem $((a+8)) 32) N=$((2+1))"));
    let line = m.expect("[media] NVME=", STEP);
    assert_eq!(field(&line, "NVME="), "0x0000000800000000", "{line}");
    assert!(field(&line, "VS=").starts_with("0x0001"), "NVMe version register: {line}");

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

    let serial = m.serial();
    assert!(!serial.contains("(media) stopped"), "the VM stopped");
    assert!(!serial.contains("stays unmapped"), "a BAR could not be mapped");
    m.pass();
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
