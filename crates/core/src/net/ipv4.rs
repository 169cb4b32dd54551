//! An IPv4 prefix (`10.240.3.0/24`): the one address type the service networks need. A dozen
//! lines of arithmetic did not justify a dependency, and owning the type keeps its bincode layout
//! (address as four bytes, then the length) under shoal's control.

use std::{fmt, net::Ipv4Addr, str::FromStr};

use serde::{Deserialize, Serialize};

/// An IPv4 network: an address with its host bits cleared, and a prefix length (0 to 32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    len: u8,
}

impl Ipv4Net {
    /// The network of `addr` with prefix length `len` (host bits are cleared); `None` if `len`
    /// is over 32.
    pub const fn new(addr: Ipv4Addr, len: u8) -> Option<Ipv4Net> {
        if len > 32 {
            return None;
        }
        Some(Ipv4Net {
            addr: Ipv4Addr::from_bits(addr.to_bits() & mask(len)),
            len,
        })
    }

    /// The network address (host bits all zero).
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// How many addresses it spans.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.len))
    }

    /// The `n`th address from the network address; `None` past the end.
    pub fn nth(&self, n: u64) -> Option<Ipv4Addr> {
        (n < self.size()).then(|| Ipv4Addr::from(u32::from(self.addr) + n as u32))
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.len) == u32::from(self.addr)
    }

    /// Whether the two share any address (one then contains the other).
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        let len = self.len.min(other.len);
        u32::from(self.addr) & mask(len) == u32::from(other.addr) & mask(len)
    }

    /// The `n`th sub-network of prefix length `len` (0 is the first); `None` if `len` is shorter
    /// than this prefix or `n` is past the end.
    pub fn subnet(&self, len: u8, n: u64) -> Option<Ipv4Net> {
        if len < self.len || len > 32 {
            return None;
        }
        let count = 1u64 << (len - self.len);
        if n >= count {
            return None;
        }
        let step = 1u64 << (32 - u32::from(len));
        let base = u64::from(u32::from(self.addr)) + n * step;
        Ipv4Net::new(Ipv4Addr::from(base as u32), len)
    }

    /// How many sub-networks of length `len` it holds (0 if `len` is shorter).
    pub fn subnets(&self, len: u8) -> u64 {
        if len < self.len || len > 32 {
            0
        } else {
            1u64 << (len - self.len)
        }
    }
}

impl Default for Ipv4Net {
    /// `0.0.0.0/0` (what a never-written register reads as).
    fn default() -> Self {
        Ipv4Net {
            addr: Ipv4Addr::UNSPECIFIED,
            len: 0,
        }
    }
}

const fn mask(len: u8) -> u32 {
    match len {
        0 => 0,
        n if n >= 32 => u32::MAX,
        n => u32::MAX << (32 - n as u32),
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Why a prefix did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid IPv4 subnet {text:?}: {reason}")]
pub struct Ipv4NetError {
    /// What was given.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl FromStr for Ipv4Net {
    type Err = Ipv4NetError;

    /// `A.B.C.D/LEN`; host bits must be zero (`10.0.0.1/8` is refused, as Docker refuses it).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason| Ipv4NetError {
            text: text.to_string(),
            reason,
        };
        let (addr, len) = text
            .split_once('/')
            .ok_or_else(|| err("expected ADDRESS/LENGTH"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| err("not an IPv4 address"))?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| err("the length must be 0 to 32"))?;
        let net = Ipv4Net::new(addr, len).expect("length checked");
        if net.addr != addr {
            return Err(err("the address has bits set past the prefix length"));
        }
        Ok(net)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_print() {
        assert_eq!(net("10.240.0.0/12").to_string(), "10.240.0.0/12");
        assert_eq!(net("0.0.0.0/0").size(), 1 << 32);
        assert!("10.240.0.1/12".parse::<Ipv4Net>().is_err());
        assert!("10.240.0.0/33".parse::<Ipv4Net>().is_err());
        assert!("10.240.0.0".parse::<Ipv4Net>().is_err());
        assert!("::1/64".parse::<Ipv4Net>().is_err());
    }

    #[test]
    fn carving() {
        let pool = net("10.240.0.0/12");
        assert_eq!(pool.subnets(16), 16);
        assert_eq!(pool.subnet(16, 0), Some(net("10.240.0.0/16")));
        assert_eq!(pool.subnet(16, 15), Some(net("10.255.0.0/16")));
        assert_eq!(pool.subnet(16, 16), None);
        assert_eq!(pool.subnet(8, 0), None);
        let range = net("10.241.0.0/16");
        assert_eq!(range.subnet(24, 3), Some(net("10.241.3.0/24")));
        assert_eq!(
            range.subnet(24, 3).unwrap().nth(1),
            Some("10.241.3.1".parse().unwrap())
        );
        assert_eq!(range.nth(65_536), None);
    }

    #[test]
    fn overlap_and_containment() {
        assert!(net("10.0.0.0/8").overlaps(&net("10.3.0.0/16")));
        assert!(net("10.3.0.0/16").overlaps(&net("10.0.0.0/8")));
        assert!(!net("10.3.0.0/16").overlaps(&net("10.4.0.0/16")));
        assert!(net("10.3.0.0/16").contains("10.3.255.1".parse().unwrap()));
        assert!(!net("10.3.0.0/16").contains("10.4.0.1".parse().unwrap()));
        assert!(net("0.0.0.0/0").contains("1.2.3.4".parse().unwrap()));
    }
}
