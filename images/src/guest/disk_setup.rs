//! The guest's disk setup script (`/sbin/bulkhead-disk`): `/init` runs it before the
//! ready marker. It finds the VM's virtio-blk disk, makes an ext4 filesystem on it the
//! first time, checks it (journal replay) and mounts it on `/home`.

/// Where the script sits in the initramfs.
pub const DISK_SCRIPT_PATH: &str = "sbin/bulkhead-disk";

/// The line the script prints starts with this; tests and benchmarks grep for it.
pub const DISK_MARKER: &str = "BULKHEAD-DISK:";

/// Where the disk is mounted.
pub const DISK_MOUNT: &str = "/home";

/// The script. Paths come from the environment so that the host tests can point it at
/// a file and a fake `/sys` directory; `/init` runs it with the defaults.
///
/// A disk is only formatted when it is writable and its first 64 KiB are all zero (a
/// new disk): a disk that holds anything else without an ext2/3/4 superblock is left
/// alone and reported, so that data is never formatted over.
pub const DISK_SCRIPT: &str = r#"#!/bin/sh
# Bulkhead: the VM's virtual disk (virtio-blk, /dev/vda). Prints one line:
#   BULKHEAD-DISK: /home ext4 new|existing|read-only <N>MiB took=<seconds>s
#   BULKHEAD-DISK: error <why>
# and nothing when the VM has no disk. What the tools say goes to $log.
dev=${BULKHEAD_DISK_DEV:-/dev/vda}
sys=${BULKHEAD_DISK_SYS:-/sys/block/vda}
mnt=${BULKHEAD_DISK_MNT:-/home}
log=${BULKHEAD_DISK_LOG:-/run/bulkhead-disk.log}
[ -d "$sys" ] || exit 0
read start _ < /proc/uptime
fail() {
	echo "BULKHEAD-DISK: error $*"
	exit 1
}
last() {
	tail -n 1 "$log" 2>/dev/null
}
# devtmpfs adds the node when the driver registers the disk: wait up to 2 s for it.
n=0
while [ ! -e "$dev" ] && [ $n -lt 20 ]; do
	sleep 0.1
	n=$((n + 1))
