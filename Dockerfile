# fencelock container image: `docker build -t fencelock .` (or `podman build --format
# docker`, which keeps the HEALTHCHECK), from the repository root. docs/operations.md,
# "Deploying", has the compose file, the Kubernetes manifests and the systemd unit.
#
# Build arguments, for builds without Docker Hub or with a pinned toolchain:
#   BUILDER_IMAGE  a Rust toolchain image (>= the workspace's rust-version)
#   RUNTIME_IMAGE  a Debian-like image with bash and useradd (glibc: the binary is
#                  linked against it)
# An already built binary skips the compile stage: give an image holding
# /out/usr/local/bin/fencelock as the `builder` stage, e.g.
#   docker buildx build --build-context builder=docker-image://IMAGE .
#   podman build --build-context builder=container-image://IMAGE .
# (deploy/container-smoke.sh does this with `cargo build --release`'s binary).
ARG BUILDER_IMAGE=docker.io/library/rust:1-slim-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${BUILDER_IMAGE} AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p fencelock \
    && install -D -m 0755 target/release/fencelock /out/usr/local/bin/fencelock

FROM ${RUNTIME_IMAGE} AS runtime
# A system user with a fixed uid (Kubernetes' runAsUser and fsGroup name it), owning
# the data volume and nothing else.
RUN useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /var/lib/fencelock --shell /usr/sbin/nologin fencelock \
    && mkdir -p /var/lib/fencelock \
    && chown 10001:10001 /var/lib/fencelock
COPY --from=builder /out/usr/local/bin/fencelock /usr/local/bin/fencelock
USER 10001:10001
WORKDIR /var/lib/fencelock
# Listen on every interface (the defaults are 127.0.0.1, useless in a container); the
# data lives in a directory of the volume, not its root, which a file system may
# share with e.g. lost+found. Flags and a --config file override these.
ENV FENCELOCK_LISTEN=0.0.0.0:7001 \
    FENCELOCK_PEER_LISTEN=0.0.0.0:7101 \
    FENCELOCK_ADMIN=0.0.0.0:7201 \
    FENCELOCK_DATA_DIR=/var/lib/fencelock/data \
    FENCELOCK_LOG_FORMAT=text
VOLUME ["/var/lib/fencelock"]
# client gRPC, peer (Raft), admin HTTP
EXPOSE 7001 7101 7201
# /health answers 200 once the node is a member of a cluster with a known leader. bash's
# /dev/tcp: the image needs no HTTP client. The port is FENCELOCK_ADMIN's (set the admin
# address through it, not --admin, for the check to follow it).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "exec 3<>\"/dev/tcp/127.0.0.1/${FENCELOCK_ADMIN##*:}\" && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && read -r _ code _ <&3 && [ \"$code\" = 200 ]"]
# SIGTERM stops a node gracefully (`docker stop` sends it).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/fencelock"]
CMD ["serve"]
