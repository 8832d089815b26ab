//! A minimal VNC (RFB) client for Bochs's `rfb` display library: the keyboard and the
//! screen of a Bochs machine, as QMP's `send-key` and `screendump` are for QEMU.
//!
//! Bochs 2.7 speaks RFB 3.3 with no security, only 8 bits per pixel (BGR233 or RGB332;
//! it logs and ignores any other SetPixelFormat) and only Raw rectangles, and it pushes
//! every changed region without waiting for a request. So a reader thread takes every
//! message as it comes and keeps a copy of the window; a grab asks for a full update
//! and waits for a rectangle covering the whole window. With the DesktopSize
//! pseudo-encoding announced, Bochs resizes the window (up to 1280x1024) to the VGA
//! mode, plus its header bar above and an 18-pixel status bar below.
//!
//! References: RFC 6143 (The Remote Framebuffer Protocol), sections 7.1-7.7 (3.3
//! handshake, SetPixelFormat, SetEncodings, FramebufferUpdateRequest, KeyEvent, Raw,
//! DesktopSize); X11 keysyms from `X11/keysymdef.h`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::screen::Screenshot;

/// Height of Bochs's status bar under the VGA picture in the VNC window.
const STATUS_BAR: u32 = 18;

const ENCODING_RAW: i32 = 0;
const ENCODING_DESKTOP_SIZE: i32 = -223;

/// The window as the reader thread last saw it.
#[derive(Debug, Default)]
struct Window {
    width: u32,
    height: u32,
    /// One BGR233 byte per pixel, row-major.
    pixels: Vec<u8>,
    /// Raw rectangles that covered the whole window.
    full_updates: u64,
    /// Why the reader stopped, once it has.
    closed: Option<String>,
}

/// A connected VNC client.
pub struct Vnc {
    stream: TcpStream,
    window: Arc<(Mutex<Window>, Condvar)>,
}

