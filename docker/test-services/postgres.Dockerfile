# Test-only stand-in for `postgres:17.2-alpine` (no registry here): Debian bookworm's PostgreSQL
# 15, set up from POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB on first start as the official
# image does. Used by scripts/container-suite.sh as the `db` service of MediaCMS 7.3's compose.
FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql \
 && rm -rf /var/lib/apt/lists/*
# The real binaries first, so `pg_isready` (MediaCMS's healthcheck) needs no Debian cluster.
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]
