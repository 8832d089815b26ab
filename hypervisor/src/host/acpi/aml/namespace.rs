//! Loading DSDT and SSDTs into one namespace (ACPI 6.5 §5.3, §20.2.5): scopes and
//! devices are walked into, named data objects are parsed, method bodies are only
//! recorded, and the other named objects (regions, fields, mutexes, ...) are skipped
//! over and kept as opaque names. A construct the loader cannot parse ends the
//! enclosing scope (its PkgLength says where the next one starts), with a problem.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::{AmlError, Path, Seg, Value, path_str};
use crate::host::acpi::aml::parse::{self, AmlCursor, EXT_OP, NameString};
use crate::host::acpi::bytes::{SDT_HEADER_LEN, u32_at};
/// Scopes nested deeper than this are refused.
const MAX_SCOPE_DEPTH: u32 = 48;
/// Alias chains longer than this are refused.
const MAX_ALIAS_HOPS: u32 = 8;

const ALIAS_OP: u8 = 0x06;
const NAME_OP: u8 = 0x08;
const SCOPE_OP: u8 = 0x10;
const METHOD_OP: u8 = 0x14;
const EXTERNAL_OP: u8 = 0x15;
const CREATE_DWORD_FIELD_OP: u8 = 0x8a;
const CREATE_WORD_FIELD_OP: u8 = 0x8b;
const CREATE_BYTE_FIELD_OP: u8 = 0x8c;
const CREATE_BIT_FIELD_OP: u8 = 0x8d;
const CREATE_QWORD_FIELD_OP: u8 = 0x8f;
const IF_OP: u8 = 0xa0;
const ELSE_OP: u8 = 0xa1;
const NOOP_OP: u8 = 0xa3;

/// Second bytes after the 0x5B extended-opcode prefix.
mod ext {
    pub const MUTEX: u8 = 0x01;
    pub const EVENT: u8 = 0x02;
    pub const CREATE_FIELD: u8 = 0x13;
    pub const OP_REGION: u8 = 0x80;
    pub const FIELD: u8 = 0x81;
    pub const DEVICE: u8 = 0x82;
    pub const PROCESSOR: u8 = 0x83;
    pub const POWER_RES: u8 = 0x84;
    pub const THERMAL_ZONE: u8 = 0x85;
    pub const INDEX_FIELD: u8 = 0x86;
    pub const BANK_FIELD: u8 = 0x87;
    pub const DATA_REGION: u8 = 0x88;
}

/// One named object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Object {
    /// Scope, Device, Processor, PowerResource or ThermalZone: a node with children.
    Scope {
        device: bool,
    },
    /// A named data object; mutable (methods store into them).
    Name(Value),
    /// A method: its body bytes in `table`, and the argument count from its flags.
    Method {
        table: usize,
        start: usize,
        end: usize,
        args: u8,
    },
    Alias(Path),
    /// A named object the interpreter cannot read or write (region, field, mutex...).
    Opaque(&'static str),
}

/// The loaded namespace.
#[derive(Debug, Default)]
pub(crate) struct Namespace<'a> {
    pub tables: Vec<&'a [u8]>,
    /// "DSDT", "SSDT1", ... for problem messages.
    pub labels: Vec<String>,
    pub objects: BTreeMap<Path, Object>,
    /// All-ones for the integer width: 32 bits when the DSDT revision is below 2
    /// (ACPI 6.5 §19.6.102 DefinitionBlock ComplianceRevision).
    pub ones: u64,
    /// Steps spent by all evaluations so far (bounded in `eval`).
    pub total_steps: u64,
}

/// What loading one table reports: the problems found, and how many top-level `If`
/// blocks it left out.
struct LoadLog<'p> {
    problems: &'p mut Vec<String>,
    skipped_ifs: u32,
}

