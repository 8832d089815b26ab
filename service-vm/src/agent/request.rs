//! The check-in request's body and the server's address, from what `POLICY_CHECKIN`
//! returned.

use alloc::vec::Vec;

use bulkhead_abi::hypercall::PolicyCheckin;
use smoltcp::wire::Ipv4Address;

/// Why the policy's server URL cannot be used by the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlError {
    /// Not `http://` (the answer is signed, so no TLS is needed for it to be trusted).
    NotHttp,
    /// The host is not a dotted IPv4 address (the agent has no resolver).
    NotAnAddress,
    BadPort,
    /// A path other than `/`.
    HasPath,
}

/// `http://A.B.C.D[:PORT][/]` → address and port (80 by default).
pub fn parse_server(url: &[u8]) -> Result<(Ipv4Address, u16), UrlError> {
    let url = core::str::from_utf8(url).map_err(|_| UrlError::NotHttp)?;
    let rest = url.strip_prefix("http://").ok_or(UrlError::NotHttp)?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') {
        return Err(UrlError::HasPath);
    }
    let (host, port) = match rest.split_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().ok().filter(|p| *p != 0).ok_or(UrlError::BadPort)?),
        None => (rest, 80),
    };
    let mut octets = [0u8; 4];
    let mut parts = host.split('.');
    for octet in &mut octets {
        let part = parts.next().ok_or(UrlError::NotAnAddress)?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(UrlError::NotAnAddress);
        }
        *octet = part.parse().map_err(|_| UrlError::NotAnAddress)?;
    }
    if parts.next().is_some() {
        return Err(UrlError::NotAnAddress);
    }
    Ok((Ipv4Address::from_octets(octets), port))
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The postcard encoding of `bulkhead_policy::heartbeat::CheckinRequest { device_id,
/// group, running_version, nonce }` (the service VM does not link the policy crate;
/// a test checks the two encodings agree).
pub fn checkin_body(c: &PolicyCheckin) -> Vec<u8> {
    let group = c.group();
    let mut out = Vec::with_capacity(16 + 10 + group.len() + 10 + 16);
    out.extend_from_slice(&c.device_id);
    varint(&mut out, group.len() as u64);
    out.extend_from_slice(group);
    varint(&mut out, c.running_version);
    out.extend_from_slice(&c.nonce);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_with_an_address_and_a_port() {
        assert_eq!(parse_server(b"http://10.0.2.2:8470"), Ok((Ipv4Address::new(10, 0, 2, 2), 8470)));
        assert_eq!(parse_server(b"http://192.168.1.9/"), Ok((Ipv4Address::new(192, 168, 1, 9), 80)));
        assert_eq!(parse_server(b"https://10.0.2.2"), Err(UrlError::NotHttp));
        assert_eq!(parse_server(b"http://mgmt.example.com:8470"), Err(UrlError::NotAnAddress));
        assert_eq!(parse_server(b"http://10.0.2.256"), Err(UrlError::NotAnAddress));
        assert_eq!(parse_server(b"http://10.0.2"), Err(UrlError::NotAnAddress));
        assert_eq!(parse_server(b"http://10.0.2.2.1"), Err(UrlError::NotAnAddress));
        assert_eq!(parse_server(b"http://10.0.2.2:0"), Err(UrlError::BadPort));
        assert_eq!(parse_server(b"http://10.0.2.2:99999"), Err(UrlError::BadPort));
        assert_eq!(parse_server(b"http://10.0.2.2/v1"), Err(UrlError::HasPath));
    }

    #[test]
    fn the_body_is_the_policy_crates_encoding() {
        for (group, version) in [("staff", 2u64), ("", 0), ("g", 300), ("x".repeat(64).as_str(), u64::MAX)] {
            let mut c =
                PolicyCheckin { device_id: [3; 16], nonce: [4; 16], running_version: version, ..Default::default() };
            c.group[..group.len()].copy_from_slice(group.as_bytes());
            c.group_len = group.len() as u32;
            let expected = bulkhead_policy::heartbeat::CheckinRequest {
                device_id: [3; 16],
                group: group.into(),
                running_version: version,
                nonce: [4; 16],
            };
            assert_eq!(checkin_body(&c), expected.encode().unwrap(), "{group:?} v{version}");
        }
    }
}
