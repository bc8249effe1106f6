//! The JSON bodies the service sends, shared by the server and [`FencedKvClient`].
//!
//! [`FencedKvClient`]: crate::FencedKvClient

use serde::{Deserialize, Serialize};

/// Which write a decision was about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteOp {
    /// `PUT /kv/{key}`: the body replaces the value.
    Put,
    /// `POST /kv/{key}/append`: the body is appended to the value.
    Append,
}

impl WriteOp {
    /// `"put"` or `"append"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Put => "put",
            Self::Append => "append",
        }
    }
}

/// Why a write was refused. Serialised as `"stale token"` or `"wrong lock"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RefusalReason {
    /// The token is below the highest token admitted for the key: the writer's lock was
    /// granted to someone else since, and it must stop writing.
    #[serde(rename = "stale token")]
    StaleToken,
    /// The key is bound to another lock than the one the token was presented under.
    #[serde(rename = "wrong lock")]
    WrongLock,
}

impl RefusalReason {
    /// `"stale token"` or `"wrong lock"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::StaleToken => "stale token",
            Self::WrongLock => "wrong lock",
        }
    }
}

/// The `200` answer to an admitted write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmittedWrite {
    /// Always `true`.
    pub admitted: bool,
    /// The key written.
    pub key: String,
    /// The token presented, now the highest seen for the key.
    pub token: u64,
    /// The highest token seen for the key before this write; `null` on the key's first
    /// write. Equal to `token` when the same holder wrote again.
    pub previous: Option<u64>,
    /// The key's version after this write: the number of writes admitted for it.
    pub version: u64,
    /// The decision's sequence number in the decision log.
    pub seq: u64,
}

/// The `409` answer to a refused write. Nothing was written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedWrite {
    /// Always `false`.
    pub admitted: bool,
    /// The key written to.
    pub key: String,
    /// The token presented.
    pub token: u64,
    /// The highest token admitted for the key (greater than `token` for a stale token;
    /// the bound lock's highest token for a wrong lock).
    pub highest_seen: Option<u64>,
    /// Why the write was refused.
    pub reason: RefusalReason,
    /// For [`RefusalReason::WrongLock`], the lock the key is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_lock: Option<String>,
    /// The decision's sequence number in the decision log.
    pub seq: u64,
}

/// What the service decided about one write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The write was admitted and applied.
    Admitted(AdmittedWrite),
    /// The write was refused and not applied.
    Refused(RefusedWrite),
}

impl WriteOutcome {
    /// Whether the write was admitted.
    #[must_use]
    pub fn is_admitted(&self) -> bool {
        matches!(self, Self::Admitted(_))
    }

    /// The decision's sequence number in the decision log.
    #[must_use]
    pub fn seq(&self) -> u64 {
        match self {
            Self::Admitted(admitted) => admitted.seq,
            Self::Refused(refused) => refused.seq,
        }
    }
}

/// A stored value: the answer to `GET /kv/{key}`.
///
/// On the wire the value is the string `value` when it is valid UTF-8, and otherwise the
/// hexadecimal string `value_hex` (with `value` null).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "ValueWire", try_from = "ValueWire")]
pub struct KvValue {
    /// The key.
    pub key: String,
    /// The value's bytes.
    pub value: Vec<u8>,
    /// The highest token admitted for the key.
    pub highest_token: u64,
    /// The number of writes admitted for the key.
    pub version: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ValueWire {
    key: String,
    value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value_hex: Option<String>,
    len: u64,
    highest_token: u64,
    version: u64,
    value_hash: String,
}

impl From<KvValue> for ValueWire {
    fn from(value: KvValue) -> Self {
        let len = value.value.len() as u64;
        let value_hash = crate::body_hash(&value.value);
        let (text, hex) = match String::from_utf8(value.value) {
            Ok(text) => (Some(text), None),
            Err(error) => (None, Some(to_hex(error.as_bytes()))),
        };
        Self {
            key: value.key,
            value: text,
            value_hex: hex,
            len,
            highest_token: value.highest_token,
            version: value.version,
            value_hash,
        }
    }
}

impl TryFrom<ValueWire> for KvValue {
    type Error = String;

