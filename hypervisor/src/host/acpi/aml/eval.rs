//! The method interpreter (ACPI 6.5 §19.6 semantics of the §20.2.5 opcodes): control
//! flow, integer arithmetic and comparisons, locals, arguments, stores into named
//! integers, data objects and method calls. It is bounded by a step budget per
//! evaluation (and one for all evaluations together) and by a nesting limit that
//! counts blocks, expressions and calls. Anything else fails the evaluation with a
//! described error.

use alloc::vec::Vec;
use core::cmp::Ordering;

use super::{AmlError, Path, Seg, Value, path_str};
use crate::host::acpi::aml::namespace::{Namespace, Object};
use crate::host::acpi::aml::parse::{self, AmlCursor, EXT_OP, NameString};

/// Opcodes executed per evaluation (`_PRT` methods need a few dozen).
const MAX_STEPS: u32 = 100_000;
/// Opcodes executed by all evaluations of one namespace together.
const MAX_TOTAL_STEPS: u64 = 4_000_000;
/// Blocks, expressions and method calls nested inside one another.
const MAX_DEPTH: u32 = 48;

const NAME_OP: u8 = 0x08;
const STORE_OP: u8 = 0x70;
const INCREMENT_OP: u8 = 0x75;
const DECREMENT_OP: u8 = 0x76;
const DIVIDE_OP: u8 = 0x78;
const NOT_OP: u8 = 0x80;
const SIZE_OF_OP: u8 = 0x87;
const LAND_OP: u8 = 0x90;
const LOR_OP: u8 = 0x91;
const LNOT_OP: u8 = 0x92;
const LEQUAL_OP: u8 = 0x93;
const LGREATER_OP: u8 = 0x94;
const LLESS_OP: u8 = 0x95;
const CONTINUE_OP: u8 = 0x9f;
const IF_OP: u8 = 0xa0;
const ELSE_OP: u8 = 0xa1;
const WHILE_OP: u8 = 0xa2;
const NOOP_OP: u8 = 0xa3;
const RETURN_OP: u8 = 0xa4;
const BREAK_OP: u8 = 0xa5;
const LOCAL0: u8 = 0x60;
const LOCAL7: u8 = 0x67;
const ARG0: u8 = 0x68;
const ARG6: u8 = 0x6e;
const EXT_STALL: u8 = 0x21;
const EXT_SLEEP: u8 = 0x22;
const EXT_DEBUG: u8 = 0x31;

/// Evaluates the object at `path`: a named data object's value, or a method's result
/// (`args` are its arguments). Aliases are followed.
pub(crate) fn evaluate(ns: &mut Namespace<'_>, path: &[Seg], args: Vec<Value>) -> Result<Value, AmlError> {
    let name = NameString { root: true, parents: 0, segs: path.to_vec() };
    let path = ns.resolve(&name, &[]).ok_or_else(|| AmlError::Undefined(path_str(path)))?;
    Interp { ns, steps: 0 }.value_of(&path, args, 0)
}

enum EvalFlow {
    Normal,
    Return(Value),
    Break,
    Continue,
}

/// Where a Store or an Increment writes.
enum Place {
    Null,
    Debug,
    Local(usize),
    Arg(usize),
    Named(Path),
}

#[derive(Default)]
struct Frame {
    scope: Path,
    args: [Option<Value>; 7],
    locals: [Option<Value>; 8],
    /// Names the method created (removed when it returns).
    created: Vec<Path>,
}

struct Interp<'n, 'a> {
    ns: &'n mut Namespace<'a>,
    steps: u32,
}

fn deeper(depth: u32) -> Result<u32, AmlError> {
    depth.checked_add(1).filter(|&d| d <= MAX_DEPTH).ok_or(AmlError::TooDeep)
}

fn truth(b: bool, ones: u64) -> Value {
    Value::Integer(if b { ones } else { 0 })
}

