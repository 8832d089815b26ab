//! The switcher at run time: the physical keyboard, the key router, the focus, the
//! overview and the notifications, and the compositor that keeps the screen showing
//! the focused VM under its trust strip. The scheduler calls [`Desk::poll_input`] and
//! [`Desk::refresh`] once per round, and [`Desk::vm_stopped`] when a VM stops.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt::Write as _;

use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::Size;
use log::{debug, info, warn};
use pc_keyboard::KeyCode;

use super::compositor::{self, FrameClock, FrameStats, Placement};
use super::hotkeys::{Action, Hotkeys};
use super::keys::Set1Decoder;
use super::router::{Focus, KeyRouter, Output};
use crate::arch::backend::Arch;
use crate::arch::exit::StopReason;
use crate::arch::x86::instr::rdtsc;
use crate::host::keyboard::{HostKeyboard, PortIo};
use crate::host::screen;
use crate::memory::addr::PAGE_SIZE;
use crate::vm::config::VmConfig;
use crate::vm::instance::{Vm, VmState};
use ui::notification::{Notification, Severity};
use ui::overview::{self, Direction, Selection, Tile};

/// Frames per second at most.
pub const FRAME_RATE: u64 = 60;
/// How long a notification stays, in milliseconds.
const TOAST_MS: u64 = 5000;
/// A keyboard buffers about 16 bytes (4 keystrokes); reading it less often than this
/// risks losing keys.
const SLOW_READ_MS: u64 = 200;
/// How often the overview's thumbnails are refreshed, in milliseconds.
const OVERVIEW_REFRESH_MS: u64 = 1000;

/// What the screen shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Desktop,
    Overview(Selection),
}

/// What was drawn last, so a change redraws the whole screen once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shown {
    Nothing,
    /// VM `slot` in its `starts`-th life.
    Vm {
        slot: usize,
        starts: u32,
    },
    Overview,
}

#[derive(Debug)]
struct Toast {
    text: heapless::String<96>,
    severity: Severity,
    until_tsc: u64,
}

/// The VM's name as the user knows it ("CORPORATE · secure" -> "CORPORATE") and the
/// rest of its label.
pub fn display_name(config: &VmConfig) -> (&str, &str) {
    match config.label.split_once(" · ") {
        Some((name, rest)) => (name, rest),
        None if !config.label.is_empty() => (config.label.as_str(), ""),
        None => (config.name.as_str(), ""),
    }
}

pub fn trust_colour(config: &VmConfig) -> Rgb888 {
    let [_, r, g, b] = config.colour.to_be_bytes();
    Rgb888::new(r, g, b)
}

/// Where a switch's time starts: the keyboard interrupt that brought the hotkey's
/// last byte, when there was one in the last 100 ms, else `now` (a polled keyboard).
fn switch_start(now: u64, ticks_per_ms: u64) -> u64 {
    let irq = crate::arch::x86::idt::KEYBOARD_IRQ_TSC.load(core::sync::atomic::Ordering::Relaxed);
    if irq != 0 && irq <= now && now - irq < 100 * ticks_per_ms { irq } else { now }
}

/// The notification for a VM that stopped.
pub fn stop_message(name: &str, reason: &StopReason, restarted: bool) -> (heapless::String<96>, Severity) {
    let mut text = heapless::String::new();
    let severity = match reason {
        StopReason::GuestShutdown { .. } | StopReason::Requested => {
            let _ = write!(text, "{name} was shut down");
            Severity::Info
        }
        StopReason::GuestReboot => {
            let _ = write!(text, "{name} restarted");
            Severity::Info
        }
        other => {
            let why = match other {
                StopReason::TripleFault => "triple fault",
                StopReason::InvalidGuestState { .. } => "invalid processor state",
                StopReason::UnhandledExit { .. } => "unsupported operation",
                StopReason::BadHypercall { .. } => "bad hypercall",
                StopReason::EmulationFailed { .. } => "unsupported instruction",
                StopReason::NestedPageFault { .. } => "memory access outside the VM",
                StopReason::DmaFault { .. } => "device DMA outside the VM",
                _ => "unsupported paging mode",
            };
            let then = if restarted { "; restarted" } else { "" };
            let _ = write!(text, "{name} crashed: {why}{then}");
            Severity::Error
        }
    };
    (text, severity)
}

