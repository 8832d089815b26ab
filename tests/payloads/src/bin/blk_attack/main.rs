//! A VM that attacks its own virtio-blk device with requests a real driver never
//! sends: sectors past the end (and a sector number that overflows), empty, partial
//! and oversized buffers, a short header, mixed directions, an unknown request type,
//! a buffer outside its RAM; then ring violations: a descriptor loop, indices past the
//! table, an indirect descriptor, an available index far ahead. Each malformed request
//! must end in an I/O error (or UNSUPP), each ring violation in NEEDS_RESET, and after
//! a reset the disk must work again with its data intact. It reports `CHECK` lines,
//! repeats the whole attack for a while beside the other VMs, and shuts down with
//! the number of failed checks. The test checks that the other VMs' disks and the
//! hypervisor are unaffected.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
payloads::global_heap!(256 * 1024);

#[cfg(target_os = "none")]
#[path = "../../virtio_pci.rs"]
mod virtio_pci;

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod queue;

#[cfg(target_os = "none")]
mod attack {
    use payloads::{check, hypercall, println};
    use virtio_drivers::transport::DeviceType;

    use super::queue::{self, Desc, F_INDIRECT, F_NEXT, F_WRITE, Outcome, Queue, Seg};
    use super::virtio_pci;

    const IN: u32 = 0;
    const OUT: u32 = 1;
    const OK: u8 = 0;
    const IOERR: u8 = 1;
    const UNSUPP: u8 = 2;
    /// Where the known pattern is written and read back.
    const PATTERN_SECTOR: u64 = 8;
    const PATTERN_BYTES: usize = 4096;
    /// Rounds of the whole attack after the checks, and the pause between them: the
    /// attack goes on while the other VMs work, without taking their CPU.
    const ROUNDS: u32 = 128;
    const ROUND_PAUSE_US: u64 = 20_000;
    /// An address far outside this VM's RAM.
    const OUTSIDE_RAM: u64 = 1 << 40;

    fn header() -> Seg {
        Seg { addr: queue::header_addr(), len: 16, writable: false }
    }
    fn status() -> Seg {
        Seg { addr: queue::status_addr(), len: 1, writable: true }
    }
    fn data(len: u32, writable: bool) -> Seg {
        Seg { addr: queue::data_addr(), len, writable }
    }

    /// A request with a well-formed frame around `buffers`.
    fn request(q: &mut Queue, req_type: u32, sector: u64, buffers: &[Seg]) -> Outcome {
        q.set_header(req_type, sector);
        let mut chain = [header(); 8];
        chain[1..=buffers.len()].copy_from_slice(buffers);
        chain[buffers.len() + 1] = status();
        q.submit(&chain[..buffers.len() + 2])
    }

    fn pattern(i: usize) -> u8 {
        (i * 7 + 3) as u8
    }

    /// Reads the pattern back: whether the disk still holds it.
    fn pattern_intact(q: &mut Queue) -> bool {
        q.data()[..PATTERN_BYTES].fill(0);
        let read = request(q, IN, PATTERN_SECTOR, &[data(PATTERN_BYTES as u32, true)]);
        read == Outcome::Completed { status: OK }
            && q.data()[..PATTERN_BYTES].iter().enumerate().all(|(i, &b)| b == pattern(i))
    }

    /// The malformed requests: (check name, what came back, what must come back).
    fn malformed(q: &mut Queue, capacity: u64, mut report: impl FnMut(&str, Outcome, u8)) {
        let end = capacity;
        report("blk_read_past_end", request(q, IN, end, &[data(512, true)]), IOERR);
        report("blk_read_straddling_end", request(q, IN, end - 1, &[data(1024, true)]), IOERR);
        report("blk_sector_overflow", request(q, IN, u64::MAX, &[data(512, true)]), IOERR);
        report("blk_write_past_end", request(q, OUT, end, &[data(512, false)]), IOERR);
        report("blk_zero_length_buffer", request(q, IN, 0, &[data(0, true)]), IOERR);
        report("blk_oversized_buffer", request(q, IN, 0, &[data(queue::DATA_BYTES as u32, true)]), IOERR);
        report("blk_partial_sector", request(q, IN, 0, &[data(100, true)]), IOERR);
        let mixed = [data(512, true), Seg { addr: queue::data_addr() + 512, len: 512, writable: false }];
        report("blk_mixed_directions", request(q, IN, 0, &mixed), IOERR);
        report("blk_unknown_type", request(q, 0x55, 0, &[data(512, true)]), UNSUPP);
        let outside = Seg { addr: OUTSIDE_RAM, len: 512, writable: true };
        report("blk_buffer_outside_ram", request(q, IN, 0, &[outside]), IOERR);
        q.set_header(IN, 0);
        let short = [Seg { len: 8, ..header() }, data(512, true), status()];
        report("blk_short_header", q.submit(&short), IOERR);
    }