impl Interp<'_, '_> {
    fn tick(&mut self) -> Result<(), AmlError> {
        self.steps = self.steps.saturating_add(1);
        self.ns.total_steps = self.ns.total_steps.saturating_add(1);
        if self.steps > MAX_STEPS || self.ns.total_steps > MAX_TOTAL_STEPS {
            return Err(AmlError::StepBudget);
        }
        Ok(())
    }

    fn value_of(&mut self, path: &[Seg], args: Vec<Value>, depth: u32) -> Result<Value, AmlError> {
        match self.ns.objects.get(path) {
            Some(Object::Name(value)) => Ok(value.clone()),
            Some(&Object::Method { table, start, end, .. }) => self.call(path, table, start, end, args, depth),
            Some(Object::Scope { device: true }) => Err(AmlError::NoAccess(path_str(path), "a device")),
            Some(Object::Scope { device: false }) => Err(AmlError::NoAccess(path_str(path), "a scope")),
            Some(Object::Alias(_)) => Err(AmlError::NoAccess(path_str(path), "an alias chain")),
            Some(Object::Opaque(what)) => Err(AmlError::NoAccess(path_str(path), what)),
            None => Err(AmlError::Undefined(path_str(path))),
        }
    }

    fn call(
        &mut self,
        path: &[Seg],
        table: usize,
        start: usize,
        end: usize,
        args: Vec<Value>,
        depth: u32,
    ) -> Result<Value, AmlError> {
        let depth = deeper(depth)?;
        let data = self.ns.tables.get(table).copied().unwrap_or_default();
        let mut c = AmlCursor::new(data, table, start, end);
        let mut frame = Frame { scope: path.to_vec(), ..Frame::default() };
        frame.args.iter_mut().zip(args).for_each(|(slot, arg)| *slot = Some(arg));
        let result = self.exec_block(&mut frame, &mut c, depth);
        for created in &frame.created {
            self.ns.objects.remove(created);
        }
        match result? {
            EvalFlow::Return(value) => Ok(value),
            _ => Ok(Value::Integer(0)),
        }
    }

    fn exec_block(&mut self, f: &mut Frame, c: &mut AmlCursor<'_>, depth: u32) -> Result<EvalFlow, AmlError> {
        let depth = deeper(depth)?;
        while !c.at_end() {
            match self.exec_stmt(f, c, depth)? {
                EvalFlow::Normal => {}
                flow => return Ok(flow),
            }
        }
        Ok(EvalFlow::Normal)
    }

    fn exec_stmt(&mut self, f: &mut Frame, c: &mut AmlCursor<'_>, depth: u32) -> Result<EvalFlow, AmlError> {
        self.tick()?;
        match c.peek() {
            Some(IF_OP) => {
                c.byte()?;
                let end = c.pkg_end()?;
                let mut inner = c.until(end);
                let predicate = self.eval_int(f, &mut inner, depth)?;
                let mut flow = if predicate != 0 { self.exec_block(f, &mut inner, depth)? } else { EvalFlow::Normal };
                c.pos = end;
                if c.peek() == Some(ELSE_OP) {
                    c.byte()?;
                    let else_end = c.pkg_end()?;
                    if predicate == 0 {
                        flow = self.exec_block(f, &mut c.until(else_end), depth)?;
                    }
                    c.pos = else_end;
                }
                Ok(flow)
            }
            Some(ELSE_OP) => {
                c.byte()?;
                c.pos = c.pkg_end()?;
                Ok(EvalFlow::Normal)
            }
            Some(WHILE_OP) => {
                c.byte()?;
                let end = c.pkg_end()?;
                loop {
                    self.tick()?;
                    let mut inner = c.until(end);
                    if self.eval_int(f, &mut inner, depth)? == 0 {
                        break;
                    }
                    match self.exec_block(f, &mut inner, depth)? {
                        EvalFlow::Break => break,
                        EvalFlow::Return(value) => return Ok(EvalFlow::Return(value)),
                        EvalFlow::Normal | EvalFlow::Continue => {}
                    }
                }
                c.pos = end;
                Ok(EvalFlow::Normal)
            }
            Some(RETURN_OP) => {
                c.byte()?;
                Ok(EvalFlow::Return(self.eval_term(f, c, depth)?))
            }
            Some(BREAK_OP) => c.byte().map(|_| EvalFlow::Break),
            Some(CONTINUE_OP) => c.byte().map(|_| EvalFlow::Continue),
            Some(NOOP_OP) => c.byte().map(|_| EvalFlow::Normal),
            Some(NAME_OP) => {
                let start = c.pos;
                c.byte()?;
                let name = c.name_string()?;
                let path = name.absolute(&f.scope).filter(|p| !p.is_empty());
                let path = path.ok_or(AmlError::BadName { table: c.table, offset: start })?;
                let value = parse::data_object(c, &f.scope, self.ns.ones)?;
                if self.ns.objects.insert(path.clone(), Object::Name(value)).is_none() {
                    f.created.push(path);
                }
                Ok(EvalFlow::Normal)
            }
            Some(EXT_OP) if matches!(c.peek_at(1), Some(EXT_SLEEP | EXT_STALL)) => {
                c.take(2)?;
                self.eval_int(f, c, depth)?;
                Ok(EvalFlow::Normal)
            }
            _ => {
                self.eval_term(f, c, depth)?;
                Ok(EvalFlow::Normal)
            }
        }
    }

