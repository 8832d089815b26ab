//! Two unmodified Debian Linux desktops side by side under Bulkhead, with different
//! memory sizes (one larger than the 2.75 GiB below the 32-bit hole, so its RAM
//! continues above 4 GiB), each driven over its own serial console: the kernel is the packaged one,
//! it knows it runs under a hypervisor, sees its configured memory and the real date,
//! draws its console into its own framebuffer (checked pixel by pixel on the screen),
//! reaches the other over the virtio-net link between them (`ping`), keeps files on its
//! virtual disk (ext4 on /home), and `poweroff` in one VM stops only that VM.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bulkhead_policy::model::{Disk, DiskMode};
use images::desktops::Desktop;
use tests::{Machine, image};

const DESKTOPS: &[Desktop] = &[
    Desktop { name: "corporate", label: "CORPORATE · secure", colour: "#c0392b", memory_mib: 3072 },
    Desktop { name: "personal", label: "PERSONAL", colour: "#27ae60", memory_mib: 256 },
];

const BOOT: Duration = Duration::from_secs(240);
const STEP: Duration = Duration::from_secs(60);

/// The value after `KEY=` in a guest output line.
fn value<'a>(line: &'a str, key: &str) -> &'a str {
    line.split(key).nth(1).unwrap_or("").trim()
}

#[test]
fn two_linux_desktops_boot_side_by_side() {
    let guest = image::linux_guest();
    let mut policy =
        images::policy::fleet::with_links(images::desktops::desktops_policy(DESKTOPS), &[("corporate", "personal")]);
    // The personal VM gets a virtual disk.
    for vm in policy.vms.iter_mut().filter(|vm| vm.name == "personal") {
        vm.disk = Some(Disk { size_mib: 64, mode: DiskMode::Persistent });
    }
    let modules = images::desktops::modules_with_policy(guest, &policy);
    let img = image::build_image_with_modules("linux-desktops", "", modules);
    let mut m = Machine::boot("linux-desktops", &img, |c| {
        // The 3 GiB VM needs a contiguous host block: QEMU's q35 puts RAM beyond 2 GiB
        // above 4 GiB, so 6 GiB leaves a 4 GiB block there.
        c.memory_mib = 6144;
        c.cpus = 1;
    });
    m.expect("BULKHEAD READY", BOOT);
    // Both boot concurrently; the markers come in either order.
    m.expect("BULKHEAD-GUEST-READY", BOOT);
    m.expect("BULKHEAD-GUEST-READY", BOOT);

    for (vm, mib) in [("corporate", 3072u64), ("personal", 256)] {
        m.run_in_vm(vm, "echo UNAME=$(uname -r)");
        let uname = m.expect(&format!("[{vm}] UNAME="), STEP);
        assert_eq!(value(&uname, "UNAME="), guest.kernel_version, "{vm} runs another kernel");

        m.run_in_vm(vm, "echo HV=$(grep -c '^flags.* hypervisor' /proc/cpuinfo)");
        let hv = m.expect(&format!("[{vm}] HV="), STEP);
        assert_eq!(value(&hv, "HV="), "1", "{vm}: /proc/cpuinfo lacks the hypervisor flag");

        m.run_in_vm(vm, "echo FREE=$(free -k | grep Mem:)");
        let free = m.expect(&format!("[{vm}] FREE="), STEP);
        let total_kib: u64 = value(&free, "FREE=").split_whitespace().nth(1).and_then(|t| t.parse().ok()).unwrap();
        let configured = mib * 1024;
        // The kernel keeps its own image and reserved areas out of MemTotal.
        assert!(
            total_kib <= configured && total_kib >= configured * 80 / 100,
            "{vm}: free says {total_kib} KiB of {configured} KiB configured"
        );

        m.run_in_vm(vm, "echo DATE=$(date +%s)");
        let date = m.expect(&format!("[{vm}] DATE="), STEP);
        let guest_time: i64 = value(&date, "DATE=").parse().unwrap();
        let host_time = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        assert!((guest_time - host_time).abs() < 60, "{vm}: date {guest_time} vs host {host_time}");
    }

    check_console_on_screen(&mut m);
    check_link(&mut m);
    check_disk(&mut m);

    // poweroff stops the personal VM only; the corporate one still answers.
    m.run_in_vm("personal", "poweroff");
    m.expect("(personal) stopped: GuestShutdown", STEP);
    m.run_in_vm("corporate", "echo STILL=alive");
    m.expect("[corporate] STILL=alive", STEP);
    assert!(!m.serial().contains("(corporate) stopped"), "the corporate VM stopped too");
    m.pass();
}

