//! `fencelock auth`, `fencelock user` and `fencelock role`: authentication and per-prefix
//! permissions. Before `auth enable` anyone may run them (the quick start: `user add root
//! --new-password ...`, then `auth enable`); afterwards only root (or `admin` on "").

use super::ClientOpts;
use crate::output::{Output, print_json};
use anyhow::Context;
use clap::{Args, Subcommand};
use fencelock_client::{Client, Rights};
use serde_json::json;

/// `fencelock auth`.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: AuthCommand,
}

/// The `auth` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum AuthCommand {
    /// Switch authentication and permission checks on (the user `root` must exist).
    Enable,
    /// Switch them off (root only).
    Disable,
    /// Whether auth is on, who you are, and (for root) the users and roles.
    Status,
    /// Mint a bearer token acting as USER (printed once; the cluster keeps a hash).
    Token {
        /// The user.
        #[arg(value_name = "USER")]
        username: String,
    },
    /// Revoke a bearer token: calls that present it are refused from then on. Revoking an
    /// unknown token succeeds.
    RevokeToken {
        /// The token as `auth token` printed it; `-` reads it from standard input (keeps
        /// it out of the process list and the shell history).
        #[arg(value_name = "TOKEN")]
        revoked: String,
    },
}

/// `fencelock user`.
#[derive(Debug, Clone, Args)]
pub struct UserArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: UserCommand,
}

/// The `user` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum UserCommand {
    /// Create a user.
    Add {
        /// Its name (`root` is the superuser).
        name: String,
        /// Its password (hashed with argon2 by the server).
        #[arg(long, env = "FENCELOCK_NEW_PASSWORD")]
        new_password: String,
    },
    /// Delete a user.
    Remove {
        /// Its name.
        name: String,
    },
    /// Change a user's password.
    Passwd {
        /// Its name.
        name: String,
        /// The new password.
        #[arg(long, env = "FENCELOCK_NEW_PASSWORD")]
        new_password: String,
    },
    /// Give a user a role.
    GrantRole {
        /// The user.
        #[arg(value_name = "USER")]
        username: String,
        /// The role.
        role: String,
    },
    /// Take a role from a user.
    RevokeRole {
        /// The user.
        #[arg(value_name = "USER")]
        username: String,
        /// The role.
        role: String,
    },
}

/// `fencelock role`.
#[derive(Debug, Clone, Args)]
pub struct RoleArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: RoleCommand,
}

/// The `role` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum RoleCommand {
    /// Create a role.
    Add {
        /// Its name.
        name: String,
    },
    /// Delete a role; every user that had it loses it.
    Remove {
        /// Its name.
        name: String,
    },
    /// Grant RIGHTS (comma-separated: acquire, release, read, admin) on every lock whose
    /// name starts with PREFIX ("" for every lock).
    Grant {
        /// The role.
        role: String,
        /// The lock-name prefix.
        prefix: String,
        /// The rights, e.g. `acquire,release,read`.
        rights: String,
    },
    /// Remove every right of ROLE on exactly PREFIX.
    Revoke {
        /// The role.
        role: String,
        /// The lock-name prefix.
        prefix: String,
    },
}

fn parse_rights(text: &str) -> anyhow::Result<Rights> {
    let mut rights = Rights::default();
    for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match word {
            "acquire" => rights.acquire = true,
            "release" => rights.release = true,
            "read" => rights.read = true,
            "admin" => rights.admin = true,
            other => anyhow::bail!("unknown right {other:?} (acquire, release, read, admin)"),
        }
    }
    Ok(rights)
}

fn done(opts: &ClientOpts, what: &str) {
    match opts.output {
        Output::Json => print_json(&json!({ "ok": true, "what": what }), false),
        Output::Human => println!("{what}"),
    }
}

