# syntax=docker/dockerfile:1
#
# sessiongate in a container. No image is published: build this one in your own CI.
#
#   docker build -t sessiongate .
#   docker run -d --name sessiongate -p 8080:8080 \
#     -v /srv/sessiongate:/etc/sessiongate:ro \
#     -v sessiongate-state:/var/lib/sessiongate sessiongate
#
# The config in /etc/sessiongate must listen on all interfaces: listen = "0.0.0.0:8080". With
# [session] state_dir = "/var/lib/sessiongate" it keeps its sessions on the volume mounted
# there, so they survive a restart and a new container.
# See README.md, "Deploying".
#
# tests/it/container.rs parses this file and checks what the image relies on: two stages, the
# build with --locked, a numeric non-root USER, the HEALTHCHECK command, and the config path
# and port the README gives. It also runs the binary the way this image does.

# --- build -------------------------------------------------------------------------------
# cargo and gcc are all the build needs: rustls uses the ring crypto provider, which compiles
# its C and assembly with the C compiler (no cmake, no OpenSSL headers).
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep downloaded crates and compiled dependencies between builds. The
# target directory is a cache mount, so the binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin sessiongate \
 && install -m 755 target/release/sessiongate /usr/local/bin/sessiongate

# --- run ---------------------------------------------------------------------------------
# Same Debian release as the builder, so the binary's glibc matches.
FROM debian:bookworm-slim
# sessiongate checks https upstreams against Mozilla's roots built into the binary; the
# system CA bundle is here for anything else in the image that makes TLS connections.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 sessiongate \
 && useradd --system --uid 10001 --gid sessiongate --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin sessiongate \
 && install -d -m 0700 -o 10001 -g 10001 /var/lib/sessiongate
COPY --from=build /usr/local/bin/sessiongate /usr/local/bin/sessiongate

# Mount the config directory here (read-only is fine): sessiongate.toml, the secret file and
# any TLS certificate and key, readable by uid 10001. No VOLUME is declared for it, so a
# container started without the mount fails at once with "cannot read config file" instead
# of running on an empty anonymous volume.
WORKDIR /etc/sessiongate
# session.state_dir: the sessions kept on disk (a lock, the snapshot and its logs, and the
# session key when the config names none). A volume, so they outlive the container: a named
# one (-v sessiongate-state:/var/lib/sessiongate) also outlives an upgrade to a new image.
# Docker fills a new named or anonymous volume from the image's directory, owner and mode
# included, so it starts as this one: uid 10001's, 0700 (sessiongate refuses a directory
# others may write to). One sessiongate per volume: a second one on it refuses to start.
VOLUME /var/lib/sessiongate
# Numeric, so Kubernetes' runAsNonRoot can tell it is not root without reading /etc/passwd.
USER 10001:10001
EXPOSE 8080
# `sessiongate healthcheck` reads the same config, asks its listener for
# /.sessiongate/healthz (over HTTPS when [server.tls] is set) and exits 0 on 200, 1 otherwise,
# with one line saying why; so the image needs no curl. It gives up after 4 s, within the
# timeout below. --start-period leaves time for the first start.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["sessiongate", "healthcheck"]
# SIGTERM (docker stop) shuts down gracefully; SIGHUP (docker kill --signal=HUP) reloads the
# TLS certificate, users and rules.
ENTRYPOINT ["sessiongate"]
CMD ["--config", "/etc/sessiongate/sessiongate.toml"]