    fn eval_int(&mut self, f: &mut Frame, c: &mut AmlCursor<'_>, depth: u32) -> Result<u64, AmlError> {
        let value = self.eval_term(f, c, depth)?;
        self.to_int(&value)
    }

    /// Implicit conversion to an integer (§19.3.5.5): buffers little-endian, strings
    /// as hexadecimal.
    fn to_int(&self, value: &Value) -> Result<u64, AmlError> {
        let ones = self.ns.ones;
        match value {
            Value::Integer(v) => Ok(*v),
            Value::Buffer(bytes) => {
                let width = if ones == u64::MAX { 8 } else { 4 };
                Ok(bytes.iter().take(width).rev().fold(0u64, |a, &b| a.checked_shl(8).unwrap_or(0) | u64::from(b)))
            }
            Value::String(s) => Ok(s
                .chars()
                .map_while(|ch| ch.to_digit(16))
                .take(16)
                .fold(0u64, |a, d| a.checked_shl(4).unwrap_or(0) | u64::from(d))
                & ones),
            other => Err(AmlError::Type("an integer", other.type_name())),
        }
    }

    fn eval_term(&mut self, f: &mut Frame, c: &mut AmlCursor<'_>, depth: u32) -> Result<Value, AmlError> {
        let depth = deeper(depth)?;
        self.tick()?;
        let ones = self.ns.ones;
        let start = c.pos;
        let op = c.peek().ok_or_else(|| c.truncated())?;
        if parse::starts_name(op) {
            let name = c.name_string()?;
            return self.name_term(f, c, &name, depth);
        }
        if let Some(value) = parse::const_integer(c, ones)? {
            return Ok(Value::Integer(value & ones));
        }
        if matches!(op, parse::STRING_PREFIX | parse::BUFFER_OP | parse::PACKAGE_OP | parse::VAR_PACKAGE_OP) {
            return parse::data_object(c, &f.scope, ones);
        }
        c.byte()?;
        match op {
            LOCAL0..=LOCAL7 | ARG0..=ARG6 => {
                c.pos = start;
                let place = self.target(f, c)?;
                self.read(f, &place, depth)
            }
            STORE_OP => {
                let value = self.eval_term(f, c, depth)?;
                let place = self.target(f, c)?;
                self.write(f, place, value.clone())?;
                Ok(value)
            }
            INCREMENT_OP | DECREMENT_OP => {
                let place = self.target(f, c)?;
                let old = self.read(f, &place, depth)?;
                let old = self.to_int(&old)?;
                let new = if op == INCREMENT_OP { old.wrapping_add(1) } else { old.wrapping_sub(1) } & ones;
                self.write(f, place, Value::Integer(new))?;
                Ok(Value::Integer(new))
            }
            0x72 | 0x74 | 0x77 | 0x79..=0x7f | 0x85 => {
                let a = self.eval_int(f, c, depth)?;
                let b = self.eval_int(f, c, depth)?;
                let result = Value::Integer(arith(op, a, b)? & ones);
                let place = self.target(f, c)?;
                self.write(f, place, result.clone())?;
                Ok(result)
            }
            DIVIDE_OP => {
                let a = self.eval_int(f, c, depth)?;
                let b = self.eval_int(f, c, depth)?;
                let quotient = a.checked_div(b).ok_or(AmlError::DivideByZero)?;
                let remainder = a.checked_rem(b).ok_or(AmlError::DivideByZero)?;
                let place = self.target(f, c)?;
                self.write(f, place, Value::Integer(remainder))?;
                let place = self.target(f, c)?;
                self.write(f, place, Value::Integer(quotient))?;
                Ok(Value::Integer(quotient))
            }
            NOT_OP => {
                let result = Value::Integer(!self.eval_int(f, c, depth)? & ones);
                let place = self.target(f, c)?;
                self.write(f, place, result.clone())?;
                Ok(result)
            }
            LAND_OP | LOR_OP => {
                let a = self.eval_int(f, c, depth)? != 0;
                let b = self.eval_int(f, c, depth)? != 0;
                Ok(truth(if op == LAND_OP { a && b } else { a || b }, ones))
            }
            LNOT_OP => Ok(truth(self.eval_int(f, c, depth)? == 0, ones)),
            LEQUAL_OP | LGREATER_OP | LLESS_OP => {
                let a = self.eval_term(f, c, depth)?;
                let b = self.eval_term(f, c, depth)?;
                let order = self.compare(&a, &b)?;
                let wanted = match op {
                    LEQUAL_OP => Ordering::Equal,
                    LGREATER_OP => Ordering::Greater,
                    _ => Ordering::Less,
                };
                Ok(truth(order == wanted, ones))
            }
            SIZE_OF_OP => {
                let place = self.target(f, c)?;
                let size = match self.read(f, &place, depth)? {
                    Value::String(s) => s.len(),
                    Value::Buffer(b) => b.len(),
                    Value::Package(p) => p.len(),
                    other => return Err(AmlError::Type("a string, buffer or package", other.type_name())),
                };
                Ok(Value::Integer(size as u64))
            }
            EXT_OP => {
                let ext = c.byte()?;
                Err(c.unsupported(start, op, Some(ext)))
            }
            _ => Err(c.unsupported(start, op, None)),
        }
    }

