//! The standard USB descriptors the driver reads (USB 2.0 §9.6, USB 3.2 §9.6) and the
//! search of a configuration for a Bulk-Only mass-storage interface. Every length a
//! device reports is checked; a descriptor that runs past the data ends the walk.
#![forbid(unsafe_code)]

pub const DEVICE: u8 = 1;
pub const CONFIGURATION: u8 = 2;
pub const INTERFACE: u8 = 4;
pub const ENDPOINT: u8 = 5;
pub const DEVICE_BYTES: usize = 18;
pub const CONFIG_HEADER_BYTES: usize = 9;
/// The most of a configuration the driver reads (a stick's is ~32 bytes).
pub const MAX_CONFIG_BYTES: usize = 512;

/// Mass storage class, SCSI transparent command set, Bulk-Only Transport.
pub const CLASS_MASS_STORAGE: u8 = 0x08;
pub const SUBCLASS_SCSI: u8 = 0x06;
pub const PROTOCOL_BOT: u8 = 0x50;
/// USB Attached SCSI: the driver does not speak it.
pub const PROTOCOL_UAS: u8 = 0x62;

/// The fields of the device descriptor the driver uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceDescriptor {
    pub usb_version: u16,
    pub class: u8,
    /// bMaxPacketSize0: a byte count for USB 2, an exponent (9 = 512) for USB 3.
    pub max_packet0_raw: u8,
    pub vendor: u16,
    pub product: u16,
    pub configurations: u8,
}

impl DeviceDescriptor {
    /// The control endpoint's max packet size in bytes.
    pub fn max_packet0(&self) -> u16 {
        if self.usb_version >= 0x0300 {
            1u16.checked_shl(u32::from(self.max_packet0_raw)).unwrap_or(512).min(512)
        } else {
            u16::from(self.max_packet0_raw)
        }
    }
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*b.get(at)?, *b.get(at.checked_add(1)?)?]))
}

/// Parses a device descriptor; at least the first 8 bytes (enough for bMaxPacketSize0)
/// when `partial`, else all 18.
pub fn parse_device(data: &[u8], partial: bool) -> Option<DeviceDescriptor> {
    let need = if partial { 8 } else { DEVICE_BYTES };
    if data.len() < need || data.get(1) != Some(&DEVICE) || usize::from(*data.first()?) < need {
        return None;
    }
    Some(DeviceDescriptor {
        usb_version: le16(data, 2)?,
        class: *data.get(4)?,
        max_packet0_raw: *data.get(7)?,
        vendor: le16(data, 8).unwrap_or(0),
        product: le16(data, 10).unwrap_or(0),
        configurations: data.get(17).copied().unwrap_or(0),
    })
}

/// wTotalLength and bConfigurationValue from a configuration descriptor's header.
pub fn parse_config_header(data: &[u8]) -> Option<(u16, u8)> {
    if data.len() < CONFIG_HEADER_BYTES || data.get(1) != Some(&CONFIGURATION) {
        return None;
    }
    let total = le16(data, 2)?;
    (usize::from(total) >= CONFIG_HEADER_BYTES).then_some((total, *data.get(5)?))
}

/// A bulk endpoint: its address (bit 7 set for IN) and max packet size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkEndpoint {
    pub address: u8,
    pub max_packet: u16,
}

impl BulkEndpoint {
    /// The xHCI Device Context Index (xHCI §4.5.1): 2 × number, plus 1 for IN.
    pub fn dci(&self) -> u8 {
        let number = self.address & 0x0f;
        number.saturating_mul(2).saturating_add(u8::from(self.address & 0x80 != 0))
    }
}

/// The Bulk-Only mass-storage interface of a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MassStorage {
    pub configuration: u8,
    pub interface: u8,
    pub bulk_in: BulkEndpoint,
    pub bulk_out: BulkEndpoint,
}

