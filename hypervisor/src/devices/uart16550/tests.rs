use super::*;
use crate::devices::irq_line::test_line::TestLine;
use alloc::sync::Arc;

type Lines = Arc<spin::Mutex<Vec<(String, Vec<u8>)>>>;

struct TestSink(Lines);

impl ConsoleSink for TestSink {
    fn line(&mut self, vm_name: &str, line: &[u8]) {
        self.0.lock().push((String::from(vm_name), line.to_vec()));
    }
}

fn uart() -> (Uart16550, TestLine, Lines) {
    let line = TestLine::new();
    let lines = Lines::default();
    let u = Uart16550::new("desktop", Box::new(line.clone()), Box::new(TestSink(lines.clone())));
    (u, line, lines)
}

fn inb(u: &mut Uart16550, reg: u16) -> u8 {
    u.read(reg, AccessSize::Byte) as u8
}

fn outb(u: &mut Uart16550, reg: u16, value: u8) {
    u.write(reg, AccessSize::Byte, u32::from(value));
}

/// Linux's `autoconfig()` and `autoconfig_16550a()` (8250_port.c), reduced to the
/// reads and writes it makes and the decisions it takes from them.
fn linux_autoconfig(u: &mut Uart16550) -> &'static str {
    // IER test.
    let saved_ier = inb(u, IER_DLM);
    outb(u, IER_DLM, 0);
    let scratch2 = inb(u, IER_DLM) & 0x0F;
    outb(u, IER_DLM, 0x0F);
    let scratch3 = inb(u, IER_DLM) & 0x0F;
    outb(u, IER_DLM, saved_ier);
    if scratch2 != 0 || scratch3 != 0x0F {
        return "none (IER test)";
    }
    // Loopback test: MCR = LOOP | OUT2 | RTS must read back CTS | DCD.
    let save_mcr = inb(u, MCR);
    let save_lcr = inb(u, LCR);
    outb(u, MCR, MCR_LOOP | 0x0A);
    let status1 = inb(u, MSR) & 0xF0;
    outb(u, MCR, save_mcr);
    if status1 != 0x90 {
        return "none (loopback)";
    }
    outb(u, LCR, 0xBF);
    outb(u, IIR_FCR, 0); // EFR on chips that have one
    outb(u, LCR, 0);
    outb(u, IIR_FCR, FCR_ENABLE);
    let kind = inb(u, IIR_FCR) >> 6;
    if kind != 3 {
        return ["8250/16450", "unknown", "16550"][kind as usize];
    }
    // autoconfig_16550a: an EFR under DLAB means a ST16C650V1.
    outb(u, LCR, 0x80);
    if inb(u, IIR_FCR) == 0 {
        return "16650V1";
    }
    outb(u, LCR, 0xBF);
    if inb(u, IIR_FCR) == 0 {
        return "16650 (EFR)";
    }
    // National SuperIO: EXCR1 tracks MCR.LOOP.
    outb(u, LCR, 0);
    let mcr = inb(u, MCR);
    outb(u, LCR, 0xE0);
    let excr1 = inb(u, IIR_FCR);
    if (excr1 ^ mcr) & MCR_LOOP == 0 {
        outb(u, LCR, 0);
        outb(u, MCR, mcr ^ MCR_LOOP);
        outb(u, LCR, 0xE0);
        let excr1 = inb(u, IIR_FCR);
        outb(u, LCR, 0);
        outb(u, MCR, mcr);
        if (excr1 ^ mcr) & MCR_LOOP != 0 {
            return "NS16550";
        }
    }
    // TI16750: IIR bit 5 follows FCR bit 5 under DLAB.
    outb(u, LCR, 0);
    outb(u, IIR_FCR, FCR_ENABLE | 0x20);
    let status1 = inb(u, IIR_FCR) & 0xE0;
    outb(u, IIR_FCR, FCR_ENABLE);
    outb(u, LCR, 0x80);
    outb(u, IIR_FCR, FCR_ENABLE | 0x20);
    let status2 = inb(u, IIR_FCR) & 0xE0;
    outb(u, IIR_FCR, FCR_ENABLE);
    outb(u, LCR, 0);
    if status1 == 0xC0 && status2 == 0xE0 {
        return "16750";
    }
    // XScale: IER bit 6 (UUE) must not stick.
    let iersave = inb(u, IER_DLM);
    outb(u, IER_DLM, iersave | 0x40);
    let xscale = inb(u, IER_DLM) & 0x40 != 0;
    outb(u, IER_DLM, iersave);
    if xscale {
        return "XScale";
    }
    outb(u, LCR, save_lcr);
    "16550A"
}