    /// A name in a term position: a method call (its arguments follow, as many as its
    /// flags say) or the value of a named object.
    fn name_term(
        &mut self,
        f: &mut Frame,
        c: &mut AmlCursor<'_>,
        name: &NameString,
        depth: u32,
    ) -> Result<Value, AmlError> {
        let path = self.ns.resolve(name, &f.scope).ok_or_else(|| undefined(name, &f.scope))?;
        let mut args = Vec::new();
        if let Some(&Object::Method { args: count, .. }) = self.ns.objects.get(&path) {
            for _ in 0..count {
                args.push(self.eval_term(f, c, depth)?);
            }
        }
        self.value_of(&path, args, depth)
    }

    fn compare(&self, a: &Value, b: &Value) -> Result<Ordering, AmlError> {
        match (a, b) {
            (Value::Integer(a), b) => Ok(a.cmp(&self.to_int(b)?)),
            (Value::String(a), Value::String(b)) => Ok(a.cmp(b)),
            (Value::Buffer(a), Value::Buffer(b)) => Ok(a.cmp(b)),
            (a, _) => Err(AmlError::Type("an integer, string or buffer", a.type_name())),
        }
    }

    /// A Target or SuperName (§20.2.2): NullName, Local, Arg, Debug or a name.
    fn target(&mut self, f: &Frame, c: &mut AmlCursor<'_>) -> Result<Place, AmlError> {
        let start = c.pos;
        let op = c.peek().ok_or_else(|| c.truncated())?;
        if parse::starts_name(op) {
            let name = c.name_string()?;
            return self.ns.resolve(&name, &f.scope).map(Place::Named).ok_or_else(|| undefined(&name, &f.scope));
        }
        c.byte()?;
        match op {
            parse::ZERO_OP => Ok(Place::Null),
            LOCAL0..=LOCAL7 => Ok(Place::Local(usize::from(op.saturating_sub(LOCAL0)))),
            ARG0..=ARG6 => Ok(Place::Arg(usize::from(op.saturating_sub(ARG0)))),
            EXT_OP if c.peek() == Some(EXT_DEBUG) => c.byte().map(|_| Place::Debug),
            EXT_OP => Err(c.unsupported(start, op, c.peek())),
            _ => Err(c.unsupported(start, op, None)),
        }
    }

