//! Authentication of client calls and the permission checks of the gRPC services.
//!
//! Users, roles, permissions and bearer-token hashes live in the replicated state
//! ([`fencelock_core::auth`]); this module only reads them. The checks made here, on the
//! node's applied state, are early refusals only: every command is proposed inside
//! [`Command::Authorized`] with the [`Caller`] (user and verified credential), and the
//! state machine decides at apply time; reads check again after their read barrier, and
//! streams on every keepalive and whenever the auth state changes. Credentials travel in the
//! `authorization` metadata: `Basic base64(user:password)` or `Bearer <token>`. Passwords
//! are hashed with argon2 (memory-hard) before they are proposed; a successful
//! verification is cached for [`CACHE_TTL`] under a BLAKE2b digest of (user, password,
//! stored hash), so argon2 stays off the hot path and a password change invalidates the
//! entry at once.

use crate::limits::AUTH_CATCH_UPS_IN_FLIGHT;
use crate::store::SharedState;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use blake2::{Blake2b512, Digest};
use fencelock_core::{
    Access, Command, Credential, Error as CoreError, Right, SessionId, password_fingerprint,
};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a successful password verification is remembered.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// At most this many remembered verifications (the cache is cleared when full).
const CACHE_MAX: usize = 4_096;

pub use fencelock_core::Caller;

/// Why a call was refused here; `api/status.rs` turns it into a gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Missing, malformed or wrong credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// The applied state refused the caller ([`Authenticator::check`]).
    #[error(transparent)]
    Refused(#[from] CoreError),
    /// A session-less mutation's request id is neither empty nor 16 bytes.
    #[error("request_id must be empty or 16 bytes (a UUID)")]
    InvalidRequestId,
    /// Hashing a password failed.
    #[error("{0}")]
    Hashing(String),
}

/// Hash a password with argon2id (default parameters) into a PHC string.
///
/// # Errors
///
/// If hashing fails (it does not with the default parameters).
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes())
        .map_err(|e| AuthError::Hashing(format!("salt: {e}")))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| AuthError::Hashing(format!("hashing the password: {e}")))
}

/// The stored form of a bearer token: BLAKE2b-512 in hex (tokens are random, so a fast
/// hash is enough).
pub fn token_hash(token: &str) -> String {
    hex::encode(Blake2b512::digest(token.as_bytes()))
}

/// A fresh random bearer token.
pub fn new_token() -> String {
    format!(
        "flt_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn unauthenticated(message: impl Into<String>) -> AuthError {
    AuthError::Unauthenticated(message.into())
}

/// Brings a node's applied state up to what the leader had committed when asked (a read
/// barrier that works on a follower too), so that a bearer token or user created moments
/// before through another node is known. The node implements it (`node.rs`).
pub trait CatchUp: Send + Sync + 'static {
    /// Whether the node caught up (false: no leader, unreachable, or out of time).
    fn catch_up(&self) -> BoxFuture<'_, bool>;
}

/// Checks credentials against the replicated state; shared by a node's services.
#[derive(Clone)]
pub struct Authenticator {
    shared: Arc<SharedState>,
    cache: Arc<Mutex<HashMap<[u8; 32], Instant>>>,
    /// Asked once before an unknown bearer token or user is refused.
    catch_up: Option<Arc<dyn CatchUp>>,
    /// Bounds the calls waiting for `catch_up` at once.
    catch_ups: Arc<tokio::sync::Semaphore>,
}

enum Credentials {
    Basic { user: String, password: String },
    Bearer(String),
}

impl Authenticator {
    /// An authenticator reading `shared`.
    pub fn new(shared: Arc<SharedState>) -> Self {
        Authenticator {
            shared,
            cache: Arc::new(Mutex::new(HashMap::new())),
            catch_up: None,
            catch_ups: Arc::new(tokio::sync::Semaphore::new(AUTH_CATCH_UPS_IN_FLIGHT)),
        }
    }

