//! [`Hashed`]: a wrapper that hashes a `serde`-serializable value by its `postcard`
//! encoding, for the core types that derive `Eq` but not `Hash`.

use serde::Serialize;
use std::hash::{Hash, Hasher};

/// A value hashed by its serialized bytes and compared with its own `PartialEq`.
///
/// The checker deduplicates states by hash alone (a fingerprint), so the hash must cover
/// everything that makes two states differ: the serialized form of
/// [`fencelock_core::State`] covers every field, including the remembered answers that
/// its views do not show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hashed<T>(pub T);

impl<T: Serialize> Hash for Hashed<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let bytes = postcard::to_allocvec(&self.0).expect("model values serialize");
        bytes.hash(state);
    }
}
