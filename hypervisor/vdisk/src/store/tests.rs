use super::*;
use crate::device::RamDevice;
use crate::volume::CHUNK_SECTORS;
use alloc::string::{String, ToString};

const PASS: &[u8] = b"correct horse battery staple";
const KDF: KdfParams = KdfParams::INSECURE_TEST;

/// A deterministic generator (xorshift64*): tests need repeatable "random" keys.
pub(super) fn rng(seed: u64) -> impl FnMut(&mut [u8]) {
    let mut s = seed | 1;
    move |buf: &mut [u8]| {
        for b in buf.iter_mut() {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            *b = (s.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8;
        }
    }
}

pub(super) fn formatted(block_size: u32, mib: u64) -> (RamDevice, Store) {
    let mut dev = RamDevice::new(block_size, mib * MIB / u64::from(block_size));
    let store = Store::format(&mut dev, PASS, KDF, &mut rng(1)).unwrap();
    (dev, store)
}

fn locked(dev: &mut RamDevice) -> LockedStore {
    match Store::open(dev).unwrap() {
        Opened::Locked(l) => l,
        Opened::Blank => panic!("blank"),
    }
}

fn unlock(dev: &mut RamDevice, pass: &[u8]) -> Store {
    locked(dev).unlock(pass).unwrap()
}

pub(super) fn spec(name: &str, mib: u64, mode: Mode) -> VolumeSpec<'_> {
    VolumeSpec { name, size_bytes: mib * MIB, mode, cipher: Cipher::Aes256Xts }
}

type Listing = Vec<(String, u64, Cipher, bool)>;

fn listing(store: &Store) -> Listing {
    store.volumes().map(|v| (v.name.to_string(), v.size_bytes, v.cipher, v.overlay)).collect()
}

pub(super) fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8).collect()
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn format_open_unlock_and_a_wrong_passphrase_can_be_retried() {
    let mut dev = RamDevice::new(512, 8 * MIB / 512);
    assert!(matches!(Store::open(&mut dev).unwrap(), Opened::Blank));
    Store::format(&mut dev, PASS, KDF, &mut rng(1)).unwrap();
    assert_eq!(Store::format(&mut dev, PASS, KDF, &mut rng(2)).unwrap_err(), StoreError::NotBlank);
    let mut dev = dev.after_power_cut();
    let l = locked(&mut dev);
    assert_eq!(l.kdf_params(), KDF);
    let refused = l.unlock(b"correct horse battery stapler").unwrap_err();
    assert_eq!(refused.error, StoreError::WrongPassphrase);
    let store = refused.store.unlock(PASS).unwrap();
    assert_eq!(listing(&store), vec![]);
    assert_eq!(store.free_mib(), 7);
}

#[test]
fn format_refuses_bad_parameters_and_small_partitions() {
    let mut dev = RamDevice::new(512, 8 * MIB / 512);
    let huge = KdfParams { memory_kib: table::MAX_KDF_MEMORY_KIB * 2, ..KDF };
    assert_eq!(Store::format(&mut dev, PASS, huge, &mut rng(1)).unwrap_err(), StoreError::KdfParams);
    let mut stuck = |b: &mut [u8]| b.fill(0);
    assert_eq!(Store::format(&mut dev, PASS, KDF, &mut stuck).unwrap_err(), StoreError::Rng);
    let mut tiny = RamDevice::new(512, MIB / 512);
    assert_eq!(Store::format(&mut tiny, PASS, KDF, &mut rng(1)).unwrap_err(), StoreError::Geometry);
    let mut odd = RamDevice::new(520, 8 * MIB / 520);
    assert_eq!(Store::open(&mut odd).unwrap_err(), StoreError::Geometry);
}

