//! Authentication and per-prefix permissions over real gRPC: refusals without or with
//! bad credentials, prefix rights, session ownership, bearer tokens, and permissions that
//! survive a leader change and a restart of every node (they live in the replicated
//! state and its snapshots).

mod common;

use base64::Engine as _;
use common::*;
use fencelock_proto::v1 as pb;
use fencelock_proto::v1::auth_client::AuthClient;
use tonic::Request;

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// `message` with `authorization` metadata.
fn as_user<T>(authorization: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", authorization.parse().unwrap());
    request
}

fn rights(acquire: bool, release: bool, read: bool, admin: bool) -> Option<pb::AuthRights> {
    Some(pb::AuthRights {
        acquire,
        release,
        read,
        admin,
    })
}

async fn auth_client(cluster: &TestCluster, index: usize) -> AuthClient<tonic::transport::Channel> {
    AuthClient::new(channel(cluster.slots[index].client).await)
}

/// root, alice (acquire/release/read on "jobs/"), bob (acquire/release/read on every
/// lock, no admin); auth on. Set up without credentials while auth is off, as the CLI's
/// quick start does.
async fn set_up(cluster: &TestCluster) {
    let leader = cluster.leader().await;
    let mut auth = auth_client(cluster, leader).await;
    for (name, password) in [("root", "rootpw"), ("alice", "alicepw"), ("bob", "bobpw")] {
        auth.user_add(pb::UserAddRequest {
            name: name.into(),
            password: password.into(),
            ..Default::default()
        })
        .await
        .expect("user add");
    }
    for (role, prefix) in [("jobs", "jobs/"), ("everything", "")] {
        auth.role_add(pb::RoleAddRequest {
            name: role.into(),
            ..Default::default()
        })
        .await
        .expect("role add");
        auth.role_grant(pb::RoleGrantRequest {
            role: role.into(),
            prefix: prefix.into(),
            rights: rights(true, true, true, false),
            ..Default::default()
        })
        .await
        .expect("role grant");
    }
    for (user, role) in [("alice", "jobs"), ("bob", "everything")] {
        auth.user_grant_role(pb::UserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
            ..Default::default()
        })
        .await
        .expect("grant role");
    }
    auth.enable(pb::AuthEnableRequest {}).await.expect("enable");
}

async fn open_as(cluster: &TestCluster, index: usize, who: &str, id: u128) -> u64 {
    cluster
        .locks(index)
        .await
        .open_session(as_user(
            who,
            pb::OpenSessionRequest {
                client_id: client_id(id),
                ttl_ms: 10_000,
            },
        ))
        .await
        .expect("open session")
        .into_inner()
        .session_id
}

async fn acquire_as(
    cluster: &TestCluster,
    index: usize,
    who: &str,
    session: u64,
    name: &str,
    seq: u64,
) -> Result<u64, tonic::Status> {
    cluster
        .locks(index)
        .await
        .acquire(as_user(
            who,
            acquire_request(session, name, seq, pb::WaitPolicy::NoWait),
        ))
        .await
        .map(|r| r.into_inner().token)
}

