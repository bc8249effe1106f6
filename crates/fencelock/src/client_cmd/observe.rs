//! `fencelock elect --observe NAME`: print who leads an election, then every change.

use super::ClientOpts;
use super::run_cmd::Signals;
use crate::output::{self, Output, print_json};
use anyhow::Context;
use fencelock_client::Client;
use fencelock_client::election::{self, Leader};
use futures::StreamExt;
use serde_json::{Value, json};

/// Follow election `name` ([`election::observe`], over a watch that resumes after a
/// reconnect), printing one line per leader until Ctrl-C or `count` lines.
///
/// # Errors
/// The observation failed for a reason retrying does not cure (e.g. an invalid name or
/// a permission refused).
pub async fn observe(
    client: &Client,
    opts: &ClientOpts,
    name: &str,
    count: Option<u64>,
) -> anyhow::Result<()> {
    if count == Some(0) {
        return Ok(());
    }
    let mut leaders = election::observe(client, name);
    let mut signals = Signals::new()?;
    let mut printed = 0u64;
    loop {
        let next = tokio::select! {
            next = leaders.next() => next,
            _ = signals.recv() => return Ok(()),
        };
        let leader = match next {
            None => return Ok(()),
            Some(Ok(leader)) => leader,
            // The observer reads again by itself.
            Some(Err(error)) if error.is_transient() => {
                eprintln!("fencelock: observing {name}: {error}; retrying");
                continue;
            }
            Some(Err(error)) => {
                return Err(error).with_context(|| format!("cannot observe election {name}"));
            }
        };
        match opts.output {
            Output::Json => print_json(&leader_json(name, leader.as_ref()), true),
            Output::Human => println!("{}", leader_text(name, leader.as_ref())),
        }
        printed += 1;
        if count.is_some_and(|count| printed >= count) {
            return Ok(());
        }
    }
}

/// `{"election": NAME, "leader": {"session", "token", "value"}}`, `"leader": null` when
/// no one leads.
fn leader_json(name: &str, leader: Option<&Leader>) -> Value {
    json!({
        "election": name,
        "leader": leader.map(|leader| json!({
            "session": leader.session_id.0,
            "token": leader.token.0,
            "value": output::value_text(&leader.value),
        })),
    })
}

fn leader_text(name: &str, leader: Option<&Leader>) -> String {
    match leader {
        Some(leader) => format!(
            "{name}: leader session={} token={} value={}",
            leader.session_id,
            leader.token,
            output::value_text(&leader.value)
        ),
        None => format!("{name}: no leader"),
    }
}