#[test]
fn linux_autoconfig_detects_a_16550a() {
    let (mut u, line, lines) = uart();
    assert_eq!(linux_autoconfig(&mut u), "16550A");
    // The probe must not have printed anything or raised the interrupt.
    assert!(lines.lock().is_empty());
    assert_eq!(u.console().total_bytes(), 0);
    assert_eq!(line.rises(), 0);
}

#[test]
fn linux_startup_thre_test_sees_thre_reasserted() {
    let (mut u, line, _) = uart();
    outb(&mut u, IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX | 0x04);
    outb(&mut u, MCR, MCR_OUT2 | MCR_RTS | MCR_DTR);
    assert_ne!(inb(&mut u, LSR), 0xFF);
    outb(&mut u, IER_DLM, IER_ETBEI);
    assert!(line.high());
    let iir1 = inb(&mut u, IIR_FCR);
    assert_eq!(iir1, IIR_FIFOS | IIR_THRE);
    assert!(!line.high(), "reading IIR clears THRE");
    assert_eq!(inb(&mut u, IIR_FCR), IIR_FIFOS | IIR_NONE);
    outb(&mut u, IER_DLM, 0);
    outb(&mut u, IER_DLM, IER_ETBEI);
    let iir = inb(&mut u, IIR_FCR);
    assert_eq!(iir & IIR_NONE, 0, "no UART_BUG_THRE");
    assert_eq!(line.rises(), 2);
}

#[test]
fn loopback_returns_bytes_and_mirrors_modem_lines() {
    let (mut u, line, lines) = uart();
    outb(&mut u, IIR_FCR, FCR_ENABLE);
    outb(&mut u, IER_DLM, IER_ERBFI);
    outb(&mut u, MCR, MCR_LOOP | MCR_OUT2 | MCR_DTR);
    assert_eq!(inb(&mut u, MSR) & 0xF0, MSR_DSR | MSR_DCD);
    u.push_input(b"typed");
    for &b in b"ping" {
        outb(&mut u, RBR_THR_DLL, b);
    }
    assert!(!line.high(), "OUT2 is forced inactive in loopback");
    let mut got = Vec::new();
    while inb(&mut u, LSR) & LSR_DR != 0 {
        got.push(inb(&mut u, RBR_THR_DLL));
    }
    assert_eq!(got, b"ping");
    assert!(lines.lock().is_empty());
    assert_eq!(u.console().total_bytes(), 0);
    // Leaving loopback reconnects the input.
    outb(&mut u, MCR, MCR_OUT2);
    assert!(line.high());
    assert_eq!(inb(&mut u, RBR_THR_DLL), b't');
    // RI (OUT1) falling sets TERI; reading MSR clears the deltas.
    outb(&mut u, MCR, MCR_LOOP | MCR_OUT1);
    outb(&mut u, MCR, MCR_LOOP);
    assert_ne!(inb(&mut u, MSR) & MSR_TERI, 0);
    assert_eq!(inb(&mut u, MSR) & 0x0F, 0);
}

#[test]
fn loopback_without_fifo_overruns() {
    let (mut u, _, _) = uart();
    outb(&mut u, MCR, MCR_LOOP);
    outb(&mut u, RBR_THR_DLL, 1);
    outb(&mut u, RBR_THR_DLL, 2);
    let lsr = inb(&mut u, LSR);
    assert_eq!(lsr & (LSR_DR | LSR_OE), LSR_DR | LSR_OE);
    assert_eq!(inb(&mut u, LSR) & LSR_OE, 0, "reading LSR clears OE");
    assert_eq!(inb(&mut u, RBR_THR_DLL), 1);
}

