//! The guest's initramfs: static busybox, an `/init` script and the kernel modules the
//! VM needs, as a gzip-compressed newc archive.

use std::io::Write;

use super::cpio;
use super::disk_setup::{DISK_SCRIPT, DISK_SCRIPT_PATH};
use super::modules::LoadableModule;
use super::userland::Userland;

/// Printed on the consoles once the guest's userspace is up; tests wait for it.
pub const READY_MARKER: &str = "BULKHEAD-GUEST-READY";

/// Applets that `/init` uses before `busybox --install` has run, plus the everyday ones.
const APPLETS: &[&str] = &[
    "sh", "ash", "mount", "umount", "mkdir", "echo", "cat", "uname", "insmod", "rmmod", "lsmod", "modprobe", "setsid",
    "cttyhack", "sleep", "poweroff", "reboot", "halt", "sync", "ls", "ps", "dmesg", "ip", "ifconfig", "ln", "rm", "cp",
    "mv", "grep", "sed", "vi", "free", "top", "kill",
];

/// Where busybox `udhcpc` looks for its event script when it is run without `-s`.
pub const UDHCPC_SCRIPT_PATH: &str = "etc/udhcpc/default.script";

/// The `udhcpc` event script: on `bound`/`renew` it gives the interface the leased
/// address, replaces the default route with the lease's router and writes the name
/// servers to `$RESOLV_CONF` (default `/etc/resolv.conf`); on `deconfig` it flushes the
/// interface and leaves it up. `udhcpc -i eth0` (or `-s` with this path) then
/// configures a NIC.
pub const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
# udhcpc event script: $1 is the event; udhcpc sets interface, ip, mask (prefix
# length), router, dns, domain in the environment.
RESOLV_CONF=${RESOLV_CONF:-/etc/resolv.conf}
case "$1" in
deconfig)
	ip -4 addr flush dev "$interface"
	ip link set dev "$interface" up
	;;
bound|renew)
	ip -4 addr flush dev "$interface"
	ip -4 addr add "$ip/${mask:-24}" ${broadcast:+broadcast "$broadcast"} dev "$interface"
	ip link set dev "$interface" up
	if [ -n "$router" ]; then
		while ip -4 route del default dev "$interface" 2>/dev/null; do :; done
		for r in $router; do
			ip -4 route add default via "$r" dev "$interface"
			break
		done
	fi
	: > "$RESOLV_CONF"
	[ -n "$domain" ] && echo "search $domain" >> "$RESOLV_CONF"
	for d in $dns; do
		echo "nameserver $d" >> "$RESOLV_CONF"
	done
	echo "bulkhead: $interface is $ip/${mask:-24} via ${router:-none}"
	;;
leasefail|nak)
	echo "bulkhead: no DHCP lease on $interface ($1)"
	;;
esac
exit 0
"#;

/// What goes into the archive.
#[derive(Debug)]
pub struct InitramfsSpec<'a> {
    pub busybox: &'a [u8],
    pub kernel_release: &'a str,
    /// In load order, dependencies first.
    pub modules: &'a [LoadableModule],
    /// Programs busybox lacks (mkfs.ext4, e2fsck) and their libraries.
    pub userland: &'a Userland,
}

