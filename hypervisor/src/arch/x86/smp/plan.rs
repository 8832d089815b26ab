//! Which processors the boot CPU starts, from the firmware's list of APIC ids. Pure.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

/// The outcome of [`plan`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartPlan {
    /// APIC ids to send INIT and startup IPIs to, in the firmware's order.
    pub start: Vec<u32>,
    /// Ids an xAPIC cannot address (above 0xFE), left out.
    pub unreachable: Vec<u32>,
    /// Ids beyond the per-CPU table's size, left out.
    pub over_limit: Vec<u32>,
}

/// Plans the start of every processor in `ids` but the boot CPU (`bsp`): ids above
/// 0xFE need x2APIC mode to be addressed, and at most `max_cpus` CPUs run in all.
pub fn plan(ids: &[u32], bsp: u32, x2apic: bool, max_cpus: usize) -> StartPlan {
    let mut out = StartPlan::default();
    for &id in ids.iter().filter(|&&id| id != bsp) {
        if out.start.contains(&id) {
            continue;
        }
        if !x2apic && id > 0xfe {
            out.unreachable.push(id);
        } else if out.start.len().saturating_add(1) >= max_cpus {
            out.over_limit.push(id);
        } else {
            out.start.push(id);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_processor_but_the_boot_cpu_is_started_once() {
        let p = plan(&[0, 1, 2, 3], 0, false, 64);
        assert_eq!(p.start, [1, 2, 3]);
        let p = plan(&[2, 0, 1, 1], 1, true, 64);
        assert_eq!(p, StartPlan { start: vec![2, 0], ..StartPlan::default() });
        assert!(plan(&[0], 0, false, 64).start.is_empty());
    }

    #[test]
    fn ids_an_xapic_cannot_address_and_cpus_beyond_the_table_are_left_out() {
        let p = plan(&[0, 1, 300, 2], 0, false, 64);
        assert_eq!((p.start, p.unreachable), (vec![1, 2], vec![300]));
        let p = plan(&[0, 1, 300, 2], 0, true, 64);
        assert_eq!(p.start, [1, 300, 2]);
        // Three CPUs at most: the boot CPU and two others.
        let p = plan(&[0, 1, 2, 3, 4], 0, false, 3);
        assert_eq!((p.start, p.over_limit), (vec![1, 2], vec![3, 4]));
    }
}