#[test]
fn change_passphrase_keeps_volumes_and_needs_the_old_one() {
    let (mut dev, mut store) = formatted(512, 8);
    let mut v = store.volume(&mut dev, &spec("corp", 2, Mode::Persistent), &mut rng(2)).unwrap();
    let data = pattern(1, 8192);
    v.write(&mut dev, 100, &data).unwrap();
    v.flush(&mut dev).unwrap();
    let r = store.change_passphrase(&mut dev, b"not it", b"new secret", KDF, &mut rng(3));
    assert_eq!(r, Err(StoreError::WrongPassphrase));
    let more = KdfParams { iterations: 2, ..KDF };
    store.change_passphrase(&mut dev, PASS, b"new secret", more, &mut rng(3)).unwrap();

    let mut dev = dev.after_power_cut();
    let l = locked(&mut dev);
    assert_eq!(l.kdf_params(), more);
    let refused = l.unlock(PASS).unwrap_err();
    assert_eq!(refused.error, StoreError::WrongPassphrase);
    let mut store = refused.store.unlock(b"new secret").unwrap();
    let mut v = store.volume(&mut dev, &spec("corp", 2, Mode::Persistent), &mut rng(4)).unwrap();
    let mut back = vec![0u8; 8192];
    v.read(&mut dev, 100, &mut back).unwrap();
    assert_eq!(back, data);
}

#[test]
fn volumes_persist_across_reopen_and_do_not_overlap() {
    let (mut dev, mut store) = formatted(512, 16);
    let mut a = store.volume(&mut dev, &spec("corporate", 4, Mode::Persistent), &mut rng(2)).unwrap();
    let mut b = store.volume(&mut dev, &spec("personal", 3, Mode::Persistent), &mut rng(3)).unwrap();
    assert_eq!(a.capacity_sectors(), 4 * MIB / 512);
    let (da, db) = (pattern(1, 4096), pattern(2, 4096));
    a.write(&mut dev, 0, &da).unwrap();
    a.write(&mut dev, a.capacity_sectors() - 8, &da).unwrap();
    b.write(&mut dev, 0, &db).unwrap();
    a.flush(&mut dev).unwrap();
    drop((a, b, store));

    let mut dev = dev.after_power_cut();
    let mut store = unlock(&mut dev, PASS);
    assert_eq!(
        listing(&store),
        vec![
            ("corporate".into(), 4 * MIB, Cipher::Aes256Xts, false),
            ("personal".into(), 3 * MIB, Cipher::Aes256Xts, false)
        ]
    );
    assert_eq!(store.free_mib(), 8);
    let mut a = store.volume(&mut dev, &spec("corporate", 4, Mode::Persistent), &mut rng(4)).unwrap();
    let mut b = store.volume(&mut dev, &spec("personal", 3, Mode::Persistent), &mut rng(5)).unwrap();
    let mut buf = vec![0u8; 4096];
    a.read(&mut dev, 0, &mut buf).unwrap();
    assert_eq!(buf, da);
    a.read(&mut dev, a.capacity_sectors() - 8, &mut buf).unwrap();
    assert_eq!(buf, da);
    b.read(&mut dev, 0, &mut buf).unwrap();
    assert_eq!(buf, db);
    assert_eq!(a.read(&mut dev, a.capacity_sectors() - 7, &mut buf), Err(VolumeError::OutOfRange));
    assert_eq!(a.read(&mut dev, 0, &mut buf[..100]), Err(VolumeError::Misaligned));
}

#[test]
fn a_configured_size_or_cipher_change_is_refused_and_nothing_changes() {
    let (mut dev, mut store) = formatted(512, 8);
    store.volume(&mut dev, &spec("corp", 2, Mode::Persistent), &mut rng(2)).unwrap();
    let before = (store.header.sequence, listing(&store));
    let r = store.volume(&mut dev, &spec("corp", 3, Mode::Persistent), &mut rng(3));
    assert_eq!(r.unwrap_err(), StoreError::SizeMismatch { on_disk_mib: 2, configured_mib: 3 });
    let clear = VolumeSpec { cipher: Cipher::None, ..spec("corp", 2, Mode::Persistent) };
    let r = store.volume(&mut dev, &clear, &mut rng(3));
    assert_eq!(r.unwrap_err(), StoreError::CipherMismatch { on_disk: Cipher::Aes256Xts, configured: Cipher::None });
    assert_eq!((store.header.sequence, listing(&store)), before);
}

