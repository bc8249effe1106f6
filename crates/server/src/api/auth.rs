//! The `Auth` gRPC service: switching auth on and off, users, roles and bearer tokens.
//! Every call but `Status` needs root (or `admin` on every lock) once auth is on;
//! passwords are hashed here, before the command is proposed. Every command goes out on
//! behalf of its caller (the state machine checks the caller again when it applies it),
//! and with the client's request id, so a retried call acts once.

use super::leader::propose_error;
use super::status::{from_core, invalid_argument};
use crate::auth::{Authenticator, Caller, authorized, hash_password, new_token, once, token_hash};
use crate::node::Node;
use fencelock_core::{AuthCommand, Command, Rights};
use fencelock_proto::v1 as pb;
use fencelock_proto::v1::auth_server::Auth;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The `Auth` service of one node.
pub struct AuthService {
    node: Arc<Node>,
    auth: Authenticator,
}

impl AuthService {
    /// Serve `node`.
    pub fn new(node: Arc<Node>) -> Self {
        let auth = super::authenticator(&node);
        AuthService { node, auth }
    }

    async fn admin<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        self.auth.require_superuser(&caller)?;
        Ok(caller)
    }

    /// Propose `command` for `caller`, once per `request_id` (see [`once`]).
    async fn run(
        &self,
        caller: &Caller,
        request_id: &[u8],
        command: AuthCommand,
    ) -> Result<Response<pb::AuthOk>, Status> {
        let command = once(
            request_id,
            self.node.config().api_limits.max_remembered_requests,
            authorized(caller, Command::Auth(command)),
        )?;
        match self.node.proposer().propose(command).await {
            Ok(Ok(_)) => Ok(Response::new(pb::AuthOk {})),
            Ok(Err(error)) => Err(from_core(&error)),
            Err(error) => Err(propose_error(&self.node, error).await),
        }
    }

    async fn hashed(password: String) -> Result<String, Status> {
        if password.is_empty() {
            return Err(invalid_argument("the password must not be empty"));
        }
        Ok(
            tokio::task::spawn_blocking(move || hash_password(&password))
                .await
                .map_err(|e| invalid_argument(format!("hashing failed: {e}")))??,
        )
    }
}

fn rights_from(rights: Option<pb::AuthRights>) -> Rights {
    let rights = rights.unwrap_or_default();
    Rights {
        acquire: rights.acquire,
        release: rights.release,
        read: rights.read,
        admin: rights.admin,
    }
}

