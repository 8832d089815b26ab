//! A policy update from the management server, through the service VM: the laptop
//! boots managed (a signed v1 with a `[management]` section naming a server this test
//! runs on the host, 10.0.2.2 on QEMU's user network); the service VM's agent checks in
//! and the hypervisor takes the server-signed answer (up to date). Then IT publishes v2,
//! which opens a second port to the corporate desktop: at the next check-in the
//! hypervisor accepts v2 and the corporate desktop reaches that port at once, without
//! a reboot; the server's status shows the laptop on v2.
//!
//! The running policy comes from boot module `policy-enrol` (an enrolment, as at first
//! boot), until the boot path reads it from the stick and the UEFI variables.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bulkhead_policy::bundle::signing::{SecretKey, sign_policy};
use bulkhead_policy::model::{Management, NetRule, Network, Policy, Restart, Target, Vm, VmKind};
use images::desktops::{Desktop, NETWORKED_CMDLINE, vm_line};
use images::disk::{BootModule, FileSource};
use images::mgmt::{ServerConfig, Store};
use tests::{Machine, image};

const DESKTOPS: &[Desktop] = &[
    Desktop { name: "corporate", label: "CORPORATE · secure", colour: "#c0392b", memory_mib: 256 },
    Desktop { name: "personal", label: "PERSONAL", colour: "#27ae60", memory_mib: 256 },
];
const BOOT: Duration = Duration::from_secs(300);
const STEP: Duration = Duration::from_secs(90);
const UPLINK: [&str; 4] = ["-netdev", "user,id=n0", "-device", "e1000e,netdev=n0,bus=pcie.0,addr=0x5,romfile="];

fn vms_config(port_a: u16) -> String {
    let mut text: String = DESKTOPS.iter().map(|d| vm_line(d, NETWORKED_CMDLINE, "")).collect();
    text.push_str(
        "vm net kind=service image=service-vm memory=64M devices=8086:10d3 restart=always label=\"Network\"\n",
    );
    text.push_str("link personal net rule=internet\n");
    text.push_str(&format!("link corporate net rule=corporate-only allow=10.0.2.2/32:{port_a}\n"));
    text
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn desktop(name: &str, rule: NetRule, allow: Vec<String>) -> Vm {
    Vm {
        name: name.into(),
        kind: VmKind::Linux,
        image: "linux".into(),
        initrd: None,
        modules: vec![],
        cmdline: NETWORKED_CMDLINE.into(),
        memory_mib: 256,
        label: name.into(),
        colour: 0,
        restart: Restart::Always,
        devices: vec![],
        network: Some(Network { via: "net".into(), rule, allow }),
        needs_lease: false,
        expect: None,
    }
}

/// The policy of this laptop: the corporate desktop may reach `allowed` ports on the host.
fn policy(version: u64, server_port: u16, server: &SecretKey, allowed: &[u16]) -> Policy {
    let allow = allowed.iter().map(|p| format!("10.0.2.2/32:{p}")).collect();
    Policy {
        version,
        issued_at: now() - 60,
        expires_at: now() + 30 * 86_400,
        target: Target::Group("staff".into()),
        organisation: "Example Corp IT".into(),
        management: Some(Management {
            server: format!("http://10.0.2.2:{server_port}"),
            checkin_interval_s: 10,
            offline_lease_s: 3600,
            server_key: server.public(),
        }),
        vms: vec![desktop("personal", NetRule::Internet, vec![]), desktop("corporate", NetRule::CorporateOnly, allow)],
        links: vec![],
        hotkeys: vec![],
    }
}

fn fetch(m: &mut Machine, port: u16, tag: &str) -> String {
    m.run_in_vm(
        "corporate",
        &format!("echo {tag}=$(timeout 10 wget -q -O - http://10.0.2.2:{port}/ 2>&1 || echo refused)"),
    );
    m.expect(&format!("[corporate] {tag}="), STEP)
}

#[test]
fn a_published_update_reaches_the_laptop_and_its_network_rules_apply_at_once() {
    let port_a = images::net_bench::serve(Arc::new(b"port-a-ok\n".to_vec())).unwrap();
    let port_b = images::net_bench::serve(Arc::new(b"port-b-ok\n".to_vec())).unwrap();
    let it = SecretKey([0x11; 32]);
    let server_key = SecretKey([0x22; 32]);
    let state = tempfile::tempdir().unwrap();
    let server = images::mgmt::start(ServerConfig {
        dir: state.path().into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        key: server_key.clone(),
        clock: images::mgmt::server::system_clock,
        announce: true,
    })
    .unwrap();
    let port = server.addr.port();

    let v1 = sign_policy(&policy(1, port, &server_key, &[port_a]), &it, vec![]);
    let enrol = BootModule { name: "policy-enrol".into(), source: FileSource::Bytes(v1) };
    let img = image::build_network_image_with("update", "", &vms_config(port_a), vec![enrol]);
    let mut m = Machine::boot("update", &img, |c| {
        c.memory_mib = 1024;
        c.cpus = 1;
        c.iommu = images::qemu::Iommu::Intel;
        c.extra_args = UPLINK.iter().map(|s| s.to_string()).collect();
    });
    m.expect("BULKHEAD READY", BOOT);
    m.expect("enrolled from boot module policy-enrol", BOOT);
    m.expect("net] uplink: 10.0.2.15", BOOT);
    m.expect("BULKHEAD-GUEST-READY", BOOT);
    m.expect("BULKHEAD-GUEST-READY", BOOT);
    // A check-in (one every 10 s): the server has nothing newer.
    m.expect("agent: checked in, up to date", STEP);
    assert!(fetch(&mut m, port_a, "A1").contains("port-a-ok"), "corporate cannot reach its allowed port");
    assert!(!fetch(&mut m, port_b, "B1").contains("port-b-ok"), "corporate reached a port v1 does not allow");

    let v2 = sign_policy(&policy(2, port, &server_key, &[port_a, port_b]), &it, vec![]);
    Store::open(state.path()).unwrap().publish(&v2).unwrap();
    m.expect("agent: checked in, policy v2 accepted", STEP);
    let serial = m.serial();
    assert!(
        serial.contains("policy v2 accepted; network rules applied now, VM changes at next boot"),
        "the hypervisor did not log the update"
    );
    m.expect("link 1 (corporate): rule now", STEP);
    assert!(fetch(&mut m, port_b, "B2").contains("port-b-ok"), "v2's rule did not apply without a reboot");

    // The next check-in reports v2 and gets no bundle.
    let before = m.serial().matches("agent: checked in, up to date").count();
    for _ in 0..60 {
        if m.serial().matches("agent: checked in, up to date").count() > before {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let log = Store::open(state.path()).unwrap().load_log().unwrap();
    assert_eq!(log.devices.len(), 1, "{log:?}");
    let record = log.devices.values().next().unwrap();
    assert_eq!((record.group.as_str(), record.version, record.last_sent), ("staff", 2, Some(2)), "{log:?}");
    let status = images::mgmt::store::status_text(&log, now());
    assert!(status.contains("staff") && status.contains("v2"), "{status}");
    server.stop();
    m.pass();
}
