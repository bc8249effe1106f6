#!/usr/bin/env bash
# A rolling upgrade with two real binaries, checked by the fault harness.
#
#   scripts/rolling-upgrade.sh [OLD_COMMIT]        # default: 8350867, the previous release
#
# 1. Builds `fencelock` at OLD_COMMIT (debug profile) in a temporary git worktree with a
#    target directory of its own, keeps the binary and removes the rest; builds this
#    tree's `fencelock`, `fencelock-harness` and `fenced-kv` (debug).
#    OLD_BIN=path skips the old build (a binary built from OLD_COMMIT before).
# 2. Runs the harness (no nemesis) on a 3-node cluster on 127.0.0.1 whose nodes start as
#    the old binary: its workload takes contended locks through the fenced service the
#    whole time. Each node runs under a small supervisor (written below) that starts
#    the old or the new binary, so a node can be replaced without the harness noticing.
# 3. Meanwhile replaces one node at a time by the new binary (SIGTERM, restart on the
#    same data directory), waiting after each for the node to be healthy and caught up
#    with the leader, while locks are held. The leader goes first while it runs the old
#    build, so that a node of the new build is likely to lead nodes of the old one (the
#    summary says whether one did).
# 4. Waits until every node reports cluster version 2 (raised once all run the new
#    build), lets the workload finish, and takes the harness's verdict: its checkers
#    (tokens, exclusion, fencing, leases, linearizable history) must all pass.
#
# Environment: SEED (harness seed, default 19), RUN_SECONDS (workload length, default
# 150), GAP_SECONDS (between two replacements, default 15), KEEP=1 keeps the work
# directory. Every wait is bounded; only the processes this script started are stopped,
# by PID. Exit status 0 only if the upgrade completed and every checker passed.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
old_commit="${1:-8350867}"
seed="${SEED:-19}"
run_seconds="${RUN_SECONDS:-150}"
gap_seconds="${GAP_SECONDS:-15}"
export CARGO_INCREMENTAL=0

