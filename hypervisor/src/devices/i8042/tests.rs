use super::*;
use crate::devices::irq_line::test_line::TestLine;
use alloc::vec::Vec;

fn kbc() -> (I8042, TestLine) {
    let line = TestLine::new();
    (I8042::new(Box::new(line.clone())), line)
}

fn status(k: &mut I8042) -> u8 {
    k.read(COMMAND_OFFSET, AccessSize::Byte) as u8
}

fn command(k: &mut I8042, cmd: u8) {
    assert_eq!(status(k) & 0x02, 0, "IBF must be clear before writing");
    k.write(COMMAND_OFFSET, AccessSize::Byte, u32::from(cmd));
}

fn data(k: &mut I8042, byte: u8) {
    k.write(DATA_OFFSET, AccessSize::Byte, u32::from(byte));
}

/// i8042_wait_read + i8042_read_data: `None` is Linux's timeout.
fn read(k: &mut I8042) -> Option<u8> {
    (status(k) & STS_OBF != 0).then(|| k.read(DATA_OFFSET, AccessSize::Byte) as u8)
}

fn drain(k: &mut I8042) -> Vec<u8> {
    core::iter::from_fn(|| read(k)).collect()
}

/// i8042_command: command, parameters, then `results` bytes.
fn i8042_command(k: &mut I8042, cmd: u8, params: &[u8], results: usize) -> Option<Vec<u8>> {
    command(k, cmd);
    for &p in params {
        data(k, p);
    }
    (0..results).map(|_| read(k)).collect()
}

/// Linux's i8042_probe up to a working keyboard port, as with PNP saying "no AUX".
fn linux_controller_init(k: &mut I8042) {
    assert!(drain(k).len() <= 16, "i8042_flush");
    assert_eq!(i8042_command(k, CMD_SELF_TEST, &[], 1), Some(alloc::vec![SELF_TEST_OK]));
    let ctr1 = i8042_command(k, CMD_READ_RAM, &[], 1).unwrap()[0];
    let ctr2 = i8042_command(k, CMD_READ_RAM, &[], 1).unwrap()[0];
    assert_eq!(ctr1, ctr2);
    assert_ne!(ctr1 & CTR_TRANSLATE, 0, "translation on, so Linux keeps it");
    assert_ne!(status(k) & STS_UNLOCKED, 0, "no 'Keylock active' warning");
    let ctr = (ctr1 | CTR_KBD_DISABLE) & !CTR_KBD_INT;
    i8042_command(k, CMD_WRITE_RAM, &[ctr], 0).unwrap();
    drain(k);
    // i8042_enable_kbd_port.
    let ctr = (ctr & !CTR_KBD_DISABLE) | CTR_KBD_INT;
    i8042_command(k, CMD_WRITE_RAM, &[ctr], 0).unwrap();
}

/// What a ps2_command sends and receives on the keyboard port.
fn kbd_command(k: &mut I8042, bytes: &[u8], line: &TestLine) -> Vec<u8> {
    let mut got = Vec::new();
    for &b in bytes {
        let before = line.rises();
        data(k, b);
        // Every reply byte arrives with its own interrupt.
        while let Some(r) = read(k) {
            got.push(r);
        }
        assert!(line.rises() > before, "reply to {b:#x} raised IRQ1");
    }
    got
}

#[test]
fn linux_init_then_typing_reaches_the_guest() {
    let (mut k, line) = kbc();
    linux_controller_init(&mut k);
    // atkbd_probe with atkbd.reset, then GETID, deactivate, reset_state, activate.
    assert_eq!(kbd_command(&mut k, &[KBD_RESET], &line), [KBD_ACK, KBD_BAT_OK]);
    assert_eq!(kbd_command(&mut k, &[KBD_IDENTIFY], &line), [KBD_ACK, 0xAB, 0x41]);
    assert_eq!(kbd_command(&mut k, &[KBD_DISABLE], &line), [KBD_ACK]);
    assert_eq!(kbd_command(&mut k, &[KBD_SET_LEDS, 0], &line), [KBD_ACK, KBD_ACK]);
    assert_eq!(kbd_command(&mut k, &[KBD_TYPEMATIC, 0], &line), [KBD_ACK, KBD_ACK]);
    assert_eq!(kbd_command(&mut k, &[KBD_ENABLE], &line), [KBD_ACK]);
    assert!(k.keyboard_active());
    assert_eq!(k.guest_scancode_set(), 1);
    // "ls\n": make and break of L, S, Enter in set 1.
    let keys = [0x26, 0xA6, 0x1F, 0x9F, 0x1C, 0x9C];
    let before = line.rises();
    k.inject_scancodes(&keys);
    assert!(line.high());
    assert_eq!(drain(&mut k), keys);
    assert_eq!(line.rises() - before, keys.len() as u32, "one edge per byte");
    assert!(!line.high());
    assert_eq!(k.dropped_keys(), 0);
}

