//! Raft's own messages between nodes (append-entries, vote, install-snapshot) over plain
//! framed TCP connections on the peer port, TLS inside when the peer link is encrypted.
//!
//! Why not gRPC: under load a commit is a chain of small messages, and each tonic call
//! passes through a buffer task and an HTTP/2 connection task on the way out and a
//! per-request task on the way in. Here the caller writes its frame to the socket and
//! reads the reply itself, and the receiving node serves each connection from one task:
//! fewer task hand-overs and context switches per commit (measured in docs/performance.md).
//!
//! The peer port carries both: a connection that opens with a link magic (in the clear,
//! before any TLS handshake; each starts with `FLRAFT`) is a link; any other first byte
//! (HTTP/2's preface, a TLS hello) goes to the peer gRPC service, which keeps `NodeInfo`.
//!
//! **The handshake** ([`LINK_MAGIC_VERSIONED`]) says which protocol versions the dialling
//! node speaks (`min..=max`, see [`VersionRange`]) and its cluster id, if its data
//! directory names one (a cluster restored from a backup). The other node answers with
//! its own range and either accepts — the link then speaks the highest version both
//! speak — or refuses: no common version, or another cluster (a node of the cluster a
//! backup came from cannot send Raft messages to the cluster restored from it, nor the
//! other way round). Both sides log why they refused.
//!
//! **Version 1** is the handshake of the builds before it, which know only
//! [`LINK_MAGIC`] (no cluster id) and [`LINK_MAGIC_WITH_CLUSTER_ID`] and close a
//! connection that opens otherwise. A node still accepts those openings, as version 1;
//! and a dialling node whose versioned opening is closed unanswered dials again with
//! the old one, and notes that the peer speaks version 1 only. Each node remembers the
//! versions every peer it dialled speaks ([`LinkPool::peer_versions`]): the leader
//! raises the cluster version from them.
//!
//! On a link, one request is in flight at a time. A frame is a 4-byte big-endian length
//! (of what follows), a kind byte and a postcard body; a request's reply is one frame with
//! the postcard-encoded `Result` that openraft returned on the receiving node. Callers
//! take an idle link from the pool or dial a new one, and put it back only after a whole
//! request/reply, so a cancelled or failed call never leaves half a frame on a pooled link.

use crate::commit_trace::{CommitTrace, Point};
use crate::limits::{
    DEFAULT_MAX_PEER_LINKS, DEFAULT_MAX_PEER_MESSAGE_BYTES, LINK_CONNECT_TIMEOUT,
    MAX_IDLE_LINKS_PER_PEER, TLS_HANDSHAKE_TIMEOUT,
};
use crate::raft::{Raft, TypeConfig};
// How long a new connection may take to say what it is and finish a TLS handshake.
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The first bytes a link sends, before TLS: tells the peer port's dispatcher that this
/// connection is a Raft link and not gRPC (HTTP/2 opens with `P`, TLS with `0x16`).
pub const LINK_MAGIC: [u8; 8] = *b"FLRAFT\x00\x01";

/// The first bytes of a link from a node whose cluster has an id, followed by the id's
/// 16 bytes.
pub const LINK_MAGIC_WITH_CLUSTER_ID: [u8; 8] = *b"FLRAFT\x00\x02";

/// The first bytes of a link that carries the protocol versions its node speaks, then
/// [`VERSIONED_OPENING_BYTES`] more (see [`Opening`]).
pub const LINK_MAGIC_VERSIONED: [u8; 8] = *b"FLRAFT\x00\x03";

/// What follows [`LINK_MAGIC_VERSIONED`]: lowest and highest version (u32, big-endian
/// each), whether a cluster id follows (0 or 1), and the id's 16 bytes (zeros if none).
pub const VERSIONED_OPENING_BYTES: usize = 4 + 4 + 1 + 16;

/// The answer to a versioned opening: a status byte ([`ANSWER_ACCEPTED`],
/// [`ANSWER_NO_COMMON_VERSION`], [`ANSWER_OTHER_CLUSTER`]) and the answering node's
/// lowest and highest version (u32, big-endian each).
pub const ANSWER_BYTES: usize = 1 + 4 + 4;
/// The link is accepted, at the highest version both speak.
pub const ANSWER_ACCEPTED: u8 = 0;
/// Refused: the two ranges have no version in common.
pub const ANSWER_NO_COMMON_VERSION: u8 = 1;
/// Refused: the nodes belong to different clusters.
pub const ANSWER_OTHER_CLUSTER: u8 = 2;

/// A cluster's id, as links carry it.
pub type ClusterId = [u8; 16];

/// The protocol versions a node speaks: `min..=max`, both at least 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionRange {
    /// The lowest.
    pub min: u32,
    /// The highest.
    pub max: u32,
}

impl std::fmt::Display for VersionRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..={}", self.min, self.max)
    }
}

/// The versions of the builds before the versioned handshake: 1 only.
pub const VERSION_1_ONLY: VersionRange = VersionRange { min: 1, max: 1 };

/// The protocol versions this build speaks: every cluster version it knows (a new
/// version's commands are the ones [`fencelock_core::Command::introduced_in`] names).
pub const PROTOCOL_VERSIONS: VersionRange = VersionRange {
    min: fencelock_core::version::INITIAL_CLUSTER_VERSION,
    max: fencelock_core::version::MAX_CLUSTER_VERSION,
};

/// Why a link handshake failed: bytes that are not one, or a refusal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The bytes are not a link opening or answer.
    #[error("not a Raft link handshake: {0}")]
    BadBytes(String),
    /// The two nodes speak no protocol version in common.
    #[error("no common protocol version: this node speaks {ours}, the peer {theirs}")]
    NoCommonVersion {
        /// This node's versions.
        ours: VersionRange,
        /// The peer's.
        theirs: VersionRange,
    },
    /// The two nodes belong to different clusters.
    #[error("the peer belongs to another cluster (cluster id {theirs}, this node's {ours})")]
    OtherCluster {
        /// This node's cluster id (hex, or "none").
        ours: String,
        /// The peer's.
        theirs: String,
    },
}

/// What a dialling node says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opening {
    /// The versions it speaks.
    pub versions: VersionRange,
    /// Its cluster's id, if it has one.
    pub cluster: Option<ClusterId>,
}

