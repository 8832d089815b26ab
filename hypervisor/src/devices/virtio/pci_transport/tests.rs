use super::*;
use crate::hw::pci::{CAP_PTR, COMMAND};

const FEATURES: u64 = feature::VERSION_1 | feature::RING_EVENT_IDX | (1 << 5);

fn transport() -> VirtioPciTransport {
    VirtioPciTransport::new(TransportSpec {
        device_type: 1,
        class: 0x02_00_00,
        device_features: FEATURES,
        num_queues: 2,
        queue_size: crate::devices::virtio::virtqueue::MAX_QUEUE_SIZE,
        device_config_len: 12,
    })
    .unwrap()
}

fn w(t: &mut VirtioPciTransport, offset: u64, size: AccessSize, value: u64) {
    t.bar_write(offset, size, value).unwrap();
}

fn r(t: &mut VirtioPciTransport, offset: u64, size: AccessSize) -> u64 {
    t.bar_read(offset, size)
}

/// What Linux's virtio_pci_modern does up to DRIVER_OK, with `features` accepted.
fn negotiate(t: &mut VirtioPciTransport, features: u64) -> u8 {
    w(t, common::DEVICE_STATUS, AccessSize::Byte, 0);
    w(t, common::DEVICE_STATUS, AccessSize::Byte, u64::from(status::ACKNOWLEDGE | status::DRIVER));
    w(t, common::DRIVER_FEATURE_SELECT, AccessSize::Dword, 0);
    w(t, common::DRIVER_FEATURE, AccessSize::Dword, features & 0xFFFF_FFFF);
    w(t, common::DRIVER_FEATURE_SELECT, AccessSize::Dword, 1);
    w(t, common::DRIVER_FEATURE, AccessSize::Dword, features >> 32);
    let s = r(t, common::DEVICE_STATUS, AccessSize::Byte) as u8;
    w(t, common::DEVICE_STATUS, AccessSize::Byte, u64::from(s | status::FEATURES_OK));
    r(t, common::DEVICE_STATUS, AccessSize::Byte) as u8
}

fn set_up_queue(t: &mut VirtioPciTransport, index: u16, base: u64, vector: u16) {
    w(t, common::QUEUE_SELECT, AccessSize::Word, u64::from(index));
    w(t, common::QUEUE_SIZE, AccessSize::Word, 64);
    w(t, common::QUEUE_MSIX_VECTOR, AccessSize::Word, u64::from(vector));
    // Two dword halves, as Linux's vp_iowrite64_twopart writes them.
    w(t, common::QUEUE_DESC, AccessSize::Dword, base);
    w(t, common::QUEUE_DESC + 4, AccessSize::Dword, 0);
    w(t, common::QUEUE_DRIVER, AccessSize::Dword, base + 0x400);
    w(t, common::QUEUE_DRIVER + 4, AccessSize::Dword, 0);
    w(t, common::QUEUE_DEVICE, AccessSize::Qword, base + 0x1000);
    w(t, common::QUEUE_ENABLE, AccessSize::Word, 1);
}

#[test]
fn capabilities_point_into_the_bar_as_linux_looks_for_them() {
    let mut t = transport();
    assert_eq!(t.config_read(0, AccessSize::Dword), 0x1041_1AF4);
    assert_eq!(t.config_read(8, AccessSize::Byte), 1, "revision 1: modern only");
    let mut caps = Vec::new();
    let mut pos = t.config_read(CAP_PTR, AccessSize::Byte) as u16;
    while pos != 0 && caps.len() < 16 {
        let id = t.config_read(pos, AccessSize::Byte) as u8;
        if id == cap_id::VENDOR {
            let cfg_type = t.config_read(pos + 3, AccessSize::Byte) as u8;
            let bar = t.config_read(pos + 4, AccessSize::Byte) as u8;
            let offset = t.config_read(pos + 8, AccessSize::Dword);
            let len = t.config_read(pos + 12, AccessSize::Dword);
            assert_eq!(bar, BAR_INDEX);
            assert!(u64::from(offset) + u64::from(len) <= BAR_SIZE, "type {cfg_type} inside the BAR");
            caps.push((cfg_type, offset, len));
            if cfg_type == CFG_NOTIFY {
                assert_eq!(t.config_read(pos + 16, AccessSize::Dword), NOTIFY_MULTIPLIER);
            }
        } else {
            assert_eq!(id, cap_id::MSIX);
            assert_eq!(t.config_read(pos + 2, AccessSize::Word), 2, "3 vectors");
            assert_eq!(t.config_read(pos + 4, AccessSize::Dword), MSIX_TABLE_OFFSET as u32);
            assert_eq!(t.config_read(pos + 8, AccessSize::Dword), MSIX_PBA_OFFSET as u32);
            caps.push((0xFF, 0, 0));
        }
        pos = t.config_read(pos + 1, AccessSize::Byte) as u16;
    }
    let types: Vec<u8> = caps.iter().map(|c| c.0).collect();
    assert_eq!(types, [CFG_COMMON, CFG_NOTIFY, CFG_ISR, CFG_DEVICE, 0xFF]);
    // Linux maps at least sizeof(struct virtio_pci_common_cfg) = 0x38 bytes.
    assert!(caps[0].2 >= 0x38);
    assert_eq!(r(&mut t, common::NUM_QUEUES, AccessSize::Word), 2);
}