/// The `/init` script. PID 1 is a shell: it cannot be killed by signals it does not
/// trap, so `poweroff`/`reboot` without `-f` (which signal PID 1) are trapped here.
pub fn init_script(kernel_release: &str, modules: &[LoadableModule]) -> String {
    let mut s = String::from(
        r#"#!/bin/sh
# Bulkhead guest init. PATH lists only the busybox applets.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /tmp /run
mount -t devpts devpts /dev/pts
/bin/busybox --install -s /bin

# Idle power: a steady cursor (a blinking one wakes the VM five times a second) and
# no proactive memory compaction (kcompactd would wake twice a second to check).
echo 0 > /sys/class/graphics/fbcon/cursor_blink 2>/dev/null
echo 0 > /proc/sys/vm/compaction_proactiveness 2>/dev/null

# Say it on the serial console (the kernel's /dev/console: the last console= on the
# command line) and on the screen's first virtual terminal.
say() {
	echo "$*" > /dev/console
	[ -c /dev/tty1 ] && echo "$*" > /dev/tty1 2>/dev/null
}

# A module's parameters from the kernel command line (`name.param=value`), as
# modprobe applies them.
params() {
	for w in $(cat /proc/cmdline); do
		case "$w" in "$1".*=*) echo "${w#"$1".}" ;; esac
	done
}

"#,
    );
    for m in modules {
        s.push_str(&format!(
            "insmod /{path} $(params {name}) || say \"bulkhead: failed to load {name}\"\n",
            path = m.path,
            name = m.name
        ));
    }
    s.push_str(&format!(
        r#"
[ "$(uname -r)" = "{kernel_release}" ] || say "bulkhead: initramfs was built for {kernel_release}"
say "bulkhead: Linux $(uname -r) on $(uname -m)"
# The VM's virtual disk, if it has one: formatted on first use, checked, mounted on
# /home; the script prints one BULKHEAD-DISK line.
disk=$(/{DISK_SCRIPT_PATH})
[ -n "$disk" ] && say "$disk"
# A desktop on a network link (`bulkhead.dhcp=eth0` on the command line) asks for its
# address by DHCP, keeps asking every few seconds until it has one, and renews it.
for w in $(cat /proc/cmdline); do
	case "$w" in bulkhead.dhcp=*) udhcpc -i "${{w#bulkhead.dhcp=}}" -f -T 2 -A 3 >/dev/null 2>&1 & ;; esac
done
# The uptime lets benchmarks compare boots in guest time.
read uptime idle < /proc/uptime
say "{READY_MARKER} uptime=$uptime"

# A shell on each terminal, restarted when it exits. setsid makes the inner sh a session
# leader, so opening the tty makes it the controlling terminal: job control works.
respawn() {{
	while :; do
		# No UART (or no VT) behind the node: stop instead of retrying forever.
		{{ : <"$1"; }} 2>/dev/null || return
		setsid sh -c "exec sh -l <$1 >$1 2>&1"
		sleep 1
	done
}}
respawn /dev/ttyS0 &
respawn /dev/tty1 &

# The disk is unmounted (or at least made read-only) first, so it needs no journal
# replay at the next boot.
release_disk() {{
	sync
	umount /home 2>/dev/null || mount -o remount,ro /home 2>/dev/null
}}
trap 'release_disk; poweroff -f' USR1 USR2
trap 'release_disk; reboot -f' TERM INT
while :; do
	sleep 3600 &
	wait $!
done
"#
    ));
    s
}

/// Builds the uncompressed newc archive.
pub fn archive(spec: &InitramfsSpec<'_>) -> Vec<u8> {
    let mut w = cpio::Writer::new();
    for dir in ["bin", "sbin", "dev", "proc", "sys", "tmp", "run", "etc", "etc/udhcpc", "root", "home"] {
        w.dir(dir);
    }
    // The kernel opens /dev/console for init before /init can mount devtmpfs.
    w.char_dev("dev/console", 0o600, 5, 1);
    w.file("bin/busybox", 0o755, spec.busybox);
    for applet in APPLETS {
        w.symlink(&format!("bin/{applet}"), "busybox");
    }
    w.file("etc/profile", 0o644, b"export PS1='bulkhead-guest:\\w\\$ '\n");
    w.file(UDHCPC_SCRIPT_PATH, 0o755, UDHCPC_SCRIPT.as_bytes());
    // df, mount and e2fsck look for the mount table here.
    w.symlink("etc/mtab", "/proc/mounts");
    w.file(DISK_SCRIPT_PATH, 0o755, DISK_SCRIPT.as_bytes());
    for (path, mode, data) in &spec.userland.files {
        w.file(path, *mode, data);
    }
    for (link, target) in &spec.userland.symlinks {
        w.symlink(link, target);
    }
    w.file("init", 0o755, init_script(spec.kernel_release, spec.modules).as_bytes());
    for m in spec.modules {
        w.file(&m.path, 0o644, &m.data);
    }
    w.finish()
}

