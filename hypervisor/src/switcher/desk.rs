//! The switcher at run time, around the pure [`FocusMachine`]: reads the physical
//! keyboard and gives the machine each key, carries out its commands (keys into VMs,
//! keyboard LEDs, notifications, what to draw), draws the focused VM under its trust
//! strip or the overview, and times each switch to its first frame. The scheduler
//! calls [`Desk::poll_input`] and [`Desk::refresh`] once per round, and
//! [`Desk::vm_stopped`] when a VM stops. VMs are reached through [`DeskVm`].

use alloc::vec;
use alloc::vec::Vec;

use embedded_graphics::prelude::Size;
use log::{debug, info, warn};

use super::compositor::{self, FrameClock, FrameStats, Placement};
use super::desk_vm::{DeskVm, display_name, trust_colour};
use super::focus::{FocusCommand, FocusMachine, View};
use super::hotkeys::Hotkeys;
use super::keys::Set1Decoder;
use super::notices::{NoticeText, StopCause};
use crate::arch::x86::instr::rdtsc;
use crate::host::keyboard::{HostKeyboard, PortIo};
use crate::host::screen;
use crate::memory::addr::PAGE_SIZE;
use ui::notification::{Notification, Severity};
use ui::overview::{self, Selection, Tile};

/// Frames per second at most.
pub const FRAME_RATE: u64 = 60;
/// How long a notification stays, in milliseconds.
const TOAST_MS: u64 = 5000;
/// The keyboard buffers about 16 bytes (4 keystrokes). Left unread longer than this
/// (neither polled nor reachable by its interrupt), a fast typist's keys may be lost.
const SLOW_READ_MS: u64 = 10;
/// How often the overview's thumbnails are refreshed, in milliseconds.
const OVERVIEW_REFRESH_MS: u64 = 1000;

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
    text: NoticeText,
    severity: Severity,
    until_tsc: u64,
}

/// Where a switch's time starts: the keyboard interrupt that brought the hotkey's
/// last byte, when there was one in the last 100 ms, else `now` (a polled keyboard).
fn switch_start(now: u64, ticks_per_ms: u64) -> u64 {
    let irq = crate::arch::x86::idt::KEYBOARD_IRQ_TSC.load(core::sync::atomic::Ordering::Relaxed);
    if irq != 0 && irq <= now && now.saturating_sub(irq) < ticks_per_ms.saturating_mul(100) { irq } else { now }
}

pub struct Desk {
    keyboard: Option<HostKeyboard<PortIo>>,
    /// Bytes read from the keyboard and not yet routed. The controller holds one byte
    /// and the keyboard a few more, so long drawing steps read the keyboard in between.
    typed: heapless::Deque<u8, 256>,
    decoder: Set1Decoder,
    /// The focus, the overview and the key routing; this file carries out its commands.
    machine: FocusMachine,
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
    /// Longest time the keyboard was left unread, in ticks.
    longest_unread: u64,
    /// Whether the keyboard's interrupt empties the controller (else it is polled).
    interrupt_driven: bool,
    /// Bytes the interrupt had no room for, as last reported.
    lost_reported: u64,
    /// Strip clock last drawn; the strip is redrawn when the minute changes.
    strip_clock: Option<(u8, u8)>,
    /// The wall clock's hours and minutes now, for the strip.
    wall_clock: fn() -> (u8, u8),
    overview_drawn_tsc: u64,
    thumbnails: Vec<Vec<u32>>,
    ticks_per_ms: u64,
}

impl core::fmt::Debug for Desk {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Desk").field("machine", &self.machine).field("shown", &self.shown).finish_non_exhaustive()
    }
}

fn vm_colour_strip<V: DeskVm + ?Sized>(vm: &V, clock: (u8, u8)) -> ui::strip::Strip<'_> {
    let (name, label) = display_name(vm);
    ui::strip::Strip {
        vm_name: name,
        label,
        trust_colour: trust_colour(vm),
        clock,
        network_up: false,
        secure: label.contains("secure"),
    }
}