/// The checks that must hold whatever node leads and however often nodes restarted.
async fn check_permissions(cluster: &TestCluster, seq_base: u64) {
    let leader = cluster.leader().await;
    let alice = basic("alice", "alicepw");
    // No credentials and a wrong password are refused.
    let error = cluster
        .locks(leader)
        .await
        .open_session(pb::OpenSessionRequest {
            client_id: client_id(9),
            ttl_ms: 10_000,
        })
        .await
        .expect_err("no credentials");
    assert_eq!(error.code(), tonic::Code::Unauthenticated);
    assert_eq!(reason_of(&error), pb::ErrorReason::Unauthenticated);
    let error = cluster
        .locks(leader)
        .await
        .open_session(as_user(
            &basic("alice", "wrong"),
            pb::OpenSessionRequest {
                client_id: client_id(9),
                ttl_ms: 10_000,
            },
        ))
        .await
        .expect_err("wrong password");
    assert_eq!(error.code(), tonic::Code::Unauthenticated);
    // alice may acquire under jobs/ but not elsewhere.
    let session = open_as(cluster, leader, &alice, 100 + u128::from(seq_base)).await;
    let error = acquire_as(cluster, leader, &alice, session, "billing/x", seq_base + 1)
        .await
        .expect_err("no acquire on billing/");
    assert_eq!(error.code(), tonic::Code::PermissionDenied);
    assert_eq!(reason_of(&error), pb::ErrorReason::PermissionDenied);
    acquire_as(cluster, leader, &alice, session, "jobs/x", seq_base + 2)
        .await
        .expect("acquire on jobs/");
    cluster
        .locks(leader)
        .await
        .close_session(as_user(
            &alice,
            pb::CloseSessionRequest {
                session_id: session,
            },
        ))
        .await
        .expect("close own session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_prefix_rights_and_session_ownership() {
    let cluster = TestCluster::start(3).await;
    set_up(&cluster).await;
    check_permissions(&cluster, 0).await;
    let leader = cluster.leader().await;
    let alice = basic("alice", "alicepw");
    let bob = basic("bob", "bobpw");
    let root = basic("root", "rootpw");

    // bob cannot release alice's lock even with her session id and token...
    let session = open_as(&cluster, leader, &alice, 1).await;
    let token = acquire_as(&cluster, leader, &alice, session, "jobs/billing", 1)
        .await
        .expect("alice acquires");
    let release = |who: &str, seq| {
        as_user(
            who,
            pb::ReleaseRequest {
                session_id: session,
                name: "jobs/billing".into(),
                token,
                request: rid(seq),
            },
        )
    };
    let error = cluster
        .locks(leader)
        .await
        .release(release(&bob, 2))
        .await
        .expect_err("bob is not the owner");
    assert_eq!(error.code(), tonic::Code::PermissionDenied);
    // ... nor acquire with, keep alive or close her session.
    let error = acquire_as(&cluster, leader, &bob, session, "jobs/other", 3)
        .await
        .expect_err("bob acquires with alice's session");
    assert_eq!(error.code(), tonic::Code::PermissionDenied);
    let error = cluster
        .locks(leader)
        .await
        .close_session(as_user(
            &bob,
            pb::CloseSessionRequest {
                session_id: session,
            },
        ))
        .await
        .expect_err("bob closes alice's session");
    assert_eq!(error.code(), tonic::Code::PermissionDenied);
    // The lock is still alice's.
    let described = cluster
        .locks(leader)
        .await
        .describe(as_user(
            &alice,
            pb::DescribeRequest {
                name: "jobs/billing".into(),
            },
        ))
        .await
        .expect("alice reads jobs/")
        .into_inner();
    assert_eq!(described.lock.unwrap().holders[0].token, token);
    // Reading needs `read`: alice has none on billing/.
    let error = cluster
        .locks(leader)
        .await
        .describe(as_user(
            &alice,
            pb::DescribeRequest {
                name: "billing/x".into(),
            },
        ))
        .await
        .expect_err("no read on billing/");
    assert_eq!(error.code(), tonic::Code::PermissionDenied);
    // An admin may release it.
    cluster
        .locks(leader)
        .await
        .release(release(&root, 2))
        .await
        .expect("root releases alice's lock");

    // Cluster and auth administration need root.
    let error = cluster
        .cluster(leader)
        .await
        .remove_member(as_user(&bob, pb::RemoveMemberRequest { id: 3 }))
        .await
        .expect_err("bob is not root");
    assert_eq!(error.code(), tonic::Code::PermissionDenied);
    let mut auth = auth_client(&cluster, leader).await;
    let error = auth
        .user_add(as_user(
            &alice,
            pb::UserAddRequest {
                name: "eve".into(),
                password: "x".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("alice is not root");
    assert_eq!(error.code(), tonic::Code::PermissionDenied);
    let error = auth
        .disable(pb::AuthDisableRequest {})
        .await
        .expect_err("no credentials");
    assert_eq!(error.code(), tonic::Code::Unauthenticated);
    cluster
        .cluster(leader)
        .await
        .status(as_user(&bob, pb::StatusRequest {}))
        .await
        .expect("any user may read the status");
    let status = auth
        .status(as_user(&alice, pb::AuthStatusRequest {}))
        .await
        .expect("whoami")
        .into_inner();
    assert!(status.enabled);
    assert_eq!(status.user, "alice");
    assert!(status.users.is_empty(), "only root sees the users");

    // A bearer token acts as its user.
    let token = mint_token(&mut auth, &root, "alice").await;
    let bearer = format!("Bearer {token}");
    let session = open_as(&cluster, leader, &bearer, 2).await;
    acquire_as(&cluster, leader, &bearer, session, "jobs/bearer", 1)
        .await
        .expect("bearer acquires on jobs/");
    let error = open_session_with(&cluster, leader, "Bearer flt_nope").await;
    assert_eq!(error.code(), tonic::Code::Unauthenticated);

    // Switching auth off (as root) opens the door again.
    auth.disable(as_user(&root, pb::AuthDisableRequest {}))
        .await
        .expect("disable");
    let mut locks = cluster.locks(leader).await;
    open_session(&mut locks, 50, 10_000).await;
    cluster.shutdown().await;
}

/// A bearer token for `user`, minted by `root`.
async fn mint_token(
    auth: &mut AuthClient<tonic::transport::Channel>,
    root: &str,
    user: &str,
) -> String {
    auth.token_create(as_user(
        root,
        pb::TokenCreateRequest {
            user: user.into(),
            ..Default::default()
        },
    ))
    .await
    .expect("token")
    .into_inner()
    .token
}

async fn open_session_with(cluster: &TestCluster, index: usize, who: &str) -> tonic::Status {
    cluster
        .locks(index)
        .await
        .open_session(as_user(
            who,
            pb::OpenSessionRequest {
                client_id: client_id(77),
                ttl_ms: 10_000,
            },
        ))
        .await
        .expect_err("refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_survive_a_leader_change_and_a_restart_of_every_node() {
    let mut cluster = TestCluster::start(3).await;
    set_up(&cluster).await;
    check_permissions(&cluster, 0).await;

    let old_leader = cluster.leader().await;
    cluster.stop(old_leader).await;
    cluster.leader_other_than(old_leader).await;
    check_permissions(&cluster, 10).await;
    cluster.restart(old_leader).await;

    for index in 0..3 {
        cluster.stop(index).await;
    }
    for index in 0..3 {
        cluster.restart(index).await;
    }
    check_permissions(&cluster, 20).await;
    cluster.shutdown().await;
}

/// Taking a role from a user, deleting a role and revoking a bearer token each take
/// effect on the next call; only root may do them; revoking a token twice is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_role_removing_a_role_and_revoking_a_token_take_effect_at_once() {
    let cluster = TestCluster::start(3).await;
    set_up(&cluster).await;
    let leader = cluster.leader().await;
    let mut auth = auth_client(&cluster, leader).await;
    let root = basic("root", "rootpw");
    let alice = basic("alice", "alicepw");
    let bob = basic("bob", "bobpw");

    // alice holds jobs/ through the role "jobs" until root takes it from her.
    let session = open_as(&cluster, leader, &alice, 1).await;
    acquire_as(&cluster, leader, &alice, session, "jobs/a", 1)
        .await
        .expect("alice acquires on jobs/ through her role");
    let take_jobs_from_alice = |who: &str| {
        as_user(
            who,
            pb::UserRevokeRoleRequest {
                user: "alice".into(),
                role: "jobs".into(),
                ..Default::default()
            },
        )
    };
    let error = auth
        .user_revoke_role(take_jobs_from_alice(&alice))
        .await
        .expect_err("only root takes roles away");
    assert_eq!(error.code(), tonic::Code::PermissionDenied);
    auth.user_revoke_role(take_jobs_from_alice(&root))
        .await
        .expect("root revokes alice's role");
    let error = acquire_as(&cluster, leader, &alice, session, "jobs/b", 2)
        .await
        .expect_err("alice lost jobs/");
    assert_eq!(error.code(), tonic::Code::PermissionDenied);
    auth.user_revoke_role(take_jobs_from_alice(&root))
        .await
        .expect_err("alice no longer has the role");

    // Deleting "everything" takes it from bob, and it is gone from the listing.
    let bob_session = open_as(&cluster, leader, &bob, 2).await;
    acquire_as(&cluster, leader, &bob, bob_session, "any/a", 1)
        .await
        .expect("bob acquires anywhere through his role");
    auth.role_remove(as_user(
        &bob,
        pb::RoleRemoveRequest {
            name: "everything".into(),
            ..Default::default()
        },
    ))
    .await
    .expect_err("only root removes roles");
    auth.role_remove(as_user(
        &root,
        pb::RoleRemoveRequest {
            name: "everything".into(),
            ..Default::default()
        },
    ))
    .await
    .expect("root removes the role");
    let error = acquire_as(&cluster, leader, &bob, bob_session, "any/b", 2)
        .await
        .expect_err("bob lost every lock");
    assert_eq!(error.code(), tonic::Code::PermissionDenied);
    let status = auth
        .status(as_user(&root, pb::AuthStatusRequest {}))
        .await
        .expect("status")
        .into_inner();
    assert!(
        status.roles.iter().all(|r| r.name != "everything"),
        "{status:?}"
    );
    let bob_roles = &status.users.iter().find(|u| u.name == "bob").unwrap().roles;
    assert!(bob_roles.is_empty(), "{status:?}");

    // A revoked bearer token is refused from the next call on, on every node.
    auth.user_grant_role(as_user(
        &root,
        pb::UserGrantRoleRequest {
            user: "alice".into(),
            role: "jobs".into(),
            ..Default::default()
        },
    ))
    .await
    .expect("grant the role back");
    let token = mint_token(&mut auth, &root, "alice").await;
    let bearer = format!("Bearer {token}");
    let token_session = open_as(&cluster, leader, &bearer, 3).await;
    acquire_as(&cluster, leader, &bearer, token_session, "jobs/token", 1)
        .await
        .expect("the token acts as alice");
    let revoke = |who: &str| {
        as_user(
            who,
            pb::TokenRevokeRequest {
                token: token.clone(),
            },
        )
    };
    let error = auth
        .token_revoke(revoke(&alice))
        .await
        .expect_err("only root revokes tokens");
    assert_eq!(error.code(), tonic::Code::PermissionDenied);
    auth.token_revoke(revoke(&root)).await.expect("revoke");
    auth.token_revoke(revoke(&root))
        .await
        .expect("revoking again is not an error");
    let error = acquire_as(&cluster, leader, &bearer, token_session, "jobs/token2", 2)
        .await
        .expect_err("the revoked token is refused");
    assert_eq!(error.code(), tonic::Code::Unauthenticated);
    // Followers check credentials against their own replica: each refuses the token once
    // it has applied the revocation.
    for index in 0..3 {
        let mut refused = false;
        for _ in 0..50 {
            let status = open_session_with(&cluster, index, &bearer).await;
            if status.code() == tonic::Code::Unauthenticated {
                refused = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(refused, "node {index} still accepts the revoked token");
    }
    cluster.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// The state machine is the judge: a command checked on a stale view is refused at apply.

/// The caller the API attaches for `user`'s password, read from `index`'s applied state.
fn password_caller(cluster: &TestCluster, index: usize, user: &str) -> fencelock_core::Caller {
    let fingerprint = cluster.running(index).node().shared().read(|applied| {
        fencelock_core::password_fingerprint(applied.state.password_hash(user).unwrap())
    });
    fencelock_core::Caller::User {
        name: user.into(),
        credential: fencelock_core::Credential::Password(fingerprint),
    }
}

/// Proposes `command` on behalf of `caller` on `index` as the API would after its
/// (possibly stale) check, and returns what the state machine answered.
async fn propose_as(
    cluster: &TestCluster,
    index: usize,
    caller: &fencelock_core::Caller,
    command: fencelock_core::Command,
) -> Result<fencelock_core::Response, fencelock_core::Error> {
    cluster
        .running(index)
        .node()
        .proposer()
        .propose(fencelock_server::auth::authorized(caller, command))
        .await
        .expect("committed")
}

/// The scenario, without the timing: the API's early check ran on state that did
/// not have the latest entries (a new leader that has not applied them yet), so it let
/// the command through; the entries before it in the log revoke the caller's token,
/// change a password, or make the session someone else's. `apply` refuses each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_checked_on_stale_state_are_refused_when_applied() {
    use fencelock_core::{AuthError, Command, Credential, Error, FencingToken, RequestId};
    let cluster = TestCluster::start(1).await;
    set_up(&cluster).await;
    let leader = cluster.leader().await;
    let alice = basic("alice", "alicepw");
    let root = basic("root", "rootpw");
    let mut auth = auth_client(&cluster, leader).await;

    let session = open_as(&cluster, leader, &alice, 1).await;
    let token = acquire_as(&cluster, leader, &alice, session, "jobs/a", 1)
        .await
        .expect("alice acquires");
    let acquire = |seq, name: &str| Command::Acquire {
        session: fencelock_core::SessionId(session),
        request: RequestId {
            seq,
            first_unanswered_seq: seq,
        },
        name: name.into(),
        mode: fencelock_core::LockMode::Exclusive,
        wait: fencelock_core::WaitPolicy::NoWait,
        value: Vec::new(),
    };

    // bob has every right on the names, and knows alice's session id and token: the
    // early check would have said yes on a node that had not applied alice's open.
    let bob = password_caller(&cluster, leader, "bob");
    let release = Command::Release {
        session: fencelock_core::SessionId(session),
        request: RequestId {
            seq: 2,
            first_unanswered_seq: 2,
        },
        name: "jobs/a".into(),
        token: FencingToken(token),
    };
    for command in [
        release,
        Command::CloseSession {
            session: fencelock_core::SessionId(session),
        },
    ] {
        assert_eq!(
            propose_as(&cluster, leader, &bob, command).await,
            Err(Error::Auth(AuthError::NotSessionOwner(
                fencelock_core::SessionId(session)
            )))
        );
    }

    // alice's bearer token, checked valid, revoked in an earlier entry.
    let bearer = mint_token(&mut auth, &root, "alice").await;
    let by_token = fencelock_core::Caller::User {
        name: "alice".into(),
        credential: Credential::Token(fencelock_server::auth::token_hash(&bearer)),
    };
    assert!(
        propose_as(&cluster, leader, &by_token, acquire(3, "jobs/b"))
            .await
            .is_ok()
    );
    auth.token_revoke(as_user(
        &root,
        pb::TokenRevokeRequest {
            token: bearer.clone(),
        },
    ))
    .await
    .expect("revoke");
    assert_eq!(
        propose_as(&cluster, leader, &by_token, acquire(4, "jobs/c")).await,
        Err(Error::Auth(AuthError::CredentialRevoked("alice".into())))
    );

    // alice's password, verified, changed in an earlier entry.
    let by_password = password_caller(&cluster, leader, "alice");
    auth.user_passwd(as_user(
        &root,
        pb::UserPasswdRequest {
            name: "alice".into(),
            password: "newpw".into(),
            ..Default::default()
        },
    ))
    .await
    .expect("passwd");
    assert_eq!(
        propose_as(&cluster, leader, &by_password, acquire(5, "jobs/d")).await,
        Err(Error::Auth(AuthError::CredentialRevoked("alice".into())))
    );
    // Without credentials (checked while auth was off): refused now that it is on.
    assert_eq!(
        propose_as(
            &cluster,
            leader,
            &fencelock_core::Caller::Anyone,
            acquire(6, "jobs/e")
        )
        .await,
        Err(Error::Auth(AuthError::AuthRequired))
    );
    // What the API maps these to.
    let error = acquire_as(&cluster, leader, &alice, session, "jobs/f", 7)
        .await
        .expect_err("old password");
    assert_eq!(error.code(), tonic::Code::Unauthenticated);
    cluster.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Streams re-check their caller.

async fn next_status<T: std::fmt::Debug>(stream: &mut tonic::Streaming<T>) -> tonic::Status {
    let deadline = std::time::Duration::from_secs(30);
    loop {
        match tokio::time::timeout(deadline, stream.message())
            .await
            .expect("the stream answers in time")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => return status,
        }
    }
}

/// A keepalive and a watch stream opened with a bearer token end with UNAUTHENTICATED
/// when the token is revoked; a watch ends with PERMISSION_DENIED when its right is taken
/// away; streams opened while auth was off end once it is switched on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_end_when_their_caller_loses_its_credential_or_right() {
    let cluster = TestCluster::start(1).await;
    let leader = cluster.leader().await;
    let mut locks = cluster.locks(leader).await;

    // Opened with auth off: no credentials.
    let anonymous = open_session(&mut locks, 100, 10_000).await;
    let (anon_keepalives, inbound) = tokio::sync::mpsc::channel(16);
    let mut anon_keepalive = locks
        .keep_alive(tokio_stream::wrappers::ReceiverStream::new(inbound))
        .await
        .expect("keepalive stream")
        .into_inner();
    anon_keepalives
        .send(pb::KeepAliveRequest {
            session_id: anonymous,
        })
        .await
        .unwrap();
    let first = anon_keepalive.message().await.unwrap().unwrap();
    assert_eq!(first.status, pb::KeepAliveStatus::Ok as i32);
    let mut anon_watch = locks
        .watch(pb::WatchRequest {
            name: String::new(),
            prefix: true,
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();

    set_up(&cluster).await;
    let root = basic("root", "rootpw");
    let bob = basic("bob", "bobpw");
    let mut auth = auth_client(&cluster, leader).await;
    assert_eq!(
        next_status(&mut anon_watch).await.code(),
        tonic::Code::Unauthenticated,
        "a watch opened while auth was off ends when it is switched on"
    );
    anon_keepalives
        .send(pb::KeepAliveRequest {
            session_id: anonymous,
        })
        .await
        .unwrap();
    assert_eq!(
        next_status(&mut anon_keepalive).await.code(),
        tonic::Code::Unauthenticated,
        "a keepalive stream opened while auth was off no longer renews"
    );

    // alice by bearer token: a session, its keepalive stream and a watch.
    let token = mint_token(&mut auth, &root, "alice").await;
    let bearer = format!("Bearer {token}");
    let session = open_as(&cluster, leader, &bearer, 1).await;
    let (keepalives, inbound) = tokio::sync::mpsc::channel(16);
    let mut keepalive = locks
        .keep_alive(as_user(
            &bearer,
            tokio_stream::wrappers::ReceiverStream::new(inbound),
        ))
        .await
        .expect("keepalive stream")
        .into_inner();
    keepalives
        .send(pb::KeepAliveRequest {
            session_id: session,
        })
        .await
        .unwrap();
    let renewed = keepalive.message().await.unwrap().unwrap();
    assert_eq!(renewed.status, pb::KeepAliveStatus::Ok as i32);
    let mut watch = locks
        .watch(as_user(
            &bearer,
            pb::WatchRequest {
                name: "jobs/".into(),
                prefix: true,
                ..Default::default()
            },
        ))
        .await
        .expect("watch")
        .into_inner();
    // bob watches everything through his role.
    let mut bob_watch = locks
        .watch(as_user(
            &bob,
            pb::WatchRequest {
                name: String::new(),
                prefix: true,
                ..Default::default()
            },
        ))
        .await
        .expect("watch")
        .into_inner();
    assert!(bob_watch.message().await.unwrap().unwrap().resync);

    auth.token_revoke(as_user(&root, pb::TokenRevokeRequest { token }))
        .await
        .expect("revoke");
    assert_eq!(
        next_status(&mut watch).await.code(),
        tonic::Code::Unauthenticated
    );
    keepalives
        .send(pb::KeepAliveRequest {
            session_id: session,
        })
        .await
        .unwrap();
    assert_eq!(
        next_status(&mut keepalive).await.code(),
        tonic::Code::Unauthenticated
    );

    auth.user_revoke_role(as_user(
        &root,
        pb::UserRevokeRoleRequest {
            user: "bob".into(),
            role: "everything".into(),
            ..Default::default()
        },
    ))
    .await
    .expect("take bob's role");
    assert_eq!(
        next_status(&mut bob_watch).await.code(),
        tonic::Code::PermissionDenied
    );
    cluster.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Admin mutations retried with the same request id act once.

/// A force release whose answer was lost is sent again with the same request id (as the
/// client does): it returns the first answer and does not release the waiter that got
/// the lock meanwhile. The same for adding a user and creating a chosen token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_mutations_retried_with_their_request_id_act_once() {
    let cluster = TestCluster::start(1).await;
    let leader = cluster.leader().await;
    let mut locks = cluster.locks(leader).await;
    let first = open_session(&mut locks, 1, 10_000).await;
    let second = open_session(&mut locks, 2, 10_000).await;
    locks
        .acquire(acquire_request(first, "x", 1, pb::WaitPolicy::NoWait))
        .await
        .expect("first holds x");
    let mut waiter = cluster.locks(leader).await;
    let waiting = tokio::spawn(async move {
        waiter
            .acquire(acquire_request(second, "x", 1, pb::WaitPolicy::Forever))
            .await
    });
    // Wait until the second session queues.
    let queued = async {
        loop {
            let lock = locks
                .describe(pb::DescribeRequest { name: "x".into() })
                .await
                .unwrap()
                .into_inner()
                .lock
                .unwrap();
            if !lock.waiters.is_empty() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), queued)
        .await
        .expect("queued");
    let force = pb::ForceReleaseRequest {
        name: "x".into(),
        request_id: client_id(0xf0),
    };
    let answer = locks
        .force_release(force.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.released, 1);
    assert!(waiting.await.unwrap().is_ok(), "the waiter got x");
    let retried = locks.force_release(force).await.unwrap().into_inner();
    assert_eq!(retried, answer, "the retry gets the first answer");
    let holders = locks
        .describe(pb::DescribeRequest { name: "x".into() })
        .await
        .unwrap()
        .into_inner()
        .lock
        .expect("x is held")
        .holders;
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].session_id, second, "the retry released no one");

    // Revoking a session, retried: the first answer, not "not found".
    let revoke = pb::RevokeSessionRequest {
        session_id: second,
        request_id: client_id(0xf1),
    };
    let answer = locks
        .revoke_session(revoke.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        locks.revoke_session(revoke).await.unwrap().into_inner(),
        answer
    );

    // Adding a user, retried: done once, answered alike; without an id the retry fails.
    let mut auth = auth_client(&cluster, leader).await;
    let add = pb::UserAddRequest {
        name: "carol".into(),
        password: "carolpw".into(),
        request_id: client_id(0xf2),
    };
    auth.user_add(add.clone()).await.expect("added");
    auth.user_add(add.clone())
        .await
        .expect("the retry gets the first answer");
    auth.user_add(pb::UserAddRequest {
        request_id: Vec::new(),
        ..add
    })
    .await
    .expect_err("a new request: the user exists");
    // A token the client chose, retried: the same token, registered once.
    let create = pb::TokenCreateRequest {
        user: "carol".into(),
        request_id: client_id(0xf3),
        token: "flt_0123456789abcdef0123456789abcdef".into(),
    };
    let token = auth
        .token_create(create.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(auth.token_create(create).await.unwrap().into_inner(), token);
    assert_eq!(token.token, "flt_0123456789abcdef0123456789abcdef");
    let short = auth
        .token_create(pb::TokenCreateRequest {
            user: "carol".into(),
            token: "short".into(),
            ..Default::default()
        })
        .await
        .expect_err("too short to be a secret");
    assert_eq!(short.code(), tonic::Code::InvalidArgument);
    assert!(
        auth.user_add(pb::UserAddRequest {
            name: "dave".into(),
            password: "pw".into(),
            request_id: vec![1, 2, 3],
        })
        .await
        .is_err(),
        "a request id is 16 bytes"
    );
    cluster.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Snapshots written before the auth revision and the remembered answers existed.

/// A snapshot of format version 1 (the state without its two newest fields) still loads,
/// with those fields empty; the same payload under versions 2 and 3 is refused. The same
/// for a snapshot of format version 2 (before the newer primitives' fields).
#[test]
fn snapshots_of_format_version_1_still_load() {
    use fencelock_server::store::snapshot;
    let mut state = fencelock_core::State::default();
    state
        .apply(
            fencelock_core::Command::OpenSession {
                client_id: fencelock_core::ClientId(7),
                ttl_ms: 10_000,
            },
            &mut Vec::new(),
        )
        .unwrap();
    let meta = snapshot::SnapshotMeta::default();
    let current = snapshot::encode(&meta, &state).unwrap();
    // A state at cluster version 1 is written in format 3, which older builds read.
    assert_eq!(current[4], 3);
    // Version 3 appends the wall clock (0), the primitives' limits and the lock-delays in
    // force (an empty map); with no lock, nothing else differs from version 2.
    let v3_tail = postcard::to_stdvec(&(
        0u64,
        fencelock_core::PrimitiveLimits::default(),
        std::collections::BTreeMap::<String, u8>::new(),
    ))
    .unwrap()
    .len();
    // Version 2 appends the auth revision (0) and the remembered answers (an empty map
    // and an empty queue): one byte each.
    let header = snapshot::PAYLOAD_OFFSET as usize;
    let v2_payload = &current[header..current.len() - v3_tail];
    let payload = &v2_payload[..v2_payload.len() - 3];
    let with_header_of = |payload: &[u8], version: u8| {
        let mut bytes = current[..header].to_vec();
        bytes[4] = version;
        bytes[5..9].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
        bytes[9..17].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(payload);
        bytes
    };
    let with_header = |version: u8| with_header_of(payload, version);
    let old = snapshot::decode(&with_header(1)).expect("version 1 loads");
    assert_eq!(old.state, state);
    assert_eq!(old.state.auth_revision(), 0);
    assert!(snapshot::decode(&with_header(2)).is_err());
    assert!(snapshot::decode(&with_header(3)).is_err());
    let v2 = snapshot::decode(&with_header_of(v2_payload, 2)).expect("version 2 loads");
    assert_eq!(v2.state, state);
    assert!(snapshot::decode(&with_header_of(v2_payload, 3)).is_err());
}