    /// Before refusing a bearer token or a user this node does not know, wait once for
    /// `catch_up` and look again: credentials are checked on the applied state of the
    /// node a call reaches, which may not have applied a token created moments before
    /// through the leader. Known credentials never wait; a wrong password of a known
    /// user is refused at once.
    #[must_use]
    pub fn with_catch_up(mut self, catch_up: Arc<dyn CatchUp>) -> Self {
        self.catch_up = Some(catch_up);
        self
    }

    /// Whether this node caught up with the leader (see [`Self::with_catch_up`]); false
    /// without a catch-up or when too many calls wait for one already.
    async fn caught_up(&self) -> bool {
        let Some(catch_up) = &self.catch_up else {
            return false;
        };
        let Ok(_waiting) = self.catch_ups.try_acquire() else {
            return false;
        };
        catch_up.catch_up().await
    }

    /// `read` on the applied state; if it finds nothing, once more after this node
    /// caught up with the leader.
    async fn read_or_catch_up<T>(
        &self,
        read: impl Fn(&crate::store::Applied) -> Option<T>,
    ) -> Option<T> {
        if let Some(found) = self.shared.read(&read) {
            return Some(found);
        }
        if self.caught_up().await {
            return self.shared.read(&read);
        }
        None
    }

    /// Who sent `metadata`. With auth off every call is [`Caller::Anyone`]; with auth on
    /// missing or bad credentials are UNAUTHENTICATED.
    ///
    /// # Errors
    ///
    /// [`AuthError::Unauthenticated`].
    pub async fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Caller, AuthError> {
        if !self.shared.read(|applied| applied.state.auth_enabled()) {
            return Ok(Caller::Anyone);
        }
        let Some(value) = metadata.get("authorization") else {
            return Err(unauthenticated(
                "authentication is required: send user and password (or a bearer token)",
            ));
        };
        let value = value
            .to_str()
            .map_err(|_| unauthenticated("malformed authorization metadata"))?;
        match parse(value)? {
            Credentials::Bearer(token) => {
                let hash = token_hash(&token);
                self.read_or_catch_up(|applied| applied.state.token_user(&hash).map(str::to_owned))
                    .await
                    .map(|user| Caller::User {
                        name: user,
                        credential: Credential::Token(hash),
                    })
                    .ok_or_else(|| unauthenticated("unknown bearer token"))
            }
            Credentials::Basic { user, password } => {
                let stored = self
                    .read_or_catch_up(|applied| {
                        applied.state.password_hash(&user).map(str::to_owned)
                    })
                    .await;
                let bad = || unauthenticated("unknown user or wrong password");
                let stored = stored.filter(|s| !s.is_empty()).ok_or_else(bad)?;
                let caller = Caller::User {
                    name: user.clone(),
                    credential: Credential::Password(password_fingerprint(&stored)),
                };
                let key = cache_key(&user, &password, &stored);
                if self.cached(&key) {
                    return Ok(caller);
                }
                let verified = tokio::task::spawn_blocking(move || {
                    PasswordHash::new(&stored).is_ok_and(|parsed| {
                        argon2::Argon2::default()
                            .verify_password(password.as_bytes(), &parsed)
                            .is_ok()
                    })
                })
                .await
                .unwrap_or(false);
                if !verified {
                    return Err(bad());
                }
                self.remember(key);
                Ok(caller)
            }
        }
    }

    fn cached(&self, key: &[u8; 32]) -> bool {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(key)
            .is_some_and(|verified| verified.elapsed() < CACHE_TTL)
    }