work="$(mktemp -d -t fencelock-upgrade.XXXXXX)"
harness_pid=""
old_tree="$work/old-src"
cleanup() {
    if [ -n "$harness_pid" ] && kill -0 "$harness_pid" 2>/dev/null; then
        kill -TERM "$harness_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$harness_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$harness_pid" 2>/dev/null || true
    fi
    # Node processes the supervisors started (recorded by PID), should any be left.
    for pidfile in "$work"/pid-* "$work"/supervisor-*; do
        [ -f "$pidfile" ] || continue
        pid="$(cat "$pidfile")"
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    done
    if [ -d "$old_tree" ]; then
        git -C "$repo" worktree remove --force "$old_tree" 2>/dev/null || true
    fi
    if [ "${KEEP:-0}" = 1 ]; then
        echo "work directory kept: $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

# --- 1. the two builds -------------------------------------------------------------------
old_full="$(git -C "$repo" rev-parse "$old_commit^{commit}")"
new_full="$(git -C "$repo" rev-parse HEAD)"
if [ -n "${OLD_BIN:-}" ]; then
    cp "$OLD_BIN" "$work/fencelock-old"
    log "old binary: $OLD_BIN (given for $old_full)"
else
    log "building fencelock at $old_full (debug) in a temporary worktree"
    git -C "$repo" worktree add --detach "$old_tree" "$old_full" >/dev/null
    (cd "$old_tree" && CARGO_TARGET_DIR="$work/old-target" cargo build -p fencelock --bin fencelock)
    cp "$work/old-target/debug/fencelock" "$work/fencelock-old"
    rm -rf "$work/old-target"
    git -C "$repo" worktree remove --force "$old_tree"
fi
log "building this tree ($new_full, debug)"
(cd "$repo" && cargo build -p fencelock -p fencelock-harness -p fencelock-fenced-kv --bins)
target="${CARGO_TARGET_DIR:-$repo/target}"
cp "$target/debug/fencelock" "$work/fencelock-new"
new_bin_dir="$target/debug"

# --- 2. the supervisor each node runs under ------------------------------------------------
# Starts the old binary, or the new one once `upgraded-<id>` exists; after the node exits
# it starts it again only if `restart-<id>` was left for it (the replacement), else it
# exits with the node's status. A SIGTERM (the harness stopping the node) is passed on.
cat >"$work/fencelock-switch" <<EOF
#!/usr/bin/env bash
work="$work"
id=""
prev=""
for arg in "\$@"; do
    [ "\$prev" = "--id" ] && id="\$arg"
    prev="\$arg"
done
if [ -z "\$id" ]; then exec "\$work/fencelock-new" "\$@"; fi
echo "\$\$" >"\$work/supervisor-\$id"
printf '%s\n' "\$@" >"\$work/args-\$id"
child=""
trap '[ -n "\$child" ] && kill -TERM "\$child" 2>/dev/null; [ -n "\$child" ] && wait "\$child"; exit 143' TERM INT
while :; do
    bin="\$work/fencelock-old"
    [ -e "\$work/upgraded-\$id" ] && bin="\$work/fencelock-new"
    "\$bin" "\$@" &
    child=\$!
    echo "\$child" >"\$work/pid-\$id"
    status=0
    wait "\$child" || status=\$?
    if [ -e "\$work/restart-\$id" ]; then
        rm -f "\$work/restart-\$id"
        continue
    fi
    exit "\$status"
done
EOF
chmod +x "$work/fencelock-switch"

# --- 3. the run -------------------------------------------------------------------------
log "harness: 3 nodes of $old_full, seed $seed, ${run_seconds}s of workload"
"$new_bin_dir/fencelock-harness" \
    --fencelock-bin "$work/fencelock-switch" \
    --fenced-kv-bin "$new_bin_dir/fenced-kv" \
    --nemesis none --nodes 3 --seed "$seed" --time "${run_seconds}s" \
    --ttl 4s --out "$work/harness" --quiet >"$work/harness.log" 2>&1 &
harness_pid=$!

admin_of() { # the admin address node $1 was started with
    awk 'prev == "--admin" { print; exit } { prev = $0 }' "$work/args-$1"
}
status_of() { # node $1's /status JSON, or nothing
    curl -fsS --max-time 2 "http://$(admin_of "$1")/status" 2>/dev/null || true
}
field() { # field $2 of node $1's status (cluster_version: 1 where a build lacks it)
    local json
    json="$(status_of "$1")"
    [ -n "$json" ] || return 0
    if [ "$2" = cluster_version ]; then
        jq -r '.cluster_version // 1' <<<"$json"
    else
        jq -r ".$2 // empty" <<<"$json"
    fi
}
wait_until() { # wait_until SECONDS WHAT COMMAND...: bounded poll
    local limit=$1 what=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@"; do
        if [ $SECONDS -ge $deadline ]; then
            log "gave up after ${limit}s: $what"
            return 1
        fi
        if ! kill -0 "$harness_pid" 2>/dev/null; then
            log "the harness ended early (see $work/harness.log)"
            return 1
        fi
        sleep 0.5
    done
}
all_started() { for id in 1 2 3; do [ -s "$work/args-$id" ] || return 1; done; }
leader_known() { [ -n "$(field 1 leader_id)" ] || [ -n "$(field 2 leader_id)" ] || [ -n "$(field 3 leader_id)" ]; }
leader_applied() {
    local id leader
    for id in 1 2 3; do
        leader="$(field "$id" leader_id)"
        if [ -n "$leader" ]; then field "$leader" applied_index; return; fi
    done
}
caught_up() { # node $1 answers and has applied at least $2
    local applied
    applied="$(field "$1" applied_index)"
    [ -n "$applied" ] && [ "$applied" -ge "$2" ]
}
runs_new() { # node $1's process is the new binary
    local pid
    pid="$(cat "$work/pid-$1" 2>/dev/null)" || return 1
    [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$work/fencelock-new" ]
}
version_2_everywhere() { for id in 1 2 3; do [ "$(field "$id" cluster_version)" = 2 ] || return 1; done; }

failed=0
wait_until 120 "three nodes started" all_started || failed=1
[ $failed = 1 ] || wait_until 120 "a leader" leader_known || failed=1
[ $failed = 1 ] || sleep "$gap_seconds"
current_leader() {
    local id leader
    for id in 1 2 3; do
        leader="$(field "$id" leader_id)"
        if [ -n "$leader" ]; then echo "$leader"; return; fi
    done
}
led_old_nodes() { grep -qs 'peer protocol versions.*versions=1\.\.=1' "$work"/harness/node-*.log; }
next_node() { # the leader while it runs the old build, else the lowest old node
    local leader id
    leader="$(current_leader)"
    if [ -n "$leader" ] && [ ! -e "$work/upgraded-$leader" ]; then echo "$leader"; return; fi
    for id in 1 2 3; do [ -e "$work/upgraded-$id" ] || { echo "$id"; return; }; done
}
mixed_lead=no
for _ in 1 2 3; do
    [ $failed = 0 ] || break
    id="$(next_node)"
    led_old_nodes && mixed_lead=yes
    target_index="$(leader_applied)"
    log "node $id: old build -> new build (leader: node $(current_leader); its applied index ${target_index:-?}; cluster version $(field "$id" cluster_version))"
    touch "$work/upgraded-$id" "$work/restart-$id"
    kill -TERM "$(cat "$work/pid-$id")"
    wait_until 60 "node $id restarted on the new build" runs_new "$id" || { failed=1; break; }
    wait_until 120 "node $id caught up" caught_up "$id" "${target_index:-0}" || { failed=1; break; }
    log "node $id: new build, caught up (applied $(field "$id" applied_index)), cluster version $(field "$id" cluster_version)"
    sleep "$gap_seconds"
done
led_old_nodes && mixed_lead=yes
if [ $failed = 0 ]; then
    wait_until 60 "cluster version 2 on every node" version_2_everywhere || failed=1
    [ $failed = 1 ] || log "cluster version 2 on every node"
fi
for id in 1 2 3; do
    runs_new "$id" || { log "node $id does not run the new build"; failed=1; }
done

log "waiting for the workload to end and the checkers"
harness_status=0
wait "$harness_pid" || harness_status=$?
harness_pid=""
cat "$work/harness.log"
echo
echo "rolling upgrade: $old_full -> $new_full, seed $seed, ${run_seconds}s of workload"
echo "a node of the new build led nodes of the old one (dialled them with the old handshake): $mixed_lead"
if [ $failed = 0 ] && [ $harness_status = 0 ]; then
    echo "PASS: every node replaced one at a time, cluster version 2, every checker passed"
    exit 0
fi
echo "FAIL: upgrade steps $([ $failed = 0 ] && echo ok || echo failed), harness exit status $harness_status"
KEEP=1
exit 1