impl Opening {
    /// The whole opening: [`LINK_MAGIC_VERSIONED`] and what follows.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = LINK_MAGIC_VERSIONED.to_vec();
        bytes.extend_from_slice(&self.versions.min.to_be_bytes());
        bytes.extend_from_slice(&self.versions.max.to_be_bytes());
        bytes.push(u8::from(self.cluster.is_some()));
        bytes.extend_from_slice(&self.cluster.unwrap_or_default());
        bytes
    }

    /// The opening the builds before the versioned handshake send (version 1).
    pub fn encode_version_1(cluster: Option<ClusterId>) -> Vec<u8> {
        match cluster {
            None => LINK_MAGIC.to_vec(),
            Some(id) => {
                let mut bytes = LINK_MAGIC_WITH_CLUSTER_ID.to_vec();
                bytes.extend_from_slice(&id);
                bytes
            }
        }
    }

    /// Decode what follows [`LINK_MAGIC_VERSIONED`].
    ///
    /// # Errors
    /// [`HandshakeError::BadBytes`]: a version 0, `min > max`, or a cluster flag other
    /// than 0 or 1.
    pub fn decode(bytes: &[u8; VERSIONED_OPENING_BYTES]) -> Result<Opening, HandshakeError> {
        let versions = decode_range(&bytes[..8])?;
        let cluster = match bytes[8] {
            0 => None,
            1 => Some(bytes[9..].try_into().expect("16 bytes")),
            flag => {
                return Err(HandshakeError::BadBytes(format!(
                    "cluster id flag {flag:#04x}"
                )));
            }
        };
        Ok(Opening { versions, cluster })
    }
}

/// A version range from 8 bytes (min, max; u32 big-endian each).
fn decode_range(bytes: &[u8]) -> Result<VersionRange, HandshakeError> {
    let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let range = VersionRange {
        min: word(0),
        max: word(4),
    };
    if range.min == 0 || range.min > range.max {
        return Err(HandshakeError::BadBytes(format!(
            "protocol version range {range}"
        )));
    }
    Ok(range)
}

/// The highest version both `ours` and `theirs` speak.
///
/// # Errors
/// [`HandshakeError::NoCommonVersion`].
pub fn negotiate(ours: VersionRange, theirs: VersionRange) -> Result<u32, HandshakeError> {
    let version = ours.max.min(theirs.max);
    if version >= ours.min.max(theirs.min) {
        Ok(version)
    } else {
        Err(HandshakeError::NoCommonVersion { ours, theirs })
    }
}

/// The answering side's decision on `opening`: the link's version, or why it is refused.
///
/// # Errors
/// Another cluster, or no common version.
pub fn accept(
    opening: &Opening,
    ours: VersionRange,
    cluster: Option<ClusterId>,
) -> Result<u32, HandshakeError> {
    if opening.cluster != cluster {
        let name = |id: Option<ClusterId>| id.map_or_else(|| "none".to_owned(), hex::encode);
        return Err(HandshakeError::OtherCluster {
            ours: name(cluster),
            theirs: name(opening.cluster),
        });
    }
    negotiate(ours, opening.versions)
}

/// The answer frame to a versioned opening.
fn encode_answer(decision: &Result<u32, HandshakeError>, ours: VersionRange) -> [u8; ANSWER_BYTES] {
    let status = match decision {
        Ok(_) => ANSWER_ACCEPTED,
        Err(HandshakeError::OtherCluster { .. }) => ANSWER_OTHER_CLUSTER,
        Err(_) => ANSWER_NO_COMMON_VERSION,
    };
    let mut answer = [0u8; ANSWER_BYTES];
    answer[0] = status;
    answer[1..5].copy_from_slice(&ours.min.to_be_bytes());
    answer[5..].copy_from_slice(&ours.max.to_be_bytes());
    answer
}

/// The dialling side's reading of an answer: the link's version and the peer's range,
/// or why the peer refused.
///
/// # Errors
/// A refusal, an unknown status or a bad range.
pub fn decode_answer(
    answer: &[u8; ANSWER_BYTES],
    ours: VersionRange,
) -> Result<(u32, VersionRange), HandshakeError> {
    let theirs = decode_range(&answer[1..])?;
    match answer[0] {
        // The peer accepted: it must have picked a version both speak.
        ANSWER_ACCEPTED => negotiate(ours, theirs).map(|version| (version, theirs)),
        ANSWER_NO_COMMON_VERSION => Err(HandshakeError::NoCommonVersion { ours, theirs }),
        ANSWER_OTHER_CLUSTER => Err(HandshakeError::OtherCluster {
            ours: "this node's".to_owned(),
            theirs: "another".to_owned(),
        }),
        status => Err(HandshakeError::BadBytes(format!(
            "answer status {status:#04x}"
        ))),
    }
}

/// Frame header: length (u32, big-endian, counts the kind byte and the body) and kind.
const HEADER_BYTES: usize = 5;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// An `AppendEntriesRequest`.
    AppendEntries = 1,
    /// A `VoteRequest`.
    Vote = 2,
    /// An `InstallSnapshotRequest` (one chunk).
    InstallSnapshot = 3,
    /// A reply: the receiving Raft node's `Result`.
    Reply = 0x80,
    /// The receiver could not read the request (the body is a UTF-8 message).
    Refused = 0x81,
}

impl FrameKind {
    fn from_byte(byte: u8) -> Option<FrameKind> {
        Some(match byte {
            1 => FrameKind::AppendEntries,
            2 => FrameKind::Vote,
            3 => FrameKind::InstallSnapshot,
            0x80 => FrameKind::Reply,
            0x81 => FrameKind::Refused,
            _ => return None,
        })
    }
}

/// Any byte stream a link runs over: TCP, or TLS over TCP.
pub trait LinkIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> LinkIo for T {}

type BoxedIo = Box<dyn LinkIo>;

/// Encode `body` into a whole frame of `kind`, ready for one write.
///
/// # Errors
/// postcard cannot encode the value.
pub fn encode_frame<T: Serialize>(kind: FrameKind, body: &T) -> Result<Vec<u8>, postcard::Error> {
    let mut frame = postcard::to_extend(body, vec![0u8; HEADER_BYTES])?;
    let length =
        u32::try_from(frame.len() - 4).map_err(|_| postcard::Error::SerializeBufferFull)?;
    frame[..4].copy_from_slice(&length.to_be_bytes());
    frame[4] = kind as u8;
    Ok(frame)
}

