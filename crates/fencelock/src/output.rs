//! How the client commands print: aligned text for people (the default) or JSON for
//! scripts (`--output json`: one JSON document per command, one JSON line per event for
//! `watch`). The JSON shapes are built here from the client library's types, so every
//! command names fields the same way (`session`, `token`, `mode`, `value`, `revision`).

use fencelock_client::{
    ClusterStatus, Description, FencingToken, Holder, LockDelay, LockInfo, LockMode, Member,
    SessionId, Waiter, WatchEvent,
};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The output format (`--output`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned text for people.
    #[default]
    Human,
    /// JSON for scripts: one document, or one line per event for `watch`.
    Json,
}

/// Prints one JSON document (pretty) or line (compact) to stdout.
pub fn print_json(value: &Value, line: bool) {
    let text = if line {
        value.to_string()
    } else {
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    };
    println!("{text}");
}

/// `"exclusive"` or `"shared"`.
pub fn mode_name(mode: LockMode) -> &'static str {
    match mode {
        LockMode::Exclusive => "exclusive",
        LockMode::Shared => "shared",
    }
}

/// A holder value for display: the text when it is UTF-8, else `0x` + hex.
pub fn value_text(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(text) => text.to_owned(),
        Err(_) => {
            let mut hex = String::from("0x");
            for byte in value {
                let _ = write!(hex, "{byte:02x}");
            }
            hex
        }
    }
}

/// A span of time for people, to the second: `850ms`, `42s`, `3m12s`, `2h05m`, `3d04h`.
pub fn span_text(span: Duration) -> String {
    let secs = span.as_secs();
    match secs {
        0 => format!("{}ms", span.as_millis()),
        1..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86400, secs % 86400 / 3600),
    }
}

/// Whole milliseconds (saturating), for JSON.
pub fn millis(span: Duration) -> u64 {
    u64::try_from(span.as_millis()).unwrap_or(u64::MAX)
}

/// A wall-clock time as ms since the Unix epoch, for JSON.
fn unix_ms(time: Option<SystemTime>) -> Option<u64> {
    time.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(millis)
}

/// A holder as JSON: `held_for_ms` and `granted_at_ms` are null when the cluster did not
/// record the grant's time.
pub fn holder_json(holder: &Holder) -> Value {
    json!({
        "session": holder.session_id.0,
        "token": holder.token.0,
        "mode": mode_name(holder.mode),
        "value": value_text(&holder.value),
        "client_id": holder.client_id.map(|id| id.to_string()),
        "hold_count": holder.hold_count,
        "weight": holder.weight,
        "granted_at_ms": unix_ms(holder.granted_at),
        "held_for_ms": holder.held_for.map(millis),
        "lock_delay_ms": millis(holder.lock_delay),
    })
}

/// A waiter as JSON (`names`: every name of a multi-lock wait, else empty).
pub fn waiter_json(waiter: &Waiter) -> Value {
    json!({
        "session": waiter.session_id.0,
        "mode": mode_name(waiter.mode),
        "weight": waiter.weight,
        "queued_at_ms": unix_ms(waiter.queued_at),
        "waited_for_ms": waiter.waited_for.map(millis),
        "names": waiter.names,
    })
}

/// A lock-delay in force as JSON.
pub fn lock_delay_json(delay: &LockDelay) -> Value {
    json!({
        "delay_ms": millis(delay.delay),
        "started_at_ms": unix_ms(delay.started_at),
        "remaining_ms": millis(delay.remaining),
        "token": delay.token.0,
        "session": delay.session_id.map(|s| s.0),
    })
}

/// A lock as JSON: `permits` (null when not a semaphore), `permits_used`,
/// `permits_free`, and `lock_delay` (null when none is in force).
pub fn lock_json(lock: &LockInfo) -> Value {
    json!({
        "name": lock.name,
        "holders": lock.holders.iter().map(holder_json).collect::<Vec<_>>(),
        "waiters": lock.waiters.iter().map(waiter_json).collect::<Vec<_>>(),
        "permits": lock.permits,
        "permits_used": lock.permits_used,
        "permits_free": lock.permits_free(),
        "lock_delay": lock.lock_delay.as_ref().map(lock_delay_json),
    })
}