#[test]
fn fifo_trigger_level_selects_rda_over_timeout() {
    let (mut u, line, _) = uart();
    outb(&mut u, IIR_FCR, FCR_ENABLE | (1 << FCR_TRIGGER_SHIFT)); // trigger at 4
    outb(&mut u, MCR, MCR_OUT2);
    outb(&mut u, IER_DLM, IER_ERBFI);
    assert!(!line.high());
    u.push_input(b"ab");
    assert!(line.high());
    assert_eq!(inb(&mut u, IIR_FCR), IIR_FIFOS | IIR_TIMEOUT);
    u.push_input(b"cd");
    assert_eq!(inb(&mut u, IIR_FCR), IIR_FIFOS | IIR_RDA);
    let mut got = Vec::new();
    while inb(&mut u, LSR) & LSR_DR != 0 {
        got.push(inb(&mut u, RBR_THR_DLL));
    }
    assert_eq!(got, b"abcd");
    assert_eq!(inb(&mut u, IIR_FCR), IIR_FIFOS | IIR_NONE);
    assert!(!line.high());
    // Trigger 14; FCR bit 1 clears the receive FIFO.
    outb(&mut u, IIR_FCR, FCR_ENABLE | (3 << FCR_TRIGGER_SHIFT));
    u.push_input(&[b'x'; 13]);
    assert_eq!(inb(&mut u, IIR_FCR), IIR_FIFOS | IIR_TIMEOUT);
    u.push_input(b"y");
    assert_eq!(inb(&mut u, IIR_FCR), IIR_FIFOS | IIR_RDA);
    outb(&mut u, IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX);
    assert_eq!(inb(&mut u, LSR) & LSR_DR, 0);
}

#[test]
fn input_beyond_the_fifo_waits_in_order() {
    let (mut u, _, _) = uart();
    outb(&mut u, IIR_FCR, FCR_ENABLE);
    let text = b"echo hello from the test harness; uname -a\n";
    u.push_input(text);
    assert_eq!(u.rx.len(), FIFO_BYTES);
    assert_eq!(u.pending_input(), text.len());
    let mut got = Vec::new();
    while inb(&mut u, LSR) & LSR_DR != 0 {
        got.push(inb(&mut u, RBR_THR_DLL));
    }
    assert_eq!(got, text);
    // Without FIFOs the receiver holds one byte at a time, still nothing is lost.
    outb(&mut u, IIR_FCR, 0);
    u.push_input(b"xyz");
    assert_eq!(u.rx.len(), 1);
    assert_eq!([inb(&mut u, 0), inb(&mut u, 0), inb(&mut u, 0)], *b"xyz");
    assert_eq!(u.dropped_input(), 0);
}

#[test]
fn input_queue_overflow_is_an_overrun() {
    let (mut u, line, _) = uart();
    outb(&mut u, MCR, MCR_OUT2);
    outb(&mut u, IER_DLM, IER_ELSI);
    u.push_input(&alloc::vec![b'a'; INPUT_QUEUE_BYTES + 10]);
    assert_eq!(u.dropped_input(), 10);
    assert!(line.high());
    assert_eq!(inb(&mut u, IIR_FCR), IIR_RLS);
    assert_ne!(inb(&mut u, LSR) & LSR_OE, 0);
    assert!(!line.high());
}

#[test]
fn a_line_reaches_the_sink_once_with_the_vm_name() {
    let (mut u, _, lines) = uart();
    for &b in b"Linux version 6.1.0-amd64\r\n" {
        outb(&mut u, RBR_THR_DLL, b);
    }
    assert_eq!(*lines.lock(), alloc::vec![(String::from("desktop"), b"Linux version 6.1.0-amd64".to_vec())]);
    for &b in b"partial" {
        outb(&mut u, RBR_THR_DLL, b);
    }
    assert_eq!(lines.lock().len(), 1);
    u.flush_line();
    assert_eq!(lines.lock()[1].1, b"partial");
    u.flush_line();
    assert_eq!(lines.lock().len(), 2, "nothing left to flush");
    // The ring keeps every byte, `\r` included.
    assert_eq!(u.console().contents(), b"Linux version 6.1.0-amd64\r\npartial");
    assert_eq!(u.console().total_bytes(), 34);
}

#[test]
fn long_lines_are_cut() {
    let (mut u, _, lines) = uart();
    for _ in 0..MAX_LINE_BYTES + 3 {
        outb(&mut u, RBR_THR_DLL, b'=');
    }
    outb(&mut u, RBR_THR_DLL, b'\n');
    let lines = lines.lock();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].1.len(), MAX_LINE_BYTES);
    assert_eq!(lines[1].1, b"===");
}