/// Read one frame: `None` at a clean end of stream before its first byte.
///
/// # Errors
/// The stream fails or ends inside a frame, the length is over `max_bytes`, or the kind
/// is unknown (all `InvalidData` but the stream's own errors).
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_bytes: usize,
) -> io::Result<Option<(FrameKind, Vec<u8>)>> {
    let mut header = [0u8; HEADER_BYTES];
    match reader.read(&mut header[..1]).await? {
        0 => return Ok(None),
        _ => reader.read_exact(&mut header[1..]).await?,
    };
    let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if length == 0 || length > max_bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a Raft link frame of {length} bytes (limit {max_bytes})"),
        ));
    }
    let kind = FrameKind::from_byte(header[4]).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown Raft link frame kind {:#04x}", header[4]),
        )
    })?;
    // Grow with the bytes that arrive: a length alone does not reserve memory.
    let body_bytes = length - 1;
    let mut body = Vec::with_capacity(body_bytes.min(64 * 1024));
    let read = (&mut *reader)
        .take(body_bytes as u64)
        .read_to_end(&mut body)
        .await?;
    if read < body_bytes {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the stream ended inside a Raft link frame",
        ));
    }
    Ok(Some((kind, body)))
}

/// Why a call over a link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// No connection could be made: the peer is down or not listening (back off).
    #[error("cannot reach {addr}: {message}")]
    Unreachable {
        /// The peer address.
        addr: String,
        /// What failed.
        message: String,
    },
    /// The connection failed or timed out during the call.
    #[error("link to {addr} failed: {message}")]
    Failed {
        /// The peer address.
        addr: String,
        /// What failed.
        message: String,
    },
    /// The peer answered that it could not read the request.
    #[error("{addr} refused the request: {message}")]
    Refused {
        /// The peer address.
        addr: String,
        /// The peer's message.
        message: String,
    },
}

/// The client side's TLS: rustls settings (this node's certificate, the cluster CA) and,
/// when set, the name every peer certificate must carry (else the address's host).
#[derive(Clone, Debug)]
pub struct LinkClientTls {
    /// rustls settings.
    pub config: Arc<tokio_rustls::rustls::ClientConfig>,
    /// `tls.server_name`, when configured.
    pub server_name: Option<String>,
}

/// How long a link opened with the old handshake (the peer spoke version 1 only) is
/// reused before the next call dials afresh, so a peer upgraded in place meanwhile is
/// found to speak more (one new connection per peer every so often).
const VERSION_1_LINK_REUSE: Duration = Duration::from_secs(10);

/// One connection, between calls.
struct Link {
    io: BufReader<BoxedIo>,
    /// For a link of the old handshake: when it is dropped rather than reused.
    reuse_until: Option<std::time::Instant>,
}

/// Idle links per peer address, shared by every openraft network client of a node.
#[derive(Clone)]
pub struct LinkPool {
    idle: Arc<Mutex<HashMap<String, Vec<Link>>>>,
    tls: Option<LinkClientTls>,
    max_frame_bytes: usize,
    cluster_id: Option<ClusterId>,
    versions: VersionRange,
    /// The versions each peer address said it speaks when last dialled.
    peer_versions: Arc<Mutex<HashMap<String, VersionRange>>>,
}

impl LinkPool {
    /// Links that name cluster `id` (see the module docs); `None`: a cluster without an
    /// id.
    #[must_use]
    pub fn with_cluster_id(mut self, id: Option<ClusterId>) -> LinkPool {
        self.cluster_id = id;
        self
    }

    /// Links that offer the protocol versions `versions` ([`PROTOCOL_VERSIONS`] unless
    /// set). A range whose highest version is 1 dials with the old handshake only.
    #[must_use]
    pub fn with_versions(mut self, versions: VersionRange) -> LinkPool {
        self.versions = versions;
        self
    }

    /// The protocol versions the node at `addr` said it speaks when this pool last
    /// dialled it (`None`: not dialled yet).
    pub fn peer_versions(&self, addr: &str) -> Option<VersionRange> {
        self.peer_versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(addr)
            .copied()
    }

    fn learned(&self, addr: &str, versions: VersionRange) {
        let mut known = self.peer_versions.lock().unwrap_or_else(|e| e.into_inner());
        if known.get(addr) != Some(&versions) {
            tracing::info!(%addr, %versions, "peer protocol versions");
        }
        known.insert(addr.to_owned(), versions);
    }

    /// A pool whose links speak TLS when `tls` is given, for frames of at most
    /// `max_frame_bytes` (a longer reply fails the call).
    pub fn new(tls: Option<LinkClientTls>, max_frame_bytes: usize) -> LinkPool {
        LinkPool {
            idle: Arc::default(),
            tls,
            max_frame_bytes,
            cluster_id: None,
            versions: PROTOCOL_VERSIONS,
            peer_versions: Arc::default(),
        }
    }