#[test]
fn untranslated_set2_receives_converted_codes() {
    let (mut k, line) = kbc();
    linux_controller_init(&mut k);
    let ctr = i8042_command(&mut k, CMD_READ_RAM, &[], 1).unwrap()[0];
    i8042_command(&mut k, CMD_WRITE_RAM, &[ctr & !CTR_TRANSLATE], 0).unwrap();
    assert_eq!(kbd_command(&mut k, &[KBD_IDENTIFY], &line), [KBD_ACK, 0xAB, 0x83]);
    assert_eq!(kbd_command(&mut k, &[KBD_SCANCODE_SET, 0], &line), [KBD_ACK, KBD_ACK, 2]);
    assert_eq!(k.guest_scancode_set(), 2);
    // A, Up arrow, Pause.
    k.inject_scancodes(&[0x1E, 0x9E, 0xE0, 0x48, 0xE0, 0xC8, 0xE1, 0x1D, 0x45, 0xE1, 0x9D, 0xC5]);
    assert_eq!(
        drain(&mut k),
        [0x1C, 0xF0, 0x1C, 0xE0, 0x75, 0xE0, 0xF0, 0x75, 0xE1, 0x14, 0x77, 0xE1, 0xF0, 0x14, 0xF0, 0x77]
    );
    // The guest may pick set 1: then set-1 bytes pass unchanged.
    assert_eq!(kbd_command(&mut k, &[KBD_SCANCODE_SET, 1], &line), [KBD_ACK, KBD_ACK]);
    k.inject_scancodes(&[0x1E, 0x9E]);
    assert_eq!(drain(&mut k), [0x1E, 0x9E]);
}

#[test]
fn set1_to_set2_inverts_the_translation() {
    for (set2, &set1) in SET2_TO_SET1.iter().enumerate().skip(1) {
        if set1 >= 0x80 || set2 == 0x02 || set2 == 0x7F {
            continue; // unused codes that alias F7 and SysRq
        }
        assert_eq!(SET1_TO_SET2[usize::from(set1)] as usize, set2, "set-1 {set1:#x}");
    }
    assert_eq!(SET1_TO_SET2[0x41], 0x83, "F7");
    assert_eq!(SET1_TO_SET2[0x54], 0x84, "SysRq");
    assert_eq!(SET1_TO_SET2[0x01], 0x76, "Esc");
    assert_eq!(SET1_TO_SET2[0x00], 0);
}

#[test]
fn translated_scancode_set_query_is_translated() {
    let (mut k, line) = kbc();
    assert_eq!(kbd_command(&mut k, &[KBD_SCANCODE_SET, 0], &line), [KBD_ACK, KBD_ACK, 0x41]);
}

#[test]
fn leds_are_stored_for_mirroring() {
    let (mut k, line) = kbc();
    assert_eq!(k.take_led_change(), None);
    assert_eq!(kbd_command(&mut k, &[KBD_SET_LEDS, 0x04], &line), [KBD_ACK, KBD_ACK]);
    assert_eq!(k.leds(), 0x04);
    assert_eq!(k.take_led_change(), Some(0x04));
    assert_eq!(k.take_led_change(), None);
    kbd_command(&mut k, &[KBD_SET_LEDS, 0x04], &line);
    assert_eq!(k.take_led_change(), None, "unchanged");
    kbd_command(&mut k, &[KBD_SET_LEDS, 0xFF], &line);
    assert_eq!(k.leds(), 0x07);
    kbd_command(&mut k, &[KBD_RESET], &line);
    assert_eq!(k.take_led_change(), Some(0));
    kbd_command(&mut k, &[KBD_TYPEMATIC, 0x20], &line);
    assert_eq!(k.typematic(), 0x20);
}

