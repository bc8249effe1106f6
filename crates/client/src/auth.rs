//! Auth administration: switching auth on and off, users, roles, bearer tokens. Every
//! call but [`Client::auth_status`] needs root (or `admin` on every lock) once auth is
//! on; before that anyone may call them (the quick start: add `root`, then enable).

use crate::client::Client;
use crate::error::Result;
use crate::transport::CallSpec;
use crate::wire::request_id;
use fencelock_proto::v1 as pb;
use fencelock_proto::v1::auth_client::AuthClient;

/// Rights on a lock-name prefix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rights {
    /// May acquire.
    pub acquire: bool,
    /// May release its own grants.
    pub release: bool,
    /// May describe, list, watch and verify.
    pub read: bool,
    /// Everything, including other users' sessions and force-release.
    pub admin: bool,
}

/// What `auth_status` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthStatus {
    /// Whether checks are on.
    pub enabled: bool,
    /// The authenticated caller ("" with auth off).
    pub user: String,
    /// Users and their roles (for root only).
    pub users: Vec<(String, Vec<String>)>,
    /// Roles and their (prefix, rights) (for root only).
    pub roles: Vec<(String, Vec<(String, Rights)>)>,
}

macro_rules! auth_call {
    ($client:expr, $method:ident, $request:expr) => {{
        let request = $request;
        $client
            .transport()
            .call(CallSpec::mutation($client.config()), |channel, _| {
                let request = request.clone();
                async move { AuthClient::new(channel).$method(request).await }
            })
            .await
    }};
}

impl Client {
    /// Switch auth on (the user `root` must exist).
    ///
    /// # Errors
    ///
    /// [`Error::Auth`](crate::Error::Auth) without root, permission errors, transient errors.
    pub async fn auth_enable(&self) -> Result<()> {
        auth_call!(self, enable, pb::AuthEnableRequest {}).map(drop)
    }

    /// Switch auth off.
    ///
    /// # Errors
    ///
    /// Permission errors, transient errors.
    pub async fn auth_disable(&self) -> Result<()> {
        auth_call!(self, disable, pb::AuthDisableRequest {}).map(drop)
    }

    /// Whether auth is on and who the caller is (users and roles for root).
    ///
    /// # Errors
    ///
    /// Authentication errors, transient errors.
    pub async fn auth_status(&self) -> Result<AuthStatus> {
        let answer = auth_call!(self, status, pb::AuthStatusRequest {})?;
        Ok(AuthStatus {
            enabled: answer.enabled,
            user: answer.user,
            users: answer
                .users
                .into_iter()
                .map(|u| (u.name, u.roles))
                .collect(),
            roles: answer
                .roles
                .into_iter()
                .map(|r| {
                    let permissions = r
                        .permissions
                        .into_iter()
                        .map(|p| {
                            let rights = p.rights.unwrap_or_default();
                            (
                                p.prefix,
                                Rights {
                                    acquire: rights.acquire,
                                    release: rights.release,
                                    read: rights.read,
                                    admin: rights.admin,
                                },
                            )
                        })
                        .collect();
                    (r.name, permissions)
                })
                .collect(),
        })
    }

    /// Create a user (the server hashes the password with argon2).
    ///
    /// # Errors
    ///
    /// [`Error::Auth`](crate::Error::Auth) if it exists, permission errors, transient errors.
    pub async fn user_add(&self, name: &str, password: &str) -> Result<()> {
        let request = pb::UserAddRequest {
            name: name.into(),
            password: password.into(),
            request_id: request_id(),
        };
        auth_call!(self, user_add, request).map(drop)
    }

    /// Delete a user.
    ///
    /// # Errors
    ///
    /// [`Error::Auth`](crate::Error::Auth) if unknown, permission errors, transient errors.
    pub async fn user_remove(&self, name: &str) -> Result<()> {
        auth_call!(
            self,
            user_remove,
            pb::UserRemoveRequest {
                name: name.into(),
                request_id: request_id(),
            }
        )
        .map(drop)
    }

    /// Change a user's password (one's own, or anyone's as root).
    ///
    /// # Errors
    ///
    /// [`Error::Auth`](crate::Error::Auth) if unknown, permission errors, transient errors.
    pub async fn user_passwd(&self, name: &str, password: &str) -> Result<()> {
        let request = pb::UserPasswdRequest {
            name: name.into(),
            password: password.into(),
            request_id: request_id(),
        };
        auth_call!(self, user_passwd, request).map(drop)
    }