impl Desk {
    /// Takes the keyboard (if there is one) for `vm_count` VMs, with the key map
    /// `hotkeys`; VM slot 0 has the focus. `wall_clock` gives the strip's time.
    pub fn new(vm_count: usize, hotkeys: Hotkeys, wall_clock: fn() -> (u8, u8)) -> Desk {
        let routed = crate::host::ioapic::keyboard_routed();
        let keyboard = match HostKeyboard::init(PortIo, routed) {
            Ok(k) => {
                if routed {
                    crate::arch::x86::idt::KEYBOARD_HOOK.call_once(|| crate::host::keyboard::catch_from_interrupt);
                }
                Some(k)
            }
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
            machine: FocusMachine::new(vm_count, hotkeys),
            shown: Shown::Nothing,
            clock: FrameClock::new(ticks_per_ms.saturating_mul(1000), FRAME_RATE),
            stats: FrameStats::default(),
            switch_started: None,
            toast: None,
            injected: vec![0; vm_count],
            dirty: Vec::new(),
            bytes_read: 0,
            last_read_tsc: 0,
            slow_reads: 0,
            interrupt_driven: routed,
            lost_reported: 0,
            longest_unread: 0,
            strip_clock: None,
            wall_clock,
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
        // Unread since the last poll or, with the interrupt, for the longest stretch
        // with interrupts closed since the last look.
        let gap = if self.interrupt_driven {
            crate::arch::x86::closed_stretches::stretch_ends();
            crate::arch::x86::closed_stretches::take_worst_unreported()
        } else if self.last_read_tsc != 0 {
            now.saturating_sub(self.last_read_tsc)
        } else {
            0
        };
        self.longest_unread = self.longest_unread.max(gap);
        // ticks_per_ms is at least 1 (see `new`).
        let gap_ms = gap.checked_div(self.ticks_per_ms).unwrap_or(0);
        if gap_ms >= SLOW_READ_MS {
            self.slow_reads = self.slow_reads.wrapping_add(1);
            if self.slow_reads.is_power_of_two() {
                warn!(target: "keyboard", "keyboard not read for {gap_ms} ms; keys may be lost ({} times)", self.slow_reads);
            }
        }
        if self.interrupt_driven {
            let lost = crate::host::keyboard::caught::CAUGHT.lost();
            if lost != self.lost_reported {
                warn!(target: "keyboard", "keyboard bytes lost: {} more caught than the switcher took", lost.saturating_sub(self.lost_reported));
                self.lost_reported = lost;
            }
        }
        self.last_read_tsc = now;
        let typed = &mut self.typed;
        let read = &mut self.bytes_read;
        // The interrupt must not read the data port between this poll's status read
        // and its data read.
        x86_64::instructions::interrupts::without_interrupts(|| {
            keyboard.poll(|b| {
                *read = read.wrapping_add(1);
                if typed.push_back(b).is_err() {
                    warn!(target: "keyboard", "typed too far ahead; key byte dropped");
                }
            });
        });
        if self.interrupt_driven && !x86_64::instructions::interrupts::are_enabled() {
            // The poll read the controller: a closed stretch starts again from here.
            crate::arch::x86::closed_stretches::stretch_starts();
        }
    }

    /// Reads the keyboard and carries out what the focus machine makes of each key.
    pub fn poll_input<V: DeskVm, S: AsMut<V>>(&mut self, vms: &mut [S]) {
        self.read_keyboard();
        while let Some(b) = self.typed.pop_front() {
            let Some(key) = self.decoder.feed(b) else { continue };
            for command in self.machine.key(key) {
                self.apply(command, vms);
            }
        }
        if self.machine.view() == View::Desktop
            && let Some(vm) = vms.get_mut(self.machine.focus())
            && let Some(leds) = vm.as_mut().take_led_change()
            && let Some(keyboard) = self.keyboard.as_mut()
        {
            keyboard.set_leds(leds);
        }
    }

    /// A VM stopped for `cause` (`restarted` when policy started it again): a
    /// notification, and the overview if it was on screen and is gone.
    pub fn vm_stopped<V: DeskVm, S: AsMut<V>>(
        &mut self,
        vms: &mut [S],
        slot: usize,
        cause: StopCause,
        restarted: bool,
    ) {
        let Some(vm) = vms.get_mut(slot) else { return };
        let (name, _) = display_name(vm.as_mut());
        for command in self.machine.vm_stopped(slot, name, cause, restarted) {
            self.apply(command, vms);
        }
    }

    fn apply<V: DeskVm, S: AsMut<V>>(&mut self, command: FocusCommand, vms: &mut [S]) {
        match command {
            FocusCommand::ToVm { slot, bytes } => {
                if let Some(vm) = vms.get_mut(slot) {
                    vm.as_mut().inject_keys(&bytes);
                    if let Some(n) = self.injected.get_mut(slot) {
                        *n = n.wrapping_add(bytes.len() as u64);
                    }
                }
            }
            FocusCommand::ShowVm { slot, switch } => {
                let started = switch_start(rdtsc(), self.ticks_per_ms);
                let leds = vms.get_mut(slot).map_or(0, |v| v.as_mut().keyboard_leds());
                if let Some(k) = self.keyboard.as_mut() {
                    k.set_leds(leds);
                }
                if switch {
                    self.switch_started = Some(started);
                }
                self.redraw();
            }
            FocusCommand::ShowOverview(_) | FocusCommand::Redraw => self.redraw(),
            FocusCommand::Notify { text, severity } => {
                info!(target: "switcher", "notification: {text}");
                let until_tsc = rdtsc().saturating_add(TOAST_MS.saturating_mul(self.ticks_per_ms));
                self.toast = Some(Toast { text, severity, until_tsc });
                self.clock.hurry();
            }
        }
    }

    /// The whole screen is drawn again at the next frame, which is due at once.
    fn redraw(&mut self) {
        self.shown = Shown::Nothing;
        self.clock.hurry();
    }

    /// Redraws what changed on the screen, at most [`FRAME_RATE`] times a second.
    /// Drawing a whole screen or the overview takes long: the keyboard's interrupt
    /// stays open meanwhile, so no key waits in the controller.
    pub fn refresh<V: DeskVm, S: AsMut<V>>(&mut self, vms: &mut [S]) {
        crate::arch::x86::closed_stretches::with_interrupts_open(|| self.draw_due(vms));
    }

    fn draw_due<V: DeskVm, S: AsMut<V>>(&mut self, vms: &mut [S]) {
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
        match self.machine.view() {
            View::Desktop => self.refresh_desktop(vms, (width, height), top),
            View::Overview(sel) => self.refresh_overview(vms, sel, now),
        }
    }

    fn refresh_desktop<V: DeskVm, S: AsMut<V>>(&mut self, vms: &mut [S], screen_size: (u32, u32), top: u32) {
        let focus = self.machine.focus();
        let Some(vm) = vms.get_mut(focus).map(AsMut::as_mut) else { return };
        let Some(fb) = vm.framebuffer() else { return };
        let area = (screen_size.0, screen_size.1.saturating_sub(top));
        let placement = compositor::place((fb.width, fb.height), area, top);
        let npages = (fb.len / PAGE_SIZE) as usize;
        self.dirty.clear();
        self.dirty.resize(npages.div_ceil(64), 0);
        let changed = vm.take_framebuffer_dirty(&mut self.dirty).unwrap_or(0);
        let now_showing = Shown::Vm { slot: focus, starts: vm.starts() };
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
                bytes = screen::present_rows(fb.hpa, stride_px, len_px, &placement, rows).saturating_add(bytes);
            }
        }
        let strip = vm_colour_strip(vm, (self.wall_clock)());
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
                focus.saturating_add(1),
                ticks_to_us(ticks, self.ticks_per_ms)
            );
        }
        debug_placement(&placement, full);
    }

    fn refresh_overview<V: DeskVm, S: AsMut<V>>(&mut self, vms: &mut [S], sel: Selection, now: u64) {
        let stale =
            now.saturating_sub(self.overview_drawn_tsc) >= OVERVIEW_REFRESH_MS.saturating_mul(self.ticks_per_ms);
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
            buf.resize(thumb.width.saturating_mul(thumb.height) as usize, 0);
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
                let (name, label) = display_name(vm);
                let thumbnail = (!buf.is_empty()).then_some(ui::thumbnail::Thumbnail {
                    pixels: buf,
                    width: thumb.width,
                    height: thumb.height,
                    order: ui::PixelOrder::Bgr,
                });
                Tile { name, label, trust_colour: trust_colour(vm), state: vm.tile_state(), thumbnail }
            })
            .collect();
        screen::with_target(|target| {
            overview::draw(target, &overview::Overview { tiles: &tiles, selected: sel.index() })
        });
        drop(tiles);
        if self.shown != Shown::Overview {
            let us = ticks_to_us(rdtsc().saturating_sub(now), self.ticks_per_ms);
            info!(target: "switcher", "OVERVIEW-DRAWN tiles={} selected={} us={us}", vms.len(), sel.index().saturating_add(1));
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
        let bottom = top.saturating_add(area.size.height);
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
    pub fn command<V: DeskVm, S: AsRef<V>>(&self, line: &str, vms: &[S]) -> bool {
        match line.trim() {
            "!keys" => {
                info!(
                    target: "switcher",
                    "KEYS read={} held={} slow_reads={} lost={} longest_unread_us={} ({})",
                    self.bytes_read,
                    self.machine.held_count(),
                    self.slow_reads,
                    crate::host::keyboard::caught::CAUGHT.lost(),
                    ticks_to_us(self.longest_unread, self.ticks_per_ms),
                    if self.interrupt_driven { "interrupt" } else { "polled" }
                );
                for (vm, n) in vms.iter().zip(&self.injected) {
                    let vm = vm.as_ref();
                    info!(target: "switcher", "KEYS vm={} injected={n} dropped={}", vm.name(), vm.dropped_keys());
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

/// Microseconds in `ticks`, for the log.
fn ticks_to_us(ticks: u64, ticks_per_ms: u64) -> u64 {
    ticks.saturating_mul(1000).checked_div(ticks_per_ms).unwrap_or(0)
}

fn debug_placement(p: &Placement, full: bool) {
    if full {
        debug!(target: "switcher", "full frame: {p:?}");
    }
}