impl Vnc {
    /// Connects to the server on 127.0.0.1:`port`: version 3.3 handshake, ServerInit,
    /// then BGR233 pixels and Raw + DesktopSize encodings (announced at once, so Bochs
    /// may switch to a mode larger than 720x480), and starts the reader thread.
    pub fn connect(port: u16) -> Result<Vnc, String> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connecting to VNC: {e}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let mut version = [0u8; 12];
        stream.read_exact(&mut version).map_err(|e| format!("VNC version: {e}"))?;
        if !version.starts_with(b"RFB 003.") {
            return Err(format!("not an RFB server: {:?}", String::from_utf8_lossy(&version)));
        }
        stream.write_all(b"RFB 003.003\n").map_err(|e| e.to_string())?;
        // 3.3: the server chooses the security type, a u32; 1 is "none".
        let security = read_u32(&mut stream)?;
        if security != 1 {
            return Err(format!("VNC server wants security type {security}, not none"));
        }
        stream.write_all(&[1]).map_err(|e| e.to_string())?; // ClientInit: shared
        let mut init = [0u8; 24];
        stream.read_exact(&mut init).map_err(|e| format!("VNC ServerInit: {e}"))?;
        let width = u32::from(u16::from_be_bytes([init[0], init[1]]));
        let height = u32::from(u16::from_be_bytes([init[2], init[3]]));
        let bits_per_pixel = init[4];
        if bits_per_pixel != 8 {
            return Err(format!("VNC server sends {bits_per_pixel}-bit pixels; this client reads 8"));
        }
        let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
        let mut name = vec![0u8; name_len.min(256)];
        stream.read_exact(&mut name).map_err(|e| format!("VNC server name: {e}"))?;
        stream.write_all(&set_pixel_format_bgr233()).map_err(|e| e.to_string())?;
        stream.write_all(&set_encodings(&[ENCODING_RAW, ENCODING_DESKTOP_SIZE])).map_err(|e| e.to_string())?;
        let window = Window { width, height, pixels: vec![0; (width * height) as usize], ..Window::default() };
        let window = Arc::new((Mutex::new(window), Condvar::new()));
        let mut reader = stream.try_clone().map_err(|e| e.to_string())?;
        reader.set_read_timeout(None).map_err(|e| e.to_string())?;
        let shared = Arc::clone(&window);
        std::thread::spawn(move || {
            let why = read_messages(&mut reader, &shared).err().unwrap_or_default();
            let (lock, changed) = &*shared;
            lock.lock().unwrap_or_else(|p| p.into_inner()).closed = Some(why);
            changed.notify_all();
        });
        Ok(Vnc { stream, window })
    }

    /// Presses a key combination, QEMU style (`"ctrl-alt-spc"`, `"ret"`, `"shift-4"`):
    /// keys go down in order and come up in reverse order, `hold` apart.
    pub fn send_keys(&mut self, combo: &str, hold: Duration) -> Result<(), String> {
        let keys =
            combo.split('-').map(|k| keysym(k).ok_or(format!("unknown key {k:?}"))).collect::<Result<Vec<_>, _>>()?;
        for (down, key) in keys.iter().map(|k| (true, *k)).chain(keys.iter().rev().map(|k| (false, *k))) {
            self.stream.write_all(&key_event(key, down)).map_err(|e| format!("VNC key event: {e}"))?;
            std::thread::sleep(hold);
        }
        Ok(())
    }

    /// The whole VNC window (header bar, VGA picture, status bar) as of a full update
    /// requested now; fails after `timeout`.
    pub fn grab_window(&mut self, timeout: Duration) -> Result<Grab, String> {
        let (lock, changed) = &*self.window;
        let (seen, width, height) = {
            let w = lock.lock().unwrap_or_else(|p| p.into_inner());
            (w.full_updates, w.width, w.height)
        };
        self.stream.write_all(&update_request(false, width, height)).map_err(|e| format!("VNC update request: {e}"))?;
        let deadline = Instant::now() + timeout;
        let mut w = lock.lock().unwrap_or_else(|p| p.into_inner());
        while w.full_updates == seen {
            if let Some(why) = &w.closed {
                return Err(format!("the VNC connection ended: {why}"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no full VNC update within {timeout:?}"));
            }
            w = changed.wait_timeout(w, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        Ok(Grab { width: w.width, height: w.height, pixels: w.pixels.clone() })
    }
}

/// A copy of the VNC window, one BGR233 byte per pixel.
pub struct Grab {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

impl Grab {
    /// The VGA picture of `width` x `height` (the guest's screen mode) out of the
    /// window: under the header bar, above the status bar. `None` when the window does
    /// not hold a picture of that size.
    pub fn screen(&self, width: u32, height: u32) -> Option<Screenshot> {
        let top = self.height.checked_sub(STATUS_BAR)?.checked_sub(height)?;
        if self.width != width {
            return None;
        }
        let rgb = self.pixels[(top * width) as usize..((top + height) * width) as usize]
            .iter()
            .flat_map(|&p| {
                let (r, g, b) = expand_bgr233(p);
                [r, g, b]
            })
            .collect();
        Some(Screenshot { width, height, rgb })
    }
}

/// What a 24-bit colour looks like after Bochs's conversion to BGR233 (the top 3 bits
/// of red and green and the top 2 of blue kept), expanded back to 24 bits as
/// [`Grab::screen`] does: compare screen pixels with this, not with the colour itself.
pub fn through_bgr233((r, g, b): (u8, u8, u8)) -> (u8, u8, u8) {
    expand_bgr233((r >> 5) | ((g >> 5) << 3) | ((b >> 6) << 6))
}

fn expand_bgr233(p: u8) -> (u8, u8, u8) {
    let scale = |v: u8, max: u8| ((u16::from(v) * 255 + u16::from(max) / 2) / u16::from(max)) as u8;
    (scale(p & 7, 7), scale((p >> 3) & 7, 7), scale(p >> 6, 3))
}

/// The X11 keysym of a QEMU key name (`machine::key_for` spells text in these).
pub fn keysym(name: &str) -> Option<u32> {
    let named = match name {
        "ctrl" => 0xffe3,
        "alt" => 0xffe9,
        "shift" => 0xffe1,
        "ret" => 0xff0d,
        "esc" => 0xff1b,
        "tab" => 0xff09,
        "spc" => 0x20,
        "home" => 0xff50,
        "left" => 0xff51,
        "up" => 0xff52,
        "right" => 0xff53,
        "down" => 0xff54,
        "minus" => u32::from(b'-'),
        "equal" => u32::from(b'='),
        "dot" => u32::from(b'.'),
        "comma" => u32::from(b','),
        "slash" => u32::from(b'/'),
        "semicolon" => u32::from(b';'),
        "apostrophe" => u32::from(b'\''),
        "backslash" => u32::from(b'\\'),
        _ => {
            if let Some(n) = name.strip_prefix('f').and_then(|n| n.parse::<u32>().ok()).filter(|n| (1..=12).contains(n))
            {
                return Some(0xffbe + n - 1);
            }
            let mut chars = name.chars();
            return match (chars.next(), chars.next()) {
                (Some(c), None) if c.is_ascii_lowercase() || c.is_ascii_digit() => Some(u32::from(c)),
                _ => None,
            };
        }
    };
    Some(named)
}

/// SetPixelFormat (RFC 6143 7.5.1): 8 bits, true colour, red in bits 0-2, green 3-5,
/// blue 6-7, the format Bochs converts the VGA picture to.
fn set_pixel_format_bgr233() -> [u8; 20] {
    let mut m = [0u8; 20];
    m[0] = 0;
    // bits per pixel, depth, big endian, true colour
    m[4..8].copy_from_slice(&[8, 8, 0, 1]);
    m[8..10].copy_from_slice(&7u16.to_be_bytes());
    m[10..12].copy_from_slice(&7u16.to_be_bytes());
    m[12..14].copy_from_slice(&3u16.to_be_bytes());
    m[14..17].copy_from_slice(&[0, 3, 6]);
    m
}

/// SetEncodings (RFC 6143 7.5.2).
fn set_encodings(encodings: &[i32]) -> Vec<u8> {
    let mut m = vec![2, 0];
    m.extend_from_slice(&(encodings.len() as u16).to_be_bytes());
    for e in encodings {
        m.extend_from_slice(&e.to_be_bytes());
    }
    m
}

/// FramebufferUpdateRequest (RFC 6143 7.5.3) for the whole window.
fn update_request(incremental: bool, width: u32, height: u32) -> [u8; 10] {
    let mut m = [0u8; 10];
    m[0] = 3;
    m[1] = u8::from(incremental);
    m[6..8].copy_from_slice(&(width as u16).to_be_bytes());
    m[8..10].copy_from_slice(&(height as u16).to_be_bytes());
    m
}

/// KeyEvent (RFC 6143 7.5.4).
fn key_event(keysym: u32, down: bool) -> [u8; 8] {
    let mut m = [0u8; 8];
    m[0] = 4;
    m[1] = u8::from(down);
    m[4..8].copy_from_slice(&keysym.to_be_bytes());
    m
}

fn read_u32(r: &mut impl Read) -> Result<u32, String> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).map_err(|e| e.to_string())?;
    Ok(u32::from_be_bytes(b))
}

fn read_u16(r: &mut impl Read) -> Result<u16, String> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b).map_err(|e| e.to_string())?;
    Ok(u16::from_be_bytes(b))
}