    /// Give a user a role.
    ///
    /// # Errors
    ///
    /// [`Error::Auth`](crate::Error::Auth) if either is unknown, permission errors, transient errors.
    pub async fn user_grant_role(&self, user: &str, role: &str) -> Result<()> {
        let request = pb::UserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
            request_id: request_id(),
        };
        auth_call!(self, user_grant_role, request).map(drop)
    }

    /// Take a role from a user.
    ///
    /// # Errors
    ///
    /// [`Error::Auth`](crate::Error::Auth) if the user is unknown or does not have the role,
    /// permission errors, transient errors.
    pub async fn user_revoke_role(&self, user: &str, role: &str) -> Result<()> {
        let request = pb::UserRevokeRoleRequest {
            user: user.into(),
            role: role.into(),
            request_id: request_id(),
        };
        auth_call!(self, user_revoke_role, request).map(drop)
    }

    /// Create a role.
    ///
    /// # Errors
    ///
    /// [`Error::Auth`](crate::Error::Auth) if it exists, permission errors, transient errors.
    pub async fn role_add(&self, name: &str) -> Result<()> {
        auth_call!(
            self,
            role_add,
            pb::RoleAddRequest {
                name: name.into(),
                request_id: request_id(),
            }
        )
        .map(drop)
    }

    /// Delete a role; every user that had it loses it.
    ///
    /// # Errors
    ///
    /// [`Error::Auth`](crate::Error::Auth) if it is unknown, permission errors, transient errors.
    pub async fn role_remove(&self, name: &str) -> Result<()> {
        auth_call!(
            self,
            role_remove,
            pb::RoleRemoveRequest {
                name: name.into(),
                request_id: request_id(),
            }
        )
        .map(drop)
    }

    /// Grant a role `rights` on every lock whose name starts with `prefix`.
    ///
    /// # Errors
    ///
    /// [`Error::Auth`](crate::Error::Auth) if the role is unknown, permission errors, transient errors.
    pub async fn role_grant(&self, role: &str, prefix: &str, rights: Rights) -> Result<()> {
        let request = pb::RoleGrantRequest {
            role: role.into(),
            prefix: prefix.into(),
            rights: Some(pb::AuthRights {
                acquire: rights.acquire,
                release: rights.release,
                read: rights.read,
                admin: rights.admin,
            }),
            request_id: request_id(),
        };
        auth_call!(self, role_grant, request).map(drop)
    }

    /// Remove a role's rights on exactly `prefix`.
    ///
    /// # Errors
    ///
    /// [`Error::Auth`](crate::Error::Auth) if the role is unknown, permission errors, transient errors.
    pub async fn role_revoke(&self, role: &str, prefix: &str) -> Result<()> {
        let request = pb::RoleRevokeRequest {
            role: role.into(),
            prefix: prefix.into(),
            request_id: request_id(),
        };
        auth_call!(self, role_revoke, request).map(drop)
    }

    /// Create a bearer token acting as `user` (returned once; the cluster keeps a hash).
    /// The token is drawn here (256 random bits) and sent with every retry, so a retry
    /// registers the same token rather than leaving another behind.
    ///
    /// # Errors
    ///
    /// [`Error::Auth`](crate::Error::Auth) if the user is unknown, permission errors, transient errors.
    pub async fn token_create(&self, user: &str) -> Result<String> {
        let token = format!(
            "flt_{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        auth_call!(
            self,
            token_create,
            pb::TokenCreateRequest {
                user: user.into(),
                request_id: request_id(),
                token,
            }
        )
        .map(|answer| answer.token)
    }

    /// Forget a bearer token (as [`Client::token_create`] returned it): calls that present
    /// it are refused from then on. Revoking an unknown token succeeds.
    ///
    /// # Errors
    ///
    /// Permission errors, transient errors.
    pub async fn token_revoke(&self, token: &str) -> Result<()> {
        auth_call!(
            self,
            token_revoke,
            pb::TokenRevokeRequest {
                token: token.into()
            }
        )
        .map(drop)
    }
}