/// `describe` as JSON: `held` is false for a free lock (then `holders` and `waiters` are
/// empty).
pub fn description_json(name: &str, description: &Description) -> Value {
    let mut value = match &description.lock {
        Some(lock) => lock_json(lock),
        None => json!({
            "name": name,
            "holders": [],
            "waiters": [],
            "permits": null,
            "permits_used": 0,
            "permits_free": null,
            "lock_delay": null,
        }),
    };
    let held = description
        .lock
        .as_ref()
        .is_some_and(|lock| !lock.holders.is_empty());
    value["name"] = json!(name);
    value["held"] = json!(held);
    value["revision"] = json!(description.revision);
    value
}

/// `describe` for people.
pub fn description_text(name: &str, description: &Description) -> String {
    let mut out = String::new();
    let state = match &description.lock {
        None => "free".to_owned(),
        Some(lock) if lock.holders.is_empty() => "free (waiters queued)".to_owned(),
        Some(lock) => format!(
            "held ({}, {} holder{})",
            mode_name(lock.holders[0].mode),
            lock.holders.len(),
            if lock.holders.len() == 1 { "" } else { "s" }
        ),
    };
    let _ = writeln!(out, "lock:     {name}");
    let _ = writeln!(out, "state:    {state}");
    if let Some(lock) = &description.lock {
        if let (Some(permits), Some(free)) = (lock.permits, lock.permits_free()) {
            let _ = writeln!(
                out,
                "permits:  {} used, {free} free (of {permits})",
                lock.permits_used
            );
        }
        if let Some(delay) = &lock.lock_delay {
            let _ = writeln!(
                out,
                "delay:    lock-delay of {} after {} was lost: granted to nobody for about {} more",
                span_text(delay.delay),
                lost_grant_text(delay.session_id, delay.token),
                span_text(delay.remaining)
            );
        }
    }
    let _ = writeln!(out, "revision: {}", description.revision);
    if let Some(lock) = &description.lock {
        if !lock.holders.is_empty() {
            out.push('\n');
            let rows = lock
                .holders
                .iter()
                .map(|h| {
                    let mut mode = mode_name(h.mode).to_owned();
                    if h.hold_count > 1 {
                        let _ = write!(mode, " x{}", h.hold_count);
                    }
                    if lock.permits.is_some() {
                        let _ = write!(mode, " ({} permit{})", h.weight, plural(h.weight));
                    }
                    vec![
                        h.session_id.to_string(),
                        h.token.to_string(),
                        mode,
                        h.held_for.map_or_else(
                            || "-".to_owned(),
                            |d| format!("held for {}", span_text(d)),
                        ),
                        value_text(&h.value),
                    ]
                })
                .collect::<Vec<_>>();
            out.push_str(&table(
                &["SESSION", "TOKEN", "MODE", "HELD", "VALUE"],
                &rows,
            ));
        }
        if !lock.waiters.is_empty() {
            out.push('\n');
            let rows = lock
                .waiters
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let mut mode = mode_name(w.mode).to_owned();
                    if lock.permits.is_some() {
                        let _ = write!(mode, " ({} permit{})", w.weight, plural(w.weight));
                    }
                    if !w.names.is_empty() {
                        let _ = write!(mode, " with {}", w.names.join(","));
                    }
                    vec![
                        (i + 1).to_string(),
                        w.session_id.to_string(),
                        mode,
                        w.waited_for.map_or_else(
                            || "-".to_owned(),
                            |d| format!("waiting {}", span_text(d)),
                        ),
                    ]
                })
                .collect::<Vec<_>>();
            out.push_str(&table(&["QUEUED", "SESSION", "MODE", "WAITED"], &rows));
        }
    }
    out
}

fn plural(count: u32) -> &'static str {
    if count == 1 { "" } else { "s" }
}

