//! The networking service VM between two Linux desktops and the network, in one boot:
//! each desktop's unmodified `virtio_net` driver gets a link whose far end is a port of
//! the service VM (a no_std Rust kernel running the router), and the service VM owns an
//! `e1000e` on QEMU's user network, passed through behind the IOMMU. Checked from
//! inside the desktops: each gets its fixed lease from its own DHCP client at boot and
//! reaches its gateway;
//! the personal desktop (`internet`) downloads 8 MiB from an HTTP server this test
//! runs on the host, with the right SHA-256; the corporate desktop (`corporate-only`)
//! reaches its one allowed host port and not another; neither reaches the other
//! desktop; the hypervisor logs each link and the uplink's address from the service
//! VM's reports. Then the service VM is stopped in the middle of a download: its
//! restart policy starts it again, the desktops keep their addresses, and a new
//! download succeeds with no command in the guests. All along, a third VM on the
//! service VM sends malformed and spoofed frames (runts, oversized frames, bad
//! checksums, another desktop's address or MAC, IPv6, bogus DHCP options): the other
//! desktops' traffic is undisturbed and the router counts each kind of drop.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use bulkhead_policy::model::{NetRule, Policy, Restart, Vm, VmKind};
use images::desktops::{Desktop, NETWORKED_CMDLINE, desktop_vm};
use images::policy::fleet::{self, network};
use tests::{Machine, image};

const CORPORATE: Desktop =
    Desktop { name: "corporate", label: "CORPORATE · secure", colour: "#c0392b", memory_mib: 256 };
const PERSONAL: Desktop = Desktop { name: "personal", label: "PERSONAL", colour: "#27ae60", memory_mib: 256 };

const BOOT: Duration = Duration::from_secs(300);
const STEP: Duration = Duration::from_secs(90);

/// The uplink: an 82574 on QEMU's user network (the host is 10.0.2.2 there).
const UPLINK: [&str; 4] = ["-netdev", "user,id=n0", "-device", "e1000e,netdev=n0,bus=pcie.0,addr=0x5,romfile="];

fn policy(allowed_port: u16) -> Policy {
    let allow = format!("10.0.2.2/32:{allowed_port}");
    // Networks are linked in slot order, which fixes the addresses: personal is link 0
    // (10.213.0.2), corporate link 1 (10.213.0.6).
    fleet::demo_policy(vec![
        Vm { network: network("net", NetRule::Internet, &[]), ..desktop_vm(&PERSONAL, NETWORKED_CMDLINE) },
        Vm { network: network("net", NetRule::CorporateOnly, &[&allow]), ..desktop_vm(&CORPORATE, NETWORKED_CMDLINE) },
        Vm {
            label: "Network".into(),
            restart: Restart::Always,
            devices: vec!["8086:10d3".into()],
            ..fleet::vm("net", VmKind::Service, "service-vm", 64)
        },
        // Link 2: a desktop that sends malformed and spoofed frames all along.
        Vm {
            label: "Attacker".into(),
            network: network("net", NetRule::Internet, &[]),
            ..fleet::payload("attacker", "net-attack", 16)
        },
    ])
}

/// Serves `body` to every HTTP request on a host port (any path); returns the port.
fn serve(body: Arc<Vec<u8>>) -> u16 {
    images::net_bench::serve(body).unwrap_or_else(|e| panic!("{e}"))
}

