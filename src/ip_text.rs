//! IP addresses as text, IPv4 without the formatting machinery: every request writes its
//! client's address, and every audited request its client's network.
//!
//! IPv6 addresses go through `Display`, which owns the compression rules (RFC 5952).

use std::net::IpAddr;

/// `ip` as its usual text, e.g. `203.0.113.9` or `2001:db8::1`.
pub fn address(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut text = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push('.');
                }
                push_octet(&mut text, octet);
            }
            text
        }
        IpAddr::V6(v6) => v6.to_string(),
    }
}

/// Appends `octet` in decimal.
pub fn push_octet(text: &mut String, octet: u8) {
    if octet >= 100 {
        text.push(char::from(b'0' + octet / 100));
    }
    if octet >= 10 {
        text.push(char::from(b'0' + octet / 10 % 10));
    }
    text.push(char::from(b'0' + octet % 10));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for value in 0..=255u8 {
            for ip in [
                Ipv4Addr::new(value, 0, 7, 255),
                Ipv4Addr::new(1, value, 10, 99),
                Ipv4Addr::new(100, 9, value, 0),
                Ipv4Addr::new(255, 255, 0, value),
            ] {
                assert_eq!(address(IpAddr::V4(ip)), ip.to_string());
            }
        }
        for ip in [Ipv6Addr::LOCALHOST, "2001:db8::1".parse().unwrap()] {
            assert_eq!(address(IpAddr::V6(ip)), ip.to_string());
        }
    }
}