    /// The ring violations: (check name, descriptors, head, available index step).
    fn ring_violations() -> [(&'static str, [Desc; 2], u16, u16); 5] {
        let hdr = Desc { addr: queue::header_addr(), len: 16, flags: F_NEXT, next: 1 };
        let buf = Desc { addr: queue::data_addr(), len: 512, flags: F_WRITE | F_NEXT, next: 0 };
        [
            ("blk_descriptor_loop", [hdr, buf], 0, 1),
            ("blk_next_past_table", [Desc { next: 40, ..hdr }, buf], 0, 1),
            ("blk_head_past_table", [hdr, buf], 200, 1),
            ("blk_indirect_descriptor", [Desc { flags: F_INDIRECT, len: 32, ..hdr }, buf], 0, 1),
            ("blk_avail_index_overrun", [hdr, buf], 0, 100),
        ]
    }

    #[unsafe(no_mangle)]
    extern "Rust" fn payload_main(_ram_bytes: u64) -> ! {
        let Some(transport) = virtio_pci::open(DeviceType::Block) else {
            println!("blk-attack: no virtio-blk device");
            hypercall::shutdown(1)
        };
        let mut q = Queue::new(transport);
        let capacity = q.capacity();
        check("blk_capacity_reported", capacity >= 64, format_args!("{capacity} sectors"));
        println!("blk-attack: disk of {capacity} sectors; attacking");

        for (i, b) in q.data()[..PATTERN_BYTES].iter_mut().enumerate() {
            *b = pattern(i);
        }
        let write = request(&mut q, OUT, PATTERN_SECTOR, &[data(PATTERN_BYTES as u32, false)]);
        check("blk_write_ok", write == Outcome::Completed { status: OK }, format_args!("{write:?}"));
        check("blk_read_back", pattern_intact(&mut q), format_args!("the pattern did not read back"));

        malformed(&mut q, capacity, |name, got, want| {
            check(name, got == Outcome::Completed { status: want }, format_args!("{got:?}, wanted status {want}"));
        });
        check("blk_works_after_bad_requests", pattern_intact(&mut q), format_args!("pattern lost"));

        for (name, descs, head, step) in ring_violations() {
            let got = q.submit_raw(&descs, head, step);
            check(name, got == Outcome::NeedsReset, format_args!("{got:?}"));
            q.reset();
            let recovered = pattern_intact(&mut q);
            println!("blk-attack: after {name} and a reset the disk {}", if recovered { "works" } else { "FAILS" });
            check(&alloc::format!("{name}_recovers"), recovered, format_args!("no valid read after the reset"));
        }

        // The same again, round after round, beside the other VMs.
        let mut misbehaved = 0u32;
        for round in 1..=ROUNDS {
            malformed(&mut q, capacity, |_, got, want| {
                misbehaved += u32::from(got != Outcome::Completed { status: want });
            });
            for (_, descs, head, step) in ring_violations() {
                misbehaved += u32::from(q.submit_raw(&descs, head, step) != Outcome::NeedsReset);
                q.reset();
            }
            if round.is_power_of_two() {
                println!("blk-attack: {round} rounds sent");
            }
            hypercall::call(bulkhead_abi::hypercall::SLEEP, ROUND_PAUSE_US, 0, 0, 0);
        }
        check("blk_rounds_all_refused", misbehaved == 0, format_args!("{misbehaved} answers differed"));
        check("blk_data_intact_after_rounds", pattern_intact(&mut q), format_args!("pattern lost"));
        let (_, failed) = payloads::summary();
        hypercall::shutdown(u64::from(failed))
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("This is a guest payload; it runs inside a Bulkhead VM (see tests/).");
}