    /// The largest frame either end takes (the same on every node).
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    fn take_idle(&self, addr: &str) -> Option<Link> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let links = idle.get_mut(addr)?;
        let now = std::time::Instant::now();
        links.retain(|link| link.reuse_until.is_none_or(|until| now < until));
        links.pop()
    }

    fn put_idle(&self, addr: &str, link: Link) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let links = idle.entry(addr.to_string()).or_default();
        if links.len() < MAX_IDLE_LINKS_PER_PEER {
            links.push(link);
        }
    }

    async fn connect(addr: &str) -> io::Result<TcpStream> {
        let tcp = tokio::time::timeout(LINK_CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        tcp.set_nodelay(true)?;
        Ok(tcp)
    }

    /// Open a link to `addr`: the versioned handshake, or the old one when this node
    /// speaks version 1 only or the peer closed the versioned opening unanswered (a
    /// build before it); see the module docs.
    async fn dial(&self, addr: &str) -> io::Result<Link> {
        let refused = |error: HandshakeError| {
            tracing::warn!(%addr, %error, "Raft link refused");
            io::Error::new(io::ErrorKind::PermissionDenied, error.to_string())
        };
        if self.versions.max > 1 {
            let mut tcp = Self::connect(addr).await?;
            let opening = Opening {
                versions: self.versions,
                cluster: self.cluster_id,
            };
            tcp.write_all(&opening.encode()).await?;
            let mut answer = [0u8; ANSWER_BYTES];
            match tcp.read_exact(&mut answer).await {
                Ok(_) => {
                    let (_, theirs) = decode_answer(&answer, self.versions).map_err(refused)?;
                    self.learned(addr, theirs);
                    return self.secure(addr, tcp).await;
                }
                Err(error) if closed_unanswered(&error) => {
                    tracing::debug!(%addr, %error, "versioned link opening closed; dialling as version 1");
                }
                Err(error) => return Err(error),
            }
        }
        negotiate(self.versions, VERSION_1_ONLY).map_err(refused)?;
        let mut tcp = Self::connect(addr).await?;
        tcp.write_all(&Opening::encode_version_1(self.cluster_id))
            .await?;
        let mut link = self.secure(addr, tcp).await?;
        self.learned(addr, VERSION_1_ONLY);
        if self.versions.max > 1 {
            link.reuse_until = Some(std::time::Instant::now() + VERSION_1_LINK_REUSE);
        }
        Ok(link)
    }

    /// TLS over `tcp` when the links are encrypted.
    async fn secure(&self, addr: &str, tcp: TcpStream) -> io::Result<Link> {
        let io: BoxedIo = match &self.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let name = tls
                    .server_name
                    .clone()
                    .unwrap_or_else(|| host_of(addr).to_string());
                let name = ServerName::try_from(name)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let connector = TlsConnector::from(tls.config.clone());
                Box::new(connector.connect(name, tcp).await?)
            }
        };
        Ok(Link {
            io: BufReader::new(io),
            reuse_until: None,
        })
    }

    /// Send one request frame to `addr` and return the reply's body, within `timeout`.
    ///
    /// A pooled link that fails before any reply (the peer restarted since it was last
    /// used) is replaced by a new connection once; Raft's requests may be repeated.
    ///
    /// # Errors
    /// See [`LinkError`].
    pub async fn call(
        &self,
        addr: &str,
        request: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, LinkError> {
        let failed = |message: String| LinkError::Failed {
            addr: addr.to_string(),
            message,
        };
        let attempt = async {
            let mut reused = self.take_idle(addr);
            let reply = loop {
                let (mut link, pooled) = match reused.take() {
                    Some(link) => (link, true),
                    None => (
                        self.dial(addr).await.map_err(|e| LinkError::Unreachable {
                            addr: addr.to_string(),
                            message: e.to_string(),
                        })?,
                        false,
                    ),
                };
                match self.round_trip(&mut link, request).await {
                    Ok(reply) => {
                        self.put_idle(addr, link);
                        break reply;
                    }
                    Err(error) if pooled => {
                        tracing::debug!(%addr, %error, "pooled Raft link failed; reconnecting");
                    }
                    // A new connection that fails before any reply (closed, reset, a TLS
                    // handshake refused): the peer cannot be reached, so back off.
                    Err(error) => {
                        return Err(LinkError::Unreachable {
                            addr: addr.to_string(),
                            message: error.to_string(),
                        });
                    }
                }
            };
            match reply {
                Reply::Answered(body) => Ok(body),
                Reply::Refused(message) => Err(LinkError::Refused {
                    addr: addr.to_string(),
                    message,
                }),
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(failed(format!("no reply within {timeout:?}"))),
        }
    }

    /// Write `request`, read the reply frame: a reply's body, or the peer's refusal.
    async fn round_trip(&self, link: &mut Link, request: &[u8]) -> io::Result<Reply> {
        let io = link.io.get_mut();
        io.write_all(request).await?;
        io.flush().await?;
        match read_frame(&mut link.io, self.max_frame_bytes).await? {
            Some((FrameKind::Reply, body)) => Ok(Reply::Answered(body)),
            Some((FrameKind::Refused, body)) => {
                Ok(Reply::Refused(String::from_utf8_lossy(&body).into_owned()))
            }
            Some((kind, _)) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a {kind:?} frame where a reply was expected"),
            )),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the link",
            )),
        }
    }
}

/// Whether a read of the handshake's answer failed because the peer closed the
/// connection without one (a build before the versioned handshake does, on an opening
/// it does not know; with the opening's bytes still unread, the close is a reset).
fn closed_unanswered(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// What came back for a request.
enum Reply {
    /// The receiving Raft node's encoded result.
    Answered(Vec<u8>),
    /// The receiver could not read the request.
    Refused(String),
}

/// The host part of `host:port` (brackets kept off an IPv6 address).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// What the peer port's dispatcher serves with.
pub struct PeerPort {
    /// The Raft node links deliver to.
    pub raft: Raft,
    /// Mutual TLS inside links, when peer traffic is encrypted.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// How large a frame and how many links it accepts.
    pub limits: LinkLimits,
    /// The protocol versions this node speaks ([`PROTOCOL_VERSIONS`] but in tests);
    /// with a highest version of 1 it knows only the old handshake, as the builds before
    /// the versioned one.
    pub versions: VersionRange,
    /// Where a follower marks the AppendEntries it reads and answers.
    pub trace: CommitTrace,
}

/// The bounds of the peer port's links.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkLimits {
    /// Largest frame accepted (a snapshot chunk plus framing, or a batch of entries);
    /// `max_peer_message_bytes` in the configuration.
    pub max_frame_bytes: usize,
    /// Connections being sorted or served as links at once; more are closed at once.
    pub max_links: usize,
    /// This node's cluster id: links from nodes that name another (or none, when this
    /// is set) are closed.
    pub cluster_id: Option<ClusterId>,
}

impl Default for LinkLimits {
    fn default() -> Self {
        LinkLimits {
            max_frame_bytes: DEFAULT_MAX_PEER_MESSAGE_BYTES,
            max_links: DEFAULT_MAX_PEER_LINKS,
            cluster_id: None,
        }
    }
}

