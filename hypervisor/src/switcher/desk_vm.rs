//! What the switcher needs from a VM, as a trait the VM type implements (in
//! `vm/desk_view.rs`): its name, label and trust colour, its state for the overview,
//! its framebuffer and the written pages, and its virtual keyboard. The switcher does
//! not know the VM type itself.

use embedded_graphics::pixelcolor::Rgb888;
use ui::overview::VmState;

use crate::memory::addr::HostPhysAddr;

/// A VM's framebuffer: 32-bit pixels, blue in the lowest byte, in memory the
/// hypervisor allocated (contiguous, mapped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramebufferView {
    pub hpa: HostPhysAddr,
    pub width: u32,
    pub height: u32,
    pub stride_bytes: u32,
    /// Bytes of memory backing it (whole pages).
    pub len: u64,
}

/// A VM as the switcher sees it.
pub trait DeskVm {
    /// The configured name (logs and console counters).
    fn name(&self) -> &str;
    /// The label the user sees, e.g. "CORPORATE · secure" (may be empty).
    fn label(&self) -> &str;
    /// The trust colour, 0x00RRGGBB.
    fn colour(&self) -> u32;
    /// Running, stopped or crashed, for its overview tile.
    fn tile_state(&self) -> VmState;
    /// How many times it has started (a restart is a new picture).
    fn starts(&self) -> u32;
    /// Its framebuffer (desktop VMs only).
    fn framebuffer(&self) -> Option<FramebufferView>;
    /// Reads and clears which framebuffer pages the guest wrote since the last call
    /// (bit `i` of `bitmap` = page `i`); `None` when its screen cannot change.
    fn take_framebuffer_dirty(&mut self, bitmap: &mut [u64]) -> Option<usize>;
    /// Puts set-1 scan code bytes into its virtual keyboard.
    fn inject_keys(&mut self, set1: &[u8]);
    /// The keyboard LEDs it set last (bit 0 Scroll, 1 Num, 2 Caps Lock).
    fn keyboard_leds(&self) -> u8;
    /// The LEDs, when they changed since the last call.
    fn take_led_change(&mut self) -> Option<u8>;
    /// Key bytes its keyboard dropped.
    fn dropped_keys(&self) -> u64;
    /// Whether the networking service VM reports this VM's link up.
    fn network_up(&self) -> bool {
        false
    }
}

/// The VM's name as the user knows it ("CORPORATE · secure" -> "CORPORATE") and the
/// rest of its label; the configured name when there is no label.
pub fn display_name<V: DeskVm + ?Sized>(vm: &V) -> (&str, &str) {
    split_label(vm.name(), vm.label())
}

fn split_label<'a>(name: &'a str, label: &'a str) -> (&'a str, &'a str) {
    match label.split_once(" · ") {
        Some((name, rest)) => (name, rest),
        None if !label.is_empty() => (label, ""),
        None => (name, ""),
    }
}

pub fn trust_colour<V: DeskVm + ?Sized>(vm: &V) -> Rgb888 {
    let [_, r, g, b] = vm.colour().to_be_bytes();
    Rgb888::new(r, g, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_names_the_vm() {
        assert_eq!(split_label("corporate", "CORPORATE · secure"), ("CORPORATE", "secure"));
        assert_eq!(split_label("corporate", "CORPORATE"), ("CORPORATE", ""));
        assert_eq!(split_label("corporate", ""), ("corporate", ""));
    }
}