    fn remember(&self, key: [u8; 32]) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, verified| verified.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, Instant::now());
    }

    /// Refuse unless `caller` may do `access`, judged on this node's applied state
    /// ([`fencelock_core::State::authorize`]).
    ///
    /// # Errors
    ///
    /// [`AuthError::Refused`]: credentials no longer valid, auth switched on under a
    /// caller checked while it was off, or a right missing.
    pub fn check(&self, caller: &Caller, access: Access<'_>) -> Result<(), AuthError> {
        self.shared
            .read(|applied| applied.state.authorize(caller, access))
            .map_err(AuthError::Refused)
    }

    /// Refuse unless `caller` has `right` on the lock `name`.
    ///
    /// # Errors
    ///
    /// As [`Authenticator::check`].
    pub fn require(&self, caller: &Caller, name: &str, right: Right) -> Result<(), AuthError> {
        self.check(caller, Access::Lock(name, right))
    }

    /// Refuse unless `caller` is root (or has `admin` on every lock).
    ///
    /// # Errors
    ///
    /// As [`Authenticator::check`].
    pub fn require_superuser(&self, caller: &Caller) -> Result<(), AuthError> {
        self.check(caller, Access::Superuser)
    }

    /// Whether `caller` is root (or admin on every lock); `true` with auth off.
    pub fn is_superuser(&self, caller: &Caller) -> bool {
        self.require_superuser(caller).is_ok()
    }

    /// Refuse unless `caller` may act on `session` (see [`Access::Session`]): its owner,
    /// or `admin` on `name` (on every lock when `name` is `None`); a session opened while
    /// auth was off is a superuser's only.
    ///
    /// # Errors
    ///
    /// As [`Authenticator::check`].
    pub fn require_session(
        &self,
        caller: &Caller,
        session: SessionId,
        name: Option<&str>,
    ) -> Result<(), AuthError> {
        self.check(caller, Access::Session(session, name))
    }
}

/// A session-less mutation with the client's request id (16 bytes), remembered by the
/// state machine so that a retry returns the first answer; without an id, as it is.
///
/// # Errors
///
/// [`AuthError::InvalidRequestId`] for an id that is neither empty nor 16 bytes.
pub fn once(request_id: &[u8], remember: u64, command: Command) -> Result<Command, AuthError> {
    if request_id.is_empty() {
        return Ok(command);
    }
    let id: [u8; 16] = request_id
        .try_into()
        .map_err(|_| AuthError::InvalidRequestId)?;
    Ok(Command::Once {
        request: u128::from_be_bytes(id),
        remember,
        command: Box::new(command),
    })
}

/// `command` on behalf of `caller`, for the state machine to judge when it applies it.
pub fn authorized(caller: &Caller, command: Command) -> Command {
    Command::Authorized {
        caller: caller.clone(),
        command: Box::new(command),
    }
}

fn cache_key(user: &str, password: &str, stored: &str) -> [u8; 32] {
    let mut hasher = Blake2b512::new();
    for part in [user, password, stored] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let mut key = [0u8; 32];
    key.copy_from_slice(&digest[..32]);
    key
}

fn parse(value: &str) -> Result<Credentials, AuthError> {
    let value = value.trim();
    if let Some(token) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
    {
        return Ok(Credentials::Bearer(token.trim().to_owned()));
    }
    let Some(encoded) = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
    else {
        return Err(unauthenticated(
            "authorization must be \"Basic base64(user:password)\" or \"Bearer <token>\"",
        ));
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| unauthenticated("malformed Basic credentials"))?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or_else(|| unauthenticated("malformed Basic credentials"))?;
    Ok(Credentials::Basic {
        user: user.to_owned(),
        password: password.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ_by_salt() {
        let a = hash_password("s3cret").unwrap();
        let b = hash_password("s3cret").unwrap();
        assert_ne!(a, b);
        let parsed = PasswordHash::new(&a).unwrap();
        assert!(
            argon2::Argon2::default()
                .verify_password(b"s3cret", &parsed)
                .is_ok()
        );
        assert!(
            argon2::Argon2::default()
                .verify_password(b"wrong", &parsed)
                .is_err()
        );
    }

    #[test]
    fn parses_basic_and_bearer() {
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:pa:ss")
        );
        match parse(&basic).unwrap() {
            Credentials::Basic { user, password } => {
                assert_eq!((user.as_str(), password.as_str()), ("alice", "pa:ss"));
            }
            Credentials::Bearer(_) => panic!("basic expected"),
        }
        assert!(matches!(parse("Bearer abc").unwrap(), Credentials::Bearer(t) if t == "abc"));
        assert!(parse("Digest x").is_err());
        assert!(parse("Basic !!!").is_err());
    }
}