/// `fencelock auth ...`.
pub async fn auth(client: &Client, opts: &ClientOpts, args: &AuthArgs) -> anyhow::Result<()> {
    match &args.command {
        AuthCommand::Enable => {
            client.auth_enable().await.context("cannot enable auth")?;
            done(opts, "auth enabled");
        }
        AuthCommand::Disable => {
            client.auth_disable().await.context("cannot disable auth")?;
            done(opts, "auth disabled");
        }
        AuthCommand::Status => {
            let status = client
                .auth_status()
                .await
                .context("cannot read auth status")?;
            match opts.output {
                Output::Json => print_json(
                    &json!({
                        "enabled": status.enabled,
                        "user": status.user,
                        "users": status.users.iter().map(|(name, roles)| json!({"name": name, "roles": roles})).collect::<Vec<_>>(),
                        "roles": status.roles.iter().map(|(name, permissions)| json!({
                            "name": name,
                            "permissions": permissions.iter().map(|(prefix, r)| json!({
                                "prefix": prefix, "acquire": r.acquire, "release": r.release, "read": r.read, "admin": r.admin,
                            })).collect::<Vec<_>>(),
                        })).collect::<Vec<_>>(),
                    }),
                    false,
                ),
                Output::Human => {
                    println!(
                        "auth {} (you are {})",
                        if status.enabled {
                            "enabled"
                        } else {
                            "disabled"
                        },
                        if status.user.is_empty() {
                            "anonymous"
                        } else {
                            &status.user
                        }
                    );
                    for (name, roles) in &status.users {
                        println!("user {name}: {}", roles.join(","));
                    }
                    for (name, permissions) in &status.roles {
                        for (prefix, r) in permissions {
                            let names: Vec<&str> = [
                                (r.acquire, "acquire"),
                                (r.release, "release"),
                                (r.read, "read"),
                                (r.admin, "admin"),
                            ]
                            .iter()
                            .filter(|(on, _)| *on)
                            .map(|(_, n)| *n)
                            .collect();
                            println!("role {name}: {prefix:?} {}", names.join(","));
                        }
                    }
                }
            }
        }
        AuthCommand::Token { username: user } => {
            let token = client
                .token_create(user)
                .await
                .with_context(|| format!("cannot create a token for {user}"))?;
            match opts.output {
                Output::Json => print_json(&json!({ "user": user, "token": token }), false),
                Output::Human => println!("{token}"),
            }
        }
        AuthCommand::RevokeToken { revoked } => {
            let token = if revoked == "-" {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("cannot read the token from standard input")?;
                line.trim().to_owned()
            } else {
                revoked.clone()
            };
            anyhow::ensure!(!token.is_empty(), "no token given");
            client
                .token_revoke(&token)
                .await
                .context("cannot revoke the token")?;
            done(opts, "token revoked");
        }
    }
    Ok(())
}

/// `fencelock user ...`.
pub async fn user(client: &Client, opts: &ClientOpts, args: &UserArgs) -> anyhow::Result<()> {
    match &args.command {
        UserCommand::Add { name, new_password } => {
            client
                .user_add(name, new_password)
                .await
                .with_context(|| format!("cannot add user {name}"))?;
            done(opts, &format!("user {name} added"));
        }
        UserCommand::Remove { name } => {
            client
                .user_remove(name)
                .await
                .with_context(|| format!("cannot remove user {name}"))?;
            done(opts, &format!("user {name} removed"));
        }
        UserCommand::Passwd { name, new_password } => {
            client
                .user_passwd(name, new_password)
                .await
                .with_context(|| format!("cannot change the password of {name}"))?;
            done(opts, &format!("password of {name} changed"));
        }
        UserCommand::GrantRole {
            username: user,
            role,
        } => {
            client
                .user_grant_role(user, role)
                .await
                .with_context(|| format!("cannot grant role {role} to {user}"))?;
            done(opts, &format!("role {role} granted to {user}"));
        }
        UserCommand::RevokeRole {
            username: user,
            role,
        } => {
            client
                .user_revoke_role(user, role)
                .await
                .with_context(|| format!("cannot revoke role {role} from {user}"))?;
            done(opts, &format!("role {role} revoked from {user}"));
        }
    }
    Ok(())
}

/// `fencelock role ...`.
pub async fn role(client: &Client, opts: &ClientOpts, args: &RoleArgs) -> anyhow::Result<()> {
    match &args.command {
        RoleCommand::Add { name } => {
            client
                .role_add(name)
                .await
                .with_context(|| format!("cannot add role {name}"))?;
            done(opts, &format!("role {name} added"));
        }
        RoleCommand::Remove { name } => {
            client
                .role_remove(name)
                .await
                .with_context(|| format!("cannot remove role {name}"))?;
            done(opts, &format!("role {name} removed"));
        }
        RoleCommand::Grant {
            role,
            prefix,
            rights,
        } => {
            let parsed = parse_rights(rights)?;
            client
                .role_grant(role, prefix, parsed)
                .await
                .with_context(|| format!("cannot grant {rights} on {prefix:?} to {role}"))?;
            done(opts, &format!("role {role}: {rights} on {prefix:?}"));
        }
        RoleCommand::Revoke { role, prefix } => {
            client
                .role_revoke(role, prefix)
                .await
                .with_context(|| format!("cannot revoke {prefix:?} from {role}"))?;
            done(opts, &format!("role {role}: nothing on {prefix:?}"));
        }
    }
    Ok(())
}
