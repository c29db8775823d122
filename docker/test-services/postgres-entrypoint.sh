#!/bin/sh
#! Test-only Postgres entrypoint: on first start, initdb and create POSTGRES_USER (with
#! POSTGRES_PASSWORD) owning POSTGRES_DB; then run the server as `postgres` in the foreground.
set -eu
: "${POSTGRES_USER:=postgres}" "${POSTGRES_PASSWORD:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
mkdir -p "$PGDATA" /run/postgresql
chown postgres:postgres "$PGDATA" /run/postgresql
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  as_pg initdb -D "$PGDATA" -U postgres -A trust >/dev/null
  # Test network only: password auth from other containers, trust on the socket.
  echo "host all all 0.0.0.0/0 md5" >>"$PGDATA/pg_hba.conf"
  # The set-up server listens only on a private socket, so readiness checks (pg_isready on the
  # default socket) cannot mistake it for the real server, which it stops before that starts.
  init_sock=$(mktemp -d /tmp/pg-init.XXXXXX)
  chown postgres:postgres "$init_sock"
  as_pg pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=$init_sock" \
    -w start >/dev/null
  as_pg psql -h "$init_sock" -v ON_ERROR_STOP=1 -q -U postgres -d postgres <<SQL
CREATE ROLE "$POSTGRES_USER" LOGIN SUPERUSER PASSWORD '$POSTGRES_PASSWORD';
SQL
  [ "$POSTGRES_DB" = postgres ] \
    || as_pg createdb -h "$init_sock" -U postgres -O "$POSTGRES_USER" "$POSTGRES_DB"
  as_pg pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups \
  postgres -D "$PGDATA" -c listen_addresses='*'