/// `list` for people: one row per lock.
pub fn locks_text(locks: &[LockInfo]) -> String {
    if locks.is_empty() {
        return "no locks\n".to_owned();
    }
    let rows = locks
        .iter()
        .map(|lock| {
            let holder = lock.holders.first();
            vec![
                lock.name.clone(),
                holder.map_or_else(|| "-".to_owned(), |h| mode_name(h.mode).to_owned()),
                lock.holders
                    .iter()
                    .map(|h| h.session_id.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                lock.holders
                    .iter()
                    .map(|h| h.token.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                lock.waiters.len().to_string(),
                holder.map_or_else(String::new, |h| value_text(&h.value)),
            ]
        })
        .collect::<Vec<_>>();
    table(
        &["NAME", "MODE", "SESSIONS", "TOKENS", "WAITERS", "VALUE"],
        &rows,
    )
}

/// A session as JSON (`sessions`): id, client id, TTL in ms, held locks with tokens,
/// waits.
pub fn session_json(session: &fencelock_client::SessionInfo) -> Value {
    json!({
        "session": session.session_id.0,
        "client_id": session.client_id.map(|id| id.to_string()),
        "ttl_ms": u64::try_from(session.ttl.as_millis()).unwrap_or(u64::MAX),
        "held": session
            .held
            .iter()
            .map(|(name, token)| json!({ "name": name, "token": token.0 }))
            .collect::<Vec<_>>(),
        "waiting": session.waiting,
    })
}

/// The `sessions` table.
pub fn sessions_text(sessions: &[fencelock_client::SessionInfo]) -> String {
    if sessions.is_empty() {
        return "no sessions\n".to_owned();
    }
    let rows = sessions
        .iter()
        .map(|session| {
            vec![
                session.session_id.to_string(),
                session
                    .client_id
                    .map_or_else(|| "-".to_owned(), |id| id.to_string()),
                format!("{}ms", session.ttl.as_millis()),
                session
                    .held
                    .iter()
                    .map(|(name, token)| format!("{name}@{token}"))
                    .collect::<Vec<_>>()
                    .join(","),
                session.waiting.join(","),
            ]
        })
        .collect::<Vec<_>>();
    table(
        &["SESSION", "CLIENT", "TTL", "HELD (NAME@TOKEN)", "WAITING"],
        &rows,
    )
}

/// A watch event as JSON (`event` is `acquired`, `released`, `expired`, `forced`,
/// `session_closed` or `resync`).
pub fn event_json(event: &WatchEvent) -> Value {
    match event {
        WatchEvent::Acquired {
            name,
            session_id,
            token,
            mode,
            value,
            revision,
        } => json!({
            "event": "acquired",
            "name": name,
            "session": session_id.0,
            "token": token.0,
            "mode": mode_name(*mode),
            "value": value_text(value),
            "revision": revision,
        }),
        WatchEvent::Resync { revision } => json!({ "event": "resync", "revision": revision }),
        WatchEvent::LockDelayStarted {
            name,
            token,
            session_id,
            delay,
            revision,
        } => json!({
            "event": "lock_delay_started",
            "name": name,
            "session": session_id.map(|s| s.0),
            "token": token.0,
            "delay_ms": millis(*delay),
            "revision": revision,
        }),
        WatchEvent::ValueChanged {
            name,
            session_id,
            token,
            value,
            revision,
        } => json!({
            "event": "value_changed",
            "name": name,
            "session": session_id.0,
            "token": token.0,
            "value": value_text(value),
            "revision": revision,
        }),
        other => json!({
            "event": event_kind(other),
            "name": other.name(),
            "session": event_session(other),
            "token": other.token().map(|t| t.0),
            "revision": other.revision(),
        }),
    }
}

/// The event's kind as a word ([`WatchEvent::kind`]).
pub fn event_kind(event: &WatchEvent) -> &'static str {
    event.kind()
}

fn event_session(event: &WatchEvent) -> Option<u64> {
    event.session_id().map(|session| session.0)
}

/// The grant whose loss started a lock-delay, for people: "the grant of session 7 with
/// token 41" ("the grant with token 41" when the session is not known).
fn lost_grant_text(session: Option<SessionId>, token: FencingToken) -> String {
    match session {
        Some(session) => format!("the grant of session {session} with token {token}"),
        None => format!("the grant with token {token}"),
    }
}

/// A watch event as one line for people.
pub fn event_text(event: &WatchEvent) -> String {
    match event {
        WatchEvent::Resync { revision } => {
            format!("rev {revision:<8} resync (events may have been missed; re-read with describe)")
        }
        WatchEvent::Acquired {
            name,
            session_id,
            token,
            mode,
            value,
            revision,
        } => {
            let value = if value.is_empty() {
                String::new()
            } else {
                format!(" value={}", value_text(value))
            };
            format!(
                "rev {revision:<8} {:<14} {name}  session={session_id} token={token} mode={}{value}",
                "acquired",
                mode_name(*mode)
            )
        }
        WatchEvent::LockDelayStarted {
            name,
            token,
            session_id,
            delay,
            revision,
        } => {
            let session = session_id.map_or(String::new(), |s| format!("session={s} "));
            format!(
                "rev {revision:<8} {:<14} {name}  {session}token={token} delay={}",
                "delay_started",
                span_text(*delay)
            )
        }
        WatchEvent::LockDelayEnded { name, revision } => {
            format!("rev {revision:<8} {:<14} {name}", "delay_ended")
        }
        WatchEvent::ValueChanged {
            name,
            session_id,
            token,
            value,
            revision,
        } => format!(
            "rev {revision:<8} {:<14} {name}  session={session_id} token={token} value={}",
            "value_changed",
            value_text(value)
        ),
        other => format!(
            "rev {:<8} {:<14} {}  session={} token={}",
            other.revision(),
            event_kind(other),
            other.name().unwrap_or_default(),
            event_session(other).unwrap_or_default(),
            other.token().map(|t| t.0).unwrap_or_default(),
        ),
    }
}

/// A member as JSON.
pub fn member_json(member: &Member) -> Value {
    json!({
        "id": member.id,
        "peer_addr": member.peer_addr,
        "client_addr": member.client_addr,
        "voter": member.voter,
    })
}

/// Members for people.
pub fn members_text(members: &[Member], leader: Option<u64>) -> String {
    let rows = members
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                if Some(m.id) == leader {
                    "leader".to_owned()
                } else if m.voter {
                    "voter".to_owned()
                } else {
                    "learner".to_owned()
                },
                m.client_addr.clone().unwrap_or_else(|| "-".to_owned()),
                m.peer_addr.clone(),
            ]
        })
        .collect::<Vec<_>>();
    table(&["ID", "ROLE", "CLIENT", "PEER"], &rows)
}