#[test]
fn disabled_keyboard_drops_keys_and_disabled_interface_holds_them() {
    let (mut k, line) = kbc();
    kbd_command(&mut k, &[KBD_DISABLE], &line);
    k.inject_scancodes(&[0x1E, 0x9E]);
    assert_eq!(read(&mut k), None);
    assert_eq!(k.dropped_keys(), 2);
    kbd_command(&mut k, &[KBD_ENABLE], &line);
    // 0xAD inhibits the interface: keys wait inside the keyboard.
    command(&mut k, CMD_KBD_DISABLE);
    k.inject_scancodes(&[0x10, 0x90]);
    assert!(!k.keyboard_active());
    assert_eq!(read(&mut k), None);
    // Controller replies still come through.
    assert_eq!(i8042_command(&mut k, CMD_KBD_TEST, &[], 1), Some(alloc::vec![KBD_TEST_OK]));
    command(&mut k, CMD_KBD_ENABLE);
    assert_eq!(drain(&mut k), [0x10, 0x90]);
}

#[test]
fn command_replies_overtake_queued_keys() {
    let (mut k, line) = kbc();
    k.inject_scancodes(&[0x1E, 0x9E, 0x1F]);
    assert_eq!(read(&mut k), Some(0x1E));
    // 0x9E is already latched in the output buffer; the reply comes next.
    data(&mut k, KBD_ECHO);
    assert_eq!(drain(&mut k), [0x9E, KBD_ECHO, 0x1F]);
    assert_eq!(kbd_command(&mut k, &[0x42], &line), [KBD_NAK], "unknown command");
    assert_eq!(kbd_command(&mut k, &[KBD_RESEND], &line), [KBD_NAK]);
}

#[test]
fn key_queue_is_bounded_and_keeps_room_for_releases() {
    let (mut k, _) = kbc();
    // A guest that never reads: presses stop short of the end of the queue...
    let presses = KEY_QUEUE_BYTES - RELEASE_RESERVE_BYTES;
    k.inject_scancodes(&[0x1E; KEY_QUEUE_BYTES + 3]);
    assert_eq!(k.dropped_keys(), (RELEASE_RESERVE_BYTES + 3) as u64);
    k.inject_scancodes(&[0xE0, 0x48]);
    assert_eq!(k.dropped_keys(), (RELEASE_RESERVE_BYTES + 5) as u64, "an extended press is dropped whole");
    // ...and the releases of sixteen held keys, extended ones included, still fit.
    for _ in 0..16 {
        k.inject_scancodes(&[0xE0, 0x9D]);
    }
    assert_eq!(k.dropped_keys(), (RELEASE_RESERVE_BYTES + 5) as u64);
    let got = drain(&mut k);
    assert_eq!(got.len(), presses + 32);
    assert!(got[presses..].chunks(2).all(|c| c == [0xE0, 0x9D]), "releases split or lost");
    // A full queue takes nothing, releases included, and never a part of a key.
    let (mut k, _) = kbc();
    k.inject_scancodes(&[0x9E; KEY_QUEUE_BYTES]);
    k.inject_scancodes(&[0xE0, 0x9D]);
    assert_eq!(k.dropped_keys(), 2);
    assert_eq!(drain(&mut k), [0x9E; KEY_QUEUE_BYTES]);
}

#[test]
fn reset_line_pulses() {
    let signal = PowerSignal::new();
    let mut k = I8042::new(Box::new(crate::devices::irq_line::NoIrq)).with_power_signal(signal.clone());
    command(&mut k, 0xFF);
    assert!(!k.reset_requested(), "0xFF pulses no line");
    command(&mut k, 0xFE);
    assert!(k.reset_requested());
    assert!(k.take_reset_request());
    assert!(!k.reset_requested());
    assert_eq!(signal.take(), Some(PowerEvent::Reset));
    // Output port: A20 off, then the reset bit cleared.
    let port = i8042_command(&mut k, CMD_READ_OUTPUT_PORT, &[], 1).unwrap()[0];
    assert_eq!(port & (OUT_RESET | OUT_A20), OUT_RESET | OUT_A20);
    i8042_command(&mut k, CMD_WRITE_OUTPUT_PORT, &[OUT_RESET], 0).unwrap();
    assert!(!k.a20());
    assert!(!k.reset_requested());
    command(&mut k, CMD_A20_ENABLE);
    assert!(k.a20());
    i8042_command(&mut k, CMD_WRITE_OUTPUT_PORT, &[OUT_A20], 0).unwrap();
    assert!(k.take_reset_request());
    assert_eq!(signal.take(), Some(PowerEvent::Reset));
}

