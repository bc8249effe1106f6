//! `serve --join-via`: a node started empty adds itself to an existing cluster, so
//! scaling out needs no `fencelock cluster add`.
//!
//! The node asks the members it is given (their client addresses) to add it with the
//! `AddMember` call an operator would make: the client library finds the leader
//! (following "not leader" redirects) and retries; the leader catches the node up as a
//! learner, then makes it a voter. The call is idempotent (adding a known learner or
//! voter changes nothing), so a node restarted half-way through simply asks again.
//!
//! At every start the node first looks at the membership it already knows: a voter
//! does nothing (the flag is ignored, as `--peers` is after the first start); a node
//! that is not a voter yet (empty, or a learner after a restart mid-join) asks.

use anyhow::{Context, bail};
use fencelock_client::{Client, ClientBuilder, Error as ClientError};
use fencelock_server::config::ServerConfig;
use fencelock_server::node::Node;
use std::path::Path;
use std::time::{Duration, Instant};

/// The first pause between two attempts; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long an unknown join token is retried: long enough for a token created just
/// before the join to be applied by every member, should the member asked not catch up
/// with the leader itself.
const UNKNOWN_TOKEN_GRACE: Duration = Duration::from_secs(5);
/// How long one attempt (connect, find the leader, add) may retry inside the client.
const ATTEMPT_DEADLINE: Duration = Duration::from_secs(60);

/// Is `node` a voter in the membership it knows?
pub fn is_voter(node: &Node) -> bool {
    node.status()
        .members
        .iter()
        .any(|member| member.id == node.id() && member.voter)
}

/// Make `node` a voter of the cluster reached through `config.join_via`, unless it is
/// one already. Returns once this node's own membership lists it as a voter.
///
/// # Errors
/// The token file or TLS files cannot be read, the cluster refuses the credentials, or
/// `config.join_timeout` (when not zero) passed without success.
pub async fn join(node: &Node, config: &ServerConfig) -> anyhow::Result<()> {
    if config.join_via.is_empty() {
        return Ok(());
    }
    if is_voter(node) {
        tracing::info!(
            node_id = node.id(),
            "already a voter: --join-via has nothing to do"
        );
        return Ok(());
    }
    let builder = client_builder(config)?;
    let started = Instant::now();
    let deadline = (!config.join_timeout.is_zero()).then(|| started + config.join_timeout);
    let peer_addr = config.peer_advertise_addr();
    let mut backoff = FIRST_BACKOFF;
    let mut client: Option<Client> = None;
    for attempt in 1u64.. {
        let result = match &client {
            Some(client) => client.add_member(node.id(), &peer_addr).await,
            None => match builder.clone().connect().await {
                Ok(connected) => {
                    let added = connected.add_member(node.id(), &peer_addr).await;
                    client = Some(connected);
                    added
                }
                Err(error) => Err(error),
            },
        };
        match result {
            Ok(members) => {
                tracing::info!(
                    node_id = node.id(),
                    attempt,
                    members = members.len(),
                    "the cluster added this node as a voter"
                );
                return wait_until_voter(node, deadline).await;
            }
            // A bearer token created moments ago may not be applied yet on the member
            // that checked it (credentials are checked on a node's applied state). That
            // member catches up with the leader's read index before it refuses an unknown
            // token (the server's `auth.rs`), but cannot while no leader is known (an
            // election) or on a member of an earlier version: an unknown token is still
            // retried for a short grace, any other refusal is final.
            Err(ClientError::Unauthenticated(message))
                if config.join_token_file.is_some() && started.elapsed() < UNKNOWN_TOKEN_GRACE =>
            {
                tracing::warn!(
                    node_id = node.id(),
                    attempt,
                    %message,
                    retry_in = ?backoff,
                    "the join token is not known yet; retrying"
                );
            }
            Err(error @ (ClientError::Unauthenticated(_) | ClientError::PermissionDenied(_))) => {
                return Err(error).context(
                    "the cluster refused to add this node: --join-token-file must hold a token \
                     of a user allowed to change the membership",
                );
            }
            Err(error @ ClientError::InvalidArgument(_)) => {
                return Err(error).context(format!(
                    "the cluster refused to add node {} at peer address {peer_addr} \
                     (check --id and --advertise-peer)",
                    node.id()
                ));
            }
            Err(error) => {
                tracing::warn!(
                    node_id = node.id(),
                    attempt,
                    via = ?config.join_via,
                    %error,
                    retry_in = ?backoff,
                    "joining the cluster failed; retrying"
                );
            }
        }
        if deadline.is_some_and(|deadline| Instant::now() + backoff >= deadline) {
            bail!(
                "could not join the cluster through {} within {:?}",
                config.join_via.join(","),
                config.join_timeout
            );
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    unreachable!("the attempts never run out")
}

/// Wait until this node has applied the membership that makes it a voter.
async fn wait_until_voter(node: &Node, deadline: Option<Instant>) -> anyhow::Result<()> {
    let mut next_log = Instant::now() + Duration::from_secs(10);
    while !is_voter(node) {
        let now = Instant::now();
        if deadline.is_some_and(|deadline| now >= deadline) {
            bail!("added to the cluster, but this node has not seen itself made a voter yet");
        }
        if now >= next_log {
            tracing::info!(node_id = node.id(), "waiting to see this node made a voter");
            next_log = now + Duration::from_secs(10);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::info!(node_id = node.id(), "joined the cluster as a voter");
    Ok(())
}

/// The client of the join calls: the bearer token of `join_token_file`, and TLS when
/// the node's own client listener speaks it (the cluster's nodes then do too).
fn client_builder(config: &ServerConfig) -> anyhow::Result<ClientBuilder> {
    let attempt_deadline = if config.join_timeout.is_zero() {
        ATTEMPT_DEADLINE
    } else {
        ATTEMPT_DEADLINE.min(config.join_timeout)
    };
    let mut builder = ClientBuilder::new(config.join_via.iter().map(|a| a.trim().to_owned()))
        .retry_deadline(attempt_deadline);
    if let Some(path) = &config.join_token_file {
        builder = builder.bearer(&read_token(path)?);
    }
    if let Some(tls) = &config.tls
        && let Some((cert, key)) = tls.client_identity()
    {
        let ca = tls.peer_ca.as_ref().or(tls.client_ca.as_ref()).context(
            "joining a cluster over TLS needs the CA of the nodes' certificates: \
             set --peer-ca (tls.peer_ca)",
        )?;
        builder = builder
            .tls_files(
                ca,
                Some((cert.as_path(), key.as_path())),
                tls.server_name.as_deref(),
            )
            .context("the TLS settings of the join calls")?;
    }
    Ok(builder)
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the join token file {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        bail!("the join token file {} is empty", path.display());
    }
    Ok(token.to_owned())
}
