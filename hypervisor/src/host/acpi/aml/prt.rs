//! PCI interrupt routing from `_PRT` (ACPI 6.5 §6.2.13): which host bridges and bridges
//! have a routing table, what each entry resolves to (a GSI directly, or a PCI
//! interrupt link device's current `_CRS` interrupt), and the lookup with the
//! PCI-to-PCI bridge swizzle (PCI-to-PCI Bridge Architecture Specification 1.2 §9.1).

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::{Path, Seg, Value, path_str};
use crate::host::acpi::aml::eval::evaluate;
use crate::host::acpi::aml::namespace::{Namespace, Object};
use crate::host::acpi::aml::parse::NameString;

/// How one PCI interrupt pin reaches the I/O APICs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntxRoute {
    pub gsi: u32,
    pub level_triggered: bool,
    pub active_low: bool,
}

impl IntxRoute {
    /// How the I/O APIC input signals.
    pub fn pin_mode(&self) -> crate::host::ioapic::PinMode {
        crate::host::ioapic::PinMode { level: self.level_triggered, active_low: self.active_low }
    }
}

/// Why one `_PRT` entry cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PrtError {
    /// The element is not a package (what it is instead).
    NotAPackage(&'static str),
    /// Field `index` is not an integer (what it is instead).
    FieldType {
        index: usize,
        found: &'static str,
    },
    FieldMissing {
        index: usize,
    },
    /// The Address's device or the Pin is out of range.
    OutOfRange {
        address: u64,
        pin: u64,
    },
    /// A Source Index meant as a GSI does not fit 32 bits.
    GsiOutOfRange(u64),
    /// The Source field is neither 0 nor a name (what it is instead).
    SourceType(&'static str),
    SourceMissing,
    /// The Source names no object.
    UndefinedLink,
    /// The link device's `_CRS` returned something other than a buffer.
    CrsNotABuffer {
        link: Path,
        found: &'static str,
    },
    /// The link device's `_CRS` failed; `aml` is the evaluator's error as the namespace
    /// renders it (it alone knows the table names).
    CrsFailed {
        link: Path,
        aml: String,
    },
    /// The `_CRS` template has no interrupt number `index`.
    NoInterrupt {
        link: Path,
        index: u64,
    },
}

impl core::fmt::Display for PrtError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotAPackage(found) => write!(f, "{found} instead of a package"),
            Self::FieldType { index, found } => write!(f, "field {index} is {found}"),
            Self::FieldMissing { index } => write!(f, "field {index} is missing"),
            Self::OutOfRange { address, pin } => write!(f, "address {address:#x} pin {pin} out of range"),
            Self::GsiOutOfRange(index) => write!(f, "GSI {index:#x} out of range"),
            Self::SourceType(found) => write!(f, "Source is {found}"),
            Self::SourceMissing => f.write_str("Source is missing"),
            Self::UndefinedLink => f.write_str("Source names an undefined link device"),
            Self::CrsNotABuffer { link, found } => write!(f, "{}._CRS returned {found}", path_str(link)),
            Self::CrsFailed { link, aml } => write!(f, "{}._CRS: {aml}", path_str(link)),
            Self::NoInterrupt { link, index } => write!(f, "{}._CRS: no interrupt number {index}", path_str(link)),
        }
    }
}

/// One `_PRT` entry: `device` (0..31), `function` (`None` = any, the usual 0xFFFF),
/// `pin` 0..3 = INTA..INTD as `_PRT` numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    device: u8,
    function: Option<u8>,
    pin: u8,
    route: IntxRoute,
}

/// The `_PRT` of one host bridge (`path` empty) or of the bridge reached from the root
/// bus through `path`; it describes the devices on that bridge's secondary bus.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PrtTable {
    segment: u16,
    root_bus: u8,
    path: Vec<(u8, u8)>,
    entries: Vec<Entry>,
}

/// Every `_PRT` the firmware describes, evaluated in APIC mode.
#[derive(Debug, Clone, Default)]
pub struct PciInterruptRouting {
    tables: Vec<PrtTable>,
}

const HID: Seg = *b"_HID";
const CID: Seg = *b"_CID";
const ADR: Seg = *b"_ADR";
const BBN: Seg = *b"_BBN";
const SEG: Seg = *b"_SEG";
const PRT: Seg = *b"_PRT";
const CRS: Seg = *b"_CRS";
const PIC: Seg = *b"_PIC";
/// The APIC interrupt model argument of `\_PIC` (ACPI 6.5 §5.8.1).
const APIC_MODE: u64 = 1;

fn child(path: &[Seg], seg: Seg) -> Path {
    let mut p = path.to_vec();
    p.push(seg);
    p
}