/// Accept connections on the peer port: links are served here, every other connection
/// is handed to the peer gRPC server through the returned stream. Stops when `stopping`
/// turns true.
pub fn dispatch_peer_port(
    listener: TcpListener,
    port: PeerPort,
    stopping: watch::Receiver<bool>,
) -> (
    tokio_stream::wrappers::ReceiverStream<io::Result<TcpStream>>,
    tokio::task::JoinHandle<()>,
) {
    let PeerPort {
        raft,
        tls,
        versions,
        limits:
            LinkLimits {
                max_frame_bytes,
                max_links,
                cluster_id,
            },
        trace,
    } = port;
    let tls = tls.map(TlsAcceptor::from);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_links));
    let (to_grpc, grpc_incoming) = mpsc::channel(64);
    let accept_loop = tokio::spawn(async move {
        let mut stop = stopping.clone();
        let (mut refused, mut last_warning) = (0u64, None);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.wait_for(|stop| *stop) => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors and the like: pause rather than spin.
                    tracing::warn!(%error, "peer port: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                // At most one warning a second, however many connections a flood brings.
                refused += 1;
                if last_warning
                    .is_none_or(|at: std::time::Instant| at.elapsed() >= Duration::from_secs(1))
                {
                    tracing::warn!(
                        max_links,
                        refused,
                        "peer port: too many links; closing new connections"
                    );
                    last_warning = Some(std::time::Instant::now());
                    refused = 0;
                }
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (to_grpc, raft, tls, stopping, trace) = (
                to_grpc.clone(),
                raft.clone(),
                tls.clone(),
                stopping.clone(),
                trace.clone(),
            );
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
                    Ok(Ok(1)) if first[0] == LINK_MAGIC[0] => {
                        let link = LinkSide {
                            raft,
                            tls,
                            max_frame_bytes,
                            cluster_id,
                            versions,
                            trace,
                        };
                        serve_link(stream, link, stopping).await;
                    }
                    Ok(Ok(1)) => {
                        // gRPC connections are tonic's to bound; this slot was only for
                        // telling them apart.
                        drop(slot);
                        let _ = to_grpc.send(Ok(stream)).await;
                        return;
                    }
                    _ => {}
                }
                drop(slot);
            });
        }
    });
    (
        tokio_stream::wrappers::ReceiverStream::new(grpc_incoming),
        accept_loop,
    )
}

/// What the answering side of a link needs.
struct LinkSide {
    raft: Raft,
    tls: Option<TlsAcceptor>,
    max_frame_bytes: usize,
    cluster_id: Option<ClusterId>,
    versions: VersionRange,
    trace: CommitTrace,
}

/// Read a link's opening: the versioned one (answered, accepted or refused), or one of
/// the old handshake's (version 1, no answer). Then TLS, when links are encrypted.
async fn open_link(
    stream: &mut TcpStream,
    versions: VersionRange,
    cluster_id: Option<ClusterId>,
) -> io::Result<()> {
    let mut magic = [0u8; LINK_MAGIC.len()];
    stream.read_exact(&mut magic).await?;
    let (opening, versioned) = if magic == LINK_MAGIC_VERSIONED && versions.max > 1 {
        let mut rest = [0u8; VERSIONED_OPENING_BYTES];
        stream.read_exact(&mut rest).await?;
        let opening = Opening::decode(&rest)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        (opening, true)
    } else if magic == LINK_MAGIC {
        (
            Opening {
                versions: VERSION_1_ONLY,
                cluster: None,
            },
            false,
        )
    } else if magic == LINK_MAGIC_WITH_CLUSTER_ID {
        let mut id = ClusterId::default();
        stream.read_exact(&mut id).await?;
        (
            Opening {
                versions: VERSION_1_ONLY,
                cluster: Some(id),
            },
            false,
        )
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a Raft link (wrong magic)",
        ));
    };
    let decision = accept(&opening, versions, cluster_id);
    if versioned {
        stream
            .write_all(&encode_answer(&decision, versions))
            .await?;
    }
    if let Err(error) = decision {
        tracing::warn!(peer = ?stream.peer_addr().ok(), %error, "peer port: refused a Raft link");
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            error.to_string(),
        ));
    }
    Ok(())
}

/// Serve one link until the peer closes it, it breaks, or the node stops.
async fn serve_link(mut stream: TcpStream, side: LinkSide, mut stopping: watch::Receiver<bool>) {
    let opened = async {
        open_link(&mut stream, side.versions, side.cluster_id).await?;
        Ok::<BoxedIo, io::Error>(match side.tls.clone() {
            None => Box::new(stream),
            Some(acceptor) => Box::new(acceptor.accept(stream).await?),
        })
    };
    let io = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, opened).await {
        Ok(Ok(io)) => io,
        Ok(Err(error)) => {
            tracing::debug!(%error, "peer port: link handshake failed");
            return;
        }
        Err(_) => return,
    };
    let LinkSide {
        raft,
        max_frame_bytes,
        trace,
        ..
    } = side;
    let mut io = BufReader::new(io);
    loop {
        let frame = tokio::select! {
            frame = read_frame(&mut io, max_frame_bytes) => frame,
            _ = stopping.wait_for(|stop| *stop) => return,
        };
        let (kind, body) = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(%error, "peer port: link closed");
                return;
            }
        };
        let mut traced = None;
        let reply = match kind {
            FrameKind::AppendEntries => {
                answer(&body, |rpc: AppendEntriesRequest<TypeConfig>| {
                    if trace.enabled() {
                        let tag = super::append_tag_of(None, &rpc);
                        trace.mark(Point::AppendReceived, tag);
                        traced = Some(tag);
                    }
                    raft.append_entries(rpc)
                })
                .await
            }
            FrameKind::Vote => answer(&body, |rpc: VoteRequest<_>| raft.vote(rpc)).await,
            FrameKind::InstallSnapshot => {
                answer(&body, |rpc: InstallSnapshotRequest<TypeConfig>| {
                    raft.install_snapshot(rpc)
                })
                .await
            }
            FrameKind::Reply | FrameKind::Refused => {
                tracing::debug!(?kind, "peer port: a reply frame where a request belongs");
                return;
            }
        };
        let written = async {
            let io = io.get_mut();
            io.write_all(&reply).await?;
            io.flush().await
        };
        if let Err(error) = written.await {
            tracing::debug!(%error, "peer port: cannot answer on a link");
            return;
        }
        if let Some(tag) = traced {
            trace.mark(Point::AppendAnswered, tag);
        }
    }
}