/// The overview's state for a VM.
pub fn tile_state(state: VmState) -> overview::VmState {
    match state {
        VmState::Runnable | VmState::Halted => overview::VmState::Running,
        VmState::Stopped(StopReason::GuestShutdown { .. } | StopReason::Requested | StopReason::GuestReboot) => {
            overview::VmState::Stopped
        }
        VmState::Stopped(_) => overview::VmState::Crashed,
    }
}

pub struct Desk {
    keyboard: Option<HostKeyboard<PortIo>>,
    /// Bytes read from the keyboard and not yet routed. The controller holds one byte
    /// and the keyboard a few more, so long drawing steps read the keyboard in between.
    typed: heapless::Deque<u8, 256>,
    decoder: Set1Decoder,
    router: KeyRouter,
    /// The VM slot on the desktop (also while the overview covers it).
    focus: usize,
    mode: Mode,
    shown: Shown,
    clock: FrameClock,
    pub stats: FrameStats,
    /// Host TSC when the hotkey of a switch not yet on screen arrived.
    switch_started: Option<u64>,
    toast: Option<Toast>,
    /// Set-1 bytes given to each VM (counts only; keys are never logged).
    injected: Vec<u64>,
    dirty: Vec<u64>,
    /// Bytes read from the keyboard.
    bytes_read: u64,
    last_read_tsc: u64,
    /// Times the keyboard waited longer than [`SLOW_READ_MS`].
    slow_reads: u64,
    /// Strip clock last drawn; the strip is redrawn when the minute changes.
    strip_clock: Option<(u8, u8)>,
    overview_drawn_tsc: u64,
    thumbnails: Vec<Vec<u32>>,
    ticks_per_ms: u64,
}

impl core::fmt::Debug for Desk {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Desk").field("focus", &self.focus).field("mode", &self.mode).finish_non_exhaustive()
    }
}

fn vm_colour_strip<'a>(config: &'a VmConfig) -> ui::strip::Strip<'a> {
    let (name, label) = display_name(config);
    ui::strip::Strip {
        vm_name: name,
        label,
        trust_colour: trust_colour(config),
        clock: crate::vm::desktop::HOST_TIME.get().map_or((0, 0), |t| t.clock_now()),
        network_up: false,
        secure: label.contains("secure"),
    }
}

impl Desk {
    /// Takes the keyboard (if there is one) for `vm_count` VMs, with the key map
    /// `hotkeys`; VM slot 0 has the focus.
    pub fn new(vm_count: usize, hotkeys: Hotkeys) -> Desk {
        let keyboard = match HostKeyboard::init(PortIo, crate::host::ioapic::keyboard_routed()) {
            Ok(k) => Some(k),
            Err(why) => {
                warn!(target: "keyboard", "no keyboard: {why:?}; the switcher has no hotkeys");
                None
            }
        };
        let ticks_per_ms = crate::arch::x86::tsc::cached_ticks_per_ms().max(1);
        Desk {
            keyboard,
            typed: heapless::Deque::new(),
            decoder: Set1Decoder::new(),
            router: KeyRouter::new(hotkeys, Focus::Vm(0)),
            focus: 0,
            mode: Mode::Desktop,
            shown: Shown::Nothing,
            clock: FrameClock::new(ticks_per_ms * 1000, FRAME_RATE),
            stats: FrameStats::default(),
            switch_started: None,
            toast: None,
            injected: vec![0; vm_count],
            dirty: Vec::new(),
            bytes_read: 0,
            last_read_tsc: 0,
            slow_reads: 0,
            strip_clock: None,
            overview_drawn_tsc: 0,
            thumbnails: vec![Vec::new(); vm_count],
            ticks_per_ms,
        }
    }