#[test]
fn requests_out_of_bounds_are_refused() {
    let (mut dev, mut store) = formatted(512, 8);
    let bad = |r: Result<Volume, StoreError>| r.unwrap_err();
    assert_eq!(
        bad(store.volume(&mut dev, &spec("two words", 1, Mode::Persistent), &mut rng(2))),
        StoreError::InvalidName
    );
    let half = VolumeSpec { size_bytes: MIB / 2, ..spec("x", 1, Mode::Persistent) };
    assert_eq!(bad(store.volume(&mut dev, &half, &mut rng(2))), StoreError::InvalidSize);
    assert_eq!(bad(store.volume(&mut dev, &spec("x", 0, Mode::Persistent), &mut rng(2))), StoreError::InvalidSize);
    assert_eq!(bad(store.volume(&mut dev, &spec("x", 8, Mode::Persistent), &mut rng(2))), StoreError::NoSpace);
    assert_eq!(bad(store.volume(&mut dev, &spec("x", 4, Mode::ResetOnBoot), &mut rng(2))), StoreError::NoSpace);
    assert_eq!(bad(store.volume(&mut dev, &spec("x", 1, Mode::ReadOnly), &mut rng(2))), StoreError::NoSuchVolume);
    assert_eq!(listing(&store), vec![], "failed requests allocate nothing");
    let v = store.volume(&mut dev, &spec("x", 7, Mode::Persistent), &mut rng(2)).unwrap();
    let mut other = RamDevice::new(4096, 1024);
    let mut v = v;
    assert_eq!(v.write(&mut other, 0, &[0u8; 512]), Err(VolumeError::WrongDevice));
}

#[test]
fn at_most_64_volumes() {
    let (mut dev, mut store) = formatted(4096, 80);
    for i in 0..MAX_VOLUMES {
        let name = alloc::format!("vm{i}");
        store.volume(&mut dev, &spec(&name, 1, Mode::Persistent), &mut rng(i as u64)).unwrap();
    }
    let r = store.volume(&mut dev, &spec("one-more", 1, Mode::Persistent), &mut rng(99));
    assert_eq!(r.unwrap_err(), StoreError::TooManyVolumes);
    let mut dev = dev.after_power_cut();
    assert_eq!(unlock(&mut dev, PASS).volumes().count(), MAX_VOLUMES);
}

#[test]
fn removing_a_volume_frees_its_extent_for_the_next() {
    let (mut dev, mut store) = formatted(512, 8);
    store.volume(&mut dev, &spec("a", 3, Mode::Persistent), &mut rng(2)).unwrap();
    store.volume(&mut dev, &spec("b", 4, Mode::Persistent), &mut rng(3)).unwrap();
    assert_eq!(store.remove(&mut dev, "c"), Err(StoreError::NoSuchVolume));
    store.remove(&mut dev, "a").unwrap();
    store.volume(&mut dev, &spec("c", 2, Mode::Persistent), &mut rng(4)).unwrap();
    let mut dev = dev.after_power_cut();
    let store = unlock(&mut dev, PASS);
    let starts: Vec<(String, u64)> = store.entries.iter().map(|e| (e.name.as_str().into(), e.base_mib)).collect();
    assert_eq!(starts, vec![("b".into(), 4), ("c".into(), 1)]);
}

/// The written data, the volume names and the passphrase never appear on the
/// device in clear; a clear volume shows that the search would find them.
#[test]
fn no_plaintext_on_the_device() {
    let (mut dev, mut store) = formatted(512, 24);
    let secret: Vec<u8> = b"TOP-SECRET-PAYROLL-ROW-0001|".iter().copied().cycle().take(64 * 1024).collect();
    let mut v = store.volume(&mut dev, &spec("payroll-desktop", 4, Mode::Persistent), &mut rng(2)).unwrap();
    v.write(&mut dev, 40, &secret).unwrap();
    let mut r = store.volume(&mut dev, &spec("kiosk-desktop", 4, Mode::ResetOnBoot), &mut rng(3)).unwrap();
    r.write(&mut dev, 3, &secret[..3 * 512]).unwrap();
    r.write(&mut dev, 64, &secret).unwrap();
    v.flush(&mut dev).unwrap();
    let medium = dev.contents();
    for needle in [&b"TOP-SECRET"[..], b"payroll-desktop", b"kiosk", PASS] {
        assert!(!find(&medium, needle), "{:?} found on the device", core::str::from_utf8(needle));
    }
    let clear = VolumeSpec { cipher: Cipher::None, ..spec("bench", 4, Mode::Persistent) };
    let mut c = store.volume(&mut dev, &clear, &mut rng(4)).unwrap();
    c.write(&mut dev, 0, &secret[..4096]).unwrap();
    assert!(find(&dev.contents(), b"TOP-SECRET"), "the search finds data written in clear");
}