#[test]
fn aux_probe_without_pnp_finds_no_aux_port() {
    let (mut k, _) = kbc();
    // i8042_check_aux: AUX_LOOP 0x5a gets no answer (a timeout)...
    assert_eq!(i8042_command(&mut k, CMD_WRITE_AUX_OUTPUT, &[0x5A], 1), None);
    // ...so Linux runs AUX_TEST, whose answer must be neither 0, 0xFA nor 0xFF.
    let result = i8042_command(&mut k, CMD_AUX_TEST, &[], 1).unwrap()[0];
    assert!(result != 0 && result != 0xFA && result != 0xFF);
    // AUX writes go nowhere; the keyboard never sees them.
    i8042_command(&mut k, CMD_WRITE_AUX, &[KBD_RESET], 0).unwrap();
    assert_eq!(read(&mut k), None);
    command(&mut k, CMD_AUX_ENABLE);
    assert_eq!(i8042_command(&mut k, CMD_READ_RAM, &[], 1).unwrap()[0] & CTR_AUX_DISABLE, 0);
    command(&mut k, CMD_AUX_DISABLE);
    assert_ne!(i8042_command(&mut k, CMD_READ_RAM, &[], 1).unwrap()[0] & CTR_AUX_DISABLE, 0);
    assert_eq!(status(&mut k) & 0x20, 0, "never AUX data");
}

#[test]
fn controller_odds_and_ends() {
    let (mut k, line) = kbc();
    // D2 puts a byte in the output buffer as if from the keyboard, with IRQ1.
    i8042_command(&mut k, CMD_WRITE_KBD_OUTPUT, &[0x5C], 0).unwrap();
    assert!(line.high());
    assert_eq!(read(&mut k), Some(0x5C));
    // Reading an empty buffer repeats the last byte.
    assert_eq!(k.read(DATA_OFFSET, AccessSize::Byte), 0x5C);
    // Controller RAM beyond the configuration byte.
    i8042_command(&mut k, 0x65, &[0x99], 0).unwrap();
    assert_eq!(i8042_command(&mut k, 0x25, &[], 1), Some(alloc::vec![0x99]));
    assert_eq!(i8042_command(&mut k, CMD_PASSWORD_TEST, &[], 1), Some(alloc::vec![NO_PASSWORD]));
    // Status: system flag, command/data bit.
    assert_ne!(status(&mut k) & STS_SYS, 0);
    assert_ne!(status(&mut k) & STS_CMD, 0);
    data(&mut k, KBD_ECHO);
    assert_eq!(status(&mut k) & STS_CMD, 0);
    assert_eq!(read(&mut k), Some(KBD_ECHO));
    // With KBD_INT clear the byte waits without an interrupt.
    i8042_command(&mut k, CMD_WRITE_RAM, &[CTR_TRANSLATE], 0).unwrap();
    k.inject_scancodes(&[0x02]);
    assert!(!line.high());
    assert_eq!(read(&mut k), Some(0x02));
    // Non-byte accesses do nothing.
    k.write(DATA_OFFSET, AccessSize::Word, 0xFFFF);
    assert_eq!(k.read(COMMAND_OFFSET, AccessSize::Word), 0xFFFF);
    assert_eq!(read(&mut k), None);
    // A new command abandons a pending parameter.
    command(&mut k, CMD_WRITE_OUTPUT_PORT);
    command(&mut k, CMD_KBD_TEST);
    assert_eq!(read(&mut k), Some(KBD_TEST_OK));
    assert!(!k.reset_requested());
}

#[test]
fn a_command_flood_without_reads_keeps_the_reply_queues_bounded() {
    let (mut k, _line) = kbc();
    for _ in 0..10_000 {
        k.write(COMMAND_OFFSET, AccessSize::Byte, u32::from(CMD_SELF_TEST));
        k.write(DATA_OFFSET, AccessSize::Byte, u32::from(KBD_IDENTIFY));
    }
    // The output buffer plus one bounded queue each for controller and keyboard.
    assert!(k.queued_bytes() <= 2 * REPLY_QUEUE_BYTES, "{} bytes queued", k.queued_bytes());
    assert!(k.dropped_replies() > 10_000);
    // The oldest replies are the ones kept, in order: the first self-test answer first.
    assert_eq!(read(&mut k), Some(SELF_TEST_OK));
    let rest = drain(&mut k);
    assert!(rest.len() <= 2 * REPLY_QUEUE_BYTES);
    // Once read, the controller answers again.
    assert_eq!(i8042_command(&mut k, CMD_SELF_TEST, &[], 1), Some(alloc::vec![SELF_TEST_OK]));
}