/// `cluster status` as JSON.
pub fn status_json(status: &ClusterStatus) -> Value {
    json!({
        "node_id": status.node_id,
        "state": status.state,
        "leader_id": status.leader_id,
        "leader_addr": status.leader_addr,
        "term": status.term,
        "commit_index": status.commit_index,
        "applied_index": status.applied_index,
        "sessions": status.sessions,
        "locks": status.locks,
        "last_token": status.last_token,
        "cluster_version": status.cluster_version,
        "members": status.members.iter().map(member_json).collect::<Vec<_>>(),
    })
}

/// `cluster status` for people.
pub fn status_text(status: &ClusterStatus) -> String {
    let mut out = String::new();
    let leader = match (status.leader_id, &status.leader_addr) {
        (Some(id), Some(addr)) => format!("node {id} at {addr}"),
        (Some(id), None) => format!("node {id}"),
        _ => "none".to_owned(),
    };
    let _ = writeln!(
        out,
        "answered by:  node {} ({})",
        status.node_id, status.state
    );
    let _ = writeln!(out, "leader:       {leader}");
    let _ = writeln!(out, "term:         {}", status.term);
    let _ = writeln!(
        out,
        "commit index: {} (applied {})",
        status.commit_index, status.applied_index
    );
    let _ = writeln!(out, "sessions:     {}", status.sessions);
    let _ = writeln!(out, "locks:        {}", status.locks);
    let _ = writeln!(out, "last token:   {}", status.last_token);
    let _ = writeln!(
        out,
        "cluster version: {}",
        status.cluster_version.map_or_else(
            || "unknown (the node predates reporting it)".to_owned(),
            |v| v.to_string()
        )
    );
    out.push('\n');
    out.push_str(&members_text(&status.members, status.leader_id));
    out
}

