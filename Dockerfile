# syntax=docker/dockerfile:1
# The gateway image: gateway and loadtest binaries on debian:bookworm-slim, run as uid 10001.
#
#   docker build -t edge-gateway .
#   docker run --rm -p 8443:8443 -e GATEWAY_SERVER__LISTEN=0.0.0.0:8443 \
#     -e GATEWAY_DATABASE__URL=postgres://gateway:secret@db:5432/gateway \
#     -e GATEWAY_AUTH__SECRET="$(openssl rand -base64 48)" \
#     -e GATEWAY_SESSIONS__TOKEN_KEY="$(openssl rand -base64 48)" \
#     -v "$PWD/gateway.toml:/etc/gateway/gateway.toml:ro" edge-gateway
#   docker run --rm -e GATEWAY_DATABASE__URL=... edge-gateway migrate up
#
# The default command serves /etc/gateway/gateway.toml: mount your configuration there
# (a documented template is at /etc/gateway/gateway.example.toml). The built-in default
# listen address is loopback, so set server.listen = "0.0.0.0:8443" (file or environment).
# docker-compose.yml runs PostgreSQL, the migrations, an echo upstream and the gateway.

# --- build ---------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY gateway/ gateway/
COPY migrations/ migrations/
COPY loadtest/ loadtest/
COPY config/ config/
# Debug info (the release profile keeps line tables) is stripped for a small image: about
# 45 MB -> 11 MB for gateway. --build-arg STRIP=none keeps it for line numbers in backtraces.
ARG STRIP=debuginfo
ENV CARGO_PROFILE_RELEASE_STRIP=${STRIP}
# The cache mounts keep the registry and target folder between builds (BuildKit); the
# binaries are copied out of the cached target folder in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gateway -p loadtest \
    && mkdir -p /out \
    && cp target/release/gateway target/release/loadtest /out/

# --- runtime -------------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin gateway
COPY --from=builder /out/gateway /out/loadtest /usr/local/bin/
COPY config/gateway.example.toml /etc/gateway/gateway.example.toml
USER 10001:10001
WORKDIR /etc/gateway
# 8443: public listener (TLS when server.tls_cert/tls_key are set); 9091: admin (/metrics,
# /healthz, /readyz): set server.admin_listen = "0.0.0.0:9091" to reach it from outside.
EXPOSE 8443 9091
# No HEALTHCHECK: the slim image has no HTTP client; probe http://HOST:9091/healthz from
# your orchestrator instead.
ENTRYPOINT ["gateway"]
CMD ["serve", "--config", "/etc/gateway/gateway.toml"]