fn skip(r: &mut impl Read, n: u64) -> Result<(), String> {
    let copied = std::io::copy(&mut r.take(n), &mut std::io::sink()).map_err(|e| e.to_string())?;
    if copied == n { Ok(()) } else { Err("connection closed".into()) }
}

/// Reads server messages until the connection ends or breaks the protocol.
fn read_messages(r: &mut impl Read, window: &(Mutex<Window>, Condvar)) -> Result<(), String> {
    loop {
        let mut kind = [0u8; 1];
        r.read_exact(&mut kind).map_err(|e| e.to_string())?;
        match kind[0] {
            0 => framebuffer_update(r, window)?,
            // SetColourMapEntries: padding, first colour, count, then 6 bytes each.
            1 => {
                skip(r, 3)?;
                let n = read_u16(r)?;
                skip(r, 6 * u64::from(n))?;
            }
            // Bell
            2 => {}
            // ServerCutText: padding, length, text.
            3 => {
                skip(r, 3)?;
                let n = read_u32(r)?;
                skip(r, u64::from(n))?;
            }
            other => return Err(format!("unknown server message type {other}")),
        }
    }
}

/// FramebufferUpdate (RFC 6143 7.6.1): Raw rectangles go into the window copy, a
/// DesktopSize rectangle resizes it.
fn framebuffer_update(r: &mut impl Read, window: &(Mutex<Window>, Condvar)) -> Result<(), String> {
    skip(r, 1)?;
    let rects = read_u16(r)?;
    for _ in 0..rects {
        let mut h = [0u8; 12];
        r.read_exact(&mut h).map_err(|e| e.to_string())?;
        let field = |i: usize| u32::from(u16::from_be_bytes([h[i], h[i + 1]]));
        let (x, y, w, hgt) = (field(0), field(2), field(4), field(6));
        let encoding = i32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        let (lock, changed) = window;
        match encoding {
            ENCODING_RAW => {
                let mut data = vec![0u8; (w * hgt) as usize];
                r.read_exact(&mut data).map_err(|e| e.to_string())?;
                let mut win = lock.lock().unwrap_or_else(|p| p.into_inner());
                if x + w > win.width || y + hgt > win.height {
                    return Err(format!("rectangle {w}x{hgt}+{x}+{y} outside the {}x{} window", win.width, win.height));
                }
                let stride = win.width as usize;
                for row in 0..hgt as usize {
                    let at = (y as usize + row) * stride + x as usize;
                    win.pixels[at..at + w as usize].copy_from_slice(&data[row * w as usize..(row + 1) * w as usize]);
                }
                if (x, y, w, hgt) == (0, 0, win.width, win.height) {
                    win.full_updates += 1;
                }
            }
            ENCODING_DESKTOP_SIZE => {
                let mut win = lock.lock().unwrap_or_else(|p| p.into_inner());
                (win.width, win.height) = (w, hgt);
                win.pixels = vec![0; (w * hgt) as usize];
            }
            other => return Err(format!("rectangle in encoding {other}, which this client did not ask for")),
        }
        changed.notify_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keysyms_cover_the_names_key_for_spells() {
        assert_eq!(keysym("ctrl"), Some(0xffe3));
        assert_eq!(keysym("f2"), Some(0xffbf));
        assert_eq!(keysym("f12"), Some(0xffc9));
        assert_eq!(keysym("f13"), None);
        assert_eq!(keysym("a"), Some(0x61));
        assert_eq!(keysym("7"), Some(0x37));
        assert_eq!(keysym("A"), None);
        for c in "echo kb-1 > /dev/ttyS0 $((6*7)) 'x';\"|\\\n".chars() {
            let combo = crate::machine::key_for(c).unwrap();
            assert!(combo.split('-').all(|k| keysym(k).is_some()), "{c:?} -> {combo}");
        }
    }

    #[test]
    fn bgr233_keeps_the_top_bits() {
        assert_eq!(through_bgr233((0, 0, 0)), (0, 0, 0));
        assert_eq!(through_bgr233((255, 255, 255)), (255, 255, 255));
        // #27ae60: red 1/7, green 5/7, blue 1/3.
        assert_eq!(through_bgr233((0x27, 0xae, 0x60)), (36, 182, 85));
        assert_ne!(through_bgr233((0xc0, 0x39, 0x2b)), through_bgr233((0x27, 0xae, 0x60)));
    }

    #[test]
    fn messages_are_laid_out_as_rfc_6143_says() {
        assert_eq!(key_event(0xffe3, true), [4, 1, 0, 0, 0, 0, 0xff, 0xe3]);
        assert_eq!(update_request(false, 1280, 850), [3, 0, 0, 0, 0, 0, 5, 0, 3, 82]);
        assert_eq!(set_encodings(&[0, -223]), [2, 0, 0, 2, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x21]);
        assert_eq!(set_pixel_format_bgr233()[4..17], [8, 8, 0, 1, 0, 7, 0, 7, 0, 3, 0, 3, 6]);
    }

    #[test]
    fn updates_fill_the_window_and_a_desktop_size_resizes_it() {
        let window =
            (Mutex::new(Window { width: 4, height: 2, pixels: vec![0; 8], ..Window::default() }), Condvar::new());
        let mut msgs = Vec::new();
        // A 2x1 rectangle at (1,1), then DesktopSize 3x1, then a full 3x1 rectangle.
        msgs.extend_from_slice(&[0, 0, 0, 1, 0, 1, 0, 1, 0, 2, 0, 1, 0, 0, 0, 0, 7, 9]);
        msgs.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 3, 0, 1, 0xff, 0xff, 0xff, 0x21]);
        let mut cursor = std::io::Cursor::new(msgs);
        let mut kind = [0u8];
        cursor.read_exact(&mut kind).unwrap();
        framebuffer_update(&mut cursor, &window).unwrap();
        assert_eq!(window.0.lock().unwrap().pixels, [0, 0, 0, 0, 0, 7, 9, 0]);
        assert_eq!(window.0.lock().unwrap().full_updates, 0);
        cursor.read_exact(&mut kind).unwrap();
        framebuffer_update(&mut cursor, &window).unwrap();
        let mut full = std::io::Cursor::new(vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 3, 0, 1, 0, 0, 0, 0, 1, 2, 3]);
        full.read_exact(&mut kind).unwrap();
        framebuffer_update(&mut full, &window).unwrap();
        let w = window.0.lock().unwrap();
        assert_eq!((w.width, w.height, &w.pixels[..], w.full_updates), (3, 1, &[1, 2, 3][..], 1));
        drop(w);
        // A rectangle outside the window is an error, not a panic.
        let mut bad = std::io::Cursor::new(vec![0, 0, 0, 1, 0, 2, 0, 0, 0, 2, 0, 1, 0, 0, 0, 0, 1, 2]);
        bad.read_exact(&mut kind).unwrap();
        assert!(framebuffer_update(&mut bad, &window).is_err());
    }

    #[test]
    fn the_screen_is_cut_out_between_the_bars() {
        // A 2-pixel-wide window: 1 header row, 2 picture rows, 18 status rows.
        let mut pixels = vec![0u8; 2 * 21];
        pixels[2..6].copy_from_slice(&[0xff, 0xff, 0x07, 0x07]);
        let grab = Grab { width: 2, height: 21, pixels };
        let shot = grab.screen(2, 2).unwrap();
        assert_eq!(shot.pixel(0, 0), (255, 255, 255));
        assert_eq!(shot.pixel(1, 1), (255, 0, 0));
        assert!(grab.screen(3, 2).is_none());
        assert!(grab.screen(2, 4).is_none());
    }
}