impl PciInterruptRouting {
    /// Loads the DSDT and SSDTs (full tables including the 36-byte SDT header, as the
    /// slices `raw.dsdt` / `raw.ssdts` in platform/acpi/mod.rs hold them), calls `\_PIC(1)`
    /// if present, and evaluates `_PRT` of every PCI host bridge (a Device whose _HID or
    /// _CID is PNP0A03 or PNP0A08; bus from _BBN, default 0; segment from _SEG, default 0)
    /// and of every Device below one that has both `_ADR` and `_PRT` (PCI-PCI bridges /
    /// root ports). Problems are returned as human-readable strings for the log, never a panic.
    pub fn from_aml(tables: &[&[u8]]) -> (PciInterruptRouting, Vec<String>) {
        let mut problems = Vec::new();
        let mut ns = Namespace::load(tables, &mut problems);
        let mut routing = PciInterruptRouting::default();
        let pic = vec![PIC];
        if ns.objects.contains_key(&pic)
            && let Err(e) = evaluate(&mut ns, &pic, vec![Value::Integer(APIC_MODE)])
        {
            problems.push(format!("\\_PIC(1): {}", ns.describe(&e)));
        }
        let devices: Vec<Path> = ns
            .objects
            .iter()
            .filter(|(_, o)| matches!(o, Object::Scope { device: true }))
            .map(|(p, _)| p.clone())
            .collect();
        let bridges: Vec<&Path> = devices.iter().filter(|d| is_host_bridge(&mut ns, d)).collect();
        if bridges.is_empty() {
            problems.push(String::from("no PCI host bridge (PNP0A03/PNP0A08) in the namespace"));
        }
        let mut links = LinkCache::default();
        for (n, host) in bridges.iter().enumerate() {
            // A host bridge nested in another one is routed by its own entry.
            if bridges.iter().take(n).any(|outer| host.starts_with(outer)) {
                continue;
            }
            let (Some(segment), Some(root_bus)) = (
                small_int(&mut ns, host, SEG, 0, u16::MAX.into(), &mut problems),
                small_int(&mut ns, host, BBN, 0, u8::MAX.into(), &mut problems),
            ) else {
                continue;
            };
            let (segment, root_bus) = (u16::try_from(segment).unwrap_or(0), u8::try_from(root_bus).unwrap_or(0));
            for device in devices.iter().filter(|d| d.starts_with(host)) {
                if !ns.objects.contains_key(&child(device, PRT)) {
                    continue;
                }
                let nested = bridges.iter().any(|b| b.len() > host.len() && device.starts_with(b));
                if nested {
                    continue;
                }
                let Some(path) = hops(&mut ns, host, device, &mut problems) else { continue };
                let Some(entries) = evaluate_prt(&mut ns, device, &mut links, &mut problems) else { continue };
                routing.tables.push(PrtTable { segment, root_bus, path, entries });
            }
        }
        (routing, problems)
    }

    /// The route of interrupt `pin` (1 = INTA .. 4 = INTD, the config-space 0x3D value)
    /// of a function reached from root bus `root_bus` of `segment` through `path`: one
    /// (device, function) per hop, first the one on the root bus, last the function
    /// itself. Bridges along the path that have no `_PRT` apply the standard swizzle
    /// (PCI-to-PCI Bridge spec §9.1: pin on the parent = ((pin-1) + device) % 4 + 1, at
    /// the bridge's own device number); the deepest ancestor with a `_PRT` answers.
    /// None when nothing describes the pin.
    pub fn route(&self, segment: u16, root_bus: u8, path: &[(u8, u8)], pin: u8) -> Option<IntxRoute> {
        if !(1..=4).contains(&pin) {
            return None;
        }
        // Deepest table first: the bridge at path[..k] describes the device path[k].
        let (k, table) = (0..path.len()).rev().find_map(|k| {
            let prefix = path.get(..k)?;
            let table =
                self.tables.iter().find(|t| t.segment == segment && t.root_bus == root_bus && t.path == prefix)?;
            Some((k, table))
        })?;
        // Swizzle from the function itself up to the device on the table's bus; pins
        // are 0-based from here on.
        let mut pin0 = pin.checked_sub(1)?;
        for &(device, _) in path.get(k.checked_add(1)?..)?.iter().rev() {
            pin0 = pin0.wrapping_add(device) & 3;
        }
        let &(device, function) = path.get(k)?;
        table
            .entries
            .iter()
            .find(|e| e.device == device && e.pin == pin0 && e.function.is_none_or(|f| f == function))
            .map(|e| e.route)
    }

    /// Number of `_PRT` tables found (for a boot log line).
    pub fn table_count(&self) -> usize {
        self.tables.len()
    }
}

