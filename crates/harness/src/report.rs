//! The end of a run: the summary table (operations ok / failed / unknown, faults by kind,
//! a verdict per checker with its first counter-example) and the latency-over-time plot,
//! an SVG written by hand with the fault windows shaded.

use crate::check::Verdict;
use crate::history::{Event, Kind, Op, operations};
use crate::nemesis::FaultWindow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Operation counts per operation kind: (ok, fail, info).
pub fn op_counts(events: &[Event]) -> BTreeMap<String, (usize, usize, usize)> {
    let mut counts: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    for op in operations(events) {
        if matches!(op.op(), Op::Watch | Op::Fault | Op::SessionLost) {
            continue;
        }
        let name = serde_json::to_value(op.op())
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let entry = counts.entry(name).or_default();
        match op.kind() {
            Kind::Ok => entry.0 += 1,
            Kind::Fail => entry.1 += 1,
            _ => entry.2 += 1,
        }
    }
    counts
}

/// The summary table as text.
pub fn summary(
    seed: u64,
    events: &[Event],
    faults: &BTreeMap<String, usize>,
    verdicts: &[Verdict],
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n== fencelock-harness summary (seed {seed}) ==\n");
    let _ = writeln!(
        out,
        "{:<16} {:>8} {:>8} {:>8}",
        "operation", "ok", "failed", "unknown"
    );
    let mut total = (0, 0, 0);
    for (name, (ok, fail, info)) in op_counts(events) {
        let _ = writeln!(out, "{name:<16} {ok:>8} {fail:>8} {info:>8}");
        total.0 += ok;
        total.1 += fail;
        total.2 += info;
    }
    let _ = writeln!(
        out,
        "{:<16} {:>8} {:>8} {:>8}\n",
        "total", total.0, total.1, total.2
    );
    let _ = writeln!(out, "{:<16} {:>8}", "fault", "count");
    for (kind, count) in faults {
        let _ = writeln!(out, "{kind:<16} {count:>8}");
    }
    let _ = writeln!(
        out,
        "\n{:<14} {:<8} {:>9}  first counter-example",
        "checker", "verdict", "checked"
    );
    for verdict in verdicts {
        let word = if verdict.valid { "PASS" } else { "FAIL" };
        let first = verdict
            .first()
            .map(str::to_string)
            .or_else(|| verdict.notes.first().map(|n| format!("(note) {n}")))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<14} {:<8} {:>9}  {}",
            verdict.checker, word, verdict.checked, first
        );
        if verdict.violation_count > 1 {
            let _ = writeln!(out, "{:<34}  (+{} more)", "", verdict.violation_count - 1);
        }
    }
    let valid = verdicts.iter().all(|v| v.valid);
    let _ = writeln!(
        out,
        "\nverdict: {}",
        if valid { "VALID" } else { "INVALID" }
    );
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The latency-over-time plot: one dot per completed operation (x: invocation time, y:
/// latency, log scale), colored by outcome, with the fault windows shaded and labelled.
pub fn latency_svg(events: &[Event], windows: &[FaultWindow]) -> String {
    const WIDTH: f64 = 1200.0;
    const HEIGHT: f64 = 500.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 20.0;
    const TOP: f64 = 30.0;
    const BOTTOM: f64 = 50.0;
    let ops: Vec<_> = operations(events)
        .into_iter()
        .filter(|o| !matches!(o.op(), Op::Watch | Op::Fault | Op::SessionLost))
        .filter_map(|o| {
            let end = o.complete.as_ref()?.time_ns;
            Some((o.start_ns(), end.saturating_sub(o.start_ns()), o.kind()))
        })
        .collect();
    let t_max = ops
        .iter()
        .map(|o| o.0 + o.1)
        .chain(windows.iter().map(|w| w.end_ns))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let latency_max_ms = ops.iter().map(|o| o.1 as f64 / 1e6).fold(10.0f64, f64::max);
    let y_log_max = latency_max_ms.log10().ceil().max(1.0);
    let y_log_min = -1.0f64; // 0.1 ms
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |ns: f64| LEFT + ns / t_max * plot_w;
    let y = |ms: f64| {
        let v = ms.max(0.1).log10();
        TOP + plot_h - (v - y_log_min) / (y_log_max - y_log_min) * plot_h
    };
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let palette = [
        ("kill", "#e41a1c"),
        ("pause", "#ff7f00"),
        ("client-pause", "#984ea3"),
        ("partition", "#377eb8"),
        ("bridge", "#4daf4a"),
        ("slow", "#a65628"),
        ("restart-all", "#f781bf"),
        ("keepalive-loss", "#17becf"),
    ];
    let color_of = |kind: &str| {
        palette
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or("#999999", |(_, c)| *c)
    };
    for (i, window) in windows.iter().enumerate() {
        let x0 = x(window.start_ns as f64);
        let x1 = x(window.end_ns as f64).max(x0 + 1.0);
        let _ = writeln!(
            svg,
            r#"<rect x="{x0:.1}" y="{TOP}" width="{:.1}" height="{plot_h}" fill="{}" fill-opacity="0.18"><title>{}</title></rect>"#,
            x1 - x0,
            color_of(&window.kind),
            escape(&window.description)
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" fill="{}">{}</text>"#,
            x0 + 2.0,
            TOP + 12.0 + (i % 3) as f64 * 12.0,
            color_of(&window.kind),
            escape(&window.kind)
        );
    }
    // Axes and grid.
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{0}" x2="{1}" y2="{0}" stroke="#333"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{0}" stroke="#333"/>"##,
        TOP + plot_h,
        LEFT + plot_w
    );
    let mut decade = y_log_min;
    while decade <= y_log_max {
        let ms = 10f64.powf(decade);
        let yy = y(ms);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{} ms</text>"##,
            LEFT + plot_w,
            LEFT - 4.0,
            yy + 4.0,
            if ms < 1.0 {
                format!("{ms:.1}")
            } else {
                format!("{ms:.0}")
            }
        );
        decade += 1.0;
    }
    let seconds = t_max / 1e9;
    let step = [1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0]
        .into_iter()
        .find(|s| seconds / s <= 12.0)
        .unwrap_or(1200.0);
    let mut tick = 0.0;
    while tick <= seconds {
        let xx = x(tick * 1e9);
        let _ = writeln!(
            svg,
            r#"<text x="{xx:.1}" y="{:.1}" text-anchor="middle">{tick:.0} s</text>"#,
            TOP + plot_h + 16.0
        );
        tick += step;
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time since start (operation invoked)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 10.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="18" font-size="13">latency of every operation (log scale): ok green, failed orange, unknown red; shaded: faults</text>"#
    );
    for (start, latency, kind) in ops {
        let color = match kind {
            Kind::Ok => "#1b9e77",
            Kind::Fail => "#d95f02",
            _ => "#e7298a",
        };
        let _ = writeln!(
            svg,
            r#"<circle cx="{:.1}" cy="{:.1}" r="1.6" fill="{color}" fill-opacity="0.7"/>"#,
            x(start as f64),
            y(latency as f64 / 1e6)
        );
    }
    let _ = writeln!(svg, "</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testkit::H;

    #[test]
    fn the_plot_has_every_operation_and_every_fault() {
        let mut h = H::default();
        h.grant(0, 5, "c0", "l", 1, 3);
        h.release(10, 2000, "c0", "l", 1, 3);
        let events = h.done();
        let windows = vec![FaultWindow {
            kind: "kill".into(),
            start_ns: 1_000_000,
            end_ns: 900_000_000,
            description: "kill -9 node <1>".into(),
        }];
        let svg = latency_svg(&events, &windows);
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains("kill -9 node &lt;1&gt;"));
        let table = summary(7, &events, &BTreeMap::from([("kill".into(), 1)]), &[]);
        assert!(table.contains("acquire") && table.contains("seed 7"));
    }
}
