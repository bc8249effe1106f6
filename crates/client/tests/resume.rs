//! Resumable watches: a stream whose node fails resumes after the last event it
//! received, losing and repeating nothing (checked against a reference watch on a node
//! that stays up); a start position no node holds any more is COMPACTED, naming the
//! oldest revision held; the history keeps its bound; a replay is filtered like a live
//! stream.

mod common;
use common::*;
use fencelock_proto::v1 as pb;
use fencelock_server::config::ServerConfig;
use futures::StreamExt;
use prost::Message;

/// Generous: other builds share the machine.
const STEP: Duration = Duration::from_secs(30);

async fn item(stream: &mut WatchStream) -> Result<WatchEvent> {
    tokio::time::timeout(STEP, stream.next())
        .await
        .expect("a watch item in time")
        .expect("the stream is open")
}

async fn event(stream: &mut WatchStream) -> WatchEvent {
    item(stream).await.expect("no error")
}

/// The lock events up to and with the first one on `end`; a resync fails the test (it
/// means events may have been lost).
async fn events_until(stream: &mut WatchStream, end: &str) -> Vec<WatchEvent> {
    let mut events = Vec::new();
    loop {
        let event = event(stream).await;
        assert!(
            !matches!(event, WatchEvent::Resync { .. }),
            "a resync after {} events: {events:?}",
            events.len()
        );
        let done = event.name() == Some(end);
        events.push(event);
        if done {
            return events;
        }
    }
}

/// `rounds` acquires and releases over `{prefix}0..2`, and now and then one of a name
/// outside the prefix.
async fn churn(client: &Client, prefix: &str, rounds: usize) {
    let session = client.session(Duration::from_secs(10)).await.unwrap();
    for round in 0..rounds {
        let guard = session
            .lock(&format!("{prefix}{}", round % 3))
            .await
            .unwrap();
        if round % 4 == 0 {
            session
                .lock("elsewhere/x")
                .await
                .unwrap()
                .release()
                .await
                .unwrap();
        }
        guard.release().await.unwrap();
    }
    session.close().await.unwrap();
}

/// The events of the end marker `end` (acquired and released by a session of its own).
async fn mark_end(client: &Client, end: &str) {
    let session = client.session(Duration::from_secs(10)).await.unwrap();
    session.lock(end).await.unwrap().release().await.unwrap();
    session.close().await.unwrap();
}

/// How the node serving the watch goes away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outage {
    /// Stopped; the watch moves on to another node.
    Stopped,
    /// Stopped and restarted; the watch knows only that node and resumes there, on a
    /// history rebuilt from the log.
    Restarted,
}