impl<'a> Namespace<'a> {
    /// Loads every table (full SDTs, header included) into one namespace.
    pub(crate) fn load(tables: &[&'a [u8]], problems: &mut Vec<String>) -> Self {
        let mut ns = Namespace { ones: u64::MAX, ..Namespace::default() };
        for seg in [*b"_SB_", *b"_GPE", *b"_PR_", *b"_TZ_", *b"_SI_"] {
            ns.objects.insert(alloc::vec![seg], Object::Scope { device: false });
        }
        let mut ssdts = 0u32;
        for (index, table) in tables.iter().enumerate() {
            let signature = table.get(..4).unwrap_or(b"????");
            let label = if signature == b"SSDT" {
                ssdts = ssdts.saturating_add(1);
                format!("SSDT{ssdts}")
            } else {
                signature.iter().map(|&b| if b.is_ascii_graphic() { char::from(b) } else { '?' }).collect()
            };
            ns.tables.push(table);
            ns.labels.push(label);
            if table.len() < SDT_HEADER_LEN {
                problems.push(format!("{}: shorter than its header ({} bytes)", ns.label(index), table.len()));
                continue;
            }
            if signature == b"DSDT" && table.get(8).is_some_and(|&rev| rev < 2) {
                ns.ones = u64::from(u32::MAX);
            }
            // The header's length field, clamped to the bytes actually present.
            let declared = u32_at(table, 4).map_or(0, |l| usize::try_from(l).unwrap_or(usize::MAX));
            let end = declared.clamp(SDT_HEADER_LEN, table.len());
            if declared > table.len() {
                problems.push(format!(
                    "{}: header says {declared} bytes, only {} present",
                    ns.label(index),
                    table.len()
                ));
            }
            let mut c = AmlCursor::new(table, index, SDT_HEADER_LEN, end);
            let mut log = LoadLog { problems: &mut *problems, skipped_ifs: 0 };
            let loaded = ns.load_terms(&mut c, &[], 0, &mut log);
            let skipped_ifs = log.skipped_ifs;
            if let Err(e) = loaded {
                problems.push(format!("{}: {}; the rest of the table is ignored", ns.label(index), ns.describe(&e)));
            }
            if skipped_ifs > 0 {
                problems.push(format!(
                    "{}: {skipped_ifs} top-level If block(s) with a non-constant predicate not loaded",
                    ns.label(index)
                ));
            }
        }
        ns
    }

    pub(crate) fn label(&self, table: usize) -> &str {
        self.labels.get(table).map_or("table?", String::as_str)
    }

    pub(crate) fn describe(&self, e: &AmlError) -> String {
        e.describe(&self.labels)
    }

    /// Finds the object `name` denotes from `scope` (§5.3: a bare single segment is
    /// searched for in the scope and then each parent up to the root), following
    /// aliases. Returns the object's absolute path.
    pub(crate) fn resolve(&self, name: &NameString, scope: &[Seg]) -> Option<Path> {
        let mut path = if name.is_single() {
            let mut s = scope.to_vec();
            loop {
                let mut candidate = s.clone();
                candidate.extend_from_slice(&name.segs);
                if self.objects.contains_key(&candidate) {
                    break candidate;
                }
                s.pop()?;
            }
        } else {
            let path = name.absolute(scope)?;
            if name.segs.is_empty() || !self.objects.contains_key(&path) {
                return None;
            }
            path
        };
        for _ in 0..MAX_ALIAS_HOPS {
            match self.objects.get(&path) {
                Some(Object::Alias(target)) => path = target.clone(),
                Some(_) => return Some(path),
                None => return None,
            }
        }
        None
    }

    /// The argument count of the method `name` denotes from `scope`; 0 for anything
    /// else (used to skip calls at load time).
    pub(crate) fn arg_count(&self, name: &NameString, scope: &[Seg]) -> u8 {
        match self.resolve(name, scope).and_then(|p| self.objects.get(&p)) {
            Some(Object::Method { args, .. }) => *args,
            _ => 0,
        }
    }

    /// Adds an object unless the name is taken. Re-opening a scope keeps it (a Device
    /// stays a Device); other duplicates keep the first definition, as ACPICA does.
    fn define(&mut self, path: Path, object: Object, problems: &mut Vec<String>) {
        match self.objects.get_mut(&path) {
            None => {
                self.objects.insert(path, object);
            }
            Some(Object::Scope { device }) => {
                if let Object::Scope { device: new } = object {
                    *device |= new;
                } else {
                    problems.push(format!("{}: defined twice, the first definition is kept", path_str(&path)));
                }
            }
            Some(_) => problems.push(format!("{}: defined twice, the first definition is kept", path_str(&path))),
        }
    }

    /// The path a new object called `name` gets in `scope` (no search).
    fn new_path(&self, c: &AmlCursor<'_>, at: usize, name: &NameString, scope: &[Seg]) -> Result<Path, AmlError> {
        match name.absolute(scope) {
            Some(path) if !path.is_empty() => Ok(path),
            _ => Err(AmlError::BadName { table: c.table, offset: at }),
        }
    }

    /// Loads a TermList up to the cursor's end into `scope`.
    fn load_terms(
        &mut self,
        c: &mut AmlCursor<'a>,
        scope: &[Seg],
        depth: u32,
        log: &mut LoadLog<'_>,
    ) -> Result<(), AmlError> {
        if depth > MAX_SCOPE_DEPTH {
            return Err(AmlError::TooDeep);
        }
        while !c.at_end() {
            let start = c.pos;
            let op = c.byte()?;
            match op {
                NOOP_OP => {}
                NAME_OP => {
                    let name = c.name_string()?;
                    let path = self.new_path(c, start, &name, scope)?;
                    let value = parse::data_object(c, scope, self.ones)?;
                    self.define(path, Object::Name(value), log.problems);
                }
                ALIAS_OP => {
                    let source = c.name_string()?;
                    let alias = c.name_string()?;
                    let path = self.new_path(c, start, &alias, scope)?;
                    match self.resolve(&source, scope) {
                        Some(target) => self.define(path, Object::Alias(target), log.problems),
                        None => self.define(path, Object::Opaque("an alias of an undefined name"), log.problems),
                    }
                }
                SCOPE_OP => {
                    let end = c.pkg_end()?;
                    let name = c.name_string()?;
                    let path = match self.resolve(&name, scope) {
                        Some(path) => path,
                        None => name.absolute(scope).ok_or(AmlError::BadName { table: c.table, offset: start })?,
                    };
                    if !path.is_empty() {
                        self.define(path.clone(), Object::Scope { device: false }, log.problems);
                    }
                    self.load_nested(c, end, &path, depth, log);
                }
                METHOD_OP => {
                    let end = c.pkg_end()?;
                    let name = c.name_string()?;
                    let flags = c.byte()?;
                    let path = self.new_path(c, start, &name, scope)?;
                    let method = Object::Method { table: c.table, start: c.pos, end, args: flags & 0x07 };
                    self.define(path, method, log.problems);
                    c.pos = end;
                }
                EXTERNAL_OP => {
                    c.name_string()?;
                    c.take(2)?;
                }
                CREATE_DWORD_FIELD_OP
                | CREATE_WORD_FIELD_OP
                | CREATE_BYTE_FIELD_OP
                | CREATE_BIT_FIELD_OP
                | CREATE_QWORD_FIELD_OP => {
                    // SourceBuff, Index, NameString.
                    self.skip_term(c, scope, 0)?;
                    self.skip_term(c, scope, 0)?;
                    let name = c.name_string()?;
                    let path = self.new_path(c, start, &name, scope)?;
                    self.define(path, Object::Opaque("a buffer field"), log.problems);
                }
                IF_OP => self.load_if(c, scope, depth, log)?,
                ELSE_OP => {
                    // An Else whose If was not loaded (or an orphan): skip.
                    c.pos = c.pkg_end()?;
                }
                EXT_OP => self.load_ext(c, start, scope, depth, log)?,
                _ => {
                    // Top-level code (a Store, a method call): skipped, not executed.
                    c.pos = start;
                    self.skip_term(c, scope, 0)?;
                }
            }
        }
        Ok(())
    }

    /// Loads the TermList of a nested scope ending at `end`; a failure inside it is
    /// recorded and loading resumes after it.
    fn load_nested(&mut self, c: &mut AmlCursor<'a>, end: usize, path: &[Seg], depth: u32, log: &mut LoadLog<'_>) {
        let mut inner = c.until(end);
        if let Err(e) = self.load_terms(&mut inner, path, depth.saturating_add(1), log) {
            log.problems.push(format!("{}: {}; the rest of this scope is ignored", path_str(path), self.describe(&e)));
        }
        c.pos = end;
    }

    /// A top-level `If`: loaded only when its predicate is a constant.
    fn load_if(
        &mut self,
        c: &mut AmlCursor<'a>,
        scope: &[Seg],
        depth: u32,
        log: &mut LoadLog<'_>,
    ) -> Result<(), AmlError> {
        let end = c.pkg_end()?;
        let mut inner = c.until(end);
        let predicate = parse::const_integer(&mut inner, self.ones)?;
        let else_end = if c.peek_at(end.saturating_sub(c.pos)) == Some(ELSE_OP) {
            c.pos = end.saturating_add(1);
            Some(c.pkg_end()?)
        } else {
            None
        };
        match predicate {
            Some(p) if p != 0 => {
                c.pos = inner.pos;
                self.load_nested(c, end, scope, depth, log);
            }
            Some(_) => {
                if let Some(else_end) = else_end {
                    self.load_nested(c, else_end, scope, depth, log);
                }
            }
            None => log.skipped_ifs = log.skipped_ifs.saturating_add(1),
        }
        c.pos = else_end.unwrap_or(end);
        Ok(())
    }

    /// Extended (0x5B-prefixed) named objects.
    fn load_ext(
        &mut self,
        c: &mut AmlCursor<'a>,
        start: usize,
        scope: &[Seg],
        depth: u32,
        log: &mut LoadLog<'_>,
    ) -> Result<(), AmlError> {
        let op = c.byte()?;
        match op {
            ext::DEVICE | ext::PROCESSOR | ext::POWER_RES | ext::THERMAL_ZONE => {
                let end = c.pkg_end()?;
                let name = c.name_string()?;
                let path = self.new_path(c, start, &name, scope)?;
                // ProcID, PblkAddr, PblkLen / SystemLevel, ResourceOrder.
                match op {
                    ext::PROCESSOR => drop(c.take(6)?),
                    ext::POWER_RES => drop(c.take(3)?),
                    _ => {}
                }
                self.define(path.clone(), Object::Scope { device: op == ext::DEVICE }, log.problems);
                self.load_nested(c, end, &path, depth, log);
            }
            ext::MUTEX | ext::EVENT => {
                let name = c.name_string()?;
                let path = self.new_path(c, start, &name, scope)?;
                if op == ext::MUTEX {
                    c.byte()?;
                }
                self.define(path, Object::Opaque(if op == ext::MUTEX { "a mutex" } else { "an event" }), log.problems);
            }
            ext::OP_REGION | ext::DATA_REGION => {
                let name = c.name_string()?;
                let path = self.new_path(c, start, &name, scope)?;
                if op == ext::OP_REGION {
                    c.byte()?; // RegionSpace
                    self.skip_term(c, scope, 0)?;
                    self.skip_term(c, scope, 0)?;
                } else {
                    for _ in 0..3 {
                        self.skip_term(c, scope, 0)?;
                    }
                }
                self.define(path, Object::Opaque("an operation region"), log.problems);
            }
            ext::FIELD => {
                let end = c.pkg_end()?;
                c.name_string()?; // region
                c.byte()?; // FieldFlags
                let mut list = c.until(end);
                self.load_field_list(&mut list, scope, log.problems)?;
                c.pos = end;
            }
            ext::INDEX_FIELD | ext::BANK_FIELD => c.pos = c.pkg_end()?,
            ext::CREATE_FIELD => {
                for _ in 0..3 {
                    self.skip_term(c, scope, 0)?;
                }
                let name = c.name_string()?;
                let path = self.new_path(c, start, &name, scope)?;
                self.define(path, Object::Opaque("a buffer field"), log.problems);
            }
            _ => return Err(c.unsupported(start, EXT_OP, Some(op))),
        }
        Ok(())
    }

    /// A FieldList (§20.2.5.2): each NamedField becomes an opaque field unit in `scope`.
    fn load_field_list(
        &mut self,
        c: &mut AmlCursor<'a>,
        scope: &[Seg],
        problems: &mut Vec<String>,
    ) -> Result<(), AmlError> {
        while let Some(b) = c.peek() {
            match b {
                0x00 => {
                    c.byte()?;
                    c.pkg_end_bits()?; // ReservedField
                }
                0x01 => drop(c.take(3)?),
                0x02 => {
                    c.byte()?;
                    if c.peek() == Some(parse::BUFFER_OP) {
                        parse::data_object(c, scope, self.ones)?;
                    } else {
                        c.name_string()?;
                    }
                }
                0x03 => drop(c.take(4)?),
                _ => {
                    let name = c.seg()?;
                    c.pkg_end_bits()?;
                    let mut path = scope.to_vec();
                    path.push(name);
                    self.define(path, Object::Opaque("a field unit"), problems);
                }
            }
        }
        Ok(())
    }
}
