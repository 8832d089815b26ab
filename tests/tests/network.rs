//! The networking service VM between two Linux desktops, in one boot: each desktop's
//! unmodified `virtio_net` driver gets a link whose far end is a port of the service
//! VM (a no_std Rust kernel running the router). Checked from inside the desktops:
//! each gets its fixed lease over DHCP, reaches its gateway, and cannot reach the
//! other desktop; the hypervisor logs each link coming up from the service VM's
//! reports.

use std::time::Duration;

use images::desktops::{Desktop, GUEST_CMDLINE, vm_line};
use tests::{Machine, image};

const DESKTOPS: &[Desktop] = &[
    Desktop { name: "corporate", label: "CORPORATE · secure", colour: "#c0392b", memory_mib: 256 },
    Desktop { name: "personal", label: "PERSONAL", colour: "#27ae60", memory_mib: 256 },
];

const BOOT: Duration = Duration::from_secs(300);
const STEP: Duration = Duration::from_secs(90);

fn vms_config() -> String {
    let mut text: String = DESKTOPS.iter().map(|d| vm_line(d, GUEST_CMDLINE, "")).collect();
    text.push_str("vm net kind=service image=service-vm memory=32M restart=always label=\"Network\"\n");
    // Link order fixes the addresses: personal is link 0 (10.213.0.2), corporate
    // link 1 (10.213.0.6).
    text.push_str("link personal net rule=internet\n");
    text.push_str("link corporate net rule=corporate-only allow=10.0.2.2/32:8080\n");
    text
}

/// The IPv4 address `udhcpc` configured on the desktop's eth0.
fn lease(m: &mut Machine, vm: &str) -> String {
    m.run_in_vm(vm, "udhcpc -i eth0 -n -q -t 5 -T 2 >/dev/null 2>&1; echo LEASE=$(ip -4 -o addr show eth0 | tr -s ' ' | cut -d ' ' -f 4)");
    let line = m.expect(&format!("[{vm}] LEASE="), STEP);
    line.split("LEASE=").nth(1).unwrap_or("").trim().to_owned()
}

/// Packets `ping -c 3` got back from `target` in the desktop.
fn pings(m: &mut Machine, vm: &str, target: &str, tag: &str) -> u32 {
    m.run_in_vm(vm, &format!("echo PING{tag}=$(ping -c 3 -W 2 {target} 2>&1 | grep -o '[0-9]* packets received')"));
    let line = m.expect(&format!("[{vm}] PING{tag}="), STEP);
    line.split(&format!("PING{tag}=")).nth(1).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

#[test]
fn desktops_get_their_network_through_the_service_vm() {
    let img = image::build_network_image("network", "", &vms_config());
    let mut m = Machine::boot("network", &img, |c| {
        c.memory_mib = 1024;
        c.cpus = 1;
    });
    m.expect("BULKHEAD READY", BOOT);
    let ready = m.expect("SERVICE-VM READY", BOOT);
    assert!(ready.contains("links=2 ports=2"), "{ready}");
    m.expect("BULKHEAD-GUEST-READY", BOOT);
    m.expect("BULKHEAD-GUEST-READY", BOOT);

    assert_eq!(lease(&mut m, "personal"), "10.213.0.2/30");
    assert_eq!(lease(&mut m, "corporate"), "10.213.0.6/30");
    assert_eq!(pings(&mut m, "personal", "10.213.0.1", "a"), 3, "personal cannot reach its gateway");
    assert_eq!(pings(&mut m, "corporate", "10.213.0.5", "b"), 3, "corporate cannot reach its gateway");
    assert_eq!(pings(&mut m, "corporate", "10.213.0.2", "c"), 0, "corporate reached the personal desktop");
    assert_eq!(pings(&mut m, "personal", "10.213.0.6", "d"), 0, "personal reached the corporate desktop");
    std::thread::sleep(Duration::from_secs(2));
    let serial = m.serial();
    for (vm, address) in [("personal", "10.213.0.2"), ("corporate", "10.213.0.6")] {
        assert!(serial.contains(&format!("{vm}: link up ({address})")), "no link-up report for {vm}");
    }
    m.pass();
}
