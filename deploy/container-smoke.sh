#!/usr/bin/env bash
# Builds the container image with podman and no registry, starts a 3-node cluster of it,
# and checks that it elects a leader, reports healthy, runs as a non-root user, keeps
# its data on the volume, and survives a restart of one node. Run by hand (it costs a
# release build): deploy/container-smoke.sh. Needs root (podman, apt-get).
#
# No registry is needed because every image is made here:
#   - the base (RUNTIME_IMAGE) is Debian bookworm minbase, made by mmdebstrap from
#     Debian's packages and imported into podman (kept between runs);
#   - the binary comes from `cargo build --release` on this machine, in a FROM-scratch
#     image that replaces the Dockerfile's `builder` stage (--build-context), so the
#     compile stage is skipped.
# Without systemd, podman cannot schedule the periodic health checks (it logs "unable to
# get systemd connection"); the script runs them itself with `podman healthcheck run`.
# The containers use the host's network on 127.0.0.1 only, with ports from
# SMOKE_PORT_BASE (default 27000): node N listens on BASE+N (client), BASE+100+N (peer)
# and BASE+200+N (admin).
set -euo pipefail
cd "$(dirname "$0")/.."

base=${SMOKE_PORT_BASE:-27000}
tag=localhost/fencelock:smoke
runtime_image=localhost/fencelock-base:bookworm-slim
work=$(mktemp -d)
containers=()
cleanup() {
    for c in "${containers[@]}"; do podman rm -f "$c" >/dev/null 2>&1 || true; done
    for n in 1 2 3; do podman volume rm -f "fencelock-smoke-$n" >/dev/null 2>&1 || true; done
    rm -rf "$work"
}
trap cleanup EXIT

missing=()
for tool in podman runc mmdebstrap; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
# runc and cgroupfs work inside an unprivileged container; default_ulimits = [] keeps
# podman from raising limits the sandbox does not allow.
cat > "$work/containers.conf" <<'CONF'
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
export CONTAINERS_CONF="$work/containers.conf"

echo "== binary: cargo build --release -p fencelock"
CARGO_INCREMENTAL=0 cargo build --release --locked -p fencelock
mkdir "$work/binary"
cp target/release/fencelock "$work/binary/fencelock"
printf 'FROM scratch\nCOPY fencelock /out/usr/local/bin/fencelock\n' > "$work/binary/Containerfile"
podman build --network host -q -t localhost/fencelock-binary:smoke "$work/binary"

if ! podman image exists "$runtime_image"; then
    echo "== base image: mmdebstrap bookworm minbase"
    # As Debian's slim images: no documentation, manual pages or translations.
    mmdebstrap --variant=minbase --mode=root \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        bookworm "$work/base.tar"
    podman import "$work/base.tar" "$runtime_image"
fi

echo "== image: podman build (the Dockerfile, with the local binary and base)"
podman build --network host --format docker -t "$tag" \
    --build-context builder=container-image://localhost/fencelock-binary:smoke \
    --build-arg RUNTIME_IMAGE="$runtime_image" \
    .

peers="1=127.0.0.1:$((base + 101)),2=127.0.0.1:$((base + 102)),3=127.0.0.1:$((base + 103))"
start() {
    local n=$1
    podman run -d --name "fencelock-smoke-$n" --network host \
        -v "fencelock-smoke-$n:/var/lib/fencelock" \
        -e FENCELOCK_ID="$n" -e FENCELOCK_PEERS="$peers" \
        -e FENCELOCK_LISTEN="127.0.0.1:$((base + n))" \
        -e FENCELOCK_PEER_LISTEN="127.0.0.1:$((base + 100 + n))" \
        -e FENCELOCK_ADMIN="127.0.0.1:$((base + 200 + n))" \
        -e FENCELOCK_LOG_FORMAT=json \
        "$tag" >/dev/null
}
healthy() {
    podman healthcheck run "fencelock-smoke-$1" >/dev/null 2>&1
}
wait_healthy() {
    local n=$1
    for _ in $(seq 1 120); do
        if healthy "$n"; then
            echo "node $n healthy"
            return 0
        fi
        sleep 1
    done
    echo "node $n not healthy after 120 s; its log:" >&2
    podman logs "fencelock-smoke-$n" >&2 || true
    return 1
}

echo "== cluster of 3 on 127.0.0.1"
containers+=(fencelock-smoke-1 fencelock-smoke-2 fencelock-smoke-3)
# Alone, node 1 has no quorum and so no leader: the health check must fail.
start 1
sleep 5
if healthy 1; then
    echo "node 1 reports healthy without a quorum" >&2
    exit 1
fi
echo "node 1 alone: unhealthy, as it should be"
start 2
start 3
for n in 1 2 3; do wait_healthy "$n"; done

echo "== checks"
user=$(podman exec fencelock-smoke-1 id -u)
[ "$user" = 10001 ] || { echo "runs as uid $user, not 10001" >&2; exit 1; }
podman exec fencelock-smoke-1 test -f /var/lib/fencelock/data/raft-log.redb \
    || { echo "no Raft log on the volume" >&2; exit 1; }
first_line=$(podman logs fencelock-smoke-1 2>&1 | sed -n 1p)
case "$first_line" in
    '{'*) echo "JSON log: $first_line" ;;
    *) echo "log line is not JSON: $first_line" >&2; exit 1 ;;
esac
./target/release/fencelock --endpoints "127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))" \
    cluster status

echo "== restart node 2 on its volume"
podman stop -t 30 fencelock-smoke-2 >/dev/null
code=$(podman inspect --format '{{.State.ExitCode}}' fencelock-smoke-2)
[ "$code" = 0 ] || { echo "node 2 exited $code on SIGTERM, not 0" >&2; exit 1; }
podman rm fencelock-smoke-2 >/dev/null
start 2
wait_healthy 2
podman logs fencelock-smoke-2 2>&1 | grep '"message":"fencelock serving"' >/dev/null
echo "container smoke test passed"