/// Each desktop has a virtio-net device (virtio_net bound, MSI-X vectors in
/// /proc/interrupts) wired to the other's: with addresses set by hand, a ping crosses it
/// both ways.
fn check_link(m: &mut Machine) {
    for (vm, ip) in [("corporate", "10.0.0.1"), ("personal", "10.0.0.2")] {
        m.run_in_vm(
            vm,
            &format!(
                "ip addr add {ip}/24 dev eth0; ip link set eth0 up; echo NET=$(basename $(readlink \
                 /sys/class/net/eth0/device/driver))/$(cat /sys/class/net/eth0/address)/$(grep -c virtio0- /proc/interrupts)"
            ),
        );
        let net = m.expect(&format!("[{vm}] NET="), STEP);
        let id = if vm == "corporate" { 0 } else { 1 };
        // virtio_pci binds the PCI function; virtio_net the virtio device under it.
        assert_eq!(value(&net, "NET="), format!("virtio_net/0a:b3:ec:00:0{id}:00/3"), "{vm}: {net}");
    }
    for (vm, peer, count) in [("corporate", "10.0.0.2", 3), ("personal", "10.0.0.1", 2)] {
        m.run_in_vm(vm, &format!("echo PING=$(ping -c {count} -W 5 {peer} | tail -2 | tr '\\n' ' ')"));
        let ping = m.expect(&format!("[{vm}] PING="), STEP);
        assert!(ping.contains(&format!("{count} packets received")), "{vm} cannot reach {peer} over the link: {ping}");
        eprintln!("{vm} -> {peer}: {}", value(&ping, "PING="));
    }
    // A TCP stream (checksum offload on both sides: the requests travel in the headers):
    // 4 MiB arrive whole.
    m.run_in_vm("personal", "nc -l -p 5001 | wc -c > /tmp/got & echo LISTENING");
    m.expect("[personal] LISTENING", STEP);
    std::thread::sleep(Duration::from_secs(1));
    m.run_in_vm(
        "corporate",
        "S=$(cut -d' ' -f1 /proc/uptime); dd if=/dev/zero bs=64k count=64 2>/dev/null | nc 10.0.0.2 5001; \
         echo SENT=$S-$(cut -d' ' -f1 /proc/uptime)",
    );
    let sent = m.expect("[corporate] SENT=", STEP);
    m.run_in_vm("personal", "sleep 1; echo GOT=$(cat /tmp/got)");
    let got = m.expect("[personal] GOT=", STEP);
    assert_eq!(value(&got, "GOT="), "4194304", "the TCP stream over the link lost bytes");
    eprintln!("4 MiB over TCP, corporate's uptime before-after: {}", value(&sent, "SENT="));
    // The hypervisor counted the frames both ways (ARP and ICMP at least: 5 pings and
    // their answers, and an ARP exchange).
    m.type_serial("!net corporate\n");
    let net = m.expect("NET corporate port 0 sent frames=", STEP);
    let frames = |dir: &str| -> u64 {
        let field = net.split(dir).nth(1).and_then(|s| s.split("frames=").nth(1)).unwrap_or("");
        field.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    assert!(frames(" sent ") >= 6 && frames(" received ") >= 6, "{net}");
}

/// The personal VM's virtual disk: `virtio_blk` binds it as /dev/vda with the configured
/// size (64 MiB = 131072 sectors) and the serial GET_ID returns. The guest's init found
/// it empty, made ext4 on it and mounted it on /home before its ready marker; `df` lists
/// /home with about the disk's size; 2 MiB written to a file there and synced read back
/// the same after the page cache is dropped, and the filesystem's superblock is on the
/// raw disk. The corporate VM has no disk and says nothing about one.
fn check_disk(m: &mut Machine) {
    m.run_in_vm(
        "personal",
        "echo DISK=$(basename $(readlink /sys/block/vda/device/driver))/$(cat /sys/block/vda/size)/$(cat \
         /sys/block/vda/serial)/$(cat /sys/block/vda/ro)",
    );
    let disk = m.expect("[personal] DISK=", STEP);
    assert_eq!(value(&disk, "DISK="), "virtio_blk/131072/bulkhead-vm1/0", "{disk}");

    let serial = m.serial();
    let marker = serial.find("[personal] BULKHEAD-DISK:").map(|at| serial[at..].lines().next().unwrap_or(""));
    let marker = marker.unwrap_or_else(|| panic!("the personal VM printed no BULKHEAD-DISK line"));
    assert!(marker.contains("BULKHEAD-DISK: /home ext4 new 64MiB took="), "first boot of an empty disk: {marker}");
    let ready = serial.find("[personal] BULKHEAD-GUEST-READY").expect("the personal VM is ready");
    assert!(serial.find("[personal] BULKHEAD-DISK:") < Some(ready), "the disk line comes before the ready marker");
    assert!(!serial.contains("[corporate] BULKHEAD-DISK"), "the corporate VM has no disk");
    eprintln!("personal disk: {marker}");

    m.run_in_vm("personal", "echo MOUNT=$(grep ' /home ' /proc/mounts | cut -d' ' -f1-4 | cut -d, -f1)");
    let mount = m.expect("[personal] MOUNT=", STEP);
    assert_eq!(value(&mount, "MOUNT="), "/dev/vda /home ext4 rw", "{mount}");
    m.run_in_vm("personal", "df -h /home; echo DF=$(df -k /home | tail -1)");
    let df = m.expect("[personal] DF=", STEP);
    let fields: Vec<&str> = value(&df, "DF=").split_whitespace().collect();
    assert!(fields.len() >= 6 && fields[0] == "/dev/vda" && fields[5] == "/home", "df: {df}");
    let kib: u64 = fields[1].parse().unwrap_or(0);
    // ext4 keeps its inode tables and a 4 MiB journal out of the total.
    assert!((64 * 1024 * 80 / 100..=64 * 1024).contains(&kib), "df says /home has {kib} KiB of a 64 MiB disk");

    m.run_in_vm(
        "personal",
        "dd if=/dev/urandom of=/tmp/a bs=64k count=32 2>/dev/null; cp /tmp/a /home/a && sync; echo WROTE=$?",
    );
    let wrote = m.expect("[personal] WROTE=", STEP);
    assert_eq!(value(&wrote, "WROTE="), "0", "writing /home/a failed");
    m.run_in_vm("personal", "echo 3 > /proc/sys/vm/drop_caches; echo RW=$(md5sum < /tmp/a)=$(md5sum < /home/a)");
    let rw = m.expect("[personal] RW=", STEP);
    let sums: Vec<&str> = value(&rw, "RW=").split('=').map(|s| s.split_whitespace().next().unwrap_or("")).collect();
    assert!(sums.len() == 2 && sums[0].len() == 32 && sums[0] == sums[1], "/home gave back other bytes: {rw}");
    // The ext4 superblock's magic (0xEF53, little-endian at byte 1080) is on the disk.
    m.run_in_vm("personal", "echo MAGIC=$(dd if=/dev/vda bs=2 skip=540 count=1 2>/dev/null | od -An -tx1)");
    let magic = m.expect("[personal] MAGIC=", STEP);
    assert_eq!(value(&magic, "MAGIC="), "53 ef", "{magic}");
    assert!(!m.serial().contains("virtio-blk needs reset"), "the driver broke a ring rule");
    assert!(!m.serial().contains("corporate): virtio-blk"), "the corporate VM got a disk");
}

/// The corporate VM is on screen below its trust strip. Writing text to its first
/// virtual terminal must show up as glyphs in exactly the character cells written:
/// fbcon draws into the VM's own framebuffer, and the hypervisor copies it to the screen.
fn check_console_on_screen(m: &mut Machine) {
    let patterns = ["#".repeat(40), "# ".repeat(20)];
    for (n, pattern) in patterns.iter().enumerate() {
        // Clear the screen, home the cursor, hide it, print the pattern.
        m.run_in_vm("corporate", &format!("printf '\\033[2J\\033[H\\033[?25l{pattern}' > /dev/tty1; echo SHOWN={n}"));
        m.expect(&format!("[corporate] SHOWN={n}"), STEP);
        // Let the screen refresh (30 frames per second).
        std::thread::sleep(Duration::from_secs(2));
        let shot = m.screendump(&format!("console-{n}"));
        for (col, ch) in pattern.chars().enumerate() {
            let lit = shot.console_cell_lit(col as u32);
            assert_eq!(lit, ch == '#', "pattern {n}: cell {col} ({ch:?}) is {}", if lit { "lit" } else { "dark" });
        }
        for col in pattern.len() as u32..(pattern.len() as u32 + 20) {
            assert!(!shot.console_cell_lit(col), "pattern {n}: cell {col} past the text is lit");
        }
    }
}