#[test]
fn feature_negotiation_keeps_only_a_valid_subset() {
    let mut t = transport();
    for select in 0..3u32 {
        w(&mut t, common::DEVICE_FEATURE_SELECT, AccessSize::Dword, u64::from(select));
        let expected = match select {
            0 => FEATURES & 0xFFFF_FFFF,
            1 => FEATURES >> 32,
            _ => 0,
        };
        assert_eq!(r(&mut t, common::DEVICE_FEATURE, AccessSize::Dword), expected);
    }
    // A feature the device does not offer: FEATURES_OK does not stick.
    assert_eq!(negotiate(&mut t, FEATURES | (1 << 28)) & status::FEATURES_OK, 0);
    // Without VERSION_1 either.
    assert_eq!(negotiate(&mut t, 1 << 5) & status::FEATURES_OK, 0);
    // A subset with VERSION_1 is accepted, and then frozen.
    let subset = feature::VERSION_1 | (1 << 5);
    assert_ne!(negotiate(&mut t, subset) & status::FEATURES_OK, 0);
    assert_eq!(t.negotiated(), subset);
    w(&mut t, common::DRIVER_FEATURE_SELECT, AccessSize::Dword, 0);
    w(&mut t, common::DRIVER_FEATURE, AccessSize::Dword, 0xFFFF_FFFF);
    assert_eq!(t.negotiated(), subset);
}

#[test]
fn queue_setup_status_and_reset() {
    let mut t = transport();
    negotiate(&mut t, FEATURES);
    w(&mut t, common::QUEUE_SELECT, AccessSize::Word, 1);
    assert_eq!(r(&mut t, common::QUEUE_SIZE, AccessSize::Word), u64::from(super::super::virtqueue::MAX_QUEUE_SIZE));
    assert_eq!(r(&mut t, common::QUEUE_NOTIFY_OFF, AccessSize::Word), 1);
    set_up_queue(&mut t, 0, 0x10_0000, 1);
    set_up_queue(&mut t, 1, 0x20_0000, 2);
    let q = t.queue(1).unwrap();
    assert_eq!((q.size, q.desc, q.driver, q.device, q.msix_vector), (64, 0x20_0000, 0x20_0400, 0x20_1000, 2));
    assert!(q.enabled && q.event_idx);
    assert_eq!(r(&mut t, common::QUEUE_DESC, AccessSize::Qword), 0x20_0000);
    assert_eq!(r(&mut t, common::QUEUE_ENABLE, AccessSize::Word), 1);
    // A live queue's layout cannot change underneath the device.
    w(&mut t, common::QUEUE_DESC, AccessSize::Dword, 0x30_0000);
    assert_eq!(t.queue(1).unwrap().desc, 0x20_0000);
    // A queue past the end reads size 0 and takes no writes.
    w(&mut t, common::QUEUE_SELECT, AccessSize::Word, 7);
    assert_eq!(r(&mut t, common::QUEUE_SIZE, AccessSize::Word), 0);
    w(&mut t, common::QUEUE_ENABLE, AccessSize::Word, 1);
    assert!(!t.is_running(), "no DRIVER_OK yet");
    let s = r(&mut t, common::DEVICE_STATUS, AccessSize::Byte) as u8;
    w(&mut t, common::DEVICE_STATUS, AccessSize::Byte, u64::from(s | status::DRIVER_OK));
    assert!(!t.is_running(), "bus mastering is off");
    t.config_write(COMMAND, AccessSize::Word, u32::from(CMD_BUS_MASTER | 2));
    assert!(t.is_running());
    // Reset: status, features and queues back to their initial values.
    w(&mut t, common::DEVICE_STATUS, AccessSize::Byte, 0);
    assert_eq!(r(&mut t, common::DEVICE_STATUS, AccessSize::Byte), 0);
    assert_eq!(t.negotiated(), 0);
    assert!(!t.is_running());
    assert_eq!(t.queue(1), Some(&SplitQueue::default()));
    w(&mut t, common::QUEUE_SELECT, AccessSize::Word, 0);
    assert_eq!(r(&mut t, common::QUEUE_MSIX_VECTOR, AccessSize::Word), u64::from(NO_VECTOR));
}