    /// Reads what the keyboard has into [`Self::typed`] (cheap; no routing).
    pub fn read_keyboard(&mut self) {
        let Some(keyboard) = self.keyboard.as_mut() else { return };
        // Everything the controller holds is read below.
        crate::arch::x86::idt::KEYBOARD_FIRED.store(false, core::sync::atomic::Ordering::Release);
        let now = rdtsc();
        let gap_ms = now.saturating_sub(self.last_read_tsc) / self.ticks_per_ms;
        if gap_ms >= SLOW_READ_MS && self.last_read_tsc != 0 {
            self.slow_reads += 1;
            if self.slow_reads.is_power_of_two() {
                warn!(target: "keyboard", "keyboard not read for {gap_ms} ms; keys may be lost ({} times)", self.slow_reads);
            }
        }
        self.last_read_tsc = now;
        let typed = &mut self.typed;
        let read = &mut self.bytes_read;
        keyboard.poll(|b| {
            *read += 1;
            if typed.push_back(b).is_err() {
                warn!(target: "keyboard", "typed too far ahead; key byte dropped");
            }
        });
    }

    /// Reads the keyboard and routes what it typed.
    pub fn poll_input<A: Arch, S: AsMut<Vm<A>>>(&mut self, vms: &mut [S]) {
        self.read_keyboard();
        while let Some(b) = self.typed.pop_front() {
            let Some(key) = self.decoder.feed(b) else { continue };
            let outputs = self.router.feed(key);
            for out in outputs {
                self.apply(out, vms);
            }
        }
        if self.mode == Mode::Desktop
            && let Some(vm) = vms.get_mut(self.focus)
            && let Some(leds) = vm.as_mut().take_led_change()
            && let Some(keyboard) = self.keyboard.as_mut()
        {
            keyboard.set_leds(leds);
        }
    }

    fn apply<A: Arch, S: AsMut<Vm<A>>>(&mut self, out: Output, vms: &mut [S]) {
        match out {
            Output::ToVm { slot, bytes } => {
                if let Some(vm) = vms.get_mut(slot) {
                    vm.as_mut().inject_scancodes(&bytes);
                    if let Some(n) = self.injected.get_mut(slot) {
                        *n += bytes.len() as u64;
                    }
                }
            }
            Output::Hotkey(action) => self.hotkey(action, vms),
            Output::ToHypervisor(key) => self.overview_key(key, vms),
        }
    }

    fn hotkey<A: Arch, S: AsMut<Vm<A>>>(&mut self, action: Action, vms: &mut [S]) {
        info!(target: "switcher", "hotkey {action:?}");
        let count = vms.len();
        match action {
            Action::SwitchTo(n) => {
                let slot = usize::from(n).saturating_sub(1);
                if slot < count {
                    self.switch_to(slot, vms);
                }
            }
            Action::Next if count > 0 => self.switch_to((self.focus + 1) % count, vms),
            Action::Next => {}
            Action::Overview if matches!(self.mode, Mode::Overview(_)) => self.back_to_focus(vms),
            Action::Overview | Action::SecureAttention => {
                // Keys the VM saw pressed (Ctrl, Alt) are released in it now.
                for out in self.open_overview(count) {
                    self.apply(out, vms);
                }
            }
        }
    }

    fn overview_key<A: Arch, S: AsMut<Vm<A>>>(&mut self, key: KeyCode, vms: &mut [S]) {
        let Mode::Overview(sel) = self.mode else { return };
        let moved = match key {
            KeyCode::ArrowLeft => sel.moved(Direction::Left),
            KeyCode::ArrowRight => sel.moved(Direction::Right),
            KeyCode::ArrowUp => sel.moved(Direction::Up),
            KeyCode::ArrowDown => sel.moved(Direction::Down),
            KeyCode::Tab => sel.next(),
            KeyCode::Return | KeyCode::NumpadEnter => return self.switch_to(sel.index(), vms),
            KeyCode::Escape => return self.back_to_focus(vms),
            _ => return,
        };
        if moved != sel {
            self.mode = Mode::Overview(moved);
            self.shown = Shown::Nothing;
            self.clock.hurry();
        }
    }