/// 8 MiB that no compression or pattern can fake: a xorshift stream.
fn download_body() -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..8 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The IPv4 address the desktop's own DHCP client (started at boot, as on any desktop)
/// configured on eth0, waiting up to a minute for it.
fn lease(m: &mut Machine, vm: &str) -> String {
    m.run_in_vm(
        vm,
        "for i in $(seq 60); do ip -4 -o addr show eth0 | grep -q inet && break; sleep 1; done; \
         echo LEASE=$(ip -4 -o addr show eth0 | tr -s ' ' | cut -d ' ' -f 4)",
    );
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
    let body = download_body();
    let want = format!("{:x}", Sha256::digest(&body));
    let download_port = serve(Arc::new(body));
    let allowed_port = serve(Arc::new(b"corporate-ok\n".to_vec()));
    let forbidden_port = serve(Arc::new(b"forbidden-reached\n".to_vec()));
    let img = image::build_network_image("network", "", &policy(allowed_port));
    let mut m = Machine::boot("network", &img, |c| {
        c.memory_mib = 1024;
        c.cpus = 1;
        c.iommu = images::qemu::Iommu::Intel;
        c.extra_args = UPLINK.iter().map(|s| s.to_string()).collect();
    });
    m.expect("BULKHEAD READY", BOOT);
    let ready = m.expect("SERVICE-VM READY", BOOT);
    assert!(ready.contains("links=3 ports=3 uplink=e1000e"), "{ready}");
    m.expect("net] uplink: 10.0.2.15", BOOT);
    let serial = m.serial();
    let nic = serial.lines().find(|l| l.contains("[uplink] uplink NIC at ")).unwrap_or_default();
    assert!(nic.ends_with(", MSI"), "the uplink NIC does not interrupt through MSI: {nic}");
    m.expect("BULKHEAD-GUEST-READY", BOOT);
    m.expect("BULKHEAD-GUEST-READY", BOOT);

    assert_eq!(lease(&mut m, "personal"), "10.213.0.2/30");
    assert_eq!(lease(&mut m, "corporate"), "10.213.0.6/30");
    assert_eq!(pings(&mut m, "personal", "10.213.0.1", "a"), 3, "personal cannot reach its gateway");
    assert_eq!(pings(&mut m, "corporate", "10.213.0.5", "b"), 3, "corporate cannot reach its gateway");
    assert_eq!(pings(&mut m, "corporate", "10.213.0.2", "c"), 0, "corporate reached the personal desktop");
    assert_eq!(pings(&mut m, "personal", "10.213.0.6", "d"), 0, "personal reached the corporate desktop");
    // Nor over TCP: corporate listens, personal's connection never arrives.
    m.run_in_vm("corporate", "(timeout 20 nc -l -p 7777 > /tmp/tcp-in 2>&1 &); echo LISTENING");
    m.expect("[corporate] LISTENING", STEP);
    m.run_in_vm("personal", "echo TCP=$(echo crossed | timeout 8 nc 10.213.0.6 7777 2>&1; echo rc=$?)");
    m.expect("[personal] TCP=", STEP);
    m.run_in_vm("corporate", "sleep 1; echo GOT=$(cat /tmp/tcp-in)");
    assert!(!m.expect("[corporate] GOT=", STEP).contains("crossed"), "personal reached corporate over TCP");
    // The virtio device interrupts through its MSI-X vectors.
    for vm in ["personal", "corporate"] {
        m.run_in_vm(vm, "echo VECTORS=$(grep -c 'virtio0-' /proc/interrupts)");
        let line = m.expect(&format!("[{vm}] VECTORS="), STEP);
        let n: u32 = line.split("VECTORS=").nth(1).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        assert!(n >= 2, "{vm}: the virtio-net device has {n} MSI-X vectors in /proc/interrupts");
    }

    // Through the uplink: the personal desktop downloads; the corporate one reaches
    // only its allowed port.
    m.run_in_vm("corporate", &format!("echo ALLOWED=$(timeout 20 wget -q -O - http://10.0.2.2:{allowed_port}/)"));
    let allowed = m.expect("[corporate] ALLOWED=", STEP);
    if !allowed.contains("corporate-ok") {
        m.type_serial("!net corporate\n!net net\n");
        std::thread::sleep(Duration::from_secs(2));
        m.fail(&format!("corporate could not reach its allowed port: {allowed}"));
    }
    m.run_in_vm("personal", &format!("echo SUM=$(wget -q -O - http://10.0.2.2:{download_port}/blob | sha256sum)"));
    let sum = m.expect("[personal] SUM=", Duration::from_secs(300));
    assert!(sum.contains(&want), "the download's SHA-256 differs: {sum}");
    // A name the host's resolver knows (the registry cargo itself uses), looked up
    // through the gateway's DNS relay and QEMU's user-network resolver.
    m.run_in_vm(
        "personal",
        "echo DNS=$(nslookup index.crates.io 2>&1 | sed -n 's/^Address: \\([0-9.]*\\)$/\\1/p' | tail -n 1)",
    );
    let dns = m.expect("[personal] DNS=", STEP);
    let address = dns.split("DNS=").nth(1).unwrap_or("").trim();
    assert!(address.parse::<std::net::Ipv4Addr>().is_ok(), "no address for index.crates.io through the relay: {dns}");
    m.run_in_vm(
        "corporate",
        &format!("echo FORBIDDEN=$(timeout 10 wget -q -O - http://10.0.2.2:{forbidden_port}/ 2>&1 || echo refused)"),
    );
    let forbidden = m.expect("[corporate] FORBIDDEN=", STEP);
    assert!(!forbidden.contains("forbidden-reached"), "corporate reached a port its rule does not allow");
    // The router counted the refused connection: beyond the 3 pings to the personal
    // desktop, its SYNs are `rule` drops on corporate's link (link 1). The service VM
    // shows its counters at most every 5 s.
    std::thread::sleep(Duration::from_secs(6));
    let serial = m.serial();
    let counters = serial.lines().rev().find(|l| l.contains("[router] link 1 ")).unwrap_or_default();
    let rule_drops: u64 =
        counters.split(" rule=").nth(1).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0);
    assert!(rule_drops > 3, "the router did not count the refused connection: {counters}");

    // The service VM goes away mid-download and is started again by its policy: the
    // desktops keep their devices and addresses, and a new download works without any
    // other command in the guest.
    m.run_in_vm(
        "personal",
        &format!("(timeout 120 wget -q -O /tmp/old http://10.0.2.2:{download_port}/old; echo OLD-DONE=$?) &"),
    );
    std::thread::sleep(Duration::from_millis(1500));
    m.type_serial("!stop net\n");
    m.expect("(net) stopped: Requested", STEP);
    m.expect("(net) restarted", STEP);
    m.expect("SERVICE-VM READY", STEP);
    m.expect("net] uplink: 10.0.2.15", STEP);
    m.run_in_vm("personal", &format!("echo SUM2=$(wget -q -O - http://10.0.2.2:{download_port}/again | sha256sum)"));
    let sum = m.expect("[personal] SUM2=", Duration::from_secs(300));
    assert!(sum.contains(&want), "the download after the restart differs: {sum}");
    m.run_in_vm("personal", "echo ADDR=$(ip -4 -o addr show eth0 | tr -s ' ' | cut -d ' ' -f 4)");
    assert!(m.expect("[personal] ADDR=", STEP).ends_with("ADDR=10.213.0.2/30"), "personal lost its address");

    // The attacker went on all along; the router counted its frames by reason.
    let serial = m.serial();
    assert!(serial.contains("[attacker] net-attack: 64 rounds sent"), "the attacker did not get going");
    // The counters restart with the service VM: the most each reason reached counts.
    let most = |reason: &str| -> u64 {
        serial
            .lines()
            .filter(|l| l.contains("[router] link 2 "))
            .filter_map(|l| l.split(&format!(" {reason}=")).nth(1)?.split_whitespace().next()?.parse().ok())
            .max()
            .unwrap_or(0)
    };
    for reason in ["runt", "oversized", "malformed", "bad-ip-checksum", "spoofed", "ipv6"] {
        let n = most(reason);
        assert!(n >= 64, "the router counted at most {n} `{reason}` drops from the attacker");
    }

    std::thread::sleep(Duration::from_secs(2));
    let serial = m.serial();
    for (vm, address) in [("personal", "10.213.0.2"), ("corporate", "10.213.0.6")] {
        assert!(serial.contains(&format!("{vm}: link up ({address})")), "no link-up report for {vm}");
    }
    m.pass();
}