/// The compressed EISA ID of a `_HID`/`_CID` integer (ACPI 6.5 §6.1.5) as text.
fn eisa_id(id: u64) -> String {
    let v = u32::try_from(id & 0xffff_ffff).unwrap_or(0).swap_bytes();
    let letter = |shift: u32| char::from(0x40u8.wrapping_add(u8::try_from((v >> shift) & 0x1f).unwrap_or(0)));
    format!("{}{}{}{:04X}", letter(26), letter(21), letter(16), v & 0xffff)
}

fn is_pci_id(value: &Value) -> bool {
    match value {
        Value::Integer(id) => matches!(eisa_id(*id).as_str(), "PNP0A03" | "PNP0A08"),
        Value::String(s) => matches!(s.as_str(), "PNP0A03" | "PNP0A08"),
        Value::Package(ids) => ids.iter().any(is_pci_id),
        _ => false,
    }
}

/// Whether `_HID` or `_CID` names a PCI host bridge. Failing `_HID` methods are
/// common on devices that have nothing to do with PCI, so they are not reported.
fn is_host_bridge(ns: &mut Namespace<'_>, device: &[Seg]) -> bool {
    [HID, CID].into_iter().any(|id| {
        let path = child(device, id);
        ns.objects.contains_key(&path) && evaluate(ns, &path, Vec::new()).is_ok_and(|v| is_pci_id(&v))
    })
}

/// An optional integer object of `device` (`_SEG`, `_BBN`, `_ADR`), `default` when it
/// does not exist; `None` (with a problem) when it fails or is out of range.
fn small_int(
    ns: &mut Namespace<'_>,
    device: &[Seg],
    seg: Seg,
    default: u64,
    max: u64,
    problems: &mut Vec<String>,
) -> Option<u64> {
    let path = child(device, seg);
    if !ns.objects.contains_key(&path) {
        return Some(default);
    }
    match evaluate(ns, &path, Vec::new()) {
        Ok(Value::Integer(v)) if v <= max => Some(v),
        Ok(other) => {
            problems.push(format!(
                "{}: unusable value ({}); its routing is skipped",
                path_str(&path),
                other.type_name()
            ));
            None
        }
        Err(e) => {
            problems.push(format!("{}: {}; its routing is skipped", path_str(&path), ns.describe(&e)));
            None
        }
    }
}

/// The (device, function) hops from the host bridge to `device`, from the `_ADR` of
/// every Device on the way (the device itself included).
fn hops(ns: &mut Namespace<'_>, host: &[Seg], device: &[Seg], problems: &mut Vec<String>) -> Option<Vec<(u8, u8)>> {
    let mut path = Vec::new();
    for len in host.len().checked_add(1)?..=device.len() {
        let node = device.get(..len)?;
        if !matches!(ns.objects.get(node), Some(Object::Scope { device: true })) {
            continue;
        }
        if !ns.objects.contains_key(&child(node, ADR)) {
            problems.push(format!("{}: no _ADR, so the _PRT of {} is not used", path_str(node), path_str(device)));
            return None;
        }
        let adr = small_int(ns, node, ADR, 0, u32::MAX.into(), problems)?;
        let dev = u8::try_from((adr >> 16) & 0x1f).unwrap_or(0);
        let function = u8::try_from(adr & 0x7).unwrap_or(0);
        path.push((dev, function));
    }
    Some(path)
}

/// Evaluates `device._PRT` into entries; `None` (with a problem) when the evaluation
/// fails. Entries that cannot be resolved are dropped one by one, with a problem.
fn evaluate_prt(
    ns: &mut Namespace<'_>,
    device: &[Seg],
    links: &mut LinkCache,
    problems: &mut Vec<String>,
) -> Option<Vec<Entry>> {
    let path = child(device, PRT);
    let list = match evaluate(ns, &path, Vec::new()) {
        Ok(Value::Package(list)) => list,
        Ok(other) => {
            problems.push(format!("{}: returned {}, not a package", path_str(&path), other.type_name()));
            return None;
        }
        Err(e) => {
            problems.push(format!("{}: {}", path_str(&path), ns.describe(&e)));
            return None;
        }
    };
    let mut entries = Vec::new();
    for (i, element) in list.iter().enumerate() {
        match entry(ns, device, element, links) {
            Ok(e) => entries.push(e),
            Err(why) => problems.push(format!("{} entry {i}: {why}", path_str(&path))),
        }
    }
    Some(entries)
}