    /// Leaves the overview for the VM that had the focus, if it still runs (a stopped
    /// VM's last picture is not worth going back to).
    fn back_to_focus<A: Arch, S: AsMut<Vm<A>>>(&mut self, vms: &mut [S]) {
        let running = vms.get_mut(self.focus).is_some_and(|v| !matches!(v.as_mut().state, VmState::Stopped(_)));
        if running {
            self.switch_to(self.focus, vms);
        }
    }

    /// Shows the overview; returns the releases owed to the VM that had the keyboard.
    #[must_use]
    fn open_overview(&mut self, count: usize) -> super::router::Outputs {
        let screen = screen::size().map_or(Size::new(1280, 800), |(w, h)| Size::new(w, h));
        let columns = overview::layout(screen, count, ui::Scale::for_screen(screen)).columns;
        let selection = Selection::new(count, columns).with_index(self.focus);
        self.mode = Mode::Overview(selection);
        self.shown = Shown::Nothing;
        self.clock.hurry();
        // The overview is the hypervisor's: keys go to it, and held keys are released
        // in the VM that had them.
        let releases = self.router.set_focus(Focus::Hypervisor);
        info!(target: "switcher", "overview open");
        releases
    }

    fn switch_to<A: Arch, S: AsMut<Vm<A>>>(&mut self, slot: usize, vms: &mut [S]) {
        let started = switch_start(rdtsc(), self.ticks_per_ms);
        for out in self.router.set_focus(Focus::Vm(slot)) {
            self.apply(out, vms);
        }
        let leds = vms.get_mut(slot).map_or(0, |v| v.as_mut().keyboard_leds());
        if let Some(k) = self.keyboard.as_mut() {
            k.set_leds(leds);
        }
        if self.focus != slot || self.mode != Mode::Desktop {
            self.switch_started = Some(started);
        }
        self.focus = slot;
        self.mode = Mode::Desktop;
        self.shown = Shown::Nothing;
        self.clock.hurry();
        info!(target: "switcher", "focus on VM slot {}", slot + 1);
    }

    /// A VM stopped (`restarted` when policy started it again): a notification, and
    /// the overview if it was on screen and is gone.
    pub fn vm_stopped(&mut self, slot: usize, config: &VmConfig, reason: &StopReason, restarted: bool, count: usize) {
        let (name, _) = display_name(config);
        let (text, severity) = stop_message(name, reason, restarted);
        info!(target: "switcher", "notification: {text}");
        let until_tsc = rdtsc().saturating_add(TOAST_MS * self.ticks_per_ms);
        self.toast = Some(Toast { text, severity, until_tsc });
        self.router.forget_vm(slot);
        // A crash takes the user to the overview even when policy restarted the VM:
        // what they were looking at is gone, and the notification says why.
        let crashed = severity == Severity::Error;
        if restarted && !crashed {
            if slot == self.focus {
                self.shown = Shown::Nothing;
            }
        } else if slot == self.focus && self.mode == Mode::Desktop {
            // Only the stopped VM could be owed releases, and `forget_vm` dropped them.
            let _ = self.open_overview(count);
        } else {
            // Its tile changes state.
            self.shown = Shown::Nothing;
        }
        self.clock.hurry();
    }

    /// Redraws what changed on the screen, at most [`FRAME_RATE`] times a second.
    pub fn refresh<A: Arch, S: AsMut<Vm<A>>>(&mut self, vms: &mut [S]) {
        let now = rdtsc();
        if !self.clock.due(now) {
            return;
        }
        let Some((width, height)) = screen::size() else { return };
        let top = ui::strip::height(ui::Scale::for_screen(Size::new(width, height)));
        if let Some(t) = &self.toast
            && now >= t.until_tsc
        {
            self.toast = None;
            self.shown = Shown::Nothing;
        }
        match self.mode {
            Mode::Desktop => self.refresh_desktop(vms, (width, height), top),
            Mode::Overview(sel) => self.refresh_overview(vms, sel, now),
        }
    }

