//! The network configuration the hypervisor hands the service VM (hypercall
//! `NET_CONFIG`), as text: one `link` line per desktop link, in link order.
//!
//! ```text
//! link 0 vm=personal mac=0a:b3:ec:00:01:00 rule=internet
//! link 1 vm=corporate mac=0a:b3:ec:00:00:00 rule=corporate-only allow=10.0.2.2/32:8080,192.168.0.0/16
//! link 2 vm=lab mac=0a:b3:ec:00:03:00 rule=isolated peers=0
//! clock tsc_khz=2500000
//! ```
//!
//! The `clock` line gives the rate of the TSC the service VM keeps time with.
//!
//! The text comes from the hypervisor, not from a guest, but it is still checked word
//! by word: a wrong line is refused with its number rather than half-applied.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use smoltcp::wire::{EthernetAddress, Ipv4Address, Ipv4Cidr};

use crate::addressing::{AddressPlan, LinkId};
use crate::router::LinkConfig;
use crate::rules::{Destination, Rule};

/// One desktop link: the VM's name (for logs and the status) and what the router needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkEntry {
    pub vm: String,
    pub config: LinkConfig,
}

/// Why a line was refused (1-based line number and what was wrong).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub line: usize,
    pub what: ConfigProblem,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigProblem {
    UnknownLine,
    /// `link N` out of order (links must be listed 0, 1, 2, ...).
    LinkOutOfOrder,
    TooManyLinks,
    MissingWord(&'static str),
    UnknownWord,
    BadMac,
    BadRule,
    BadDestination,
    BadPeer,
    BadClock,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.what {
            ConfigProblem::UnknownLine => "not a `link` line",
            ConfigProblem::LinkOutOfOrder => "links must be numbered 0, 1, 2, ... in order",
            ConfigProblem::TooManyLinks => "more links than the address plan holds",
            ConfigProblem::MissingWord(w) => return write!(f, "network configuration line {}: no {w}=", self.line),
            ConfigProblem::UnknownWord => "unknown word",
            ConfigProblem::BadMac => "mac= is not a unicast MAC address",
            ConfigProblem::BadRule => "rule= must be internet, corporate-only or isolated",
            ConfigProblem::BadDestination => "allow= entries are CIDR[:port]",
            ConfigProblem::BadPeer => "peers= names a link that does not exist, or the link itself",
            ConfigProblem::BadClock => "tsc_khz= must be a positive number",
        };
        write!(f, "network configuration line {}: {what}", self.line)
    }
}

/// Everything the text says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    pub links: Vec<LinkEntry>,
    /// TSC ticks per millisecond.
    pub tsc_khz: u64,
}

/// Parses the whole text: the links and the clock (required).
pub fn parse_service(text: &str) -> Result<ServiceConfig, ConfigError> {
    let mut tsc_khz = None;
    for (i, raw) in text.lines().enumerate() {
        if let ["clock", rest @ ..] = raw.split_whitespace().collect::<Vec<_>>().as_slice() {
            let line = i.saturating_add(1);
            let value = rest
                .iter()
                .find_map(|w| w.strip_prefix("tsc_khz="))
                .ok_or(ConfigError { line, what: ConfigProblem::MissingWord("tsc_khz") })?;
            tsc_khz = Some(
                value
                    .parse::<u64>()
                    .ok()
                    .filter(|k| *k > 0)
                    .ok_or(ConfigError { line, what: ConfigProblem::BadClock })?,
            );
        }
    }
    let tsc_khz = tsc_khz.ok_or(ConfigError { line: 0, what: ConfigProblem::MissingWord("tsc_khz") })?;
    Ok(ServiceConfig { links: parse(text)?, tsc_khz })
}

/// Parses the `link` lines into the links, in order (other known lines are skipped).
pub fn parse(text: &str) -> Result<Vec<LinkEntry>, ConfigError> {
    let mut links: Vec<LinkEntry> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i.saturating_add(1);
        let err = |what| ConfigError { line, what };
        let words: Vec<&str> = raw.split_whitespace().collect();
        match words.as_slice() {
            [] | ["clock", ..] => continue,
            ["link", index, rest @ ..] => {
                if index.parse::<usize>().ok() != Some(links.len()) {
                    return Err(err(ConfigProblem::LinkOutOfOrder));
                }
                if links.len() >= AddressPlan::MAX_LINKS {
                    return Err(err(ConfigProblem::TooManyLinks));
                }
                links.push(parse_link(rest).map_err(err)?);
            }
            _ => return Err(err(ConfigProblem::UnknownLine)),
        }
    }
    for (i, link) in links.iter().enumerate() {
        if link.config.peers.iter().any(|p| p.index() >= links.len() || p.index() == i) {
            // The line of link i is the i-th non-empty line; count it back.
            let line = text
                .lines()
                .enumerate()
                .filter(|(_, l)| l.trim_start().starts_with("link"))
                .nth(i)
                .map_or(0, |(n, _)| n.saturating_add(1));
            return Err(ConfigError { line, what: ConfigProblem::BadPeer });
        }
    }
    Ok(links)
}