/// Decode a request, hand it to Raft, encode Raft's result as a reply frame (or a
/// refusal frame when the request does not decode or the result does not encode).
async fn answer<Req, Resp, F, Fut>(body: &[u8], handle: F) -> Vec<u8>
where
    Req: DeserializeOwned,
    Resp: Serialize,
    F: FnOnce(Req) -> Fut,
    Fut: std::future::Future<Output = Resp>,
{
    let refuse = |message: String| refusal_frame(&message);
    let request: Req = match postcard::from_bytes(body) {
        Ok(request) => request,
        Err(error) => return refuse(format!("undecodable Raft message: {error}")),
    };
    let result = handle(request).await;
    encode_frame(FrameKind::Reply, &result)
        .unwrap_or_else(|error| refuse(format!("cannot encode the Raft reply: {error}")))
}

/// A refusal frame: the body is the message as UTF-8.
fn refusal_frame(message: &str) -> Vec<u8> {
    let message = &message.as_bytes()[..message.len().min(4096)];
    let length = u32::try_from(message.len() + 1).unwrap_or(1);
    let mut frame = Vec::with_capacity(HEADER_BYTES + message.len());
    frame.extend_from_slice(&length.to_be_bytes());
    frame.push(FrameKind::Refused as u8);
    frame.extend_from_slice(message);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(bytes: &[u8], max: usize) -> io::Result<Option<(FrameKind, Vec<u8>)>> {
        let mut reader = bytes;
        read_frame(&mut reader, max).await
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let value = (7u64, String::from("seven"), vec![1u8, 2, 3]);
        let frame = encode_frame(FrameKind::Vote, &value).unwrap();
        assert_eq!(
            u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize,
            frame.len() - 4
        );
        let (kind, body) = read_all(&frame, 1 << 20).await.unwrap().unwrap();
        assert_eq!(kind, FrameKind::Vote);
        let decoded: (u64, String, Vec<u8>) = postcard::from_bytes(&body).unwrap();
        assert_eq!(decoded, value);
        // Two frames back to back are read one at a time.
        let mut two = frame.clone();
        two.extend(refusal_frame("no"));
        let mut reader = &two[..];
        assert_eq!(
            read_frame(&mut reader, 1 << 20).await.unwrap().unwrap().0,
            FrameKind::Vote
        );
        let (kind, body) = read_frame(&mut reader, 1 << 20).await.unwrap().unwrap();
        assert_eq!((kind, body), (FrameKind::Refused, b"no".to_vec()));
        assert!(read_frame(&mut reader, 1 << 20).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn bad_frames_are_errors() {
        assert!(read_all(&[], 100).await.unwrap().is_none(), "clean end");
        let frame = encode_frame(FrameKind::AppendEntries, &vec![0u8; 200]).unwrap();
        let over = read_all(&frame, 100).await.unwrap_err();
        assert_eq!(over.kind(), io::ErrorKind::InvalidData);
        assert!(over.to_string().contains("limit 100"), "{over}");
        // A length near the limit with no body behind it reserves nothing and fails
        // as a cut stream.
        let cut = read_all(&[0x03, 0xff, 0xff, 0xff, 1], usize::MAX)
            .await
            .unwrap_err();
        assert_eq!(cut.kind(), io::ErrorKind::UnexpectedEof);
        let empty = read_all(&[0, 0, 0, 0, 1], 100).await.unwrap_err();
        assert_eq!(empty.kind(), io::ErrorKind::InvalidData);
        let unknown = read_all(&[0, 0, 0, 1, 0x42], 100).await.unwrap_err();
        assert!(unknown.to_string().contains("0x42"), "{unknown}");
        for cut_at in 1..frame.len() {
            let error = read_all(&frame[..cut_at], 1 << 20).await.unwrap_err();
            assert_eq!(
                error.kind(),
                io::ErrorKind::UnexpectedEof,
                "cut at {cut_at}"
            );
        }
    }

    proptest::proptest! {
        /// Any body framed by `encode_frame` reads back whole, with its kind, and a
        /// stream of several frames reads back frame by frame.
        #[test]
        fn framed_values_read_back(
            bodies in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..2_000), 1..5),
            kind in proptest::sample::select(vec![FrameKind::AppendEntries, FrameKind::Vote, FrameKind::InstallSnapshot, FrameKind::Reply]),
        ) {
            let mut stream = Vec::new();
            for body in &bodies {
                stream.extend(encode_frame(kind, body).unwrap());
            }
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let mut reader = &stream[..];
            for body in &bodies {
                let (read_kind, bytes) = runtime
                    .block_on(read_frame(&mut reader, 1 << 20))
                    .unwrap()
                    .unwrap();
                proptest::prop_assert_eq!(read_kind, kind);
                proptest::prop_assert_eq!(&postcard::from_bytes::<Vec<u8>>(&bytes).unwrap(), body);
            }
            proptest::prop_assert!(runtime.block_on(read_frame(&mut reader, 1 << 20)).unwrap().is_none());
        }

        /// Arbitrary bytes give a frame, an error or a clean end: never a panic, and
        /// never a body over the limit.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let mut reader = &bytes[..];
            if let Ok(Some((_, body))) = runtime.block_on(read_frame(&mut reader, 32)) {
                proptest::prop_assert!(body.len() < 32);
            }
        }
    }

    #[test]
    fn refusals_are_bounded_text() {
        let long = "é".repeat(10_000);
        let frame = refusal_frame(&long);
        assert_eq!(frame.len(), HEADER_BYTES + 4096);
        assert_eq!(frame[4], FrameKind::Refused as u8);
    }

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host_of("127.0.0.1:7001"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7001"), "::1");
        assert_eq!(host_of("node-2.example:7001"), "node-2.example");
        assert_eq!(host_of("no-port"), "no-port");
    }

    #[tokio::test]
    async fn a_pool_reconnects_when_a_pooled_link_went_stale_and_backs_off_when_down() {
        // A peer that answers each connection's one request with the number it carried,
        // then closes the connection.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            for _ in 0..2 {
                let (mut stream, _) = listener.accept().await.unwrap();
                open_link(&mut stream, PROTOCOL_VERSIONS, None)
                    .await
                    .unwrap();
                let (_, body) = read_frame(&mut stream, 1 << 20).await.unwrap().unwrap();
                let number: u32 = postcard::from_bytes(&body).unwrap();
                let reply = encode_frame(FrameKind::Reply, &number).unwrap();
                stream.write_all(&reply).await.unwrap();
                // Close: the pooled link is now stale.
            }
        });
        let pool = LinkPool::new(None, 1 << 20);
        let request = encode_frame(FrameKind::Vote, &1u32).unwrap();
        let timeout = Duration::from_secs(5);
        let first = pool.call(&addr, &request, timeout).await.unwrap();
        assert_eq!(postcard::from_bytes::<u32>(&first).unwrap(), 1);
        // The pooled link's peer end is closed: the call reconnects and succeeds.
        let request = encode_frame(FrameKind::Vote, &2u32).unwrap();
        let second = pool.call(&addr, &request, timeout).await.unwrap();
        assert_eq!(postcard::from_bytes::<u32>(&second).unwrap(), 2);
        server.await.unwrap();
        // Nobody listens any more: unreachable, not a hang.
        let third = pool.call(&addr, &request, timeout).await.unwrap_err();
        assert!(matches!(third, LinkError::Unreachable { .. }), "{third}");
    }

    #[tokio::test]
    async fn links_work_over_ipv6_loopback() {
        let Ok(listener) = TcpListener::bind("[::1]:0").await else {
            eprintln!("no IPv6 loopback here: skipped");
            return;
        };
        let addr = listener.local_addr().unwrap().to_string();
        assert!(addr.starts_with("[::1]:"), "{addr}");
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            open_link(&mut stream, PROTOCOL_VERSIONS, None)
                .await
                .unwrap();
            let _ = read_frame(&mut stream, 1 << 20).await.unwrap().unwrap();
            let reply = encode_frame(FrameKind::Reply, &7u32).unwrap();
            stream.write_all(&reply).await.unwrap();
        });
        let pool = LinkPool::new(None, 1 << 20);
        let request = encode_frame(FrameKind::Vote, &1u32).unwrap();
        let reply = pool
            .call(&addr, &request, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(postcard::from_bytes::<u32>(&reply).unwrap(), 7);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_peer_that_never_answers_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let held = tokio::spawn(async move { listener.accept().await.unwrap() });
        let pool = LinkPool::new(None, 1 << 20);
        let request = encode_frame(FrameKind::Vote, &1u32).unwrap();
        let error = pool
            .call(&addr, &request, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(error, LinkError::Failed { .. }), "{error}");
        assert!(error.to_string().contains("no reply within"), "{error}");
        drop(held);
    }

    const fn range(min: u32, max: u32) -> VersionRange {
        VersionRange { min, max }
    }

    #[test]
    fn negotiation_picks_the_highest_common_version_or_refuses() {
        // (ours, theirs, expected)
        let cases = [
            (range(1, 2), range(1, 2), Some(2)),
            (range(1, 2), range(1, 1), Some(1)),
            (range(1, 1), range(1, 2), Some(1)),
            (range(1, 3), range(2, 5), Some(3)),
            (range(2, 5), range(1, 3), Some(3)),
            (range(2, 2), range(1, 1), None),
            (range(1, 1), range(2, 3), None),
            (range(3, 4), range(1, 2), None),
            (range(1, 1), range(1, 1), Some(1)),
        ];
        for (ours, theirs, expected) in cases {
            match (negotiate(ours, theirs), expected) {
                (Ok(version), Some(want)) => assert_eq!(version, want, "{ours} and {theirs}"),
                (Err(HandshakeError::NoCommonVersion { ours: o, theirs: t }), None) => {
                    assert_eq!((o, t), (ours, theirs));
                }
                (got, want) => panic!("{ours} and {theirs}: {got:?}, expected {want:?}"),
            }
        }
        // The answering side: the cluster first, then the versions.
        let opening = Opening {
            versions: range(1, 2),
            cluster: Some([7; 16]),
        };
        assert_eq!(accept(&opening, range(1, 2), Some([7; 16])), Ok(2));
        assert!(matches!(
            accept(&opening, range(1, 2), None),
            Err(HandshakeError::OtherCluster { .. })
        ));
        assert!(matches!(
            accept(&opening, range(3, 3), Some([7; 16])),
            Err(HandshakeError::NoCommonVersion { .. })
        ));
        let refused = accept(&opening, range(1, 2), Some([8; 16])).unwrap_err();
        assert!(
            refused.to_string().contains(&hex::encode([8u8; 16])),
            "{refused}"
        );
    }

    #[test]
    fn openings_and_answers_round_trip_and_bad_bytes_are_typed_errors() {
        for opening in [
            Opening {
                versions: range(1, 2),
                cluster: None,
            },
            Opening {
                versions: range(2, 9),
                cluster: Some([0xab; 16]),
            },
        ] {
            let bytes = opening.encode();
            assert_eq!(bytes.len(), LINK_MAGIC.len() + VERSIONED_OPENING_BYTES);
            assert_eq!(bytes[..8], LINK_MAGIC_VERSIONED);
            assert_eq!(bytes[0], LINK_MAGIC[0], "the dispatcher tells links by it");
            let rest: [u8; VERSIONED_OPENING_BYTES] = bytes[8..].try_into().unwrap();
            assert_eq!(Opening::decode(&rest), Ok(opening));
        }
        let good = Opening {
            versions: range(1, 2),
            cluster: None,
        }
        .encode();
        let rest = |edit: &dyn Fn(&mut [u8])| {
            let mut rest: [u8; VERSIONED_OPENING_BYTES] = good[8..].try_into().unwrap();
            edit(&mut rest);
            Opening::decode(&rest)
        };
        for (what, edit) in [
            (
                "version 0",
                &(|b: &mut [u8]| b[..4].fill(0)) as &dyn Fn(&mut [u8]),
            ),
            ("min above max", &|b: &mut [u8]| b[3] = 5),
            ("cluster flag 2", &|b: &mut [u8]| b[8] = 2),
        ] {
            assert!(
                matches!(rest(edit), Err(HandshakeError::BadBytes(_))),
                "{what}"
            );
        }
        // Answers.
        let answer = |decision: Result<u32, HandshakeError>| encode_answer(&decision, range(1, 3));
        assert_eq!(
            decode_answer(&answer(Ok(2)), range(1, 2)),
            Ok((2, range(1, 3)))
        );
        let none = HandshakeError::NoCommonVersion {
            ours: range(1, 3),
            theirs: range(4, 4),
        };
        assert!(matches!(
            decode_answer(&answer(Err(none)), range(4, 4)),
            Err(HandshakeError::NoCommonVersion { .. })
        ));
        let other = HandshakeError::OtherCluster {
            ours: "a".into(),
            theirs: "b".into(),
        };
        assert!(matches!(
            decode_answer(&answer(Err(other)), range(1, 2)),
            Err(HandshakeError::OtherCluster { .. })
        ));
        let mut unknown = answer(Ok(2));
        unknown[0] = 9;
        assert!(matches!(
            decode_answer(&unknown, range(1, 2)),
            Err(HandshakeError::BadBytes(_))
        ));
        let mut bad_range = answer(Ok(2));
        bad_range[1..5].copy_from_slice(&7u32.to_be_bytes());
        assert!(matches!(
            decode_answer(&bad_range, range(1, 2)),
            Err(HandshakeError::BadBytes(_))
        ));
        // "Accepted" by a peer with no version in common is not believed.
        let mut liar = encode_answer(&Ok(5), range(5, 6));
        liar[0] = ANSWER_ACCEPTED;
        assert!(decode_answer(&liar, range(1, 2)).is_err());
    }

    /// A peer of the builds before the versioned handshake: it knows only the old
    /// openings and closes any other connection, as those builds' `serve_link` does;
    /// it answers one request per link with the number it carried.
    async fn old_build_peer(listener: TcpListener, links: usize) -> Vec<[u8; 8]> {
        let mut magics = Vec::new();
        for _ in 0..links {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut magic = [0u8; LINK_MAGIC.len()];
            stream.read_exact(&mut magic).await.unwrap();
            magics.push(magic);
            if magic != LINK_MAGIC {
                continue; // closed, the rest of the opening unread
            }
            let (_, body) = read_frame(&mut stream, 1 << 20).await.unwrap().unwrap();
            let number: u32 = postcard::from_bytes(&body).unwrap();
            let reply = encode_frame(FrameKind::Reply, &number).unwrap();
            stream.write_all(&reply).await.unwrap();
        }
        magics
    }

    #[tokio::test]
    async fn a_new_node_dials_a_node_of_the_old_handshake_again_as_version_1() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let peer = tokio::spawn(old_build_peer(listener, 2));
        let pool = LinkPool::new(None, 1 << 20);
        assert_eq!(pool.peer_versions(&addr), None);
        let request = encode_frame(FrameKind::Vote, &41u32).unwrap();
        let reply = pool
            .call(&addr, &request, Duration::from_secs(10))
            .await
            .expect("the old handshake after the new one was closed");
        assert_eq!(postcard::from_bytes::<u32>(&reply).unwrap(), 41);
        assert_eq!(pool.peer_versions(&addr), Some(VERSION_1_ONLY));
        assert_eq!(peer.await.unwrap(), vec![LINK_MAGIC_VERSIONED, LINK_MAGIC]);
    }

    #[tokio::test]
    async fn a_node_of_version_1_only_dials_with_the_old_handshake_and_new_nodes_answer_it() {
        // Dialling an old node: no versioned opening at all.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let peer = tokio::spawn(old_build_peer(listener, 1));
        let pool = LinkPool::new(None, 1 << 20).with_versions(VERSION_1_ONLY);
        let request = encode_frame(FrameKind::Vote, &1u32).unwrap();
        pool.call(&addr, &request, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(peer.await.unwrap(), vec![LINK_MAGIC]);
        // A new node's answering side takes both old openings as version 1, and the
        // versioned one; a version-1-only node refuses the versioned one.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut results = Vec::new();
            for (versions, cluster) in [
                (PROTOCOL_VERSIONS, None),
                (PROTOCOL_VERSIONS, Some([3; 16])),
                (PROTOCOL_VERSIONS, Some([3; 16])),
                (VERSION_1_ONLY, None),
                (PROTOCOL_VERSIONS, Some([4; 16])),
            ] {
                let (mut stream, _) = listener.accept().await.unwrap();
                results.push(
                    open_link(&mut stream, versions, cluster)
                        .await
                        .map_err(|e| e.kind()),
                );
            }
            results
        });
        let send = |bytes: Vec<u8>| async move {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(&bytes).await.unwrap();
            let mut answer = Vec::new();
            let _ = tcp.read_to_end(&mut answer).await;
            answer
        };
        let versioned = |cluster| {
            Opening {
                versions: PROTOCOL_VERSIONS,
                cluster,
            }
            .encode()
        };
        assert!(
            send(Opening::encode_version_1(None)).await.is_empty(),
            "no answer"
        );
        assert!(
            send(Opening::encode_version_1(Some([3; 16])))
                .await
                .is_empty()
        );
        let answer: [u8; ANSWER_BYTES] = send(versioned(Some([3; 16]))).await.try_into().unwrap();
        assert_eq!(
            decode_answer(&answer, PROTOCOL_VERSIONS),
            Ok((PROTOCOL_VERSIONS.max, PROTOCOL_VERSIONS))
        );
        assert!(send(versioned(None)).await.is_empty(), "closed unanswered");
        let answer: [u8; ANSWER_BYTES] = send(versioned(None)).await.try_into().unwrap();
        assert!(matches!(
            decode_answer(&answer, PROTOCOL_VERSIONS),
            Err(HandshakeError::OtherCluster { .. })
        ));
        let results = server.await.unwrap();
        assert_eq!(
            results,
            vec![
                Ok(()),
                Ok(()),
                Ok(()),
                Err(io::ErrorKind::InvalidData),
                Err(io::ErrorKind::PermissionDenied)
            ]
        );
    }

    #[tokio::test]
    async fn a_refused_handshake_is_unreachable_with_the_reason() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            open_link(&mut stream, range(3, 4), None).await
        });
        let pool = LinkPool::new(None, 1 << 20);
        let request = encode_frame(FrameKind::Vote, &1u32).unwrap();
        let error = pool
            .call(&addr, &request, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(matches!(error, LinkError::Unreachable { .. }), "{error}");
        assert!(
            error.to_string().contains("no common protocol version"),
            "{error}"
        );
        assert!(server.await.unwrap().is_err());
        assert_eq!(pool.peer_versions(&addr), None);
    }
}