    fn refresh_desktop<A: Arch, S: AsMut<Vm<A>>>(&mut self, vms: &mut [S], screen_size: (u32, u32), top: u32) {
        let Some(vm) = vms.get_mut(self.focus).map(AsMut::as_mut) else { return };
        let Some(fb) = vm.framebuffer() else { return };
        let area = (screen_size.0, screen_size.1.saturating_sub(top));
        let placement = compositor::place((fb.width, fb.height), area, top);
        let npages = (fb.len / PAGE_SIZE) as usize;
        self.dirty.clear();
        self.dirty.resize(npages.div_ceil(64), 0);
        let changed = vm.take_framebuffer_dirty(&mut self.dirty).unwrap_or(0);
        let now_showing = Shown::Vm { slot: self.focus, starts: vm.starts };
        let full = self.shown != now_showing;
        let stride_px = fb.stride_bytes / 4;
        let len_px = (fb.len / 4) as usize;
        let mut bytes = 0;
        if full {
            if !placement.covers(area, top) {
                screen::clear_below(top);
            }
            bytes = screen::present_rows(fb.hpa, stride_px, len_px, &placement, 0..fb.height);
            self.read_keyboard();
            self.strip_clock = None;
            self.shown = now_showing;
        } else if changed > 0 {
            for rows in compositor::dirty_rows(&self.dirty, fb.stride_bytes, fb.height) {
                bytes += screen::present_rows(fb.hpa, stride_px, len_px, &placement, rows);
            }
        }
        let strip = vm_colour_strip(&vm.config);
        if self.strip_clock != Some(strip.clock) {
            self.strip_clock = Some(strip.clock);
            screen::with_target(|target| ui::strip::draw(target, &strip));
        }
        if full || (bytes > 0 && self.toast_overdrawn(&self.dirty, &placement, fb.stride_bytes, fb.height)) {
            self.draw_toast();
        }
        self.stats.record(bytes);
        if let Some(started) = self.switch_started.take() {
            let ticks = rdtsc().saturating_sub(started);
            info!(
                target: "switcher",
                "SWITCH-FRAME slot={} ticks={ticks} us={} bytes={bytes}",
                self.focus + 1,
                ticks * 1000 / self.ticks_per_ms
            );
        }
        debug_placement(&placement, full);
    }

    fn refresh_overview<A: Arch, S: AsMut<Vm<A>>>(&mut self, vms: &mut [S], sel: Selection, now: u64) {
        let stale = now.saturating_sub(self.overview_drawn_tsc) >= OVERVIEW_REFRESH_MS * self.ticks_per_ms;
        if self.shown == Shown::Overview && !stale {
            return;
        }
        let screen_size = screen::size().map_or(Size::new(1280, 800), |(w, h)| Size::new(w, h));
        let grid = overview::layout(screen_size, vms.len(), ui::Scale::for_screen(screen_size));
        let thumb = grid.thumbnail_size;
        self.thumbnails.resize(vms.len(), Vec::new());
        for (i, slot) in vms.iter_mut().enumerate() {
            let vm = slot.as_mut();
            let (Some(fb), Some(buf)) = (vm.framebuffer(), self.thumbnails.get_mut(i)) else { continue };
            buf.resize((thumb.width * thumb.height) as usize, 0);
            let len_px = (fb.len / 4) as usize;
            let ok = screen::with_guest_pixels(fb.hpa, len_px, |px| {
                ui::thumbnail::downscale(px, fb.width, fb.height, fb.stride_bytes / 4, buf, thumb.width, thumb.height)
            });
            if ok.is_err() {
                buf.clear();
            }
            self.read_keyboard();
        }
        let tiles: Vec<Tile<'_>> = vms
            .iter_mut()
            .zip(&self.thumbnails)
            .map(|(slot, buf)| {
                let vm = slot.as_mut();
                let (name, label) = display_name(&vm.config);
                let thumbnail = (!buf.is_empty()).then_some(ui::thumbnail::Thumbnail {
                    pixels: buf,
                    width: thumb.width,
                    height: thumb.height,
                    order: ui::PixelOrder::Bgr,
                });
                Tile { name, label, trust_colour: trust_colour(&vm.config), state: tile_state(vm.state), thumbnail }
            })
            .collect();
        screen::with_target(|target| {
            overview::draw(target, &overview::Overview { tiles: &tiles, selected: sel.index() })
        });
        drop(tiles);
        if self.shown != Shown::Overview {
            let us = rdtsc().saturating_sub(now) * 1000 / self.ticks_per_ms;
            info!(target: "switcher", "OVERVIEW-DRAWN tiles={} selected={} us={us}", vms.len(), sel.index() + 1);
        }
        self.draw_toast();
        self.shown = Shown::Overview;
        self.overview_drawn_tsc = now;
    }