    fn read(&mut self, f: &Frame, place: &Place, depth: u32) -> Result<Value, AmlError> {
        match place {
            Place::Local(i) => f.locals.get(*i).cloned().flatten().ok_or(AmlError::Uninitialized("Local", index(*i))),
            Place::Arg(i) => f.args.get(*i).cloned().flatten().ok_or(AmlError::Uninitialized("Arg", index(*i))),
            Place::Named(path) => self.value_of(path, Vec::new(), depth),
            Place::Null | Place::Debug => Err(AmlError::Type("an object", "the Debug object or nothing")),
        }
    }

    fn write(&mut self, f: &mut Frame, place: Place, value: Value) -> Result<(), AmlError> {
        let slot = match place {
            Place::Null | Place::Debug => return Ok(()),
            Place::Local(i) => f.locals.get_mut(i),
            Place::Arg(i) => f.args.get_mut(i),
            Place::Named(path) => {
                return match self.ns.objects.get_mut(&path) {
                    Some(Object::Name(slot)) => {
                        *slot = value;
                        Ok(())
                    }
                    Some(Object::Method { .. }) => Err(AmlError::NoAccess(path_str(&path), "a method")),
                    Some(Object::Opaque(what)) => Err(AmlError::NoAccess(path_str(&path), what)),
                    Some(_) => Err(AmlError::NoAccess(path_str(&path), "not a data object")),
                    None => Err(AmlError::Undefined(path_str(&path))),
                };
            }
        };
        if let Some(slot) = slot {
            *slot = Some(value);
        }
        Ok(())
    }
}

fn index(i: usize) -> u8 {
    u8::try_from(i).unwrap_or(u8::MAX)
}

fn undefined(name: &NameString, scope: &[Seg]) -> AmlError {
    AmlError::Undefined(
        name.absolute(scope).map_or_else(|| alloc::string::String::from("^ above the root"), |p| path_str(&p)),
    )
}

/// The integer operators with two operands and a target (§19.6).
fn arith(op: u8, a: u64, b: u64) -> Result<u64, AmlError> {
    let shift = u32::try_from(b).unwrap_or(u32::MAX);
    Ok(match op {
        0x72 => a.wrapping_add(b),
        0x74 => a.wrapping_sub(b),
        0x77 => a.wrapping_mul(b),
        0x79 => a.checked_shl(shift).unwrap_or(0),
        0x7a => a.checked_shr(shift).unwrap_or(0),
        0x7b => a & b,
        0x7c => !(a & b),
        0x7d => a | b,
        0x7e => !(a | b),
        0x7f => a ^ b,
        _ => a.checked_rem(b).ok_or(AmlError::DivideByZero)?, // 0x85 Mod
    })
}