/// Left-aligned columns separated by two spaces, with a header row.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster_status(cluster_version: Option<u32>) -> ClusterStatus {
        ClusterStatus {
            node_id: 1,
            leader_id: Some(1),
            leader_addr: None,
            term: 2,
            commit_index: 9,
            applied_index: 9,
            members: Vec::new(),
            state: "Leader".to_owned(),
            sessions: 0,
            locks: 0,
            last_token: 4,
            cluster_version,
        }
    }

    #[test]
    fn cluster_status_shows_the_cluster_version() {
        let status = cluster_status(Some(2));
        assert!(
            status_text(&status).contains("cluster version: 2\n"),
            "{}",
            status_text(&status)
        );
        assert_eq!(status_json(&status)["cluster_version"], 2);
        // A node older than the field reports none: said so, not shown as 0.
        let old = cluster_status(None);
        assert!(
            status_text(&old).contains("cluster version: unknown"),
            "{}",
            status_text(&old)
        );
        assert!(status_json(&old)["cluster_version"].is_null());
    }

    #[test]
    fn tables_align_columns() {
        let text = table(
            &["A", "BB"],
            &[
                vec!["xxx".into(), "1".into()],
                vec!["y".into(), "22".into()],
            ],
        );
        assert_eq!(text, "A    BB\nxxx  1\ny    22\n");
    }

    #[test]
    fn spans_read_like_held_for_3m12s() {
        assert_eq!(span_text(Duration::from_millis(850)), "850ms");
        assert_eq!(span_text(Duration::from_secs(42)), "42s");
        assert_eq!(span_text(Duration::from_secs(192)), "3m12s");
        assert_eq!(
            span_text(Duration::from_secs(2 * 3600 + 5 * 60 + 9)),
            "2h05m"
        );
        assert_eq!(
            span_text(Duration::from_secs(3 * 86400 + 4 * 3600)),
            "3d04h"
        );
    }

    #[test]
    fn delay_and_value_events_print_as_json_and_text() {
        use fencelock_client::{FencingToken, SessionId};
        let started = WatchEvent::LockDelayStarted {
            name: "printers/3".into(),
            token: FencingToken(41),
            session_id: Some(SessionId(7)),
            delay: Duration::from_secs(10),
            revision: 9,
        };
        assert_eq!(
            event_json(&started),
            json!({
                "event": "lock_delay_started", "name": "printers/3", "session": 7,
                "token": 41, "delay_ms": 10_000, "revision": 9,
            })
        );
        assert!(
            event_text(&started)
                .contains("delay_started  printers/3  session=7 token=41 delay=10s"),
            "{}",
            event_text(&started)
        );
        let ended = WatchEvent::LockDelayEnded {
            name: "printers/3".into(),
            revision: 12,
        };
        assert_eq!(event_json(&ended)["event"], "lock_delay_ended");
        assert_eq!(event_json(&ended)["token"], serde_json::Value::Null);
        let changed = WatchEvent::ValueChanged {
            name: "elections/db".into(),
            session_id: SessionId(7),
            token: FencingToken(42),
            value: b"10.0.0.2".to_vec(),
            revision: 13,
        };
        assert_eq!(event_json(&changed)["value"], "10.0.0.2");
        assert!(event_text(&changed).contains("value=10.0.0.2"));
    }

    #[test]
    fn values_are_text_or_hex() {
        assert_eq!(value_text(b"host:1"), "host:1");
        assert_eq!(value_text(&[0xff, 0x01]), "0xff01");
    }
}