    /// Whether the rows just copied cover part of the notification.
    fn toast_overdrawn(&self, dirty: &[u64], placement: &Placement, stride_bytes: u32, height: u32) -> bool {
        let Some(t) = &self.toast else { return false };
        let Some((w, h)) = screen::size() else { return false };
        let size = Size::new(w, h);
        let n = Notification { message: &t.text, severity: t.severity };
        let area = ui::notification::rect(size, ui::Scale::for_screen(size), &n);
        let top = area.top_left.y.max(0) as u32;
        let bottom = top + area.size.height;
        compositor::dirty_rows(dirty, stride_bytes, height).iter().any(|rows| {
            let on_screen = placement.screen_rows(rows.clone());
            on_screen.start < bottom && top < on_screen.end
        })
    }

    fn draw_toast(&self) {
        if let Some(t) = &self.toast {
            let n = Notification { message: &t.text, severity: t.severity };
            screen::with_target(|target| ui::notification::draw(target, &n));
        }
    }

    /// Answers a `!` command on the serial console: `!keys` (bytes typed into each
    /// VM, counts only) and `!frames` (compositor counters).
    pub fn command<A: Arch, S: AsRef<Vm<A>>>(&self, line: &str, vms: &[S]) -> bool {
        match line.trim() {
            "!keys" => {
                info!(
                    target: "switcher",
                    "KEYS read={} held={} slow_reads={}",
                    self.bytes_read,
                    self.router.held_count(),
                    self.slow_reads
                );
                for (vm, n) in vms.iter().zip(&self.injected) {
                    let vm = vm.as_ref();
                    info!(target: "switcher", "KEYS vm={} injected={n} dropped={}", vm.config.name, vm.dropped_keys());
                }
                true
            }
            "!frames" => {
                let s = self.stats;
                info!(
                    target: "switcher",
                    "FRAMES copied={} idle={} bytes_total={} bytes_last={}",
                    s.frames, s.idle_frames, s.bytes_total, s.bytes_last
                );
                true
            }
            _ => false,
        }
    }
}

fn debug_placement(p: &Placement, full: bool) {
    if full {
        debug!(target: "switcher", "full frame: {p:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_happened() {
        let (t, s) = stop_message("PERSONAL", &StopReason::GuestShutdown { status: 0 }, false);
        assert_eq!((t.as_str(), s), ("PERSONAL was shut down", Severity::Info));
        let (t, s) = stop_message("PERSONAL", &StopReason::TripleFault, true);
        assert_eq!((t.as_str(), s), ("PERSONAL crashed: triple fault; restarted", Severity::Error));
    }

    #[test]
    fn tile_states() {
        assert_eq!(tile_state(VmState::Halted), overview::VmState::Running);
        assert_eq!(tile_state(VmState::Stopped(StopReason::Requested)), overview::VmState::Stopped);
        assert_eq!(tile_state(VmState::Stopped(StopReason::TripleFault)), overview::VmState::Crashed);
    }
}