/// The archive, gzip-compressed as the kernel expects by default.
pub fn build(spec: &InitramfsSpec<'_>) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&archive(spec)).and_then(|()| gz.finish()).expect("writing to memory cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn archive_has_init_busybox_applets_and_modules() {
        let module = LoadableModule {
            name: "virtio_net".into(),
            path: "lib/modules/6.1.0-56-cloud-amd64/kernel/drivers/net/virtio_net.ko".into(),
            data: b"\x7fELF".to_vec(),
        };
        let spec = InitramfsSpec {
            busybox: b"\x7fELFbusybox",
            kernel_release: "6.1.0-56-cloud-amd64",
            modules: std::slice::from_ref(&module),
            userland: &Userland {
                files: vec![("sbin/mke2fs".into(), 0o755, b"\x7fELFmke2fs".to_vec())],
                symlinks: vec![("sbin/mkfs.ext4".into(), "mke2fs".into())],
                versions: vec![],
            },
        };
        let gz = build(&spec);
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice()).read_to_end(&mut raw).unwrap();
        let entries = cpio::parse(&raw).unwrap();
        let get = |n: &str| entries.iter().find(|e| e.name == n).unwrap_or_else(|| panic!("{n}"));
        assert_eq!(get("init").mode, cpio::S_IFREG | 0o755);
        let init = String::from_utf8(get("init").data.clone()).unwrap();
        assert!(init.starts_with("#!/bin/sh\n"));
        assert!(init.contains(READY_MARKER));
        assert!(init.contains(&format!("insmod /{} $(params {})", module.path, module.name)));
        assert_eq!(get("bin/sh").data, b"busybox");
        assert_eq!(get("dev/console").rdev, (5, 1));
        assert_eq!(get(&module.path).data, module.data);
        let script = get(UDHCPC_SCRIPT_PATH);
        assert_eq!(script.mode, cpio::S_IFREG | 0o755);
        assert_eq!(script.data, UDHCPC_SCRIPT.as_bytes());
        assert_eq!(get(DISK_SCRIPT_PATH).data, DISK_SCRIPT.as_bytes());
        assert!(init.contains(&format!("disk=$(/{DISK_SCRIPT_PATH})")));
        assert!(init.find(DISK_SCRIPT_PATH).unwrap() < init.find(READY_MARKER).unwrap(), "the disk comes before ready");
        assert_eq!(get("sbin/mke2fs").data, b"\x7fELFmke2fs");
        assert_eq!(get("sbin/mkfs.ext4").data, b"mke2fs");
        assert_eq!(get("etc/mtab").data, b"/proc/mounts");
        // Every directory precedes its contents.
        for (i, e) in entries.iter().enumerate() {
            if let Some((parent, _)) = e.name.rsplit_once('/') {
                assert!(entries[..i].iter().any(|d| d.name == parent), "{}", e.name);
            }
        }
    }

    /// Runs the udhcpc script with the host's `/bin/sh` and a fake `ip` that records its
    /// arguments, as udhcpc would after a lease from QEMU's user network.
    #[test]
    fn udhcpc_script_configures_the_interface_route_and_resolver() {
        use std::process::Command;
        let dir = std::env::temp_dir().join(format!("bulkhead-udhcpc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("ip.log");
        let fake_ip = dir.join("ip");
        // `route del` fails once no default route is left, like the real command.
        std::fs::write(
            &fake_ip,
            format!(
                "#!/bin/sh\necho \"$*\" >> {}\ncase \"$*\" in *'route del'*) exit 1;; esac\nexit 0\n",
                log.display()
            ),
        )
        .unwrap();
        Command::new("chmod").arg("+x").arg(&fake_ip).status().unwrap();
        let script = dir.join("default.script");
        std::fs::write(&script, UDHCPC_SCRIPT).unwrap();
        let resolv = dir.join("resolv.conf");
        let run = |event: &str| {
            Command::new("/bin/sh")
                .arg(&script)
                .arg(event)
                .env("PATH", format!("{}:/usr/bin:/bin", dir.display()))
                .env("RESOLV_CONF", &resolv)
                .env("interface", "eth0")
                .env("ip", "10.0.2.15")
                .env("mask", "24")
                .env("router", "10.0.2.2")
                .env("dns", "10.0.2.3 10.0.2.4")
                .output()
                .unwrap()
        };
        let out = run("bound");
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("eth0 is 10.0.2.15/24 via 10.0.2.2"));
        let calls = std::fs::read_to_string(&log).unwrap();
        let calls: Vec<&str> = calls.lines().collect();
        assert_eq!(
            calls,
            [
                "-4 addr flush dev eth0",
                "-4 addr add 10.0.2.15/24 dev eth0",
                "link set dev eth0 up",
                "-4 route del default dev eth0",
                "-4 route add default via 10.0.2.2 dev eth0",
            ]
        );
        assert_eq!(std::fs::read_to_string(&resolv).unwrap(), "nameserver 10.0.2.3\nnameserver 10.0.2.4\n");
        std::fs::remove_file(&log).unwrap();
        assert!(run("deconfig").status.success());
        let calls = std::fs::read_to_string(&log).unwrap();
        assert_eq!(calls, "-4 addr flush dev eth0\nlink set dev eth0 up\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
