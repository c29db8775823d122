#!/usr/bin/env bash
# Prepare a machine for the test suite, fresh Debian 12 included: the build's packages
# (setup-build.sh), the Postgres/Redis/RabbitMQ servers the tests talk to (installed, a cluster
# created, started, when absent), and the Python Celery 5.4 peer venv. Idempotent: every step checks
# before it acts. Used by `make test` and so by `.ci/run`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-build.sh

apt_install postgresql postgresql-client redis-server redis-tools rabbitmq-server \
  python3 python3-venv procps imagemagick

# PostgreSQL: a cluster (the package makes one; a machine where it was removed gets one back),
# started, and the `postgres` role reachable over TCP without a password, as the tests assume.
pg_version=$(ls /usr/lib/postgresql | sort -n | tail -n 1)
if [ -z "$(ls /etc/postgresql/"$pg_version" 2>/dev/null)" ]; then
  echo "test-setup: creating PostgreSQL $pg_version cluster main"
  as_root pg_createcluster "$pg_version" main >/dev/null
fi
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "test-setup: starting PostgreSQL"
  as_root pg_ctlcluster --skip-systemctl-redirect "$pg_version" main start
fi
if ! psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1 </dev/null; then
  # Debian's default is scram for TCP: allow local loopback connections as trust for the test
  # server, the first rule so it wins. Only ever loopback.
  hba=/etc/postgresql/$pg_version/main/pg_hba.conf
  echo "test-setup: allowing trust auth on 127.0.0.1 in $hba"
  as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  as_root pg_ctlcluster --skip-systemctl-redirect "$pg_version" main reload
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "test-setup: starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
  echo "test-setup: starting RabbitMQ"
  as_root rabbitmq-server -detached
fi

# Wait for all three, and say which one never came up.
ready() {
  case $1 in
    postgres) pg_isready -h 127.0.0.1 -p 5432 -q && psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1 </dev/null ;;
    redis) redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 ;;
    rabbitmq) (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null ;;
  esac
}
for svc in postgres redis rabbitmq; do
  for _ in $(seq 1 90); do ready "$svc" && break; sleep 1; done
  ready "$svc" || { echo "test-setup: $svc is not reachable on 127.0.0.1 after 90 s" >&2; exit 1; }
done

# The Python peer: celery 5.4.0 with a redis-py kombu 5.7 accepts (not the celery[redis] extra).
# kombu 5.7's Redis transport imports `packaging`, which nothing else pulls in.
if ! .venv/bin/python -c 'import celery, redis, m3u8, kombu.transport.redis; assert celery.__version__ == "5.4.0"' 2>/dev/null; then
  echo "test-setup: creating .venv with celery==5.4.0"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check 'celery==5.4.0' 'redis>=6.1' 'm3u8' 'packaging'
fi
echo "test-setup: ready"
