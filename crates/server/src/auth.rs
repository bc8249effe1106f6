//! Authentication of client calls and the permission checks of the gRPC services.
//!
//! Users, roles, permissions and bearer-token hashes live in the replicated state
//! ([`fencelock_core::auth`]); this module only reads them. Credentials travel in the
//! `authorization` metadata: `Basic base64(user:password)` or `Bearer <token>`. Passwords
//! are hashed with argon2 (memory-hard) before they are proposed; a successful
//! verification is cached for [`CACHE_TTL`] under a BLAKE2b digest of (user, password,
//! stored hash), so argon2 stays off the hot path and a password change invalidates the
//! entry at once.

use crate::api::status as st;
use crate::store::SharedState;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use blake2::{Blake2b512, Digest};
use fencelock_core::{Right, SessionId};
use fencelock_proto::v1::ErrorReason;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::{Code, Status};

/// How long a successful password verification is remembered.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// At most this many remembered verifications (the cache is cleared when full).
const CACHE_MAX: usize = 4_096;

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// Auth is off: every call is allowed.
    Anyone,
    /// An authenticated user.
    User(String),
}

impl Caller {
    /// The user's name ("" when auth is off).
    pub fn name(&self) -> &str {
        match self {
            Caller::Anyone => "",
            Caller::User(user) => user,
        }
    }
}

/// Hash a password with argon2id (default parameters) into a PHC string.
///
/// # Errors
///
/// If hashing fails (it does not with the default parameters).
pub fn hash_password(password: &str) -> Result<String, Status> {
    let salt = SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes())
        .map_err(|e| internal(format!("salt: {e}")))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| internal(format!("hashing the password: {e}")))
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

fn internal(message: String) -> Status {
    st::reason(Code::Internal, ErrorReason::Internal, message)
}

/// UNAUTHENTICATED with the auth reason.
pub fn unauthenticated(message: impl Into<String>) -> Status {
    st::reason(Code::Unauthenticated, ErrorReason::Unauthenticated, message)
}

/// PERMISSION_DENIED with the auth reason.
pub fn permission_denied(message: impl Into<String>) -> Status {
    st::reason(
        Code::PermissionDenied,
        ErrorReason::PermissionDenied,
        message,
    )
}

/// Checks credentials against the replicated state; shared by a node's services.
#[derive(Clone)]
pub struct Authenticator {
    shared: Arc<SharedState>,
    cache: Arc<Mutex<HashMap<[u8; 32], Instant>>>,
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
        }
    }

    /// Who sent `metadata`. With auth off every call is [`Caller::Anyone`]; with auth on
    /// missing or bad credentials are UNAUTHENTICATED.
    ///
    /// # Errors
    ///
    /// UNAUTHENTICATED.
    pub async fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Caller, Status> {
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
                self.shared
                    .read(|applied| applied.state.token_user(&hash).map(str::to_owned))
                    .map(Caller::User)
                    .ok_or_else(|| unauthenticated("unknown bearer token"))
            }
            Credentials::Basic { user, password } => {
                let stored = self
                    .shared
                    .read(|applied| applied.state.password_hash(&user).map(str::to_owned));
                let bad = || unauthenticated("unknown user or wrong password");
                let stored = stored.filter(|s| !s.is_empty()).ok_or_else(bad)?;
                let key = cache_key(&user, &password, &stored);
                if self.cached(&key) {
                    return Ok(Caller::User(user));
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
                Ok(Caller::User(user))
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

    /// Refuse unless `caller` has `right` on the lock `name`.
    ///
    /// # Errors
    ///
    /// PERMISSION_DENIED.
    pub fn require(&self, caller: &Caller, name: &str, right: Right) -> Result<(), Status> {
        let Caller::User(user) = caller else {
            return Ok(());
        };
        if self
            .shared
            .read(|applied| applied.state.permits(user, name, right))
        {
            Ok(())
        } else {
            Err(permission_denied(format!(
                "user {user:?} lacks the {} right on lock {name:?}",
                right_name(right)
            )))
        }
    }

    /// Refuse unless `caller` is root (or has `admin` on every lock).
    ///
    /// # Errors
    ///
    /// PERMISSION_DENIED.
    pub fn require_superuser(&self, caller: &Caller) -> Result<(), Status> {
        let Caller::User(user) = caller else {
            return Ok(());
        };
        if self.is_superuser(caller) {
            Ok(())
        } else {
            Err(permission_denied(format!(
                "user {user:?} is not root (nor admin on every lock)"
            )))
        }
    }

    /// Whether `caller` is root (or admin on every lock); `true` with auth off.
    pub fn is_superuser(&self, caller: &Caller) -> bool {
        match caller {
            Caller::Anyone => true,
            Caller::User(user) => self.shared.read(|applied| applied.state.is_superuser(user)),
        }
    }

    /// Refuse unless `caller` owns `session` (or `admin` on `name`, or on every lock
    /// when `name` is `None`). A session opened while auth was off has no owner and is
    /// usable by anyone authenticated.
    ///
    /// # Errors
    ///
    /// PERMISSION_DENIED.
    pub fn require_session(
        &self,
        caller: &Caller,
        session: SessionId,
        name: Option<&str>,
    ) -> Result<(), Status> {
        let Caller::User(user) = caller else {
            return Ok(());
        };
        let allowed = self.shared.read(|applied| {
            let state = &applied.state;
            match state.session_owner(session) {
                None => true,
                Some(owner) if owner == user => true,
                Some(_) => state.permits(user, name.unwrap_or(""), Right::Admin),
            }
        });
        if allowed {
            Ok(())
        } else {
            Err(permission_denied(format!(
                "session {session} belongs to another user; user {user:?} is not admin here"
            )))
        }
    }
}

fn right_name(right: Right) -> &'static str {
    match right {
        Right::Acquire => "acquire",
        Right::Release => "release",
        Right::Read => "read",
        Right::Admin => "admin",
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

fn parse(value: &str) -> Result<Credentials, Status> {
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
