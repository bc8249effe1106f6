//! The fencing token of fencelock, shared by the state machine that issues it
//! (`fencelock-core`), the client that hands it to the holder (`fencelock-client`) and
//! the resource-side fence that checks it (`fencelock-fence`), so a token moves from a
//! grant to a fence without conversions. This crate has no dependencies (`serde` is an
//! optional feature), so a resource owner using the fence alone takes on nothing of the
//! lock service.

use std::fmt;

/// A fencing token: the `u64` a fencelock grant carries. One counter for the whole state
/// of the cluster, incremented on every grant, so tokens strictly increase per lock and
/// are unique across the cluster. Pass it to the protected resource with every write;
/// the resource refuses tokens older than the newest it has seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FencingToken(pub u64);

impl FencingToken {
    /// The token as a plain integer, e.g. to store it in a database column.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl From<u64> for FencingToken {
    fn from(value: u64) -> Self {
        Self(value)
    }
}

impl From<FencingToken> for u64 {
    fn from(token: FencingToken) -> Self {
        token.0
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(all(test, feature = "serde"))]
mod tests {
    use super::FencingToken;

    /// The log and snapshots store tokens: the encoding is the bare integer's, as it was
    /// when the state machine had its own newtype.
    #[test]
    fn a_token_encodes_as_its_integer() {
        let token = FencingToken(300);
        let bytes = postcard::to_allocvec(&token).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&300_u64).unwrap());
        assert_eq!(bytes, [0xAC, 0x02]);
        assert_eq!(postcard::from_bytes::<FencingToken>(&bytes).unwrap(), token);
    }
}