fn rights_to(rights: Rights) -> pb::AuthRights {
    pb::AuthRights {
        acquire: rights.acquire,
        release: rights.release,
        read: rights.read,
        admin: rights.admin,
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn enable(
        &self,
        request: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthOk>, Status> {
        let caller = self.admin(&request).await?;
        self.run(&caller, &[], AuthCommand::Enable).await
    }

    async fn disable(
        &self,
        request: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthOk>, Status> {
        let caller = self.admin(&request).await?;
        self.run(&caller, &[], AuthCommand::Disable).await
    }

    async fn status(
        &self,
        request: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        let view = self.node.shared().read(|applied| applied.state.auth_view());
        let mut response = pb::AuthStatusResponse {
            enabled: view.enabled,
            user: caller.name().to_owned(),
            ..Default::default()
        };
        if self.auth.is_superuser(&caller) {
            response.users = view
                .users
                .into_iter()
                .map(|(name, roles)| pb::AuthUser { name, roles })
                .collect();
            response.roles = view
                .roles
                .into_iter()
                .map(|(name, permissions)| pb::AuthRole {
                    name,
                    permissions: permissions
                        .into_iter()
                        .map(|p| pb::AuthPermission {
                            prefix: p.prefix,
                            rights: Some(rights_to(p.rights)),
                        })
                        .collect(),
                })
                .collect();
        }
        Ok(Response::new(response))
    }

    async fn user_add(
        &self,
        request: Request<pb::UserAddRequest>,
    ) -> Result<Response<pb::AuthOk>, Status> {
        let caller = self.admin(&request).await?;
        let request = request.into_inner();
        let password_hash = Self::hashed(request.password).await?;
        self.run(
            &caller,
            &request.request_id,
            AuthCommand::UserAdd {
                name: request.name,
                password_hash,
            },
        )
        .await
    }

    async fn user_remove(
        &self,
        request: Request<pb::UserRemoveRequest>,
    ) -> Result<Response<pb::AuthOk>, Status> {
        let caller = self.admin(&request).await?;
        let request = request.into_inner();
        self.run(
            &caller,
            &request.request_id,
            AuthCommand::UserRemove { name: request.name },
        )
        .await
    }

    async fn user_passwd(
        &self,
        request: Request<pb::UserPasswdRequest>,
    ) -> Result<Response<pb::AuthOk>, Status> {
        // A user may change its own password; root may change anyone's.
        let caller = self.auth.authenticate(request.metadata()).await?;
        if caller.name() != request.get_ref().name {
            self.auth.require_superuser(&caller)?;
        }
        let request = request.into_inner();
        let password_hash = Self::hashed(request.password).await?;
        self.run(
            &caller,
            &request.request_id,
            AuthCommand::UserPasswd {
                name: request.name,
                password_hash,
            },
        )
        .await
    }

    async fn user_grant_role(
        &self,
        request: Request<pb::UserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthOk>, Status> {
        let caller = self.admin(&request).await?;
        let request = request.into_inner();
        self.run(
            &caller,
            &request.request_id,
            AuthCommand::UserGrantRole {
                user: request.user,
                role: request.role,
            },
        )
        .await
    }

    async fn user_revoke_role(
        &self,
        request: Request<pb::UserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthOk>, Status> {
        let caller = self.admin(&request).await?;
        let request = request.into_inner();
        self.run(
            &caller,
            &request.request_id,
            AuthCommand::UserRevokeRole {
                user: request.user,
                role: request.role,
            },
        )
        .await
    }

    async fn role_add(
        &self,
        request: Request<pb::RoleAddRequest>,
    ) -> Result<Response<pb::AuthOk>, Status> {
        let caller = self.admin(&request).await?;
        let request = request.into_inner();
        self.run(
            &caller,
            &request.request_id,
            AuthCommand::RoleAdd { name: request.name },
        )
        .await
    }

    async fn role_remove(
        &self,
        request: Request<pb::RoleRemoveRequest>,
    ) -> Result<Response<pb::AuthOk>, Status> {
        let caller = self.admin(&request).await?;
        let request = request.into_inner();
        self.run(
            &caller,
            &request.request_id,
            AuthCommand::RoleRemove { name: request.name },
        )
        .await
    }

    async fn role_grant(
        &self,
        request: Request<pb::RoleGrantRequest>,
    ) -> Result<Response<pb::AuthOk>, Status> {
        let caller = self.admin(&request).await?;
        let request = request.into_inner();
        self.run(
            &caller,
            &request.request_id,
            AuthCommand::RoleGrant {
                role: request.role,
                prefix: request.prefix,
                rights: rights_from(request.rights),
            },
        )
        .await
    }

    async fn role_revoke(
        &self,
        request: Request<pb::RoleRevokeRequest>,
    ) -> Result<Response<pb::AuthOk>, Status> {
        let caller = self.admin(&request).await?;
        let request = request.into_inner();
        self.run(
            &caller,
            &request.request_id,
            AuthCommand::RoleRevoke {
                role: request.role,
                prefix: request.prefix,
            },
        )
        .await
    }

    async fn token_create(
        &self,
        request: Request<pb::TokenCreateRequest>,
    ) -> Result<Response<pb::TokenCreateResponse>, Status> {
        let caller = self.admin(&request).await?;
        let request = request.into_inner();
        // A token the client chose makes a retry register the same hash again (and the
        // request id returns the first answer); a minted one cannot be retried that way,
        // so its request id is not used: a retry mints another.
        let (token, request_id) = if request.token.is_empty() {
            (new_token(), Vec::new())
        } else {
            check_chosen_token(&request.token)?;
            (request.token, request.request_id)
        };
        self.run(
            &caller,
            &request_id,
            AuthCommand::TokenAdd {
                token_hash: token_hash(&token),
                user: request.user,
            },
        )
        .await?;
        Ok(Response::new(pb::TokenCreateResponse { token }))
    }

    async fn token_revoke(
        &self,
        request: Request<pb::TokenRevokeRequest>,
    ) -> Result<Response<pb::AuthOk>, Status> {
        // Idempotent by construction: forgetting a token twice is not an error.
        let caller = self.admin(&request).await?;
        self.run(
            &caller,
            &[],
            AuthCommand::TokenRemove {
                token_hash: token_hash(&request.into_inner().token),
            },
        )
        .await
    }
}

/// The shortest token a client may choose: as hard to guess as a minted one needs
/// 128 random bits, which 32 characters of hex or base64 hold.
const MIN_CHOSEN_TOKEN: usize = 32;
/// The longest token a client may choose.
const MAX_CHOSEN_TOKEN: usize = 256;

fn check_chosen_token(token: &str) -> Result<(), Status> {
    if !(MIN_CHOSEN_TOKEN..=MAX_CHOSEN_TOKEN).contains(&token.len())
        || !token.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(invalid_argument(format!(
            "a chosen token must be {MIN_CHOSEN_TOKEN}..={MAX_CHOSEN_TOKEN} printable ASCII \
             characters without spaces"
        )));
    }
    Ok(())
}