/// The sector format is plain AES-256-XTS with the volume's key and the 512-byte
/// sector number within the volume as the tweak, checked against diskcrypt directly.
#[test]
fn sectors_are_xts_with_the_sector_number_as_tweak() {
    for bs in [512, 4096] {
        let (mut dev, mut store) = formatted(bs, 8);
        store.volume(&mut dev, &spec("filler", 1, Mode::Persistent), &mut rng(2)).unwrap();
        let mut v = store.volume(&mut dev, &spec("corp", 2, Mode::Persistent), &mut rng(3)).unwrap();
        let data = pattern(9, 3 * 512);
        v.write(&mut dev, 5, &data).unwrap();
        let e = store.entries.iter().find(|e| e.name.as_str() == "corp").unwrap();
        assert_eq!(e.base_mib, 2);
        let key = store.master.unwrap_volume_key(e.wrapped_key.as_ref().unwrap()).unwrap();
        let xts = Xts::new(&key).unwrap();
        let medium = dev.contents();
        for s in 0..3u64 {
            let at = (e.base_mib * MIB + (5 + s) * 512) as usize;
            let mut expect = data[(s * 512) as usize..((s + 1) * 512) as usize].to_vec();
            xts.encrypt_sector(u128::from(5 + s), &mut expect).unwrap();
            assert_eq!(&medium[at..at + 512], &expect[..], "block size {bs}, sector {}", 5 + s);
            let mut wrong = data[(s * 512) as usize..((s + 1) * 512) as usize].to_vec();
            xts.encrypt_sector(u128::from(6 + s), &mut wrong).unwrap();
            assert_ne!(&medium[at..at + 512], &wrong[..]);
        }
        assert!(v.base_xts().is_some());
    }
}

#[test]
fn read_only_refuses_writes_but_accepts_flush() {
    let (mut dev, mut store) = formatted(512, 8);
    let mut v = store.volume(&mut dev, &spec("ro", 1, Mode::Persistent), &mut rng(2)).unwrap();
    v.write(&mut dev, 0, &pattern(1, 512)).unwrap();
    v.flush(&mut dev).unwrap();
    let mut v = store.volume(&mut dev, &spec("ro", 1, Mode::ReadOnly), &mut rng(3)).unwrap();
    assert!(v.read_only());
    assert_eq!(v.write(&mut dev, 0, &[0u8; 512]), Err(VolumeError::ReadOnly));
    assert_eq!(v.flush(&mut dev), Ok(()));
    let mut buf = [0u8; 512];
    v.read(&mut dev, 0, &mut buf).unwrap();
    assert_eq!(buf[..], pattern(1, 512)[..]);
}