#[test]
fn console_ring_drops_the_oldest_bytes() {
    let mut ring = ConsoleRing::new(8);
    assert!(ring.contents().is_empty());
    for b in b"abcdef" {
        ring.push(*b);
    }
    assert_eq!(ring.contents(), b"abcdef");
    for b in b"ghijk" {
        ring.push(*b);
    }
    assert_eq!(ring.contents(), b"defghijk");
    assert_eq!(ring.total_bytes(), 11);
    for b in b"lmnop" {
        ring.push(*b);
    }
    assert_eq!(ring.contents(), b"ijklmnop");
    let mut big = ConsoleRing::new(CONSOLE_RING_BYTES);
    for i in 0..CONSOLE_RING_BYTES + 5 {
        big.push(i as u8);
    }
    let contents = big.contents();
    assert_eq!(contents.len(), CONSOLE_RING_BYTES);
    assert_eq!(contents[0], 5);
}

#[test]
fn divisor_latch_hides_behind_dlab() {
    let (mut u, _, lines) = uart();
    outb(&mut u, IER_DLM, IER_ERBFI);
    outb(&mut u, LCR, LCR_DLAB | 0x03);
    outb(&mut u, RBR_THR_DLL, 0x0C);
    outb(&mut u, IER_DLM, 0x00);
    assert_eq!(inb(&mut u, RBR_THR_DLL), 0x0C);
    assert_eq!(u.divisor(), 12);
    outb(&mut u, LCR, 0x03);
    assert_eq!(inb(&mut u, IER_DLM), IER_ERBFI, "IER untouched");
    assert_eq!(inb(&mut u, LCR), 0x03);
    assert!(lines.lock().is_empty());
    assert_eq!(u.console().total_bytes(), 0, "DLL write is not a transmit");
}

#[test]
fn scratch_and_read_only_registers() {
    let (mut u, _, _) = uart();
    outb(&mut u, SCR, 0xA5);
    assert_eq!(inb(&mut u, SCR), 0xA5);
    outb(&mut u, SCR, 0x5A);
    assert_eq!(inb(&mut u, SCR), 0x5A);
    outb(&mut u, LSR, 0);
    assert_eq!(inb(&mut u, LSR), LSR_THRE | LSR_TEMT);
    outb(&mut u, MSR, 0);
    assert_eq!(inb(&mut u, MSR), MSR_LINE_READY);
    outb(&mut u, MCR, 0xFF);
    assert_eq!(inb(&mut u, MCR), MCR_MASK);
    assert_eq!(inb(&mut u, IIR_FCR), IIR_NONE, "no FIFO bits while FIFOs are off");
}

#[test]
fn interrupt_priority_and_out2_gating() {
    let (mut u, line, _) = uart();
    outb(&mut u, IER_DLM, IER_MASK);
    u.push_input(b"k");
    assert!(!line.high(), "OUT2 clear: nothing reaches the PIC");
    outb(&mut u, MCR, MCR_OUT2);
    assert!(line.high());
    assert_eq!(inb(&mut u, IIR_FCR), IIR_RDA, "RDA outranks THRE and modem status");
    inb(&mut u, RBR_THR_DLL);
    assert_eq!(inb(&mut u, IIR_FCR), IIR_THRE);
    assert_eq!(inb(&mut u, IIR_FCR), IIR_NONE, "THRE cleared by the IIR read");
    assert!(!line.high());
    outb(&mut u, RBR_THR_DLL, b'x');
    assert!(line.high(), "THR empties at once and THRE returns");
    outb(&mut u, IER_DLM, 0);
    assert!(!line.high());
}

#[test]
fn wide_accesses_touch_consecutive_registers() {
    let (mut u, _, _) = uart();
    u.write(LCR, AccessSize::Word, 0x0B03); // LCR = 3, MCR = 0x0B
    assert_eq!(inb(&mut u, LCR), 0x03);
    assert_eq!(inb(&mut u, MCR), 0x0B);
    assert_eq!(u.read(LCR, AccessSize::Word), 0x0B03);
}