fn parse_link(words: &[&str]) -> Result<LinkEntry, ConfigProblem> {
    let (mut vm, mut mac, mut rule, mut allow, mut peers) = (None, None, None, Vec::new(), Vec::new());
    for word in words {
        let (key, value) = word.split_once('=').ok_or(ConfigProblem::UnknownWord)?;
        match key {
            "vm" => vm = Some(String::from(value)),
            "mac" => mac = Some(parse_mac(value).ok_or(ConfigProblem::BadMac)?),
            "rule" => rule = Some(value),
            "allow" => {
                for entry in value.split(',').filter(|e| !e.is_empty()) {
                    allow.push(parse_destination(entry).ok_or(ConfigProblem::BadDestination)?);
                }
            }
            "peers" => {
                for entry in value.split(',').filter(|e| !e.is_empty()) {
                    peers.push(LinkId(entry.parse().map_err(|_| ConfigProblem::BadPeer)?));
                }
            }
            _ => return Err(ConfigProblem::UnknownWord),
        }
    }
    let rule = match rule.ok_or(ConfigProblem::MissingWord("rule"))? {
        "internet" => Rule::Internet,
        "corporate-only" => Rule::CorporateOnly(allow),
        "isolated" => Rule::Isolated,
        _ => return Err(ConfigProblem::BadRule),
    };
    Ok(LinkEntry {
        vm: vm.ok_or(ConfigProblem::MissingWord("vm"))?,
        config: LinkConfig { desktop_mac: mac.ok_or(ConfigProblem::MissingWord("mac"))?, rule, peers },
    })
}

fn parse_mac(text: &str) -> Option<EthernetAddress> {
    let mut bytes = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut bytes {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    let mac = EthernetAddress(bytes);
    (parts.next().is_none() && mac.is_unicast()).then_some(mac)
}

fn parse_destination(text: &str) -> Option<Destination> {
    let (net, port) = match text.rsplit_once(':') {
        Some((net, port)) => (net, Some(port.parse::<u16>().ok().filter(|p| *p != 0)?)),
        None => (text, None),
    };
    let (addr, len) = net.split_once('/').unwrap_or((net, "32"));
    let addr: Ipv4Address = addr.parse().ok()?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    Some(Destination { net: Ipv4Cidr::new(addr, len), port })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
link 0 vm=personal mac=0a:b3:ec:00:01:00 rule=internet
link 1 vm=corporate mac=0a:b3:ec:00:00:00 rule=corporate-only allow=10.0.2.2/32:8080,192.168.0.0/16

link 2 vm=lab mac=0a:b3:ec:00:03:00 rule=isolated peers=0
";

    #[test]
    fn links_rules_and_allow_lists() {
        let links = parse(TEXT).unwrap();
        assert_eq!(links.len(), 3);
        assert_eq!(links[0].vm, "personal");
        assert_eq!(links[0].config.rule, Rule::Internet);
        assert_eq!(links[1].config.desktop_mac, EthernetAddress([0x0a, 0xb3, 0xec, 0, 0, 0]));
        assert_eq!(
            links[1].config.rule,
            Rule::CorporateOnly(vec![
                Destination { net: Ipv4Cidr::new(Ipv4Address::new(10, 0, 2, 2), 32), port: Some(8080) },
                Destination { net: Ipv4Cidr::new(Ipv4Address::new(192, 168, 0, 0), 16), port: None },
            ])
        );
        assert_eq!(links[2].config.rule, Rule::Isolated);
        assert_eq!(links[2].config.peers, vec![LinkId(0)]);
    }

    #[test]
    fn the_clock_line_is_required_and_checked() {
        let with_clock = format!("{TEXT}clock tsc_khz=2500000\n");
        let config = parse_service(&with_clock).unwrap();
        assert_eq!((config.links.len(), config.tsc_khz), (3, 2_500_000));
        assert_eq!(parse_service(TEXT).unwrap_err().what, ConfigProblem::MissingWord("tsc_khz"));
        assert_eq!(parse_service("clock tsc_khz=0").unwrap_err().what, ConfigProblem::BadClock);
        assert_eq!(
            parse_service("clock").unwrap_err(),
            ConfigError { line: 1, what: ConfigProblem::MissingWord("tsc_khz") }
        );
    }

    #[test]
    fn wrong_lines_are_refused_with_their_number() {
        let bad = |text: &str| parse(text).unwrap_err();
        assert_eq!(bad("link 1 vm=a mac=0a:00:00:00:00:01 rule=internet").what, ConfigProblem::LinkOutOfOrder);
        assert_eq!(bad("route 0").what, ConfigProblem::UnknownLine);
        let e = bad("link 0 vm=a mac=0a:00:00:00:00:01 rule=internet\nlink 1 vm=b mac=01:00:00:00:00:01 rule=internet");
        assert_eq!((e.line, e.what), (2, ConfigProblem::BadMac), "multicast MAC");
        assert_eq!(bad("link 0 vm=a mac=0a:00:00:00:00:01 rule=open").what, ConfigProblem::BadRule);
        assert_eq!(bad("link 0 vm=a mac=0a:00:00:00:00:01").what, ConfigProblem::MissingWord("rule"));
        assert_eq!(bad("link 0 mac=0a:00:00:00:00:01 rule=internet").what, ConfigProblem::MissingWord("vm"));
        let allow = "link 0 vm=a mac=0a:00:00:00:00:01 rule=corporate-only allow=";
        for wrong in ["10.0.0.0/33", "10.0.0.1:0", "10.0.0.1:70000", "ten", "10.0.0.1/8:x"] {
            assert_eq!(bad(&format!("{allow}{wrong}")).what, ConfigProblem::BadDestination, "{wrong}");
        }
        assert_eq!(bad("link 0 vm=a mac=0a:00:00:00:00:01 rule=internet peers=0").what, ConfigProblem::BadPeer);
        assert_eq!(bad("link 0 vm=a mac=0a:00:00:00:00:01 rule=internet peers=3").what, ConfigProblem::BadPeer);
        assert_eq!(bad("link 0 vm=a mac=0a:00:00:00:00:01 rule=internet colour=red").what, ConfigProblem::UnknownWord);
        assert_eq!(
            bad("link 0 vm=a rule=internet").to_string(),
            "network configuration line 1: no mac=",
            "messages name the line"
        );
    }
}
