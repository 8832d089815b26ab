//! The whole chain: passphrase -> Argon2id -> KEK -> wrapped per-VM XTS key -> sectors.

use bulkhead_diskcrypt::{KdfParams, WrongPassphrase, Xts, derive_kek, unwrap_key, wrap_key};

const SALT: [u8; 16] = *b"bulkhead-salt-01";

#[test]
fn passphrase_unlocks_the_vm_key_and_a_wrong_one_is_refused() {
    let params = KdfParams::INSECURE_TEST;
    let vm_key: [u8; 64] = core::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
    let wrapped = wrap_key(&vm_key, &derive_kek(b"hunter2 but longer", &SALT, &params).unwrap());

    // Unlock with the right passphrase, encrypt a sector, unlock again later, decrypt it.
    let key = unwrap_key(&wrapped, &derive_kek(b"hunter2 but longer", &SALT, &params).unwrap()).unwrap();
    assert_eq!(*key, vm_key);
    let mut sector = [0x42u8; 4096];
    Xts::new(&key).unwrap().encrypt_sector(9, &mut sector).unwrap();
    assert_ne!(sector, [0x42u8; 4096]);
    let again = unwrap_key(&wrapped, &derive_kek(b"hunter2 but longer", &SALT, &params).unwrap()).unwrap();
    Xts::new(&again).unwrap().decrypt_sector(9, &mut sector).unwrap();
    assert_eq!(sector, [0x42u8; 4096]);

    // A one-letter typo, another salt or other cost parameters all give another KEK.
    let typo = derive_kek(b"hunter2 but longes", &SALT, &params).unwrap();
    assert_eq!(unwrap_key(&wrapped, &typo), Err(WrongPassphrase));
    let other_salt = derive_kek(b"hunter2 but longer", b"bulkhead-salt-02", &params).unwrap();
    assert_eq!(unwrap_key(&wrapped, &other_salt), Err(WrongPassphrase));
    let other_cost = derive_kek(b"hunter2 but longer", &SALT, &KdfParams { iterations: 2, ..params }).unwrap();
    assert_eq!(unwrap_key(&wrapped, &other_cost), Err(WrongPassphrase));
}