/// A reset-on-boot volume against a model: random reads and writes of every
/// alignment, a reset, and a reopen; the base extent never changes.
#[test]
fn reset_on_boot_matches_a_model_and_leaves_the_base_alone() {
    for bs in [512, 4096] {
        let (mut dev, mut store) = formatted(bs, 8);
        let mut p = store.volume(&mut dev, &spec("kiosk", 1, Mode::Persistent), &mut rng(2)).unwrap();
        let sectors = p.capacity_sectors();
        let base = pattern(5, (sectors * 512) as usize);
        p.write(&mut dev, 0, &base).unwrap();
        p.flush(&mut dev).unwrap();
        drop(p);
        let base_range = (MIB as usize)..(2 * MIB) as usize;
        let base_bytes = dev.contents()[base_range.clone()].to_vec();

        let mut v = store.volume(&mut dev, &spec("kiosk", 1, Mode::ResetOnBoot), &mut rng(3)).unwrap();
        assert!(store.volumes().next().unwrap().overlay);
        let mut model = base.clone();
        let mut r = rng(bs as u64);
        let mut num = |max: u64| {
            let mut b = [0u8; 8];
            r(&mut b);
            u64::from_le_bytes(b) % max
        };
        for round in 0..300u64 {
            let n = 1 + num(3 * CHUNK_SECTORS);
            let at = num(sectors - n + 1);
            let len = (n * 512) as usize;
            let off = (at * 512) as usize;
            if num(2) == 0 {
                let data = pattern(round as u8, len);
                v.write(&mut dev, at, &data).unwrap();
                model[off..off + len].copy_from_slice(&data);
            } else {
                let mut buf = vec![0u8; len];
                v.read(&mut dev, at, &mut buf).unwrap();
                assert_eq!(buf, model[off..off + len], "bs {bs} round {round} read {n} at {at}");
            }
        }
        let mut all = vec![0u8; base.len()];
        v.read(&mut dev, 0, &mut all).unwrap();
        assert_eq!(all, model);
        assert_ne!(model, base);
        assert_eq!(dev.contents()[base_range.clone()], base_bytes[..], "the base was written");
        v.flush(&mut dev).unwrap();

        v.reset(&mut rng(4)).unwrap();
        v.read(&mut dev, 0, &mut all).unwrap();
        assert_eq!(all, base, "reset shows the base again");

        v.write(&mut dev, 1, &[0xee; 512]).unwrap();
        drop(v);
        let mut dev = dev.after_power_cut();
        let mut store = unlock(&mut dev, PASS);
        let mut v = store.volume(&mut dev, &spec("kiosk", 1, Mode::ResetOnBoot), &mut rng(5)).unwrap();
        v.read(&mut dev, 0, &mut all).unwrap();
        assert_eq!(all, base, "a new boot shows the base");
        // Back to persistent: the overlay extent is freed.
        store.volume(&mut dev, &spec("kiosk", 1, Mode::Persistent), &mut rng(6)).unwrap();
        assert!(!store.volumes().next().unwrap().overlay);
        assert_eq!(store.free_mib(), 6);
    }
}

/// A persistent volume on a device with a write cache: what was flushed survives a
/// power cut, what was not is lost, as on a real disk.
#[test]
fn guest_flush_makes_writes_survive_a_power_cut() {
    for bs in [512, 4096] {
        let (mut dev, mut store) = formatted(bs, 8);
        let mut v = store.volume(&mut dev, &spec("corp", 1, Mode::Persistent), &mut rng(2)).unwrap();
        let (old, new) = (pattern(1, 1024), pattern(2, 1024));
        v.write(&mut dev, 7, &old).unwrap();
        v.flush(&mut dev).unwrap();
        v.write(&mut dev, 7, &new).unwrap();
        let mut buf = vec![0u8; 1024];
        v.read(&mut dev, 7, &mut buf).unwrap();
        assert_eq!(buf, new);
        let mut cut = dev.after_power_cut();
        v.read(&mut cut, 7, &mut buf).unwrap();
        assert_eq!(buf, old, "unflushed write lost");
        v.flush(&mut dev).unwrap();
        let mut cut = dev.after_power_cut();
        v.read(&mut cut, 7, &mut buf).unwrap();
        assert_eq!(buf, new, "flushed write kept");
    }
}

/// Runs `op` on a copy of `dev` with the power cut after every possible number of
/// writes, and checks that the surviving medium unlocks (with one of `passphrases`)
/// to the old or the new listing, and to the new one once `op` has returned Ok.
fn cut_everywhere(
    dev: &RamDevice,
    passphrases: &[&[u8]],
    op: &dyn Fn(&mut Store, &mut RamDevice) -> Result<(), StoreError>,
    check: &dyn Fn(&mut Store, &mut RamDevice),
) -> u64 {
    let mut base = dev.clone();
    let old = listing(&unlock(&mut base, PASS));
    let mut new = None;
    for n in 0..1000 {
        let mut d = dev.clone();
        let mut store = unlock(&mut d, PASS);
        d.cut_power_after_writes(n);
        let ok = match op(&mut store, &mut d) {
            Ok(()) => true,
            Err(StoreError::Device(_)) => false,
            Err(e) => panic!("cut after {n} writes: {e}"),
        };
        let mut survived = d.after_power_cut();
        let mut l = locked(&mut survived);
        let mut opened = None;
        for p in passphrases {
            match l.unlock(p) {
                Ok(s) => {
                    opened = Some(s);
                    break;
                }
                Err(r) => l = r.store,
            }
        }
        let mut store = opened.unwrap_or_else(|| panic!("cut after {n} writes: no passphrase unlocks"));
        let got = listing(&store);
        if ok {
            let want = new.get_or_insert_with(|| got.clone());
            assert_eq!(&got, want, "cut after {n} writes, operation completed");
            assert_ne!(got, old, "the operation changed nothing");
            check(&mut store, &mut survived);
            return n;
        }
        assert!(got == old || new.as_ref().is_none_or(|w| *w == got), "cut after {n}: {got:?}");
        if got != old {
            new = Some(got);
        }
        check(&mut store, &mut survived);
    }
    panic!("the operation never completed")
}

