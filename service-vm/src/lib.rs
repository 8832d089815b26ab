//! The router of Bulkhead's networking service VM.
//!
//! Each desktop VM is wired to the service VM through its own link (a virtio-net pair
//! whose frames the hypervisor copies); the uplink is the NIC or a link to a Wi-Fi VM.
//! [`Router`] takes Ethernet frames in from any port and hands frames out, with the time
//! passed in: no clock, no hardware, no allocation that a frame can grow without bound.
//! It serves DHCP and ARP for each link's gateway, relays DNS to the uplink's resolver,
//! masquerades TCP/UDP/ICMP echo behind the uplink address, enforces each link's rule,
//! and counts every frame it drops by reason. docs/networking.md describes the design.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod addressing;
pub mod agent;
mod arp;
mod checksum;
mod conntrack;
pub mod counters;
mod dhcp_client;
mod dhcp_server;
mod dns_relay;
pub mod e1000e;
mod frame;
// Test support, built with the `fuzzing` feature for the fuzz target; never in the kernel.
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod nat;
mod random;
pub mod router;
pub mod rules;
pub mod service_config;
pub mod status;

pub use addressing::{AddressPlan, LinkAddresses, LinkId, Port};
pub use conntrack::NatTimeouts;
pub use counters::{Counters, DropReason};
pub use dhcp_client::DhcpClientState;
pub use router::{LOCAL_QUEUE, Limits, LinkConfig, Router, RouterConfig, RouterError, Transmit, UplinkConfig};
pub use rules::{Destination, Rule};
pub use status::{LinkStatus, Status, UplinkStatus};

/// Time as the kernel passes it in (monotonic, microsecond resolution).
pub use smoltcp::time::{Duration, Instant};
/// Address types of the public API.
pub use smoltcp::wire::{EthernetAddress, Ipv4Address, Ipv4Cidr};