#[test]
fn a_badly_laid_out_queue_is_refused_and_needs_reset_sticks() {
    let mut t = transport();
    negotiate(&mut t, FEATURES);
    w(&mut t, common::QUEUE_SELECT, AccessSize::Word, 0);
    w(&mut t, common::QUEUE_SIZE, AccessSize::Word, 100);
    assert_eq!(t.bar_write(common::QUEUE_ENABLE, AccessSize::Word, 1), Err(QueueError::BadLayout));
    assert!(!t.queue(0).unwrap().enabled);
    assert!(t.fail(), "first failure");
    assert!(!t.fail(), "only once until reset");
    let s = r(&mut t, common::DEVICE_STATUS, AccessSize::Byte) as u8;
    assert_ne!(s & status::NEEDS_RESET, 0);
    // The driver cannot clear NEEDS_RESET except by resetting.
    w(&mut t, common::DEVICE_STATUS, AccessSize::Byte, u64::from(status::DRIVER_OK));
    assert_ne!(t.status() & status::NEEDS_RESET, 0);
    w(&mut t, common::DEVICE_STATUS, AccessSize::Byte, 0);
    assert_eq!(t.status(), 0);
    assert!(t.fail());
}

#[test]
fn vectors_beyond_the_table_read_back_as_no_vector() {
    let mut t = transport();
    w(&mut t, common::CONFIG_MSIX_VECTOR, AccessSize::Word, 0);
    assert_eq!(r(&mut t, common::CONFIG_MSIX_VECTOR, AccessSize::Word), 0);
    w(&mut t, common::CONFIG_MSIX_VECTOR, AccessSize::Word, 3);
    assert_eq!(r(&mut t, common::CONFIG_MSIX_VECTOR, AccessSize::Word), u64::from(NO_VECTOR));
}

#[test]
fn notifications_are_recorded_per_queue() {
    let mut t = transport();
    w(&mut t, NOTIFY_OFFSET + 4, AccessSize::Word, 1);
    w(&mut t, NOTIFY_OFFSET + 8, AccessSize::Word, 2);
    assert_eq!(t.take_notified(), 0b10, "queue 2 does not exist");
    assert_eq!(t.take_notified(), 0);
}

#[test]
fn msix_when_enabled_else_intx_and_isr() {
    let mut t = transport();
    negotiate(&mut t, FEATURES);
    set_up_queue(&mut t, 1, 0x20_0000, 2);
    w(&mut t, common::CONFIG_MSIX_VECTOR, AccessSize::Word, 0);
    // INTx: the ISR says why; reading it clears it and drops the line.
    t.signal_queue(1);
    assert!(t.intx_asserted());
    t.signal_config();
    assert_eq!(r(&mut t, ISR_OFFSET, AccessSize::Byte), u64::from(ISR_QUEUE | ISR_CONFIG));
    assert!(!t.intx_asserted());
    assert_eq!(r(&mut t, ISR_OFFSET, AccessSize::Byte), 0);
    // MSI-X on: program vector 2, signal queue 1 (vector 2) while the entry is masked.
    let ctrl = u32::from(t.msix_cap) + 2;
    t.config_write(ctrl as u16, AccessSize::Word, u32::from(MSIX_CTRL_ENABLE));
    w(&mut t, MSIX_TABLE_OFFSET + 0x20, AccessSize::Qword, 0xfee0_0000);
    w(&mut t, MSIX_TABLE_OFFSET + 0x28, AccessSize::Dword, 0x41);
    t.signal_queue(1);
    assert!(!t.intx_asserted());
    let mut out = Vec::new();
    t.take_messages(&mut out);
    assert!(out.is_empty());
    assert_eq!(r(&mut t, MSIX_PBA_OFFSET, AccessSize::Qword), 0b100, "pending while masked");
    w(&mut t, MSIX_TABLE_OFFSET + 0x2c, AccessSize::Dword, 0);
    t.take_messages(&mut out);
    assert_eq!(out, [MsiMessage { address: 0xfee0_0000, data: 0x41 }]);
    // A queue without a vector raises nothing.
    w(&mut t, common::QUEUE_SELECT, AccessSize::Word, 1);
    w(&mut t, common::QUEUE_MSIX_VECTOR, AccessSize::Word, u64::from(NO_VECTOR));
    t.signal_queue(1);
    out.clear();
    t.take_messages(&mut out);
    assert!(out.is_empty());
    assert_eq!(r(&mut t, MSIX_PBA_OFFSET, AccessSize::Qword), 0);
}