async fn resume_across(outage: Outage) {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let serving = (leader + 1) % 3;
    let reference_node = (leader + 2) % 3;
    let endpoints = cluster.endpoints();
    let watcher_endpoints = match outage {
        Outage::Stopped => vec![endpoints[serving].clone(), endpoints[leader].clone()],
        Outage::Restarted => vec![endpoints[serving].clone()],
    };
    let watcher = connect_to(watcher_endpoints).await;
    let reference_client = connect_to(vec![endpoints[reference_node].clone()]).await;
    let writer = connect(&cluster).await;
    let mut resumed = watcher.watch_prefix("resume/");
    let mut reference = reference_client.watch_prefix("resume/");
    assert!(matches!(
        event(&mut resumed).await,
        WatchEvent::Resync { .. }
    ));
    assert!(matches!(
        event(&mut reference).await,
        WatchEvent::Resync { .. }
    ));

    let work = {
        let writer = writer.clone();
        tokio::spawn(async move { churn(&writer, "resume/", 30).await })
    };
    // Mid-stream: stop the serving node while the writes go on.
    let mut got = Vec::new();
    while got.len() < 10 {
        let event = event(&mut resumed).await;
        assert!(!matches!(event, WatchEvent::Resync { .. }));
        got.push(event);
    }
    cluster.stop(serving).await;
    work.await.unwrap();
    if outage == Outage::Restarted {
        cluster.restart(serving).await;
    }
    churn(&writer, "resume/", 6).await;
    mark_end(&writer, "resume/end").await;

    got.extend(events_until(&mut resumed, "resume/end").await);
    let expected = events_until(&mut reference, "resume/end").await;
    assert_eq!(
        got.len(),
        expected.len(),
        "lost or repeated events:\n{got:?}\n{expected:?}"
    );
    assert_eq!(got, expected);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_on_another_node_without_losing_or_repeating_events() {
    resume_across(Outage::Stopped).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_on_its_restarted_node_without_losing_or_repeating_events() {
    resume_across(Outage::Restarted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resumed_at_its_position_continues_inside_a_revision() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    let mut watch = client.watch_prefix("inside/");
    assert!(matches!(event(&mut watch).await, WatchEvent::Resync { .. }));
    let session = client.session(Duration::from_secs(10)).await.unwrap();
    let mut held = Vec::new();
    for name in ["inside/a", "inside/b", "inside/c"] {
        held.push(session.lock(name).await.unwrap());
    }
    // Closing the session releases the three in one entry: three events, one revision.
    session.close().await.unwrap();
    drop(held);
    mark_end(&client, "inside/end").await;
    let all = events_until(&mut watch, "inside/end").await;
    drop(watch);
    let released: Vec<_> = all
        .iter()
        .filter(|e| matches!(e, WatchEvent::SessionClosed { .. }))
        .collect();
    assert_eq!(released.len(), 3);
    assert!(
        released
            .iter()
            .all(|e| e.revision() == released[0].revision())
    );

    // Take the events up to the first of the three, then resume from the position.
    let start = WatchPosition::at_revision(all[0].revision());
    let mut partial = client.watch_prefix_from("inside/", start);
    let mut seen = Vec::new();
    loop {
        let event = event(&mut partial).await;
        let at_first_release = matches!(event, WatchEvent::SessionClosed { .. });
        seen.push(event);
        if at_first_release {
            break;
        }
    }
    let position = partial.position().expect("a position after an event");
    drop(partial);
    let mut rest = client.watch_prefix_from("inside/", position);
    seen.extend(events_until(&mut rest, "inside/end").await);
    assert_eq!(seen, all);
    cluster.shutdown().await;
}

fn small_history(config: &mut ServerConfig) {
    fencelock_server::testing::fast(config);
    config.api_limits.watch_history_events = 4;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_older_than_the_history_is_compacted_and_names_the_oldest_revision() {
    let cluster = TestCluster::start_with(1, small_history).await;
    let client = connect(&cluster).await;
    let before = client.describe("compact/0").await.unwrap().revision;
    churn(&client, "compact/", 10).await;
    mark_end(&client, "compact/end").await;

    let start = WatchPosition::at_revision(before + 1);
    let oldest = match item(&mut client.watch_prefix_from("compact/", start)).await {
        Err(Error::Compacted {
            oldest_revision, ..
        }) => oldest_revision,
        other => panic!("expected Compacted, got {other:?}"),
    };
    assert!(oldest > before + 1, "oldest {oldest}, start {}", before + 1);

    // On the wire: OUT_OF_RANGE, reason COMPACTED, the oldest revision held.
    let mut raw = cluster.locks(0).await;
    let status = raw
        .watch(pb::WatchRequest {
            name: "compact/".into(),
            prefix: true,
            start_revision: before + 1,
            start_event: 0,
        })
        .await
        .expect_err("compacted");
    assert_eq!(status.code(), tonic::Code::OutOfRange);
    let detail = pb::ErrorDetail::decode(status.details()).expect("an error detail");
    assert_eq!(detail.reason, pb::ErrorReason::Compacted as i32);
    assert_eq!(detail.oldest_revision, oldest);
    // The boundary: one revision before the oldest is compacted too (its events were
    // dropped), the oldest itself is served.
    let before_oldest = WatchPosition::at_revision(oldest - 1);
    assert!(matches!(
        item(&mut client.watch_prefix_from("", before_oldest)).await,
        Err(Error::Compacted { oldest_revision, .. }) if oldest_revision == oldest
    ));

    // The bound: from the oldest revision, at most 4 events are held (every watchable
    // event counts, whichever watch asks).
    let mut held = client.watch_prefix_from("", WatchPosition::at_revision(oldest));
    let replayed = events_until(&mut held, "compact/end").await;
    assert!(
        (1..=4).contains(&replayed.len()),
        "{} events held: {replayed:?}",
        replayed.len()
    );
    assert!(replayed.iter().all(|e| e.revision() >= oldest));

    // A watch without a start position is not affected: it begins with a resync.
    let mut plain = client.watch("compact/0");
    assert!(matches!(event(&mut plain).await, WatchEvent::Resync { .. }));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_is_filtered_by_name_and_prefix_and_a_future_start_waits() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    let before = client.describe("p/a").await.unwrap().revision;
    let session = client.session(Duration::from_secs(10)).await.unwrap();
    let mut guards = Vec::new();
    for name in ["p/a", "q/b", "p/c", "pp/d"] {
        guards.push(session.lock(name).await.unwrap());
    }
    for guard in guards {
        guard.release().await.unwrap();
    }
    let now = client.describe("p/a").await.unwrap().revision;
    // Ahead of the node: not an error, the events come as they are applied.
    let mut ahead = client.watch_prefix_from("p/", WatchPosition::at_revision(now + 3));
    mark_end(&client, "p/a").await;
    mark_end(&client, "p/end").await;

    let start = WatchPosition::at_revision(before + 1);
    let mut prefix = client.watch_prefix_from("p/", start);
    let events = events_until(&mut prefix, "p/end").await;
    let names: Vec<&str> = events.iter().filter_map(|e| e.name()).collect();
    assert_eq!(
        names,
        ["p/a", "p/c", "p/a", "p/c", "p/a", "p/a", "p/end"],
        "{events:?}"
    );

    let mut single = client.watch_from("p/a", start);
    let kinds: Vec<&str> = [
        event(&mut single).await,
        event(&mut single).await,
        event(&mut single).await,
    ]
    .iter()
    .map(|e| match e {
        WatchEvent::Acquired { .. } => "acquired",
        WatchEvent::Released { .. } => "released",
        _ => "other",
    })
    .collect();
    assert_eq!(kinds, ["acquired", "released", "acquired"]);

    let skipped = events_until(&mut ahead, "p/end").await;
    assert!(
        skipped.iter().all(|e| e.revision() >= now + 3),
        "{skipped:?}"
    );
    assert!(skipped.len() < 4, "{skipped:?}");
    cluster.shutdown().await;
}
