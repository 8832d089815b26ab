//! Updates from the management server and the offline lease, on one laptop across a
//! reboot (its UEFI variables persist like a real laptop's flash).
//!
//! 1. The stick carries v1, signed by IT, issued two hours ago, with a one-hour offline
//!    lease that the corporate desktop needs. The server is down: the corporate desktop
//!    is held back and its overview tile says so; the personal desktop runs.
//! 2. The server comes up: the service VM's agent checks in, the hypervisor accepts the
//!    server-signed answer, the lease holds again and the corporate desktop starts.
//! 3. IT publishes v2, which opens a second port to the corporate desktop: the next
//!    check-in brings it, the hypervisor accepts it, saves it, and the new rule applies
//!    without a reboot; `mgmt status` shows the laptop on v2.
//! 4. A compromised server (it holds the server key) replays v1: refused as a rollback.
//! 5. The laptop reboots from the same v1 stick: it runs v2 from the saved delivery, and
//!    the corporate desktop starts at once (the saved check-in keeps the lease).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bulkhead_policy::bundle::signing::{SecretKey, sign_policy};
use bulkhead_policy::heartbeat::{CheckinRequest, Heartbeat, sign_answer};
use bulkhead_policy::model::{Management, NetRule, Network, Policy, Restart, Target, Vm, VmKind};
use images::desktops::NETWORKED_CMDLINE;
use images::mgmt::{ServerConfig, Store};
use tests::{Machine, image};

const BOOT: Duration = Duration::from_secs(300);
const STEP: Duration = Duration::from_secs(90);
const UPLINK: [&str; 4] = ["-netdev", "user,id=n0", "-device", "e1000e,netdev=n0,bus=pcie.0,addr=0x5,romfile="];
const LEASE_S: u32 = 3600;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn desktop(name: &str, rule: NetRule, allow: Vec<String>, needs_lease: bool) -> Vm {
    Vm {
        name: name.into(),
        kind: VmKind::Linux,
        image: "linux".into(),
        initrd: Some("initrd".into()),
        modules: vec![],
        cmdline: NETWORKED_CMDLINE.into(),
        memory_mib: 256,
        vcpus: 1,
        label: name.to_uppercase(),
        colour: 0xc0392b,
        restart: Restart::Always,
        devices: vec![],
        network: Some(Network { via: "net".into(), rule, allow }),
        needs_lease,
        disk: None,
        expect: None,
    }
}

fn service_vm() -> Vm {
    Vm {
        restart: Restart::Always,
        devices: vec!["8086:10d3".into()],
        label: "Network".into(),
        ..images::policy::fleet::vm("net", VmKind::Service, images::build::SERVICE_VM_MODULE, 64)
    }
}

/// The laptop's policy: personal first (slot 1), the corporate desktop (which needs
/// the lease) may reach `allowed` ports on the host.
fn policy(version: u64, issued_at: u64, server_port: u16, server: &SecretKey, allowed: &[u16]) -> Policy {
    let allow = allowed.iter().map(|p| format!("10.0.2.2/32:{p}")).collect();
    Policy {
        version,
        issued_at,
        expires_at: now() + 30 * 86_400,
        target: Target::Group("staff".into()),
        organisation: "Example Corp IT".into(),
        management: Some(Management {
            server: format!("http://10.0.2.2:{server_port}"),
            checkin_interval_s: 10,
            offline_lease_s: LEASE_S,
            server_key: server.public(),
        }),
        vms: vec![
            desktop("personal", NetRule::Internet, vec![], false),
            desktop("corporate", NetRule::CorporateOnly, allow, true),
            service_vm(),
        ],
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

/// Amber pixels on the overview: the "Needs check-in" pill of a held-back VM.
fn held_pill_pixels(m: &mut Machine, name: &str) -> usize {
    m.send_keys("ctrl-alt-spc");
    std::thread::sleep(Duration::from_secs(2));
    let shot = m.screendump(name);
    m.send_keys("esc");
    let colour = ui::palette::SEVERITY_WARNING;
    shot.count_in(
        embedded_graphics::primitives::Rectangle::new(
            embedded_graphics::prelude::Point::zero(),
            embedded_graphics::prelude::Size::new(shot.width, shot.height),
        ),
        colour,
    )
}

/// A free TCP port on the host (the server starts on it later).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A compromised management server: it holds the server key and answers every
/// check-in with a correctly signed heartbeat and the old bundle `replay`.
fn replaying_server(port: u16, key: SecretKey, replay: Vec<u8>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("binding the replaying server");
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok((mut stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            stream.set_nonblocking(false).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            let body = loop {
                let Ok(n) = stream.read(&mut buf) else { break None };
                if n == 0 {
                    break None;
                }
                request.extend_from_slice(&buf[..n]);
                let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if request.len() >= end + 4 + length {
                    break Some(request[end + 4..end + 4 + length].to_vec());
                }
            };
            let Some(request) = body.and_then(|b| postcard::from_bytes::<CheckinRequest>(&b).ok()) else { continue };
            let heartbeat =
                Heartbeat { device_id: request.device_id, nonce: request.nonce, server_time: now(), latest_version: 1 };
            let answer = sign_answer(&key, &heartbeat, Some(replay.clone()));
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: \
                 close\r\n\r\n",
                answer.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&answer);
        }
    })
}

