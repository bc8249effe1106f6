//! Loopback ports for the processes the harness (and the benchmark) start and restart.
//!
//! A port found by binding port 0 comes from the kernel's ephemeral range, the same range
//! the kernel draws the local port of every outgoing connection from. A node that is
//! killed and restarted on its old port can then find it taken by some client's
//! connection ("Address already in use"), which a long run with thousands of connections
//! eventually hits. So ports are drawn from below the ephemeral range, where the kernel
//! never hands out ports by itself, and checked free by binding them.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// The kernel's ephemeral range when `/proc` does not say (Linux's default).
const DEFAULT_EPHEMERAL: (u16, u16) = (32768, 60999);
/// How many ports below the ephemeral range may be drawn.
const SPAN: u16 = 20_000;
/// The lowest port ever drawn (above the well-known and most registered services).
const LOWEST: u16 = 10_000;
/// Random draws tried before falling back to an ephemeral port.
const ATTEMPTS: usize = 200;

/// The kernel's ephemeral port range, `(first, last)`.
pub fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut numbers = text.split_whitespace().map(str::parse::<u16>);
            Some((numbers.next()?.ok()?, numbers.next()?.ok()?))
        })
        .unwrap_or(DEFAULT_EPHEMERAL)
}

/// A loopback port that is free now and lies outside the ephemeral range (when the range
/// leaves room below it; otherwise an ephemeral one).
///
/// # Errors
/// Not even an ephemeral port could be bound.
pub fn free_port() -> std::io::Result<SocketAddr> {
    let (first_ephemeral, _) = ephemeral_range();
    let low = first_ephemeral.saturating_sub(SPAN).max(LOWEST);
    if low < first_ephemeral {
        for _ in 0..ATTEMPTS {
            let port = fastrand::u16(low..first_ephemeral);
            if let Ok(listener) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
                return listener.local_addr();
            }
        }
    }
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_and_below_the_ephemeral_range() {
        let (first_ephemeral, last_ephemeral) = ephemeral_range();
        assert!(first_ephemeral <= last_ephemeral);
        for _ in 0..50 {
            let addr = free_port().unwrap();
            assert!(addr.ip().is_loopback());
            if first_ephemeral > LOWEST {
                assert!(
                    addr.port() < first_ephemeral,
                    "{addr} is in the ephemeral range"
                );
            }
            // Free: it can be bound again at once.
            TcpListener::bind(addr).unwrap();
        }
    }
}