    fn try_from(wire: ValueWire) -> Result<Self, Self::Error> {
        let value = match (wire.value, wire.value_hex) {
            (Some(text), _) => text.into_bytes(),
            (None, Some(hex)) => from_hex(&hex).ok_or("value_hex is not hexadecimal")?,
            (None, None) => return Err("neither value nor value_hex is present".into()),
        };
        Ok(Self {
            key: wire.key,
            value,
            highest_token: wire.highest_token,
            version: wire.version,
        })
    }
}

/// One decision of the service: an admitted or refused write, as kept in the decision
/// log (`GET /log`, and one JSON line each in the `--log-file`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Position in the order of decisions, from 1, without gaps.
    pub seq: u64,
    /// Put or append.
    pub op: WriteOp,
    /// The key (the fenced resource).
    pub key: String,
    /// The lock the token was presented under.
    pub lock: String,
    /// The token presented.
    pub token: u64,
    /// Whether the write was admitted and applied.
    pub admitted: bool,
    /// The highest token seen for the key *before* this decision (`null` if none): for a
    /// refusal by token, the token that fenced this one out.
    pub highest_seen: Option<u64>,
    /// Why a refused write was refused; `null` when admitted.
    pub reason: Option<RefusalReason>,
    /// For a wrong-lock refusal, the lock the key is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_lock: Option<String>,
    /// The key's version after an admitted write; `null` when refused.
    pub version: Option<u64>,
    /// Length of the request body.
    pub body_len: u64,
    /// [`body_hash`](crate::body_hash) of the request body.
    pub body_hash: String,
    /// Length of the key's value after an admitted write; `null` when refused.
    pub value_len: Option<u64>,
    /// [`body_hash`](crate::body_hash) of the key's value after an admitted write; `null`
    /// when refused.
    pub value_hash: Option<String>,
    /// `false` when the service runs in `--unfenced` mode (writes admitted without the
    /// token check).
    pub fenced: bool,
}

/// One page of the decision log: the answer to `GET /log?since=&limit=`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPage {
    /// Entries with `seq >= since`, in order, at most `limit` of them.
    pub entries: Vec<LogEntry>,
    /// The `since` to ask for the next page.
    pub next: u64,
    /// The oldest sequence number still kept in memory (equal to `next_seq` when the log
    /// is empty).
    pub first_seq: u64,
    /// The sequence number the next decision will get.
    pub next_seq: u64,
    /// How many of the oldest entries were dropped from memory since the start, because
    /// the log was full.
    pub dropped: u64,
    /// How many of the entries asked for (`seq >= since`) were dropped and are missing
    /// from this page.
    pub missed: u64,
}

/// The answer to `GET /health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `"ok"`.
    pub status: String,
    /// `false` in `--unfenced` mode.
    pub fenced: bool,
    /// `"memory"` or `"durable"`.
    pub backend: String,
    /// How many decisions were made (the next sequence number minus one).
    pub decisions: u64,
}

/// The body of every error answer (400, 404, 405, 413, 500).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A human-readable message.
    pub error: String,
    /// A stable code: `missing_header`, `invalid_header`, `invalid_key`,
    /// `invalid_query`, `body_too_large`, `bad_body`, `not_found`, `method_not_allowed`,
    /// `storage` or `internal`.
    pub code: String,
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 || !hex.is_ascii() {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_as_text_or_hex() {
        for bytes in [b"hello\n".to_vec(), vec![0xff, 0x00, 0x10], Vec::new()] {
            let value = KvValue {
                key: "k".into(),
                value: bytes,
                highest_token: 3,
                version: 2,
            };
            let json = serde_json::to_string(&value).unwrap();
            let back: KvValue = serde_json::from_str(&json).unwrap();
            assert_eq!(back, value);
        }
        let json = serde_json::to_value(KvValue {
            key: "k".into(),
            value: vec![0xff],
            highest_token: 1,
            version: 1,
        })
        .unwrap();
        assert_eq!(json["value"], serde_json::Value::Null);
        assert_eq!(json["value_hex"], "ff");
    }

    #[test]
    fn reasons_are_plain_strings() {
        assert_eq!(
            serde_json::to_string(&RefusalReason::StaleToken).unwrap(),
            "\"stale token\""
        );
        assert_eq!(RefusalReason::WrongLock.as_str(), "wrong lock");
        assert_eq!(
            serde_json::to_string(&WriteOp::Append).unwrap(),
            "\"append\""
        );
    }
}