/// Why a configuration holds no usable mass-storage interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsbConfigError {
    Malformed,
    /// No mass-storage interface at all.
    NotMassStorage,
    /// Mass storage, but not SCSI over Bulk-Only (e.g. UAS only): subclass, protocol.
    Protocol(u8, u8),
    /// A Bulk-Only interface without one bulk IN and one bulk OUT endpoint.
    Endpoints,
}

impl core::fmt::Display for UsbConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            UsbConfigError::Malformed => write!(f, "malformed configuration descriptor"),
            UsbConfigError::NotMassStorage => write!(f, "not a mass-storage device"),
            UsbConfigError::Protocol(s, p) => {
                write!(f, "mass storage with subclass {s:#04x}, protocol {p:#04x} (only SCSI over Bulk-Only)")
            }
            UsbConfigError::Endpoints => write!(f, "Bulk-Only interface without bulk IN and OUT endpoints"),
        }
    }
}

/// Walks a whole configuration descriptor set and returns the first alternate setting
/// 0 interface of class 08h/06h/50h with its bulk endpoints.
pub fn find_mass_storage(config: &[u8]) -> Result<MassStorage, UsbConfigError> {
    let (total, value) = parse_config_header(config).ok_or(UsbConfigError::Malformed)?;
    let data = config.get(..usize::from(total).min(config.len())).ok_or(UsbConfigError::Malformed)?;
    let mut at = 0usize;
    let mut current: Option<(u8, bool)> = None;
    let mut other: Option<UsbConfigError> = None;
    let mut bulk_in = None;
    let mut bulk_out = None;
    let mut found: Option<u8> = None;
    while let Some(&len) = data.get(at) {
        let len = usize::from(len);
        let end = at.checked_add(len).ok_or(UsbConfigError::Malformed)?;
        let desc = match data.get(at..end) {
            Some(d) if len >= 2 => d,
            _ => break,
        };
        match desc.get(1).copied() {
            Some(INTERFACE) if len >= 9 => {
                if found.is_some() {
                    break;
                }
                let (number, alt) = (desc.get(2).copied().unwrap_or(0), desc.get(3).copied().unwrap_or(0));
                let (class, sub, proto) = (
                    desc.get(5).copied().unwrap_or(0),
                    desc.get(6).copied().unwrap_or(0),
                    desc.get(7).copied().unwrap_or(0),
                );
                let bot = alt == 0 && (class, sub, proto) == (CLASS_MASS_STORAGE, SUBCLASS_SCSI, PROTOCOL_BOT);
                if class == CLASS_MASS_STORAGE && !bot && other.is_none() {
                    other = Some(UsbConfigError::Protocol(sub, proto));
                }
                current = Some((number, bot));
                bulk_in = None;
                bulk_out = None;
                if bot {
                    found = Some(number);
                }
            }
            Some(ENDPOINT) if len >= 7 => {
                if let Some((_, true)) = current {
                    let address = desc.get(2).copied().unwrap_or(0);
                    let bulk = desc.get(3).copied().unwrap_or(0) & 0x3 == 0x2;
                    let max_packet = le16(desc, 4).unwrap_or(0) & 0x7ff;
                    let ep = BulkEndpoint { address, max_packet };
                    if bulk && max_packet > 0 && address & 0x0f != 0 {
                        if address & 0x80 != 0 {
                            bulk_in = bulk_in.or(Some(ep));
                        } else {
                            bulk_out = bulk_out.or(Some(ep));
                        }
                    }
                }
            }
            _ => {}
        }
        at = end;
    }
    match (found, bulk_in, bulk_out) {
        (Some(interface), Some(bulk_in), Some(bulk_out)) => {
            Ok(MassStorage { configuration: value, interface, bulk_in, bulk_out })
        }
        (Some(_), _, _) => Err(UsbConfigError::Endpoints),
        (None, _, _) => Err(other.unwrap_or(UsbConfigError::NotMassStorage)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stick_config(protocol: u8) -> Vec<u8> {
        let mut c = vec![9, 2, 0, 0, 1, 1, 0, 0x80, 50];
        c.extend_from_slice(&[9, 4, 0, 0, 2, 0x08, 0x06, protocol, 0]);
        c.extend_from_slice(&[7, 5, 0x81, 0x02, 0x00, 0x02, 0]);
        c.extend_from_slice(&[7, 5, 0x02, 0x02, 0x00, 0x02, 0]);
        let total = c.len() as u16;
        c[2..4].copy_from_slice(&total.to_le_bytes());
        c
    }

    #[test]
    fn a_stick_configuration_is_found() {
        let ms = find_mass_storage(&stick_config(PROTOCOL_BOT)).unwrap();
        assert_eq!(ms.configuration, 1);
        assert_eq!(ms.interface, 0);
        assert_eq!(ms.bulk_in, BulkEndpoint { address: 0x81, max_packet: 512 });
        assert_eq!(ms.bulk_out, BulkEndpoint { address: 0x02, max_packet: 512 });
        assert_eq!((ms.bulk_in.dci(), ms.bulk_out.dci()), (3, 4));
    }

    #[test]
    fn uas_only_and_other_classes_are_named() {
        assert_eq!(find_mass_storage(&stick_config(PROTOCOL_UAS)), Err(UsbConfigError::Protocol(0x06, 0x62)));
        let mut hid = stick_config(PROTOCOL_BOT);
        hid[9 + 5] = 0x03;
        assert_eq!(find_mass_storage(&hid), Err(UsbConfigError::NotMassStorage));
    }

    #[test]
    fn malformed_configurations_end_the_walk() {
        let good = stick_config(PROTOCOL_BOT);
        assert_eq!(find_mass_storage(&good[..8]), Err(UsbConfigError::Malformed));
        // A zero-length descriptor stops the walk before the endpoints.
        let mut zero = good.clone();
        zero[18] = 0;
        assert_eq!(find_mass_storage(&zero), Err(UsbConfigError::Endpoints));
        // A length running past the data.
        let mut long = good.clone();
        long[25] = 200;
        assert_eq!(find_mass_storage(&long), Err(UsbConfigError::Endpoints));
        // wTotalLength shorter than the data: only what it covers counts.
        let mut short = good.clone();
        short[2] = 25;
        assert_eq!(find_mass_storage(&short), Err(UsbConfigError::Endpoints));
        // An endpoint 0 or an interrupt endpoint is not a bulk endpoint.
        let mut ep0 = good.clone();
        ep0[20] = 0x80;
        assert_eq!(find_mass_storage(&ep0), Err(UsbConfigError::Endpoints));
        let mut wrong = good;
        wrong[21] = 0x03;
        assert_eq!(find_mass_storage(&wrong), Err(UsbConfigError::Endpoints));
    }

    #[test]
    fn device_descriptors_and_packet_sizes() {
        let mut d = [18u8, 1, 0x00, 0x02, 0, 0, 0, 64, 0x46, 0x04, 0x01, 0x00, 0, 0, 1, 2, 3, 1];
        let dev = parse_device(&d, false).unwrap();
        assert_eq!((dev.vendor, dev.product, dev.max_packet0(), dev.configurations), (0x0446, 1, 64, 1));
        assert_eq!(parse_device(&d[..8], true).unwrap().max_packet0(), 64);
        assert_eq!(parse_device(&d[..17], false), None);
        d[2..4].copy_from_slice(&0x0310u16.to_le_bytes());
        d[7] = 9;
        assert_eq!(parse_device(&d, false).unwrap().max_packet0(), 512);
        d[7] = 200;
        assert_eq!(parse_device(&d, false).unwrap().max_packet0(), 512);
        d[1] = 2;
        assert_eq!(parse_device(&d, false), None);
    }
}
