# Test-only stand-in for `redis:alpine` (no registry here): Debian bookworm's redis-server.
# Used by scripts/container-suite.sh as the `redis` service of MediaCMS 7.3's compose.
FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/*
EXPOSE 6379
USER redis
# A throwaway broker: no persistence, reachable from the compose network.
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
