//! Credentials: a client built with `credentials` or `bearer` authenticates every call
//! (keepalive streams included) against a cluster with auth on; one without is refused.

mod common;
use common::*;
use fencelock_proto::v1 as pb;
use fencelock_proto::v1::auth_client::AuthClient;

async fn enable_auth(cluster: &TestCluster) -> String {
    let mut auth = AuthClient::connect(format!("http://{}", cluster.endpoints()[0]))
        .await
        .expect("connect");
    for name in ["root", "alice"] {
        auth.user_add(pb::UserAddRequest {
            name: name.into(),
            password: format!("{name}pw"),
            ..Default::default()
        })
        .await
        .expect("user add");
    }
    auth.role_add(pb::RoleAddRequest {
        name: "jobs".into(),
        ..Default::default()
    })
    .await
    .expect("role add");
    auth.role_grant(pb::RoleGrantRequest {
        role: "jobs".into(),
        prefix: "jobs/".into(),
        rights: Some(pb::AuthRights {
            acquire: true,
            release: true,
            read: true,
            admin: false,
        }),
        ..Default::default()
    })
    .await
    .expect("grant");
    auth.user_grant_role(pb::UserGrantRoleRequest {
        user: "alice".into(),
        role: "jobs".into(),
        ..Default::default()
    })
    .await
    .expect("grant role");
    let token = auth
        .token_create(pb::TokenCreateRequest {
            user: "alice".into(),
            ..Default::default()
        })
        .await
        .expect("token")
        .into_inner()
        .token;
    auth.enable(pb::AuthEnableRequest {}).await.expect("enable");
    token
}

fn builder(cluster: &TestCluster) -> ClientBuilder {
    Client::builder(cluster.endpoints())
        .connect_timeout(Duration::from_millis(500))
        .call_timeout(Duration::from_secs(2))
        .retry_deadline(Duration::from_secs(10))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_bearer_tokens_authenticate_every_call() {
    let cluster = TestCluster::start(1).await;
    let token = enable_auth(&cluster).await;

    // Connecting reads the cluster status, which needs an authenticated user too.
    assert!(matches!(
        builder(&cluster).connect().await,
        Err(Error::Unauthenticated(_))
    ));
    assert!(matches!(
        builder(&cluster)
            .credentials("alice", "nope")
            .connect()
            .await,
        Err(Error::Unauthenticated(_))
    ));

    for client in [
        builder(&cluster).credentials("alice", "alicepw"),
        builder(&cluster).bearer(&token),
    ] {
        let client = client.connect().await.expect("connect");
        // A short TTL, outlived: the session lives only if its keepalives are
        // authenticated too. (Not shorter: a password check is an argon2 hash, and a
        // loaded machine must not use up the lease before the session is open.)
        let session = client.session(Duration::from_secs(3)).await.unwrap();
        let guard = session.lock("jobs/a").await.unwrap();
        tokio::time::sleep(Duration::from_millis(4_500)).await;
        assert!(
            client
                .verify("jobs/a", guard.token())
                .await
                .unwrap()
                .current
        );
        assert!(matches!(
            session.try_lock("billing/a").await,
            Err(Error::PermissionDenied(_))
        ));
        guard.release().await.unwrap();
        session.close().await.unwrap();
    }
    cluster.shutdown().await;
}