done
[ -e "$dev" ] || fail "$dev does not exist"
mib=$(($(cat "$sys/size") / 2048))
ro=$(cat "$sys/ro")
# The ext2/3/4 superblock's magic, 0xEF53 little-endian, is at byte 1080.
magic=$(dd if="$dev" bs=2 skip=540 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n')
state=existing
if [ "$magic" != 53ef ]; then
	used=$(($(dd if="$dev" bs=65536 count=1 2>/dev/null | tr -d '\000' | wc -c)))
	[ "$used" -eq 0 ] || fail "$dev holds data but no ext2/3/4 filesystem; left as it is"
	[ "$ro" = 0 ] || fail "$dev is read-only and has no filesystem"
	# The disk reads as zeros: the inode tables and the journal need not be written now.
	mkfs.ext4 -q -L bulkhead -E lazy_itable_init=1,lazy_journal_init=1,nodiscard "$dev" >>"$log" 2>&1 ||
		fail "mkfs.ext4 failed (exit $?): $(last)"
	state=new
elif [ "$ro" = 0 ]; then
	# Replays the journal and fixes what is safe to fix; 4 and above: errors are left.
	e2fsck -p "$dev" >>"$log" 2>&1
	rc=$?
	[ $rc -lt 4 ] || fail "e2fsck -p left errors on $dev (exit $rc): $(last)"
fi
mkdir -p "$mnt"
if [ "$ro" = 1 ]; then
	state=read-only
	# A journal that needs replaying cannot be replayed on a read-only disk: noload
	# mounts without it.
	mount -t ext4 -o ro "$dev" "$mnt" >>"$log" 2>&1 ||
		mount -t ext4 -o ro,noload "$dev" "$mnt" >>"$log" 2>&1 ||
		fail "cannot mount $dev read-only: $(last)"
else
	mount -t ext4 "$dev" "$mnt" >>"$log" 2>&1 || fail "cannot mount $dev on $mnt: $(last)"
fi
read end _ < /proc/uptime
echo "BULKHEAD-DISK: $mnt ext4 $state ${mib}MiB took=$(awk "BEGIN { printf \"%.2f\", $end - $start }")s"
"#;

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use super::*;

    /// A fake disk (a file), a fake `/sys/block/vda`, and fake `mkfs.ext4`, `e2fsck`
    /// and `mount` that record their arguments; `dd`, `od`, `tr`, `wc`, `awk` are the
    /// host's.
    struct Rig {
        dir: PathBuf,
    }

    impl Rig {
        fn new(name: &str, disk: &[u8], read_only: bool, e2fsck_exit: u8) -> Rig {
            let dir = std::env::temp_dir().join(format!("bulkhead-disk-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(dir.join("sys")).unwrap();
            fs::create_dir_all(dir.join("bin")).unwrap();
            fs::write(dir.join("disk"), disk).unwrap();
            fs::write(dir.join("sys/size"), format!("{}\n", disk.len() / 512)).unwrap();
            fs::write(dir.join("sys/ro"), if read_only { "1\n" } else { "0\n" }).unwrap();
            let calls = dir.join("calls");
            for (tool, exit) in [("mkfs.ext4", 0), ("e2fsck", e2fsck_exit), ("mount", 0)] {
                let path = dir.join("bin").join(tool);
                fs::write(&path, format!("#!/bin/sh\necho \"{tool} $*\" >> {}\nexit {exit}\n", calls.display()))
                    .unwrap();
                Command::new("chmod").arg("+x").arg(&path).status().unwrap();
            }
            fs::write(dir.join("script"), DISK_SCRIPT).unwrap();
            Rig { dir }
        }

        fn run(&self) -> (String, Vec<String>) {
            let out = Command::new("/bin/sh")
                .arg(self.dir.join("script"))
                .env("PATH", format!("{}:/usr/bin:/bin", self.dir.join("bin").display()))
                .env("BULKHEAD_DISK_DEV", self.dir.join("disk"))
                .env("BULKHEAD_DISK_SYS", self.dir.join("sys"))
                .env("BULKHEAD_DISK_MNT", self.dir.join("home"))
                .env("BULKHEAD_DISK_LOG", self.dir.join("log"))
                .output()
                .unwrap();
            let calls = fs::read_to_string(self.dir.join("calls")).unwrap_or_default();
            let calls = calls.lines().map(|l| l.replace(&self.path("disk"), "DISK")).collect();
            (String::from_utf8_lossy(&out.stdout).replace(&self.path("home"), "HOME"), calls)
        }

        fn path(&self, name: &str) -> String {
            self.dir.join(name).display().to_string()
        }
    }

    impl Drop for Rig {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    const MIB: usize = 1 << 20;

    fn with_ext_magic(mut disk: Vec<u8>) -> Vec<u8> {
        disk[1080..1082].copy_from_slice(&0xEF53u16.to_le_bytes());
        disk
    }

    fn marker(out: &str) -> &str {
        out.lines().find(|l| l.starts_with(DISK_MARKER)).unwrap_or_else(|| panic!("no marker in {out:?}"))
    }

    #[test]
    fn a_zeroed_disk_is_formatted_and_mounted() {
        let rig = Rig::new("new", &vec![0; 4 * MIB], false, 0);
        let (out, calls) = rig.run();
        let line = marker(&out);
        assert!(line.starts_with("BULKHEAD-DISK: HOME ext4 new 4MiB took="), "{line}");
        assert_eq!(
            calls,
            [
                "mkfs.ext4 -q -L bulkhead -E lazy_itable_init=1,lazy_journal_init=1,nodiscard DISK".to_string(),
                format!("mount -t ext4 DISK {}", rig.path("home")),
            ]
        );
        assert!(Path::new(&rig.path("home")).is_dir());
    }

    #[test]
    fn an_existing_filesystem_is_checked_then_mounted() {
        let rig = Rig::new("existing", &with_ext_magic(vec![0; 2 * MIB]), false, 1);
        let (out, calls) = rig.run();
        assert!(marker(&out).starts_with("BULKHEAD-DISK: HOME ext4 existing 2MiB took="), "{out}");
        assert_eq!(calls, ["e2fsck -p DISK".to_string(), format!("mount -t ext4 DISK {}", rig.path("home"))]);
    }

    #[test]
    fn errors_e2fsck_cannot_fix_leave_the_disk_unmounted() {
        let rig = Rig::new("broken", &with_ext_magic(vec![0; MIB]), false, 4);
        let (out, calls) = rig.run();
        let expected = format!("BULKHEAD-DISK: error e2fsck -p left errors on {} (exit 4): ", rig.path("disk"));
        assert_eq!(marker(&out), expected);
        assert_eq!(calls, ["e2fsck -p DISK"]);
    }

    #[test]
    fn a_read_only_disk_is_mounted_read_only_without_a_check() {
        let rig = Rig::new("ro", &with_ext_magic(vec![0; MIB]), true, 0);
        let (out, calls) = rig.run();
        assert!(marker(&out).starts_with("BULKHEAD-DISK: HOME ext4 read-only 1MiB took="), "{out}");
        assert_eq!(calls, [format!("mount -t ext4 -o ro DISK {}", rig.path("home"))]);
    }

    #[test]
    fn data_without_a_filesystem_is_never_formatted() {
        let mut disk = vec![0; MIB];
        disk[40_000] = 1;
        let rig = Rig::new("data", &disk, false, 0);
        let (out, calls) = rig.run();
        assert!(marker(&out).starts_with("BULKHEAD-DISK: error ") && out.contains("no ext2/3/4 filesystem"), "{out}");
        assert!(calls.is_empty(), "{calls:?}");

        let rig = Rig::new("ro-empty", &vec![0; MIB], true, 0);
        let (out, calls) = rig.run();
        assert!(marker(&out).contains("read-only and has no filesystem"), "{out}");
        assert!(calls.is_empty(), "{calls:?}");
    }

    #[test]
    fn no_disk_says_nothing() {
        let rig = Rig::new("none", &[], false, 0);
        fs::remove_dir_all(rig.dir.join("sys")).unwrap();
        let (out, calls) = rig.run();
        assert_eq!((out.as_str(), calls.len()), ("", 0));
    }
}