fn with_corp() -> RamDevice {
    let (mut dev, mut store) = formatted(512, 16);
    let mut v = store.volume(&mut dev, &spec("corp", 2, Mode::Persistent), &mut rng(2)).unwrap();
    v.write(&mut dev, 0, &pattern(7, 4096)).unwrap();
    v.flush(&mut dev).unwrap();
    dev.after_power_cut()
}

/// The corp volume's data is intact, whatever else happened.
fn corp_intact(store: &mut Store, dev: &mut RamDevice) {
    let mut v = store.volume(dev, &spec("corp", 2, Mode::Persistent), &mut rng(9)).unwrap();
    let mut buf = vec![0u8; 4096];
    v.read(dev, 0, &mut buf).unwrap();
    assert_eq!(buf, pattern(7, 4096));
}

#[test]
fn a_power_cut_during_allocation_leaves_the_old_or_the_new_table() {
    let dev = with_corp();
    let writes = cut_everywhere(
        &dev,
        &[PASS],
        &|s, d| s.volume(d, &spec("personal", 3, Mode::ResetOnBoot), &mut rng(3)).map(drop),
        &corp_intact,
    );
    assert!(writes >= 2, "a table update takes several block writes ({writes})");
}

#[test]
fn a_power_cut_during_a_passphrase_change_leaves_one_passphrase_working() {
    let dev = with_corp();
    let change = |s: &mut Store, d: &mut RamDevice| {
        s.change_passphrase(d, PASS, b"brand new", KDF, &mut rng(3))?;
        // Also a table change, so the listing tells the old and the new state apart.
        s.volume(d, &spec("after", 1, Mode::Persistent), &mut rng(4)).map(drop)
    };
    cut_everywhere(&dev, &[PASS, b"brand new"], &change, &corp_intact);
}

#[test]
fn a_power_cut_during_removal_or_format_leaves_a_usable_state() {
    let dev = with_corp();
    cut_everywhere(&dev, &[PASS], &|s, d| s.remove(d, "corp"), &|_, _| {});
    for n in 0.. {
        let mut d = RamDevice::new(512, 8 * MIB / 512);
        d.cut_power_after_writes(n);
        let ok = Store::format(&mut d, PASS, KDF, &mut rng(1)).is_ok();
        let mut survived = d.after_power_cut();
        match Store::open(&mut survived).unwrap() {
            Opened::Blank => assert!(!ok, "a completed format was lost"),
            Opened::Locked(l) => assert!(l.unlock(PASS).is_ok()),
        }
        if ok {
            break;
        }
    }
}

/// Two committed versions; the newer slot damaged: the older one is used.
#[test]
fn a_damaged_slot_falls_back_to_the_other() {
    let (mut dev, mut store) = formatted(512, 8);
    store.volume(&mut dev, &spec("first", 1, Mode::Persistent), &mut rng(2)).unwrap(); // slot B, seq 2
    store.volume(&mut dev, &spec("second", 1, Mode::Persistent), &mut rng(3)).unwrap(); // slot A, seq 3
    assert_eq!(store.active, 0);
    let good = dev.after_power_cut();

    let mut d = good.clone();
    let mut block = [0u8; 512];
    d.read(0, &mut block).unwrap();
    block[200] ^= 1;
    d.write(0, &block).unwrap();
    let s = unlock(&mut d, PASS);
    assert_eq!(s.header.sequence, 2);
    assert_eq!(listing(&s).len(), 1);

    // Both damaged: an error, never a blank partition to format over.
    let mut b = [0u8; 512];
    d.read((SLOT_SIZE / 512) as u64, &mut b).unwrap();
    b[300] ^= 1;
    d.write((SLOT_SIZE / 512) as u64, &b).unwrap();
    assert_eq!(Store::open(&mut d).unwrap_err(), StoreError::Corrupt(TableError::BadChecksum));
    assert_eq!(Store::format(&mut d, PASS, KDF, &mut rng(1)).unwrap_err(), StoreError::NotBlank);

    // A newer format in either slot: refused, not rolled back to the older slot.
    let mut d = good.clone();
    d.read((SLOT_SIZE / 512) as u64, &mut b).unwrap();
    b[16] = 2;
    d.write((SLOT_SIZE / 512) as u64, &b).unwrap();
    assert_eq!(Store::open(&mut d).unwrap_err(), StoreError::UnsupportedVersion(2));

    // Erase makes it blank.
    let mut d = good;
    Store::erase(&mut d).unwrap();
    assert!(matches!(Store::open(&mut d).unwrap(), Opened::Blank));
}