#[test]
fn updates_arrive_through_the_service_vm_persist_and_the_offline_lease_holds_vms_back() {
    let port_a = images::net_bench::serve(Arc::new(b"port-a-ok\n".to_vec())).unwrap();
    let port_b = images::net_bench::serve(Arc::new(b"port-b-ok\n".to_vec())).unwrap();
    let it = SecretKey([0x11; 32]);
    let server_key = SecretKey([0x22; 32]);
    let state = tempfile::tempdir().unwrap();
    let port = free_port();

    // 1. v1, issued two hours ago with a one-hour lease; the server is not running.
    let v1 = sign_policy(&policy(1, now() - 7200, port, &server_key, &[port_a]), &it, vec![]);
    let img = image::build_network_image_with_bundle("update", "", v1.clone());
    let tune = |c: &mut images::qemu::MachineConfig| {
        c.memory_mib = 1024;
        c.cpus = 1;
        c.iommu = images::qemu::Iommu::Intel;
        c.extra_args = UPLINK.iter().map(|s| s.to_string()).collect();
    };
    let mut m = Machine::boot("update", &img, tune);
    m.connect_qmp();
    m.expect("running policy version 1 ", BOOT);
    let held = m.expect("(corporate) held back:", BOOT);
    assert!(held.contains("no check-in with IT's server for 2 h (the lease is 60 min)"), "{held}");
    m.expect("BULKHEAD-GUEST-READY", BOOT);
    m.expect("agent: server unreachable", STEP);
    let amber = held_pill_pixels(&mut m, "held");
    assert!(amber > 300, "the corporate tile does not say it needs a check-in ({amber} amber pixels)");
    assert!(!m.serial().contains("[corporate]"), "the held-back desktop ran");

    // 2. The server comes up: a check-in renews the lease and the desktop starts.
    let server = images::mgmt::start(ServerConfig {
        dir: state.path().into(),
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        key: server_key.clone(),
        clock: images::mgmt::server::system_clock,
        announce: true,
    })
    .unwrap();
    m.expect("agent: checked in, up to date", STEP);
    m.expect("(corporate) started: the offline lease holds again", STEP);
    m.expect("BULKHEAD-GUEST-READY", BOOT);
    let amber = held_pill_pixels(&mut m, "released");
    assert!(amber < 50, "the corporate tile still says it needs a check-in ({amber} amber pixels)");
    assert!(fetch(&mut m, port_a, "A1").contains("port-a-ok"), "corporate cannot reach its allowed port");
    assert!(!fetch(&mut m, port_b, "B1").contains("port-b-ok"), "corporate reached a port v1 does not allow");

    // 3. v2 is published: accepted at the next check-in, saved, its rule applied now.
    let v2 = sign_policy(&policy(2, now(), port, &server_key, &[port_a, port_b]), &it, vec![]);
    Store::open(state.path()).unwrap().publish(&v2).unwrap();
    m.expect("agent: checked in, policy v2 accepted", STEP);
    let serial = m.serial();
    assert!(
        serial.contains("policy v2 accepted; network rules applied now, VM changes at next boot"),
        "no update line"
    );
    assert!(serial.contains("delivered bundle saved"), "the update was not saved");
    m.expect("link 1 (corporate): rule now", STEP);
    assert!(fetch(&mut m, port_b, "B2").contains("port-b-ok"), "v2's rule did not apply without a reboot");
    // The next check-in reports v2 (one every 10 s).
    let mut log = Store::open(state.path()).unwrap().load_log().unwrap();
    for _ in 0..60 {
        if log.devices.values().next().is_some_and(|r| r.version == 2) {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
        log = Store::open(state.path()).unwrap().load_log().unwrap();
    }
    let record = log.devices.values().next().expect("the laptop checked in");
    assert_eq!((record.group.as_str(), record.version, record.last_sent), ("staff", 2, Some(2)), "{log:?}");
    let status = images::mgmt::store::status_text(&log, now());
    assert!(status.contains("staff") && status.contains("v2"), "{status}");
    // Check-ins (whose server clock may run a little ahead) never held it back again.
    assert_eq!(m.serial().matches("(corporate) held back").count(), 1, "the running desktop was held back again");
    server.stop();

    // 4. A compromised server replays v1.
    let stop = Arc::new(AtomicBool::new(false));
    let replay = replaying_server(port, server_key.clone(), v1.clone(), stop.clone());
    let refused = m.expect("check-in: the server's bundle is refused", STEP);
    assert!(refused.contains("rollback"), "{refused}");
    stop.store(true, Ordering::Relaxed);
    replay.join().unwrap();
    drop(m);

    // 5. Reboot from the same v1 stick: v2 runs from the saved delivery.
    let mut m = Machine::boot_again("update-reboot", &img, tune);
    let line = m.expect("running policy version ", BOOT);
    assert!(line.contains("running policy version 2 ") && line.contains("last delivery"), "{line}");
    let skipped = m.expect("policy was not used", BOOT);
    assert!(skipped.contains("rollback"), "{skipped}");
    m.expect("BULKHEAD-GUEST-READY", BOOT);
    m.expect("BULKHEAD-GUEST-READY", BOOT);
    assert!(!m.serial().contains("(corporate) held back"), "the saved check-in did not keep the lease");
    m.pass();
}