fn entry(ns: &mut Namespace<'_>, device: &[Seg], element: &Value, links: &mut LinkCache) -> Result<Entry, PrtError> {
    let Value::Package(fields) = element else {
        return Err(PrtError::NotAPackage(element.type_name()));
    };
    let int = |index: usize| match fields.get(index) {
        Some(Value::Integer(v)) => Ok(*v),
        Some(other) => Err(PrtError::FieldType { index, found: other.type_name() }),
        None => Err(PrtError::FieldMissing { index }),
    };
    let (address, pin, index) = (int(0)?, int(1)?, int(3)?);
    let (Ok(pin @ 0..=3), Ok(device_number @ 0..=31)) = (u8::try_from(pin), u8::try_from(address >> 16)) else {
        return Err(PrtError::OutOfRange { address, pin });
    };
    let function = match address & 0xffff {
        0xffff => None,
        f => Some(u8::try_from(f & 0x7).unwrap_or(0)),
    };
    let link = match fields.get(2) {
        Some(Value::Integer(0)) => {
            // §6.2.13: Source Index is the GSI; such interrupts are level, active low.
            let gsi = u32::try_from(index).map_err(|_| PrtError::GsiOutOfRange(index))?;
            let route = IntxRoute { gsi, level_triggered: true, active_low: true };
            return Ok(Entry { device: device_number, function, pin, route });
        }
        Some(Value::Reference { name, scope }) => ns.resolve(name, scope),
        Some(Value::String(text)) => NameString::from_text(text).and_then(|n| ns.resolve(&n, device)),
        Some(other) => return Err(PrtError::SourceType(other.type_name())),
        None => return Err(PrtError::SourceMissing),
    }
    .ok_or(PrtError::UndefinedLink)?;
    let route = links.route(ns, &link, index)?;
    Ok(Entry { device: device_number, function, pin, route })
}

/// The `_CRS` of each link device, evaluated once.
#[derive(Default)]
struct LinkCache(BTreeMap<Path, Result<Vec<u8>, PrtError>>);

impl LinkCache {
    fn route(&mut self, ns: &mut Namespace<'_>, link: &[Seg], index: u64) -> Result<IntxRoute, PrtError> {
        let crs = self
            .0
            .entry(link.to_vec())
            .or_insert_with(|| match evaluate(ns, &child(link, CRS), Vec::new()) {
                Ok(Value::Buffer(bytes)) => Ok(bytes),
                Ok(other) => Err(PrtError::CrsNotABuffer { link: link.to_vec(), found: other.type_name() }),
                Err(e) => Err(PrtError::CrsFailed { link: link.to_vec(), aml: ns.describe(&e) }),
            })
            .clone()?;
        interrupt(&crs, index).ok_or_else(|| PrtError::NoInterrupt { link: link.to_vec(), index })
    }
}

/// The `index`th interrupt of the first Extended Interrupt (ACPI 6.5 §6.4.3.6) or IRQ
/// (§6.4.2.1) descriptor of a resource template.
pub(crate) fn interrupt(template: &[u8], index: u64) -> Option<IntxRoute> {
    let index = usize::try_from(index).ok()?;
    let mut at = 0usize;
    while let Some(&tag) = template.get(at) {
        if tag & 0x80 != 0 {
            let len = usize::from(u16::from_le_bytes([
                *template.get(at.checked_add(1)?)?,
                *template.get(at.checked_add(2)?)?,
            ]));
            let body = template.get(at.checked_add(3)?..at.checked_add(3)?.checked_add(len)?)?;
            if tag == 0x89 {
                let flags = *body.first()?;
                let count = usize::from(*body.get(1)?);
                if index >= count {
                    return None;
                }
                let offset = index.checked_mul(4)?.checked_add(2)?;
                let gsi = u32::from_le_bytes(body.get(offset..offset.checked_add(4)?)?.try_into().ok()?);
                return Some(IntxRoute { gsi, level_triggered: flags & 0x02 == 0, active_low: flags & 0x04 != 0 });
            }
            at = at.checked_add(3)?.checked_add(len)?;
        } else {
            let len = usize::from(tag & 0x07);
            let body = template.get(at.checked_add(1)?..at.checked_add(1)?.checked_add(len)?)?;
            match tag >> 3 {
                0x04 if len >= 2 => {
                    let mask = u16::from_le_bytes([*body.first()?, *body.get(1)?]);
                    // Without the information byte: edge-triggered, active high.
                    let info = body.get(2).copied().unwrap_or(0x01);
                    let irq = (0..16u32).filter(|&bit| (mask >> bit) & 1 != 0).nth(index)?;
                    return Some(IntxRoute {
                        gsi: irq,
                        level_triggered: info & 0x01 == 0,
                        active_low: info & 0x08 != 0,
                    });
                }
                0x0f => return None, // End Tag
                _ => at = at.checked_add(1)?.checked_add(len)?,
            }
        }
    }
    None
}