/// Someone who can write the disk but lacks the passphrase changes the encrypted
/// entries and fixes the checksum: the MAC catches it.
#[test]
fn an_altered_table_with_a_fixed_checksum_is_refused() {
    let (mut dev, mut store) = formatted(512, 8);
    store.volume(&mut dev, &spec("corp", 1, Mode::Persistent), &mut rng(2)).unwrap();
    let slot = store.active;
    let mut raw = vec![0u8; SLOT_SIZE];
    dev.read((slot * SLOT_SIZE / 512) as u64, &mut raw).unwrap();
    let len = table::HEADER_LEN + ENTRY_LEN + table::TRAILER_LEN;
    for at in [24, table::HEADER_LEN + 10, len - 40] {
        let mut bad = raw[..len - 32].to_vec();
        bad[at] ^= 0x80;
        table::seal_record(&mut bad);
        bad.resize(SLOT_SIZE, 0);
        let mut d = dev.clone();
        d.write((slot * SLOT_SIZE / 512) as u64, &bad).unwrap();
        let refused = locked(&mut d).unlock(PASS).unwrap_err();
        assert_eq!(refused.error, StoreError::Tampered, "byte {at}");
    }
}

/// Records the writes of an operation, passing them to a RAM device.
struct Recorder {
    inner: RamDevice,
    writes: Vec<(u64, Vec<u8>)>,
}

impl BlockDevice for Recorder {
    fn block_size(&self) -> u32 {
        self.inner.block_size()
    }
    fn blocks(&self) -> u64 {
        self.inner.blocks()
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        self.inner.read(lba, buf)
    }
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceError> {
        self.writes.push((lba, buf.to_vec()));
        self.inner.write(lba, buf)
    }
    fn flush(&mut self) -> Result<(), DeviceError> {
        self.inner.flush()
    }
}

/// A drive may make any subset of its cached writes durable before the power goes
/// (RamDevice keeps none): every subset of a table update's block writes leaves the
/// old or the new table.
#[test]
fn any_subset_of_a_table_update_reaching_the_medium_is_old_or_new() {
    let (mut dev, mut store) = formatted(512, 16);
    for name in ["a", "b", "c", "d", "e"] {
        store.volume(&mut dev, &spec(name, 1, Mode::Persistent), &mut rng(2)).unwrap();
    }
    let before = dev.after_power_cut();
    let old = listing(&store);
    let mut rec = Recorder { inner: before.clone(), writes: Vec::new() };
    let mut s = unlock(&mut rec.inner, PASS);
    s.volume(&mut rec, &spec("f", 2, Mode::ResetOnBoot), &mut rng(3)).unwrap();
    let new = listing(&s);
    let writes = rec.writes;
    assert_eq!(writes.len(), 3, "the new record spans three 512-byte blocks");
    for subset in 0u32..(1 << writes.len()) {
        let mut d = before.clone();
        for (i, (lba, data)) in writes.iter().enumerate() {
            if subset & (1 << i) != 0 {
                d.write(*lba, data).unwrap();
            }
        }
        d.flush().unwrap();
        let got = listing(&unlock(&mut d, PASS));
        let want = if subset == (1 << writes.len()) - 1 { &new } else { &old };
        assert_eq!(&got, want, "subset {subset:#b}");
    }
}
